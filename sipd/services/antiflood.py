"""Flood and brute-force defence: a per-source rate counter, an auth-failure tracker and a ban table.

Pure (time passed in, no I/O), in the spirit of Kamailio's ``pike`` plus an ``htable`` ban list.

Rules:

* Every packet (UDP datagram, or request on a stream connection) from a source IP is counted in a
  sliding window of ``window`` seconds. The window is approximated with two fixed buckets (the
  current one and the previous one, weighted by how much of it still overlaps the window), which is
  O(1) in time and two numbers per source. A source whose estimate exceeds ``limit`` is banned for
  ``ban_time`` seconds.
* Repeated digest failures (wrong password, unknown user) from one source: ``threshold`` failures
  within ``window`` seconds ban it for ``ban_time`` seconds.
* A banned source's packets are dropped before parsing: ``Antiflood.check_packet(ip, now)`` is one
  dict lookup for a banned or known source.
* Trusted networks (CIDR list) are never counted and never banned automatically. An operator's
  manual ban applies to any address or network.
* Memory is bounded: at most ``max_tracked`` sources counted (the oldest-active entry is evicted
  first), at most ``max_bans`` bans (the oldest automatic ban is evicted first; manual bans are
  kept and capped separately by the same number).
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from ..sip.uri import format_host

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger("sipd.security")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Reasons a ban carries (shown by ``ban_list``).
FLOOD = "flood"
AUTH = "auth"
SCANNER = "scanner"
MANUAL = "manual"


def _strip(ip: str) -> str:
    """Canonical text of an address: brackets and IPv4-mapped prefix removed, IPv6 compressed."""
    ip = ip.strip().strip("[]")
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def canonical(target: str) -> str:
    """The text a ban of ``target`` is listed under (``Ban.target``): an address as ``_strip``
    writes it, a network in CIDR notation, a one-address network as that address."""
    if "/" not in target:
        return _strip(target)
    try:
        net = parse_networks([target])[0]
    except ValueError:
        return target.strip()
    return str(net.network_address) if net.num_addresses == 1 else str(net)


def parse_networks(items: Iterable[str]) -> list[IPNetwork]:
    """Parse a CIDR list (a bare address means a single host). Raises ValueError naming the item."""
    nets: list[IPNetwork] = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(item.strip().replace("[", "").replace("]", ""), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {item!r} (write e.g. 10.0.0.0/8 or ::1)") from None
    return nets


class TrustedNetworks:
    """A CIDR list with a bounded per-address answer cache (``ipaddress`` parsing is not free)."""

    def __init__(self, networks: Iterable[str] = (), *, cache_size: int = 4096):
        self.networks = parse_networks(networks)
        self._cache: dict[str, bool] = {}
        self._cache_size = cache_size
        #: the other nodes of this node's cluster (their addresses, kept up to date by the
        #: heartbeat): trusted like the operator's networks, as peer proxies are
        self.peers: frozenset[str] = frozenset()

    def set_peers(self, hosts: Iterable[str]) -> None:
        self.peers = frozenset(_strip(h).lower() for h in hosts)

    def __contains__(self, ip: str) -> bool:
        if self.peers and ip.lower() in self.peers:
            return True
        if not self.networks:
            return False
        hit = self._cache.get(ip)
        if hit is not None:
            return hit
        try:
            addr = ipaddress.ip_address(_strip(ip))
        except ValueError:
            result = False
        else:
            result = any(addr in net for net in self.networks)
        if len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[ip] = result
        return result


@dataclass
class Ban:
    target: str          # an address, or a network in CIDR notation
    reason: str          # flood | auth | scanner | manual
    since: float
    until: float         # math.inf = until removed
    hits: int = 0        # packets dropped because of this ban
    node: str = ""       # the cluster node that made it, when another one did (sipd/services/cluster_bans.py)

    @property
    def manual(self) -> bool:
        return self.reason == MANUAL

    def as_dict(self, now: float) -> dict:
        remaining = None if math.isinf(self.until) else max(0, round(self.until - now))
        return {"ip": self.target, "reason": self.reason, "expires_in": remaining,
                "age": max(0, round(now - self.since)), "hits": self.hits, "node": self.node}


class BanTable:
    """Banned addresses (exact match, one dict lookup) and banned networks (checked only if any)."""

    def __init__(self, max_bans: int = 10000):
        self.max_bans = max(1, max_bans)
        self._ips: dict[str, Ban] = {}
        self._nets: dict[IPNetwork, Ban] = {}
        self.evicted = 0
        #: each called with ("add", target, now, duration, reason) or ("rm", target) after a change
        #: made with ``notify`` (registrar workers share their bans through it, sipd/daemon/workers/;
        #: the nodes of a cluster theirs, sipd/services/cluster_bans.py)
        self.watchers: list[Callable[[tuple], None]] = []

    def __len__(self) -> int:
        return len(self._ips) + len(self._nets)

    def watch(self, fn: Callable[[tuple], None]) -> None:
        """Call ``fn(change)`` after every ban added or removed with ``notify``."""
        self.watchers.append(fn)

    def entries(self) -> list[Ban]:
        """Every ban held, expired ones included (``list`` drops those first)."""
        return [*self._ips.values(), *self._nets.values()]

    def is_banned(self, ip: str, now: float) -> bool:
        ban = self._ips.get(ip)
        if ban is not None:
            if now < ban.until:
                ban.hits += 1
                return True
            del self._ips[ip]
        if self._nets:
            return self._net_banned(ip, now)
        return False

    def _net_banned(self, ip: str, now: float) -> bool:
        try:
            addr = ipaddress.ip_address(_strip(ip))
        except ValueError:
            return False
        for net, ban in list(self._nets.items()):
            if now >= ban.until:
                del self._nets[net]
            elif addr.version == net.version and addr in net:
                ban.hits += 1
                return True
        return False

    def add(self, target: str, now: float, duration: float | None, reason: str, *, notify: bool = True,
            node: str = "") -> Ban:
        """Ban an address or CIDR network for ``duration`` seconds (None or <= 0: until removed);
        ``node``: the cluster node that made it, when another one did."""
        ban = self._add(target, now, duration, reason)
        ban.node = node
        if notify:
            for fn in self.watchers:
                fn(("add", target, now, duration, reason))
        return ban

    def _add(self, target: str, now: float, duration: float | None, reason: str) -> Ban:
        until = math.inf if not duration or duration <= 0 else now + duration
        if "/" in target:
            net = parse_networks([target])[0]
            if net.num_addresses == 1:
                target = str(net.network_address)
            else:
                ban = Ban(str(net), reason, now, until)
                self._nets.pop(net, None)
                self._make_room(self._nets)
                self._nets[net] = ban
                return ban
        target = _strip(target)
        ipaddress.ip_address(target)  # ValueError for garbage
        old = self._ips.pop(target, None)
        ban = Ban(target, reason, now, until, hits=old.hits if old else 0)
        self._make_room(self._ips)
        self._ips[target] = ban
        return ban

    def _make_room(self, table: dict) -> None:
        if len(table) < self.max_bans:
            return
        # Oldest automatic ban first; if every entry is manual, the oldest manual one.
        victim = next((k for k, b in table.items() if not b.manual), None)
        if victim is None:
            victim = next(iter(table))
        del table[victim]
        self.evicted += 1

    def remove(self, target: str, *, notify: bool = True) -> bool:
        removed = self._remove(target)
        if removed and notify:
            for fn in self.watchers:
                fn(("rm", target))
        return removed

    def _remove(self, target: str) -> bool:
        if "/" in target:
            try:
                net = parse_networks([target])[0]
            except ValueError:
                return False
            if net.num_addresses > 1:
                return self._nets.pop(net, None) is not None
            target = str(net.network_address)
        return self._ips.pop(_strip(target), None) is not None

    def get(self, target: str) -> Ban | None:
        if "/" in target:
            try:
                return self._nets.get(parse_networks([target])[0])
            except ValueError:
                return None
        return self._ips.get(_strip(target))

    def purge(self, now: float) -> int:
        """Drop expired bans; returns how many."""
        n = 0
        for table in (self._ips, self._nets):
            for key in [k for k, b in table.items() if now >= b.until]:
                del table[key]
                n += 1
        return n

    def list(self, now: float) -> list[Ban]:
        self.purge(now)
        return sorted([*self._ips.values(), *self._nets.values()], key=lambda b: b.since)


class RateCounter:
    """Per-source packet counts over a sliding window (two-bucket estimate), bounded in sources.

    ``hit(ip, now)`` returns the estimated number of packets in the last ``window`` seconds,
    including this one.
    """

    def __init__(self, window: float = 2.0, max_tracked: int = 50000):
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self.max_tracked = max(1, max_tracked)
        # ip -> [bucket_start, count_in_current_bucket, count_in_previous_bucket]
        self._entries: dict[str, list] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def hit(self, ip: str, now: float) -> float:
        e = self._entries.get(ip)
        w = self.window
        if e is None:
            if len(self._entries) >= self.max_tracked:
                del self._entries[next(iter(self._entries))]
                self.evicted += 1
            self._entries[ip] = [now, 1, 0]
            return 1.0
        elapsed = now - e[0]
        if elapsed >= w:
            # Roll the buckets; move the entry to the end so eviction order is "least recently active".
            if elapsed >= 2 * w:
                e[2] = 0
                e[0] = now
            else:
                e[2] = e[1]
                e[0] += w
            e[1] = 0
            elapsed = now - e[0]
            del self._entries[ip]
            self._entries[ip] = e
        e[1] += 1
        return e[1] + e[2] * (1.0 - elapsed / w)

    def forget(self, ip: str) -> None:
        self._entries.pop(ip, None)

    def purge(self, now: float) -> int:
        """Drop sources idle for two windows (their estimate is 0); returns how many."""
        stale = [ip for ip, e in self._entries.items() if now - e[0] >= 2 * self.window]
        for ip in stale:
            del self._entries[ip]
        return len(stale)


class FailureTracker:
    """Sources with ``threshold`` failures within ``window`` seconds (exact: the last N times kept)."""

    def __init__(self, threshold: int = 5, window: float = 600.0, max_tracked: int = 10000):
        self.threshold = max(1, threshold)
        self.window = window
        self.max_tracked = max(1, max_tracked)
        self._times: dict[str, deque[float]] = {}

    def __len__(self) -> int:
        return len(self._times)

    def failure(self, ip: str, now: float) -> bool:
        """Record one failure; True when the source has reached the threshold (the entry is reset)."""
        times = self._times.get(ip)
        if times is None:
            if len(self._times) >= self.max_tracked:
                del self._times[next(iter(self._times))]
            times = self._times[ip] = deque(maxlen=self.threshold)
        else:  # most recently failing last
            del self._times[ip]
            self._times[ip] = times
        times.append(now)
        if len(times) >= self.threshold and now - times[0] <= self.window:
            del self._times[ip]
            return True
        return False

    def count(self, ip: str, now: float) -> int:
        times = self._times.get(ip)
        return 0 if times is None else sum(1 for t in times if now - t <= self.window)

    def forget(self, ip: str) -> None:
        self._times.pop(ip, None)

    def purge(self, now: float) -> int:
        stale = [ip for ip, t in self._times.items() if not t or now - t[-1] > self.window]
        for ip in stale:
            del self._times[ip]
        return len(stale)


@dataclass(kw_only=True)
class AntifloodSettings:
    """The knobs, mirrored from ``[antiflood]`` in the config (see sipd/config.py)."""

    enabled: bool = True
    window: float = 2.0
    limit: int = 400
    ban_time: float = 300.0
    max_tracked: int = 50000
    max_bans: int = 10000
    trusted: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    auth_fail_threshold: int = 5
    auth_fail_window: float = 600.0
    auth_fail_ban_time: float = 900.0
    scanner_ban_time: float = 0.0


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()+,;:@&$/")


def _log_safe(text: str, limit: int = 64) -> str:
    """Percent-encode everything but unreserved URI characters: a username can never carry a space,
    '=' or a newline into the log line (no framing another address for fail2ban)."""
    text = text[:limit]
    if all(c in _SAFE for c in text):
        return text or "-"
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def format_source(ip: str, port: int | None) -> str:
    host = format_host(ip)
    return host if port is None else f"{host}:{port}"


def auth_failure_line(user: str, realm: str, ip: str, port: int | None, reason: str) -> str:
    """``auth failed: user=<u> realm=<r> source=<ip>:<port> reason=<why>`` (IPv6 in brackets).

    Suggested reasons: ``wrong_password``, ``unknown_user``, ``replay``, ``bad_nonce``,
    ``malformed``. The client sees the same answer for all of them; only the log tells them apart.
    """
    return (f"auth failed: user={_log_safe(user)} realm={_log_safe(realm)} "
            f"source={format_source(_strip(ip), port)} reason={_log_safe(reason, 32)}")


class Antiflood:
    """The facade the daemon uses: pre-parse packet check, auth-failure hook, scanner ban, MI verbs."""

    def __init__(self, settings: AntifloodSettings | None = None):
        self.settings = s = settings or AntifloodSettings()
        self.trusted = TrustedNetworks(s.trusted)
        self.bans = BanTable(s.max_bans)
        self.rates = RateCounter(s.window, s.max_tracked)
        self.failures = FailureTracker(s.auth_fail_threshold, s.auth_fail_window, s.max_tracked)
        # Counters, exported as statistics by the daemon (antiflood:*)
        self.dropped_packets = 0
        self.flood_bans = 0
        self.auth_bans = 0
        self.scanner_bans = 0
        self.auth_failures = 0

    @classmethod
    def from_config(cls, config: Config) -> Antiflood:
        a = config.antiflood
        return cls(AntifloodSettings(
            enabled=a.enabled, window=a.window, limit=a.limit, ban_time=a.ban_time,
            max_tracked=a.max_tracked, max_bans=a.max_bans, trusted=tuple(a.trusted_networks),
            auth_fail_threshold=a.auth_fail_threshold, auth_fail_window=a.auth_fail_window,
            auth_fail_ban_time=a.auth_fail_ban_time, scanner_ban_time=a.scanner_ban_time,
        ))

    # -- hot path --------------------------------------------------------------------------

    def check_packet(self, ip: str, now: float) -> bool:
        """Count one packet from ``ip``; False means drop it (banned, or just now over the limit).

        Called for every UDP datagram before parsing, and for every request read from a stream.
        """
        bans = self.bans
        if bans._ips or bans._nets:
            if bans.is_banned(ip, now):
                self.dropped_packets += 1
                return False
        if not self.settings.enabled or ip in self.trusted:
            return True
        if self.rates.hit(ip, now) > self.settings.limit:
            self.ban(ip, now, self.settings.ban_time, FLOOD)
            self.flood_bans += 1
            self.rates.forget(ip)
            self.dropped_packets += 1
            return False
        return True

    def is_banned(self, ip: str, now: float) -> bool:
        """Only the ban check (for new TCP/TLS connections): no counting."""
        if not (self.bans._ips or self.bans._nets):
            return False
        return self.bans.is_banned(ip, now)

    # -- events from other services --------------------------------------------------------

    def auth_failed(self, ip: str, now: float, *, port: int | None = None, user: str = "",
                    realm: str = "", reason: str = "bad_credentials") -> bool:
        """A digest check failed for a request from ``ip``: log the one fixed-format line that
        contrib/fail2ban/filter.d/sipd.conf matches, count it, and ban the source at the threshold.
        Returns True if the source is now banned."""
        self.auth_failures += 1
        log.warning("%s", auth_failure_line(user, realm, ip, port, reason))
        if not self.settings.enabled or self.settings.auth_fail_threshold <= 0 or ip in self.trusted:
            return False
        if self.failures.failure(ip, now):
            self.ban(ip, now, self.settings.auth_fail_ban_time, AUTH)
            self.auth_bans += 1
            return True
        return False

    def scanner_seen(self, ip: str, now: float) -> bool:
        """A request carried a scanner's User-Agent; ban when ``scanner_ban_time`` > 0."""
        if not self.settings.enabled or self.settings.scanner_ban_time <= 0 or ip in self.trusted:
            return False
        self.ban(ip, now, self.settings.scanner_ban_time, SCANNER)
        self.scanner_bans += 1
        return True

    def ban(self, ip: str, now: float, duration: float, reason: str) -> Ban:
        ban = self.bans.add(ip, now, duration, reason)
        log.warning("banned %s for %ss: reason=%s", ban.target,
                    "ever" if math.isinf(ban.until) else int(duration), reason)
        return ban

    # -- management ------------------------------------------------------------------------

    def ban_add(self, target: str, now: float, duration: float | None = None) -> Ban:
        """Operator ban (ValueError for a bad address); ``duration`` None/0 = until removed."""
        ban = self.bans.add(target.strip(), now, duration, MANUAL)
        log.warning("banned %s by operator for %s", ban.target,
                    "ever" if math.isinf(ban.until) else f"{int(duration or 0)}s")
        return ban

    def ban_rm(self, target: str) -> bool:
        removed = self.lift(target)
        if removed:
            log.info("ban of %s removed by operator", target.strip())
        return removed

    def lift(self, target: str) -> bool:
        """Remove the ban of ``target`` and start its counts afresh; False when it was not banned."""
        target = target.strip()
        removed = self.bans.remove(target)
        if removed:
            self.failures.forget(_strip(target))
            self.rates.forget(_strip(target))
        return removed

    def ban_list(self, now: float) -> list[dict]:
        return [b.as_dict(now) for b in self.bans.list(now)]

    def housekeeping(self, now: float) -> None:
        """Periodic cleanup (every few seconds): expired bans and idle counters."""
        self.bans.purge(now)
        self.rates.purge(now)
        self.failures.purge(now)

    def stats(self) -> dict[str, int]:
        return {
            "antiflood:dropped_packets": self.dropped_packets,
            "antiflood:flood_bans": self.flood_bans,
            "antiflood:auth_bans": self.auth_bans,
            "antiflood:scanner_bans": self.scanner_bans,
            "antiflood:auth_failures": self.auth_failures,
            "antiflood:active_bans": len(self.bans),
            "antiflood:tracked_sources": len(self.rates),
        }
