"""A worker process: ``python -m sipd.daemon.workers.process``, started by main's pool.

It reads its boot parameters (index, inherited descriptors, the configuration) as JSON on stdin,
serves the REGISTERs of its own AORs and the calls of its own Call-IDs with the same pipeline as
main, and passes everything else to main over its link. It also serves the TCP and TLS connections
main accepts and hands to it (a socketpair of their own, SCM_RIGHTS): a message read on one goes
where it belongs like a datagram, and whatever answers it comes back here to be sent.
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
from ...errors import StartupError
from ...reloading import reload_in_worker
from ...services.location import refresh_only
from ...services.pipeline import Elsewhere
from ...services.stages import build_pipeline
from ...sip.uri import format_host
from ...stats import Counter
from ...transport.manager import Transports
from ...transport.stream import StreamListener
from ...transport.tls import TlsListener
from ...transport.udp import UdpListener
from ..app import App
from ..lifecycle import Server, run_loop, tune_gc
from .affinity import (CALL_METHODS, EVENT_METHODS, branch_mark, call_id_of, needs_owner, owner_of_aor,
                       owner_of_call, owner_of_datagram)
from .frames import (AorContacts, AorWanted, BanChange, CallEventFrame, Cancel, Connection, Counters, Datagram, Frame,
                     FrameKind, Hello, LogLevel, Passthrough, Probe, Probed, Reload, Reloaded, Synced)
from .link import Link, apply_ban, share_bans
from .routing import NoWorkers

logger = logging.getLogger("sipd")

FETCH_TIMEOUT = 2.0  # seconds a worker waits for main's copy of an AOR
SYNC_TIMEOUT = 30.0  # seconds a starting worker waits for its AORs from main
#: Seconds main's copy of an AOR may lag behind a refresh (new expiry, Call-ID, CSeq): refreshes
#: are sent in one write per this interval, the latest of each AOR once, instead of one write
#: (and one wake-up of main) per REGISTER. Any other change is sent before the 200.
REFRESH_DELAY = 1.0
#: A refresh is held back only when every binding main holds lives this many seconds more: main
#: must never drop (or a restarted worker get) a binding the phone has just refreshed.
REFRESH_HORIZON = 10.0


def worker_config(config: cfg.Config) -> cfg.Config:
    """The worker's own configuration, derived from main's: SUBSCRIBE and PUBLISH are main's."""
    return dataclasses.replace(config, presence=dataclasses.replace(config.presence, enabled=False))


def counters(state: Any) -> dict[str, int]:
    return {s.name: s.value for s in state.stats.match("all") if isinstance(s, Counter)}


class WorkerRouting(NoWorkers):
    """A worker's routing: it serves the REGISTERs of its own AORs and the calls main hands it,
    and gives main everything else (and what it cannot serve: DNS), over its link.

    It is also the sink of the worker's UDP sockets (:meth:`datagram_received`): a datagram the
    kernel gave this process reaches the endpoint only when it is a REGISTER of its own.
    """

    loads_locations = False  # its AORs come from main (a restarted worker loses nothing)

    def __init__(self, endpoint: Any, lifecycle: Any, *, index: int, n: int, ppid: int):
        self.endpoint = endpoint
        self.lifecycle = lifecycle  # should_exit, request_exit()
        self.index = index
        self.n = n
        self.ppid = ppid
        self.link: Link | None = None
        self.synced = asyncio.Event()  # until set, everything read goes to main
        self.copies: set[str] = set()  # AORs of other processes main keeps this one informed of
        self.raw: bytes | None = None  # the call datagram being handled, as main handed it over
        self.calls = False  # calls are spread: this process serves the calls of its Call-IDs
        self.tls: Any = None  # its TlsManager (TLS reload and handshakes of the sockets main hands over)
        self.mark = b""  # this process's branch mark (in the Via of what it sends), set when it joins
        self._fetching: dict[str, asyncio.Future] = {}
        self._refreshed: set[str] = set()  # AORs whose refresh main has not been sent yet
        self._handlers = {
            FrameKind.REGISTER: self._on_register, FrameKind.CALL: self._on_call, FrameKind.AOR: self._on_aor,
            FrameKind.BAN: self._on_ban, FrameKind.PASSTHROUGH: self._on_passthrough,
            FrameKind.LOG_LEVEL: self._on_log_level, FrameKind.RELOAD: self._on_reload,
            FrameKind.CANCEL: self._on_cancel, FrameKind.SYNCED: self._on_synced,
            FrameKind.SEND: self._on_send, FrameKind.PROBE: self._on_probe,
        }

    @property
    def boundary(self) -> Any:
        """Where the sockets' receive handlers report what they caught: the endpoint's."""
        return self.endpoint.boundary

    # -- the link to main --

    async def connect(self, sock: socket.socket) -> None:
        state = self.endpoint.state
        # before its 200 (sent right after), so a call that follows at once finds the binding
        state.location.on_change = self._aor_changed
        share_bans(state, self.endpoint.gate, self._send)
        self.link = await Link.open(sock, self._on_frame, self._main_gone)

    def _aor_changed(self, aor: str, old: Any) -> None:
        """Tell main of an AOR this process changed: at once (before the 200, so a call right after
        it finds the binding), or, for a refresh of what main holds, with the next batch.

        ``old`` is what main holds, or a refresh of it still in the batch (whose bindings lived
        past the horizon when it was held back, and still do within REFRESH_DELAY)."""
        link = self.link
        if link is None:
            return
        location = self.endpoint.state.location
        refreshed = self._refreshed
        if refresh_only(old, location.current(aor), time.time() + REFRESH_HORIZON):
            if not refreshed:
                self.endpoint.loop.call_later(REFRESH_DELAY, self.send_refreshed)
            refreshed.add(aor)
            return
        refreshed.discard(aor)
        link.send_now(AorContacts(aor, tuple(location.contacts(aor))))

    def send_refreshed(self) -> None:
        """The refreshes held back: each AOR's latest bindings, in one write."""
        refreshed, self._refreshed = self._refreshed, set()
        if self.link is None:
            return
        location = self.endpoint.state.location
        for aor in refreshed:
            self.link.send(AorContacts(aor, tuple(location.contacts(aor))))

    async def join(self, mark: str) -> None:
        """Say hello (with this process's branch mark) and wait until main has sent our AORs."""
        self.mark = mark.encode("ascii")
        self._send(Hello(mark))
        try:
            await asyncio.wait_for(self.synced.wait(), SYNC_TIMEOUT)
        except asyncio.TimeoutError:
            raise StartupError(f"worker {self.index}: no location from the main process in {SYNC_TIMEOUT:g} s") \
                from None

    def _send(self, frame: Frame) -> None:
        if self.link is not None:
            self.link.send(frame)

    def _main_gone(self) -> None:
        self.link = None
        if not self.lifecycle.should_exit:
            logger.info("worker %d: the main process is gone; stopping", self.index)
            self.lifecycle.request_exit()

    # -- frames from main --

    def _on_frame(self, frame: Frame) -> None:
        handler = self._handlers.get(frame.kind)
        if handler is None:
            logger.warning("worker %d: main sent a %s frame, which only workers send", self.index, frame.kind.name)
            return
        handler(frame)

    def _on_register(self, frame: Datagram) -> None:
        self.endpoint.datagram_received(frame.data, frame.address)

    def _on_call(self, frame: Datagram) -> None:
        self.raw = frame.data  # kept, to hand the request back as received
        try:
            self.endpoint.datagram_received(frame.data, frame.address)
        finally:
            self.raw = None

    def _on_aor(self, frame: AorContacts) -> None:
        self.endpoint.state.location.replace(frame.aor, list(frame.contacts), mark_dirty=False, notify=False)
        waiter = self._fetching.pop(frame.aor, None)
        if waiter is not None:
            self.copies.add(frame.aor)
            if not waiter.done():
                waiter.set_result(None)

    def _on_ban(self, frame: BanChange) -> None:
        apply_ban(self.endpoint.state, self.endpoint.gate, frame.change)

    def _on_passthrough(self, frame: Passthrough) -> None:
        self.copy_sent = frame.on  # traced: REGISTERs go to main, and copies of what is sent

    def _on_log_level(self, frame: LogLevel) -> None:
        self.endpoint.state.set_log_level(frame.name)

    def _on_reload(self, frame: Reload) -> None:
        """Main reloaded provisioning tables (or TLS certificates): read them here too, then say
        so (when asked to)."""
        tables = [t for t in frame.tables if t != "tls"]
        if len(tables) < len(frame.tables) and self.tls is not None:
            self.tls.reload()  # new connections here get the new certificate, as in main

        async def run() -> None:
            if tables:
                await reload_in_worker(self.endpoint.state, tables, frame.users)
            if frame.seq:
                self._send(Reloaded(frame.seq))

        self.endpoint.spawn(run())

    def _on_cancel(self, frame: Cancel) -> None:  # main ends a ringing call of ours (sipctl dialog end)
        endpoint = self.endpoint
        if endpoint.proxy.on_cancel(frame.invite_tx, endpoint.loop.time()):
            endpoint.transmit()

    def _on_synced(self, frame: Synced) -> None:
        state = self.endpoint.state
        if frame.calls and self.endpoint.config.location.mode != "db-only":  # db-only: the database has them
            index, n, copies = self.index, self.n, self.copies
            state.not_here = lambda aor: aor not in copies and owner_of_aor(aor, n) != index
        if frame.call_events and self._forward_event not in state.events.listeners:
            state.events.subscribe(self._forward_event)
        self.calls = frame.calls
        self.synced.set()

    def _on_send(self, frame: Datagram) -> None:
        """A message for one of this process's connections (or a peer main wants reached from here)."""
        self.endpoint.transports.send(frame.data, frame.address, here=True)

    def _on_probe(self, frame: Probe) -> None:
        transports = self.endpoint.transports
        conns = [c.proto for c in transports.conns.values()]
        listeners = [{"listener": lst.name, "domain": lst.domain.name, "pending_handshakes": lst.pending,
                      "accepted": lst.accepted, "failed_handshakes": lst.failed, "refused": lst.refused}
                     for lst in transports.listeners if isinstance(lst, TlsListener)]
        self._send(Probed(frame.seq, {"pid": os.getpid(), "tcp": conns.count("tcp"), "tls": conns.count("tls"),
                                      "tls_listeners": listeners}))

    # -- connections: the sockets main hands over, and where this process's messages go --

    def serve_handed_sockets(self, sock: socket.socket, listeners: dict[str, Any]) -> None:
        """Take the accepted sockets main sends on ``sock`` (SCM_RIGHTS, each with its listener's
        name) and serve each through that listener here."""
        loop = self.endpoint.loop
        sock.setblocking(False)

        def readable() -> None:
            for _ in range(64):  # bounded per wake-up, like an accept loop
                try:
                    msg, fds, _flags, _addr = socket.recv_fds(sock, 256, 16)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    logger.error("worker %d: handed sockets: %s", self.index, exc)
                    loop.remove_reader(sock.fileno())
                    return
                if not msg and not fds:  # main closed its end
                    loop.remove_reader(sock.fileno())
                    return
                name, _, host = msg.decode("ascii", "replace").partition("\n")
                listener = listeners.get(name)
                for fd in fds:
                    conn = socket.socket(fileno=fd)
                    if listener is None:  # not one main told us of at start: cannot happen, but never leak it
                        conn.close()
                        self._send(Connection("released", 0, "tcp", host, 0, True))
                        continue
                    conn.setblocking(False)
                    listener.take(conn, handed=host)

        loop.add_reader(sock.fileno(), readable)

    def connection_event(self, event: str, conn: Any) -> None:
        """Tell main of a connection of ours: its table (reuse, tls list) and its limits per source."""
        host = conn.handed if event == "released" else conn.host  # the source main counted it under
        self._send(Connection(event, conn.conn_id, conn.proto, host, conn.port, not conn.outbound))

    def send_elsewhere(self, data: bytes, dest: tuple) -> None:
        """A message for another process's connection, or for a peer this process has no
        connection to: main passes it to the connection's owner, or sends it itself."""
        if self.link is None:
            self.endpoint.transports.send(data, dest, here=True)
            return
        self._send(Datagram(FrameKind.SEND, data, dest[1], dest[2], dest[0], dest[3]))

    def route_stream(self, data: bytes, addr: tuple) -> bool:
        """A message framed on one of this process's connections, read from its bytes before it
        is parsed: served here when it is ours (a REGISTER of our AOR, a request of a call we
        own, a response to our branch); else given to main as received, with the connection in
        its address, and what answers it comes back here. Bytes this cannot read go to main,
        whose layer answers them (400) or drops them."""
        kind = FrameKind.ROUTE
        if self.synced.is_set() and not self.copy_sent:
            if data[:9] == b"REGISTER ":
                owner = owner_of_datagram(data, self.n) if needs_owner(data, self.endpoint.config.auth.register) \
                    else self.index
                if owner == self.index:
                    return False
                if owner == 0:
                    kind = FrameKind.FOR_MAIN
            elif data[:8] == b"SIP/2.0 ":  # a response: ours when our mark is in its branch
                if branch_mark(data) == self.mark:
                    return False
            elif self.calls and data[:data.find(b" ")] in CALL_METHODS:
                cid = call_id_of(data)
                if cid is not None:
                    owner = owner_of_call(cid, self.n)
                    if owner == self.index:
                        return False
                    if owner == 0:
                        kind = FrameKind.FOR_MAIN  # main's call: main serves it without reading it again
        if self.link is None:
            return False  # main is gone: serve what we can
        self.link.send(Datagram(kind, data, addr[1], addr[2], addr[0], addr[3]))
        return True

    # -- what the worker's own sockets read --

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        kind = FrameKind.ROUTE  # main routes it
        if not self.copy_sent and data[:9] == b"REGISTER " and self.synced.is_set():
            register = self.endpoint.config.auth.register
            owner = owner_of_datagram(data, self.n) if needs_owner(data, register) else self.index
            if owner == self.index:
                self.endpoint.datagram_received(data, addr)
                return
            if owner == 0:
                kind = FrameKind.FOR_MAIN  # main's own AOR: main answers it without routing it again
        self._send(Datagram(kind, data, addr[1], addr[2]))

    # -- the endpoint's decision points --

    def owns(self, aor: str) -> bool:
        return owner_of_aor(aor, self.n) == self.index

    def request_context(self, ctx: Any) -> None:
        if self.raw is not None:
            ctx.extra["raw"] = self.raw
        elif ctx.source[0] != "udp" and ctx.request.method != "REGISTER":  # read on our connection:
            ctx.extra["raw"] = ctx.request.to_bytes()  # kept as received, to hand it back

    def reachable(self, contact: Any) -> bool:
        """A binding another cluster node owns is reached through that node, whose address main
        knows (its heartbeat reads the nodes): a call to it goes back to main."""
        node_id = contact.node_id
        return node_id is None or node_id == self.endpoint.state.cluster.node_id

    def forward_here(self, ctx: Any, decision: Any) -> bool:
        if self._addressed(decision):
            return True
        self.endpoint.hand_back(ctx, "needs DNS")
        return False

    def _addressed(self, decision: Any) -> bool:
        """Whether every branch goes to a known address (a worker does not resolve names: main
        does); over UDP from its own sockets, over TCP/TLS on a connection of any process."""
        for group in decision.groups:
            for b in group:
                dest = b.dest
                if dest is None and decision.stateless and b.ruri is not None:
                    dest = self.endpoint.dest_from_uri(b.ruri)
                if dest is None:
                    return False
        return True

    def hand_back(self, ctx: Any, why: str) -> bool:
        """Give a request (as received) to main, which holds every AOR and connection; main keeps
        the call from now on. This process forgets the request's server transaction."""
        raw = ctx.extra.get("raw")
        if raw is None or self.link is None:
            return False
        if ctx.tx_key is not None:
            self.endpoint.layer.abandon(ctx.tx_key)
        self.endpoint.state.stats.counter("workers:handed_to_main").inc()
        src = ctx.source
        self.link.send(Datagram(FrameKind.HANDED_BACK, raw, src[1], src[2], src[0], src[3] if len(src) > 3 else None))
        logger.debug("%s %s handed to main: %s", ctx.request.method, ctx.request.uri_text, why)
        return True

    def sent(self, data: bytes, dest: tuple) -> None:
        # main traces what its workers send
        self._send(Datagram(FrameKind.SENT, data, dest[1], dest[2], dest[0], dest[3] if len(dest) > 3 else None))

    def _forward_event(self, ev: Any) -> None:
        """Send a call event to main, where accounting, dialogs and presence are."""
        req = ev.request
        if req is None or req.method not in EVENT_METHODS or self.link is None:
            return
        wall = ev.now + (time.time() - self.endpoint.loop.time())
        resp = ev.response.to_bytes() if ev.response is not None else None
        self.link.send(CallEventFrame(ev.kind, req.to_bytes(), resp, ev.tx_key, wall))

    async def fetch_aor(self, aor: str) -> Any:
        """The contacts of an AOR another process owns, from main, which from then on sends this
        process every change of it (a call to it may come here again)."""
        waiter = self._fetching.get(aor)
        if waiter is None:
            if self.link is None:
                return Elsewhere("no main process")
            waiter = self._fetching[aor] = self.endpoint.loop.create_future()
            self.link.send(AorWanted(aor))
            self.endpoint.state.stats.counter("workers:aor_copies").inc()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), FETCH_TIMEOUT)
        except asyncio.TimeoutError:
            self._fetching.pop(aor, None)
            return Elsewhere(f"no copy of {aor} from main in {FETCH_TIMEOUT:g} s")
        return None

    def tick(self) -> None:
        self._send(Counters(counters(self.endpoint.state)))
        if os.getppid() != self.ppid:  # main is gone (and PR_SET_PDEATHSIG did not say so)
            self.lifecycle.request_exit()

    async def stop(self) -> None:
        self.send_refreshed()
        self._send(Counters(counters(self.endpoint.state)))


async def start_worker(app: App, server: Server, routing: WorkerRouting, boot: dict[str, Any]) -> None:
    """A worker's start: the same core as main's, the UDP sockets main bound (inherited), the link
    to main, then wait for its AORs. No management, no trace socket, no accounting: main's."""
    endpoint = app.endpoint
    await app.start_core(server.loop)
    endpoint.authenticator.secret = bytes.fromhex(boot["secret"])  # nonces from any process verify here
    app.build_pipeline()
    streams = boot.get("streams", [])
    routing.tls = app.open_tls() if any(proto == "tls" for proto, _, _ in streams) else None
    transports = Transports(endpoint, endpoint.config.limits, tls=routing.tls)
    transports.index = routing.index  # in the id of every connection this process holds
    transports.elsewhere = routing.send_elsewhere
    transports.on_connection = routing.connection_event
    endpoint.attach(transports)
    await routing.connect(socket.socket(fileno=int(boot["ipc"])))
    for fd, host, port in boot["udp"]:
        sock = socket.socket(fileno=int(fd))
        sock.setblocking(False)
        listener = UdpListener(host, int(port), routing)
        await endpoint.loop.create_datagram_endpoint(lambda listener=listener: listener, sock=sock)
        transports.listeners.append(listener)
        if listener.family6:
            transports.udp6 = transports.udp6 or listener
        else:
            transports.udp4 = transports.udp4 or listener
        endpoint.note_self_address(listener)
    listeners: dict[str, Any] = {}
    for proto, host, port in streams:  # main's TCP/TLS listeners, without their sockets (main accepts)
        stream: StreamListener
        if proto == "tls":
            domain = routing.tls.server_domain(f"tls:{format_host(host)}:{port}")  # main bound it with this one
            stream = TlsListener(host, int(port), transports, routing.tls, domain)
        else:
            stream = StreamListener(proto, host, int(port), transports)
        transports.listeners.append(stream)
        listeners[stream.name] = stream
        endpoint.note_self_address(stream)
    if "handover" in boot:
        routing.serve_handed_sockets(socket.socket(fileno=int(boot["handover"])), listeners)
    endpoint.self_sockets |= {(proto, host, int(port)) for proto, host, port in boot.get("self", [])}  # TCP/TLS too
    endpoint.self_addresses |= {(host, port) for _, host, port in endpoint.self_sockets}  # a Route to them is us
    await routing.join(endpoint.mark)
    tune_gc()
    logger.debug("worker %d ready: %d AORs", routing.index, len(endpoint.state.location))


async def stop_worker(app: App, server: Server, routing: WorkerRouting) -> None:
    if app.config.location.mode == "write-back":
        await server.flush_location()
    server.cancel_tasks()
    await routing.stop()
    await server.close()


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
        print("sipd.daemon.workers.process: started by sipd itself ([server] workers); not meant to be run by hand",
              file=sys.stderr)
        return 2
    if os.getppid() != boot["ppid"]:
        return 0
    conf, problems = cfg.from_dict(boot["config"])
    if problems:
        print(f"sipd worker {boot['index']}: configuration: {problems[0]}", file=sys.stderr)
        return 1
    conf = dataclasses.replace(worker_config(conf), source=Path(boot["source"]) if boot.get("source") else None)
    sipd_logging.configure(conf)
    app = App(conf)
    server = Server(app, startup=lambda: start_worker(app, server, routing, boot),
                    shutdown=lambda: stop_worker(app, server, routing))
    routing = WorkerRouting(app.endpoint, server, index=int(boot["index"]), n=int(boot["n"]), ppid=int(boot["ppid"]))
    app.endpoint.set_routing(routing)
    return run_loop(server.serve())


if __name__ == "__main__":
    sys.exit(main())
