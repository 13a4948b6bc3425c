"""Cache commands: domain_reload, domain_dump, dp_reload, dp_translate, subscriber_reload."""

from __future__ import annotations

import logging
from typing import Any

from ...reloading import reload_tables, reload_workers
from ..context import MgmtContext
from ..registry import MgmtError, Param, command, need

logger = logging.getLogger(__name__)


async def _reload(ctx: MgmtContext, attr: str, what: str) -> str:
    need(ctx.state, attr, what)
    try:
        await reload_tables(ctx.state, [attr])
    except Exception as exc:
        logger.warning("%s reload failed: %s", what, exc, exc_info=True)
        raise MgmtError(500, f"{what} reload failed: {exc}") from None
    await reload_workers(ctx.workers, [attr])  # each worker process holds its own copy
    logger.info("reloaded %s", attr)
    return "OK"


@command("domain_reload", help="Reload the local domains from the database.")
async def domain_reload(ctx: MgmtContext) -> Any:
    return await _reload(ctx, "domains", "domain cache")


@command("domain_dump", help="The local domains held in memory.")
async def domain_dump(ctx: MgmtContext) -> Any:
    cache = need(ctx.state, "domains", "domain cache")
    out = []
    for name, attrs in cache.dump():
        item: dict[str, Any] = {"name": name}
        if attrs:
            item["attributes"] = attrs
        out.append(item)
    return {"Domains": out}


@command("dp_reload", params=[Param("partition", required=False)], help="Reload the dialplan rules.")
async def dp_reload(ctx: MgmtContext, partition: str | None = None) -> Any:
    return await _reload(ctx, "dialplan", "dialplan")


@command("dp_translate", params=[Param("dpid"), Param("input"), Param("partition", required=False)],
         help="Translate input with the rules of dialplan id dpid.")
async def dp_translate(ctx: MgmtContext, dpid: str, input: str, partition: str | None = None) -> Any:
    cache = need(ctx.state, "dialplan", "dialplan")
    try:
        dp = int(str(dpid).strip())
    except ValueError:
        raise MgmtError(404, "Empty/Wrong id parameter") from None
    has = getattr(cache, "has_dpid", None)
    if has is not None and not has(dp):
        raise MgmtError(404, "No information available for dpid")
    found = cache.translate(dp, input)
    if found is None:
        raise MgmtError(404, "No translation")
    output, rule = found
    return {"Output": output, "ATTRIBUTES": getattr(rule, "attrs", "") or ""}


@command("subscriber_reload", help="Flush the subscriber (HA1) cache; entries are re-read on use.")
async def subscriber_reload(ctx: MgmtContext) -> Any:
    return await _reload(ctx, "subscribers", "subscriber cache")
