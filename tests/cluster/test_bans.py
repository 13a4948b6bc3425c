"""Bans shared by the nodes of a cluster: two or three real sipd nodes (tests/helpers/sipd_nodes.py)
on one MariaDB and on the Galera cluster. A ban made at one node -- by an operator's ``sipctl ban
add`` or by the flood detection -- drops the address's packets at the other node within the stated
bound (two ``[cluster] ban_interval``); an unban at either node lifts it at both; a node that
restarts gets the bans in force; bans a registrar worker made are shared too; a ban made while the
node's database is away is shared when it is back; without ``[cluster] node_id`` nothing is shared."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from helpers.sipd_nodes import SipdNodes
from helpers.sipd_proc import SipdProcess, options_ping
from helpers.waiting import until
from sipd.db import connect

INTERVAL = 0.5           # [cluster] ban_interval: the stated bound is two of them
BOUND = 2 * INTERVAL
SLACK = 4.0              # a loaded machine's scheduling and sipctl's start-up, on top of the bound
LIMIT = 20               # [antiflood] limit per window: a short bounded burst exceeds it


def _conf(**antiflood: Any) -> dict:
    # 127.0.0.1 (the tests' own pings) and the nodes (each trusts its peers) stay trusted; the
    # other loopback addresses are the "attackers"
    return {"cluster": {"ban_interval": INTERVAL},
            "antiflood": {"trusted_networks": ["127.0.0.1/32"], "window": 5.0, "limit": LIMIT, **antiflood}}


def _bans(proc: SipdProcess) -> dict[str, dict]:
    return {b["ip"]: b for b in json.loads(proc.sipctl("ban", "list", "--json").stdout)}


def _answers(proc: SipdProcess, source: str) -> bool:
    return options_ping(proc.host, proc.port, timeout=0.5, source=source) is not None


def _flood(proc: SipdProcess, source: str, count: int) -> None:
    """``count`` OPTIONS from ``source`` as fast as one socket sends them (no answer awaited)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        port = s.getsockname()[1]
        for i in range(count):
            s.sendto((f"OPTIONS sip:{proc.address} SIP/2.0\r\nVia: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-f{i}\r\n"
                      f"Max-Forwards: 70\r\nFrom: <sip:f@{source}>;tag=f{i}\r\nTo: <sip:{proc.address}>\r\n"
                      f"Call-ID: flood-{i}@{source}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(),
                     (proc.host, proc.port))


def _rows(db_url: str) -> list[dict]:
    with connect(db_url) as db:
        return db.query("SELECT target, reason, node_id, since, expires, lifted FROM cluster_ban ORDER BY target")


def test_an_operators_ban_and_unban_apply_at_every_node(sipd_nodes):
    a, b, c = sipd_nodes(count=3, config_overrides=_conf())
    url = a.db_url
    c.stop()                                 # c is away while the ban is made
    assert _answers(b, "127.0.0.5")
    a.sipctl("ban", "add", "127.0.0.5", "--seconds", "600")
    seen, took = until(lambda: _bans(b).get("127.0.0.5"), BOUND + SLACK)
    assert seen, b.log_text()
    assert seen["reason"] == "manual" and 590 <= seen["expires_in"] <= 600 and seen["node"] == "a", seen
    assert _bans(a)["127.0.0.5"]["node"] == ""   # a's own
    print(f"ban at a applied at b after {took:.2f} s (bound {BOUND:g} s, sipctl's start-up included)")
    assert not _answers(b, "127.0.0.5")      # b drops its packets before parsing
    assert _answers(b, "127.0.0.8")          # and only its
    assert "banned 127.0.0.5 as node a did" in b.log_text()

    a.sipctl("ban", "add", "127.0.9.0/24")   # a network, until removed
    assert until(lambda: "127.0.9.0/24" in _bans(b), BOUND + SLACK)[0], b.log_text()
    c.start()                                # back: it reads the bans in force as it starts
    late, _ = until(lambda: _bans(c).get("127.0.9.0/24"), BOUND + SLACK)
    assert late and late["expires_in"] is None and late["reason"] == "manual", c.log_text()
    assert "127.0.0.5" in _bans(c) and not _answers(c, "127.0.9.4")

    b.sipctl("ban", "rm", "127.0.0.5")       # lifted at another node than the one that banned
    gone, took = until(lambda: "127.0.0.5" not in _bans(a) and "127.0.0.5" not in _bans(c), BOUND + SLACK)
    assert gone, a.log_text()
    print(f"unban at b applied at a and c after {took:.2f} s")
    assert _answers(a, "127.0.0.5") and _answers(c, "127.0.0.5")
    row = next(r for r in _rows(url) if r["target"] == "127.0.0.5")
    assert row["lifted"] >= row["since"] and row["node_id"] == "b"

    st = json.loads(a.sipctl("cluster", "status", "--json").stdout)
    assert {n["node_id"]: n["bans"] for n in st["nodes"]} == {"a": 1, "b": 0, "c": 0}, st


def test_a_flood_ban_made_at_one_node_drops_the_source_at_the_other(sipd_nodes):
    a, b = sipd_nodes(count=2, config_overrides=_conf(ban_time=120.0))
    _flood(a, "127.0.0.6", 3 * LIMIT)
    banned, _ = until(lambda: _bans(a).get("127.0.0.6"), 10)
    assert banned and banned["reason"] == "flood", a.log_text()
    at_b, took = until(lambda: _bans(b).get("127.0.0.6"), BOUND + SLACK)
    assert at_b and at_b["reason"] == "flood" and 100 <= at_b["expires_in"] <= 120, b.log_text()
    print(f"flood ban at a applied at b after {took:.2f} s")
    assert not _answers(b, "127.0.0.6")
    assert _answers(b, "127.0.0.7")


def test_a_node_trusting_an_address_keeps_serving_it_but_not_after_an_operators_ban(sipd_nodes):
    trusting = {"antiflood": {"trusted_networks": ["127.0.0.1/32", "127.0.0.6/32"]}}
    a, b = sipd_nodes(count=2, config_overrides=_conf(), per_node=[{}, trusting])
    _flood(a, "127.0.0.6", 3 * LIMIT)
    assert until(lambda: any(r["target"] == "127.0.0.6" for r in _rows(a.db_url)), BOUND + SLACK)[0]
    time.sleep(BOUND)  # b has read the row by now (and must not have applied it): absence cannot be polled
    assert "127.0.0.6" not in _bans(b) and _answers(b, "127.0.0.6")
    a.sipctl("ban", "add", "127.0.0.6")      # an operator's ban applies even where trusted
    assert until(lambda: "127.0.0.6" in _bans(b), BOUND + SLACK)[0], b.log_text()


def test_without_node_id_no_ban_is_shared(shared_db, tmp_path):
    nodes = SipdNodes(tmp_path, shared_db, config_overrides={"cluster": {"node_id": ""}})
    nodes.start(peers=False)
    try:
        a, b = nodes
        a.sipctl("ban", "add", "127.0.0.5")
        time.sleep(BOUND + 1)  # absence: what would have shared it has had its time
        assert "127.0.0.5" not in _bans(b) and _rows(a.db_url) == []
    finally:
        nodes.close()


def test_a_ban_made_while_the_database_node_is_away_is_shared_when_it_is_back(galera, galera_db, tmp_path):
    """Node a's Galera node stops: a's ban drops packets at a at once but cannot be written (one
    warning in a's log); b, on another Galera node, does not have it. When a's Galera node is back
    the ban is written and b applies it."""
    urls = [node.url(galera_db) for node in galera.nodes]
    nodes = SipdNodes(tmp_path, urls, count=2, config_overrides={**_conf(), "cluster": {
        "ban_interval": INTERVAL, "dead_after": 60}})  # no takeover: a database outage only
    first = galera.nodes[0]
    with nodes:
        a, b = nodes
        try:
            first.stop()
            galera.wait_size(2)
            a.sipctl("ban", "add", "127.0.0.5")
            assert not _answers(a, "127.0.0.5")
            warned, _ = until(lambda: "cluster bans of node a not shared" in a.log_text(), 30)
            assert warned, a.log_tail()
            assert "127.0.0.5" not in _bans(b)
        finally:
            if first.pid is None:
                first.start()
                galera.wait_size(3)
        shared, took = until(lambda: "127.0.0.5" in _bans(b), 60)
        assert shared, a.log_tail()
        print(f"shared {took:.1f} s after a's Galera node was back")
        assert a.log_text().count("cluster bans of node a not shared") == 1     # logged once, not per try
        assert "cluster bans of node a shared again" in a.log_text()
        assert not _answers(b, "127.0.0.5")


def test_bans_made_in_a_registrar_worker_are_shared(sipd_nodes):
    """Node a runs a registrar worker beside its main process, and each REGISTER goes to one of the
    two at random: twenty scanners' REGISTERs from twenty addresses are banned where they landed
    (about half in the worker, which hands its bans to main without a notification), and every
    one of the twenty bans reaches node b."""
    conf = {**_conf(scanner_ban_time=300.0), "cluster": {"ban_interval": INTERVAL}}
    a, b = sipd_nodes(count=2, config_overrides=conf, per_node=[{"server": {"workers": 2}}, {}])
    sources = [f"127.0.1.{i}" for i in range(10, 30)]
    for source in sources:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((source, 0))
            port = s.getsockname()[1]
            s.sendto((f"REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-s{port}\r\n"
                      f"Max-Forwards: 70\r\nFrom: <sip:100@example.test>;tag=s{port}\r\nTo: <sip:100@example.test>\r\n"
                      f"Call-ID: scan-{port}@{source}\r\nCSeq: 1 REGISTER\r\nContact: <sip:100@{source}:{port}>\r\n"
                      "User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n").encode(), (a.host, a.port))
    at_a, _ = until(lambda: set(sources) <= set(_bans(a)), 10)
    assert at_a, sorted(_bans(a))
    at_b, took = until(lambda: set(sources) <= set(_bans(b)), 2 * BOUND + SLACK)
    assert at_b, sorted(set(sources) - set(_bans(b)))
    print(f"20 scanner bans made at a (main and worker) all at b after {took:.2f} s")
    assert {_bans(b)[s]["reason"] for s in sources} == {"scanner"}


def test_more_bans_than_one_write_takes_arrive_in_turns(sipd_nodes):
    """A flood that bans hundreds of sources: node a writes them BATCH at a time (the database
    thread is the registrations' too), one turn right after the other, and node b gets them all."""
    from sipd.services.cluster_bans import BATCH

    a, b = sipd_nodes(count=2, config_overrides=_conf())
    targets = [f"10.9.{i // 250}.{i % 250 + 1}" for i in range(2 * BATCH + 50)]
    for target in targets:
        a.mi("ban_add", [target, 600])
    got, took = until(lambda: set(targets) <= set(_bans(b)), 3 * BOUND + SLACK)
    assert got, f"{len(set(targets) - set(_bans(b)))} of {len(targets)} missing at b"
    print(f"{len(targets)} bans made at a all at b after {took:.2f} s")
