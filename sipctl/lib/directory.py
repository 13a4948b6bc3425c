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
    """``"<a>|<b>"`` from a page link -> (a, b), e.g. (domain, user); None for the first page."""
    if not text:
        return None
    domain, sep, user = text.partition("|")
    if not sep:
        raise UsageError("the page link is damaged", hint="start the search again")
    return domain, user


def _filters(wanted: list[tuple[str, str]]) -> tuple[list[str], list[Any]]:
    """One ``LIKE`` clause per (SQL condition with ``?`` for the pattern, text) whose text is not empty."""
    clauses, params = [], []
    for condition, text in wanted:
        if text:
            clauses.append(condition)
            params += [_like(text)] * condition.count("?")
    return clauses, params


def _keyset_page(db: Database, select: str, table: str, keys: tuple[str, str], clauses: list[str],
                 params: list[Any], after: tuple[str, str] | None, limit: int) -> tuple[list[Any], int, str]:
    """One page of ``select FROM table`` ordered by ``keys`` after the cursor ``after``: the rows,
    the total of all matches, and the next page's cursor ("" on the last)."""
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    total = db.query_one(f"SELECT COUNT(*) AS n FROM {table}{where}", params)
    if after is not None:
        clauses = [*clauses, f"({keys[0]} > ? OR ({keys[0]} = ? AND {keys[1]} > ?))"]
        params = [*params, after[0], after[0], after[1]]
        where = " WHERE " + " AND ".join(clauses)
    rows = db.query(f"{select} FROM {table}{where} ORDER BY {keys[0]}, {keys[1]} LIMIT {limit + 1}", params)
    last = [k.rsplit(".", 1)[-1] for k in keys]
    cursor = f"{rows[limit - 1][last[0]]}|{rows[limit - 1][last[1]]}" if len(rows) > limit else ""
    return rows[:limit], int(total["n"]) if total else 0, cursor


def _user_filters(user: str, domain: str, alias: str) -> tuple[list[str], list[Any]]:
    return _filters([
        ("s.username LIKE ? ESCAPE '!'", user), ("s.domain LIKE ? ESCAPE '!'", domain),
        ("EXISTS (SELECT 1 FROM dbaliases f WHERE f.username = s.username AND f.domain = s.domain "
         "AND f.alias_username LIKE ? ESCAPE '!')", alias)])


_COLUMNS = ("SELECT s.username, s.domain, s.email_address, "
            "(SELECT COUNT(*) FROM dbaliases a WHERE a.username = s.username AND a.domain = s.domain) AS aliases")


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
    clauses, params = _user_filters(user, domain, alias)
    if online is not None:
        return _search_online(db, clauses, params, online, after, limit)
    rows, total, cursor = _keyset_page(db, _COLUMNS, "subscriber s", ("s.domain", "s.username"), clauses, params,
                                       after, limit)
    return {"rows": [_row(r) for r in rows], "total": total, "next": cursor}


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
        found += db.query(f"{_COLUMNS} FROM subscriber s WHERE {' AND '.join([*clauses, ours])}", [*params, *values])
    found.sort(key=lambda r: (r["domain"], r["username"]))
    rest = [r for r in found if after is None or (r["domain"], r["username"]) > after]
    page = rest[:limit]
    return {"rows": [_row(r) for r in page], "total": len(found),
            "next": f"{page[-1]['domain']}|{page[-1]['username']}" if len(rest) > limit and page else ""}


def search_aliases(db: Database, *, alias: str = "", user: str = "", domain: str = "",
                   after: tuple[str, str] | None = None, limit: int = PAGE) -> dict[str, Any]:
    """Aliases whose alias, target user and domain (of either side) contain the given texts.

    Pages are read by keyset on (alias_username, alias_domain), the unique index of the table, so
    any page costs what the first costs. Returns ``rows`` (alias, target), ``total`` and ``next``:
    the cursor ``"<alias_username>|<alias_domain>"`` of the following page ("" on the last).
    """
    limit = max(1, min(limit, 1000))
    clauses, params = _filters([
        ("alias_username LIKE ? ESCAPE '!'", alias), ("username LIKE ? ESCAPE '!'", user),
        ("(alias_domain LIKE ? ESCAPE '!' OR domain LIKE ? ESCAPE '!')", domain)])
    rows, total, cursor = _keyset_page(db, "SELECT alias_username, alias_domain, username, domain", "dbaliases",
                                       ("alias_username", "alias_domain"), clauses, params, after, limit)
    return {"rows": [{"alias": f"{r['alias_username']}@{r['alias_domain']}", "target": f"{r['username']}@{r['domain']}"}
                     for r in rows], "total": total, "next": cursor}
