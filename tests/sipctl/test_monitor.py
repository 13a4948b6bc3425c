"""sipctl monitor against a real management server: layout, rates, the daemon going away."""

from __future__ import annotations

import threading

from mgmtfixtures import daemon, sipctl  # noqa: F401

from sipctl.errors import ExitStatus


def test_monitor_once_shows_moved_counters(daemon, sipctl):
    daemon.state.stats.counter("tm:UAS_transactions").inc(7)
    daemon.state.stats.counter("core:rcv_requests").inc(42)
    daemon.register("alice@example.test", 2)
    r = sipctl("monitor", "--once")
    assert r.code == 0
    for text in ("[cycle #: 1; if constant make sure server lives]", "Server:: sipd", "Up time::",
                 "Transaction Statistics", "Stateless Server Statistics", "UsrLoc Stats",
                 "usrloc:location-contacts"):
        assert text in r.out, text
    line = next(x for x in r.out.splitlines() if "tm:UAS_transactions" in x)
    assert "7" in line
    line = next(x for x in r.out.splitlines() if "usrloc:location-contacts" in x)
    assert "2" in line


def test_monitor_count_computes_rates(daemon, sipctl):
    counter = daemon.state.stats.counter("core:rcv_requests")
    stop = threading.Event()

    def traffic():
        for _ in range(200):
            if stop.wait(0.005):
                return
            daemon.loop.loop.call_soon_threadsafe(counter.inc, 10)
    t = threading.Thread(target=traffic)
    t.start()
    try:
        r = sipctl("monitor", "--count", "2", "--interval", "0.3")
    finally:
        stop.set()
        t.join()
    assert r.code == 0 and "[cycle #: 2;" in r.out
    last = r.out.split("[cycle #: 2;")[1]
    line = next(x for x in last.splitlines() if "core:rcv_requests" in x)
    assert float(line.split("\t")[2]) > 0  # per-second rate column (piped: tab-separated)


def test_monitor_exits_when_daemon_goes_away(daemon, sipctl):
    from sipctl.lib import stats

    real = stats.snapshot
    calls = {"n": 0}

    def snapshot(config):
        calls["n"] += 1
        if calls["n"] == 2:
            daemon.loop.run(daemon.server.close())  # sipd stops between two refreshes
        return real(config)
    stats.snapshot = snapshot
    try:
        r = sipctl("monitor", "--count", "5", "--interval", "0.1")
    finally:
        stats.snapshot = real
    assert r.code == ExitStatus.MGMT
    assert "sipd stopped answering after 1 refreshes" in r.err and "Traceback" not in r.err
