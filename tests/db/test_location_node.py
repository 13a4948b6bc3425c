"""location.node_id (table version 1014): the node that holds a binding's connection or NAT
pinhole. ``sipctl db migrate`` takes a 1013 table there keeping every row (their node_id NULL:
reached directly, as before); sipd on SQLite does it at start; sipd on an unmigrated MySQL table
writes its bindings without the column and says to migrate. SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import logging
import time

from dbfixtures import backend, cli, db_url, empty_db_url, mysql_scratch  # noqa: F401

from sipd.db import connect, schema
from sipd.services.location import Contact
from sipd.services.store import Store

AOR = "alice@example.test"


def _make_1013(db) -> None:  # type: ignore[no-untyped-def]
    """The location table of version 1013: no node_id, nor its index."""
    if db.dialect == "sqlite":
        db.execute("DROP INDEX location_node_idx")
    else:
        db.execute("ALTER TABLE location DROP KEY node_idx")
    db.execute("ALTER TABLE location DROP COLUMN node_id")
    db.execute("UPDATE version SET table_version = 1013 WHERE table_name = 'location'")
    db.execute("INSERT INTO location (username, domain, contact, expires, user_agent, last_modified) "
               "VALUES ('alice', 'example.test', 'sip:alice@192.0.2.1', 0, 'old', '2026-12-07 20:00:00')")
    assert "node_id" not in schema.table_columns(db, 'location')


def _version(db) -> int:  # type: ignore[no-untyped-def]
    return int(db.query_one("SELECT table_version FROM version WHERE table_name = 'location'")["table_version"])


def test_migrate_adds_node_id_keeping_the_rows(db_url, cli):
    with connect(db_url) as db:
        _make_1013(db)
        assert {st.name: st.state for st in schema.status(db)}["location"] == "outdated"
    r = cli("db", "migrate")
    assert r.code == 0, r.err
    assert "1013 -> 1014" in r.out
    with connect(db_url) as db:
        assert _version(db) == 1014 and "node_id" in schema.table_columns(db, 'location')
        rows = db.query("SELECT username, contact, user_agent, node_id FROM location")
        assert [(r["username"], r["contact"], r["user_agent"], r["node_id"]) for r in rows] == [
            ("alice", "sip:alice@192.0.2.1", "old", None)]
    assert cli("db", "migrate").code == 0  # nothing left to do


def test_the_daemon_store_on_a_1013_table(db_url, backend, caplog):
    with connect(db_url) as db:
        _make_1013(db)

    async def register() -> tuple[str, ...]:
        store = Store(db_url)
        await store.open()
        try:
            await store.save_aor(AOR, [Contact("sip:alice@192.0.2.2", time.time() + 3600, node_id="a")])
            return store.columns
        finally:
            await store.close()

    with caplog.at_level(logging.WARNING):
        columns = asyncio.run(register())
    with connect(db_url) as db:
        rows = db.query("SELECT * FROM location")
        version = _version(db)
    assert [r["contact"] for r in rows] == ["sip:alice@192.0.2.2"]
    if backend == "sqlite":  # sipd's own file: brought to 1014 at start
        assert "node_id" in columns and rows[0]["node_id"] == "a" and version == 1014
        assert "node_id" not in caplog.text
    else:
        assert "node_id" not in columns and "node_id" not in rows[0] and version == 1013
        assert "no node_id column" in caplog.text and "run `sipctl db migrate`" in caplog.text
