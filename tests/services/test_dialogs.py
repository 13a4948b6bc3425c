"""The dialog state machine and the records calls produce (pure; fake clock, parsed messages)."""

from __future__ import annotations

import pickle

import pytest

from sipd.services.cdr import CALLEE_BYE, CALLER_BYE, DIALOG_TIMEOUT, MI_TERMINATION
from sipd.services.dialogs import Dialog, DlgState, expand
from sipd.services.dialogs import Tracker as FactTracker
from sipd.sip.parser import parse_message

RR_US = "<sip:127.0.0.1:5060;lr>"
RR_DOWN = "<sip:10.0.0.9:5070;lr>"
RR_UP = "<sip:10.0.0.1:5080;lr>"


def req(method: str, *, call_id: str = "c1", from_tag: str = "ft", to_tag: str | None = None, cseq: int = 1,
        rr: list[str] = (), uri: str = "sip:bob@example.test"):
    to = "<sip:bob@example.test>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} {uri} SIP/2.0", "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1;rport=5062",
             "Max-Forwards: 70", f"From: <sip:alice@example.test>;tag={from_tag}", f"To: {to}",
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}", "Contact: <sip:alice@127.0.0.1:5062>",
             *[f"Record-Route: {r}" for r in rr], "Content-Length: 0", "", ""]
    return parse_message("\r\n".join(lines).encode())


def resp(request, status: int, reason: str = "OK", *, to_tag: str | None = "tt", rr: list[str] = ()):
    to = request.get("To") + (f";tag={to_tag}" if to_tag and ";tag=" not in request.get("To") else "")
    lines = [f"SIP/2.0 {status} {reason}", f"Via: {request.get('Via')}", f"From: {request.get('From')}",
             f"To: {to}", f"Call-ID: {request.call_id}", f"CSeq: {request.get('CSeq')}",
             "Contact: <sip:bob@127.0.0.1:5064>", *[f"Record-Route: {r}" for r in rr], "Content-Length: 0", "", ""]
    return parse_message("\r\n".join(lines).encode())


class Tracker(FactTracker):
    """The tracker with its facts expanded into records (what the writer stores)."""

    def on_request(self, *args, **kw):
        return expand(_picklable(super().on_request(*args, **kw)))

    def on_response(self, *args, **kw):
        return expand(_picklable(super().on_response(*args, **kw)))

    def end(self, *args, **kw):
        return expand(_picklable(super().end(*args, **kw)))


def _picklable(facts):
    """Facts cross a pipe to the writer process: plain tuples of plain values, pickled and back."""
    assert all(type(f) is tuple for f in facts)
    return pickle.loads(pickle.dumps(facts))


def tables(records):
    return [(r.op, r.table) for r in records]


@pytest.fixture
def tracker():
    ids = iter(range(100, 200))
    return Tracker(lifetime=60.0, ids=lambda: next(ids), is_self_route=lambda v: v == RR_US)


def answered_call(tracker, clock, call_id="c1"):
    inv = req("INVITE", call_id=call_id, rr=[RR_UP])
    assert tracker.on_request(inv, "tx1", clock.now, "udp:127.0.0.1:5062") == []
    clock.advance(1.0)
    assert tracker.on_response(inv, resp(inv, 180, "Ringing"), "tx1", clock.now) == []
    assert tracker.find(call_id).state == DlgState.EARLY
    clock.advance(2.0)
    out = tracker.on_response(inv, resp(inv, 200, rr=[RR_DOWN, RR_US, RR_UP]), "tx1", clock.now)
    return inv, out


def test_answered_call_then_caller_bye(tracker, clock):
    inv, out = answered_call(tracker, clock)
    assert tables(out) == [("insert", "acc"), ("upsert", "dialog")]
    acc = out[0].row
    assert acc["method"] == "INVITE" and acc["sip_code"] == "200" and acc["setuptime"] == 3
    assert acc["caller"] == "sip:alice@example.test" and acc["callee"] == "sip:bob@example.test"
    dlg = tracker.find("c1")
    assert dlg.state == DlgState.CONFIRMED_NA and dlg.to_tag == "tt"
    assert dlg.callee_route_set == [RR_DOWN] and dlg.caller_route_set == [RR_UP]
    assert dlg.timeout == clock.now + 60.0
    ack = req("ACK", to_tag="tt", cseq=1)
    tracker.on_request(ack, None, clock.now)
    assert dlg.state == DlgState.CONFIRMED
    clock.advance(42.4)
    bye = req("BYE", to_tag="tt", cseq=2)
    out = tracker.on_request(bye, "tx2", clock.now)
    assert tables(out) == [("insert", "cdrs"), ("delete", "dialog")]
    cdr = out[0].row
    assert (cdr["setup_time"], cdr["duration"], cdr["ms_duration"]) == (3, 42, 42400)
    assert cdr["status"] == "answered" and cdr["end_reason"] == CALLER_BYE
    assert cdr["from_tag"] == "ft" and cdr["to_tag"] == "tt" and cdr["callid"] == "c1"
    assert tracker.find("c1") is None and tracker.dialogs == {} and tracker.by_tx == {}
    clock.advance(0.1)
    out = tracker.on_response(bye, resp(bye, 200), "tx2", clock.now)
    assert tables(out) == [("insert", "acc")]
    assert out[0].row["method"] == "BYE" and out[0].row["caller"] == "sip:alice@example.test"


def test_callee_bye_and_second_2xx_ignored(tracker, clock):
    inv, _ = answered_call(tracker, clock)
    assert tracker.on_response(inv, resp(inv, 200), "tx1", clock.now) == []  # retransmission
    bye = req("BYE", from_tag="tt", to_tag="ft", cseq=7)
    # the callee's BYE carries its tag in From
    out = tracker.on_request(bye, "tx3", clock.advance(5))
    assert out[0].row["end_reason"] == CALLEE_BYE and out[0].row["duration"] == 5


@pytest.mark.parametrize("status,reason,expected", [
    (486, "Busy Here", "missed"), (480, "Temporarily Unavailable", "missed"), (603, "Decline", "missed"),
    (500, "Server Internal Error", "failed"), (487, "Request Terminated", "cancelled"),
])
def test_failed_call_records(tracker, clock, status, reason, expected):
    inv = req("INVITE")
    tracker.on_request(inv, "tx1", clock.now)
    clock.advance(4.2)
    out = tracker.on_response(inv, resp(inv, status, reason), "tx1", clock.now)
    assert tables(out) == [("insert", "acc"), ("insert", "missed_calls"), ("insert", "cdrs")]
    missed, cdr = out[1].row, out[2].row
    assert "duration" not in missed and missed["sip_code"] == str(status) and missed["setuptime"] == 4
    assert cdr["status"] == expected and cdr["setup_time"] == 4 and cdr["duration"] == 0
    assert cdr["answer_time"] is None and cdr["start_time"] is not None and cdr["end_time"] is not None
    assert tracker.dialogs == {}


def test_cancelled_call(tracker, clock):
    inv = req("INVITE")
    tracker.on_request(inv, "tx1", clock.now)
    tracker.on_response(inv, resp(inv, 180, "Ringing"), "tx1", clock.advance(1))
    cancel = req("CANCEL")
    out = tracker.on_response(cancel, resp(cancel, 200, to_tag=None), True, clock.advance(1))
    assert tables(out) == [("insert", "acc")] and out[0].row["method"] == "CANCEL"
    out = tracker.on_response(inv, resp(inv, 487, "Request Terminated"), "tx1", clock.advance(0.1))
    assert out[2].row["status"] == "cancelled" and out[2].row["end_reason"] == "Cancelled"
    assert out[2].row["setup_time"] == 2


def test_local_replies(tracker, clock):
    inv = req("INVITE")
    assert tracker.on_response(inv, resp(inv, 407, "Proxy Authentication Required"), "txa", clock.now) == []
    out = tracker.on_response(inv, resp(inv, 404, "Not Found"), "txb", clock.now)
    assert tables(out) == [("insert", "acc"), ("insert", "missed_calls"), ("insert", "cdrs")]
    assert out[2].row["status"] == "missed" and out[2].row["setup_time"] == 0


def test_lifetime_due_and_end(tracker, clock):
    answered_call(tracker, clock)
    dlg = tracker.find("c1")
    assert tracker.due(clock.advance(59)) == []
    assert tracker.due(clock.advance(1)) == [dlg]
    out = tracker.end(dlg, clock.now, DIALOG_TIMEOUT)
    assert out[0].row["end_reason"] == DIALOG_TIMEOUT and out[0].row["duration"] == 60
    assert tracker.end(dlg, clock.now, DIALOG_TIMEOUT) == []  # only once


def test_persisted_row_roundtrip_keeps_times(tracker, clock):
    """A restart: the dialog row brings back start and answer times; the BYE completes the CDR."""
    _, out = answered_call(tracker, clock)
    row = out[1].row
    fresh = Tracker(lifetime=60.0)
    assert fresh.restore([row]) == 1
    dlg = fresh.find(str(row["dlg_id"]))
    assert isinstance(dlg, Dialog) and dlg.restored and dlg.answered == clock.now
    assert dlg.created == clock.now - 3 and dlg.callee_route_set == [RR_DOWN]
    bye = req("BYE", to_tag="tt", cseq=2)
    cdr = fresh.on_request(bye, "txz", clock.advance(10))[0].row
    assert (cdr["setup_time"], cdr["duration"], cdr["status"]) == (3, 10, "answered")


def test_switches(clock):
    quiet = Tracker(acc=False, dialogs=False)
    inv = req("INVITE")
    quiet.on_request(inv, "tx1", clock.now)
    assert quiet.on_response(inv, resp(inv, 200), "tx1", clock.now) == []
    assert len(quiet.dialogs) == 1  # still tracked (lifetime, dlg_list)
    only_dlg = Tracker(acc=False, dialogs=True)
    only_dlg.on_request(inv, "tx1", clock.now)
    assert tables(only_dlg.on_response(inv, resp(inv, 200), "tx1", clock.now)) == [("upsert", "dialog")]


def test_mi_termination_of_early_dialog_marks_reason(tracker, clock):
    inv = req("INVITE")
    tracker.on_request(inv, "tx1", clock.now)
    tracker.find("c1").end_reason = MI_TERMINATION
    out = tracker.on_response(inv, resp(inv, 487, "Request Terminated"), "tx1", clock.advance(1))
    assert out[2].row["end_reason"] == MI_TERMINATION and out[2].row["status"] == "cancelled"


def test_answer_with_a_record_route_that_does_not_parse_still_makes_a_cdr(tracker, clock):
    """A 200 relayed with a broken Record-Route (hostile callee): the call is tracked, its BYE ends
    it with a CDR; the route set the tracker could not read is left empty."""
    inv = req("INVITE", rr=["<sip:127.0.0.1;lr"])  # unterminated <: read lazily, never before this
    assert tracker.on_request(inv, "tx1", clock.now, "udp:127.0.0.1:5062") == []
    clock.advance(1.0)
    out = tracker.on_response(inv, resp(inv, 200, rr=["<sip:10.0.0.9;lr", RR_US]), "tx1", clock.now)
    assert tables(out) == [("insert", "acc"), ("upsert", "dialog")]
    dlg = tracker.find("c1")
    assert dlg.caller_route_set == [] and dlg.callee_route_set == []
    clock.advance(5.0)
    out = tracker.on_request(req("BYE", to_tag="tt", cseq=2), "tx2", clock.now)
    assert tables(out) == [("insert", "cdrs"), ("delete", "dialog")] and out[0].row["duration"] == 5


def test_new_call_reusing_an_answered_invites_transaction_key_gets_its_own_cdr(tracker, clock):
    """A client that repeats a Via branch: the second INVITE (another Call-ID) arrives under the key
    of the first, answered one. It is a call of its own, not a retransmission of the first."""
    answered_call(tracker, clock, "c1")
    inv2 = req("INVITE", call_id="c2", from_tag="ft2")
    assert tracker.on_request(inv2, "tx1", clock.now, "udp:127.0.0.1:5062") == []
    out = tracker.on_response(inv2, resp(inv2, 200), "tx1", clock.now)
    assert tables(out) == [("insert", "acc"), ("upsert", "dialog")] and out[0].row["callid"] == "c2"
    assert tracker.on_response(inv2, resp(inv2, 200), "tx1", clock.now) == []  # its 2xx retransmitted
    clock.advance(3.0)
    out = tracker.on_request(req("BYE", call_id="c2", from_tag="ft2", to_tag="tt", cseq=2), "tx3", clock.now)
    assert tables(out) == [("insert", "cdrs"), ("delete", "dialog")] and out[0].row["callid"] == "c2"
    assert tracker.find("c1") is not None  # the first call is still up


def test_a_node_stores_itself_as_the_owner_and_lets_a_taken_call_go(clock):
    """With [cluster] node_id the dialog row names the node; a call another node took over is
    forgotten here without a CDR or a row change; ``match`` finds a call by either side's tags."""
    ids = iter(range(100, 200))
    tracker = Tracker(lifetime=60.0, ids=lambda: next(ids), is_self_route=lambda v: v == RR_US, owner="a")
    _, out = answered_call(tracker, clock)
    assert out[1].row["owner"] == "a"
    dlg = tracker.match("c1", "tt", "ft")
    assert dlg is not None and dlg is tracker.match("c1", "ft", "tt") and tracker.match("c1", "ft", "x") is None
    tracker.forget(dlg)
    assert tracker.list() == [] and tracker.on_request(req("BYE", to_tag="tt", cseq=2), "txb", clock.now) == []
    assert Tracker(lifetime=60.0).restore([out[1].row]) == 1  # a survivor loads the row as it was stored


def test_default_ids_never_wrap_and_grow_with_the_start_time():
    from sipd.services.dialogs import ID_EPOCH_MS, default_ids

    ids = default_ids(ID_EPOCH_MS + 1000)
    first = [ids() for _ in range(70_000)]
    assert len(set(first)) == 70_000 and first == sorted(first)  # past 65,536: no id comes back
    later = default_ids(ID_EPOCH_MS + 1001)()
    assert later > first[-1] and later < 2**63  # a later start: above, and within a BIGINT
    assert default_ids(ID_EPOCH_MS + 69 * 365 * 86400 * 1000)() < 2**63  # still fits in 2094


def test_each_acc_record_is_named_once(clock):
    """With a prefix (node/start/), every acc and missed_calls record carries its own name, the
    missed_calls row the same as its acc row; without one (the default) records are unnamed."""
    ids = iter(range(100, 200))
    tracker = Tracker(lifetime=60.0, ids=lambda: next(ids), is_self_route=lambda v: v == RR_US, records="a/7/")
    _, out = answered_call(tracker, clock)
    busy = req("INVITE", call_id="c2")
    tracker.on_request(busy, "tx2", clock.now, "udp:127.0.0.1:5062")
    failed = tracker.on_response(busy, resp(busy, 486, "Busy Here"), "tx2", clock.now)
    names = [r.row.get("record_id") for r in out + failed if r.table in ("acc", "missed_calls")]
    assert names == ["a/7/1", "a/7/2", "a/7/2"]
    _, plain = answered_call(Tracker(lifetime=60.0, ids=lambda: 1), clock, call_id="c3")
    assert "record_id" not in plain[0].row
