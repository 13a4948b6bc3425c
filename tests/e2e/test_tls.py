"""TLS acceptance against the live sipd: sipsak, openssl s_client, mutual TLS, stalled handshakes, reload."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import require_tool

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
        shutil.copy(pki / "srv.pem", cert)
        shutil.copy(pki / "srv.key", key)
        proc.tls_port = proc.port + 1
        proc.config["server"]["listen"].append(f"tls:127.0.0.1:{proc.tls_port}")
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


def test_mutual_tls_require_cert(tls_sipd: Callable[..., Any], pki: Path) -> None:
    proc = tls_sipd(require_cert=True)
    without = s_client(proc.tls_port, "-tls1_2")
    # refused: an alert, or the connection dropped during the handshake (no cipher negotiated)
    assert without.returncode != 0, without.stdout
    assert "alert" in without.stderr or "Cipher is (NONE)" in without.stdout, without.stdout + without.stderr
    with_cert = s_client(proc.tls_port, "-tls1_2", "-cert", str(pki / "alice.pem"), "-key", str(pki / "alice.key"),
                         "-CAfile", str(pki / "root" / "root.pem"))
    assert "Cipher is" in with_cert.stdout and "alert" not in with_cert.stderr, with_cert.stderr
    assert "Verify return code: 0 (ok)" in with_cert.stdout


def _sipsak_options(port: int) -> float:
    t0 = time.monotonic()
    res = subprocess.run([shutil.which("sipsak") or "sipsak", "--tls-ignore-cert-failure", "-E", "tls",
                          "-s", f"sip:127.0.0.1:{port}"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    return time.monotonic() - t0


def test_stalled_handshakes_do_not_delay_others(tls_sipd: Callable[..., Any]) -> None:
    require_tool("sipsak")
    proc = tls_sipd(max_version="1.2", handshake_timeout=30.0)
    baseline = _sipsak_options(proc.tls_port)
    stalled = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", proc.tls_port), timeout=5)
            s.send(b"\x16\x03\x01")  # a ClientHello that never finishes
            stalled.append(s)
        took = _sipsak_options(proc.tls_port)
    finally:
        for s in stalled:
            s.close()
    assert took < baseline + 1.0, (baseline, took)


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
    assert res.returncode != 0 and "kept old" in res.stderr
    assert "new.example.test" in _subject(proc.tls_port)
