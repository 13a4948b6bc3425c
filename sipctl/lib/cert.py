"""Certificates for sipd: keys, CSRs, self-signed and lab-CA certificates, inspection (checks: ``certcheck``).

Plain functions over ``cryptography``; no Typer, no terminal. Errors are ``CertError`` (one line +
hint). ``cryptography`` is imported lazily by the callers' import of this module, never at sipctl
start-up.

Profile of what we make (what a public CA expects in a CSR for a SIP server, and what SIP peers
check): CN = the server's DNS name; subjectAltName = every DNS name and SIP domain (IP literals go
in as iPAddress *and* dNSName, because linphone's mbedTLS only compares dNSName values); extended
key usage serverAuth + clientAuth (a SIP server is a TLS client when it forwards); SHA-256.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sipd.tlsconf import CertNames

from ..errors import CertError, ExistsError, NotFoundError, UsageError

KEY_TYPES = ("rsa:2048", "rsa:3072", "rsa:4096", "ec:p256", "ec:p384")
#: Lab-CA defaults: 10 years for a CA, 825 days for a leaf (the CA/Browser Forum ceiling that
#: Apple clients enforce — longer leaf lifetimes are rejected by some endpoints).
CA_DAYS = 3650
LEAF_DAYS = 825

PrivateKey = Any  # rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# ---------------------------------------------------------------------------------------------
# Keys


def generate_key(key_type: str) -> PrivateKey:
    """A new private key for ``rsa:BITS`` or ``ec:p256|p384``."""
    kind, _, param = key_type.lower().partition(":")
    if key_type.lower() not in KEY_TYPES:
        raise UsageError(f"unknown key type {key_type!r}", hint=f"one of {', '.join(KEY_TYPES)}")
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=int(param))
    curve = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1()}[param]
    return ec.generate_private_key(curve)


def key_description(key: Any) -> tuple[str, int]:
    """("RSA"|"EC"|..., bits) for a private or public key."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RSA", key.key_size
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"EC {key.curve.name}", key.curve.key_size
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "Ed25519", 256
    return type(key).__name__, 0


def key_is_encrypted(path: str | os.PathLike[str]) -> bool:
    data = _read(path, "key")
    return b"ENCRYPTED" in data.split(b"\n", 1)[0] or b"Proc-Type: 4,ENCRYPTED" in data


def load_key(path: str | os.PathLike[str], passphrase: str | None = None) -> PrivateKey:
    """Read a PEM (or DER) private key. Raises CertError for wrong passphrase or garbage."""
    data = _read(path, "key")
    pw = passphrase.encode() if passphrase else None
    try:
        if b"-----BEGIN" in data:
            return serialization.load_pem_private_key(data, password=pw)
        return serialization.load_der_private_key(data, password=pw)
    except TypeError:
        raise CertError(f"{path}: the key is encrypted", hint="give its passphrase (or decrypt it with openssl pkey)") from None
    except ValueError as exc:
        if pw is not None:
            raise CertError(f"{path}: cannot decrypt the key (wrong passphrase?)") from None
        raise CertError(f"{path}: not a private key ({exc})", hint="expected a PEM file with BEGIN PRIVATE KEY") from None


def write_key(path: str | os.PathLike[str], key: PrivateKey, passphrase: str | None = None,
              *, force: bool = False) -> None:
    """Write the key as PKCS#8 PEM, mode 0600 from creation (never briefly world-readable)."""
    enc: serialization.KeySerializationEncryption
    if passphrase:
        enc = serialization.BestAvailableEncryption(passphrase.encode())
    else:
        enc = serialization.NoEncryption()
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    _write(path, data, mode=0o600, force=force)


# ---------------------------------------------------------------------------------------------
# Building certificates and requests


def _name(cn: str, org: str | None = None, country: str | None = None) -> x509.Name:
    attrs = []
    if country:
        attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country))
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    """DNS names, ``sip:`` URIs and IP literals (IP literals also as dNSName, see module doc)."""
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in names:
        n = raw.strip()
        if not n or n.lower() in seen:
            continue
        seen.add(n.lower())
        if n.lower().startswith(("sip:", "sips:")):
            out.append(x509.UniformResourceIdentifier(n))
            continue
        try:
            ip = ipaddress.ip_address(n.strip("[]"))
        except ValueError:
            try:
                out.append(x509.DNSName(n.lower()))
            except ValueError as exc:
                raise UsageError(f"not a DNS name: {n!r} ({exc})") from None
            continue
        out.append(x509.IPAddress(ip))
        out.append(x509.DNSName(str(ip)))
    return x509.SubjectAlternativeName(out)


def _leaf_extensions(builder: Any, sans: list[str], *, client_only: bool = False) -> Any:
    eku = [ExtendedKeyUsageOID.CLIENT_AUTH] if client_only else [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    if sans:
        builder = builder.add_extension(_san(sans), critical=False)
    builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder


def make_csr(key: PrivateKey, cn: str, sans: list[str], org: str | None = None,
             country: str | None = None) -> x509.CertificateSigningRequest:
    """A CSR with CN, SANs (CN included), serverAuth+clientAuth EKU, signed with SHA-256."""
    sans = _with_cn(cn, sans)
    b = x509.CertificateSigningRequestBuilder().subject_name(_name(cn, org, country))
    b = _leaf_extensions(b, sans)
    b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    return b.sign(key, _hash_for(key))


def _with_cn(cn: str, sans: list[str]) -> list[str]:
    # Modern clients ignore the CN when SANs exist (RFC 6125, RFC 5922 §7.1), so the CN must also
    # be a SAN or the certificate does not cover the name it was made for.
    return sans if any(s.lower() == cn.lower() for s in sans) else [cn, *sans]


def _hash_for(key: PrivateKey) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _cert_builder(subject: x509.Name, issuer: x509.Name, public_key: Any, days: int,
                  not_before: dt.datetime | None = None) -> x509.CertificateBuilder:
    start = (not_before or utc_now()) - dt.timedelta(minutes=5)  # tolerate small clock skew
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def make_selfsigned(key: PrivateKey, cn: str, sans: list[str], days: int = 365,
                    org: str | None = None) -> x509.Certificate:
    """A self-signed server certificate (serverAuth+clientAuth), for labs and tests."""
    name = _name(cn, org)
    b = _cert_builder(name, name, key.public_key(), days)
    b = _leaf_extensions(b, _with_cn(cn, sans))
    b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    b = b.add_extension(_leaf_key_usage(key), critical=True)
    return b.sign(key, _hash_for(key))


def _leaf_key_usage(key: PrivateKey) -> x509.KeyUsage:
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=is_rsa,
                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                         crl_sign=False, encipher_only=False, decipher_only=False)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                         crl_sign=True, encipher_only=False, decipher_only=False)


# ---------------------------------------------------------------------------------------------
# Lab CA: DIR/ca.pem (this CA), DIR/ca.key (0600), DIR/root.pem (trust anchor), DIR/chain.pem
# (this CA's certificate followed by its parents' up to, not including, the root; empty for a root).


@dataclass
class CaPaths:
    directory: Path

    @property
    def cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def root(self) -> Path:
        return self.directory / "root.pem"

    @property
    def chain(self) -> Path:
        return self.directory / "chain.pem"


@dataclass
class CaResult:
    paths: CaPaths
    subject: str
    intermediate: bool


def ca_init(directory: str | os.PathLike[str], cn: str, *, key_type: str = "rsa:3072",
            days: int = CA_DAYS, org: str | None = None, parent: str | os.PathLike[str] | None = None,
            force: bool = False) -> CaResult:
    """Create a root CA, or an intermediate CA signed by the CA in ``parent``."""
    paths = CaPaths(Path(directory))
    if paths.cert.exists() and not force:
        raise ExistsError(f"{paths.cert} already exists", hint="use another --dir, or --force to replace it")
    paths.directory.mkdir(parents=True, exist_ok=True)
    key = generate_key(key_type)
    subject = _name(cn, org)
    if parent is None:
        issuer_key, issuer_name, parent_paths = key, subject, None
    else:
        parent_paths = CaPaths(Path(parent))
        issuer_cert, issuer_key = _load_ca(parent_paths)
        issuer_name = issuer_cert.subject
    b = _cert_builder(subject, issuer_name, key.public_key(), days)
    b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None if parent is None else 0), critical=True)
    b = b.add_extension(_ca_key_usage(), critical=True)
    if parent_paths is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    cert = b.sign(issuer_key, _hash_for(issuer_key))
    write_key(paths.key, key, force=True)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    _write(paths.cert, pem, force=True)
    if parent_paths is None:
        _write(paths.root, pem, force=True)
        _write(paths.chain, b"", force=True)
    else:
        _write(paths.root, _read(parent_paths.root, "root"), force=True)
        _write(paths.chain, pem + _read(parent_paths.chain, "chain"), force=True)
    return CaResult(paths=paths, subject=cert.subject.rfc4514_string(), intermediate=parent is not None)


def _load_ca(paths: CaPaths) -> tuple[x509.Certificate, PrivateKey]:
    if not paths.cert.exists():
        raise NotFoundError(f"no CA in {paths.directory} ({paths.cert.name} missing)",
                            hint="create one with: sipctl cert ca init --dir DIR --cn 'Lab CA'")
    cert = load_certs(paths.cert)[0]
    return cert, load_key(paths.key)


@dataclass
class IssueResult:
    cert_path: Path
    key_path: Path
    subject: str
    sans: list[str]
    not_after: dt.datetime
    chain_length: int
    root: Path


def ca_issue(directory: str | os.PathLike[str], cn: str, sans: list[str], *, cert_out: str | os.PathLike[str],
             key_out: str | os.PathLike[str], key_type: str = "rsa:2048", days: int = LEAF_DAYS,
             client: bool = False, org: str | None = None, force: bool = False,
             not_before: dt.datetime | None = None) -> IssueResult:
    """Issue a server (serverAuth+clientAuth) or client-only certificate from the lab CA.

    ``cert_out`` receives the leaf followed by the intermediates (a "full chain", what a TLS server
    must send); the trust anchor stays in ``DIR/root.pem``.
    """
    paths = CaPaths(Path(directory))
    ca_cert, ca_key = _load_ca(paths)
    for p in (cert_out, key_out):
        if Path(p).exists() and not force:
            raise ExistsError(f"{p} already exists", hint="choose another path or pass --force")
    key = generate_key(key_type)
    all_sans = _with_cn(cn, sans) if not client else sans
    b = _cert_builder(_name(cn, org), ca_cert.subject, key.public_key(), days, not_before)
    b = _leaf_extensions(b, all_sans, client_only=client)
    b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    b = b.add_extension(_leaf_key_usage(key), critical=True)
    b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    cert = b.sign(ca_key, _hash_for(ca_key))
    chain = _read(paths.chain, "chain")
    write_key(key_out, key, force=force)
    _write(cert_out, cert.public_bytes(serialization.Encoding.PEM) + chain, force=force)
    return IssueResult(cert_path=Path(cert_out), key_path=Path(key_out), subject=cert.subject.rfc4514_string(),
                       sans=all_sans, not_after=cert.not_valid_after_utc,
                       chain_length=1 + chain.count(b"BEGIN CERTIFICATE"), root=paths.root)


# ---------------------------------------------------------------------------------------------
# Reading and describing


def load_certs(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """Every certificate in a PEM file (or the one in a DER file), in file order."""
    data = _read(path, "certificate")
    try:  # system bundles hold old roots with non-positive serials: a Python warning is no help there
        with warnings.catch_warnings(action="ignore", category=CryptographyDeprecationWarning):
            certs = x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data else [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        if b"CERTIFICATE REQUEST" in data:
            raise CertError(f"{path} is a certificate request, not a certificate") from None
        raise CertError(f"{path}: not a certificate ({exc})", hint="expected PEM with BEGIN CERTIFICATE") from None
    return certs


def names_of(cert: x509.Certificate | x509.CertificateSigningRequest) -> CertNames:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
        ips = tuple(str(i) for i in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, uris, ips = (), (), ()
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else None
    return CertNames(dns=dns, uris=uris, ips=ips, common_name=cn)


def san_strings(names: CertNames) -> list[str]:
    return [f"DNS:{d}" for d in names.dns] + [f"URI:{u}" for u in names.uris] + [f"IP:{i}" for i in names.ips]


def eku_names(obj: Any) -> list[str]:
    try:
        ext = obj.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []
    return [getattr(o, "_name", None) or o.dotted_string for o in ext]


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


@dataclass
class CertInfo:
    kind: str  # "certificate" | "request"
    subject: str
    sans: list[str]
    issuer: str | None
    not_before: str | None
    not_after: str | None
    days_left: int | None
    key_type: str
    key_bits: int
    fingerprint_sha256: str | None
    serial: str | None
    is_ca: bool
    self_signed: bool
    eku: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def describe_cert(cert: x509.Certificate, now: dt.datetime | None = None) -> CertInfo:
    now = now or utc_now()
    kt, bits = key_description(cert.public_key())
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertInfo(
        kind="certificate", subject=cert.subject.rfc4514_string(), sans=san_strings(names_of(cert)),
        issuer=cert.issuer.rfc4514_string(), not_before=cert.not_valid_before_utc.isoformat(),
        not_after=cert.not_valid_after_utc.isoformat(),
        days_left=(cert.not_valid_after_utc - now).days, key_type=kt, key_bits=bits,
        fingerprint_sha256=fingerprint(cert), serial=format(cert.serial_number, "X"), is_ca=is_ca,
        self_signed=cert.issuer == cert.subject, eku=eku_names(cert),
    )


def show(path: str | os.PathLike[str]) -> list[CertInfo]:
    """Describe every certificate (or the request) in a file."""
    data = _read(path, "certificate")
    if b"CERTIFICATE REQUEST" in data:
        try:
            csr = x509.load_pem_x509_csr(data)
        except ValueError as exc:
            raise CertError(f"{path}: broken certificate request ({exc})") from None
        kt, bits = key_description(csr.public_key())
        return [CertInfo(kind="request", subject=csr.subject.rfc4514_string(), sans=san_strings(names_of(csr)),
                         issuer=None, not_before=None, not_after=None, days_left=None, key_type=kt,
                         key_bits=bits, fingerprint_sha256=None, serial=None, is_ca=False,
                         self_signed=False, eku=eku_names(csr))]
    if b"PRIVATE KEY" in data and b"CERTIFICATE" not in data:
        raise CertError(f"{path} is a private key, not a certificate", hint="pass the certificate file")
    return [describe_cert(c) for c in load_certs(path)]


# ---------------------------------------------------------------------------------------------
# Files


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{what} file {path} does not exist") from None
    except PermissionError:
        raise CertError(f"{what} file {path} is not readable", hint="check its mode and owner (run as the right user)") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, expected a {what} file") from None


def _write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644, force: bool = False) -> None:
    p = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if force else os.O_EXCL)
    try:
        fd = os.open(p, flags, mode)
    except FileExistsError:
        raise ExistsError(f"{p} already exists", hint="choose another path or pass --force") from None
    except FileNotFoundError:
        raise NotFoundError(f"directory {p.parent} does not exist") from None
    except PermissionError:
        raise CertError(f"cannot write {p}: permission denied") from None
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), mode)  # an existing file keeps its old mode otherwise
        fh.write(data)


def write_pem(path: str | os.PathLike[str], obj: x509.Certificate | x509.CertificateSigningRequest,
              *, force: bool = False) -> None:
    _write(path, obj.public_bytes(serialization.Encoding.PEM), force=force)
