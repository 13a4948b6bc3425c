"""Spam policy and scanner defence: pure decisions over one request.

Rules (what the OpenSIPS report did in script, built in):

1. *IP-domain spam.* An initial request (no To-tag) of one of ``methods`` whose To-URI host or
   Request-URI host is one of our own IP addresses (every listen address, the advertised address,
   plus ``[spam] own_addresses``, plus every IP address that is a local domain, whether listed in
   ``[server] domains`` or added to the domain table) is spam: real callers use ``name@domain``.
   It is dropped silently (default) or answered 403/404, and logged as exactly
   ``Dropped Spam-Call to <To-URI> from <source>``. ``[spam] calls_to_own_ip = false`` turns this
   rule off (the IP domain then takes calls like a domain name). An IP domain still takes
   registrations: REGISTER is not one of ``methods``.
2. *Numeric users at IP domains* (optional, ``numeric_ip_users``): ``digits@<any IP>`` in the To or
   Request-URI is spam too, whoever's IP it is (the classic toll-fraud probe).
3. *Scanners.* A request whose User-Agent contains one of ``scanner_user_agents`` (case-insensitive
   substring) is dropped silently, before anything answers it, and logged at debug level only (they
   come by the thousand). The antiflood service may ban the source (``scanner_ban_time``).

REGISTER, OPTIONS and in-dialog requests are not subject to rule 1 by default: devices register
with the server IP as domain, and keep-alive OPTIONS to the IP are normal.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from ..sip.uri import format_host

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger("sipd.security")

DEFAULT_SCANNERS = (
    "friendly-scanner", "sipvicious", "sipcli", "VaxSIPUserAgent", "sundayddr", "iWar",
    "sip-scan", "SIVuS", "smap", "pplsip", "Gulp", "sipsscan",
)
DEFAULT_METHODS = ("INVITE", "MESSAGE", "REFER")

_NUMERIC = re.compile(r"^\+?[0-9][0-9\-.()]*$")


def canonical_ip(host: str) -> str | None:
    """The canonical text of an IP literal (brackets stripped), or None when ``host`` is a name."""
    if not host:
        return None
    h = host.strip("[]")
    c = h[0]
    if not (c.isdigit() or ":" in h):  # cheap reject for names like example.com
        return None
    try:
        addr = ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


@dataclass(frozen=True)
class Verdict:
    """What to do with a request the policy caught. ``status`` None = drop silently."""

    kind: str                 # "spam" | "scanner"
    status: int | None
    reason: str


@dataclass(kw_only=True)
class SpamSettings:
    enabled: bool = True
    own_addresses: tuple[str, ...] = ()
    calls_to_own_ip: bool = True
    action: str = "drop"      # drop | 403 | 404
    methods: tuple[str, ...] = DEFAULT_METHODS
    numeric_ip_users: bool = False
    scanner_user_agents: tuple[str, ...] = DEFAULT_SCANNERS


ACTIONS = {"drop": None, "403": 403, "404": 404}


class SpamPolicy:
    def __init__(self, settings: SpamSettings | None = None):
        self.settings = s = settings or SpamSettings()
        if s.action not in ACTIONS:
            raise ValueError(f"unknown spam action {s.action!r} (drop, 403 or 404)")
        self._addresses = frozenset(ip for ip in (canonical_ip(a) for a in s.own_addresses) if ip)
        self.own_ips: frozenset[str] = self._addresses if s.calls_to_own_ip else frozenset()
        self.status = ACTIONS[s.action]
        self.methods = frozenset(m.upper() for m in s.methods)
        pats = [p.strip() for p in s.scanner_user_agents if p.strip()]
        self._scanner_re = re.compile("|".join(re.escape(p) for p in pats), re.I) if pats else None
        self.spam_dropped = 0
        self.scanners_dropped = 0

    @classmethod
    def from_config(cls, config: Config, extra_addresses: Iterable[str] = ()) -> SpamPolicy:
        """Own addresses: listen hosts, advertised address, ``[spam] own_addresses``, and
        ``extra_addresses`` (the daemon passes the host's interface addresses for wildcard listens)."""
        from ..config import parse_listen

        sp = config.spam
        own = [parse_listen(item).host for item in config.server.listen]
        if config.server.advertised_address:
            own.append(config.server.advertised_address)
        own += list(sp.own_addresses) + list(extra_addresses)
        own = [a for a in own if a not in ("0.0.0.0", "::")]
        return cls(SpamSettings(
            enabled=sp.enabled, own_addresses=tuple(own) + tuple(config.server.domains),
            calls_to_own_ip=sp.calls_to_own_ip,
            action=sp.action, methods=tuple(sp.methods), numeric_ip_users=sp.numeric_ip_users,
            scanner_user_agents=tuple(sp.scanner_user_agents),
        ))

    def set_domains(self, domains: Iterable[str]) -> None:
        """The local domains changed: an IP address among them is one of ours (config or database alike)."""
        if self.settings.calls_to_own_ip:
            self.own_ips = self._addresses | {ip for ip in map(canonical_ip, domains) if ip}

        # -- pure rules over plain values -------------------------------------------------------

    def is_scanner(self, user_agent: str | None) -> bool:
        return bool(user_agent) and self._scanner_re is not None and self._scanner_re.search(user_agent) is not None

    def is_spam_target(self, user: str | None, host: str) -> bool:
        """Is ``user@host`` (a To-URI or Request-URI) a spam target under rules 1 and 2?"""
        ip = canonical_ip(host)
        if ip is None:
            return False
        if ip in self.own_ips:
            return True
        return self.settings.numeric_ip_users and bool(user) and _NUMERIC.match(user) is not None

    def check(self, *, method: str, ruri_user: str | None, ruri_host: str, to_user: str | None,
              to_host: str, to_tag: str | None, user_agent: str | None) -> Verdict | None:
        """The decision for one request given as plain values; None = not caught."""
        if not self.settings.enabled:
            return None
        if self.is_scanner(user_agent):
            self.scanners_dropped += 1
            return Verdict("scanner", None, "scanner User-Agent")
        if to_tag or method.upper() not in self.methods:
            return None
        if self.is_spam_target(to_user, to_host) or self.is_spam_target(ruri_user, ruri_host):
            self.spam_dropped += 1
            return Verdict("spam", self.status, "IP-domain spam")
        return None

    # -- adapter over a parsed Request (sipd.sip.message.Request) ---------------------------

    def check_request(self, request: Any, source_host: str, source_port: int | None) -> Verdict | None:
        """The decision for a parsed request, logging the spam line when caught."""
        to = request.to
        verdict = self.check(
            method=request.method, ruri_user=request.uri.user, ruri_host=request.uri.host or "",
            to_user=to.uri.user, to_host=to.uri.host or "", to_tag=to.tag,
            user_agent=request.get("User-Agent"),
        )
        if verdict is None:
            return None
        source = f"{format_host(source_host)}:{source_port}"
        if verdict.kind == "spam":
            log.info("Dropped Spam-Call to %s from %s", to.uri, source)
        else:
            log.debug("dropped scanner request from %s: User-Agent %r", source, request.get("User-Agent"))
        return verdict

    def stats(self) -> dict[str, int]:
        return {"spam:dropped_calls": self.spam_dropped, "spam:dropped_scanners": self.scanners_dropped}
