"""The queries the daemon needs, as plain blocking functions over a ``Database``.

The daemon calls them through ``asyncio.to_thread`` from its ``*/store.py`` modules; sipctl uses
some of them too. Names are lowercased where SIP compares case-insensitively (domains).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Database

#: Columns of ``location`` the daemon may write (contact_id is assigned by the database).
LOCATION_COLUMNS = (
    "username", "domain", "contact", "received", "path", "expires", "q", "callid", "cseq",
    "last_modified", "flags", "cflags", "user_agent", "socket", "methods", "sip_instance",
    "kv_store", "attr", "reg_id",
)


def location_ruid(username: str, domain: str | None, contact: str, instance: str | None = None,
                  reg_id: int | None = None) -> str:
    """The ``location.ruid`` of a binding: what identifies it within its AOR (its +sip.instance
    and reg-id when it has an instance, else its contact URI), with the AOR, as 64 hex digits."""
    import hashlib

    aor = f"{username}@{(domain or '').lower()}"
    key = f"i\0{aor}\0{instance}\0{int(reg_id or 0)}" if instance else f"c\0{aor}\0{contact}"
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def load_domains(db: Database) -> set[str]:
    """All local domains (lowercase)."""
    return {r["domain"].lower() for r in db.query("SELECT domain FROM domain")}


def load_subscriber(db: Database, username: str, domain: str) -> dict[str, str] | None:
    """``{"ha1": ..., "ha1_sha256": ...}`` of one subscriber, or None if unknown."""
    row = db.query_one("SELECT ha1, ha1_sha256 FROM subscriber WHERE username = ? AND domain = ?",
                       (username, domain.lower()))
    return {"ha1": row["ha1"], "ha1_sha256": row["ha1_sha256"]} if row else None


def load_subscribers(db: Database) -> dict[tuple[str, str], dict[str, str]]:
    """Every subscriber: ``(username, domain) -> {"ha1", "ha1_sha256"}`` (for a full cache)."""
    return {(r["username"], r["domain"].lower()): {"ha1": r["ha1"], "ha1_sha256": r["ha1_sha256"]}
            for r in db.query("SELECT username, domain, ha1, ha1_sha256 FROM subscriber")}


def load_aliases(db: Database) -> dict[tuple[str, str], tuple[str, str]]:
    """``(alias_username, alias_domain) -> (username, domain)``."""
    return {(r["alias_username"], r["alias_domain"].lower()): (r["username"], r["domain"].lower())
            for r in db.query("SELECT alias_username, alias_domain, username, domain FROM dbaliases")}


def load_dialplan(db: Database, *, include_disabled: bool = False) -> list[dict[str, Any]]:
    """Dialplan rows ordered by (pr, id) (``sipd.services.dialplan.rule_from_row`` makes each a rule)."""
    where = "" if include_disabled else " WHERE disabled = 0"
    return db.query("SELECT id, dpid, pr, match_op, match_exp, match_flags, subst_exp, repl_exp, "
                    f"timerec, disabled, attrs FROM dialplan{where} ORDER BY pr, id")


def _now_text(now: float | None = None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))


def upsert_location(db: Database, row: Mapping[str, Any]) -> int:
    """Insert or update one contact binding, keyed by (username, domain, contact).

    Args:
        row: column -> value, from ``LOCATION_COLUMNS``; needs username, domain, contact, expires
            (unix time, 0 = permanent). ``last_modified`` defaults to now.
    Returns:
        The row's contact_id.
    """
    data = {k: v for k, v in row.items() if k in LOCATION_COLUMNS}
    unknown = set(row) - set(LOCATION_COLUMNS) - {"contact_id"}
    if unknown:
        raise ValueError(f"unknown location columns: {', '.join(sorted(unknown))}")
    data.setdefault("last_modified", _now_text())
    data["ruid"] = location_ruid(data["username"], data["domain"], data["contact"], data.get("sip_instance"),
                                 data.get("reg_id"))
    key = (data["username"], data["domain"], data["contact"])

    def upsert(db: Database) -> int:
        found = db.query_one(
            "SELECT contact_id FROM location WHERE username = ? AND domain = ? AND contact = ?", key)
        if found:
            cols = [c for c in data if c not in ("username", "domain", "contact")]
            if cols:
                db.execute("UPDATE location SET " + ", ".join(f"{c} = ?" for c in cols)
                           + " WHERE contact_id = ?", [data[c] for c in cols] + [found["contact_id"]])
            return int(found["contact_id"])
        cols = list(data)
        res = db.execute(f"INSERT INTO location ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                         [data[c] for c in cols])
        return int(res.lastrowid or 0)

    return db.run_transaction(upsert)


def delete_location(db: Database, username: str, domain: str, contact: str | None = None) -> int:
    """Delete one binding (``contact`` given) or all bindings of the AOR. Returns rows deleted."""
    if contact is None:
        return db.execute("DELETE FROM location WHERE username = ? AND domain = ?",
                          (username, domain)).rowcount
    return db.execute("DELETE FROM location WHERE username = ? AND domain = ? AND contact = ?",
                      (username, domain, contact)).rowcount


def delete_expired_locations(db: Database, now: float) -> int:
    """Delete bindings whose ``expires`` (unix time, non-zero) is at or before ``now``."""
    return db.execute("DELETE FROM location WHERE expires <> 0 AND expires <= ?", (int(now),)).rowcount


def load_locations(db: Database, *, now: float | None = None) -> list[dict[str, Any]]:
    """All bindings (as dicts of every location column), skipping expired ones when ``now`` given."""
    if now is None:
        return db.query("SELECT * FROM location ORDER BY contact_id")
    return db.query("SELECT * FROM location WHERE expires = 0 OR expires > ? ORDER BY contact_id",
                    (int(now),))


def replace_locations(db: Database, rows: Iterable[Mapping[str, Any]]) -> None:
    """Replace the whole table with ``rows`` in one transaction (shutdown flush)."""
    rows = list(rows)  # a list: a rerun after a conflict needs them again

    def replace(db: Database) -> None:
        db.execute("DELETE FROM location")
        for row in rows:
            upsert_location(db, row)

    db.run_transaction(replace)


def check_writable(db: Database) -> None:
    """Take the write lock once, changing nothing: a database this user can read but never write
    (a read-only SQLite file, a MySQL user with SELECT only, a server in read_only mode) fails here
    instead of at the first REGISTER. Raises DbAccessDenied (or the DbError that stopped it)."""
    with db.transaction():
        if db.dialect == "sqlite":  # the lock alone passes on a read-only file in WAL mode: write a page
            version = int(db.query_one("PRAGMA user_version")["user_version"])  # type: ignore[index]
            db.execute(f"PRAGMA user_version = {version}")
        else:  # MySQL checks the privilege and read_only on a write statement, rows or not
            db.execute("DELETE FROM location WHERE 1 = 0")
