"""SIP over TLS (RFC 3261 §26.2, RFC 5922, RFC 5630): listeners and outgoing connections.

TLS is the TCP stream transport of ``stream.py`` with a handshake in front. Theory of operation:

* Accepting: the listening socket is plain TCP. Each accepted socket first gets a tiny
  ``_Handshake`` protocol that pauses reading, checks the number of handshakes in progress
  (``tls.max_pending_handshakes``) and then upgrades with ``loop.start_tls(...,
  ssl_handshake_timeout=tls.handshake_timeout)``. Handshakes run concurrently on the event loop, so
  a peer that stalls (slowloris) costs one pending slot until its timeout and never delays others.
  Only after the handshake does the connection enter the connection table (``Transports.admit``),
  as a ``TlsConnection`` — a ``StreamConnection`` with a send timeout.
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

from .base import BindError, Listener, bind_error_message
from .stream import StreamConnection

if TYPE_CHECKING:
    from ..tlsconf import TlsDomain, TlsManager
    from .manager import Transports

logger = logging.getLogger(__name__)

#: Bytes buffered for a slow reader before the send timeout starts running.
WRITE_HIGH_WATER = 256 * 1024


class TlsConnection(StreamConnection):
    def __init__(self, manager: Transports, domain: TlsDomain, send_timeout: float, *,
                 outbound: tuple[str, int] | None = None):
        super().__init__(manager, "tls", outbound=outbound)
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


class _Handshake(asyncio.Protocol):
    """Accepted TCP socket waiting for its TLS handshake (see the module docstring)."""

    def __init__(self, listener: TlsListener):
        self.listener = listener

    def connection_made(self, transport) -> None:  # type: ignore[override]
        lst = self.listener
        manager = lst.manager
        if not manager.accepting:
            transport.abort()
            return
        if lst.pending >= lst.tls.max_pending_handshakes:
            lst.refused += 1
            if lst.refused == 1 or lst.refused % 1000 == 0:
                logger.warning("tls %s: %d handshakes in progress (tls.max_pending_handshakes); refusing new "
                               "connections (%d so far)", lst.name, lst.pending, lst.refused)
            transport.abort()
            return
        transport.pause_reading()  # the ClientHello waits in the kernel until start_tls takes over
        lst.pending += 1
        task = manager.loop.create_task(lst.upgrade(transport))
        lst.tasks.add(task)
        task.add_done_callback(lst.tasks.discard)

    def data_received(self, data: bytes) -> None:  # pragma: no cover - reading is paused
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class TlsListener(Listener):
    proto = "tls"

    def __init__(self, host: str, port: int, manager: Transports, tls: TlsManager, domain: TlsDomain):
        super().__init__(host, port)
        self.manager = manager
        self.tls = tls
        self.domain = domain
        self.server: asyncio.base_events.Server | None = None
        self.pending = 0
        self.refused = 0
        self.failed = 0
        self.tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def bind(cls, host: str, port: int, manager: Transports, tls: TlsManager) -> TlsListener:
        """Bind ``tls:host:port``. Raises BindError (one line) when it cannot."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        name = f"tls:{'[' + host + ']' if ':' in host else host}:{port}"
        domain = tls.server_domain(name)
        if domain is None or domain.context is None:
            raise BindError(f"cannot listen on {name}: no TLS server domain — see [tls] certificate")
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise BindError(bind_error_message(name, exc)) from None
        self = cls(host, sock.getsockname()[1], manager, tls, domain)
        self.server = await loop.create_server(lambda: _Handshake(self), sock=sock)
        return self

    async def upgrade(self, transport: asyncio.Transport) -> None:
        loop = self.manager.loop
        domain = self.domain
        conn = TlsConnection(self.manager, domain, self.tls.send_timeout)
        peer = transport.get_extra_info("peername") or ("?", 0)
        try:
            tls_transport = await loop.start_tls(transport, conn, domain.context, server_side=True,  # type: ignore[arg-type]
                                                 ssl_handshake_timeout=self.tls.handshake_timeout)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
            self.failed += 1
            logger.info("tls %s: handshake with %s:%s failed: %s", self.name, peer[0], peer[1], str(exc) or type(exc).__name__)
            transport.abort()
            return
        finally:
            self.pending -= 1
        if tls_transport is None:  # peer went away between handshake and now
            return
        conn.connection_made(tls_transport)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()


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
