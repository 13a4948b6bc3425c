"""Digest authentication hardening against a live sipd on loopback, over real UDP sockets.

- SHA-256 by configuration: offered alone or beside MD5 (MD5 first, one WWW-Authenticate each);
  a SHA-256 answer computed here with hashlib from the stored ``ha1_sha256`` registers; an MD5 answer
  is refused when only SHA-256 is offered.
- Replay: a reused nonce-count (qop=auth) gets a fresh challenge; an increasing one is accepted.
- An expired but authentic nonce gets ``stale=true``; a forged or garbled one a plain challenge.
- Unknown user and wrong password: the same status line and the same headers (REGISTER 401 and
  INVITE 407), and one fixed-format log line per failure.

The daemons run with real time; the only wait is for a nonce to expire (nonce_expires = 3 s,
bounded at 3.1 s).
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import socket
import sqlite3
import subprocess
import time
from contextlib import closing

import pytest

from tests.conftest import free_port, require_tool
from tests.daemon.harness import DOMAIN, UA, add_subscriber, live_daemon
from tests.helpers.sipd_proc import SipdProcess

USERS = {"alice": "alice-pw", "bob": "bob-pw"}
LOG_LINE = re.compile(r"auth failed: user=(\S+) realm=(\S+) source=127\.0\.0\.1:(\d+) reason=(\w+)$")
NONCE_EXPIRES = 3  # seconds; every other exchange on this daemon must finish within 2 s of its challenge


def _start(tmp_path_factory, name: str, auth: dict) -> SipdProcess:
    tmp = tmp_path_factory.mktemp(name)
    d = live_daemon(tmp, {"auth": auth})
    for user, pw in USERS.items():
        add_subscriber(d.db_url, user, pw)
    return d.start()


def _stop(d: SipdProcess) -> None:
    assert d.running(), d.log_text()
    assert d.stop() == 0
    assert "Traceback" not in d.log_text(), d.log_text()


@pytest.fixture(scope="module")
def sha_only(tmp_path_factory):
    d = _start(tmp_path_factory, "sha", {"algorithms": ["SHA-256"]})
    yield d
    _stop(d)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    d = _start(tmp_path_factory, "both", {"algorithms": ["MD5", "SHA-256"], "nonce_expires": NONCE_EXPIRES})
    yield d
    _stop(d)


# -- raw client side ---------------------------------------------------------------------------


def recv_raw(ua: UA, timeout: float = 3.0) -> bytes:
    """Next SIP response on the UA's UDP socket, 1xx skipped."""
    deadline = time.monotonic() + timeout
    for _ in range(50):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([ua.sock], [], [], left)
        if not ready:
            break
        data, _ = ua.sock.recvfrom(65535)
        if data.startswith(b"SIP/2.0 1"):
            continue
        if data.startswith(b"SIP/2.0 "):
            return data
    raise TimeoutError(f"no final response within {timeout}s")


def headers_of(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    first, *lines = head.split("\r\n")
    return first, [(n.strip().lower(), v.strip()) for n, _, v in (ln.partition(":") for ln in lines)]


def challenges(raw: bytes, name: str = "www-authenticate") -> list[dict[str, str]]:
    out = []
    for hname, value in headers_of(raw)[1]:
        if hname == name:
            assert value.startswith("Digest "), value
            params = re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value[7:])
            out.append({k.lower(): quoted or bare for k, quoted, bare in params})
    return out


def digest_response(algorithm: str, ha1: str, method: str, uri: str, nonce: str, nc: str, cnonce: str) -> str:
    """RFC 7616 §3.4.1 with qop=auth, written out with hashlib (independent of sipd.sip.auth)."""
    h = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5
    ha2 = h(f"{method}:{uri}".encode()).hexdigest()
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()


def stored_ha1(d: SipdProcess, user: str, column: str) -> str:
    path = d.db_url[len("sqlite:///"):]
    with closing(sqlite3.connect(path)) as db:
        row = db.execute(f"SELECT {column} FROM subscriber WHERE username = ? AND domain = ?",  # noqa: S608
                         (user, DOMAIN)).fetchone()
    assert row and row[0], f"no {column} for {user}"
    return row[0]


def authorization(user: str, password: str, challenge: dict[str, str], method: str, uri: str, *,
                  nc: int = 1, algorithm: str | None = None, nonce: str | None = None, proxy: bool = False,
                  ha1: str | None = None) -> str:
    algorithm = algorithm or challenge.get("algorithm", "MD5")
    realm, nonce = challenge["realm"], challenge["nonce"] if nonce is None else nonce
    h = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5
    ha1 = ha1 or h(f"{user}:{realm}:{password}".encode()).hexdigest()
    cnonce = os.urandom(8).hex()
    ncs = f"{nc:08x}"
    response = digest_response(algorithm, ha1, method, uri, nonce, ncs, cnonce)
    name = "Proxy-Authorization" if proxy else "Authorization"
    return (f'{name}: Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm={algorithm}, cnonce="{cnonce}", nc={ncs}, qop=auth')


REG_URI = f"sip:{DOMAIN}"


def register(ua: UA, *extra: str, expires: int = 60) -> bytes:
    ua.send(ua.request("REGISTER", REG_URI, headers=[f"Expires: {expires}", *extra]))
    return recv_raw(ua)


def status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


# -- 1. SHA-256 by configuration ---------------------------------------------------------------


def test_sha256_alone_is_the_only_offer(sha_only):
    with UA(sha_only.port, "alice") as ua:
        raw = register(ua)
    assert status(raw) == 401
    (offer,) = challenges(raw)
    assert offer["algorithm"] == "SHA-256" and offer["qop"] == "auth" and offer["realm"] == DOMAIN
    assert "stale" not in offer


def test_md5_and_sha256_offered_md5_first(both):
    with UA(both.port, "alice") as ua:
        raw = register(ua)
    assert status(raw) == 401
    offers = challenges(raw)
    assert [o["algorithm"] for o in offers] == ["MD5", "SHA-256"]
    assert all(o["realm"] == DOMAIN and o["qop"] == "auth" for o in offers)


@pytest.mark.parametrize("which", ["sha_only", "both"])
def test_sha256_answer_from_stored_ha1_sha256_registers(which, request):
    d = request.getfixturevalue(which)
    ha1 = stored_ha1(d, "alice", "ha1_sha256")
    assert ha1 == hashlib.sha256(f"alice:{DOMAIN}:{USERS['alice']}".encode()).hexdigest()
    with UA(d.port, "alice") as ua:
        offer = next(o for o in challenges(register(ua)) if o["algorithm"] == "SHA-256")
        raw = register(ua, authorization("alice", "", offer, "REGISTER", REG_URI, ha1=ha1))
        assert status(raw) == 200, raw
        assert f":{ua.port}" in dict(headers_of(raw)[1]).get("contact", "")
        register(ua, authorization("alice", "", offer, "REGISTER", REG_URI, ha1=ha1, nc=2), expires=0)


def test_md5_answer_refused_when_only_sha256_offered(sha_only):
    with UA(sha_only.port, "alice") as ua:
        (offer,) = challenges(register(ua))
        raw = register(ua, authorization("alice", USERS["alice"], offer, "REGISTER", REG_URI, algorithm="MD5"))
        assert status(raw) == 401
        (again,) = challenges(raw)
        assert again["algorithm"] == "SHA-256" and again["nonce"] != offer["nonce"]


# -- 2. nonce replay ---------------------------------------------------------------------------


def test_reused_nonce_count_is_refused_increasing_is_accepted(both):
    pw = USERS["bob"]
    with UA(both.port, "bob") as ua:
        offer = challenges(register(ua))[0]
        first = authorization("bob", pw, offer, "REGISTER", REG_URI, nc=1)
        assert status(register(ua, first)) == 200
        # the very same Authorization again (new transaction): a replay
        raw = register(ua, first)
        assert status(raw) == 401
        fresh = challenges(raw)
        assert fresh and all(o["nonce"] != offer["nonce"] and "stale" not in o for o in fresh)
        # a new response with the same nc: still a replay
        assert status(register(ua, authorization("bob", pw, offer, "REGISTER", REG_URI, nc=1))) == 401
        assert status(register(ua, authorization("bob", pw, offer, "REGISTER", REG_URI, nc=2))) == 200
        assert status(register(ua, authorization("bob", pw, offer, "REGISTER", REG_URI, nc=7))) == 200
        assert status(register(ua, authorization("bob", pw, offer, "REGISTER", REG_URI, nc=5))) == 401
        assert status(register(ua, authorization("bob", pw, offer, "REGISTER", REG_URI, nc=8), expires=0)) == 200


def test_answer_without_qop_is_single_use(both):
    """An RFC 2069-style answer (no qop, no nc) cannot be replayed within the nonce's lifetime."""
    pw = USERS["bob"]
    with UA(both.port, "bob") as ua:
        offer = challenges(register(ua))[0]
        ha1 = hashlib.md5(f"bob:{DOMAIN}:{pw}".encode()).hexdigest()
        ha2 = hashlib.md5(f"REGISTER:{REG_URI}".encode()).hexdigest()
        response = hashlib.md5(f"{ha1}:{offer['nonce']}:{ha2}".encode()).hexdigest()
        cred = (f'Authorization: Digest username="bob", realm="{DOMAIN}", nonce="{offer["nonce"]}", '
                f'uri="{REG_URI}", response="{response}", algorithm=MD5')
        assert status(register(ua, cred)) == 200
        raw = register(ua, cred)
        assert status(raw) == 401
        assert all(o["nonce"] != offer["nonce"] for o in challenges(raw))


# -- 3. expired and forged nonces ----------------------------------------------------------------


def test_expired_nonce_gets_stale_true_forged_nonce_does_not(both):
    pw = USERS["alice"]
    with UA(both.port, "alice") as ua:
        offer = challenges(register(ua))[0]
        assert status(register(ua, authorization("alice", pw, offer, "REGISTER", REG_URI, nc=1))) == 200

        # forged and garbled nonces: a plain challenge, never stale (the password was right)
        ts, rand, mac = offer["nonce"].split(".")
        forged = [f"{ts}.{rand}.{'0' * len(mac)}", f"{int(ts, 16) + 1:x}.{rand}.{mac}", "garbage", "a.b.c", ""]
        for nonce in forged:
            raw = register(ua, authorization("alice", pw, offer, "REGISTER", REG_URI, nonce=nonce))
            assert status(raw) == 401, nonce
            assert all("stale" not in o and o["nonce"] != nonce for o in challenges(raw)), (nonce, raw)

        # wait (bounded) until the nonce is older than nonce_expires; its timestamp is wall-clock seconds
        expiry = int(ts, 16) + NONCE_EXPIRES + 0.05
        assert expiry - time.time() < NONCE_EXPIRES + 1.2
        time.sleep(max(0.0, expiry - time.time()))
        # wrong password with the expired nonce: no stale hint (stale only for a correct digest)
        raw = register(ua, authorization("alice", "wrong", offer, "REGISTER", REG_URI, nc=2))
        assert status(raw) == 401 and all("stale" not in o for o in challenges(raw))
        raw = register(ua, authorization("alice", pw, offer, "REGISTER", REG_URI, nc=3))
        assert status(raw) == 401
        stale = challenges(raw)
        assert [o.get("stale") for o in stale] == ["true", "true"], raw
        assert all(o["nonce"] != offer["nonce"] for o in stale)
        # the UA retries with the fresh nonce without asking the user: accepted
        raw = register(ua, authorization("alice", pw, stale[0], "REGISTER", REG_URI), expires=0)
        assert status(raw) == 200, raw


# -- 4./5. no user enumeration; one log line per failure ------------------------------------------

NORMALISE = [
    (re.compile(r'nonce="[^"]*"'), 'nonce="N"'),
    (re.compile(r";tag=[^;>\s]+"), ";tag=T"),
]


def shape(raw: bytes, user: str) -> tuple[str, list[tuple[str, str]]]:
    """Status line and every header in order; values of the echoed headers reduced to what the
    client could not have known in advance."""
    first, headers = headers_of(raw)
    out = []
    for name, value in headers:
        if name in ("via", "call-id", "cseq"):
            value = "*"
        value = value.replace(f"sip:{user}@", "sip:USER@")
        for pattern, repl in NORMALISE:
            value = pattern.sub(repl, value)
        out.append((name, value))
    return first, out


def log_lines(d: SipdProcess, port: int, count: int, since: int, timeout: float = 3.0) -> list[re.Match]:
    """The auth-failure lines logged for source port ``port`` after log offset ``since`` (taken
    before the attempt: an earlier test's client may have had the same ephemeral port), once
    there are ``count`` (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in (LOG_LINE.search(ln) for ln in d.log_text()[since:].splitlines()) if m and int(m[3]) == port]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def failed_register(d: SipdProcess, user: str, password: str) -> tuple[bytes, bytes, int]:
    """(first challenge, answer to the wrong credentials, source port)."""
    with UA(d.port, user) as ua:
        first = register(ua)
        offer = challenges(first)[0]
        second = register(ua, authorization(user, password, offer, "REGISTER", REG_URI))
        return first, second, ua.port


def ack_for(ua: UA, invite: str, raw: bytes) -> None:
    """ACK a non-2xx final answer to ``invite`` (same branch, To with the response's tag)."""
    lines = invite.split("\r\n")
    get = {ln.split(":", 1)[0].lower(): ln for ln in lines if ":" in ln}
    to = next(f"To: {v}" for n, v in headers_of(raw)[1] if n == "to")
    cseq = get["cseq"].split()[1]
    ack = [lines[0].replace("INVITE", "ACK", 1), get["via"], "Max-Forwards: 70", get["from"], to, get["call-id"],
           f"CSeq: {cseq} ACK", "Content-Length: 0", "", ""]
    ua.send("\r\n".join(ack))


def failed_invite(d: SipdProcess, user: str, password: str) -> tuple[bytes, bytes, int]:
    uri = f"sip:bob@{DOMAIN}"
    with UA(d.port, user) as ua:
        invite = ua.request("INVITE", uri, to=f"<{uri}>", cseq=1)
        ua.send(invite)
        first = recv_raw(ua)
        ack_for(ua, invite, first)
        offer = challenges(first, "proxy-authenticate")[0]
        cred = authorization(user, password, offer, "INVITE", uri, proxy=True)
        invite = ua.request("INVITE", uri, to=f"<{uri}>", cseq=2, headers=[cred])
        ua.send(invite)
        second = recv_raw(ua)
        ack_for(ua, invite, second)
        return first, second, ua.port


@pytest.mark.parametrize("which", ["sha_only", "both"])
@pytest.mark.parametrize("method", ["REGISTER", "INVITE"])
def test_unknown_user_and_wrong_password_look_identical_and_log_one_line(which, method, request):
    d = request.getfixturevalue(which)
    attempt = failed_register if method == "REGISTER" else failed_invite
    expected = 401 if method == "REGISTER" else 407
    ghost = f"ghost{os.urandom(3).hex()}"
    since = len(d.log_text())
    wrong_first, wrong, wrong_port = attempt(d, "alice", "not-the-password")
    ghost_first, unknown, ghost_port = attempt(d, ghost, "whatever")
    assert status(wrong) == status(unknown) == expected
    assert shape(wrong, "alice") == shape(unknown, ghost)
    assert shape(wrong_first, "alice") == shape(ghost_first, ghost) == shape(wrong, "alice")

    for user, port, reason in (("alice", wrong_port, "wrong_password"), (ghost, ghost_port, "unknown_user")):
        lines = log_lines(d, port, 1, since)
        time.sleep(0.1)  # a duplicate line would be written right after the first
        lines = log_lines(d, port, 1, since)
        assert len(lines) == 1, [m[0] for m in lines]
        assert (lines[0][1], lines[0][2], lines[0][4]) == (user, DOMAIN, reason)


def test_log_line_is_fixed_format_and_carries_no_secret(both):
    evil = "eve realm=x source=1.2.3.4:5"
    since = len(both.log_text())
    with UA(both.port, "eve") as ua:
        offer = challenges(register(ua))[0]
        raw = register(ua, authorization(evil, "s3cr3t-guess", offer, "REGISTER", REG_URI))
        assert status(raw) == 401
        lines = log_lines(both, ua.port, 1, since)
    assert len(lines) == 1, both.log_text()[-2000:]
    line = lines[0][0]
    assert lines[0][1].startswith("eve%20realm%3Dx") and lines[0][2] == DOMAIN, line
    assert "s3cr3t-guess" not in both.log_text()


def ua_from(ip: str, server_port: int, user: str) -> UA:
    """A harness UA whose socket is bound to another loopback address (a separate source IP)."""
    ua = UA(server_port, user)
    ua.sock.close()
    ua.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ua.sock.bind((ip, 0))
    ua.host, ua.port = ip, ua.sock.getsockname()[1]
    return ua


def test_ban_counting_does_not_tell_known_from_unknown_users(tmp_path):
    """Failed answers count towards the source's ban alike for a known and an unknown user, also
    when they use an algorithm that is not offered: the ban is no user-existence oracle."""
    threshold = 3
    d = live_daemon(tmp_path, {"auth": {"algorithms": ["SHA-256"]},
                          "antiflood": {"enabled": True, "trusted_networks": [], "auth_fail_threshold": threshold}})
    add_subscriber(d.db_url, "alice", USERS["alice"])
    with d:
        outcome = {}
        for ip, user in (("127.0.0.2", "alice"), ("127.0.0.3", f"ghost{os.urandom(3).hex()}")):
            with ua_from(ip, d.port, user) as ua:
                answers = []
                for _ in range(threshold + 1):
                    ua.send(ua.request("REGISTER", REG_URI, headers=["Expires: 60"]))
                    try:
                        (offer,) = challenges(recv_raw(ua, timeout=0.5))
                    except TimeoutError:
                        answers.append("dropped")
                        continue
                    ua.send(ua.request("REGISTER", REG_URI, headers=[
                        "Expires: 60", authorization(user, "guess", offer, "REGISTER", REG_URI, algorithm="MD5")]))
                    try:
                        answers.append(status(recv_raw(ua, timeout=0.5)))
                    except TimeoutError:
                        answers.append("dropped")
                outcome[user.startswith("ghost")] = answers
        assert outcome[False] == outcome[True], outcome
        assert outcome[False][-1] == "dropped", outcome  # banned at the threshold


# -- credentials are consumed, never shown to the callee ---------------------------------------------

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def test_callee_never_sees_the_callers_digest_response(both):
    """Our realm's Proxy-Authorization is removed from the INVITE and also from the ACK and BYE,
    into which UAs such as linphone copy it: with the nonce, cnonce and response a callee could
    guess the caller's password offline. Credentials for another realm pass untouched."""
    foreign = 'Proxy-Authorization: Digest username="a", realm="upstream.example", nonce="n", uri="sip:x", response="r"'
    with UA(both.port, "alice", password=USERS["alice"]) as alice, UA(both.port, "bob", password=USERS["bob"]) as bob:
        assert bob.register(60).status == 200
        uri, call_id = f"sip:bob@{DOMAIN}", f"cred-{os.urandom(4).hex()}"
        invite = alice.request("INVITE", uri, to=f"<{uri}>", call_id=call_id, cseq=1)
        alice.send(invite)
        first = recv_raw(alice)
        ack_for(alice, invite, first)
        offer = challenges(first, "proxy-authenticate")[0]
        ours = authorization("alice", USERS["alice"], offer, "INVITE", uri, proxy=True)
        alice.send(alice.request("INVITE", uri, to=f"<{uri}>", call_id=call_id, cseq=2, body=SDP,
                                 headers=[ours, foreign, "Content-Type: application/sdp"]))
        inv = bob.expect_request("INVITE")
        assert [v for v in inv.get_all("Proxy-Authorization")] == [foreign.split(": ", 1)[1]]
        bob.respond(inv, 200, "OK", body=SDP, headers=["Content-Type: application/sdp"])
        ok = alice.expect(200)
        route = [f"Route: {rr}" for rr in reversed(ok.get_all("Record-Route"))]
        remote, to = str(ok.contacts[0].uri), ok.get("To")
        alice.send(alice.request("ACK", remote, to=to, call_id=call_id, cseq=2, headers=[*route, ours, foreign]))
        ack = bob.expect_request("ACK")
        alice.send(alice.request("BYE", remote, to=to, call_id=call_id, cseq=3,
                                 headers=[*route, authorization("alice", USERS["alice"], offer, "BYE", remote,
                                                                proxy=True, nc=2), foreign]))
        bye = bob.expect_request("BYE")
        bob.respond(bye, 200)
        alice.expect(200)
        for req in (ack, bye):
            assert req.get_all("Proxy-Authorization") == [foreign.split(": ", 1)[1]], req
        assert bob.register(0).status == 200


# -- what the order of the offers means to a client that reads only the first -------------------


@pytest.mark.e2e
@pytest.mark.parametrize(("offered", "ok"), [(["MD5", "SHA-256"], True), (["SHA-256", "MD5"], False)])
def test_sipsak_answers_only_the_first_offer(tmp_path, offered, ok):
    """Why MD5 goes first when both are offered: sipsak 0.9.8 reads only the first challenge.
    (sipsak cuts 5-digit ports in the R-URI and resolves the URI host itself: port < 10000, IP domain.)"""
    sipsak = require_tool("sipsak")
    d = live_daemon(tmp_path, {"auth": {"algorithms": offered}, "server": {"domains": ["127.0.0.1"]},
                          "spam": {"enabled": False}}, port=free_port(below=10000))
    add_subscriber(d.db_url, "alice", "alice-pw", domain="127.0.0.1")
    with d:
        res = subprocess.run([sipsak, "-U", "-i", "-s", f"sip:alice@127.0.0.1:{d.port}", "-u", "alice",
                              "-a", "alice-pw", "-x", "60"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
        assert d.running()
    if ok:
        assert res.returncode == 0, res.stdout + res.stderr
    else:
        assert res.returncode != 0 and "unsupported authentication algorithm" in res.stderr, res.stdout + res.stderr
