"""A call to a user in another domain, served by a second sipd that the first
finds only through a local DNS server (dnsmasq on a loopback port with SRV records)."""

from __future__ import annotations

import pytest

from conftest import require_tool

from .conftest import DOMAIN
from .test_baresip import call_with_media

pytestmark = pytest.mark.e2e

OTHER = "other.test"


def test_call_to_other_domain_via_dns_srv(server_factory, baresip_factory, tmp_path):
    require_tool("dnsmasq")
    from helpers.dnsmasq import Dnsmasq

    remote = server_factory(domains=[OTHER], users=[(f"bob@{OTHER}", "bobpw")])
    zone = [
        f"local=/{OTHER}/",
        f"host-record=sip.{OTHER},127.0.0.1",
        f"srv-host=_sip._udp.{OTHER},sip.{OTHER},{remote.udp_port},10,100",
        f"srv-host=_sip._tcp.{OTHER},sip.{OTHER},{remote.tcp_port},10,100",
    ]
    with Dnsmasq(tmp_path, zone) as ns:
        home = server_factory({"dns": {"nameservers": [f"127.0.0.1:{ns.port}"]}}, domains=[DOMAIN])
        callee = baresip_factory("bob", "bobpw", server=remote, domain=OTHER)
        caller = baresip_factory("alice", server=home, answer="manual")
        call_with_media(caller, callee)
