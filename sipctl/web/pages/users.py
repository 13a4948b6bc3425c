"""Users and Aliases: search, add a user with its password and an alias in one form, change a
password, remove (with its aliases and registrations), and the user's live registrations as the
running registrar holds them (asked over the management socket, so they are right whatever the
location mode: memory only, write-back or database)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ...errors import MgmtUnavailable, NotFoundError, SipctlError
from ...lib import changes, directory, mgmt, provision
from ..panel import Panel, asked, form_str, view
from ..apply import apply
from ..session import Session


@view()
async def index(panel: Panel, request: Request, session: Session) -> Response:
    q = request.query_params
    query = {k: q.get(k, "").strip() for k in ("user", "domain", "alias", "online")}
    after = directory.parse_cursor(q.get("after", ""))
    online, problem = None, ""
    if query["online"]:  # who is online is the running registrar's answer, not the location table's
        online, problem = await asked(panel.off_loop(mgmt.online_aors, panel.config))
    found = {"rows": [], "total": 0, "next": ""}
    if not problem:
        found = await panel.db(directory.search_users, **{k: query[k] for k in ("user", "domain", "alias")},
                               after=after, online=online)
    domains = await panel.db(provision.list_domains)
    return panel.render(request, "users.html", title="Users", users=found["rows"], total=found["total"],
                        next=found["next"], first_page=after is None, query=query, problem=problem,
                        pager=urlencode({k: v for k, v in query.items() if v}), domains=domains)


@view(write=True)
async def add(panel: Panel, request: Request, session: Session) -> Response:
    form = await request.form()
    user, domain = provision.parse_aor(form_str(form, "aor"))
    password = str(form.get("password", ""))
    provision.check_password(password)
    alias_text = form_str(form, "alias")
    alias = provision.parse_aor(alias_text if "@" in alias_text else f"{alias_text}@{domain}") \
        if alias_text else None

    def add_both(config: Any, db: Any) -> list[changes.Change]:
        # The user and its alias are one action for the person filling the form: when the alias
        # is refused, the user is taken back out so nothing is half-done.
        done = [changes.add_user(config, db, user, domain, password)]
        if alias is not None:
            try:
                done.append(changes.add_alias(config, db, alias[0], alias[1], user, domain))
            except SipctlError:
                changes.rm_user(config, db, user, domain)
                raise
        return done

    await apply(panel, request, session, add_both)
    return RedirectResponse("/users", status_code=303)


async def _registrations(panel: Panel, aor: str) -> tuple[list[dict[str, Any]], str]:
    try:
        reply = await panel.mgmt("ul_show_contact", ["location", aor])
    except NotFoundError:
        return [], ""
    except MgmtUnavailable:
        return [], "sipd is not running"
    except SipctlError as exc:
        return [], exc.message
    rows = []
    for c in reply.get("Contacts", []):
        socket = str(c.get("Socket", ""))
        rows.append({"contact": c.get("Contact", ""), "user_agent": c.get("User-agent", ""),
                     "expires": c.get("Expires", ""), "received": c.get("Received", ""), "socket": socket,
                     "transport": socket.split(":", 1)[0].upper() if ":" in socket else ""})
    return rows, ""


@view()
async def show(panel: Panel, request: Request, session: Session) -> Response:
    aor = request.path_params["aor"]
    user, domain = provision.parse_aor(aor)
    info = await panel.db(provision.show_user, user, domain)
    live, problem = await _registrations(panel, f"{user}@{domain}")
    return panel.render(request, "user.html", title=f"User {user}@{domain}", u=info, live=live,
                        live_problem=problem)


@view(write=True)
async def passwd(panel: Panel, request: Request, session: Session) -> Response:
    form = await request.form()
    user, domain = provision.parse_aor(request.path_params["aor"])
    await apply(panel, request, session, changes.passwd, user, domain, str(form.get("password", "")))
    return RedirectResponse(f"/users/{user}@{domain}", status_code=303)


@view(write=True)
async def rm(panel: Panel, request: Request, session: Session) -> Response:
    user, domain = provision.parse_aor(request.path_params["aor"])
    await apply(panel, request, session, changes.rm_user, user, domain,
                previous=("user", {"user": user, "domain": domain}))
    return RedirectResponse("/users", status_code=303)


@view()
async def aliases(panel: Panel, request: Request, session: Session) -> Response:
    q = request.query_params
    query = {k: q.get(k, "").strip() for k in ("alias", "user", "domain")}
    after = directory.parse_cursor(q.get("after", ""))
    found = await panel.db(directory.search_aliases, **query, after=after)
    return panel.render(request, "aliases.html", title="Aliases", aliases=found["rows"], total=found["total"],
                        next=found["next"], first_page=after is None, query=query,
                        pager=urlencode({k: v for k, v in query.items() if v}))


@view(write=True)
async def alias_add(panel: Panel, request: Request, session: Session) -> Response:
    form = await request.form()
    a_user, a_domain = provision.parse_aor(form_str(form, "alias"), "ALIAS@DOMAIN")
    user, domain = provision.parse_aor(form_str(form, "target"))
    await apply(panel, request, session, changes.add_alias, a_user, a_domain, user, domain)
    return RedirectResponse("/aliases", status_code=303)


@view(write=True)
async def alias_rm(panel: Panel, request: Request, session: Session) -> Response:
    form = await request.form()
    a_user, a_domain = provision.parse_aor(form_str(form, "alias"), "ALIAS@DOMAIN")
    await apply(panel, request, session, changes.rm_alias, a_user, a_domain,
                previous=("alias", {"alias_user": a_user, "alias_domain": a_domain}))
    return RedirectResponse("/aliases", status_code=303)


routes = [
    Route("/users", index), Route("/users/add", add, methods=["POST"]),
    Route("/users/{aor:str}", show), Route("/users/{aor:str}/passwd", passwd, methods=["POST"]),
    Route("/users/{aor:str}/rm", rm, methods=["POST"]),
    Route("/aliases", aliases), Route("/aliases/add", alias_add, methods=["POST"]),
    Route("/aliases/rm", alias_rm, methods=["POST"]),
]
