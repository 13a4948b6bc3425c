"""sipctl monitor: the live view of opensipsctl monitor, rebuilt with rich."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from ..context import get_env
from ..output import Output


def _render(out: Output, cycle: int, snap, rates: dict[str, float]) -> None:
    from rich.markup import escape

    from ..lib import stats
    from ..output import plain_table, rich_table

    console = out.out
    if out.json_mode:  # one object per refresh, one line each (JSON Lines), for scripts that follow it
        out.json({"cycle": cycle, "server": snap.server, "uptime": snap.uptime, "statistics": snap.values,
                  "per_second": {k: round(v, 3) for k, v in rates.items()}}, indent=None)
        return
    console.print(f"[cycle #: {cycle}; if constant make sure server lives]", style="dim", markup=False,
                  highlight=False)
    # Values such as "54 [sec]" must not be read as rich markup.
    console.print(f"[bold]Server::[/bold] {escape(snap.server)}", highlight=False)
    for k, v in snap.uptime.items():
        console.print(f"[bold]{escape(str(k))}::[/bold] {escape(str(v))}", highlight=False)
    columns = ["statistic", "value", "per second"]
    for title, names in stats.MONITOR_SECTIONS:
        rows = [(name, "-" if value is None else str(value), "" if rates.get(name) is None else f"{rates[name]:.1f}")
                for name, value in stats.section_rows(snap, names)]
        if console.is_terminal:
            console.print(rich_table(columns, rows, title=title, right=columns[1:], title_justify="left",
                                     title_style="bold", min_width=60))
        else:  # piped: the section title, then the plain layout every sipctl table uses
            console.file.write(f"{title}\n{plain_table(columns, rows)}")
            console.file.flush()


def monitor(
    ctx: typer.Context,
    *,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    count: Annotated[Optional[int], typer.Option("--count", "-n", min=1, help="Stop after N refreshes.")] = None,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between refreshes.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per refresh, one per line.")] = False,
) -> None:
    """Live view: version, uptime, transaction, stateless, core and usrloc statistics with rates.

    Example: sipctl monitor --count 5
    """
    from ..errors import MgmtTimeout, MgmtUnavailable
    from ..lib import stats

    config = get_env(ctx).config
    out = Output(json_mode=as_json)
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
        if not once and out.out.is_terminal and not out.json_mode:
            out.out.clear()
        _render(out, cycle, snap, stats.rates(prev, snap))
        prev = snap
        if cycles is None or cycle < cycles:
            time.sleep(interval)
