"""The Python routing hook against a live sipd: the report's spam rule as a hook, a broken
hook (500 + one log line, the daemon keeps serving), reload by MI and by SIGHUP.

Raw-socket user agents (tests/daemon/harness.py); one daemon for the module.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.daemon.harness import DOMAIN, UA, add_subscriber, live_daemon
from tests.helpers.sipd_proc import SipdProcess

REPO = Path(__file__).resolve().parents[2]
SPAM_RULE = REPO / "examples" / "hooks" / "spam_rule.py"

BROKEN_AND_RELOADABLE = '''
def route(request):
    if request.ruri_user == "boom":
        raise RuntimeError("hook bug")
    if request.ruri_user == "moved":
        request.reply(488, "Not Acceptable Here")
'''


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hook")
    hook = tmp / "hook.py"
    shutil.copyfile(SPAM_RULE, hook)
    d = live_daemon(tmp, {"routing": {"hook": str(hook)}, "spam": {"enabled": False},
                     "proxy": {"invite_timeout": 3.0}})
    d.hook = hook
    for user in ("alice", "bob"):
        add_subscriber(d.db_url, user, "pw-" + user)
    d.start()
    yield d
    assert d.running(), d.log_text()
    assert d.stop() == 0


def mi(daemon: SipdProcess, method: str):
    from sipd import config
    from sipd.mgmt.client import call

    conf, _problems = config.check(daemon.config_path, validators=())  # the hook file may be broken on purpose
    return call(conf, method, [], 5)


def wait_log(daemon: SipdProcess, text: str, timeout: float = 3.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = daemon.log_text()
        if text in log:
            return log
        time.sleep(0.02)
    raise AssertionError(f"{text!r} not logged:\n{daemon.log_text()[-3000:]}")


def spam_invite(ua: UA, port: int, user: str = "0046812345678") -> str:
    uri = f"sip:{user}@127.0.0.1:{port}"
    return ua.request("INVITE", uri, to=f"<{uri}>", body="v=0\r\n", headers=["Content-Type: application/sdp"])


def test_spam_rule_drops_spam_invite_and_lets_regular_call_through(daemon):
    with UA(daemon.port, "scanner", domain="203.0.113.9") as scanner:
        scanner.send(spam_invite(scanner, daemon.port))
        scanner.nothing(0.5)  # dropped: no 100, no 403
    wait_log(daemon, "Dropped Spam-Call to sip:0046812345678@127.0.0.1")
    with UA(daemon.port, "alice", password="pw-alice") as alice, UA(daemon.port, "bob", password="pw-bob") as bob:
        assert bob.register(300).status == 200
        uri = f"sip:bob@{DOMAIN}"
        alice.send(alice.request("INVITE", uri, to=f"<{uri}>", cseq=1, call_id="hook-regular"))
        resp = alice.expect(407)
        auth = alice.authorization(resp, "INVITE", uri, proxy=True)
        alice.send(alice.request("INVITE", uri, to=f"<{uri}>", headers=[auth], cseq=2, call_id="hook-regular"))
        inv = bob.expect_request("INVITE")
        assert inv.call_id == "hook-regular"
        bob.respond(inv, 486, "Busy Here")
        bob.expect_request("ACK")  # the proxy's hop-by-hop ACK for the 486
        assert alice.expect(486).status == 486
        assert bob.register(0).status == 200


def test_broken_hook_500_logged_once_then_reload(daemon):
    daemon.hook.write_text(BROKEN_AND_RELOADABLE)
    assert mi(daemon, "hook_reload")["loads"] >= 2
    with UA(daemon.port, "alice", password="pw-alice") as alice:
        for i in range(3):
            uri = f"sip:boom@{DOMAIN}"
            alice.send(alice.request("INVITE", uri, to=f"<{uri}>", call_id=f"boom-{i}", cseq=1))
            assert alice.expect(500).status == 500
        log = wait_log(daemon, "RuntimeError: hook bug")
        assert log.count("RuntimeError: hook bug") == 1  # traceback at most once per minute
        assert "routing hook" in log and "failed on INVITE sip:boom@" in log
        assert mi(daemon, "hook_status")["errors"] >= 3
        # the daemon keeps serving: OPTIONS to the server, and the hook's other rule works
        alice.send(alice.request("OPTIONS", f"sip:127.0.0.1:{daemon.port}", to=f"<sip:127.0.0.1:{daemon.port}>"))
        assert alice.expect(200).status == 200
        uri = f"sip:moved@{DOMAIN}"
        alice.send(alice.request("INVITE", uri, to=f"<{uri}>", call_id="moved-1", cseq=1))
        assert alice.expect(488).status == 488


def test_reload_by_sighup_and_broken_file_keeps_old_hook(daemon):
    daemon.hook.write_text("def route(request):\n    if request.ruri_user == 'moved':\n        request.reply(410, 'Gone')\n")
    before = daemon.log_text().count("reloaded (load #")
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 3
    while daemon.log_text().count("reloaded (load #") == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert daemon.log_text().count("reloaded (load #") == before + 1, daemon.log_text()[-2000:]
    with UA(daemon.port, "alice", password="pw-alice") as alice:
        uri = f"sip:moved@{DOMAIN}"
        alice.send(alice.request("INVITE", uri, to=f"<{uri}>", call_id="moved-2", cseq=1))
        assert alice.expect(410).status == 410
        daemon.hook.write_text("def route(request:\n")  # syntax error
        from sipd.mgmt.protocol import RpcError

        with pytest.raises(RpcError, match="previous one stays active"):
            mi(daemon, "hook_reload")
        alice.send(alice.request("INVITE", uri, to=f"<{uri}>", call_id="moved-3", cseq=1))
        assert alice.expect(410).status == 410
