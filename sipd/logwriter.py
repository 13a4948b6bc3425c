"""Logging that cannot hurt the event loop: records are handed to a writer thread, and repeated
lines are aggregated there.

* ``BackgroundHandler`` is the only handler on the event loop's side: it resolves the message
  (``getMessage``; a traceback is formatted at once, while it still exists). When the writer
  thread is idle and nothing is queued, the line is written at once (so it is in the log before
  the answer it describes leaves); otherwise -- lines piling up, or the sink slow (a full syslog
  socket, a stalled disk) -- the record goes on a bounded queue and the writer thread writes it,
  never the loop. When the queue is full the record is dropped and counted; the writer says how
  many were lost once it catches up.
* In the writer thread, lines that are alike -- the same logger, level and format string, and the
  same numbers among their arguments (a status code), so "REGISTER x@d from a -> 401" and the
  same for another user and address are alike, but a 200 and a 401 are not -- are written up to
  ``burst`` times per ``window`` seconds; beyond that they are counted and summed up when the
  window ends: "... and 4,812 similar lines in the last 10 s (last: <the last one>)".
* Records of the loggers in ``EXACT`` are never aggregated: the ``auth failed:`` line is counted
  by fail2ban line by line, and a SIP trace is asked for message by message.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

EXACT = ("sipd.security", "sipd.trace", "sipd.acc")  # loggers written line for line
WINDOW = 10.0  # seconds over which alike lines are counted
BURST = 50  # alike lines written per window before they are only counted
QUEUE_SIZE = 20000  # records waiting for the writer at most


class BackgroundHandler(logging.Handler):
    """Hands records to a writer thread that passes them to ``target`` (the real handler)."""

    def __init__(self, target: logging.Handler, *, window: float = WINDOW, burst: int = BURST,
                 queue_size: int = QUEUE_SIZE, clock=time.monotonic):
        super().__init__()
        self.target = target
        self.queue: queue.Queue[logging.LogRecord | None] = queue.Queue(queue_size)
        self.aggregator = Aggregator(target, window=window, burst=burst, clock=clock)
        self.lost = 0
        self._lock = threading.Lock()  # held by whoever writes (the writer thread, or the caller when it is idle)
        self._thread = threading.Thread(target=self._run, name="sipd-log-writer", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            args = record.args  # the numbers among them (a status code) tell alike lines apart
            record._alike = tuple(a for a in args if isinstance(a, int)) if isinstance(args, tuple) else ()  # type: ignore[attr-defined]
            record.msg = record.getMessage()  # resolved now: its arguments may change later
            record.args = None
            if record.exc_info:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
                record.exc_info = None
            # unfinished_tasks, not empty(): a record the writer has taken off the queue but not yet
            # written still counts, so a line written inline never overtakes an earlier one.
            if not self.queue.unfinished_tasks and self._lock.acquire(blocking=False):
                try:  # the writer is idle and nothing waits: written now, in order
                    self.aggregator.handle(record)
                finally:
                    self._lock.release()
                return
            self.queue.put_nowait(record)
        except queue.Full:
            self.lost += 1
        except Exception:  # noqa: BLE001 - a bad format string must not break the caller
            self.handleError(record)

    def _run(self) -> None:
        q, agg = self.queue, self.aggregator
        while True:
            try:
                record = q.get(timeout=1.0)
            except queue.Empty:
                record = False  # type: ignore[assignment]
            if record is None:
                q.task_done()
                break
            try:
                with self._lock:
                    self._write(record)
            except Exception:  # noqa: BLE001 - the writer thread must not die on one record
                pass
            if record is not False:
                q.task_done()
        with self._lock:
            agg.flush_all()

    def _write(self, record: logging.LogRecord | bool) -> None:
        agg = self.aggregator
        if self.lost:
            lost, self.lost = self.lost, 0
            agg.write_line(logging.WARNING, f"log writer behind: {lost:,} lines were not written")
        if record:
            agg.handle(record)  # type: ignore[arg-type]
        agg.flush_due()

    def flush(self) -> None:
        """Wait (bounded) until what was queued is written."""
        deadline = time.monotonic() + 5.0
        while self.queue.unfinished_tasks and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        self.target.flush()

    def close(self) -> None:
        if self._thread.is_alive():
            try:
                self.queue.put(None, timeout=2.0)
            except queue.Full:
                pass
            self._thread.join(timeout=5.0)
        self.target.close()
        super().close()


class Aggregator:
    """The writer thread's side: pass records to ``target``, alike ones at most ``burst`` per window."""

    def __init__(self, target: logging.Handler, *, window: float, burst: int, clock=time.monotonic):
        self.target = target
        self.window = window
        self.burst = burst
        self.clock = clock
        self._keys: dict[Any, list] = {}  # key -> [window start, written, suppressed, last suppressed record]
        self._next_flush = 0.0

    @staticmethod
    def key(record: logging.LogRecord) -> Any:
        args = getattr(record, "_alike", None)
        return (record.name, record.levelno, record.pathname, record.lineno, args)

    def handle(self, record: logging.LogRecord) -> None:
        if record.name.startswith(EXACT):
            self.target.handle(record)
            return
        now = self.clock()
        k = self.key(record)
        slot = self._keys.get(k)
        if slot is None or now - slot[0] >= self.window:
            if slot is not None:
                self._summary(slot)
            slot = self._keys[k] = [now, 0, 0, None]
        if slot[1] < self.burst:
            slot[1] += 1
            self.target.handle(record)
        else:
            slot[2] += 1
            slot[3] = record

    def flush_due(self) -> None:
        now = self.clock()
        if now < self._next_flush:
            return
        self._next_flush = now + 1.0
        for k, slot in list(self._keys.items()):
            if now - slot[0] >= self.window:
                self._summary(slot)
                del self._keys[k]

    def flush_all(self) -> None:
        for slot in self._keys.values():
            self._summary(slot)
        self._keys.clear()

    def _summary(self, slot: list) -> None:
        n, last = slot[2], slot[3]
        if n:
            slot[2] = 0
            self.write_line(last.levelno, f"... and {n:,} similar lines in the last {self.window:g} s"
                                          f" (last: {last.getMessage()})", name=last.name)

    def write_line(self, level: int, text: str, name: str = "sipd") -> None:
        self.target.handle(logging.LogRecord(name, level, __file__, 0, text, None, None))
