"""RFC 3263 server location: which (transport, address, port) to send a request for a SIP URI to.

Owns the decision logic once, as a generator over DNS data, and two thin drivers that feed it
answers: :func:`resolve` (the daemon, ``dns.asyncresolver``) and :func:`resolve_sync` (``sipctl dns
check``, ``dns.resolver``). Both share :class:`Cache`. Nothing here sends SIP.

Theory of operation (RFC 3263 §4, RFC 2782):

1. Numeric host (``sip:192.0.2.1``, ``sip:[2001:db8::1]``): no DNS at all. Transport from the
   ``transport`` parameter, else UDP for ``sip`` and TLS for ``sips``; port from the URI, else 5060
   (5061 for TLS).
2. Transport: the URI's ``transport`` parameter wins (``transport=tcp`` on a ``sips`` URI means TLS);
   a ``sips`` URI always uses TLS.
3. Explicit port: A/AAAA lookup of the host only (§4.2), with the transport of step 2 (default UDP,
   TLS for sips).
4. No port, transport given: SRV for that transport only (``_sip._udp``, ``_sip._tcp``,
   ``_sips._tcp``), then A/AAAA at the default port.
5. No port, no transport: NAPTR of the host. Records with flag ``s`` and a service we support
   (``SIP+D2U``, ``SIP+D2T``, ``SIPS+D2T``; only ``SIPS+D2T`` for sips) sorted by (order,
   preference), each replacement looked up as SRV. When there are no usable NAPTR records (or they
   lead nowhere), SRV for ``_sips._tcp``, ``_sip._tcp``, ``_sip._udp`` in that order, then A/AAAA
   of the host at the default port of the default transport.
6. SRV records are ordered by priority, and within one priority by RFC 2782's weighted random
   selection (zero weights first in the running sum) using an injectable random source. A target
   of "." means "service not offered". Each SRV target is looked up as A and AAAA.

The result is the ordered list of targets to try, duplicates removed; empty when nothing resolved
(the caller answers 503/404 as it sees fit). DNS errors never raise out of :func:`resolve`.

Caching: answers (positive and negative) are cached per (name, type) by :class:`Cache` for the
record TTL (negative answers: the SOA minimum when the server sent one, else ``negative_ttl``;
SERVFAIL and timeouts: ``failure_ttl``), in an LRU bounded by ``max_entries``.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

if TYPE_CHECKING:
    from sipd.config import Config

logger = logging.getLogger(__name__)

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
ALL_TRANSPORTS: tuple[str, ...] = ("udp", "tcp", "tls")

#: NAPTR service field (RFC 3263 §4.1) -> transport.
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
#: SRV owner-name prefix per transport (RFC 3263 §4.2); ``_sips._tcp`` is TLS.
SRV_PREFIXES = {"tls": "_sips._tcp", "tcp": "_sip._tcp", "udp": "_sip._udp"}
#: Order of the SRV fallback when there is no NAPTR (most secure first, as RFC 3263 §4.1 suggests).
SRV_FALLBACK_ORDER = ("tls", "tcp", "udp")

#: Upper bound of a cached positive answer's lifetime, seconds; protects against absurd TTLs.
MAX_TTL = 86400.0


# ---------------------------------------------------------------------------------------------
# Record data (what the logic consumes; drivers convert dnspython answers into these)


class Status(str, enum.Enum):
    """Outcome of one DNS query."""

    OK = "ok"                  # records present
    NXDOMAIN = "nxdomain"      # name does not exist
    NODATA = "nodata"          # name exists, no records of that type
    SERVFAIL = "servfail"      # server failure / refused / no usable name server
    TIMEOUT = "timeout"        # nobody answered in time
    ERROR = "error"            # anything else (bad name, no resolver configuration)


@dataclass(frozen=True, slots=True)
class Query:
    name: str          # absolute or relative; compared lowercased without trailing dot
    rdtype: str        # "NAPTR", "SRV", "A", "AAAA", "PTR", "CNAME"

    @property
    def key(self) -> tuple[str, str]:
        return (self.name.lower().rstrip("."), self.rdtype)


@dataclass(frozen=True, slots=True)
class Naptr:
    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str   # without trailing dot


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str        # without trailing dot; "" for "." (service not offered)


@dataclass(frozen=True, slots=True)
class Answer:
    """One query's result. ``records`` holds Naptr / Srv / address strings / PTR names.

    ``canonical_name`` is set (without trailing dot) when the server answered through a CNAME.
    """

    query: Query
    status: Status
    records: tuple[Any, ...] = ()
    ttl: float = 0.0
    canonical_name: str | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is Status.OK and bool(self.records)


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send: ``host`` is an IP address, ``name`` the DNS name it came from (or the IP)."""

    transport: str     # "udp" | "tcp" | "tls"
    host: str
    port: int
    name: str


# ---------------------------------------------------------------------------------------------
# The decision logic (pure: yields query batches, receives answers)

Plan = Generator[list[Query], list[Answer], list[Target]]


class RandInt(Protocol):
    def __call__(self, a: int, b: int, /) -> int: ...


#: is_numeric's answers: hosts of Request-URIs, Routes and domains repeat from message to message,
#: and parsing one with ``ipaddress`` costs a few microseconds (two per proxied request).
_NUMERIC: dict[str, bool] = {}
_NUMERIC_MAX = 1024  # then forgotten at once: a scanner's random hosts cannot grow it


def is_numeric(host: str) -> bool:
    """``host`` (brackets allowed) is an IPv4 or IPv6 address, not a name."""
    known = _NUMERIC.get(host)
    if known is not None:
        return known
    try:
        ipaddress.ip_address(host.strip("[]"))
        known = True
    except ValueError:
        known = False
    if len(_NUMERIC) >= _NUMERIC_MAX:
        _NUMERIC.clear()
    _NUMERIC[host] = known
    return known


def order_srv(records: Iterable[Srv], randint: RandInt) -> list[Srv]:
    """RFC 2782 ordering: by priority; within a priority, weighted random without replacement.

    Zero-weight records go first in the running sum so that they are picked only when the random
    number is 0 ("a very small chance"), as RFC 2782 prescribes. ``randint(a, b)`` is inclusive,
    like :func:`random.randint`.
    """
    by_priority: dict[int, list[Srv]] = {}
    for r in records:
        if r.target:  # "." = decidedly not available
            by_priority.setdefault(r.priority, []).append(r)
    out: list[Srv] = []
    for prio in sorted(by_priority):
        pool = sorted(by_priority[prio], key=lambda r: r.weight != 0)  # zero weights first (stable)
        while pool:
            total = sum(r.weight for r in pool)
            pick = randint(0, total)
            running = 0
            for i, r in enumerate(pool):
                running += r.weight
                if running >= pick:
                    out.append(pool.pop(i))
                    break
    return out


def order_naptr(records: Iterable[Naptr], transports: Sequence[str], secure_only: bool) -> list[tuple[str, Naptr]]:
    """Usable NAPTR records as (transport, record), sorted by (order, preference)."""
    usable = []
    for r in records:
        transport = NAPTR_SERVICES.get(r.service.upper())
        if transport is None or transport not in transports or r.flags.lower() != "s":
            continue
        if secure_only and transport != "tls":
            continue
        if not r.replacement:
            continue
        usable.append((transport, r))
    usable.sort(key=lambda item: (item[1].order, item[1].preference))
    return usable


def default_transport(scheme: str, transport_param: str | None) -> str:
    """RFC 3263 §4.1: the transport parameter, else UDP (sip) / TLS (sips); sips forces TLS."""
    t = (transport_param or "").lower()
    if scheme == "sips":
        return "tls"
    if t in ("udp", "tcp", "tls"):
        return t
    return "udp"


def plan(
    scheme: str,
    host: str,
    port: int | None,
    transport_param: str | None,
    *,
    transports: Sequence[str] = ALL_TRANSPORTS,
    randint: RandInt = random.randint,
) -> Plan:
    """The RFC 3263 procedure as a generator: ``send()`` it the answers to each yielded batch.

    Returns (via StopIteration.value) the ordered, de-duplicated target list.
    """
    scheme = scheme.lower()
    host = host.strip("[]").rstrip(".")
    explicit = (transport_param or "").lower() in ("udp", "tcp", "tls") or scheme == "sips"
    transport = default_transport(scheme, transport_param)

    if is_numeric(host):
        return [Target(transport, host, port or DEFAULT_PORTS[transport], host)]
    if port is not None:
        return (yield from _addresses([(transport, host, port)]))

    srv_sets: list[tuple[str, str]] = []  # (transport, SRV owner name), in preference order
    if explicit:
        srv_sets = [(transport, f"{SRV_PREFIXES[transport]}.{host}")]
    else:
        (naptr_answer,) = yield [Query(host, "NAPTR")]
        for t, rec in order_naptr(naptr_answer.records if naptr_answer.ok else (), transports, scheme == "sips"):
            srv_sets.append((t, rec.replacement))
    targets = (yield from _srv_targets(srv_sets, randint)) if srv_sets else []
    if not targets and not explicit:
        # RFC 3263 §4.1: no (usable) NAPTR -> SRV queries for each supported transport.
        fallback = [t for t in SRV_FALLBACK_ORDER if t in transports and (scheme != "sips" or t == "tls")]
        srv_sets = [(t, f"{SRV_PREFIXES[t]}.{host}") for t in fallback]
        targets = yield from _srv_targets(srv_sets, randint)
    if not targets:
        # RFC 3263 §4.2: no SRV -> A/AAAA of the domain at the default port of the transport.
        targets = yield from _addresses([(transport, host, DEFAULT_PORTS[transport])])
    return targets


def _srv_targets(srv_sets: list[tuple[str, str]], randint: RandInt) -> Plan:
    answers = yield [Query(name, "SRV") for _, name in srv_sets]
    hosts: list[tuple[str, str, int]] = []
    for (transport, _), answer in zip(srv_sets, answers):
        if answer.ok:
            hosts.extend((transport, r.target, r.port) for r in order_srv(answer.records, randint))
    if not hosts:
        return []
    return (yield from _addresses(hosts))


def _addresses(hosts: list[tuple[str, str, int]]) -> Plan:
    names = list(dict.fromkeys(name for _, name, _ in hosts))
    queries = [Query(n, t) for n in names for t in ("A", "AAAA")]
    answers = yield queries
    found: dict[str, list[str]] = {n: [] for n in names}
    for q, a in zip(queries, answers):
        if a.ok:
            found[q.name].extend(str(r) for r in a.records)
    out: list[Target] = []
    seen: set[tuple[str, str, int]] = set()
    for transport, name, port in hosts:
        for ip in found[name]:
            if (transport, ip, port) not in seen:
                seen.add((transport, ip, port))
                out.append(Target(transport, ip, port, name))
    return out


# ---------------------------------------------------------------------------------------------
# Cache


@dataclass
class Cache:
    """TTL cache of :class:`Answer` per (name, type), LRU-bounded, with negative caching.

    Args:
        max_entries: size bound; the least recently used entry goes first.
        negative_ttl: seconds to keep NXDOMAIN/NODATA when the server sent no SOA (RFC 2308).
        failure_ttl: seconds to keep SERVFAIL/timeouts (RFC 2308 §7 allows up to 5 minutes).
        clock: monotonic seconds; tests pass a fake clock.
    """

    max_entries: int = 4096
    negative_ttl: float = 30.0
    failure_ttl: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _data: OrderedDict[tuple[str, str], tuple[float, Answer]] = field(default_factory=OrderedDict, repr=False)

    def get(self, query: Query) -> Answer | None:
        item = self._data.get(query.key)
        if item is None:
            return None
        expires, answer = item
        if self.clock() >= expires:
            del self._data[query.key]
            return None
        self._data.move_to_end(query.key)
        return answer

    def put(self, answer: Answer) -> None:
        if answer.status is Status.OK:
            ttl = min(answer.ttl, MAX_TTL)
        elif answer.status in (Status.NXDOMAIN, Status.NODATA):
            ttl = answer.ttl if answer.ttl > 0 else self.negative_ttl
        elif answer.status in (Status.SERVFAIL, Status.TIMEOUT):
            ttl = self.failure_ttl
        else:
            return
        if ttl <= 0 or self.max_entries <= 0:
            return
        key = answer.query.key
        self._data[key] = (self.clock() + ttl, answer)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()


# ---------------------------------------------------------------------------------------------
# Drivers: dnspython answers -> Answer, and running a plan


def _negative_ttl(exc: dns.exception.DNSException) -> float:
    """SOA minimum from a negative response (RFC 2308 §5), or 0 when absent."""
    responses: dict[Any, Any] = {}
    try:
        if isinstance(exc, dns.resolver.NXDOMAIN):
            responses = exc.responses()
        elif isinstance(exc, dns.resolver.NoAnswer):
            resp = exc.kwargs.get("response")
            responses = {None: resp} if resp is not None else {}
    except Exception:  # best effort: a missing SOA only means the configured default applies
        return 0.0
    for resp in responses.values():
        for rrset in getattr(resp, "authority", ()):
            if rrset.rdtype == dns.rdatatype.SOA:
                return float(min(rrset.ttl, rrset[0].minimum))
    return 0.0


def _convert(query: Query, answer: dns.resolver.Answer) -> Answer:
    rrset = answer.rrset
    if rrset is None:
        return Answer(query, Status.NODATA)
    records: list[Any] = []
    for rd in rrset:
        if query.rdtype == "NAPTR":
            records.append(Naptr(rd.order, rd.preference, rd.flags.decode(), rd.service.decode(),
                                 rd.regexp.decode(), _text(rd.replacement)))
        elif query.rdtype == "SRV":
            records.append(Srv(rd.priority, rd.weight, rd.port, _text(rd.target)))
        elif query.rdtype in ("A", "AAAA"):
            records.append(rd.address)
        elif query.rdtype in ("PTR", "CNAME"):
            records.append(_text(rd.target))
        else:
            records.append(rd.to_text())
    canonical = _text(answer.canonical_name)
    cname = canonical if canonical != query.name.lower().rstrip(".") else None
    return Answer(query, Status.OK, tuple(records), float(rrset.ttl), cname)


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower() if name != dns.name.root else ""


def _failure(query: Query, exc: BaseException) -> Answer:
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return Answer(query, Status.NXDOMAIN, ttl=_negative_ttl(exc), error="name does not exist")
    if isinstance(exc, dns.resolver.NoAnswer):
        return Answer(query, Status.NODATA, ttl=_negative_ttl(exc), error=f"no {query.rdtype} records")
    if isinstance(exc, dns.exception.Timeout):
        return Answer(query, Status.TIMEOUT, error=f"no answer within {getattr(exc, 'kwargs', {}).get('timeout', 0):.1f}s")
    if isinstance(exc, dns.resolver.NoNameservers):
        errors = exc.kwargs.get("errors") or []
        detail = "; ".join(f"{e[0]}: {e[3]}" for e in errors if len(e) > 3) or str(exc)
        return Answer(query, Status.SERVFAIL, error=detail)
    return Answer(query, Status.ERROR, error=f"{type(exc).__name__}: {exc}")


def lookup_sync(resolver: dns.resolver.Resolver, query: Query, cache: Cache | None = None) -> Answer:
    """One query through the blocking resolver; DNS errors come back as an Answer status."""
    if cache is not None and (hit := cache.get(query)) is not None:
        return hit
    try:
        result = _convert(query, resolver.resolve(query.name, query.rdtype, search=False))
    except (dns.exception.DNSException, OSError, ValueError) as exc:
        result = _failure(query, exc)
    if cache is not None:
        cache.put(result)
    return result


async def lookup(resolver: dns.asyncresolver.Resolver, query: Query, cache: Cache | None = None) -> Answer:
    """One query through the asyncio resolver; DNS errors come back as an Answer status."""
    if cache is not None and (hit := cache.get(query)) is not None:
        return hit
    try:
        result = _convert(query, await resolver.resolve(query.name, query.rdtype, search=False))
    except (dns.exception.DNSException, OSError, ValueError) as exc:
        result = _failure(query, exc)
    if cache is not None:
        cache.put(result)
    return result


def _uri_fields(uri: Any) -> tuple[str, str, int | None, str | None]:
    if isinstance(uri, str):
        from sipd.sip.uri import parse_uri

        uri = parse_uri(uri)
    params = getattr(uri, "params", None) or {}
    transport = getattr(uri, "transport", None)
    if transport is None:
        transport = params.get("transport")
    return uri.scheme, uri.host, uri.port, transport


def run_sync(gen: Plan, resolver: dns.resolver.Resolver, cache: Cache | None = None) -> list[Target]:
    """Drive a plan with the blocking resolver."""
    try:
        batch = next(gen)
        while True:
            batch = gen.send([lookup_sync(resolver, q, cache) for q in batch])
    except StopIteration as stop:
        return list(stop.value)


async def run(gen: Plan, resolver: dns.asyncresolver.Resolver, cache: Cache | None = None) -> list[Target]:
    """Drive a plan with the asyncio resolver; each batch's queries run concurrently."""
    try:
        batch = next(gen)
        while True:
            # cache hits need no task; only the misses run concurrently
            answers = [cache.get(q) if cache is not None else None for q in batch]
            misses = [i for i, a in enumerate(answers) if a is None]
            if misses:
                fetched = await asyncio.gather(*(lookup(resolver, batch[i], cache) for i in misses))
                for i, a in zip(misses, fetched):
                    answers[i] = a
            batch = gen.send([a for a in answers if a is not None])
    except StopIteration as stop:
        return list(stop.value)


async def resolve(
    uri: Any,
    resolver: dns.asyncresolver.Resolver | None = None,
    cache: Cache | None = None,
    *,
    transports: Sequence[str] = ALL_TRANSPORTS,
    randint: RandInt = random.randint,
) -> list[Target]:
    """Targets for ``uri`` in the order to try them (RFC 3263); empty when nothing resolved.

    Args:
        uri: a ``sipd.sip.uri.URI`` (or anything with scheme/host/port/params), or its text.
        resolver: ``dns.asyncresolver.Resolver``; default: the system configuration.
        cache: shared :class:`Cache`; None disables caching.
        transports: transports we can use (NAPTR/SRV for others are skipped).
        randint: inclusive random integer source for SRV weights (tests inject one).
    """
    scheme, host, port, transport = _uri_fields(uri)
    if resolver is None:
        resolver = dns.asyncresolver.Resolver()
    return await run(plan(scheme, host, port, transport, transports=transports, randint=randint), resolver, cache)


def resolve_sync(
    uri: Any,
    resolver: dns.resolver.Resolver | None = None,
    cache: Cache | None = None,
    *,
    transports: Sequence[str] = ALL_TRANSPORTS,
    randint: RandInt = random.randint,
) -> list[Target]:
    """Blocking twin of :func:`resolve` (same plan), for sipctl."""
    scheme, host, port, transport = _uri_fields(uri)
    if resolver is None:
        resolver = dns.resolver.Resolver()
    return run_sync(plan(scheme, host, port, transport, transports=transports, randint=randint), resolver, cache)


# ---------------------------------------------------------------------------------------------
# Resolver construction from configuration


def parse_nameserver(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT``, ``IPv6`` or ``[IPv6]:PORT`` -> (ip, port). Raises ValueError."""
    s = text.strip()
    host, port = s, 53
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise ValueError(f"name server {text!r}: missing ']'")
        host, rest = s[1:end], s[end + 1:]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"name server {text!r}: write [IPv6]:PORT")
            port = int(rest[1:])
    elif s.count(":") == 1:
        host, p = s.split(":")
        if not p.isdigit():
            raise ValueError(f"name server {text!r}: port {p!r} is not a number")
        port = int(p)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"name server {text!r} is not an IP address (write IP or IP:PORT)") from None
    if not 0 < port < 65536:
        raise ValueError(f"name server {text!r}: port {port} out of range")
    return host, port


def configure(resolver: dns.resolver.Resolver, nameservers: Sequence[str], timeout: float) -> None:
    """Point ``resolver`` at ``nameservers`` (IP[:PORT]); ``timeout`` bounds each query in total."""
    if nameservers:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(n)) for n in nameservers]
    resolver.timeout = max(0.1, min(timeout, 2.0))  # per name server attempt
    resolver.lifetime = timeout
    resolver.use_search_by_default = False


def make_resolver(nameservers: Sequence[str] = (), timeout: float = 2.0) -> dns.resolver.Resolver:
    """A blocking resolver; no name servers means the system's (/etc/resolv.conf)."""
    r = dns.resolver.Resolver(configure=not nameservers)
    configure(r, nameservers, timeout)
    return r


def make_async_resolver(nameservers: Sequence[str] = (), timeout: float = 2.0) -> dns.asyncresolver.Resolver:
    """An asyncio resolver; no name servers means the system's (/etc/resolv.conf)."""
    r = dns.asyncresolver.Resolver(configure=not nameservers)
    configure(r, nameservers, timeout)
    return r


class SipResolver:
    """What the daemon holds: an async resolver and a cache built from ``[dns]``."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic):
        d = config.dns
        self.resolver = make_async_resolver(d.nameservers, d.timeout)
        self.cache = Cache(max_entries=d.cache_size, negative_ttl=d.negative_ttl, clock=clock)

    async def resolve(self, uri: Any, *, transports: Sequence[str] = ALL_TRANSPORTS) -> list[Target]:
        return await resolve(uri, self.resolver, self.cache, transports=transports)
