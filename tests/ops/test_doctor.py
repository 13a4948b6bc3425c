"""sipctl doctor against a live sipd: all green when healthy, and each broken piece its own red line."""

from __future__ import annotations

import datetime as dt
import json
import socket

import pytest

from conftest import require_tool
from helpers.dnsmasq import Dnsmasq
from helpers.sipd_proc import SipdProcess

pytestmark = pytest.mark.e2e


def _zone(port: int, address: str = "127.0.0.1") -> list[str]:
    return [
        "local=/doc.test/",
        "local=/0.0.127.in-addr.arpa/",
        f"host-record=sip.doc.test,{address}",
        f"srv-host=_sip._udp.doc.test,sip.doc.test,{port},10,100",
        f"srv-host=_sip._tcp.doc.test,sip.doc.test,{port},10,100",
        "naptr-record=doc.test,20,10,s,SIP+D2T,,_sip._tcp.doc.test",
        "naptr-record=doc.test,30,10,s,SIP+D2U,,_sip._udp.doc.test",
    ]


def _doctor(proc: SipdProcess, *extra: str) -> tuple[int, dict]:
    r = proc.sipctl("doctor", "--json", *extra, check=False)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, json.loads(r.stdout)


def _verdicts(data: dict, area: str) -> list[str]:
    return [f["verdict"] for f in data["findings"] if f["area"] == area]


@pytest.fixture
def setup(tmp_path):
    require_tool("dnsmasq")
    for sub in ("sipd", "dns", "dns2"):
        (tmp_path / sub).mkdir()
    proc = SipdProcess(tmp_path / "sipd", domains=["doc.test"], users=[("alice@doc.test", "alicepw")])
    ns = Dnsmasq(tmp_path / "dns", _zone(proc.port))
    proc.config["dns"] = {"nameservers": [ns.nameserver]}
    proc.write_config()
    proc.start()
    yield proc, ns
    proc.close()
    ns.stop()


def test_healthy_setup_is_all_green(setup):
    proc, _ = setup
    rc, data = _doctor(proc)
    bad = [f for f in data["findings"] if f["verdict"] == "fail"]
    assert rc == 0 and data["ok"] and not bad, bad
    for area in ("config", "database", "daemon", "listen", "domains", "dns", "log"):
        assert _verdicts(data, area) and set(_verdicts(data, area)) == {"pass"}, (area, data)


def test_daemon_stopped_and_port_taken(setup):
    proc, _ = setup
    proc.stop()
    rc, data = _doctor(proc, "--no-dns")
    assert rc == 1
    assert _verdicts(data, "daemon") == ["fail"]
    assert _verdicts(data, "database") == ["pass"]
    # something else grabs the UDP port: the listen line for it turns red with a hint
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", proc.port))
        rc, data = _doctor(proc, "--no-dns")
    listen = {f["subject"]: f for f in data["findings"] if f["area"] == "listen"}
    udp = listen[f"udp:127.0.0.1:{proc.port}"]
    assert udp["verdict"] == "fail" and "in use" in udp["detail"] and "ss -lntup" in udp["hint"]
    assert listen[f"tcp:127.0.0.1:{proc.port}"]["verdict"] == "warn"


def test_database_down(setup):
    proc, _ = setup
    with socket.socket() as s:  # a port where no database listens
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    r = proc.sipctl("--db-url", f"mysql://sipd:secret@127.0.0.1:{dead}/sipd", "doctor", "--json", "--no-dns", check=False)
    data = json.loads(r.stdout)
    db = [f for f in data["findings"] if f["area"] == "database"]
    assert r.returncode == 1 and db[0]["verdict"] == "fail"
    assert "secret" not in r.stdout and "database.url" in (db[0]["detail"] + db[0]["hint"])
    assert _verdicts(data, "daemon") == ["pass"]


def test_wrong_dns(tmp_path, setup):
    proc, ns = setup
    ns.stop()
    wrong = Dnsmasq(tmp_path / "dns2", _zone(proc.port, address="127.0.0.9"))
    try:
        proc.config["dns"] = {"nameservers": [wrong.nameserver]}
        proc.write_config()
        rc, data = _doctor(proc)
    finally:
        wrong.stop()
    dns = [f for f in data["findings"] if f["area"] == "dns"]
    assert rc == 1 and dns[0]["verdict"] == "fail", dns
    assert dns[0]["hint"]
    assert set(_verdicts(data, "daemon")) == {"pass"}


def test_expired_certificate(tmp_path, setup):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    proc, _ = setup
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "doc.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=400)).not_valid_after(now - dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("doc.test")]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    proc.config["tls"] = {"certificate": str(tmp_path / "cert.pem"), "private_key": str(tmp_path / "key.pem")}
    proc.write_config()
    rc, data = _doctor(proc, "--no-dns")
    tls = [f for f in data["findings"] if f["area"] == "tls"]
    assert rc == 1 and any(f["verdict"] == "fail" and "expire" in f["detail"].lower() for f in tls), tls


def test_certificate_from_the_configured_ca_is_green(tmp_path, setup):
    """The chain is verified against [tls] ca_file, as sipd uses it: a lab CA's certificate is fine."""
    proc, _ = setup
    ca, cert, key = tmp_path / "ca", tmp_path / "sipd.crt", tmp_path / "sipd.key"
    proc.sipctl("cert", "ca", "init", "--dir", str(ca))
    proc.sipctl("cert", "ca", "issue", "--ca", str(ca), "--cn", "doc.test", "--san", "doc.test",
                "--cert-out", str(cert), "--key-out", str(key))
    proc.config["tls"] = {"certificate": str(cert), "private_key": str(key), "ca_file": str(ca / "root.pem")}
    proc.write_config()
    rc, data = _doctor(proc, "--no-dns")
    tls = [f for f in data["findings"] if f["area"] == "tls"]
    assert [f["verdict"] for f in tls] == ["pass"], tls
    r = proc.sipctl("doctor", "--no-dns", check=False)
    assert "Warning" not in r.stderr and "warnings.warn" not in r.stderr, r.stderr
