"""Values from a Via that reach a socket call: received and rport are valid or absent (bytes in).

RFC 3261 §25.1: via-received = "received" EQUAL (IPv4address / IPv6address);
RFC 3581 §3: response-port = "rport" [EQUAL 1*DIGIT] -- a port, so 0-65535. A response to a
request with anything else goes to the sent-by address, as if the parameter were absent.
"""

from __future__ import annotations

import pytest

from sipd.sip.parser import parse_message


def request(via: str) -> bytes:
    return (f"OPTIONS sip:bob@example.test SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
            "From: <sip:a@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: c1\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


@pytest.mark.parametrize("via, address", [
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa;received=198.51.100.7;rport=40000", ("198.51.100.7", 40000)),
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa;rport", ("192.0.2.1", 5070)),
    ("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa", ("192.0.2.1", 5060)),
    ("SIP/2.0/UDP [2001:db8::9];branch=z9hG4bKa;received=[2001:db8::9:255]", ("2001:db8::9:255", 5060)),
    ("SIP/2.0/UDP [2001:db8::9];branch=z9hG4bKa;received=2001:db8::9:255", ("2001:db8::9:255", 5060)),
    # out of range or not a number: ignored, never handed to sendto()
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa;rport=65536", ("192.0.2.1", 5070)),
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa;rport=99999", ("192.0.2.1", 5070)),
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa;rport=" + "9" * 5000, ("192.0.2.1", 5070)),
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa;rport=-1", ("192.0.2.1", 5070)),
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa;rport=0x10", ("192.0.2.1", 5070)),
    # received that is no IP address
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa;received=65536.0.0.1", ("192.0.2.1", 5070)),
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa;received=host.example.com", ("192.0.2.1", 5070)),
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa;received=127.0." + "9" * 300, ("192.0.2.1", 5070)),
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa;received=[::1", ("192.0.2.1", 5070)),
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa;received=", ("192.0.2.1", 5070)),
])
def test_response_address_uses_only_valid_values(via, address):
    msg = parse_message(request(via))
    assert msg.vias[0].response_address() == address


@pytest.mark.parametrize("port", ["65536", "99999", "9" * 5000, "4294967296"])
def test_sent_by_port_out_of_range_is_a_400(port):
    from sipd.sip.errors import RemoteProtocolError

    with pytest.raises(RemoteProtocolError) as err:
        parse_message(request(f"SIP/2.0/UDP 192.0.2.1:{port};branch=z9hG4bKa")).vias
    assert (err.value.status_hint or 400) == 400


def test_bytes_that_are_not_utf8_survive_parse_and_serialise():
    data = request("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa").replace(b"From: <", b'From: "\xff\xfe\xed\xa0\x80" <')
    msg = parse_message(data)
    assert msg.to_bytes() == data  # nothing lost on the way through (relayed as received)
