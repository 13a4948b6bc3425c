"""The statistics registry: counters and gauges named ``group:name`` as in OpenSIPS
(``core:rcv_requests``, ``tm:UAS_transactions`` ...), so an operator's dashboards keep their names.

One ``Statistics`` object lives in the ServerState. The SIP hot path only touches ``Counter.inc``
(one attribute add, no lock: the daemon is a single asyncio thread). The management interface,
``sipctl monitor``, ``sipctl stats collect`` and the Prometheus endpoint all read from here.

Semantics follow OpenSIPS ``list_statistics``: counters are "incremental" and can be reset;
gauges are "non-incremental" and are not reset (a gauge backed by a function reads live state).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

__all__ = ["Counter", "Gauge", "Statistics", "StatsError", "prometheus_text", "selected"]

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+:[A-Za-z0-9_.\-]+$")


class StatsError(ValueError):
    """A statistic name is malformed or already registered with another kind."""


class Counter:
    """A monotonically increasing value (reset only by an operator)."""

    __slots__ = ("name", "value")
    kind = "incremental"

    def __init__(self, name: str):
        self.name = name
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n

    def reset(self) -> None:
        self.value = 0


class Gauge:
    """A level: set/inc/dec by its owner, or read live from ``fn`` when one is given."""

    __slots__ = ("name", "_value", "fn")
    kind = "non-incremental"

    def __init__(self, name: str, fn: Callable[[], int] | None = None):
        self.name = name
        self._value = 0
        self.fn = fn

    @property
    def value(self) -> int:
        if self.fn is not None:
            try:
                return int(self.fn())
            except Exception:  # a broken reader must not break get_statistics for everyone
                return 0
        return self._value

    def set(self, v: int) -> None:
        self._value = int(v)

    def inc(self, n: int = 1) -> None:
        self._value += n

    def dec(self, n: int = 1) -> None:
        self._value -= n

    def reset(self) -> None:
        """Gauges are not reset (OpenSIPS "no-reset"): they describe current state."""


Stat = Counter | Gauge


class Statistics:
    """The registry. Names are ``group:name``; registering the same name twice returns the same
    object (so modules can call ``counter()`` at import or start without coordination)."""

    def __init__(self) -> None:
        self._stats: dict[str, Stat] = {}

    def _check(self, name: str) -> None:
        if not _NAME_RE.match(name):
            raise StatsError(f"bad statistic name {name!r}: expected group:name")

    def counter(self, name: str) -> Counter:
        stat = self._stats.get(name)
        if stat.__class__ is Counter:  # the usual case, without isinstance()
            return stat  # type: ignore[return-value]
        if stat is None:
            self._check(name)
            stat = self._stats[name] = Counter(name)
        if not isinstance(stat, Counter):
            raise StatsError(f"statistic {name} is already a gauge")
        return stat

    def gauge(self, name: str, fn: Callable[[], int] | None = None) -> Gauge:
        stat = self._stats.get(name)
        if stat is None:
            self._check(name)
            stat = self._stats[name] = Gauge(name, fn)
        if not isinstance(stat, Gauge):
            raise StatsError(f"statistic {name} is already a counter")
        if fn is not None:
            stat.fn = fn
        return stat

    def __contains__(self, name: str) -> bool:
        return name in self._stats

    def names(self) -> list[str]:
        return list(self._stats)

    def groups(self) -> list[str]:
        return sorted({n.split(":", 1)[0] for n in self._stats})

    def match(self, pattern: str) -> list[Stat]:
        """Stats selected by ``pattern`` (see :func:`selected`)."""
        if ":" in pattern and not pattern.endswith(":"):
            stat = self._stats.get(pattern)
            return [stat] if stat is not None else []
        return [s for n, s in self._stats.items() if selected(n, pattern)]

    def get(self, pattern: str | Iterable[str]) -> dict[str, int]:
        """Values of the selected stats, in registration order; unknown names are left out."""
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        out: dict[str, int] = {}
        for p in patterns:
            for stat in self.match(p):
                out[stat.name] = stat.value
        return out

    def kinds(self, pattern: str | Iterable[str] = "all") -> dict[str, str]:
        """``name -> "incremental" | "non-incremental"`` (list_statistics)."""
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        return {s.name: s.kind for p in patterns for s in self.match(p)}

    def reset(self, name_or_group: str | Iterable[str]) -> int:
        """Reset the selected counters to 0; returns how many stats matched."""
        patterns = [name_or_group] if isinstance(name_or_group, str) else list(name_or_group)
        n = 0
        for p in patterns:
            for stat in self.match(p):
                stat.reset()
                n += 1
        return n


def selected(name: str, pattern: str) -> bool:
    """Whether ``pattern`` -- ``all``, ``group:`` or ``group:name`` -- selects the statistic
    ``name``; a bare ``name`` matches it in any group, as OpenSIPS accepts ``get_statistics
    rcv_requests``."""
    if pattern == "all":
        return True
    if pattern.endswith(":"):
        return name.startswith(pattern)
    if ":" in pattern:
        return name == pattern
    return name.split(":", 1)[1] == pattern


_PROM_BAD = re.compile(r"[^a-zA-Z0-9_]")


def prometheus_text(stats: Statistics, prefix: str = "sipd") -> str:
    """Prometheus exposition format 0.0.4: ``sipd_<group>_<name>`` with a TYPE line each
    (OpenSIPS prometheus module's group_mode 1)."""
    lines: list[str] = []
    for name in sorted(stats.names()):
        stat = stats._stats[name]
        group, short = name.split(":", 1)
        metric = _PROM_BAD.sub("_", f"{prefix}_{group}_{short}")
        kind = "counter" if isinstance(stat, Counter) else "gauge"
        lines.append(f"# TYPE {metric} {kind}")
        lines.append(f"{metric} {stat.value}")
    return "\n".join(lines) + "\n"
