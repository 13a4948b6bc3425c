"""The CDR Viewer's search (sipctl/lib/cdrview.py) on SQLite and MariaDB: combined filters, keyset
pages that cover every call once, newest first, and a CSV export in batches."""

from __future__ import annotations

import csv
import io

from dbfixtures import backend, db_url, empty_db_url, mysql_scratch  # noqa: F401

from sipctl.errors import UsageError
from sipctl.lib import cdrview


def _fill(url: str) -> None:
    from sipd.db import connect

    with connect(url) as db:
        rows = []
        for i in range(45):
            t = f"2024-05-01 10:{i // 3:02d}:00"  # three calls share each start second: ties on time
            rows.append((f"call-{i}@x", f"sip:{'alice' if i % 2 else 'bob'}@a.test", f"sip:carol_{i % 3}@a.test",
                         t, "answered" if i % 5 else "missed"))
        db.executemany("INSERT INTO cdrs (callid, caller, callee, start_time, status) VALUES (?, ?, ?, ?, ?)", rows)


def test_pages_filters_and_export(db_url):
    from sipd.db import connect

    _fill(db_url)
    with connect(db_url) as db:
        seen, cursor = [], None
        for _ in range(20):
            page = cdrview.page(db, cdrview.CDRS, cdrview.Search(), before=cursor, limit=7)
            seen += [r["callid"] for r in page["rows"]]
            if not page["next"]:
                break
            cursor = cdrview.parse_cursor(page["next"])
        assert len(seen) == 45 and len(set(seen)) == 45
        assert seen[0] == "call-44@x" and seen[-1] == "call-0@x"  # newest first
        found = cdrview.page(db, cdrview.CDRS, cdrview.Search(caller="alice", callee="carol_1", status="missed",
                                                              since="2024-05-01 10:05", until="2024-05-01 10:15"))
        assert [r["callid"] for r in found["rows"]] == ["call-25@x"]
        assert cdrview.page(db, cdrview.CDRS, cdrview.Search(callee="carol\\_"))["rows"] == []
        assert len(cdrview.page(db, cdrview.CDRS, cdrview.Search(callee="carol_"), limit=100)["rows"]) == 45
        try:
            cdrview.page(db, cdrview.CDRS, cdrview.Search(status="lost"))
            raise AssertionError("an unknown status was accepted")
        except UsageError:
            pass

    from sipctl.lib.db import session

    text = "".join(cdrview.export_csv(lambda: session(db_url), cdrview.CDRS, cdrview.Search(status="answered"),
                                      batch=4))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 36 and len({r["callid"] for r in rows}) == 36
    assert all(r["status"] == "answered" for r in rows)
