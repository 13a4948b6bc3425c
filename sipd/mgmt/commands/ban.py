"""Ban table commands: ban_list, ban_add, ban_rm (and OpenSIPS's pike_list / pike_rm names).

The ban table is ``state.bans`` (a ``sipd.services.antiflood.Antiflood``). Its clock is the event
loop's (``loop.time()``), the same the transports pass to it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..context import MgmtContext
from ..registry import MgmtError, Param, command, need


def _now() -> float:
    return asyncio.get_running_loop().time()


@command("ban_list", help="The banned addresses and networks: reason, seconds left, packets dropped.")
async def ban_list(ctx: MgmtContext) -> Any:
    bans = need(ctx.state, "bans", "antiflood")
    return {"Bans": bans.ban_list(_now())}


@command("pike_list", help="Same as ban_list (OpenSIPS name).")
async def pike_list(ctx: MgmtContext) -> Any:
    return await ban_list(ctx)


@command("ban_add", params=[Param("ip", help="address or CIDR network"),
                            Param("seconds", required=False, type="int", help="ban length; 0 or absent = until removed")],
         help="Ban an address or network (its packets are dropped before parsing).")
async def ban_add(ctx: MgmtContext, ip: str, seconds: int | None = None) -> Any:
    bans = need(ctx.state, "bans", "antiflood")
    if seconds is not None and seconds < 0:
        raise MgmtError(400, "seconds must not be negative")
    now = _now()
    try:
        ban = bans.ban_add(ip, now, seconds or None)
    except ValueError:
        raise MgmtError(400, f"not an IP address or network: {ip}") from None
    return ban.as_dict(now)


@command("ban_rm", params=[Param("ip", help="address or CIDR network as listed")],
         help="Lift a ban (automatic or manual) and reset the source's counters.")
async def ban_rm(ctx: MgmtContext, ip: str) -> Any:
    bans = need(ctx.state, "bans", "antiflood")
    if not bans.ban_rm(ip):
        raise MgmtError(404, f"{ip} is not banned")
    return "OK"


@command("pike_rm", params=[Param("ip")], help="Same as ban_rm (OpenSIPS name).")
async def pike_rm(ctx: MgmtContext, ip: str) -> Any:
    return await ban_rm(ctx, ip)
