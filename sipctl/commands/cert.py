"""sipctl cert: make a key and CSR for a public CA, self-signed and lab-CA certificates, show, check."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from ..output import Output

app = typer.Typer(help="Certificates for SIP over TLS: csr, selfsign, ca, show, check.", no_args_is_help=True)
ca_app = typer.Typer(help="A small lab CA (root and intermediates) for tests and closed networks.", no_args_is_help=True)
app.add_typer(ca_app, name="ca")

PASSPHRASE_ENV = "SIPCTL_KEY_PASSPHRASE"

KeyType = Annotated[str, typer.Option("--key-type", help="rsa:2048, rsa:3072, rsa:4096, ec:p256 or ec:p384.")]
Sans = Annotated[Optional[list[str]], typer.Option("--san", help="Alternative name (repeat): DNS name, SIP domain, IP, or sip: URI. The CN is always included.")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite existing files.")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

UNENCRYPTED_NOTE = (
    "Note: the private key is not encrypted so that sipd can start unattended (a passphrase would "
    "have to be typed at every start or stored next to the key). Protect it with its mode (0600) "
    "and owner; use --encrypt to set a passphrase instead."
)


def _passphrase(confirm: bool) -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    return str(typer.prompt("Key passphrase", hide_input=True, confirmation_prompt=confirm))


def _load_existing_key(path: str):  # type: ignore[no-untyped-def]
    from ..lib import cert as lib

    return lib.load_key(path, _passphrase(False) if lib.key_is_encrypted(path) else None)


@app.command()
def csr(
    *,
    cn: Annotated[str, typer.Option("--cn", help="Common Name: the server's DNS name, e.g. sip.example.org.")],
    san: Sans = None,
    key_type: KeyType = "rsa:2048",
    org: Annotated[Optional[str], typer.Option("--org", help="Organisation (O=) in the subject.")] = None,
    country: Annotated[Optional[str], typer.Option("--country", help="Two-letter country (C=) in the subject.")] = None,
    key_out: Annotated[Optional[str], typer.Option("--key-out", help="Where to write the new private key (mode 0600).")] = None,
    csr_out: Annotated[str, typer.Option("--csr-out", help="Where to write the CSR (PEM).")] = "",
    key: Annotated[Optional[str], typer.Option("--key", help="Reuse this existing private key instead of making one.")] = None,
    encrypt: Annotated[bool, typer.Option("--encrypt", help=f"Encrypt the new key with a passphrase (prompted, or ${PASSPHRASE_ENV}).")] = False,
    force: Force = False,
) -> None:
    """Make a private key and a certificate signing request for a SIP server.

    The request has CN, subjectAltName (CN, --san names) and extended key usage serverAuth and
    clientAuth (sipd is a TLS client when it forwards). Send the CSR to your CA.

    Example: sipctl cert csr --cn sip.example.org --san example.org --key-out sip.key --csr-out sip.csr
    """
    from ..errors import UsageError
    from ..lib import cert as lib

    if not csr_out:
        raise UsageError("--csr-out is required", hint="e.g. --csr-out sip.example.org.csr")
    if key and key_out:
        raise UsageError("give either --key (reuse a key) or --key-out (make a new one), not both")
    if not key and not key_out:
        raise UsageError("--key-out is required to write the new private key", hint="or --key EXISTING to reuse one")
    out = Output()
    if key:
        private = _load_existing_key(key)
    else:
        private = lib.generate_key(key_type)
    request = lib.make_csr(private, cn, list(san or []), org=org, country=country)
    lib.write_pem(csr_out, request, force=force)
    if key_out:
        lib.write_key(key_out, private, _passphrase(True) if encrypt else None, force=force)
    info = lib.show(csr_out)[0]
    out.result(f"Wrote {csr_out} ({info.subject}; {', '.join(info.sans)}; {info.key_type} {info.key_bits})"
               + (f" and key {key_out} (mode 0600)" if key_out else ""))
    if key_out and not encrypt:
        out.err.print(UNENCRYPTED_NOTE, highlight=False)


@app.command()
def selfsign(
    *,
    cn: Annotated[str, typer.Option("--cn", help="Common Name: the server's DNS name or IP.")],
    san: Sans = None,
    key_type: KeyType = "rsa:2048",
    days: Annotated[int, typer.Option("--days", help="Validity in days.")] = 365,
    key_out: Annotated[str, typer.Option("--key-out", help="Private key to write (mode 0600).")] = "",
    cert_out: Annotated[str, typer.Option("--cert-out", help="Certificate to write (PEM).")] = "",
    force: Force = False,
) -> None:
    """Make a self-signed server certificate and key (labs and tests; peers must be told to trust it).

    Example: sipctl cert selfsign --cn sip.example.test --san 127.0.0.1 --key-out k.pem --cert-out c.pem
    """
    from ..errors import UsageError
    from ..lib import cert as lib

    if not key_out or not cert_out:
        raise UsageError("--key-out and --cert-out are required")
    private = lib.generate_key(key_type)
    certificate = lib.make_selfsigned(private, cn, list(san or []), days=days)
    lib.write_key(key_out, private, force=force)
    lib.write_pem(cert_out, certificate, force=force)
    info = lib.describe_cert(certificate)
    Output().result(f"Wrote {cert_out} ({info.subject}; {', '.join(info.sans)}; until {info.not_after[:10]}) and key {key_out}")


@ca_app.command("init")
def ca_init(
    *,
    directory: Annotated[str, typer.Option("--dir", help="Directory for ca.pem, ca.key, root.pem, chain.pem.")],
    cn: Annotated[str, typer.Option("--cn", help="CA name.")] = "sipd lab CA",
    key_type: KeyType = "rsa:3072",
    days: Annotated[int, typer.Option("--days", help="Validity in days.")] = 3650,
    org: Annotated[Optional[str], typer.Option("--org", help="Organisation (O=).")] = None,
    parent: Annotated[Optional[str], typer.Option("--parent", help="Make an intermediate CA signed by the CA in this directory.")] = None,
    force: Force = False,
) -> None:
    """Create a root CA, or with --parent an intermediate CA.

    Example: sipctl cert ca init --dir lab-ca --cn "Lab root"; sipctl cert ca init --dir lab-int --parent lab-ca
    """
    from ..lib import cert as lib

    res = lib.ca_init(directory, cn, key_type=key_type, days=days, org=org, parent=parent, force=force)
    kind = "intermediate CA" if res.intermediate else "root CA"
    Output().result(f"Created {kind} {res.subject} in {directory}; clients trust {res.paths.root}",
                    data={"ok": True, "directory": str(directory), "subject": res.subject,
                          "intermediate": res.intermediate, "root": str(res.paths.root)})


@ca_app.command("issue")
def ca_issue(
    *,
    ca: Annotated[str, typer.Option("--ca", "--dir", help="CA directory (made by sipctl cert ca init).")],
    cn: Annotated[str, typer.Option("--cn", help="Common Name of the new certificate.")],
    san: Sans = None,
    client: Annotated[bool, typer.Option("--client", help="Client-only certificate (clientAuth) for mutual TLS.")] = False,
    key_type: KeyType = "rsa:2048",
    days: Annotated[int, typer.Option("--days", help="Validity in days.")] = 825,
    cert_out: Annotated[str, typer.Option("--cert-out", help="Certificate + intermediates (full chain) to write.")] = "",
    key_out: Annotated[str, typer.Option("--key-out", help="Private key to write (mode 0600).")] = "",
    force: Force = False,
) -> None:
    """Issue a server (or --client) certificate from the lab CA.

    Example: sipctl cert ca issue --ca lab-ca --cn sip.example.test --san 127.0.0.1 --cert-out s.pem --key-out s.key
    """
    from ..errors import UsageError
    from ..lib import cert as lib

    if not key_out or not cert_out:
        raise UsageError("--key-out and --cert-out are required")
    res = lib.ca_issue(ca, cn, list(san or []), cert_out=cert_out, key_out=key_out, key_type=key_type,
                       days=days, client=client, force=force)
    Output().result(f"Issued {res.subject} ({', '.join(res.sans) or 'no SAN'}) until {res.not_after:%Y-%m-%d}: "
                    f"{cert_out} ({res.chain_length} certificate(s)), key {key_out}; trust anchor {res.root}",
                    data={"ok": True, "cert": cert_out, "key": key_out, "subject": res.subject,
                          "sans": res.sans, "not_after": res.not_after.isoformat(), "root": str(res.root)})


@app.command()
def show(
    file: Annotated[str, typer.Argument(help="Certificate (PEM chain or DER) or CSR file.")],
    *,
    json: Json = False,
) -> None:
    """Show subject, alternative names, issuer, validity, key type and size, and fingerprint.

    Example: sipctl cert show /etc/sipd/tls/sip.example.org.pem
    """
    from ..lib import cert as lib

    infos = lib.show(file)
    out = Output(json_mode=json)
    if json:
        out.json([i.as_dict() for i in infos])
        return
    for n, i in enumerate(infos):
        if n:
            out.out.print("")
        label = "Request" if i.kind == "request" else ("Certificate" if n == 0 else f"Chain certificate {n}")
        rows = [(label, i.subject), ("Alternative names", ", ".join(i.sans) or "(none)")]
        if i.kind == "certificate":
            left = f"{i.days_left} days left" if (i.days_left or 0) >= 0 else "EXPIRED"
            rows += [("Issuer", i.issuer + (" (self-signed)" if i.self_signed else "")),
                     ("Valid", f"{i.not_before} .. {i.not_after} ({left})")]
        rows.append(("Key", f"{i.key_type} {i.key_bits} bits"))
        if i.eku:
            rows.append(("Extended key usage", ", ".join(i.eku)))
        if i.kind == "certificate":
            rows += [("CA", "yes" if i.is_ca else "no"), ("Serial", i.serial), ("SHA-256", i.fingerprint_sha256)]
        for k, v in rows:
            out.out.print(f"{k + ':':<20} {v}", highlight=False)


@app.command()
def check(
    *,
    cert: Annotated[str, typer.Option("--cert", help="Certificate file (leaf first, then intermediates).")],
    key: Annotated[Optional[str], typer.Option("--key", help="Private key that must match the certificate.")] = None,
    ca: Annotated[Optional[str], typer.Option("--ca", help="CA file or directory to verify the chain (default: system CAs).")] = None,
    domain: Annotated[Optional[list[str]], typer.Option("--domain", help="SIP domain that must be a SAN (repeatable; no wildcards, RFC 5922).")] = None,
    host: Annotated[Optional[list[str]], typer.Option("--host", help="Host name or IP clients connect to (repeatable).")] = None,
    json: Json = False,
) -> None:
    """Check a server certificate: key matches, chain verifies, SANs cover domain and host, not expired.

    Each problem is printed on its own line; the exit status is 1 when there is any.

    Example: sipctl cert check --cert sip.pem --key sip.key --ca ca.pem --domain example.org --host sip.example.org
    """
    from ..errors import CheckFailed
    from ..lib import cert as lib
    from ..lib import certcheck

    passphrase = None
    if key and lib.key_is_encrypted(key):
        passphrase = _passphrase(False)
    report = certcheck.check(cert, key, ca=ca, domains=list(domain or []), hosts=list(host or []), passphrase=passphrase)
    out = Output(json_mode=json)
    if json:
        out.json(report.as_dict())
    else:
        for line in report.passed:
            out.out.print(f"ok: {line}", highlight=False)
        for line in report.warnings:
            out.warning(line)
        for line in report.problems:  # listed; the one Error: line with its Hint comes last
            out.err.print(f"problem: {line}", highlight=False, markup=False)
    if not report.ok:
        raise CheckFailed(f"{len(report.problems)} problem(s) with {cert}", hint="fix the lines above, then run the check again")
