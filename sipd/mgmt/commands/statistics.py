"""get_statistics, list_statistics, reset_statistics (the shapes of OpenSIPS's MI commands of those names)."""

from __future__ import annotations

from typing import Any

from ..context import MgmtContext
from ..registry import MgmtError, Param, command

_STATS = Param("statistics", type="array", help="names: all, group: or group:name")


@command("get_statistics", params=[_STATS], help="Values of statistics (all, group: or group:name).")
async def get_statistics(ctx: MgmtContext, statistics: list[str]) -> Any:
    values = ctx.state.stats.get(statistics)
    if not values:
        raise MgmtError(404, "Statistics Not Found")
    return values


@command("list_statistics", params=[Param("statistics", required=False, type="array")],
         help="Names of statistics with their kind (incremental or non-incremental).")
async def list_statistics(ctx: MgmtContext, statistics: list[str] | None = None) -> Any:
    kinds = ctx.state.stats.kinds(statistics or "all")
    if not kinds:
        raise MgmtError(404, "Statistics Not Found")
    return kinds


@command("reset_statistics", params=[_STATS], help="Reset counters to zero (gauges are left alone).")
async def reset_statistics(ctx: MgmtContext, statistics: list[str]) -> Any:
    if not ctx.state.stats.reset(statistics):
        raise MgmtError(404, "Statistics Not Found")
    return "OK"


@command("reset_all_statistics", help="Reset every counter to zero.")
async def reset_all_statistics(ctx: MgmtContext) -> Any:
    ctx.state.stats.reset("all")
    return "OK"
