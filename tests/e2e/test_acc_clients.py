"""Accounting with real clients: SIPp and baresip calls leave acc rows for INVITE and BYE and
one CDR whose duration matches the hold time; a rejected call (SIPp caller to a user without
contacts) leaves a missed_calls row and a CDR with its status."""

from __future__ import annotations

import time

import pytest

from sipd.db import connect

from .test_baresip import call_with_media
from .test_sipp import call, registered_uas

pytestmark = pytest.mark.e2e

HOLD_MS = 2000


def _rows(server, sql: str, params: tuple, n: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        with connect(server.db_url) as db:
            rows = db.query(sql, params)
        if len(rows) >= n:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"expected {n} rows of {sql} {params}, got {rows}")


def _call_ids(server) -> set[str]:
    with connect(server.db_url) as db:
        return {r["callid"] for r in db.query("SELECT callid FROM cdrs")}


def test_sipp_call_has_acc_rows_and_cdr_with_its_duration(server, tmp_path, sipp_bin):
    callee = registered_uas(server, tmp_path, "bob")
    try:
        res = call(server, tmp_path, "alice", "bob", hold_ms=HOLD_MS)
        assert res.ok and res.successful == 1, res.explain()
    finally:
        callee.stop()
    cdr = _rows(server, "SELECT * FROM cdrs WHERE status = ?", ("answered",), 1)[0]
    assert abs(float(cdr["duration"]) - HOLD_MS / 1000) <= 1.0, cdr
    assert int(cdr["sip_code"]) == 200 and "alice@" in cdr["caller"] and "bob@" in cdr["callee"]
    acc = _rows(server, "SELECT method, sip_code, from_tag, to_tag FROM acc WHERE callid = ?", (cdr["callid"],), 2)
    methods = sorted(r["method"] for r in acc)
    assert methods == ["BYE", "INVITE"], acc
    assert all(int(r["sip_code"]) == 200 and r["from_tag"] and r["to_tag"] for r in acc), acc


def test_sipp_call_to_unregistered_user_is_a_missed_call(server, tmp_path, sipp_bin):
    res = call(server, tmp_path, "alice", "carol", "uac_480.xml")
    assert res.ok and res.successful == 1, res.explain()
    missed = _rows(server, "SELECT * FROM missed_calls WHERE sip_code = ?", (480,), 1)[0]
    assert missed["method"] == "INVITE"
    cdr = _rows(server, "SELECT * FROM cdrs WHERE callid = ?", (missed["callid"],), 1)[0]
    assert int(cdr["sip_code"]) == 480 and cdr["status"] != "answered" and cdr["setup_time"] is not None, cdr


def test_baresip_call_has_acc_rows_and_cdr(server, baresip_factory):
    before = _call_ids(server)
    callee = baresip_factory("bob", server=server)
    caller = baresip_factory("alice", server=server, answer="manual")
    call_with_media(caller, callee)
    rows = _rows(server, "SELECT * FROM cdrs WHERE status = ?", ("answered",), len(before) + 1)
    cdr = next(r for r in rows if r["callid"] not in before)
    assert float(cdr["duration"]) >= 1.0 and int(cdr["sip_code"]) == 200, cdr
    acc = _rows(server, "SELECT method FROM acc WHERE callid = ?", (cdr["callid"],), 2)
    assert sorted(r["method"] for r in acc) == ["BYE", "INVITE"], acc
