"""Parser/serialiser unit and property tests (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipd.sip.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from sipd.sip.framing import StreamParser
from sipd.sip.message import make_request, make_response
from sipd.sip.parser import MAX_MESSAGE_SIZE, parse_message
from sipd.sip.uri import parse_uri

from .fuzz import valid_invite

INVITE = valid_invite()


def test_compact_forms_and_case_insensitive_names():
    m = parse_message(INVITE.replace(b"Via:", b"v:").replace(b"Call-ID:", b"i:"))
    assert m.get("Via") == m.get("v") == m.get("VIA")
    assert m.call_id == "a84b4c76e66710@pc33.example.com" and "CALL-id" in m.headers


def test_get_all_splits_lists_respecting_quotes_and_brackets():
    m = parse_message(INVITE.replace(b"X-Custom: hello", b'Contact: "A, B" <sip:a@h;x=1,2>, <sip:b@h>'))
    assert m.get_all("Contact")[1:] == ['"A, B" <sip:a@h;x=1,2>', "<sip:b@h>"]
    assert [c.uri.user for c in m.contacts] == ["alice", "a", "b"]
    m2 = parse_message(INVITE.replace(b"X-Custom: hello", b"Date: Sat, 13 Nov 2010 23:29:00 GMT"))
    assert m2.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]


def test_forwarding_edits_keep_other_headers_byte_exact():
    m = parse_message(INVITE.replace(b"X-Custom: hello", b"X-Odd:   ;;,,  value  "))
    m.prepend("Via", "SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKp1")
    m.prepend("Record-Route", "<sip:198.51.100.1;lr>")
    m.set("Max-Forwards", str(m.max_forwards - 1))
    m.uri = "sip:bob@192.0.2.99"
    out = m.to_bytes()
    assert out.startswith(b"INVITE sip:bob@192.0.2.99 SIP/2.0\r\nRecord-Route: <sip:198.51.100.1;lr>\r\n"
                          b"Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKp1\r\nVia: SIP/2.0/UDP")
    assert b"X-Odd:   ;;,,  value  \r\n" in out and b"Max-Forwards: 69\r\n" in out
    again = parse_message(out)
    assert [v.host for v in again.vias] == ["198.51.100.1", "192.0.2.1"] and again.max_forwards == 69
    again.remove_first("Via")
    again.replace_first("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;received=10.0.0.1")
    assert again.via.received == "10.0.0.1" and len(again.vias) == 1


def test_content_length_recomputed():
    m = parse_message(INVITE)
    m.body = b"x"
    assert b"Content-Length: 1\r\n" in m.to_bytes()


def test_make_response_copies_headers_and_adds_tag():
    req = parse_message(INVITE)
    r = make_response(req, 180, to_tag="srv")
    assert (r.status, r.reason, r.to.tag, r.from_.tag, r.call_id, str(r.cseq)) == (
        180, "Ringing", "srv", "1928301774", req.call_id, "314159 INVITE")
    assert r.get("Contact") is None and make_response(req, 100, to_tag="x").to.tag is None
    with pytest.raises(LocalProtocolError):
        make_response(req, 1000)


def test_make_request_validates():
    with pytest.raises(LocalProtocolError):
        make_request("OPTIONS", "sip:a@b", headers=[("From", "<sip:a@b>;tag=1")])
    r = make_request("OPTIONS", "sip:a@b", headers=[("From", "<sip:a@b>;tag=1"), ("To", "<sip:a@b>"),
                                                     ("Call-ID", "x"), ("CSeq", "1 OPTIONS")])
    assert r.max_forwards == 70 and r.get("Via") is None  # the sender adds the Via
    r.prepend("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")
    assert parse_message(r.to_bytes()).method == "OPTIONS"


def test_limits():
    big = INVITE.replace(b"X-Custom: hello", b"X-Pad: " + b"a" * MAX_MESSAGE_SIZE)
    with pytest.raises(RemoteProtocolError) as e:
        parse_message(big)
    assert e.value.status_hint == 513
    many = INVITE.replace(b"X-Custom: hello\r\n", b"X-A: 1\r\n" * 300)
    with pytest.raises(RemoteProtocolError) as e:
        parse_message(many)
    assert e.value.status_hint == 513
    sp = StreamParser()
    with pytest.raises(RemoteProtocolError):
        for _ in range(100):
            sp.feed(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"a" * 4000)


def test_stream_framing_split_anywhere_and_keepalives():
    data = b"\r\n\r\n" + INVITE + b"\r\n" + INVITE
    for cut in range(0, len(data), 37):
        sp = StreamParser()
        msgs = sp.feed(data[:cut]) + sp.feed(data[cut:])
        assert len(msgs) == 2 and sp.pop_keepalive() and not sp.keepalive_pending


def test_stream_frames_are_the_bytes_received_cut_anywhere():
    """``frames`` gives each whole message as the bytes it came in (routed by them, parsed only
    where it is served): pipelined, cut at every byte, with pings before, between and after;
    an unparsable message framed by its Content-Length is framed like any other."""
    bad = b"INVITE sip:b@h SIP/2.0\r\nCall-ID: two words\r\nl: 5\r\n\r\nhello"
    data = b"\r\n\r\n" + INVITE + b"\r\n\r\n" + bad + INVITE + b"\r\n\r\n"
    pieces = [[data[:cut], data[cut:]] for cut in range(len(data) + 1)]  # two reads, cut anywhere
    pieces += [[data[i:i + step] for i in range(0, len(data), step)] for step in (1, 7)]  # many reads
    for reads in pieces:
        sp = StreamParser()
        got = [m for chunk in reads for m in sp.frames(chunk)]
        assert got == [INVITE, bad, INVITE] and not sp.buffered
        assert [sp.pop_keepalive() for _ in range(4)] == [True, True, True, False]


def test_uri_basics():
    u = parse_uri("sips:Alice:pw@[2001:db8::1]:5061;transport=TLS;lr?Subject=x")
    assert (u.scheme, u.user, u.password, u.host, u.port, u.transport) == (
        "sips", "Alice", "pw", "2001:db8::1", 5061, "tls")
    assert u.aor() == "sips:Alice@[2001:db8::1]" and u.host_port == "[2001:db8::1]:5061"
    assert parse_uri("sip:a@EXAMPLE.com;transport=udp") != parse_uri("sip:a@example.com")
    assert parse_uri("sip:a@EXAMPLE.com;foo=1") == parse_uri("sip:a@example.com")
    assert parse_uri("tel:+1-201-555-0123").aor() == "tel:+1-201-555-0123"
    for bad in ("sip:a@", "sip:a@h:99999", "sip:a b@h", "sip:%zz@h", "sip:[::1", ":x"):
        with pytest.raises(RemoteProtocolError):
            parse_uri(bad)


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
                 min_size=1, max_size=12)
_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_characters="\x7f"),
                 max_size=40).map(str.strip)


@settings(max_examples=150, deadline=None)
@given(extra=st.lists(st.tuples(_token, _value), max_size=8), body=st.binary(max_size=200),
       method=_token, seq=st.integers(0, 2**32 - 1))
def test_roundtrip_parse_serialize(extra, body, method, seq):
    headers = [("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx"), ("From", "<sip:a@b>;tag=1"),
               ("To", "<sip:c@d>"), ("Call-ID", "id@h"), ("CSeq", f"{seq} {method}")]
    known = {"via", "from", "to", "call-id", "cseq", "content-length", "l", "max-forwards", "contact",
             "m", "v", "f", "t", "i"}
    headers += [(f"X-{k}", v) for k, v in extra if k.lower() not in known]
    m = make_request(method, "sip:c@d", headers=headers, body=body)
    data = m.to_bytes()
    m2 = parse_message(data)
    assert m2.method == method and m2.body == body and m2.cseq.seq == seq
    assert [(n, v) for n, v in m2.headers] == [(n, v) for n, v in m.headers]
    assert m2.to_bytes() == data


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_protocol_errors(data):
    for blob in (data, INVITE[: len(data) % len(INVITE)] + data):
        try:
            parse_message(blob).to_bytes()
        except ProtocolError:
            pass
        try:
            StreamParser().feed(blob)
        except ProtocolError:
            pass
