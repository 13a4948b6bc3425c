"""Dialplan: the rules, add and edit (checked exactly as sipd compiles them), delete, and a
translate box showing which rule a number matches and what it becomes. The translate box keeps its
number across a change, so the result before and after the change can be compared."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ...errors import UsageError
from ...lib import changes, dialplan
from ..panel import Panel, form_str, view
from ..apply import apply
from ..session import Session


def _int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise UsageError(f"{what} must be a whole number, not {text!r}", hint="e.g. 1") from None


def _back(form: Any) -> str:
    """The dialplan page again, with the number that was being tested."""
    test = {k: form_str(form, k) for k in ("dpid", "number")}
    return "/dialplan" + (f"?{urlencode(test)}" if test["number"] else "")


def _rule_fields(form: Any) -> dict[str, Any]:
    return {"dpid": _int(form_str(form, "rule_dpid") or "1", "dpid"), "pr": _int(form_str(form, "pr") or "0", "priority"),
            "match_op": form_str(form, "match_op") or "regex", "match_exp": form_str(form, "match_exp"),
            "match_flags": "icase" if form.get("icase") else "", "subst_exp": form_str(form, "subst_exp"),
            "repl_exp": form_str(form, "repl_exp"), "attrs": form_str(form, "attrs"),
            "disabled": bool(form.get("disabled"))}


@view()
async def index(panel: Panel, request: Request, session: Session) -> Response:
    q = request.query_params
    number, dpid_text = q.get("number", ""), q.get("dpid", "1") or "1"
    rules = await panel.db(dialplan.list_rules)
    tested = None
    if number:
        tested = await panel.db(dialplan.test, _int(dpid_text, "dpid"), number)
    editing = None
    if q.get("edit"):
        wanted = _int(q["edit"], "rule id")
        editing = next((r for r in rules if r["id"] == wanted), None)
        if editing is None:
            session.flash("error", f"dialplan rule {wanted} does not exist")
    return panel.render(request, "dialplan.html", title="Dialplan", rules=rules, number=number,
                        dpid=dpid_text, tested=tested, editing=editing)


@view(write=True)
async def add(panel: Panel, request: Request, session: Session) -> Response:
    form = await request.form()
    await apply(panel, request, session, changes.add_rule, **_rule_fields(form))
    return RedirectResponse(_back(form), status_code=303)


@view(write=True)
async def edit(panel: Panel, request: Request, session: Session) -> Response:
    form = await request.form()
    rule_id = _int(form_str(form, "id"), "rule id")
    await apply(panel, request, session, changes.edit_rule, rule_id, **_rule_fields(form),
                previous=("dp", {"rule_id": rule_id}))
    return RedirectResponse(_back(form), status_code=303)


@view(write=True)
async def rm(panel: Panel, request: Request, session: Session) -> Response:
    form = await request.form()
    rule_id = _int(form_str(form, "id"), "rule id")
    await apply(panel, request, session, changes.rm_rule, rule_id, previous=("dp", {"rule_id": rule_id}))
    return RedirectResponse(_back(form), status_code=303)


routes = [Route("/dialplan", index), Route("/dialplan/add", add, methods=["POST"]),
          Route("/dialplan/edit", edit, methods=["POST"]), Route("/dialplan/rm", rm, methods=["POST"])]
