"""log_recent: the last warnings and errors the daemon logged (for sipctl doctor)."""

from __future__ import annotations

import time
from typing import Any

from ...logging import RECENT
from ..context import MgmtContext
from ..registry import Param, command


@command("log_recent", params=[Param("seconds", required=False, help="only records newer than this many seconds"),
                                Param("level", required=False, help="WARNING (default) or ERROR")],
         help="The most recent warnings and errors logged by sipd (kept in memory, newest last).")
async def log_recent(ctx: MgmtContext, seconds: str | None = None, level: str | None = None) -> Any:
    since = time.time() - float(seconds) if seconds else 0.0
    wanted = {"ERROR", "CRITICAL"} if (level or "").upper() == "ERROR" else {"WARNING", "ERROR", "CRITICAL"}
    return {"Records": [{"time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)), "level": lvl, "message": msg}
                        for t, lvl, msg in RECENT.records if t >= since and lvl in wanted]}
