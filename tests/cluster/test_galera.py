"""The test cluster itself: three real Galera nodes replicate synchronously, and a node that was
stopped rejoins by incremental state transfer (IST), catching up on what it missed."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.mysql


def test_three_nodes_synced(galera):
    for node in galera.nodes:
        assert node.status("wsrep_cluster_size") == "3"
        assert node.status("wsrep_local_state_comment") == "Synced"
        assert node.status("wsrep_ready") == "ON"
    uuids = {node.status("wsrep_cluster_state_uuid") for node in galera.nodes}
    assert len(uuids) == 1 and "" not in uuids


def test_write_on_node1_read_on_node3(galera, galera_db):
    first, third = galera.nodes[0], galera.nodes[2]
    first.sql("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(16)) ENGINE=InnoDB", database=galera_db)
    first.sql("INSERT INTO t VALUES (1, 'from node1')", database=galera_db)
    # (the helper's reads wait until node 3 has applied what the cluster committed before them)
    assert third.sql("SELECT v FROM t WHERE id = 1", database=galera_db) == [("from node1",)]


def test_stopped_node_rejoins_by_ist(galera, galera_db):
    first, second = galera.nodes[0], galera.nodes[1]
    first.sql("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(16)) ENGINE=InnoDB", database=galera_db)
    log_before = len(second.log_text())
    second.stop()
    galera.wait_size(2)
    first.sql("INSERT INTO t VALUES (2, 'while away')", database=galera_db)  # the gap IST must carry
    second.start()
    galera.wait_size(3)
    assert second.sql("SELECT v FROM t WHERE id = 2", database=galera_db) == [("while away",)]
    rejoin_log = second.log_text()[log_before:]
    # It kept its data and received only the writesets it missed: the state transfer script
    # bypassed the copy ("rsync IST", the donor's "Bypassing state dump"), then IST carried the gap.
    assert "rsync IST completed on joiner" in rejoin_log, rejoin_log[-3000:]
    received = re.search(r"Receiving IST: (\d+) writesets", rejoin_log)
    assert received and int(received.group(1)) >= 1, rejoin_log[-3000:]
    assert "IST received" in rejoin_log
