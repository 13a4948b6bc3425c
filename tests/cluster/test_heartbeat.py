"""A real sipd with [cluster] node_id writes its heartbeat into cluster_node (SQLite and MariaDB):
the row appears at start and is refreshed, ``sipctl cluster status`` lists the node alive, and
after the sipd is killed -9 and [cluster] dead_after has passed, the same command flags it dead."""

from __future__ import annotations

import json
import time

from dbfixtures import backend, db_url, empty_db_url, mysql_scratch  # noqa: F401

from helpers.sipd_nodes import wait_for
from helpers.sipd_proc import SipdProcess
from sipd.db import cluster, connect

INTERVAL = 0.5   # seconds between heartbeats: several within a test
DEAD_AFTER = 2   # seconds without one before the node is dead


def _row(db_url: str) -> cluster.Node | None:
    with connect(db_url) as db:
        nodes = cluster.load_nodes(db)
    return nodes[0] if nodes else None


def _status(proc: SipdProcess) -> tuple[int, dict]:
    r = proc.sipctl("cluster", "status", "--json", check=False)
    return r.returncode, json.loads(r.stdout)


def test_sipd_writes_its_heartbeat_and_is_flagged_dead_after_kill9(tmp_path, db_url):
    proc = SipdProcess(tmp_path, {"cluster": {"node_id": "a", "heartbeat_interval": INTERVAL,
                                              "dead_after": DEAD_AFTER}}, db_url=db_url, provision=False)
    proc.start()
    try:
        first = wait_for(lambda: _row(db_url), 10)
        assert first is not None, proc.log_text()
        assert first.node_id == "a" and first.address == f"127.0.0.1:{proc.port}"
        assert abs(first.started - time.time()) < 30
        refreshed = wait_for(lambda: (r := _row(db_url)) and r.last_heartbeat > first.last_heartbeat and r, 5)
        assert refreshed, "the heartbeat was not refreshed"
        assert refreshed.started == first.started        # a later beat keeps the start
        code, st = _status(proc)
        assert code == 0 and st["dead_after"] == DEAD_AFTER  # [cluster] dead_after is sipctl's default
        assert [(n["node_id"], n["state"]) for n in st["nodes"]] == [("a", "alive")]
        proc.kill9()
        killed_at = time.time()
        last = _row(db_url)
        assert last is not None
        time.sleep(max(0.0, last.last_heartbeat + DEAD_AFTER + 1.2 - time.time()))
        code, st = _status(proc)
        assert code == 1 and st["dead"] == ["a"], st
        after = _row(db_url)
        assert after is not None and after.last_heartbeat <= int(killed_at) + 1  # nothing wrote since the kill
    finally:
        proc.close()


def test_no_node_id_writes_no_row(tmp_path, db_url):
    proc = SipdProcess(tmp_path, {"cluster": {"heartbeat_interval": INTERVAL}}, db_url=db_url, provision=False)
    proc.start()
    try:
        time.sleep(3 * INTERVAL)
        assert _row(db_url) is None
    finally:
        proc.close()


def test_cluster_keys_are_checked(tmp_path):
    from sipd import config
    from sipd.validation import VALIDATORS

    path = tmp_path / "sipd.toml"
    path.write_text('[cluster]\nnode_id = "a b"\naddress = "nohost"\nheartbeat_interval = 10\ndead_after = 10\n')
    _, problems = config.check(path, validators=VALIDATORS)
    assert [p.key for p in problems] == ["cluster.node_id", "cluster.address", "cluster.dead_after"]
    path.write_text('[cluster]\nnode_id = "node-1.b_2"\naddress = "[2001:db8::1]:5070"\ndead_after = 31\n')
    assert config.check(path, validators=VALIDATORS)[1] == []


def test_address_defaults_to_the_first_listener():
    from sipd.config import Config
    from sipd.config_sections import ServerSection
    from sipd.services.cluster import node_address

    c = Config(server=ServerSection(listen=["udp:[::1]:5070", "tcp:127.0.0.2:5060"]))
    assert node_address(c) == "[::1]:5070"
    c.server.advertised_address = "sip.example.test"
    assert node_address(c) == "sip.example.test:5070"
    c.cluster.address = "192.0.2.1:5060"
    assert node_address(c) == "192.0.2.1:5060"
