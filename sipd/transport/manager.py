"""All listeners and connections of one server, and the single ``send(data, dest)`` entry point.

With worker processes each process has its own ``Transports``: its connections (ids that name it,
``stream.conn_owner``), and hooks the worker machinery sets (sipd/daemon/workers/): ``handover``
(main: give an accepted socket to a worker), ``elsewhere`` (send on a connection another process
owns, or to a peer this process has no connection to), ``on_connection`` (a worker tells main of its
connections), ``remote`` (main: every worker's connection by peer, for reuse).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable

from ..boundary import caught
from .base import Address, Listener, Sink
from .stream import CONN_OWNERS, RECEIVE_BUFFER, StreamConnection, StreamListener, conn_owner
from .udp import UdpListener

if TYPE_CHECKING:
    from ..config import LimitsSection, ListenAddress

logger = logging.getLogger(__name__)


class Transports:
    """Listeners + the connection table. TLS, listening and connecting, goes through ``tls`` (the
    daemon's ``TlsManager``); without one a TLS listener is refused at bind."""

    def __init__(self, sink: Sink, limits: LimitsSection, *, tls=None):
        self.sink = sink
        self.limits = limits
        self.loop = asyncio.get_event_loop()
        self.listeners: list[Listener] = []
        self.udp4: UdpListener | None = None
        self.udp6: UdpListener | None = None
        self.conns: dict[int, StreamConnection] = {}
        self.receive = memoryview(bytearray(RECEIVE_BUFFER))  # every connection's reads (stream.py)
        self.by_peer: dict[tuple[str, str, int], StreamConnection] = {}
        self.per_source: Counter[str] = Counter()
        self.tls = tls  # sipd.tlsconf.TlsManager: TLS domains, listeners and outgoing TLS (transport/tls.py)
        self.accepting = True
        self.udp_readers = 1  # [server] workers: UDP listeners become SO_REUSEPORT groups of this size
        self._tasks: set[asyncio.Task] = set()
        self.index = 0  # this process among main and its workers: in every connection id it makes
        self._seq = itertools.count(1)
        #: main: (socket, peer, listener) -> True when a worker process got the accepted socket
        self.handover: Callable[[socket.socket, tuple, Any], bool] | None = None
        #: (data, dest) -> None: ``dest`` is a connection of another process, or a peer this one has
        #: no connection to and must not open one to itself (a worker asks main)
        self.elsewhere: Callable[[bytes, Address], None] | None = None
        #: (event, conn) -> None: "up", "down", "released" (a socket main handed over is done with)
        self.on_connection: Callable[[str, StreamConnection], None] | None = None
        #: main: the workers' connections by peer -> connection id, and inbound ones per source
        self.remote: dict[tuple[str, str, int], int] = {}
        self.remote_ids: dict[int, tuple[str, str, int]] = {}
        self.remote_per_source: Counter[str] = Counter()
        self.remote_count = 0

    def new_conn_id(self) -> int:
        """A connection id that names this process as its owner (``stream.conn_owner``)."""
        return next(self._seq) * CONN_OWNERS + self.index

    # -- lifecycle --------------------------------------------------------------------------------

    async def bind(self, addr: ListenAddress) -> Listener:
        """Bind one listener. Raises BindError with an operator-readable line."""
        listener: Listener
        if addr.proto == "udp":
            listener = await UdpListener.bind(addr.host, addr.port, self.sink, readers=self.udp_readers)
            if listener.family6:
                self.udp6 = self.udp6 or listener  # type: ignore[assignment]
            else:
                self.udp4 = self.udp4 or listener  # type: ignore[assignment]
        elif addr.proto == "tls" and self.tls is not None:
            from .tls import TlsListener

            listener = await TlsListener.bind(addr.host, addr.port, self, self.tls)
        elif addr.proto == "tls":
            from .base import BindError

            raise BindError(f"cannot listen on {addr}: TLS is not configured — see [tls]")
        else:
            listener = await StreamListener.bind(addr.proto, addr.host, addr.port, self)
        self.listeners.append(listener)
        return listener

    def stop_accepting(self) -> None:
        self.accepting = False
        for lst in self.listeners:
            if isinstance(lst, StreamListener):
                lst.stop()

    def close(self) -> None:
        for conn in list(self.conns.values()):
            conn.close()
        for lst in self.listeners:
            lst.close()
        self.listeners.clear()

    # -- the connection table ---------------------------------------------------------------------

    def inbound_allowed(self, proto: str, host: str) -> bool:
        """Whether a connection from ``host`` may be accepted: the ban table and the limits, counted
        over every process (main counts the connections it handed to workers until they say
        they are gone)."""
        total = len(self.conns) + self.remote_count
        if total >= self.limits.tcp_max_connections:
            logger.warning("%s connection from %s refused: %d connections open (limits.tcp_max_connections)",
                           proto, host, total)
            return False
        allowed = getattr(self.sink, "connection_allowed", None)
        if allowed is not None and not allowed(host):
            return False
        if self.per_source[host] + self.remote_per_source[host] >= self.limits.tcp_max_per_source:
            logger.warning("%s connection from %s refused: too many from this address (limits.tcp_max_per_source)",
                           proto, host)
            return False
        return True

    def admit(self, conn: StreamConnection) -> bool:
        """Called when a connection is up; False refuses it (limits). One main handed over was
        counted by main when it accepted it."""
        if not conn.outbound:
            if not self.accepting:
                return False
            if conn.handed is None and not self.inbound_allowed(conn.proto, conn.host):
                return False
        self.conns[conn.conn_id] = conn
        self.by_peer[(conn.proto, conn.host, conn.port)] = conn
        self.per_source[conn.host] += 1
        if self.on_connection is not None:
            self.on_connection("up", conn)
        return True

    def forget(self, conn: StreamConnection) -> None:
        if self.conns.pop(conn.conn_id, None) is None:
            return
        key = (conn.proto, conn.host, conn.port)
        if self.by_peer.get(key) is conn:
            del self.by_peer[key]
        self.per_source[conn.host] -= 1
        if self.per_source[conn.host] <= 0:
            del self.per_source[conn.host]
        if self.on_connection is not None:
            self.on_connection("down", conn)

    def released(self, conn: StreamConnection) -> None:
        """A socket main handed to this process is done with (closed, or never up): main no
        longer counts it under ``conn.handed``."""
        if self.on_connection is not None:
            self.on_connection("released", conn)

    def handed_out(self, host: str) -> None:
        """Main gave a socket from ``host`` to a worker: it counts against the limits until the
        worker releases it (:meth:`handed_back`)."""
        self.remote_per_source[host] += 1
        self.remote_count += 1

    def handed_back(self, host: str) -> None:
        if self.remote_per_source[host] > 0:
            self.remote_per_source[host] -= 1
            self.remote_count -= 1
            if not self.remote_per_source[host]:
                del self.remote_per_source[host]

    def connection(self, conn_id: int | None) -> StreamConnection | None:
        return self.conns.get(conn_id) if conn_id is not None else None

    def counts(self) -> dict[str, int]:
        """This process's open connections per transport."""
        return dict(Counter(c.proto for c in self.conns.values()))

    def alive(self, conn_id: int) -> bool:
        """Whether connection ``conn_id`` is open: this process's own, a worker's as main knows it
        (``remote_ids``), or, in a worker, any other process's (its owner knows; a message for a
        closed one is sent to the peer's address instead)."""
        if conn_id in self.conns:
            return not self.conns[conn_id].closed
        if conn_owner(conn_id) == self.index:
            return False
        return conn_id in self.remote_ids if self.index == 0 else True

    def sweep(self, now: float) -> int:
        """Close connections idle longer than limits.tcp_idle_timeout; returns how many."""
        limit = now - self.limits.tcp_idle_timeout
        idle = [c for c in self.conns.values() if c.last_activity < limit]
        for c in idle:
            logger.debug("closing idle %s connection to %s:%s", c.proto, c.host, c.port)
            c.close()
        return len(idle)

    # -- sending ----------------------------------------------------------------------------------

    def send(self, data: bytes, dest: Address, here: bool = False) -> None:
        """Send, or drop what cannot be sent: an error here ends one message, never the caller.
        ``here``: another process gave this message to this one to send; it is sent from here
        (on a new connection if need be), never passed on again."""
        try:
            self._send(data, dest, here)
        except Exception as exc:  # noqa: BLE001 - OSError, or a bug: counted and logged once
            caught(self.sink, "send", exc, dest, "sending")

    def _send(self, data: bytes, dest: Address, here: bool = False) -> None:
        proto, host, port = dest[0], dest[1], dest[2]
        if proto == "udp":
            lst = self.udp6 if ":" in host else self.udp4
            if lst is None:
                lst = self.udp4 or self.udp6
                if lst is None:
                    logger.warning("cannot send to udp:%s:%s: no UDP listener", host, port)
                    return
            if not udp_destination_ok(host, port, lst.family6):
                # the parser keeps ports in range and Via received to IP literals; what is left
                # (a host name in a Via sent-by, an IPv6 peer with only an IPv4 listener) has no
                # datagram route: dropped as a lost response would be
                logger.debug("not sending to udp:%s:%s: no route for that address", host, port)
                return
            lst.sendto(data, host, port)
            return
        conn_id = dest[3] if len(dest) > 3 else None
        elsewhere = None if here else self.elsewhere
        if conn_id is not None and elsewhere is not None and conn_owner(conn_id) != self.index:
            elsewhere(data, dest)  # another process's connection: its owner writes on it
            return
        conn = self.conns.get(conn_id) if conn_id is not None else None
        if conn is None or conn.closed:
            conn = self.by_peer.get((proto, host, port))
        if conn is None or conn.closed:
            remote = self.remote.get((proto, host, port))
            if elsewhere is not None and (remote is not None or self.index != 0):
                # main: a worker has a connection to that peer; a worker: main finds one or opens it
                elsewhere(data, (proto, host, port, remote))
                return
            conn = self._connect(proto, host, port)
        conn.write(data)

    def _connect(self, proto: str, host: str, port: int) -> StreamConnection:
        if proto == "tls" and self.tls is not None:
            from .tls import connect

            return connect(self, self.tls, host, port)
        conn = StreamConnection(self, proto, outbound=(host, port))
        self.by_peer[(proto, host, port)] = conn  # queued writes go to this one until it is up

        async def connect() -> None:
            try:
                await self.loop.create_connection(lambda: conn, host, port)
            except OSError as exc:
                logger.info("%s connection to %s:%s failed: %s", proto, host, port, exc)
                conn.closed = True
                if self.by_peer.get((proto, host, port)) is conn:
                    del self.by_peer[(proto, host, port)]
                on_fail = getattr(self.sink, "connect_failed", None)
                if on_fail is not None:
                    on_fail((proto, host, port, None))

        task = self.loop.create_task(connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return conn


def udp_destination_ok(host: str, port: object, family6: bool) -> bool:
    """A datagram can go to ``host:port`` from a socket of that family: an IP literal (no DNS
    lookup on the loop) and a port 1-65535."""
    if not isinstance(port, int) or not 0 < port <= 65535:
        return False
    try:
        socket.inet_pton(socket.AF_INET6 if family6 else socket.AF_INET, host)
    except (OSError, ValueError, TypeError):
        return False
    return True
