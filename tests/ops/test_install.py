"""scripts/install puts unit, config example, man pages and completions where Debian expects them."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_install_into_destdir(tmp_path):
    r = subprocess.run([str(ROOT / "scripts/install"), "--destdir", str(tmp_path), "--prefix", "/usr", "--no-venv"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    expected = [
        "etc/systemd/system/sipd.service", "etc/sipd/sipd.toml.example", "etc/sipd/sipd.toml",
        "usr/share/man/man1/sipctl.1", "usr/share/man/man5/sipd.toml.5", "usr/share/man/man8/sipd.8",
        "usr/share/bash-completion/completions/sipctl", "usr/share/bash-completion/completions/sipd",
        "usr/share/zsh/vendor-completions/_sipctl", "usr/share/fish/vendor_completions.d/sipctl.fish",
        "etc/fail2ban/filter.d/sipd.conf",
    ]
    for rel in expected:
        assert (tmp_path / rel).is_file(), rel
    unit = (tmp_path / "etc/systemd/system/sipd.service").read_text()
    assert "ExecStart=/usr/bin/sipd --config /etc/sipd/sipd.toml" in unit and "Type=notify" in unit
    assert oct((tmp_path / "etc/sipd/sipd.toml").stat().st_mode & 0o777) == "0o640"
    # a second run keeps the operator's edited config
    (tmp_path / "etc/sipd/sipd.toml").write_text("# mine\n")
    subprocess.run([str(ROOT / "scripts/install"), "--destdir", str(tmp_path), "--no-venv"], check=True,
                   capture_output=True, timeout=60)
    assert (tmp_path / "etc/sipd/sipd.toml").read_text() == "# mine\n"


def test_bad_option_is_one_line():
    r = subprocess.run([str(ROOT / "scripts/install"), "--bogus"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--help" in r.stderr
