"""Failure diversion to a URI in a local domain (``sip:carol@example.test``) is routed locally:
to carol's registrations, never through DNS (our own domain may have no SRV/A records). When carol
has none, the call is not diverted: the caller, and the CDR, get the callee's own 486."""

from __future__ import annotations

from tests.daemon.harness import DOMAIN, UA, add_subscriber
from tests.e2e.test_acc import invite, make_daemon, running, wait_rows


def daemon(tmp_path):
    d = make_daemon(tmp_path, diversion={"uri": f"sip:carol@{DOMAIN}", "no_answer_timeout": 30.0})
    add_subscriber(d.db_url, "carol", "pw-carol")
    return d


def busy(alice: UA, bob: UA, call_id: str) -> str:
    uri = invite(alice, "bob", call_id)
    inv = bob.expect_request("INVITE", timeout=5)
    bob.respond(inv, 486, "Busy Here")
    bob.expect_request("ACK")
    return uri


def test_diversion_to_a_registered_local_user_reaches_its_phone(tmp_path):
    d = daemon(tmp_path)
    with running(d), UA(d.port, "alice", password="pw-alice") as alice, \
            UA(d.port, "bob", password="pw-bob") as bob, UA(d.port, "carol", password="pw-carol") as carol:
        assert bob.register(300).status == 200 and carol.register(300).status == 200
        busy(alice, bob, "divert-local-1")
        inv = carol.expect_request("INVITE", timeout=5)
        assert inv.uri_text.startswith(f"sip:carol@127.0.0.1:{carol.port}")
        assert inv.get("Diversion") == f"<sip:bob@{DOMAIN}>;reason=user-busy;counter=1"
        carol.respond(inv, 486, "Busy Here", to_tag="carol1")
        carol.expect_request("ACK")
        assert alice.expect(486, timeout=5).status == 486
    assert "DNS" not in d.log_text()


def test_diversion_to_an_unregistered_local_user_keeps_the_callees_486(tmp_path):
    d = daemon(tmp_path)
    with running(d), UA(d.port, "alice", password="pw-alice") as alice, UA(d.port, "bob", password="pw-bob") as bob:
        assert bob.register(300).status == 200
        uri = busy(alice, bob, "divert-local-2")
        final = alice.expect(486, 404, 480, timeout=8)
        alice.send(alice.request("ACK", uri, to=final.get("To"), call_id="divert-local-2", cseq=2, via=final.get("Via")))
        assert final.status == 486
        cdr = wait_rows(d.db_url, "SELECT * FROM cdrs WHERE callid = ?", ("divert-local-2",), 1)
    assert cdr[0]["sip_code"] == "486", cdr
    assert f"not diverted: sip:carol@{DOMAIN} has no registered contact" in d.log_text()
