"""Routing hook management commands: hook_reload, hook_status.

``hook_reload`` re-imports the ``[routing] hook`` file/module without restarting sipd (SIGHUP does
the same). A hook that fails to load keeps the previous one active and the command answers 500.
"""

from __future__ import annotations

from typing import Any

from ...services.hook import HookError
from ..context import MgmtContext
from ..registry import MgmtError, command


def _hook(ctx: MgmtContext) -> Any:
    hook = ctx.state.routing_hook
    if hook is None:
        raise MgmtError(500, "command not activated (no [routing] hook configured)")
    return hook


@command("hook_reload", help="Reload the routing hook from its file/module (a broken one keeps the old hook).")
async def hook_reload(ctx: MgmtContext) -> dict[str, Any]:
    hook = _hook(ctx)
    try:
        message = hook.reload()
    except HookError as exc:
        raise MgmtError(500, f"routing hook not reloaded, the previous one stays active: {exc}") from None
    return {"hook": hook.spec, "loads": hook.loads, "message": message}


@command("hook_status", help="The routing hook in use: its file/module, loads, and errors raised.")
async def hook_status(ctx: MgmtContext) -> dict[str, Any]:
    hook = _hook(ctx)
    return {"hook": hook.spec, "loads": hook.loads, "errors": hook.errors}
