"""Searching the users page by page: by name, domain and alias together, in the database, and
optionally only those the running registrar has online.

Pages are read by keyset on (domain, username), so the last page of 100,000 users costs what the
first costs, and only one page of rows ever leaves the database. Every value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Collection
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


def _filters(user: str, domain: str, alias: str) -> tuple[list[str], list[Any]]:
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
    return clauses, params


_COLUMNS = ("SELECT s.username, s.domain, s.email_address, "
            "(SELECT COUNT(*) FROM dbaliases a WHERE a.username = s.username AND a.domain = s.domain) "
            "AS aliases FROM subscriber s")


def _row(r: dict[str, Any]) -> dict[str, Any]:
    return {"user": r["username"], "domain": r["domain"], "email": r["email_address"] or "",
            "aliases": int(r["aliases"])}


def search_users(db: Database, *, user: str = "", domain: str = "", alias: str = "",
                 after: tuple[str, str] | None = None, limit: int = PAGE,
                 online: Collection[str] | None = None) -> dict[str, Any]:
    """Users whose name, domain and one of whose aliases contain the given texts (empty = any);
    with ``online`` (the ``user@domain`` AORs the running registrar has live contacts for), only
    those users.

    Returns:
        ``rows`` (user, domain, email, aliases), ``total`` matching users, and ``next``: the cursor
        of the following page ("" on the last).
    """
    limit = max(1, min(limit, 1000))
    clauses, params = _filters(user, domain, alias)
    if online is not None:
        return _search_online(db, clauses, params, online, after, limit)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    total = db.query_one(f"SELECT COUNT(*) AS n FROM subscriber s{where}", params)
    if after is not None:
        clauses.append("(s.domain > ? OR (s.domain = ? AND s.username > ?))")
        params += [after[0], after[0], after[1]]
        where = " WHERE " + " AND ".join(clauses)
    rows = db.query(f"{_COLUMNS}{where} ORDER BY s.domain, s.username LIMIT {limit + 1}", params)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"rows": [_row(r) for r in rows], "total": int(total["n"]) if total else 0,
            "next": f"{rows[-1]['domain']}|{rows[-1]['username']}" if more and rows else ""}


ONLINE_CHUNK = 400  # (user, domain) pairs per query: 800 bound values, under every backend's limit


def _search_online(db: Database, clauses: list[str], params: list[Any], online: Collection[str],
                   after: tuple[str, str] | None, limit: int) -> dict[str, Any]:
    """The online users among the matches. The registrar's list is the truth (in memory only,
    write-back or database, whatever the location mode), so it is looked up in the subscriber table
    a chunk at a time rather than joined with the location table; then sorted and paged here."""
    pairs = sorted({(d, u) for u, sep, d in (a.rpartition("@") for a in online) if sep})
    found: list[dict[str, Any]] = []
    for i in range(0, len(pairs), ONLINE_CHUNK):
        chunk = pairs[i:i + ONLINE_CHUNK]
        ours = "(" + " OR ".join(["(s.username = ? AND s.domain = ?)"] * len(chunk)) + ")"
        values = [v for d, u in chunk for v in (u, d)]
        found += db.query(f"{_COLUMNS} WHERE {' AND '.join([*clauses, ours])}", [*params, *values])
    found.sort(key=lambda r: (r["domain"], r["username"]))
    rest = [r for r in found if after is None or (r["domain"], r["username"]) > after]
    page = rest[:limit]
    return {"rows": [_row(r) for r in page], "total": len(found),
            "next": f"{page[-1]['domain']}|{page[-1]['username']}" if len(rest) > limit and page else ""}
