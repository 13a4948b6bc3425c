"""sipctl audit: the audit log of changes made through the panel and sipctl."""

from __future__ import annotations

from typing import Annotated

import typer

from ..context import get_env
from ..output import Output

app = typer.Typer(help="Read the audit log (who changed what, from where, when).", no_args_is_help=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="At most this many entries.")] = 50,
    actor: Annotated[str, typer.Option("--actor", help="Only entries by this panel admin or Unix user (substring).")] = "",
    action: Annotated[str, typer.Option("--action", help='Only these actions (substring, e.g. "user", "mi").')] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List the latest changes, newest first.

    Example: sipctl audit list --actor ops --json
    """
    from ..lib import audit
    from ..lib import db as dblib

    with dblib.env_session(get_env(ctx)) as db:
        rows = audit.list_entries(db, limit=limit, actor=actor, action=action)["rows"]
    Output(json_mode=as_json).table(
        ["time", "actor", "origin", "source", "action", "object", "before", "after"],
        [(r["time"], r["actor"], r["origin"], r["source"], r["action"], r["object"], r["value_before"] or "",
          r["value_after"] or "") for r in rows], data=rows)
