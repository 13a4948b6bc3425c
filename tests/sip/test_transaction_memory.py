"""What a live transaction keeps (bench/bench_tx_memory.py measures the bytes): no parsed messages
once the final response is out, request bytes only while retransmitting, a timer heap bounded by
the live transactions, one GC-tracked object per transaction."""

from __future__ import annotations

import gc

import pytest

from sipd.sip.errors import TransactionError
from sipd.sip.layer import ResponseReceived, TransactionLayer, TransactionTerminated
from sipd.sip.header_fields import Headers
from sipd.sip.message import Message, make_request, make_response
from sipd.sip.parser import parse_message
from sipd.sip.transaction import State

from .test_transaction import (
    TCP_B, UDP_A, UDP_B, events, make_layer, reply, request, run_until, server_invite,
)


def reachable_messages(layer: TransactionLayer, key) -> list[object]:
    """Parsed messages (or their Headers) reachable from the transaction's slots."""
    tx = layer.get_transaction(key)
    seen, out, todo = set(), [], [getattr(tx, s) for s in type(tx).__slots__]
    for _ in range(10_000):
        if not todo:
            break
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, (Message, Headers)):
            out.append(o)
        elif isinstance(o, (tuple, list)):
            todo.extend(o)
    return out


def test_nist_completed_keeps_only_the_response_bytes(clock):
    layer = make_layer()
    data, ev = server_invite(layer, clock, method="REGISTER")
    resp = make_response(ev.request, 200, to_tag="x")
    layer.send_response(resp, clock.now)
    (sent,) = layer.messages_to_send(clock.now)
    tx = layer.get_transaction(ev.tx_key)
    assert tx.state is State.COMPLETED and tx.request is None and tx.request_bytes is None
    assert tx.last_response_bytes == sent.data and reachable_messages(layer, ev.tx_key) == []
    layer.receive_datagram(data, UDP_A, clock.now)  # retransmission: the same bytes again
    assert [o.data for o in layer.messages_to_send(clock.now)] == [sent.data]


def test_ist_never_keeps_the_request(clock):
    layer = make_layer()
    _, ev = server_invite(layer, clock)
    assert reachable_messages(layer, ev.tx_key) == []  # Proceeding
    layer.send_response(make_response(ev.request, 486, to_tag="x"), clock.now)
    assert layer.state_of(ev.tx_key) is State.COMPLETED
    assert reachable_messages(layer, ev.tx_key) == []


def test_ict_keeps_a_slim_invite_until_the_final_then_the_ack_bytes(clock):
    layer = make_layer()
    inv = request()
    inv.append("Content-Type", "application/sdp")
    inv.append("User-Agent", "x" * 500)
    inv.body = b"v=0\r\n" * 100
    key = layer.send_request(inv, UDP_B, clock.now)
    (out,) = layer.messages_to_send(clock.now)
    tx = layer.get_transaction(key)
    assert tx.request_bytes == out.data  # Timer A retransmits these
    slim = tx.request
    assert slim.body == b"" and slim.get("User-Agent") is None
    assert slim.via.branch == inv.via.branch
    layer.receive_datagram(reply(out.data, 180), UDP_B, clock.now)
    assert tx.state is State.PROCEEDING and tx.request_bytes is None  # A stopped: nothing to resend
    cancel = layer.cancel(key, clock.now)  # still possible from the slim copy
    assert cancel.uri_text == inv.uri_text and cancel.cseq.seq == 1
    assert cancel.get("To") == inv.get("To")
    layer.messages_to_send(clock.now)
    final = reply(out.data, 487)
    layer.receive_datagram(final, UDP_B, clock.now)
    (ack1,) = layer.messages_to_send(clock.now)
    assert tx.state is State.COMPLETED and tx.request is None
    assert reachable_messages(layer, key) == []
    ack = parse_message(ack1.data)
    assert ack.method == "ACK" and ack.body == b""
    assert ack.get("To") == parse_message(final).get("To")
    layer.receive_datagram(final, UDP_B, clock.now)  # retransmitted final: the same ACK again
    assert [o.data for o in layer.messages_to_send(clock.now)] == [ack1.data]


def test_nict_keeps_request_bytes_while_retransmitting_only(clock):
    layer = make_layer()
    key = layer.send_request(request("OPTIONS"), UDP_B, clock.now)
    (out,) = layer.messages_to_send(clock.now)
    tx = layer.get_transaction(key)
    layer.receive_datagram(reply(out.data, 100), UDP_B, clock.now)
    assert tx.state is State.PROCEEDING and tx.request_bytes == out.data  # E still runs (at T2)
    layer.receive_datagram(reply(out.data, 200), UDP_B, clock.now)
    assert tx.state is State.COMPLETED and tx.request_bytes is None and tx.request is None
    tcp = layer.send_request(request("OPTIONS", branch="z9hG4bK-tcp"), TCP_B, clock.now)
    assert layer.get_transaction(tcp).request_bytes is None  # reliable: never retransmitted


def test_reliable_zero_timers_leave_no_heap_entries(clock):
    layer = make_layer()
    tcp_a = ("tcp", "192.0.2.1", 5060, 3)
    for i in range(50):
        _, ev = server_invite(layer, clock, tcp_a, method="OPTIONS", branch=f"z9hG4bK-t{i}")
        layer.send_response(make_response(ev.request, 200, to_tag="x"), clock.now)
        assert layer.state_of(ev.tx_key) is None
        assert events(layer) == [TransactionTerminated(tx_key=ev.tx_key)]
    assert len(layer) == 0 and layer._heap == [] and layer.get_timer() is None


def test_timer_heap_bounded_by_live_transactions(clock):
    """INVITEs answered at once leave stale A/B entries; the heap stays within 3 per live
    transaction (+64) at every step, and empties when they all end."""
    layer = make_layer()
    for i in range(600):
        key = layer.send_request(request(branch=f"z9hG4bK-h{i}"), UDP_B, clock.now)
        (out,) = layer.messages_to_send(clock.now)
        layer.receive_datagram(reply(out.data, 200), UDP_B, clock.now)
        assert layer.state_of(key) is State.ACCEPTED
        assert len(layer._heap) <= 3 * len(layer) + 64
        clock.advance(0.01)
    events(layer)
    run_until(layer, clock, clock.now + 100)
    assert len(layer) == 0 and layer.get_timer() is None and layer._heap == []
    assert sum(isinstance(e, TransactionTerminated) for e in events(layer)) == 600


def test_one_gc_tracked_object_per_live_transaction(clock):
    layer = make_layer()
    reqs = [request("REGISTER", branch=f"z9hG4bK-g{i}").to_bytes() for i in range(400)]
    gc.collect()
    before = len(gc.get_objects())
    for data in reqs:
        layer.receive_datagram(data, UDP_A, clock.now)
        (ev,) = events(layer)
        layer.send_response(make_response(ev.request, 200, to_tag="x"), clock.now)
        layer.messages_to_send(clock.now)
        del ev
    gc.collect()
    assert len(layer) == 400
    assert (len(gc.get_objects()) - before) / 400 < 1.5


def test_ict_2xx_passes_the_response_object_up(clock):
    layer = make_layer()
    key = layer.send_request(request(), UDP_B, clock.now)
    (out,) = layer.messages_to_send(clock.now)
    layer.receive_datagram(reply(out.data, 200), UDP_B, clock.now)
    (ev,) = events(layer)
    assert isinstance(ev, ResponseReceived) and ev.tx_key == key and ev.response.status == 200
    assert reachable_messages(layer, key) == []


def test_invite_view_without_route_or_max_forwards(clock):
    layer = make_layer()
    inv = make_request("INVITE", "sip:bob@example.com", headers=[
        ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-v1, "
                "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-v0"),
        ("From", "<sip:alice@example.com>;tag=a1"), ("To", "<sip:bob@example.com>"),
        ("Call-ID", "c@h"), ("CSeq", "7 INVITE")])
    key = layer.send_request(inv, UDP_B, clock.now)
    (out,) = layer.messages_to_send(clock.now)
    layer.receive_datagram(reply(out.data, 100), UDP_B, clock.now)
    cancel = layer.cancel(key, clock.now)
    assert cancel.get_all("Via") == ["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-v1"]
    assert cancel.cseq.seq == 7


def test_send_response_with_the_key_the_request_came_with(clock):
    layer = make_layer()
    data, ev = server_invite(layer, clock, method="OPTIONS")
    layer.send_response(make_response(ev.request, 200, to_tag="x"), clock.now, tx_key=ev.tx_key)
    (out,) = layer.messages_to_send(clock.now)
    assert layer.state_of(ev.tx_key) is State.COMPLETED and out.dest == UDP_A
    layer.receive_datagram(data, UDP_A, clock.now)
    assert [o.data for o in layer.messages_to_send(clock.now)] == [out.data]
    with pytest.raises(TransactionError):
        layer.send_response(make_response(ev.request, 200), clock.now, tx_key=("s", "gone", "h", "X"))
