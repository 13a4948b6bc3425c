"""Accounting survives text that is not UTF-8 on the wire and failures of its own thread.

SIP text is decoded with ``surrogateescape``: a byte that is not UTF-8 reaches the records as a
lone surrogate. Such a record is stored (database and spool) with the byte written ``\\xHH``, the
writer thread keeps going, and a thread that died anyway is restarted with its queue intact.
"""

from __future__ import annotations

import threading

from sipd.db import connect
from sipd.db.base import storable, storable_text
from sipd.services.accounting import AccWriter
from sipd.services.cdr import Record
from sipd.services.spool import Spool
from tests.services.test_accounting import db_url  # noqa: F401 - the fixture: an SQLite file with the schema

HOSTILE = b"\xff\xfe\xed\xa0\x80caf\xc3\xa9".decode("utf-8", "surrogateescape")  # 5 bad bytes, then "café"


def acc(callid: str, reason: str = "OK") -> Record:
    return Record("insert", "acc", {"method": "INVITE", "callid": callid, "sip_code": "200", "sip_reason": reason,
                                    "time": "2024-05-01 10:00:00", "from_tag": "a", "to_tag": "b"})


def rows(url: str) -> list[tuple[str, str]]:
    with connect(url) as db:
        return [(r["callid"], r["sip_reason"]) for r in db.query("SELECT callid, sip_reason FROM acc ORDER BY id")]


def test_storable_text_is_lossless_and_leaves_valid_text_alone():
    assert storable_text(HOSTILE) == "\\xff\\xfe\\xed\\xa0\\x80café"
    assert storable_text("café") == "café"
    assert storable_text("\ud800x") == "\\ud800x"  # a surrogate not from the wire
    params = ("ascii", 1, None)
    assert storable(params) is params  # the usual statement is passed through untouched
    assert storable(["x", HOSTILE, 2]) == ["x", storable_text(HOSTILE), 2]


def test_database_stores_and_finds_text_that_is_not_utf8(db_url):
    with connect(db_url) as db:
        db.execute("INSERT INTO acc (method, callid, sip_code, sip_reason, time, from_tag, to_tag)"
                   " VALUES ('INVITE', ?, '200', 'OK', '2024-05-01 10:00:00', 'a', 'b')", (HOSTILE,))
        assert db.query("SELECT callid FROM acc WHERE callid = ?", (HOSTILE,)) == [{"callid": storable_text(HOSTILE)}]


def test_writer_stores_hostile_records_with_the_batch(tmp_path, db_url):
    w = AccWriter(lambda: connect(db_url), Spool(tmp_path / "acc.spool"))
    w.start()
    w.put([acc("c1"), acc(HOSTILE, HOSTILE), acc("c3")])
    w.stop(timeout=10)
    assert rows(db_url) == [("c1", "OK"), (storable_text(HOSTILE), storable_text(HOSTILE)), ("c3", "OK")]
    assert w.lost == 0 and w.spooled == 0


def test_spool_keeps_hostile_text_exactly(tmp_path):
    sp = Spool(tmp_path / "acc.spool")
    sp.append([acc(HOSTILE, HOSTILE), acc("plain")])
    got = [r.row["callid"] for batch, _ in sp.chunks() for r in batch]
    assert got == [HOSTILE, "plain"]
    assert sp.path.read_bytes().isascii()


def test_spooled_hostile_records_replay_into_the_database(tmp_path, db_url):
    sp = Spool(tmp_path / "acc.spool")
    sp.append([acc(HOSTILE), acc("after")])
    w = AccWriter(lambda: connect(db_url), sp)
    w.startup(load_dialogs=False)
    assert rows(db_url) == [(storable_text(HOSTILE), "OK"), ("after", "OK")] and not sp.pending()
    w.stop()


def test_a_record_that_cannot_be_built_costs_only_itself(tmp_path, db_url):
    def expand(items):
        if "bad" in items:
            raise ValueError("hostile fact")
        return [acc(i) for i in items]

    w = AccWriter(lambda: connect(db_url), Spool(tmp_path / "acc.spool"), expand=expand)
    w.start()
    w.put(["c1", "bad", "c2"])
    w.stop(timeout=10)
    assert rows(db_url) == [("c1", "OK"), ("c2", "OK")] and w.lost == 1


def test_dead_writer_thread_is_restarted_and_loses_nothing_queued(tmp_path, db_url):
    w = AccWriter(lambda: connect(db_url), Spool(tmp_path / "acc.spool"))
    stopped = threading.Event()

    def die() -> None:  # a thread that ended on a failure its loop could not catch
        stopped.set()

    w._thread = threading.Thread(target=die)
    w._thread.start()
    assert stopped.wait(5)
    w._thread.join(5)
    w._queue.extend([acc("queued-before")])   # left by the dead thread
    w.put([acc("after")])
    w.stop(timeout=10)
    assert w.restarts == 1 and w.stats()["thread_restarts"] == 1
    assert rows(db_url) == [("queued-before", "OK"), ("after", "OK")]


def test_records_put_after_stop_are_spooled_not_dropped(tmp_path, db_url):
    sp = Spool(tmp_path / "acc.spool")
    w = AccWriter(lambda: connect(db_url), sp)
    w.start()
    w.stop(timeout=10)
    w.put([acc("late")])  # a call that ended while sipd shut down
    assert [r.row["callid"] for batch, _ in sp.chunks() for r in batch] == ["late"]
    again = AccWriter(lambda: connect(db_url), sp)
    again.startup(load_dialogs=False)  # the next start replays it
    assert rows(db_url) == [("late", "OK")]
    again.stop()
