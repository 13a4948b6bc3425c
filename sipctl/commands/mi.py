"""sipctl mi: any management command, raw (opensips-cli mi / opensipsctl fifo)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..context import get_env
from ..output import Output


def _complete_command(ctx: typer.Context, incomplete: str) -> list[str]:
    from ..lib import mgmt

    try:
        names = mgmt.command_names(get_env(ctx).config)
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [n for n in names if n.startswith(incomplete)]


def mi(
    ctx: typer.Context,
    command: Annotated[str, typer.Argument(help="Management command (sipctl mi which lists them).",
                                           autocompletion=_complete_command)],
    params: Annotated[Optional[list[str]], typer.Argument(help="Parameters: all k=v (named) or all positional.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Errors as JSON too (the reply always is JSON).")] = False,
) -> None:
    """Run a management command of the running sipd and print its JSON reply.

    With --json an error is a JSON object on stdout as well: {"error": ..., "hint": ...}.

    Example: sipctl mi get_statistics core: usrloc:
    """
    from ..lib import audit, mgmt

    args = mgmt.parse_mi_args(list(params or []))
    env = get_env(ctx)
    result = mgmt.call(env.config, command, args)
    if command not in audit.READ_ONLY_COMMANDS:  # it changed sipd's state: say who did it
        from ..errors import SipctlError
        from ..lib import db as dblib

        try:
            with dblib.env_session(env) as db:
                audit.record_cli(db, f"mi {command}", " ".join(params or []) or "-", after={"params": args})
        except SipctlError as exc:
            Output().warning(f"not in the audit log: {exc.message}")
    Output(json_mode=True).json(result)
