"""sipd.db.schema: DDL for both dialects, idempotent create, status, forward migrations."""

from __future__ import annotations

import dataclasses

import pytest
from dbfixtures import backend, db_url, empty_db_url, mysql_scratch  # noqa: F401

from sipd.db import DbSchemaError, DbSchemaMissing, connect, migrations, schema


def test_opensips_names_and_versions():
    t = schema.BY_NAME
    assert {"version", "subscriber", "dbaliases", "domain", "location", "dialplan", "acc", "missed_calls",
            "dialog", "cdrs", "stats_history", "presentity", "active_watchers", "watchers"} <= set(t)
    assert {"username", "domain", "password", "ha1", "ha1_sha256", "email_address", "rpid"} <= set(
        t["subscriber"].column_names)
    assert t["location"].column_names[:6] == ["contact_id", "username", "domain", "contact", "received", "path"]
    assert {"expires", "q", "callid", "cseq", "user_agent", "socket", "methods", "sip_instance", "kv_store",
            "attr", "reg_id", "cflags", "flags", "last_modified"} <= set(t["location"].column_names)
    assert t["dialplan"].column_names == ["id", "dpid", "pr", "match_op", "match_exp", "match_flags",
                                          "subst_exp", "repl_exp", "timerec", "disabled", "attrs"]
    assert "duration" not in t["missed_calls"].column_names and "duration" in t["acc"].column_names
    assert (t["subscriber"].version, t["location"].version, t["dialog"].version) == (8, 1014, 13)


def test_ddl_dialects():
    mysql = schema.BY_NAME["location"].ddl("mysql")[0]
    assert "AUTO_INCREMENT" in mysql and "utf8mb4" in mysql and "`expires` INT UNSIGNED NOT NULL DEFAULT 0" in mysql
    lite = schema.BY_NAME["location"].ddl("sqlite")
    assert "AUTOINCREMENT" in lite[0] and lite[1].startswith("CREATE INDEX IF NOT EXISTS `location_account_idx`")


def test_create_all_idempotent_and_status(empty_db_url):
    with connect(empty_db_url) as db:
        assert all(st.state == "missing" for st in schema.status(db))
        first = schema.create_all(db)
        assert {s for _, s in first} == {"created"}
        assert {s for _, s in schema.create_all(db)} == {"exists"}
        rows = db.query("SELECT table_name, table_version FROM version")
        assert len(rows) == len(schema.TABLES) - 1  # every table but version itself
        assert all(st.state == "ok" for st in schema.status(db))
        db.execute("DELETE FROM version WHERE table_name = ?", ("acc",))
        assert {st.name: st.state for st in schema.status(db)}["acc"] == "no version row"
        schema.create_all(db)  # adds the missing version row, touches nothing else
        assert all(st.state == "ok" for st in schema.status(db))


def test_migrate(db_url, monkeypatch):
    with connect(db_url) as db:
        assert migrations.migrate(db) == []
        old = schema.BY_NAME["stats_history"]
        monkeypatch.setitem(schema.BY_NAME, "stats_history", dataclasses.replace(old, version=2))
        with pytest.raises(DbSchemaError, match="no migration"):
            migrations.migrate(db)
        add_col = {d: [f"ALTER TABLE stats_history ADD COLUMN node {t}"]
                   for d, t in (("sqlite", "VARCHAR(64) NOT NULL DEFAULT ''"), ("mysql", "VARCHAR(64) NOT NULL DEFAULT ''"))}
        steps = {"stats_history": [migrations.Migration("stats_history", 1, 2, add_col)]}
        assert migrations.migrate(db, steps) == [("stats_history", "migrated 1 -> 2")]
        db.execute("INSERT INTO stats_history (time, name, value, node) VALUES (?, ?, ?, ?)", (1, "x", 2, "n1"))
        assert migrations.migrate(db, steps) == []
        monkeypatch.setitem(schema.BY_NAME, "stats_history", old)
        with pytest.raises(DbSchemaError, match="newer"):
            migrations.migrate(db)


def test_migrate_on_empty_database(empty_db_url):
    with connect(empty_db_url) as db:
        with pytest.raises(DbSchemaMissing):
            migrations.migrate(db)


def test_drop_all(db_url):
    with connect(db_url) as db:
        assert set(schema.drop_all(db)) == set(schema.BY_NAME)
        assert db.tables() & set(schema.BY_NAME) == set()
