"""Making a change from the panel: the ``sipctl/lib/changes`` action, then telling the person.

The actions in ``changes`` change the database, ask the running sipd to reload what they touched,
and say what sipd will do with the change (or that sipd is not running, so it applies when sipd
starts). The panel shows all of that as messages on the next page, so no change waits for an
"Apply" step and none is silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..lib.changes import Change
    from .app import Panel
    from .session import Session


def show(session: Session, change: Change) -> None:
    """Flash a change: what was done, what sipd made of it, its notes and warnings."""
    from ..lib.changes import RELOADED

    session.flash("ok", change.message)
    if change.daemon_message:
        session.flash("info" if change.daemon == RELOADED else "warn", change.daemon_message)
    for note in change.notes:
        session.flash("info", note)
    for warning in change.warnings:
        session.flash("warn", warning)


async def apply(panel: Panel, session: Session, action: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``action(config, db, *args, **kwargs)`` (a ``changes`` function, or several composed) on a
    fresh database session off the event loop, and flash every Change it returns."""
    config = panel.config

    def work(db: Any) -> Any:
        return action(config, db, *args, **kwargs)

    result = await panel.db(work)
    for change in result if isinstance(result, list) else [result]:
        show(session, change)
    return result
