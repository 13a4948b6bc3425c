"""The Dashboard: is sipd running (version, uptime), and the numbers an operator looks at first."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...errors import MgmtUnavailable, SipctlError
from ...lib import provision
from ..panel import Panel, asked, view
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
    from sipd import __version__

    server = str(version.get("Server", ""))
    # A panel newer or older than the daemon may ask for commands it lacks: say so up front
    # instead of leaving the person with "Method not found" on some page.
    skew = "" if server.startswith(f"sipd {__version__} ") or server == f"sipd {__version__}" else \
        f"this panel is sipctl {__version__}, the running daemon is {server}: pages may lack what one of them has"
    return {"running": True, "version": server, "uptime": uptime.get("Up time", ""), "skew": skew,
            "since": uptime.get("Up since", ""), "stats": stats if isinstance(stats, dict) else {}}


def _doctor(config: Any) -> list[dict[str, str]]:
    """What ``sipctl doctor`` flags (its failures and warnings), without the DNS checks, which may
    wait on the network: those stay with ``sipctl doctor``."""
    from types import SimpleNamespace

    from ...lib import doctor

    env = SimpleNamespace(config_path=str(config.source) if config.source else None, db_url=config.database.url)
    report = doctor.run(env, skip_dns=True)
    return [{"verdict": f.verdict, "area": f.area, "subject": f.subject, "detail": f.detail, "hint": f.hint}
            for f in report.findings if f.verdict in (doctor.FAIL, doctor.WARN)]


@view()
async def index(panel: Panel, request: Request, session: Session) -> Response:
    from ...lib import cdrview, mgmt

    status = await sipd_status(panel)
    domains = await panel.db(provision.list_domains)
    users = sum(d["users"] for d in domains)
    stats = status.get("stats", {})
    tiles = [(label, stats.get(name, "–")) for name, label in TILES]
    tiles.insert(2, ("Calls in the last minute", await panel.db(cdrview.calls_since, 60)))
    tls, _ = await asked(panel.off_loop(mgmt.call, panel.config, "tls_list", {}, 2.0)) \
        if status.get("running") else (None, "")
    certs = [d for d in (tls.get("domains", []) if isinstance(tls, dict) else []) if d.get("not_after")]
    expiry = min(certs, key=lambda d: d.get("days_left", 1 << 30)) if certs else None
    flagged = await panel.off_loop(_doctor, panel.config)
    return panel.render(request, "dashboard.html", title="Dashboard", status=status, tiles=tiles,
                        domains=len(domains), users=users, expiry=expiry, flagged=flagged)


routes = [Route("/", index)]
