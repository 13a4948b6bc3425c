"""The audit log of management commands that reach sipd through its own FIFO or HTTP interface.

sipctl and the panel record what they change themselves (sipctl/lib/audit.py) and talk to sipd over
the Unix socket; a FIFO or HTTP client (opensips-cli style scripts, monitoring, curl) has no such
recorder, so sipd writes the row: a command that changed state and succeeded becomes one row of the
``audit`` table with origin "fifo" or "http", who (the owner of the FIFO's reply pipe; the bearer of
the HTTP token), from where (the reply pipe; the HTTP client's address), the action ("mi ul_rm") and
its parameters. The row is written on the daemon's database thread after the reply is on its way:
a slow or failing database never delays or fails the command (a failure is logged).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import time
from typing import Any

from . import protocol

logger = logging.getLogger(__name__)

# Management commands that only read. Any other one changes sipd's state: it is audited, and a
# read-only panel admin may not run it. A list of what is safe rather than of what is not, so a
# command added to sipd later counts as a change until it is listed here.
READ_ONLY_COMMANDS = frozenset({
    "which", "help", "uptime", "version", "ps", "get_statistics", "list_statistics", "ul_dump",
    "ul_show_contact", "dlg_list", "domain_dump", "dp_translate", "ban_list", "pike_list", "tls_list",
    "hook_status", "log_recent", "presentity_show", "watcher_list", "pres_phtable_list", "subs_phtable_list",
})

MAX_TEXT = 60_000  # what a TEXT column holds in MySQL, with room to spare
_pending: set[asyncio.Task[None]] = set()


def fifo_actor(reply_path: Any) -> str:
    """Who sent a FIFO request: the owner of the reply pipe it named (the FIFO itself is shared)."""
    try:
        uid = os.stat(reply_path).st_uid
    except OSError:
        return "unknown"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def http_source(writer: Any) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "unknown"


def record_fifo(state: Any, raw: bytes, reply_body: bytes | None, reply_path: Any) -> None:
    record(state, raw, reply_body, origin="fifo", actor=fifo_actor(reply_path), source=str(reply_path))


def record_http(state: Any, raw: bytes, reply_body: bytes | None, writer: Any) -> None:
    record(state, raw, reply_body, origin="http", actor="http token", source=http_source(writer))


def changed_state(raw: bytes, reply_body: bytes | None) -> tuple[str, Any] | None:
    """(method, params) of a request that changed state and succeeded; None for a read, a streamed
    reply (only reads stream), an error reply or a request that does not parse."""
    if reply_body is None:
        return None
    try:
        req = protocol.decode_request(raw)
    except protocol.RpcError:
        return None
    if req.method in READ_ONLY_COMMANDS:
        return None
    try:
        reply = json.loads(reply_body)
    except ValueError:
        return None
    if not isinstance(reply, dict) or "error" in reply:
        return None
    return req.method, req.params


def record(state: Any, raw: bytes, reply_body: bytes | None, *, origin: str, actor: str, source: str) -> None:
    """Audit one FIFO/HTTP request if it changed state (written off the event loop, not awaited)."""
    found = changed_state(raw, reply_body)
    store = getattr(state, "db", None)
    if found is None or store is None:
        return
    method, params = found
    if isinstance(params, dict):
        obj = " ".join(f"{k}={v}" for k, v in params.items())
    else:
        obj = " ".join(str(p) for p in params or [])
    after = json.dumps({"params": params}, ensure_ascii=False, default=str, sort_keys=True)[:MAX_TEXT]
    row = (time.strftime("%Y-%m-%d %H:%M:%S"), origin[:16], actor[:64], source[:128], f"mi {method}"[:32],
           (obj or "-")[:255], after)

    def insert(db: Any) -> None:
        db.execute("INSERT INTO audit (time, origin, actor, source, action, object, value_before, value_after) "
                   "VALUES (?, ?, ?, ?, ?, ?, NULL, ?)", row)

    async def write() -> None:
        try:
            await store.call(insert, store.db)
        except Exception as exc:  # noqa: BLE001 - the command is done; only its record is missing
            logger.error("management command %s (%s) is not in the audit log: %s", method, origin, exc)

    task = asyncio.get_running_loop().create_task(write())
    _pending.add(task)
    task.add_done_callback(_pending.discard)
