"""Hot-path behaviour kept for speed: REGISTER over UDP answered statelessly with a reply
cache for retransmissions, symmetric replies, coalesced transaction timers; and the ReplyCache itself."""

from __future__ import annotations

from typing import Any

import pytest

from sipd.sip.stateless import ReplyCache
from tests.daemon.harness import DOMAIN, UA, add_subscriber, live_daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hot")
    d = live_daemon(tmp)
    add_subscriber(d.db_url, "carol", "pw-carol")
    d.start()
    yield d
    assert d.running(), d.log_text()
    assert d.stop() == 0
    assert "Traceback" not in d.log_text(), d.log_text()


def _auth_register(ua: UA, expires: int = 300) -> tuple[str, Any]:
    uri = f"sip:{DOMAIN}"
    ua.send(ua.request("REGISTER", uri, headers=[f"Expires: {expires}"]))
    challenge = ua.expect(401)
    req = ua.request("REGISTER", uri, headers=[f"Expires: {expires}", ua.authorization(challenge, "REGISTER", uri)])
    ua.send(req)
    return req, ua.expect(200)


def test_retransmitted_register_gets_the_same_answer(daemon):
    """The retransmission is not processed again (the nonce count would call it a replay): the
    cached 200, byte for byte, comes back."""
    with UA(daemon.port, "carol", password="pw-carol") as ua:
        req, first = _auth_register(ua)
        ua.send(req)
        again = ua.expect(200)
        assert again.get("To") == first.get("To")  # same To tag: the same reply, not a new one
        assert again.get_all("Contact") == first.get_all("Contact")
        ua.nothing()
        ua.send(ua.request("REGISTER", f"sip:{DOMAIN}", headers=["Expires: 0"]))  # a new request is processed
        ua.expect(401)


def test_retransmitted_challenge_is_the_same_challenge(daemon):
    with UA(daemon.port, "carol", password="pw-carol") as ua:
        req = ua.request("REGISTER", f"sip:{DOMAIN}", headers=["Expires: 60"])
        ua.send(req)
        first = ua.expect(401)
        ua.send(req)
        assert ua.expect(401).get("WWW-Authenticate") == first.get("WWW-Authenticate")


def test_register_reply_goes_to_the_source_not_the_via(daemon):
    """Behind a NAT the Via names a private address: the stateless reply still goes back to the
    address and port the REGISTER came from (RFC 3581), like a server transaction's would."""
    with UA(daemon.port, "carol", password="pw-carol") as ua:
        via = f"SIP/2.0/UDP 10.9.8.7:5060;branch=z9hG4bKnat{ua.port};rport"
        ua.send(ua.request("REGISTER", f"sip:{DOMAIN}", headers=["Expires: 60"], via=via))
        assert ua.expect(401).status == 401


def test_unparsable_register_still_answered_400(daemon):
    with UA(daemon.port, "carol") as ua:
        bad = ua.request("REGISTER", f"sip:{DOMAIN}", headers=["Expires: 60"]).replace("CSeq: ", "CSeq: x")
        ua.send(bad)
        ua.sock.settimeout(3.0)
        data, _ = ua.sock.recvfrom(65535)
        assert data.startswith(b"SIP/2.0 400 "), data[:80]


def test_register_over_tcp_unchanged(daemon):
    with UA(daemon.port, "carol", transport="tcp", password="pw-carol") as ua:
        assert ua.register(60).status == 200
        assert ua.register(0).status == 200


def test_reply_cache_expires_and_is_bounded():
    cache = ReplyCache(ttl=32.0, size=3)
    cache.put("a", b"", 0.0)
    cache.put("a", b"200", 0.1)  # the final reply replaces the in-progress marker
    assert cache.get("a") == b"200"
    for k in "bcd":
        cache.put(k, b"x", 1.0)
    assert cache.get("a") is None and len(cache) == 3  # oldest dropped at the size bound
    cache.put("e", b"x", 40.0)  # everything from t=1 expired at t=33
    assert len(cache) == 1 and cache.get("e") == b"x"
