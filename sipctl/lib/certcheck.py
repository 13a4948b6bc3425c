"""``sipctl cert check`` (and ``sipctl doctor``): what makes a server certificate unusable for SIP over TLS.

:func:`check` returns a :class:`CheckReport`: the private key matches, the chain verifies by
signature up to a trust anchor (a CA file, a CA directory, or the system bundle), the SIP domains
and hosts are in the subjectAltName (RFC 5922 §7.2: no wildcards for SIP domains), the dates,
the extended key usage and the key size. Each problem is one line; nothing here raises for a bad
certificate, only for a file that cannot be read (``CertError``).
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from sipd.tlsconf import matches_host, matches_sip_domain, wildcard_identities

from ..errors import CertError
from .cert import eku_names, key_description, load_certs, load_key, names_of, san_strings, utc_now

EXPIRY_WARNING_DAYS = 30


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    subject: str = ""
    not_after: str = ""
    days_left: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "subject": self.subject, "not_after": self.not_after,
                "days_left": self.days_left, "problems": self.problems, "warnings": self.warnings,
                "passed": self.passed}


def _same_public_key(a: Any, b: Any) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_bytes(serialization.Encoding.DER, fmt) == b.public_bytes(serialization.Encoding.DER, fmt)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _trust_anchors(ca: str | os.PathLike[str] | None) -> tuple[list[x509.Certificate], str]:
    if ca:
        p = Path(ca)
        if p.is_dir():
            certs: list[x509.Certificate] = []
            for f in sorted(p.iterdir()):
                if f.is_file() and (f.suffix in (".pem", ".crt") or f.suffix[1:].isdigit()):  # c_rehash names
                    try:
                        certs.extend(load_certs(f))
                    except CertError:
                        continue
            return certs, str(p)
        return load_certs(p), str(p)
    system = ssl.get_default_verify_paths().cafile
    if system and os.path.exists(system):
        try:
            return load_certs(system), "the system CA bundle"
        except CertError:
            pass
    return [], "no CA"


def verify_chain(leaf: x509.Certificate, intermediates: list[x509.Certificate],
                 anchors: list[x509.Certificate], now: dt.datetime) -> tuple[list[x509.Certificate], str | None]:
    """Build leaf -> intermediates -> anchor by signature. Returns (path, problem or None)."""
    path = [leaf]
    current = leaf
    for _ in range(10):  # bounded: no chain is longer than this in practice
        for anchor in anchors:
            if _issued_by(current, anchor):
                path.append(anchor)
                for c in path[1:]:
                    if c.not_valid_after_utc < now:
                        return path, f"chain certificate {c.subject.rfc4514_string()} expired on {c.not_valid_after_utc:%Y-%m-%d}"
                return path, None
        nxt = next((c for c in intermediates if c not in path and _issued_by(current, c)), None)
        if nxt is None:
            break
        path.append(nxt)
        current = nxt
    if current.issuer == current.subject:
        return path, f"chain ends in {current.subject.rfc4514_string()}, which is not a trusted CA"
    return path, f"issuer {current.issuer.rfc4514_string()} not found (missing intermediate in the certificate file, or wrong CA)"


def check(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str] | None, *,
          ca: str | os.PathLike[str] | None = None, domains: list[str] = (), hosts: list[str] = (),  # type: ignore[assignment]
          passphrase: str | None = None, now: dt.datetime | None = None) -> CheckReport:
    """Everything that makes a server certificate unusable for SIP over TLS, one problem per line."""
    now = now or utc_now()
    r = CheckReport()
    certs = load_certs(cert_path)
    leaf = certs[0]
    r.subject = leaf.subject.rfc4514_string()
    r.not_after = leaf.not_valid_after_utc.isoformat()
    r.days_left = (leaf.not_valid_after_utc - now).days
    if key_path is not None:
        key = load_key(key_path, passphrase)
        if _same_public_key(key.public_key(), leaf.public_key()):
            r.passed.append("private key matches the certificate")
        else:
            r.problems.append(f"private key {key_path} does not belong to the certificate {cert_path}")
    anchors, where = _trust_anchors(ca)
    _, chain_problem = verify_chain(leaf, certs[1:], anchors, now)
    if chain_problem:
        r.problems.append(f"chain does not verify against {where}: {chain_problem}")
    else:
        r.passed.append(f"chain verifies against {where}")
    names = names_of(leaf)
    for d in domains:
        if matches_sip_domain(names, d):
            r.passed.append(f"covers SIP domain {d}")
        else:
            why = " (wildcards do not count for SIP domains, RFC 5922 §7.2)" if wildcard_identities(names) else ""
            r.problems.append(f"SIP domain {d} is not in the certificate's subjectAltName{why}; it has {', '.join(san_strings(names)) or 'none'}")
    for h in hosts:
        if matches_host(names, h):
            r.passed.append(f"covers host {h}")
        else:
            r.problems.append(f"host {h} is not in the certificate's subjectAltName; it has {', '.join(san_strings(names)) or 'none'}")
    if not names.dns and not names.uris:
        r.warnings.append("certificate has no subjectAltName; current clients ignore the Common Name")
    if leaf.not_valid_before_utc > now:
        r.problems.append(f"not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (clock or certificate wrong)")
    if leaf.not_valid_after_utc < now:
        r.problems.append(f"expired on {leaf.not_valid_after_utc:%Y-%m-%d} ({-r.days_left} days ago)")
    elif r.days_left < EXPIRY_WARNING_DAYS:
        r.warnings.append(f"expires in {r.days_left} days ({leaf.not_valid_after_utc:%Y-%m-%d}); renew it")
    else:
        r.passed.append(f"valid until {leaf.not_valid_after_utc:%Y-%m-%d} ({r.days_left} days)")
    eku = eku_names(leaf)
    if eku and "serverAuth" not in eku:
        r.problems.append(f"extended key usage {', '.join(eku)} lacks serverAuth")
    elif eku and "clientAuth" not in eku:
        r.warnings.append("extended key usage lacks clientAuth: peers requiring mutual TLS will refuse it when sipd forwards")
    kt, bits = key_description(leaf.public_key())
    if kt == "RSA" and bits < 2048:
        r.problems.append(f"RSA key of {bits} bits is too small (OpenSSL refuses below 2048)")
    return r
