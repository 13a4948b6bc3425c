"""The transaction layer's stateless requests: one receive path for every message, where a request
that starts something is passed up without a server transaction and answered statelessly unless
it is forwarded. Pure code: bytes in, events and bytes out."""

from __future__ import annotations

import itertools

from sipd.sip.layer import STREAM, CancelReceived, LayerConfig, RequestReceived, TransactionLayer
from sipd.sip.message import make_request, make_response
from sipd.sip.parser import parse_message
from sipd.sip.stateless import stateless_tag

UDP_A = ("udp", "192.0.2.1", 5060, None)
TCP_A = ("tcp", "192.0.2.1", 40000, 7)
PREFIX = "p1a2"


def make_layer(**extra):
    c = itertools.count(1)
    return TransactionLayer(LayerConfig(branch_factory=lambda: f"z9hG4bK-{next(c)}", tag_factory=lambda: f"t{next(c)}",
                                        stateless_prefix=PREFIX, stateless_requests=True, **extra))


def request(method="REGISTER", branch="z9hG4bK-r1", cseq=1, to_tag=None, cseq_method=None):
    to = "<sip:alice@example.com>" + (f";tag={to_tag}" if to_tag else "")
    return make_request(method, "sip:example.com", headers=[
        ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"), ("From", "<sip:alice@example.com>;tag=a1"),
        ("To", to), ("Call-ID", "c1@192.0.2.1"), ("CSeq", f"{cseq} {cseq_method or method}")]).to_bytes()


def events(layer):
    out = []
    while (e := layer.next_event()) is not None:
        out.append(e)
    return out


def answer(layer, ev, status, now=0.0):
    """What the daemon does with a request the pipeline refused or accepted statelessly."""
    req = ev.request
    data = make_response(req, status, to_tag=stateless_tag(PREFIX, req)).to_bytes()
    layer.send_stateless_reply(ev.sl_key, status, data, ev.source, now)
    return data


def sent(layer):
    return [o.data for o in layer.messages_to_send(0.0)]


def test_a_register_is_passed_up_without_a_transaction_and_its_retransmission_answered_from_the_kept_2xx():
    layer = make_layer()
    layer.receive_datagram(request(), UDP_A, 0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived) and ev.tx_key is None and ev.sl_key is not None and len(layer) == 0
    ok = answer(layer, ev, 200)
    assert sent(layer) == [ok]
    layer.receive_datagram(request(), UDP_A, 1.0)  # the retransmission: the registrar does not see it again
    assert events(layer) == [] and sent(layer) == [ok]
    layer.receive_datagram(request(branch="z9hG4bK-r2", cseq=2), UDP_A, 1.0)  # the next REGISTER is new
    assert len(events(layer)) == 1
    layer.receive_datagram(request(), ("udp", "192.0.2.1", 5062, None), 1.0)  # same bytes, another source
    assert len(events(layer)) == 1


def test_a_refused_invite_keeps_nothing_but_its_answer_and_the_ack_is_absorbed():
    acks = []
    layer = make_layer(on_stateless_ack=lambda: acks.append(1))
    layer.receive_datagram(request("INVITE"), UDP_A, 0.0)
    (ev,) = events(layer)
    challenge = answer(layer, ev, 407)
    assert sent(layer) == [challenge] and len(layer) == 0
    layer.receive_datagram(request("INVITE"), UDP_A, 0.5)
    assert events(layer) == [] and sent(layer) == [challenge]
    tag = parse_message(challenge).to.tag
    layer.receive_datagram(request("ACK", to_tag=tag, cseq_method="ACK"), UDP_A, 0.6)
    assert events(layer) == [] and sent(layer) == [] and acks == [1] and len(layer) == 0


def test_a_retransmission_while_the_request_is_decided_is_ignored_then_answered():
    layer = make_layer()
    layer.receive_datagram(request(), UDP_A, 0.0)
    (ev,) = events(layer)
    layer.mark_pending(ev.sl_key, 0.0)  # the registrar waits for the database
    layer.receive_datagram(request(), UDP_A, 0.5)
    assert events(layer) == [] and sent(layer) == []
    ok = answer(layer, ev, 200, 0.9)
    layer.messages_to_send(0.9)
    layer.receive_datagram(request(), UDP_A, 1.0)
    assert events(layer) == [] and sent(layer) == [ok]


def test_a_forwarded_request_is_adopted_and_its_retransmissions_meet_the_transaction():
    layer = make_layer()
    layer.receive_datagram(request("INVITE"), UDP_A, 0.0)
    (ev,) = events(layer)
    layer.mark_pending(ev.sl_key, 0.0)
    key = layer.adopt(ev.request, ev.source, ev.sl_key)
    assert key is not None and len(layer) == 1
    layer.send_response(make_response(ev.request, 100), 0.1)
    trying = sent(layer)
    layer.receive_datagram(request("INVITE"), UDP_A, 0.5)  # the transaction answers it, no new event
    assert events(layer) == [] and sent(layer) == trying
    layer.receive_datagram(request("CANCEL", cseq_method="CANCEL"), UDP_A, 0.6)
    (cancel,) = events(layer)
    assert isinstance(cancel, CancelReceived) and cancel.tx_key == key


def test_over_a_connection_nothing_is_kept_for_retransmissions():
    layer = make_layer()
    msg = parse_message(request("INVITE"))
    layer.receive_message(msg, TCP_A, 0.0)
    (ev,) = events(layer)
    assert ev.tx_key is None and ev.sl_key[0] == STREAM and ev.source == TCP_A
    layer.mark_pending(ev.sl_key, 0.0)
    answer(layer, ev, 407)
    assert len(sent(layer)) == 1 and len(layer.replies) == 0 and len(layer.refusals) == 0


def test_stateless_answers_expire_and_a_late_copy_is_a_new_request():
    layer = make_layer(reply_ttl=32.0)
    layer.receive_datagram(request(), UDP_A, 0.0)
    (ev,) = events(layer)
    answer(layer, ev, 200)
    layer.messages_to_send(0.0)
    layer.expire_stateless(33.0)
    layer.receive_datagram(request(), UDP_A, 33.0)
    assert len(events(layer)) == 1


def test_without_stateless_requests_every_request_gets_its_transaction():
    layer = TransactionLayer(LayerConfig(branch_factory=lambda: "z9hG4bK-x", tag_factory=lambda: "t"))
    layer.receive_datagram(request("INVITE"), UDP_A, 0.0)
    (ev,) = events(layer)
    assert ev.tx_key is not None and ev.sl_key is None and len(layer) == 1
