"""Pure parts of the proxy: best-response selection (RFC 3261 §16.7), the RFC 5393 loop hash, the
copy of a request it forwards and the Route it pops (RFC 3261 §16.4, §16.6)."""

from __future__ import annotations

from sipd.services.pipeline import pop_route
from sipd.services.proxy import best_response, clone_request, loop_hash
from sipd.sip.message import Response
from sipd.sip.parser import parse_message

INVITE = (
    b"INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"
    b"From: <sip:alice@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: c\r\n"
    b"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def r(status: int) -> Response:
    return Response(status)


def test_six_hundred_wins():
    assert best_response([r(486), r(603), r(404)]).status == 603


def test_lowest_class_then_not_408_or_503():
    assert best_response([r(503), r(486)]).status == 486
    assert best_response([r(408), r(404)]).status == 404
    assert best_response([r(302), r(404)]).status == 302
    assert best_response([r(503)]).status == 503
    assert best_response([]) is None


def test_loop_hash_depends_on_request_identity():
    a = parse_message(INVITE)
    b = parse_message(INVITE.replace(b"sip:bob@", b"sip:carol@"))
    assert loop_hash(a) == loop_hash(parse_message(INVITE))
    assert loop_hash(a) != loop_hash(b)


def test_loop_hash_covers_route_and_proxy_headers():
    a = parse_message(INVITE)
    routed = parse_message(INVITE.replace(b"Max-Forwards", b"Route: <sip:p.example.test;lr>\r\nMax-Forwards"))
    required = parse_message(INVITE.replace(b"Max-Forwards", b"Proxy-Require: x\r\nMax-Forwards"))
    assert len({loop_hash(a), loop_hash(routed), loop_hash(required)}) == 3


def test_a_clone_keeps_the_parsed_values_of_its_own_lines():
    original = parse_message(INVITE.replace(b"Max-Forwards", b"Route: <sip:p.example.test;lr>, <sip:q.example.test;lr>\r\n"
                                                            b"Max-Forwards"))
    assert original.max_forwards == 70 and len(original.vias) == 1 and len(original.routes) == 2
    clone = clone_request(original)
    clone.set("Max-Forwards", "69")
    clone.prepend("Via", "SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKproxy")
    pop_route(clone)
    assert clone.max_forwards == 69 and [v.host for v in clone.vias] == ["192.0.2.9", "192.0.2.1"]
    assert [str(r.uri) for r in clone.routes] == ["sip:q.example.test;lr"]
    assert clone.from_ is original.from_ and clone.cseq is original.cseq  # copied, not parsed again
    # the original is untouched, in its lines and in its parsed values
    assert original.max_forwards == 70 and len(original.vias) == 1 and len(original.routes) == 2
    assert original.to_bytes() == parse_message(original.to_bytes()).to_bytes()
    assert b"Max-Forwards: 70\r\n" in original.to_bytes() and b"z9hG4bKproxy" not in original.to_bytes()


def test_popping_our_route_leaves_the_other_route_lines_as_they_were():
    req = parse_message(INVITE.replace(b"Max-Forwards", b"Route: <sip:us.example.test;lr>\r\nX-A: 1\r\n"
                                                       b"Route: <sip:next.example.test;lr>\r\nMax-Forwards"))
    pop_route(req)
    data = req.to_bytes()
    assert b"us.example.test" not in data
    assert b"X-A: 1\r\nRoute: <sip:next.example.test;lr>\r\nMax-Forwards" in data
