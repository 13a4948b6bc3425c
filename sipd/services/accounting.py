"""Accounting and dialog tracking in the daemon: listens to ``state.events``, stores records.

The decisions are in ``dialogs.py`` (pure). This module is the I/O around it:
- ``AccWriter``: one worker thread with its own database connection. Records are queued by the
  event loop (a deque append, never blocking) and written in batches, one transaction per batch.
  When the database fails, the batch goes to the spool file (``spool.py``, fsync'd) and so does
  everything after it, to keep the order; every ``retry_interval`` the writer tries to replay the
  spool, and once it is empty writes go to the database again. At start the spool is replayed
  before the persisted dialogs are loaded.
- ``Accounting``: the service object (``state.dialogs``): feeds the tracker from call events,
  ends dialogs whose lifetime is over (BYE both ways, CDR "Dialog Timeout"), and ends a dialog on
  operator request (``dlg_end_dlg``: BYE both ways, or CANCEL while early).

Start/stop from ``sipd/server.py``: ``await accounting.start(server)`` and
``await state.dialogs.close()``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cdr import DIALOG_TIMEOUT, MI_TERMINATION, Record
from .dialogs import Dialog, DlgState, Tracker, default_ids
from .spool import Spool

if TYPE_CHECKING:
    from ..db import Database
    from ..server import Server

logger = logging.getLogger("sipd.acc")

TICK = 1.0            # seconds between lifetime checks
BATCH_SIZE = 500      # records per database transaction
LINGER = 0.05         # seconds the writer waits for more records before a transaction


def default_spool_path(db_url: str) -> str:
    """Beside the SQLite file; else the service's state directory."""
    import os

    if db_url.startswith("sqlite:///") and ":memory:" not in db_url:
        return str(Path("/" + db_url[len("sqlite:///"):].lstrip("/")).parent / "acc.spool")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/spool/sipd/acc.spool"
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return f"{base}/sipd/acc.spool"


# -- the writer -----------------------------------------------------------------------------------


def coalesce(records: list[Record]) -> list[Record]:
    """Drop dialog rows inserted and deleted within the same batch (short calls): same end state."""
    deleted = {r.row["dlg_id"] for r in records if r.op == "delete" and r.table == "dialog"}
    if not deleted:
        return records
    upserted = {r.row["dlg_id"] for r in records if r.op == "upsert" and r.table == "dialog"}
    both = deleted & upserted
    if not both:
        return records
    return [r for r in records if not (r.table == "dialog" and r.row["dlg_id"] in both)]


MULTI_ROW = 100  # rows per multi-row INSERT statement


def write_records(db: Database, records: list[Record]) -> None:
    """Store ``records`` in one transaction (blocking). Raises sipd.db.DbError.

    Consecutive inserts into the same table become multi-row INSERTs (one statement per
    ``MULTI_ROW`` rows): far fewer round trips on MySQL and less Python work on SQLite.
    """
    records = coalesce(records)
    with db.transaction():
        i = 0
        n = len(records)
        while i < n:
            r = records[i]
            if r.op == "insert":
                cols = tuple(r.row)
                j = i + 1
                while j < n and j - i < MULTI_ROW and records[j].op == "insert" and records[j].table == r.table \
                        and tuple(records[j].row) == cols:
                    j += 1
                one = "(" + ", ".join("?" * len(cols)) + ")"
                params: list[Any] = []
                for rec in records[i:j]:
                    params.extend(rec.row[c] for c in cols)
                db.execute(f"INSERT INTO {r.table} ({', '.join(cols)}) VALUES " + ", ".join([one] * (j - i)), params)
                i = j
                continue
            if r.op == "upsert":  # the dialog row, keyed by dlg_id (portable: delete + insert)
                db.execute(f"DELETE FROM {r.table} WHERE dlg_id = ?", (r.row["dlg_id"],))
                cols = tuple(r.row)
                db.execute(f"INSERT INTO {r.table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                           [r.row[c] for c in cols])
            elif r.op == "delete":
                db.execute(f"DELETE FROM {r.table} WHERE dlg_id = ?", (r.row["dlg_id"],))
            i += 1


class AccWriter:
    """Batches records to the database on a worker thread; spools them when it is unreachable.

    Args:
        connect: () -> Database, called on the worker thread (again after a failure).
        spool: where records go while the database is down.
        retry_interval: seconds between attempts to reach the database again.
        clock: monotonic clock (tests inject one).
    """

    def __init__(self, connect: Callable[[], Database], spool: Spool, *, retry_interval: float = 2.0,
                 batch_size: int = BATCH_SIZE, linger: float = LINGER,
                 clock: Callable[[], float] = time.monotonic):
        self._connect = connect
        self.spool = spool
        self.retry_interval = retry_interval
        self.batch_size = batch_size
        self.linger = linger
        self._clock = clock
        self._db: Database | None = None
        self._queue: deque[Record] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.db_down = False
        self._next_retry = 0.0
        # statistics (read by the event loop; ints are updated atomically enough for counters)
        self.written = 0          # records committed to the database
        self.transactions = 0     # database transactions (batches) committed
        self.spooled = 0          # records appended to the spool
        self.replayed = 0         # records replayed from the spool
        self.lost = 0             # records neither stored nor spooled (spool unwritable)

    # -- event-loop side --------------------------------------------------------------------------

    def put(self, records: list[Record]) -> None:
        """Queue records (never blocks on I/O)."""
        with self._cond:
            self._queue.extend(records)
            self._cond.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sipd-acc", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write (or spool) what is queued, then end the thread and close the connection. Blocking."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            rest = list(self._queue)
            self._queue.clear()
        if rest:  # the thread did not finish in time: keep the records anyway
            self._spool(rest)
        self._close_db()

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- worker side ------------------------------------------------------------------------------

    def startup(self) -> list[dict[str, Any]]:
        """Replay the spool and load the persisted dialogs (blocking; before ``start()``).

        Returns the ``dialog`` rows ([] when the database cannot be read).
        """
        self.replay()
        if self.db_down:
            return []
        try:
            db = self._database()
            return db.query("SELECT * FROM dialog")
        except Exception as exc:  # noqa: BLE001 - DbError or driver trouble: start without them
            logger.error("accounting: cannot load persisted dialogs: %s", _msg(exc))
            self._failed()
            return []

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._stop:
                    wait = self.retry_interval if self.db_down else None
                    self._cond.wait(wait)
                if self._queue and self.linger > 0:  # let a batch build up: one transaction for many calls
                    deadline = time.monotonic() + self.linger
                    for _ in range(1000):
                        left = deadline - time.monotonic()
                        if left <= 0 or self._stop or len(self._queue) >= self.batch_size:
                            break
                        self._cond.wait(left)
                batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                stopping = self._stop and not self._queue
            try:
                self.step(batch)
            except Exception:  # noqa: BLE001 - the writer must survive anything
                logger.error("accounting writer: unexpected error", exc_info=True)
                self._spool(batch)
            if stopping:
                return

    def step(self, batch: list[Record]) -> None:
        """Handle one batch (worker thread; called directly by tests)."""
        if self.db_down or self.spool.pending():
            self._spool(batch)
            if self._clock() >= self._next_retry:
                self.replay()
            return
        if not batch:
            return
        try:
            write_records(self._database(), batch)
        except Exception as exc:  # noqa: BLE001 - DbError, or the driver failing in an odd way
            logger.error("accounting: database write failed (%d records spooled to %s): %s",
                         len(batch), self.spool.path, _msg(exc))
            self._failed()
            self._spool(batch)
            return
        self.written += len(batch)
        self.transactions += 1

    def replay(self) -> bool:
        """Replay the spool into the database, in order. True when the spool is empty afterwards."""
        if not self.spool.pending():
            self.db_down = False
            return True
        done = 0
        try:
            db = self._database()
            for records, offset in self.spool.chunks(self.batch_size):
                if records:
                    write_records(db, records)
                self.spool.commit(offset)
                done += len(records)
                self.replayed += len(records)
                self.written += len(records)
                self.transactions += 1
        except Exception as exc:  # noqa: BLE001
            if done:
                logger.warning("accounting: replayed %d spooled records, then: %s", done, _msg(exc))
            else:
                logger.debug("accounting: database still unavailable: %s", _msg(exc))
            self._failed()
            return False
        self.spool.clear()
        self.db_down = False
        logger.warning("accounting: database back, %d spooled records replayed", done)
        return True

    def _database(self) -> Database:
        if self._db is None:
            self._db = self._connect()
        return self._db

    def _failed(self) -> None:
        if not self.db_down:
            logger.warning("accounting: database unavailable; spooling records to %s", self.spool.path)
        self.db_down = True
        self._next_retry = self._clock() + self.retry_interval
        self._close_db()

    def _close_db(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except Exception:  # noqa: BLE001
                pass
            self._db = None

    def _spool(self, records: list[Record]) -> None:
        if not records:
            return
        try:
            self.spool.append(records)
            self.spooled += len(records)
        except OSError as exc:
            self.lost += len(records)
            logger.error("accounting: cannot write the spool %s, %d records lost: %s",
                         self.spool.path, len(records), exc.strerror or exc)


def _msg(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


# -- the service ----------------------------------------------------------------------------------


class Accounting:
    """``state.dialogs``: the tracker, the writer, and the actions (BYE/CANCEL) on dialogs."""

    def __init__(self, server: Server):
        cfg = server.config
        self.server = server
        self.acc_on = cfg.acc.enabled
        self.dialogs_on = cfg.dialog.enabled
        lifetime = cfg.dialog.lifetime if self.dialogs_on else 0.0
        self.tracker = Tracker(lifetime=lifetime, acc=self.acc_on, dialogs=self.dialogs_on,
                               ids=default_ids(int(time.time() * 1000)), is_self_route=self._is_self_route)
        url = cfg.acc.db_url or cfg.database.url
        timeout = cfg.database.connect_timeout

        def connect() -> Database:
            from ..db import connect as db_connect

            return db_connect(url, timeout=timeout)

        self.writer = AccWriter(connect, Spool(cfg.acc.spool or default_spool_path(url)),
                                retry_interval=cfg.acc.retry_interval)
        self._offset = 0.0
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    async def open(self) -> None:
        server = self.server
        self._loop = asyncio.get_running_loop()
        self._offset = time.time() - self._loop.time()
        rows = await asyncio.to_thread(self.writer.startup)
        if self.dialogs_on:
            n = self.tracker.restore(rows)
            if n:
                logger.info("dialogs: %d calls restored from the database", n)
        elif rows:
            logger.info("dialogs: tracking disabled; %d persisted dialogs ignored", len(rows))
        self.writer.start()
        stats = server.state.stats
        stats.gauge("dialog:active_dialogs", lambda: self.tracker.counts()[0])
        stats.gauge("dialog:early_dialogs", lambda: self.tracker.counts()[1])
        for name in ("dialog:processed_dialogs", "dialog:expired_dialogs", "dialog:failed_dialogs"):
            stats.counter(name)
        stats.gauge("acc:spooled_records", lambda: self.writer.spooled)
        stats.gauge("acc:written_records", lambda: self.writer.written)
        stats.gauge("acc:db_transactions", lambda: self.writer.transactions)
        server.state.events.subscribe(self.on_event)
        if self.dialogs_on and self.tracker.lifetime > 0:
            self._task = self._loop.create_task(self._ticker())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await asyncio.to_thread(self.writer.stop)

    # -- events -----------------------------------------------------------------------------------

    def wall(self, now: float) -> float:
        return now + self._offset

    def on_event(self, ev: Any) -> None:
        request = ev.request
        if request is None or request.method not in ("INVITE", "BYE", "CANCEL", "ACK"):
            return
        wall = self.wall(ev.now)
        tracker = self.tracker
        if ev.kind == "request":
            before = len(tracker.dialogs)
            records = tracker.on_request(request, ev.tx_key, wall, _via_source(request))
            if len(tracker.dialogs) > before:
                self.server.state.stats.counter("dialog:processed_dialogs").inc()
        elif ev.kind == "response":
            records = tracker.on_response(request, ev.response, ev.tx_key, wall)
            if request.method == "INVITE" and ev.response.status >= 300 and records:
                self.server.state.stats.counter("dialog:failed_dialogs").inc()
        else:
            return
        if records:
            self.writer.put(records)

    # -- actions ----------------------------------------------------------------------------------

    def find(self, key: str) -> Dialog | None:
        return self.tracker.find(key)

    def end(self, dlg: Dialog, reason: str = MI_TERMINATION) -> str:
        """End a dialog: BYE to both sides when confirmed, CANCEL while early. Returns what was done."""
        server = self.server
        now = server.loop.time()
        if dlg.answered is None:
            dlg.end_reason = reason
            proxy = server.proxy
            if dlg.invite_tx is not None and proxy is not None and proxy.on_cancel(dlg.invite_tx, now):
                server.transmit()
                return "cancelled"
            return "not-found"
        dlg.end_reason = reason
        for to_callee in (True, False):
            try:
                self._send_bye(dlg, to_callee, now)
            except Exception as exc:  # noqa: BLE001 - one side unreachable: still end the call
                logger.warning("dialog %s: cannot send BYE to the %s: %s", dlg.id,
                               "callee" if to_callee else "caller", exc)
        server.transmit()
        records = self.tracker.end(dlg, self.wall(now), reason)
        if records:
            self.writer.put(records)
        logger.info("dialog %s (Call-ID %s) ended: %s", dlg.id, dlg.call_id, reason)
        return "terminated"

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.expire()
            except Exception:  # noqa: BLE001 - keep ticking
                logger.error("dialog lifetime check failed", exc_info=True)

    def expire(self) -> int:
        assert self._loop is not None
        due = self.tracker.due(self.wall(self._loop.time()))
        for dlg in due:
            self.server.state.stats.counter("dialog:expired_dialogs").inc()
            self.end(dlg, DIALOG_TIMEOUT)
        return len(due)

    def _send_bye(self, dlg: Dialog, to_callee: bool, now: float) -> None:
        from ..sip.headers import parse_name_addr
        from ..sip.message import make_request

        server = self.server
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
            dest = server.dest_from_uri(parse_name_addr(routes[0]).uri)
        elif addr:
            proto, rest = addr.split(":", 1)
            host, _, port = rest.rpartition(":")
            dest = server.reuse_connection((proto, host.strip("[]"), int(port), None))
        else:
            dest = server.dest_from_uri(req.uri)
        if dest is None:
            raise ValueError(f"no address for {target}")
        server.add_via(req, server.listener_for(dest), "00000000")
        server.layer.send_request(req, dest, now)

    def _is_self_route(self, value: str) -> bool:
        from ..sip.headers import parse_name_addr
        from .pipeline import is_self

        try:
            return is_self(self.server.state, parse_name_addr(value).uri)
        except Exception:  # noqa: BLE001 - a malformed Record-Route is not ours
            return False


def _via_source(request: Any) -> str:
    """Where the request came from, as its responses are sent (top Via, received/rport)."""
    try:
        via = request.vias[0]
    except Exception:  # noqa: BLE001
        return ""
    host = via.params.get("received") or via.host
    rport = via.params.get("rport")
    port = int(rport) if rport and rport.isdigit() else (via.port or 5060)
    h = f"[{host}]" if ":" in host else host
    return f"{via.transport.lower()}:{h}:{port}"


async def start(server: Server) -> Accounting | None:
    """Create and open the service when [acc] or [dialog] is enabled; sets ``state.dialogs``."""
    cfg = server.config
    if not (cfg.acc.enabled or cfg.dialog.enabled):
        return None
    service = Accounting(server)
    await service.open()
    server.state.dialogs = service
    return service


__all__ = ["AccWriter", "Accounting", "DlgState", "start", "write_records"]
