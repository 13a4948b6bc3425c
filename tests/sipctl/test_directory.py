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


def test_online_only_keeps_the_registrars_users_with_the_same_filters_and_pages(db_url):
    from sipd.db import connect

    _fill(db_url)
    # what the running registrar reports online: two of them are not subscribers (an AOR of a
    # user since removed, one of another domain); they never show up
    online = {"u001@a.test", "u002@b.test", "u005@a.test", "u050@a.test", "ghost@a.test", "u001@c.test"}
    with connect(db_url) as db:
        found = directory.search_users(db, online=online)
        assert found["total"] == 4 and found["next"] == ""
        assert [(r["domain"], r["user"]) for r in found["rows"]] == \
            [("a.test", "u001"), ("a.test", "u005"), ("a.test", "u050"), ("b.test", "u002")]
        assert [r["aliases"] for r in found["rows"]] == [0, 0, 1, 0]
        assert [r["user"] for r in directory.search_users(db, domain="a.", user="0", online=online)["rows"]] == \
            ["u001", "u005", "u050"]
        assert [r["user"] for r in directory.search_users(db, alias="905", online=online)["rows"]] == ["u050"]
        seen, after = [], None
        for _ in range(10):
            page = directory.search_users(db, online=online, after=after, limit=3)
            assert page["total"] == 4
            seen += [(r["domain"], r["user"]) for r in page["rows"]]
            if not page["next"]:
                break
            after = directory.parse_cursor(page["next"])
        assert seen == [("a.test", "u001"), ("a.test", "u005"), ("a.test", "u050"), ("b.test", "u002")]
        assert directory.search_users(db, online=set())["total"] == 0
        # more AORs online than one query takes
        many = {f"u{i:03d}@b.test" for i in range(60)} | {f"x{i}@b.test" for i in range(directory.ONLINE_CHUNK)}
        assert directory.search_users(db, online=many, domain="b.test")["total"] == 60


def test_alias_pages_cover_every_alias_once_and_filters_combine(db_url):
    from sipd.db import connect

    _fill(db_url)
    with connect(db_url) as db:
        db.executemany("INSERT INTO dbaliases (alias_username, alias_domain, username, domain) VALUES (?, ?, ?, ?)",
                       [(f"7{i:03d}", d, f"u{i:03d}", d) for i in range(40) for d in ("a.test", "b.test")])
        seen, after = [], None
        for _ in range(20):
            page = directory.search_aliases(db, after=after, limit=15)
            assert page["total"] == 86
            seen += [r["alias"] for r in page["rows"]]
            if not page["next"]:
                break
            after = directory.parse_cursor(page["next"])
        assert len(seen) == 86 and len(set(seen)) == 86
        assert seen[:2] == ["7000@a.test", "7000@b.test"]
        found = directory.search_aliases(db, alias="701", domain="b.")
        assert [r["alias"] for r in found["rows"]] == [f"701{i}@b.test" for i in range(10)]
        assert found["rows"][0]["target"] == "u010@b.test"
        assert [r["alias"] for r in directory.search_aliases(db, user="u050")["rows"]] == ["9050@a.test"]
        assert directory.search_aliases(db, alias="%")["total"] == 0  # a wildcard is a literal character
