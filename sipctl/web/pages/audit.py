"""Audit: who changed what, from where, when, with the value before and after, newest first."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...lib import audit
from ..panel import Panel, view
from ..session import Session


@view()
async def index(panel: Panel, request: Request, session: Session) -> Response:
    q = request.query_params
    search = {k: q.get(k, "").strip() for k in ("actor", "action", "object")}
    before = q.get("before", "")
    result = await panel.db(audit.list_entries, limit=50, before_id=int(before) if before.isdigit() else None,
                            actor=search["actor"], action=search["action"], obj=search["object"])
    return panel.render(request, "audit.html", title="Audit", rows=result["rows"], next=result["next"],
                        search=search, query=urlencode({k: v for k, v in search.items() if v}),
                        first_page=not before)


routes = [Route("/audit", index)]
