"""Writes that lose to a concurrent one (a lock wait, a deadlock, a Galera certification failure)
are run again, a bounded number of times, without a second row; a ``with transaction():`` block
cannot be replayed, so its caller sees DbConflict. Galera's own case is in tests/cluster."""

from __future__ import annotations

import threading
import time

import pytest
from dbfixtures import backend, db_url, empty_db_url, mysql_db_url, mysql_scratch  # noqa: F401

from sipd.db import connect
from sipd.db.errors import DbConflict


def test_run_transaction_commits_once_and_rolls_back_on_error(db_url):
    calls = []

    def add(db):
        calls.append(1)
        db.execute("INSERT INTO domain (domain) VALUES (?)", ("a.test",))
        return db.query_one("SELECT COUNT(*) AS n FROM domain")["n"]

    with connect(db_url) as db:
        assert db.run_transaction(add) == 1 and calls == [1]

        def fail(db):
            db.execute("INSERT INTO domain (domain) VALUES (?)", ("b.test",))
            raise ValueError("not a conflict: no rerun")

        with pytest.raises(ValueError):
            db.run_transaction(fail)
        assert [r["domain"] for r in db.query("SELECT domain FROM domain")] == ["a.test"]
        # executemany takes any iterable, a generator too, though a rerun needs its rows again
        assert db.executemany("INSERT INTO domain (domain) VALUES (?)", ((d,) for d in ("c.test", "d.test"))) == 2


@pytest.mark.mysql
def test_statement_runs_again_after_a_lock_wait_timeout(mysql_db_url):
    url = mysql_db_url
    with connect(url) as db, connect(url) as holder:
        db.execute("INSERT INTO domain (domain) VALUES ('a.test')")
        db.execute("SET SESSION innodb_lock_wait_timeout = 1")
        locked = threading.Event()

        def hold(seconds: float) -> None:
            with holder.transaction():
                holder.execute("UPDATE domain SET attrs = 'holder' WHERE domain = 'a.test'")
                locked.set()
                time.sleep(seconds)

        # inside a transaction the caller sees the conflict: a block cannot be replayed
        worker = threading.Thread(target=hold, args=(2.5,))
        worker.start()
        assert locked.wait(10)
        with pytest.raises(DbConflict):
            with db.transaction():
                db.execute("UPDATE domain SET attrs = 'in block' WHERE domain = 'a.test'")
        worker.join(10)
        # a statement on its own waits 1 s, loses, and is run again until the holder commits
        locked.clear()
        worker = threading.Thread(target=hold, args=(1.5,))
        worker.start()
        assert locked.wait(10)
        started = time.monotonic()
        assert db.execute("UPDATE domain SET attrs = 'retried' WHERE domain = 'a.test'").rowcount == 1
        assert time.monotonic() - started >= 1.0   # one run alone would have failed at 1 s
        worker.join(10)
        assert db.query("SELECT domain, attrs FROM domain") == [{"domain": "a.test", "attrs": "retried"}]
