"""sipctl dns check against a real DNS server (dnsmasq) and live SIP responders."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from sipctl.app import main
from tests.conftest import free_port, require_tool
from tests.helpers.dnsmasq import BROKEN_ZONE, GOOD_ZONE, Dnsmasq

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    require_tool("dnsmasq")
    with Dnsmasq(tmp_path_factory.mktemp("good"), GOOD_ZONE) as ns:
        yield ns


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    require_tool("dnsmasq")
    with Dnsmasq(tmp_path_factory.mktemp("broken"), BROKEN_ZONE) as ns:
        yield ns


@pytest.fixture(autouse=True)
def _no_config(monkeypatch, tmp_path):
    monkeypatch.delenv("SIPD_CONFIG", raising=False)
    monkeypatch.setattr("sipd.config.DEFAULT_PATH", tmp_path / "absent.toml")


def run_json(capsys, *args: str) -> tuple[int, dict]:
    code = main(["dns", "check", *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def rows(report: dict, verdict: str | None = None, section: str | None = None) -> list[dict]:
    return [c for c in report["checks"]
            if (verdict is None or c["verdict"] == verdict) and (section is None or c["section"] == section)]


def test_good_zone_passes(good, capsys):
    code, report = run_json(capsys, "example.test", "--nameserver", good.nameserver)
    assert code == 0 and report["ok"] is True
    assert rows(report, "fail") == []
    assert len(rows(report, "pass", "naptr")) == 3
    assert {c["subject"] for c in rows(report, "pass", "srv")} == {
        "_sip._udp.example.test", "_sip._tcp.example.test", "_sips._tcp.example.test"}
    assert {c["subject"] for c in rows(report, "pass", "ptr")} == {
        "127.0.0.2 (sip.example.test)", "127.0.0.3 (sip2.example.test)"}
    (sip,) = [c for c in rows(report, "pass", "resolve") if c["subject"] == "sip:example.test"]
    assert [(t["transport"], t["host"], t["port"]) for t in sip["data"]["targets"]] == [
        ("tls", "127.0.0.2", 5061), ("tcp", "127.0.0.2", 5060), ("udp", "127.0.0.2", 5060), ("udp", "127.0.0.3", 5060)]
    # the only warning: no A record for the bare domain (fine with SRV)
    assert [c["section"] for c in rows(report, "warn")] == ["address"]


def test_good_zone_table(good, capsys):
    assert main(["dns", "check", "example.test", "-n", good.nameserver]) == 0
    out = capsys.readouterr().out
    assert "✓" in out and "✗" not in out
    assert "example.test: all checks passed" in out


def test_broken_zone_every_problem_found(broken, capsys):
    code, report = run_json(capsys, "example.test", "--nameserver", broken.nameserver)
    assert code == 1 and report["ok"] is False
    fails = {(c["section"], c["subject"]): c for c in rows(report, "fail")}
    # 1. SRV target without an address
    assert "add an A record for nohost.example.test" in fails[("target", "nohost.example.test")]["hint"]
    # 2. SRV missing behind a NAPTR
    naptr = fails[("naptr", "SIPS+D2T → _sips._tcp.example.test")]
    assert "_sips._tcp.example.test is missing although a NAPTR points to it" in naptr["hint"]
    # 3. PTR not matching (and not resolving back)
    ptr = fails[("ptr", "127.0.0.2 (sip.example.test)")]
    assert "other.example.test" in ptr["detail"] and "does not resolve back" in ptr["detail"]
    assert "point the PTR at sip.example.test" in ptr["hint"]
    # 4. CNAME as SRV target
    cname = fails[("target", "alias.example.test")]
    assert "CNAME for sip.example.test" in cname["detail"] and "RFC 2782" in cname["detail"]
    # 5. address without PTR
    assert "no PTR" in fails[("ptr", "127.0.0.3 (sip2.example.test)")]["detail"]
    assert len(fails) == 5 and report["summary"]["failed"] == 5


def test_broken_zone_table_and_exit(broken, capsys):
    assert main(["dns", "check", "example.test", "--nameserver", broken.nameserver]) == 1
    captured = capsys.readouterr()
    assert "✗" in captured.out and "5 problems found" in captured.out
    assert "Error: DNS of example.test: 5 checks failed" in captured.err
    assert "Traceback" not in captured.out + captured.err


def test_unreachable_nameserver_is_a_result(capsys):
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("127.0.0.1", port))
        started = time.monotonic()
        code, report = run_json(capsys, "example.test", "--nameserver", f"127.0.0.1:{port}", "--timeout", "0.5")
    assert time.monotonic() - started < 5
    assert code == 1
    (row,) = report["checks"]
    assert row["section"] == "nameserver" and row["data"]["status"] == "timeout"
    assert "is the name server running" in row["hint"]


def test_refused_and_nxdomain_are_results(good, capsys):
    # dnsmasq with no-resolv refuses names outside its local zones: SERVFAIL/REFUSED row
    code, report = run_json(capsys, "elsewhere.test", "--nameserver", good.nameserver)
    assert code == 1 and report["checks"][0]["data"]["status"] == "servfail"
    # a name inside the zone that does not exist: NXDOMAIN everywhere, RFC 3263 finds nothing
    code, report = run_json(capsys, "nosuch.example.test", "--nameserver", good.nameserver)
    assert code == 1
    assert rows(report, "warn", "naptr")[0]["detail"] == "no NAPTR records (nxdomain)"
    assert {c["section"] for c in rows(report, "fail")} == {"address", "srv", "resolve"}


@pytest.mark.parametrize("args", [
    ["example.test", "--nameserver", "ns.example.test"],
    ["192.0.2.1", "--nameserver", "127.0.0.1"],
    ["exa mple.test", "--nameserver", "127.0.0.1"],
    ["example.test", "--nameserver", "127.0.0.1", "--expect-address", "not-an-ip"],
    ["example.test", "--nameserver", "127.0.0.1", "--timeout", "0"],
])
def test_usage_errors_exit_2(args, capsys):
    assert main(["dns", "check", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error:") and "Traceback" not in err


def test_expectations(good, capsys):
    code, report = run_json(capsys, "example.test", "-n", good.nameserver,
                            "--expect-host", "sip.example.test", "--expect-address", "127.0.0.3")
    assert code == 0 and len(rows(report, "pass", "expect")) == 2
    code, report = run_json(capsys, "example.test", "-n", good.nameserver,
                            "--expect-host", "sip9.example.test", "--expect-address", "127.0.0.9")
    assert code == 1
    assert {c["subject"] for c in rows(report, "fail", "expect")} == {"sip9.example.test", "127.0.0.9"}


#: Two nodes sharing the load and a third as the failover, as docs/several-nodes.md publishes them,
#: with two mistakes a cluster's DNS is prone to: node c missing from _sip._tcp and _sips._tcp
#: (clients over TCP or TLS never reach it), and a weight of 0 beside a weighted server.
CLUSTER_ZONE: tuple[str, ...] = (
    "local=/example.test/",
    "local=/0.0.127.in-addr.arpa/",
    "host-record=ns.example.test,127.0.0.1",
    "host-record=a.example.test,127.0.0.2",
    "host-record=b.example.test,127.0.0.3",
    "host-record=c.example.test,127.0.0.4",
    "srv-host=_sip._udp.example.test,a.example.test,5060,10,50",
    "srv-host=_sip._udp.example.test,b.example.test,5060,10,50",
    "srv-host=_sip._udp.example.test,c.example.test,5060,20,100",
    "srv-host=_sip._tcp.example.test,a.example.test,5060,10,70",
    "srv-host=_sip._tcp.example.test,b.example.test,5060,10,30",
    "srv-host=_sips._tcp.example.test,a.example.test,5061,10,100",
    "srv-host=_sips._tcp.example.test,b.example.test,5061,10,0",
)


def test_several_nodes_spread_and_failover(tmp_path, capsys):
    require_tool("dnsmasq")
    with Dnsmasq(tmp_path, CLUSTER_ZONE) as ns:
        code, report = run_json(capsys, "example.test", "-n", ns.nameserver, "--expect-host", "a.example.test",
                                "--expect-host", "b.example.test", "--expect-host", "c.example.test")
        assert main(["dns", "check", "example.test", "-n", ns.nameserver]) == 0
        table = capsys.readouterr().out
    assert "example.test: all checks passed" in table and "3 warnings" in table
    assert code == 0 and report["ok"] is True, report      # warnings only: every node is reachable somehow
    spread = {c["subject"]: c for c in rows(report, section="spread")}
    udp = spread["_sip._udp.example.test"]
    assert udp["verdict"] == "pass" and udp["data"]["shares"] == {
        "a.example.test:5060": {"priority": 10, "share": 0.5}, "b.example.test:5060": {"priority": 10, "share": 0.5},
        "c.example.test:5060": {"priority": 20, "share": 1.0}}
    assert "priority 20 (if those fail): c.example.test:5060 100%" in udp["detail"]
    tcp = spread["_sip._tcp.example.test"]
    assert tcp["verdict"] == "pass" and "a.example.test:5060 70%" in tcp["detail"] and "b.example.test:5060 30%" in tcp["detail"]
    tls = spread["_sips._tcp.example.test"]
    assert tls["verdict"] == "warn" and "weight 0 for b.example.test" in tls["detail"] and "weight" in tls["hint"]
    missing = {c["subject"]: c for c in rows(report, "warn", "expect")}
    assert set(missing) == {"_sip._tcp.example.test", "_sips._tcp.example.test"}
    assert "does not point at c.example.test" in missing["_sip._tcp.example.test"]["detail"]
    assert "never reach that node" in missing["_sips._tcp.example.test"]["hint"]
    assert len(rows(report, "pass", "expect")) == 3           # each host is pointed at by some record


def test_defaults_from_config(good, tmp_path, capsys):
    conf = tmp_path / "sipd.toml"
    conf.write_text(f'[server]\nlisten = ["udp:127.0.0.2:5060"]\n[dns]\nnameservers = ["{good.nameserver}"]\n')
    code = main(["--config", str(conf), "dns", "check", "example.test", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["nameservers"] == [good.nameserver]
    assert [c["subject"] for c in rows(report, "pass", "expect")] == ["127.0.0.2"]
    conf.write_text(f'[server]\nlisten = ["udp:127.0.0.9:5060"]\n[dns]\nnameservers = ["{good.nameserver}"]\n')
    assert main(["--config", str(conf), "dns", "check", "example.test", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [c["subject"] for c in rows(report, "fail", "expect")] == ["127.0.0.9"]


# ---------------------------------------------------------------------------------------------
# --probe against a live responder (UDP, TCP, TLS) on 127.0.0.2


def _answer(request: bytes, status: str = "200 OK") -> bytes:
    head = request.split(b"\r\n\r\n", 1)[0].decode()
    lines = head.split("\r\n")[1:]
    keep = [ln for ln in lines if ln.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")]
    keep = [ln + ";tag=resp1" if ln.lower().startswith("to:") else ln for ln in keep]
    return ("\r\n".join([f"SIP/2.0 {status}", *keep, "Content-Length: 0"]) + "\r\n\r\n").encode()


class SipResponder:
    """Answers OPTIONS with 200 on UDP and TCP at host:port and on TLS at host:port+1."""

    def __init__(self, host: str, port: int, certfile: Path, keyfile: Path):
        self.stop = threading.Event()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, port))
        self.tcp = socket.create_server((host, port))
        self.tls = socket.create_server((host, port + 1))
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certfile, keyfile)
        for s in (self.udp, self.tcp, self.tls):
            s.settimeout(0.05)
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._udp, self._stream_tcp, self._stream_tls)]
        for t in self.threads:
            t.start()

    def _udp(self) -> None:
        while not self.stop.is_set():
            try:
                data, addr = self.udp.recvfrom(65536)
            except TimeoutError:
                continue
            self.udp.sendto(_answer(data), addr)

    def _serve(self, listener: socket.socket, tls: bool) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    sock = self.ctx.wrap_socket(conn, server_side=True) if tls else conn
                    with sock:
                        buf = b""
                        while b"\r\n\r\n" not in buf and len(buf) < 65536:
                            chunk = sock.recv(4096)
                            if not chunk:
                                break
                            buf += chunk
                        if buf:
                            sock.sendall(_answer(buf))
                except (OSError, ssl.SSLError):
                    pass

    def _stream_tcp(self) -> None:
        self._serve(self.tcp, False)

    def _stream_tls(self) -> None:
        self._serve(self.tls, True)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)
        for s in (self.udp, self.tcp, self.tls):
            s.close()


def _self_signed(tmp_path: Path, names: list[str]) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = tmp_path / f"{names[0]}.crt", tmp_path / f"{names[0]}.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return certfile, keyfile


def _probe_zone(port: int) -> list[str]:
    return [
        "local=/example.test/", "local=/0.0.127.in-addr.arpa/",
        "host-record=sip.example.test,127.0.0.2",
        "host-record=dead.example.test,127.0.0.4",
        f"srv-host=_sip._udp.example.test,sip.example.test,{port},10,100",
        f"srv-host=_sip._tcp.example.test,sip.example.test,{port},10,100",
        f"srv-host=_sips._tcp.example.test,sip.example.test,{port + 1},10,100",
    ]


@pytest.mark.parametrize("cert_names, covers", [(["sip.example.test", "example.test"], True),
                                                (["*.example.test"], False)])
def test_probe_live_responder(tmp_path, capsys, cert_names, covers):
    require_tool("dnsmasq")
    port = free_port("tls", "127.0.0.2")
    certfile, keyfile = _self_signed(tmp_path, cert_names)
    responder = SipResponder("127.0.0.2", port, certfile, keyfile)
    try:
        with Dnsmasq(tmp_path, _probe_zone(port)) as ns:
            code, report = run_json(capsys, "example.test", "-n", ns.nameserver, "--probe", "--timeout", "1")
    finally:
        responder.close()
    probes = {c["subject"]: c for c in rows(report, section="probe")}
    assert set(probes) == {f"udp 127.0.0.2:{port}", f"tcp 127.0.0.2:{port}", f"tls 127.0.0.2:{port + 1}"}
    for row in probes.values():
        assert row["verdict"] == "pass" and row["data"]["status"] == 200
        assert row["detail"].startswith("200 OK in ") and 0 < row["data"]["rtt_ms"] < 1000
    (tls,) = rows(report, section="tls")
    assert tls["verdict"] == ("pass" if covers else "fail")
    if not covers:
        assert "does not cover example.test" in tls["detail"] and "RFC 5922" in tls["hint"]
    assert code == (0 if covers else 1)


def test_probe_reports_silence(tmp_path, capsys):
    require_tool("dnsmasq")
    port = free_port("tls", "127.0.0.2")  # nothing listens on TCP; UDP is bound but silent
    with Dnsmasq(tmp_path, _probe_zone(port)) as ns, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.2", port))
        started = time.monotonic()
        code, report = run_json(capsys, "example.test", "-n", ns.nameserver, "--probe", "--timeout", "0.3")
    assert time.monotonic() - started < 5
    assert code == 1
    probes = rows(report, section="probe")
    assert len(probes) == 3 and all(p["verdict"] == "fail" for p in probes)
    details = {p["subject"].split()[0]: p["detail"] for p in probes}
    assert "no answer within 0.3s" in details["udp"]
    assert "connection refused" in details["tcp"] and "connection refused" in details["tls"]
    assert all(f"is a SIP server listening on {p['subject'].split()[0]}:127.0.0.2" in p["hint"] for p in probes)


def test_probe_udp_port_unreachable(tmp_path, capsys):
    require_tool("dnsmasq")
    port = free_port("udp", "127.0.0.2")
    zone = ["local=/example.test/", "host-record=sip.example.test,127.0.0.2",
            f"srv-host=_sip._udp.example.test,sip.example.test,{port},10,100"]
    with Dnsmasq(tmp_path, zone) as ns:
        code, report = run_json(capsys, "example.test", "-n", ns.nameserver, "--probe", "--timeout", "2")
    (probe,) = rows(report, section="probe")
    assert code == 1 and probe["detail"] == "no SIP answer: port unreachable"


def test_probe_live_sipd(tmp_path, capsys):
    """--probe reports a live sipd's answers (UDP and TCP)."""
    require_tool("dnsmasq")
    from tests.conftest import missing
    from tests.helpers.sipd_proc import SipdProcess

    sipd = SipdProcess(tmp_path, host="127.0.0.2", domains=["example.test"])
    try:
        sipd.start()
    except Exception as exc:  # the daemon itself is broken or absent: not this test's subject
        sipd.close(check_log=False)
        missing(f"sipd does not start: {str(exc).splitlines()[0]}")
    try:
        zone = ["local=/example.test/", "local=/0.0.127.in-addr.arpa/", "host-record=sip.example.test,127.0.0.2",
                f"srv-host=_sip._udp.example.test,sip.example.test,{sipd.udp_port},10,100",
                f"srv-host=_sip._tcp.example.test,sip.example.test,{sipd.tcp_port},10,100"]
        with Dnsmasq(tmp_path, zone) as ns:
            code, report = run_json(capsys, "example.test", "-n", ns.nameserver, "--probe", "--timeout", "2",
                                    "--expect-address", "127.0.0.2")
    finally:
        sipd.close()
    probes = {c["subject"]: c for c in rows(report, section="probe")}
    assert set(probes) == {f"udp 127.0.0.2:{sipd.udp_port}", f"tcp 127.0.0.2:{sipd.tcp_port}"}
    for row in probes.values():
        assert row["data"]["status"] == 200, row
        assert row["verdict"] == "pass" and row["data"]["rtt_ms"] > 0
    assert code == 0, rows(report, "fail")
