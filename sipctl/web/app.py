"""The panel's ASGI application: the pages' routes, the static files, and the security headers.

``create_app(config)`` builds a Starlette app. Each page module in ``sipctl/web/pages`` exposes
``routes``; its handlers are wrapped by ``view()`` (sipctl/web/panel.py), the guard every page
goes through.

Responses carry a Content-Security-Policy that allows only the panel's own files: no inline
script, nothing from another origin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from .pages import ROUTES
from .panel import HERE, Panel

if TYPE_CHECKING:
    from sipd.config import Config

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


class SecurityHeaders:
    """Pure ASGI middleware adding SECURITY_HEADERS to every HTTP response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}
                for k, v in SECURITY_HEADERS.items():
                    if k.encode() not in have:
                        headers.append((k.encode(), v.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(config: Config, *, secure_cookie: bool = False) -> Any:
    """The panel as an ASGI app for ``config`` (its [database], [mgmt] and [web] sections)."""
    routes = [*ROUTES, Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static")]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
    app.state.panel = Panel(config, secure_cookie=secure_cookie)
    return app


