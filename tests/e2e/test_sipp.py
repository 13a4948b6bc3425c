"""Registrar and proxy with SIPp: REGISTER with auth, a call through the proxy, CANCEL before answer,
forking to two contacts, 480 for a user without contacts, 404 for an unknown user."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import free_port
from helpers.sipp import SippProcess, run_sipp, write_inf

from .conftest import DOMAIN, SCENARIOS, USERS

pytestmark = pytest.mark.e2e


@pytest.fixture(params=[1, 2], ids=["one-process", "two-workers"])
def server(server_factory, request):
    """The acceptance runs against one process and against [server] workers = 2 (a registrar
    worker beside main: calls, CANCEL and forking then cross the worker channel)."""
    return server_factory({"server": {"workers": 2}} if request.param == 2 else None)


def creds(tmp_path: Path, user: str) -> Path:
    return write_inf(tmp_path, [(user, DOMAIN, USERS[user])], name=f"{user}.csv")


def register(server, tmp_path: Path, user: str, *, contact_port: int | None = None, expires: int = 120,
             transport: str = "u1", password: str | None = None):
    # register from the port the binding is for (the callee UAS starts there afterwards): the same
    # as a phone registering itself, whether the registrar routes by Contact or by source address
    port = contact_port or free_port()
    inf = write_inf(tmp_path, [(user, DOMAIN, password or USERS[user])], name=f"reg-{user}-{port}.csv")
    return run_sipp(SCENARIOS / "register.xml", server.address, port=port, cwd=tmp_path, inf=inf,
                    transport=transport, timeout=10,
                    keys={"expires": expires, "contact_port": contact_port or port})


def uas(tmp_path: Path, scenario: str = "uas_answer.xml", port: int | None = None) -> SippProcess:
    return SippProcess(SCENARIOS / scenario, None, port=port or free_port(), cwd=tmp_path, timeout=20,
                       media_port=free_port(), abort_unexpected=False)


def call(server, tmp_path: Path, caller: str, callee: str, scenario: str = "uac_call.xml", hold_ms: int = 300):
    return run_sipp(SCENARIOS / scenario, server.address, port=free_port(), cwd=tmp_path,
                    inf=creds(tmp_path, caller), service=callee, hold_ms=hold_ms, timeout=15,
                    media_port=free_port(), abort_unexpected=scenario != "uac_call.xml")


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_register_with_auth(server, tmp_path, sipp_bin, transport):
    res = register(server, tmp_path, "alice", transport=transport)
    assert res.ok and res.successful == 1, res.explain()


def test_register_wrong_password_fails(server, tmp_path, sipp_bin):
    res = register(server, tmp_path, "alice", password="wrong")
    assert not res.ok, res.explain()


def registered_uas(server, tmp_path: Path, user: str, scenario: str = "uas_answer.xml") -> SippProcess:
    """Register USER from a fresh port, then start a SIPp UAS on that port."""
    port = free_port()
    reg = register(server, tmp_path, user, contact_port=port, expires=600)
    assert reg.ok, reg.explain()
    return uas(tmp_path, scenario, port=port).start()


def test_call_through_proxy(server, tmp_path, sipp_bin):
    callee = registered_uas(server, tmp_path, "bob")
    try:
        res = call(server, tmp_path, "alice", "bob")
        assert res.ok and res.successful == 1, res.explain()
        assert "Record-Route" in callee.wait(timeout=10).messages
    finally:
        end = callee.stop()
    assert end.successful == 1, end.explain()


def test_cancel_before_answer(server, tmp_path, sipp_bin):
    callee = registered_uas(server, tmp_path, "bob", "uas_ring_cancel.xml")
    try:
        res = call(server, tmp_path, "alice", "bob", "uac_cancel.xml")
        assert res.ok and res.successful == 1, res.explain()
        end = callee.wait(timeout=10)
    finally:
        end = callee.stop()
    assert end.successful == 1, end.explain()


def test_forking_two_contacts(server, tmp_path, sipp_bin):
    answering = registered_uas(server, tmp_path, "bob", "uas_answer.xml")
    ringing = registered_uas(server, tmp_path, "bob", "uas_ring_cancel.xml")
    try:
        res = call(server, tmp_path, "alice", "bob")
        assert res.ok and res.successful == 1, res.explain()
        answered = answering.wait(timeout=10)
        cancelled = ringing.wait(timeout=10)
    finally:
        answered, cancelled = answering.stop(), ringing.stop()
    assert answered.successful == 1, answered.explain()
    assert cancelled.successful == 1, cancelled.explain()


def test_call_unregistered_user_480(server, tmp_path, sipp_bin):
    res = call(server, tmp_path, "alice", "carol", "uac_480.xml")
    assert res.ok and res.successful == 1, res.explain()


def test_call_unknown_user_404(server, tmp_path, sipp_bin):
    res = call(server, tmp_path, "alice", "nobody", "uac_404.xml")
    assert res.ok and res.successful == 1, res.explain()
