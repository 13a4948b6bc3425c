"""Dialogs stored with their owner node, taken over by exactly one survivor, one CDR per call:
the schema and its migration, the queries of sipd/db/cluster.py and the accounting writer, on
SQLite and MariaDB (two connections racing as two nodes would)."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from dbfixtures import backend, db_url, empty_db_url, mysql_scratch  # noqa: F401

from sipd.db import cluster, connect, migrations, schema
from sipd.db import connect as connect_db
from sipd.services.acc_writer import write_records
from sipd.services.cdr import Record, acc_row, cdr_row
from sipd.services.takeover import orphaned


def _old_schema(db) -> None:  # type: ignore[no-untyped-def]
    """The tables as a sipd from before owners wrote them: dialog 12 without its owner column,
    cdrs 1 without the unique key, acc 7 and missed_calls 5 without record_id."""
    dialog, cdrs = schema.BY_NAME["dialog"], schema.BY_NAME["cdrs"]
    acc, missed = schema.BY_NAME["acc"], schema.BY_NAME["missed_calls"]
    old = {"dialog": dataclasses.replace(dialog, version=12, columns=dialog.columns[:-1], indexes=()),
           "cdrs": dataclasses.replace(cdrs, version=1, indexes=cdrs.indexes[:2]),
           "acc": dataclasses.replace(acc, version=7, columns=acc.columns[:-1], indexes=acc.indexes[:1]),
           "missed_calls": dataclasses.replace(missed, version=5, columns=missed.columns[:-1],
                                               indexes=missed.indexes[:1])}
    schema.create_all(db, [old.get(t.name, t) for t in schema.TABLES])


def _cdr(call_id: str, from_tag: str = "f1", to_tag: str = "t1", reason: str = "Upstream BYE") -> Record:
    return Record("insert", "cdrs", cdr_row(call_id=call_id, from_tag=from_tag, to_tag=to_tag, caller="sip:a@x",
                                           callee="sip:b@x", created=1000.0, answered=1001.0, ended=1010.0, code=200,
                                           reason="OK", cancelled=False, end_reason=reason))


def _dialog(db, dlg_id: int, owner: str, call_id: str = "", to_tag: str = "t1") -> None:  # type: ignore[no-untyped-def]
    db.execute("INSERT INTO dialog (dlg_id, callid, from_tag, to_tag, state, owner) VALUES (?, ?, 'f1', ?, 4, ?)",
               (dlg_id, call_id or f"call-{dlg_id}", to_tag, owner))


def test_migrate_keeps_dialogs_and_the_first_cdr(empty_db_url):
    with connect(empty_db_url) as db:
        _old_schema(db)
        db.execute("INSERT INTO dialog (dlg_id, callid, from_tag, to_tag, state) VALUES (7, 'c7', 'f', 't', 4)")
        for reason in ("first", "second"):  # a batch stored twice (a crash between commit and report)
            db.execute("INSERT INTO cdrs (callid, from_tag, to_tag, end_reason) VALUES ('c7', 'f', 't', ?)", (reason,))
        db.execute("INSERT INTO cdrs (callid, from_tag, to_tag, end_reason) VALUES ('c8', 'f', 't', 'other')")
        db.execute("INSERT INTO acc (method, callid, time) VALUES ('BYE', 'c7', '2026-12-08 00:00:00')")
        assert {(st.name, st.state) for st in schema.status(db)} >= {("dialog", "outdated"), ("cdrs", "outdated")}
        assert sorted(migrations.migrate(db)) == [("acc", "migrated 7 -> 8"), ("cdrs", "migrated 1 -> 2"),
                                                  ("dialog", "migrated 12 -> 13"), ("missed_calls", "migrated 5 -> 6")]
        assert db.query("SELECT callid, record_id FROM acc") == [{"callid": "c7", "record_id": None}]
        assert db.query("SELECT dlg_id, callid, owner FROM dialog") == [{"dlg_id": 7, "callid": "c7", "owner": ""}]
        assert sorted((r["callid"], r["end_reason"]) for r in db.query("SELECT callid, end_reason FROM cdrs")) == [
            ("c7", "first"), ("c8", "other")]
        assert all(st.state == "ok" for st in schema.status(db))
        assert migrations.migrate(db) == []


def test_a_cdr_is_stored_once_per_dialog(db_url):
    """The same CDR in one batch, in a batch written again (spool replay, a new writer process),
    and from a second node: one row. Another dialog of the same Call-ID (a call redirected with a
    3xx, answered by another To tag) keeps its own."""
    with connect(db_url) as db:
        write_records(db, [_cdr("c1"), _cdr("c1", reason="again in the batch"), _cdr("c2")])
        write_records(db, [_cdr("c1", reason="batch written again"), _cdr("c1", to_tag="t2", reason="redirected")])
        with connect(db_url) as other_node:
            write_records(other_node, [_cdr("c1", reason="the other node")])
        rows = db.query("SELECT callid, to_tag, end_reason FROM cdrs ORDER BY id")
    assert [(r["callid"], r["to_tag"], r["end_reason"]) for r in rows] == [
        ("c1", "t1", "Upstream BYE"), ("c2", "t1", "Upstream BYE"), ("c1", "t2", "redirected")]


def test_an_acc_record_is_stored_once_by_its_name(db_url):
    """An acc or missed_calls record written again (a spool chunk replayed after a crash, a batch
    given again to a new writer process) is stored once; rows without a name (other programs')
    are all kept."""
    def acc(rid, table="acc"):  # type: ignore[no-untyped-def]
        return Record("insert", table, acc_row(method="INVITE", from_tag="f1", to_tag="t1", call_id="c1", code=486,
                                               reason="Busy", wall=1000.0, caller="sip:a@x", callee="sip:b@x",
                                               missed=table == "missed_calls", record_id=rid))

    with connect(db_url) as db:
        batch = [acc("a/1/1"), acc("a/1/1", "missed_calls"), acc("a/1/2"), acc(None), acc(None)]
        write_records(db, batch)
        write_records(db, batch[:3])
        assert sorted(str(r["record_id"]) for r in db.query("SELECT record_id FROM acc")) == [
            "None", "None", "a/1/1", "a/1/2"]
        assert [r["record_id"] for r in db.query("SELECT record_id FROM missed_calls")] == ["a/1/1"]


def test_a_dead_nodes_dialogs_go_to_one_survivor(db_url):
    with connect(db_url) as db:
        for i in range(1, 4):
            _dialog(db, i, "a")
        _dialog(db, 4, "b")
        _dialog(db, 5, "")  # a node without a cluster
        assert cluster.dialog_owners(db) == {"a": 3, "b": 1, "": 1}
        assert cluster.take_over_dialogs(db, "c", "a") == 3
        assert cluster.take_over_dialogs(db, "b", "a") == 0  # a second survivor finds nothing left
        assert sorted(r["dlg_id"] for r in cluster.owned_dialogs(db, "c")) == [1, 2, 3]
        assert cluster.owners_of(db, [1, 4, 99]) == {1: "c", 4: "b"}


def test_a_bye_claims_its_dialog_once(db_url):
    with connect(db_url) as db:
        _dialog(db, 1, "a", call_id="c1")
        _dialog(db, 2, "a", call_id="c1", to_tag="other")  # another dialog of the same Call-ID
        row = cluster.claim_dialog(db, "b", "c1", "t1", "f1")  # the callee's BYE: tags the other way round
        assert row is not None and row["dlg_id"] == 1 and row["owner"] == "a"  # as read: who held it
        assert cluster.owners_of(db, [1, 2]) == {1: "b", 2: "a"}
        assert cluster.claim_dialog(db, "b", "c1", "f1", "t1")["owner"] == "b"  # already ours
        assert cluster.claim_dialog(db, "b", "nope", "f1", "t1") is None
        assert not cluster.has_cdr(db, "c1", "f1", "t1")
        write_records(db, [_cdr("c1")])
        assert cluster.has_cdr(db, "c1", "f1", "t1")


@pytest.mark.mysql
def test_two_survivors_at_once_each_row_to_one(mysql_scratch):
    """Two nodes take over the same dead node at the same moment, on one MariaDB: the row locks
    make the second UPDATE find the rows changed, so every dialog has one new owner."""
    mysql_scratch.sql(f"CREATE DATABASE `{mysql_scratch.name}` CHARACTER SET utf8mb4")
    url = mysql_scratch.url()
    with connect(url) as db:
        schema.create_all(db)
        db.executemany("INSERT INTO dialog (dlg_id, callid, owner) VALUES (?, ?, 'a')",
                       [(i, f"c{i}") for i in range(1, 201)])
    for trial in range(5):
        taken: dict[str, int] = {}
        barrier = threading.Barrier(2, timeout=20)

        def survivor(name: str) -> None:
            with connect(url) as db:
                barrier.wait()
                taken[name] = cluster.take_over_dialogs(db, name, "a")

        threads = [threading.Thread(target=survivor, args=(n,)) for n in ("b", "c")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        with connect(url) as db:
            owners = cluster.dialog_owners(db)
            assert sum(taken.values()) == 200 and owners == {k: v for k, v in taken.items() if v}, (trial, taken)
            db.execute("UPDATE dialog SET owner = 'a'")


def test_owners_without_a_live_node_are_orphaned():
    nodes = [cluster.Node("a", "", 0, 1000), cluster.Node("b", "", 0, 990), cluster.Node("c", "", 0, 960)]
    # at 1000 with dead_after 30: a and b alive, c dead; '' and z have no node row
    assert orphaned({"a": 1, "b": 2, "c": 3, "": 4, "z": 5}, nodes, "a", 1000, 30) == ["", "c", "z"]
    assert orphaned({"b": 1}, nodes, "b", 1100, 30) == []  # never itself, even when its own beat is late


def test_record_route_host_is_written_and_counted_as_self():
    """Every node writes the shared host in its Record-Route and takes a Route to it as its own, so
    a BYE sent to any node after the call's node died is routed on (not back to the dead one)."""
    import itertools
    from types import SimpleNamespace

    from sipd.config import Config
    from sipd.daemon.hop import OurHop
    from sipd.services.myself import OwnAddresses, is_self
    from sipd.sip.uri import parse_uri

    config = Config()
    config.cluster.record_route_host = "SIP.example.test"
    myself = OwnAddresses()
    hop = OurHop(config, myself, "m", itertools.count(), None)
    udp = SimpleNamespace(proto="udp", host="127.0.0.3", port=5070)
    tcp = SimpleNamespace(proto="tcp", host="127.0.0.3", port=5070)
    assert hop.record_route_value(udp) == "<sip:sip.example.test;lr>"
    assert hop.record_route_value(tcp) == "<sip:sip.example.test;transport=tcp;lr>"
    for listener in (udp, tcp):  # as Endpoint.note_self_address does for each listener
        myself.note_listener(listener, "", hop.shared)
    state = SimpleNamespace(myself=myself)
    assert is_self(state, parse_uri("sip:sip.example.test;lr"))
    assert is_self(state, parse_uri("sip:sip.example.test;transport=tcp;lr"))
    assert not is_self(state, parse_uri("sip:127.0.0.2:5070;lr"))  # another node's own address
    config.cluster.record_route_host = "192.0.2.10:5080"
    hop = OurHop(config, myself, "m", itertools.count(), None)
    assert hop.record_route_value(udp) == "<sip:192.0.2.10:5080;lr>"


def test_record_route_host_is_checked(tmp_path):
    from sipd import config
    from sipd.validation import VALIDATORS

    path = tmp_path / "sipd.toml"
    for bad in ("sip.example.test:99999", "a b", "sip:x"):
        path.write_text(f'[cluster]\nnode_id = "a"\nrecord_route_host = "{bad}"\n')
        assert [p.key for p in config.check(path, validators=VALIDATORS)[1]] == ["cluster.record_route_host"], bad
    for good in ("sip.example.test", "192.0.2.10:5060", "[2001:db8::1]:5060"):
        path.write_text(f'[cluster]\nnode_id = "a"\nrecord_route_host = "{good}"\n')
        assert config.check(path, validators=VALIDATORS)[1] == [], good


def test_a_spool_left_behind_is_replayed_once_by_one_node(tmp_path, db_url):
    """The records a dead node spooled are stored by the first node to find the spool free: not
    while its writer holds the lock, once, and a second look (another survivor, the node back)
    finds nothing left."""
    import asyncio
    import os

    from sipd.services.accounting import ThreadWriter
    from sipd.services.acc_writer import AccWriter, lock_spool, replay_left_spool
    from sipd.services.spool import Spool

    path = str(tmp_path / "acc-a.spool")
    bye = acc_row(method="BYE", from_tag="f1", to_tag="t1", call_id="c1", code=200, reason="OK", wall=1010.0,
                  caller="sip:a@x", callee="sip:b@x")
    Spool(path).append([_cdr("c1"), Record("insert", "acc", bye)])

    def connect():  # type: ignore[no-untyped-def]
        return connect_db(db_url)

    held = lock_spool(path)  # the dead node's writer process still finishing
    try:
        assert replay_left_spool(path, connect) is None
    finally:
        assert held is not None
        os.close(held)

    async def thread_writer_running() -> int | None:  # [acc] writer = "thread" holds the lock too
        # (its start tries its own spool first, into a database without tables here: it stays)
        writer = ThreadWriter(AccWriter(lambda: connect_db("sqlite:///:memory:"), Spool(path)))
        await writer.open()
        try:
            Spool(path).append([_cdr("c1")])
            return replay_left_spool(path, connect)
        finally:
            await writer.close()

    assert asyncio.run(thread_writer_running()) is None
    assert replay_left_spool(path, connect) == 3  # the CDR spooled twice is stored once
    assert replay_left_spool(path, connect) == 0
    assert replay_left_spool(str(tmp_path / "acc-nobody.spool"), connect) == 0
    with connect_db(db_url) as db:
        assert [r["callid"] for r in db.query("SELECT callid FROM cdrs")] == ["c1"]
        assert [r["method"] for r in db.query("SELECT method FROM acc")] == ["BYE"]
    assert not Spool(path).pending()
