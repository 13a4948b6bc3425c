"""Statistics for sipctl: read/reset from the daemon, the monitor's snapshots and rates, and the
cron collector writing ``stats_history`` (opensips-cp's smonitor, without PHP). No Typer or rich."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import NotFoundError, UsageError
from . import mgmt

#: What ``sipctl stats collect`` stores when no names are given.
DEFAULT_COLLECT = ["core:", "tm:", "sl:", "usrloc:", "registrar:", "dialog:"]

#: The monitor's sections: (title, names), following opensipsctl monitor's screen,
#: plus kamctl's core statistics.
MONITOR_SECTIONS: list[tuple[str, list[str]]] = [
    ("Transaction Statistics", ["tm:UAS_transactions", "tm:UAC_transactions", "tm:inuse_transactions"]),
    ("Stateless Server Statistics", ["sl:sent_replies", "sl:sent_err_replies", "sl:received_ACKs"]),
    ("Core Statistics", ["core:rcv_requests", "core:fwd_requests", "core:rcv_replies", "core:fwd_replies",
                         "core:drop_requests", "core:err_requests"]),
    ("UsrLoc Stats", ["usrloc:"]),
    ("Overload (shed first: unknown sources)", ["overload:"]),
]


def normalize_names(names: list[str]) -> list[str]:
    """Accept ``core:``, ``core:rcv_requests``, ``rcv_requests`` and ``all`` (default: all)."""
    out = [n.strip() for n in names if n.strip()]
    for n in out:
        if not re.match(r"^[A-Za-z0-9_.\-]*:?[A-Za-z0-9_.\-]*$", n):
            raise UsageError(f"not a statistic name: {n!r}", hint="e.g. core:rcv_requests, usrloc: or all")
    return out or ["all"]


def get(config: Any, names: list[str]) -> dict[str, int]:
    return mgmt.call(config, "get_statistics", {"statistics": normalize_names(names)})


def kinds(config: Any, names: list[str]) -> dict[str, str]:
    return mgmt.call(config, "list_statistics", {"statistics": normalize_names(names)})


def reset(config: Any, names: list[str]) -> None:
    mgmt.call(config, "reset_statistics", {"statistics": normalize_names(names)})


# ---------------------------------------------------------------------------------------------
# Monitor


@dataclass
class Snapshot:
    at: float                          # monotonic time the stats were read
    server: str
    uptime: dict[str, str]
    values: dict[str, int]
    kinds: dict[str, str] = field(default_factory=dict)


def snapshot(config: Any) -> Snapshot:
    server = mgmt.call(config, "version").get("Server", "?")
    uptime = mgmt.call(config, "uptime")
    names = sorted({n if n.endswith(":") else n.split(":", 1)[0] + ":" for _, ns in MONITOR_SECTIONS for n in ns})
    try:
        values = mgmt.call(config, "get_statistics", {"statistics": names})
    except NotFoundError:
        values = {}
    return Snapshot(time.monotonic(), server, uptime, values)


def rates(prev: Snapshot | None, cur: Snapshot) -> dict[str, float]:
    """Per-second change of each value between two snapshots (empty for the first)."""
    if prev is None:
        return {}
    dt = cur.at - prev.at
    if dt <= 0:
        return {}
    return {k: (v - prev.values[k]) / dt for k, v in cur.values.items() if k in prev.values}


def section_rows(snap: Snapshot, names: list[str]) -> list[tuple[str, int | None]]:
    rows: list[tuple[str, int | None]] = []
    for n in names:
        if n.endswith(":"):
            rows += [(k, v) for k, v in snap.values.items() if k.startswith(n)]
        else:
            rows.append((n, snap.values.get(n)))
    return rows


# ---------------------------------------------------------------------------------------------
# Collection into stats_history


def collect(config: Any, names: list[str] | None = None, *, keep_days: int = 31,
            now: float | None = None) -> tuple[int, int]:
    """One snapshot of ``names`` into ``stats_history`` and the purge of rows older than
    ``keep_days`` (0 keeps everything). Returns (rows inserted, rows purged)."""
    from .db import session

    if keep_days < 0:
        raise UsageError("--keep-days must not be negative", hint="0 keeps everything")
    values = get(config, names or DEFAULT_COLLECT)
    stamp = int(now if now is not None else time.time())

    def store(db: Any) -> int:
        db.executemany("INSERT INTO stats_history (time, name, value) VALUES (?, ?, ?)",
                       [(stamp, k, int(v)) for k, v in values.items()])
        if not keep_days:
            return 0
        return int(db.execute("DELETE FROM stats_history WHERE time < ?", (stamp - keep_days * 86400,)).rowcount)

    with session(config.database.url, config.database.connect_timeout) as db:
        purged = db.run_transaction(store)
    return len(values), purged


_SINCE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str | None, now: float | None = None) -> int:
    """``30m``, ``6h``, ``7d``, ``2w`` ago, or an ISO date/time; None means 24 h ago."""
    now = time.time() if now is None else now
    if not text:
        return int(now - 86400)
    m = _SINCE.match(text.strip().lower())
    if m:
        return int(now - int(m.group(1)) * _UNIT[m.group(2)])
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(text.strip()).timestamp())
    except ValueError:
        raise UsageError(f"cannot read --since {text!r}", hint="e.g. 30m, 6h, 7d or 2024-05-01T08:00") from None


def history(config: Any, name: str, since: int) -> list[tuple[int, int]]:
    from .db import session

    with session(config.database.url, config.database.connect_timeout) as db:
        rows = db.query("SELECT time, value FROM stats_history WHERE name = ? AND time >= ? "
                        "ORDER BY time, id", (name, since))
    return [(int(r["time"]), int(r["value"])) for r in rows]


_BLOCKS = " ▁▂▃▄▅▆▇█"


def chart(points: list[tuple[int, int]], *, width: int = 60, height: int = 8) -> list[str]:
    """A terminal bar chart of the series: ``height`` rows of block characters, at most ``width``
    columns (points are bucketed, each column showing the bucket's last value), plus an axis line."""
    if not points:
        return []
    values = [v for _, v in points]
    if len(values) > width:
        step = len(values) / width
        values = [values[min(len(values) - 1, int((i + 1) * step) - 1)] for i in range(width)]
    lo, hi = min(values), max(values)
    span = hi - lo or 1
    levels = [round((v - lo) / span * height * 8) if hi != lo else height * 4 for v in values]
    lines = []
    for row in range(height, 0, -1):
        base = (row - 1) * 8
        line = "".join(_BLOCKS[max(0, min(8, lvl - base))] for lvl in levels)
        label = f"{hi:>10} ┤" if row == height else (f"{lo:>10} ┤" if row == 1 else " " * 10 + " │")
        lines.append(label + line)
    start = time.strftime("%Y-%m-%d %H:%M", time.localtime(points[0][0]))
    end = time.strftime("%Y-%m-%d %H:%M", time.localtime(points[-1][0]))
    lines.append(" " * 11 + "└" + "─" * len(values))
    lines.append(" " * 12 + f"{start} … {end} ({len(points)} samples)")
    return lines
