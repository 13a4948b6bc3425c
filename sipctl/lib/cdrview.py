"""Searching CDRs and missed calls page by page, and exporting any result as CSV in constant memory.

The search combines a start-time range with caller, callee, Call-ID and status. Pages are read by
keyset ("the rows before this (start_time, id)"), newest first, so page 40,000 of a million CDRs
costs what page 1 costs: an index range scan, never an OFFSET that reads and throws away what comes
before. The export walks the same keyset in batches, opening a short database session per batch,
so its memory does not grow with the number of rows and no transaction stays open for minutes.

Every value is a bound parameter; column names come from the fixed lists below, never from input.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .cdr import CDR_COLUMNS, MISSED_COLUMNS, STATUSES, parse_when

if TYPE_CHECKING:
    from sipd.db import Database

PAGE = 25
MAX_PAGE = 5000
EXPORT_BATCH = 2000
ACC_COLUMNS = ["id", "method", "time", "sip_code", "sip_reason", "caller", "callee", "from_tag", "to_tag",
               "duration", "ms_duration", "setuptime", "callid"]


@dataclass(frozen=True)
class Search:
    """What the person asked for; empty strings mean "any"."""

    since: str = ""
    until: str = ""
    caller: str = ""
    callee: str = ""
    callid: str = ""
    status: str = ""

    @classmethod
    def from_mapping(cls, m: Any) -> Search:
        return cls(**{k: str(m.get(k, "") or "").strip() for k in ("since", "until", "caller", "callee",
                                                                    "callid", "status")})

    def as_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in ("since", "until", "caller", "callee", "callid", "status")}


@dataclass(frozen=True)
class Table:
    name: str
    time_col: str
    columns: list[str]
    has_status: bool


CDRS = Table("cdrs", "start_time", CDR_COLUMNS, True)
MISSED = Table("missed_calls", "time", MISSED_COLUMNS, False)


def _where(t: Table, s: Search) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if s.since:
        clauses.append(f"{t.time_col} >= ?")
        params.append(parse_when(s.since))
    if s.until:
        clauses.append(f"{t.time_col} < ?")
        params.append(parse_when(s.until))
    for col in ("caller", "callee"):
        value = getattr(s, col)
        if value:
            clauses.append(f"{col} LIKE ? ESCAPE '!'")
            params.append("%" + value.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%")
    if s.callid:
        clauses.append("callid = ?")
        params.append(s.callid)
    if s.status:
        if not t.has_status:
            raise UsageError("missed calls have no status to search by")
        if s.status not in STATUSES:
            raise UsageError(f"unknown status {s.status!r}", hint="one of " + ", ".join(STATUSES))
        clauses.append("status = ?")
        params.append(s.status)
    return clauses, params


def parse_cursor(text: str) -> tuple[str, int] | None:
    """``"<time>|<id>"`` from a page link -> (time, id); None for the first page."""
    if not text:
        return None
    when, sep, rid = text.rpartition("|")
    if not sep or not rid.isdigit():
        raise UsageError("the page link is damaged", hint="start the search again")
    return when, int(rid)


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if hasattr(v, "isoformat") else v) for k, v in row.items()}


def page(db: Database, table: Table, search: Search, *, before: tuple[str, int] | None = None,
         limit: int = PAGE) -> dict[str, Any]:
    """One page, newest first, and the cursor of the next (older) page ("" when none)."""
    limit = max(1, min(limit, MAX_PAGE))
    clauses, params = _where(table, search)
    if before is not None:
        clauses.append(f"({table.time_col} < ? OR ({table.time_col} = ? AND id < ?))")
        params += [before[0], before[0], before[1]]
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = db.query(f"SELECT {', '.join(table.columns)} FROM {table.name}{where} "
                    f"ORDER BY {table.time_col} DESC, id DESC LIMIT {limit + 1}", params)
    more = len(rows) > limit
    rows = [_clean(r) for r in rows[:limit]]
    last = rows[-1] if rows else None
    return {"rows": rows, "next": f"{last[table.time_col]}|{last['id']}" if more and last else ""}


def call_details(db: Database, cdr_id: int) -> dict[str, Any]:
    """One CDR with the acc rows (INVITE, BYE, failures) of its call."""
    from ..errors import NotFoundError

    row = db.query_one(f"SELECT {', '.join(CDR_COLUMNS)} FROM cdrs WHERE id = ?", (cdr_id,))
    if row is None:
        raise NotFoundError(f"CDR {cdr_id} does not exist", hint="search the CDR Viewer again")
    acc = db.query(f"SELECT {', '.join(ACC_COLUMNS)} FROM acc WHERE callid = ? ORDER BY time, id",
                   (row["callid"],))
    return {"cdr": _clean(row), "acc": [_clean(a) for a in acc]}


def export_csv(open_db: Callable[[], Any], table: Table, search: Search, *,
               batch: int = EXPORT_BATCH) -> Iterator[str]:
    """CSV text in chunks (header first), every row of the search, newest first.

    Args:
        open_db: returns a context manager yielding a Database; called once per batch.
    """
    _where(table, search)  # refuse a bad search before the first byte is sent
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.columns)
    yield buf.getvalue()
    cursor: tuple[str, int] | None = None
    for _ in range(10_000_000 // batch + 1):  # bounded: each batch moves the cursor back
        with open_db() as db:
            result = page(db, table, search, before=cursor, limit=batch)
        buf.seek(0)
        buf.truncate()
        for r in result["rows"]:
            writer.writerow(["" if r.get(c) is None else r.get(c) for c in table.columns])
        yield buf.getvalue()
        if not result["next"]:
            return
        cursor = parse_cursor(result["next"])


def calls_since(db: Database, seconds: int, *, now: float | None = None) -> int:
    """How many calls started in the last ``seconds`` (the dashboard's calls per minute)."""
    import time

    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((time.time() if now is None else now) - seconds))
    row = db.query_one("SELECT COUNT(*) AS n FROM cdrs WHERE start_time >= ?", (stamp,))
    return int(row["n"]) if row else 0
