"""sipctl tls: TLS domains of the running sipd (list, reload) over the management interface."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..context import get_env
from ..output import Output

app = typer.Typer(help="TLS domains of the running sipd: list, reload.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _call(ctx: typer.Context, method: str) -> Any:
    from ..lib import mgmt

    conf = get_env(ctx).config
    return mgmt.call(conf, method, {}, conf.mgmt.timeout)


@app.command("list")
def list_(ctx: typer.Context, *, json: Json = False) -> None:
    """List TLS domains: role, socket or destination, certificate subject, expiry, versions.

    Example: sipctl tls list
    """
    result = _call(ctx, "tls_list")
    domains = result.get("domains", []) if isinstance(result, dict) else result
    rows = [(d.get("name"), d.get("role"), d.get("match"), d.get("subject", ""), d.get("not_after", ""),
             d.get("days_left", ""), f"{d.get('min_version', '')}..{d.get('max_version', '') or 'max'}",
             "yes" if d.get("require_cert") else "no", d.get("error", "") or "")
            for d in domains]
    out = Output(json_mode=json)
    out.table(["name", "role", "match", "subject", "not_after", "days_left", "versions", "require_cert", "error"],
              rows, title="TLS domains", data=result)
    processes = result.get("processes", []) if isinstance(result, dict) else []
    if not json and out.out.is_terminal and processes:  # (piped: one row per domain, nothing else)
        held = ", ".join(f"process {p.get('process')} (pid {p.get('pid')}): {p.get('connections')}" for p in processes)
        out.out.print(f"TLS connections: {held}", highlight=False, markup=False)


@app.command()
def reload(ctx: typer.Context, *, json: Json = False) -> None:
    """Re-read certificates and keys of every TLS domain; a broken file keeps the old one in use.

    Example: sipctl tls reload
    """
    from ..errors import MgmtCommandError

    result = _call(ctx, "tls_reload")
    out = Output(json_mode=json)
    failed = [d for d in result.get("domains", []) if d.get("error")] if isinstance(result, dict) else []
    if json:
        out.json(result)
    else:
        for d in result.get("domains", []) if isinstance(result, dict) else []:
            state = "reloaded" if d.get("reloaded") else ("unchanged" if not d.get("error") else "kept old")
            line = f"{d.get('name')}: {state}"
            if d.get("error"):  # listed; the one Error: line with its Hint comes last
                out.err.print(f"{line}: {d['error']}", highlight=False, markup=False)
            else:
                out.result(line)
    if failed:
        raise MgmtCommandError(f"{len(failed)} TLS domain(s) could not be reloaded; they keep their previous certificate",
                               hint="fix the files named above (sipctl cert check --cert FILE), then sipctl tls reload")
