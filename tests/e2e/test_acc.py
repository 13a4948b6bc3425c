"""Accounting, dialogs and CDRs against the live daemon (socket user agents, SQLite and MariaDB).

Each test drives calls through a real ``sipd`` subprocess with the socket UAs of
tests/daemon/harness.py, then reads acc / missed_calls / cdrs / dialog from the database and the
dialogs over the management socket (``sipctl dialog ...``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from tests.daemon.harness import DOMAIN, UA, add_subscriber, live_daemon
from tests.helpers.sipd_proc import SipdProcess

ROOT = Path(__file__).resolve().parents[2]
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
USERS = ("alice", "bob")


# -- helpers -----------------------------------------------------------------------------------


def query(url: str, sql: str, params: tuple = ()) -> list[dict]:
    from sipd.db import connect

    with connect(url) as db:
        return db.query(sql, params)


def wait_rows(url: str, sql: str, params: tuple, n: int, timeout: float = 8.0) -> list[dict]:
    """Poll (bounded) until the query returns at least ``n`` rows."""
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        try:
            rows = query(url, sql, params)
        except Exception:  # noqa: BLE001 - the database may be briefly unreachable in outage tests
            rows = []
        if len(rows) >= n:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"expected {n} rows for {sql} {params}, got {rows}")


def sipctl(d: SipdProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "sipctl", "--config", str(d.config_path), *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if check:
        assert res.returncode == 0, f"sipctl {args}: rc {res.returncode}\n{res.stdout}{res.stderr}"
    return res


def invite(caller: UA, target: str, call_id: str) -> str:
    """INVITE with the 407 round trip; returns the R-URI."""
    uri = f"sip:{target}@{DOMAIN}"
    headers = ["Content-Type: application/sdp"]
    caller.send(caller.request("INVITE", uri, to=f"<{uri}>", headers=headers, body=SDP, call_id=call_id, cseq=1))
    resp = caller.expect(407)
    caller.send(caller.request("ACK", uri, to=resp.get("To"), call_id=call_id, cseq=1, via=resp.get("Via")))
    auth = caller.authorization(resp, "INVITE", uri, proxy=True)
    caller.send(caller.request("INVITE", uri, to=f"<{uri}>", headers=[*headers, auth], body=SDP,
                               call_id=call_id, cseq=2))
    return uri


class Call:
    """One call alice -> bob through the proxy, driven step by step."""

    def __init__(self, alice: UA, bob: UA, call_id: str):
        self.alice, self.bob, self.call_id = alice, bob, call_id
        self.inv = None
        self.ok = None

    def ring(self):
        invite(self.alice, "bob", self.call_id)
        self.inv = self.bob.expect_request("INVITE")
        self.bob.respond(self.inv, 180, "Ringing")
        self.alice.expect(180)
        return self

    def answer(self):
        self.bob.respond(self.inv, 200, "OK", body=SDP, headers=["Content-Type: application/sdp"])
        self.ok = self.alice.expect(200)
        route = [f"Route: {rr}" for rr in reversed(self.ok.get_all("Record-Route"))]
        self.alice.send(self.alice.request("ACK", str(self.ok.contacts[0].uri), to=self.ok.get("To"),
                                           headers=route, call_id=self.call_id, cseq=2))
        self.bob.expect_request("ACK")
        return self

    def hangup(self):
        route = [f"Route: {rr}" for rr in reversed(self.ok.get_all("Record-Route"))]
        self.alice.send(self.alice.request("BYE", str(self.ok.contacts[0].uri), to=self.ok.get("To"),
                                           headers=route, call_id=self.call_id, cseq=3))
        bye = self.bob.expect_request("BYE")
        self.bob.respond(bye, 200)
        self.alice.expect(200)
        return self


def writer_pid(d: SipdProcess) -> int:
    """The accounting writer process: the daemon's only child."""
    kids = Path(f"/proc/{d.proc.pid}/task/{d.proc.pid}/children").read_text().split()
    assert len(kids) == 1, kids
    return int(kids[0])


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Bounded wait until ``pid`` has exited (it is not our child: poll /proc; a zombie counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state == "Z":
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still running after {timeout}s")


def make_daemon(tmp: Path, db_url: str | None = None, **overrides) -> SipdProcess:
    conf = {"proxy": {"invite_timeout": 5.0}, "acc": {"spool": str(tmp / "acc.spool"), "retry_interval": 0.3},
            "dialog": {"lifetime": 3600.0}}
    for k, v in overrides.items():
        conf.setdefault(k, {}).update(v)
    d = live_daemon(tmp, conf, db_url=db_url)
    for user in USERS:
        add_subscriber(d.db_url, user, "pw-" + user)
    return d


@contextmanager
def running(d: SipdProcess):
    d.start()
    try:
        yield d
    finally:
        rc = d.stop()
        log = d.log_text()
        assert "Traceback" not in log, log
        assert rc == 0, log


@contextmanager
def phones(d: SipdProcess):
    with UA(d.port, "alice", password="pw-alice") as alice, UA(d.port, "bob", password="pw-bob") as bob:
        assert bob.register(300).status == 200
        yield alice, bob


# -- tests -------------------------------------------------------------------------------------


def test_call_acc_rows_and_cdr_duration(tmp_path):
    d = make_daemon(tmp_path)
    with running(d), phones(d) as (alice, bob):
        call = Call(alice, bob, "acc-call-1").ring().answer()
        answered = time.monotonic()
        rows = wait_rows(d.db_url, "SELECT * FROM dialog WHERE callid = ?", ("acc-call-1",), 1)
        assert rows[0]["from_tag"] == "ft1" and rows[0]["to_tag"] == "callee1"
        listed = json.loads(sipctl(d, "dialog", "list", "--json").stdout)
        assert [x["callid"] for x in listed] == ["acc-call-1"]
        assert listed[0]["state"] == "confirmed"
        time.sleep(1.5)  # the hold time the CDR must show
        held = time.monotonic() - answered
        call.hangup()
        acc = wait_rows(d.db_url, "SELECT * FROM acc WHERE callid = ? ORDER BY id", ("acc-call-1",), 2)
        cdr = wait_rows(d.db_url, "SELECT * FROM cdrs WHERE callid = ?", ("acc-call-1",), 1)
    assert [(r["method"], r["sip_code"]) for r in acc] == [("INVITE", "200"), ("BYE", "200")], acc
    assert acc[0]["from_tag"] == "ft1" and acc[0]["to_tag"] == "callee1"
    assert acc[0]["caller"] == f"sip:alice@{DOMAIN}" and acc[0]["callee"] == f"sip:bob@{DOMAIN}"
    assert len(cdr) == 1
    c = cdr[0]
    assert c["status"] == "answered" and c["sip_code"] == "200" and c["end_reason"] == "Upstream BYE"
    assert abs(c["ms_duration"] / 1000 - held) < 1.0, (c, held)
    assert abs(c["duration"] - held) < 1.0
    assert query(d.db_url, "SELECT * FROM dialog") == []
    assert query(d.db_url, "SELECT * FROM missed_calls") == []


def test_rejected_and_cancelled_calls(tmp_path):
    d = make_daemon(tmp_path)
    with running(d), phones(d) as (alice, bob):
        uri = invite(alice, "bob", "rej-1")
        inv = bob.expect_request("INVITE")
        bob.respond(inv, 486, "Busy Here")
        busy = alice.expect(486)
        alice.send(alice.request("ACK", uri, to=busy.get("To"), call_id="rej-1", cseq=2, via=busy.get("Via")))

        uri = invite(alice, "bob", "can-1")
        inv = bob.expect_request("INVITE")
        bob.respond(inv, 180, "Ringing")
        alice.expect(180)
        alice.send(alice.request("CANCEL", uri, to=f"<{uri}>", call_id="can-1", cseq=2, via=inv.get_all("Via")[-1]))
        cancel = bob.expect_request("CANCEL")
        bob.respond(cancel, 200)
        bob.respond(inv, 487, "Request Terminated")
        alice.expect(200, 487)
        cdrs = wait_rows(d.db_url, "SELECT * FROM cdrs ORDER BY id", (), 2)
        missed = wait_rows(d.db_url, "SELECT * FROM missed_calls ORDER BY id", (), 2)
        acc = wait_rows(d.db_url, "SELECT * FROM acc ORDER BY id", (), 3)
        out = json.loads(sipctl(d, "missed", "list", "--json").stdout)
        listed = json.loads(sipctl(d, "cdr", "list", "--status", "cancelled", "--json").stdout)
    assert [(c["callid"], c["status"], c["sip_code"]) for c in cdrs] == [("rej-1", "missed", "486"),
                                                                      ("can-1", "cancelled", "487")]
    assert all(c["duration"] == 0 and c["answer_time"] is None for c in cdrs)
    assert [(m["callid"], m["sip_code"], m["sip_reason"]) for m in missed] == [
        ("rej-1", "486", "Busy Here"), ("can-1", "487", "Request Terminated")]
    assert ("CANCEL", "can-1", "200") in [(a["method"], a["callid"], a["sip_code"]) for a in acc]
    assert [m["callid"] for m in out] == ["rej-1", "can-1"]
    assert [c["callid"] for c in listed] == ["can-1"]


def test_dialog_end_sends_bye_both_ways(tmp_path):
    d = make_daemon(tmp_path)
    with running(d), phones(d) as (alice, bob):
        Call(alice, bob, "end-1").ring().answer()
        wait_rows(d.db_url, "SELECT * FROM dialog", (), 1)
        dlg_id = json.loads(sipctl(d, "dialog", "list", "--json").stdout)[0]["id"]
        sipctl(d, "dialog", "end", dlg_id)
        to_bob = bob.expect_request("BYE")
        to_alice = alice.expect_request("BYE")
        assert to_bob.call_id == to_alice.call_id == "end-1"
        assert to_bob.from_.tag == "ft1" and to_alice.from_.tag == "callee1"
        bob.respond(to_bob, 200)
        alice.respond(to_alice, 200, to_tag="ft1")
        cdr = wait_rows(d.db_url, "SELECT * FROM cdrs", (), 1)[0]
        assert cdr["end_reason"] == "MI Termination" and cdr["status"] == "answered"
        assert json.loads(sipctl(d, "dialog", "list", "--json").stdout) == []
        res = sipctl(d, "dialog", "end", "no-such-call", check=False)
        assert res.returncode == 7 and "no such dialog" in res.stderr and "Traceback" not in res.stderr


def test_lifetime_expiry_ends_call(tmp_path):
    d = make_daemon(tmp_path, dialog={"lifetime": 1.0})
    with running(d), phones(d) as (alice, bob):
        Call(alice, bob, "life-1").ring().answer()
        to_bob = bob.expect_request("BYE", timeout=5)
        to_alice = alice.expect_request("BYE", timeout=5)
        assert to_bob.get("Reason") and "Dialog Timeout" in to_bob.get("Reason")
        assert to_alice.call_id == "life-1"
        cdr = wait_rows(d.db_url, "SELECT * FROM cdrs", (), 1)[0]
    assert cdr["end_reason"] == "Dialog Timeout" and 1 <= cdr["duration"] <= 3


def test_kill9_during_call_keeps_dialog_and_completes_cdr(tmp_path):
    d = make_daemon(tmp_path)
    d.start()
    try:
        with phones(d) as (alice, bob):
            call = Call(alice, bob, "k9-1").ring().answer()
            answered = time.monotonic()
            wait_rows(d.db_url, "SELECT * FROM dialog", (), 1)
            time.sleep(1.0)
            child = writer_pid(d)
            d.kill9()
            wait_gone(child)  # the writer process sees EOF on its pipe, finishes and ends
            d.start()
            listed = json.loads(sipctl(d, "dialog", "list", "--json").stdout)
            assert [(x["callid"], x["state"]) for x in listed] == [("k9-1", "confirmed")]
            assert listed[0]["duration"] >= 1
            held = time.monotonic() - answered
            call.hangup()
            cdr = wait_rows(d.db_url, "SELECT * FROM cdrs", (), 1)[0]
            acc = wait_rows(d.db_url, "SELECT * FROM acc ORDER BY id", (), 2)
    finally:
        assert d.stop() == 0
    assert cdr["status"] == "answered" and cdr["end_reason"] == "Upstream BYE"
    assert abs(cdr["ms_duration"] / 1000 - held) < 1.0 and cdr["answer_time"] is not None
    assert [a["method"] for a in acc] == ["INVITE", "BYE"]
    assert query(d.db_url, "SELECT * FROM dialog") == []


def test_writer_process_killed_is_restarted_and_ends_with_the_daemon(tmp_path):
    d = make_daemon(tmp_path)
    with running(d), phones(d) as (alice, bob):
        Call(alice, bob, "wp-1").ring().answer().hangup()
        wait_rows(d.db_url, "SELECT * FROM cdrs", (), 1)
        first = writer_pid(d)
        os.kill(first, 9)  # the writer process dies (it is not the daemon's main process)
        wait_gone(first)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{d.proc.pid}/task/{d.proc.pid}/children").read_text() \
                .split() in ([], [str(first)]):
            time.sleep(0.05)
        second = writer_pid(d)
        assert second != first
        Call(alice, bob, "wp-2").ring().answer().hangup()
        cdrs = wait_rows(d.db_url, "SELECT callid FROM cdrs ORDER BY id", (), 2)
        assert [c["callid"] for c in cdrs] == ["wp-1", "wp-2"]
    wait_gone(second)  # ended with the daemon (running() checked exit code 0 and no traceback)
    assert "accounting writer process ended unexpectedly" in d.log_text()
