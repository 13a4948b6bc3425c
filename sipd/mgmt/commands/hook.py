"""Routing hook management commands (issue 11): hook_reload, hook_status.

``hook_reload`` re-imports the ``[routing] hook`` file/module without restarting sipd (SIGHUP does
the same). A hook that fails to load keeps the previous one active and the command answers 500.
"""

from __future__ import annotations

from typing import Any

from ..registry import MgmtError, command


def _hook(state: Any) -> Any:
    hook = getattr(state, "routing_hook", None)
    if hook is None:
        raise MgmtError(500, "command not activated (no [routing] hook configured)")
    return hook


@command("hook_reload", help="Reload the routing hook from its file/module (a broken one keeps the old hook).")
async def hook_reload(state: Any) -> dict[str, Any]:
    from ...services.hook import HookError

    hook = _hook(state)
    try:
        message = hook.reload()
    except HookError as exc:
        raise MgmtError(500, f"routing hook not reloaded, the previous one stays active: {exc}") from None
    return {"hook": hook.spec, "loads": hook.loads, "message": message}


@command("hook_status", help="The routing hook in use: its file/module, loads, and errors raised.")
async def hook_status(state: Any) -> dict[str, Any]:
    hook = _hook(state)
    return {"hook": hook.spec, "loads": hook.loads, "errors": hook.errors}
