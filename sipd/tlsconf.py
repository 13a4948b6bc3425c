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



# =============================================================================================
# TLS domains and SSLContexts
#
# A *domain* is one set of TLS settings: the [tls] defaults, or a table under
# [tls.server_domains."tls:HOST:PORT"] (the listener it serves) or [tls.client_domains."HOST[:PORT]"]
# (the destinations it connects to). A reload builds a fresh context from the files and swaps it in;
# the TLS listener and connect() read ``domain.context`` at every handshake, so existing connections
# keep the certificate they negotiated with, and new handshakes see the new one. A broken new file is logged
# and reported, and the old certificate stays in use.

import logging  # noqa: E402
import os  # noqa: E402
import ssl  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from typing import Any  # noqa: E402

from .config import Config, parse_listen  # noqa: E402
from .problem import Problem, StartupProblem  # noqa: E402
from .sip.uri import format_host  # noqa: E402

logger = logging.getLogger(__name__)

DOMAIN_KEYS = ("certificate", "private_key", "ca_file", "ca_dir", "verify_cert", "require_cert",
               "min_version", "max_version", "ciphers", "server_name")
_BOOL_KEYS = ("verify_cert", "require_cert")
_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


@dataclass(kw_only=True)
class TlsDomain:
    """One TLS domain's settings and its live context. ``match`` is the listener name
    (server role) or destination ``host[:port]`` (client role); "" for the defaults."""

    name: str
    role: str  # "server" | "client"
    match: str = ""
    certificate: str = ""
    private_key: str = ""
    ca_file: str = ""
    ca_dir: str = ""
    verify_cert: bool = True
    require_cert: bool = False
    min_version: str = "1.2"
    max_version: str = ""
    ciphers: str = ""
    server_name: str = ""
    context: ssl.SSLContext | None = None
    mtimes: tuple[float, ...] = ()
    error: str = ""
    subject: str = ""
    not_after: float | None = None
    reloads: int = 0

    def files(self) -> tuple[str, ...]:
        return tuple(f for f in (self.certificate, self.private_key, self.ca_file) if f)

    def describe(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        left = int((self.not_after - now) // 86400) if self.not_after is not None else None
        return {"name": self.name, "role": self.role, "match": self.match or "default",
                "certificate": self.certificate, "private_key": self.private_key,
                "ca_file": self.ca_file, "ca_dir": self.ca_dir, "subject": self.subject,
                "not_after": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.not_after)) if self.not_after else "",
                "days_left": left, "verify_cert": self.verify_cert, "require_cert": self.require_cert,
                "min_version": self.min_version, "max_version": self.max_version, "ciphers": self.ciphers,
                "server_name": self.server_name, "reloads": self.reloads, "error": self.error}


def _mtimes(paths: tuple[str, ...]) -> tuple[float, ...]:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append(st.st_mtime_ns + st.st_ino + st.st_size)  # renames (certbot) change the inode
        except OSError:
            out.append(-1.0)
    return tuple(out)


def domains_from_config(section: Any, listen: list[str]) -> tuple[dict[str, TlsDomain], dict[str, TlsDomain], TlsDomain]:
    """(server domains by listener name, client domains by destination, the default client domain).

    Every ``tls:`` listener gets a server domain: its own table, else the [tls] defaults.
    """
    base = {k: getattr(section, k) for k in DOMAIN_KEYS}
    servers: dict[str, TlsDomain] = {}
    tables = {_norm_listen(k): v for k, v in (section.server_domains or {}).items()}
    for item in listen:
        if not item.strip().lower().startswith("tls:"):
            continue
        key = _norm_listen(item)
        own = tables.get(key)
        values = {**base, "verify_cert": False, **(own or {})}  # server side: ask for client certs only if told
        servers[key] = TlsDomain(name=key if own is not None else "default", role="server", match=key, **values)
    clients = {k.lower(): TlsDomain(name=k.lower(), role="client", match=k.lower(), **{**base, **v})
               for k, v in (section.client_domains or {}).items()}
    default_client = TlsDomain(name="default", role="client", **base)
    return servers, clients, default_client


def _norm_listen(text: str) -> str:
    try:
        return str(parse_listen(text))
    except ValueError:
        return text.strip()


#: What to do about a TLS file that is not there yet (sipd refuses to start; sipctl works meanwhile).
_MISSING_HINTS = {
    "certificate": "make one (sipctl cert csr for your CA, sipctl cert ca issue, sipctl cert selfsign) or fix the path",
    "private_key": "it is written with the certificate (sipctl cert csr/selfsign/ca issue) or fix the path",
    "ca_file": "the PEM file of the CA(s) peers' certificates are verified with, or fix the path",
}


def validate(config: Config) -> list[Problem]:
    """Problems in [tls] (one of sipd.validation.VALIDATORS)."""
    t = config.tls
    problems: list[Problem] = []

    def check_values(prefix: str, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if key not in DOMAIN_KEYS:
                problems.append(Problem(f"{prefix}.{key}", "unknown key in a TLS domain", f"known: {', '.join(DOMAIN_KEYS)}"))
                continue
            if key in _BOOL_KEYS and not isinstance(value, bool):
                problems.append(Problem(f"{prefix}.{key}", f"expected true/false, got {value!r}"))
            elif key not in _BOOL_KEYS and not isinstance(value, str):
                problems.append(Problem(f"{prefix}.{key}", f"expected a string, got {value!r}"))
        for key in ("min_version", "max_version"):
            v = values.get(key)
            if isinstance(v, str) and v and v not in _VERSIONS:
                problems.append(Problem(f"{prefix}.{key}", f"unknown TLS version {v!r}", '"1.2" or "1.3"'))
        lo, hi = values.get("min_version") or "1.2", values.get("max_version") or "1.3"
        if lo in _VERSIONS and hi in _VERSIONS and _VERSIONS[lo] > _VERSIONS[hi]:
            problems.append(Problem(f"{prefix}.max_version", f"max_version {hi} is below min_version {lo}"))
        cert, key_ = values.get("certificate"), values.get("private_key")
        if bool(cert) != bool(key_) and isinstance(cert, str) and isinstance(key_, str):
            problems.append(Problem(prefix, "certificate and private_key go together", "set both"))
        for key in ("certificate", "private_key", "ca_file"):
            v = values.get(key)
            if isinstance(v, str) and v and not os.path.isfile(v):
                problems.append(StartupProblem(f"{prefix}.{key}", f"file {v} does not exist", _MISSING_HINTS[key]))
        v = values.get("ca_dir")
        if isinstance(v, str) and v and not os.path.isdir(v):
            problems.append(StartupProblem(f"{prefix}.ca_dir", f"directory {v} does not exist"))

    base = {k: getattr(t, k) for k in DOMAIN_KEYS}
    check_values("tls", base)
    for name, table in (t.server_domains or {}).items():
        if not isinstance(table, dict):
            problems.append(Problem(f"tls.server_domains.{name}", "must be a table", f'[tls.server_domains."{name}"]'))
            continue
        try:
            addr = parse_listen(name)
            if addr.proto != "tls":
                raise ValueError("not a tls listener")
        except ValueError:
            problems.append(Problem(f"tls.server_domains.{name}", "name must be a tls listen address", 'e.g. "tls:127.0.0.1:5061"'))
        merged = {**base, **table}
        check_values(f"tls.server_domains.{name}", merged if set(table) <= set(DOMAIN_KEYS) else table)
    for name, table in (t.client_domains or {}).items():
        if not isinstance(table, dict):
            problems.append(Problem(f"tls.client_domains.{name}", "must be a table", f'[tls.client_domains."{name}"]'))
            continue
        check_values(f"tls.client_domains.{name}", {**base, **table} if set(table) <= set(DOMAIN_KEYS) else table)
    listens = [x for x in config.server.listen if x.strip().lower().startswith("tls:")]
    if listens:
        for item in listens:
            own = (t.server_domains or {}).get(item) or {}
            if isinstance(own, dict) and not (own.get("certificate") or t.certificate):
                problems.append(StartupProblem("tls.certificate", f"{item} needs a certificate and private_key",
                                        "make one: sipctl cert selfsign, sipctl cert ca issue, or sipctl cert csr for a CA"))
    for key in ("handshake_timeout", "send_timeout"):
        if getattr(t, key) <= 0:
            problems.append(Problem(f"tls.{key}", "must be positive", "e.g. 10.0"))
    if t.max_pending_handshakes <= 0:
        problems.append(Problem("tls.max_pending_handshakes", "must be positive"))
    if t.reload_interval < 0:
        problems.append(Problem("tls.reload_interval", "must not be negative"))
    return problems


def build_context(d: TlsDomain) -> ssl.SSLContext:
    """A fresh SSLContext for the domain. Raises ssl.SSLError/OSError/ValueError on bad files."""
    server = d.role == "server"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated; asked for explicitly here
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = _VERSIONS[d.min_version or "1.2"]
        if d.max_version:
            ctx.maximum_version = _VERSIONS[d.max_version]
    if d.min_version in ("1.0", "1.1"):
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 otherwise disables TLS < 1.2 outright
    if d.ciphers:
        ctx.set_ciphers(d.ciphers)
    ctx.options |= ssl.OP_NO_COMPRESSION
    if server:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if d.certificate:
        ctx.load_cert_chain(d.certificate, d.private_key or None)
    wants_ca = d.verify_cert or d.require_cert
    if d.ca_file or d.ca_dir:
        ctx.load_verify_locations(cafile=d.ca_file or None, capath=d.ca_dir or None)
    elif wants_ca:
        ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH)
    # Identity is checked by us per RFC 5922 (check_peer), not by OpenSSL's hostname rules, which
    # accept wildcards and do not know sip: URI SANs.
    if not server:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED if d.verify_cert else ssl.CERT_NONE
    elif d.require_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif d.verify_cert:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _cert_summary(path: str) -> tuple[str, float | None]:
    """(subject, notAfter epoch) of the first certificate in ``path``; ("", None) when unreadable."""
    try:
        from cryptography import x509

        with open(path, "rb") as fh:
            cert = x509.load_pem_x509_certificates(fh.read())[0]
        return cert.subject.rfc4514_string(), cert.not_valid_after_utc.timestamp()
    except Exception:  # noqa: BLE001 - only for display; load_cert_chain reports the real error
        return "", None


class TlsManager:
    """All TLS domains of one server: contexts for listeners and outgoing connections, reload."""

    def __init__(self, section: Any, listen: list[str]):
        self.section = section
        self.servers, self.clients, self.default_client = domains_from_config(section, listen)
        self.handshake_timeout = float(section.handshake_timeout)
        self.send_timeout = float(section.send_timeout)
        self.max_pending_handshakes = int(section.max_pending_handshakes)
        self.reload_interval = float(section.reload_interval)
        self._timer: Any = None
        for d in self.domains():
            d.context = build_context(d)  # start-up: a broken file is fatal (raised to the caller)
            self._remember(d)

    def domains(self) -> list[TlsDomain]:
        return [*self.servers.values(), *self.clients.values(), self.default_client]

    def _remember(self, d: TlsDomain) -> None:
        d.mtimes = _mtimes(d.files())
        if d.certificate:
            d.subject, d.not_after = _cert_summary(d.certificate)
        d.error = ""

    # -- lookups --------------------------------------------------------------------------------
    def server_domain(self, listener_name: str) -> TlsDomain | None:
        return self.servers.get(_norm_listen(listener_name))

    def client_domain(self, host: str, port: int) -> TlsDomain:
        h = host.lower().strip("[]")
        hp = f"{format_host(h)}:{port}"
        return self.clients.get(hp) or self.clients.get(h) or self.default_client

    def check_peer(self, d: TlsDomain, peercert: dict | None, host: str) -> str | None:  # type: ignore[type-arg]
        """RFC 5922 identity of a server we connected to. Returns a problem, or None when fine."""
        if d.role != "client" or not d.verify_cert:
            return None
        if not peercert:
            return "server presented no certificate"
        names = CertNames.from_peercert(peercert)
        want = d.server_name or host
        ok = matches_sip_domain(names, want) if d.server_name else matches_host(names, want)
        if ok:
            return None
        return f"certificate does not assert {want} (has {', '.join(domain_identities(names) + list(names.ips)) or 'nothing'})"

    # -- reload ---------------------------------------------------------------------------------
    def reload(self, *, only_changed: bool = False) -> list[dict[str, Any]]:
        """Re-read certificates and keys. Broken files leave the old ones in use (logged).

        Returns one entry per domain: name, role, reloaded (bool), error.
        """
        report = []
        for d in self.domains():
            if only_changed and _mtimes(d.files()) == d.mtimes:
                continue
            entry = {"name": d.name, "role": d.role, "match": d.match or "default", "reloaded": False, "error": ""}
            try:
                # A new context replaces the old one: listeners and connect() pick ``d.context``
                # per handshake, so new connections use it and existing ones keep theirs.
                d.context = build_context(d)
            except (OSError, ssl.SSLError, ValueError) as exc:
                d.error = f"{type(exc).__name__}: {exc}"
                d.mtimes = _mtimes(d.files())  # report once per change, not on every poll
                logger.error("TLS domain %s (%s): new certificate/key not usable, keeping the old one: %s",
                             d.name, d.role, d.error)
                entry["error"] = d.error
            else:
                self._remember(d)
                d.reloads += 1
                entry["reloaded"] = True
                logger.info("TLS domain %s (%s): certificate reloaded: %s", d.name, d.role, d.subject)
            report.append(entry)
        return report

    def start(self, loop: Any) -> None:
        """Poll file modification times every ``reload_interval`` seconds (renewals by ACME)."""
        if self.reload_interval <= 0:
            return

        def tick() -> None:
            try:
                self.reload(only_changed=True)
            finally:
                self._timer = loop.call_later(self.reload_interval, tick)

        self._timer = loop.call_later(self.reload_interval, tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def describe(self) -> list[dict[str, Any]]:
        return [d.describe() for d in self.domains()]
