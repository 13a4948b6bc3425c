"""HEPv3 export of sipd's SIP traffic to a capture collector (Homer / sipcapture), the ``[trace]`` keys.

Theory of operation: with ``hep_collector`` set, the live tracer (sipd/livetrace.py) stays active and
hands every message received or sent to ``HepExporter.emit``, which applies the configured filter,
encodes a HEPv3 packet (sipd/hep.py) and queues it without waiting:

- over UDP, one non-blocking ``send`` on a connected socket; when the socket buffer is full or the
  collector unreachable the packet is dropped and counted (trace:hep_dropped);
- over TCP, packets go to a bounded queue (MAX_QUEUED_BYTES) that one task writes to the collector;
  the task reconnects (with backoff) after the collector closes or cannot be reached, and packets
  beyond the bound are dropped and counted. A slow or absent collector never slows SIP processing.

As with ``sipctl trace``, with several worker processes the workers pass REGISTERs and copies of what
they send to the main process, which exports them: tracing costs worker parallelism for REGISTERs.
The keys are read at start (a restart applies a change).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import socket
import time
from typing import Any

from . import hep
from .config import Config, TraceSection
from .problem import Problem
from .tracefilter import Filter

logger = logging.getLogger(__name__)

MAX_QUEUED_BYTES = 4 << 20  # TCP: what may wait for a slow or absent collector before packets are dropped
RECONNECT_MIN, RECONNECT_MAX = 0.5, 30.0  # seconds between TCP connection attempts (doubling)
CONNECT_TIMEOUT = 5.0

_COLLECTOR = re.compile(r"^(udp|tcp):(\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+):(\d{1,5})$")


def parse_collector(text: str) -> tuple[str, str, int]:
    """``udp:HOST:PORT`` -> (transport, host, port). Raises ValueError with a readable message."""
    m = _COLLECTOR.match(text.strip())
    if not m or not 0 < int(m.group(3)) < 65536:
        raise ValueError(f"cannot parse collector {text!r}; write udp:HOST:PORT or tcp:HOST:PORT, e.g. udp:127.0.0.1:9060")
    return m.group(1), m.group(2).strip("[]"), int(m.group(3))


def validate(config: Config) -> list[Problem]:
    """Problems in [trace] (one of sipd.validation.VALIDATORS)."""
    t = config.trace
    problems: list[Problem] = []
    if t.hep_collector:
        try:
            parse_collector(t.hep_collector)
        except ValueError as exc:
            problems.append(Problem("trace.hep_collector", str(exc)))
    if not 0 <= t.hep_capture_id <= 0xFFFFFFFF:
        problems.append(Problem("trace.hep_capture_id", f"out of range: {t.hep_capture_id}", "0 .. 4294967295"))
    return problems


class HepExporter:
    def __init__(self, section: TraceSection, stats: Any = None):
        self.transport, self.host, self.port = parse_collector(section.hep_collector)
        self.capture_id = section.hep_capture_id
        self.auth_key = section.hep_password.encode()
        self.filter = Filter(user=section.hep_user, ip=section.hep_ip, method=section.hep_method,
                             call_id=section.hep_call_id)
        self._sent = stats.counter("trace:hep_sent") if stats is not None else None
        self._dropped = stats.counter("trace:hep_dropped") if stats is not None else None
        self.sent = self.dropped = 0
        self._sock: socket.socket | None = None
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.transport == "udp":
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            family, _, _, _, addr = infos[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect(addr)  # no DNS or route lookup per packet; ICMP errors surface as OSError on send
            self._sock = sock
        else:
            self._task = asyncio.get_running_loop().create_task(self._run_tcp())
        logger.info("HEPv3 export to %s:%s:%d (capture id %d)", self.transport, self.host, self.port, self.capture_id)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def emit(self, direction: str, addr: tuple[Any, ...], local: tuple[str, int] | None, data: bytes) -> None:
        """One message in or out; ``addr`` is the peer's transport address (proto, host, port, ...)."""
        proto, host, port = addr[0], addr[1], addr[2]
        if not self.filter.matches(data, host):
            return
        lhost, lport = local or ("0.0.0.0" if ":" not in host else "::", 0)
        src, dst = ((host, port), (lhost, lport)) if direction == "in" else ((lhost, lport), (host, port))
        try:
            packet = hep.encode(hep.HepPacket(
                src_ip=src[0], src_port=src[1], dst_ip=dst[0], dst_port=dst[1], time=time.time(), payload=data,
                ip_proto=hep.ip_proto_of(proto), capture_id=self.capture_id, auth_key=self.auth_key))
        except hep.HepError:
            self._drop()
            return
        if self._sock is not None:
            try:
                self._sock.send(packet)
            except OSError:  # buffer full (BlockingIOError), collector unreachable (ICMP): never wait
                self._drop()
                return
            self._count_sent()
        elif self._task is not None:
            if self._queued + len(packet) > MAX_QUEUED_BYTES:
                self._drop()
                return
            self._queue.append(packet)
            self._queued += len(packet)
            self._wake.set()

    def _drop(self) -> None:
        self.dropped += 1
        if self._dropped is not None:
            self._dropped.inc()

    def _count_sent(self, n: int = 1) -> None:
        self.sent += n
        if self._sent is not None:
            self._sent.inc(n)

    async def _run_tcp(self) -> None:
        delay = RECONNECT_MIN
        while True:
            writer: asyncio.StreamWriter | None = None
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT)
                logger.info("HEP collector %s:%d connected", self.host, self.port)
                delay = RECONNECT_MIN
                await self._write_queue(writer)
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.TimeoutError) as exc:
                logger.warning("HEP collector %s:%d: %s; retrying in %.1f s (%d bytes queued)",
                               self.host, self.port, exc or type(exc).__name__, delay, self._queued)
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _write_queue(self, writer: asyncio.StreamWriter) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch = []
            while self._queue and len(batch) < 256:
                batch.append(self._queue.popleft())
            self._queued -= sum(len(p) for p in batch)
            writer.write(b"".join(batch))
            await writer.drain()  # a packet lost with a broken connection is not resent
            if writer.is_closing():
                raise ConnectionResetError("collector closed the connection")
            self._count_sent(len(batch))
