"""Searching the users page by page: by name, domain and alias together, in the database.

Pages are read by keyset on (domain, username), so the last page of 100,000 users costs what the
first costs, and only one page of rows ever leaves the database. Every value is a bound parameter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    from sipd.db import Database

PAGE = 50


def _like(text: str) -> str:
    return "%" + text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


def parse_cursor(text: str) -> tuple[str, str] | None:
    """``"<domain>|<user>"`` from a page link -> (domain, user); None for the first page."""
    if not text:
        return None
    domain, sep, user = text.partition("|")
    if not sep:
        raise UsageError("the page link is damaged", hint="start the search again")
    return domain, user


def search_users(db: Database, *, user: str = "", domain: str = "", alias: str = "",
                 after: tuple[str, str] | None = None, limit: int = PAGE) -> dict[str, Any]:
    """Users whose name, domain and one of whose aliases contain the given texts (empty = any).

    Returns:
        ``rows`` (user, domain, email, aliases), ``total`` matching users, and ``next``: the cursor
        of the following page ("" on the last).
    """
    limit = max(1, min(limit, 1000))
    clauses: list[str] = []
    params: list[Any] = []
    if user:
        clauses.append("s.username LIKE ? ESCAPE '!'")
        params.append(_like(user))
    if domain:
        clauses.append("s.domain LIKE ? ESCAPE '!'")
        params.append(_like(domain))
    if alias:
        clauses.append("EXISTS (SELECT 1 FROM dbaliases f WHERE f.username = s.username AND f.domain = s.domain "
                       "AND f.alias_username LIKE ? ESCAPE '!')")
        params.append(_like(alias))
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    total = db.query_one(f"SELECT COUNT(*) AS n FROM subscriber s{where}", params)
    if after is not None:
        clauses.append("(s.domain > ? OR (s.domain = ? AND s.username > ?))")
        params += [after[0], after[0], after[1]]
        where = " WHERE " + " AND ".join(clauses)
    rows = db.query("SELECT s.username, s.domain, s.email_address, "
                    "(SELECT COUNT(*) FROM dbaliases a WHERE a.username = s.username AND a.domain = s.domain) "
                    f"AS aliases FROM subscriber s{where} ORDER BY s.domain, s.username LIMIT {limit + 1}", params)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"rows": [{"user": r["username"], "domain": r["domain"], "email": r["email_address"] or "",
                      "aliases": int(r["aliases"])} for r in rows],
            "total": int(total["n"]) if total else 0,
            "next": f"{rows[-1]['domain']}|{rows[-1]['username']}" if more and rows else ""}
