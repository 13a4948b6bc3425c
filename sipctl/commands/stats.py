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
def show(
    ctx: typer.Context,
    names: Names = None,
    *,
    node: Annotated[Optional[str], typer.Option(
        "--node", help="One node of a cluster ([cluster] node_id), as it stored them with its last heartbeat.")] = None,
    every: Annotated[bool, typer.Option(
        "--all", help="Every node of the cluster and the sum over the nodes alive.")] = False,
    json: Json = False,
) -> None:
    """Show statistics: all, a group (core:, tm:, sl:, usrloc:...) or single names.

    Without --node or --all, the running sipd's own (over its management socket). With them, read
    from the database: what each node of a cluster stored with its last heartbeat (at most
    [cluster] heartbeat_interval old). The sum adds every value; for settings (registrar:max_expires)
    and for tables each node holds whole (usrloc: with location mode db-only) read one node's.

    Example: sipctl stats usrloc: core:rcv_requests; sipctl stats --all core:
    """
    from ..lib import cluster, stats

    config = get_env(ctx).config
    chosen = stats.normalize_names(list(names or []))
    cluster.check_node_choice(node, every)
    out = Output(json_mode=json)
    conf = config.database
    if node is not None:
        st = cluster.node_stats(conf.url, conf.connect_timeout, node, chosen, dead_after=config.cluster.dead_after)
        out.table(["name", "value"], sorted(st["values"].items()), data=st,
                  title=f"node {node} ({st['state']}), {st['age']} s ago")
        if st["state"] == "dead":
            out.warning(f"node {node} is dead: these are its last values, {st['age']} s old")
        return
    if every:
        st = cluster.all_stats(conf.url, conf.connect_timeout, chosen, dead_after=config.cluster.dead_after)
        nodes = [n["node"] for n in st["nodes"]]
        names_all = sorted({k for values in st["by_node"].values() for k in values})
        rows = [(k, st["sum"].get(k, "-"), *(st["by_node"][n].get(k, "-") for n in nodes)) for k in names_all]
        title = "; ".join(f"{n['node']} {n['state']} {n['age']} s ago" for n in st["nodes"])
        out.table(["name", "sum (alive)", *nodes], rows, data=st, title=title)
        return
    values = stats.get(config, chosen)
    out.table(["name", "value"], sorted(values.items()), data=values)


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
