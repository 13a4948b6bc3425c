"""Registrations survive kill -9 + restart (write-through, db-only) on SQLite and MariaDB, and
calls still route; write-back flushes at graceful shutdown."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import MYSQL_URL, missing, mysql_available
from tests.daemon.harness import UA, add_subscriber, live_daemon, message_reaches
from tests.helpers.sipd_proc import SipdProcess


def call_reaches(daemon: SipdProcess, callee: UA) -> bool:
    with UA(daemon.port, "alice", password="pw") as alice:
        return message_reaches(alice, callee)


def run_restart(tmp, db_url: str, mode: str, sig: str) -> None:
    d = live_daemon(tmp, {"location": {"mode": mode}}, db_url=db_url)
    add_subscriber(d.db_url, "alice", "pw")
    add_subscriber(d.db_url, "bob", "pw")
    d.start()
    try:
        with UA(d.port, "bob", password="pw") as bob:
            assert bob.register(600).status == 200
            if sig == "kill9":
                d.kill9()
            else:
                assert d.stop() == 0
            d.start()
            assert "(1 domain, 2 subscribers, 1 AOR registered," in d.ready_line  # plural only where it is
            assert call_reaches(d, bob)
            assert bob.register(0).status == 200
    finally:
        d.stop()
    assert "Traceback" not in d.log_text(), d.log_text()


@pytest.mark.parametrize("mode", ["write-through", "db-only"])
def test_kill9_sqlite(tmp_path, mode):
    run_restart(tmp_path, f"sqlite:///{tmp_path}/sipd.db", mode, "kill9")


def test_write_back_flushed_at_shutdown(tmp_path):
    run_restart(tmp_path, f"sqlite:///{tmp_path}/sipd.db", "write-back", "term")


@pytest.fixture
def mysql_db():
    if not mysql_available():
        missing("MariaDB not reachable at " + MYSQL_URL)
    from sipd.db import connect

    name = f"sipd_test_{uuid.uuid4().hex[:8]}"
    with connect(MYSQL_URL) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield f"{MYSQL_URL.rstrip('/')}/{name}"
    with connect(MYSQL_URL) as admin:
        admin.execute(f"DROP DATABASE {name}")


@pytest.mark.mysql
@pytest.mark.parametrize("mode", ["write-through", "db-only"])
def test_kill9_mysql(tmp_path, mysql_db, mode):
    run_restart(tmp_path, mysql_db, mode, "kill9")
