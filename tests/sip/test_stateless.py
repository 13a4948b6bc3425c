"""The stateless answer path of the core: To tags of stateless answers, the layer absorbing the ACK
of one, adopting a request as a server transaction only when it will be forwarded, and the reply
cache. Pure code: messages in, bytes and events out."""

from __future__ import annotations

import itertools

import pytest

from sipd.sip.errors import LocalProtocolError
from sipd.sip.layer import LayerConfig, RequestReceived, TransactionLayer
from sipd.sip.message import make_request, make_response
from sipd.sip.parser import parse_message
from sipd.sip.stateless import ReplyCache, is_stateless_tag, stateless_tag
from sipd.sip.transaction import State

UDP_A = ("udp", "192.0.2.1", 5060, None)
PREFIX = "p1a2"


def make_layer(prefix=PREFIX):
    c = itertools.count(1)
    return TransactionLayer(LayerConfig(branch_factory=lambda: f"z9hG4bK-{next(c)}",
                                        tag_factory=lambda: f"tag{next(c)}", stateless_prefix=prefix))


def invite(branch="z9hG4bK-one", call_id="c1@192.0.2.1", method="INVITE", to_tag=None, cseq_method=None):
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    return make_request(method, "sip:bob@example.com", headers=[
        ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"), ("From", "<sip:alice@example.com>;tag=a1"),
        ("To", to), ("Call-ID", call_id), ("CSeq", f"1 {cseq_method or method}")])


def drain(layer):
    out = []
    while (e := layer.next_event()) is not None:
        out.append(e)
    return out


def test_stateless_tag_is_the_same_for_a_retransmission_and_differs_between_requests():
    a = parse_message(invite().to_bytes())
    again = parse_message(invite().to_bytes())
    other = parse_message(invite(branch="z9hG4bK-two", call_id="c2@192.0.2.1").to_bytes())
    tag = stateless_tag(PREFIX, a)
    assert tag == stateless_tag(PREFIX, again)
    assert tag != stateless_tag(PREFIX, other)
    assert tag != stateless_tag(PREFIX, parse_message(invite(branch="z9hG4bK-two").to_bytes()))  # branch alone
    from_tag = parse_message(invite().to_bytes().replace(b";tag=a1", b";tag=a2"))
    assert tag != stateless_tag(PREFIX, from_tag)  # From tag alone
    assert is_stateless_tag(PREFIX, tag)
    assert not is_stateless_tag("other", tag) and not is_stateless_tag(PREFIX, None)
    assert not is_stateless_tag(PREFIX, f"{PREFIX}.17")  # an ordinary tag of ours (to_tag())


def test_ack_of_a_stateless_answer_is_absorbed_other_acks_pass_up(clock):
    layer = make_layer()
    req = parse_message(invite().to_bytes())
    tag = stateless_tag(PREFIX, req)
    ack = invite(method="ACK", to_tag=tag).to_bytes()
    layer.receive_datagram(ack, UDP_A, clock.now)
    assert drain(layer) == [] and len(layer) == 0 and not layer.has_output()
    layer.receive_datagram(invite(method="ACK", to_tag="remote-7").to_bytes(), UDP_A, clock.now)
    (ev,) = drain(layer)
    assert isinstance(ev, RequestReceived) and ev.tx_key is None  # an ACK for a 2xx: routed by the proxy


def test_without_a_prefix_no_ack_is_absorbed(clock):
    layer = make_layer(prefix=None)
    req = parse_message(invite().to_bytes())
    layer.receive_datagram(invite(method="ACK", to_tag=stateless_tag(PREFIX, req)).to_bytes(), UDP_A, clock.now)
    assert len(drain(layer)) == 1


def test_adopt_creates_the_server_transaction_without_an_event(clock):
    layer = make_layer()
    req = parse_message(invite().to_bytes())
    assert layer.match(req) is None
    key = layer.adopt(req, UDP_A)
    assert key is not None and len(layer) == 1 and drain(layer) == [] and not layer.has_output()
    assert layer.state_of(key) is State.PROCEEDING
    assert layer.match(parse_message(invite().to_bytes())) == key
    assert layer.adopt(parse_message(invite().to_bytes()), UDP_A) is None  # a retransmission got there first
    # from here it is an ordinary IST: the retransmission gets the last response, the ACK confirms
    layer.send_response(make_response(req, 100), clock.now)
    layer.messages_to_send(clock.now)
    layer.receive_datagram(invite().to_bytes(), UDP_A, clock.now)
    assert len(layer.messages_to_send(clock.now)) == 1 and drain(layer) == []
    layer.send_response(make_response(req, 486, to_tag="x"), clock.now)
    layer.messages_to_send(clock.now)
    layer.receive_datagram(invite(method="ACK", to_tag="x", cseq_method="ACK").to_bytes(), UDP_A, clock.now)
    assert layer.state_of(key) is State.CONFIRMED


def test_adopt_a_non_invite_and_refuse_ack_and_cancel():
    layer = make_layer()
    key = layer.adopt(parse_message(invite(method="OPTIONS").to_bytes()), UDP_A)
    assert layer.state_of(key) is State.TRYING
    for method in ("ACK", "CANCEL"):
        with pytest.raises(LocalProtocolError):
            layer.adopt(parse_message(invite(method=method).to_bytes()), UDP_A)


def test_match_maps_an_ack_to_its_invite(clock):
    layer = make_layer()
    key = layer.adopt(parse_message(invite().to_bytes()), UDP_A)
    assert layer.match(parse_message(invite(method="ACK", to_tag="x", cseq_method="ACK").to_bytes())) == key


def test_reply_cache_expires_discards_and_is_bounded():
    cache = ReplyCache(ttl=32.0, size=3)
    cache.put("a", b"", 0.0)
    cache.discard("a")
    assert cache.get("a") is None
    cache.put("b", b"x", 1.0)
    cache.expire(32.9)
    assert cache.get("b") == b"x"
    cache.expire(33.0)  # due: gone without anything new arriving
    assert cache.get("b") is None and len(cache) == 0
    for k in "cdef":
        cache.put(k, b"y", 40.0)
    assert len(cache) == 3 and cache.get("c") is None


# -- bytes in, bytes out ---------------------------------------------------------------------------

REGISTER_VIA = "Via: SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK-reg1"
REGISTER = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    f"{REGISTER_VIA}\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:alice@example.com>;tag=a1\r\n"
    "To: <sip:alice@example.com>\r\n"
    "Call-ID: reg1@192.0.2.1\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:alice@192.0.2.1:5060>\r\n"
    "Content-Length: 0\r\n\r\n"
).encode()


def stateless_answer(data, status, headers=()):
    """A stateless answer to the request in ``data`` as the daemon builds one: its To tag from the
    request, so the answer to a retransmission is the same, byte for byte."""
    req = parse_message(data)
    return make_response(req, status, to_tag=stateless_tag(PREFIX, req), headers=headers).to_bytes()


def test_a_register_challenge_is_the_same_bytes_for_each_retransmission():
    challenge = [("WWW-Authenticate", 'Digest realm="example.com", nonce="n1", algorithm=MD5')]
    out = stateless_answer(REGISTER, 401, challenge)
    tag = stateless_tag(PREFIX, parse_message(REGISTER))
    assert out == (
        "SIP/2.0 401 Unauthorized\r\n"
        f"{REGISTER_VIA}\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\n"
        f"To: <sip:alice@example.com>;tag={tag}\r\n"
        "Call-ID: reg1@192.0.2.1\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"WWW-Authenticate: {challenge[0][1]}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    assert stateless_answer(REGISTER, 401, challenge) == out
    again = REGISTER.replace(b"z9hG4bK-reg1", b"z9hG4bK-reg2").replace(b"CSeq: 1", b"CSeq: 2")
    assert stateless_answer(again, 401, challenge) != out  # the next REGISTER: another tag


def test_the_reply_cache_answers_a_retransmission_by_its_bytes():
    """A 200 that changed the location is kept, so its retransmission is answered without running
    the registrar again; another REGISTER is not found."""
    cache = ReplyCache(ttl=32.0, size=16)
    key = (hash(REGISTER), UDP_A[1], UDP_A[2])
    out = stateless_answer(REGISTER, 200, [("Contact", "<sip:alice@192.0.2.1:5060>;expires=3600")])
    cache.put(key, out, 0.0)
    retransmission = bytes(bytearray(REGISTER))  # the same bytes, received again
    assert cache.get((hash(retransmission), UDP_A[1], UDP_A[2])) == out
    assert cache.get((hash(REGISTER), UDP_A[1], 5062)) is None  # same bytes, another source
    assert cache.get((hash(REGISTER.replace(b"CSeq: 1", b"CSeq: 2")), UDP_A[1], UDP_A[2])) is None


def test_a_malformed_invite_is_rejected_statelessly_and_its_ack_absorbed(clock):
    layer = make_layer()
    bad = invite().to_bytes().replace(b"Max-Forwards: 70", b"Max-Forwards: seventy")
    layer.receive_datagram(bad, UDP_A, clock.now)
    (ev,) = drain(layer)
    assert ev.status == 400 and len(layer) == 0
    (out,) = layer.messages_to_send(clock.now)
    assert out.dest == UDP_A and out.data.startswith(b"SIP/2.0 400 ")
    reply = parse_message(out.data)
    assert reply.to.tag == stateless_tag(PREFIX, parse_message(invite().to_bytes()))
    layer.receive_datagram(bad, UDP_A, clock.now)  # the retransmission: the same answer
    assert [o.data for o in layer.messages_to_send(clock.now)] == [out.data]
    drain(layer)
    ack = invite(method="ACK", to_tag=reply.to.tag, cseq_method="ACK").to_bytes()
    layer.receive_datagram(ack, UDP_A, clock.now)
    assert drain(layer) == [] and layer.messages_to_send(clock.now) == [] and len(layer) == 0


def test_what_cannot_be_answered_is_dropped_without_output(clock):
    layer = make_layer()
    no_via = invite().to_bytes().replace(b"Via: ", b"X-Via: ")
    bad_response = b"SIP/2.0 999 Nine\r\n" + invite().to_bytes().split(b"\r\n", 1)[1]
    for data in (no_via, bad_response, b"\x00\xff garbage\r\n\r\n"):
        layer.receive_datagram(data, UDP_A, clock.now)
        (ev,) = drain(layer)
        assert ev.status is None, data[:30]
        assert layer.messages_to_send(clock.now) == [] and len(layer) == 0
