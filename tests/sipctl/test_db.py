"""sipctl db create|status|migrate|drop and database failures, through the real CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import free_port
from dbfixtures import (  # noqa: F401
    Cli, backend, cli, cli_empty, db_url, empty_db_url, mysql_scratch, write_config,
)

from sipctl.errors import ExitStatus
from sipd.db.schema import TABLES

NAMES = [t.name for t in TABLES]


def test_create_is_idempotent(cli_empty):
    r = cli_empty("db", "create", "--json")
    assert r.code == 0, r.err
    tables = {i["name"]: i["state"] for i in r.json["items"] if i["kind"] == "table"}
    assert tables == {n: "created" for n in NAMES}
    assert r.json["changed"] is True
    r = cli_empty("db", "create", "--json")
    assert r.code == 0
    assert r.json["changed"] is False
    assert {i["state"] for i in r.json["items"]} == {"exists"}
    human = cli_empty("db", "create")
    assert human.code == 0 and "nothing to do" in human.out


def test_status(cli_empty):
    r = cli_empty("db", "status", "--json")
    assert r.code == ExitStatus.ERROR
    assert set(r.json["missing"]) == set(NAMES)
    assert "sipctl db create" in r.err
    cli_empty("db", "create")
    r = cli_empty("db", "status", "--json")
    assert r.code == 0 and r.json["ok"] is True and r.json["missing"] == []
    versions = {t["name"]: t["version"] for t in r.json["tables"]}
    assert versions["subscriber"] == 8 and versions["location"] == 1014 and versions["dialplan"] == 5
    assert "subscriber" in cli_empty("db", "status").out


def test_status_says_whether_the_tables_are_galera_ready(cli, db_url, backend):
    from sipd.db import connect

    r = cli("db", "status", "--json")
    assert r.code == 0 and r.json["galera"] is None   # SQLite, or a MariaDB without wsrep
    human = cli("db", "status").out
    if backend == "sqlite":
        assert r.json["galera_ready"] is None and "Galera-ready: not applicable" in human
        return
    assert r.json["galera_ready"] is True and "Galera-ready: yes" in human
    assert "Galera: not a Galera node" in human
    with connect(db_url) as db:
        db.execute("CREATE TABLE notes (txt VARCHAR(10)) ENGINE=MyISAM")   # not sipd's
    r = cli("db", "status", "--json")
    assert r.code == 0 and r.json["galera_ready"] is False   # named, but not sipd's to fix
    assert [(p["table"], p["kind"]) for p in r.json["galera_problems"]] == [
        ("notes", "engine"), ("notes", "primary key")]
    with connect(db_url) as db:
        db.execute("ALTER TABLE version DROP PRIMARY KEY")
    r = cli("db", "status")
    assert r.code == ExitStatus.ERROR and "version: no primary key" in r.out
    assert "tables not ready for Galera" in r.err and "sipctl db migrate" in r.err
    assert cli("db", "migrate").code == 0 and cli("db", "status").code == 0


def test_migrate_recreates_missing_table(cli, db_url):
    from sipd.db import connect

    r = cli("db", "migrate", "--json")
    assert r.code == 0 and r.json["changed"] is False
    with connect(db_url) as db:
        db.execute("DROP TABLE watchers")
    assert cli("db", "status").code == ExitStatus.ERROR
    r = cli("db", "migrate", "--json")
    assert r.code == 0 and r.json["steps"][0]["table"] == "watchers"
    assert cli("db", "status").code == 0
    assert "nothing to do" in cli("db", "migrate").out


def test_migrate_without_tables(cli_empty):
    r = cli_empty("db", "migrate")
    assert r.code == ExitStatus.DB and "sipctl db create" in r.err


def test_drop_asks(cli, db_url):
    r = cli("db", "drop", input="n\n")
    assert r.code != 0 and "aborted" in r.err.lower()
    assert cli("db", "status").code == 0
    r = cli("db", "drop", input="y\n")
    assert r.code == 0 and f"dropped {len(NAMES)} table(s)" in r.out
    assert cli("db", "status").code == ExitStatus.ERROR
    cli("db", "create")
    r = cli("db", "drop", "--yes", "--json")
    assert r.code == 0 and len(r.json["tables"]) == len(NAMES)


def test_missing_tables_message(cli_empty):
    for args in (["domain", "list"], ["user", "list"], ["alias", "list"], ["dp", "list"],
                 ["domain", "add", "example.org"]):
        r = cli_empty(*args)
        assert r.code == ExitStatus.DB, args
        assert r.err.splitlines() == [r.err.splitlines()[0], "Hint: run sipctl db create"], r.err
        assert "does not exist" in r.err


def test_unreachable_mysql_masks_password(tmp_path):
    port = free_port("tcp")
    url = f"mysql://sipd:TopSecret@127.0.0.1:{port}/sipd"
    r = Cli(write_config(tmp_path / "c.toml", url))("domain", "list")
    assert r.code == ExitStatus.DB
    assert "TopSecret" not in r.err
    assert f"mysql://sipd:***@127.0.0.1:{port}/sipd" in r.err and "database.url" in r.err
    assert len(r.err.splitlines()) == 2 and r.err.splitlines()[1].startswith("Hint: ")


def test_unopenable_sqlite(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = Cli(write_config(tmp_path / "c.toml", f"sqlite:///{blocker}/sub/sipd.db"))("domain", "list")
    assert r.code == ExitStatus.DB and "database.url" in r.err


def test_subprocess_no_traceback(tmp_path):
    """The installed entry point: one error line, a hint, the DB exit code, no traceback."""
    port = free_port("tcp")
    env_cfg = write_config(tmp_path / "c.toml", f"mysql://u:pw@127.0.0.1:{port}/x")
    p = subprocess.run([sys.executable, "-m", "sipctl", "--config", str(env_cfg), "user", "list"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == ExitStatus.DB
    assert p.stderr.startswith("Error: cannot connect to database mysql://u:***@")
    assert "Traceback" not in p.stderr and p.stdout == ""
    empty = write_config(tmp_path / "e.toml", f"sqlite:///{tmp_path}/e.db")
    p = subprocess.run([sys.executable, "-m", "sipctl", "--config", str(empty), "domain", "list"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == ExitStatus.DB and "Hint: run sipctl db create" in p.stderr


# ---------------------------------------------------------------------------------------------
# MySQL server-side creation: database, users, grants

@pytest.mark.mysql
def test_mysql_create_with_admin(mysql_scratch, tmp_path):
    s = mysql_scratch
    rw, ro = f"{s.name}_rw", f"{s.name}_ro"
    cfg = write_config(tmp_path / "c.toml", s.url(rw, "rwpass"))
    c = Cli(cfg)
    r = c("db", "create", "--admin-url", s.admin_url, "--ro-user", ro, "--ro-password", "ropass", "--json")
    assert r.code == 0, r.err
    states = {(i["kind"], i["name"]): i["state"] for i in r.json["items"]}
    assert states[("database", s.name)] == "created"
    assert states[("user (read-write)", f"'{rw}'@'%'")] == "created"
    assert states[("user (read-only)", f"'{ro}'@'localhost'")] == "created"
    assert states[("table", "subscriber")] == "created"
    assert s.sql("SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME=%s",
                 (s.name,)) == [("utf8mb4",)]
    # second run: everything exists, nothing changes
    r = c("db", "create", "--admin-url", s.admin_url, "--ro-user", ro, "--ro-password", "ropass", "--json")
    assert r.code == 0 and r.json["changed"] is False, r.json
    # the read-write user works; the read-only user may read but not write
    assert c("domain", "add", "example.org").code == 0
    ro_cli = Cli(write_config(tmp_path / "ro.toml", s.url(ro, "ropass")))
    assert ro_cli("domain", "list", "--json").json[0]["domain"] == "example.org"
    r = ro_cli("domain", "add", "other.org")
    assert r.code == ExitStatus.DB and "access denied" in r.err.lower() and "Hint:" in r.err
    # wrong password
    r = Cli(write_config(tmp_path / "bad.toml", s.url(rw, "wrong")))("domain", "list")
    assert r.code == ExitStatus.DB and "access denied" in r.err.lower() and "wrong" not in r.err
    # drop the whole database with the admin URL
    r = c("db", "drop", "--yes", "--admin-url", s.admin_url)
    assert r.code == 0 and s.name in r.out


@pytest.mark.mysql
def test_mysql_generated_ro_password_and_missing_database(mysql_scratch, tmp_path):
    s = mysql_scratch
    c = Cli(write_config(tmp_path / "c.toml", s.url()))
    r = c("domain", "list")
    assert r.code == ExitStatus.DB and "does not exist" in r.err and "--admin-url" in r.err
    r = c("db", "create")
    assert r.code == ExitStatus.DB and "--admin-url" in r.err
    r = c("db", "create", "--admin-url", s.admin_url, "--json")
    assert r.code == 0, r.err
    assert any("read-only user" in n and "password" in n for n in r.json["notes"])
    assert any("admin user" in n for n in r.json["notes"])   # rw user is root itself: skipped


# ---------------------------------------------------------------------------------------------
# SQLite URLs: SQLAlchemy's slashes, and nothing created by a command that only reads

def test_read_commands_never_create_the_file_or_its_directory(tmp_path):
    missing_file = tmp_path / "none.db"
    cli = Cli(write_config(tmp_path / "c.toml", f"sqlite:///{missing_file}"))
    for args in (("domain", "list"), ("user", "list"), ("doctor", "--no-dns"), ("db", "status")):
        r = cli(*args)
        assert r.code != 0, (args, r.out)
        assert "Traceback" not in r.err + r.out
    assert "does not exist" in cli("domain", "list").err and "sipctl db create" in cli("domain", "list").err
    assert not missing_file.exists()
    in_missing_dir = tmp_path / "nodir" / "sipd.db"
    r = Cli(write_config(tmp_path / "d.toml", f"sqlite:///{in_missing_dir}"))("db", "create")
    assert r.code == ExitStatus.DB and f"directory {in_missing_dir.parent} does not exist" in r.err
    assert "four slashes" in r.err and not in_missing_dir.parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "d.toml"]


def test_three_slashes_are_relative_to_the_current_directory(tmp_path):
    cfg = write_config(tmp_path / "c.toml", "sqlite:///relative.db")
    p = subprocess.run([sys.executable, "-m", "sipctl", "--config", str(cfg), "db", "create", "--json"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "relative.db").exists() and str(tmp_path / "relative.db") in p.stdout
