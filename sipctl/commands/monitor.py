"""sipctl monitor: the live view of opensipsctl monitor (reference §2.2), rebuilt with rich."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from ..context import get_env
from ..output import Output


def _render(out: Output, cycle: int, snap, rates: dict[str, float]) -> None:
    from rich.table import Table

    from ..lib import stats

    console = out.out
    console.print(f"[cycle #: {cycle}; if constant make sure server lives]", style="dim", markup=False,
                  highlight=False)
    console.print(f"[bold]Server::[/bold] {snap.server}", highlight=False)
    for k, v in snap.uptime.items():
        console.print(f"[bold]{k}::[/bold] {v}", highlight=False)
    for title, names in stats.MONITOR_SECTIONS:
        t = Table(title=title, title_justify="left", title_style="bold", min_width=60)
        t.add_column("statistic")
        t.add_column("value", justify="right")
        t.add_column("per second", justify="right")
        for name, value in stats.section_rows(snap, names):
            rate = rates.get(name)
            t.add_row(name, "-" if value is None else str(value), "" if rate is None else f"{rate:.1f}")
        console.print(t)


def monitor(
    ctx: typer.Context,
    *,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    count: Annotated[Optional[int], typer.Option("--count", "-n", min=1, help="Stop after N refreshes.")] = None,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between refreshes.")] = 2.0,
) -> None:
    """Live view: version, uptime, transaction, stateless, core and usrloc statistics with rates.

    Example: sipctl monitor --count 5
    """
    from ..errors import MgmtTimeout, MgmtUnavailable
    from ..lib import stats

    config = get_env(ctx).config
    out = Output()
    cycles = 1 if once else count
    prev = None
    cycle = 0
    while cycles is None or cycle < cycles:
        cycle += 1
        try:
            snap = stats.snapshot(config)
        except (MgmtUnavailable, MgmtTimeout) as exc:
            if cycle == 1:
                raise
            raise MgmtUnavailable(f"sipd stopped answering after {cycle - 1} refreshes: {exc.message}",
                                  hint=exc.hint or "check the sipd log (journalctl -u sipd)") from None
        if not once and out.out.is_terminal:
            out.out.clear()
        _render(out, cycle, snap, stats.rates(prev, snap))
        prev = snap
        if cycles is None or cycle < cycles:
            time.sleep(interval)
