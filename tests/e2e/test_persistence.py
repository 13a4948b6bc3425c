"""Registrations survive ``kill -9`` and a restart in the write-through and
db-only location modes, on SQLite and on MariaDB, and a call still routes to the callee."""

from __future__ import annotations

import secrets
from urllib.parse import urlparse

import pytest

from conftest import MYSQL_URL, missing, mysql_available

from .test_sipp import call, registered_uas

pytestmark = pytest.mark.e2e


@pytest.fixture
def mysql_db_url():
    if not mysql_available():
        missing(f"no MySQL/MariaDB at {MYSQL_URL}")
    name = f"sipd_e2e_{secrets.token_hex(4)}"
    yield f"{MYSQL_URL.rstrip('/')}/{name}"
    import pymysql

    u = urlparse(MYSQL_URL)
    conn = pymysql.connect(host=u.hostname or "127.0.0.1", port=u.port or 3306, user=u.username or "root",
                           password=u.password or "", connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


def survive_kill9(server_factory, tmp_path, mode: str, db_url: str | None) -> None:
    server = server_factory({"location": {"mode": mode}}, db_url)
    callee = registered_uas(server, tmp_path, "bob")
    try:
        server.kill9()
        server.restart()
        res = call(server, tmp_path, "alice", "bob")
        assert res.ok and res.successful == 1, res.explain() + "\n" + server.log_tail()
        callee.wait(timeout=10)
    finally:
        end = callee.stop()
    assert end.successful == 1, end.explain()


@pytest.mark.parametrize("mode", ["write-through", "db-only"])
def test_kill9_restart_sqlite(server_factory, tmp_path, sipp_bin, mode):
    survive_kill9(server_factory, tmp_path, mode, None)


@pytest.mark.mysql
@pytest.mark.parametrize("mode", ["write-through", "db-only"])
def test_kill9_restart_mysql(server_factory, tmp_path, sipp_bin, mysql_db_url, mode):
    survive_kill9(server_factory, tmp_path, mode, mysql_db_url)
