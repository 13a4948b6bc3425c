"""RFC 3263 resolution: the pure plan against in-memory DNS data, then the drivers against dnsmasq."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from sipd.services import resolve as R
from sipd.services.resolve import Answer, Cache, Naptr, Query, Srv, Status, Target
from tests.conftest import FakeClock, require_tool
from tests.helpers.dnsmasq import GOOD_ZONE, Dnsmasq


@dataclass
class Uri:
    """Stands in for sipd.sip.uri.URI (same attribute names)."""

    scheme: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def transport(self) -> str | None:
        t = self.params.get("transport")
        return t.lower() if t else None


def run_plan(uri: Uri, data: dict[tuple[str, str], tuple], *, randint=lambda a, b: a, transports=R.ALL_TRANSPORTS):
    """Drive the plan with an in-memory zone; returns (targets, queries asked in order)."""
    asked: list[tuple[str, str]] = []
    gen = R.plan(uri.scheme, uri.host, uri.port, uri.transport, randint=randint, transports=transports)
    try:
        batch = next(gen)
        while True:
            answers = []
            for q in batch:
                asked.append((q.name, q.rdtype))
                recs = data.get((q.name, q.rdtype))
                answers.append(Answer(q, Status.OK, tuple(recs), 60) if recs else Answer(q, Status.NXDOMAIN))
            batch = gen.send(answers)
    except StopIteration as stop:
        return stop.value, asked


ZONE = {
    ("example.test", "NAPTR"): (
        Naptr(30, 10, "s", "SIP+D2U", "", "_sip._udp.example.test"),
        Naptr(10, 10, "s", "SIPS+D2T", "", "_sips._tcp.example.test"),
        Naptr(20, 10, "s", "SIP+D2T", "", "_sip._tcp.example.test"),
        Naptr(5, 10, "s", "E2U+sip", "", "ignored.example.test"),
    ),
    ("_sips._tcp.example.test", "SRV"): (Srv(10, 0, 5061, "sip.example.test"),),
    ("_sip._tcp.example.test", "SRV"): (Srv(10, 0, 5060, "sip.example.test"),),
    ("_sip._udp.example.test", "SRV"): (Srv(20, 0, 5080, "sip2.example.test"), Srv(10, 0, 5060, "sip.example.test")),
    ("sip.example.test", "A"): ("192.0.2.1",),
    ("sip.example.test", "AAAA"): ("2001:db8::1",),
    ("sip2.example.test", "A"): ("192.0.2.2",),
    ("plain.test", "A"): ("192.0.2.9",),
}


def test_numeric_host_short_circuits_dns():
    assert run_plan(Uri("sip", "192.0.2.7"), {}) == ([Target("udp", "192.0.2.7", 5060, "192.0.2.7")], [])
    assert run_plan(Uri("sips", "2001:db8::5"), {})[0] == [Target("tls", "2001:db8::5", 5061, "2001:db8::5")]
    t, asked = run_plan(Uri("sip", "192.0.2.7", 5070, {"transport": "TCP"}), {})
    assert t == [Target("tcp", "192.0.2.7", 5070, "192.0.2.7")] and asked == []


def test_naptr_then_srv_then_addresses_in_order():
    targets, asked = run_plan(Uri("sip", "example.test"), ZONE)
    assert asked[0] == ("example.test", "NAPTR")
    assert [a for a in asked if a[1] == "SRV"] == [
        ("_sips._tcp.example.test", "SRV"), ("_sip._tcp.example.test", "SRV"), ("_sip._udp.example.test", "SRV")]
    assert targets == [
        Target("tls", "192.0.2.1", 5061, "sip.example.test"),
        Target("tls", "2001:db8::1", 5061, "sip.example.test"),
        Target("tcp", "192.0.2.1", 5060, "sip.example.test"),
        Target("tcp", "2001:db8::1", 5060, "sip.example.test"),
        Target("udp", "192.0.2.1", 5060, "sip.example.test"),     # priority 10 before 20
        Target("udp", "2001:db8::1", 5060, "sip.example.test"),
        Target("udp", "192.0.2.2", 5080, "sip2.example.test"),
    ]


def test_naptr_filtered_by_supported_transports():
    targets, _ = run_plan(Uri("sip", "example.test"), ZONE, transports=("udp",))
    assert {t.transport for t in targets} == {"udp"}


def test_explicit_port_uses_only_a_aaaa():
    targets, asked = run_plan(Uri("sip", "example.test", 5099), ZONE | {("example.test", "A"): ("192.0.2.50",)})
    assert asked == [("example.test", "A"), ("example.test", "AAAA")]
    assert targets == [Target("udp", "192.0.2.50", 5099, "example.test")]


def test_transport_param_skips_naptr():
    targets, asked = run_plan(Uri("sip", "example.test", None, {"transport": "tcp"}), ZONE)
    assert asked[0] == ("_sip._tcp.example.test", "SRV")
    assert all(t.transport == "tcp" and t.port == 5060 for t in targets)


def test_sips_uses_tls_only():
    targets, asked = run_plan(Uri("sips", "example.test"), ZONE)
    assert {t.transport for t in targets} == {"tls"} and targets[0].port == 5061
    # sips with transport=tcp still means TLS (RFC 3261 §26.2)
    targets, asked = run_plan(Uri("sips", "example.test", None, {"transport": "tcp"}), ZONE)
    assert asked[0] == ("_sips._tcp.example.test", "SRV") and targets[0].transport == "tls"


def test_no_naptr_falls_back_to_srv_in_order():
    zone = {k: v for k, v in ZONE.items() if k[1] != "NAPTR"}
    targets, asked = run_plan(Uri("sip", "example.test"), zone)
    assert [a for a in asked if a[1] == "SRV"] == [
        ("_sips._tcp.example.test", "SRV"), ("_sip._tcp.example.test", "SRV"), ("_sip._udp.example.test", "SRV")]
    assert [t.transport for t in targets][:2] == ["tls", "tls"]


def test_naptr_leading_nowhere_falls_back_to_srv():
    zone = {("example.test", "NAPTR"): (Naptr(10, 10, "s", "SIP+D2U", "", "_missing.example.test"),),
            ("_sip._udp.example.test", "SRV"): (Srv(1, 0, 5062, "sip.example.test"),),
            ("sip.example.test", "A"): ("192.0.2.1",)}
    assert run_plan(Uri("sip", "example.test"), zone)[0] == [Target("udp", "192.0.2.1", 5062, "sip.example.test")]


def test_no_srv_falls_back_to_a_with_default_port():
    assert run_plan(Uri("sip", "plain.test"), ZONE)[0] == [Target("udp", "192.0.2.9", 5060, "plain.test")]
    assert run_plan(Uri("sips", "plain.test"), ZONE)[0] == [Target("tls", "192.0.2.9", 5061, "plain.test")]
    assert run_plan(Uri("sip", "nowhere.test"), ZONE)[0] == []


def test_srv_dot_target_means_not_offered():
    zone = {("_sip._udp.x.test", "SRV"): (Srv(0, 0, 0, ""),), ("x.test", "A"): ("192.0.2.3",)}
    assert run_plan(Uri("sip", "x.test", None, {"transport": "udp"}), zone)[0] == [Target("udp", "192.0.2.3", 5060, "x.test")]


def test_srv_weights_follow_rfc2782_running_sum():
    recs = [Srv(10, 60, 5060, "a"), Srv(10, 40, 5060, "b"), Srv(10, 0, 5060, "z"), Srv(5, 1, 5060, "first")]
    picks = iter([0, 0, 0, 0])  # 0 selects the zero-weight record first (it leads the running sum)
    assert [r.target for r in R.order_srv(recs, lambda a, b: next(picks))] == ["first", "z", "a", "b"]
    calls: list[tuple[int, int]] = []

    def high(a: int, b: int) -> int:
        calls.append((a, b))
        return b  # the maximum lands on the last record of the running sum
    assert [r.target for r in R.order_srv(recs, high)] == ["first", "b", "a", "z"]
    assert calls == [(0, 1), (0, 100), (0, 60), (0, 0)]


def test_srv_weights_distribution_with_seeded_random():
    import random

    rng = random.Random(1234)
    recs = [Srv(10, 60, 5060, "a"), Srv(10, 40, 5060, "b")]
    firsts = [R.order_srv(recs, rng.randint)[0].target for _ in range(2000)]
    share = firsts.count("a") / len(firsts)
    assert 0.55 < share < 0.65  # 60/100 within a generous band; deterministic with the seed


def test_cache_ttl_negative_and_bound():
    clock = FakeClock()
    cache = Cache(max_entries=2, negative_ttl=30, failure_ttl=5, clock=clock)
    q1, q2, q3 = Query("a.test", "A"), Query("B.test.", "A"), Query("c.test", "A")
    cache.put(Answer(q1, Status.OK, ("192.0.2.1",), ttl=60))
    assert cache.get(Query("A.TEST.", "A")) is not None  # case and trailing dot insensitive
    clock.advance(59.9)
    assert cache.get(q1) is not None
    clock.advance(0.2)
    assert cache.get(q1) is None
    cache.put(Answer(q2, Status.NXDOMAIN))            # no SOA: negative_ttl applies
    clock.advance(29)
    assert cache.get(q2).status is Status.NXDOMAIN
    clock.advance(2)
    assert cache.get(q2) is None
    cache.put(Answer(q1, Status.TIMEOUT))
    cache.put(Answer(q2, Status.OK, ("x",), ttl=100))
    cache.put(Answer(q3, Status.OK, ("y",), ttl=100))  # bound 2: q1 (least recently used) goes
    assert len(cache) == 2 and cache.get(q1) is None
    cache.put(Answer(q1, Status.ERROR))               # not cached
    assert cache.get(q1) is None


def test_parse_nameserver():
    assert R.parse_nameserver("127.0.0.1") == ("127.0.0.1", 53)
    assert R.parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert R.parse_nameserver("[::1]:5353") == ("::1", 5353)
    assert R.parse_nameserver("::1") == ("::1", 53)
    for bad in ("ns.example.test", "127.0.0.1:x", "127.0.0.1:70000", "[::1"):
        with pytest.raises(ValueError):
            R.parse_nameserver(bad)


# ---------------------------------------------------------------------------------------------
# Against a real DNS server

@pytest.fixture(scope="module")
def good_ns(tmp_path_factory):
    require_tool("dnsmasq")
    with Dnsmasq(tmp_path_factory.mktemp("dns"), GOOD_ZONE, ttl=300) as ns:
        yield ns


EXPECTED_GOOD = [
    Target("tls", "127.0.0.2", 5061, "sip.example.test"),
    Target("tcp", "127.0.0.2", 5060, "sip.example.test"),
    Target("udp", "127.0.0.2", 5060, "sip.example.test"),
    Target("udp", "127.0.0.3", 5060, "sip2.example.test"),
]


@pytest.mark.e2e
def test_sync_and_async_agree_against_dnsmasq(good_ns):
    sync = R.resolve_sync(Uri("sip", "example.test"), R.make_resolver([good_ns.nameserver], 2.0))
    res = asyncio.run(R.resolve(Uri("sip", "example.test"), R.make_async_resolver([good_ns.nameserver], 2.0)))
    assert sync == res == EXPECTED_GOOD
    udp = R.resolve_sync(Uri("sip", "example.test", None, {"transport": "udp"}), R.make_resolver([good_ns.nameserver]))
    assert udp == EXPECTED_GOOD[2:]
    # the real URI type (and its text) works the same as the stand-in
    from sipd.sip.uri import parse_uri

    resolver = R.make_resolver([good_ns.nameserver])
    assert R.resolve_sync(parse_uri("sips:bob@example.test"), resolver) == EXPECTED_GOOD[:1]
    assert R.resolve_sync("sip:bob@sip.example.test:5080;transport=TCP", resolver) == [
        Target("tcp", "127.0.0.2", 5080, "sip.example.test")]
    assert R.resolve_sync("sip:bob@example.test:5080", resolver) == []  # no A for the bare domain


@pytest.mark.e2e
def test_cache_answers_after_server_is_gone(tmp_path):
    require_tool("dnsmasq")
    clock = FakeClock()
    cache = Cache(clock=clock)
    with Dnsmasq(tmp_path, GOOD_ZONE, ttl=120) as ns:
        resolver = R.make_async_resolver([ns.nameserver], 0.5)
        first = asyncio.run(R.resolve(Uri("sips", "example.test"), resolver, cache))
        assert first == EXPECTED_GOOD[:1]
        assert cache.get(Query("sip.example.test", "AAAA")).status is Status.NODATA  # negative entry
    # the server is gone: the answers still come from the cache until the TTL runs out
    assert asyncio.run(R.resolve(Uri("sips", "example.test"), resolver, cache)) == first
    clock.advance(121)
    started = time.monotonic()
    assert asyncio.run(R.resolve(Uri("sips", "example.test"), resolver, cache)) == []
    assert time.monotonic() - started < 5  # timeouts are bounded and become "no targets"


@pytest.mark.e2e
def test_config_drives_the_daemon_resolver(good_ns):
    from sipd import config as cfg

    conf, problems = cfg.from_dict({"dns": {"nameservers": [good_ns.nameserver], "timeout": 1.0}})
    assert not problems
    sr = R.SipResolver(conf)
    assert asyncio.run(sr.resolve(Uri("sip", "example.test"), transports=("tcp",))) == [EXPECTED_GOOD[1]]
    assert len(sr.cache) > 0


def test_is_numeric_answers_the_same_when_remembered_and_stays_bounded():
    hosts = {"192.0.2.1": True, "[2001:db8::1]": True, "2001:db8::1": True, "example.test": False,
             "192.0.2.256": False, "[example.test]": False, "01.2.3.4": False, "": False}
    for _ in range(2):  # the second time from what it remembers
        assert {h: R.is_numeric(h) for h in hosts} == hosts
    for i in range(3 * R._NUMERIC_MAX):  # a scanner's random names
        assert not R.is_numeric(f"h{i}.example")
    assert len(R._NUMERIC) <= R._NUMERIC_MAX
    assert {h: R.is_numeric(h) for h in hosts} == hosts
