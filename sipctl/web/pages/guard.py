"""TLS (the certificates sipd presents and trusts, with their expiry) and Bans (list, add, lift)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ...errors import SipctlError
from ...lib import ban
from ..panel import Panel, asked, form_str, view
from ..apply import act_on, record
from ..session import Session


@view()
async def tls(panel: Panel, request: Request, session: Session) -> Response:
    from ...lib import mgmt

    result, problem = await asked(panel.off_loop(mgmt.call, panel.config, "tls_list", {}))
    domains = result.get("domains", []) if isinstance(result, dict) else (result or [])
    return panel.render(request, "tls.html", title="TLS", domains=domains, problem=problem)


@view()
async def bans(panel: Panel, request: Request, session: Session) -> Response:
    found, problem = await asked(panel.off_loop(ban.list_bans, panel.config))
    return panel.render(request, "bans.html", title="Bans", bans=[b.as_dict() for b in found or []],
                        problem=problem)


@view(write=True)
async def ban_add(panel: Panel, request: Request, session: Session) -> Response:
    form = await request.form()
    text = form_str(form, "seconds") or "0"
    if not text.isdigit():
        raise SipctlError(f"the ban's length must be a number of seconds, not {text!r}", hint="0 = until lifted")
    entry = await panel.off_loop(ban.add_ban, panel.config, form_str(form, "ip"), int(text))
    await record(panel, request, session, "ban add", entry.ip, after=entry.as_dict())
    session.flash("ok", f"{entry.ip} banned" + (f" for {text} s" if text != "0" else " until lifted"))
    return RedirectResponse("/bans", status_code=303)


@view(write=True)
async def ban_rm(panel: Panel, request: Request, session: Session) -> Response:
    return await act_on(panel, request, session, "ban rm", ban.remove_ban, "ip", "ban of {} lifted", "/bans")


routes = [Route("/tls", tls), Route("/bans", bans), Route("/bans/add", ban_add, methods=["POST"]),
          Route("/bans/rm", ban_rm, methods=["POST"])]
