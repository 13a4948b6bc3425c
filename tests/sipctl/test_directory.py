"""The panel's user search (sipctl/lib/directory.py) on SQLite and MariaDB: filters combine, and
the keyset pages cover every matching user exactly once."""

from __future__ import annotations

from dbfixtures import backend, db_url, empty_db_url, mysql_scratch  # noqa: F401

from sipctl.lib import directory


def _fill(url: str) -> None:
    from sipd.db import connect

    with connect(url) as db:
        db.executemany("INSERT INTO subscriber (username, domain, ha1) VALUES (?, ?, 'x')",
                       [(f"u{i:03d}", d, ) for i in range(60) for d in ("a.test", "b.test")])
        db.executemany("INSERT INTO dbaliases (alias_username, alias_domain, username, domain) VALUES (?, ?, ?, ?)",
                       [(f"9{i:03d}", "a.test", f"u{i:03d}", "a.test") for i in range(0, 60, 10)])
        db.execute("INSERT INTO subscriber (username, domain, ha1) VALUES ('per%cent_x', 'a.test', 'x')")


def test_pages_cover_every_user_once_and_filters_combine(db_url):
    from sipd.db import connect

    _fill(db_url)
    with connect(db_url) as db:
        seen, after = [], None
        for _ in range(10):
            page = directory.search_users(db, after=after, limit=25)
            assert page["total"] == 121
            seen += [(r["domain"], r["user"]) for r in page["rows"]]
            if not page["next"]:
                break
            after = directory.parse_cursor(page["next"])
        assert len(seen) == 121 and len(set(seen)) == 121 and seen == sorted(seen)
        found = directory.search_users(db, user="u01", domain="b.")
        assert [(r["user"], r["domain"]) for r in found["rows"]] == [(f"u01{i}", "b.test") for i in range(10)]
        found = directory.search_users(db, alias="902")
        assert [(r["user"], r["aliases"]) for r in found["rows"]] == [("u020", 1)]
        # LIKE's wildcards in the search are literal characters
        assert [r["user"] for r in directory.search_users(db, user="%cent_")["rows"]] == ["per%cent_x"]
        assert directory.search_users(db, user="_")["total"] == 1
