"""sipctl cert through the CLI entry point, cross-checked with the openssl command line tool."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from sipctl.app import main
from tests.conftest import require_tool


@pytest.fixture(scope="module")
def openssl() -> str:
    return require_tool("openssl")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def ossl(openssl: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([openssl, *args], capture_output=True, text=True, timeout=30, check=check)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root CA, intermediate CA, and a 4096-bit server cert through the intermediate (made once)."""
    from sipctl.lib import cert as lib

    d = tmp_path_factory.mktemp("lab")
    lib.ca_init(d / "root", "Test Root", key_type="ec:p256")
    lib.ca_init(d / "int", "Test Intermediate", key_type="ec:p256", parent=d / "root")
    lib.ca_issue(d / "int", "sip.example.test", ["example.test", "127.0.0.1"], cert_out=d / "srv.pem",
                 key_out=d / "srv.key", key_type="rsa:4096")
    return d


def test_csr_default_key_profile_and_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str], openssl: str) -> None:
    key, csr = tmp_path / "sip.key", tmp_path / "sip.csr"
    code, out, err = run(capsys, "cert", "csr", "--cn", "sip.example.org", "--san", "sip.example.org",
                         "--san", "example.org", "--org", "Example Univ", "--key-out", str(key), "--csr-out", str(csr))
    assert code == 0, err
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "not encrypted so that sipd can start unattended" in err
    text = ossl(openssl, "req", "-in", str(csr), "-noout", "-text", "-verify").stdout
    assert "DNS:sip.example.org, DNS:example.org" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "O = Example Univ, CN = sip.example.org" in text
    assert "Public-Key: (2048 bit)" in text
    ossl(openssl, "pkey", "-in", str(key), "-noout")  # unencrypted: readable without passphrase
    # the CSR's public key is the key's
    pub_csr = ossl(openssl, "req", "-in", str(csr), "-noout", "-pubkey").stdout
    pub_key = ossl(openssl, "pkey", "-in", str(key), "-pubout").stdout
    assert pub_csr == pub_key


def test_csr_cn_always_in_san_and_ec_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], openssl: str) -> None:
    code, _, err = run(capsys, "cert", "csr", "--cn", "sip.example.org", "--san", "example.org", "--key-type",
                       "ec:p384", "--key-out", str(tmp_path / "k"), "--csr-out", str(tmp_path / "r"))
    assert code == 0, err
    text = ossl(openssl, "req", "-in", str(tmp_path / "r"), "-noout", "-text").stdout
    assert "DNS:sip.example.org, DNS:example.org" in text
    assert "secp384r1" in text or "P-384" in text


def test_csr_reuses_existing_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], openssl: str) -> None:
    key = tmp_path / "existing.key"
    ossl(openssl, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    csr = tmp_path / "r.csr"
    code, _, err = run(capsys, "cert", "csr", "--cn", "sip.example.org", "--key", str(key), "--csr-out", str(csr))
    assert code == 0, err
    assert "not encrypted" not in err  # no new key written, nothing to warn about
    assert ossl(openssl, "req", "-in", str(csr), "-noout", "-pubkey").stdout == \
        ossl(openssl, "pkey", "-in", str(key), "-pubout").stdout


def test_csr_encrypted_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], openssl: str,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPCTL_KEY_PASSPHRASE", "s3cret-pass")
    key = tmp_path / "k.pem"
    code, _, err = run(capsys, "cert", "csr", "--cn", "a.example.org", "--key-out", str(key),
                       "--csr-out", str(tmp_path / "r"), "--encrypt")
    assert code == 0, err
    assert "ENCRYPTED" in key.read_text()
    assert ossl(openssl, "pkey", "-in", str(key), "-passin", "pass:wrong", "-noout", check=False).returncode != 0
    ossl(openssl, "pkey", "-in", str(key), "-passin", "pass:s3cret-pass", "-noout")


def test_csr_refuses_to_overwrite_and_bad_key_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k"
    key.write_text("precious")
    code, _, err = run(capsys, "cert", "csr", "--cn", "a.org", "--key-out", str(key), "--csr-out", str(tmp_path / "r"))
    assert code == 8 and "already exists" in err and "Traceback" not in err
    assert key.read_text() == "precious"
    code, _, err = run(capsys, "cert", "csr", "--cn", "a.org", "--key-type", "dsa:1024",
                       "--key-out", str(tmp_path / "k2"), "--csr-out", str(tmp_path / "r2"))
    assert code == 2 and "unknown key type" in err
    code, _, err = run(capsys, "cert", "csr", "--cn", "a.org", "--csr-out", str(tmp_path / "r3"))
    assert code == 2 and "--key-out" in err


def test_selfsign_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str], openssl: str) -> None:
    crt, key = tmp_path / "c.pem", tmp_path / "k.pem"
    code, _, err = run(capsys, "cert", "selfsign", "--cn", "sip.example.test", "--san", "127.0.0.1",
                       "--key-type", "ec:p256", "--cert-out", str(crt), "--key-out", str(key))
    assert code == 0, err
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = ossl(openssl, "x509", "-in", str(crt), "-noout", "-text").stdout
    assert "IP Address:127.0.0.1" in text and "DNS:127.0.0.1" in text
    ossl(openssl, "verify", "-CAfile", str(crt), str(crt))
    code, out, err = run(capsys, "cert", "check", "--cert", str(crt), "--key", str(key), "--ca", str(crt),
                         "--domain", "sip.example.test", "--host", "127.0.0.1")
    assert code == 0, err
    assert "ok: private key matches" in out and "ok: covers host 127.0.0.1" in out


def test_ca_with_intermediate_and_4096_leaf(lab: Path, capsys: pytest.CaptureFixture[str], openssl: str) -> None:
    assert (lab / "srv.pem").read_text().count("BEGIN CERTIFICATE") == 2  # leaf + intermediate
    assert stat.S_IMODE((lab / "int" / "ca.key").stat().st_mode) == 0o600
    ossl(openssl, "verify", "-CAfile", str(lab / "root" / "root.pem"), "-untrusted", str(lab / "srv.pem"), str(lab / "srv.pem"))
    code, out, err = run(capsys, "cert", "check", "--cert", str(lab / "srv.pem"), "--key", str(lab / "srv.key"),
                         "--ca", str(lab / "root" / "root.pem"), "--domain", "example.test", "--host", "sip.example.test")
    assert code == 0, err
    assert "chain verifies" in out
    code, out, _ = run(capsys, "cert", "show", "--json", str(lab / "srv.pem"))
    info = json.loads(out)
    assert code == 0 and len(info) == 2
    assert info[0]["key_type"] == "RSA" and info[0]["key_bits"] == 4096
    assert info[0]["subject"] == "CN=sip.example.test" and info[0]["issuer"] == "CN=Test Intermediate"
    assert "DNS:example.test" in info[0]["sans"] and "IP:127.0.0.1" in info[0]["sans"]
    assert info[1]["is_ca"] is True
    fp = ossl(openssl, "x509", "-in", str(lab / "srv.pem"), "-noout", "-fingerprint", "-sha256").stdout
    assert fp.strip().split("=", 1)[1] == info[0]["fingerprint_sha256"]


def test_ca_issue_via_cli_client_cert(lab: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], openssl: str) -> None:
    code, _, err = run(capsys, "cert", "ca", "issue", "--ca", str(lab / "root"), "--cn", "alice", "--client",
                       "--key-type", "ec:p256", "--cert-out", str(tmp_path / "a.pem"), "--key-out", str(tmp_path / "a.key"))
    assert code == 0, err
    text = ossl(openssl, "x509", "-in", str(tmp_path / "a.pem"), "-noout", "-text").stdout
    assert "TLS Web Client Authentication" in text and "Server Authentication" not in text
    ossl(openssl, "verify", "-purpose", "sslclient", "-CAfile", str(lab / "root" / "root.pem"), str(tmp_path / "a.pem"))


def test_ca_init_twice_refused(lab: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "cert", "ca", "init", "--dir", str(lab / "root"))
    assert code == 8 and "already exists" in err


def test_check_reports_each_problem_on_its_own_line(lab: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   openssl: str) -> None:
    other = tmp_path / "other.key"
    ossl(openssl, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(other))
    leaf_only = tmp_path / "leaf.pem"
    pem = (lab / "srv.pem").read_text()
    leaf_only.write_text(pem[: pem.index("-----END CERTIFICATE-----") + 26])
    code, out, err = run(capsys, "cert", "check", "--cert", str(leaf_only), "--key", str(other),
                         "--ca", str(lab / "root" / "root.pem"), "--domain", "other.test", "--host", "10.1.2.3")
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("problem:")]
    assert err.splitlines()[-2:][0].startswith("Error: 4 problem(s)") and err.splitlines()[-1].startswith("Hint:")
    assert any("does not belong to the certificate" in e for e in errors)
    assert any("issuer CN=Test Intermediate not found" in e for e in errors)
    assert any("SIP domain other.test" in e for e in errors)
    assert any("host 10.1.2.3" in e for e in errors)
    assert "Traceback" not in err


def test_check_wildcard_never_covers_sip_domain(lab: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sipctl.lib import cert as lib

    lib.ca_issue(lab / "root", "*.example.test", [], cert_out=tmp_path / "w.pem", key_out=tmp_path / "w.key",
                 key_type="ec:p256")
    code, out, err = run(capsys, "cert", "check", "--cert", str(tmp_path / "w.pem"), "--ca", str(lab / "root" / "root.pem"),
                         "--domain", "sip.example.test", "--host", "sip.example.test")
    assert code == 1
    assert "wildcards do not count for SIP domains" in err
    assert "ok: covers host sip.example.test" in out


def test_check_expired_and_expiring(lab: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sipctl.lib import cert as lib

    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=100)
    lib.ca_issue(lab / "root", "old.example.test", [], cert_out=tmp_path / "old.pem", key_out=tmp_path / "old.key",
                 key_type="ec:p256", days=10, not_before=past)
    code, out, err = run(capsys, "cert", "check", "--cert", str(tmp_path / "old.pem"), "--ca", str(lab / "root" / "root.pem"),
                         "--json")
    report = json.loads(out)
    assert code == 1 and not report["ok"]
    assert any(p.startswith("expired on") for p in report["problems"])
    lib.ca_issue(lab / "root", "soon.example.test", [], cert_out=tmp_path / "soon.pem", key_out=tmp_path / "soon.key",
                 key_type="ec:p256", days=10)
    code, out, err = run(capsys, "cert", "check", "--cert", str(tmp_path / "soon.pem"), "--key", str(tmp_path / "soon.key"),
                         "--ca", str(lab / "root" / "root.pem"), "--domain", "soon.example.test")
    assert code == 0, err
    assert "Warning: expires in 9 days" in err or "Warning: expires in 10 days" in err


def test_show_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], lab: Path) -> None:
    code, _, err = run(capsys, "cert", "show", str(tmp_path / "nope.pem"))
    assert code == 7 and "does not exist" in err
    code, _, err = run(capsys, "cert", "show", str(lab / "srv.key"))
    assert code == 1 and "private key, not a certificate" in err
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    code, _, err = run(capsys, "cert", "show", str(junk))
    assert code == 1 and "not a certificate" in err
    assert all("Traceback" not in e for e in (err,))


def test_cert_group_does_not_import_cryptography_at_startup() -> None:
    code = "import sys, sipctl.commands.cert, sipctl.commands.tls; print('cryptography' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    res = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_check_against_system_cas_prints_no_python_warning(tmp_path: Path) -> None:
    """System bundles carry old roots that cryptography warns about; the operator sees only the check."""
    import sys

    def sipctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-W", "default", "-m", "sipctl", *args], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)

    assert sipctl("cert", "ca", "init", "--dir", "ca").returncode == 0
    assert sipctl("cert", "ca", "issue", "--ca", "ca", "--cn", "example.test", "--san", "example.test",
                  "--cert-out", "sipd.crt", "--key-out", "sipd.key").returncode == 0
    r = sipctl("cert", "check", "--cert", "sipd.crt", "--key", "sipd.key", "--domain", "example.test")
    assert r.returncode == 1  # a lab CA is not among the system CAs
    assert "Warning" not in r.stderr and "warn(" not in r.stderr, r.stderr
    assert r.stderr.startswith("problem: chain does not verify against")
    assert r.stderr.rstrip().splitlines()[-1].startswith("Hint: ")
