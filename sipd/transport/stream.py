"""SIP over TCP (and under TLS, see ``tls.py``): connections, framing, the connection table.

Each connection feeds the core's ``StreamParser`` (Content-Length framing, RFC 3261 §18.3), hands
each whole message to the sink as bytes (``stream_received``: routed by its bytes to the process
that serves it, which alone parses it) and answers CRLF keep-alive pings with CRLF (RFC 5626 §3.5.1). Connections are kept in one table keyed
by id and by (proto, host, port) of the peer, so replies and requests to an endpoint that registered
over TCP go back over its connection. Limits: total connections, connections per source IP, idle
timeout (closed by ``Transports.sweep``).

With worker processes (``[server] workers``) every process serves connections: main alone listens
and accepts, and hands most accepted sockets to a worker (``Transports.handover``, as Kamailio's
tcp_main passes a socket to a tcp_receiver); each connection then has exactly one owner, named by
its id (:func:`conn_owner`), and a message for a connection of another process goes to its owner.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import TYPE_CHECKING

from ..boundary import caught
from .base import BindError, Listener, bind_error_message

if TYPE_CHECKING:
    from .manager import Transports

logger = logging.getLogger(__name__)

#: A connection whose peer stops reading may not buffer more than this before it is closed.
MAX_WRITE_BUFFER = 4 * 1024 * 1024

#: A connection id is ``sequence * CONN_OWNERS + the owner's process index``: whoever holds an id
#: (a contact, a transaction's source) knows which process can write on that connection. More than
#: ``[server] workers`` can ask for (64).
CONN_OWNERS = 256

#: Bytes one read may take from a connection. The buffer is the process's (``Transports.receive``),
#: not each connection's: the loop fills it and calls ``buffer_updated`` at once, which copies the
#: bytes out, so an idle connection holds no receive buffer.
RECEIVE_BUFFER = 64 * 1024


def conn_owner(conn_id: int) -> int:
    """The index of the process that owns connection ``conn_id`` (0: main)."""
    return conn_id % CONN_OWNERS


class StreamConnection(asyncio.BufferedProtocol):
    """One TCP/TLS connection. A buffered protocol: under TLS the loop then decrypts straight into
    the shared receive buffer, where for a plain protocol uvloop and asyncio allocate a 256 KiB
    bytes object for every SSL read (twice per message received: about 20 µs of a CRLF ping's 30)."""

    def __init__(self, manager: Transports, proto: str, *, outbound: tuple[str, int] | None = None):
        from ..sip.framing import StreamParser

        self.manager = manager
        self.proto = proto
        self.conn_id = manager.new_conn_id()
        self.parser = StreamParser()
        self.transport: asyncio.Transport | None = None
        self.host, self.port = outbound if outbound else ("", 0)
        self.last_activity = 0.0
        self.pending: list[bytes] = []
        self.closed = False
        self.outbound = outbound is not None
        self.handed: str | None = None  # accepted by main and handed here: the source main counts it under
        self.addr: tuple = (proto, self.host, self.port, self.conn_id)

    # asyncio callbacks ------------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        self.host, self.port = peer[0], peer[1]
        self.addr = (self.proto, self.host, self.port, self.conn_id)
        self.last_activity = self.manager.loop.time()
        if not self.manager.admit(self):
            transport.abort()
            self.closed = True
            return
        if self.pending:
            for chunk in self.pending:
                transport.write(chunk)
            self.pending.clear()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.manager.receive

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self.manager.receive[:nbytes]))

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.manager.loop.time()
        try:
            messages = self.parser.frames(data)
        except Exception as exc:  # RemoteProtocolError: framing is lost, the connection must go
            self.manager.sink.stream_rejected(self.addr, exc)
            self.close()
            return
        while self.parser.pop_keepalive():
            self.write(b"\r\n")
        sink = self.manager.sink
        for raw in messages:  # framed, not parsed: the process that serves a message parses it
            try:
                sink.stream_received(raw, self.addr)
            except Exception as exc:  # noqa: BLE001 - one message must not stop the connection
                caught(sink, "stream_receive", exc, self.addr, f"handling a {self.proto} message")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.manager.forget(self)
        if self.handed is not None:
            self.manager.released(self)

    # sending ----------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if self.transport is None:
            self.pending.append(data)
            return
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            logger.warning("%s %s:%s does not read; closing", self.proto, self.host, self.port)
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


def listening_socket(proto: str, host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A bound, listening, non-blocking stream socket (TCP or TLS). Raises BindError (one line)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    name = f"{proto}:{'[' + host + ']' if ':' in host else host}:{port}"
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BindError(bind_error_message(name, exc)) from None
    return sock


class StreamListener(Listener):
    """A TCP listener (TLS: ``tls.TlsListener``). It accepts from its socket itself
    (``loop.add_reader``), so that each accepted socket can be refused, handed to another process
    or served here (:meth:`take`). In a worker process it has no socket (``sock`` None): it names
    main's listener (Via, Record-Route) and takes the sockets main hands over."""

    #: Connections taken from the kernel's accept queue per wake-up (fairness with other work).
    ACCEPT_BATCH = 64

    def __init__(self, proto: str, host: str, port: int, manager: Transports, sock: socket.socket | None = None):
        self.proto = proto
        super().__init__(host, port)
        self.manager = manager
        self.sock = sock
        self.accepted = 0  # sockets served by this process
        self.tasks: set[asyncio.Task[None]] = set()
        if sock is not None:
            manager.loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    async def bind(cls, proto: str, host: str, port: int, manager: Transports) -> StreamListener:
        sock = listening_socket(proto, host, port)
        return cls(proto, host, sock.getsockname()[1], manager, sock)

    def _on_readable(self) -> None:
        """Accept what the kernel has queued (bounded): each socket is refused (limits, bans),
        handed to a worker process, or served here."""
        if self.sock is None:
            return
        manager = self.manager
        for _ in range(self.ACCEPT_BATCH):
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: the connection stays queued in the kernel;
                # stop watching for a second (level-triggered readiness would spin), as asyncio does
                logger.warning("%s: accept failed: %s; retrying in 1 s", self.name, exc)
                manager.loop.remove_reader(self.sock.fileno())
                manager.loop.call_later(1.0, self._resume_accepting)
                return
            try:
                handover = manager.handover
                if not manager.accepting or (handover is not None and not manager.inbound_allowed(self.proto, peer[0])):
                    abort(conn)  # (one process alone checks the limits once the connection is up: admit)
                    continue
                conn.setblocking(False)
                if handover is not None and handover(conn, peer, self):
                    continue  # a worker serves it
                self.take(conn)
            except Exception as exc:  # noqa: BLE001 - one socket must not stop the listener
                abort(conn)
                caught(manager.sink, "accept", exc, (self.proto, peer[0], peer[1], None), "accepting a connection")

    def _resume_accepting(self) -> None:
        if self.sock is not None:
            self.manager.loop.add_reader(self.sock.fileno(), self._on_readable)

    def take(self, sock: socket.socket, handed: str | None = None) -> None:
        """Serve an accepted socket in this process (``handed``: main accepted it, and counts it
        under this source address until this process releases it)."""
        self.accepted += 1
        conn = StreamConnection(self.manager, self.proto)
        conn.handed = handed
        task = self.manager.loop.create_task(self._open(conn, sock, handed))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _open(self, conn: StreamConnection, sock: socket.socket, handed: str | None) -> None:
        try:
            await self.manager.loop.connect_accepted_socket(lambda: conn, sock)
        except OSError as exc:  # the peer left before the transport was made
            logger.debug("%s: accepted connection lost at once: %s", self.name, exc)
            sock.close()
            if handed is not None:
                self.manager.released(conn)

    def stop(self) -> None:
        """Accept no more connections (the socket stays bound until :meth:`close`)."""
        if self.sock is not None:
            try:
                self.manager.loop.remove_reader(self.sock.fileno())
            except (ValueError, RuntimeError):  # loop already closed
                pass

    def close(self) -> None:
        self.stop()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        for task in list(self.tasks):
            task.cancel()


def abort(sock: socket.socket) -> None:
    """Close with RST: a refused peer learns at once, and no TIME_WAIT is left here."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
