"""linphone-daemon (liblinphone 5.1) as a real client of sipd: digest MD5 and SHA-256, and a call
with RTP between linphone and baresip through sipd.

What liblinphone 5.1 does with several WWW-Authenticate headers (found with these tests): it answers
the *first* challenge it can, so ``algorithms = ["SHA-256", "MD5"]`` gets a SHA-256 answer and
``["MD5", "SHA-256"]`` an MD5 one -- unless the account's auth_info pins ``algorithm=SHA-256``, then
it picks the SHA-256 challenge wherever it is. A pinned algorithm that is not offered fails.
The algorithm actually used is read from the Authorization header in linphone's own log.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from conftest import missing
from helpers.linphone import ENDED, RUNNING, LinphoneUA, linphone_binary, tone_wav

pytestmark = pytest.mark.e2e

DOMAIN = "example.test"


@pytest.fixture
def linphone_factory(tmp_path: Path):
    if not linphone_binary():
        missing("linphone-daemon not installed (Debian package linphone-cli)")
    uas: list[LinphoneUA] = []

    def make(user: str, password: str, *, server, **kw) -> LinphoneUA:
        ua = LinphoneUA(tmp_path, user, password, proxy=server.address, domain=DOMAIN, **kw)
        uas.append(ua)
        return ua.start()

    yield make
    for ua in uas:
        ua.stop()


def answered_algorithms(ua: LinphoneUA) -> list[str]:
    """The algorithm of every Authorization / Proxy-Authorization linphone sent (its log dumps them)."""
    return re.findall(r"^(?:Proxy-)?Authorization:\s+Digest .*?algorithm=([\w-]+)", ua.log_text(), re.M)


def registered(server, user: str) -> bool:
    out = server.sipctl("ul", "show", "--json", check=False).stdout
    return f"{user}@{DOMAIN}" in out


@pytest.mark.parametrize(("offered", "pinned", "used"), [
    (["SHA-256"], None, "SHA-256"),
    (["SHA-256", "MD5"], None, "SHA-256"),
    (["MD5", "SHA-256"], "SHA-256", "SHA-256"),
    (["MD5"], None, "MD5"),
    (["MD5", "SHA-256"], None, "MD5"),
], ids=["sha256-only", "sha256-first", "md5-first-pinned-sha256", "md5-only", "md5-first"])
def test_linphone_registers(server_factory, linphone_factory, offered, pinned, used):
    server = server_factory({"auth": {"algorithms": offered}})
    ua = linphone_factory("alice", "alicepw", server=server, algorithm=pinned)
    assert ua.wait_registered(10) == "OK", ua.last_status + ua.log_tail() + server.log_tail()
    assert answered_algorithms(ua) == [used], answered_algorithms(ua)
    assert registered(server, "alice")


def test_linphone_wrong_password_and_unoffered_algorithm_fail(server_factory, linphone_factory):
    server = server_factory({"auth": {"algorithms": ["SHA-256"]}})
    wrong = linphone_factory("alice", "not-alicepw", server=server)
    pinned_md5 = linphone_factory("bob", "bobpw", server=server, algorithm="MD5")
    assert wrong.wait_registered(10) == "ERR", wrong.last_status
    assert pinned_md5.wait_registered(10) == "ERR", pinned_md5.last_status
    assert answered_algorithms(pinned_md5) == []  # liblinphone never answers an unoffered algorithm
    assert re.search(r"auth failed: user=alice realm=example\.test source=127\.0\.0\.1:\d+ reason=wrong_password",
                     server.log_text())
    assert not registered(server, "alice") and not registered(server, "bob")


def test_baresip_refuses_a_challenge_list_holding_sha256(server_factory, baresip_factory, linphone_factory):
    """Why MD5 stays the default: baresip 1.0 (libre) fails the whole registration ("Function not
    implemented") as soon as any WWW-Authenticate names SHA-256, even behind an MD5 one, while
    linphone registers on the same server."""
    server = server_factory({"auth": {"algorithms": ["MD5", "SHA-256"]}})
    bob = baresip_factory("bob", "bobpw", server=server)
    alice = linphone_factory("alice", "alicepw", server=server, algorithm="SHA-256")
    assert bob.wait_registered(10) == "ERR", bob.log_text()[-2000:]
    assert "Function not implemented" in bob.log_text()
    assert alice.wait_registered(10) == "OK", alice.last_status


def _hold(ua: LinphoneUA, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert ua.call_state() in RUNNING
        time.sleep(0.25)


def test_calls_between_linphone_and_baresip_through_sipd(server_factory, linphone_factory, baresip_factory,
                                                        tmp_path):
    """linphone calls baresip, then baresip calls linphone, through sipd (INVITE challenged with 407,
    record-routed BYE); RTP flows both ways in each call."""
    server = server_factory()
    bob = baresip_factory("bob", "bobpw", server=server)
    alice = linphone_factory("alice", "alicepw", server=server, auto_answer=True)
    assert bob.wait_registered(10) == "OK", bob.log_text()[-2000:]
    assert alice.wait_registered(10) == "OK", alice.last_status
    tone = tone_wav(tmp_path)

    # linphone -> baresip, linphone hangs up
    alice.call(f"sip:bob@{DOMAIN}")
    state = alice.wait_call_state(RUNNING | ENDED, 10)
    assert state in RUNNING, state + alice.log_tail()
    assert bob.wait_event({"CALL_ESTABLISHED"}, 5), bob.log_text()[-2000:]
    assert alice.play(tone)
    _hold(alice, 1.5)
    assert alice.terminate()
    assert bob.wait_event({"CALL_CLOSED"}, 5)
    assert alice.wait_call_state({""}, 5) == ""
    lp = _wait_rtp(alice)
    assert lp and min(lp) > 10, lp
    bs = _wait_baresip_rtp(bob)
    assert bs and min(bs) > 10, bs
    assert "Proxy-Authorization" in alice.log_text()  # the INVITE was challenged and answered

    # baresip -> linphone (auto-answer), baresip hangs up
    bob.dial(f"sip:alice@{DOMAIN}")
    assert bob.wait_event({"CALL_ESTABLISHED", "CALL_CLOSED"}, 10)["type"] == "CALL_ESTABLISHED", bob.log_text()[-2000:]
    assert alice.wait_call_state(RUNNING, 5) in RUNNING
    assert alice.play(tone)
    _hold(alice, 1.5)
    bob.hangup()
    assert bob.wait_event({"CALL_CLOSED"}, 5)
    assert alice.wait_call_state({""}, 5) == ""
    lp2 = _wait_rtp(alice, after=lp)
    assert lp2 and min(lp2) > 10, lp2


def test_call_between_linphones_with_sha256_only(server_factory, linphone_factory, tmp_path):
    """SHA-256 end to end: REGISTER (401) and INVITE (407) answered with SHA-256, caller on UDP,
    callee on TCP; RTP both ways."""
    server = server_factory({"auth": {"algorithms": ["SHA-256"]}})
    alice = linphone_factory("alice", "alicepw", server=server)
    carol = linphone_factory("carol", "carolpw", server=server, transport="tcp", auto_answer=True)
    assert alice.wait_registered(10) == "OK", alice.last_status
    assert carol.wait_registered(10) == "OK", carol.last_status
    tone = tone_wav(tmp_path)
    alice.call(f"sip:carol@{DOMAIN}")
    state = alice.wait_call_state(RUNNING | ENDED, 10)
    assert state in RUNNING, state + alice.log_tail()
    assert carol.wait_call_state(RUNNING, 5) in RUNNING
    assert alice.play(tone) and carol.play(tone)
    _hold(alice, 1.5)
    assert alice.terminate()
    assert carol.wait_call_state({""}, 5) == ""
    # REGISTER and INVITE; linphone also copies credentials into the ACK and BYE (nc=2)
    assert set(answered_algorithms(alice)) == {"SHA-256"} and len(answered_algorithms(alice)) >= 2
    assert answered_algorithms(carol) == ["SHA-256"]
    for ua in (alice, carol):
        counts = _wait_rtp(ua)
        assert counts and min(counts) > 10, (ua.user, counts)


def _wait_rtp(ua: LinphoneUA, after=None, timeout: float = 3.0):
    """oRTP prints the session statistics when the call's streams stop (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = ua.rtp_packets()
        if (counts and counts != after) or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


def _wait_baresip_rtp(ua, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while True:
        counts = ua.rtp_packets()
        if counts or time.monotonic() > deadline:
            return counts
        ua.pump(0.1)
