"""Overload protection that spares the legitimate: when there is more to do than time to do it,
the requests of strangers are shed first.

A per-source limit (antiflood) stops one noisy address; a botnet spreads its packets over many
addresses, each below the limit. What it cannot fake cheaply is being *known*: an address that
authenticated (a REGISTER or a call with the right password) or is in ``[antiflood]
trusted_networks``. Every UDP request datagram is sorted before it is parsed:

1. responses never reach the gate (they belong to our own transactions);
2. requests from known addresses, and in-dialog requests (a To tag: they continue something we
   let in), always pass;
3. initial requests from unknown addresses pass while the server keeps up; they are shed (dropped
   unread, or answered 503 with Retry-After when ``reply_503`` is set) when

   * more of them arrive than ``unknown_rate`` per second (a token bucket with a burst of one
     second's worth): a bound on the work strangers can cause, which keeps the receive queue
     short, so a known endpoint's packet is not dropped by the kernel behind a flood's;
   * a UDP socket's receive queue holds more than ``max_receive_queue`` of its buffer (probed
     every 50 ms): the kernel would soon drop datagrams whoever sent them; for ``hold`` seconds;
   * the event loop lags more than ``max_loop_lag`` seconds behind (probed every 50 ms; three
     probes in a row, while strangers keep arriving), for ``hold`` seconds after that;
   * ``[limits] max_transactions`` transactions are live.

What was shed is counted (``overload:shed_requests``, ``overload:shed_503``), with the gauges
``overload:known_sources``, ``overload:saturated`` and ``overload:loop_lag_ms`` (the last probe),
in the statistics that ``sipctl stats``/``monitor`` and Prometheus read.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from .config import OverloadSection

PROBE_INTERVAL = 0.05  # seconds between two loop-lag probes
PROBE_START = 2.0  # seconds after the start before the first (startup itself lags the loop)
LAGGED_PROBES = 3  # lagging probes in a row that make the process saturated
STRANGERS = 1000  # ... while initial requests from unknown sources arrive at this rate per second

# a To header with a tag: an in-dialog request (long and compact form, any case)
_IN_DIALOG = re.compile(rb"\n(?:to|t)[ \t]*:[^\n]*;[ \t]*tag[ \t]*=", re.IGNORECASE)


class OverloadGate:
    """The decision for one datagram (``admit``), the known addresses and the lag probe. Pure apart
    from ``start`` (times are passed in)."""

    def __init__(self, cfg: OverloadSection, *, trusted: Any = (), transactions: Callable[[], int] = lambda: 0,
                 max_transactions: int = 0):
        self.cfg = cfg
        self.trusted = trusted
        self.transactions = transactions
        self.max_transactions = max_transactions
        self.known: dict[str, float] = {}  # address -> known until
        self.on_new: Callable[[str, float], None] | None = None  # a newly known address (workers share it)
        self._tokens = float(cfg.unknown_rate)
        self._last = 0.0
        self.saturated_until = 0.0
        self.lag = 0.0
        self.fill = 0.0
        self._lagging = 0  # probes in a row that found the loop lagging
        self._strangers = 0  # initial requests from unknown sources since the last probe
        self.shed = 0
        self.shed_503 = 0
        self.c_shed: Any = None  # the statistics' counters (summed over the worker processes)
        self.c_shed_503: Any = None

    # -- known addresses --

    def note_known(self, host: str, now: float, *, notify: bool = True) -> None:
        """``host`` authenticated at ``now``."""
        known = self.known
        ttl = self.cfg.known_ttl
        old = known.get(host)
        if old is not None and old - now > ttl / 2:
            return  # renewed (and announced) once it is half way: one update per half lifetime
        until = now + ttl
        self._remember(host, until)
        if notify and self.on_new is not None:
            self.on_new(host, until)

    def learn(self, host: str, until: float) -> None:
        """Another process's ``note_known``."""
        if until > self.known.get(host, 0.0):
            self._remember(host, until)

    def _remember(self, host: str, until: float) -> None:
        known = self.known
        known.pop(host, None)  # re-inserted: the dict's order is the order of renewal
        known[host] = until
        if len(known) > self.cfg.max_known:
            known.pop(next(iter(known)))

    def is_known(self, host: str, now: float) -> bool:
        until = self.known.get(host)
        return (until is not None and until > now) or host in self.trusted

    # -- the decision --

    def admit(self, data: bytes, host: str, now: float) -> bool:
        """May this request datagram from ``host`` be parsed? False: shed it."""
        if not self.cfg.enabled:
            return True
        until = self.known.get(host)
        if until is not None and until > now:
            return True
        if host in self.trusted or _IN_DIALOG.search(data, 0, 4096) is not None:
            return True
        self._strangers += 1
        rate = self.cfg.unknown_rate
        tokens = self._tokens + (now - self._last) * rate
        self._last = now
        if tokens > rate:
            tokens = rate
        if tokens < 1.0 or now < self.saturated_until or (
                self.max_transactions and self.transactions() >= self.max_transactions):
            self._tokens = tokens
            self.shed += 1
            if self.c_shed is not None:
                self.c_shed.inc()
            return False
        self._tokens = tokens - 1.0
        return True

    def saturated(self, now: float) -> bool:
        return now < self.saturated_until or self._tokens < 1.0

    def queue_filled(self, fill: float, now: float) -> None:
        """A UDP socket's receive queue holds ``fill`` of its buffer: past ``max_receive_queue`` the
        kernel is about to drop datagrams, a known endpoint's as readily as a flood's."""
        self.fill = fill
        if fill > self.cfg.max_receive_queue:
            self.saturated_until = now + self.cfg.hold

    def lagged(self, lag: float, interval: float, now: float) -> None:
        """A probe ran ``lag`` seconds late, ``interval`` seconds after the one before. Lag counts
        when strangers keep arriving (at least STRANGERS per second): whether the loop is behind
        from its own work or from waiting for a CPU other processes hold, reading them is what
        can be given up. A loop that paused once (a collection, a reload), or lags while only
        known sources talk, is not shed."""
        self.lag = lag
        strangers, self._strangers = self._strangers, 0
        if lag > self.cfg.max_loop_lag and strangers >= STRANGERS * max(interval, PROBE_INTERVAL):
            self._lagging += 1
            if self._lagging >= LAGGED_PROBES:
                self.saturated_until = now + self.cfg.hold
        else:
            self._lagging = 0

    def stats(self, now_fn: Callable[[], float]) -> dict[str, Callable[[], float]]:
        return {
            "overload:known_sources": lambda: len(self.known),
            "overload:saturated": lambda: int(self.saturated(now_fn())),
            "overload:loop_lag_ms": lambda: round(self.lag * 1000, 1),
            "overload:receive_queue_pct": lambda: round(self.fill * 100, 1),
            "overload:transactions": lambda: self.transactions(),  # live, against [limits] max_transactions
        }
