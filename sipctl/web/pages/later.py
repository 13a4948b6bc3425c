"""Menu entries whose pages are not built yet: each says so, and names the sipctl command that
does the job today, rather than showing a blank page."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..app import Panel, view
from ..session import Session

LATER: dict[str, tuple[str, str]] = {
    "/trace": ("SIP Trace", "sipctl trace"),
}


@view()
async def not_built(panel: Panel, request: Request, session: Session) -> Response:
    title, command = LATER[request.url.path]
    return panel.render(request, "later.html", title=title, command=command)


routes = [Route(path, not_built) for path in LATER]
