"""Presence with SIPp: a watcher subscribes (digest auth), receives the initial NOTIFY,
the state a SIPp publisher publishes, refreshes, and gets terminated;reason=timeout when the
subscription runs out; the publisher walks through entity tags (refresh, stale tag 412, removal)
and has a malformed PIDF body rejected with 400 without the watcher hearing of it."""

from __future__ import annotations

import time

import pytest

from conftest import free_port
from helpers.sipp import SippProcess, run_sipp, write_inf

from .conftest import DOMAIN, SCENARIOS, USERS

pytestmark = pytest.mark.e2e


def test_sipp_publish_subscribe_notify_refresh_expiry(server_factory, tmp_path, sipp_bin):
    server = server_factory({"presence": {"min_expires": 1}})
    watcher = SippProcess(SCENARIOS / "presence_watcher.xml", server.address, port=free_port(), cwd=tmp_path,
                          inf=write_inf(tmp_path, [("alice", DOMAIN, USERS["alice"])], name="alice.csv"),
                          service="bob", keys={"expires": 2}, timeout=25).start()
    try:
        end = time.monotonic() + 10
        while time.monotonic() < end and "presence subscription of alice@example.test" not in server.log_text():
            time.sleep(0.05)
        assert "presence subscription of alice@example.test" in server.log_text(), server.log_tail()
        pub = run_sipp(SCENARIOS / "presence_publisher.xml", server.address, port=free_port(), cwd=tmp_path,
                       inf=write_inf(tmp_path, [("bob", DOMAIN, USERS["bob"])], name="bob.csv"), timeout=15)
        assert pub.ok and pub.successful == 1, pub.explain() + server.log_tail()
        res = watcher.wait(30)
    finally:
        res = watcher.stop()
    assert res.ok and res.successful == 1, res.explain() + server.log_tail()
    log = server.log_text()
    assert "invalid PIDF" in log and "-> 400" in log
