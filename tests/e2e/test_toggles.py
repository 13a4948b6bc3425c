"""Every residential toggle really switches its feature in sipd.

Two live daemons for the whole module, both configured by ``sipctl config generate``'s template with
the CUSTOMIZE ME values filled in: "on" (every toggle) and "off" (no toggle: the minimal
registrar/proxy). Each test checks one feature against both. Raw-socket user agents
(tests/daemon/harness.py); the PSTN gateway and the NATed phone's private address live on other
loopback addresses (127.0.0.3, 127.0.0.2).
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.daemon.harness import UA, add_subscriber
from tests.helpers.sipd_proc import SipdProcess
from tests.sipctl.test_template import make_cert

from sipctl.lib.template import Features, render

REPO = Path(__file__).resolve().parents[2]
DOMAIN = "example.test"
OTHER = "other.test"
GATEWAY_IP = "127.0.0.3"
PRIVATE_IP = "127.0.0.2"  # the "private" address a NATed phone puts in its Contact
PASSWORDS = {"alice": "pw-alice", "bob": "pw-bob", "carol": "pw-carol", "dave": "pw-dave"}


def set_key(text: str, section: str, key: str, value: str) -> str:
    """Fill in ``key`` of ``[section]`` (a TOML value), keeping a trailing comment."""
    start = text.index(f"\n[{section}]\n")
    end = text.find("\n[", start + 1)
    end = len(text) if end < 0 else end
    body = text[start:end]
    pattern = re.compile(rf"^{re.escape(key)} = [^#\n]*(#.*)?$", re.M)
    assert pattern.search(body), f"{section}.{key} not in the template"
    body = pattern.sub(lambda m: f"{key} = {value}" + (f"  {m.group(1)}" if m.group(1) else ""), body, count=1)
    return text[:start] + body + text[end:]


def bind_udp(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


class Live(SipdProcess):
    """One sipd started from a generated, filled-in configuration."""

    def __init__(self, tmp: Path, name: str, features: Features, extra: dict[tuple[str, str], str]):
        self.name = name  # names the harness's directory and log too
        self.on = name == "on"
        files = tmp / name  # certificate, database and management socket
        files.mkdir()
        port = free_port("tls")  # UDP/TCP on port, TLS on port + 1
        self.tls_port = port + 1
        self.http_port = free_port()
        db_url = f"sqlite:///{files}/sipd.db"
        text = render(features)
        listen = [f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}", f"tls:127.0.0.1:{self.tls_port}"]
        n = 1 + features.tcp + features.tls
        fills = {
            ("server", "listen"): json.dumps(listen[:n]),
            ("server", "domains"): json.dumps([DOMAIN]),
            ("database", "url"): json.dumps(db_url),
            ("mgmt", "socket"): json.dumps(str(files / "sipd.sock")),
            ("antiflood", "enabled"): "false",  # every test client is 127.0.0.1
            **extra,
        }
        if features.tls:
            crt, key = make_cert(files)
            fills[("tls", "certificate")] = json.dumps(str(crt))
            fills[("tls", "private_key")] = json.dumps(str(key))
        if features.http_mgmt:
            fills[("mgmt", "http_listen")] = json.dumps(f"127.0.0.1:{self.http_port}")
        for (section, key), value in fills.items():
            text = set_key(text, section, key, value)
        self.token = re.search(r'^http_token = "([^"]*)"', text, re.M).group(1)
        super().__init__(files, db_url=db_url, port=port, provision=False, config_text=text)
        self.provision()

    def provision(self) -> None:
        from sipd.db import connect

        for user, pw in PASSWORDS.items():
            add_subscriber(self.db_url, user, pw)
        add_subscriber(self.db_url, "alice", "pw-alice-other", OTHER)
        with connect(self.db_url) as db:
            db.execute("INSERT INTO domain (domain) VALUES (?)", (OTHER,))
            db.execute("INSERT INTO dbaliases (alias_username, alias_domain, username, domain) VALUES ('1247', ?, 'bob', ?)",
                       (DOMAIN, DOMAIN))
            db.execute("INSERT INTO dialplan (dpid, pr, match_op, match_exp, match_flags, subst_exp, repl_exp, timerec,"
                       " disabled, attrs) VALUES (0, 1, 1, ?, 0, ?, ?, '', 0, '')",
                       ("^sip:9bob@", "^sip:9bob@(.*)$", "sip:bob@\\1"))

    def start(self, timeout: float = 20.0) -> Live:
        res = subprocess.run([sys.executable, "-m", "sipd", "--check-config", "--config", str(self.config_path)],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        super().start(timeout)
        return self

    def ua(self, user: str, *, domain: str = DOMAIN, host: str = "127.0.0.1", password: str | None = None) -> UA:
        ua = UA(self.port, user, password=password or PASSWORDS.get(user, ""), domain=domain, host=host)
        ua.server = ("127.0.0.1", self.port)
        return ua

    def db_rows(self, sql: str, params: tuple = ()) -> list[dict]:
        from sipd.db import connect

        with connect(self.db_url) as db:
            return db.query(sql, params)


@pytest.fixture(scope="module")
def vm_sock():
    s = bind_udp("127.0.0.1")
    yield s
    s.close()


@pytest.fixture(scope="module")
def gw_sock():
    s = bind_udp(GATEWAY_IP)
    yield s
    s.close()


@pytest.fixture(scope="module")
def daemons(tmp_path_factory, vm_sock, gw_sock):
    tmp = tmp_path_factory.mktemp("toggles")
    vm = f"sip:voicemail@127.0.0.1:{vm_sock.getsockname()[1]}"
    gw = f"sip:{GATEWAY_IP}:{gw_sock.getsockname()[1]}"
    on = Live(tmp, "on", Features(tcp=True, tls=True, aliases=True, auth=True, acc=True, persistent_location=True,
                                  dialog=True, multidomain=True, nat=True, presence=True, dialplan=True,
                                  failure_diversion=vm, pstn_gateway=gw, pstn_prefix="00", http_mgmt=True),
              {("nat", "keepalive_interval"): "0.3", ("diversion", "no_answer_timeout"): "1.0",
               ("proxy", "invite_timeout"): "4.0"})
    off = Live(tmp, "off", Features(nat=False), {("proxy", "invite_timeout"): "4.0"})  # NAT is on by default
    started = []
    try:
        for d in (on, off):
            started.append(d.start())
        yield {"on": on, "off": off}
    finally:
        for d in started:
            alive = d.running()
            rc = d.stop()
            assert alive, d.log_text()
            assert rc == 0, d.log_text()
            assert "Traceback" not in d.log_text(), d.log_text()


@pytest.fixture(params=["on", "off"])
def d(request, daemons) -> Live:
    return daemons[request.param]


def recv_sip(sock: socket.socket, timeout: float = 3.0):
    from sipd.sip.parser import parse_message

    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data, _ = sock.recvfrom(65535)
        if data.strip():
            return parse_message(data)
    raise TimeoutError


def invite(d: Live, ua: UA, target: str, call_id: str, *, headers: tuple[str, ...] = ()) -> None:
    """Send an INVITE; answer a 407 with credentials (the "on" daemon authenticates callers)."""
    uri = f"sip:{target}"
    ua.send(ua.request("INVITE", uri, to=f"<{uri}>", headers=list(headers), call_id=call_id, cseq=1))
    if d.on:
        resp = ua.expect(407, 100)
        if resp.status == 407:
            ua.send(ua.request("ACK", uri, to=resp.get("To"), call_id=call_id, cseq=1, via=resp.get("Via")))
            auth = ua.authorization(resp, "INVITE", uri, proxy=True)
            ua.send(ua.request("INVITE", uri, to=f"<{uri}>", headers=[*headers, auth], call_id=call_id, cseq=2))


def final_after(ua: UA, *statuses: int):
    return ua.expect(*statuses, skip=(100, 180, 183))


def refuse(callee: UA, inv, status: int = 603, reason: str = "Decline") -> None:
    callee.respond(inv, status, reason)
    callee.expect_request("ACK")


# -- the toggles -----------------------------------------------------------------------------------


def test_tcp(d):
    from tests.helpers.sipd_proc import options_ping

    status = options_ping("127.0.0.1", d.port, timeout=1.0, proto="tcp")
    assert (status or "").startswith("SIP/2.0 200") if d.on else status is None


def test_tls(d):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", d.tls_port), timeout=3) as raw, \
                ctx.wrap_socket(raw, server_hostname=DOMAIN) as tls:
            msg = (f"OPTIONS sip:127.0.0.1:{d.tls_port};transport=tls SIP/2.0\r\n"
                   "Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtlsping;rport\r\nMax-Forwards: 70\r\n"
                   "From: <sip:ping@example.test>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: tls-ping\r\n"
                   "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
            tls.sendall(msg.encode())
            answer = tls.recv(65535)
    except OSError:
        answer = b""
    assert answer.startswith(b"SIP/2.0 200") if d.on else answer == b""


def test_auth(d):
    with d.ua("bob") as bob:
        bob.send(bob.request("REGISTER", f"sip:{DOMAIN}", headers=["Expires: 60"]))
        assert bob.expect(401, 200).status == (401 if d.on else 200)
        assert bob.register(0).status == 200


def test_persistent_location(d):
    with d.ua("carol") as carol:
        assert carol.register(300).status == 200
        rows = d.db_rows("SELECT contact FROM location WHERE username = 'carol'")
        assert len(rows) == (1 if d.on else 0)
        assert carol.register(0).status == 200


def test_aliases(d):
    with d.ua("alice") as alice, d.ua("bob") as bob:
        assert bob.register(300).status == 200
        invite(d, alice, f"1247@{DOMAIN}", f"alias-{d.name}")
        if d.on:
            inv = bob.expect_request("INVITE")
            assert inv.uri.user == "bob"
            refuse(bob, inv)
            assert final_after(alice, 603).status == 603
        else:
            assert final_after(alice, 404).status == 404
        assert bob.register(0).status == 200


def test_dialplan(d):
    with d.ua("alice") as alice, d.ua("bob") as bob:
        assert bob.register(300).status == 200
        invite(d, alice, f"9bob@{DOMAIN}", f"dp-{d.name}")
        if d.on:
            inv = bob.expect_request("INVITE")
            refuse(bob, inv)
            assert final_after(alice, 603).status == 603
            assert f"dialplan sip:9bob@{DOMAIN}" in d.log_text()
        else:
            assert final_after(alice, 404).status == 404
        assert bob.register(0).status == 200


def test_multidomain(d):
    with d.ua("alice") as a1, d.ua("alice", domain=OTHER, password="pw-alice-other") as a2, d.ua("bob") as bob:
        resp = a2.register(300)
        assert resp.status == 200  # other.test (domain table only) is local in both modes
        if not d.on:
            assert a2.register(0).status == 200
            return
        assert a1.register(300).status == 200
        # separate user spaces: alice@other.test's password does not register alice@example.test
        assert a1.register(300, password="pw-alice-other").status == 401
        invite(d, bob, f"alice@{OTHER}", "md-1")
        inv = a2.expect_request("INVITE")
        a1.nothing(0.3)
        refuse(a2, inv)
        assert final_after(bob, 603).status == 603
        assert a1.register(0).status == 200 and a2.register(0).status == 200


def test_nat(d):
    private = bind_udp(PRIVATE_IP)
    try:
        with d.ua("carol") as carol, d.ua("alice") as alice:
            contact = f"<sip:carol@{PRIVATE_IP}:{private.getsockname()[1]}>"
            # a phone behind NAT writes its private address in Via too (the NAT rewrites only the
            # packet's source): a Via sent-by other than the source is what marks it as NATed,
            # while a Contact alone that differs from the source is a registration for another device
            carol.host = PRIVATE_IP
            assert carol.register(300, contact=contact).status == 200
            if d.on:
                ping = carol.expect_request("OPTIONS", timeout=2.0)  # keep-alive to the NAT pinhole
                assert ping.uri.host == PRIVATE_IP
            else:
                carol.nothing(0.8)
            invite(d, alice, f"carol@{DOMAIN}", f"nat-{d.name}")
            if d.on:  # to where the REGISTER came from; the answer's private Contact is fixed too
                inv = carol.expect_request("INVITE")
                rr = "".join(f"Record-Route: {v}\r\n" for v in inv.get_all("Record-Route"))
                carol.send(f"SIP/2.0 200 OK\r\n{_echo(inv)}{rr}Contact: {contact}\r\nContent-Length: 0\r\n\r\n")
                ok = final_after(alice, 200)
                assert ok.contacts[0].uri.host_port == f"127.0.0.1:{carol.port}", ok.get("Contact")
                route = [f"Route: {v}" for v in reversed(ok.get_all("Record-Route"))]
                target = str(ok.contacts[0].uri)
                alice.send(alice.request("ACK", target, to=ok.get("To"), headers=route, call_id=f"nat-{d.name}", cseq=2))
                alice.send(alice.request("BYE", target, to=ok.get("To"), headers=route, call_id=f"nat-{d.name}", cseq=3))
                bye = carol.expect_request("BYE")  # in-dialog requests reach the NATed callee
                carol.respond(bye, 200)
                assert alice.expect(200).status == 200
            else:  # to the Contact as written
                inv = recv_sip(private)
                assert inv.method == "INVITE"
                private.sendto(f"SIP/2.0 603 Decline\r\n{_echo(inv)}Content-Length: 0\r\n\r\n".encode(),
                               ("127.0.0.1", d.port))
                assert final_after(alice, 603).status == 603
            assert carol.register(0, contact=contact).status == 200
    finally:
        private.close()


def _echo(req) -> str:
    lines = [f"Via: {v}" for v in req.get_all("Via")]
    lines += [f"From: {req.get('From')}", f"To: {req.get('To')};tag=x", f"Call-ID: {req.call_id}", f"CSeq: {req.get('CSeq')}"]
    return "\r\n".join(lines) + "\r\n"


def test_failure_diversion(d, vm_sock):
    with d.ua("alice") as alice:
        invite(d, alice, f"dave@{DOMAIN}", f"div-{d.name}")  # dave is not registered
        if not d.on:
            assert final_after(alice, 480).status == 480
            return
        inv = recv_sip(vm_sock)
        assert inv.method == "INVITE" and inv.uri.user == "voicemail"
        assert inv.get("Diversion").startswith(f"<sip:dave@{DOMAIN}>;reason=unavailable")
        vm_sock.sendto(f"SIP/2.0 486 Busy Here\r\n{_echo(inv)}Content-Length: 0\r\n\r\n".encode(), ("127.0.0.1", d.port))
        assert final_after(alice, 486).status == 486  # the diversion target's answer goes upstream


def test_acc_and_dialog(d):
    with d.ua("alice") as alice, d.ua("bob") as bob:
        assert bob.register(300).status == 200
        call_id = f"acc-{d.name}"
        invite(d, alice, f"bob@{DOMAIN}", call_id)
        inv = bob.expect_request("INVITE")
        bob.respond(inv, 180, "Ringing")
        assert alice.expect(180).status == 180
        if d.on:
            dialogs = d.mi("dlg_list", {"callid": call_id})["Dialogs"]
            assert len(dialogs) == 1
        else:
            from sipd.mgmt.protocol import RpcError

            with pytest.raises(RpcError, match="not activated"):
                d.mi("dlg_list")
        refuse(bob, inv)
        assert final_after(alice, 603).status == 603
        rows: list = []
        for _ in range(100 if d.on else 5):  # the writer thread batches records
            rows = d.db_rows("SELECT callid FROM missed_calls WHERE callid = ?", (call_id,))
            if rows:
                break
            time.sleep(0.05)
        assert len(rows) == (1 if d.on else 0)
        assert bob.register(0).status == 200


def test_presence(d):
    with d.ua("alice") as alice:
        uri = f"sip:dave@{DOMAIN}"
        headers = ["Event: presence", "Accept: application/pidf+xml", "Expires: 60"]
        alice.send(alice.request("SUBSCRIBE", uri, to=f"<{uri}>", headers=headers, call_id=f"pres-{d.name}", cseq=1))
        resp = alice.expect(407, 480, 200, 202)
        if d.on:
            assert resp.status == 407
            auth = alice.authorization(resp, "SUBSCRIBE", uri, proxy=True)
            alice.send(alice.request("SUBSCRIBE", uri, to=f"<{uri}>", headers=[*headers, auth], call_id=f"pres-{d.name}",
                                     cseq=2))
            assert alice.expect(200, 202).status in (200, 202)  # the presence server answers for dave
        else:
            assert resp.status == 480  # routed like a call to an unregistered user


def test_http_mgmt(d):
    req = urllib.request.Request(f"http://127.0.0.1:{d.http_port}/mi", method="POST",
                                 data=json.dumps({"jsonrpc": "2.0", "method": "uptime", "id": 1}).encode(),
                                 headers={"Authorization": f"Bearer {d.token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            answer = json.loads(resp.read())
    except OSError:
        answer = None
    if d.on:
        assert answer is not None and "result" in answer, answer
    else:
        assert answer is None


def test_pstn_gateway(d, gw_sock):
    with d.ua("alice") as alice:
        invite(d, alice, f"0049301234@{DOMAIN}", f"pstn-{d.name}")
        if not d.on:
            assert final_after(alice, 404).status == 404
            return
        inv = recv_sip(gw_sock)
        assert inv.method == "INVITE" and inv.uri.user == "0049301234" and inv.uri.host == GATEWAY_IP
        gw_sock.sendto(f"SIP/2.0 603 Decline\r\n{_echo(inv)}Content-Length: 0\r\n\r\n".encode(), ("127.0.0.1", d.port))
        assert final_after(alice, 603).status == 603


def test_pstn_inbound_is_trusted(daemons, gw_sock):
    d = daemons["on"]
    with d.ua("bob") as bob, d.ua("alice", host=GATEWAY_IP) as gateway:
        assert bob.register(300).status == 200
        uri = f"sip:bob@{DOMAIN}"
        gateway.send(gateway.request("INVITE", uri, to=f"<{uri}>", call_id="pstn-in", cseq=1))
        inv = bob.expect_request("INVITE")  # no 407 for the gateway, even with a local From
        refuse(bob, inv)
        assert final_after(gateway, 603).status == 603
        assert bob.register(0).status == 200
