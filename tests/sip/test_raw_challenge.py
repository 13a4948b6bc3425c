"""``read_plain_register`` and ``answer_bytes`` (sip/stateless.py), bytes in and bytes out: what the
reader takes, the parser takes too, and the answer is byte for byte ``make_response``'s."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipd.sip.errors import RemoteProtocolError
from sipd.sip.message import make_response
from sipd.sip.parser import parse_message
from sipd.sip.stateless import answer_bytes, raw_stateless_tag, read_plain_register, stateless_tag

DATA = Path(__file__).resolve().parent / "data"
TORTURE = sorted(DATA.glob("*/*.dat"))
CHALLENGE = [("WWW-Authenticate", 'Digest realm="example.test", nonce="abc", algorithm=MD5, qop="auth"'),
             ("Server", "sipd")]


def register(*extra: str, via: str = "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;rport",
             to: str = "To: <sip:alice@example.test>", cseq: str = "CSeq: 1 REGISTER",
             uri: str = "sip:example.test", tail: str = "Content-Length: 0\r\n\r\n") -> bytes:
    lines = [f"REGISTER {uri} SIP/2.0", via, "Max-Forwards: 70", "From: <sip:alice@example.test>;tag=f1", to,
             "Call-ID: c1@10.0.0.1", cseq, "Contact: <sip:alice@10.0.0.1:5060>", *extra]
    return ("\r\n".join(lines) + "\r\n" + tail).encode()


PLAIN = {
    "usual": register("Expires: 3600", "User-Agent: x"),
    "compact names": register(via="v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-2", to="t: <sip:alice@example.test>"),
    "display name and spaces": register(to='To:   "Alice A."  <sip:alice@example.test>  '),
    "no Content-Length (UDP: the rest is the body)": register(tail="\r\n"),
    "a body": register("Content-Type: text/plain", tail="Content-Length: 3\r\n\r\nabc"),
    "junk after Content-Length": register(tail="Content-Length: 0\r\n\r\nINVITE sip:x SIP/2.0\r\n"),
    "UTF-8 and stray bytes in a value": register("User-Agent: \xe9t\xe9".replace("\xe9", "é")),
    "sips AOR": register(to="To: <sips:alice@example.test>"),
}
PLAIN["non-UTF-8 byte"] = PLAIN["usual"].replace(b"User-Agent: x", b"User-Agent: \xff\xfe")

NOT_PLAIN = {
    "credentials": register('Authorization: Digest username="alice", realm="example.test", nonce="n", '
                            'uri="sip:example.test", response="0"'),
    "credentials, lower case": register('authorization: Digest username="alice"'),
    "Route": register("Route: <sip:example.test;lr>"),
    "Require": register("Require: path"),
    "Proxy-Require": register("Proxy-Require: foo"),
    "To tag": register(to="To: <sip:alice@example.test>;tag=x"),
    "two Vias": register("Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK-3"),
    "two To": register("To: <sip:bob@example.test>"),
    "CSeq method": register(cseq="CSeq: 1 INVITE"),
    "CSeq too large": register(cseq="CSeq: 99999999999 REGISTER"),
    "tel AOR": register(to="To: <tel:+15551234>"),
    "Request-URI in brackets": register(uri="<sip:example.test>"),
    "Max-Forwards 300": register().replace(b"Max-Forwards: 70", b"Max-Forwards: 300"),
    "Contact *": register().replace(b"<sip:alice@10.0.0.1:5060>", b"*"),
    "two Contact lines": register("Contact: <sip:alice@10.0.0.2>"),
    "broken Contact": register().replace(b"<sip:alice@10.0.0.1:5060>", b"<sip:alice@10.0.0.1:5060;;,>"),
    "body shorter than Content-Length": register(tail="Content-Length: 30\r\n\r\nabc"),
    "folded line": register("Subject: a\r\n b"),
    "no end of header block": register(tail="Content-Length: 0\r\n"),
    "Call-ID with a space": register().replace(b"Call-ID: c1@10.0.0.1", b"Call-ID: c1 @10.0.0.1"),
    "an INVITE": register().replace(b"REGISTER sip:", b"INVITE sip:", 1),
    "SIP/3.0": register().replace(b" SIP/2.0\r\n", b" SIP/3.0\r\n", 1),
    "leading CRLF": b"\r\n" + register(),
}


def expected_answer(data: bytes, prefix: str = "p1") -> bytes:
    req = parse_message(data)
    return make_response(req, 401, to_tag=stateless_tag(prefix, req), headers=CHALLENGE).to_bytes()


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_register_answered_as_make_response(name):
    data = PLAIN[name]
    read = read_plain_register(data)
    assert read is not None, name
    uri_text, values, answered, to = read
    tag = raw_stateless_tag("p1", uri_text, values)
    assert tag == stateless_tag("p1", parse_message(data))
    assert answer_bytes("SIP/2.0 401 Unauthorized", answered, tag, [f"{n}: {v}" for n, v in CHALLENGE]) == \
        expected_answer(data)
    assert to.tag is None and to.uri.is_sip


@pytest.mark.parametrize("name", sorted(NOT_PLAIN))
def test_anything_else_declined(name):
    assert read_plain_register(NOT_PLAIN[name]) is None


@pytest.mark.parametrize("path", TORTURE, ids=lambda p: p.name)
def test_torture_messages_and_their_register_twins(path):
    """Every torture message, and the same message made a REGISTER (start line and CSeq), is read
    or declined without an exception; what is read the parser takes, and answers the same."""
    data = path.read_bytes()
    twin = data
    method, sp, _ = data.partition(b" ")
    if sp and not data.startswith(b"SIP/"):
        twin = b"REGISTER " + data[len(method) + 1:]
        twin = twin.replace(b" " + method + b"\r\n", b" REGISTER\r\n")
    for msg in (data, twin):
        read = read_plain_register(msg)
        if read is None:
            continue
        try:
            expected = expected_answer(msg)
        except RemoteProtocolError as exc:  # pragma: no cover - the failure this test is for
            pytest.fail(f"read as plain, refused by the parser: {exc}")
        uri_text, values, answered, _to = read
        got = answer_bytes("SIP/2.0 401 Unauthorized", answered, raw_stateless_tag("p1", uri_text, values),
                           [f"{n}: {v}" for n, v in CHALLENGE])
        assert got == expected
