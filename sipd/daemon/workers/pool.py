"""Main's side of the worker processes: start, route, sync, restart and stop them.

How the work is divided is in the package docstring (sipd/daemon/workers/__init__.py); which
process a datagram belongs to is read from its bytes by sipd/daemon/workers/affinity.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from ... import reloading
from ...config import to_dict
from ...sip.parser import parse_message
from ...state import CallEvent
from ...transport.stream import StreamListener, conn_owner
from ...transport.udp import UdpListener
from .affinity import CALL_METHODS, branch_mark, call_id_of, calls_stay_in_main, needs_owner, owner_of_aor, \
    owner_of_call, owner_of_datagram
from .frames import (AorContacts, AorWanted, BanChange, CallEventFrame, Cancel, Connection, Counters, Datagram, Frame,
                     FrameKind, Hello, LogLevel, Passthrough, Probe, Probed, Reload, Reloaded, Synced, encode)
from .link import Link, apply_ban, share_bans

if TYPE_CHECKING:
    from ..endpoint import Endpoint

logger = logging.getLogger("sipd")

RESPAWN_INTERVAL = 5.0  # seconds between two starts of one worker
STOP_GRACE = 3.0  # seconds a worker gets to stop after SIGTERM
PIN_TTL = 4 * 3600.0  # seconds a call main had to take stays main's (longer calls: see route_call)
PIN_MAX = 200_000
PARSED_MAX = 512  # call events: a call's request parsed once for its several events
PROBE_TIMEOUT = 2.0  # seconds main waits for a worker's answer to a probe (sipctl ps, tls list)
#: The worker process's module, run in a fresh interpreter (nothing of a running loop is forked).
PROCESS_MODULE = "sipd.daemon.workers.process"


class _Worker:
    __slots__ = ("index", "proc", "link", "active", "started", "seen", "orphans", "reported", "reload_pending",
                 "sockets", "handed")

    def __init__(self, index: int):
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.link: Link | None = None
        self.active = False  # synced: REGISTERs for its AORs go to it
        self.started = 0.0
        self.seen: dict[str, int] = {}  # its counters as last reported
        self.orphans: list[Any] = []  # its UDP sockets, read by main while it is down
        self.reported = False  # its exit was logged
        self.reload_pending = False  # SIGHUP asked for while it was starting (sent once it is ready)
        self.sockets: socket.socket | None = None  # main's end of the socketpair accepted sockets go through
        self.handed: dict[str, int] = {}  # sockets handed to it and not yet released, per source address


class WorkerPool:
    """Main's view of its workers: start, route, sync, restart, stop."""

    def __init__(self, endpoint: Endpoint, n: int):
        self.endpoint = endpoint
        self.n = n
        self.workers = {k: _Worker(k) for k in range(1, n)}
        self.passthrough = False
        self.closing = False
        # calls spread over the processes by Call-ID (off when call state must stay in main)
        self.stay = calls_stay_in_main(endpoint.config)
        self.spread = not self.stay
        if self.spread:  # summed from the workers; listed (at 0) from the start
            for name in ("workers:handed_to_main", "workers:aor_copies"):
                endpoint.state.stats.counter(name)
        self.marks: dict[bytes, int] = {}  # a worker's branch mark -> its index (responses)
        self.pinned: dict[bytes, float] = {}  # Call-IDs main took over (DNS, a worker down) -> when
        self.copies: dict[str, set[int]] = {}  # AOR -> workers holding a copy (they route calls to it)
        self._parsed: dict[bytes, Any] = {}  # a call's request, parsed once for its several events
        self._turn = 0  # whose turn it is to get the next accepted TCP/TLS socket (0: main)
        self._probes: dict[int, tuple[dict[int, Any], asyncio.Future]] = {}
        self._probe_seq = 0
        # accepted TCP/TLS sockets given to a worker (the others main serves itself)
        self.c_handed = endpoint.state.stats.counter("workers:connections_handed")
        transports = endpoint.transports
        transports.handover = self.hand_over
        transports.elsewhere = self.send_elsewhere
        # an AOR main changed (ul rm; REGISTERs main answered while tracing or while the worker
        # was down): its owner must know
        endpoint.state.location.on_change = self.push
        share_bans(endpoint.state, endpoint.gate, self.broadcast)
        self._handlers = {
            FrameKind.ROUTE: self._on_route, FrameKind.FOR_MAIN: self._on_for_main,
            FrameKind.HANDED_BACK: self._on_handed_back, FrameKind.SENT: self._on_sent,
            FrameKind.AOR: self._on_aor, FrameKind.AOR_WANTED: self._on_aor_wanted,
            FrameKind.COUNTERS: self._on_counters, FrameKind.BAN: self._on_ban,
            FrameKind.CALL_EVENT: self._on_call_event, FrameKind.RELOADED: self._on_reloaded,
            FrameKind.HELLO: self._on_hello, FrameKind.SEND: self._on_send,
            FrameKind.CONNECTION: self._on_connection, FrameKind.PROBED: self._on_probed,
        }

    # -- routing (hot path) --

    def owns(self, aor: str) -> bool:
        return owner_of_aor(aor, self.n) == 0

    def route_register(self, data: bytes, addr: tuple) -> bool:
        """True when a worker owns this REGISTER's AOR and it was handed over (or dropped)."""
        if self.passthrough or not needs_owner(data, self.endpoint.config.auth.register):
            return False
        k = owner_of_datagram(data, self.n)
        if k == 0:
            return False
        w = self.workers[k]
        if not w.active:
            return False  # worker (re)starting: main answers, and gives it the AOR when it is back
        w.link.send(Datagram(FrameKind.REGISTER, data, addr[1], addr[2], addr[0], addr[3]))  # type: ignore[union-attr]
        return True

    def route_call(self, data: bytes, addr: tuple) -> bool:
        """True when a worker handles this datagram (not a REGISTER) and it was handed over.

        A response goes to the process whose branch it answers (the mark in its top Via). A
        request goes to the owner of its Call-ID (so a CANCEL, the ACK of a non-2xx and every
        in-dialog request meet the INVITE's transactions), unless main took the call over
        (pinned: a worker handed it back because it needs DNS or an AOR only main holds, or
        its worker was down)."""
        if not self.spread:
            return False
        if data[:8] == b"SIP/2.0 ":
            mark = branch_mark(data)
            k = self.marks.get(mark, 0) if mark is not None else 0
        else:
            if data[:data.find(b" ")] not in CALL_METHODS:
                return False
            cid = call_id_of(data)
            if cid is None or cid in self.pinned:
                return False
            k = owner_of_call(cid, self.n)
            if k != 0 and not self.workers[k].active:
                self.pin(cid)  # main answers it, and keeps the call
                return False
        if k == 0:
            return False
        w = self.workers[k]
        if w.link is None or not w.active:
            return False
        w.link.send(Datagram(FrameKind.CALL, data, addr[1], addr[2], addr[0], addr[3]))
        return True

    def cancel(self, call_id: str, invite_tx: Any) -> bool:
        """``sipctl dialog end`` of a ringing call a worker handles: that worker cancels it."""
        cid = call_id.encode("utf-8", "surrogateescape")
        if not self.spread or cid in self.pinned:
            return False
        w = self.workers.get(owner_of_call(cid, self.n))
        return w is not None and w.active and w.link is not None and w.link.send(Cancel(invite_tx))

    # -- TCP and TLS connections (every process serves some) --

    def hand_over(self, sock: socket.socket, peer: tuple, listener: Any) -> bool:
        """An accepted TCP/TLS socket (limits checked): main and the ready workers take turns.
        True when a worker got it (main's copy is closed); False: main serves it."""
        turn = self._turn = (self._turn + 1) % self.n
        w = self.workers.get(turn)
        if w is None or not w.active or w.sockets is None:
            return False
        try:
            socket.send_fds(w.sockets, [f"{listener.name}\n{peer[0]}".encode("ascii")], [sock.fileno()])
        except OSError:  # its queue is full (or it is gone): main serves this one
            return False
        sock.close()
        host = peer[0]  # the worker releases it under this name
        w.handed[host] = w.handed.get(host, 0) + 1
        self.endpoint.transports.handed_out(host)
        self.c_handed.inc()
        return True

    def send_elsewhere(self, data: bytes, dest: tuple) -> None:
        """Main sends on a worker's connection: its owner writes it (or main, on a new connection,
        when that worker is gone)."""
        w = self.workers.get(conn_owner(dest[3]))
        if w is not None and w.link is not None:
            w.link.send(Datagram(FrameKind.SEND, data, dest[1], dest[2], dest[0], dest[3]))
        else:
            self.endpoint.transports.send(data, (dest[0], dest[1], dest[2], None), here=True)

    def _on_send(self, w: _Worker, frame: Datagram) -> None:
        """A worker's message for a connection it does not own (or for a peer it has none to)."""
        self.endpoint.transports.send(frame.data, frame.address)

    def _on_connection(self, w: _Worker, frame: Connection) -> None:
        transports = self.endpoint.transports
        key = (frame.proto, frame.host, frame.port)
        if frame.event == "up":
            transports.remote[key] = frame.conn_id
            transports.remote_ids[frame.conn_id] = key
        elif frame.event == "down":
            transports.remote_ids.pop(frame.conn_id, None)
            if transports.remote.get(key) == frame.conn_id:
                del transports.remote[key]
        elif w.handed.get(frame.host):  # released: a socket main handed over no longer counts
            w.handed[frame.host] -= 1
            if not w.handed[frame.host]:
                del w.handed[frame.host]
            transports.handed_back(frame.host)

    def _forget_connections(self, w: _Worker) -> None:
        """A worker is gone, and its connections with it."""
        transports = self.endpoint.transports
        for conn_id in [c for c in transports.remote_ids if conn_owner(c) == w.index]:
            key = transports.remote_ids.pop(conn_id)
            if transports.remote.get(key) == conn_id:
                del transports.remote[key]
        for host, count in w.handed.items():
            for _ in range(count):
                transports.handed_back(host)
        w.handed = {}

    async def probe(self) -> dict[int, Any]:
        """What each ready worker says of itself (connections, TLS handshakes), by index; a worker
        that does not answer within PROBE_TIMEOUT is left out."""
        self._probe_seq += 1
        seq = self._probe_seq
        answers: dict[int, Any] = {}
        done = self.endpoint.loop.create_future()
        asked = [w for w in self.workers.values() if w.active and w.link is not None]
        if not asked:
            return answers
        self._probes[seq] = (answers, done)
        for w in asked:
            w.link.send(Probe(seq))  # type: ignore[union-attr]
        try:
            await asyncio.wait_for(asyncio.shield(done), PROBE_TIMEOUT)
        except asyncio.TimeoutError:
            pass
        finally:
            self._probes.pop(seq, None)
        return answers

    def _on_probed(self, w: _Worker, frame: Probed) -> None:
        waiting = self._probes.get(frame.seq)
        if waiting is None:
            return
        answers, done = waiting
        answers[w.index] = frame.facts
        if len(answers) >= sum(1 for x in self.workers.values() if x.active and x.link is not None) and not done.done():
            done.set_result(None)

    def pin(self, call_id: Any) -> None:
        """Main handles this call from now on (its transactions are here)."""
        try:
            cid = call_id.encode("utf-8", "surrogateescape") if isinstance(call_id, str) else call_id
        except Exception:  # noqa: BLE001 - an unreadable Call-ID: the message is rejected anyway
            return
        if cid and owner_of_call(cid, self.n) != 0 and cid not in self.pinned:
            self.pinned[cid] = time.monotonic()
            if len(self.pinned) > PIN_MAX:
                del self.pinned[next(iter(self.pinned))]

    def _unpin_old(self) -> None:
        pinned, limit = self.pinned, time.monotonic() - PIN_TTL
        while pinned:
            cid = next(iter(pinned))
            if pinned[cid] > limit:
                break
            del pinned[cid]

    # -- frames from workers --

    def _on_frame(self, w: _Worker, frame: Frame) -> None:
        handler = self._handlers.get(frame.kind)
        if handler is None:
            logger.warning("worker %d sent a %s frame, which only main sends", w.index, frame.kind.name)
            return
        handler(w, frame)

    def _on_route(self, w: _Worker, frame: Datagram) -> None:
        self.endpoint.datagram_received(frame.data, frame.address)

    def _on_for_main(self, w: _Worker, frame: Datagram) -> None:
        self.endpoint.datagram_received(frame.data, frame.address, True)

    def _on_handed_back(self, w: _Worker, frame: Datagram) -> None:
        cid = call_id_of(frame.data)
        if cid is not None:
            self.pin(cid)
        self.endpoint.datagram_received(frame.data, frame.address, True)

    def _on_sent(self, w: _Worker, frame: Datagram) -> None:
        self.endpoint.trace_out(frame.data, frame.address)  # main traced what it handed over

    def _on_aor(self, w: _Worker, frame: AorContacts) -> None:
        self.endpoint.state.location.replace(frame.aor, list(frame.contacts), mark_dirty=False, notify=False)
        holders = [self.workers[k] for k in self.copies.get(frame.aor, ()) if self.workers[k] is not w]
        if holders:
            raw = encode(frame)
            for other in holders:
                if other.link is not None:
                    other.link.send(raw)

    def _on_aor_wanted(self, w: _Worker, frame: AorWanted) -> None:
        """A worker routes a call to an AOR it does not own: a copy, kept up to date."""
        self.copies.setdefault(frame.aor, set()).add(w.index)
        contacts = self.endpoint.state.location.contacts(frame.aor)
        w.link.send(AorContacts(frame.aor, tuple(contacts)))  # type: ignore[union-attr]

    def _on_counters(self, w: _Worker, frame: Counters) -> None:
        stats = self.endpoint.state.stats
        for name, value in frame.values.items():
            delta = value - w.seen.get(name, 0)
            w.seen[name] = value
            if delta > 0:
                stats.counter(name).inc(delta)

    def _on_ban(self, w: _Worker, frame: BanChange) -> None:
        apply_ban(self.endpoint.state, self.endpoint.gate, frame.change)
        raw = encode(frame)
        for other in self.workers.values():
            if other is not w and other.link is not None:
                other.link.send(raw)

    def _on_call_event(self, w: _Worker, frame: CallEventFrame) -> None:
        """A worker's call event (a request forwarded, a final or provisional sent upstream): main's
        accounting, dialogs and presence see it as if main had handled the call."""
        cache = self._parsed
        try:
            req = cache.get(frame.request)
            if req is None:
                req = cache[frame.request] = parse_message(frame.request)
                if len(cache) > PARSED_MAX:
                    del cache[next(iter(cache))]
            resp = parse_message(frame.response) if frame.response is not None else None
        except Exception as exc:  # noqa: BLE001 - it was parsed once already; never stop main for it
            logger.warning("a worker's call event could not be read: %s", exc)
            return
        now = frame.wall - (time.time() - self.endpoint.loop.time())
        self.endpoint.state.events.emit(CallEvent(kind=frame.event, request=req, response=resp, tx_key=frame.tx_key,
                                                now=now))

    def _on_reloaded(self, w: _Worker, frame: Reloaded) -> None:
        reloading.reloaded(w.index, frame.seq)

    def _on_hello(self, w: _Worker, frame: Hello) -> None:
        self.marks[frame.mark.encode("ascii")] = w.index
        self._sync(w)

    def _sync(self, w: _Worker) -> None:
        """Give a (re)started worker its AORs, then route its REGISTERs to it."""
        assert w.link is not None
        sent = 0
        for aor, contacts in self.endpoint.state.location.items():
            if owner_of_aor(aor, self.n) == w.index:
                w.link.send(AorContacts(aor, tuple(contacts)))
                sent += 1
        w.link.send(Passthrough(self.passthrough))
        if w.link.send(Synced(calls=self.spread, call_events=self.spread and bool(self.endpoint.state.events.listeners))):
            w.active = True
            logger.info("worker %d ready (pid %d, %d AORs)", w.index, w.proc.pid if w.proc else 0, sent)
            if w.reload_pending and w.proc is not None:
                w.reload_pending = False
                w.proc.send_signal(signal.SIGHUP)

    def push(self, aor: str, old: Any = ()) -> None:
        """Send main's contacts of ``aor`` to its owner and to the workers holding a copy (after
        main changed it; ``old``, the bindings before, is not needed here)."""
        k = owner_of_aor(aor, self.n)
        to = self.copies.get(aor)
        if k == 0 and not to:
            return
        raw = encode(AorContacts(aor, tuple(self.endpoint.state.location.contacts(aor))))
        for i in ({k} | to if to else {k}):
            w = self.workers.get(i)
            if w is not None and w.link is not None:
                w.link.send(raw)

    def broadcast(self, frame: Frame) -> list[int]:
        """Send ``frame`` (encoded once) to every worker linked to main; their indexes."""
        raw = encode(frame)
        sent = []
        for w in self.workers.values():
            if w.link is not None:
                w.link.send(raw)
                sent.append(w.index)
        return sent

    def set_log_level(self, name: str) -> None:
        self.broadcast(LogLevel(name))

    def ask_reload(self, seq: int, tables: list[str], users: list[str]) -> list[int]:
        """Ask every worker to read ``tables`` again (``seq`` 0: no answer wanted); the indexes asked."""
        return self.broadcast(Reload(seq, tuple(tables), tuple(users)))

    # -- lifecycle --

    def start(self) -> None:
        if self.spread:
            logger.info("calls spread over %d processes by Call-ID", self.n)
        else:
            logger.info("calls stay in the main process (their state is kept there): %s", ", ".join(self.stay))
        for w in self.workers.values():
            self._spawn(w)

    def _spawn(self, w: _Worker) -> None:
        endpoint = self.endpoint
        udp = [lst for lst in endpoint.transports.listeners if lst.proto == "udp" and lst.siblings]
        fds = [lst.siblings[w.index - 1].fileno() for lst in udp]
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # accepted sockets go on a socketpair of their own: SCM_RIGHTS needs sendmsg, which the
        # frames' asyncio stream does not offer; SEQPACKET keeps each socket with its listener's name
        handing, handed = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        handing.setblocking(False)
        streams = [[lst.proto, lst.host, lst.port] for lst in endpoint.transports.listeners
                   if isinstance(lst, StreamListener)]
        boot = {
            "index": w.index, "n": self.n, "ppid": os.getpid(), "ipc": theirs.fileno(),
            "handover": handed.fileno(), "streams": streams,
            "udp": [[fd, lst.host, lst.port] for fd, lst in zip(fds, udp)],
            "secret": endpoint.authenticator.secret.hex(),
            "self": sorted([proto, h, p] for proto, h, p in endpoint.self_sockets),
            "config": to_dict(endpoint.config, mask_secrets=False),
            "source": str(endpoint.config.source) if endpoint.config.source else "",
        }
        pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH", "")) if p))
        env.pop("NOTIFY_SOCKET", None)  # only main talks to systemd
        try:
            proc = subprocess.Popen([sys.executable, "-m", PROCESS_MODULE], stdin=subprocess.PIPE, env=env,
                                    pass_fds=[theirs.fileno(), handed.fileno(), *fds], close_fds=True)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(boot).encode())
            proc.stdin.close()
        except OSError as exc:
            ours.close()
            handing.close()
            w.started = time.monotonic()  # try again in RESPAWN_INTERVAL, not at every tick
            logger.error("worker %d not started: %s", w.index, exc)
            return
        finally:
            theirs.close()
            handed.close()
        if w.sockets is not None:
            w.sockets.close()
        w.sockets = handing
        w.proc, w.started, w.active, w.seen, w.reported = proc, time.monotonic(), False, {}, False
        w.reload_pending = False  # it loads everything fresh
        for holders in self.copies.values():
            holders.discard(w.index)  # a new process asks again
        self.endpoint.spawn(self._connect(w, ours))
        logger.info("worker %d started (pid %d)", w.index, proc.pid)

    async def _connect(self, w: _Worker, sock: socket.socket) -> None:
        link: Link | None = None

        def lost() -> None:
            if w.link is link:  # not a newer link of a restarted worker
                w.link = None
                w.active = False

        link = await Link.open(sock, lambda frame: self._on_frame(w, frame), lost)
        w.link = link

    def tick(self) -> None:
        """Housekeeping (every second): passthrough while traced, restart dead workers."""
        want = bool(self.endpoint.tracer.active or self.endpoint.trace_on)
        if want != self.passthrough:
            self.passthrough = want
            self.broadcast(Passthrough(want))
        self._unpin_old()
        if self.closing:
            return
        now = time.monotonic()
        for w in self.workers.values():
            if w.proc is not None and w.proc.poll() is None:
                continue
            if now - w.started >= RESPAWN_INTERVAL:
                self._release(w)
                self._spawn(w)
            elif w.proc is not None and not w.reported:
                w.reported = True
                logger.error("worker %d (pid %d) exited with status %s; main reads its sockets until it is "
                             "restarted", w.index, w.proc.pid, w.proc.returncode)
                if w.link is not None:
                    w.link.close()
                self._forget_connections(w)
                self.endpoint.spawn(self._adopt(w))

    async def _adopt(self, w: _Worker) -> None:
        """Read a dead worker's UDP sockets in main (duplicates of the descriptors, so closing them
        later leaves the originals for the next worker): its share of datagrams is not lost."""
        for lst in self.endpoint.transports.listeners:
            if lst.proto == "udp" and getattr(lst, "siblings", None):
                sock = socket.socket(fileno=os.dup(lst.siblings[w.index - 1].fileno()))
                sock.setblocking(False)
                orphan = UdpListener(lst.host, lst.port, self.endpoint)
                await self.endpoint.loop.create_datagram_endpoint(lambda orphan=orphan: orphan, sock=sock)
                w.orphans.append(orphan)

    def _release(self, w: _Worker) -> None:
        for orphan in w.orphans:
            orphan.close()
        w.orphans = []

    def signal(self, sig: int) -> None:
        for w in self.workers.values():
            if w.proc is None or w.proc.poll() is not None:
                continue
            if sig == signal.SIGHUP and not w.active:
                w.reload_pending = True  # no handler yet: SIGHUP would end it; sent when it is ready
                continue
            w.proc.send_signal(sig)

    async def stop(self) -> None:
        self.closing = True
        for w in self.workers.values():
            w.active = False
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for w in self.workers.values():
            while w.proc is not None and w.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if w.proc is not None and w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait(1)
            if w.link is not None:
                w.link.close()
            if w.sockets is not None:
                w.sockets.close()
                w.sockets = None
            self._release(w)

    def describe(self) -> list[dict[str, Any]]:
        return [{"index": w.index, "pid": w.proc.pid if w.proc else 0, "active": w.active,
                 "alive": bool(w.proc and w.proc.poll() is None), "passthrough": self.passthrough,
                 "calls": self.spread}
                for w in self.workers.values()]
