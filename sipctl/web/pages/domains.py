"""Domains: list, add, remove. A change reaches the running sipd at once (see ``apply``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ...lib import changes, provision
from ..panel import Panel, form_str, view
from ..apply import apply
from ..session import Session


@view()
async def index(panel: Panel, request: Request, session: Session) -> Response:
    rows = await panel.db(provision.list_domains)
    return panel.render(request, "domains.html", title="Domains", domains=rows,
                        configured=panel.config.server.domains)


@view(write=True)
async def add(panel: Panel, request: Request, session: Session) -> Response:
    form = await request.form()
    await apply(panel, request, session, changes.add_domain, form_str(form, "domain"), attrs=form_str(form, "attrs"),
                accept_subdomain=bool(form.get("accept_subdomain")))
    return RedirectResponse("/domains", status_code=303)


@view(write=True)
async def rm(panel: Panel, request: Request, session: Session) -> Response:
    form = await request.form()
    name = provision.normalize_domain(form_str(form, "domain"))
    await apply(panel, request, session, changes.rm_domain, name, force=bool(form.get("force")),
                previous=("domain", {"domain": name}))
    return RedirectResponse("/domains", status_code=303)


routes = [Route("/domains", index), Route("/domains/add", add, methods=["POST"]),
          Route("/domains/rm", rm, methods=["POST"])]
