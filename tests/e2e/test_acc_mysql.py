"""Accounting on MariaDB, and a database outage: the link to the database is cut by a TCP proxy
started here (the shared MariaDB server itself is never stopped), calls go on, the link comes
back, and every call has its acc rows and its CDR; records spooled at shutdown are replayed at start.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.conftest import free_port
from tests.daemon.harness import UA
from tests.e2e.test_acc import Call, make_daemon, phones, query, running, wait_rows

pytestmark = pytest.mark.mysql

from dbfixtures import mysql_scratch  # noqa: E402,F401  (fixture)


class TcpProxy:
    """127.0.0.1:port -> target, in threads; ``cut()`` drops every connection and refuses new ones."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self.restore()

    def restore(self) -> None:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(16)
        ls.settimeout(0.1)
        self._listener = ls
        t = threading.Thread(target=self._accept, args=(ls,), daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self, ls: socket.socket) -> None:
        for _ in range(100_000):  # bounded: ~10,000 s at 0.1 s per idle round
            try:
                client, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # listener closed (cut)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                t = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                t.start()
                self._threads.append(t)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(2)
        for s in socks:
            s.close()
        self._threads = []

    def close(self) -> None:
        self.cut()


@pytest.fixture
def mysql_db(mysql_scratch):  # noqa: F811
    from sipd.db import connect, schema

    mysql_scratch.sql(f"CREATE DATABASE `{mysql_scratch.name}` CHARACTER SET utf8mb4")
    with connect(mysql_scratch.url()) as db:
        schema.create_all(db)
    return mysql_scratch


def proxied(url: str, port: int) -> str:
    head, _, tail = url.rpartition("@")
    host_port, _, dbname = tail.partition("/")
    return f"{head}@127.0.0.1:{port}/{dbname}"


def test_mariadb_call_rows(tmp_path, mysql_db):
    d = make_daemon(tmp_path, db_url=mysql_db.url())
    with running(d), phones(d) as (alice, bob):
        Call(alice, bob, "my-1").ring().answer().hangup()
        acc = wait_rows(d.db_url, "SELECT method, sip_code FROM acc WHERE callid = ? ORDER BY id", ("my-1",), 2)
        cdr = wait_rows(d.db_url, "SELECT * FROM cdrs WHERE callid = ?", ("my-1",), 1)
    assert [(a["method"], a["sip_code"]) for a in acc] == [("INVITE", "200"), ("BYE", "200")]
    assert cdr[0]["status"] == "answered" and str(cdr[0]["start_time"]).startswith("20")


def test_database_outage_then_recovery(tmp_path, mysql_db):
    direct = mysql_db.url()
    proxy = TcpProxy(("127.0.0.1", 3306))
    try:
        d = make_daemon(tmp_path, db_url=direct, acc={"db_url": proxied(direct, proxy.port)})
        spool = tmp_path / "acc.spool"
        with running(d), phones(d) as (alice, bob):
            Call(alice, bob, "out-0").ring().answer().hangup()
            wait_rows(direct, "SELECT * FROM cdrs", (), 1)
            proxy.cut()
            for i in (1, 2, 3):
                Call(alice, bob, f"out-{i}").ring().answer().hangup()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not (spool.exists() and spool.read_text().count("\n") >= 9):
                time.sleep(0.05)
            assert spool.read_text().count("\n") >= 9  # 3 calls x (acc INVITE, dialog x2, cdr, acc BYE)
            assert len(query(direct, "SELECT * FROM cdrs")) == 1
            proxy.restore()
            cdrs = wait_rows(direct, "SELECT callid FROM cdrs ORDER BY id", (), 4)
            acc = wait_rows(direct, "SELECT callid, method FROM acc ORDER BY id", (), 8)
            # and a shutdown while the link is down: what is queued goes to the spool, replayed at start
            proxy.cut()
            Call(alice, bob, "out-4").ring().answer().hangup()
        assert [c["callid"] for c in cdrs] == [f"out-{i}" for i in range(4)]
        assert [(a["callid"], a["method"]) for a in acc] == [(f"out-{i}", m) for i in range(4) for m in ("INVITE", "BYE")]
        assert query(direct, "SELECT * FROM dialog") == []
        assert spool.read_text().count("\n") >= 3
        proxy.restore()
        with running(d):
            wait_rows(direct, "SELECT * FROM cdrs WHERE callid = 'out-4'", (), 1)
            wait_rows(direct, "SELECT * FROM acc WHERE callid = 'out-4'", (), 2)
        assert "database back" in d.log_text()
    finally:
        proxy.close()
