"""CDRs and missed calls from the database (tables ``cdrs`` and ``missed_calls``).

Plain functions: filters in, rows out (dicts with the table's columns), CSV/JSON export. The
database is read directly through ``sipd.db`` (no running sipd needed).
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterable
from typing import Any

from ..errors import UsageError

CDR_COLUMNS = ["id", "start_time", "answer_time", "end_time", "setup_time", "duration", "caller", "callee",
               "status", "sip_code", "sip_reason", "end_reason", "callid", "from_tag", "to_tag"]
MISSED_COLUMNS = ["id", "time", "method", "caller", "callee", "sip_code", "sip_reason", "setuptime", "created",
                  "callid", "from_tag", "to_tag"]
STATUSES = ("answered", "missed", "failed", "cancelled")
_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_ROWS = 1_000_000


def parse_when(text: str, *, now: float | None = None) -> str:
    """'2024-05-01', '2024-05-01 13:00[:00]', or a relative age '30m', '2h', '7d' -> DATETIME text."""
    t = text.strip()
    m = _RELATIVE.match(t)
    if m:
        wall = (time.time() if now is None else now) - int(m.group(1)) * _UNITS[m.group(2)]
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return time.strftime("%Y-%m-%d %H:%M:%S", time.strptime(t, fmt))
        except ValueError:
            continue
    raise UsageError(f"not a date or age: {text!r}", hint="e.g. 2024-05-01, '2024-05-01 13:00', 30m, 2h, 7d")


def _where(time_col: str, since: str | None, until: str | None, user: str | None,
           status: str | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if since:
        clauses.append(f"{time_col} >= ?")
        params.append(parse_when(since))
    if until:
        clauses.append(f"{time_col} < ?")
        params.append(parse_when(until))
    if user:
        clauses.append("(caller LIKE ? OR callee LIKE ?)")
        pattern = f"%{user}%"
        params += [pattern, pattern]
    if status:
        if status not in STATUSES:
            raise UsageError(f"unknown status {status!r}", hint="one of " + ", ".join(STATUSES))
        clauses.append("status = ?")
        params.append(status)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _clean(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        out.append({k: (str(v) if hasattr(v, "isoformat") else v) for k, v in r.items()})
    return out


def list_cdrs(env: Any, *, since: str | None = None, until: str | None = None, user: str | None = None,
              status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """CDRs filtered by start time, user (caller or callee substring) and status: the latest
    ``limit`` of them (as ``tail -n``: an operator asking for ten wants the last ten calls),
    printed oldest first."""
    from .db import env_session

    where, params = _where("start_time", since, until, user, status)
    sql = f"SELECT {', '.join(CDR_COLUMNS)} FROM cdrs{where} ORDER BY start_time DESC, id DESC"
    n = MAX_ROWS if limit is None else max(0, min(limit, MAX_ROWS))
    with env_session(env) as db:
        return _clean(db.query(sql + f" LIMIT {n}", params))[::-1]


def list_missed(env: Any, *, since: str | None = None, until: str | None = None, user: str | None = None,
                limit: int | None = None) -> list[dict[str, Any]]:
    """missed_calls rows: the latest ``limit``, printed oldest first (as ``list_cdrs``)."""
    from .db import env_session

    where, params = _where("time", since, until, user, None)
    n = MAX_ROWS if limit is None else max(0, min(limit, MAX_ROWS))
    with env_session(env) as db:
        return _clean(db.query(f"SELECT {', '.join(MISSED_COLUMNS)} FROM missed_calls{where} "
                               f"ORDER BY time DESC, id DESC LIMIT {n}", params))[::-1]


def export(rows: list[dict[str, Any]], fmt: str) -> str:
    """CSV (header row, every row the same columns) or JSON (an array) text."""
    if fmt == "json":
        return json.dumps(rows, indent=2, ensure_ascii=False, default=str) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CDR_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else r.get(k) for k in CDR_COLUMNS})
        return buf.getvalue()
    raise UsageError(f"unknown format {fmt!r}", hint="csv or json")
