"""A worker process: ``python -m sipd.daemon.workers.process``, started by main's pool.

It reads its boot parameters (index, inherited descriptors, the configuration) as JSON on stdin,
serves the REGISTERs of its own AORs and the calls of its own Call-IDs with the same pipeline as
main, and passes everything else to main over its link.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ... import config as cfg
from ... import logging as sipd_logging
from ... import reloading
from ...server import Server, StartupError, _tune_gc
from ...services import pipeline
from ...services.pipeline import Branch, Elsewhere, Forward
from ...stats import Counter
from ...transport.manager import Transports
from ...transport.udp import UdpListener
from .affinity import EVENT_METHODS, needs_owner, owner_of_aor, owner_of_datagram
from .frames import (AorContacts, AorWanted, BanChange, CallEventFrame, Cancel, Counters, Datagram, Frame, FrameKind,
                     Hello, LogLevel, Passthrough, Reload, Synced, encode)
from .link import Link, apply_ban, share_bans

logger = logging.getLogger("sipd")

FETCH_TIMEOUT = 2.0  # seconds a worker waits for main's copy of an AOR
SYNC_TIMEOUT = 30.0  # seconds a starting worker waits for its AORs from main


def worker_config(config: cfg.Config) -> cfg.Config:
    """The worker's own configuration, derived from main's: SUBSCRIBE and PUBLISH are main's."""
    return dataclasses.replace(config, presence=dataclasses.replace(config.presence, enabled=False))


def counters(state: Any) -> dict[str, int]:
    return {s.name: s.value for s in state.stats.match("all") if isinstance(s, Counter)}


class WorkerServer(Server):
    """A worker: the same pipeline as main, for REGISTERs of its own AORs and calls of its own Call-IDs."""

    is_worker = True

    def __init__(self, config: cfg.Config, boot: dict[str, Any]):
        super().__init__(config)
        self.index = int(boot["index"])
        self.n = int(boot["n"])
        self.boot = boot
        self.passthrough = False
        self.link: Link | None = None
        self._synced: asyncio.Event | None = None
        self.copies: set[str] = set()  # AORs of other processes main keeps this one informed of
        self._fetching: dict[str, asyncio.Future] = {}

    async def startup(self) -> None:
        config, state, boot = self.config, self.state, self.boot
        await self._start_core()
        self.authenticator.secret = bytes.fromhex(boot["secret"])  # nonces from any process verify here
        self.stages = pipeline.build_pipeline(state)
        self.transports = Transports(self, config.limits)
        loc = state.location
        # before its 200 (sent right after), so a call that follows at once finds the binding
        loc.on_change = lambda aor: self.link.send_now(AorContacts(aor, tuple(loc.contacts(aor)))) if self.link else None
        share_bans(state, self.gate, lambda frame: self.link.send(frame) if self.link is not None else None)
        self._synced = asyncio.Event()  # until set, everything read goes to main
        self.link = await Link.open(socket.socket(fileno=int(boot["ipc"])), self._on_frame, self._main_gone)
        for fd, host, port in boot["udp"]:
            sock = socket.socket(fileno=int(fd))
            sock.setblocking(False)
            listener = UdpListener(host, int(port), self)
            await self.loop.create_datagram_endpoint(lambda listener=listener: listener, sock=sock)
            self.transports.listeners.append(listener)
            if listener.family6:
                self.transports.udp6 = self.transports.udp6 or listener
            else:
                self.transports.udp4 = self.transports.udp4 or listener
            self.note_self_address(listener)
        self.self_sockets |= {(proto, host, int(port)) for proto, host, port in boot.get("self", [])}  # TCP/TLS too
        self.self_addresses |= {(host, port) for _, host, port in self.self_sockets}  # a Route to them is us
        self.link.send(Hello(self._rand))
        try:
            await asyncio.wait_for(self._synced.wait(), SYNC_TIMEOUT)
        except asyncio.TimeoutError:
            raise StartupError(f"worker {self.index}: no location from the main process in {SYNC_TIMEOUT:g} s") from None
        _tune_gc()
        logger.debug("worker %d ready: %d AORs", self.index, len(state.location))

    def _on_frame(self, frame: Frame) -> None:
        kind = frame.kind
        if isinstance(frame, Datagram):
            if kind == FrameKind.REGISTER:
                Server.datagram_received(self, frame.data, frame.address)
            elif kind == FrameKind.CALL:  # main routed it here by Call-ID or branch
                self._raw = frame.data  # kept, to hand the request back as received
                try:
                    Server.datagram_received(self, frame.data, frame.address)
                finally:
                    self._raw = None
            else:
                logger.warning("worker %d: main sent a %s frame, which only workers send", self.index, kind.name)
        elif isinstance(frame, AorContacts):
            self.state.location.replace(frame.aor, list(frame.contacts), mark_dirty=False, notify=False)
            waiter = self._fetching.pop(frame.aor, None)
            if waiter is not None:
                self.copies.add(frame.aor)
                if not waiter.done():
                    waiter.set_result(None)
        elif isinstance(frame, BanChange):
            apply_ban(self.state, self.gate, frame.change)
        elif isinstance(frame, Passthrough):
            self.passthrough = frame.on
        elif isinstance(frame, LogLevel):
            self.state.set_log_level(frame.name)
        elif isinstance(frame, Reload):  # main reloaded provisioning tables: read them here too
            reloading.on_reload_frame(self, encode(frame))
        elif isinstance(frame, Cancel):  # main ends a ringing call of ours (sipctl dialog end)
            if self.proxy.on_cancel(frame.invite_tx, self.loop.time()):
                self.transmit()
        elif isinstance(frame, Synced) and self._synced is not None:
            self._synced_with(frame)
        else:
            logger.warning("worker %d: main sent a %s frame, which only workers send", self.index, kind.name)

    def _synced_with(self, frame: Synced) -> None:
        if frame.calls and self.config.location.mode != "db-only":  # db-only: the database has them
            index, n, copies = self.index, self.n, self.copies
            self.state.not_here = lambda aor: aor not in copies and owner_of_aor(aor, n) != index
        if frame.call_events and self._forward_event not in self.state.events.listeners:
            self.state.events.subscribe(self._forward_event)
        assert self._synced is not None
        self._synced.set()

    def owns(self, aor: str) -> bool:
        return owner_of_aor(aor, self.n) == self.index

    def _send(self, data: bytes, dest: tuple) -> None:
        if self.passthrough and self.link is not None:  # traced: main shows what its calls' workers send
            self.link.send(Datagram(FrameKind.SENT, data, dest[1], dest[2]))
        Server._send(self, data, dest)

    def _forward_event(self, ev: Any) -> None:
        """Send a call event to main, where accounting, dialogs and presence are."""
        req = ev.request
        if req is None or req.method not in EVENT_METHODS or self.link is None:
            return
        wall = ev.now + (time.time() - self.loop.time())
        resp = ev.response.to_bytes() if ev.response is not None else None
        self.link.send(CallEventFrame(ev.kind, req.to_bytes(), resp, ev.tx_key, wall))

    async def fetch_aor(self, aor: str) -> Any:
        """The contacts of an AOR another process owns, from main, which from then on sends this
        process every change of it (a call to it may come here again)."""
        waiter = self._fetching.get(aor)
        if waiter is None:
            if self.link is None:
                return Elsewhere("no main process")
            waiter = self._fetching[aor] = self.loop.create_future()
            self.link.send(AorWanted(aor))
            self.state.stats.counter("workers:aor_copies").inc()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), FETCH_TIMEOUT)
        except asyncio.TimeoutError:
            self._fetching.pop(aor, None)
            return Elsewhere(f"no copy of {aor} from main in {FETCH_TIMEOUT:g} s")
        return None

    def _apply(self, ctx: Any, decision: Any) -> None:
        if isinstance(decision, Forward) and not self._udp_only(decision):
            self.hand_back(ctx, "needs TCP/TLS or DNS")
            return
        Server._apply(self, ctx, decision)

    def _udp_only(self, decision: Any) -> bool:
        """Whether every branch goes out over UDP to a known address (the only sockets a worker has)."""
        for group in decision.groups:
            for b in group:
                dest = b.dest
                if dest is None and decision.stateless and b.ruri is not None:
                    dest = self.dest_from_uri(b.ruri)
                if dest is None or dest[0] != "udp":
                    return False
        return True

    def branch_for_contact(self, c: Any) -> Any:
        if c.conn_id is not None or (c.received and not c.received.startswith("udp:")):
            return Branch(c.uri, None, label=c.uri)  # registered over TCP/TLS: main's connection
        return Server.branch_for_contact(self, c)

    def hand_back(self, ctx: Any, why: str) -> None:
        """Give a request (as received) to main, which holds every AOR and connection; main keeps
        the call from now on. This process forgets the request's server transaction."""
        raw = ctx.extra.get("raw")
        if raw is None or self.link is None:
            Server.hand_back(self, ctx, why)
            return
        if ctx.tx_key is not None:
            self.layer.abandon(ctx.tx_key)
        self.state.stats.counter("workers:handed_to_main").inc()
        src = ctx.source
        self.link.send(Datagram(FrameKind.HANDED_BACK, raw, src[1], src[2]))
        logger.debug("%s %s handed to main: %s", ctx.request.method, ctx.request.uri_text, why)

    def _main_gone(self) -> None:
        self.link = None
        if not self.should_exit:
            logger.info("worker %d: the main process is gone; stopping", self.index)
            self.request_exit()

    def datagram_received(self, data: bytes, addr: tuple, owned: bool = False) -> None:
        kind = FrameKind.ROUTE  # main routes it
        if not self.passthrough and data[:9] == b"REGISTER " and self._synced.is_set():  # type: ignore[union-attr]
            owner = owner_of_datagram(data, self.n) if needs_owner(data, self.config.auth.register) else self.index
            if owner == self.index:
                Server.datagram_received(self, data, addr)
                return
            if owner == 0:
                kind = FrameKind.FOR_MAIN  # main's own AOR: main answers it without routing it again
        if self.link is not None:
            self.link.send(Datagram(kind, data, addr[1], addr[2]))

    async def housekeeping(self) -> None:
        await super().housekeeping()
        if self.link is not None:
            self.link.send(Counters(counters(self.state)))
        if os.getppid() != self.boot["ppid"]:
            self.request_exit()

    async def shutdown(self) -> None:
        if self.config.location.mode == "write-back":
            await self.flush_location()
        for task in list(self._tasks):
            task.cancel()
        if self.link is not None:
            self.link.send(Counters(counters(self.state)))
        await self._close_quietly()


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the kernel sends SIGTERM when main dies, however it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def main() -> int:
    _die_with_parent()
    boot = json.loads(sys.stdin.buffer.read() or b"{}")
    if not boot:
        print("sipd worker: started by sipd itself ([server] workers); not meant to be run by hand", file=sys.stderr)
        return 2
    if os.getppid() != boot["ppid"]:
        return 0
    conf, problems = cfg.from_dict(boot["config"])
    if problems:
        print(f"sipd worker {boot['index']}: configuration: {problems[0]}", file=sys.stderr)
        return 1
    conf = dataclasses.replace(worker_config(conf), source=Path(boot["source"]) if boot.get("source") else None)
    sipd_logging.configure(conf)
    server = WorkerServer(conf, boot)
    try:
        import uvloop  # type: ignore[import-not-found]

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(server.serve())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
