"""The statistics registry and its Prometheus rendering."""

from __future__ import annotations

import pytest

from sipd.stats import Counter, Gauge, Statistics, StatsError, prometheus_text


def test_counters_gauges_and_patterns() -> None:
    s = Statistics()
    rcv = s.counter("core:rcv_requests")
    rcv.inc()
    rcv.inc(4)
    assert s.counter("core:rcv_requests") is rcv
    s.counter("tm:UAS_transactions").inc(2)
    g = s.gauge("tm:inuse_transactions")
    g.inc()
    g.inc()
    g.dec()
    live = [7]
    s.gauge("usrloc:location-users", lambda: live[0])
    assert s.get("all") == {"core:rcv_requests": 5, "tm:UAS_transactions": 2, "tm:inuse_transactions": 1,
                            "usrloc:location-users": 7}
    assert s.get("tm:") == {"tm:UAS_transactions": 2, "tm:inuse_transactions": 1}
    assert s.get("rcv_requests") == {"core:rcv_requests": 5}  # bare name, any group
    assert s.get(["core:rcv_requests", "nope:x"]) == {"core:rcv_requests": 5}
    live[0] = 9
    assert s.get("usrloc:location-users") == {"usrloc:location-users": 9}
    assert s.kinds("tm:") == {"tm:UAS_transactions": "incremental", "tm:inuse_transactions": "non-incremental"}
    assert s.groups() == ["core", "tm", "usrloc"]


def test_reset_touches_counters_only() -> None:
    s = Statistics()
    s.counter("sl:sent_replies").inc(3)
    s.gauge("sl:level").set(4)
    assert s.reset("sl:") == 2
    assert s.get("sl:") == {"sl:sent_replies": 0, "sl:level": 4}
    assert s.reset("sl:nothing") == 0


def test_bad_names_and_kind_clash() -> None:
    s = Statistics()
    with pytest.raises(StatsError):
        s.counter("no_group")
    with pytest.raises(StatsError):
        s.counter("a:b c")
    s.counter("a:b")
    with pytest.raises(StatsError):
        s.gauge("a:b")
    s.gauge("a:g")
    with pytest.raises(StatsError):
        s.counter("a:g")


def test_broken_gauge_reads_zero() -> None:
    s = Statistics()
    s.gauge("x:broken", lambda: 1 // 0)
    assert s.get("x:") == {"x:broken": 0}


def test_prometheus_text() -> None:
    s = Statistics()
    s.counter("core:rcv_requests").inc(2)
    s.gauge("usrloc:location-users").set(3)
    text = prometheus_text(s)
    assert "# TYPE sipd_core_rcv_requests counter\nsipd_core_rcv_requests 2\n" in text
    assert "# TYPE sipd_usrloc_location_users gauge\nsipd_usrloc_location_users 3\n" in text
    assert isinstance(s.counter("core:rcv_requests"), Counter) and isinstance(s.gauge("usrloc:location-users"), Gauge)
