"""Database fixtures shared by tests/db and tests/sipctl: one backend parameter, SQLite and MariaDB.

Import the fixtures you use (``from dbfixtures import db_url, cli``); tests/ is on sys.path.
MySQL tests get a fresh database ``sipd_t_<random>`` that is dropped afterwards, together with
every MySQL user whose name starts with that database name.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import MYSQL_URL, missing, mysql_available

BACKENDS = ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)]


def _admin():  # type: ignore[no-untyped-def]
    import pymysql

    u = urlparse(MYSQL_URL)
    return pymysql.connect(host=u.hostname or "127.0.0.1", port=u.port or 3306, user=u.username or "root",
                           password=u.password or "", autocommit=True, connect_timeout=5)


def mysql_url(database: str, user: str | None = None, password: str | None = None) -> str:
    u = urlparse(MYSQL_URL)
    user = user or u.username or "root"
    cred = user + (f":{password}" if password else (f":{u.password}" if u.password and user == u.username else ""))
    return f"mysql://{cred}@{u.hostname or '127.0.0.1'}:{u.port or 3306}/{database}"


@dataclass
class MysqlScratch:
    name: str

    def url(self, user: str | None = None, password: str | None = None) -> str:
        return mysql_url(self.name, user, password)

    @property
    def admin_url(self) -> str:
        return mysql_url("")

    def sql(self, statement: str, params: tuple = ()) -> list[tuple]:
        conn = _admin()
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return list(cur.fetchall())
        finally:
            conn.close()


@pytest.fixture
def mysql_scratch() -> Iterator[MysqlScratch]:
    """A unique database name (not created) and cleanup of it and of users named after it."""
    if not mysql_available():
        missing(f"MariaDB/MySQL not reachable at {MYSQL_URL}")
    scratch = MysqlScratch("sipd_t_" + secrets.token_hex(4))
    yield scratch
    for user, host in scratch.sql("SELECT User, Host FROM mysql.user WHERE User LIKE %s", (scratch.name + "%",)):
        scratch.sql("DROP USER %s@%s", (user, host))
    scratch.sql(f"DROP DATABASE IF EXISTS `{scratch.name}`")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A database without tables: an SQLite path, or a fresh empty MySQL database."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/sipd.db"
    scratch: MysqlScratch = request.getfixturevalue("mysql_scratch")
    scratch.sql(f"CREATE DATABASE `{scratch.name}` CHARACTER SET utf8mb4")
    return scratch.url()


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """A database with all tables created."""
    from sipd.db import connect, schema

    with connect(empty_db_url) as db:
        schema.create_all(db)
    return empty_db_url


@pytest.fixture
def mysql_db_url(mysql_scratch: MysqlScratch) -> str:
    """A MySQL database with all tables created, for tests of what only MySQL does."""
    from sipd.db import connect, schema

    mysql_scratch.sql(f"CREATE DATABASE `{mysql_scratch.name}` CHARACTER SET utf8mb4")
    with connect(mysql_scratch.url()) as db:
        schema.create_all(db)
    return mysql_scratch.url()


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):  # type: ignore[no-untyped-def]
        import json

        return json.loads(self.out)


class Cli:
    """Runs the real sipctl entry point (sipctl.app.main) in-process with a config file."""

    def __init__(self, config: Path):
        self.config = config

    def __call__(self, *args: str, input: str | None = None) -> Result:
        from typer.testing import CliRunner

        from sipctl.app import main

        runner = CliRunner()
        with runner.isolation(input=input, env={"SIPCTL_DB_URL": None, "SIPD_CONFIG": None}) as streams:
            code = main(["--config", str(self.config), *args])
            out, err = streams[0].getvalue(), streams[1].getvalue()
        result = Result(code, out.decode(), err.decode())
        assert "Traceback" not in result.err, result.err
        return result


def write_config(path: Path, url: str, extra: str = "") -> Path:
    path.write_text(f'[database]\nurl = "{url}"\n{extra}', encoding="utf-8")
    return path


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Cli:
    """sipctl against a database with all tables (both backends)."""
    return Cli(write_config(tmp_path / "sipd.toml", db_url))


@pytest.fixture
def cli_empty(empty_db_url: str, tmp_path: Path) -> Cli:
    """sipctl against a database without tables (both backends)."""
    return Cli(write_config(tmp_path / "sipd.toml", empty_db_url))
