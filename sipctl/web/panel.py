"""What every page of the panel shares: the ``Panel`` (configuration, sessions, templates) and the
guard every handler goes through. ``view()`` wraps a handler so that it

- sends people who are not logged in to the login form,
- checks the CSRF token of every POST (a form field ``csrf`` equal to the session's token),
- refuses changes from read-only admins (403),
- turns a ``SipctlError`` from ``sipctl/lib`` into a message on the page instead of a traceback.

The pages (``sipctl/web/pages``) import this module; ``sipctl/web/app.py`` builds the application
from the pages.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..errors import SipctlError
from .session import COOKIE, Session, Sessions

if TYPE_CHECKING:
    from sipd.config import Config

logger = logging.getLogger("sipctl.web.app")  # the name the panel's log lines have always carried
HERE = Path(__file__).parent

# The menu, named as the OpenSIPS Control Panel names its pages (the field report's words).
MENU: list[tuple[str, str]] = [
    ("Dashboard", "/"),
    ("Domains", "/domains"),
    ("Users", "/users"),
    ("Aliases", "/aliases"),
    ("Dialplan", "/dialplan"),
    ("CDR Viewer", "/cdr"),
    ("Missed calls", "/missed"),
    ("Dialog", "/dialog"),
    ("Statistics Monitor", "/stats"),
    ("MI Commands", "/mi"),
    ("TLS", "/tls"),
    ("Bans", "/bans"),
    ("SIP Trace", "/trace"),
    ("Audit", "/audit"),
]

class Panel:
    """What every handler needs: the configuration, the sessions and the templates."""

    def __init__(self, config: Config, *, secure_cookie: bool = False) -> None:
        self.config = config
        self.secure_cookie = secure_cookie
        self.sessions = Sessions(config.web.session_timeout)
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(default=True, default_for_string=True))

    # -- database and sipd -------------------------------------------------------------------

    async def db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(db, *args, **kwargs)`` on a fresh database session, off the event loop."""
        from ..lib import db as dblib

        conf = self.config.database

        def work() -> Any:
            with dblib.session(conf.url, conf.connect_timeout) as db:
                return fn(db, *args, **kwargs)

        return await run_in_threadpool(work)

    async def mgmt(self, method: str, params: Any = None, timeout: float = 5.0) -> Any:
        """One management command to the running sipd (raises MgmtUnavailable when it is down)."""
        from ..lib import mgmt

        return await run_in_threadpool(mgmt.call, self.config, method, params, timeout)

    async def off_loop(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(fn, *args, **kwargs)

    # -- pages -------------------------------------------------------------------------------

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        session: Session | None = request.scope.get("panel_session")
        page = self.templates.get_template(template)
        html = page.render(menu=MENU, path=request.url.path, session=session,
                           csrf=session.csrf if session else "",
                           flashes=session.take_flashes() if session else [], **context)
        return HTMLResponse(html, status_code=status_code)

    def set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(COOKIE, session.id, httponly=True, samesite="strict", secure=self.secure_cookie,
                            path="/")


Handler = Callable[[Panel, Request, Session], Awaitable[Response]]


def view(*, write: bool = False) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a page handler: login required, CSRF on POST, role check, errors shown on the page.

    Args:
        write: the handler changes state; read-only admins get 403.
    """

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            panel: Panel = request.app.state.panel
            session = panel.sessions.get(request.cookies.get(COOKIE))
            if session is None or not session.logged_in:
                return RedirectResponse("/login", status_code=303)
            request.scope["panel_session"] = session
            if request.method == "POST":
                form = await request.form()
                if not session.csrf_ok(str(form.get("csrf", ""))):
                    return panel.render(request, "error.html", 403, title="Forbidden",
                                        message="The form's security token is missing or stale: "
                                                "reload the page and try again.")
                if write and not session.can_write:
                    return panel.render(request, "error.html", 403, title="Forbidden",
                                        message=f"{session.username} is a read-only admin: "
                                                "this action changes sipd and is not allowed.")
            try:
                return await handler(panel, request, session)
            except SipctlError as exc:
                text = exc.message + (f" ({exc.hint})" if exc.hint else "")
                if request.method == "POST":
                    session.flash("error", text)
                    return RedirectResponse(back(request), status_code=303)
                return panel.render(request, "error.html", 200, title="Error", message=text)
            except Exception as exc:  # a bug: say so on the page, keep the traceback for the log
                logger.exception("panel page %s %s failed", request.method, request.url.path)
                return panel.render(request, "error.html", 500, title="Error",
                                    message=f"unexpected {type(exc).__name__}: {exc} (a bug in the panel: "
                                            "its log has the details; please report it)")

        return endpoint

    return wrap


async def asked(work: Awaitable[Any]) -> tuple[Any, str]:
    """(answer, "") from something that asks sipd, or (None, why it could not be had) to show."""
    from ..errors import MgmtUnavailable

    try:
        return await work, ""
    except MgmtUnavailable:
        return None, "sipd is not running"
    except SipctlError as exc:
        return None, exc.message + (f" ({exc.hint})" if exc.hint else "")


def back(request: Request) -> str:
    """Where a refused form returns to: the page it was sent from (same origin only), else the
    parent of the action's path (``/domains/add`` -> ``/domains``)."""
    referer = request.headers.get("referer", "")
    base = str(request.base_url)
    if referer.startswith(base):
        return "/" + referer[len(base):]
    return request.url.path.rsplit("/", 1)[0] or "/"


def form_str(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""
