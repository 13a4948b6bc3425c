"""A node dies holding a call: real sipd nodes on 127.0.0.2 and 127.0.0.3 sharing one MariaDB or a
Galera cluster (``sipd_nodes``), phones on real UDP sockets.

- kill -9 of the node that took the call; the caller's BYE sent to the other node (as a phone
  does when the Record-Route's host, which every node answers to, fails over) reaches the callee
  and completes the call with one CDR, with its real start and answer times;
- the survivor takes the dead node's call over (``sipctl cluster status`` shows it moved) and,
  at the end of the call's lifetime, ends it there: one BYE to each side and one CDR;
- a Galera node stopped and restarted while calls run: no registration and no CDR lost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from sipd.db import cluster, connect
from tests.daemon.harness import DOMAIN, UA
from tests.daemon.test_proxy import SDP, invite

pytestmark = pytest.mark.mysql

SHARED = "sip.example.test"  # [cluster] record_route_host: every node's Record-Route names it
PASSWORD = "pw"
INTERVAL, DEAD_AFTER = 0.5, 2  # a dead node's calls are taken over within 2.5 s of its last beat


def _nodes(sipd_nodes, tmp_path, acc_a: dict | None = None, **dialog: Any):  # type: ignore[no-untyped-def]
    """Nodes a and b, their accounting spools side by side in ``tmp_path`` (``acc_a``: more of
    node a's [acc] keys)."""
    return sipd_nodes(
        count=2, users={"alice": PASSWORD, "bob": PASSWORD},
        config_overrides={"cluster": {"record_route_host": SHARED, "heartbeat_interval": INTERVAL,
                                      "dead_after": DEAD_AFTER},
                          "dialog": dialog, "acc": {"retry_interval": 0.3}},
        per_node=[{"acc": {"spool": str(tmp_path / "acc-a.spool"), **(acc_a or {})}},
                  {"acc": {"spool": str(tmp_path / "acc-b.spool")}}])


@contextmanager
def _phones(a, b) -> Iterator[tuple[UA, UA]]:  # type: ignore[no-untyped-def]
    """alice calling through node a, bob registered at node b (node a finds him in the database)."""
    with UA(b.port, "bob", password=PASSWORD, server_host=b.host) as bob, \
         UA(a.port, "alice", password=PASSWORD, server_host=a.host) as alice:
        assert bob.register(300).status == 200
        yield alice, bob


def _wait(fn, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g} s (last: {value!r})")
        time.sleep(0.1)


def _rows(url: str, sql: str, params: tuple = ()) -> list[dict]:
    with connect(url) as db:
        return db.query(sql, params)


def _respond(ua: UA, req, status: int, **kw: Any) -> None:  # type: ignore[no-untyped-def]
    """Answer ``req`` to its top Via (RFC 3261 §18.2.2): the node that sent it, which need not be
    the node the phone registered at."""
    saved, ua.server = ua.server, req.vias[0].response_address()
    try:
        ua.respond(req, status, **kw)
    finally:
        ua.server = saved


def _answered(node_a, caller: UA, callee: UA, call_id: str):  # type: ignore[no-untyped-def]
    """A call from ``caller`` through ``node_a`` to ``callee``, answered and acknowledged; its 200."""
    uri = invite(caller, f"{callee.user}@{DOMAIN}", call_id=call_id)
    inv = callee.expect_request("INVITE", timeout=10)
    assert set(inv.get_all("Record-Route")) == {f"<sip:{SHARED};lr>"}  # not node a's own address
    _respond(callee, inv, 200, body=SDP, headers=["Content-Type: application/sdp"])
    ok = caller.expect(200, timeout=10)
    route = [f"Route: {rr}" for rr in reversed(ok.get_all("Record-Route"))]
    caller.send(caller.request("ACK", str(ok.contacts[0].uri), to=ok.get("To"), headers=route, call_id=call_id,
                               cseq=2))
    callee.expect_request("ACK", timeout=10)
    assert uri
    return ok


def _bye(caller: UA, ok, call_id: str, dest: tuple[str, int] | None = None) -> None:  # type: ignore[no-untyped-def]
    """The caller's BYE along the call's route set (to ``dest``: another node than its own)."""
    route = [f"Route: {rr}" for rr in reversed(ok.get_all("Record-Route"))]
    caller.send(caller.request("BYE", str(ok.contacts[0].uri), to=ok.get("To"), headers=route, call_id=call_id,
                               cseq=3), dest)


def _hang_up(caller: UA, callee: UA, ok, call_id: str, dest: tuple[str, int] | None = None) -> None:  # type: ignore[no-untyped-def]
    """The caller's BYE, answered by the callee; the 200 back at the caller."""
    _bye(caller, ok, call_id, dest)
    _respond(callee, callee.expect_request("BYE", timeout=10), 200)
    assert caller.expect(200, timeout=10).status == 200


def _one_cdr(url: str, call_id: str, timeout: float = 15) -> dict:
    rows = _wait(lambda: _rows(url, "SELECT * FROM cdrs WHERE callid = ?", (call_id,)), timeout, "a CDR")
    assert len(rows) == 1, rows
    return rows[0]


def test_kill9_of_the_calls_node_then_the_bye_through_the_other_gives_one_cdr(sipd_nodes, tmp_path):
    a, b = _nodes(sipd_nodes, tmp_path)
    url = a.db_url
    call_id = f"takeover-bye-{time.time_ns()}@test"
    with _phones(a, b) as (alice, bob):
        ok = _answered(a, alice, bob, call_id)
        started = time.time()
        _wait(lambda: _rows(url, "SELECT owner FROM dialog WHERE callid = ?", (call_id,)), 10, "the dialog row")
        assert _rows(url, "SELECT owner FROM dialog WHERE callid = ?", (call_id,)) == [{"owner": "a"}]
        time.sleep(1.1)  # a call of a second or more: its duration shows the answer time was kept
        a.kill9()
        _bye(alice, ok, call_id, (b.host, b.port))  # the phone's next try: the other node
        got = bob.expect_request("BYE", timeout=10)
        assert got.get("Route") is None and f"{b.host}:{b.port}" in got.get("Via")  # forwarded by node b
        _respond(bob, got, 200)
        assert alice.expect(200, timeout=10).status == 200
        cdr = _one_cdr(url, call_id)
        assert cdr["status"] == "answered" and cdr["end_reason"] == "Upstream BYE"
        assert cdr["duration"] >= 1 and cdr["answer_time"] is not None
        # the dialog row is gone and, once node a counts as dead, nothing is left to take over
        _wait(lambda: not _rows(url, "SELECT 1 FROM dialog WHERE callid = ?", (call_id,)), 10, "the row deleted")
        time.sleep(max(0.0, started + DEAD_AFTER + 2 * INTERVAL + 0.5 - time.time()))
        assert len(_rows(url, "SELECT * FROM cdrs WHERE callid = ?", (call_id,))) == 1
        assert "ended here by a BYE" in b.log_text()


def test_a_bye_at_the_other_live_node_ends_the_call_there_and_its_node_lets_go(sipd_nodes, tmp_path):
    """Both nodes alive, the BYE sent to node b (the SRV records spread a call's requests): node b
    ends the call with its CDR; node a, which held it, drops it from its dialogs at its next
    checks, without a BYE or a second CDR."""
    a, b = _nodes(sipd_nodes, tmp_path)
    url = a.db_url
    call_id = f"other-node-bye-{time.time_ns()}@test"
    with _phones(a, b) as (alice, bob):
        ok = _answered(a, alice, bob, call_id)
        _wait(lambda: _rows(url, "SELECT 1 FROM dialog WHERE callid = ?", (call_id,)), 10, "the dialog row")
        assert [d["callid"] for d in a.mi("dlg_list")["Dialogs"]] == [call_id]
        _hang_up(alice, bob, ok, call_id, (b.host, b.port))
        cdr = _one_cdr(url, call_id)
        assert cdr["end_reason"] == "Upstream BYE"
        _wait(lambda: not a.mi("dlg_list")["Dialogs"], 10, "node a letting the call go")
        bob.nothing(3 * INTERVAL)  # no BYE from node a
        alice.nothing(0.2)
        assert len(_rows(url, "SELECT 1 FROM cdrs WHERE callid = ?", (call_id,))) == 1
        assert "let go of 1 dialogs" in a.log_text()


def test_the_survivor_takes_the_call_over_and_its_lifetime_ends_it_once(sipd_nodes, tmp_path):
    lifetime = 10.0  # seconds: past the takeover (about 3 s after the kill), short for a test
    a, b = _nodes(sipd_nodes, tmp_path, lifetime=lifetime)
    url = a.db_url
    call_id = f"takeover-timer-{time.time_ns()}@test"
    with _phones(a, b) as (alice, bob):
        _answered(a, alice, bob, call_id)
        answered = time.monotonic()
        _wait(lambda: _rows(url, "SELECT 1 FROM dialog WHERE callid = ?", (call_id,)), 10, "the dialog row")
        a.kill9()
        owners = _wait(lambda: (o := _owners(url)).get("b") and o, DEAD_AFTER + 10, "node b holding the call")
        assert owners == {"b": 1}
        assert "took over 1 dialogs of node a" in b.log_text()
        r = b.sipctl("cluster", "status", "--json", check=False)
        st = json.loads(r.stdout)
        assert r.returncode == 1 and st["dead"] == ["a"]
        assert {n["node_id"]: (n["state"], n["dialogs"]) for n in st["nodes"]} == {"a": ("dead", 0),
                                                                                   "b": ("alive", 1)}
        left = lifetime - (time.monotonic() - answered)
        assert left > 0, "the takeover came after the call's lifetime: raise it"
        to_bob = bob.expect_request("BYE", timeout=left + 10)
        to_alice = alice.expect_request("BYE", timeout=5)
        for ua, req in ((bob, to_bob), (alice, to_alice)):
            assert f"{b.host}:{b.port}" in req.get("Via")  # from the survivor
            _respond(ua, req, 200)
        cdr = _one_cdr(url, call_id)
        assert cdr["end_reason"] == "Dialog Timeout" and cdr["status"] == "answered"
        bob.nothing(1.5)  # the timer fired once
        alice.nothing(0.2)
        assert _rows(url, "SELECT 1 FROM dialog WHERE callid = ?", (call_id,)) == []


def test_the_spool_a_dead_node_left_is_replayed_by_the_survivor(sipd_nodes, tmp_path):
    """Node a cannot reach its accounting database (a closed port), so its call's records go to
    its spool; node a is killed -9 and never comes back: node b, whose spool is in the same
    directory, replays node a's spool once, and the call has its CDR and acc rows."""
    nowhere = "mysql://root@127.0.0.1:9/sipd_nowhere"  # the discard port: connection refused
    a, b = _nodes(sipd_nodes, tmp_path, acc_a={"db_url": nowhere})
    url = b.db_url
    call_id = f"takeover-spool-{time.time_ns()}@test"
    with _phones(a, b) as (alice, bob):
        ok = _answered(a, alice, bob, call_id)
        _hang_up(alice, bob, ok, call_id)
        spool = tmp_path / "acc-a.spool"
        _wait(lambda: spool.exists() and call_id.encode() in spool.read_bytes() and b"BYE" in spool.read_bytes(),
              10, "node a's records in its spool")
        assert _rows(url, "SELECT 1 FROM cdrs WHERE callid = ?", (call_id,)) == []
        a.kill9()
        cdr = _one_cdr(url, call_id, timeout=DEAD_AFTER + 15)
        assert cdr["end_reason"] == "Upstream BYE"
        acc = _rows(url, "SELECT method FROM acc WHERE callid = ? ORDER BY id", (call_id,))
        assert [r["method"] for r in acc] == ["INVITE", "BYE"]
        assert "accounting records node a left in" in b.log_text()
        time.sleep(3 * INTERVAL)  # further looks find the spool empty: nothing stored twice
        assert len(_rows(url, "SELECT 1 FROM acc WHERE callid = ?", (call_id,))) == 2
        assert not spool.read_bytes().strip()


def _owners(url: str) -> dict[str, int]:
    with connect(url) as db:
        return cluster.dialog_owners(db)


def test_a_galera_node_stopped_and_restarted_while_calls_run(galera, galera_db, tmp_path):
    """Node a's database is Galera node 1, node b's node 2. Galera node 1 stops with a call up at
    node a; the call ends (node a spools its records), a registration is made at node b and
    another call runs through node b; node 1 comes back: node a replays its spool, and every CDR
    and registration is there, read from any Galera node."""
    from helpers.sipd_nodes import SipdNodes

    urls = [node.url(galera_db) for node in galera.nodes]
    nodes = SipdNodes(tmp_path, urls, count=2, users={"alice": PASSWORD, "bob": PASSWORD, "carol": PASSWORD},
                      config_overrides={"cluster": {"record_route_host": SHARED, "heartbeat_interval": INTERVAL,
                                                    "dead_after": 60},  # no takeover: a db outage only
                                        "acc": {"retry_interval": 0.3}},
                      per_node=[{"acc": {"spool": str(tmp_path / f"acc-{n}.spool")}} for n in "ab"])
    first = galera.nodes[0]
    with nodes:
        a, b = nodes
        with UA(b.port, "bob", password=PASSWORD, server_host=b.host) as bob, \
             UA(a.port, "alice", password=PASSWORD, server_host=a.host) as alice, \
             UA(b.port, "carol", password=PASSWORD, server_host=b.host) as carol:
            assert bob.register(300).status == 200
            before = f"galera-before-{time.time_ns()}@test"
            ok = _answered(a, alice, bob, before)
            _wait(lambda: _rows(urls[1], "SELECT 1 FROM dialog WHERE callid = ?", (before,)), 10, "the dialog row")
            try:
                first.stop()
                galera.wait_size(2)
                _hang_up(alice, bob, ok, before)
                assert carol.register(300).status == 200  # at node b, whose Galera node is up
                during = f"galera-during-{time.time_ns()}@test"
                with UA(b.port, "alice", password=PASSWORD, server_host=b.host) as alice_b:
                    ok2 = _answered(b, alice_b, bob, during)
                    _hang_up(alice_b, bob, ok2, during)
                _one_cdr(urls[1], during)
                assert _rows(urls[1], "SELECT 1 FROM cdrs WHERE callid = ?", (before,)) == []  # spooled at a
            finally:
                if first.pid is None:
                    first.start()
                    galera.wait_size(3)
            for url in urls:
                for call_id in (before, during):
                    _one_cdr(url, call_id, timeout=30)  # node a's spool replayed once
                names = {r["username"] for r in _rows(url, "SELECT username FROM location")}
                assert {"bob", "carol"} <= names
            assert "spooled records replayed" in a.log_text()
