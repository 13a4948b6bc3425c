"""The Dashboard: is sipd running (version, uptime), and the numbers an operator looks at first."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...errors import MgmtUnavailable, SipctlError
from ...lib import provision
from ..app import Panel, view
from ..session import Session

# OpenSIPS statistic names shown as the dashboard's tiles.
TILES = [
    ("usrloc:registered_users", "Registered users"),
    ("dialog:active_dialogs", "Live calls"),
    ("dialog:processed_dialogs", "Calls since start"),
    ("dialog:failed_dialogs", "Failed calls"),
    ("registrar:accepted_regs", "Accepted REGISTERs"),
    ("registrar:rejected_regs", "Rejected REGISTERs"),
]


async def sipd_status(panel: Panel) -> dict[str, Any]:
    """Version, uptime and statistics of the running sipd, or why they cannot be had."""
    try:
        version = await panel.mgmt("version", timeout=2.0)
        uptime = await panel.mgmt("uptime", timeout=2.0)
        stats = await panel.mgmt("get_statistics", [["all"]], timeout=2.0)
    except MgmtUnavailable as exc:
        return {"running": False, "problem": exc.message}
    except SipctlError as exc:
        return {"running": True, "problem": exc.message, "stats": {}}
    return {"running": True, "version": version.get("Server", ""), "uptime": uptime.get("Up time", ""),
            "since": uptime.get("Up since", ""), "stats": stats if isinstance(stats, dict) else {}}


@view()
async def index(panel: Panel, request: Request, session: Session) -> Response:
    status = await sipd_status(panel)
    domains = await panel.db(provision.list_domains)
    users = sum(d["users"] for d in domains)
    stats = status.get("stats", {})
    tiles = [(label, stats.get(name, "–")) for name, label in TILES]
    return panel.render(request, "dashboard.html", title="Dashboard", status=status, tiles=tiles,
                        domains=len(domains), users=users)


routes = [Route("/", index)]
