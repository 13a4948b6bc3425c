"""The daemon's multi-statement writes (location bindings, accounting and dialog rows, presence
rows) are run again whole when they lose to a concurrent write -- on a Galera cluster, another
node's write of the same rows -- instead of failing. Provoked on MariaDB with a lock wait timeout
(1205, handled like a certification failure): another connection holds the rows for longer than
the writer waits, so a single run would fail; the rerun stores each row once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from dbfixtures import mysql_db_url, mysql_scratch  # noqa: F401

from sipd.db import Database, connect
from sipd.services import presence_store
from sipd.services.acc_writer import write_records
from sipd.services.cdr import Record
from sipd.services.location import Contact
from sipd.services.presence_state import Publication
from sipd.services.store import Store

pytestmark = pytest.mark.mysql

HOLD = 1.6  # seconds the other connection holds the rows; the writer waits 1 s per run


def _against_a_holder(url: str, lock_sql: str, write: Callable[[Database], None]) -> float:
    """Run ``write`` on a connection that waits 1 s for a lock while another connection holds
    the rows ``lock_sql`` touches for HOLD seconds; returns how long ``write`` took."""
    with connect(url) as db, connect(url) as holder:
        db.execute("SET SESSION innodb_lock_wait_timeout = 1")
        locked = threading.Event()

        def hold() -> None:
            with holder.transaction():
                holder.execute(lock_sql)
                locked.set()
                time.sleep(HOLD)

        worker = threading.Thread(target=hold)
        worker.start()
        try:
            assert locked.wait(10)
            started = time.monotonic()
            write(db)
            return time.monotonic() - started
        finally:
            worker.join(10)


def test_location_write_runs_again(mysql_db_url):
    url, aor, now = mysql_db_url, "alice@example.test", time.time()
    store = Store(url)
    try:
        with connect(url) as db:
            store.db = db
            store._write_batch({aor: [Contact("sip:alice@192.0.2.1", now + 3600)]})

        def write(db: Database) -> None:
            store.db = db
            store._write_batch({aor: [Contact("sip:alice@192.0.2.2", now + 3600)]})

        took = _against_a_holder(url, "UPDATE location SET user_agent = 'holder' WHERE username = 'alice'", write)
        assert took >= 1.0  # the first run lost
        with connect(url) as db:
            rows = db.query("SELECT contact, user_agent FROM location")
        assert rows == [{"contact": "sip:alice@192.0.2.2", "user_agent": ""}]
    finally:
        store.db = None
        store._executor.shutdown(wait=True)


def test_accounting_write_runs_again(mysql_db_url):
    url = mysql_db_url
    dialog = {"dlg_id": 7, "callid": "c1", "from_uri": "sip:a@example.test", "state": 3}
    with connect(url) as db:
        write_records(db, [Record("upsert", "dialog", dialog)])
    batch = [Record("insert", "acc", {"method": "INVITE", "callid": "c1", "sip_code": "200",
                                      "time": "2026-12-07 20:00:00"}),
             Record("upsert", "dialog", {**dialog, "state": 4})]
    took = _against_a_holder(url, "UPDATE dialog SET state = 9 WHERE dlg_id = 7", lambda db: write_records(db, batch))
    assert took >= 1.0
    with connect(url) as db:
        assert db.query("SELECT callid, sip_code FROM acc") == [{"callid": "c1", "sip_code": "200"}]  # once
        assert db.query("SELECT dlg_id, state FROM dialog") == [{"dlg_id": 7, "state": 4}]


def test_presence_write_runs_again(mysql_db_url):
    url, now = mysql_db_url, time.time()
    old = Publication("alice@example.test", "e1", now + 600, b"<old/>")
    new = Publication("alice@example.test", "e1", now + 900, b"<new/>")
    with connect(url) as db:
        presence_store.flush(db, [((old.aor, old.etag), old)], [], [], now)
    took = _against_a_holder(url, "UPDATE presentity SET sender = 'holder' WHERE username = 'alice'",
                             lambda db: presence_store.flush(db, [((new.aor, new.etag), new)], [], [], now))
    assert took >= 1.0
    with connect(url) as db:
        rows = db.query("SELECT etag, expires, body FROM presentity")
    assert [(r["etag"], r["expires"], bytes(r["body"])) for r in rows] == [("e1", int(now + 900), b"<new/>")]
