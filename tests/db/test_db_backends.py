"""sipd.db backends: the same behaviour on SQLite and MariaDB (placeholders, transactions, errors)."""

from __future__ import annotations

import os
import threading

import pytest
from dbfixtures import backend, db_url, empty_db_url, mysql_scratch  # noqa: F401

from sipd.db import (
    DbAccessDenied, DbIntegrityError, DbSchemaMissing, DbUnavailable, connect, mask_url, parse_url,
)
from sipd.db.base import to_format_style


def test_placeholder_translation():
    assert to_format_style("SELECT * FROM t WHERE a = ? AND b LIKE 'x%?' AND c = ?") == \
        "SELECT * FROM t WHERE a = %s AND b LIKE 'x%%?' AND c = %s"
    assert to_format_style("SELECT 5 % 2, `a?b`") == "SELECT 5 %% 2, `a?b`"


def test_parse_and_mask_url():
    u = parse_url("mysql://sipd:p%40ss@db.example:3307/sipd")
    assert (u.user, u.password, u.host, u.port, u.database) == ("sipd", "p@ss", "db.example", 3307, "sipd")
    assert mask_url("mysql://sipd:p%40ss@db.example:3307/sipd") == "mysql://sipd:***@db.example:3307/sipd"
    # SQLAlchemy's rules: four slashes absolute, three relative to the current directory
    assert parse_url("sqlite:////var/lib/sipd/sipd.db").path == "/var/lib/sipd/sipd.db"
    assert parse_url("sqlite:///var/lib/sipd/sipd.db").path == os.path.join(os.getcwd(), "var/lib/sipd/sipd.db")
    assert parse_url("sqlite:///relative.db").path == os.path.join(os.getcwd(), "relative.db")
    assert parse_url("sqlite://:memory:").path == ":memory:"
    assert parse_url("sqlite://").path == parse_url("sqlite:///:memory:").path == ":memory:"
    for bad in ("postgres://x/y", "sqlite://relative.db", "mysql:///nohost", "sqlite:/x.db"):
        with pytest.raises(DbUnavailable):
            parse_url(bad)


def test_sqlite_relative_url_is_relative_to_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with connect("sqlite:///here.db") as db:
        assert db.query_one("PRAGMA journal_mode")["journal_mode"] == "wal"
    assert (tmp_path / "here.db").exists() and not os.path.exists("/here.db")


def test_sqlite_never_creates_a_directory_and_create_false_never_a_file(tmp_path):
    path = tmp_path / "a" / "b" / "sipd.db"
    with pytest.raises(DbUnavailable) as exc:
        connect(f"sqlite:///{path}")
    assert f"directory {path.parent} does not exist" in exc.value.message
    assert "four slashes" in exc.value.hint and not (tmp_path / "a").exists()
    with pytest.raises(DbUnavailable) as exc:
        connect(f"sqlite:///{tmp_path}/none.db", create=False)
    assert "does not exist" in exc.value.message and "sipctl db create" in exc.value.hint
    assert list(tmp_path.iterdir()) == []


def test_roundtrip_transaction_and_errors(db_url):
    with connect(db_url) as db:
        res = db.execute("INSERT INTO domain (domain, last_modified) VALUES (?, ?)", ("a.test", "2024-01-01 00:00:00"))
        assert res.rowcount == 1 and res.lastrowid
        assert db.query("SELECT domain FROM domain WHERE domain LIKE ?", ("a.%",)) == [{"domain": "a.test"}]
        with pytest.raises(DbIntegrityError):
            db.execute("INSERT INTO domain (domain) VALUES (?)", ("a.test",))
        # a failing transaction leaves nothing behind
        with pytest.raises(DbIntegrityError):
            with db.transaction():
                db.execute("INSERT INTO domain (domain) VALUES (?)", ("b.test",))
                db.execute("INSERT INTO domain (domain) VALUES (?)", ("a.test",))
        assert [r["domain"] for r in db.query("SELECT domain FROM domain")] == ["a.test"]
        # nested transactions commit with the outermost
        with db.transaction():
            db.execute("INSERT INTO domain (domain) VALUES (?)", ("c.test",))
            with db.transaction():
                db.execute("INSERT INTO domain (domain) VALUES (?)", ("d.test",))
        assert db.executemany("INSERT INTO domain (domain) VALUES (?)", [("e.test",), ("f.test",)]) == 2
        assert len(db.query("SELECT domain FROM domain")) == 5
        with pytest.raises(DbSchemaMissing) as exc:
            db.query("SELECT * FROM nosuchtable")
        assert exc.value.table == "nosuchtable" and exc.value.hint == "run sipctl db create"


def test_visible_to_a_second_connection(db_url):
    with connect(db_url) as a, connect(db_url) as b:
        a.execute("INSERT INTO domain (domain) VALUES (?)", ("x.test",))
        assert b.query("SELECT domain FROM domain") == [{"domain": "x.test"}]
        with a.transaction():
            a.execute("INSERT INTO domain (domain) VALUES (?)", ("y.test",))
        assert len(b.query("SELECT domain FROM domain")) == 2


def test_shared_between_threads(db_url):
    with connect(db_url) as db:
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(10):
                    db.execute("INSERT INTO stats_history (time, name, value) VALUES (?, ?, ?)", (i, f"t{n}", i))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not errors
        assert db.query_one("SELECT COUNT(*) AS n FROM stats_history")["n"] == 40


@pytest.mark.mysql
def test_mysql_reconnects_after_dropped_connection(mysql_scratch):
    mysql_scratch.sql(f"CREATE DATABASE `{mysql_scratch.name}`")
    url = mysql_scratch.url()
    with connect(url) as db, connect(url) as killer:
        conn_id = db.query_one("SELECT CONNECTION_ID() AS id")["id"]
        killer.execute(f"KILL {int(conn_id)}")
        assert db.query_one("SELECT 1 AS one") == {"one": 1}
        assert db.query_one("SELECT CONNECTION_ID() AS id")["id"] != conn_id


@pytest.mark.mysql
def test_mysql_access_denied_and_unknown_database(mysql_scratch):
    with pytest.raises(DbAccessDenied) as exc:
        connect(mysql_scratch.url("sipd_t_nobody", "wrong"))
    assert "wrong" not in exc.value.message and "***" in exc.value.message
    with pytest.raises(DbSchemaMissing) as missing:
        connect(mysql_scratch.url())
    assert "does not exist" in missing.value.message and "--admin-url" in missing.value.hint


def test_unreachable_mysql():
    from conftest import free_port

    port = free_port("tcp")
    with pytest.raises(DbUnavailable) as exc:
        connect(f"mysql://u:secret@127.0.0.1:{port}/x", timeout=2)
    assert "secret" not in str(exc.value) and "database.url" in str(exc.value)


def test_sqlite_default_data_directory_is_the_one_created(tmp_path, monkeypatch):
    """The built-in default (a normal user's ~/.local/share/sipd) is made on first use."""
    from sipd.db import url as urls

    monkeypatch.setattr(urls, "_is_root", lambda: False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    url = urls.default_db_url()
    assert url == f"sqlite:///{tmp_path}/data/sipd/sipd.db" and url.startswith("sqlite:////")
    with connect(url):
        pass
    assert (tmp_path / "data" / "sipd" / "sipd.db").exists()
    with pytest.raises(DbUnavailable):  # and only that one
        connect(f"sqlite:///{tmp_path}/other/sipd.db")
