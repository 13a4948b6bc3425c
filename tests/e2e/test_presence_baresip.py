"""Presence with real clients: baresip's presence module subscribes to another user and
sees the state change when that user publishes, and "busy" while that user is in a call (from the
server's call tracking); and a MESSAGE between two registered baresip users."""

from __future__ import annotations

import time

import pytest

from conftest import missing

pytestmark = pytest.mark.e2e

WAIT = 12.0  # seconds for one state change to reach the watcher (baresip subscribes 1 s after start)


def make_ua(tmp_path, server, user, *, contacts=(), publish=False, answer="auto", ui=False):
    from helpers.baresip import MODULE_PATH, BaresipUA, baresip_binary

    if not baresip_binary():
        missing("baresip not installed")
    from pathlib import Path

    if not (Path(MODULE_PATH) / "presence.so").exists():
        missing("baresip presence module not installed")
    from .conftest import USERS

    ua = BaresipUA(tmp_path, user, USERS[user], proxy=server.address, answer=answer)
    cfg = ua.home / "config"
    extra = "module_app\t\tcontact.so\nmodule_app\t\tpresence.so\n"
    if ui:  # the TCP console UI: received MESSAGEs are printed to whoever is connected
        from helpers.sipd_proc import _free_port

        ua.cons_port = _free_port("127.0.0.1", None)
        extra += f"module\t\t\tcons.so\ncons_listen\t\t127.0.0.1:{ua.cons_port}\n"
    cfg.write_text(cfg.read_text() + extra)
    if publish:
        acc = ua.home / "accounts"
        acc.write_text(acc.read_text().rstrip("\n") + ";pubint=600\n")
    (ua.home / "contacts").write_text("".join(f'"{c}" <sip:{c}@example.test>;presence=p2p\n' for c in contacts))
    return ua.start()


def contact_status(ua, who: str) -> str:
    from helpers.baresip import strip_ansi

    text = ua.ctrl.cmd("contacts").get("data", "")
    for line in text.splitlines():
        if f"sip:{who}@" in line:
            line = strip_ansi(line).replace("\x1b[31m", "").replace("\x1b[32m", "")
            for word in ("Online", "Offline", "Busy", "Unknown"):
                if word in line:
                    return word
    return "?"


def wait_status(ua, who: str, want: str, timeout: float = WAIT) -> str:
    end = time.monotonic() + timeout
    got = "?"
    while time.monotonic() < end:
        got = contact_status(ua, who)
        if got == want:
            return got
        ua.pump(0.2)
    return got


def test_baresip_watcher_sees_publish_and_call(server, tmp_path):
    uas = []
    try:
        bob = make_ua(tmp_path, server, "bob", publish=True)
        uas.append(bob)
        assert bob.wait_registered(10) == "OK", bob.last_reginfo
        alice = make_ua(tmp_path, server, "alice", contacts=["bob"])
        uas.append(alice)
        assert alice.wait_registered(10) == "OK", alice.last_reginfo
        assert wait_status(alice, "bob", "Online") == "Online", server.log_tail() + "\n" + alice.log_text()[-2000:]

        bob.ctrl.cmd("presence_offline")  # bob publishes "closed"
        assert wait_status(alice, "bob", "Offline") == "Offline", server.log_tail()
        bob.ctrl.cmd("presence_online")
        assert wait_status(alice, "bob", "Online") == "Online", server.log_tail()

        # bob goes into a call with carol: the server shows him busy without him publishing
        carol = make_ua(tmp_path, server, "carol", answer="manual")
        uas.append(carol)
        assert carol.wait_registered(10) == "OK"
        carol.dial("sip:bob@example.test")
        ev = carol.wait_event({"CALL_ESTABLISHED", "CALL_CLOSED"}, 10)
        assert ev and ev["type"] == "CALL_ESTABLISHED", ev
        assert wait_status(alice, "bob", "Busy") == "Busy", server.log_tail()
        carol.hangup()
        assert carol.wait_event({"CALL_CLOSED"}, 10)
        assert wait_status(alice, "bob", "Online") == "Online", server.log_tail()

        watchers = server.sipctl("presence", "watchers", "bob@example.test").stdout
        assert "alice@example.test" in watchers
    finally:
        for ua in uas:
            ua.stop()


def test_baresip_message_between_users(server, tmp_path):
    import socket

    bob = make_ua(tmp_path, server, "bob", ui=True)
    alice = make_ua(tmp_path, server, "alice", contacts=["bob"])
    console = socket.create_connection(("127.0.0.1", bob.cons_port), timeout=5)
    try:
        assert bob.wait_registered(10) == "OK", bob.last_reginfo
        assert alice.wait_registered(10) == "OK", alice.last_reginfo
        text = f"hello-bob-{time.monotonic_ns()}"
        alice.ctrl.cmd("message", text)
        seen = b""
        end = time.monotonic() + 10
        console.settimeout(0.5)
        while time.monotonic() < end and text.encode() not in seen:
            try:
                seen += console.recv(65536)
            except socket.timeout:
                pass
        assert text.encode() in seen, server.log_tail() + "\n" + alice.log_text()[-1500:]
        assert b"sip:alice@example.test" in seen  # the sender as bob sees it
        assert "MESSAGE sip:bob@example.test" in server.log_text()
    finally:
        console.close()
        alice.stop()
        bob.stop()
