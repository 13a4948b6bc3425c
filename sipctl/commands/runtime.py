"""Runtime verbs against the running sipd: ps, uptime, version, log-level, reload."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from ..context import get_env
from ..output import Output

Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _call(ctx: typer.Context, method: str, params: Any = None) -> Any:
    from ..lib import mgmt

    return mgmt.call(get_env(ctx).config, method, params)


def _lines(out: Output, data: dict[str, Any]) -> None:
    for k, v in data.items():
        out.out.print(f"{k}: {v}", highlight=False, markup=False)


def ps(ctx: typer.Context, *, json: Json = False) -> None:
    """List the processes of the running sipd.

    Example: sipctl ps
    """
    procs = _call(ctx, "ps").get("Processes", [])
    Output(json_mode=json).table(["ID", "PID", "Type", "Connections"],
                                 [(p.get("ID"), p.get("PID"), p.get("Type"), p.get("Connections", "")) for p in procs],
                                 data={"Processes": procs})


def uptime(ctx: typer.Context, *, json: Json = False) -> None:
    """Show when sipd started and how long it has been up.

    Example: sipctl uptime
    """
    data = _call(ctx, "uptime")
    out = Output(json_mode=json)
    out.json(data) if json else _lines(out, data)


def version(ctx: typer.Context, *, json: Json = False) -> None:
    """Show the version of the running sipd.

    Example: sipctl version
    """
    data = _call(ctx, "version")
    out = Output(json_mode=json)
    out.json(data) if json else _lines(out, data)


def log_level(
    ctx: typer.Context,
    level: Annotated[Optional[str], typer.Argument(help="trace, debug, info, warning, error or critical; shown when omitted.")] = None,
    *,
    json: Json = False,
) -> None:
    """Show or change the log level of the running sipd (no restart).

    Example: sipctl log-level debug
    """
    data = _call(ctx, "log_level", [level] if level else [])
    out = Output(json_mode=json)
    if json:
        out.json(data)
    elif level:
        out.result(f"log level set to {data.get('New global log level', level)}")
    else:
        for p in data.get("Processes", []):
            out.out.print(f"PID {p.get('PID')}: {p.get('Log level')}", highlight=False)


def reload(ctx: typer.Context, *, json: Json = False) -> None:
    """Re-read what changes without a restart: domains, subscribers, aliases, dialplan, TLS certificates, hook, log level.

    The same as sending SIGHUP to sipd. Needed only for changes made to the database by other means:
    domain, user, alias and dp commands reload what they change themselves.

    Example: sipctl reload
    """
    from ..lib import mgmt

    # every table in every process: 100,000 subscribers take seconds, more on a busy host
    data = mgmt.call(get_env(ctx).config, "reload", timeout=30.0)
    done = ", ".join(data.get("Reloaded", [])) or "nothing"
    Output(json_mode=json).result(f"reloaded: {done}", data)
