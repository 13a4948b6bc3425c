"""Presence commands: presentity and watcher listings.

``pres_phtable_list`` / ``subs_phtable_list`` carry OpenSIPS's presence MI names; ``presentity_show``
and ``watcher_list`` answer for one ``user@domain`` (404 when nothing is known about it).
"""

from __future__ import annotations

import time
from typing import Any

from ...services import pidf
from ..context import MgmtContext
from ..registry import MgmtError, Param, command, need


def _aor(text: str) -> str:
    aor = text.strip()
    for prefix in ("sip:", "sips:"):
        if aor.lower().startswith(prefix):
            aor = aor[len(prefix):]
    user, at, domain = aor.rpartition("@")
    if not at or not user or not domain:
        raise MgmtError(400, f"not user@domain: {text!r}")
    return f"{user}@{domain.lower()}"


def _pub_json(p: Any, now: float) -> dict[str, Any]:
    s = pidf.summary(p.body)
    return {"ETag": p.etag, "Expires": max(0, int(p.expires - now)), "Sender": p.sender, "Basic": s.basic or "",
            "Notes": list(s.notes), "Activities": list(s.activities), "Published": int(p.received)}


def _sub_json(s: Any, now: float) -> dict[str, Any]:
    return {"Presentity": s.presentity, "Watcher": s.watcher, "Event": s.event, "Status": "active",
            "Expires": max(0, int(s.expires - now)), "Callid": s.call_id, "To_tag": s.to_tag, "From_tag": s.from_tag,
            "Contact": s.contact, "Local_cseq": s.local_cseq, "Socket": s.socket}


@command("pres_phtable_list", help="Every presentity with publications: entity tags, expiry, basic status, notes.")
async def pres_phtable_list(ctx: MgmtContext) -> Any:
    eng = need(ctx.state, "presence", "presence").engine
    now = time.time()
    return {"Presentities": [
        {"Presentity": aor, "InCall": bool(eng.in_call.get(aor)), "Watchers": len(eng.watchers_of(aor)),
         "Publications": [_pub_json(p, now) for p in pubs.values()]}
        for aor, pubs in sorted(eng.pubs.items())
    ]}


@command("subs_phtable_list", help="Every active presence / presence.winfo subscription.")
async def subs_phtable_list(ctx: MgmtContext) -> Any:
    eng = need(ctx.state, "presence", "presence").engine
    now = time.time()
    return {"Subscriptions": [_sub_json(s, now) for s in sorted(eng.subs.values(), key=lambda s: (s.presentity, s.watcher))]}


@command("presentity_show", params=[Param("presentity", help="user@domain")],
         help="One presentity: its publications and the merged PIDF document its watchers get.")
async def presentity_show(ctx: MgmtContext, presentity: str) -> Any:
    eng = need(ctx.state, "presence", "presence").engine
    aor = _aor(presentity)
    pubs = eng.pubs.get(aor, {})
    watchers = eng.watchers_of(aor)
    if not pubs and not watchers and not eng.in_call.get(aor):
        raise MgmtError(404, f"no presence state for {aor}")
    now = time.time()
    doc = eng.document(aor)
    return {"Presentity": aor, "InCall": bool(eng.in_call.get(aor)), "Watchers": len(watchers),
            "Publications": [_pub_json(p, now) for p in sorted(pubs.values(), key=lambda p: -p.received)],
            "Document": doc.decode("utf-8", "replace") if doc else ""}


@command("watcher_list", params=[Param("presentity", help="user@domain")],
         help="Who watches a presentity (presence subscriptions), and its presence.winfo subscribers.")
async def watcher_list(ctx: MgmtContext, presentity: str) -> Any:
    eng = need(ctx.state, "presence", "presence").engine
    aor = _aor(presentity)
    now = time.time()
    return {"Presentity": aor,
            "Watchers": [_sub_json(s, now) for s in eng.watchers_of(aor)],
            "Winfo": [_sub_json(s, now) for s in eng.watchers_of(aor, "presence.winfo")]}
