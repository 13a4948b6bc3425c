"""sipctl dialog: the ongoing calls of the running sipd (list, end)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..context import get_env
from ..output import Output

app = typer.Typer(help="Ongoing calls (dialogs) of the running sipd: list, end.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _secs(n: int) -> str:
    return f"{n // 3600}:{n % 3600 // 60:02d}:{n % 60:02d}"


@app.command("list")
def list_(ctx: typer.Context, *, json: Json = False) -> None:
    """List ongoing calls: state, caller, callee, how long they have been up.

    Example: sipctl dialog list
    """
    from ..lib import dialog

    items = dialog.list_dialogs(get_env(ctx).config)
    Output(json_mode=json).table(
        ["id", "state", "caller", "callee", "duration", "call-id"],
        [(d.id, d.state, d.caller, d.callee, _secs(d.duration), d.call_id) for d in items],
        title=f"Dialogs ({len(items)})", data=[d.as_dict() for d in items])


@app.command()
def end(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(metavar="ID|CALL-ID", help="Dialog ID or SIP Call-ID from sipctl dialog list.")],
    *,
    json: Json = False,
) -> None:
    """Hang up a call: BYE to both sides (CANCEL if it is still ringing).

    Example: sipctl dialog end 4f2a9c1e@10.0.0.5
    """
    from ..lib import dialog

    done = dialog.end_dialog(get_env(ctx).config, key)
    Output(json_mode=json).result(f"dialog {done} ended", data={"ok": True, "dialog": done})
