"""sipd.db.queries: what the daemon loads and writes (through asyncio.to_thread)."""

from __future__ import annotations

import asyncio

from dbfixtures import backend, db_url, empty_db_url, mysql_scratch  # noqa: F401

from sipd.db import connect, queries
from sipd.services.dialplan import Dialplan, rule_from_row


def test_loads(db_url):
    with connect(db_url) as db:
        db.execute("INSERT INTO domain (domain) VALUES (?)", ("Example.ORG",))
        db.execute("INSERT INTO subscriber (username, domain, ha1, ha1_sha256) VALUES (?, ?, ?, ?)",
                   ("alice", "example.org", "a" * 32, "b" * 64))
        db.execute("INSERT INTO dbaliases (alias_username, alias_domain, username, domain) VALUES (?, ?, ?, ?)",
                   ("1247", "example.org", "alice", "example.org"))
        db.execute("INSERT INTO dialplan (dpid, pr, match_op, match_exp, match_flags, repl_exp, disabled) "
                   "VALUES (0, 5, 1, '^sip:1', 0, 'one', 0), (0, 1, 0, 'sip:1', 0, 'eq', 0), "
                   "(0, 0, 1, '.', 0, 'off', 1)")
        assert queries.load_domains(db) == {"example.org"}
        assert queries.load_subscriber(db, "alice", "EXAMPLE.org") == {"ha1": "a" * 32, "ha1_sha256": "b" * 64}
        assert queries.load_subscriber(db, "bob", "example.org") is None
        assert queries.load_subscribers(db)[("alice", "example.org")]["ha1"] == "a" * 32
        assert queries.load_aliases(db) == {("1247", "example.org"): ("alice", "example.org")}
        rules = [rule_from_row(row) for row in queries.load_dialplan(db)]
        assert [(r.pr, r.repl_exp) for r in rules] == [(1, "eq"), (5, "one")]
        assert len(queries.load_dialplan(db, include_disabled=True)) == 3
        plan = Dialplan(rules)
        assert plan.translate(0, "sip:1")[0] == "eq"
        assert plan.translate(0, "sip:12")[0] == "one"


def test_location_upsert_delete_expire(db_url):
    with connect(db_url) as db:
        base = {"username": "alice", "domain": "example.org", "contact": "sip:alice@192.0.2.1:5060;transport=tcp"}
        cid = queries.upsert_location(db, {**base, "expires": 1000, "callid": "c1", "cseq": 1, "reg_id": 1,
                                            "sip_instance": "<urn:uuid:1>", "user_agent": "EX90"})
        same = queries.upsert_location(db, {**base, "expires": 2000, "cseq": 2})
        assert cid == same
        queries.upsert_location(db, {"username": "alice", "domain": "example.org", "contact": "sip:a2@x",
                                     "expires": 0})
        queries.upsert_location(db, {"username": "bob", "domain": "example.org", "contact": "sip:b@x",
                                     "expires": 500})
        rows = queries.load_locations(db)
        assert [(r["username"], r["expires"]) for r in rows] == [("alice", 2000), ("alice", 0), ("bob", 500)]
        assert rows[0]["cseq"] == 2 and rows[0]["user_agent"] == "EX90" and rows[0]["q"] == 1.0
        assert len(queries.load_locations(db, now=600)) == 2
        assert queries.delete_expired_locations(db, 600) == 1
        assert queries.delete_location(db, "alice", "example.org", "sip:a2@x") == 1
        assert queries.delete_location(db, "alice", "example.org") == 1
        assert queries.load_locations(db) == []
        queries.replace_locations(db, [{**base, "expires": 5}, {**base, "contact": "sip:z@y", "expires": 6}])
        assert len(queries.load_locations(db)) == 2


def test_through_to_thread(db_url):
    """How the daemon calls it: one Database shared by to_thread workers."""
    async def main() -> set[str]:
        with connect(db_url) as db:
            await asyncio.gather(*(asyncio.to_thread(
                db.execute, "INSERT INTO domain (domain) VALUES (?)", (f"d{i}.test",)) for i in range(5)))
            return await asyncio.to_thread(queries.load_domains, db)

    assert len(asyncio.run(main())) == 5
