"""sipctl cluster: the sipd nodes that share this database, and which of them are alive."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from ..context import get_env
from ..output import Output

app = typer.Typer(help="The sipd nodes sharing this database: status.", no_args_is_help=True)


def _when(unix: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix)) if unix else "-"


@app.command()
def status(
    ctx: typer.Context,
    dead_after: Annotated[Optional[float], typer.Option(
        "--dead-after", min=1, help="Seconds without a heartbeat after which a node is dead (default: [cluster] dead_after, 30).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List the nodes, their last heartbeat and what each holds; flag a dead one (exit 1 if any is dead).

    A node is dead when its last heartbeat is older than --dead-after seconds: it stopped, or it
    cannot reach the database. "dialogs" counts the calls a node holds (a dead node's are taken over
    by a live one), "bans" the bans in force it made (every node applies them), "bindings" the
    registrations only that node can reach (over its TCP/TLS connections and NAT pinholes).

    Example: sipctl cluster status --json
    """
    from ..errors import CheckFailed
    from ..lib import cluster

    config = get_env(ctx).config
    conf = config.database
    st = cluster.status(conf.url, conf.connect_timeout,
                        dead_after=config.cluster.dead_after if dead_after is None else dead_after)
    out = Output(json_mode=as_json)
    if not st["nodes"]:
        out.result("no nodes: no sipd with [cluster] node_id has written its heartbeat here", st)
        return
    out.table(["node", "address", "started", "last heartbeat", "age", "state", "dialogs", "bans", "bindings"],
              [(n["node_id"], n["address"], _when(n["started"]), _when(n["last_heartbeat"]),
                f"{n['age']}s", n["state"], str(n["dialogs"]), str(n["bans"]), str(n["bindings"]))
               for n in st["nodes"]],
              title=f"cluster nodes in {st['url']} (dead after {st['dead_after']:g} s)", data=st)
    if st["unowned_dialogs"] and not as_json:
        out.warning(f"{st['unowned_dialogs']} dialogs of no known node (a sipd without [cluster] node_id); "
                 "the first live node to check takes them over")
    if st["dead"]:
        raise CheckFailed(f"dead nodes: {', '.join(st['dead'])} (no heartbeat for over "
                          f"{st['dead_after']:g} s)",
                          hint="check that sipd runs on them and reaches the database")
