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
    from starlette.requests import Request
    from starlette.responses import Response

    from ..lib.changes import Change
    from .panel import Panel
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


def who(request: Request, session: Session) -> tuple[str, str]:
    """(actor, source) of a panel action for the audit log: the admin and the browser's address."""
    client = request.client.host if request.client else "unknown"
    return session.username, f"{client} (panel)"


async def apply(panel: Panel, request: Request, session: Session, action: Callable[..., Any], *args: Any,
                previous: tuple[str, dict[str, Any]] | None = None, **kwargs: Any) -> Any:
    """Run ``action(config, db, *args, **kwargs)`` (a ``changes`` function, or several composed) on a
    fresh database session off the event loop, record it in the audit log, and flash every Change.

    Args:
        previous: (action kind, key) naming what the change replaces or removes, read for the
            audit log's "before" just ahead of the change (``audit.before``).
    """
    from ..lib import audit

    config = panel.config
    actor, source = who(request, session)

    def work(db: Any) -> Any:
        old = audit.before(db, previous[0], **previous[1]) if previous else None
        result = action(config, db, *args, **kwargs)
        for change in result if isinstance(result, list) else [result]:
            audit.record_change(db, change, origin=audit.PANEL, actor=actor, source=source, previous=old)
        return result

    result = await panel.db(work)
    for change in result if isinstance(result, list) else [result]:
        show(session, change)
    return result


async def record(panel: Panel, request: Request, session: Session, action: str, obj: str,
                 after: Any = None) -> None:
    """Audit an action that is not a provisioning change (Stop Call, an MI command)."""
    from ..lib import audit

    actor, source = who(request, session)
    await panel.db(audit.record, origin=audit.PANEL, actor=actor, source=source, action=action, obj=obj,
                   after=after)


async def act_on(panel: Panel, request: Request, session: Session, action: str,
                 fn: Callable[[Any, str], str], field: str, done: str, page: str) -> Response:
    """A one-field action on the running sipd (Stop Call, lift a ban): ``fn(config, form[field])``
    returns what it acted on; audit it, say ``done`` (with ``{}`` for that) and go back to ``page``."""
    from starlette.responses import RedirectResponse

    from .panel import form_str

    form = await request.form()
    key = await panel.off_loop(fn, panel.config, form_str(form, field))
    await record(panel, request, session, action, key)
    session.flash("ok", done.format(key))
    return RedirectResponse(page, status_code=303)
