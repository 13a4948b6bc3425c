"""Accounting and dialog tracking in the daemon: listens to ``state.events``, stores records.

The decisions are in ``dialogs.py`` (pure): the tracker turns call events into compact *facts*.
This module is the I/O around it:
- The writer (``acc_writer.py``) turns facts into rows and stores them, batched, spooling them
  while the database is unreachable. ``[acc] writer = "process"`` (default): it runs in a child
  process, ``WriterProcess`` here only pickles the facts of each loop iteration onto a pipe;
  ``"thread"``: ``AccWriter`` on a thread of the daemon (``ThreadWriter``).
- ``Accounting``: the service object (``state.dialogs``): feeds the tracker from call events,
  ends dialogs whose lifetime is over (BYE both ways, CDR "Dialog Timeout"), and ends a dialog on
  operator request (``dlg_end_dlg``: BYE both ways, or CANCEL while early).

What a crash can lose (records = acc / missed_calls / cdrs / dialog rows):
- ``kill -9`` of sipd with the process writer: the facts of the loop iteration in progress (not yet
  written to the pipe), and whatever the pipe could not take (only when the child is more than the
  pipe's capacity behind -- 1 MiB; with uvloop a socket pair, up to net.core.wmem_max -- the rest waits
  in the daemon's memory). Everything already in the pipe is written (or spooled) by the child,
  which ends when it has read it all.
- ``kill -9`` of the writer (child or, with the thread writer, the daemon): the records it had
  received but not yet committed or spooled -- at most the batch being written plus the queue
  (records wait ``LINGER`` = 50 ms, up to ``BATCH_SIZE``, before a transaction).
- Nothing that reached the database or the spool file (fsync'd) is lost; a restart replays the
  spool before loading the persisted dialogs.

Started by the daemon with ``await accounting.start(state, endpoint, transactions)`` (the endpoint
implements the service's ports), stopped with ``await state.dialogs.close()``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import sys
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..boundary import describe
from .acc_writer import BATCH_SIZE, LINGER, AccWriter, coalesce, lock_spool, write_records
from .cdr import DIALOG_TIMEOUT, MI_TERMINATION
from .dialogs import Dialog, DlgState, Tracker, default_ids, expand
from .spool import Spool, spool_path, sqlite_file
from .takeover import Ownership

if TYPE_CHECKING:
    from ..db import Database
    from ..state import ServerState
    from .ports import CallControl, Destinations, Endpoint, Hop, Listeners, Scheduler, Transactions, Transmitter

logger = logging.getLogger("sipd.acc")

TICK = 1.0            # seconds between lifetime checks
STOP_TIMEOUT = 15.0   # seconds the daemon waits for the writer process to finish on shutdown
RESPAWN_DELAY = 1.0   # seconds before a writer process that died is started again
SELF_ROUTE_CACHE = 256


# -- the writers, as the service sees them --------------------------------------------------------


class ThreadWriter:
    """``AccWriter`` on a thread of the daemon (``[acc] writer = "thread"``)."""

    def __init__(self, writer: AccWriter, owner: str = ""):
        self.writer = writer
        self.owner = owner
        self._lock: int | None = None

    async def open(self) -> list[dict[str, Any]]:
        # the spool's lock, as the writer process holds it: no other writer (a survivor replaying
        # what it takes for a dead node's spool) touches the file while this one may append to it
        self._lock = await asyncio.to_thread(lock_spool, str(self.writer.spool.path))
        rows = await asyncio.to_thread(self.writer.startup, True, self.owner)
        self.writer.start()
        return rows

    def put(self, facts: list[tuple]) -> None:
        self.writer.put(facts)

    def stats(self) -> dict[str, Any]:
        return self.writer.stats()

    async def close(self) -> None:
        await asyncio.to_thread(self.writer.stop)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


_BOOT = ("import sys; sys.path.insert(0, {root!r}); "
         "from sipd.services.acc_writer import child_main; sys.exit(child_main())")


class WriterProcess:
    """The writer in a child process (acc_writer.py has the protocol). The event loop's part:
    collect the facts of one loop iteration, pickle them as one frame onto the child's stdin
    (a non-blocking pipe: the transport buffers when it is full), read statistics and log lines
    back. A child that dies is started again and gets the facts it had not confirmed again: the
    child reports how many facts it has handled (stored, spooled or given up on) in its statistics
    frames, and the facts sent after that stay here until then. (One that died between a commit
    and its next report may store a batch twice; none is lost.)"""

    def __init__(self, init: dict[str, Any]):
        self.init = init
        self.proc: asyncio.subprocess.Process | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple] = []
        self._scheduled = False
        self._live = False
        self._closing = False
        self._eof = False      # stdin closed: the child is finishing
        self._ended = False    # the child has exited at shutdown: late facts go to the spool here
        self._ready: asyncio.Future | None = None
        self._reader: asyncio.Task | None = None
        self._respawner: asyncio.Task | None = None
        self._stats: dict[str, Any] = {}
        self._base: dict[str, int] = {}   # totals of children that ended (restarts)
        self._inflight: deque[tuple] = deque()  # facts the current child has not confirmed yet
        self._confirmed = 0                     # facts the current child has confirmed
        self.restarts = 0

    async def open(self) -> list[dict[str, Any]]:
        self._loop = asyncio.get_running_loop()
        return await self._spawn(load_dialogs=True)

    async def _spawn(self, load_dialogs: bool) -> list[dict[str, Any]]:
        assert self._loop is not None
        root = str(Path(__file__).resolve().parents[2])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _BOOT.format(root=root), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=None, close_fds=True)
        self.proc = proc
        _grow_pipe(proc.stdin)
        self._ready = self._loop.create_future()
        self._reader = self._loop.create_task(self._read(proc, self._ready))
        self._write(dict(self.init, load_dialogs=load_dialogs))
        rows = await self._ready
        self._live = True
        self._flush()  # facts queued while it started
        return rows

    def put(self, facts: list[tuple]) -> None:
        self._pending += facts
        if not self._scheduled:
            self._scheduled = True
            # at the end of this loop iteration: one frame for all its events. (A 10 ms timer
            # instead saved no measurable loop CPU and would widen what a kill -9 loses.)
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        if self._ended:
            self._spool_here()
        elif self._live and not self._eof:
            facts, self._pending = self._pending, []
            self._write(facts)
            self._inflight.extend(facts)

    def _spool_here(self) -> None:
        """Facts that arrive once the child has finished (a call ending while sipd shuts down, or
        a child that was down at shutdown): no child holds the spool any more, so this process
        appends their records to it itself; the next start replays them."""
        facts, self._pending = self._pending, []
        try:
            Spool(self.init["spool"]).append(expand(facts))
            logger.warning("accounting: %d facts after the writer process ended spooled to %s",
                           len(facts), self.init["spool"])
        except Exception as exc:  # noqa: BLE001 - OSError, or a fact that cannot be expanded
            logger.error("accounting: %d facts after the writer process ended are lost: %s", len(facts), exc)

    def _write(self, obj: Any) -> None:
        data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.write(len(data).to_bytes(4, "big") + data)  # type: ignore[union-attr]

    async def _read(self, proc: asyncio.subprocess.Process, ready: asyncio.Future) -> None:
        stdout = proc.stdout
        assert stdout is not None
        try:
            while True:
                head = await stdout.readexactly(4)
                msg = pickle.loads(await stdout.readexactly(int.from_bytes(head, "big")))
                kind = msg[0]
                if kind == "stats":
                    self._stats = msg[1]
                    self._confirm(int(msg[1].get("consumed", 0)))
                elif kind == "log":
                    logger.log(msg[1], "%s", msg[2])
                elif kind == "ready" and not ready.done():
                    ready.set_result(msg[1])
        except (asyncio.IncompleteReadError, pickle.UnpicklingError, EOFError, ValueError, IndexError):
            pass
        rc = await proc.wait()
        self._live = False
        for key in ("written", "transactions", "spooled", "replayed", "lost"):
            self._base[key] = self._base.get(key, 0) + int(self._stats.get(key, 0))
        self._stats = {}
        if not ready.done():
            ready.set_exception(RuntimeError(f"the accounting writer process ended at start (exit {rc})"))
            return
        again = self._take_back()
        if not self._closing:
            logger.error("accounting writer process ended unexpectedly (exit %s); starting it again "
                         "(%d facts it had not confirmed go to the new one)", rc, again)
            self._respawner = asyncio.get_running_loop().create_task(self._respawn())

    def _confirm(self, consumed: int) -> None:
        """The child has handled its first ``consumed`` facts: forget them here."""
        inflight = self._inflight
        for _ in range(min(consumed - self._confirmed, len(inflight))):
            inflight.popleft()
        self._confirmed = max(self._confirmed, consumed)

    def _take_back(self) -> int:
        """The child ended: what it had not confirmed goes before what waits for the next one."""
        n = len(self._inflight)
        if n:
            self._pending[:0] = self._inflight
            self._inflight.clear()
        self._confirmed = 0
        return n

    async def _respawn(self) -> None:
        for _ in range(1_000_000):
            await asyncio.sleep(RESPAWN_DELAY)
            if self._closing:
                return
            try:
                await self._spawn(load_dialogs=False)
                self.restarts += 1
                return
            except Exception as exc:  # noqa: BLE001 - keep trying; facts wait in memory
                logger.error("accounting writer process cannot start: %s", exc)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self._stats)
        for key, base in self._base.items():
            out[key] = out.get(key, 0) + base
        out["restarts"] = self.restarts
        return out

    async def close(self) -> None:
        self._closing = True
        if self._respawner is not None:
            self._respawner.cancel()
        self._flush()
        proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            self._eof = True
            proc.stdin.close()  # EOF once the buffered frames are written: the child finishes and exits
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except (asyncio.TimeoutError, TimeoutError):
            logger.error("accounting writer process still busy after %.0f s; killing it (records it held "
                         "are lost)", STOP_TIMEOUT)
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5.0)
            except (asyncio.TimeoutError, TimeoutError):
                self._reader.cancel()
        self._take_back()  # a child killed before it finished: what it had not confirmed
        self._ended = True
        if self._pending:  # queued while the child finished, or it was down at shutdown
            self._spool_here()


def _grow_pipe(stdin: Any) -> None:
    """More room before the daemon has to buffer: a 1 MiB pipe (Linux default 64 KiB); uvloop
    gives the child a socket pair instead, whose send buffer the kernel caps (net.core.wmem_max)."""
    try:
        transport = stdin.transport
        pipe = transport.get_extra_info("pipe")
        if pipe is not None:
            import fcntl

            fcntl.fcntl(pipe.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    except Exception:  # noqa: BLE001 - not Linux, or above the limits: the default will do
        pass


# -- the service ----------------------------------------------------------------------------------


class Accounting:
    """``state.dialogs``: the tracker, the writer, and the actions (BYE/CANCEL) on dialogs."""

    def __init__(self, state: ServerState, *, scheduler: Scheduler, transactions: Transactions, listeners: Listeners,
                 hop: Hop, destinations: Destinations, transmitter: Transmitter, calls: CallControl):
        cfg = state.config
        self.state = state
        self.scheduler = scheduler
        self.transactions = transactions
        self.listeners = listeners
        self.hop = hop
        self.destinations = destinations
        self.transmitter = transmitter
        self.calls = calls
        self.acc_on = cfg.acc.enabled
        self.dialogs_on = cfg.dialog.enabled
        lifetime = cfg.dialog.lifetime if self.dialogs_on else 0.0
        self.node_id = cfg.cluster.node_id
        start_ms = int(time.time() * 1000)
        # each acc record named node/start/number: stored once however often it is written
        self.tracker = Tracker(lifetime=lifetime, acc=self.acc_on, dialogs=self.dialogs_on,
                               ids=default_ids(start_ms), is_self_route=self._is_self_route,
                               owner=self.node_id, records=f"{self.node_id or '-'}/{start_ms}/")
        url = cfg.acc.db_url or cfg.database.url
        timeout = cfg.database.connect_timeout
        spool = spool_path(cfg)
        self.writer: ThreadWriter | WriterProcess
        if cfg.acc.writer == "thread":
            self.writer = ThreadWriter(self._thread_writer(), self.node_id)
        else:
            self.writer = WriterProcess({
                "url": url, "timeout": timeout, "spool": spool, "retry_interval": cfg.acc.retry_interval,
                "user": cfg.server.user, "group": cfg.server.group, "writable": _writable(url, spool),
                "log_level": logging.getLogger("sipd").getEffectiveLevel(), "stop_timeout": STOP_TIMEOUT - 3,
                "owner": self.node_id,
            })
        # [cluster] node_id with dialogs: who holds each call, and the takeover of a dead node's
        self.ownership: Ownership | None = None
        self._offset = 0.0
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._self_routes: dict[str, bool] = {}
        self._processed: Any = None
        self._failed: Any = None

    def _thread_writer(self) -> AccWriter:
        cfg = self.state.config
        url = cfg.acc.db_url or cfg.database.url
        timeout = cfg.database.connect_timeout

        def connect() -> Database:
            from ..db import connect as db_connect

            return db_connect(url, timeout=timeout)

        return AccWriter(connect, Spool(spool_path(cfg)), retry_interval=cfg.acc.retry_interval, expand=expand)

    # -- lifecycle --------------------------------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._offset = time.time() - self._loop.time()
        try:
            rows = await self.writer.open()
        except Exception as exc:  # noqa: BLE001 - cannot start a process here: keep accounting anyway
            logger.error("accounting: the writer process cannot start (%s); writing from a thread instead", exc)
            await self.writer.close()
            self.writer = ThreadWriter(self._thread_writer(), self.node_id)
            rows = await self.writer.open()
        if self.dialogs_on:
            n = self.tracker.restore(rows)
            if n:
                logger.info("dialogs: %d calls restored from the database", n)
        elif rows:
            logger.info("dialogs: tracking disabled; %d persisted dialogs ignored", len(rows))
        stats = self.state.stats
        stats.gauge("dialog:active_dialogs", lambda: self.tracker.counts()[0])
        stats.gauge("dialog:early_dialogs", lambda: self.tracker.counts()[1])
        for name in ("dialog:processed_dialogs", "dialog:expired_dialogs", "dialog:failed_dialogs"):
            stats.counter(name)
        self._processed = stats.counter("dialog:processed_dialogs")
        self._failed = stats.counter("dialog:failed_dialogs")
        stats.gauge("acc:spooled_records", lambda: self.writer.stats().get("spooled", 0))
        stats.gauge("acc:written_records", lambda: self.writer.stats().get("written", 0))
        stats.gauge("acc:db_transactions", lambda: self.writer.stats().get("transactions", 0))
        stats.gauge("acc:lost_records", lambda: self.writer.stats().get("lost", 0))
        stats.gauge("acc:writer_restarts",
                    lambda: self.writer.stats().get("restarts", 0) + self.writer.stats().get("thread_restarts", 0))
        self.state.events.subscribe(self.on_event)
        cfg = self.state.config
        if self.dialogs_on and self.node_id and self.state.db is not None:
            if cfg.acc.db_url and cfg.acc.db_url != cfg.database.url:  # the dialog rows are not where the nodes meet
                logger.warning("dialogs: no takeover between nodes: [acc] db_url is not [database] url")
            else:
                self.ownership = Ownership(self, self.state.db, cfg.cluster)
                self.ownership.start()
        if self.dialogs_on and self.tracker.lifetime > 0:
            self.start_timers()

    def start_timers(self) -> None:
        """Check the dialogs' lifetimes every second (from the start with ``[dialog] lifetime``, or
        once dialogs with a lifetime are taken over from another node)."""
        if self._task is None and self._loop is not None:
            self._task = self._loop.create_task(self._ticker())

    async def close(self) -> None:
        if self.ownership is not None:
            await self.ownership.stop()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.writer.close()

    # -- events -----------------------------------------------------------------------------------

    def wall(self, now: float) -> float:
        return now + self._offset

    def on_event(self, ev: Any) -> None:
        request = ev.request
        if request is None:
            return
        method = request.method
        if method not in _CALL_METHODS:
            return
        kind = ev.kind
        tracker = self.tracker
        if kind == "request":
            before = len(tracker.dialogs)
            if method == "BYE" and self.ownership is not None:
                self.ownership.on_bye(request, ev.now + self._offset)
            facts = tracker.on_request(request, ev.tx_key, ev.now + self._offset,
                                       _via_source(request) if method == "INVITE" else "")
            if len(tracker.dialogs) > before:
                self._processed.inc()
        elif kind == "response":
            facts = tracker.on_response(request, ev.response, ev.tx_key, ev.now + self._offset)
            if facts and method == "INVITE" and ev.response.status >= 300:
                self._failed.inc()
        else:
            return
        if facts:
            self.writer.put(facts)

    # -- actions ----------------------------------------------------------------------------------

    def find(self, key: str) -> Dialog | None:
        return self.tracker.find(key)

    def end(self, dlg: Dialog, reason: str = MI_TERMINATION) -> str:
        """End a dialog: BYE to both sides when confirmed, CANCEL while early. Returns what was done."""
        now = self.scheduler.time()
        if dlg.answered is None:
            dlg.end_reason = reason
            if dlg.invite_tx is not None and self.calls.cancel_invite(dlg.call_id, dlg.invite_tx):
                return "cancelled"
            return "not-found"
        dlg.end_reason = reason
        for to_callee in (True, False):
            try:
                self._send_bye(dlg, to_callee, now)
            except Exception as exc:  # noqa: BLE001 - one side unreachable: still end the call
                logger.warning("dialog %s: cannot send BYE to the %s: %s", dlg.id,
                               "callee" if to_callee else "caller", exc)
        self.transmitter.transmit()
        records = self.tracker.end(dlg, self.wall(now), reason)
        if records:
            self.writer.put(records)
        logger.info("dialog %s (Call-ID %s) ended: %s", dlg.id, dlg.call_id, reason)
        return "terminated"

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                if self.ownership is not None:
                    await self.ownership.expire()  # only the calls this node still holds
                else:
                    self.expire()
            except Exception:  # noqa: BLE001 - keep ticking
                logger.error("dialog lifetime check failed", exc_info=True)

    def due(self) -> list[Dialog]:
        """Confirmed dialogs whose lifetime is over."""
        assert self._loop is not None
        return self.tracker.due(self.wall(self._loop.time()))

    def expire(self, due: list[Dialog] | None = None) -> int:
        """End the dialogs past their lifetime (``due``: those of them this node holds)."""
        due = self.due() if due is None else due
        for dlg in due:
            self.state.stats.counter("dialog:expired_dialogs").inc()
            self.end(dlg, DIALOG_TIMEOUT)
        return len(due)

    def _send_bye(self, dlg: Dialog, to_callee: bool, now: float) -> None:
        from ..sip.headers import parse_name_addr
        from ..sip.message import make_request

        destinations = self.destinations
        if to_callee:
            target, routes = dlg.callee_contact or dlg.callee, dlg.callee_route_set
            frm, to = f"<{dlg.caller}>;tag={dlg.from_tag}", f"<{dlg.callee}>;tag={dlg.to_tag}"
            dlg.caller_cseq += 1
            cseq = dlg.caller_cseq
            addr = ""
        else:
            target, routes = dlg.caller_contact or dlg.caller, dlg.caller_route_set
            frm, to = f"<{dlg.callee}>;tag={dlg.to_tag}", f"<{dlg.caller}>;tag={dlg.from_tag}"
            dlg.callee_cseq = max(dlg.callee_cseq + 1, 1)
            cseq = dlg.callee_cseq
            addr = dlg.caller_addr
        headers = [("From", frm), ("To", to), ("Call-ID", dlg.call_id), ("CSeq", f"{cseq} BYE")]
        headers += [("Route", r) for r in routes]
        headers.append(("Reason", f'SIP;cause=200;text="{dlg.end_reason or "Call Terminated"}"'))
        req = make_request("BYE", target, headers=headers)
        dest: tuple | None
        if routes:
            dest = destinations.dest_from_uri(parse_name_addr(routes[0]).uri)
        elif addr:
            proto, rest = addr.split(":", 1)
            host, _, port = rest.rpartition(":")
            dest = destinations.reuse_connection((proto, host.strip("[]"), int(port), None))
        else:
            dest = destinations.dest_from_uri(req.uri)
        if dest is None:
            raise ValueError(f"no address for {target}")
        self.hop.add_via(req, self.listeners.listener_for(dest), "00000000")
        self.transactions.send_request(req, dest, now)

    def _is_self_route(self, value: str) -> bool:
        """Record-Route value names this server? Cached: the same few values come with every call."""
        cache = self._self_routes
        hit = cache.get(value)
        if hit is not None:
            return hit
        from ..sip.headers import parse_name_addr
        from .pipeline import is_self

        try:
            mine = bool(is_self(self.state, parse_name_addr(value).uri))
        except Exception:  # noqa: BLE001 - a malformed Record-Route is not ours
            mine = False
        if len(cache) >= SELF_ROUTE_CACHE:
            cache.clear()
        cache[value] = mine
        return mine


_CALL_METHODS = frozenset({"INVITE", "BYE", "CANCEL", "ACK"})


def _writable(url: str, spool: str) -> list[str]:
    """Files the writer process keeps writing (handed to [server] user when it drops root)."""
    sqlite = sqlite_file(url)
    return [spool, sqlite] if sqlite else [spool]


def _via_source(request: Any) -> str:
    """Where the request came from, as its responses are sent (top Via, received/rport)."""
    try:
        via = request.vias[0]
    except Exception:  # noqa: BLE001
        return ""
    host, port = via.response_address()
    return describe((via.transport.lower(), host, port))


async def start(state: ServerState, endpoint: Endpoint, transactions: Transactions) -> Accounting | None:
    """Create and open the service when [acc] or [dialog] is enabled; sets ``state.dialogs``.
    ``endpoint`` implements the service's ports, ``transactions`` (the layer) sends its BYEs."""
    cfg = state.config
    if not (cfg.acc.enabled or cfg.dialog.enabled):
        return None
    service = Accounting(state, scheduler=endpoint, transactions=transactions, listeners=endpoint, hop=endpoint,
                         destinations=endpoint, transmitter=endpoint, calls=endpoint)
    await service.open()
    state.dialogs = service
    return service


__all__ = ["BATCH_SIZE", "LINGER", "AccWriter", "Accounting", "DlgState", "ThreadWriter", "WriterProcess", "coalesce",
           "start", "write_records"]
