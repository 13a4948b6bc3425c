"""Is this URI us? (OpenSIPS ``check_self``, Kamailio ``myself``)

Two questions, kept apart because an IP address can be both a socket of ours and a local domain:

- ``is_self(state, uri)``: the URI names this server as a SIP hop (a Route, a Record-Route, an
  R-URI for the server itself). Its host is one of our listen addresses (or the advertised
  address), its port is the port of one of our listeners on that host (no port: 5060, or 5061
  for ``sips:`` and ``transport=tls``) and its transport, when the URI names one
  (``transport=`` parameter, ``sips:`` meaning TLS), is that listener's. A URI without a user
  part and without a port at one of our addresses is us on any port: nobody else can be meant.
- ``is_local(state, uri)``: the URI belongs to one of our local domains, so its user is looked
  up in our location table. A domain NAME in the domain list matches on any port (a name is a
  user space, not a socket). An IP address in the domain list matches only when the URI names
  one of our listeners: ``sip:bob@OUR_IP:5112`` is bob's phone (the Contact an in-dialog ACK or
  BYE is sent to), not the AOR ``bob@OUR_IP``. An IP address that is no socket of ours (the
  public address of a NAT in front of the server) matches with the port of any of our listeners.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .resolve import is_numeric

if TYPE_CHECKING:
    from ..state import ServerState


def uri_transport(uri: Any) -> str | None:
    """The transport a URI asks for: its ``transport=`` parameter, TLS for ``sips:``, else None."""
    transport = uri.transport
    if transport is None and uri.scheme == "sips":
        return "tls"
    return transport


def default_port(uri: Any) -> int:
    return 5061 if uri_transport(uri) == "tls" else 5060


class OwnAddresses:
    """Our listen addresses, filled as the daemon binds (``ServerState.myself``).

    ``addresses`` holds (host, port) as written in a Via or a URI (the advertised name too);
    ``sockets`` holds (transport, host without brackets, port).
    """

    __slots__ = ("addresses", "sockets")

    def __init__(self) -> None:
        self.addresses: set[tuple[str, int]] = set()
        self.sockets: set[tuple[str, str, int]] = set()

    def note_listener(self, listener: Any, advertised_address: str = "",
                      shared: tuple[str, int | None] | None = None) -> None:
        """Record a listener as ours: its address, and the advertised address, on its port and
        transport; and ``shared``, the (host, port) all nodes of a cluster write in their
        Record-Route (``[cluster] record_route_host``; no port: the listener's)."""
        for host in {listener.host.lower(), (advertised_address or listener.host).lower()}:
            self.note_socket(listener.proto, host, listener.port)
        if shared is not None:
            self.note_socket(listener.proto, shared[0], listener.port if shared[1] is None else shared[1])

    def note_socket(self, proto: str, host: str, port: int) -> None:
        self.addresses.add((host, port))
        self.sockets.add((proto, host.strip("[]"), port))

    def is_own_host(self, host: str) -> bool:
        """``host`` is one of our addresses (listen or advertised), on whatever port."""
        host = host.strip("[]").lower()
        return any(h.strip("[]") == host for h, _ in self.addresses)


def _matches_socket(sockets: Any, host: str, uri: Any) -> bool:
    transport = uri_transport(uri)
    port = uri.port if uri.port is not None else default_port(uri)
    for proto, h, p in sockets:
        if h == host and p == port and (transport is None or transport == proto):
            return True
    return False


def _ours(sockets: Any, host: str) -> bool:
    return any(h == host for _, h, _ in sockets)


def is_self(state: ServerState, uri: Any) -> bool:
    """True when ``uri`` names this server: host, port and transport of one of our listeners."""
    sockets = state.myself.sockets
    if not sockets or not uri.host:
        return False
    host = uri.host.strip("[]").lower()
    if uri.port is None and not uri.user and _ours(sockets, host):
        return True
    return _matches_socket(sockets, host, uri)


def is_local(state: ServerState, uri: Any) -> bool:
    """True when ``uri`` is in one of our local domains (see the rules at the top)."""
    host = uri.host
    if not host or host not in state.domains:
        return False
    sockets = state.myself.sockets
    if not sockets or not is_numeric(host.strip("[]")):
        return True  # (no listener yet: every address in the domain list is taken as ours)
    host = host.strip("[]").lower()
    if _ours(sockets, host):
        return _matches_socket(sockets, host, uri)
    port = uri.port if uri.port is not None else default_port(uri)
    return any(p == port for _, _, p in sockets)
