"""sipctl cdr: call detail records from the database (list, export)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..context import get_env
from ..output import Output

app = typer.Typer(help="Call detail records (one per call, answered or not): list, export.", no_args_is_help=True)

Since = Annotated[Optional[str], typer.Option("--since", help="Calls started at or after: 2024-05-01, '2024-05-01 13:00', or an age like 2h, 7d.")]
Until = Annotated[Optional[str], typer.Option("--until", help="Calls started before (same forms as --since).")]
User = Annotated[Optional[str], typer.Option("--user", "-u", help="Caller or callee URI contains this text (e.g. alice or alice@example.com).")]
Status = Annotated[Optional[str], typer.Option("--status", help="answered, missed, failed or cancelled.")]


@app.command("list")
def list_(ctx: typer.Context, *, since: Since = None, until: Until = None, user: User = None, status: Status = None,
          limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="The latest N rows (printed oldest first).")] = None,
          json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List CDRs: start time, setup time, duration, caller, callee, status and reason.

    Example: sipctl cdr list --since 1d --user alice --status answered
    """
    from ..lib import cdr

    rows = cdr.list_cdrs(get_env(ctx), since=since, until=until, user=user, status=status, limit=limit)
    Output(json_mode=json).table(
        ["start", "setup", "duration", "caller", "callee", "status", "code", "reason", "end reason", "call-id"],
        [(r["start_time"], r["setup_time"], r["duration"], r["caller"], r["callee"], r["status"], r["sip_code"],
          r["sip_reason"], r["end_reason"], r["callid"]) for r in rows],
        title=f"CDRs ({len(rows)})", data=rows)


@app.command()
def export(ctx: typer.Context, *,
           format: Annotated[str, typer.Option("--format", "-f", help="csv or json.")] = "csv",
           out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
           since: Since = None, until: Until = None, user: User = None, status: Status = None) -> None:
    """Export CDRs as CSV (header row; every row has every column) or JSON.

    Example: sipctl cdr export --format csv --since 7d --out cdrs.csv
    """
    import sys

    from ..errors import SipctlError
    from ..lib import cdr

    rows = cdr.list_cdrs(get_env(ctx), since=since, until=until, user=user, status=status)
    text = cdr.export(rows, format.lower())
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SipctlError(f"cannot write {out}: {exc.strerror or exc}", hint="check the directory and its permissions") from None
    Output().err.print(f"{len(rows)} CDRs written to {out}", highlight=False)
