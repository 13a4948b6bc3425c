"""sipctl missed: calls that ended without an answer (the missed_calls table)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..context import get_env
from ..output import Output

app = typer.Typer(help="Missed calls (INVITEs that ended without 2xx: busy, no answer, unavailable, cancelled).",
                  no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context, *,
          since: Annotated[Optional[str], typer.Option("--since", help="At or after: a date, or an age like 2h, 7d.")] = None,
          until: Annotated[Optional[str], typer.Option("--until", help="Before (same forms as --since).")] = None,
          user: Annotated[Optional[str], typer.Option("--user", "-u", help="Caller or callee URI contains this text.")] = None,
          limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="At most this many rows.")] = None,
          json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List missed calls: time, caller, callee, SIP code and reason.

    Example: sipctl missed list --since 1d --user bob
    """
    from ..lib import cdr

    rows = cdr.list_missed(get_env(ctx), since=since, until=until, user=user, limit=limit)
    Output(json_mode=json).table(
        ["time", "caller", "callee", "code", "reason", "setup", "call-id"],
        [(r["time"], r["caller"], r["callee"], r["sip_code"], r["sip_reason"], r["setuptime"], r["callid"])
         for r in rows],
        title=f"Missed calls ({len(rows)})", data=rows)
