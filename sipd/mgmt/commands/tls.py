"""TLS management commands: tls_list (domains, certificates, expiry) and tls_reload.

Names follow OpenSIPS tls_mgm (``tls_list``, ``tls_reload``); unlike OpenSIPS, reload works for
file-configured domains: certificates and keys are re-read, a broken file keeps the old one.
"""

from __future__ import annotations

from typing import Any

from ..context import MgmtContext
from ..registry import MgmtError, command


def _tls(ctx: MgmtContext) -> Any:
    tls = ctx.tls
    if tls is None:
        raise MgmtError(500, "command not activated (no TLS listener or [tls] certificate configured)")
    return tls


@command("tls_list", help="List TLS domains (role, socket/destination, certificate subject and expiry, versions) and listeners (handshakes in progress, failed, refused).")
async def tls_list(ctx: MgmtContext) -> dict[str, Any]:
    tls = _tls(ctx)
    listeners = [{"listener": lst.name, "domain": lst.domain.name, "pending_handshakes": lst.pending,
                  "accepted": lst.accepted, "failed_handshakes": lst.failed, "refused": lst.refused}
                 for lst in ctx.listeners if hasattr(lst, "pending")]
    return {"domains": tls.describe(), "listeners": listeners}


@command("tls_reload", help="Re-read certificates and keys of every TLS domain (broken files keep the old one).")
async def tls_reload(ctx: MgmtContext) -> dict[str, Any]:
    tls = _tls(ctx)
    report = tls.reload()
    return {"domains": report, "reloaded": sum(1 for r in report if r["reloaded"]),
            "failed": sum(1 for r in report if r["error"])}
