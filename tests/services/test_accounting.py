"""The accounting writer: batches to the database, spools while it is down, replays in order."""

from __future__ import annotations

import pytest

from sipd.db import DbUnavailable, connect, schema
from sipd.services.accounting import AccWriter, write_records
from sipd.services.spool import default_spool_path
from sipd.services.cdr import Record
from sipd.services.spool import Spool


def acc(i: int) -> Record:
    return Record("insert", "acc", {"method": "INVITE", "callid": f"c{i}", "sip_code": "200", "sip_reason": "OK",
                                    "time": "2024-05-01 10:00:00", "from_tag": "a", "to_tag": "b"})


class Flaky:
    """connect() that fails while ``down`` is set (like a database behind a cut link)."""

    def __init__(self, url: str):
        self.url = url
        self.down = False
        self.connects = 0

    def __call__(self):
        self.connects += 1
        if self.down:
            raise DbUnavailable("sqlite:///x", "link cut")
        return connect(self.url)


@pytest.fixture
def db_url(tmp_path):
    url = f"sqlite:///{tmp_path}/acc.db"
    with connect(url) as db:
        schema.create_all(db)
    return url


def callids(url: str) -> list[str]:
    with connect(url) as db:
        return [r["callid"] for r in db.query("SELECT callid FROM acc ORDER BY id")]


def test_outage_spools_then_replays_in_order(tmp_path, db_url, clock):
    link = Flaky(db_url)
    w = AccWriter(link, Spool(tmp_path / "acc.spool"), retry_interval=5.0, clock=clock)
    w.step([acc(0), acc(1)])
    assert callids(db_url) == ["c0", "c1"] and w.transactions == 1
    link.down = True
    # the connection is cached; make the write itself fail as a dropped link would
    w._close_db()
    w.step([acc(2)])
    assert w.db_down and w.spooled == 1
    link.down = False
    w.step([acc(3)])          # still before the retry time: spooled behind acc(2), order kept
    assert w.spooled == 2 and callids(db_url) == ["c0", "c1"]
    clock.advance(5.0)
    w.step([acc(4)])          # retry: the spool is replayed, then the new batch
    assert not w.db_down and callids(db_url) == [f"c{i}" for i in range(5)]
    assert not w.spool.pending() and w.replayed == 3
    w.step([acc(5)])
    assert callids(db_url)[-1] == "c5"
    w.stop()


def test_startup_replays_spool_and_loads_dialogs(tmp_path, db_url):
    sp = Spool(tmp_path / "acc.spool")
    row = {"dlg_id": 7, "callid": "live", "from_uri": "sip:a@x", "from_tag": "f", "to_uri": "sip:b@x", "to_tag": "t",
           "caller_cseq": "1", "callee_cseq": "0", "caller_sock": "", "callee_sock": "", "state": 4,
           "start_time": 1000, "timeout": 0, "vars": "{}"}
    sp.append([acc(0), Record("upsert", "dialog", row), Record("upsert", "dialog", dict(row, dlg_id=8)),
               Record("delete", "dialog", {"dlg_id": 8})])
    w = AccWriter(Flaky(db_url), sp)
    rows = w.startup()
    assert [r["dlg_id"] for r in rows] == [7] and callids(db_url) == ["c0"]
    w.stop()


def test_thread_batches_and_flushes_on_stop(tmp_path, db_url):
    w = AccWriter(Flaky(db_url), Spool(tmp_path / "acc.spool"))
    w.start()
    for i in range(50):
        w.put([acc(i)])
    w.stop(timeout=10)
    assert callids(db_url) == [f"c{i}" for i in range(50)]
    assert w.transactions <= 50 and w.written == 50


def test_database_unreachable_at_stop_spools(tmp_path, db_url):
    link = Flaky(db_url)
    link.down = True
    w = AccWriter(link, Spool(tmp_path / "acc.spool"), retry_interval=60)
    w.start()
    w.put([acc(1), acc(2)])
    w.stop(timeout=10)
    assert w.spool.count() == 2 and callids(db_url) == []


def test_write_records_upsert_delete(db_url):
    row = {"dlg_id": 1, "callid": "a", "state": 4}
    with connect(db_url) as db:
        write_records(db, [Record("upsert", "dialog", row), Record("upsert", "dialog", dict(row, state=3))])
        assert [r["state"] for r in db.query("SELECT state FROM dialog")] == [3]
        write_records(db, [Record("delete", "dialog", {"dlg_id": 1})])
        assert db.query("SELECT * FROM dialog") == []


def test_default_spool_path():
    assert default_spool_path("sqlite:////var/lib/sipd/sipd.db") == "/var/lib/sipd/acc.spool"
    assert default_spool_path("mysql://u@h/db").endswith("acc.spool")
    # a node of a cluster: its own file, so nodes on one machine never wait for each other's lock
    assert default_spool_path("mysql://u@h/db", "b").endswith("/acc-b.spool")


def test_write_records_groups_inserts_by_table_in_order(db_url):
    from sipd.services.acc_writer import MULTI_ROW

    recs = []
    for i in range(MULTI_ROW + 30):  # interleaved tables, more rows than one statement holds
        recs.append(acc(i))
        recs.append(Record("insert", "cdrs", {"callid": f"d{i}", "status": "answered",
                                              "start_time": "2024-05-01 10:00:00"}))
    recs.insert(7, Record("insert", "acc", {"method": "BYE", "callid": "odd-columns", "sip_code": "200",
                                            "time": "2024-05-01 10:00:00"}))
    with connect(db_url) as db:
        write_records(db, recs)
        cdrs = [r["callid"] for r in db.query("SELECT callid FROM cdrs ORDER BY id")]
    assert callids(db_url) == [f"c{i}" for i in range(MULTI_ROW + 30)] + ["odd-columns"]
    assert cdrs == [f"d{i}" for i in range(MULTI_ROW + 30)]
