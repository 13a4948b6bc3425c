"""Against the real daemon (python -m sipd): raw UDP REGISTERs show up in ul show / online, monitor
sees counters move, stats collect twice stores two samples."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

import pytest

from helpers.sipd_proc import SipdProcess


def register(port: int, user: str, *, ua: str = "TestUA/1.0") -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.bind(("127.0.0.1", 0))
        lport = s.getsockname()[1]
        msg = (f"REGISTER sip:example.test SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK-{uuid.uuid4().hex};rport\r\n"
               "Max-Forwards: 70\r\n"
               f"From: <sip:{user}@example.test>;tag={uuid.uuid4().hex[:8]}\r\n"
               f"To: <sip:{user}@example.test>\r\n"
               f"Call-ID: {uuid.uuid4().hex}@127.0.0.1\r\n"
               "CSeq: 1 REGISTER\r\n"
               f"Contact: <sip:{user}@127.0.0.1:{lport}>;expires=600\r\n"
               f"User-Agent: {ua}\r\n"
               "Content-Length: 0\r\n\r\n")
        s.sendto(msg.encode(), ("127.0.0.1", port))
        for _ in range(5):
            data = s.recv(65535).decode()
            status = data.split(" ", 2)[1]
            if not status.startswith("1"):
                return status
    raise AssertionError("no final response")


@pytest.fixture
def live(tmp_path: Path):
    proc = SipdProcess(tmp_path, {"auth": {"register": False, "invite": False}}, domains=["example.test"])
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


def test_live_daemon(live: SipdProcess) -> None:
    assert register(live.udp_port, "alice", ua="TANDBERG/529 (TC7.3)") == "200"
    assert register(live.udp_port, "bob") == "200"
    shown = json.loads(live.sipctl("ul", "show", "alice@example.test", "--json").stdout)
    c = shown["Contacts"][0]
    assert shown["AOR"] == "alice@example.test"
    assert c["Contact"].startswith("sip:alice@127.0.0.1:") and c["User-agent"] == "TANDBERG/529 (TC7.3)"
    assert 590 < c["Expires"] <= 600 and c["Cseq"] == 1 and c["Socket"].startswith("udp:127.0.0.1:")
    assert live.sipctl("online").stdout.split() == ["alice@example.test", "bob@example.test"]
    mon = live.sipctl("monitor", "--once").stdout
    line = next(x for x in mon.splitlines() if "core:rcv_requests" in x)
    assert int(line.split("\t")[1]) >= 2  # piped: tab-separated
    assert "usrloc:location-users" in mon
    live.sipctl("stats", "collect", "core:rcv_requests")
    assert register(live.udp_port, "carol") == "200"
    live.sipctl("stats", "collect", "core:rcv_requests")
    rows = json.loads(live.sipctl("stats", "history", "core:rcv_requests", "--json").stdout)
    assert len(rows) == 2 and rows[1]["value"] > rows[0]["value"]
    live.sipctl("ul", "rm", "bob@example.test")
    assert live.sipctl("online").stdout.split() == ["alice@example.test", "carol@example.test"]


def test_idle_local_clients_do_not_lock_sipctl_out(live: SipdProcess) -> None:
    """100 connections to the management socket that never send (the default 64 slots, 10 s read
    timeout): the real sipctl still gets its answer, and promptly."""
    import time

    idle = []
    try:
        for _ in range(100):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(live.socket_path)
            idle.append(s)
        t0 = time.monotonic()
        res = live.sipctl("uptime", "--json", check=False, timeout=30)
        elapsed = time.monotonic() - t0
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Up time" in res.stdout
        assert elapsed < 8, f"sipctl took {elapsed:.1f} s behind idle connections (read timeout 10 s)"
        idle[0].settimeout(5)
        assert b"busy" in idle[0].recv(4096)  # the oldest idle one was evicted and told so
    finally:
        for s in idle:
            s.close()
