"""Two nodes storing the same new binding at once, each through its own Galera node, store one row.

Each write succeeds locally (the node deletes the AOR's rows it sees, none, and inserts). When one
node's write is applied at the other while the other's is still open, the open one is aborted
there; when both commit at the same moment, only certification can refuse one, and it does so by
location.ruid's unique key (without it the two inserts touch different primary keys and both
commit: two rows for one binding, in 19 of 20 tries when this was written). The daemon's location
write (Store) that loses is run again whole and replaces the winner's row."""

from __future__ import annotations

import threading
import time

import pytest

from sipd.db import connect, schema
from sipd.db.errors import DbConflict
from sipd.services.location import Contact
from sipd.services.store import _INSERT_SQL, Store, contact_row

pytestmark = pytest.mark.mysql

AOR = "alice@example.test"
TRIALS = 5  # simultaneous commits per test: without the key, nearly every one stores two rows


def _rows(url: str) -> list[dict]:
    with connect(url) as db:
        return db.query("SELECT contact, user_agent, ruid FROM location")


def _write_by_hand(db, user_agent: str) -> None:  # type: ignore[no-untyped-def]
    """The statements of the daemon's location write, inside the caller's transaction."""
    db.execute("DELETE FROM location WHERE username = 'alice' AND domain = 'example.test'")
    db.executemany(_INSERT_SQL, [contact_row(AOR, Contact("sip:alice@192.0.2.1", 0, user_agent=user_agent))])


def _store(url: str, db) -> Store:  # type: ignore[no-untyped-def]
    store = Store(url)
    store.db = db
    return store


@pytest.fixture
def urls(galera, galera_db):  # type: ignore[no-untyped-def]
    with connect(galera.nodes[0].url(galera_db)) as db:
        schema.create_all(db)
    return [node.url(galera_db) for node in galera.nodes]


def test_the_second_commit_of_one_binding_loses(urls):
    with connect(urls[0]) as first, connect(urls[1]) as second:
        with pytest.raises(DbConflict):
            with first.transaction():
                _write_by_hand(first, "node 1")
                store = _store(urls[1], second)   # node 2 stores the same binding and commits first
                store._write_batch({AOR: [Contact("sip:alice@192.0.2.1", 0, user_agent="node 2")]})
                store._executor.shutdown()
    rows = _rows(urls[2])
    assert [(r["contact"], r["user_agent"]) for r in rows] == [("sip:alice@192.0.2.1", "node 2")]


def test_the_daemon_write_that_loses_runs_again(urls):
    """Node 1's write reaches its commit only once node 2 has committed the same binding: its
    first run is refused, the rerun replaces node 2's row with node 1's."""
    with connect(urls[0]) as first, connect(urls[1]) as second:
        other_committed = threading.Event()
        commit = first._commit
        runs: list[float] = []

        def commit_after_the_other() -> None:
            runs.append(time.monotonic())
            if len(runs) == 1:
                assert other_committed.wait(20)
            commit()

        first._commit = commit_after_the_other  # type: ignore[method-assign]
        store = _store(urls[0], first)
        errors: list[BaseException] = []

        def node1() -> None:
            try:
                store._write_batch({AOR: [Contact("sip:alice@192.0.2.1", 0, user_agent="node 1")]})
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        worker = threading.Thread(target=node1)
        worker.start()
        deadline = time.monotonic() + 20
        while not runs and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runs, "node 1's write did not reach its commit"
        with second.transaction():
            _write_by_hand(second, "node 2")
        other_committed.set()
        worker.join(30)
        store._executor.shutdown()
        assert not worker.is_alive() and errors == []
        assert len(runs) >= 2  # the first commit lost
    rows = _rows(urls[2])
    assert [(r["contact"], r["user_agent"]) for r in rows] == [("sip:alice@192.0.2.1", "node 1")]


def test_simultaneous_commits_store_one_row(urls):
    """Both nodes' writes commit at the same moment, before either is applied at the other node:
    only Galera's certification can then refuse one, and it does by the ruid key."""
    outcomes = []
    with connect(urls[0]) as first, connect(urls[1]) as second:
        for _ in range(TRIALS):
            barrier = threading.Barrier(2, timeout=20)
            lost: list[str] = []

            def node(db, name: str) -> None:  # type: ignore[no-untyped-def]
                try:
                    with db.transaction():
                        _write_by_hand(db, name)
                        barrier.wait()
                except DbConflict:
                    lost.append(name)

            threads = [threading.Thread(target=node, args=(db, name)) for db, name in ((first, "1"), (second, "2"))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            outcomes.append((len(_rows(urls[2])), len(lost)))
            with connect(urls[0]) as db:
                db.execute("DELETE FROM location")
    assert outcomes == [(1, 1)] * TRIALS  # (rows, writes refused) each time
