"""Telling the person what a change did to the running sipd.

The provisioning functions of ``sipctl/lib`` tell a running sipd to reload what they changed and
report it under the key ``"reload"`` of their result. When a result has no such key (a function
that only writes the database), the panel asks sipd for a reload itself so that no change waits
for an "Apply" step. Either way the page says when sipd is not running: the change is stored and
sipd reads it when it starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import MgmtUnavailable, SipctlError

if TYPE_CHECKING:
    from .app import Panel
    from .session import Session

NOT_RUNNING = "sipd is not running: the change is stored and takes effect when sipd starts"


def describe(outcome: Any) -> str:
    """A one-line account of a ``"reload"`` entry returned by a provisioning function."""
    if isinstance(outcome, str):
        return outcome
    if isinstance(outcome, dict):
        if outcome.get("running") is False or outcome.get("sipd") == "not running":
            return NOT_RUNNING
        parts = [f"{k}: {v}" for k, v in outcome.items() if not isinstance(v, (dict, list))]
        return "sipd: " + ", ".join(parts) if parts else "sipd reloaded"
    if isinstance(outcome, list):
        return "sipd reloaded " + ", ".join(str(x) for x in outcome)
    return "sipd reloaded"


async def applied(panel: Panel, session: Session, result: Any, done: str) -> None:
    """Flash ``done`` and what the running sipd made of the change."""
    session.flash("ok", done)
    if isinstance(result, dict) and "reload" in result:
        text = describe(result["reload"])
    else:
        try:
            reply = await panel.mgmt("reload")
        except MgmtUnavailable:
            text = NOT_RUNNING
        except SipctlError as exc:
            session.flash("error", f"sipd did not reload: {exc.message}")
            return
        else:
            text = describe(reply.get("Reloaded", reply) if isinstance(reply, dict) else reply)
    session.flash("info" if text != NOT_RUNNING else "warn", text)
