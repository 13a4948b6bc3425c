"""A binding only its node can reach, reached from the other node (one MariaDB, and Galera).

Node A holds alice's TCP connection, or the NAT pinhole her REGISTER opened; the location row
says so (``node_id``). A call or MESSAGE for her arriving at node B goes to A with a Route naming
her binding, and A delivers it over the connection or pinhole (services/relay.py). Her NAT
keep-alives come from her owner node alone, and move with her when she registers at B. Peer nodes
are trusted by flood protection: a burst B relays to A does not get B banned at A.
"""

from __future__ import annotations

import json
import select
import socket
import time

import pytest
from conftest import require_tool

from helpers.baresip import BaresipUA, baresip_binary
from helpers.sipd_nodes import wait_for
from sipd.db import connect
from sipd.sip.parser import parse_message
from tests.daemon.harness import UA, message_reaches

pytestmark = pytest.mark.mysql

USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}
KEEPALIVE = 0.5   # seconds between NAT pings in these tests


def _owner(url: str, user: str) -> list[str | None]:
    with connect(url) as db:
        return [r["node_id"] for r in db.query("SELECT node_id FROM location WHERE username = ?", (user,))]


def _dead(node) -> list[str]:  # type: ignore[no-untyped-def]
    r = node.sipctl("cluster", "status", "--json", check=False)
    return json.loads(r.stdout)["dead"] if r.stdout.strip() else []


def _cdrs(url: str, call_id: str) -> list[dict]:
    with connect(url) as db:
        return db.query("SELECT callid, sip_code FROM cdrs WHERE callid = ?", (call_id,))


def _message(caller: UA, user: str, body: str = "hi") -> None:
    """A MESSAGE from ``caller`` to ``user`` (answering the 407), sent; the test reads the rest."""
    uri = f"sip:{user}@{caller.domain}"
    caller.send(caller.request("MESSAGE", uri, to=f"<{uri}>", body=body))
    auth = caller.authorization(caller.expect(407), "MESSAGE", uri, proxy=True)
    caller.send(caller.request("MESSAGE", uri, to=f"<{uri}>", body=body, headers=[auth]))


def _first(sock: socket.socket, start: bytes, timeout: float = 5.0) -> tuple[bytes, str]:
    """The first datagram ``sock`` receives that starts with ``start`` (others are skipped), and
    the address it came from."""
    deadline = time.monotonic() + timeout
    for _ in range(1000):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            break
        data, addr = sock.recvfrom(65535)
        if data.startswith(start):
            return data, addr[0]
    raise AssertionError(f"no {start!r} within {timeout} s")


def _behind_nat(ua: UA) -> UA:
    """``ua`` writes in its Via and Contact a port other than its socket's, as a phone behind NAT
    writes its private one: sipd flags its binding NAT and reaches it at the address its REGISTER
    came from (the pinhole), never at the Contact."""
    ua.port += 1
    return ua


def _received(seconds: float, *socks: socket.socket) -> list[list[tuple[bytes, str]]]:
    """Every datagram each of ``socks`` receives within the same ``seconds``, with the address it
    came from (one list per socket)."""
    out: list[list[tuple[bytes, str]]] = [[] for _ in socks]
    deadline = time.monotonic() + seconds
    for _ in range(10000):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for sock in select.select(list(socks), [], [], left)[0]:
            data, addr = sock.recvfrom(65535)
            out[socks.index(sock)].append((data, addr[0]))
    return out


def _options_from(got: list[tuple[bytes, str]]) -> list[str]:
    return [src for data, src in got if data.startswith(b"OPTIONS ")]


def test_tcp_callee_at_a_reached_through_b(sipd_nodes, shared_db):
    """With a Record-Route host all nodes share ([cluster] record_route_host) A still records its
    own address: bob's BYE, which any node may receive, must reach A, which holds the connection."""
    a, b = sipd_nodes(count=2, users=USERS, config_overrides={"cluster": {"record_route_host": "sip.example.test"}})
    with UA(a.port, "alice", password="alicepw", transport="tcp", server_host=a.host) as alice, \
            UA(b.port, "bob", password="bobpw", server_host=b.host) as bob:
        assert alice.register().status == 200
        assert _owner(shared_db[1], "alice") == ["a"]
        # over the very connection alice registered on: only node A holds it
        assert message_reaches(bob, alice)
        # a call: INVITE, answer, ACK and BYE all travel B -> A -> alice's connection
        uri = f"sip:alice@{alice.domain}"
        sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
        invite = ["Content-Type: application/sdp"]
        call_id = f"relay-{time.monotonic_ns()}"
        via = bob.via()
        bob.send(bob.request("INVITE", uri, to=f"<{uri}>", call_id=call_id, cseq=1, via=via, body=sdp, headers=invite))
        challenge = bob.expect(407)
        bob.send(bob.request("ACK", uri, to=challenge.get("To"), call_id=call_id, cseq=1, via=via))
        auth = bob.authorization(challenge, "INVITE", uri, proxy=True)
        bob.send(bob.request("INVITE", uri, to=f"<{uri}>", call_id=call_id, cseq=2, body=sdp, headers=[*invite, auth]))
        inv = alice.expect_request("INVITE", timeout=5)
        assert f"127.0.0.2:{a.port}" in inv.get("Record-Route")   # A's own, then B's: the shared host
        assert "sip.example.test" in inv.get_all("Record-Route")[-1]
        alice.respond(inv, 200, body=sdp, headers=["Content-Type: application/sdp"])
        ok = bob.expect(200, timeout=5)
        route = [f"Route: {rr}" for rr in reversed(ok.get_all("Record-Route"))]
        remote, to = str(ok.contacts[0].uri), ok.get("To")
        bob.send(bob.request("ACK", remote, to=to, call_id=call_id, cseq=2, headers=route))
        alice.expect_request("ACK", timeout=5)
        bob.send(bob.request("BYE", remote, to=to, call_id=call_id, cseq=3, headers=route))
        alice.respond(alice.expect_request("BYE", timeout=5), 200)
        assert bob.expect(200, timeout=5).status == 200
    # one call, one CDR: written by B, where the call entered; A relayed it and records none
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not _cdrs(shared_db[0], call_id):
        time.sleep(0.2)
    time.sleep(1.5)  # a second writer, had there been one, has flushed by now
    assert len(_cdrs(shared_db[0], call_id)) == 1, _cdrs(shared_db[0], call_id)


def test_nated_callee_relayed_and_kept_alive_by_its_owner_only(sipd_nodes, shared_db):
    """alice (NAT, registered at A) is reached from B through A; carol (NAT, at B) is pinged by B
    alone, alice by A alone -- though B holds a copy of alice's binding after the lookup. When
    alice registers at B instead, her pings move to B."""
    a, b = sipd_nodes(count=2, users=USERS, config_overrides={"nat": {"keepalive_interval": KEEPALIVE}})
    with _behind_nat(UA(a.port, "alice", password="alicepw", server_host=a.host)) as alice, \
            _behind_nat(UA(b.port, "carol", password="carolpw", server_host=b.host)) as carol, \
            UA(b.port, "bob", password="bobpw", server_host=b.host) as bob:
        assert alice.register().status == 200
        assert carol.register().status == 200
        assert (_owner(shared_db[0], "alice"), _owner(shared_db[0], "carol")) == (["a"], ["b"])
        _message(bob, "alice", "through A")
        data, src = _first(alice.sock, b"MESSAGE ")
        assert src == "127.0.0.2", data   # from A, the node her pinhole lets in
        alice.respond(parse_message(data), 200)
        assert bob.expect(200, timeout=5).status == 200

        window = 3.0
        _received(0.1, alice.sock, carol.sock)  # what came before the window
        alice_pings, carol_pings = (_options_from(got) for got in _received(window, alice.sock, carol.sock))
        assert (set(alice_pings), set(carol_pings)) == ({"127.0.0.2"}, {"127.0.0.3"}), (alice_pings, carol_pings)
        # one node pinging: about window / interval; two would send twice that
        assert all(2 <= len(p) <= window / KEEPALIVE + 1 for p in (alice_pings, carol_pings)), (alice_pings, carol_pings)

        alice.server = (b.host, b.port)
        assert alice.register().status == 200
        assert _owner(shared_db[0], "alice") == ["b"]
        _received(2 * KEEPALIVE, alice.sock)  # a round of A's that had started may still arrive
        after = _options_from(_received(window, alice.sock)[0])
        assert set(after) == {"127.0.0.3"} and len(after) <= window / KEEPALIVE + 1, after


def test_peers_are_not_banned_for_what_they_relay(sipd_nodes, shared_db):
    """Flood protection counts every source but the trusted ones: the test's clients (127.0.0.1)
    are trusted here, the nodes' own addresses are not, except as peers. B relays more to A than
    one stranger may send in a window; A bans nobody."""
    limit = 8
    a, b = sipd_nodes(count=2, users=USERS, config_overrides={
        "antiflood": {"enabled": True, "trusted_networks": ["127.0.0.1/32"], "limit": limit, "window": 10}})
    with _behind_nat(UA(a.port, "alice", password="alicepw", server_host=a.host)) as alice, \
            UA(b.port, "bob", password="bobpw", server_host=b.host) as bob:
        assert alice.register().status == 200
        assert _owner(shared_db[0], "alice") == ["a"]
        for i in range(2 * limit):
            _message(bob, "alice", f"burst {i}")
            data, src = _first(alice.sock, b"MESSAGE ")
            assert src == "127.0.0.2", data
            alice.respond(parse_message(data), 200)
            assert bob.expect(200, timeout=5).status == 200
    for node in (a, b):
        assert "banned " not in node.log_text(), node.log_tail()


@pytest.mark.e2e
def test_baresip_registered_at_a_over_tcp_called_through_b(sipd_nodes, tmp_path, shared_db):
    """Real clients: alice's baresip registers at A over TCP, bob's at B over UDP; bob calls
    alice, the call is answered and hung up."""
    if baresip_binary() is None:
        require_tool("baresip")
    a, b = sipd_nodes(count=2, users=USERS)
    alice = BaresipUA(tmp_path, "alice", "alicepw", transport="tcp", proxy=f"{a.host}:{a.port}").start()
    bob = BaresipUA(tmp_path, "bob", "bobpw", transport="udp", proxy=f"{b.host}:{b.port}").start()
    try:
        assert alice.wait_registered(15) == "OK", alice.log_text()[-2000:]
        assert bob.wait_registered(15) == "OK", bob.log_text()[-2000:]
        assert _owner(shared_db[2], "alice") == ["a"]
        bob.dial(alice.aor)
        assert bob.wait_event({"CALL_ESTABLISHED"}, 20), f"{bob.log_text()[-3000:]}\n{b.log_tail()}\n{a.log_tail()}"
        assert alice.wait_event({"CALL_ESTABLISHED"}, 10), alice.log_text()[-2000:]
        bob.hangup()
        assert alice.wait_event({"CALL_CLOSED"}, 10), f"{alice.log_text()[-2000:]}\n{a.log_tail()}"
    finally:
        alice.stop()
        bob.stop()


def test_relayed_with_registrar_workers(sipd_nodes, shared_db):
    """Each node with [server] workers = 2 (calls spread over the processes by Call-ID): a worker
    that finds the binding owned by another node hands the call to its main, which knows the peers
    and relays it; at the owner a request from a peer stays in main, which delivers it."""
    a, b = sipd_nodes(count=2, users=USERS, config_overrides={"server": {"workers": 2}})
    with _behind_nat(UA(a.port, "alice", password="alicepw", server_host=a.host)) as alice, \
            UA(b.port, "bob", password="bobpw", server_host=b.host) as bob:
        assert alice.register().status == 200
        assert _owner(shared_db[0], "alice") == ["a"]
        uri = f"sip:alice@{alice.domain}"
        for i in range(6):  # Call-IDs spread over both processes of B
            call_id = f"workers-{i}-{time.monotonic_ns()}@test"
            via = bob.via()
            bob.send(bob.request("INVITE", uri, to=f"<{uri}>", call_id=call_id, cseq=1, via=via))
            challenge = bob.expect(407)
            bob.send(bob.request("ACK", uri, to=challenge.get("To"), call_id=call_id, cseq=1, via=via))
            auth = bob.authorization(challenge, "INVITE", uri, proxy=True)
            via = bob.via()
            bob.send(bob.request("INVITE", uri, to=f"<{uri}>", call_id=call_id, cseq=2, via=via, headers=[auth]))
            data, src = _first(alice.sock, b"INVITE ")
            assert src == "127.0.0.2", data
            alice.respond(parse_message(data), 486, "Busy Here")
            busy = bob.expect(486, timeout=5)
            bob.send(bob.request("ACK", uri, to=busy.get("To"), call_id=call_id, cseq=2, via=via))


def test_a_binding_of_a_dead_node_is_unavailable_at_once(sipd_nodes, shared_db):
    """Once A is dead (no heartbeat for [cluster] dead_after), B answers a call for a binding only A
    could reach with 480 at once, instead of relaying it into a timeout."""
    a, b = sipd_nodes(count=2, users=USERS)
    with _behind_nat(UA(a.port, "alice", password="alicepw", server_host=a.host)) as alice, \
            UA(b.port, "bob", password="bobpw", server_host=b.host) as bob:
        assert alice.register().status == 200
        a.kill9()
        dead_after = a.config["cluster"]["dead_after"] + a.config["cluster"]["heartbeat_interval"]
        assert wait_for(lambda: "cluster node a is dead" in b.log_text(), dead_after + 10), b.log_tail()
        assert _dead(b) == ["a"]
        started = time.monotonic()
        _message(bob, "alice", "to a dead node's binding")
        assert bob.expect(480, timeout=5).status == 480
        assert time.monotonic() - started < 5
        assert _owner(shared_db[1], "alice") == ["a"]  # kept: she registers again elsewhere


def test_a_tcp_caller_at_b_gets_the_callees_bye_through_b(sipd_nodes):
    """With a Record-Route host all nodes share, the node a caller is connected to still records its
    own address: the callee's BYE, sent through the node the callee uses, goes to B, which alone
    holds the caller's connection."""
    a, b = sipd_nodes(count=2, users=USERS, config_overrides={"cluster": {"record_route_host": "sip.example.test"}})
    with UA(a.port, "alice", password="alicepw", server_host=a.host) as alice, \
            UA(b.port, "bob", password="bobpw", transport="tcp", server_host=b.host) as bob:
        assert alice.register().status == 200
        uri = f"sip:alice@{alice.domain}"
        call_id = f"tcp-caller-{time.monotonic_ns()}"
        bob.send(bob.request("INVITE", uri, to=f"<{uri}>", call_id=call_id, cseq=1))
        challenge = bob.expect(407)
        auth = bob.authorization(challenge, "INVITE", uri, proxy=True)
        bob.send(bob.request("INVITE", uri, to=f"<{uri}>", call_id=call_id, cseq=2, headers=[auth]))
        inv = alice.expect_request("INVITE", timeout=5)
        assert f"127.0.0.3:{b.port}" in inv.get("Record-Route")   # B's own address, not the shared host
        alice.respond(inv, 200)
        ok = bob.expect(200, timeout=5)
        route = [f"Route: {rr}" for rr in reversed(ok.get_all("Record-Route"))]
        bob.send(bob.request("ACK", str(ok.contacts[0].uri), to=ok.get("To"), call_id=call_id, cseq=2, headers=route))
        alice.expect_request("ACK", timeout=5)
        # alice hangs up: her BYE goes to the node she uses (A), along the route set to B, to bob's connection
        alice_route = [f"Route: {rr}" for rr in inv.get_all("Record-Route")]
        bye = alice.request("BYE", str(inv.contacts[0].uri), to=inv.get("From"), call_id=call_id, cseq=1,
                            from_tag="callee1", headers=alice_route)
        alice.send(bye)
        got = bob.expect_request("BYE", timeout=5)
        bob.respond(got, 200)
        assert alice.expect(200, timeout=5).status == 200
