"""RFC 4475 and RFC 5118 torture messages, handled as tests/sip/data/README.md says."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipd.sip import sanity
from sipd.sip.errors import RemoteProtocolError
from sipd.sip.layer import MessageRejected, TransactionLayer
from sipd.sip.framing import StreamParser
from sipd.sip.message import Request, Response, make_response
from sipd.sip.parser import parse_message

DATA = Path(__file__).parent / "data"

OK = "ok"
# file -> parser verdict: OK or the status_hint of the RemoteProtocolError (None = silent drop).
PARSER = {
    # RFC 4475 §3.1.1: valid messages
    "wsinv": OK, "intmeth": OK, "esc01": OK, "escnull": OK, "esc02": OK, "lwsdisp": OK,
    "longreq": OK, "dblreq": OK, "semiuri": OK, "transports": OK, "mpart01": OK,
    "unreason": OK, "noreason": OK,
    # §3.1.2: invalid messages
    "badinv01": 400, "clerr": 400, "ncl": 400, "scalar02": 400, "scalarlg": None,
    "quotbal": 400, "ltgtruri": 400, "lwsruri": 400, "lwsstart": 400, "trws": 400,
    "escruri": 400, "baddate": OK, "regbadct": 400, "badaspec": 400, "baddn": 400,
    "badvers": 505, "mismatch01": 400, "mismatch02": 501, "bigcode": None,
    # §3.2 transaction layer, §3.3 application layer, §3.4 backward compatibility
    "badbranch": OK, "insuf": 400, "unkscm": OK, "novelsc": OK, "unksm2": OK, "bext01": OK,
    "invut": OK, "regaut01": OK, "multi01": 400, "mcl01": 400, "bcast": OK, "zeromf": OK,
    "cparam01": OK, "cparam02": OK, "regescrt": OK, "sdp01": OK, "inv2543": OK,
    # RFC 5118
    "ipv6-good": OK, "ipv6-bad": 400, "port-ambiguous": OK, "port-unambiguous": OK,
    "via-received-param-with-delim": OK, "via-received-param-no-delim": OK, "ipv6-in-sdp": OK,
    "mult-ip-in-header": OK, "mult-ip-in-sdp": OK, "ipv4-mapped-ipv6": OK,
    "ipv6-bug-abnf-3-colons": 400,  # policy: RFC 4291 forbids it; see sipd/sip/uri.py
    "ipv6-correct-abnf-2-colons": OK,
}
# Rejections we can answer (the response needs Via and CSeq; From, To, Call-ID are copied when there): a partial request.
NO_PARTIAL = {"scalarlg", "bigcode"}
FILES = {p.stem: p for p in sorted(DATA.glob("rfc*/*.dat"))}


def test_table_covers_every_file():
    assert set(FILES) == set(PARSER)
    assert len(FILES) == 49 + 12


@pytest.mark.parametrize("name", sorted(PARSER))
def test_parser_verdict(name):
    data = FILES[name].read_bytes()
    expected = PARSER[name]
    if expected == OK:
        msg = parse_message(data)
        again = parse_message(msg.to_bytes())
        before = [(k, v) for k, v in ((it[0], it[2]) for it in msg.headers._items)]
        after = [(it[0], it[2]) for it in again.headers._items]
        assert before == after  # no header lost, order kept
        assert again.body == msg.body
        return
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data)
    assert info.value.status_hint == expected
    if expected is not None and name not in NO_PARTIAL:
        partial = info.value.partial
        assert isinstance(partial, Request)
        reply = make_response(partial, expected)
        assert reply.to_bytes().startswith(f"SIP/2.0 {expected} ".encode())
    else:
        assert info.value.partial is None


def test_untouched_message_is_byte_exact():
    for name, path in FILES.items():
        if PARSER[name] == OK and name not in ("inv2543", "dblreq"):
            data = path.read_bytes()
            assert data.startswith(parse_message(data).to_bytes()), name  # 5118: body > CL


def msg(name):
    return parse_message(FILES[name].read_bytes())


def test_wsinv_details():
    m = msg("wsinv")
    assert m.max_forwards == 68 and m.cseq.seq == 9 and m.cseq.method == "INVITE"
    assert [v.branch for v in m.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert m.to.tag == "1918181833n" and m.from_.tag == "98asjd8"
    assert m.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert m.get("Subject") == ""
    assert m.contacts[0].params["q"] == "0.33"
    assert b"NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n" in m.to_bytes()


def test_escapes_kept_and_not_unescaped_twice():
    m = msg("esc01")
    c = m.contacts[0].uri
    assert c.user == "cal%6Cer" and c.params["n%61me"] == "v%61lue%25%34%31"
    assert m.to.uri == parse_message(FILES["esc01"].read_bytes()).to.uri
    from sipd.sip.uri import parse_uri

    assert parse_uri("sip:%75se%72@example.com") == parse_uri("sip:user@example.com")
    assert parse_uri("sip:u@h;p=value%41") != parse_uri("sip:u@h;p=valueA%2541")
    n = msg("escnull")
    assert [c.uri.user for c in n.contacts] == ["%00", "%00%00"]
    assert n.to.uri.aor() == "sip:null-%00-null@example.com"


def test_esc02_is_not_register_and_has_two_contacts():
    m = msg("esc02")
    assert m.method == "RE%47IST%45R" and len(m.contacts) == 2
    assert m.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    refusal = sanity.check_method(m, frozenset({"REGISTER", "OPTIONS"}))
    assert refusal.status == 501 and refusal.headers == [("Allow", "OPTIONS, REGISTER")]


def test_dblreq_ignores_trailing_junk():
    m = msg("dblreq")
    assert m.method == "REGISTER" and m.body == b"" and b"INVITE" not in m.to_bytes()


def test_mpart01_binary_body():
    m = msg("mpart01")
    assert len(m.body) == 553 and b"\x00" in m.body


def test_semiuri_user_part():
    assert msg("semiuri").uri.user == "user;par=u%40example.net"
    assert msg("semiuri").uri.host == "example.com"


def test_unreason_utf8_reason():
    r = msg("unreason")
    assert isinstance(r, Response) and r.status == 200 and "простое" in r.reason
    assert msg("noreason").reason == ""


def test_cparam_contact_vs_uri_param():
    assert msg("cparam01").contacts[0].params == {"unknownparam": None}
    assert msg("cparam01").contacts[0].uri.params == {}
    assert msg("cparam02").contacts[0].uri.params == {"unknownparam": None}
    c = msg("regescrt").contacts[0]
    assert str(c.uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"


def test_application_level_decisions():
    assert sanity.check_uri_scheme(msg("unkscm")).status == 416
    assert sanity.check_uri_scheme(msg("novelsc")).status == 416
    assert sanity.check_uri_scheme(msg("wsinv")) is None
    refusal = sanity.check_proxy_require(msg("bext01"))  # Require is the UAS's, not ours to check
    assert refusal.status == 420
    assert refusal.headers == [("Unsupported", "noProxiesSupportThis, norDoAnyProxiesSupportThis")]
    assert sanity.check_proxy_require(msg("wsinv")) is None
    assert sanity.check_max_forwards(msg("zeromf")).status == 483
    assert sanity.check_max_forwards(msg("wsinv")) is None
    assert sanity.check_aor(msg("unksm2")).status == 400  # a registrar; a proxy forwards it
    assert sanity.check_aor(msg("esc02")) is None
    assert msg("unksm2").from_.uri.scheme == "http"
    assert msg("inv2543").max_forwards is None  # proxy adds Max-Forwards: 70
    # regaut01: unknown auth scheme -> treat as no credentials -> 401 (services/auth)
    from sipd.sip.auth import parse_credentials

    with pytest.raises(RemoteProtocolError):
        parse_credentials(msg("regaut01").get("Authorization"))
    # bcast: parsed; a proxy must not forward to the broadcast second Via
    assert msg("bcast").vias[1].host == "255.255.255.255"
    # scalar02 alone: Expires overflow reads as absent
    assert msg("invut").content_type == "application/unknownformat"


def test_ipv6_hosts():
    assert msg("port-ambiguous").uri.host == "2001:db8::10:5070" and msg("port-ambiguous").uri.port is None
    assert msg("port-unambiguous").uri.port == 5070
    assert msg("via-received-param-with-delim").via.received == "[2001:db8::9:255]"
    assert msg("via-received-param-no-delim").via.received == "2001:db8::9:255"
    vias = msg("mult-ip-in-header").vias
    assert (vias[0].host, vias[0].port, vias[1].host) == ("2001:db8::9:1", 6050, "192.0.2.1")
    assert msg("ipv4-mapped-ipv6").via.sent_by == "[::ffff:192.0.2.10]:19823"


def test_clerr_on_stream_waits_then_ncl_closes():
    sp = StreamParser()
    assert sp.feed(FILES["clerr"].read_bytes()) == []  # waits for the rest of the 9999 bytes
    with pytest.raises(RemoteProtocolError):
        StreamParser().feed(FILES["ncl"].read_bytes())
    with pytest.raises(RemoteProtocolError):
        StreamParser().feed(FILES["mcl01"].read_bytes())


def test_layer_answers_rejections_statelessly():
    layer = TransactionLayer()
    src = ("udp", "192.0.2.1", 5060, None)
    layer.receive_datagram(FILES["badvers"].read_bytes(), src, 0.0)
    ev = layer.next_event()
    assert isinstance(ev, MessageRejected) and ev.status == 505
    (out,) = layer.messages_to_send(0.0)
    assert out.data.startswith(b"SIP/2.0 505 ") and out.dest == src
    layer.receive_datagram(FILES["bigcode"].read_bytes(), src, 0.0)
    assert layer.next_event().status is None and layer.messages_to_send(0.0) == []
