"""sipctl cluster status: the nodes in cluster_node, their heartbeats, what each holds, and the dead
ones flagged.
Rows are written the way nodes will write them (sipd.db.cluster.heartbeat) and by plain SQL."""

from __future__ import annotations

import time

from dbfixtures import backend, cli, db_url, empty_db_url, mysql_scratch  # noqa: F401

from sipctl.errors import ExitStatus
from sipd.db import cluster, cluster_bans, connect
from sipd.db.cluster_bans import NewBan


def test_no_nodes(cli):
    r = cli("cluster", "status", "--json")
    assert r.code == 0 and r.json["nodes"] == [] and r.json["dead"] == []
    assert "no nodes" in cli("cluster", "status").out


def test_alive_and_dead_nodes(cli, db_url):
    now = time.time()
    with connect(db_url) as db:
        cluster.heartbeat(db, "a", "127.0.0.2:5060", now - 5, started=now - 3600)
        cluster.heartbeat(db, "a", "127.0.0.2:5060", now - 2)           # a later beat keeps the start
        cluster.heartbeat(db, "b", "127.0.0.3:5060", now - 100, started=now - 200)
        db.execute("INSERT INTO cluster_node (node_id, address, started, last_heartbeat) VALUES (?, ?, ?, ?)",
                   ("c", "127.0.0.4:5060", int(now) - 60, int(now) - 31))
        # what each holds: a made two bans in force and one expired, b one lifted and one until removed
        cluster_bans.write(db, "a", [NewBan("192.0.2.1", "flood", int(now) - 10, int(now) + 290),
                                     NewBan("192.0.2.2", "manual", int(now) - 10, 0),
                                     NewBan("192.0.2.3", "auth", int(now) - 900, int(now) - 1)], [], now)
        cluster_bans.write(db, "b", [NewBan("192.0.2.4", "flood", int(now) - 10, int(now) + 290),
                                     NewBan("198.51.100.0/24", "manual", int(now) - 10, 0)], [], now)
        cluster_bans.write(db, "b", [], [("192.0.2.4", int(now) - 5)], now)
        # the registrations each node owns: two live ones at a, one expired at b, one of nobody's
        for user, node, expires in (("u1", "a", now + 600), ("u2", "a", 0), ("u3", "b", now - 10), ("u4", None, 0)):
            db.execute("INSERT INTO location (username, domain, contact, expires, last_modified, node_id) "
                       "VALUES (?, 'example.test', ?, ?, '2026-12-07 20:00:00', ?)",
                       (user, f"sip:{user}@192.0.2.1", int(expires), node))
    r = cli("cluster", "status", "--json")
    assert r.code == ExitStatus.ERROR
    nodes = {n["node_id"]: n for n in r.json["nodes"]}
    assert list(nodes) == ["a", "b", "c"]
    assert nodes["a"]["state"] == "alive" and nodes["a"]["started"] == int(now - 3600)
    assert nodes["a"]["last_heartbeat"] == int(now - 2) and 2 <= nodes["a"]["age"] <= 10
    assert nodes["b"]["state"] == "dead" and nodes["b"]["address"] == "127.0.0.3:5060"
    assert nodes["c"]["state"] == "dead"        # 31 s > the stated 30 s
    assert r.json["dead"] == ["b", "c"] and r.json["dead_after"] == 30
    assert {n: v["bans"] for n, v in nodes.items()} == {"a": 2, "b": 1, "c": 0}
    assert [nodes[n]["bindings"] for n in "abc"] == [2, 0, 0]
    r = cli("cluster", "status", "--dead-after", "120", "--json")
    assert r.code == 0 and r.json["dead"] == []
    human = cli("cluster", "status")
    assert human.code == ExitStatus.ERROR
    assert "dead nodes: b, c" in human.err and "127.0.0.2:5060" in human.out
    assert [line.split("\t")[-4:] for line in human.out.splitlines()[1:]] == [
        ["alive", "0", "2", "2"], ["dead", "0", "1", "0"], ["dead", "0", "0", "0"]]  # state, dialogs, bans, bindings


def test_two_nodes_with_one_name_make_one_row(db_url):
    with connect(db_url) as db:
        cluster.heartbeat(db, "a", "127.0.0.2:5060", 1000, started=900)
        cluster.heartbeat(db, "a", "127.0.0.9:5060", 1010, started=1005)
        assert cluster.load_nodes(db) == [cluster.Node("a", "127.0.0.9:5060", 1005, 1010)]


def test_database_from_before_the_table(cli, db_url):
    with connect(db_url) as db:
        db.execute("DROP TABLE cluster_node")
        db.execute("DELETE FROM version WHERE table_name = 'cluster_node'")
    r = cli("cluster", "status")
    assert r.code == ExitStatus.DB and "cluster_node" in r.err
    assert cli("db", "migrate").code == 0
    assert cli("cluster", "status").code == 0


def test_stats_of_the_nodes_from_the_database(cli, db_url):
    """What the nodes stored with their heartbeats: one node's, the sum over the nodes alive (a
    dead node's last values shown, not added), a node without statistics, an unknown node."""
    now = time.time()
    with connect(db_url) as db:
        cluster.heartbeat(db, "a", "127.0.0.2:5060", now - 1, started=now - 100)
        cluster.heartbeat(db, "b", "127.0.0.3:5060", now - 2, started=now - 100)
        cluster.heartbeat(db, "c", "127.0.0.4:5060", now - 300, started=now - 900)   # dead
        cluster.heartbeat(db, "d", "127.0.0.5:5060", now - 1, started=now - 10)      # no statistics yet
        cluster.write_stats(db, "a", now - 1, {"core:rcv_requests": 10, "tm:UAS_transactions": 4})
        cluster.write_stats(db, "b", now - 2, {"core:rcv_requests": 5, "tm:UAS_transactions": 1})
        cluster.write_stats(db, "c", now - 300, {"core:rcv_requests": 1000})
    r = cli("stats", "--all", "core:", "--json")
    assert r.code == 0, r.err
    assert r.json["sum"] == {"core:rcv_requests": 15}
    assert r.json["by_node"] == {"a": {"core:rcv_requests": 10}, "b": {"core:rcv_requests": 5},
                                 "c": {"core:rcv_requests": 1000}}
    assert {n["node"]: n["state"] for n in r.json["nodes"]} == {"a": "alive", "b": "alive", "c": "dead"}
    r = cli("stats", "--node", "c", "--json")
    assert r.code == 0 and r.json["state"] == "dead" and r.json["values"] == {"core:rcv_requests": 1000}
    assert r.json["age"] >= 299
    human = cli("stats", "--node", "c", "rcv_requests")
    assert "core:rcv_requests" in human.out and "dead" in human.err
    r = cli("stats", "--node", "d")
    assert r.code == ExitStatus.NOT_FOUND and "node d has stored no statistics yet" in r.err
    r = cli("stats", "--node", "x", "--json")
    assert r.code == ExitStatus.NOT_FOUND and r.json["error"].startswith("no node 'x'") and "a, b, c, d" in r.json["error"]
    r = cli("stats", "--node", "a", "bad name!")
    assert r.code == ExitStatus.USAGE and "not a statistic name" in r.err


def test_stats_of_a_database_from_before_the_table(cli, db_url):
    with connect(db_url) as db:
        db.execute("DROP TABLE cluster_stats")
    r = cli("stats", "--all")
    assert r.code == ExitStatus.NOT_FOUND and "no cluster_stats table" in r.err and "sipctl db migrate" in r.err
