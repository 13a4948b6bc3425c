"""Dialog (live calls with Stop Call), Statistics Monitor (live counters and a history chart) and
MI Commands (what sipd offers, a form to run one, the JSON reply)."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...lib import dialog, mgmt, stats
from ...lib.audit import READ_ONLY_COMMANDS
from ..panel import Panel, asked, form_str, view
from ..apply import act_on, record
from ..session import Session

CHART_W, CHART_H = 720, 160


@view()
async def dialogs(panel: Panel, request: Request, session: Session) -> Response:
    found, problem = await asked(panel.off_loop(dialog.list_dialogs, panel.config))
    rows = [d.as_dict() for d in found or []]
    return panel.render(request, "dialog.html", title="Dialog", dialogs=rows, problem=problem, refresh=5)


@view(write=True)
async def stop_call(panel: Panel, request: Request, session: Session) -> Response:
    return await act_on(panel, request, session, "dialog end", dialog.end_dialog, "id",
                        "call {} stopped: sipd sent BYE to both sides", "/dialog")


def svg_points(points: list[tuple[int, int]]) -> dict[str, Any]:
    """Scale a series into the chart's box: a polyline, and the labels of its axes."""
    if not points:
        return {}
    t0, t1 = points[0][0], points[-1][0]
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    tspan, vspan = (t1 - t0) or 1, (hi - lo) or 1
    coords = " ".join(f"{(t - t0) / tspan * CHART_W:.1f},{CHART_H - (v - lo) / vspan * CHART_H:.1f}"
                      for t, v in points)
    when = "%Y-%m-%d %H:%M"
    return {"polyline": coords, "lo": lo, "hi": hi, "w": CHART_W, "h": CHART_H, "n": len(points),
            "start": time.strftime(when, time.localtime(t0)), "end": time.strftime(when, time.localtime(t1))}


@view()
async def statistics(panel: Panel, request: Request, session: Session) -> Response:
    q = request.query_params
    name, since_text = q.get("name", "usrloc:registered_users").strip(), q.get("since", "24h").strip()
    values, problem = await asked(panel.off_loop(stats.get, panel.config, ["all"]))
    since = stats.parse_since(since_text)
    points = await panel.off_loop(stats.history, panel.config, name, since)
    groups: dict[str, list[tuple[str, Any]]] = {}
    for key, value in sorted((values or {}).items()):
        group, _, short = key.partition(":")
        groups.setdefault(group, []).append((short, value))
    return panel.render(request, "stats.html", title="Statistics Monitor", groups=groups, problem=problem,
                        name=name, since=since_text, chart=svg_points(points), refresh=0)


async def _mi_render(panel: Panel, request: Request, session: Session, chosen: str,
                     result: dict[str, Any] | None = None) -> Response:
    names, problem = await asked(panel.mgmt("which"))
    described = None
    if chosen and names and chosen in names:
        described, _ = await asked(panel.mgmt("help", [chosen]))
    return panel.render(request, "mi.html", title="MI Commands", names=names or [], problem=problem,
                        chosen=chosen, described=described, result=result,
                        allowed=None if session.can_write else READ_ONLY_COMMANDS)


@view()
async def mi_page(panel: Panel, request: Request, session: Session) -> Response:
    return await _mi_render(panel, request, session, request.query_params.get("command", ""))


@view()
async def mi_run(panel: Panel, request: Request, session: Session) -> Response:
    form = await request.form()
    command = form_str(form, "command")
    if not session.can_write and command not in READ_ONLY_COMMANDS:
        return panel.render(request, "error.html", 403, title="Forbidden",
                            message=f"{session.username} is a read-only admin: {command} may change sipd "
                                    "and is not allowed.")
    args = mgmt.parse_mi_args(form_str(form, "params").split())
    reply, problem = await asked(panel.mgmt(command, args, timeout=10.0))
    if command not in READ_ONLY_COMMANDS:
        await record(panel, request, session, f"mi {command}", form_str(form, "params") or "-",
                     after={"params": args, "error": problem} if problem else {"params": args})
    shown = "" if problem else json.dumps(reply, indent=2, ensure_ascii=False, default=str)
    return await _mi_render(panel, request, session, command,
                            {"command": command, "params": form_str(form, "params"), "json": shown,
                             "problem": problem})


routes = [Route("/dialog", dialogs), Route("/dialog/end", stop_call, methods=["POST"]),
          Route("/stats", statistics), Route("/mi", mi_page), Route("/mi", mi_run, methods=["POST"])]
