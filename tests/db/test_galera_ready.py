"""A schema fit for a Galera cluster: every table InnoDB with a primary key, no table or named
locks, and a migration that makes an older database so, keeping its rows. The Galera cluster
itself is in tests/cluster; these run on SQLite and one MariaDB."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dbfixtures import backend, db_url, empty_db_url, mysql_db_url, mysql_scratch  # noqa: F401

from sipd.db import connect, galera_ready, migrations, schema

ROOT = Path(__file__).resolve().parents[2]


def test_every_table_has_a_primary_key():
    for table in schema.TABLES:
        assert galera_ready.primary_key(table), f"{table.name} has no primary key"
        assert all(c in table.column_names for c in galera_ready.primary_key(table))
        for stmt in table.ddl("mysql"):
            assert "ENGINE=InnoDB" in stmt and "PRIMARY KEY" in stmt


def test_no_table_or_named_locks_in_the_code():
    # LOCK TABLES is not replicated by Galera and GET_LOCK works on one node only: a lock taken on
    # one node does not stop a writer on another.
    pattern = re.compile(r"\b(LOCK\s+TABLES?|GET_LOCK|RELEASE_LOCK|IS_FREE_LOCK)\b", re.IGNORECASE)
    hits = [f"{path.relative_to(ROOT)}:{n}" for top in ("sipd", "sipctl") for path in (ROOT / top).rglob("*.py")
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_schema_galera_ready_on_both_backends(db_url):
    with connect(db_url) as db:
        assert galera_ready.galera_problems(db) == []   # SQLite: nothing to check; MariaDB: checked
        assert "cluster_node" in db.tables()


@pytest.mark.mysql
def test_migrate_makes_an_older_mysql_schema_galera_ready(mysql_db_url):
    url = mysql_db_url
    with connect(url) as db:
        db.execute("ALTER TABLE version DROP PRIMARY KEY")          # as OpenSIPS creates it
        db.execute("ALTER TABLE stats_history ENGINE=MyISAM")
        db.execute("INSERT INTO stats_history (time, name, value) VALUES (1, 'core:rcv_requests', 7)")
        db.execute("CREATE TABLE notes (txt VARCHAR(10)) ENGINE=InnoDB")  # not sipd's: reported only
        versions = db.query("SELECT table_name, table_version FROM version ORDER BY table_name")
        assert {(p.table, p.kind) for p in galera_ready.galera_problems(db)} == {
            ("version", "primary key"), ("stats_history", "engine"), ("notes", "primary key")}
        done = migrations.migrate(db)
        assert ("version", "primary key added (table_name)") in done
        assert ("stats_history", "converted to InnoDB") in done
        assert [(p.table, p.kind) for p in galera_ready.galera_problems(db)] == [("notes", "primary key")]
        assert db.query("SELECT table_name, table_version FROM version ORDER BY table_name") == versions
        assert db.query("SELECT time, name, value FROM stats_history") == [
            {"time": 1, "name": "core:rcv_requests", "value": 7}]
        assert migrations.migrate(db) == []
