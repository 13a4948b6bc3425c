"""sipctl stats show|reset|collect|history against a real management server and SQLite."""

from __future__ import annotations

import time

import pytest
from mgmtfixtures import daemon, sipctl  # noqa: F401

from sipctl.errors import ExitStatus


@pytest.fixture
def counters(daemon):
    s = daemon.state.stats
    s.counter("core:rcv_requests").inc(10)
    s.counter("core:fwd_requests").inc(3)
    s.counter("tm:UAS_transactions").inc(2)
    s.gauge("tm:inuse_transactions").set(1)
    return s


@pytest.fixture
def schema(daemon):
    from sipd.db import connect, schema

    db = connect(daemon.config.database.url)
    try:
        schema.create_all(db)
    finally:
        db.close()


def test_show_groups_names_and_json(daemon, sipctl, counters):
    r = sipctl("stats", "--json")
    assert r.code == 0 and r.json["core:rcv_requests"] == 10
    assert sipctl("stats", "core:", "--json").json == {"core:rcv_requests": 10, "core:fwd_requests": 3}
    assert sipctl("stats", "show", "tm:UAS_transactions", "--json").json == {"tm:UAS_transactions": 2}
    r = sipctl("stats", "tm:")
    assert "tm:UAS_transactions" in r.out and "tm:inuse_transactions" in r.out
    r = sipctl("stats", "nothing:")
    assert r.code == ExitStatus.NOT_FOUND and "Statistics Not Found" in r.err
    r = sipctl("stats", "bad name!")
    assert r.code == ExitStatus.USAGE


def test_reset(daemon, sipctl, counters):
    assert sipctl("stats", "reset", "core:").code == 0
    assert sipctl("stats", "core:", "tm:", "--json").json == {
        "core:rcv_requests": 0, "core:fwd_requests": 0, "tm:UAS_transactions": 2, "tm:inuse_transactions": 1}
    assert sipctl("stats", "reset").code == 0
    assert sipctl("stats", "tm:", "--json").json == {"tm:UAS_transactions": 0, "tm:inuse_transactions": 1}


def test_collect_twice_and_history(daemon, sipctl, counters, schema):
    r = sipctl("stats", "collect", "--json")
    assert r.code == 0 and r.json["inserted"] == 7  # 4 above + 3 usrloc gauges
    counters.counter("core:rcv_requests").inc(5)
    assert sipctl("stats", "collect", "core:rcv_requests").code == 0
    rows = sipctl("stats", "history", "core:rcv_requests", "--json").json
    assert [r["value"] for r in rows] == [10, 15]
    r = sipctl("stats", "history", "core:rcv_requests")
    assert r.code == 0 and "samples" in r.out and "█" in r.out
    r = sipctl("stats", "history", "core:never", "--since", "1h")
    assert r.code == 0 and "no samples" in r.err
    assert sipctl("stats", "history", "core:rcv_requests", "--since", "yesterday-ish").code == ExitStatus.USAGE


def test_collect_purges_old_rows(daemon, sipctl, counters, schema):
    from sipd.db import connect

    db = connect(daemon.config.database.url)
    try:
        db.execute("INSERT INTO stats_history (time, name, value) VALUES (?, ?, ?)",
                   (int(time.time()) - 40 * 86400, "core:rcv_requests", 1))
    finally:
        db.close()
    r = sipctl("stats", "collect", "--keep-days", "31", "--json")
    assert r.json["purged"] == 1
    rows = sipctl("stats", "history", "core:rcv_requests", "--since", "8w", "--json").json
    assert [r["value"] for r in rows] == [10]


def test_collect_without_schema_is_one_line(daemon, sipctl, counters):
    r = sipctl("stats", "collect")
    assert r.code == ExitStatus.DB and "Traceback" not in r.err and r.err.startswith("Error:")


def test_chart_and_since_units():
    from sipctl.lib.stats import chart, parse_since

    lines = chart([(1_700_000_000 + i * 60, i * i) for i in range(200)], width=50, height=4)
    assert len(lines) == 6 and all(len(line) <= 12 + 50 for line in lines[:4])
    assert lines[0].strip().startswith("39601")
    assert chart([]) == []
    assert len(chart([(1_700_000_000, 5)] * 3)) == 10
    assert parse_since("2h", now=10_000) == 10_000 - 7200
    assert parse_since(None, now=100_000) == 100_000 - 86400
