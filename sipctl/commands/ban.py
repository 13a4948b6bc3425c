"""sipctl ban: the ban table of the running sipd (flood, auth-failure, scanner and manual bans)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..context import get_env
from ..output import Output

app = typer.Typer(help="Banned addresses of the running sipd: list, add, rm.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _left(seconds: int | None) -> str:
    return "until removed" if seconds is None else f"{seconds}s"


@app.command("list")
def list_(ctx: typer.Context, *, json: Json = False) -> None:
    """List banned addresses and networks with reason, time left, packets dropped and, in a
    cluster, the node that made a ban another node made ("-": this node).

    Example: sipctl ban list
    """
    from ..lib import ban

    bans = ban.list_bans(get_env(ctx).config)
    Output(json_mode=json).table(
        ["ip", "reason", "expires_in", "age", "hits", "node"],
        [(b.ip, b.reason, _left(b.expires_in), f"{b.age}s", b.hits, b.node or "-") for b in bans],
        title="Bans", data=[b.as_dict() for b in bans])


@app.command()
def add(
    ctx: typer.Context,
    ip: Annotated[str, typer.Argument(help="Address or CIDR network to ban.")],
    *,
    seconds: Annotated[int, typer.Option("--seconds", "-s", help="Ban length in seconds; 0 = until removed.")] = 0,
    json: Json = False,
) -> None:
    """Ban an address or network: its packets are dropped before parsing.

    With [cluster] node_id the ban applies at every node of the cluster (and `ban rm` at any node
    lifts it at all of them) within two [cluster] ban_interval.

    Example: sipctl ban add 203.0.113.7 --seconds 3600
    """
    from ..lib import ban

    entry = ban.add_ban(get_env(ctx).config, ip, seconds)
    Output(json_mode=json).result(f"banned {entry.ip} ({_left(entry.expires_in)})", data=entry.as_dict())


@app.command()
def rm(
    ctx: typer.Context,
    ip: Annotated[str, typer.Argument(help="Address or network as shown by sipctl ban list.")],
    *,
    json: Json = False,
) -> None:
    """Lift a ban (automatic or manual).

    Example: sipctl ban rm 203.0.113.7
    """
    from ..lib import ban

    target = ban.remove_ban(get_env(ctx).config, ip)
    Output(json_mode=json).result(f"ban of {target} removed", data={"ok": True, "ip": target})
