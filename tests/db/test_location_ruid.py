"""location.ruid: each binding's key, unique, so that one binding is never stored twice (two nodes
storing the same new contact at once); ``sipctl db migrate`` gives an older table the column and
the key, keeping its rows (a binding stored twice keeps its newest row). SQLite and MariaDB;
the two-node race itself is in tests/cluster/test_galera_location.py."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from dbfixtures import backend, cli, db_url, empty_db_url, mysql_db_url, mysql_scratch  # noqa: F401

from sipd.db import connect, galera_ready
from sipd.db.errors import DbIntegrityError
from sipd.db.queries import location_ruid
from sipd.services.location import Contact
from sipd.services.store import Store, contact_row

AOR = "alice@example.test"


def _make_old(db) -> None:  # type: ignore[no-untyped-def]
    """The location table as it was before its ruid (the version row is the current one either way)."""
    if db.dialect == "sqlite":
        db.execute("DROP INDEX location_ruid_idx")
    db.execute("ALTER TABLE location DROP COLUMN ruid")
    assert not galera_ready.has_location_ruid(db)


def _insert_old(db, username: str, contact: str, user_agent: str, instance=None, reg_id=0) -> None:  # type: ignore[no-untyped-def]
    db.execute("INSERT INTO location (username, domain, contact, expires, user_agent, sip_instance, reg_id, "
               "last_modified) VALUES (?, 'example.test', ?, 0, ?, ?, ?, '2026-12-07 20:00:00')",
               (username, contact, user_agent, instance, reg_id))


def test_ruid_identifies_the_binding():
    assert location_ruid("alice", "Example.TEST", "sip:a@192.0.2.1") == location_ruid("alice", "example.test", "sip:a@192.0.2.1")
    assert location_ruid("alice", "example.test", "sip:a@192.0.2.1") != location_ruid("alice", "example.test", "sip:a@192.0.2.2")
    assert location_ruid("alice", "example.test", "sip:a@192.0.2.1") != location_ruid("bob", "example.test", "sip:a@192.0.2.1")
    # RFC 5626: one instance's flows share the contact URI and differ by reg-id
    one = location_ruid("alice", "example.test", "sip:a@192.0.2.1", "<urn:uuid:1>", 1)
    assert one != location_ruid("alice", "example.test", "sip:a@192.0.2.1", "<urn:uuid:1>", 2)
    assert one == location_ruid("alice", "example.test", "sip:a@198.51.100.9", "<urn:uuid:1>", 1)
    assert len(one) == 64


def test_one_binding_is_one_row(db_url):
    row = contact_row(AOR, Contact("sip:alice@192.0.2.1", 0))
    sql = "INSERT INTO location (username, domain, contact, expires, q, callid, cseq, last_modified, flags, " \
          "cflags, user_agent, socket, methods, sip_instance, kv_store, reg_id, ruid) " \
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    values = row[:3] + row[5:-1]  # without received, path and node_id
    with connect(db_url) as db:
        db.execute(sql, values)
        with pytest.raises(DbIntegrityError):
            db.execute(sql, values)
        # rows written without a ruid (another tool) do not collide with each other
        _insert_old(db, "carol", "sip:carol@192.0.2.3", "x")
        _insert_old(db, "carol", "sip:carol@192.0.2.3", "y")
        assert db.query_one("SELECT COUNT(*) AS n FROM location")["n"] == 3


def test_migrate_adds_the_key_and_keeps_the_newest_row_of_a_duplicate(db_url, cli):
    with connect(db_url) as db:
        _make_old(db)
        _insert_old(db, "alice", "sip:alice@192.0.2.1", "first")
        _insert_old(db, "bob", "sip:bob@192.0.2.2", "bob")
        _insert_old(db, "alice", "sip:alice@192.0.2.1", "second")   # the same binding, stored twice
        _insert_old(db, "alice", "sip:alice@192.0.2.9", "flow 1", "<urn:uuid:1>", 1)
        _insert_old(db, "alice", "sip:alice@192.0.2.9", "flow 2", "<urn:uuid:1>", 2)
    r = cli("db", "migrate")
    assert r.code == 0, r.err
    assert cli("db", "migrate").code == 0  # nothing left to do, nothing lost
    with connect(db_url) as db:
        assert galera_ready.has_location_ruid(db)
        rows = db.query("SELECT username, contact, user_agent, sip_instance, reg_id, ruid FROM location ORDER BY contact_id")
        assert [(r["username"], r["user_agent"]) for r in rows] == [
            ("bob", "bob"), ("alice", "second"), ("alice", "flow 1"), ("alice", "flow 2")]
        assert all(r["ruid"] == location_ruid(r["username"], "example.test", r["contact"], r["sip_instance"], r["reg_id"])
                   for r in rows)
        # the key is no version step: the version row stays the table's
        assert db.query_one("SELECT table_version FROM version WHERE table_name = 'location'")["table_version"] == 1014
        with pytest.raises(DbIntegrityError):
            db.execute("UPDATE location SET ruid = ? WHERE user_agent = 'bob'", (rows[1]["ruid"],))


def test_the_daemon_store_on_an_older_table(db_url, backend, caplog):
    """SQLite: sipd gives its own file the column at start. MySQL: sipd writes as before and
    warns until the operator migrates."""
    with connect(db_url) as db:
        _make_old(db)

    async def register() -> bool:
        store = Store(db_url)
        await store.open()
        try:
            await store.save_aor(AOR, [Contact("sip:alice@192.0.2.1", time.time() + 3600)])
            return store.ruid
        finally:
            await store.close()

    with caplog.at_level(logging.WARNING):
        wrote_ruid = asyncio.run(register())
    with connect(db_url) as db:
        rows = db.query("SELECT * FROM location")
    assert [r["contact"] for r in rows] == ["sip:alice@192.0.2.1"]
    if backend == "sqlite":
        assert wrote_ruid and rows[0]["ruid"] == location_ruid("alice", "example.test", "sip:alice@192.0.2.1")
        assert "ruid" not in caplog.text
    else:
        assert not wrote_ruid and "ruid" not in rows[0]
        assert "run `sipctl db migrate`" in caplog.text


@pytest.mark.mysql
def test_db_status_says_an_older_location_table_is_not_galera_ready(mysql_db_url, tmp_path):
    from dbfixtures import Cli, write_config

    from sipctl.errors import ExitStatus

    cli = Cli(write_config(tmp_path / "sipd.toml", mysql_db_url))
    assert cli("db", "status", "--json").json["galera_ready"] is True
    with connect(mysql_db_url) as db:
        _make_old(db)
    r = cli("db", "status")
    assert r.code == ExitStatus.ERROR and "Galera-ready: no (location: no ruid unique key" in r.out, r.out + r.err
    assert "sipctl db migrate" in r.err
    assert cli("db", "migrate").code == 0
    assert cli("db", "status").code == 0
