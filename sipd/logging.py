"""Logging setup for the daemon: one place that configures handlers.

Loggers: ``sipd`` (operational, one line per decision at info level), ``sipd.trace`` (whole SIP
messages at the TRACE level, enabled by ``[log] sip_trace``), ``sipd.acc`` (accounting).
Destination: stderr (colour only on a TTY) or syslog with a facility and ident (the report's
``log_facility=LOG_LOCAL1``). Modules only call ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

_SYSLOG_SOCKETS = ("/dev/log", "/var/run/syslog")


class _Formatter(logging.Formatter):
    """``2026-01-01 12:00:00 INFO  message``; level coloured when writing to a terminal."""

    COLOURS = {"ERROR": "31", "CRITICAL": "31", "WARNING": "33", "INFO": "32", "DEBUG": "36", "TRACE": "35"}

    def __init__(self, colour: bool):
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S")
        self.colour = colour

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging API)
        text = super().formatMessage(record)
        if self.colour:
            code = self.COLOURS.get(record.levelname)
            if code:
                name = record.levelname
                text = text.replace(name, f"\x1b[{code}m{name}\x1b[0m", 1)
        return text


class RecentProblems(logging.Handler):
    """Keeps the last warnings and errors in memory for ``sipctl doctor`` (mgmt ``log_recent``),
    whatever the log destination (stderr, syslog, journald)."""

    def __init__(self, maxlen: int = 200):
        super().__init__(logging.WARNING)
        from collections import deque

        self.records: deque[tuple[float, str, str]] = deque(maxlen=maxlen)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append((record.created, record.levelname, record.getMessage()))
        except Exception:  # a bad format string in a log call must not break logging
            self.handleError(record)


RECENT = RecentProblems()


def level_of(name: str) -> int:
    return _LEVELS.get(name.lower(), logging.INFO)


def configure(config: Config, *, stream=None) -> None:
    """Install the handlers for ``sipd`` from ``[log]``; idempotent (replaces earlier handlers)."""
    root = logging.getLogger("sipd")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    handler: logging.Handler
    if config.log.destination == "syslog":
        address = next((p for p in _SYSLOG_SOCKETS if os.path.exists(p)), ("127.0.0.1", 514))
        facility = logging.handlers.SysLogHandler.facility_names.get(
            config.log.facility.lower().removeprefix("log_"), logging.handlers.SysLogHandler.LOG_LOCAL1
        )
        handler = logging.handlers.SysLogHandler(address=address, facility=facility)
        handler.setFormatter(logging.Formatter(f"{config.log.ident}[%(process)d]: %(levelname)s %(message)s"))
    else:
        out = stream or sys.stderr
        handler = logging.StreamHandler(out)
        handler.setFormatter(_Formatter(colour=hasattr(out, "isatty") and out.isatty()))
    if stream is None:  # the daemon: written by a thread of its own, alike lines aggregated
        from .logwriter import BackgroundHandler

        handler = BackgroundHandler(handler)
    root.addHandler(handler)
    root.addHandler(RECENT)
    root.propagate = False
    set_level(config.log.level)
    trace = logging.getLogger("sipd.trace")
    trace.setLevel(TRACE if config.log.sip_trace else logging.WARNING)


def set_level(name: str) -> None:
    """Change the operational log level at run time (mgmt ``log_level``)."""
    logging.getLogger("sipd").setLevel(level_of(name))


def counted(n: int, noun: str) -> str:
    """``1 domain``, ``2 domains``: a count for a log line, in words an operator reads aloud."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
