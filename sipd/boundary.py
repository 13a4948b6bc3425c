"""Where an unexpected exception stops: the edges of the event loop's callbacks.

Everything the network can send is meant to be rejected by the core with a status or dropped, so
an exception that reaches one of these edges is a bug. It must never stop the service: a
datagram callback, a stream callback, the transaction timer, an event handler or a send that
raises loses that one message, and sipd goes on with the next one. Each edge (a *site*) is:

- **caught** where the callback is entered (udp/stream receive, the timer, event dispatch, send,
  and the loop's own exception handler for anything else scheduled on it);
- **counted** as the statistic ``errors:<site>`` (``sipctl stats errors:``, Prometheus);
- **logged once** with its traceback and the source of the message that caused it, per distinct
  (site, exception type, place in the code); repeats are counted and logged at debug level, so a
  hostile sender repeating the same bytes cannot fill the disk.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from .sip.uri import format_host

logger = logging.getLogger("sipd.errors")

#: The edges that catch; each one is a statistic ``errors:<site>`` listed at 0 from the start.
SITES = ("udp_receive", "stream_receive", "timer", "event", "send", "loop_callback")

#: Distinct failures remembered for "log once" (beyond it every new one is logged at debug level).
MAX_SEEN = 1024


def _where(exc: BaseException) -> str:
    """The innermost frame of the traceback: "file:line" (what makes two failures the same bug)."""
    tb = exc.__traceback__
    if tb is None:
        return "?"
    last = traceback.extract_tb(tb)[-1]
    return f"{last.filename}:{last.lineno}"


def describe(source: Any) -> str:
    """``("udp", "192.0.2.1", 5060, None)`` -> ``udp:192.0.2.1:5060``; anything else as text."""
    if isinstance(source, tuple) and len(source) >= 3:
        return f"{source[0]}:{format_host(str(source[1]))}:{source[2]}"
    return "" if source is None else str(source)


class Boundaries:
    """Counts and logs what the edges catch. ``stats``: the server's statistics registry; ``loop``:
    the event loop whose exception handler this becomes (both optional)."""

    def __init__(self, stats: Any = None, loop: Any = None):
        self._counters = {site: stats.counter(f"errors:{site}") for site in SITES} if stats is not None else {}
        self._seen: set[tuple[str, str, str]] = set()
        self.total = 0
        if loop is not None:  # what escapes any other callback the loop runs
            loop.set_exception_handler(self.loop_handler)

    def caught(self, site: str, exc: BaseException, source: Any = None, what: str = "") -> None:
        """One exception stopped at ``site``: count it; log it with its traceback the first time."""
        self.total += 1
        counter = self._counters.get(site)
        if counter is not None:
            counter.inc()
        key = (site, type(exc).__name__, _where(exc))
        origin = describe(source)
        text = f"{what or site} failed" + (f" (message from {origin})" if origin else "")
        if key in self._seen or len(self._seen) >= MAX_SEEN:
            logger.debug("%s: %s: %s (again)", text, type(exc).__name__, exc)
            return
        self._seen.add(key)
        logger.error("%s; sipd goes on (counted in errors:%s, logged once per place in the code)", text, site,
                     exc_info=(type(exc), exc, exc.__traceback__))

    def loop_handler(self, loop: Any, context: dict[str, Any]) -> None:
        """``loop.set_exception_handler``: whatever escaped a callback the loop ran itself."""
        exc = context.get("exception")
        if exc is None:  # a warning of the loop's own ("Task was destroyed but it is pending")
            loop.default_exception_handler(context)
            return
        self.caught("loop_callback", exc, None, str(context.get("message") or "event loop callback"))


_UNWIRED = Boundaries()  # for a sink that has none of its own (a test's stand-in)


def caught(owner: Any, site: str, exc: BaseException, source: Any = None, what: str = "") -> None:
    """Report to ``owner.boundary`` (the server); transports call this with their sink."""
    (getattr(owner, "boundary", None) or _UNWIRED).caught(site, exc, source, what)
