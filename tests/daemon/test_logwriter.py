"""sipd/logwriter.py: records written by a thread of their own, alike lines aggregated, the
fail2ban line never."""

from __future__ import annotations

import logging
import threading

from sipd.logwriter import Aggregator, BackgroundHandler


class Collect(logging.Handler):
    def __init__(self, block: threading.Event | None = None):
        super().__init__()
        self.lines: list[tuple[str, str]] = []
        self.block = block

    def emit(self, record):
        if self.block is not None:
            self.block.wait(10)
        self.lines.append((record.name, record.getMessage()))


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def record(name, msg, args, line=10, level=logging.INFO):
    r = logging.LogRecord(name, level, "/x/server.py", line, msg, args, None)
    r._alike = tuple(a for a in args if isinstance(a, int))
    return r


def test_alike_lines_are_counted_beyond_the_burst_and_summed_up_when_the_window_ends():
    out, clock = Collect(), Clock()
    agg = Aggregator(out, window=10.0, burst=3, clock=clock)
    for i in range(100):
        agg.handle(record("sipd", "REGISTER %s from %s -> %d", (f"u{i}", f"10.0.0.{i}", 401)))
    agg.handle(record("sipd", "REGISTER %s from %s -> %d", ("alice", "10.1.1.1", 200)))  # not alike: a 200
    agg.handle(record("sipd.security", "auth failed: user=%s", ("x",)))
    for _ in range(10):
        agg.handle(record("sipd.security", "auth failed: user=%s", ("x",)))
    assert len(out.lines) == 3 + 1 + 11  # the fail2ban line is written every time
    clock.now = 10.5
    agg.flush_due()
    assert out.lines[-1] == ("sipd", "... and 97 similar lines in the last 10 s (last: REGISTER u99 from 10.0.0.99 -> 401)")
    agg.flush_due()
    assert len(out.lines) == 16  # said once


def test_while_the_writer_is_busy_records_queue_and_a_stuck_sink_never_blocks_the_caller():
    gate = threading.Event()
    sink = Collect(block=gate)
    h = BackgroundHandler(sink, queue_size=10)
    log = logging.getLogger("sipd.test_logwriter")
    log.propagate = False
    log.addHandler(h)
    try:
        with h._lock:  # the writer thread is busy writing (held up by the sink)
            for i in range(50):
                log.warning("line %d", i)
        assert h.lost == 40 and sink.lines == []  # queued up to the bound, the rest counted; nothing waited
        gate.set()
        h.flush()
        assert ("sipd.test_logwriter", "line 0") in sink.lines and ("sipd.test_logwriter", "line 9") in sink.lines
        assert any("log writer behind: 40 lines were not written" in text for _, text in sink.lines)
    finally:
        log.removeHandler(h)
        h.close()


def test_a_traceback_is_kept_with_its_record():
    sink = Collect()
    h = BackgroundHandler(sink)
    log = logging.getLogger("sipd.test_logwriter2")
    log.propagate = False
    log.addHandler(h)
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed %s", "here")
        h.flush()
        assert sink.lines == [("sipd.test_logwriter2", "failed here")]
    finally:
        log.removeHandler(h)
        h.close()
