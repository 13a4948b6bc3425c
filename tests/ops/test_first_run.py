"""scripts/_venv.sh (behind scripts/sipd and scripts/test) is not silent while it builds the virtualenv:
it says what it does, step by step, and how long it took. A stand-in python plays venv and pip here
(a real first install downloads for a minute); the script under test is the real one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAKE_PYTHON = r"""#!/bin/sh
# "python -m venv DIR": make DIR/bin/python this same stand-in; "python -m pip install ...": talk like pip
if [ "$2" = venv ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0; fi
case "$*" in
  *--upgrade*pip*) echo "Requirement already satisfied: pip in ./lib"; exit 0 ;;
esac
echo "Obtaining file:///src"
echo "Collecting rich>=13 (from sipd==0.1.0)"
echo "  Downloading rich-13.7.1-py3-none-any.whl (240 kB)"
echo "Collecting typer>=0.12 (from sipd==0.1.0)"
echo "Building wheel for sipd (pyproject.toml): started"
echo "Installing collected packages: typer, rich, sipd"
echo "Successfully installed rich-13.7.1 sipd-0.1.0 typer-0.12.3"
[ -n "$FAIL_INSTALL" ] && { echo "ERROR: no matching distribution" ; exit 1; }
exit 0
"""


def _tree(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "_venv.sh", tmp_path / "scripts" / "_venv.sh")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'sipd'\n")
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    return fake


def _run(tmp_path: Path, fake: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = f'source "{tmp_path}/scripts/_venv.sh" speed; echo "venv ready: $venv"'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHON": str(fake), **env})


def test_first_run_shows_each_step(tmp_path):
    fake = _tree(tmp_path)
    r = _run(tmp_path, fake)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith("setting up") and "creating the virtualenv" in lines[0]
    assert lines[1].startswith("installing sipd and its dependencies") and "install.log" in lines[1]
    assert "  Collecting rich>=13" in lines and "  Collecting typer>=0.12" in lines  # one line per package
    assert "  Installing collected packages: typer, rich, sipd" in lines
    assert lines[-1].startswith("done in ")
    assert (tmp_path / ".venv" / "install.log").read_text().count("Collecting") == 2  # the full log is kept
    again = _run(tmp_path, fake)  # installed: silent
    assert again.returncode == 0 and again.stderr == ""


def test_failed_install_says_so_with_the_log(tmp_path):
    fake = _tree(tmp_path)
    r = _run(tmp_path, fake, FAIL_INSTALL="1")
    assert r.returncode == 1
    assert "ERROR: no matching distribution" in r.stderr
    assert r.stderr.rstrip().splitlines()[-1].startswith("error: installing sipd's dependencies failed (full log:")
    assert "venv ready" not in r.stdout
