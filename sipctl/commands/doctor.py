"""sipctl doctor: walk the troubleshooting checklist and say what is wrong and what to do."""

from __future__ import annotations

from typing import Annotated

import typer

from ..context import get_env
from ..errors import ExitStatus
from ..output import Output

MARK = {"pass": "[green]✓[/green]", "fail": "[red]✗[/red]", "warn": "[yellow]![/yellow]", "skip": "[dim]-[/dim]"}


def doctor(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    no_dns: Annotated[bool, typer.Option("--no-dns", help="Skip the DNS checks of the local domains.")] = False,
    dns_timeout: Annotated[float, typer.Option("--dns-timeout", help="Seconds per DNS lookup.")] = 2.0,
    log_minutes: Annotated[int, typer.Option("--log-minutes", help="How far back to look for errors in sipd's log.")] = 60,
) -> None:
    """Check config, database, daemon, listen sockets, domains, TLS certificate, DNS and recent errors.

    Each line is ✓ (fine), ✗ (broken, with a hint), ! (worth a look) or - (not applicable).
    Exit status 1 when anything is broken.

    Example: sipctl doctor
    """
    from rich.markup import escape

    from ..lib import doctor as lib

    env = get_env(ctx)
    report = lib.run(env, dns_timeout=dns_timeout, skip_dns=no_dns, log_seconds=log_minutes * 60)
    out = Output(json_mode=as_json)
    if as_json:
        out.json(report.to_dict())
    else:
        for f in report.findings:
            out.out.print(f"{MARK[f.verdict]} [bold]{f.area:<8}[/bold] {escape(f.subject)}: {escape(f.detail)}",
                          highlight=False)
            if f.hint and f.verdict in ("fail", "warn"):
                out.out.print(f"    [dim]hint:[/dim] {escape(f.hint)}", highlight=False)
        failed = sum(1 for f in report.findings if f.verdict == "fail")
        out.out.print("all checks passed" if not failed else f"{failed} problem(s) found", highlight=False)
    if not report.ok:
        raise typer.Exit(int(ExitStatus.ERROR))
