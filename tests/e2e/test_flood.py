"""A distributed flood must not lock out the institution's own endpoint.

250 loopback sources, each below the per-source limit, send 5,000 packets/s in total of INVITEs to
random users (challenged, never ACKed) and REGISTERs of random users without credentials, to a
live sipd with its defaults except ``[antiflood] trusted_networks = []``. Meanwhile a registered
endpoint registers with digest every 0.15 s, each request retransmitted as Timer A does and
given up after 4 s: at least 99 % of its registrations must succeed. This checks success, not
speed (bench/flood.py measures latency, CPU and Kamailio beside it). Afterwards sipd counted what
it shed, shows the registration, and a new endpoint registers at once.
"""

from __future__ import annotations

import time

from helpers.flood import DOMAIN, LEGIT_HOST, finish_flood, legit_run, register_once, sources, start_flood

from sipd import config as cfg
from sipd.mgmt import client
from tests.e2e.security_ua import UA

RATE = 5000
COUNT = 80
INTERVAL = 0.15


def test_registered_endpoint_gets_through_a_5000_pps_flood_from_250_sources(server_factory):
    proc = server_factory({"antiflood": {"trusted_networks": []}})
    with UA(("127.0.0.1", proc.udp_port), host=LEGIT_HOST) as ua:
        assert register_once(ua, "alice", "alicepw") is not None  # an endpoint registered before the flood
    seconds = COUNT * INTERVAL + 6
    flood = start_flood(proc.udp_port, RATE, seconds, sources(250))
    try:
        time.sleep(1.0)
        legit = legit_run(proc.udp_port, COUNT, INTERVAL)
    finally:
        sent, _ = finish_flood(flood, seconds)
    assert sent >= RATE * seconds * 0.5, f"the flood generator fell behind: {sent} packets in {seconds:.0f} s"
    assert legit["ok"] >= 0.99 * COUNT, legit
    conf = cfg.Config()
    conf.mgmt.socket = proc.socket_path
    stats = client.call(conf, "get_statistics", ["overload:", "core:"], 10.0)
    assert stats["overload:shed_requests"] > 0, stats  # strangers beyond [overload] unknown_rate were shed
    assert f"alice@{DOMAIN}" in proc.sipctl("ul", "show", "--json").stdout
    with UA(("127.0.0.1", proc.udp_port), host="127.3.0.2") as ua:  # a new address, once the flood is over
        assert register_once(ua, "bob", "bobpw") is not None
    assert proc.running()


def test_shed_requests_answered_503_with_retry_after_when_asked_and_known_sources_pass(server_factory):
    proc = server_factory({"antiflood": {"trusted_networks": []},
                           "overload": {"unknown_rate": 2, "reply_503": True, "retry_after": 17}})
    target = f"sip:127.0.0.1:{proc.udp_port}"
    with UA(("127.0.0.1", proc.udp_port), host="127.3.0.9") as stranger:
        statuses = []
        for _ in range(6):  # a stranger over [overload] unknown_rate: shed, answered 503
            data, branch = stranger._request("OPTIONS", target, "sip:s@outside.example", target)
            reply = stranger.transaction(data, branch, 2.0)
            statuses.append(reply.status if reply else None)
            if reply is not None and reply.status == 503:
                assert reply.header("retry-after") == "17"
        assert 200 in statuses and 503 in statuses, statuses
    time.sleep(1.5)  # the bucket refills (2 a second): room for a REGISTER and its answer to the challenge
    with UA(("127.0.0.1", proc.udp_port), host=LEGIT_HOST) as ua:
        assert register_once(ua, "alice", "alicepw") is not None
        # authenticated: known from now on, never shed although strangers' budget is 2 a second
        assert all(register_once(ua, "alice", "alicepw") is not None for _ in range(6))



def test_trusted_networks_are_never_shed(server_factory):
    """A gateway on a trusted network (127.0.0.0/8 is in the default list) is never a stranger: it
    is served past the strangers' budget, with or without automatic banning, in every process."""
    for settings in ({}, {"antiflood": {"enabled": False}}, {"server": {"workers": 2}}):
        proc = server_factory({"overload": {"unknown_rate": 2}, **settings})
        target = f"sip:127.0.0.1:{proc.udp_port}"
        with UA(("127.0.0.1", proc.udp_port), host="127.3.0.9") as trusted:
            for _ in range(20):
                data, branch = trusted._request("REGISTER", f"sip:{DOMAIN}", f"sip:gw@{DOMAIN}", f"sip:gw@{DOMAIN}")
                trusted.transaction(data, branch, 2.0)
        conf = cfg.Config()
        conf.mgmt.socket = proc.socket_path
        stats = client.call(conf, "get_statistics", ["overload:"], 10.0)
        assert stats["overload:shed_requests"] == 0, (settings, stats)
        proc.stop()
