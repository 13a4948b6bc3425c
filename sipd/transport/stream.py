"""SIP over TCP (and under TLS, see ``tls.py``): connections, framing, the connection table.

Each connection feeds the core's ``StreamParser`` (Content-Length framing, RFC 3261 §18.3) and
answers CRLF keep-alive pings with CRLF (RFC 5626 §3.5.1). Connections are kept in one table keyed
by id and by (proto, host, port) of the peer, so replies and requests to an endpoint that registered
over TCP go back over its connection. Limits: total connections, connections per source IP, idle
timeout (closed by ``Transports.sweep``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from typing import TYPE_CHECKING

from .base import BindError, Listener, bind_error_message

if TYPE_CHECKING:
    from .manager import Transports

logger = logging.getLogger(__name__)

#: A connection whose peer stops reading may not buffer more than this before it is closed.
MAX_WRITE_BUFFER = 4 * 1024 * 1024

_ids = itertools.count(1)


class StreamConnection(asyncio.Protocol):
    def __init__(self, manager: Transports, proto: str, *, outbound: tuple[str, int] | None = None):
        from ..sip.framing import StreamParser

        self.manager = manager
        self.proto = proto
        self.conn_id = next(_ids)
        self.parser = StreamParser()
        self.transport: asyncio.Transport | None = None
        self.host, self.port = outbound if outbound else ("", 0)
        self.last_activity = 0.0
        self.pending: list[bytes] = []
        self.closed = False
        self.outbound = outbound is not None
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

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.manager.loop.time()
        try:
            messages = self.parser.feed(data)
        except Exception as exc:  # RemoteProtocolError: framing is lost, the connection must go
            self.manager.sink.stream_rejected(self.addr, exc)
            self.close()
            return
        while self.parser.pop_keepalive():
            self.write(b"\r\n")
        sink = self.manager.sink
        for msg in messages:
            try:
                sink.message_received(msg, self.addr)
            except Exception as exc:  # noqa: BLE001 - one message must not stop the connection
                caught(sink, "stream_receive", exc, self.addr, f"handling a {self.proto} message")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.manager.forget(self)

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
    def __init__(self, proto: str, host: str, port: int, server: asyncio.base_events.Server):
        self.proto = proto
        super().__init__(host, port)
        self.server = server

    @classmethod
    async def bind(cls, proto: str, host: str, port: int, manager: Transports) -> StreamListener:
        loop = asyncio.get_running_loop()
        sock = listening_socket(proto, host, port)
        port = sock.getsockname()[1]
        server = await loop.create_server(lambda: StreamConnection(manager, proto), sock=sock)
        return cls(proto, host, port, server)

    def close(self) -> None:
        self.server.close()
