"""Two real sipd nodes on one database (one MariaDB, and Galera with each node on its own Galera
node), started by the harness of tests/helpers/sipd_nodes.py: both write their heartbeat and list
each other, and a registration made at node A is usable at node B at once -- the location is read
from the database at each lookup (``db-only``), so the delay is the database's: none on one MariaDB,
and none on Galera either, whose reads wait for the writes committed before them."""

from __future__ import annotations

import json

import pytest

from helpers.sipd_nodes import wait_for
from tests.daemon.harness import UA, message_reaches

pytestmark = pytest.mark.mysql

USERS = {"alice": "alicepw", "bob": "bobpw"}


def test_two_nodes_see_each_other(sipd_nodes):
    a, b = sipd_nodes(count=2, users=USERS)
    assert (a.host, b.host) == ("127.0.0.2", "127.0.0.3")

    def status():  # type: ignore[no-untyped-def]
        r = b.sipctl("cluster", "status", "--json", check=False)
        nodes = json.loads(r.stdout)["nodes"]
        return r.returncode == 0 and len(nodes) == 2 and nodes

    nodes = wait_for(status, 10)
    assert nodes, b.log_text()
    assert [(n["node_id"], n["address"], n["state"]) for n in nodes] == [
        ("a", f"127.0.0.2:{a.port}", "alive"), ("b", f"127.0.0.3:{b.port}", "alive")]


def test_registered_at_a_reached_through_b_at_once(sipd_nodes):
    a, b = sipd_nodes(count=2, users=USERS)
    with UA(a.port, "alice", password="alicepw", server_host=a.host) as alice, \
            UA(b.port, "bob", password="bobpw", server_host=b.host) as bob:
        assert alice.register().status == 200
        # the MESSAGE leaves right after alice's 200 OK: no wait for anything to spread
        assert message_reaches(bob, alice)
        assert alice.register(expires=0).status == 200
        uri = f"sip:alice@{alice.domain}"
        bob.send(bob.request("MESSAGE", uri, to=f"<{uri}>", body="hi"))
        auth = bob.authorization(bob.expect(407), "MESSAGE", uri, proxy=True)
        bob.send(bob.request("MESSAGE", uri, to=f"<{uri}>", body="hi", headers=[auth]))
        assert bob.expect(480, 404).status == 480  # unregistered at A: gone at B too
