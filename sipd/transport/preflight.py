"""Is every listen address free? Asked before start-up touches the database or the accounting spool.

A second sipd started on the same configuration (a typo in a unit file, a test left running) must
fail at once with the bind error, not first queue behind the running daemon's accounting lock and
open its database. So the start-up binds each ``[server] listen`` address once with the options the
real listener uses, closes it, and raises the listener's own one-line ``BindError`` when one is
taken. The real bind comes a moment later and still reports its own error if the port was taken in
between; this check only moves the common case to the front.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from .base import BindError, bind_error_message


def probe_bind(proto: str, host: str, port: int) -> None:
    """Bind ``host:port`` as a ``proto`` listener would, then release it. Raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:  # as transport/stream.py: a port in TIME_WAIT is free
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1)


def check_listen_free(listen: Iterable[str]) -> None:
    """Bind and release each ``proto:host:port`` of ``listen``.

    Raises:
        BindError: the first address that cannot be bound, with the same line the listener gives.
        ValueError: an address that does not parse (``sipd --check-config`` names it first).
    """
    from ..config import parse_listen

    for item in listen:
        addr = parse_listen(item)
        if addr.port == 0:  # any free port: nothing to collide with
            continue
        try:
            probe_bind(addr.proto, addr.host, addr.port)
        except OSError as exc:
            raise BindError(bind_error_message(str(addr), exc)) from None
