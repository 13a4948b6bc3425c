"""The other sipd nodes of this node's cluster, as the ``cluster_node`` table lists them.

No I/O: the heartbeat (services/cluster.py) reads the table on the database thread after each of
its writes and hands the rows to ``ClusterPeers.update``; the rest of the daemon reads this object.

What the daemon does with it:
- A binding that another node owns (``Contact.node_id``: that node holds its TCP/TLS connection
  or NAT pinhole) is reached through that node: the request goes to the owner's address with a
  Route naming where the owner delivers it (``owner_route``), as a Path would (RFC 3327).
- A request from a peer is no stranger's: the peers' addresses are trusted by flood protection and
  the overload gate (the ban tables' ``TrustedNetworks``), the spam policy lets their requests
  through, and only a peer may ask this node to deliver to one of its connections or pinholes.
"""

from __future__ import annotations

from collections.abc import Iterable

#: The URI parameter of a Route to the owner node that says where the owner delivers the request:
#: the binding's source address as the registrar stored it ("tcp:192.0.2.1:5060"). Kamailio's
#: path module names it the same in a Path (``add_path_received``).
RECEIVED_PARAM = "received"


class ClusterPeers:
    """This node's id and the other nodes' addresses (node_id -> "host:port"); see the module."""

    def __init__(self, node_id: str = "") -> None:
        self.node_id = node_id
        self.addresses: dict[str, str] = {}
        self.hosts: frozenset[str] = frozenset()
        self.dead: frozenset[str] = frozenset()

    def update(self, nodes: Iterable[tuple[str, str]], hosts: Iterable[str], dead: Iterable[str] = ()) -> None:
        """The nodes' (node_id, address) rows, the IP addresses the other nodes send from, and the
        nodes whose heartbeat is older than ``[cluster] dead_after``."""
        self.addresses = {node_id: address for node_id, address in nodes if node_id != self.node_id}
        self.hosts = frozenset(h.strip("[]").lower() for h in hosts)
        self.dead = frozenset(dead)

    def unreachable(self, node_id: str | None) -> bool:
        """A binding owned by a dead node: nobody can reach it until its endpoint registers again."""
        return bool(node_id) and node_id in self.dead

    def __contains__(self, host: object) -> bool:
        """Is ``host`` (an IP address, a message's source) one of the other nodes?"""
        return isinstance(host, str) and host.lower() in self.hosts

    def owner_of(self, node_id: str | None) -> str | None:
        """The address of the node that owns a binding, when it is another node and known."""
        if not node_id or node_id == self.node_id:
            return None
        return self.addresses.get(node_id)


def owner_route(address: str, received: str) -> str:
    """The Route to the owner node at ``address`` that has it deliver to ``received``.

    >>> owner_route("127.0.0.2:5060", "tcp:127.0.0.1:40001")
    '<sip:127.0.0.2:5060;lr;received=tcp:127.0.0.1:40001>'

    Every character of ``received`` (a transport, an IP address, IPv6 in brackets, a port) is
    allowed in a URI parameter's value as it stands (RFC 3261 §25.1 ``paramchar``)."""
    return f"<sip:{address};lr;{RECEIVED_PARAM}={received}>"
