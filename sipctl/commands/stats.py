"""sipctl stats: statistics of the running sipd; reset; cron collection and history charts."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from ..context import get_env
from ..output import Output


class _ShowByDefault(TyperGroup):
    """``sipctl stats core: usrloc:`` means ``sipctl stats show core: usrloc:``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["show", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_ShowByDefault, help="Statistics of the running sipd: show (default), reset, collect, history.")

Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Names = Annotated[Optional[list[str]], typer.Argument(help="NAME (group:name), GROUP: or all; default all.")]


@app.command()
def show(ctx: typer.Context, names: Names = None, *, json: Json = False) -> None:
    """Show statistics: all, a group (core:, tm:, sl:, usrloc:...) or single names.

    Example: sipctl stats usrloc: core:rcv_requests
    """
    from ..lib import stats

    values = stats.get(get_env(ctx).config, list(names or []))
    Output(json_mode=json).table(["name", "value"], sorted(values.items()), data=values)


@app.command()
def reset(ctx: typer.Context, names: Names = None, *, json: Json = False) -> None:
    """Reset counters to zero (gauges such as usrloc:location-users are left alone).

    Example: sipctl stats reset core:
    """
    from ..lib import stats

    chosen = list(names or []) or ["all"]
    stats.reset(get_env(ctx).config, chosen)
    Output(json_mode=json).result(f"reset {' '.join(chosen)}", {"ok": True, "reset": chosen})


@app.command()
def collect(
    ctx: typer.Context,
    names: Names = None,
    *,
    keep_days: Annotated[int, typer.Option("--keep-days", help="Delete samples older than this; 0 keeps all.")] = 31,
    json: Json = False,
) -> None:
    """Store one snapshot of statistics in the stats_history table (run it from cron).

    Example: * * * * * sipd sipctl stats collect --keep-days 31
    """
    from ..lib import stats

    inserted, purged = stats.collect(get_env(ctx).config, list(names or []) or None, keep_days=keep_days)
    Output(json_mode=json).result(f"stored {inserted} values, purged {purged} old rows",
                                  {"ok": True, "inserted": inserted, "purged": purged})


@app.command()
def history(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Statistic, e.g. usrloc:location-contacts")],
    *,
    since: Annotated[Optional[str], typer.Option("--since", help="30m, 6h, 7d, 2w or an ISO date; default 24h.")] = None,
    json: Json = False,
) -> None:
    """Print the stored series of one statistic with a terminal chart.

    Example: sipctl stats history core:rcv_requests --since 7d
    """
    import time

    from ..lib import stats

    points = stats.history(get_env(ctx).config, name, stats.parse_since(since))
    out = Output(json_mode=json)
    if json:
        out.json([{"time": t, "value": v} for t, v in points])
        return
    if not points:
        out.warning(f"no samples of {name} in that period (is `sipctl stats collect` in cron?)")
        return
    out.out.print(f"[bold]{name}[/bold]", highlight=False)
    for line in stats.chart(points):
        out.out.print(line, highlight=False, markup=False)
    rows = [(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)), v) for t, v in points[-20:]]
    out.table(["time", "value"], rows, title=f"last {len(rows)} of {len(points)} samples")
