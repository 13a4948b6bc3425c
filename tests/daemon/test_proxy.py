"""A live sipd as a stateful proxy between socket-based user agents."""

from __future__ import annotations

import pytest

from tests.daemon.harness import DOMAIN, UA, add_subscriber, live_daemon

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("proxy")
    d = live_daemon(tmp, {"proxy": {"invite_timeout": 3.0, "serial_timeout": 1.0}})
    for user in ("alice", "bob", "carol", "dave"):
        add_subscriber(d.db_url, user, "pw-" + user)
    from sipd.db import connect

    with connect(d.db_url) as db:
        db.execute("INSERT INTO dbaliases (alias_username, alias_domain, username, domain) VALUES ('1247', ?, 'bob', ?)",
                   (DOMAIN, DOMAIN))
    d.start()
    yield d
    assert d.running(), d.log_text()
    assert d.stop() == 0
    assert "Traceback" not in d.log_text(), d.log_text()


def invite(caller: UA, target: str, *, call_id: str | None = None) -> str:
    """Send an INVITE, answer the 407; returns the branch-free request text used."""
    uri = f"sip:{target}"
    headers = ["Content-Type: application/sdp"]
    caller.send(caller.request("INVITE", uri, to=f"<{uri}>", headers=headers, body=SDP, call_id=call_id, cseq=1))
    resp = caller.expect(407)
    caller.send(caller.request("ACK", uri, to=resp.get("To"), call_id=call_id, cseq=1,
                               via=resp.get("Via")))
    auth = caller.authorization(resp, "INVITE", uri, proxy=True)
    caller.send(caller.request("INVITE", uri, to=f"<{uri}>", headers=[*headers, auth], body=SDP, call_id=call_id, cseq=2))
    return uri


def ack_and_bye(caller: UA, callee: UA, ok, call_id: str) -> None:
    route = [f"Route: {rr}" for rr in reversed(ok.get_all("Record-Route"))]
    remote = ok.contacts[0].uri
    caller.send(caller.request("ACK", str(remote), to=ok.get("To"), headers=route, call_id=call_id, cseq=2))
    ack = callee.expect_request("ACK")
    assert ack.get("Route") is None  # our Route entries were consumed
    caller.send(caller.request("BYE", str(remote), to=ok.get("To"), headers=route, call_id=call_id, cseq=3))
    bye = callee.expect_request("BYE")
    callee.respond(bye, 200)
    caller.expect(200)


@pytest.mark.parametrize("caller_t,callee_t", [("udp", "udp"), ("udp", "tcp"), ("tcp", "udp")])
def test_call_through_proxy(daemon, caller_t, callee_t):
    with UA(daemon.port, "alice", transport=caller_t, password="pw-alice") as alice, \
         UA(daemon.port, "bob", transport=callee_t, password="pw-bob") as bob:
        assert bob.register(300).status == 200
        call_id = f"call-{caller_t}-{callee_t}"
        invite(alice, f"bob@{DOMAIN}", call_id=call_id)
        alice.expect(100, skip=())
        inv = bob.expect_request("INVITE")
        assert inv.uri_text.startswith(f"sip:bob@127.0.0.1:{bob.port}")
        assert "Proxy-Authorization" not in inv.headers
        rr = inv.get_all("Record-Route")
        assert len(rr) == (2 if caller_t != callee_t else 1)
        assert int(inv.get("Max-Forwards")) == 69
        bob.respond(inv, 180, "Ringing")
        assert alice.expect(180).status == 180
        bob.respond(inv, 200, "OK", body=SDP, headers=["Content-Type: application/sdp"])
        ok = alice.expect(200)
        assert ok.call_id == call_id
        ack_and_bye(alice, bob, ok, call_id)
        assert bob.register(0).status == 200


def test_cancel_before_answer(daemon):
    with UA(daemon.port, "alice", password="pw-alice") as alice, UA(daemon.port, "bob", password="pw-bob") as bob:
        assert bob.register(300).status == 200
        uri = invite(alice, f"bob@{DOMAIN}", call_id="cancel-1")
        inv = bob.expect_request("INVITE")
        bob.respond(inv, 180, "Ringing")
        alice.expect(180)
        # CANCEL: same Via (branch) as the INVITE alice sent, as seen at the bottom of bob's copy
        alice_invite_via = inv.get_all("Via")[-1]
        alice.send(alice.request("CANCEL", uri, to=f"<{uri}>", call_id="cancel-1", cseq=2, via=alice_invite_via))
        alice.expect(200)
        bob_cancel = bob.expect_request("CANCEL")
        bob.respond(bob_cancel, 200)
        bob.respond(inv, 487, "Request Terminated")
        bob.expect_request("ACK")
        assert alice.expect(487).status == 487
        assert bob.register(0).status == 200


def test_forking_to_two_contacts(daemon):
    with UA(daemon.port, "carol", password="pw-carol") as c1, UA(daemon.port, "carol", password="pw-carol") as c2, \
         UA(daemon.port, "alice", password="pw-alice") as alice:
        assert c1.register(300).status == 200
        assert c2.register(300).status == 200
        invite(alice, f"carol@{DOMAIN}", call_id="fork-1")
        i1 = c1.expect_request("INVITE")
        i2 = c2.expect_request("INVITE")
        c1.respond(i1, 180, "Ringing", to_tag="c1")
        alice.expect(180)
        c2.respond(i2, 200, "OK", to_tag="c2", body=SDP, headers=["Content-Type: application/sdp"])
        ok = alice.expect(200)
        assert "tag=c2" in ok.get("To")
        cancel = c1.expect_request("CANCEL")
        c1.respond(cancel, 200, to_tag="c1")
        c1.respond(i1, 487, "Request Terminated", to_tag="c1")
        c1.expect_request("ACK")
        ack_and_bye(alice, c2, ok, "fork-1")
        c1.register(0)
        c2.register(0)


def test_after_the_answer_retransmissions_cancel_and_late_forks(daemon):
    """Once the 200 went upstream and every branch ended, the proxy frees the call's context
    (the request and its copies) instead of keeping it for Timer L: a retransmitted 200 still
    reaches the caller (forwarded by its Via, RFC 3261 §16.11), a second 200 from the other fork
    too, a late CANCEL gets 200 and nothing goes downstream, and the BYE still routes."""
    with UA(daemon.port, "dave", password="pw-dave") as d1, UA(daemon.port, "dave", password="pw-dave") as d2, \
         UA(daemon.port, "alice", password="pw-alice") as alice:
        assert d1.register(300).status == 200
        assert d2.register(300).status == 200
        uri = invite(alice, f"dave@{DOMAIN}", call_id="late-1")
        i1 = d1.expect_request("INVITE")
        i2 = d2.expect_request("INVITE")
        d2.respond(i2, 180, "Ringing", to_tag="d2")
        alice.expect(180)
        d1.respond(i1, 200, "OK", to_tag="d1", body=SDP, headers=["Content-Type: application/sdp"])
        ok = alice.expect(200)
        assert "tag=d1" in ok.get("To")
        cancel = d2.expect_request("CANCEL")
        d2.respond(cancel, 200, to_tag="d2")
        d2.respond(i2, 487, "Request Terminated", to_tag="d2")
        d2.expect_request("ACK")  # the 487 is the proxy's to acknowledge; it never goes upstream
        alice.nothing()
        # every branch has ended: the context is released; the 200 is retransmitted (no ACK yet)
        d1.respond(i1, 200, "OK", to_tag="d1", body=SDP, headers=["Content-Type: application/sdp"])
        again = alice.expect(200)
        assert again.get("To") == ok.get("To") and again.call_id == "late-1"
        alice_invite_via = i1.get_all("Via")[-1]
        alice.send(alice.request("CANCEL", uri, to=f"<{uri}>", call_id="late-1", cseq=2, via=alice_invite_via))
        assert alice.expect(200).get("CSeq").endswith("CANCEL")
        d1.nothing()
        d2.nothing()
        ack_and_bye(alice, d1, ok, "late-1")
        assert d1.register(0).status == 200
        assert d2.register(0).status == 200


def test_unknown_user_404_and_unregistered_480(daemon):
    with UA(daemon.port, "alice", password="pw-alice") as alice:
        invite(alice, f"nosuchuser@{DOMAIN}", call_id="404-1")
        assert alice.expect(404).status == 404
        invite(alice, f"dave@{DOMAIN}", call_id="480-1")
        assert alice.expect(480).status == 480
    log = daemon.log_text()
    assert "-> 404 (unknown user)" in log and "-> 480 (no registered contacts)" in log


def test_alias_resolves(daemon):
    with UA(daemon.port, "alice", password="pw-alice") as alice, UA(daemon.port, "bob", password="pw-bob") as bob:
        assert bob.register(300).status == 200
        invite(alice, f"1247@{DOMAIN}", call_id="alias-1")
        inv = bob.expect_request("INVITE")
        bob.respond(inv, 486, "Busy Here")
        bob.expect_request("ACK")
        assert alice.expect(486).status == 486
        assert bob.register(0).status == 200
    assert "alias sip:1247@example.test -> bob@example.test" in daemon.log_text()


def test_max_forwards_zero_483_and_no_open_relay(daemon):
    with UA(daemon.port, "x", domain="foreign.test") as ua:
        req = ua.request("INVITE", f"sip:bob@{DOMAIN}", to=f"<sip:bob@{DOMAIN}>").replace("Max-Forwards: 70", "Max-Forwards: 0")
        ua.send(req)
        assert ua.expect(483).status == 483
        ua.send(ua.request("INVITE", "sip:someone@other.test", to="<sip:someone@other.test>"))
        assert ua.expect(403).status == 403


def test_no_answer_408(daemon):
    with UA(daemon.port, "alice", password="pw-alice") as alice, UA(daemon.port, "bob", password="pw-bob") as bob:
        assert bob.register(300).status == 200
        invite(alice, f"bob@{DOMAIN}", call_id="408-1")
        inv = bob.expect_request("INVITE")
        bob.respond(inv, 180, "Ringing")
        alice.expect(180)
        cancel = bob.expect_request("CANCEL", timeout=6)
        bob.respond(cancel, 200)
        bob.respond(inv, 487, "Request Terminated")
        bob.expect_request("ACK")
        assert alice.expect(408, 487, timeout=6).status in (408, 487)
        assert bob.register(0).status == 200


def test_preloaded_route_to_us_does_not_skip_auth_or_relay_check(daemon):
    """An initial request with our own Route preloaded (outbound proxy) is an initial request:
    a local caller is still challenged, and a foreign-to-foreign request is still refused."""
    our_route = f"Route: <sip:127.0.0.1:{daemon.port};lr>"
    with UA(daemon.port, "alice", password="pw-alice") as alice, UA(daemon.port, "bob", password="pw-bob") as bob:
        assert bob.register(300).status == 200
        uri = f"sip:bob@{DOMAIN}"
        alice.send(alice.request("INVITE", uri, to=f"<{uri}>", headers=[our_route], call_id="preloaded-1", cseq=1))
        assert alice.expect(407).status == 407
        bob.nothing()
        alice.send(alice.request("MESSAGE", uri, to=f"<{uri}>", headers=[our_route, "Content-Type: text/plain"],
                                 body="hi", call_id="preloaded-2", cseq=1))
        assert alice.expect(407).status == 407
        bob.nothing()
    with UA(daemon.port, "mallory", domain="evil.example", transport="udp") as mallory:
        target = "sip:victim@elsewhere.example"
        mallory.send(mallory.request("INVITE", target, to=f"<{target}>", headers=[our_route], call_id="relay-1", cseq=1))
        assert mallory.expect(403).status == 403
