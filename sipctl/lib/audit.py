"""The audit log: who changed what, from where, when, and the value before and after.

Changes made through the panel and through sipctl are recorded in the ``audit`` table, one row per
action (sipd itself records the commands its FIFO and HTTP clients send: sipd/mgmt/audit.py). ``before`` and ``after`` are JSON text of what the database held; a password is never
among them (only that it changed). The columns are ``value_before`` and ``value_after``
(BEFORE is a reserved word in MySQL). Reading is newest first, by keyset on the row id.

No Typer, rich or web code here.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sipd.mgmt.audit import READ_ONLY_COMMANDS  # noqa: F401 - with the daemon, which audits FIFO/HTTP by it

if TYPE_CHECKING:
    from sipd.db import Database

    from .changes import Change

PANEL, SIPCTL = "panel", "sipctl"
COLUMNS = ["id", "time", "origin", "actor", "source", "action", "object", "value_before", "value_after"]
MAX_TEXT = 60_000  # TEXT columns hold 64 KiB in MySQL; a bigger value is cut and marked


def _json(value: Any) -> str | None:
    if value is None:
        return None
    text = json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…(cut)"


def cli_actor() -> tuple[str, str]:
    """(who, from where) for a sipctl command: the Unix user, and the host with its terminal."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = f"uid {os.getuid()}"
    try:
        tty = os.ttyname(0)
    except OSError:
        tty = "no terminal"
    return who, f"{socket.gethostname()} {tty}"


def record(db: Database, *, origin: str, actor: str, source: str, action: str, obj: str,
           before: Any = None, after: Any = None, now: float | None = None) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() if now is None else now))
    db.execute("INSERT INTO audit (time, origin, actor, source, action, object, value_before, value_after) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (stamp, origin[:16], actor[:64], source[:128], action[:32], obj[:255], _json(before),
                _json(after)))


def change_object(change: Change) -> str:
    """What a provisioning change acted on, in the words of the CLI (alice@example.org, rule 7)."""
    d = change.data
    if "alias" in d:
        return str(d["alias"])
    if "user" in d and "domain" in d:
        return f"{d['user']}@{d['domain']}"
    if "domain" in d:
        return str(d["domain"])
    if "id" in d:
        return f"rule {d['id']}"
    return change.message


def change_after(change: Change) -> Any:
    """What the database holds after the change; None when the thing was removed."""
    if change.action.endswith(" rm"):
        return None
    return {k: v for k, v in change.data.items() if k != "password"}


def before(db: Database, action: str, **key: Any) -> Any:
    """What the database holds before ``action`` on ``key`` (read just before the change), or None."""
    kind = action.split(" ", 1)[0]
    if kind == "dp" and "rule_id" in key:
        row = db.query_one("SELECT id, dpid, pr, match_op, match_exp, match_flags, subst_exp, repl_exp, "
                           "disabled, attrs FROM dialplan WHERE id = ?", (key["rule_id"],))
        return dict(row) if row else None
    if kind == "domain" and "domain" in key:
        row = db.query_one("SELECT domain, attrs, accept_subdomain FROM domain WHERE domain = ?", (key["domain"],))
        return dict(row) if row else None
    if kind == "user" and "user" in key:
        row = db.query_one("SELECT username, domain, email_address FROM subscriber WHERE username = ? AND domain = ?",
                           (key["user"], key["domain"]))
        return dict(row) if row else None
    if kind == "alias" and "alias_user" in key:
        row = db.query_one("SELECT alias_username, alias_domain, username, domain FROM dbaliases "
                           "WHERE alias_username = ? AND alias_domain = ?", (key["alias_user"], key["alias_domain"]))
        return dict(row) if row else None
    return None


def record_change(db: Database, change: Change, *, origin: str, actor: str, source: str,
                  previous: Any = None) -> None:
    record(db, origin=origin, actor=actor, source=source, action=change.action, obj=change_object(change),
           before=change.previous if previous is None else previous, after=change_after(change))


def list_entries(db: Database, *, limit: int = 50, before_id: int | None = None, actor: str = "",
                 action: str = "", obj: str = "") -> dict[str, Any]:
    """Newest first; ``next`` is the id to pass as ``before_id`` for older rows (0 when none)."""
    limit = max(1, min(limit, 10_000))
    clauses, params = [], []
    if before_id:
        clauses.append("id < ?")
        params.append(before_id)
    for col, value in (("actor", actor), ("action", action), ("object", obj)):
        if value:
            clauses.append(f"{col} LIKE ? ESCAPE '!'")
            params.append("%" + value.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%")
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = db.query(f"SELECT {', '.join(COLUMNS)} FROM audit{where} ORDER BY id DESC LIMIT {limit + 1}", params)
    more = len(rows) > limit
    rows = [{k: (str(v) if hasattr(v, "isoformat") else v) for k, v in r.items()} for r in rows[:limit]]
    return {"rows": rows, "next": int(rows[-1]["id"]) if more and rows else 0}


def cli_listener(config: Callable[[], Any], on_error: Callable[[str], None]) -> Callable[[Change], None]:
    """What records each provisioning change this sipctl process makes (for ``changes.subscribe``).

    Args:
        config: returns the loaded configuration (called only when a change happens).
        on_error: told, in one line, when the change was made but could not be recorded.
    """
    from ..errors import SipctlError
    from .db import session

    def listener(change: Change) -> None:
        who, where = cli_actor()
        conf = config().database
        try:
            with session(conf.url, conf.connect_timeout) as db:
                record_change(db, change, origin=SIPCTL, actor=who, source=where)
        except SipctlError as exc:
            on_error(f"the change is made but not in the audit log: {exc.message} "
                     "(sipctl db migrate adds the audit table)")

    return listener


def record_cli(db: Database, action: str, obj: str, after: Any = None) -> None:
    """Audit a sipctl action that is not a provisioning change (an MI command, a panel admin)."""
    who, where = cli_actor()
    record(db, origin=SIPCTL, actor=who, source=where, action=action, obj=obj, after=after)
