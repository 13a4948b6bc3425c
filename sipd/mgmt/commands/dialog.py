"""Dialog commands: dlg_list (with paging) and dlg_end_dlg (OpenSIPS names and reply shapes).

``dlg_list`` answers ``{"Dialogs": [...]}``; with ``callid`` (and ``from_tag``) it lists that call
only; with ``index``/``counter`` it returns a page of the dialogs ordered by ID, plus ``total``.
``dlg_end_dlg`` takes the ``ID`` shown by dlg_list or the SIP Call-ID: BYE both ways for an
answered call, CANCEL while it is early.
"""

from __future__ import annotations

import time
from typing import Any

from ..context import MgmtContext
from ..registry import MgmtError, Param, command, need

MAX_PAGE = 10_000


@command("dlg_list", params=[
    Param("callid", required=False, help="only the dialog(s) of this Call-ID"),
    Param("from_tag", required=False, help="with callid: only the dialog with this From tag"),
    Param("index", required=False, type="int", help="paging: first dialog to return (0-based)"),
    Param("counter", required=False, type="int", help="paging: how many dialogs to return"),
], help="Ongoing calls (dialogs): state, caller, callee, tags, times. Paging with index/counter.")
async def dlg_list(ctx: MgmtContext, callid: str | None = None, from_tag: str | None = None,
                   index: int | None = None, counter: int | None = None) -> Any:
    service = need(ctx.state, "dialogs", "dialog tracking")
    dialogs = service.tracker.list()
    if callid is not None:
        dialogs = [d for d in dialogs if d.call_id == callid and (from_tag is None or d.from_tag == from_tag)]
    total = len(dialogs)
    if index is not None or counter is not None:
        start = index or 0
        count = MAX_PAGE if counter is None else counter
        if start < 0 or count < 0:
            raise MgmtError(400, "index and counter must not be negative")
        dialogs = dialogs[start:start + min(count, MAX_PAGE)]
    wall = time.time()
    return {"Dialogs": [d.as_dict(wall) for d in dialogs], "total": total}


@command("dlg_end_dlg", params=[
    Param("dialog_id", help="ID from dlg_list, or the SIP Call-ID"),
    Param("extra_hdrs", required=False, help="accepted for OpenSIPS compatibility; ignored"),
], help="Hang up a call: BYE to both sides (CANCEL when still ringing).")
async def dlg_end_dlg(ctx: MgmtContext, dialog_id: str, extra_hdrs: str | None = None) -> Any:
    service = need(ctx.state, "dialogs", "dialog tracking")
    dlg = service.find(dialog_id.strip())
    if dlg is None:
        raise MgmtError(404, f"no such dialog: {dialog_id}")
    outcome = service.end(dlg)
    if outcome == "not-found":
        raise MgmtError(404, f"dialog {dialog_id} cannot be ended (its INVITE transaction is gone)")
    return "OK"
