"""Calls spread over ``[server] workers`` by Call-ID (sipd/daemon/workers/), with their events sent to
main's accounting, dialogs and presence.

The raw-bytes readers (Call-ID, our branch mark) are checked as pure code against the parser; the
rest runs a real sipd with one worker and proves each rule by observing processes: a stopped
worker (SIGSTOP) holds exactly the calls whose Call-ID it owns, while the others complete; a
CANCEL and the forks of a call meet its INVITE in the worker; a call to an AOR main owns is
routed from main's copy, which follows re-registrations; a call to a callee on TCP stays in the
worker, which sends it on the callee's connection whichever process holds it.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from sipd.sip.parser import parse_message
from sipd.daemon.workers.affinity import branch_mark, call_id_of, calls_stay_in_main, owner_of_call
from sipd.daemon.workers.process import worker_config
from sipd.config import Config
from tests.daemon.harness import DOMAIN, UA
from tests.daemon.test_proxy import SDP, ack_and_bye, invite
from tests.daemon.test_workers import MAIN_USERS, WORKER_USERS, start, wait_for, workers

TESTDATA = Path(__file__).resolve().parents[2] / "tests" / "sip" / "data"
NO_CALL_STATE = {"acc": {"enabled": False}, "dialog": {"enabled": False}, "presence": {"enabled": False}}


def stat(d, name: str) -> int:
    """A counter summed over the processes (workers report once a second); 0 before it exists."""
    from sipd.mgmt.protocol import RpcError

    try:
        return int(d.mi("get_statistics", [name]).get(name, 0))
    except RpcError:
        return 0


def cids(owner: int, count: int, prefix: str) -> list[str]:
    out = [f"{prefix}-{i}" for i in range(400) if owner_of_call(f"{prefix}-{i}".encode(), 2) == owner]
    return out[:count]


# -- pure ---------------------------------------------------------------------------------------


def test_raw_call_id_is_the_parsed_one_on_the_torture_corpus():
    checked = 0
    for path in sorted(TESTDATA.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        try:
            cid = parse_message(data).call_id
        except Exception:  # noqa: BLE001 - malformed on purpose: whoever reads it answers it
            continue
        assert call_id_of(data) == cid.encode("utf-8", "surrogateescape"), path.name
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize("via,mark", [
    ("Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc123.0a1b2c3d17;rport", b"0a1b2c3d"),  # proxy branch
    ("v: SIP/2.0/UDP 127.0.0.1:5060 ; branch = z9hG4bK0a1b2c3dx5", b"0a1b2c3d"),  # the layer's (CANCEL, ACK)
    ("Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK0a1b2c3dx5, SIP/2.0/UDP h;branch=z9hG4bK.ffffffff1", b"0a1b2c3d"),
    ("Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKnotours\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKa.0a1b2c3d1", None),
    ("Via: SIP/2.0/UDP 10.0.0.1;branch=1234", None),
])
def test_branch_mark_reads_the_top_via_only(via, mark):
    data = f"SIP/2.0 200 OK\r\n{via}\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n".encode()
    assert branch_mark(data) == mark


def test_a_worker_derives_its_own_configuration():
    """A worker's configuration is main's with presence off (SUBSCRIBE and PUBLISH are main's),
    a new object: main's is not edited."""
    main = Config()
    worker = worker_config(main)
    assert main.presence.enabled and not worker.presence.enabled
    assert worker is not main and worker.presence is not main.presence
    assert worker.server == main.server and worker.location == main.location


def test_per_call_state_outside_events_keeps_calls_in_main():
    config = Config()
    assert calls_stay_in_main(config) == []  # accounting, dialogs, presence: fed by the workers' events
    config.routing.hook = "/etc/sipd/hook.py"
    config.diversion.uri = "sip:voicemail@example.test"
    assert calls_stay_in_main(config) == ["[diversion] uri set", "[routing] hook set"]


# -- live -----------------------------------------------------------------------------------------


def _call(caller: UA, callee: UA, cid: str) -> None:
    invite(caller, f"{callee.user}@{DOMAIN}", call_id=cid)
    inv = callee.expect_request("INVITE")
    callee.respond(inv, 180, "Ringing")
    caller.expect(180)
    callee.respond(inv, 200, "OK", body=SDP, headers=["Content-Type: application/sdp"])
    ok = caller.expect(200)
    assert ok.call_id == cid
    ack_and_bye(caller, callee, ok, cid)


def test_a_stopped_worker_holds_exactly_its_calls(tmp_path):
    d = start(tmp_path, **NO_CALL_STATE)
    try:
        assert "calls spread over 2 processes by Call-ID" in d.log_text()
        assert d.mi("get_statistics", ["workers:"]) == {"workers:handed_to_main": 0, "workers:aor_copies": 0,
                                                     "workers:connections_handed": 0}
        [w] = workers(d)
        assert "calls by Call-ID" in w["Type"]
        caller_name, callee_name = MAIN_USERS[0], WORKER_USERS[0]
        with UA(d.port, caller_name, password=f"pw-{caller_name}") as caller, \
             UA(d.port, callee_name, password=f"pw-{callee_name}") as callee:
            assert callee.register(600).status == 200
            mine, theirs = cids(0, 3, "main"), cids(1, 3, "worker")
            for cid in mine + theirs:  # both processes complete calls
                _call(caller, callee, cid)
            os.kill(w["PID"], signal.SIGSTOP)
            try:
                uri = f"sip:{callee_name}@{DOMAIN}"
                stuck = cids(1, 5, "stuck")[0]
                caller.send(caller.request("INVITE", uri, to=f"<{uri}>", call_id=stuck, cseq=1))
                caller.nothing(0.5)  # not even a 100 Trying or a challenge: the worker owns it
                _call(caller, callee, cids(0, 1, "meanwhile")[0])  # main's calls go on
            finally:
                os.kill(w["PID"], signal.SIGCONT)
            assert caller.expect(407).call_id == stuck  # the worker runs again: the queued INVITE is answered
        assert d.running()
        assert "Traceback" not in d.log_text()
    finally:
        d.stop()


def test_cancel_forks_copies_and_tcp_in_worker_calls(tmp_path):
    d = start(tmp_path, **NO_CALL_STATE)
    try:
        caller_name, callee_name = WORKER_USERS[0], MAIN_USERS[0]  # the callee's AOR is main's
        with UA(d.port, caller_name, password=f"pw-{caller_name}") as caller, \
             UA(d.port, callee_name, password=f"pw-{callee_name}") as c1, \
             UA(d.port, callee_name, password=f"pw-{callee_name}") as c2:
            assert c1.register(600).status == 200
            assert c2.register(600).status == 200
            worker_cids = cids(1, 4, "w")

            # forking from the worker's copy of main's AOR; CANCEL meets the INVITE in the worker
            uri = invite(caller, f"{callee_name}@{DOMAIN}", call_id=worker_cids[0])
            i1, i2 = c1.expect_request("INVITE"), c2.expect_request("INVITE")
            c1.respond(i1, 180, "Ringing", to_tag="c1")
            c2.respond(i2, 180, "Ringing", to_tag="c2")
            caller.expect(180)
            caller.expect(180)
            caller_via = i1.get_all("Via")[-1]
            caller.send(caller.request("CANCEL", uri, to=f"<{uri}>", call_id=worker_cids[0], cseq=2, via=caller_via))
            assert caller.expect(200).get("CSeq").endswith("CANCEL")
            for ua, inv, tag in ((c1, i1, "c1"), (c2, i2, "c2")):
                ua.respond(ua.expect_request("CANCEL"), 200, to_tag=tag)
                ua.respond(inv, 487, "Request Terminated", to_tag=tag)
                ua.expect_request("ACK")
            terminated = caller.expect(487)
            caller.send(caller.request("ACK", uri, to=terminated.get("To"), call_id=worker_cids[0], cseq=2,
                                       via=terminated.get("Via")))

            wait_for(lambda: stat(d, "workers:aor_copies") == 1, "the worker's copy of main's AOR (asked once)")

            # main's copy follows a re-registration: the next call reaches the new contact only
            assert c2.register(0).status == 200
            _call(caller, c1, worker_cids[1])
            c2.nothing(0.3)

        # a callee on TCP: the worker keeps the call, and its INVITE leaves on the callee's
        # connection (tests/daemon/test_worker_streams.py tries every owner of it)
        with UA(d.port, caller_name, password=f"pw-{caller_name}") as caller, \
             UA(d.port, callee_name, transport="tcp", password=f"pw-{callee_name}") as tcp_callee:
            assert tcp_callee.register(600).status == 200
            _call(caller, tcp_callee, worker_cids[2])
        assert stat(d, "workers:handed_to_main") == 0
        assert d.running()
        assert "Traceback" not in d.log_text()
    finally:
        d.stop()


def test_worker_calls_reach_main_accounting_and_dialogs(tmp_path):
    """With the defaults (accounting, dialogs, presence on) the worker handles its calls and sends
    their events to main: the dialog is listed, acc/cdrs/missed_calls rows are written, and
    `sipctl dialog end` ends a worker's call from main."""
    from tests.e2e.test_acc import sipctl, wait_rows

    d = start(tmp_path, acc={"spool": str(tmp_path / "acc.spool"), "retry_interval": 0.3})
    try:
        assert "calls spread over 2 processes by Call-ID" in d.log_text()
        [w] = workers(d)
        caller_name, callee_name = MAIN_USERS[0], WORKER_USERS[0]
        answered, busy, ended, ringing = cids(1, 4, "acct")
        with UA(d.port, caller_name, password=f"pw-{caller_name}") as caller, \
             UA(d.port, callee_name, password=f"pw-{callee_name}") as callee:
            assert callee.register(600).status == 200
            uri = f"sip:{callee_name}@{DOMAIN}"
            os.kill(w["PID"], signal.SIGSTOP)
            try:
                caller.send(caller.request("INVITE", uri, to=f"<{uri}>", call_id=answered, cseq=1))
                caller.nothing(0.5)  # the worker's call: nobody else answers it
            finally:
                os.kill(w["PID"], signal.SIGCONT)
            challenge = caller.expect(407)
            caller.send(caller.request("ACK", uri, to=challenge.get("To"), call_id=answered, cseq=1,
                                       via=challenge.get("Via")))

            invite(caller, f"{callee_name}@{DOMAIN}", call_id=answered)
            inv = callee.expect_request("INVITE")
            callee.respond(inv, 200, "OK", body=SDP, headers=["Content-Type: application/sdp"])
            ok = caller.expect(200)
            listed = json.loads(sipctl(d, "dialog", "list", "--json").stdout)
            assert [(x["callid"], x["state"]) for x in listed] == [(answered, "confirmed")]
            piped = [line.split("\t") for line in sipctl(d, "dialog", "list").stdout.splitlines()]
            assert piped[0][-1] == "call-id" and piped[1][-1] == answered  # whole, as dialog end needs it
            ack_and_bye(caller, callee, ok, answered)
            acc = wait_rows(d.db_url, "SELECT * FROM acc WHERE callid = ? ORDER BY id", (answered,), 2)
            assert [(r["method"], r["sip_code"]) for r in acc] == [("INVITE", "200"), ("BYE", "200")]
            cdr = wait_rows(d.db_url, "SELECT * FROM cdrs WHERE callid = ?", (answered,), 1)[0]
            assert cdr["status"] == "answered" and cdr["end_reason"] == "Upstream BYE"

            uri = invite(caller, f"{callee_name}@{DOMAIN}", call_id=busy)
            callee.respond(callee.expect_request("INVITE"), 486, "Busy Here")
            rejected = caller.expect(486)
            caller.send(caller.request("ACK", uri, to=rejected.get("To"), call_id=busy, cseq=2, via=rejected.get("Via")))
            missed = wait_rows(d.db_url, "SELECT * FROM missed_calls WHERE callid = ?", (busy,), 1)
            assert missed[0]["sip_code"] == "486"

            invite(caller, f"{callee_name}@{DOMAIN}", call_id=ended)
            inv = callee.expect_request("INVITE")
            callee.respond(inv, 200, "OK", body=SDP, headers=["Content-Type: application/sdp"])
            ok = caller.expect(200)
            wait_rows(d.db_url, "SELECT * FROM dialog WHERE callid = ?", (ended,), 1)
            dlg_id = next(x["id"] for x in json.loads(sipctl(d, "dialog", "list", "--json").stdout)
                          if x["callid"] == ended)
            sipctl(d, "dialog", "end", dlg_id)
            to_callee, to_caller = callee.expect_request("BYE"), caller.expect_request("BYE")
            callee.respond(to_callee, 200)
            caller.respond(to_caller, 200, to_tag="ft1")
            cdr = wait_rows(d.db_url, "SELECT * FROM cdrs WHERE callid = ?", (ended,), 1)[0]
            assert cdr["end_reason"] == "MI Termination"

            # ringing: main asks the worker, whose transactions they are, to cancel it
            uri = invite(caller, f"{callee_name}@{DOMAIN}", call_id=ringing)
            inv = callee.expect_request("INVITE")
            callee.respond(inv, 180, "Ringing")
            caller.expect(180)
            early = [x for x in json.loads(sipctl(d, "dialog", "list", "--json").stdout) if x["callid"] == ringing]
            assert [x["state"] for x in early] == ["early"]
            sipctl(d, "dialog", "end", early[0]["id"])  # exit status 0: found and cancelled
            callee.respond(callee.expect_request("CANCEL"), 200)
            callee.respond(inv, 487, "Request Terminated")
            callee.expect_request("ACK")
            assert caller.expect(487).call_id == ringing
        assert "Traceback" not in d.log_text()
    finally:
        d.stop()


def test_diversion_keeps_calls_in_main(tmp_path):
    d = start(tmp_path, diversion={"uri": f"sip:{MAIN_USERS[1]}@{DOMAIN}"})
    try:
        assert "calls stay in the main process (their state is kept there): [diversion] uri set" in d.log_text()
        [w] = workers(d)
        caller_name, callee_name = MAIN_USERS[0], WORKER_USERS[0]
        with UA(d.port, caller_name, password=f"pw-{caller_name}") as caller, \
             UA(d.port, callee_name, password=f"pw-{callee_name}") as callee:
            assert callee.register(600).status == 200
            os.kill(w["PID"], signal.SIGSTOP)
            try:
                for cid in cids(1, 2, "div"):  # Call-IDs a worker would own: main completes them
                    _call(caller, callee, cid)
            finally:
                os.kill(w["PID"], signal.SIGCONT)
    finally:
        d.stop()


def test_trace_shows_a_worker_call_and_the_call_stays_there(tmp_path):
    """While `sipctl trace` watches, a call whose Call-ID a worker owns is still the worker's (its
    transactions are there), and the trace shows every message of it: what main read and handed
    over, and copies of what the worker sent."""
    import subprocess
    import sys

    from tests.helpers.sipd_proc import _end_pid

    d = start(tmp_path, **NO_CALL_STATE)
    try:
        caller_name, callee_name = MAIN_USERS[0], WORKER_USERS[0]
        with UA(d.port, caller_name, password=f"pw-{caller_name}") as caller, \
             UA(d.port, callee_name, password=f"pw-{callee_name}") as callee:
            assert callee.register(600).status == 200
            cmd = [sys.executable, "-m", "sipctl", "--config", str(d.config_path), "trace", "--count", "16", "--duration", "20"]
            tracer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                wait_for(lambda: workers(d)[0]["Type"].endswith("while traced"), "the trace to start")
                _call(caller, callee, cids(1, 1, "traced")[0])
                out, err = tracer.communicate(timeout=25)
            finally:
                _end_pid(tracer, 2)
        assert tracer.returncode == 0, err
        seen = []
        for ln in out.splitlines():
            if " <- " in ln or " -> " in ln:
                first = ln.split("  ", 1)[1].split()[:2]
                seen.append(("in" if " <- " in ln else "out", first[0] if first[0] != "SIP/2.0" else first[1]))
        # the copies of what the worker sent reach main a little after what main read next: compare as sets
        assert sorted(seen) == sorted([
            ("in", "INVITE"), ("out", "407"), ("in", "ACK"), ("in", "INVITE"), ("out", "100"), ("out", "INVITE"),
            ("in", "180"), ("out", "180"), ("in", "200"), ("out", "200"), ("in", "ACK"), ("out", "ACK"),
            ("in", "BYE"), ("out", "BYE"), ("in", "200"), ("out", "200")]), out
    finally:
        d.stop()


def test_a_bad_call_id_over_tcp_leaves_main_serving(tmp_path):
    """A call request whose Call-ID does not parse, over TCP: routed by its raw Call-ID to a
    process, which answers 400 on the connection (as over UDP); the connection stays up (framing
    found where the message ends) and the processes keep serving."""
    d = start(tmp_path, **NO_CALL_STATE)
    try:
        uri = f"sip:{WORKER_USERS[0]}@{DOMAIN}"
        with UA(d.port, MAIN_USERS[0], transport="tcp", password=f"pw-{MAIN_USERS[0]}") as ua:
            for n, call_id in enumerate(("two words again", "two words")):  # one Call-ID of each owner
                assert owner_of_call(call_id.encode(), 2) == n
                bad = ua.request("INVITE", uri, to=f"<{uri}>", call_id=call_id, cseq=1)
                assert f"Call-ID: {call_id}" in bad
                ua.send(bad)
                answer = ua.recv_raw()
                assert answer.startswith(b"SIP/2.0 400 ") and f"Call-ID: {call_id}".encode() in answer, answer
            assert ua.register(60).status == 200  # the same connection
        assert d.running()
        assert "Traceback" not in d.log_text()
    finally:
        d.stop()
