"""Failure diversion with SIPp: a call to a busy, to an unregistered and to a
non-answering user lands at the diversion URI, a SIPp UAS, with a Diversion header (RFC 5806).

The caller is SIPp (digest auth); the busy/ringing callee is a raw-socket phone (it must answer 486
or ring and then take the CANCEL); the voicemail is a SIPp UAS answering the diverted call.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import free_port
from helpers.sipp import SippProcess, write_inf
from tests.daemon.harness import UA

from .conftest import DOMAIN, SCENARIOS, USERS

pytestmark = pytest.mark.e2e


@pytest.fixture
def setup(server_factory, tmp_path, sipp_bin):
    vm_port = free_port()
    server = server_factory({"diversion": {"uri": f"sip:voicemail@127.0.0.1:{vm_port}", "no_answer_timeout": 1.0}})
    vm = SippProcess(SCENARIOS / "uas_answer.xml", None, port=vm_port, cwd=tmp_path, timeout=20,
                     media_port=free_port(), abort_unexpected=False, name="voicemail").start()
    yield server, vm
    vm.stop()


def caller(server, tmp_path: Path, callee: str) -> SippProcess:
    inf = write_inf(tmp_path, [("alice", DOMAIN, USERS["alice"])], name="alice.csv")
    return SippProcess(SCENARIOS / "uac_call.xml", server.address, port=free_port(), cwd=tmp_path, inf=inf,
                       service=callee, hold_ms=200, timeout=15, media_port=free_port(), abort_unexpected=False,
                       name=f"caller-{callee}").start()


def check_landed(call: SippProcess, vm: SippProcess, reason: str, callee: str) -> None:
    res = call.wait(timeout=25)
    assert res.ok and res.successful == 1, res.explain()
    vm_res = vm.wait(timeout=10)
    assert f"INVITE sip:voicemail@127.0.0.1:" in vm_res.messages, vm_res.explain()
    assert f"Diversion: <sip:{callee}@{DOMAIN}>;reason={reason};counter=1" in vm_res.messages, vm_res.explain()


def test_busy_user_is_diverted(setup, tmp_path):
    server, vm = setup
    with UA(server.port, "bob", password=USERS["bob"]) as bob:
        assert bob.register(300).status == 200
        call = caller(server, tmp_path, "bob")
        inv = bob.expect_request("INVITE", timeout=10)
        bob.respond(inv, 486, "Busy Here")
        bob.expect_request("ACK")
        check_landed(call, vm, "user-busy", "bob")
        assert bob.register(0).status == 200


def test_unregistered_user_is_diverted(setup, tmp_path):
    server, vm = setup
    check_landed(caller(server, tmp_path, "carol"), vm, "unavailable", "carol")
    assert "diverted to sip:voicemail@" in server.log_text()


def test_unanswered_call_is_cancelled_and_diverted(setup, tmp_path):
    server, vm = setup
    with UA(server.port, "bob", password=USERS["bob"]) as bob:
        assert bob.register(300).status == 200
        call = caller(server, tmp_path, "bob")
        inv = bob.expect_request("INVITE", timeout=10)
        bob.respond(inv, 180, "Ringing")
        cancel = bob.expect_request("CANCEL", timeout=5)  # after no_answer_timeout (1 s)
        bob.respond(cancel, 200)
        bob.respond(inv, 487, "Request Terminated")
        bob.expect_request("ACK")
        check_landed(call, vm, "no-answer", "bob")
        assert bob.register(0).status == 200
