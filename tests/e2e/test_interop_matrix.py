"""The interoperability matrix: real baresip, linphone, sipsak and SIPp register and call through one
real sipd over UDP, TCP and TLS, across transports and clients, by DNS alone, with a wrong password
and with a wrong CA: the 24 checks an operator's recipe runs against Kamailio, all of which must pass.

One sipd serves example.test and its own address 127.0.0.1 in single-domain mode (the field
report's set-up), UDP+TCP on one port and TLS (capped at 1.2: sipsak cannot read TLS 1.3 replies)
on another, both below 10000 (sipsak cuts a 5-digit port in the URIs it writes). dnsmasq serves
two zones: example.test as it should be for this sipd (SRV, NAPTR and PTR records naming its
address and ports), which ``sipctl dns check`` must pass and which leads a baresip without outbound
proxy to sipd, and a broken example.test, which the check must fail and which leads nowhere.

The checks run in four lanes at once, each lane with users of its own so that no call forks to a
phone of another lane. Every check is bounded in time; every process is ended by its PID.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pytest

from conftest import free_port, require_tool

from .conftest import DOMAIN, SCENARIOS

pytestmark = pytest.mark.e2e

PASSWORD = "pw-{}"
#: the users of each lane (a lane runs its checks one after the other)
LANES = {"baresip": ("ba", "bb"), "linphone": ("la", "lb"), "tools": ("sa", "pa", "pb"),
         "mixed": ("ma", "ia", "ib", "da", "db")}
HOLD = 1.0  # seconds of media in each call
MIN_RTP = 10  # packets each way (20 ms packets: ~50 a second)
CHECK_LIMIT = 60.0  # seconds any one check may take


# -- set-up --------------------------------------------------------------------------------------


def make_ca(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate from it: (ca.pem, cert.pem, key.pem). The server
    names are DNS-type SANs too (linphone's mbedTLS matches only those), 127.0.0.1 included."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    sans = [x509.DNSName("sip.example.test"), x509.DNSName(DOMAIN), x509.DNSName("127.0.0.1"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sip.example.test")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class Matrix:
    """What every check needs: the sipd, its addresses, the CAs, the name servers."""

    def __init__(self, tmp: Path, server, tls_port: int, ca: Path, other_ca: Path, dns: dict):
        self.tmp, self.server, self.tls_port, self.ca, self.other_ca, self.dns = (
            tmp, server, tls_port, ca, other_ca, dns)

    def proxy(self, transport: str) -> str:
        return f"127.0.0.1:{self.tls_port if transport == 'tls' else self.server.port}"

    def workdir(self, name: str) -> Path:
        d = self.tmp / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def baresip(self, name: str, user: str, *, transport: str = "udp", password: str | None = None,
                proxy: str | None = "default", dns: str | None = None, answer: str = "auto"):
        from helpers.baresip import BaresipUA

        return BaresipUA(self.workdir(name), user, password or PASSWORD.format(user), domain=DOMAIN,
                         transport=transport, proxy=self.proxy(transport) if proxy == "default" else proxy,
                         dns=dns, answer=answer, cafile=str(self.ca)).start()

    def linphone(self, name: str, user: str, *, transport: str = "udp", password: str | None = None,
                 cafile: Path | None = None, auto_answer: bool = False):
        from helpers.linphone import LinphoneUA

        return LinphoneUA(self.workdir(name), user, password or PASSWORD.format(user), proxy=self.proxy(transport),
                          domain=DOMAIN, transport=transport, auto_answer=auto_answer,
                          cafile=(cafile or self.ca) if transport == "tls" else None).start()


# -- the checks: each returns (ok, what was seen) -------------------------------------------------

Result = tuple[bool, str]


def registers(ua, expect: str = "OK") -> Result:
    try:
        got = ua.wait_registered(10)
        return got == expect, f"registration {got}, expected {expect}"
    finally:
        ua.stop()


def baresip_call(m: Matrix, name: str, caller_user: str, callee_user: str, *, transport: str = "udp",
                 proxy: str | None = "default", dns: str | None = None) -> Result:
    callee = m.baresip(name, callee_user, transport=transport, proxy=proxy, dns=dns)
    caller = m.baresip(name, caller_user, transport=transport, proxy=proxy, dns=dns)
    try:
        for ua in (callee, caller):
            if (got := ua.wait_registered(10)) != "OK":
                return False, f"{ua.user} registration {got}: {getattr(ua, 'last_reginfo', '')}"
        caller.dial(callee.aor)
        for ua in (caller, callee):
            ev = ua.wait_event({"CALL_ESTABLISHED", "CALL_CLOSED"}, 10)
            if not ev or ev["type"] != "CALL_ESTABLISHED":
                return False, f"{ua.user}: call not established ({ev})"
        end = time.monotonic() + HOLD
        while time.monotonic() < end:
            caller.pump(0.05)
            callee.pump(0.05)
        caller.hangup()
        for ua in (caller, callee):
            if not ua.wait_event({"CALL_CLOSED"}, 10):
                return False, f"{ua.user}: no CALL_CLOSED after the hang-up"
        counts = []
        for ua in (caller, callee):
            ua.stop()
            counts.append(ua.rtp_packets())
        ok = all(c and min(c) >= MIN_RTP for c in counts)
        return ok, f"RTP (tx, rx) caller {counts[0]}, callee {counts[1]}"
    finally:
        caller.stop()
        callee.stop()


def linphone_call(m: Matrix, name: str, caller_user: str, callee_user: str, *, transport: str = "udp",
                  callee_client: str = "linphone") -> Result:
    from helpers.linphone import ENDED, RUNNING, tone_wav

    if callee_client == "baresip":
        callee = m.baresip(name, callee_user, transport=transport)
    else:
        callee = m.linphone(name, callee_user, transport=transport, auto_answer=True)
    caller = m.linphone(name, caller_user, transport=transport)
    try:
        for ua in (callee, caller):
            if (got := ua.wait_registered(10)) != "OK":
                return False, f"{ua.user} registration {got}"
        tone = tone_wav(m.workdir(name))
        caller.call(callee.aor)
        state = caller.wait_call_state(RUNNING | ENDED, 10)
        if state not in RUNNING:
            return False, f"caller state {state}"
        if callee_client == "baresip":
            if not callee.wait_event({"CALL_ESTABLISHED"}, 5):
                return False, "baresip callee: call not established"
        elif callee.wait_call_state(RUNNING, 5) not in RUNNING:
            return False, "linphone callee: call not running"
        caller.play(tone)
        if callee_client != "baresip":
            callee.play(tone)
        time.sleep(HOLD)
        if caller.call_state() not in RUNNING:
            return False, "the call ended early"
        caller.terminate()
        if caller.wait_call_state({""}, 5) != "":
            return False, "the caller's call did not end"
        counts = _wait(caller.rtp_packets)
        return bool(counts and min(counts) >= MIN_RTP), f"caller RTP (sent, received) {counts}"
    finally:
        caller.stop()
        callee.stop()


def _wait(read: Callable, timeout: float = 3.0):
    """Bounded wait for end-of-call statistics (written when the streams stop)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def sipctl_dns(m: Matrix, zone: str, expect_rc: int) -> Result:
    res = subprocess.run([sys.executable, "-m", "sipctl", "--config", str(m.server.config_path), "dns", "check",
                          DOMAIN, "--nameserver", m.dns[zone].nameserver],
                         capture_output=True, text=True, timeout=CHECK_LIMIT, stdin=subprocess.DEVNULL)
    return res.returncode == expect_rc, f"sipctl dns check rc {res.returncode}: {(res.stdout + res.stderr)[-300:]}"


def sipsak(m: Matrix) -> Result:
    """OPTIONS and REGISTER (with digest) over UDP, TCP and TLS; a wrong password fails (rc 2)."""
    exe = require_tool("sipsak")
    port, tls = m.server.port, m.tls_port
    user = LANES["tools"][0]
    auth = ["-u", user, "-a", PASSWORD.format(user)]
    tls_args = ["--tls-ignore-cert-failure", "-E", "tls"]
    runs = {
        "options-udp": ([f"sip:127.0.0.1:{port}"], 0), "options-tcp": (["-E", "tcp", f"sip:127.0.0.1:{port}"], 0),
        "options-tls": ([*tls_args, f"sip:127.0.0.1:{tls}"], 0),
        "register-udp": (["-U", *auth, "-x", "60", f"sip:{user}@127.0.0.1:{port}"], 0),
        "register-tcp": (["-U", "-E", "tcp", *auth, "-x", "60", f"sip:{user}@127.0.0.1:{port}"], 0),
        "register-tls": (["-U", *tls_args, *auth, "-x", "60", f"sip:{user}@127.0.0.1:{tls}"], 0),
        "register-badpw": (["-U", "-u", user, "-a", "wrong", "-x", "60", f"sip:{user}@127.0.0.1:{port}"], 2),
    }
    failed = []
    for name, (args, want) in runs.items():
        *opts, uri = args
        res = subprocess.run([exe, *opts, "-s", uri], capture_output=True, text=True, timeout=20,
                             stdin=subprocess.DEVNULL)
        if res.returncode != want:
            failed.append(f"{name} rc {res.returncode} (want {want}): {(res.stdout + res.stderr)[-200:]}")
    return not failed, "; ".join(failed) or f"{len(runs)} sipsak runs as expected"


def sipp_register(m: Matrix, transport: str) -> Result:
    from helpers.sipp import run_sipp, write_inf

    require_tool("sipp")
    user = LANES["tools"][1]
    cwd = m.workdir(f"sipp-register-{transport}")
    port = free_port("tcp" if transport == "t1" else "udp")
    inf = write_inf(cwd, [(user, DOMAIN, PASSWORD.format(user))], name=f"reg-{port}.csv")
    res = run_sipp(SCENARIOS / "register.xml", m.server.address, port=port, cwd=cwd, inf=inf, transport=transport,
                   timeout=15, keys={"expires": 60, "contact_port": port})
    return res.ok and res.successful == 1, res.explain()[-400:]


def sipp_call(m: Matrix) -> Result:
    """A SIPp UAS registered by ANOTHER SIPp process (third-party registration: the Contact's
    port is not the REGISTER's source), then an authenticated SIPp call to it."""
    from helpers.sipp import SippProcess, run_sipp, write_inf

    require_tool("sipp")
    caller_user, callee_user = LANES["tools"][1:]
    cwd = m.workdir("sipp-call")
    uas_port, reg_port = free_port("udp"), free_port("udp")
    callee = SippProcess(SCENARIOS / "uas_answer.xml", None, port=uas_port, cwd=cwd, timeout=20,
                         media_port=free_port("udp"), abort_unexpected=False, name="uas").start()
    try:
        inf = write_inf(cwd, [(callee_user, DOMAIN, PASSWORD.format(callee_user))], name="callee.csv")
        reg = run_sipp(SCENARIOS / "register.xml", m.server.address, port=reg_port, cwd=cwd, inf=inf, timeout=15,
                       keys={"expires": 120, "contact_port": uas_port}, name="register-for-uas")
        if not (reg.ok and reg.successful == 1):
            return False, "third-party REGISTER: " + reg.explain()[-400:]
        inf = write_inf(cwd, [(caller_user, DOMAIN, PASSWORD.format(caller_user))], name="caller.csv")
        res = run_sipp(SCENARIOS / "uac_call.xml", m.server.address, port=free_port("udp"), cwd=cwd, inf=inf,
                       service=callee_user, hold_ms=500, timeout=15, media_port=free_port("udp"),
                       abort_unexpected=False, name="uac")
        if not (res.ok and res.successful == 1):
            return False, "call: " + res.explain()[-400:]
        end = callee.wait(timeout=10)
        return end.successful == 1, "UAS: " + end.explain()[-300:]
    finally:
        callee.stop()


def checks(m: Matrix) -> dict[str, list[tuple[str, Callable[[], Result]]]]:
    """Lane -> [(check name, check)], in the recipe's names."""
    ba, bb = LANES["baresip"]
    la, lb = LANES["linphone"]
    ma, ia, ib, da, db = LANES["mixed"]
    lanes: dict[str, list[tuple[str, Callable[[], Result]]]] = {"baresip": [], "linphone": []}
    for tr in ("udp", "tcp", "tls"):
        lanes["baresip"] += [
            (f"baresip-register-{tr}", lambda tr=tr: registers(m.baresip(f"b-reg-{tr}", ba, transport=tr))),
            (f"baresip-call-{tr}", lambda tr=tr: baresip_call(m, f"b-call-{tr}", ba, bb, transport=tr)),
        ]
        lanes["linphone"] += [
            (f"linphone-register-{tr}", lambda tr=tr: registers(m.linphone(f"l-reg-{tr}", la, transport=tr))),
            (f"linphone-call-{tr}", lambda tr=tr: linphone_call(m, f"l-call-{tr}", la, lb, transport=tr)),
        ]
    lanes["tools"] = [
        ("dns-good", lambda: sipctl_dns(m, "routing", 0)),
        ("dns-broken", lambda: sipctl_dns(m, "broken", 1)),
        ("sipsak", lambda: sipsak(m)),
        ("sipp-register-udp", lambda: sipp_register(m, "u1")),
        ("sipp-register-tcp", lambda: sipp_register(m, "t1")),
        ("sipp-call-udp", lambda: sipp_call(m)),
    ]
    via_dns = f"127.0.0.1:{m.dns['routing'].port}"
    lanes["mixed"] = [
        ("baresip-badpw", lambda: registers(m.baresip("b-badpw", ma, password="wrong"), "ERR")),
        ("linphone-badpw", lambda: registers(m.linphone("l-badpw", ma, password="wrong"), "ERR")),
        ("linphone-tls-wrongca", lambda: registers(m.linphone("l-wrongca", ma, transport="tls",
                                                              cafile=m.other_ca), "ERR")),
        ("interop-linphone-to-baresip", lambda: linphone_call(m, "interop", ia, ib, callee_client="baresip")),
        ("baresip-via-dns-call", lambda: baresip_call(m, "b-dns", da, db, proxy=None, dns=via_dns)),
        ("baresip-via-broken-dns", lambda: registers(m.baresip("b-broken-dns", da, proxy=None,
                                                               dns=m.dns["broken"].nameserver), "ERR")),
    ]
    return lanes


def run_lane(lane: list[tuple[str, Callable[[], Result]]]) -> list[tuple[str, bool, str, float]]:
    out = []
    for name, check in lane:
        t0 = time.monotonic()
        try:
            ok, detail = check()
        except Exception as exc:  # noqa: BLE001 - a check that raises has failed; the others still run
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        took = time.monotonic() - t0
        if took > CHECK_LIMIT:
            ok, detail = False, f"took {took:.0f} s (limit {CHECK_LIMIT:.0f} s); {detail}"
        out.append((name, ok, detail, took))
    return out


# -- the test ------------------------------------------------------------------------------------


def test_interop_matrix_24_of_24(server_factory, tmp_path):
    for tool in ("baresip", "linphone-daemon", "sipsak", "sipp", "dnsmasq"):
        require_tool(tool)
    from helpers.dnsmasq import BROKEN_ZONE, Dnsmasq
    from tests.daemon.harness import add_subscriber

    ca, cert, key = make_ca(tmp_path / "pki", "Matrix CA")
    other_ca = make_ca(tmp_path / "other-pki", "Unrelated CA")[0]
    server = server_factory(start=False, below=10000, domains=[], users=[])
    if not hasattr(server, "config"):
        pytest.skip("sipd-specific configuration (TLS, single-domain mode)")
    tls_port = free_port("tcp", below=10000)
    server.config["server"]["listen"].append(f"tls:127.0.0.1:{tls_port}")
    server.config["server"].update({"domains": [DOMAIN, "127.0.0.1"], "multidomain": False})
    server.config["tls"] = {"certificate": str(cert), "private_key": str(key), "ca_file": str(ca),
                            "verify_cert": False, "max_version": "1.2"}
    server.write_config()
    server.provision()
    for user in (u for users in LANES.values() for u in users):
        add_subscriber(server.db_url, user, PASSWORD.format(user))
    server.start()
    routing = [f"local=/{DOMAIN}/", "local=/0.0.127.in-addr.arpa/", f"host-record=sip.{DOMAIN},127.0.0.1",
               f"srv-host=_sip._udp.{DOMAIN},sip.{DOMAIN},{server.port},10,100",
               f"srv-host=_sip._tcp.{DOMAIN},sip.{DOMAIN},{server.port},10,100",
               f"srv-host=_sips._tcp.{DOMAIN},sip.{DOMAIN},{tls_port},10,100",
               f"naptr-record={DOMAIN},10,10,s,SIPS+D2T,,_sips._tcp.{DOMAIN}",
               f"naptr-record={DOMAIN},20,10,s,SIP+D2T,,_sip._tcp.{DOMAIN}",
               f"naptr-record={DOMAIN},30,10,s,SIP+D2U,,_sip._udp.{DOMAIN}"]
    with Dnsmasq(tmp_path, routing) as via, Dnsmasq(tmp_path, BROKEN_ZONE) as broken:
        m = Matrix(tmp_path, server, tls_port, ca, other_ca, {"routing": via, "broken": broken})
        lanes = checks(m)
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
            results = [r for rs in pool.map(run_lane, lanes.values()) for r in rs]
        wall = time.monotonic() - t0
    report = "\n".join(f"{'PASS' if ok else 'FAIL'} {name} ({took:.1f} s){'' if ok else ': ' + detail}"
                       for name, ok, detail, took in results)
    print(f"{report}\n{sum(r[1] for r in results)} passed in {wall:.0f} s")
    assert len(results) == 24, report
    failed = [r for r in results if not r[1]]
    assert not failed, f"{len(failed)} of 24 checks failed:\n{report}\n\nsipd log:\n{server.log_tail(60)}"
