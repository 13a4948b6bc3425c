"""usrloc commands: ul_dump, ul_show_contact, ul_rm, ul_rm_contact (OpenSIPS 3.x reply shapes).

``ul_dump`` streams its AOR array (``LazyList``) and yields to the event loop every few hundred
AORs, so dumping 100,000 contacts neither stalls SIP processing nor builds the reply in memory.
Paging (our extension, named params ``after`` and ``limit``): the AORs after the cursor in sorted
order; the reply then carries ``"Next": <last AOR>`` when more remain.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import AsyncIterator
from typing import Any

from ..context import MgmtContext
from ..registry import LazyList, MgmtError, Param, command, need

TABLE = "location"
HASH_SIZE = 512
ALL_METHODS = 4294967295
#: AORs encoded between two yields to the event loop.
YIELD_EVERY = 256
MAX_PAGE = 100_000


def q2str(q: float | None) -> str:
    """OpenSIPS q2str: "" when unspecified, else the shortest decimal ("1", "0.5")."""
    if q is None or q < 0:
        return ""
    text = f"{q:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def expires_value(expires: float, now: float) -> int | str:
    if not expires:
        return "permanent"
    left = int(expires - now)
    return left if left > 0 else "expired"


def contact_json(c: Any, now: float) -> dict[str, Any]:
    """One contact in ul_dump key order (optional keys only when set)."""
    out: dict[str, Any] = {"Contact": c.uri}
    cid = getattr(c, "contact_id", None)
    if cid is not None:
        out["ContactID"] = str(cid)
    out["Expires"] = expires_value(c.expires, now)
    out["Q"] = q2str(c.q)
    out["Callid"] = c.call_id
    out["Cseq"] = c.cseq
    if c.user_agent:
        out["User-agent"] = c.user_agent
    if c.received:
        out["Received"] = c.received
    if c.path:
        out["Path"] = c.path
    out["State"] = getattr(c, "state", None) or "CS_NEW"
    out["Flags"] = c.flags or 0
    out["Cflags"] = c.cflags or ""
    out["Socket"] = c.socket or ""
    out["Methods"] = ALL_METHODS if c.methods is None else c.methods
    attr = getattr(c, "attr", None)
    if attr:
        out["Attr"] = attr
    if c.instance:
        out["SIP_instance"] = c.instance
    reg_id = getattr(c, "reg_id", None)
    if reg_id is not None:
        out["Reg-Id"] = reg_id
    return out


def display_aor(aor: str) -> str:
    for prefix in ("sip:", "sips:"):
        if aor.startswith(prefix):
            return aor[len(prefix):]
    return aor


def _check_table(table_name: str) -> None:
    if table_name != TABLE:
        raise MgmtError(404, "Table not found")


def _find_aor(location: Any, aor: str) -> tuple[str, list[Any]]:
    """The stored key and contacts of ``aor``, tolerating a sip: prefix and host case."""
    if "@" not in aor:
        raise MgmtError(400, "Domain missing in AOR")
    bare = display_aor(aor.strip())
    user, _, host = bare.rpartition("@")
    candidates = [aor, bare, f"{user}@{host.lower()}", f"sip:{bare}", f"sip:{user}@{host.lower()}"]
    for key in dict.fromkeys(candidates):
        contacts = location.contacts(key)
        if contacts:
            return key, contacts
    raise MgmtError(404, "AOR not found")


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "no", "false")


@command("ul_dump", params=[Param("brief", required=False, help="1 = AORs only"),
                            Param("after", required=False, help="paging cursor: AORs after this one"),
                            Param("limit", required=False, type="int", help="paging: at most this many AORs")],
         help="Every registered AOR with its contacts (brief: AORs only).")
async def ul_dump(ctx: MgmtContext, brief: str | None = None, after: str | None = None,
                  limit: int | None = None) -> Any:
    location = need(ctx.state, "location", "usrloc")
    short = _truthy(brief)
    reply: dict[str, Any] = {}
    if limit is not None or after is not None:
        if limit is None:
            limit = 10_000
        if not 0 < limit <= MAX_PAGE:
            raise MgmtError(400, f"limit must be between 1 and {MAX_PAGE}")
        cursor = after or ""
        page = heapq.nsmallest(limit + 1, (a for a in location.aors() if a > cursor))
        aors = page[:limit]
        if len(page) > limit:
            reply["Next"] = aors[-1]
    else:
        aors = list(location.aors())

    async def produce() -> AsyncIterator[Any]:
        now = time.time()
        for i, aor in enumerate(aors):
            if i and i % YIELD_EVERY == 0:
                await asyncio.sleep(0)
                now = time.time()
            contacts = location.contacts(aor)
            if not contacts:
                continue  # removed while we were dumping
            if short:
                yield {"AOR": display_aor(aor)}
            else:
                yield {"AOR": display_aor(aor), "Contacts": [contact_json(c, now) for c in contacts]}

    domain = {"name": TABLE, "hash_size": HASH_SIZE, "AORs": LazyList(produce())}
    return {"Domains": [domain], **reply}


@command("ul_show_contact", params=[Param("table_name", help="location"), Param("aor", help="user@domain")],
         help="The contacts of one AOR.")
async def ul_show_contact(ctx: MgmtContext, table_name: str, aor: str) -> Any:
    location = need(ctx.state, "location", "usrloc")
    _check_table(table_name)
    key, contacts = _find_aor(location, aor)
    now = time.time()
    return {"AOR": display_aor(key), "Contacts": [contact_json(c, now) for c in contacts]}


@command("ul_rm", params=[Param("table_name"), Param("aor")], help="Remove an AOR and all its contacts.")
async def ul_rm(ctx: MgmtContext, table_name: str, aor: str) -> Any:
    location = need(ctx.state, "location", "usrloc")
    _check_table(table_name)
    key, _ = _find_aor(location, aor)
    location.remove(key)
    return "OK"


@command("ul_rm_contact", params=[Param("table_name"), Param("aor"), Param("contact")],
         help="Remove one contact of an AOR.")
async def ul_rm_contact(ctx: MgmtContext, table_name: str, aor: str, contact: str) -> Any:
    location = need(ctx.state, "location", "usrloc")
    _check_table(table_name)
    key, contacts = _find_aor(location, aor)
    if not any(c.uri == contact for c in contacts):
        raise MgmtError(404, "Contact not found")
    location.remove(key, contact)
    return "OK"
