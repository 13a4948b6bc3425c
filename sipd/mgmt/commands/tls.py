"""TLS management commands: tls_list (domains, certificates, expiry) and tls_reload.

Names follow OpenSIPS tls_mgm (``tls_list``, ``tls_reload``); unlike OpenSIPS, reload works for
file-configured domains: certificates and keys are re-read, a broken file keeps the old one.
"""

from __future__ import annotations

import os
from typing import Any

from ..context import MgmtContext
from ..registry import MgmtError, command


def _tls(ctx: MgmtContext) -> Any:
    tls = ctx.tls
    if tls is None:
        raise MgmtError(500, "command not activated (no TLS listener or [tls] certificate configured)")
    return tls


@command("tls_list", help="List TLS domains (role, socket/destination, certificate subject and expiry, "
                          "versions), listeners (handshakes in progress, failed, refused) and the TLS "
                          "connections of each process.")
async def tls_list(ctx: MgmtContext) -> dict[str, Any]:
    tls = _tls(ctx)
    listeners = {lst.name: {"listener": lst.name, "domain": lst.domain.name, "pending_handshakes": lst.pending,
                            "accepted": lst.accepted, "failed_handshakes": lst.failed, "refused": lst.refused}
                 for lst in ctx.listeners if hasattr(lst, "pending")}
    conns = ctx.connections() if ctx.connections is not None else {}
    processes = [{"process": 0, "pid": os.getpid(), "connections": conns.get("tls", 0)}]
    # with worker processes, each runs the handshakes of the sockets main hands it: the counts are
    # summed per listener, and each process says how many TLS connections it holds
    pool = ctx.workers
    for index, facts in sorted((await pool.probe()).items()) if pool is not None else ():
        processes.append({"process": index, "pid": facts.get("pid", 0), "connections": facts.get("tls", 0)})
        for lst in facts.get("tls_listeners", ()):
            mine = listeners.get(lst.get("listener"))
            if mine is not None:
                for key in ("pending_handshakes", "accepted", "failed_handshakes", "refused"):
                    mine[key] += int(lst.get(key, 0))
    return {"domains": tls.describe(), "listeners": list(listeners.values()), "processes": processes}


@command("tls_reload", help="Re-read certificates and keys of every TLS domain (broken files keep the old one).")
async def tls_reload(ctx: MgmtContext) -> dict[str, Any]:
    tls = _tls(ctx)
    report = tls.reload()
    if ctx.workers is not None:  # worker processes run handshakes too: they read the files again
        ctx.workers.ask_reload(0, ["tls"], [])
    return {"domains": report, "reloaded": sum(1 for r in report if r["reloaded"]),
            "failed": sum(1 for r in report if r["error"])}
