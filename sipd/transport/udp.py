"""SIP over UDP: one datagram in, one call to the sink. No parsing here (RFC 3261 §18)."""

from __future__ import annotations

import asyncio
import logging
import socket

from .base import BindError, Listener, Sink, bind_error_message

logger = logging.getLogger(__name__)

#: Kernel buffers: a burst of REGISTERs from thousands of endpoints must not be dropped by the
#: kernel while the loop is busy (Kamailio raises SO_RCVBUF the same way).
RCVBUF = 4 * 1024 * 1024


class UdpListener(Listener, asyncio.DatagramProtocol):
    proto = "udp"

    def __init__(self, host: str, port: int, sink: Sink):
        Listener.__init__(self, host, port)
        self.sink = sink
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def bind(cls, host: str, port: int, sink: Sink) -> UdpListener:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RCVBUF)
            except OSError:
                pass
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise BindError(bind_error_message(f"udp:{'[' + host + ']' if ':' in host else host}:{port}", exc)) from None
        self = cls(host, sock.getsockname()[1], sink)
        await loop.create_datagram_endpoint(lambda: self, sock=sock)
        return self

    # asyncio callbacks ------------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self.sink.datagram_received(data, ("udp", addr[0], addr[1], None))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a vanished endpoint: not our problem, keep serving.
        logger.debug("udp %s: %s", self.name, exc)

    # sending ----------------------------------------------------------------------------------
    def sendto(self, data: bytes, host: str, port: int) -> None:
        if self.transport is not None:
            self.transport.sendto(data, (host, port))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
