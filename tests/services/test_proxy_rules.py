"""Pure parts of the proxy: best-response selection (RFC 3261 §16.7) and the RFC 5393 loop hash."""

from __future__ import annotations

from sipd.services.proxy import best_response, loop_hash
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
