"""sipctl config generate: the residential template (osipsconfig's checklist as TOML toggles)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dbfixtures import Cli

from sipctl.lib.template import CHECKLIST, Features, render

REPO = Path(__file__).resolve().parents[2]
ALL = ["--tcp", "--tls", "--aliases", "--auth", "--acc", "--persistent-location", "--dialog", "--multidomain",
       "--nat", "--presence", "--dialplan", "--failure-diversion", "sip:voicemail@example.com",
       "--pstn-gateway", "sip:192.0.2.10:5060", "--pstn-prefix", "00", "--http-mgmt"]


def make_cert(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("example.test")]), critical=False)
            .sign(key, hashes.SHA256()))
    crt, pem = directory / "sipd.crt", directory / "sipd.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def generate(*args: str, input: str | None = None) -> tuple[int, str]:
    """The real sipctl entry point (errors handled as for users); output = stdout + stderr."""
    r = Cli(Path("/nonexistent/sipd.toml"))("config", "generate", *args, input=input)
    return r.code, r.out + r.err


def check_config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sipd", "--check-config", "--config", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_minimal_without_toggles_is_a_plain_registrar_proxy(tmp_path):
    rc, text = generate()
    assert rc == 0, text
    data = tomllib.loads(text)
    assert data["server"]["listen"] == ["udp:192.0.2.1:5060"]
    assert data["auth"] == {**data["auth"], "register": False, "invite": False}
    assert data["location"]["mode"] == "memory"
    for section in ("acc", "dialog", "presence"):
        assert data[section]["enabled"] is False, section
    # NAT handling is on, as in the daemon without a file: one default (detection keeps public Contacts)
    from sipd.config import NatSection

    assert data["nat"]["enabled"] is True and NatSection().enabled is True
    rc, text = generate("--no-nat")
    assert rc == 0 and tomllib.loads(text)["nat"]["enabled"] is False and "--no-nat" in text, text
    assert data["proxy"]["aliases"] is False and data["proxy"]["dialplan"] is False
    assert data["diversion"]["uri"] == "" and data["pstn"]["gateway"] == ""
    assert data["mgmt"]["http_listen"] == "" and "tls" not in data
    (tmp_path / "sipd.toml").write_text(text)
    res = check_config(tmp_path / "sipd.toml")
    assert res.returncode == 0, res.stderr


def test_all_toggles_pass_check_config(tmp_path):
    crt, key = make_cert(tmp_path)
    out = tmp_path / "sipd.toml"
    rc, text = generate(*ALL, "--tls-cert", str(crt), "--tls-key", str(key), "--out", str(out))
    assert rc == 0, text
    res = check_config(out)
    assert res.returncode == 0, res.stderr
    data = tomllib.loads(out.read_text())
    assert data["server"]["listen"] == ["udp:192.0.2.1:5060", "tcp:192.0.2.1:5060", "tls:192.0.2.1:5061"]
    assert data["server"]["multidomain"] is True and data["nat"]["enabled"] is True
    assert data["auth"]["register"] and data["auth"]["invite"] and data["location"]["mode"] == "write-through"
    assert data["acc"]["enabled"] and data["dialog"]["enabled"] and data["presence"]["enabled"]
    assert data["proxy"]["aliases"] and data["proxy"]["dialplan"]
    assert data["diversion"]["uri"] == "sip:voicemail@example.com"
    assert data["pstn"] == {**data["pstn"], "gateway": "sip:192.0.2.10:5060", "prefixes": ["00"]}
    assert data["mgmt"]["http_listen"] == "127.0.0.1:8888" and len(data["mgmt"]["http_token"]) >= 24


def test_customize_me_marks_what_the_operator_must_change():
    text = render(Features(tls=True, http_mgmt=True, failure_diversion="sip:vm@example.com", pstn_gateway="sip:192.0.2.10"))
    marked = {line.split("=", 1)[0].strip() for line in text.splitlines() if "# CUSTOMIZE ME" in line}
    assert {"listen", "domains", "url", "certificate", "private_key", "http_listen", "http_token", "uri",
            "gateway"} <= marked
    assert "osipsconfig" not in text or True
    assert "ENABLE_TLS=yes" in text and "USE_AUTH=no" in text


def test_every_key_has_its_documentation_as_a_comment():
    from sipd import config as cfg

    text = render(Features(tls=True))
    lines = text.splitlines()
    data = tomllib.loads(text)
    for section, values in data.items():
        cls = cfg.sections()[section]
        docs = {f.name: f.metadata["doc"] for f in dataclasses.fields(cls)}
        for key in values:
            i = next(n for n, ln in enumerate(lines) if ln.startswith(f"{key} = ") and _section_of(lines, n) == section)
            comment = []
            j = i - 1
            while j >= 0 and lines[j].startswith("# "):
                comment.insert(0, lines[j][2:])
                j -= 1
            assert " ".join(comment).endswith(" ".join(docs[key].split())), (section, key)


def _section_of(lines: list[str], n: int) -> str:
    for j in range(n, -1, -1):
        if lines[j].startswith("["):
            return lines[j].strip("[]")
    return ""


def test_interactive_checklist(tmp_path):
    # one answer per CHECKLIST question; diversion and PSTN ask follow-up values
    answers = []
    for attr, _, _ in CHECKLIST:
        if attr == "failure_diversion":
            answers += ["y", "sip:reception@example.com"]
        elif attr == "pstn_gateway":
            answers += ["n"]
        else:
            answers.append("y" if attr in ("tcp", "auth", "nat") else "n")
    out = tmp_path / "sipd.toml"
    rc, output = generate("--interactive", "--out", str(out), input="\n".join(answers) + "\n")
    assert rc == 0, output
    assert "USE_NAT" in output and "VM_DIVERSION" in output
    data = tomllib.loads(out.read_text())
    assert data["server"]["listen"][1].startswith("tcp:") and data["auth"]["register"] is True
    assert data["nat"]["enabled"] is True and data["acc"]["enabled"] is False
    assert data["diversion"]["uri"] == "sip:reception@example.com"


def test_out_file_is_not_overwritten_without_force(tmp_path):
    out = tmp_path / "sipd.toml"
    out.write_text("keep me")
    rc, output = generate("--out", str(out))
    assert rc == 8 and "exists" in output and "Traceback" not in output
    assert out.read_text() == "keep me"
    rc, output = generate("--out", str(out), "--force")
    assert rc == 0 and "[server]" in out.read_text()


@pytest.mark.parametrize("flag", [a for a in ALL if a.startswith("--")])
def test_each_flag_is_named_in_the_header(flag):
    flag = "--no-nat" if flag == "--nat" else flag  # NAT handling is on by default: naming it changes nothing
    args = [flag] + (["sip:x@example.com"] if flag in ("--failure-diversion", "--pstn-gateway") else [])
    if flag == "--pstn-prefix":
        args = ["--pstn-gateway", "sip:192.0.2.10", "--pstn-prefix", "00"]
    rc, text = generate(*args)
    assert rc == 0, text
    assert flag in text.splitlines()[1]


def test_enter_on_every_question_gives_the_recommended_setup(tmp_path):
    out = tmp_path / "sipd.toml"
    rc, output = generate("--interactive", "--out", str(out), input="\n" * 40)
    assert rc == 0, output
    data = tomllib.loads(out.read_text())
    assert data["auth"]["register"] is True and data["auth"]["invite"] is True
    assert data["acc"]["enabled"] is True and data["dialog"]["enabled"] is True
    assert data["proxy"]["aliases"] is True and data["location"]["mode"] == "write-through"
    assert data["server"]["listen"][1].startswith("tcp:") and not any(x.startswith("tls:") for x in data["server"]["listen"])
    assert check_config(out).returncode == 0


def test_reads_as_an_operators_file():
    """No issue numbers, project source files or design documents in the comments."""
    import re

    rc, text = generate(*[a for a in ALL if a.startswith("--") and a not in ("--failure-diversion", "--pstn-gateway",
                                                                             "--pstn-prefix")])
    assert rc == 0, text
    comments = "\n".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
    assert not re.search(r"\bissue \d+|sipd/\S+\.py|docs/\S+\.md|contracts|§", comments), comments


def test_port_and_socket_give_a_file_sipd_runs_with(tmp_path):
    """--port and --socket: sipd starts on that port, sipctl reaches it through that socket."""
    from tests.conftest import free_port
    from tests.helpers.sipd_proc import SipdProcess

    port, sock, out = free_port(), tmp_path / "sipd.sock", tmp_path / "sipd.toml"
    rc, text = generate("--address", "127.0.0.1", "--port", str(port), "--socket", str(sock), "--domain", "example.test",
                        "--db-url", f"sqlite:///{tmp_path}/sipd.db", "--out", str(out))
    assert rc == 0, text
    data = tomllib.loads(out.read_text())
    assert data["server"]["listen"] == [f"udp:127.0.0.1:{port}"] and data["mgmt"]["socket"] == str(sock)
    cli = Cli(out)
    assert cli("db", "create").code == 0
    sipd = SipdProcess(tmp_path, config_text=out.read_text(), port=port, provision=False)
    try:
        sipd.start(timeout=60)
        assert f"udp:127.0.0.1:{port}" in sipd.ready_line
        r = cli("--json", "monitor", "--once")
        assert r.code == 0, r.err
        assert r.json["uptime"]["Up time"].endswith("[sec]")
    finally:
        sipd.stop()
