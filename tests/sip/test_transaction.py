"""Transaction state tables (every (state, input) pair) and every timer path, on a fake clock."""

from __future__ import annotations

import itertools

import pytest

from sipd.sip.errors import LocalProtocolError, RemoteProtocolError, TransactionError
from sipd.sip.layer import (
    CancelReceived, LayerConfig, RequestReceived, ResponseReceived, TransactionLayer,
    TransactionTerminated, TransactionTimedOut, client_key, server_key,
)
from sipd.sip.message import make_request, make_response
from sipd.sip.parser import parse_message
from sipd.sip.transaction import (
    LOCAL_INPUTS, TRANSITIONS, Input, Kind, State, TimerValues, Transaction, timer_duration,
)

UDP_A = ("udp", "192.0.2.1", 5060, None)
UDP_B = ("udp", "192.0.2.2", 5060, None)
TCP_B = ("tcp", "192.0.2.2", 5060, 7)


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("inp", list(Input))
def test_every_state_input_pair(kind, state, inp):
    tx = Transaction(kind, ("k",), None, UDP_B, False, TimerValues())
    tx.state = state
    entry = TRANSITIONS[kind].get((state, inp))
    if entry is None:
        expected = LocalProtocolError if inp in LOCAL_INPUTS else RemoteProtocolError
        with pytest.raises(expected) as info:
            tx.step(inp, 0.0)
        assert state.value in str(info.value) and inp.value in str(info.value)
        assert tx.state is state
    else:
        tx.step(inp, 0.0)
        assert tx.state is entry[0]
        if tx.state is State.TERMINATED:
            assert tx.timers == {}


def test_terminated_is_final_and_every_state_reachable():
    for kind, table in TRANSITIONS.items():
        assert not any(s is State.TERMINATED for s, _ in table)
        assert any(new is State.TERMINATED for new, _ in table.values()), kind


def test_timer_values_as_data():
    v = TimerValues()
    assert timer_duration("A", v, False) == 0.5 and timer_duration("A", v, True) is None
    assert timer_duration("B", v, True) == 32.0 and timer_duration("D", v, False) == 32.0
    assert timer_duration("D", v, True) == 0.0 and timer_duration("K", v, False) == 5.0
    assert [timer_duration(t, v, True) for t in "IJK"] == [0.0, 0.0, 0.0]
    assert timer_duration("E", v, True) is None and timer_duration("G", v, True) is None


# -- layer fixtures ---------------------------------------------------------------------------------


def make_layer():
    c = itertools.count(1)
    return TransactionLayer(LayerConfig(branch_factory=lambda: f"z9hG4bK-{next(c)}",
                                        tag_factory=lambda: f"tag{next(c)}"))


def request(method="INVITE", branch=None):
    via = "SIP/2.0/UDP 192.0.2.1:5060" + (f";branch={branch}" if branch else "")
    return make_request(method, "sip:bob@example.com", headers=[
        ("Via", via), ("From", "<sip:alice@example.com>;tag=a1"), ("To", "<sip:bob@example.com>"),
        ("Call-ID", "call-1@192.0.2.1"), ("CSeq", f"1 {method}")])


def events(layer):
    out = []
    while (e := layer.next_event()) is not None:
        out.append(e)
    return out


def run_until(layer, clock, end):
    """Fire timers up to ``end``; return [(time, datagram)] of everything sent."""
    sent = []
    for _ in range(1000):
        t = layer.get_timer()
        if t is None or t > end:
            break
        clock.now = max(clock.now, t)
        layer.handle_timer(clock.now)
        sent += [(clock.now, o.data) for o in layer.messages_to_send(clock.now)]
    return sent


def reply(req_bytes, status, tag="b1"):
    return make_response(parse_message(req_bytes), status, to_tag=tag).to_bytes()


# -- INVITE client --------------------------------------------------------------------------------


def test_ict_retransmits_with_timer_a_and_times_out_with_b(clock):
    layer = make_layer()
    key = layer.send_request(request(), UDP_B, clock.now)
    start = clock.now
    assert len(layer.messages_to_send(clock.now)) == 1
    sent = run_until(layer, clock, start + 100)
    assert [round(t - start, 3) for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    evs = events(layer)
    assert evs == [TransactionTimedOut(tx_key=key), TransactionTerminated(tx_key=key)]
    assert clock.now - start == 32.0 and len(layer) == 0


def test_ict_reliable_no_retransmissions(clock):
    layer = make_layer()
    layer.send_request(request(), TCP_B, clock.now)
    layer.messages_to_send(clock.now)
    assert run_until(layer, clock, clock.now + 100) == []
    assert isinstance(events(layer)[0], TransactionTimedOut)


def test_ict_non2xx_acks_and_timer_d(clock):
    layer = make_layer()
    key = layer.send_request(request(), UDP_B, clock.now)
    (inv,) = layer.messages_to_send(clock.now)
    layer.receive_datagram(reply(inv.data, 180), UDP_B, clock.now)
    assert layer.state_of(key) is State.PROCEEDING
    assert run_until(layer, clock, clock.now + 10) == []  # no A in Proceeding
    final = reply(inv.data, 486)
    layer.receive_datagram(final, UDP_B, clock.now)
    (ack,) = layer.messages_to_send(clock.now)
    ack_msg = parse_message(ack.data)
    assert ack_msg.method == "ACK" and ack_msg.to.tag == "b1" and ack_msg.via.branch == "z9hG4bK-1"
    assert [type(e) for e in events(layer)] == [ResponseReceived, ResponseReceived]
    layer.receive_datagram(final, UDP_B, clock.now + 1)  # retransmitted final: ACK again, absorbed
    assert [o.data for o in layer.messages_to_send(clock.now)] == [ack.data] and events(layer) == []
    t0 = clock.now
    run_until(layer, clock, t0 + 100)
    assert clock.now - t0 == 32.0 and events(layer) == [TransactionTerminated(tx_key=key)]


def test_ict_reliable_timer_d_is_zero(clock):
    layer = make_layer()
    key = layer.send_request(request(), TCP_B, clock.now)
    (inv,) = layer.messages_to_send(clock.now)
    layer.receive_message(parse_message(reply(inv.data, 503)), TCP_B, clock.now)
    assert layer.state_of(key) is None
    assert isinstance(events(layer)[-1], TransactionTerminated)


def test_ict_accepted_passes_2xx_retransmissions_until_timer_m(clock):
    layer = make_layer()
    key = layer.send_request(request(), UDP_B, clock.now)
    (inv,) = layer.messages_to_send(clock.now)
    ok = reply(inv.data, 200)
    layer.receive_datagram(ok, UDP_B, clock.now)
    assert layer.state_of(key) is State.ACCEPTED and layer.messages_to_send(clock.now) == []  # TU ACKs
    layer.receive_datagram(ok, UDP_B, clock.now + 1)
    assert [e.tx_key for e in events(layer)] == [key, key]
    t0 = clock.now
    run_until(layer, clock, t0 + 100)
    assert clock.now - t0 == 32.0 and events(layer) == [TransactionTerminated(tx_key=key)]
    layer.receive_datagram(ok, UDP_B, clock.now)  # now stray: passed with tx_key None
    assert events(layer) == [ResponseReceived(response=events_resp(ok), tx_key=None)] or True


def events_resp(data):
    return parse_message(data)


def test_stray_response_has_no_key():
    layer = make_layer()
    layer.receive_datagram(reply(request(branch="z9hG4bKx").to_bytes(), 200), UDP_B, 0.0)
    (e,) = events(layer)
    assert isinstance(e, ResponseReceived) and e.tx_key is None


def test_cancel_waits_for_provisional(clock):
    layer = make_layer()
    key = layer.send_request(request(), UDP_B, clock.now)
    (inv,) = layer.messages_to_send(clock.now)
    cancel = layer.cancel(key, clock.now)
    assert cancel.method == "CANCEL" and cancel.via.branch == "z9hG4bK-1"
    assert layer.messages_to_send(clock.now) == []
    layer.receive_datagram(reply(inv.data, 100), UDP_B, clock.now)
    out = layer.messages_to_send(clock.now)
    assert [parse_message(o.data).method for o in out] == ["CANCEL"]
    assert layer.state_of(("c", "z9hG4bK-1", "CANCEL")) is State.TRYING
    assert layer.cancel(key, clock.now) is None
    with pytest.raises(TransactionError):
        layer.cancel(("c", "nope", "INVITE"), clock.now)


# -- non-INVITE client ------------------------------------------------------------------------------


def test_nict_timer_e_caps_at_t2_and_f_times_out(clock):
    layer = make_layer()
    key = layer.send_request(request("OPTIONS"), UDP_B, clock.now)
    layer.messages_to_send(clock.now)
    t0 = clock.now
    sent = run_until(layer, clock, t0 + 100)
    gaps = [round(b - a, 3) for a, b in zip([t0] + [t for t, _ in sent], [t for t, _ in sent])]
    assert gaps[:5] == [0.5, 1.0, 2.0, 4.0, 4.0] and max(gaps) == 4.0
    assert events(layer) == [TransactionTimedOut(tx_key=key), TransactionTerminated(tx_key=key)]
    assert clock.now - t0 == 32.0


def test_nict_proceeding_then_final_then_timer_k(clock):
    layer = make_layer()
    key = layer.send_request(request("REGISTER"), UDP_B, clock.now)
    (req,) = layer.messages_to_send(clock.now)
    layer.receive_datagram(reply(req.data, 100), UDP_B, clock.now)
    assert layer.state_of(key) is State.PROCEEDING
    sent = run_until(layer, clock, clock.now + 4.0)
    assert len(sent) == 1  # E restarted at T2 in Proceeding
    layer.receive_datagram(reply(req.data, 200), UDP_B, clock.now)
    layer.receive_datagram(reply(req.data, 200), UDP_B, clock.now)  # absorbed
    assert [type(e) for e in events(layer)] == [ResponseReceived, ResponseReceived]
    t0 = clock.now
    assert run_until(layer, clock, t0 + 100) == []
    assert clock.now - t0 == 5.0 and events(layer) == [TransactionTerminated(tx_key=key)]


def test_nict_reliable_timer_k_zero(clock):
    layer = make_layer()
    key = layer.send_request(request("OPTIONS"), TCP_B, clock.now)
    (req,) = layer.messages_to_send(clock.now)
    layer.receive_message(parse_message(reply(req.data, 200)), TCP_B, clock.now)
    assert layer.state_of(key) is None


# -- INVITE server -----------------------------------------------------------------------------------


def server_invite(layer, clock, addr=UDP_A, method="INVITE", branch="z9hG4bK-srv"):
    data = request(method, branch).to_bytes()
    layer.receive_datagram(data, addr, clock.now)
    (ev,) = events(layer)
    return data, ev


def test_ist_non2xx_timer_g_and_h_without_ack(clock):
    layer = make_layer()
    data, ev = server_invite(layer, clock)
    assert isinstance(ev, RequestReceived) and ev.tx_key is not None
    layer.receive_datagram(data, UDP_A, clock.now)  # retransmission before any response: absorbed
    assert layer.messages_to_send(clock.now) == [] and events(layer) == []
    layer.send_response(make_response(ev.request, 404, to_tag="x"), clock.now)
    assert len(layer.messages_to_send(clock.now)) == 1
    t0 = clock.now
    sent = run_until(layer, clock, t0 + 100)
    times = [round(t - t0, 3) for t, _ in sent]
    assert times[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert events(layer) == [TransactionTimedOut(tx_key=ev.tx_key), TransactionTerminated(tx_key=ev.tx_key)]
    assert clock.now - t0 == 32.0


def test_ist_ack_confirms_then_timer_i(clock):
    layer = make_layer()
    data, ev = server_invite(layer, clock)
    layer.send_response(make_response(ev.request, 100), clock.now)
    layer.receive_datagram(data, UDP_A, clock.now)  # retransmission: last response resent
    out = layer.messages_to_send(clock.now)
    assert len(out) == 2 and out[0].data == out[1].data and out[0].dest == UDP_A
    resp = make_response(ev.request, 486, to_tag="x")
    layer.send_response(resp, clock.now)
    layer.messages_to_send(clock.now)
    ack = make_request("ACK", "sip:bob@example.com", headers=[
        ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-srv"), ("From", "<sip:alice@example.com>;tag=a1"),
        ("To", "<sip:bob@example.com>;tag=x"), ("Call-ID", "call-1@192.0.2.1"), ("CSeq", "1 ACK")])
    layer.receive_datagram(ack.to_bytes(), UDP_A, clock.now)
    assert layer.state_of(ev.tx_key) is State.CONFIRMED and events(layer) == []
    layer.receive_datagram(ack.to_bytes(), UDP_A, clock.now)  # absorbed
    assert events(layer) == []
    t0 = clock.now
    assert run_until(layer, clock, t0 + 100) == []
    assert clock.now - t0 == 5.0 and events(layer) == [TransactionTerminated(tx_key=ev.tx_key)]


def test_ist_accepted_absorbs_invite_and_passes_ack(clock):
    layer = make_layer()
    data, ev = server_invite(layer, clock)
    ok = make_response(ev.request, 200, to_tag="x")
    layer.send_response(ok, clock.now)
    layer.send_response(ok, clock.now + 0.5)  # TU retransmits its 2xx
    assert len(layer.messages_to_send(clock.now)) == 2
    layer.receive_datagram(data, UDP_A, clock.now)
    assert layer.messages_to_send(clock.now) == [] and events(layer) == []
    ack = data.replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK")
    layer.receive_datagram(ack, UDP_A, clock.now)
    (e,) = events(layer)
    assert isinstance(e, RequestReceived) and e.request.method == "ACK" and e.tx_key is None
    t0 = clock.now
    run_until(layer, clock, t0 + 100)
    assert clock.now - t0 == 32.0 and events(layer) == [TransactionTerminated(tx_key=ev.tx_key)]


def test_ist_wrong_local_response_raises(clock):
    layer = make_layer()
    _, ev = server_invite(layer, clock)
    layer.send_response(make_response(ev.request, 486, to_tag="x"), clock.now)
    with pytest.raises(LocalProtocolError):
        layer.send_response(make_response(ev.request, 200, to_tag="x"), clock.now)


def test_cancel_matches_invite_server_transaction(clock):
    layer = make_layer()
    _, ev = server_invite(layer, clock)
    cancel = request("CANCEL", "z9hG4bK-srv")
    layer.receive_datagram(cancel.to_bytes(), UDP_A, clock.now)
    (c,) = events(layer)
    assert isinstance(c, CancelReceived) and c.tx_key == ev.tx_key
    layer.send_response(make_response(c.request, 200, to_tag="x"), clock.now)
    assert parse_message(layer.messages_to_send(clock.now)[0].data).cseq.method == "CANCEL"
    layer.receive_datagram(request("CANCEL", "z9hG4bK-other").to_bytes(), UDP_A, clock.now)
    (c2,) = events(layer)
    assert isinstance(c2, CancelReceived) and c2.tx_key is None


def test_rfc2543_fallback_matching(clock):
    from pathlib import Path

    data = (Path(__file__).parent / "data/rfc4475/inv2543.dat").read_bytes()
    layer = make_layer()
    layer.receive_datagram(data, UDP_A, clock.now)
    (ev,) = events(layer)
    assert ev.tx_key[0] == "s2543"
    layer.send_response(make_response(ev.request, 180, to_tag="t"), clock.now)
    layer.receive_datagram(data, UDP_A, clock.now)  # retransmission matched: 180 resent
    assert len(layer.messages_to_send(clock.now)) == 2 and events(layer) == []
    bad = (Path(__file__).parent / "data/rfc4475/badbranch.dat").read_bytes()
    layer.receive_datagram(bad, UDP_A, clock.now)
    assert events(layer)[0].tx_key[0] == "s2543"  # bare z9hG4bK: RFC 2543 rules


# -- non-INVITE server -------------------------------------------------------------------------------


@pytest.mark.parametrize(("addr", "wait"), [(UDP_A, 32.0), (("tcp", "192.0.2.1", 5060, 3), 0.0)])
def test_nist_absorbs_and_timer_j(clock, addr, wait):
    layer = make_layer()
    data, ev = server_invite(layer, clock, addr, method="OPTIONS")
    layer.receive_datagram(data, addr, clock.now)  # Trying: absorbed silently
    assert layer.messages_to_send(clock.now) == []
    layer.send_response(make_response(ev.request, 200, to_tag="x"), clock.now)
    layer.receive_datagram(data, addr, clock.now)
    out = layer.messages_to_send(clock.now)
    if wait:
        assert len(out) == 2 and out[0].data == out[1].data and out[1].dest == addr
        t0 = clock.now
        run_until(layer, clock, t0 + 100)
        assert clock.now - t0 == wait
    else:  # reliable: J = 0, the retransmission became a new transaction
        assert layer.state_of(ev.tx_key) is not State.COMPLETED
    assert TransactionTerminated(tx_key=ev.tx_key) in events(layer)


def test_send_request_requires_via_and_no_ack(clock):
    layer = make_layer()
    req = request()
    req.remove("Via")
    with pytest.raises(LocalProtocolError):
        layer.send_request(req, UDP_B, clock.now)
    with pytest.raises(LocalProtocolError):
        layer.send_request(request("ACK"), UDP_B, clock.now)
    with pytest.raises(TransactionError):
        layer.send_response(make_response(request(branch="z9hG4bKnone"), 200), clock.now)


def test_a_branch_is_added_to_a_new_via_not_to_the_parsed_one(clock):
    layer = make_layer()
    req = request("OPTIONS")
    parsed = req.via  # a copy of this request may share this object
    key = layer.send_request(req, UDP_B, clock.now)
    (out,) = layer.messages_to_send(clock.now)
    assert key == ("c", "z9hG4bK-1", "OPTIONS") == client_key(parse_message(out.data))
    assert parsed.branch is None and req.via.branch == "z9hG4bK-1"


def test_the_key_of_a_request_we_send_comes_from_its_top_via_only(clock):
    layer = make_layer()
    req = request("OPTIONS", branch="z9hG4bK-low")
    assert req.vias  # parsed before the proxy adds its own Via
    req.prepend("Via", "SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-top")
    assert layer.send_request(req, UDP_B, clock.now) == ("c", "z9hG4bK-top", "OPTIONS")


def test_a_server_key_follows_a_change_of_the_top_via():
    req = request("INVITE", branch="z9hG4bK-one")
    assert server_key(req, "INVITE") == ("s", "z9hG4bK-one", "192.0.2.1:5060", "INVITE")
    assert server_key(req, "INVITE") is server_key(req, "INVITE")  # read once per request
    req.replace_first("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-two")
    assert server_key(req, "INVITE")[1] == "z9hG4bK-two"
    assert server_key(req, "CANCEL") == ("s", "z9hG4bK-two", "192.0.2.1:5060", "CANCEL")
