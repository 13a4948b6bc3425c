"""The owner's side of a request relayed by another node of the cluster (services/peers.py).

A node that finds a binding owned by this node (this node holds its TCP/TLS connection or its NAT
pinhole) sends the request here with a Route to us carrying ``received``: the binding's source
address. This stage, right before ``loose_route``, pops that Route and forwards the request over
the connection or pinhole it names -- what a Path's edge proxy does with its flow (RFC 3327,
RFC 5626 §5.3). The request was authenticated by the node that relays it, so it goes out without
a challenge, and that node accounts the call (one call, one CDR): this one records no dialog and
no CDR for it. Its Record-Route names this node itself, even where all nodes share one
(``[cluster] record_route_host``): the call's later requests must come back through the one node
that reaches the callee. Only a peer may ask for this, or anyone could have us send anywhere (an open relay):
from any other source the parameter means nothing and the Route is an ordinary one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .myself import is_self
from .nat import parse_received
from .peers import RECEIVED_PARAM
from .pipeline import Branch, Forward, Reply, max_forwards, pop_route

if TYPE_CHECKING:
    from .pipeline import Context, Decision, Stage
    from .ports import Destinations


def owner_stage(destinations: Destinations) -> Stage:
    """The stage delivering what a peer relays to a binding of this node (see the module)."""

    def deliver_for_peer(ctx: Context) -> Decision | None:
        req = ctx.request
        if not ctx.state.cluster.hosts or ctx.source[1] not in ctx.state.cluster:
            return None
        routes = req.routes
        if not routes:
            return None
        top = routes[0].uri
        received = top.params.get(RECEIVED_PARAM)
        if not received or not is_self(ctx.state, top):
            return None
        too_many_hops = max_forwards(ctx)
        if too_many_hops is not None:
            return too_many_hops
        target = parse_received(received)
        if target is None:
            return Reply(400, "Bad Request", why=f"relayed by a peer with an unusable Route {RECEIVED_PARAM}={received}")
        pop_route(req)
        proto, host, port = target
        dest = destinations.reuse_connection((proto, host, port, None))
        uri = req.uri
        nated = proto == "udp" and ((uri.host or "").strip("[]").lower(), uri.port or 5060) != (host.lower(), port)
        return Forward([[Branch(uri, dest, label=f"{proto}:{host}:{port}", nated=nated)]],
                       why=f"relayed by a peer node to the binding it holds here ({received})", account=False,
                       record_route_here=True)

    return deliver_for_peer
