"""Login and logout.

The login form has its own CSRF token, held in an anonymous session, so that another site cannot
log a browser in under an account of its choosing. A successful login gets a new session id.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ...errors import SipctlError
from ...lib import webadmin
from ..panel import Panel, form_str
from ..session import COOKIE


async def login(request: Request) -> Response:
    panel: Panel = request.app.state.panel
    session = panel.sessions.get(request.cookies.get(COOKIE))
    if session is not None and session.logged_in:
        return RedirectResponse("/", status_code=303)
    if session is None:
        session = panel.sessions.new()
    request.scope["panel_session"] = session
    status = 200
    if request.method == "POST":
        form = await request.form()
        if not session.csrf_ok(form_str(form, "csrf")):
            session.flash("error", "The login form expired: please try again.")
            status = 403
        else:
            web = panel.config.web
            try:
                admin = await panel.db(webadmin.authenticate, form_str(form, "username"),
                                       str(form.get("password", "")), limit=web.lockout_failures,
                                       lockout=web.lockout_seconds)
            except SipctlError as exc:
                session.flash("error", exc.message + (f" ({exc.hint})" if exc.hint else ""))
                status = 401
            else:
                panel.sessions.drop(session.id)
                fresh = panel.sessions.new(username=admin.username, role=admin.role)
                response = RedirectResponse("/", status_code=303)
                panel.set_cookie(response, fresh)
                return response
    response = panel.render(request, "login.html", status_code=status)
    panel.set_cookie(response, session)
    return response


async def logout(request: Request) -> Response:
    panel: Panel = request.app.state.panel
    session = panel.sessions.get(request.cookies.get(COOKIE))
    if session is not None and request.method == "POST":
        form = await request.form()
        if session.csrf_ok(form_str(form, "csrf")):
            panel.sessions.drop(session.id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


routes = [Route("/login", login, methods=["GET", "POST"]), Route("/logout", logout, methods=["POST"])]
