"""sd_notify protocol against a datagram socket the test creates (as systemd would)."""

from __future__ import annotations

import socket

from sipd.notify import Notifier


def _listen(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    return s, path


def test_ready_stopping_watchdog(tmp_path, monkeypatch):
    s, path = _listen(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier.from_env()
    try:
        assert n.watchdog_interval == 2.0
        assert n.ready("listening on udp:127.0.0.1:5060")
        msg = s.recv(4096).decode()
        assert "READY=1" in msg and "STATUS=listening on udp:127.0.0.1:5060" in msg and "MAINPID=" in msg
        assert n.watchdog()
        assert s.recv(4096) == b"WATCHDOG=1\n"
        assert n.stopping()
        assert s.recv(4096) == b"STOPPING=1\n"
    finally:
        n.close()
        s.close()


def test_noop_without_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    n = Notifier.from_env()
    assert not n.ready()
    assert n.watchdog_interval == 0.0


def test_unreachable_socket_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    n = Notifier.from_env()
    try:
        assert not n.ready()
        assert "cannot notify systemd" in caplog.text
    finally:
        n.close()
