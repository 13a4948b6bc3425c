"""The parser's fast paths (one regex for the common shape) agree with the general code.

Every fast path may give up (None) but must never accept something the general parser rejects,
nor build a different object from it. Mutated values (hypothesis) and the common shapes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipd.sip import headers as H
from sipd.sip import parser as P
from sipd.sip import uri as U
from sipd.sip.errors import RemoteProtocolError
from sipd.sip.header_fields import Headers
from sipd.sip.message import Request

from .fuzz import cases, valid_invite

TORTURE = Path(__file__).parent / "data"  # RFC 4475 / RFC 5118 messages


def _uri(u):
    return (u.scheme, u.user, u.password, u.host, u.port, u.params, u.headers, u.opaque)


def _na(n):
    return (n.display, _uri(n.uri), n.params)


def _via(v):
    return (v.protocol, v.transport, v.host, v.port, v.params)


def uri_from_match(text):
    m = U.match_fast_uri(text)
    return None if m is None else U.uri_from_match(m, 0)


def _slow_uri(text):
    scheme, _, rest = text.partition(":")
    return U._parse_sip_slow(scheme.lower(), rest)


# (fast, general, comparable form, common values that must take the fast path)
PAIRS = {
    "uri": (uri_from_match, _slow_uri, _uri, [
        "sip:bob@example.com", "SIPS:a@h:5061;transport=TLS;lr", "sip:proxy.example.com;lr",
        "sip:+4930123@gw;user=phone", "sip:u@h;transport=UDP;lr", "sip:u@h;lr;LR"]),
    "name-addr": (H.fast_name_addr, H.parse_name_addr_general, _na, [
        '"Room 101" <sip:room101@example.com>;tag=a73kszlfl', "<sip:bob@example.com>",
        '<sip:alice@192.0.2.10:5060;transport=udp>;+sip.instance="<urn:uuid:0-1>";reg-id=1',
        "<sip:a@b>;q=0.5", "<sip:u@127.0.0.1:5099;transport=UDP>", "<sip:u@h;Transport=udp;lr>",
        "<sip:u@h;lr;maddr=10.0.0.1;lr>", "<sip:u@h:05060>",
        "Bob Smith <sips:bob@h>;expires=60", '"" <sip:h;lr>', '"a\\"b;c" <sip:x@y>;p="q;r=s\\\\"']),
    "via": (H.fast_via, lambda t: H.parse_via_general(t)[0], _via, [
        "SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bK-524287-1---a3c5b1e0f2d4",
        "SIP/2.0/TCP host.example.com;branch=z9hG4bK1;received=10.0.0.1;rport=5060",
        "SIP/2.0/tls h:5061"]),
    "cseq": (H.fast_cseq, H.parse_cseq_general, lambda c: (c.seq, c.method),
             ["2 REGISTER", "4294967295 INVITE"]),
}
ALPHABET = list(' \t";:<>@=,.?&%[]/\\\x00\r\n+-_~*\'()$!`9aZ') + [
    "%41", "%zz", "\u00e9", "sip:", "<sip:a@b>", "65536", "99999", ";tag=", '"x"', "[::1]",
    "SIP/2.0/"]


def _agree(kind, text):
    fast, slow, form, _ = PAIRS[kind]
    got = fast(text)
    if got is None:
        return
    try:
        expected = slow(text)
    except RemoteProtocolError as e:
        pytest.fail(f"{kind} fast path accepted {text!r}, general code says {e}")
    assert form(got) == form(expected), text
    if kind == "name-addr":  # the URI text a registrar stores, with or without building the URI
        assert got.uri_text() == str(expected.uri), text
    if kind == "uri" and U.is_canonical_match(U.match_fast_uri(text), 0):
        assert str(got) == text, text


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_common_shapes_take_the_fast_path(kind):
    fast = PAIRS[kind][0]
    for text in PAIRS[kind][3]:
        assert fast(text) is not None, text
        _agree(kind, text)


@settings(max_examples=600, deadline=None)
@given(kind=st.sampled_from(sorted(PAIRS)), data=st.data())
def test_fast_paths_agree_with_general_code_on_mutations(kind, data):
    text = data.draw(st.sampled_from(PAIRS[kind][3]))
    ops = st.sampled_from(["ins", "del", "rep"])
    edit = st.tuples(st.integers(0, 120), st.sampled_from(ALPHABET), ops)
    edits = data.draw(st.lists(edit, min_size=1, max_size=3))
    for pos, piece, op in edits:
        pos = min(pos, len(text))
        if op == "ins":
            text = text[:pos] + piece + text[pos:]
        elif op == "del":
            text = text[:pos] + text[pos + 1:]
        else:
            text = text[:pos] + piece + text[pos + 1:]
    _agree(kind, text)


def test_header_split_fast_path_agrees():
    n_fast = 0
    for _desc, data in list(cases(extra=0))[::3]:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            continue
        lines = data[:end].decode("utf-8", "surrogateescape").split("\r\n")
        fast = P._split_block(lines[1:])
        if fast is None:
            continue
        n_fast += 1
        assert fast[0] == P._split_headers(lines)
        idx = Headers._from_items(fast[0])._idx()
        assert {k: [id(x) for x in v] for k, v in fast[1].items()} == {
            k: [id(x) for x in v] for k, v in idx.items()}
    assert n_fast > 20
    P.parse_message(valid_invite())  # the first time, X-Custom goes the long way (then cached)
    lines = valid_invite().split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert P._split_block(lines[1:]) is not None


def test_uri_text_agrees_on_the_torture_corpus():
    n = 0
    for p in sorted(TORTURE.glob("rfc*/*.dat")):
        try:
            msg = P.parse_message(p.read_bytes())
            values = [msg.from_, msg.to, *msg.contacts]
        except RemoteProtocolError:
            continue
        for na in values:
            n += na._uri is None
            assert na.uri_text() == str(na.uri), p.stem
    assert n > 10


def test_uri_text_skips_the_uri_object_only_when_the_text_is_canonical():
    na = H.parse_name_addr("<sip:u@127.0.0.1:5099;transport=UDP>;expires=60")
    assert na.uri_text() == "sip:u@127.0.0.1:5099;transport=UDP" and na._uri is None
    for text, canonical in (("<sip:u@h;Transport=udp>", "sip:u@h;transport=udp"), ("<SIP:u@h>", "sip:u@h"),
                            ("<sip:u@h;lr;lr>", "sip:u@h;lr"), ("<sip:u@h:05060>", "sip:u@h:5060")):
        na = H.parse_name_addr(text)
        assert na.uri_text() == canonical == str(na.uri), text
    na = H.parse_name_addr("<sip:u@h>")
    na.uri = U.parse_uri("sip:other@h")  # a URI set later is the one written
    assert na.uri_text() == "sip:other@h"


def test_uri_scheme_is_the_scheme_of_the_uri():
    n = 0
    torture = [(p.stem, p.read_bytes()) for p in sorted(TORTURE.glob("rfc*/*.dat"))]
    for _desc, data in [*torture, *cases(extra=0)]:
        try:
            req = P.parse_message(data)
        except RemoteProtocolError:
            continue
        if isinstance(req, Request):
            n += req._uri_m is not None
            scheme = req.uri_scheme  # before the URI object exists
            assert scheme == req.uri.scheme == req.uri_scheme, data[:80]
    assert n > 20


def test_cseq_without_the_regex_agrees():
    for text in ("1 REGISTER", "0001 INVITE", "4294967295 BYE", "4294967296 INVITE", "12345678901 ACK",
                 "\u0661 REGISTER", "1 REGISTER ", "1  REGISTER", "1 register", "1 FOO", " 1 INVITE", "1 INVITE\n", ""):
        _agree("cseq", text)
        m = H._CSEQ_FAST(text)
        got = H.fast_cseq(text)
        assert (got is None) == (m is None or int(m.group(1)) > 0xFFFFFFFF), text


def test_lazy_name_addr_behaves_like_a_built_one():
    import copy
    import pickle

    na = H.parse_name_addr('"A" <sip:a@b;lr>;tag=1')
    assert pickle.loads(pickle.dumps(na)).tag == "1" and str(copy.deepcopy(na)) == str(na)
    other = copy.copy(H.parse_name_addr("<sip:a@b>;tag=1"))
    other.tag = "2"
    other.uri = U.parse_uri("sip:c@d")
    assert str(other) == "<sip:c@d>;tag=2"
    with pytest.raises(RemoteProtocolError):  # the regex takes it, the port range check does not
        H.parse_name_addr("<sip:a@b:65536>")


def test_name_cache_is_bounded_and_recovers():
    base = valid_invite()
    for i in range(P._WIRE_KEYS_MAX + 50):
        P.parse_message(base.replace(b"X-Custom:", f"X-Scan-{i}:".encode()))
        assert len(P._WIRE_KEYS) <= P._WIRE_KEYS_MAX
    P.parse_message(base)  # X-Custom learnt again
    lines = base.split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert P._split_block(lines[1:]) is not None
