"""TLS acceptance against the live sipd: sipsak, openssl s_client, mutual TLS, stalled handshakes, reload."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import free_port, missing, require_tool

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sipctl.lib import cert as lib

    d = tmp_path_factory.mktemp("e2e-pki")
    lib.ca_init(d / "root", "E2E Root", key_type="ec:p256")
    lib.ca_init(d / "int", "E2E Int", key_type="ec:p256", parent=d / "root")
    lib.ca_issue(d / "int", "sip.example.test", ["example.test", "127.0.0.1"], cert_out=d / "srv.pem",
                 key_out=d / "srv.key", key_type="rsa:4096")
    lib.ca_issue(d / "root", "new.example.test", ["127.0.0.1"], cert_out=d / "new.pem", key_out=d / "new.key",
                 key_type="ec:p256")
    lib.ca_issue(d / "root", "alice", [], client=True, cert_out=d / "alice.pem", key_out=d / "alice.key",
                 key_type="ec:p256")
    return d


@pytest.fixture
def tls_sipd(server_factory: Callable[..., Any], pki: Path, tmp_path: Path) -> Callable[..., Any]:
    def make(**tls: Any) -> Any:
        proc = server_factory(start=False, below=10000)
        if not hasattr(proc, "config"):
            pytest.skip("sipd-specific TLS configuration")
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        proc.tls_port = free_port("tcp", below=10000)
        proc.config["server"]["listen"] += [f"tls:127.0.0.1:{proc.tls_port}", *tls.pop("extra_listen", [])]
        cert.write_bytes(Path(tls.pop("certificate", pki / "srv.pem")).read_bytes())
        key.write_bytes(Path(tls.pop("private_key", pki / "srv.key")).read_bytes())
        for name, table in tls.pop("server_domains", {}).items():  # sections: keys hold ':' and '.'
            proc.config[f'tls.server_domains."{name}"'] = table
        proc.config["tls"] = {"certificate": str(cert), "private_key": str(key),
                              "ca_file": str(pki / "root" / "root.pem"), **tls}
        proc.cert_path, proc.key_path = cert, key
        proc.write_config()
        proc.start()
        return proc
    return make


def s_client(port: int, *args: str, data: str = "") -> subprocess.CompletedProcess[str]:
    openssl = require_tool("openssl")
    return subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "sip.example.test", *args],
                          input=data, capture_output=True, text=True, timeout=20)


def test_sipsak_over_tls_capped_at_12(tls_sipd: Callable[..., Any]) -> None:
    sipsak = require_tool("sipsak")
    proc = tls_sipd(max_version="1.2")
    res = subprocess.run([sipsak, "--tls-ignore-cert-failure", "-E", "tls", "-s", f"sip:127.0.0.1:{proc.tls_port}"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "from tls:127.0.0.1" in proc.log_text()


def test_old_versions_refused_intermediate_chain_verifies(tls_sipd: Callable[..., Any], pki: Path) -> None:
    proc = tls_sipd()
    old = s_client(proc.tls_port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert old.returncode != 0 and "TLSv1.1" not in old.stdout.split("New, ", 1)[-1][:40]
    ok = s_client(proc.tls_port, "-CAfile", str(pki / "root" / "root.pem"), "-verify_return_error",
                  "-verify_hostname", "sip.example.test")
    # (s_client's exit status reflects how the session ended after stdin's EOF, not the handshake)
    assert "Verify return code: 0 (ok)" in ok.stdout, ok.stdout + ok.stderr
    assert "4096 bit" in ok.stdout and "TLSv1.3" in ok.stdout
    assert "i:CN = E2E Int" in ok.stdout  # the intermediate is sent


def _options_over_tls(port: int, ctx: ssl.SSLContext) -> str:
    """Handshake, send an OPTIONS, return the status line ("" when refused or no answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="sip.example.test") as s:
            lport = s.getsockname()[1]
            s.sendall((f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                       f"Via: SIP/2.0/TLS 127.0.0.1:{lport};branch=z9hG4bK-mt{lport};rport\r\n"
                       f"From: <sip:probe@127.0.0.1>;tag={lport}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
                       f"Call-ID: mt-{lport}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                       "Content-Length: 0\r\n\r\n").encode())
            data = s.recv(65535)
    except (OSError, ssl.SSLError):
        return ""
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


def test_mutual_tls_require_cert(tls_sipd: Callable[..., Any], pki: Path) -> None:
    proc = tls_sipd(require_cert=True)
    ca = str(pki / "root" / "root.pem")
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = ssl.create_default_context(cafile=ca)
        ctx.maximum_version = version
        assert _options_over_tls(proc.tls_port, ctx) == "", f"served a client without certificate ({version})"
        ctx.load_cert_chain(str(pki / "alice.pem"), str(pki / "alice.key"))
        assert _options_over_tls(proc.tls_port, ctx).startswith("SIP/2.0 200"), proc.log_tail()
    assert "handshake with 127.0.0.1" in proc.log_text()  # the refusals are logged


def _read_message(s: ssl.SSLSocket, buf: bytearray) -> bytes:
    """One SIP message from a stream (Content-Length framing); bounded by the socket timeout."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65535)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, _ = bytes(buf).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            length = int(value)
    total = len(head) + 4 + length
    while len(buf) < total:
        chunk = s.recv(65535)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    msg = bytes(buf[:total])
    del buf[:total]
    return msg


def tls_register(port: int, user: str = "alice", password: str = "alicepw", domain: str = "example.test") -> int:
    """REGISTER over a new TLS connection with digest auth; returns the final status code."""
    from .security_ua import digest, parse

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as s:
        lport = s.getsockname()[1]
        buf = bytearray()
        auth: list[str] = []
        for cseq in (1, 2):
            aor = f"sip:{user}@{domain}"
            s.sendall("\r\n".join([
                f"REGISTER sip:{domain} SIP/2.0", f"Via: SIP/2.0/TLS 127.0.0.1:{lport};branch=z9hG4bK-r{lport}-{cseq};rport",
                "Max-Forwards: 70", f"From: <{aor}>;tag=t{lport}", f"To: <{aor}>", f"Call-ID: reg-{lport}",
                f"CSeq: {cseq} REGISTER", f"Contact: <sip:{user}@127.0.0.1:{lport};transport=tls>", "Expires: 60",
                *auth, "Content-Length: 0", "", ""]).encode())
            first, headers = parse(_read_message(s, buf))
            status = int(first.split()[1])
            if status != 401 or auth:
                return status
            auth = [f"Authorization: {digest('REGISTER', f'sip:{domain}', user, password, headers['www-authenticate'][0])}"]
    return 0


def _timed_register(port: int) -> float:
    t0 = time.monotonic()
    assert tls_register(port) == 200
    return time.monotonic() - t0


def test_stalled_handshakes_do_not_delay_registration(tls_sipd: Callable[..., Any]) -> None:
    proc = tls_sipd(handshake_timeout=30.0)
    baseline = min(_timed_register(proc.tls_port) for _ in range(3))
    stalled = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", proc.tls_port), timeout=5)
            s.send(b"\x16\x03\x01")  # a ClientHello that never finishes
            stalled.append(s)
        took = _timed_register(proc.tls_port)
        listed = json.loads(proc.sipctl("tls", "list", "--json").stdout)
    finally:
        for s in stalled:
            s.close()
    assert took < baseline + 0.5, (baseline, took)
    assert listed["listeners"][0]["pending_handshakes"] >= 190, listed["listeners"]


def _subject(port: int) -> str:
    out = s_client(port, "-showcerts").stdout
    for line in out.splitlines():
        if line.strip().startswith("0 s:"):
            return line
    return out[-200:]


def test_replacing_cert_files_switches_new_connections(tls_sipd: Callable[..., Any], pki: Path) -> None:
    proc = tls_sipd(reload_interval=0.2)
    assert "sip.example.test" in _subject(proc.tls_port)
    proc.key_path.write_bytes((pki / "new.key").read_bytes())
    proc.cert_path.write_bytes((pki / "new.pem").read_bytes())
    deadline = time.monotonic() + 10
    while "new.example.test" not in _subject(proc.tls_port):
        assert time.monotonic() < deadline, proc.log_tail()
        time.sleep(0.2)
    listed = proc.sipctl("tls", "list", "--json").stdout
    assert "CN=new.example.test" in listed
    assert "certificate reloaded" in proc.log_text()
    # a broken key: reported, the working certificate stays
    proc.key_path.write_text("garbage\n")
    res = proc.sipctl("tls", "reload", check=False)
    assert res.returncode != 0 and "kept old" in res.stderr and "Hint: fix the files named above" in res.stderr
    assert "new.example.test" in _subject(proc.tls_port)


# ---------------------------------------------------------------------------------- baresip over TLS

@pytest.mark.parametrize("caller_tp,callee_tp", [("tls", "udp"), ("udp", "tls")])
def test_baresip_calls_over_tls(tls_sipd: Callable[..., Any], baresip_factory: Callable[..., Any],
                                caller_tp: str, callee_tp: str) -> None:
    """TLS caller reaches a UDP callee and back; calls *to* a TLS-registered baresip (which has no
    server certificate) must reuse the connection it registered on."""
    from .test_baresip import call_with_media

    proc = tls_sipd()
    proxy = {"tls": f"127.0.0.1:{proc.tls_port}", "udp": proc.address}
    callee = baresip_factory("bob", transport=callee_tp, proxy=proxy[callee_tp])
    caller = baresip_factory("alice", transport=caller_tp, proxy=proxy[caller_tp], answer="manual")
    call_with_media(caller, callee)


def test_refuses_to_start_with_a_broken_tls_file(server_factory: Callable[..., Any], pki: Path, tmp_path: Path) -> None:
    proc = server_factory(start=False)
    if not hasattr(proc, "config"):
        pytest.skip("sipd-specific TLS configuration")
    key = tmp_path / "broken.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    proc.config["server"]["listen"].append(f"tls:127.0.0.1:{proc.port + 1}")
    proc.config["tls"] = {"certificate": str(pki / "srv.pem"), "private_key": str(key)}
    proc.write_config()
    res = subprocess.run(proc.argv(), env=proc.env(), cwd=proc.dir, capture_output=True, text=True, timeout=30)
    out = (res.stdout + res.stderr).strip()
    assert res.returncode != 0, out
    assert "Traceback" not in out, out
    lines = [ln for ln in out.splitlines() if "TLS" in ln]
    assert len(lines) == 1 and "cannot load certificate/key/CA" in lines[0] and "sipctl cert check" in lines[0], out


# ---------------------------------------------------------------------------------- linphone over TLS


def test_linphone_registers_over_tls_and_rejects_wrong_name(tls_sipd: Callable[..., Any], tmp_path: Path) -> None:
    """CA and certificates made with the real ``sipctl cert ca``; linphone verifies the server."""
    if not shutil.which("linphone-daemon"):
        missing("linphone-daemon not installed (Debian package linphone-cli)")
    ca, certs = tmp_path / "lab-ca", tmp_path / "certs"
    certs.mkdir()

    def sipctl(*calls: list[str]) -> None:
        procs = [subprocess.Popen([sys.executable, "-m", "sipctl", "cert", *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for args in calls]
        for p in procs:
            out, _ = p.communicate(timeout=60)
            assert p.returncode == 0, out

    sipctl(["ca", "init", "--dir", str(ca), "--cn", "Lab CA", "--key-type", "ec:p256"])
    sipctl(["ca", "issue", "--ca", str(ca), "--cn", "sip.example.test", "--san", "example.test", "--san", "127.0.0.1",
            "--key-type", "ec:p256", "--cert-out", str(certs / "good.pem"), "--key-out", str(certs / "good.key")],
           ["ca", "issue", "--ca", str(ca), "--cn", "other.example.org", "--key-type", "ec:p256",
            "--cert-out", str(certs / "other.pem"), "--key-out", str(certs / "other.key")])
    wrong_port = free_port("tcp")
    proc = tls_sipd(certificate=str(certs / "good.pem"), private_key=str(certs / "good.key"),
                    extra_listen=[f"tls:127.0.0.1:{wrong_port}"],
                    server_domains={f"tls:127.0.0.1:{wrong_port}": {"certificate": str(certs / "other.pem"),
                                                                    "private_key": str(certs / "other.key")}})
    from helpers.linphone import LinphoneUA

    good = LinphoneUA(tmp_path, "alice", "alicepw", proxy=f"127.0.0.1:{proc.tls_port}", transport="tls",
                      cafile=ca / "root.pem").start()
    wrong = LinphoneUA(tmp_path, "bob", "bobpw", proxy=f"127.0.0.1:{wrong_port}", transport="tls",
                       cafile=ca / "root.pem").start()
    try:
        assert good.wait_registered(15) == "OK", good.log_tail() + proc.log_tail()
        assert wrong.wait_registered(3) != "OK"
        assert f"tls tls:127.0.0.1:{wrong_port}: handshake with 127.0.0.1" in proc.log_text(), proc.log_tail()
        listed = proc.sipctl("ul", "show", "--json", check=False).stdout
        assert "alice" in listed and "bob@" not in listed, listed
    finally:
        good.stop()
        wrong.stop()


def test_tls_list_piped_is_plain_with_whole_values(tls_sipd: Callable[..., Any]) -> None:
    """`sipctl tls list | cat`: one row per TLS domain, tab-separated, the subject and names uncut."""
    proc = tls_sipd()
    listed = proc.sipctl("tls", "list", "--json").stdout
    domains = json.loads(listed)
    domains = domains.get("domains", []) if isinstance(domains, dict) else domains
    lines = proc.sipctl("tls", "list").stdout.splitlines()
    header = lines[0].split("\t")
    assert header[:4] == ["name", "role", "match", "subject"]
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
    assert [(r["name"], r["subject"]) for r in rows] == [(d.get("name"), d.get("subject", "")) for d in domains]
    assert any(r["subject"].startswith("CN=") for r in rows) and "…" not in "".join(lines)
