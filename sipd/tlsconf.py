"""TLS for sipd: peer identity rules (RFC 5922), TLS domains, SSLContext building and hot reload.

Theory of operation
-------------------
* Identity (RFC 5922 §7.1/§7.2): the identities a certificate asserts are taken from its
  subjectAltName — ``uniformResourceIdentifier`` values with scheme ``sip`` (host part only; a URI
  with a user part is not a domain identity) and ``dNSName`` values. Only when the certificate has
  neither kind is the subject Common Name used. SIP domains are compared case-insensitively and
  *never* through wildcards ("*.example.org" does not cover "sip.example.org" as a SIP domain). A
  host name used to reach a server may match a left-most-label wildcard (RFC 6125 §6.4.3), and an IP
  address matches an iPAddress SAN or a dNSName holding the literal address (some clients, e.g.
  linphone's mbedTLS, only compare dNSName values).
* This module's identity helpers are pure functions over already-extracted names so that both the
  daemon (``ssl.SSLSocket.getpeercert()`` dicts) and ``sipctl cert check`` (``cryptography``
  objects) use one rule set.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class CertNames:
    """Names a certificate asserts. ``uris`` are raw URI SANs; ``ips`` are textual IP SANs."""

    dns: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    common_name: str | None = None

    @classmethod
    def from_peercert(cls, peercert: dict) -> CertNames:  # type: ignore[type-arg]
        """Build from the dict ``SSLSocket.getpeercert()`` returns (binary_form=False)."""
        dns: list[str] = []
        uris: list[str] = []
        ips: list[str] = []
        for kind, value in peercert.get("subjectAltName", ()):
            if kind == "DNS":
                dns.append(value)
            elif kind == "URI":
                uris.append(value)
            elif kind == "IP Address":
                ips.append(value.strip())
        cn = None
        for rdn in peercert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    cn = value
        return cls(dns=tuple(dns), uris=tuple(uris), ips=tuple(ips), common_name=cn)


def _sip_uri_host(uri: str) -> str | None:
    """Host part of a ``sip:`` URI SAN without user part; None when it is not a domain identity."""
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme.lower() != "sip":
        return None
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    if "@" in rest:  # RFC 5922 §7.1: a URI with a user part identifies a user, not a domain
        return None
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest


def domain_identities(names: CertNames) -> list[str]:
    """The SIP domain identities of a certificate per RFC 5922 §7.1, lowercased, in SAN order."""
    found: list[str] = []
    for uri in names.uris:
        host = _sip_uri_host(uri)
        if host:
            found.append(host.lower().rstrip("."))
    found.extend(d.lower().rstrip(".") for d in names.dns)
    if not found and not names.uris and not names.dns and names.common_name:
        found.append(names.common_name.lower().rstrip("."))
    return found


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _wildcard_match(pattern: str, name: str) -> bool:
    """RFC 6125 §6.4.3, restricted: ``*`` is the whole left-most label and matches one label."""
    if not pattern.startswith("*.") or "*" in pattern[2:]:
        return False
    head, _, tail = name.partition(".")
    return bool(head) and tail == pattern[2:] and tail.count(".") >= 1


def matches_sip_domain(names: CertNames, domain: str) -> bool:
    """True when the certificate asserts SIP domain ``domain`` (RFC 5922 §7.2: no wildcards)."""
    want = domain.lower().rstrip(".")
    if _is_ip(want):
        return matches_host(names, want)
    return any(ident == want for ident in domain_identities(names) if "*" not in ident)


def matches_host(names: CertNames, host: str) -> bool:
    """True when the certificate covers the host name or IP address a client connects to."""
    want = host.lower().rstrip(".").strip("[]")
    if _is_ip(want):
        addr = ipaddress.ip_address(want)
        for ip in names.ips:
            try:
                if ipaddress.ip_address(ip) == addr:
                    return True
            except ValueError:
                continue
        return any(d.strip() == want for d in names.dns)
    for ident in domain_identities(names):
        if ident == want or _wildcard_match(ident, want):
            return True
    return False


def wildcard_identities(names: CertNames) -> list[str]:
    """Identities containing ``*`` (useless for SIP domains; reported by ``sipctl cert check``)."""
    return [i for i in domain_identities(names) if "*" in i]


def covers_any(names: CertNames, candidates: Iterable[str]) -> bool:
    """True when any of ``candidates`` is a SIP domain identity of the certificate."""
    return any(matches_sip_domain(names, c) for c in candidates)

