"""The overload gate (sipd/overload.py): who is shed first, pure (times passed in)."""

from __future__ import annotations

from sipd.config import OverloadSection
from sipd.overload import LAGGED_PROBES, OverloadGate
from sipd.services.antiflood import TrustedNetworks

INITIAL = (b"INVITE sip:u1@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n"
           b"From: <sip:b@example.test>;tag=1\r\nTo: <sip:u1@example.test>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n")
IN_DIALOG = INITIAL.replace(b"To: <sip:u1@example.test>", b"t: <sip:u1@example.test> ; TAG=9")


def gate(**kw):
    tx = kw.pop("tx", 0)
    cfg = OverloadSection(**kw)
    return OverloadGate(cfg, trusted=TrustedNetworks(["10.0.0.0/8"]), transactions=lambda: tx, max_transactions=100)


def admitted(g, host, n, now, data=INITIAL):
    return sum(g.admit(data, host, now) for _ in range(n))


def test_unknown_sources_get_unknown_rate_per_second_known_ones_everything():
    g = gate(unknown_rate=100)
    g.note_known("192.0.2.1", 0.0)
    assert admitted(g, "198.51.100.7", 500, 1.0) == 100  # a burst of one second's worth
    assert admitted(g, "192.0.2.1", 500, 1.0) == 500
    assert admitted(g, "10.1.2.3", 50, 1.0) == 50  # trusted network
    assert admitted(g, "198.51.100.8", 50, 1.0, IN_DIALOG) == 50  # in-dialog (compact To, tag in any case)
    assert admitted(g, "198.51.100.8", 50, 1.5) == 50  # refilled at the rate
    assert g.shed == 400


def strangers(g, n, now):
    for _ in range(n):
        g.admit(INITIAL, "198.51.100.99", now)


def test_lag_saturates_only_while_strangers_keep_arriving_and_for_hold_seconds():
    g = gate(max_loop_lag=0.1, hold=2.0, unknown_rate=1_000_000)
    for i in range(LAGGED_PROBES + 2):
        strangers(g, 10, 10.0 + i)  # a few (200/s): the lag is not theirs to pay for
        g.lagged(0.5, 0.05, 10.0 + i)
    assert not g.saturated(15.0) and g.admit(INITIAL, "198.51.100.7", 15.0)
    for _ in range(LAGGED_PROBES - 1):
        strangers(g, 100, 20.0)
        g.lagged(0.5, 0.05, 20.0)
    strangers(g, 100, 20.0)
    g.lagged(0.0, 0.05, 20.0)  # one probe on time: not overloaded
    strangers(g, 100, 20.1)
    g.lagged(0.5, 0.05, 20.1)
    assert not g.saturated(20.1)
    for _ in range(LAGGED_PROBES):
        strangers(g, 100, 21.0)  # 2,000/s
        g.lagged(0.5, 0.05, 21.0)
    assert g.saturated(21.5)
    assert not g.admit(INITIAL, "198.51.100.7", 21.5) and g.admit(INITIAL, "10.9.9.9", 21.5)
    g.note_known("192.0.2.1", 21.5)
    assert g.admit(INITIAL, "192.0.2.1", 21.6)
    assert g.admit(INITIAL, "198.51.100.7", 23.1)  # hold over


def test_transaction_bound_sheds_unknown_sources_only():
    g = gate(tx=100)
    g.note_known("192.0.2.1", 0.0)
    assert not g.admit(INITIAL, "198.51.100.7", 1.0)
    assert g.admit(INITIAL, "192.0.2.1", 1.0) and g.admit(IN_DIALOG, "198.51.100.7", 1.0)


def test_known_addresses_expire_are_bounded_and_announced_once():
    g = gate(known_ttl=60.0, max_known=3, unknown_rate=1)
    told = []
    g.on_new = lambda host, until: told.append((host, until))
    for i in range(5):
        g.note_known(f"192.0.2.{i}", 0.0)
    assert list(g.known) == ["192.0.2.2", "192.0.2.3", "192.0.2.4"]  # the oldest forgotten
    g.note_known("192.0.2.4", 10.0)  # within the first half of its lifetime: not renewed nor announced
    assert len(told) == 5
    g.note_known("192.0.2.4", 40.0)
    assert told[-1] == ("192.0.2.4", 100.0)
    assert g.is_known("192.0.2.4", 99.0) and not g.is_known("192.0.2.3", 61.0)
    g.admit(INITIAL, "192.0.2.3", 61.0)  # the one token
    assert not g.admit(INITIAL, "192.0.2.3", 61.0)  # expired: unknown again
    g.learn("203.0.113.1", 500.0)  # from another process
    assert g.is_known("203.0.113.1", 499.0) and len(g.known) == 3
    g.learn("203.0.113.1", 100.0)  # older news does not shorten it
    assert g.known["203.0.113.1"] == 500.0


def test_disabled_admits_everything():
    g = gate(enabled=False, unknown_rate=1)
    assert admitted(g, "198.51.100.7", 10, 1.0) == 10


def test_a_filling_receive_queue_sheds_strangers_at_once_for_hold_seconds():
    g = gate(max_receive_queue=0.1, hold=2.0)
    g.queue_filled(0.05, 1.0)
    assert not g.saturated(1.0)
    g.queue_filled(0.3, 1.0)
    assert g.saturated(2.9) and not g.admit(INITIAL, "198.51.100.7", 2.9)
    assert g.admit(IN_DIALOG, "198.51.100.7", 2.9)
    g.queue_filled(0.0, 3.0)
    assert g.admit(INITIAL, "198.51.100.7", 3.0)


def test_misses_of_the_subscriber_cache_are_bounded_and_rarely_reach_the_database():
    """A flood of random user names: at most MISS_LOOKUPS_PER_S database look-ups a second, the
    rest answered from memory; the remembered misses stay within NEGATIVE_MAX."""
    from sipd.services import auth
    from sipd.services.auth import MISS_LOOKUPS_PER_S, NEGATIVE_MAX, SubscriberCache

    subs = SubscriberCache()
    allowed = sum(subs.may_look_up(100.0) for _ in range(1000))
    assert allowed == MISS_LOOKUPS_PER_S
    assert sum(subs.may_look_up(100.5) for _ in range(1000)) == MISS_LOOKUPS_PER_S // 2  # refilled at the rate
    for i in range(NEGATIVE_MAX + 50):
        subs.put(f"r{i}", "example.test", None, 100.0)
    assert len(subs._negative) == NEGATIVE_MAX
    assert subs.known_missing(f"r{NEGATIVE_MAX + 49}", "example.test", 101.0)
    assert not subs.known_missing("r0", "example.test", 101.0)  # the oldest forgotten
    assert not subs.known_missing(f"r{NEGATIVE_MAX + 49}", "example.test", 100.0 + auth.NEGATIVE_TTL)
