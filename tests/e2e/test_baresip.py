"""Registration and calls with baresip: registration over UDP and TCP with the password, a wrong password
fails, and two users call each other with RTP flowing both ways, UDP caller to TCP callee and back."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.e2e

HOLD = 1.5        # seconds of media before hang-up
MIN_RTP = 20      # packets each way (ptime 20 ms: ~50/s)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_register(server, baresip_factory, transport):
    ua = baresip_factory("alice", server=server, transport=transport)
    assert ua.wait_registered(10) == "OK", ua.last_reginfo + "\n" + server.log_tail()


def test_wrong_password_fails(server, baresip_factory):
    ua = baresip_factory("alice", "not-the-password", server=server)
    assert ua.wait_registered(10) == "ERR", ua.last_reginfo


def call_with_media(caller, callee, hold: float = HOLD) -> None:
    for ua in (callee, caller):
        assert ua.wait_registered(10) == "OK", f"{ua.user}: {ua.last_reginfo}"
    caller.dial(callee.aor)
    for ua in (caller, callee):
        ev = ua.wait_event({"CALL_ESTABLISHED", "CALL_CLOSED"}, 10)
        assert ev and ev["type"] == "CALL_ESTABLISHED", f"{ua.user}: {ev}"
    end = time.monotonic() + hold
    while time.monotonic() < end:
        for ua in (caller, callee):
            ua.pump(0.05)
            assert not any(e.get("type") == "CALL_CLOSED" for e in ua.ctrl.events), f"{ua.user}: closed early"
    caller.hangup()
    for ua in (caller, callee):
        assert ua.wait_event({"CALL_CLOSED"}, 10), f"{ua.user}: no CALL_CLOSED after hangup"
    for ua in (caller, callee):
        ua.stop()
        rtp = ua.rtp_packets()
        assert rtp and min(rtp) >= MIN_RTP, f"{ua.user}: RTP packets (tx, rx) = {rtp}"


@pytest.mark.parametrize("caller_tp,callee_tp", [("udp", "tcp"), ("tcp", "udp")])
def test_call_with_media_across_transports(server, baresip_factory, caller_tp, callee_tp):
    callee = baresip_factory("bob", server=server, transport=callee_tp)
    caller = baresip_factory("alice", server=server, transport=caller_tp, answer="manual")
    call_with_media(caller, callee)


def test_call_with_media_with_two_workers(server_factory, baresip_factory):
    """[server] workers = 2: two baresip over UDP register (each through the process owning its AOR)
    and call each other with media through main."""
    server = server_factory({"server": {"workers": 2}})
    callee = baresip_factory("bob", server=server)
    caller = baresip_factory("alice", server=server, answer="manual")
    call_with_media(caller, callee)


def test_call_with_media_over_tls_with_two_workers(server_factory, baresip_factory, tmp_path):
    """[server] workers = 2 and TLS: main and the worker take the connections in turn, so the two
    baresip's land on different processes (each holds one, as ``tls list`` says); they register
    and call each other with media, every message crossing to the process holding the connection
    it leaves on."""
    from conftest import free_port
    from sipctl.lib import cert as lib

    lib.ca_init(tmp_path / "ca", "Baresip Root", key_type="ec:p256")
    lib.ca_issue(tmp_path / "ca", "example.test", ["example.test", "127.0.0.1"], cert_out=tmp_path / "srv.pem",
                 key_out=tmp_path / "srv.key", key_type="ec:p256")
    server = server_factory({"server": {"workers": 2}}, start=False)
    tls_port = free_port("tcp")
    server.config["server"]["listen"].append(f"tls:127.0.0.1:{tls_port}")
    server.config["tls"] = {"certificate": str(tmp_path / "srv.pem"), "private_key": str(tmp_path / "srv.key")}
    server.write_config()
    server.start()
    deadline = time.monotonic() + 15
    while not all(p["Type"].endswith("TCP/TLS connections)") for p in server.mi("ps")["Processes"][1:]):
        assert time.monotonic() < deadline, "the worker is not ready"
        time.sleep(0.1)
    tls = {"server": server, "transport": "tls", "proxy": f"127.0.0.1:{tls_port}",
           "cafile": str(tmp_path / "ca" / "root.pem")}
    callee = baresip_factory("bob", **tls)
    caller = baresip_factory("alice", answer="manual", **tls)
    for ua in (callee, caller):
        assert ua.wait_registered(10) == "OK", f"{ua.user}: {ua.last_reginfo}"
    held = {p["process"]: p["connections"] for p in server.mi("tls_list")["processes"]}
    assert held == {0: 1, 1: 1}, held
    call_with_media(caller, callee)
    assert "Traceback" not in server.log_text()
