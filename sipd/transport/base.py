"""What every transport shares: addresses, the sink they deliver to, and the connection table.

Transports move bytes only. A received datagram goes to ``sink.datagram_received(data, addr)``; a
stream transport frames bytes with the core's ``StreamParser`` (Content-Length, no parsing) and
delivers each whole message, still bytes, with ``sink.stream_received(data, addr)``. Sending goes through
``Transports.send(data, dest)``, which picks the listener (UDP) or the connection (TCP/TLS).

An ``Address`` is ``(transport, host, port, conn_id)``, the same tuple the SIP core's events carry:
``conn_id`` names the TCP/TLS connection a message came on, so replies and calls to a
TCP-registered endpoint reuse it (RFC 3261 §18.2.2, RFC 5626 flows). TLS is the stream transport
with a handshake in front (``tls.py``).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ..sip.uri import format_host

logger = logging.getLogger(__name__)

Address = tuple  # (transport: str, host: str, port: int, conn_id: int | None)


class Sink(Protocol):
    def datagram_received(self, data: bytes, addr: Address) -> None: ...

    def stream_received(self, data: bytes, addr: Address) -> None: ...

    def stream_rejected(self, addr: Address, exc: Exception) -> None: ...


class Listener:
    """A bound socket of one transport. ``name`` is ``udp:127.0.0.1:5060``."""

    proto = ""

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port

    @property
    def name(self) -> str:
        return f"{self.proto}:{format_host(self.host)}:{self.port}"

    @property
    def family6(self) -> bool:
        return ":" in self.host

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class BindError(Exception):
    """A listener could not be bound; the message is one line for the operator."""


def bind_error_message(name: str, exc: OSError) -> str:
    import errno

    if exc.errno == errno.EADDRINUSE:
        return f"address already in use: {name} — another sipd or SIP server running? see server.listen"
    if exc.errno == errno.EACCES:
        return f"permission denied binding {name} — ports below 1024 need root or CAP_NET_BIND_SERVICE; see server.listen"
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return f"cannot bind {name}: the address is not on this host — see server.listen"
    return f"cannot bind {name}: {exc.strerror or exc} — see server.listen"
