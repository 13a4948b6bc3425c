"""Many TCP clients against ``[server] workers = 2`` with SIPp: every REGISTER and every call on a
connection of its own (``-t tn``), so main and the worker each serve a share of the connections
(main hands every other accepted socket to the worker: counted in ``workers:connections_handed``),
and the answers and the calls' requests cross to whichever process holds the connection."""

from __future__ import annotations

import time

import pytest

from conftest import free_port
from helpers.sipp import SippProcess, run_sipp, write_inf

from .conftest import DOMAIN, SCENARIOS, USERS

pytestmark = pytest.mark.e2e

REGISTERS = 40
CALLS = 12
TN = ["-max_socket", "1000"]  # sipp -t tn wants more descriptors than this machine's limit by default


def ready(server) -> bool:
    procs = [p for p in server.mi("ps")["Processes"] if p["ID"] != 0]
    return bool(procs) and all(p["Type"].endswith("TCP/TLS connections)") for p in procs)


def test_many_tcp_clients_register_and_call_through_two_processes(server_factory, tmp_path, sipp_bin):
    server = server_factory({"server": {"workers": 2}})
    deadline = time.monotonic() + 15
    while not ready(server):
        assert time.monotonic() < deadline, "the worker is not ready"
        time.sleep(0.1)

    port = free_port()
    inf = write_inf(tmp_path, [(u, DOMAIN, pw) for u, pw in USERS.items()] * (REGISTERS // len(USERS)), name="many.csv")
    res = run_sipp(SCENARIOS / "register.xml", server.address, port=port, cwd=tmp_path, inf=inf, transport="tn",
                   calls=REGISTERS, rate=20, timeout=30, keys={"expires": 120, "contact_port": port}, extra=TN)
    assert res.ok and res.successful == REGISTERS, res.explain()
    handed = server.mi("get_statistics", ["workers:connections_handed"])["workers:connections_handed"]
    assert REGISTERS // 3 <= handed <= REGISTERS, handed  # about every other one went to the worker

    # bob answers over one TCP connection; alice calls over a new connection per call: each call's
    # INVITE, ACK and BYE come in on some process and leave on the one holding bob's connection
    uas_port = free_port()
    reg = run_sipp(SCENARIOS / "register.xml", server.address, port=uas_port, cwd=tmp_path, transport="t1",
                   inf=write_inf(tmp_path, [("bob", DOMAIN, USERS["bob"])], name="bob.csv"), timeout=10,
                   keys={"expires": 600, "contact_port": uas_port})
    assert reg.ok, reg.explain()
    callee = SippProcess(SCENARIOS / "uas_answer.xml", None, port=uas_port, cwd=tmp_path, timeout=40,
                         transport="t1", calls=CALLS, media_port=free_port(), abort_unexpected=False).start()
    try:
        calls = run_sipp(SCENARIOS / "uac_call.xml", server.address, port=free_port(), cwd=tmp_path,
                         inf=write_inf(tmp_path, [("alice", DOMAIN, USERS["alice"])], name="alice.csv"),
                         service="bob", transport="tn", calls=CALLS, rate=4, hold_ms=200, timeout=40,
                         media_port=free_port(), abort_unexpected=False, extra=TN)
        assert calls.ok and calls.successful == CALLS, calls.explain()
        end = callee.wait(timeout=20)  # it ends by itself after CALLS calls (-m)
        assert end.successful == CALLS, end.explain()
    finally:
        callee.stop()
    assert server.running()
    assert "Traceback" not in server.log_text()
