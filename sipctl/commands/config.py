"""sipctl config: check and show the configuration shared by sipd and sipctl."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..context import get_env
from ..output import Output

app = typer.Typer(help="Check and show the configuration (sipd.toml).", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.command()
def check(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Validate the configuration like sipd --check-config; exit 1 when it has problems.

    Example: sipctl --config /etc/sipd/sipd.toml config check
    """
    from sipd import config as cfg

    from ..errors import CheckFailed

    env = get_env(ctx)
    conf, problems = cfg.check(env.config_path)
    where = str(conf.source) if conf.source else (env.config_path or "built-in defaults")
    out = Output(json_mode=as_json)
    if as_json:
        out.json({"source": where, "ok": not problems,
                  "problems": [{"key": p.key, "message": p.message, "hint": p.hint} for p in problems]})
    else:
        for p in problems:
            out.err.print(f"{where}: {p}", highlight=False, markup=False)
        if not problems:
            out.result(f"configuration OK ({where})")
    if problems:
        if as_json:
            raise typer.Exit(1)
        raise CheckFailed(f"{len(problems)} problem(s) in {where}", hint="fix the keys listed above")


@app.command()
def show(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Print the effective configuration, defaults included, secrets masked.

    Example: sipctl config show --json
    """
    from sipd import config as cfg

    env = get_env(ctx)
    conf = env.config
    data = cfg.to_dict(conf, mask_secrets=True)
    out = Output(json_mode=as_json)
    if as_json:
        out.json({"source": str(conf.source) if conf.source else None, "config": data})
        return
    lines = [f"# effective configuration (source: {conf.source or 'built-in defaults'})"]
    for section, values in data.items():
        lines.append(f"\n[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
    out.out.print("\n".join(lines), highlight=False, markup=False)
