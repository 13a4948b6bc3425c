"""SIP over TLS (RFC 3261 §26.2, RFC 5922, RFC 5630): listeners and outgoing connections.

TLS is the TCP stream transport of ``stream.py`` with a handshake in front. Theory of operation:

* Accepting: the listener accepts from its socket itself (``loop.add_reader``, the TCP listener's
  loop in ``stream.py``), so it can count the handshakes in progress and refuse (RST) a connection
  beyond ``tls.max_pending_handshakes`` before any TLS state is allocated; with worker processes
  main hands most accepted sockets to a worker, which runs the handshake (and counts its own).
  Each socket served is handed to ``loop.connect_accepted_socket(...,
  ssl=<the domain's current context>, ssl_handshake_timeout=tls.handshake_timeout)`` — public API
  that behaves the same on asyncio and uvloop (``start_tls`` on an accepted transport does not work
  on uvloop). Handshakes run concurrently on the event loop, so a peer that stalls (slowloris) costs
  one pending slot until its timeout and never delays others. Only after the handshake does the
  connection enter the connection table (``Transports.admit``), as a ``TlsConnection`` — a
  ``StreamConnection`` with a send timeout. Taking ``domain.context`` per connection is what makes
  hot reload work: new connections get the new certificate, existing ones keep theirs.
* Connecting: ``connect()`` opens TCP + TLS with the client domain chosen for the destination, then
  checks the server's identity per RFC 5922 (``TlsManager.check_peer``) before any byte is sent.
* Send timeout: when the peer stops reading and our buffer passes the high-water mark, asyncio calls
  ``pause_writing``; if ``resume_writing`` does not follow within ``tls.send_timeout`` the
  connection is closed (queued SIP messages would be stale anyway).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import TYPE_CHECKING, Any

from .base import BindError
from .stream import StreamConnection, StreamListener, abort, listening_socket

if TYPE_CHECKING:
    from ..tlsconf import TlsDomain, TlsManager
    from .manager import Transports

logger = logging.getLogger(__name__)

#: Bytes buffered for a slow reader before the send timeout starts running.
WRITE_HIGH_WATER = 256 * 1024


class TlsConnection(StreamConnection):
    def __init__(self, manager: Transports, domain: TlsDomain, send_timeout: float, *,
                 outbound: tuple[str, int] | None = None, handed: str | None = None):
        super().__init__(manager, "tls", outbound=outbound)
        self.handed = handed
        self.domain = domain
        self.send_timeout = send_timeout
        self._send_timer: asyncio.TimerHandle | None = None
        self.peercert: dict | None = None  # type: ignore[type-arg]
        self.version: str | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.peercert = transport.get_extra_info("peercert")
        obj = transport.get_extra_info("ssl_object")
        self.version = obj.version() if obj is not None else None
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        super().connection_made(transport)

    def pause_writing(self) -> None:
        if self._send_timer is None:
            self._send_timer = self.manager.loop.call_later(self.send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timed_out(self) -> None:
        self._send_timer = None
        logger.warning("tls %s:%s has not read for %.1f s (tls.send_timeout); closing", self.host, self.port, self.send_timeout)
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.resume_writing()
        super().connection_lost(exc)


class TlsListener(StreamListener):
    """A TLS listener: the TCP listener's accept loop (``stream.StreamListener``), then a
    handshake with the listener's domain for each socket it serves (accepted here or handed over by
    main), at most ``tls.max_pending_handshakes`` at once in this process."""

    def __init__(self, host: str, port: int, manager: Transports, tls: TlsManager, domain: TlsDomain,
                 sock: socket.socket | None = None):
        self.tls = tls
        self.domain = domain
        self.pending = 0
        self.refused = 0
        self.failed = 0
        super().__init__("tls", host, port, manager, sock)

    @classmethod
    async def bind(cls, host: str, port: int, manager: Transports, tls: TlsManager) -> TlsListener:  # type: ignore[override]
        """Bind ``tls:host:port``. Raises BindError (one line) when it cannot."""
        name = f"tls:{'[' + host + ']' if ':' in host else host}:{port}"
        domain = tls.server_domain(name)
        if domain is None or domain.context is None:
            raise BindError(f"cannot listen on {name}: no TLS server domain — see [tls] certificate")
        sock = listening_socket("tls", host, port)
        return cls(host, sock.getsockname()[1], manager, tls, domain, sock)

    def take(self, sock: socket.socket, handed: str | None = None) -> None:
        """Start the handshake, or refuse (RST) beyond the pending-handshake cap before any TLS
        state is allocated."""
        if not self.manager.accepting or self.pending >= self.tls.max_pending_handshakes:
            if self.manager.accepting:
                self.refused += 1
                if self.refused == 1 or self.refused % 1000 == 0:
                    logger.warning("tls %s: %d handshakes in progress (tls.max_pending_handshakes); refusing new "
                                   "connections (%d so far)", self.name, self.pending, self.refused)
            abort(sock)
            if handed is not None:
                self.manager.released(TlsConnection(self.manager, self.domain, 0, handed=handed))
            return
        self.pending += 1
        self.accepted += 1
        task = self.manager.loop.create_task(self._handshake(sock, handed))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handshake(self, sock: socket.socket, handed: str | None) -> None:
        # The domain's *current* context: a reload (tlsconf.TlsManager.reload) applies to the next
        # connection, and connections already up keep the certificate they negotiated with.
        domain = self.domain
        conn = TlsConnection(self.manager, domain, self.tls.send_timeout, handed=handed)
        try:
            peer = sock.getpeername()
        except OSError:
            peer = ("?", 0)
        try:
            # The TLS protocol calls conn.connection_made once the handshake has completed; it
            # enters the connection table (Transports.admit) only then.
            await self.manager.loop.connect_accepted_socket(lambda: conn, sock, ssl=domain.context,  # type: ignore[arg-type]
                                                           ssl_handshake_timeout=self.tls.handshake_timeout)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
            self.failed += 1
            logger.info("tls %s: handshake with %s:%s failed: %s", self.name, peer[0], peer[1],
                        str(exc) or type(exc).__name__)
            # the socket belongs to the loop's transport now, which closes it (uvloop detaches it
            # only once libuv has closed the handle: closing it here could close a reused fd)
            if handed is not None:
                self.manager.released(conn)
        finally:
            self.pending -= 1


def connect(manager: Transports, tls: TlsManager, host: str, port: int) -> StreamConnection:
    """Open a TLS connection to host:port with its client domain; writes queue until it is up.

    The server's certificate is verified (chain by OpenSSL, identity per RFC 5922 here) when the
    client domain has ``verify_cert``; a failure closes the connection before anything is sent and
    reports ``sink.connect_failed(addr)``.
    """
    domain = tls.client_domain(host, port)
    conn = TlsConnection(manager, domain, tls.send_timeout, outbound=(host, port))
    key = ("tls", host, port)
    manager.by_peer[key] = conn  # queued writes go to this one until it is up
    loop = manager.loop

    def failed(reason: Any) -> None:
        logger.info("tls connection to %s:%s failed: %s", host, port, reason)
        conn.closed = True
        conn.pending.clear()
        if manager.by_peer.get(key) is conn:
            del manager.by_peer[key]
        on_fail = getattr(manager.sink, "connect_failed", None)
        if on_fail is not None:
            on_fail(("tls", host, port, None))

    class _Checked(asyncio.Protocol):
        """Delays ``connection_made`` of the real connection until the identity check passed."""

        def connection_made(self, transport) -> None:  # type: ignore[override]
            problem = tls.check_peer(domain, transport.get_extra_info("peercert"), host)
            if problem:
                transport.abort()
                failed(problem)
                return
            transport.set_protocol(conn)
            conn.connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            if conn.transport is None:
                failed(exc or "closed")

    async def run() -> None:
        sni = domain.server_name or host
        try:
            await loop.create_connection(_Checked, host, port, ssl=domain.context,
                                         server_hostname=sni, ssl_handshake_timeout=tls.handshake_timeout)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
            failed(exc)

    task = loop.create_task(run())
    _outbound_tasks.add(task)
    task.add_done_callback(_outbound_tasks.discard)
    return conn


_outbound_tasks: set[asyncio.Task[None]] = set()
