"""The shared ban table's rules on a real database (SQLite, MariaDB, a Galera cluster): which write
wins is decided by when the bans and lifts happened, not by the order the writes arrive, so nodes
that wrote late (the database was away) still agree; polls see every change; old rows go."""

from __future__ import annotations

import threading

import pytest
from dbfixtures import backend, db_url, empty_db_url, mysql_scratch  # noqa: F401

from sipd.db import connect, schema
from sipd.db.cluster_bans import NewBan, active_by_node, changed_since, purge, write

T0 = 1_800_000_000


def _row(db, target: str):  # type: ignore[no-untyped-def]
    return next((r for r in changed_since(db, 0, T0) if r.target == target), None)


def test_newer_events_win_whatever_order_the_writes_come_in(db_url):
    with connect(db_url) as db:
        assert write(db, "a", [NewBan("192.0.2.1", "flood", T0, T0 + 300)], [], T0) == []
        # b's older ban of the same address arrives later: it loses and gets the row that won
        lost = write(db, "b", [NewBan("192.0.2.1", "auth", T0 - 50, T0 + 850)], [], T0 + 1)
        assert [(r.node_id, r.reason, r.since) for r in lost] == [("a", "flood", T0)]
        # a lift that happened before the ban began leaves it alone; a later one lifts it
        write(db, "b", [], [("192.0.2.1", T0 - 10)], T0 + 2)
        assert _row(db, "192.0.2.1").lifted == 0
        write(db, "b", [], [("192.0.2.1", T0 + 5)], T0 + 5)
        row = _row(db, "192.0.2.1")
        assert row.lifted == T0 + 5 and row.node_id == "b" and not row.active(T0 + 6)
        # a ban made before that lift but written after it stays lifted; one made after replaces it
        assert [r.lifted for r in write(db, "a", [NewBan("192.0.2.1", "flood", T0 + 3, T0 + 303)], [], T0 + 7)] == [T0 + 5]
        write(db, "c", [NewBan("192.0.2.1", "manual", T0 + 9, 0)], [], T0 + 9)
        row = _row(db, "192.0.2.1")
        assert (row.node_id, row.reason, row.lifted, row.expires) == ("c", "manual", 0, 0) and row.active(T0 + 10**6)
        # an unban and a new ban in the same second, written together: the new ban stays in force
        write(db, "a", [NewBan("192.0.2.1", "flood", T0 + 20, T0 + 320)], [("192.0.2.1", T0 + 20)], T0 + 21)
        row = _row(db, "192.0.2.1")
        assert (row.node_id, row.reason, row.since, row.lifted) == ("a", "flood", T0 + 20, 0)


def test_polls_purge_and_counts(db_url):
    with connect(db_url) as db:
        write(db, "a", [NewBan("192.0.2.1", "flood", T0, T0 + 300), NewBan("198.51.100.0/24", "manual", T0, 0)],
              [], T0)
        write(db, "b", [NewBan("192.0.2.2", "auth", T0 + 20, T0 + 30)], [], T0 + 20)
        assert {r.target for r in changed_since(db, T0 + 20, T0 + 20)} == {"192.0.2.2"}
        # a node's first look: every ban in force, nothing expired
        assert {r.target for r in changed_since(db, None, T0 + 40)} == {"192.0.2.1", "198.51.100.0/24"}
        assert active_by_node(db, T0 + 40) == {"a": 2}
        assert active_by_node(db, T0 + 25) == {"a": 2, "b": 1}
        assert purge(db, T0 + 31, retention=0) == 1          # the expired one
        assert purge(db, T0 + 10**6, retention=0) == 1       # then the flood ban; never the permanent one
        assert [r.target for r in changed_since(db, 0, T0)] == ["198.51.100.0/24"]


@pytest.mark.mysql
def test_two_galera_nodes_banning_one_address_at_once_keep_one_row_the_later_ban(galera, galera_db):
    """Each node's write goes to its own Galera node at the same moment: the primary key on the
    target makes certification refuse one commit, which is run again and then keeps the later
    ban (whichever commit came first). No write fails."""
    urls = [node.url(galera_db) for node in galera.nodes]
    with connect(urls[0]) as db:
        schema.create_all(db)
    with connect(urls[0]) as first, connect(urls[1]) as second:
        for trial in range(5):
            target = f"192.0.2.{trial + 10}"
            barrier = threading.Barrier(2, timeout=20)
            errors: list[BaseException] = []

            def node(db, name: str, since: int, barrier: threading.Barrier, target: str,  # type: ignore[no-untyped-def]
                     errors: list[BaseException]) -> None:
                try:
                    barrier.wait()
                    write(db, name, [NewBan(target, "flood", since, since + 300)], [], since)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=node, args=(*args, barrier, target, errors))
                       for args in ((first, "a", T0 + trial), (second, "b", T0 + trial + 1))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert errors == []
            with connect(urls[2]) as third:
                rows = [r for r in changed_since(third, 0, T0) if r.target == target]
            assert [(r.node_id, r.since) for r in rows] == [("b", T0 + trial + 1)]
