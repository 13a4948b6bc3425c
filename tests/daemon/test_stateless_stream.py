"""Over TCP and TLS as over UDP, a refused or challenged initial request keeps no server
transaction: a flood of unauthenticated INVITEs on a connection costs no memory or timers."""

from __future__ import annotations

import pytest

from tests.daemon.harness import DOMAIN, UA, live_daemon, serving
from tests.helpers.sipd_proc import SipdProcess


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    yield from serving(live_daemon(tmp_path_factory.mktemp("slstream")), {"alice": "pw-alice", "bob": "pw-bob"})


def _inuse(d: SipdProcess) -> int:
    """Server and client transactions live in the transaction layer."""
    return int(d.mi("get_statistics", [["overload:transactions"]])["overload:transactions"])


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_challenged_invites_keep_no_transaction(daemon, transport):
    before = _inuse(daemon)
    with UA(daemon.port, "alice", transport=transport) as caller:
        uri = f"sip:bob@{DOMAIN}"
        for n in range(20):
            caller.send(caller.request("INVITE", uri, to=f"<{uri}>", call_id=f"flood-{transport}-{n}", cseq=1))
            assert caller.expect(407).call_id == f"flood-{transport}-{n}"
        assert _inuse(daemon) == before  # no transaction per challenge (each would live Timer H, 32 s)


def test_authenticated_call_over_tcp_still_gets_its_transaction(daemon):
    before = _inuse(daemon)
    with UA(daemon.port, "bob", transport="tcp", password="pw-bob") as bob, \
            UA(daemon.port, "alice", transport="tcp", password="pw-alice") as alice:
        assert bob.register(300).status == 200
        uri = f"sip:bob@{DOMAIN}"
        alice.send(alice.request("INVITE", uri, to=f"<{uri}>", call_id="tcp-call", cseq=1))
        challenge = alice.expect(407)
        alice.send(alice.request("ACK", uri, to=challenge.get("To"), call_id="tcp-call", cseq=1,
                                 via=challenge.get("Via")))
        auth = alice.authorization(challenge, "INVITE", uri, proxy=True)
        alice.send(alice.request("INVITE", uri, to=f"<{uri}>", call_id="tcp-call", cseq=2, headers=[auth]))
        inv = bob.expect_request("INVITE")
        assert _inuse(daemon) > before  # the forwarded INVITE keeps its transaction
        bob.respond(inv, 486, "Busy Here")
        assert alice.expect(486).status == 486
