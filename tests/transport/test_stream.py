"""TCP transport against a live daemon: CRLF keep-alive, per-source connection limit, idle close."""

from __future__ import annotations

import socket
import time

import pytest

from tests.daemon.harness import live_daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = live_daemon(tmp_path_factory.mktemp("tcp"), {"limits": {"tcp_max_per_source": 2}})
    d.start()
    yield d
    assert d.running(), d.log_text()
    assert d.stop() == 0


def test_crlf_keepalive_answered(daemon):
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=3) as s:
        s.sendall(b"\r\n\r\n")
        assert s.recv(16) == b"\r\n"


def test_per_source_limit(daemon):
    conns = [socket.create_connection(("127.0.0.1", daemon.port), timeout=3) for _ in range(3)]
    try:
        for c in conns[:2]:
            c.sendall(b"\r\n\r\n")
            assert c.recv(16) == b"\r\n"
        third = conns[2]
        third.sendall(b"\r\n\r\n")
        deadline = time.monotonic() + 3
        data = b"x"
        while time.monotonic() < deadline:
            try:
                data = third.recv(16)
            except ConnectionResetError:
                data = b""
            break
        assert data == b""  # refused: closed without an answer
    finally:
        for c in conns:
            c.close()
    assert "too many from this address (limits.tcp_max_per_source)" in daemon.log_text()
