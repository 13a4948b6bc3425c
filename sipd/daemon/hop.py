"""Our hop: which of our listeners a message uses, the marks we put on a request we send (Via,
Record-Route), and where a request or a response goes (the ports ``Listeners``, ``Hop`` and
``Destinations`` of sipd/services/ports.py, which the proxy, presence, accounting, NAT pings and
the pipeline's stages call)."""

from __future__ import annotations

import itertools
from typing import Any

from ..boundary import describe
from ..services.cluster import shared_host
from ..services.nat import parse_received
from ..services.nat_detect import is_nated
from ..services.peers import ClusterPeers, owner_route
from ..services.pipeline import Branch, dest_of
from ..sip.headers import parse_name_addr, split_commas
from ..sip.uri import format_host, parse_uri


class OurHop:
    """Set up by the app: ``transports`` once bound, ``resolver``, and ``routing`` (whether this
    process can reach a registered contact)."""

    def __init__(self, config: Any, myself: Any, mark: str, branch_seq: itertools.count, routing: Any,
                 peers: ClusterPeers | None = None):
        self.config = config
        self.peers = peers or ClusterPeers()  # the other nodes of a cluster (services/peers.py)
        self.self_addresses = myself.addresses  # (host, port) as written in a Via or a URI
        self.mark = mark
        self._branch_seq = branch_seq
        self.routing = routing
        self.transports: Any = None
        self.resolver: Any = None
        self._socket_names: dict[tuple, str] = {}
        self.shared = shared_host(config.cluster)  # [cluster] record_route_host

    # -- Listeners --

    def transports_available(self) -> tuple[str, ...]:
        return tuple(sorted({lst.proto for lst in self.transports.listeners}))

    def listener_for(self, addr: tuple) -> Any:
        proto = addr[0]
        v6 = ":" in addr[1]
        best = None
        for lst in self.transports.listeners:
            if lst.proto == proto and lst.family6 == v6:
                return lst
            if lst.proto == proto and best is None:
                best = lst
        return best or (self.transports.listeners[0] if self.transports.listeners else None)

    def local_socket_name(self, source: tuple) -> str:
        key = (source[0], ":" in source[1], len(self.transports.listeners))
        name = self._socket_names.get(key)
        if name is None:  # one shared string per listener (stored in every contact)
            lst = self.listener_for(source)
            name = self._socket_names[key] = lst.name if lst is not None else ""
        return name

    def advertised_host(self, listener: Any) -> str:
        host = self.config.server.advertised_address or listener.host
        return host if host.startswith("[") else format_host(host)

    # -- Hop --

    def record_route_value(self, listener: Any, *, here: bool = False) -> str:
        transport = "" if listener.proto == "udp" else f";transport={listener.proto}"
        shared = self.shared
        if shared is not None and not here:  # a host every node of the cluster answers to (docs/several-nodes.md)
            host, port = shared
            return f"<sip:{host}{'' if port is None else f':{port}'}{transport};lr>"
        return f"<sip:{self.advertised_host(listener)}:{listener.port}{transport};lr>"

    def add_via(self, req: Any, listener: Any, loop_hash: str) -> None:
        branch = f"z9hG4bK{loop_hash}.{self.mark}{next(self._branch_seq)}"
        rport = ";rport" if listener.proto == "udp" else ""
        req.prepend("Via", f"SIP/2.0/{listener.proto.upper()} {self.advertised_host(listener)}:{listener.port};branch={branch}{rport}")

    def has_own_via(self, req: Any, loop_hash: str) -> bool:
        prefix = f"z9hG4bK{loop_hash}."
        for via in req.vias:
            if (via.host.lower(), via.port or 5060) in self.self_addresses:
                branch = via.branch or ""
                if branch.startswith(prefix):
                    return True
        return False

    # -- Destinations --

    def via_destination(self, response: Any, source: tuple | None) -> tuple | None:
        """Where a response goes: the top Via (received/rport, RFC 3581), or the request's source."""
        try:
            via = response.vias[0]
        except Exception:  # noqa: BLE001
            return source
        host, port = via.response_address()
        if host in ("255.255.255.255", "0.0.0.0") or host.startswith("224."):
            return None  # never answer to broadcast/multicast (RFC 4475 §3.3.10)
        proto = via.transport.lower()
        if source is not None and source[0] == proto and source[1] == host:
            return source
        return self.reuse_connection((proto, host, port, None))

    def reuse_connection(self, dest: tuple) -> tuple:
        if dest[0] == "udp":
            return dest
        key = (dest[0], dest[1], dest[2])
        conn = self.transports.by_peer.get(key)
        if conn is not None and not conn.closed:
            return (*key, conn.conn_id)
        remote = self.transports.remote.get(key)  # main: a worker's connection to that peer
        return (*key, remote) if remote is not None else dest

    def dest_from_uri(self, uri: Any) -> tuple | None:
        dest = dest_of(uri)
        return self.reuse_connection(dest) if dest is not None else None

    def connection_alive(self, conn_id: Any) -> bool:
        return conn_id is not None and self.transports.alive(conn_id)

    async def resolve(self, uri: Any) -> list[Any]:
        return await self.resolver.resolve(uri, transports=self.transports_available())

    def branch_for_contact(self, c: Any) -> Branch:
        if not self.routing.reachable(c):
            return Branch(c.uri, None, label=c.uri)  # registered over a connection of another process
        uri = parse_uri(c.uri)
        routes = split_commas(c.path) if c.path else []
        dest: tuple | None = None
        nated = False
        owner = self.peers.owner_of(c.node_id) if c.received else None
        if owner is not None:
            # another node holds its connection or NAT pinhole: through that node, as a Path would
            routes = [owner_route(owner, c.received)]
            dest = self.dest_from_uri(parse_name_addr(routes[0]).uri)
            return Branch(uri, dest, routes, label=f"node {c.node_id} for {c.received}")
        if routes:
            dest = self.dest_from_uri(parse_name_addr(routes[0]).uri)
        elif c.conn_id is not None and self.transports.connection(c.conn_id) is not None:
            conn = self.transports.connection(c.conn_id)
            dest = (conn.proto, conn.host, conn.port, conn.conn_id)  # type: ignore[union-attr]
        elif (c.conn_id is not None and self.transports.alive(c.conn_id)
              and (flow := parse_received(c.received)) is not None):
            dest = (*flow, c.conn_id)  # the connection of another process: its owner sends on it
        elif (c.received and c.received.startswith("udp:") and self.config.nat.enabled and is_nated(c)
              and (pinhole := parse_received(c.received)) is not None):
            dest = (*pinhole, None)
            nated = ((uri.host or "").strip("[]").lower(), uri.port or 5060) != (dest[1].lower(), dest[2])
        else:
            dest = self.dest_from_uri(uri)
        return Branch(uri, dest, routes, label=describe(dest) if dest else c.uri, nated=nated)
