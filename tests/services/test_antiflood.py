"""Flood counter, ban table, auth-failure tracker: pure, driven by a fake clock."""

from __future__ import annotations

import logging
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipd import config as cfg
from sipd.services.antiflood import (
    AUTH,
    FLOOD,
    MANUAL,
    Antiflood,
    AntifloodSettings,
    BanTable,
    FailureTracker,
    RateCounter,
    TrustedNetworks,
    auth_failure_line,
)


def make(**kw) -> Antiflood:
    kw.setdefault("trusted", ())
    return Antiflood(AntifloodSettings(**kw))


# -- rate counter ---------------------------------------------------------------------------

def test_rate_counter_counts_within_window(clock):
    rc = RateCounter(window=2.0)
    for i in range(10):
        est = rc.hit("192.0.2.1", clock.now)
    assert est == 10


def test_rate_counter_slides(clock):
    rc = RateCounter(window=2.0)
    for _ in range(10):
        rc.hit("192.0.2.1", clock.now)
    clock.advance(3.0)  # 1 s into the next bucket: half of the previous still counts
    assert rc.hit("192.0.2.1", clock.now) == pytest.approx(1 + 10 * 0.5)
    clock.advance(10.0)  # long idle: nothing carried over
    assert rc.hit("192.0.2.1", clock.now) == 1


def test_rate_counter_is_bounded_and_evicts_least_recently_active(clock):
    rc = RateCounter(window=1.0, max_tracked=3)
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        rc.hit(ip, clock.now)
    clock.advance(1.5)
    rc.hit("10.0.0.1", clock.now)  # rolls a bucket: moves to the end
    rc.hit("10.0.0.4", clock.now)  # evicts 10.0.0.2 (oldest activity)
    assert len(rc) == 3 and rc.evicted == 1
    assert set(rc._entries) == {"10.0.0.1", "10.0.0.3", "10.0.0.4"}


def test_rate_counter_purge(clock):
    rc = RateCounter(window=1.0)
    rc.hit("10.0.0.1", clock.now)
    clock.advance(5)
    rc.hit("10.0.0.2", clock.now)
    assert rc.purge(clock.now) == 1
    assert len(rc) == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=300))
def test_rate_estimate_never_undercounts_a_true_window(gaps):
    """The two-bucket estimate is >= the exact count of the last window minus the older bucket's share
    and never exceeds the exact count over the last two windows (so bans are neither lost nor wild)."""
    rc = RateCounter(window=1.0)
    now = 0.0
    times: list[float] = []
    for g in gaps:
        now += g
        times.append(now)
        est = rc.hit("x", now)
        exact_2w = sum(1 for t in times if now - t < 2.0)
        assert est <= exact_2w + 1e-9
        cur_bucket = sum(1 for t in times if t >= rc._entries["x"][0])
        assert est >= cur_bucket - 1e-9


# -- ban table ------------------------------------------------------------------------------

def test_ban_expires(clock):
    t = BanTable()
    t.add("192.0.2.7", clock.now, 10, FLOOD)
    assert t.is_banned("192.0.2.7", clock.now)
    assert not t.is_banned("192.0.2.8", clock.now)
    clock.advance(10)
    assert not t.is_banned("192.0.2.7", clock.now)
    assert len(t) == 0


def test_permanent_manual_ban_and_remove(clock):
    t = BanTable()
    ban = t.add("2001:db8::0001", clock.now, None, MANUAL)
    assert ban.target == "2001:db8::1" and math.isinf(ban.until)
    clock.advance(1e6)
    assert t.is_banned("2001:db8::1", clock.now)
    assert t.remove("[2001:db8::1]")
    assert not t.is_banned("2001:db8::1", clock.now)
    assert not t.remove("2001:db8::1")


def test_network_ban(clock):
    t = BanTable()
    t.add("198.51.100.0/24", clock.now, 60, MANUAL)
    assert t.is_banned("198.51.100.77", clock.now)
    assert not t.is_banned("198.51.101.1", clock.now)
    assert not t.is_banned("::1", clock.now)
    assert t.get("198.51.100.0/24").hits == 1
    assert t.remove("198.51.100.0/24")
    assert not t.is_banned("198.51.100.77", clock.now)
    t.add("203.0.113.5/32", clock.now, 60, MANUAL)  # a /32 is an address
    assert t.get("203.0.113.5") is not None


def test_ban_rejects_garbage(clock):
    t = BanTable()
    with pytest.raises(ValueError):
        t.add("not-an-ip", clock.now, 10, MANUAL)
    with pytest.raises(ValueError):
        t.add("10.0.0.0/33", clock.now, 10, MANUAL)


def test_ban_table_is_bounded_and_keeps_manual_bans(clock):
    t = BanTable(max_bans=3)
    t.add("10.0.0.1", clock.now, None, MANUAL)
    t.add("10.0.0.2", clock.now, 60, FLOOD)
    t.add("10.0.0.3", clock.now, 60, FLOOD)
    t.add("10.0.0.4", clock.now, 60, FLOOD)  # evicts 10.0.0.2 (oldest automatic)
    assert len(t) == 3 and t.evicted == 1
    assert t.get("10.0.0.1") and not t.get("10.0.0.2")


def test_ban_list_sorted_and_purged(clock):
    t = BanTable()
    t.add("10.0.0.2", clock.now, 5, FLOOD)
    clock.advance(1)
    t.add("10.0.0.1", clock.now, 100, AUTH)
    clock.advance(5)
    assert [b.target for b in t.list(clock.now)] == ["10.0.0.1"]
    d = t.list(clock.now)[0].as_dict(clock.now)
    assert d == {"ip": "10.0.0.1", "reason": "auth", "expires_in": 95, "age": 5, "hits": 0, "node": ""}


# -- trusted networks -----------------------------------------------------------------------

def test_trusted_networks():
    tn = TrustedNetworks(["10.0.0.0/8", "::1", "[2001:db8::]/32"])
    assert "10.1.2.3" in tn and "::1" in tn and "2001:db8::5" in tn
    assert "11.0.0.1" not in tn and "garbage" not in tn
    assert "10.1.2.3" in tn  # from the cache
    with pytest.raises(ValueError, match="not an IP"):
        TrustedNetworks(["10.0.0.0/40"])


# -- failure tracker ------------------------------------------------------------------------

def test_failures_within_window_reach_threshold(clock):
    ft = FailureTracker(threshold=3, window=60)
    assert not ft.failure("10.0.0.1", clock.now)
    clock.advance(10)
    assert not ft.failure("10.0.0.1", clock.now)
    assert ft.count("10.0.0.1", clock.now) == 2
    clock.advance(10)
    assert ft.failure("10.0.0.1", clock.now)
    assert ft.count("10.0.0.1", clock.now) == 0  # reset after the verdict


def test_slow_failures_never_reach_threshold(clock):
    ft = FailureTracker(threshold=3, window=60)
    for _ in range(20):
        assert not ft.failure("10.0.0.1", clock.now)
        clock.advance(31)


def test_failure_tracker_bounded(clock):
    ft = FailureTracker(threshold=3, window=60, max_tracked=100)
    for i in range(1000):
        ft.failure(f"10.0.{i // 256}.{i % 256}", clock.now)
    assert len(ft) == 100
    clock.advance(61)
    assert ft.purge(clock.now) == 100


# -- the facade -----------------------------------------------------------------------------

def test_flood_bans_source_and_drops_until_expiry(clock, caplog):
    af = make(window=1.0, limit=50, ban_time=30)
    with caplog.at_level(logging.WARNING, logger="sipd.security"):
        verdicts = [af.check_packet("203.0.113.9", clock.now) for _ in range(200)]
    assert verdicts[:50] == [True] * 50
    assert not any(verdicts[50:])
    assert af.flood_bans == 1 and af.dropped_packets == 150
    assert "banned 203.0.113.9 for 30s: reason=flood" in caplog.text
    assert af.check_packet("203.0.113.10", clock.now)  # another source unaffected
    clock.advance(30)
    assert af.check_packet("203.0.113.9", clock.now)


def test_steady_legitimate_rate_is_never_banned(clock):
    af = make(window=2.0, limit=40)
    for _ in range(2000):  # 19 packets/s for ~100 s: below 40 per 2 s
        assert af.check_packet("192.0.2.50", clock.now)
        clock.advance(1 / 19)
    assert af.flood_bans == 0


def test_trusted_sources_never_banned_automatically(clock):
    af = make(window=1.0, limit=5, trusted=("127.0.0.0/8",), auth_fail_threshold=2)
    assert all(af.check_packet("127.0.0.1", clock.now) for _ in range(100))
    assert not af.auth_failed("127.0.0.1", clock.now)
    assert not af.auth_failed("127.0.0.1", clock.now)
    af.ban_add("127.0.0.1", clock.now)  # but the operator may
    assert not af.check_packet("127.0.0.1", clock.now)


def test_disabled_still_honours_manual_bans(clock):
    af = make(enabled=False, limit=1)
    assert all(af.check_packet("192.0.2.1", clock.now) for _ in range(10))
    af.ban_add("192.0.2.1", clock.now, 5)
    assert not af.check_packet("192.0.2.1", clock.now)
    assert af.is_banned("192.0.2.1", clock.now)
    clock.advance(5)
    assert not af.is_banned("192.0.2.1", clock.now)


def test_auth_failures_ban_and_log(clock, caplog):
    af = make(auth_fail_threshold=3, auth_fail_window=60, auth_fail_ban_time=120)
    with caplog.at_level(logging.WARNING, logger="sipd.security"):
        results = [af.auth_failed("198.51.100.4", clock.now, port=5062, user="alice", realm="example.test",
                                  reason="wrong_password") for _ in range(3)]
    assert results == [False, False, True]
    assert af.is_banned("198.51.100.4", clock.now)
    assert "auth failed: user=alice realm=example.test source=198.51.100.4:5062 reason=wrong_password" in caplog.text
    assert af.ban_list(clock.now)[0]["reason"] == "auth"
    clock.advance(120)
    assert not af.is_banned("198.51.100.4", clock.now)


def test_auth_failure_line_cannot_be_forged():
    line = auth_failure_line("x source=1.2.3.4:5 reason=y\nauth failed:", "r e", "2001:db8::1", 5060, "unknown_user")
    assert "\n" not in line and line.count(" source=") == 1 and line.count("=") == 4
    assert line.endswith("source=[2001:db8::1]:5060 reason=unknown_user")
    assert auth_failure_line("", "", "10.0.0.1", None, "malformed") == \
        "auth failed: user=- realm=- source=10.0.0.1 reason=malformed"


def test_scanner_ban_only_when_configured(clock):
    af = make()
    assert not af.scanner_seen("192.0.2.3", clock.now)
    af = make(scanner_ban_time=60)
    assert af.scanner_seen("192.0.2.3", clock.now)
    assert not af.check_packet("192.0.2.3", clock.now)


def test_ban_rm_forgets_counters(clock):
    af = make(window=10, limit=3, auth_fail_threshold=2)
    for _ in range(4):
        af.check_packet("192.0.2.1", clock.now)
    assert af.is_banned("192.0.2.1", clock.now)
    assert af.ban_rm("192.0.2.1")
    assert af.check_packet("192.0.2.1", clock.now)  # counting starts afresh
    assert not af.ban_rm("192.0.2.1")
    with pytest.raises(ValueError):
        af.ban_add("bogus", clock.now)


def test_memory_bounded_under_spoofed_source_flood(clock):
    af = make(window=1.0, limit=2, max_tracked=1000, max_bans=500)
    for i in range(20000):
        ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        for _ in range(3):
            af.check_packet(ip, clock.now)
        clock.advance(0.0001)
    assert len(af.rates) <= 1000 and len(af.bans) <= 500
    assert af.flood_bans == 20000


def test_housekeeping_and_stats(clock):
    af = make(window=1.0, limit=1, ban_time=5)
    af.check_packet("10.0.0.1", clock.now)
    af.check_packet("10.0.0.1", clock.now)
    af.check_packet("10.0.0.2", clock.now)
    s = af.stats()
    assert s["antiflood:active_bans"] == 1 and s["antiflood:flood_bans"] == 1
    clock.advance(10)
    af.housekeeping(clock.now)
    assert af.stats()["antiflood:active_bans"] == 0 and af.stats()["antiflood:tracked_sources"] == 0


def test_from_config_defaults_are_safe():
    conf = cfg.Config()
    af = Antiflood.from_config(conf)
    assert af.settings.limit == conf.antiflood.limit
    assert "127.0.0.1" in af.trusted and "::1" in af.trusted and "192.0.2.1" not in af.trusted


def test_config_validation():
    conf, problems = cfg.from_dict({"antiflood": {"trusted_networks": ["10.0.0.0/99"], "limit": 0},
                                    "spam": {"action": "reject", "own_addresses": ["host.example"]}})
    keys = {p.key for p in cfg.validate_security(conf)}
    assert {"antiflood.trusted_networks[0]", "antiflood.limit", "spam.action", "spam.own_addresses[0]"} <= keys
