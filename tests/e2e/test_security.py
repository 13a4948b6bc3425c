"""Security against a live sipd on loopback: spam calls to our IP, scanners (SIPVicious),
password guessing, floods (sipsak), legitimate traffic during a flood.

SIPVicious always binds to loopback (-b 127.0.0.1 -P <free port>); -R is never passed.
Loopback is trusted by default ([antiflood] trusted_networks), so these tests set it to [] to be
attacked like the Internet would.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port, require_tool

from .security_ua import UA, parse, ping

pytestmark = pytest.mark.e2e

DOMAIN = "example.test"
USERS = [("vcc-c40@example.test", "roompw-40"), ("alice@example.test", "alicepw"), ("bob@example.test", "bobpw")]
UNTRUSTED = {"antiflood": {"trusted_networks": []}}
NO_SCANNER_FILTER = {"spam": {"scanner_user_agents": []}}


def _merge(*dicts: dict) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out.setdefault(k, {}).update(v)
    return out


@pytest.fixture
def sipd(server_factory):
    def make(*overrides: dict, **kw):
        return server_factory(_merge(UNTRUSTED, *overrides), domains=[DOMAIN], users=USERS, **kw)
    return make


def _run(argv: list[str], timeout: float = 60) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return res.stdout + res.stderr


def _wait_log(proc, pattern: str, timeout: float = 3.0) -> re.Match | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, proc.log_text())
        if m:
            return m
        time.sleep(0.05)
    return None


def _bans(proc) -> list[dict]:
    return json.loads(proc.sipctl("ban", "list", "--json").stdout)


# -- spam: calls to user@<our IP> ------------------------------------------------------------

def test_call_to_our_ip_is_dropped_and_logged_while_domain_call_rings(sipd):
    proc = sipd()
    server = ("127.0.0.1", proc.udp_port)
    with UA(server) as room, UA(server, host="127.0.0.2") as caller:
        reg = room.register("vcc-c40", "roompw-40", DOMAIN)
        assert reg is not None and reg.status == 200, reg
        # spam: digits/name @ our IP address -> nothing at all comes back, the room never rings
        assert caller.invite(f"sip:vcc-c40@127.0.0.1:{proc.udp_port}", timeout=1.5) is None
        assert room.answer_incoming(0.3) is None
        line = _wait_log(proc, r"Dropped Spam-Call to (\S+) from (\S+)")
        assert line, proc.log_tail()
        assert line.group(1) == f"sip:vcc-c40@127.0.0.1:{proc.udp_port}"
        assert line.group(2) == f"127.0.0.2:{caller.port}"
        # the same room called by name@domain rings (it answers busy, the caller sees that)
        data, branch = caller._request("INVITE", f"sip:vcc-c40@{DOMAIN}", "sip:caller@outside.example",
                                       f"sip:vcc-c40@{DOMAIN}", call_id="ring-1")
        caller.send(data)
        assert room.answer_incoming(5.0) is not None, proc.log_tail()
        final = caller.transaction(data, branch, 5.0)  # a retransmission: the proxy repeats the final answer
        assert final is not None and final.status == 486, final
    assert "Traceback" not in proc.log_text()


def test_spam_answer_is_configurable(sipd):
    proc = sipd({"spam": {"action": "403"}})
    with UA(("127.0.0.1", proc.udp_port)) as caller:
        reply = caller.invite(f"sip:0049301234@127.0.0.1:{proc.udp_port}")
        assert reply is not None and reply.status == 403


# -- scanners ---------------------------------------------------------------------------------

def test_scanner_user_agent_and_svmap_get_no_answer(sipd):
    proc = sipd()
    server = ("127.0.0.1", proc.udp_port)
    with UA(server, user_agent="friendly-scanner") as scanner, UA(server, host="127.0.0.3") as phone:
        data, branch = scanner._request("OPTIONS", f"sip:100@127.0.0.1:{proc.udp_port}", "sip:100@x", "sip:100@x")
        assert scanner.transaction(data, branch, 1.0) is None
        data, branch = phone._request("OPTIONS", f"sip:127.0.0.1:{proc.udp_port}", "sip:p@x", "sip:p@x")
        assert phone.transaction(data, branch, 2.0) is not None
    # svmap (User-Agent friendly-scanner) finds nothing
    out = _svmap(proc)
    assert "127.0.0.1:%d" % proc.udp_port not in out, out


def _svmap(proc) -> str:
    tool = require_tool("svmap")
    return _run([tool, "-b", "127.0.0.1", "-P", str(free_port()), "-p", str(proc.udp_port), "127.0.0.1"])


def test_svmap_sees_only_what_we_choose_to_show(sipd):
    proc = sipd(NO_SCANNER_FILTER)
    out = _svmap(proc)
    assert f"127.0.0.1:{proc.udp_port}" in out, out
    assert "sipd" not in out.lower()  # no Server/User-Agent by default
    proc.stop()
    proc.config["server"]["server_header"] = "VideoCore"
    proc.write_config()
    proc.start()
    out = _svmap(proc)
    assert "VideoCore" in out, out


def _svwar(proc, names: list[str], tmp_path: Path) -> str:
    tool = require_tool("svwar")
    d = tmp_path / "ext.txt"
    d.write_text("\n".join(names) + "\n")
    return _run([tool, "-b", "127.0.0.1", "-P", str(free_port()), "-p", str(proc.udp_port), "-d", str(d),
                 "--domain", DOMAIN, "--maximumtime", "3", "127.0.0.1"])


@pytest.mark.parametrize("scanner_filter", [True, False], ids=["ua-filter", "no-ua-filter"])
def test_svwar_reports_no_registered_user(sipd, tmp_path, scanner_filter):
    proc = sipd({} if scanner_filter else NO_SCANNER_FILTER)
    with UA(("127.0.0.1", proc.udp_port), host="127.0.0.4") as room:
        assert room.register("vcc-c40", "roompw-40", DOMAIN).status == 200
    names = ["100", "vcc-c40", "alice", "bob", "admin", "1000", "nobody", "test"]
    out = _svwar(proc, names, tmp_path)
    for user in ("vcc-c40", "alice", "bob"):
        assert not re.search(rf"\|\s*{re.escape(user)}\s*\|", out), out
        assert f"'{user}' exists" not in out, out


def test_unknown_user_and_wrong_password_get_identical_answers(sipd):
    proc = sipd({"antiflood": {"auth_fail_threshold": 0}})
    server = ("127.0.0.1", proc.udp_port)

    def shape(user: str, pw: str) -> tuple:
        with UA(server) as ua:
            r = ua.register(user, pw, DOMAIN)
        assert r is not None
        first, headers = parse(r.raw)
        challenge = r.header("www-authenticate") or ""
        params = sorted(k for k in re.findall(r"(\w+)=", challenge) if k != "nonce")
        return first, sorted(h for h in headers if h not in ("content-length",)), params

    assert shape("alice", "wrong") == shape("nosuchuser", "wrong")


def test_svcrack_is_banned_after_a_few_guesses_and_never_finds_the_password(sipd, tmp_path):
    threshold = 5
    proc = sipd(NO_SCANNER_FILTER, {"antiflood": {"auth_fail_threshold": threshold}})
    tool = require_tool("svcrack")
    words = [f"guess{i}" for i in range(40)] + ["alicepw"] + [f"later{i}" for i in range(10)]
    d = tmp_path / "pw.txt"
    d.write_text("\n".join(words) + "\n")
    crack = subprocess.Popen([tool, "-b", "127.0.0.1", "-P", str(free_port()), "-p", str(proc.udp_port),
                              "-u", "alice", "-d", str(d), "--domain", DOMAIN, "--maximumtime", "3", "127.0.0.1"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        banned = _wait_log(proc, r"banned 127\.0\.0\.1 for \d+s: reason=auth", timeout=20)
        try:  # svcrack would stop at once if it cracked the password; banned, it keeps waiting (10 s socket timeout)
            crack.wait(timeout=4)
        except subprocess.TimeoutExpired:
            pass
    finally:
        if crack.poll() is None:
            crack.kill()
        out = crack.communicate(timeout=10)[0]
    assert banned, proc.log_tail()
    assert "alicepw" not in out, out
    failures = proc.log_text().count("auth failed: user=alice")
    assert 1 <= failures <= threshold, failures
    bans = _bans(proc)
    assert any(b["ip"] == "127.0.0.1" and b["reason"] == "auth" for b in bans), bans
    # the operator lifts the ban
    proc.sipctl("ban", "rm", "127.0.0.1")
    assert ping(("127.0.0.1", proc.udp_port), "127.0.0.1") == 200


# -- floods and garbage (sipsak) ----------------------------------------------------------------

@pytest.fixture
def sipd_low(sipd):
    """sipsak needs a port below 10000."""
    def make(*overrides):
        return sipd(*overrides, below=10000)
    return make


def test_sipsak_flood_is_banned_and_daemon_stays_up(sipd_low):
    sipsak = require_tool("sipsak")
    proc = sipd_low({"antiflood": {"limit": 200, "window": 2.0}})
    out = _run([sipsak, "-F", "-e", "5000", "-s", f"sip:127.0.0.1:{proc.udp_port}"], timeout=60)
    assert proc.running(), out
    assert _wait_log(proc, r"banned 127\.0\.0\.1 for \d+s: reason=flood"), proc.log_tail()
    assert ping(("127.0.0.1", proc.udp_port), "127.0.0.5") == 200, "another source is still served"


def test_sipsak_random_corruption_leaves_daemon_up(sipd_low):
    sipsak = require_tool("sipsak")
    proc = sipd_low()
    try:
        subprocess.run([sipsak, "-R", "-t", "20", "-s", f"sip:127.0.0.1:{proc.udp_port}"],
                       capture_output=True, timeout=4, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pass  # sipsak -R runs until the server stops answering: ours does not
    assert proc.running()
    assert ping(("127.0.0.1", proc.udp_port), "127.0.0.6") == 200


# -- a flood from one source does not hurt another ------------------------------------------------

FLOODER = r"""
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.2", 0)); s.setblocking(False)
lp = s.getsockname()[1]
msgs = [("OPTIONS sip:%s:%d SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:%d;branch=z9hG4bKf%d\r\nMax-Forwards: 70\r\n"
         "From: <sip:f@127.0.0.2>;tag=%d\r\nTo: <sip:x@%s>\r\nCall-ID: fl%d\r\nCSeq: 1 OPTIONS\r\n"
         "Content-Length: 0\r\n\r\n" % (host, port, lp, i, i, host, i)).encode() for i in range(1024)]
sent, end, i = 0, time.monotonic() + seconds, 0
while time.monotonic() < end:
    for _ in range(256):
        try:
            s.sendto(msgs[i & 1023], (host, port)); sent += 1
        except BlockingIOError:
            pass
        i += 1
print(sent)
"""


def test_registers_from_another_source_succeed_during_flood(sipd):
    proc = sipd()
    flood = subprocess.Popen([sys.executable, "-c", FLOODER, "127.0.0.1", str(proc.udp_port), "6"],
                             stdout=subprocess.PIPE, text=True)
    try:
        ok = total = 0
        with UA(("127.0.0.1", proc.udp_port), host="127.0.0.3") as phone:
            start = time.monotonic()
            deadline = start + 5
            while time.monotonic() < deadline and total < 300:
                time.sleep(max(0.0, start + total / 20 - time.monotonic()))  # 20/s: a busy NAT, not a flood
                r = phone.register("alice", "alicepw", DOMAIN, timeout=2.0)
                total += 1
                ok += r is not None and r.status == 200
    finally:
        sent = flood.communicate(timeout=20)[0].strip()
    assert total >= 20
    assert ok / total >= 0.99, (ok, total, sent)
    assert _wait_log(proc, r"banned 127\.0\.0\.2 for \d+s: reason=flood"), proc.log_tail()
    assert proc.running()


# -- hard limits ------------------------------------------------------------------------------

def test_message_size_limit_sheds_and_stateless_answers_hold_no_transaction(sipd):
    """A datagram over max_message_size is dropped unread. Requests the server answers itself are
    answered statelessly: with max_transactions at 10, thirty of them all get their answer, as
    none holds a transaction (a flood of challenged or refused requests costs no state)."""
    proc = sipd({"limits": {"max_transactions": 10, "max_message_size": 1500}})
    with UA(("127.0.0.1", proc.udp_port), host="127.0.0.7") as ua:
        big, branch = ua._request("OPTIONS", f"sip:127.0.0.1:{proc.udp_port}", "sip:p@x", "sip:p@x",
                                  extra=["X-Pad: " + "a" * 1600])
        assert ua.transaction(big, branch, 1.0) is None  # over max_message_size: dropped unread
        for _ in range(30):
            data, _ = ua._request("OPTIONS", f"sip:127.0.0.1:{proc.udp_port}", "sip:p@x", "sip:p@x")
            ua.send(data)
        answered = 0
        while ua.recv(2.0) is not None:
            answered += 1
    assert answered == 30, answered
    assert proc.running()
