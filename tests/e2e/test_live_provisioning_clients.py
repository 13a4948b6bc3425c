"""Real clients see sipctl changes on a running sipd at once: baresip registers to a domain and
user added a moment ago, and reaches a colleague through an alias added while both are online."""

from __future__ import annotations


def test_baresip_registers_to_a_domain_added_while_sipd_runs(server_factory, baresip_factory):
    server = server_factory({"antiflood": {"enabled": False}})
    assert "sipd reloaded domains" in server.sipctl("domain", "add", "late.test").stdout
    # single-domain mode (the default): a user of the realm answers at every local domain
    assert "sipd reloaded subscribers" in server.sipctl("user", "add", "erin@example.test", "erinpw").stdout
    erin = baresip_factory("erin", "erinpw", server=server, domain="late.test")
    assert erin.wait_registered(10) == "OK", erin.last_reginfo + "\n" + server.log_tail()


def test_baresip_call_by_alias_added_while_online(server_factory, baresip_factory):
    server = server_factory({"antiflood": {"enabled": False}})
    bob = baresip_factory("bob", server=server, answer="manual")
    alice = baresip_factory("alice", server=server)
    for ua in (alice, bob):
        assert ua.wait_registered(10) == "OK", f"{ua.user}: {ua.last_reginfo}"
    out = server.sipctl("alias", "add", "1247@example.test", "bob@example.test").stdout
    assert "sipd reloaded aliases" in out
    alice.dial("sip:1247@example.test")
    ev = bob.wait_event({"CALL_INCOMING"}, 10)
    assert ev is not None, server.log_tail()
    assert "alias sip:1247@example.test -> bob@example.test" in server.log_text()
    alice.hangup()
    assert alice.wait_event({"CALL_CLOSED"}, 10)
