"""Live SIP trace for ``sipctl trace``: whole messages streamed to local watchers, filtered here.

Theory of operation: the daemon calls ``tracer.emit(...)`` on every message received or sent, but
only after checking ``tracer.active``, a plain attribute that is False while nobody watches — so
tracing costs one attribute read per message when unused. Watchers connect to a Unix socket next
to the management socket (``<[mgmt] socket>.trace``, same mode and owner), send one JSON line
with their filter, and then receive one JSON line per matching message. A watcher that cannot keep
up loses messages (counted and reported to it), never slows SIP processing.

Wire format (one JSON object per line):
  client -> {"user": "alice", "ip": "192.0.2.1", "method": "REGISTER", "call_id": "abc"}  (all optional)
  server -> {"ok": true}
  server -> {"time": 1700000000.123, "dir": "in"|"out", "proto": "udp", "peer": ["127.0.0.1", 5060],
             "local": ["127.0.0.1", 5060], "data": "<message, latin-1 text>", "dropped": 0}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .hep_export import HepExporter
from .tracefilter import Filter

logger = logging.getLogger(__name__)

MAX_FILTER_LINE = 4096        # a filter is a few short strings
MAX_WATCHERS = 16             # tracing is for a person at a terminal, not a fan-out service
MAX_QUEUED_BYTES = 4 << 20    # per watcher; beyond this, messages are dropped for that watcher

class _Watcher:
    def __init__(self, writer: asyncio.StreamWriter, flt: Filter):
        self.writer = writer
        self.filter = flt
        self.dropped = 0


class Tracer:
    """Holds the watchers; ``active`` is True while at least one is connected."""

    def __init__(self, local_for: Callable[[str], tuple[str, int] | None] | None = None):
        self.active = False
        self._watchers: set[_Watcher] = set()
        self._server: asyncio.AbstractServer | None = None
        self._path: Path | None = None
        self._local_for = local_for or (lambda proto: None)
        self.hep: Any = None  # a HepExporter (sipd/hep_export.py) while [trace] hep_collector is set

    async def start_hep(self, section: Any, stats: Any) -> None:
        """Export to a HEP collector; the tracer then stays active for as long as sipd runs."""
        exporter = HepExporter(section, stats)
        await exporter.start()
        self.hep = exporter
        self.active = True

    async def start(self, path: str | os.PathLike[str], mode: int = 0o660) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if p.is_socket():
                p.unlink()
        self._server = await asyncio.start_unix_server(self._on_client, path=str(p), limit=MAX_FILTER_LINE)
        os.chmod(p, mode)
        self._path = p

    async def close(self) -> None:
        for w in list(self._watchers):
            w.writer.close()
        self._watchers.clear()
        self.active = False
        if self.hep is not None:
            await self.hep.close()
            self.hep = None
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        if self._path is not None:
            with contextlib.suppress(OSError):  # gone, or not ours to remove after a privilege drop
                self._path.unlink()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._watchers) >= MAX_WATCHERS:
            writer.write(b'{"ok": false, "error": "too many trace watchers"}\n')
            writer.close()
            return
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            raw = json.loads(line or b"{}")
            if not isinstance(raw, dict):
                raise ValueError("filter must be a JSON object")
            flt = Filter(**{k: str(v) for k, v in raw.items() if k in ("user", "ip", "method", "call_id") and v})
        except (ValueError, TypeError, asyncio.TimeoutError, asyncio.LimitOverrunError) as exc:
            writer.write(json.dumps({"ok": False, "error": f"bad filter: {exc}"}).encode() + b"\n")
            writer.close()
            return
        watcher = _Watcher(writer, flt)
        self._watchers.add(watcher)
        self.active = True
        logger.info("trace watcher connected (filter %s)", {k: v for k, v in vars(flt).items() if v} or "none")
        writer.write(b'{"ok": true}\n')
        try:
            await reader.read()  # until the watcher goes away; it sends nothing more
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._watchers.discard(watcher)
            self.active = bool(self._watchers) or self.hep is not None
            writer.close()
            logger.info("trace watcher disconnected (%d messages dropped)", watcher.dropped)

    def emit(self, direction: str, addr: tuple[Any, ...], data: bytes) -> None:
        """One message in or out. ``addr`` is the transport address (proto, host, port, ...)."""
        proto, host, port = addr[0], addr[1], addr[2]
        if self.hep is not None:
            self.hep.emit(direction, addr, self._local_for(proto), data)
        for w in list(self._watchers):
            if not w.filter.matches(data, host):
                continue
            transport = w.writer.transport
            if transport is None or transport.is_closing():
                continue
            if transport.get_write_buffer_size() > MAX_QUEUED_BYTES:
                w.dropped += 1
                continue
            w.writer.write(json.dumps({"time": time.time(), "dir": direction, "proto": proto, "peer": [host, port],
                                       "local": self._local_for(proto), "data": data.decode("latin-1"),
                                       "dropped": w.dropped}).encode() + b"\n")


async def start_tracing(tracer: Tracer, config: Any, stats: Any) -> None:
    """The trace socket beside the management socket, and the HEP export when configured. The SIP
    service runs without either when it cannot be started (logged)."""
    path = trace_socket_path(config.mgmt.socket)
    try:
        await tracer.start(path, int(config.mgmt.socket_mode, 8))
    except OSError as exc:
        logger.warning("trace socket %s not started: %s", path, exc)
    if config.trace.hep_collector:
        try:
            await tracer.start_hep(config.trace, stats)
        except OSError as exc:  # e.g. the collector's name does not resolve
            logger.error("HEP export to %s not started: %s", config.trace.hep_collector, exc)


def trace_socket_path(mgmt_socket: str) -> str:
    """Where the trace socket lives: beside the management socket."""
    return f"{mgmt_socket}.trace"
