"""sipd's schema on a real three-node Galera cluster: every table InnoDB with a primary key, a
write that loses Galera's certification to another node runs again and wins without a second
row, and ``sipctl db status`` shows the cluster."""

from __future__ import annotations

import pytest
from dbfixtures import Cli, write_config

from sipd.db import connect, galera_ready, schema

pytestmark = pytest.mark.mysql


def test_every_table_innodb_with_a_primary_key(galera, galera_db):
    with connect(galera.nodes[0].url(galera_db)) as db:
        schema.create_all(db)
        assert galera_ready.galera_problems(db) == []
    # read back on another node, straight from information_schema
    rows = galera.nodes[2].sql(
        "SELECT t.table_name, t.engine, (SELECT COUNT(*) FROM information_schema.table_constraints c "
        "WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name "
        "AND c.constraint_type = 'PRIMARY KEY') FROM information_schema.tables t WHERE t.table_schema = %s",
        (galera_db,))
    assert {r[0] for r in rows} == set(schema.BY_NAME)
    assert [r for r in rows if r[1] != "InnoDB" or r[2] != 1] == []


def test_certification_conflict_is_run_again_and_wins(galera, galera_db):
    first, second, third = galera.nodes
    with connect(first.url(galera_db)) as db:
        schema.create_all(db)
        db.execute("INSERT INTO domain (domain, attrs) VALUES ('a.test', 'start')")
    aborts = int(first.status("wsrep_local_cert_failures")) + int(first.status("wsrep_local_bf_aborts"))
    other = second.connect(galera_db)
    runs: list[int] = []

    def change(db):
        runs.append(len(runs) + 1)
        db.execute("UPDATE domain SET attrs = ? WHERE domain = 'a.test'", (f"node1 run {len(runs)}",))
        db.execute("INSERT INTO cdrs (callid, from_tag, status) VALUES ('call-1', 'ft', 'answered')")
        if len(runs) == 1:
            # While this transaction is open on node 1, node 2 commits a change to the same row:
            # the first commit wins the cluster, and node 1's transaction is aborted (1213).
            with other.cursor() as cur:
                assert cur.execute("UPDATE domain SET attrs = 'node2' WHERE domain = 'a.test'") == 1

    try:
        with connect(first.url(galera_db)) as db:
            db.run_transaction(change)
    finally:
        other.close()
    assert len(runs) >= 2   # (a third run if node 1 was still applying node 2's change)
    after = int(first.status("wsrep_local_cert_failures")) + int(first.status("wsrep_local_bf_aborts"))
    assert after > aborts, "node 1 saw no certification failure or abort"
    assert third.sql("SELECT attrs FROM domain WHERE domain = 'a.test'", database=galera_db) == [
        (f"node1 run {len(runs)}",)]
    assert third.sql("SELECT COUNT(*) FROM cdrs WHERE callid = 'call-1'", database=galera_db) == [(1,)]


def test_db_status_shows_the_cluster(galera, galera_db, tmp_path):
    cli = Cli(write_config(tmp_path / "sipd.toml", galera.nodes[1].url(galera_db)))
    assert cli("db", "create").code == 0
    r = cli("db", "status", "--json")
    assert r.code == 0, r.out + r.err
    assert r.json["galera_ready"] is True and r.json["galera_problems"] == []
    g = r.json["galera"]
    assert (g["cluster_size"], g["cluster_status"], g["local_state"], g["ready"]) == (3, "Primary", "Synced", True)
    assert g["node_name"] == "node2"
    human = cli("db", "status")
    assert "Galera-ready: yes" in human.out
    assert "Galera: cluster size 3, Primary, node node2 Synced, ready ON" in human.out


def test_migrate_on_the_cluster_keeps_the_rows(galera, galera_db, tmp_path):
    first, second, third = galera.nodes
    with connect(first.url(galera_db)) as db:
        schema.create_all(db)
        db.execute("ALTER TABLE version DROP PRIMARY KEY")     # a database made before the key
        db.execute("INSERT INTO domain (domain) VALUES ('kept.test')")
    versions = third.sql("SELECT table_name, table_version FROM version ORDER BY table_name", database=galera_db)
    cli = Cli(write_config(tmp_path / "sipd.toml", second.url(galera_db)))
    r = cli("db", "status", "--json")
    assert r.code == 1 and r.json["galera_problems"] == [
        {"table": "version", "kind": "primary key", "problem": "no primary key"}]
    r = cli("db", "migrate", "--json")
    assert r.code == 0 and r.json["steps"] == [{"table": "version", "action": "primary key added (table_name)"}]
    assert third.sql("SELECT COUNT(*) FROM information_schema.table_constraints WHERE table_schema = %s "
                     "AND table_name = 'version' AND constraint_type = 'PRIMARY KEY'", (galera_db,)) == [(1,)]
    assert third.sql("SELECT table_name, table_version FROM version ORDER BY table_name",
                     database=galera_db) == versions
    assert third.sql("SELECT domain FROM domain", database=galera_db) == [("kept.test",)]
    assert cli("db", "status").code == 0


def test_db_status_on_a_node_that_lost_its_quorum(galera, galera_db, tmp_path):
    """Two nodes die at once (kill -9): the survivor cannot know it is the majority, so it stops
    serving queries, and db status says what it sees instead of failing on the first table.
    Afterwards the survivor is made primary again and the dead nodes rejoin (leaving the cluster
    as the next test expects it)."""
    first, second, third = galera.nodes
    cli = Cli(write_config(tmp_path / "sipd.toml", first.url(galera_db)))
    assert cli("db", "create").code == 0
    second.kill9()
    third.kill9()
    try:
        galera.wait_size(1)
        r = cli("db", "status", "--json")
        assert r.code == 1, r.out + r.err
        g = r.json["galera"]
        assert (g["cluster_status"], g["ready"], g["cluster_size"]) == ("non-Primary", False, 1)
        human = cli("db", "status")
        assert "Galera: cluster size 1, non-Primary" in human.out and "ready OFF" in human.out
        assert "does not serve queries" in human.err and "quorum" in human.err
        doctor = cli("doctor", "--json", "--no-dns")
        database = [f for f in doctor.json["findings"] if f["area"] == "database"]
        assert database and database[0]["verdict"] == "fail", doctor.out
        assert "does not serve queries (non-Primary" in database[0]["detail"]
    finally:
        first.sql("SET GLOBAL wsrep_provider_options = 'pc.bootstrap=YES'")
        first.wait_synced()
        second.start()
        third.start()
        galera.wait_size(3)
    assert cli("db", "status").code == 0
