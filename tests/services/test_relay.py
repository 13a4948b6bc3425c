"""The owner's side of a relayed request (sipd/services/relay.py) and the Route the relaying node
writes (sipd/services/peers.py): a peer's Route naming a binding of ours is popped and the request
goes to that binding, unaccounted here; the same Route from anyone else means nothing."""

from __future__ import annotations

from sipd.services import relay
from sipd.services.peers import ClusterPeers, owner_route
from sipd.services.pipeline import Forward, Reply

from _residential import Endpoint, ctx, req, state

PEER = ("udp", "192.0.2.11", 5060, None)   # node b
ROUTE = owner_route("192.0.2.10:5060", "tcp:198.51.100.7:49152")


def _node_a():  # type: ignore[no-untyped-def]
    st = state(cluster={"node_id": "a"})
    st.cluster.update([("a", "192.0.2.10:5060"), ("b", "192.0.2.11:5060")], ["192.0.2.11"])
    return st, relay.owner_stage(Endpoint())


def test_the_route_names_the_owner_and_the_binding():
    assert ROUTE == "<sip:192.0.2.10:5060;lr;received=tcp:198.51.100.7:49152>"
    peers = ClusterPeers("b")
    peers.update([("a", "192.0.2.10:5060"), ("b", "192.0.2.11:5060")], ["192.0.2.10"])
    assert peers.owner_of("a") == "192.0.2.10:5060"
    assert peers.owner_of("b") is None and peers.owner_of(None) is None and peers.owner_of("z") is None
    assert "192.0.2.10" in peers and "203.0.113.7" not in peers


def test_a_peer_has_the_owner_deliver_to_its_binding():
    st, stage = _node_a()
    c = ctx(st, req(ruri="sip:alice@10.0.0.5:5060;transport=tcp", extra=(f"Route: {ROUTE}",)), source=PEER)
    decision = stage(c)
    assert isinstance(decision, Forward) and not decision.account  # the relaying node accounts the call
    assert decision.record_route_here  # later requests come back to the node that reaches the callee
    (branch,), = decision.groups
    assert branch.dest == ("tcp", "198.51.100.7", 49152, None)
    assert c.request.get("Route") is None  # our Route popped


def test_a_stranger_cannot_have_us_send_anywhere():
    st, stage = _node_a()
    stranger = ctx(st, req(extra=(f"Route: {ROUTE}",)), source=("udp", "203.0.113.7", 40000, None))
    assert stage(stranger) is None and stranger.request.get("Route") is not None  # an ordinary Route
    other = ctx(st, req(extra=("Route: <sip:192.0.2.99:5060;lr;received=udp:198.51.100.7:5060>",)), source=PEER)
    assert stage(other) is None  # not our Route: not ours to deliver


def test_a_broken_received_or_no_hops_left_is_refused():
    st, stage = _node_a()
    bad = ctx(st, req(extra=("Route: <sip:192.0.2.10:5060;lr;received=nonsense>",)), source=PEER)
    assert isinstance(decision := stage(bad), Reply) and decision.status == 400
    request = req(extra=(f"Route: {ROUTE}",))
    request.set("Max-Forwards", "0")
    assert isinstance(decision := stage(ctx(st, request, source=PEER)), Reply) and decision.status == 483


def test_peers_are_trusted_by_flood_protection():
    from sipd.services.antiflood import Antiflood, AntifloodSettings

    flood = Antiflood(AntifloodSettings(limit=2, trusted=()))
    flood.trusted.set_peers(["192.0.2.11", "[2001:db8::1]"])
    assert all(flood.check_packet(ip, 1.0) for ip in ("192.0.2.11", "2001:db8::1") for _ in range(10))
    assert [flood.check_packet("203.0.113.7", 1.0) for _ in range(4)] == [True, True, False, False]


def test_a_dead_owner_makes_its_bindings_unreachable():
    peers = ClusterPeers("b")
    peers.update([("a", "192.0.2.10:5060"), ("b", "192.0.2.11:5060")], ["192.0.2.10"], dead=["a"])
    assert peers.unreachable("a") and not peers.unreachable("b") and not peers.unreachable(None)
