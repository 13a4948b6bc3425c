"""Is this URI us, and whose user is it? A live sipd that serves its own IP address as a domain
(the field report's set-up: ``domains = ["example.test", "127.0.0.1"]``, single-domain mode).

- In-dialog requests carry the callee's Contact as Request-URI (``sip:bob@127.0.0.1:PORT``): that is
  the phone, not the AOR ``bob@127.0.0.1``; it must reach the phone (baresip's ACK and BYE).
- A REGISTER to ``alice@127.0.0.1`` authenticates with the password stored for alice@example.test:
  one realm, users looked up by name alone (OpenSIPS ``use_domain=0``).
"""

from __future__ import annotations

import pytest

from tests.daemon.harness import DOMAIN, UA, add_subscriber, live_daemon, serving

from .test_proxy import SDP, ack_and_bye, invite


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local-uris")
    # the spam rule (calls to user@<our IP> dropped) is off: these calls are what it would drop
    d = live_daemon(tmp, {"server": {"domains": [DOMAIN, "127.0.0.1"], "multidomain": False},
                     "proxy": {"invite_timeout": 5.0}, "spam": {"enabled": False}})
    yield from serving(d, {"alice": "pw-alice", "bob": "pw-bob"})


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_ack_and_bye_to_a_contact_on_our_address_reach_the_phone(daemon, transport):
    with UA(daemon.port, "alice", password="pw-alice", transport=transport) as alice, \
         UA(daemon.port, "bob", password="pw-bob", transport=transport) as bob:
        assert bob.register(300).status == 200
        call_id = f"contact-on-our-ip-{transport}"
        invite(alice, f"bob@{DOMAIN}", call_id=call_id)
        inv = bob.expect_request("INVITE", timeout=5)
        bob.respond(inv, 200, "OK", body=SDP, headers=["Content-Type: application/sdp"])
        ok = alice.expect(200, timeout=5)
        # the R-URI of ACK and BYE is bob's Contact: our own IP address, bob's port
        assert ok.contacts[0].uri.host == "127.0.0.1" and ok.contacts[0].uri.port == bob.port
        ack_and_bye(alice, bob, ok, call_id)
        assert bob.register(0).status == 200


def test_a_call_to_our_address_on_our_port_is_a_call_to_the_user(daemon):
    with UA(daemon.port, "alice", password="pw-alice") as alice, UA(daemon.port, "bob", password="pw-bob") as bob:
        assert bob.register(300).status == 200
        invite(alice, f"bob@127.0.0.1:{daemon.port}", call_id="to-our-ip")
        inv = bob.expect_request("INVITE", timeout=5)
        assert inv.uri_text.startswith(f"sip:bob@127.0.0.1:{bob.port}")
        bob.respond(inv, 486, "Busy Here")
        bob.expect_request("ACK")
        assert alice.expect(486, timeout=5).status == 486
        assert bob.register(0).status == 200


def test_register_to_our_ip_address_authenticates_in_the_one_realm(daemon):
    with UA(daemon.port, "alice", password="pw-alice", domain="127.0.0.1") as alice_ip, \
         UA(daemon.port, "bob", password="pw-bob") as bob:
        alice_ip.send(alice_ip.request("REGISTER", "sip:127.0.0.1", headers=["Expires: 300"]))
        challenge = alice_ip.expect(401)
        assert 'realm="example.test"' in challenge.get("WWW-Authenticate")
        assert alice_ip.register(300).status == 200  # HA1 stored for alice@example.test
        assert alice_ip.register(300, password="wrong").status == 401
        # one user space: a call to alice@example.test reaches the phone registered as alice@127.0.0.1
        invite(bob, f"alice@{DOMAIN}", call_id="name-to-ip")
        inv = alice_ip.expect_request("INVITE", timeout=5)
        alice_ip.respond(inv, 486, "Busy Here")
        alice_ip.expect_request("ACK")
        assert bob.expect(486, timeout=5).status == 486
        assert alice_ip.register(0).status == 200


def test_multidomain_keeps_one_realm_per_domain(tmp_path):
    d = live_daemon(tmp_path, {"server": {"domains": [DOMAIN, "127.0.0.1"], "multidomain": True}})
    add_subscriber(d.db_url, "alice", "pw-alice")
    with d, UA(d.port, "alice", password="pw-alice", domain="127.0.0.1") as alice_ip:
        alice_ip.send(alice_ip.request("REGISTER", "sip:127.0.0.1", headers=["Expires: 300"]))
        assert 'realm="127.0.0.1"' in alice_ip.expect(401).get("WWW-Authenticate")
        assert alice_ip.register(300).status == 401  # alice@127.0.0.1 is another (unknown) user
    assert "Traceback" not in d.log_text()
