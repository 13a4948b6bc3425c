"""The accounting writer: stores records in the database, spools them while it is unreachable.

``AccWriter`` is one worker thread with its own database connection. Items are queued (a deque
append, never blocking) and written in batches, one transaction per batch. When the database
fails, the batch goes to the spool file (``spool.py``, fsync'd) and so does everything after it,
to keep the order; every ``retry_interval`` the writer tries to replay the spool, and once it is
empty writes go to the database again. At start the spool is replayed before the persisted
dialogs are loaded.

By default the writer runs in a child process (``python -m sipd.services.acc_writer``, started
and fed by ``accounting.WriterProcess``) so that neither the row building nor the database
driver (PyMySQL is pure Python) takes CPU or the GIL from the daemon's event loop. The child's
protocol, on its stdin/stdout pipes: frames of a 4-byte big-endian length and a pickle.

- parent -> child: first the settings (a dict: database URL, spool, retry interval, user/group
  to become, whether to load the persisted dialogs and whose), then lists of *facts* (dialogs.py).
- child -> parent: ``("ready", dialog_rows)`` once the spool is replayed and the dialogs loaded,
  then ``("stats", {...})`` after batches and ``("log", levelno, text)`` for its log lines.
- End: EOF on stdin -- the daemon closed the pipe on shutdown, or died (kill -9): the child
  reads everything still in the pipe, writes it (or spools it), and exits. It ignores SIGINT,
  SIGTERM and SIGHUP (a Ctrl-C or a service manager signalling the whole group must not cut the
  flush short); the daemon waits for it on shutdown and kills it only after ``STOP_TIMEOUT``.
- Two children never write at once: each holds an exclusive ``flock`` on ``<spool>.lock`` for
  its life, and a new one (a daemon restarted after kill -9) waits (bounded) for the old one to
  finish before replaying the spool and loading the dialogs.
  The daemon holds the same lock with ``[acc] writer = "thread"``. A node replaying the spool a
  dead node left beside its own (``replay_left_spool``) takes the lock without waiting.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .cdr import Record
from .spool import Spool

if TYPE_CHECKING:
    from ..db import Database

logger = logging.getLogger("sipd.acc")

BATCH_SIZE = 500      # records per database transaction
LINGER = 0.05         # seconds the writer waits for more records before a transaction
MULTI_ROW = 100       # rows per multi-row INSERT statement
LOCK_WAIT = 30.0      # seconds a new child waits for the previous one to finish
STATS_EVERY = 0.2     # seconds between statistics frames while busy


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


#: What an insert adds so that a row whose unique key is taken is skipped, not an error (on a table
#: from before the key, nothing changes: every row is stored): a CDR's key is its dialog, an acc or
#: missed_calls row's its record_id.
_IF_ABSENT = {"sqlite": " ON CONFLICT DO NOTHING", "mysql": " ON DUPLICATE KEY UPDATE id = id"}
_KEYED = frozenset({"cdrs", "acc", "missed_calls"})


def write_records(db: Database, records: list[Record]) -> None:
    """Store ``records`` in one transaction (blocking). Raises sipd.db.DbError.

    Inserts are grouped by table (and columns), in their order within each table, into multi-row
    INSERTs of up to ``MULTI_ROW`` rows: a few statements per batch whatever the mix of acc, cdrs
    and missed_calls rows (far fewer round trips on MySQL, less Python work on SQLite). The
    ``dialog`` upserts and deletes run after them, in their order.

    A CDR whose dialog already has one (its unique key: Call-ID, From and To tags) is not stored
    again: the same batch replayed from the spool or given again to a new writer process, or the
    call ended by two nodes (the node that held it, and the one a BYE reached after the holder was
    taken for dead), leaves one CDR, the first stored. An acc or missed_calls row already stored
    under its ``record_id`` is skipped alike.
    """
    records = coalesce(records)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    dialog_ops: list[Record] = []
    for r in records:
        if r.op == "insert":
            key = (r.table, *r.row)
            rows = groups.get(key)
            if rows is None:
                groups[key] = [r.row]
            else:
                rows.append(r.row)
        else:
            dialog_ops.append(r)

    def write(db: Database) -> None:
        for (table, *cols), rows in groups.items():
            one = "(" + ", ".join("?" * len(cols)) + ")"
            head = f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
            tail = _IF_ABSENT[db.dialect] if table in _KEYED else ""
            for k in range(0, len(rows), MULTI_ROW):
                chunk = rows[k:k + MULTI_ROW]
                params: list[Any] = []
                for row in chunk:
                    params.extend(row.values())
                db.execute(head + ", ".join([one] * len(chunk)) + tail, params)
        for r in dialog_ops:
            if r.op == "upsert":  # the dialog row, keyed by dlg_id (portable: delete + insert)
                db.execute(f"DELETE FROM {r.table} WHERE dlg_id = ?", (r.row["dlg_id"],))
                cols = tuple(r.row)
                db.execute(f"INSERT INTO {r.table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                           list(r.row.values()))
            elif r.op == "delete":
                db.execute(f"DELETE FROM {r.table} WHERE dlg_id = ?", (r.row["dlg_id"],))

    # run again whole if another node's write wins (Galera); SQLite never loses one
    db.run_transaction(write)


class AccWriter:
    """Batches records to the database on a worker thread; spools them when it is unreachable.

    Args:
        connect: () -> Database, called on the worker thread (again after a failure).
        spool: where records go while the database is down.
        retry_interval: seconds between attempts to reach the database again.
        clock: monotonic clock (tests inject one).
        expand: turns the queued items into ``Record``s on the worker thread (facts -> records,
            ``dialogs.expand``); None when records are queued.
        on_progress: called on the worker thread after each batch (statistics reporting).
    """

    def __init__(self, connect: Callable[[], Database], spool: Spool, *, retry_interval: float = 2.0,
                 batch_size: int = BATCH_SIZE, linger: float = LINGER,
                 clock: Callable[[], float] = time.monotonic,
                 expand: Callable[[list[Any]], list[Record]] | None = None,
                 on_progress: Callable[[], None] | None = None):
        self._connect = connect
        self.spool = spool
        self.retry_interval = retry_interval
        self.batch_size = batch_size
        self.linger = linger
        self._clock = clock
        self._expand = expand
        self._on_progress = on_progress
        self._db: Database | None = None
        self._queue: deque[Any] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.db_down = False
        self._next_retry = 0.0
        # statistics (read by other threads; ints are updated atomically enough for counters)
        self.written = 0          # records committed to the database
        self.transactions = 0     # database transactions (batches) committed
        self.spooled = 0          # records appended to the spool
        self.replayed = 0         # records replayed from the spool
        self.lost = 0             # records neither stored nor spooled (spool unwritable)
        self.restarts = 0         # times the worker thread was found dead and started again
        self.consumed = 0         # items taken from the queue and handled (stored, spooled or lost)

    # -- producer side ----------------------------------------------------------------------------

    def put(self, items: list[Any]) -> None:
        """Queue records (or facts, with ``expand``); never blocks on I/O."""
        thread = self._thread
        if thread is not None and not thread.is_alive():
            if self._stop:  # after stop(): nobody will write them; spool them now (next start replays)
                self._spool(self._expand_each(items))
                return
            self._restart()
        with self._cond:
            queue = self._queue
            was_empty = not queue
            queue.extend(items)
            # wake the worker when it waits for a first item, or when a batch is full; not for
            # every put while it lingers (each wake-up is a thread switch and a GIL hand-over)
            if was_empty or len(queue) >= self.batch_size:
                self._cond.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sipd-acc", daemon=True)
        self._thread.start()

    def _restart(self) -> None:
        """The worker thread ended by a failure ``_run`` could not catch: start a new one. The
        queue is this object's, so what waited in it is written by the new thread."""
        self.restarts += 1
        logger.error("accounting writer thread had stopped; starting it again (%d records queued)", len(self._queue))
        self.start()

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
            self._spool(self._expand_each(rest))
            self.consumed += len(rest)
        if self._thread is None or not self._thread.is_alive():
            self._close_db()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def stats(self) -> dict[str, Any]:
        return {"written": self.written, "transactions": self.transactions, "spooled": self.spooled,
                "replayed": self.replayed, "lost": self.lost, "db_down": self.db_down, "queued": self.queued,
                "thread_restarts": self.restarts, "consumed": self.consumed}

    # -- worker side ------------------------------------------------------------------------------

    def startup(self, load_dialogs: bool = True, owner: str = "") -> list[dict[str, Any]]:
        """Replay the spool and load the persisted dialogs (blocking; before ``start()``): with
        ``owner`` (a node of a cluster) only the rows of that node, else every row.

        Returns the ``dialog`` rows ([] when the database cannot be read).
        """
        self.replay()
        if self.db_down or not load_dialogs:
            return []
        try:
            db = self._database()
            if owner:
                return db.query("SELECT * FROM dialog WHERE owner = ?", (owner,))
            return db.query("SELECT * FROM dialog")
        except Exception as exc:  # noqa: BLE001 - DbError or driver trouble: start without them
            logger.error("accounting: cannot load persisted dialogs: %s", _msg(exc))
            self._failed()
            return []

    def _records(self, items: list[Any]) -> list[Record]:
        return self._expand(items) if self._expand is not None else items

    def _expand_each(self, items: list[Any]) -> list[Record]:
        """``_records``; when the batch fails to expand, item by item, so one bad fact costs only
        its own records (counted lost, logged) and never the batch around it."""
        try:
            return self._records(items)
        except Exception:  # noqa: BLE001
            pass
        out: list[Record] = []
        for item in items:
            try:
                out += self._records([item])
            except Exception as exc:  # noqa: BLE001
                self.lost += 1
                logger.error("accounting: a record could not be built and is lost: %r: %s", item, exc,
                             exc_info=self.lost == 1)
        return out

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
            records: list[Record] = []
            try:
                records = self._expand_each(batch)
                self.step(records)
            except Exception:  # noqa: BLE001 - the writer must survive anything
                logger.error("accounting writer: unexpected error", exc_info=True)
                self._spool(records)
            self.consumed += len(batch)
            if self._on_progress is not None:
                try:
                    self._on_progress()
                except Exception:  # noqa: BLE001
                    pass
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
        except Exception as exc:  # noqa: BLE001 - OSError, or a record it cannot hold: the thread goes on
            self.lost += len(records)
            logger.error("accounting: cannot write the spool %s, %d records lost: %s",
                         self.spool.path, len(records), getattr(exc, "strerror", None) or exc)


def _msg(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


# -- the child process ----------------------------------------------------------------------------


def write_frame(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    view = memoryview(len(data).to_bytes(4, "big") + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_frame(stream: Any) -> Any:
    """The next frame from a binary stream; raises EOFError at the end (or a torn frame)."""
    head = stream.read(4)
    if len(head) < 4:
        raise EOFError
    size = int.from_bytes(head, "big")
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


class _Out:
    """Frames to the daemon on the child's original stdout (from two threads; the daemon may be gone)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.lock = threading.Lock()
        self.broken = False

    def send(self, obj: Any) -> None:
        if self.broken:
            return
        with self.lock:
            try:
                write_frame(self.fd, obj)
            except OSError:  # the daemon is gone (kill -9): keep writing the records anyway
                self.broken = True


class _PipeLog(logging.Handler):
    def __init__(self, out: _Out):
        super().__init__()
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            if self.out.broken:  # nobody to hand it to: stderr
                print(f"sipd-acc: {text}", file=sys.stderr)
            else:
                self.out.send(("log", record.levelno, text))
        except Exception:  # noqa: BLE001
            pass


def _become(user: str, group: str, writable: list[str]) -> None:
    """Drop root like the daemon does (sipd.privileges.drop without the module preload)."""
    if not user or os.geteuid() != 0:
        return
    import importlib

    for name in ("fcntl", "traceback"):  # while the interpreter's files are still readable
        importlib.import_module(name)
    from ..privileges import hand_over, preload, resolve
    from .dialogs import uri_of

    uid, gid = resolve(user, group)
    hand_over(list(writable), uid, gid)
    preload()  # every module the writer may import later (the database drivers included)
    uri_of("<sip:warm@up>")
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def _open_lock(spool_path: str) -> int | None:
    path = spool_path + ".lock"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        logger.warning("accounting: cannot open the lock file %s: %s", path, exc.strerror or exc)
        return None


def lock_spool(spool_path: str) -> int | None:
    """Exclusive flock on ``<spool>.lock``, waiting (bounded) for a previous writer to finish."""
    import fcntl

    path = spool_path + ".lock"
    fd = _open_lock(spool_path)
    if fd is None:
        return None
    deadline = time.monotonic() + LOCK_WAIT
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if waited:
                logger.info("accounting: the previous writer finished")
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                logger.warning("accounting: the previous writer still holds %s after %.0f s; going on",
                               path, LOCK_WAIT)
                return fd
            waited = True
            time.sleep(0.05)


def replay_left_spool(spool_path: str, connect: Callable[[], Database]) -> int | None:
    """Replay a spool its node left behind (a dead node's, found beside this node's): under the
    spool's lock, taken without waiting, so it is replayed once, by one node -- not while its own
    writer still runs (a node killed -9 leaves its writer finishing), not by two survivors at once,
    and a node that starts again finds it empty. Returns the records replayed, 0 when there were
    none, None when the lock is held or the database refused them (the next look tries again)."""
    import fcntl

    spool = Spool(spool_path)
    if not spool.pending():
        return 0
    fd = _open_lock(spool_path)
    if fd is None:
        return None
    writer = AccWriter(connect, spool)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        return writer.replayed if writer.replay() else None
    finally:
        writer._close_db()
        os.close(fd)  # releases the lock


def child_main() -> int:
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    out = _Out(os.dup(1))
    os.dup2(2, 1)  # a stray print must not corrupt the frames
    stdin = sys.stdin.buffer
    try:
        init = read_frame(stdin)
    except EOFError:
        return 0
    log = logging.getLogger("sipd")
    log.handlers[:] = [_PipeLog(out)]
    log.setLevel(init.get("log_level", logging.INFO))
    log.propagate = False
    try:
        _become(init.get("user", ""), init.get("group", ""), init.get("writable", []))
    except Exception as exc:  # noqa: BLE001 - PrivilegeError, OSError
        logger.error("accounting writer: cannot drop privileges: %s", exc)
        return 1
    lock_fd = lock_spool(init["spool"])

    from ..db import connect as db_connect
    from .dialogs import expand

    url, timeout = init["url"], init.get("timeout", 5.0)
    last = [0.0]
    writer: AccWriter

    def progress() -> None:
        now = time.monotonic()
        if now - last[0] >= STATS_EVERY or not writer.queued:
            last[0] = now
            out.send(("stats", writer.stats()))

    writer = AccWriter(lambda: db_connect(url, timeout=timeout), Spool(init["spool"]),
                       retry_interval=init.get("retry_interval", 2.0), expand=expand, on_progress=progress)
    rows = writer.startup(load_dialogs=init.get("load_dialogs", True), owner=init.get("owner", ""))
    out.send(("ready", rows))
    writer.start()
    try:
        while True:
            try:
                facts = read_frame(stdin)
            except EOFError:
                break
            writer.put(facts)
    finally:
        writer.stop(timeout=init.get("stop_timeout", 10.0))
        out.send(("stats", writer.stats()))
        if lock_fd is not None:
            os.close(lock_fd)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # do not wait for a writer thread stuck in the driver (its batch is spooled)


if __name__ == "__main__":
    sys.exit(child_main())
