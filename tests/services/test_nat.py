"""NAT handling: detection, Contact fixing, keep-alive pings (fake loop clock, fake transport)."""

from __future__ import annotations

from sipd.services import nat
from sipd.services.location import Contact
from sipd.sip.parser import parse_message
from sipd.stats import Statistics

from _residential import Endpoint, ctx, req, state


def test_parse_received():
    assert nat.parse_received("udp:192.0.2.1:5060") == ("udp", "192.0.2.1", 5060)
    assert nat.parse_received("udp:[2001:db8::1]:5070") == ("udp", "2001:db8::1", 5070)
    assert nat.parse_received(None) is None and nat.parse_received("udp:x") is None


def test_a_binding_is_nated_when_the_registrar_flagged_it():
    assert nat.is_nated(Contact("sip:a@10.0.0.5:5060", 0, received="udp:203.0.113.7:40000", cflags="NAT"))
    # received differing from the Contact alone says nothing: a third-party registration looks the same
    assert not nat.is_nated(Contact("sip:a@10.0.0.5:5060", 0, received="udp:203.0.113.7:40000"))
    assert not nat.is_nated(Contact("sip:a@10.0.0.5", 0, received=None))


def via(hostport: str) -> str:
    return f"SIP/2.0/UDP {hostport};branch=z9hG4bKabc;rport"


def nated(source: tuple, *, via_at: str, contact: str | None) -> bool:
    return nat.request_nated(req(via=via(via_at), contact=contact), source)


def test_request_nated_as_nat_uac_test():
    wan = ("udp", "203.0.113.7", 40000, None)
    # Via sent-by other than the source address, or port (rport test)
    assert nated(wan, via_at="10.0.0.5:5060", contact="<sip:alice@10.0.0.5:5060>")
    assert nated(wan, via_at="203.0.113.7:5060", contact="<sip:alice@203.0.113.7:5060>")
    # a private (RFC 1918, RFC 6598) or loopback Contact that is not the source
    assert nated(wan, via_at="203.0.113.7:40000", contact="<sip:alice@192.168.1.20:5060>")
    assert nated(wan, via_at="203.0.113.7:40000", contact="<sip:alice@100.64.3.4:5060>")
    assert nated(wan, via_at="203.0.113.7:40000", contact="<sip:alice@127.0.0.1:5060>")
    # not NAT: the same LAN, loopback to loopback, a public Contact (third-party registration), a name
    assert not nated(("udp", "10.0.0.5", 5060, None), via_at="10.0.0.5:5060", contact="<sip:alice@10.0.0.5:5060>")
    assert not nated(("udp", "127.0.0.1", 5136, None), via_at="127.0.0.1:5136", contact="<sip:bob@127.0.0.1:5132>")
    assert not nated(wan, via_at="203.0.113.7:40000", contact="<sip:bob@198.51.100.9:5070>")
    assert not nated(wan, via_at="pc.example.org:40000", contact="<sip:alice@pc.example.org>")
    assert not nated(wan, via_at="203.0.113.7:40000", contact=None)
    # stream endpoints are reached over their connection
    assert not nat.request_nated(req(), ("tcp", "203.0.113.7", 40000, 3))


def test_private_addresses_are_named_networks():
    from sipd.services.nat_detect import is_private

    assert all(is_private(h) for h in ("10.1.2.3", "172.31.0.1", "192.168.0.1", "100.127.255.254", "169.254.1.1",
                                       "fd00::1", "[fe80::1]"))
    # documentation ranges count as private for Python's ipaddress, not for NAT detection
    assert not any(is_private(h) for h in ("203.0.113.7", "192.0.2.1", "198.51.100.1", "127.0.0.1", "8.8.8.8",
                                           "100.128.0.1", "example.test", ""))


def test_fix_contact_of_nated_caller():
    st = state()
    c = ctx(st, req())
    assert nat.fix_contact_stage(c) is None
    assert c.request.contacts[0].uri.host_port == "203.0.113.7:40000"
    assert "NATed caller" in c.extra["nat"]
    same = ctx(st, req(contact="<sip:alice@203.0.113.7:40000>"))
    nat.fix_contact_stage(same)
    assert "nat" not in same.extra
    public = ctx(st, req(via=via("203.0.113.7:40000"), contact="<sip:alice@198.51.100.9:5070>"))
    nat.fix_contact_stage(public)  # a public Contact other than the source is kept
    assert "nat" not in public.extra and public.request.contacts[0].uri.host_port == "198.51.100.9:5070"
    register = ctx(st, req("REGISTER", "sip:example.test", to="sip:alice@example.test"))
    nat.fix_contact_stage(register)
    assert register.request.contacts[0].uri.host == "10.0.0.5"  # the registrar keeps the Contact as sent
    assert nat.stages(state(nat={"enabled": False})) == []


def with_contacts(contacts, method="options"):
    st = state(nat={"keepalive_interval": 15.0, "keepalive_method": method})
    for aor, c in contacts:
        st.location.replace(aor, [c], mark_dirty=False)
    return st, Endpoint()


def test_keepalive_pings_only_live_nated_udp_contacts():
    import time

    far = time.time() + 3600
    st, endpoint = with_contacts([
        ("alice@example.test", Contact("sip:alice@10.0.0.5:5060", far, received="udp:203.0.113.7:40000", cflags="NAT")),
        ("bob@example.test", Contact("sip:bob@203.0.113.8:5060", far, received="udp:203.0.113.8:5060")),
        ("carol@example.test", Contact("sip:carol@10.0.0.9", 1.0, received="udp:203.0.113.9:5060", cflags="NAT")),
    ])
    st.stats = Statistics()
    ka = nat.start(st, endpoint)
    assert endpoint.timers[0][0] == 15.0
    endpoint.timers[0][1]()  # the timer fires
    assert len(endpoint.sent) == 1
    data, dest = endpoint.sent[0]
    assert dest == ("udp", "203.0.113.7", 40000, None)
    assert data.startswith(b"OPTIONS sip:alice@10.0.0.5:5060 SIP/2.0\r\n") and b"To: <sip:alice@example.test>" in data
    assert b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKka" in data  # from our listener
    ping = parse_message(data)  # a well-formed request, whatever wrote it
    assert ping.method == "OPTIONS" and ping.cseq.method == "OPTIONS" and ping.get("Content-Length") == "0"
    assert ping.from_.tag and ping.call_id.startswith("ka") and ping.max_forwards == 70
    assert len(endpoint.timers) == 2  # re-armed
    assert ka.sent.value == 1
    endpoint.stopping = True
    endpoint.timers[1][1]()
    assert len(endpoint.timers) == 2  # not re-armed once the daemon stops


def test_keepalive_crlf_and_disabled():
    import time

    st, endpoint = with_contacts([("alice@example.test", Contact("sip:alice@10.0.0.5", time.time() + 60,
                                                                 received="udp:203.0.113.7:40000", cflags="NAT"))],
                                 method="crlf")
    ka = nat.start(st, endpoint)
    assert ka.ping_all() == 1 and endpoint.sent[0][0] == b"\r\n\r\n"
    st.config.nat.keepalive_interval = 0
    assert nat.start(st, endpoint) is None


def test_fix_response_contact():
    from sipd.sip.parser import parse_message

    def resp(contact):
        return parse_message(("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n"
                              "From: <sip:a@example.test>;tag=1\r\nTo: <sip:b@example.test>;tag=2\r\nCall-ID: c\r\n"
                              f"CSeq: 1 INVITE\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n").encode())

    r = resp("<sip:b@10.0.0.9:5062>;expires=60")
    assert nat.fix_response_contact(r, ("udp", "203.0.113.7", 40000, None))
    assert r.get("Contact") == "<sip:b@203.0.113.7:40000>;expires=60"
    public = resp("<sip:b@93.184.216.34:5060>")  # a public Contact is left alone (behind a proxy, not NAT)
    assert not nat.fix_response_contact(public, ("udp", "203.0.113.7", 40000, None))
    same = resp("<sip:b@10.0.0.9:5062>")
    assert not nat.fix_response_contact(same, ("udp", "10.0.0.9", 5062, None))


def test_a_cluster_node_pings_only_the_nated_bindings_it_owns():
    """Each binding is kept alive by one node: its owner, whose address opened the pinhole. A copy
    of another node's binding (read for a call) is not pinged; without a cluster, all are."""
    import time

    far = time.time() + 3600
    bindings = [
        ("alice@example.test", Contact("sip:alice@10.0.0.5", far, received="udp:203.0.113.7:40000", cflags="NAT",
                                       node_id="a")),
        ("bob@example.test", Contact("sip:bob@10.0.0.6", far, received="udp:203.0.113.8:40000", cflags="NAT",
                                     node_id="b")),
    ]
    st, endpoint = with_contacts(bindings)
    st.cluster.node_id = "a"
    ka = nat.KeepAlive(st, scheduler=endpoint, listeners=endpoint, transmitter=endpoint)
    assert ka.ping_all() == 1 and [dest for _, dest in endpoint.sent] == [("udp", "203.0.113.7", 40000, None)]
    st.cluster.node_id = ""  # no cluster: bindings without an owner are this node's
    for _, c in bindings:
        c.node_id = None
    assert ka.ping_all() == 2
