"""Worker processes: ``[server] workers = N`` (Kamailio ``children``, OpenSIPS ``udp_workers``).

One Python process saturates one core. With N > 1
the main process starts N-1 workers (fresh interpreters: ``python -m sipd.workers``, so nothing
of a running event loop is forked) that read the same UDP sockets, inherited as file
descriptors: each UDP listener is a SO_REUSEPORT group of N sockets, one per process, and a
classic BPF program hands every REGISTER to one of them at random (even load whatever the
sources; Kamailio's children share one socket instead) and everything else to main's.

Theory of operation (which process a datagram belongs to: sipd/affinity.py):
- Ownership. Every AOR has one owner process, ``crc32(user@domain) % N`` (0 is main). Only the
  owner changes an AOR, so two REGISTERs for one AOR never race, and the REGISTER that answers a
  challenge reaches the process that checks its nonce count. The owner is read from the raw To
  header (:func:`owner_of_datagram`, no parsing); a To it cannot read belongs to main.
- A worker answers the REGISTERs for its AORs, and any REGISTER without credentials when
  ``[auth] register`` is on (that one only gets a stateless challenge). A REGISTER for another
  AOR (and anything else that reaches a worker) goes to main over a socketpair (a framed stream)
  with its source address; main handles it as if read from the socket, and passes a REGISTER for
  a worker's AOR on to that worker. The kernel gives every non-REGISTER datagram to main.
  Replies leave through the process's own socket of the group, so they come from the listen
  address.
- Calls (unless a feature keeps per-call state in main: :func:`calls_stay_in_main`). Every
  Call-ID has an owner too, ``crc32(Call-ID) % N``: main hands a request of an INVITE dialog to it
  (so a CANCEL, the ACK of a non-2xx and every in-dialog request meet the INVITE's transactions),
  and a response to the process whose mark (``Server._rand``, sent in the hello) is in its top
  Via branch. A worker sends its call events (requests forwarded, responses sent upstream, for
  INVITE, BYE, CANCEL and ACK) to main, whose accounting, dialogs and presence see every call. A worker
  routing a call to an AOR it does not own asks main for a copy once; main then sends it every
  change of that AOR. A call that needs TCP/TLS or DNS is handed back to main as received, and
  main keeps that Call-ID (pinned), like every call that arrived over TCP/TLS or while its
  worker was down.
- Location. The owner applies a REGISTER and persists it (write-through, write-back or db-only as
  configured) and sends the AOR's new contact list to main, whose table is therefore complete:
  calls, ``ul show``, NAT pings and statistics read it there. A worker gets its AORs from main
  when it starts (so a restarted worker loses nothing, in memory mode too); an AOR main changes
  (``ul rm``, REGISTERs main answered while tracing or while the worker was down) is sent to its
  owner.
- Bans (manual, flood, failed authentication) are shared: a process sends each ban it adds or
  removes, main applies it and forwards it to the other workers. Flood counting is per process.
- Statistics: each worker sends its counters once a second; main adds the increments to its own,
  so ``sipctl stats`` and /metrics count every process.
- ``sipctl trace``: while someone watches, workers pass every REGISTER to main (passthrough) and
  send main a copy of everything they send; main traces what it reads before handing it over,
  so the trace shows every message and calls keep their process.
- TCP and TLS, presence, accounting and management stay in main. A worker that dies is
  restarted (at most once per 5 s; main answers its AORs meanwhile); workers end with main
  (SIGTERM on shutdown, PR_SET_PDEATHSIG and the socketpair closing when main dies).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

from .affinity import (CALL_METHODS, EVENT_METHODS, branch_mark, call_id_of, calls_stay_in_main, needs_owner,
                       owner_of_aor, owner_of_call, owner_of_datagram)
from .reloading import RELOAD_FRAME, RELOADED_FRAME, on_reload_frame, on_reloaded_frame
from .server import Server, _tune_gc

if TYPE_CHECKING:
    from .config import Config

logger = logging.getLogger("sipd")

IPC_BUFFER = 4 * 1024 * 1024  # socketpair buffers: a burst of relayed datagrams must fit
IPC_BACKLOG = 32 * 1024 * 1024  # bytes queued for a peer before relayed datagrams are dropped
RESPAWN_INTERVAL = 5.0  # seconds between two starts of one worker
STOP_GRACE = 3.0  # seconds a worker gets to stop after SIGTERM

FETCH_TIMEOUT = 2.0  # seconds a worker waits for main's copy of an AOR
PIN_TTL = 4 * 3600.0  # seconds a call main had to take stays main's (longer calls: see route_call)
PIN_MAX = 200_000


def _pack_addr(ip: str, port: int) -> bytes:
    raw = ip.encode()
    return struct.pack("!HB", port, len(raw)) + raw


def _unpack_addr(frame: bytes) -> tuple[str, int, bytes]:
    port, n = struct.unpack_from("!HB", frame, 1)
    return frame[4:4 + n].decode(), port, frame[4 + n:]


class Link(asyncio.Protocol):
    """One end of a worker's socketpair: a byte stream of frames (4-byte length, then the frame;
    its first byte is the kind). A stream, not SOCK_SEQPACKET: Linux queues at most
    ``net.unix.max_dgram_qlen`` (10) datagrams per socket, far too few for relayed bursts."""

    def __init__(self, on_frame: Callable[[bytes], None], on_close: Callable[[], None]):
        self.on_frame = on_frame
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.dropped = 0
        self.closed = False
        self._buf = bytearray()
        self._out: list[bytes] = []  # frames queued in this loop iteration (see _flush)
        self._out_size = 0

    @classmethod
    async def open(cls, sock: socket.socket, on_frame: Callable[[bytes], None], on_close: Callable[[], None]) -> Link:
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, IPC_BUFFER)
            except OSError:
                pass
        sock.setblocking(False)
        link = cls(on_frame, on_close)
        await asyncio.get_running_loop().create_unix_connection(lambda: link, sock=sock)
        return link

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def send(self, frame: bytes) -> bool:
        """Queue one frame; dropped (counted) when the peer is far behind (a relayed datagram is
        then lost like any UDP datagram, and the UA retransmits)."""
        t = self.transport
        if t is None or self.closed:
            return False
        if self._out_size + t.get_write_buffer_size() > IPC_BACKLOG:
            self.dropped += 1
            return False
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(len(frame).to_bytes(4, "big"))
        self._out.append(frame)
        self._out_size += len(frame) + 4
        return True

    def send_now(self, frame: bytes) -> None:
        """Write ``frame`` (after anything queued) at once: an AOR update must be on its way to
        main before the REGISTER's 200, so a call right after the 200 finds the binding."""
        if self._out:
            self.send(frame)
            self._flush()
        elif self.transport is not None and not self.closed:
            self.transport.write(len(frame).to_bytes(4, "big") + frame)

    def _flush(self) -> None:
        """One write (one syscall) for every frame queued during this loop iteration."""
        out, self._out, self._out_size = self._out, [], 0
        if out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, end = 0, len(buf)
        frames = []
        while end - pos >= 4:
            n = int.from_bytes(buf[pos:pos + 4], "big")
            if end - pos - 4 < n:
                break
            frames.append(bytes(buf[pos + 4:pos + 4 + n]))
            pos += 4 + n
        if pos:
            del buf[:pos]
        for frame in frames:
            try:
                self.on_frame(frame)
            except Exception:  # noqa: BLE001 - one bad message must not stop the channel
                logger.exception("worker channel: error handling a %r message", frame[:1])

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.on_close()


def _contact_fields() -> tuple[str, ...]:
    import dataclasses

    from .services.location import Contact

    return tuple(f.name for f in dataclasses.fields(Contact))


_FIELDS = _contact_fields()


def _aor_frame(kind: bytes, aor: str, contacts: list) -> bytes:
    """An AOR's contacts as plain tuples (pickling the dataclasses costs twice as much)."""
    return kind + pickle.dumps((aor, [tuple([getattr(c, f) for f in _FIELDS]) for c in contacts]))


def _aor_read(frame: bytes) -> tuple[str, list]:
    from .services.location import Contact

    aor, rows = pickle.loads(frame[1:])
    return aor, [Contact(*row) for row in rows]


def _counters(server: Server) -> dict[str, int]:
    from .stats import Counter

    return {s.name: s.value for s in server.state.stats.match("all") if isinstance(s, Counter)}


def _share_bans(server: Server, send: Callable[[bytes], Any]) -> None:
    """Send every ban this process adds or removes (``apply_ban`` applies one from elsewhere
    without sending it back)."""
    if server.state.bans is not None:
        server.state.bans.bans.on_change = lambda change: send(b"B" + pickle.dumps(change))
    if server.gate is not None:  # addresses that authenticated here pass every process's gate
        server.gate.on_new = lambda host, until: send(b"B" + pickle.dumps(("known", host, until)))


def apply_ban(server: Server, change: tuple) -> None:
    bans = server.state.bans
    if change[0] == "known":
        server.gate.learn(change[1], change[2])
    elif bans is None:
        return
    elif change[0] == "add":
        _, target, now, duration, reason = change
        try:
            bans.bans.add(target, now, duration, reason, notify=False)
        except ValueError:
            pass
    else:
        bans.bans.remove(change[1], notify=False)


# -- the main process's side -----------------------------------------------------------------------


class _Worker:
    __slots__ = ("index", "proc", "link", "active", "started", "seen", "orphans", "reported", "reload_pending")

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


class WorkerPool:
    """Main's view of its workers: start, route, sync, restart, stop."""

    def __init__(self, server: Server, n: int):
        self.server = server
        self.n = n
        self.workers = {k: _Worker(k) for k in range(1, n)}
        self.passthrough = False
        self.closing = False
        # calls spread over the processes by Call-ID (off when call state must stay in main)
        self.stay = calls_stay_in_main(server.config)
        self.spread = not self.stay
        if self.spread:  # summed from the workers; listed (at 0) from the start
            for name in ("workers:handed_to_main", "workers:aor_copies"):
                server.state.stats.counter(name)
        self.marks: dict[bytes, int] = {}  # a worker's branch mark -> its index (responses)
        self.pinned: dict[bytes, float] = {}  # Call-IDs main took over (TCP/TLS, DNS, ...) -> when
        self.copies: dict[str, set[int]] = {}  # AOR -> workers holding a copy (they route calls to it)
        self._parsed: dict[bytes, Any] = {}  # a call's request, parsed once for its several events
        # an AOR main changed (ul rm; REGISTERs main answered while tracing or while the worker
        # was down): its owner must know
        server.state.location.on_change = self.push
        _share_bans(server, self.broadcast)

    # -- routing (hot path) --

    def owns(self, aor: str) -> bool:
        return owner_of_aor(aor, self.n) == 0

    def route_register(self, data: bytes, addr: tuple) -> bool:
        """True when a worker owns this REGISTER's AOR and it was handed over (or dropped)."""
        if self.passthrough or not needs_owner(data, self.server.config.auth.register):
            return False
        k = owner_of_datagram(data, self.n)
        if k == 0:
            return False
        w = self.workers[k]
        if not w.active:
            return False  # worker (re)starting: main answers, and gives it the AOR when it is back
        w.link.send(b"P" + _pack_addr(addr[1], addr[2]) + data)  # type: ignore[union-attr]
        return True

    def route_call(self, data: bytes, addr: tuple) -> bool:
        """True when a worker handles this datagram (not a REGISTER) and it was handed over.

        A response goes to the process whose branch it answers (the mark in its top Via). A
        request goes to the owner of its Call-ID (so a CANCEL, the ACK of a non-2xx and every
        in-dialog request meet the INVITE's transactions), unless main took the call over
        (pinned: it arrived over TCP/TLS, or a worker handed it back because it needs a
        connection, DNS or an AOR only main holds)."""
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
        w.link.send(b"C" + _pack_addr(addr[1], addr[2]) + data)
        return True

    def cancel(self, call_id: str, invite_tx: Any) -> bool:
        """``sipctl dialog end`` of a ringing call a worker handles: that worker cancels it."""
        cid = call_id.encode("utf-8", "surrogateescape")
        if not self.spread or cid in self.pinned:
            return False
        w = self.workers.get(owner_of_call(cid, self.n))
        return w is not None and w.active and w.link is not None and w.link.send(b"Z" + pickle.dumps(invite_tx))

    def pin_message(self, msg: Any) -> None:
        """A message main read over TCP/TLS: its call stays in main (an unreadable Call-ID is the
        layer's to reject)."""
        try:
            call_id = msg.call_id
        except Exception:  # noqa: BLE001 - RemoteProtocolError: answered 400 by the layer
            return
        self.pin(call_id)

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

    # -- messages from workers --

    def _on_frame(self, w: _Worker, frame: bytes) -> None:
        kind = frame[:1]
        server = self.server
        if kind == b"P" or kind == b"R":  # R: a REGISTER for an AOR of main's (no need to route it again)
            ip, port, data = _unpack_addr(frame)
            server.datagram_received(data, ("udp", ip, port, None), kind == b"R")
        elif kind == b"L":
            aor, contacts = _aor_read(frame)
            server.state.location.replace(aor, contacts, mark_dirty=False, notify=False)
            for k in self.copies.get(aor, ()):
                other = self.workers[k]
                if other is not w and other.link is not None:
                    other.link.send(frame)
        elif kind == b"Q":  # a worker routes a call to an AOR it does not own: a copy, kept up to date
            aor = frame[1:].decode("utf-8", "surrogateescape")
            self.copies.setdefault(aor, set()).add(w.index)
            w.link.send(_aor_frame(b"L", aor, server.state.location.contacts(aor)))  # type: ignore[union-attr]
        elif kind == b"S":
            stats = server.state.stats
            for name, value in pickle.loads(frame[1:]).items():
                delta = value - w.seen.get(name, 0)
                w.seen[name] = value
                if delta > 0:
                    stats.counter(name).inc(delta)
        elif kind == b"B":
            change = pickle.loads(frame[1:])
            apply_ban(server, change)
            for other in self.workers.values():
                if other is not w and other.link is not None:
                    other.link.send(frame)
        elif kind == b"M":  # a call the worker cannot handle (TCP/TLS, DNS, an AOR of another process)
            ip, port, data = _unpack_addr(frame)
            cid = call_id_of(data)
            if cid is not None:
                self.pin(cid)
            server.datagram_received(data, ("udp", ip, port, None), True)
        elif kind == b"K":
            self._call_event(frame)
        elif kind == b"X":  # what a worker sent while traced (main traced what it handed over)
            ip, port, data = _unpack_addr(frame)
            server.trace_out(data, ("udp", ip, port, None))
        elif kind == RELOADED_FRAME:
            on_reloaded_frame(w.index, frame)
        elif kind == b"H":
            if len(frame) > 1:
                self.marks[frame[1:]] = w.index
            self._sync(w)

    def _call_event(self, frame: bytes) -> None:
        """A worker's call event (a request forwarded, a final or provisional sent upstream): main's
        accounting, dialogs and presence see it as if main had handled the call."""
        from .sip.parser import parse_message
        from .state import CallEvent

        kind, request, response, tx_key, wall = pickle.loads(frame[1:])
        cache = self._parsed
        try:
            req = cache.get(request)
            if req is None:
                req = cache[request] = parse_message(request)
                if len(cache) > 512:
                    del cache[next(iter(cache))]
            resp = parse_message(response) if response is not None else None
        except Exception as exc:  # noqa: BLE001 - it was parsed once already; never stop main for it
            logger.warning("a worker's call event could not be read: %s", exc)
            return
        now = wall - (time.time() - self.server.loop.time())
        self.server.state.events.emit(CallEvent(kind=kind, request=req, response=resp, tx_key=tx_key, now=now))

    def _sync(self, w: _Worker) -> None:
        """Give a (re)started worker its AORs, then route its REGISTERs to it."""
        assert w.link is not None
        sent = 0
        for aor, contacts in self.server.state.location.items():
            if owner_of_aor(aor, self.n) == w.index:
                w.link.send(_aor_frame(b"L", aor, contacts))
                sent += 1
        w.link.send(b"T" + (b"1" if self.passthrough else b"0"))
        events = b"k" if self.spread and self.server.state.events.listeners else b""
        if w.link.send(b"E" + (b"c" + events if self.spread else b"")):
            w.active = True
            logger.info("worker %d ready (pid %d, %d AORs)", w.index, w.proc.pid if w.proc else 0, sent)
            if w.reload_pending and w.proc is not None:
                w.reload_pending = False
                w.proc.send_signal(signal.SIGHUP)

    def push(self, aor: str) -> None:
        """Send main's contacts of ``aor`` to its owner and to the workers holding a copy (after
        main changed it)."""
        k = owner_of_aor(aor, self.n)
        to = self.copies.get(aor)
        if k == 0 and not to:
            return
        frame = _aor_frame(b"L", aor, self.server.state.location.contacts(aor))
        for i in ({k} | to if to else {k}):
            w = self.workers.get(i)
            if w is not None and w.link is not None:
                w.link.send(frame)

    def broadcast(self, frame: bytes) -> None:
        for w in self.workers.values():
            if w.link is not None:
                w.link.send(frame)

    # -- lifecycle --

    def start(self) -> None:
        if self.spread:
            logger.info("calls spread over %d processes by Call-ID", self.n)
        else:
            logger.info("calls stay in the main process (their state is kept there): %s", ", ".join(self.stay))
        for w in self.workers.values():
            self._spawn(w)

    def _spawn(self, w: _Worker) -> None:
        server = self.server
        from .config import to_dict

        udp = [lst for lst in server.transports.listeners if lst.proto == "udp" and lst.siblings]
        fds = [lst.siblings[w.index - 1].fileno() for lst in udp]
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        boot = {
            "index": w.index, "n": self.n, "ppid": os.getpid(), "ipc": theirs.fileno(),
            "udp": [[fd, lst.host, lst.port] for fd, lst in zip(fds, udp)],
            "secret": server.authenticator.secret.hex(),
            "self": sorted([proto, h, p] for proto, h, p in server.self_sockets),
            "config": to_dict(server.config, mask_secrets=False),
            "source": str(server.config.source) if server.config.source else "",
        }
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH", "")) if p))
        env.pop("NOTIFY_SOCKET", None)  # only main talks to systemd
        try:
            proc = subprocess.Popen([sys.executable, "-m", "sipd.workers"], stdin=subprocess.PIPE, env=env,
                                    pass_fds=[theirs.fileno(), *fds], close_fds=True)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(boot).encode())
            proc.stdin.close()
        except OSError as exc:
            ours.close()
            w.started = time.monotonic()  # try again in RESPAWN_INTERVAL, not at every tick
            logger.error("worker %d not started: %s", w.index, exc)
            return
        finally:
            theirs.close()
        w.proc, w.started, w.active, w.seen, w.reported = proc, time.monotonic(), False, {}, False
        w.reload_pending = False  # it loads everything fresh
        for holders in self.copies.values():
            holders.discard(w.index)  # a new process asks again
        task = server.loop.create_task(self._connect(w, ours))
        server._tasks.add(task)
        task.add_done_callback(server._tasks.discard)
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
        want = bool(self.server.tracer.active or self.server.trace_on)
        if want != self.passthrough:
            self.passthrough = want
            self.broadcast(b"T" + (b"1" if want else b"0"))
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
                task = self.server.loop.create_task(self._adopt(w))
                self.server._tasks.add(task)
                task.add_done_callback(self.server._tasks.discard)

    async def _adopt(self, w: _Worker) -> None:
        """Read a dead worker's UDP sockets in main (duplicates of the descriptors, so closing them
        later leaves the originals for the next worker): its share of datagrams is not lost."""
        from .transport.udp import UdpListener

        for lst in self.server.transports.listeners:
            if lst.proto == "udp" and getattr(lst, "siblings", None):
                sock = socket.socket(fileno=os.dup(lst.siblings[w.index - 1].fileno()))
                sock.setblocking(False)
                orphan = UdpListener(lst.host, lst.port, self.server)
                await self.server.loop.create_datagram_endpoint(lambda orphan=orphan: orphan, sock=sock)
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
            self._release(w)

    def describe(self) -> list[dict[str, Any]]:
        return [{"index": w.index, "pid": w.proc.pid if w.proc else 0, "active": w.active,
                 "alive": bool(w.proc and w.proc.poll() is None), "passthrough": self.passthrough,
                 "calls": self.spread}
                for w in self.workers.values()]


# -- a worker process --------------------------------------------------------------------------------


class WorkerServer(Server):
    """A worker: the same pipeline as main, for REGISTERs of its own AORs and calls of its own Call-IDs."""

    is_worker = True

    def __init__(self, config: Config, boot: dict[str, Any]):
        config.presence.enabled = False  # SUBSCRIBE/PUBLISH are main's
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
        from .services import pipeline
        from .transport.manager import Transports
        from .transport.udp import UdpListener

        config, state, boot = self.config, self.state, self.boot
        await self._start_core()
        self.authenticator.secret = bytes.fromhex(boot["secret"])  # nonces from any process verify here
        self.stages = pipeline.build_pipeline(state)
        self.transports = Transports(self, config.limits)
        loc = state.location
        # before its 200 (sent right after), so a call that follows at once finds the binding
        loc.on_change = lambda aor: self.link.send_now(_aor_frame(b"L", aor, loc.contacts(aor))) if self.link else None
        _share_bans(self, lambda frame: self.link.send(frame) if self.link is not None else None)
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
        self.link.send(b"H" + self._rand.encode())
        try:
            await asyncio.wait_for(self._synced.wait(), 30)
        except asyncio.TimeoutError:
            from .server import StartupError

            raise StartupError(f"worker {self.index}: no location from the main process in 30 s") from None
        _tune_gc()
        logger.debug("worker %d ready: %d AORs", self.index, len(state.location))

    def _on_frame(self, frame: bytes) -> None:
        kind = frame[:1]
        if kind == b"P":
            ip, port, data = _unpack_addr(frame)
            Server.datagram_received(self, data, ("udp", ip, port, None))
        elif kind == b"L":
            aor, contacts = _aor_read(frame)
            self.state.location.replace(aor, contacts, mark_dirty=False, notify=False)
            waiter = self._fetching.pop(aor, None)
            if waiter is not None:
                self.copies.add(aor)
                if not waiter.done():
                    waiter.set_result(None)
        elif kind == b"B":
            apply_ban(self, pickle.loads(frame[1:]))
        elif kind == b"T":
            self.passthrough = frame[1:2] == b"1"
        elif kind == b"V":
            self.state.set_log_level(frame[1:].decode())
        elif kind == RELOAD_FRAME:  # main reloaded provisioning tables: read them here too
            on_reload_frame(self, frame)
        elif kind == b"Z":  # main ends a ringing call of ours (sipctl dialog end)
            if self.proxy.on_cancel(pickle.loads(frame[1:]), self.loop.time()):
                self.transmit()
        elif kind == b"C":  # a call's datagram (main routed it here by Call-ID or branch)
            ip, port, data = _unpack_addr(frame)
            self._raw = data
            try:
                Server.datagram_received(self, data, ("udp", ip, port, None))
            finally:
                self._raw = None
        elif kind == b"E" and self._synced is not None:
            if frame[1:2] == b"c" and self.config.location.mode != "db-only":  # db-only: the database has them
                index, n, copies = self.index, self.n, self.copies
                self.state.not_here = lambda aor: aor not in copies and owner_of_aor(aor, n) != index
            if frame[2:3] == b"k" and self._forward_event not in self.state.events.listeners:
                self.state.events.subscribe(self._forward_event)
            self._synced.set()

    def owns(self, aor: str) -> bool:
        return owner_of_aor(aor, self.n) == self.index

    def _send(self, data: bytes, dest: tuple) -> None:
        if self.passthrough and self.link is not None:  # traced: main shows what its calls' workers send
            self.link.send(b"X" + _pack_addr(dest[1], dest[2]) + data)
        Server._send(self, data, dest)

    def _forward_event(self, ev: Any) -> None:
        """Send a call event to main, where accounting, dialogs and presence are."""
        req = ev.request
        if req is None or req.method not in EVENT_METHODS or self.link is None:
            return
        wall = ev.now + (time.time() - self.loop.time())
        resp = ev.response.to_bytes() if ev.response is not None else None
        self.link.send(b"K" + pickle.dumps((ev.kind, req.to_bytes(), resp, ev.tx_key, wall)))

    async def fetch_aor(self, aor: str) -> Any:
        """The contacts of an AOR another process owns, from main, which from then on sends this
        process every change of it (a call to it may come here again)."""
        from .services.pipeline import Elsewhere

        waiter = self._fetching.get(aor)
        if waiter is None:
            if self.link is None:
                return Elsewhere("no main process")
            waiter = self._fetching[aor] = self.loop.create_future()
            self.link.send(b"Q" + aor.encode("utf-8", "surrogateescape"))
            self.state.stats.counter("workers:aor_copies").inc()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), FETCH_TIMEOUT)
        except asyncio.TimeoutError:
            self._fetching.pop(aor, None)
            return Elsewhere(f"no copy of {aor} from main in {FETCH_TIMEOUT:g} s")
        return None

    def _apply(self, ctx: Any, decision: Any) -> None:
        from .services.pipeline import Forward

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
            from .services.pipeline import Branch

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
        self.link.send(b"M" + _pack_addr(src[1], src[2]) + raw)
        logger.debug("%s %s handed to main: %s", ctx.request.method, ctx.request.uri_text, why)

    def _main_gone(self) -> None:
        self.link = None
        if not self.should_exit:
            logger.info("worker %d: the main process is gone; stopping", self.index)
            self.request_exit()

    def datagram_received(self, data: bytes, addr: tuple, owned: bool = False) -> None:
        kind = b"P"  # main routes it
        if not self.passthrough and data[:9] == b"REGISTER " and self._synced.is_set():
            owner = owner_of_datagram(data, self.n) if needs_owner(data, self.config.auth.register) else self.index
            if owner == self.index:
                Server.datagram_received(self, data, addr)
                return
            if owner == 0:
                kind = b"R"  # main's own AOR: main answers it without routing it again
        if self.link is not None:
            self.link.send(kind + _pack_addr(addr[1], addr[2]) + data)

    async def housekeeping(self) -> None:
        await super().housekeeping()
        if self.link is not None:
            self.link.send(b"S" + pickle.dumps(_counters(self)))
        if os.getppid() != self.boot["ppid"]:
            self.request_exit()

    async def shutdown(self) -> None:
        if self.config.location.mode == "write-back":
            await self.flush_location()
        for task in list(self._tasks):
            task.cancel()
        if self.link is not None:
            self.link.send(b"S" + pickle.dumps(_counters(self)))
        await self._close_quietly()


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> int:
    _die_with_parent()
    boot = json.loads(sys.stdin.buffer.read() or b"{}")
    if not boot:
        print("sipd.workers: started by sipd itself ([server] workers); not meant to be run by hand", file=sys.stderr)
        return 2
    if os.getppid() != boot["ppid"]:
        return 0
    from pathlib import Path

    from . import config as cfg
    from . import logging as sipd_logging

    conf, problems = cfg.from_dict(boot["config"])
    if problems:
        print(f"sipd worker {boot['index']}: configuration: {problems[0]}", file=sys.stderr)
        return 1
    conf.source = Path(boot["source"]) if boot.get("source") else None
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
