"""Is this URI us (host, port and transport of a listener), and is it in a local domain?"""

from __future__ import annotations

from types import SimpleNamespace

from sipd import config as cfg
from sipd.services.myself import is_local, is_self
from sipd.sip.uri import parse_uri
from sipd.state import ServerState


def state(domains=("example.test", "192.0.2.10", "198.51.100.1"), advertised=""):
    conf, problems = cfg.from_dict({"server": {"domains": list(domains), "advertised_address": advertised}})
    assert not problems, problems
    st = ServerState(config=conf)
    for proto, port in (("udp", 5060), ("tcp", 5060), ("tls", 5061)):
        st.myself.note_listener(SimpleNamespace(proto=proto, host="192.0.2.10", port=port), advertised)
    return st


def test_self_needs_host_port_and_transport_of_a_listener():
    st = state()
    yes = ["sip:192.0.2.10", "sip:192.0.2.10:5060;lr", "sip:192.0.2.10:5060;transport=tcp;lr",
           "sip:192.0.2.10:5061;transport=tls;lr", "sips:192.0.2.10"]
    no = ["sip:192.0.2.10:5070;lr", "sip:192.0.2.10:5071", "sip:192.0.2.10:5061;transport=udp", "sips:192.0.2.10:5060",
          "sip:192.0.2.11:5060", "sip:example.test:5060;lr", "sip:bob@192.0.2.10:5112"]
    assert [u for u in yes if not is_self(st, parse_uri(u))] == []
    assert [u for u in no if is_self(st, parse_uri(u))] == []
    assert not is_self(ServerState(config=st.config), parse_uri("sip:192.0.2.10"))  # no listener noted yet


def test_advertised_address_is_us_on_our_ports():
    st = state(advertised="sip.example.test")
    assert is_self(st, parse_uri("sip:sip.example.test:5060;lr"))
    assert not is_self(st, parse_uri("sip:sip.example.test:5062;lr"))
    # our own host on any port (the PSTN gateway's number@OUR_IP, the hook's is_own_address)
    assert st.myself.is_own_host("SIP.example.test") and st.myself.is_own_host("192.0.2.10")
    assert not st.myself.is_own_host("192.0.2.11") and not state().myself.is_own_host("sip.example.test")


def test_a_domain_name_is_local_on_any_port_our_address_only_on_our_ports():
    st = state()
    assert is_local(st, parse_uri("sip:bob@example.test"))
    assert is_local(st, parse_uri("sip:bob@EXAMPLE.test:5099"))  # a name is a user space, not a socket
    assert is_local(st, parse_uri("sip:bob@192.0.2.10"))
    assert is_local(st, parse_uri("sip:bob@192.0.2.10:5060;transport=tcp"))
    # the Contact of a phone on the server's own address (the R-URI of its in-dialog requests)
    assert not is_local(st, parse_uri("sip:bob@192.0.2.10:5112"))
    assert not is_local(st, parse_uri("sip:bob@192.0.2.10:5061;transport=udp"))
    # an IP domain that is no socket of ours (a NAT's public address): any of our ports
    assert is_local(st, parse_uri("sip:bob@198.51.100.1"))
    assert not is_local(st, parse_uri("sip:bob@198.51.100.1:5112"))
    assert not is_local(st, parse_uri("sip:bob@other.test"))
    assert not is_local(state(domains=["example.test"]), parse_uri("sip:bob@192.0.2.10"))  # ours, not a domain
