"""SIP over UDP: one datagram in, one call to the sink. No parsing here (RFC 3261 §18)."""

from __future__ import annotations

import asyncio
import logging
import socket

from ..boundary import caught
from .base import BindError, Listener, Sink, bind_error_message

logger = logging.getLogger(__name__)

#: Kernel buffers: a burst of REGISTERs from thousands of endpoints must not be dropped by the
#: kernel while the loop is busy (Kamailio raises SO_RCVBUF the same way).
RCVBUF = 4 * 1024 * 1024
SO_ATTACH_REUSEPORT_CBPF = 51  # linux/socket.h


def _spread_program(n: int) -> tuple[bytes, object]:
    """A classic BPF program for a SO_REUSEPORT group of ``n`` sockets (socket 0 is main's): a
    datagram that starts with ``REGISTER`` goes to socket ``random % n``, anything else (other
    requests, responses, keep-alives) to socket 0, so registrar workers see only REGISTERs and
    calls never cross the worker channel. (The program sees the UDP payload from offset 0; a load
    past its end returns 0, main.) Returns the ``sock_fprog`` bytes and the buffer they point to
    (keep it alive until setsockopt returns)."""
    import ctypes

    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.c_void_p)]

    insns = (Insn * 8)(
        Insn(0x20, 0, 0, 0),  # 0: ld [0]                 first 4 payload bytes
        Insn(0x15, 0, 5, int.from_bytes(b"REGI", "big")),  # 1: jeq "REGI" ? 2 : 7
        Insn(0x20, 0, 0, 4),  # 2: ld [4]
        Insn(0x15, 0, 3, int.from_bytes(b"STER", "big")),  # 3: jeq "STER" ? 4 : 7
        Insn(0x20, 0, 0, 0xFFFFF000 + 56),  # 4: ld [SKF_AD_OFF + SKF_AD_RANDOM]
        Insn(0x94, 0, 0, n),  # 5: mod #n
        Insn(0x16, 0, 0, 0),  # 6: ret a
        Insn(0x06, 0, 0, 0),  # 7: ret #0                 main's socket
    )
    return bytes(Prog(8, ctypes.addressof(insns))), insns


def _udp_socket(family: int, host: str, port: int, reuseport: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RCVBUF)
        except OSError:
            pass
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class UdpListener(Listener, asyncio.DatagramProtocol):
    proto = "udp"

    def __init__(self, host: str, port: int, sink: Sink):
        Listener.__init__(self, host, port)
        self.sink = sink
        self.transport: asyncio.DatagramTransport | None = None
        self.siblings: list[socket.socket] = []  # SO_REUSEPORT sockets for worker processes

    @classmethod
    async def bind(cls, host: str, port: int, sink: Sink, *, readers: int = 1) -> UdpListener:
        """Bind ``host:port``. ``readers`` > 1 (``[server] workers``): a SO_REUSEPORT group of that
        many sockets, REGISTERs spread at random, everything else to the first (see
        ``_spread_program``); this listener reads the first, the others wait in ``self.siblings``
        for the worker processes."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        name = f"udp:{'[' + host + ']' if ':' in host else host}:{port}"
        siblings: list[socket.socket] = []
        try:
            sock = _udp_socket(family, host, port, readers > 1)
        except OSError as exc:
            raise BindError(bind_error_message(name, exc)) from None
        if readers > 1:
            try:
                bound = sock.getsockname()[1]
                siblings = [_udp_socket(family, host, bound, True) for _ in range(readers - 1)]
                prog, _keep = _spread_program(readers)
                sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, prog)
            except OSError as exc:
                for s in (sock, *siblings):
                    s.close()
                raise BindError(bind_error_message(name, exc)) from None
        self = cls(host, sock.getsockname()[1], sink)
        self.siblings = siblings
        await loop.create_datagram_endpoint(lambda: self, sock=sock)
        return self

    # asyncio callbacks ------------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        source = ("udp", addr[0], addr[1], None)
        try:
            self.sink.datagram_received(data, source)
        except Exception as exc:  # noqa: BLE001 - one datagram must not stop the listener
            caught(self.sink, "udp_receive", exc, source, "handling a datagram")

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a vanished endpoint: not our problem, keep serving.
        logger.debug("udp %s: %s", self.name, exc)

    # sending ----------------------------------------------------------------------------------
    def sendto(self, data: bytes, host: str, port: int) -> None:
        if self.transport is not None:
            self.transport.sendto(data, (host, port))

    def close(self) -> None:
        for sock in self.siblings:
            sock.close()
        self.siblings = []
        if self.transport is not None:
            self.transport.close()
            self.transport = None
