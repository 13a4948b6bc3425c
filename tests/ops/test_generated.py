"""Man pages and completions are generated from the code; the committed copies must not drift.

Regenerate with ``scripts/gen-docs`` after changing a command, an option or a config key.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import missing

from sipctl import docgen

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("rel", sorted(docgen.FILES))
def test_committed_file_matches_generated(rel):
    committed = (ROOT / rel).read_text(encoding="utf-8")
    assert committed == docgen.FILES[rel](), f"{rel} is stale: run scripts/gen-docs and commit"


@pytest.mark.parametrize("page", ["man/sipctl.1", "man/sipd.8", "man/sipd.toml.5"])
def test_man_page_renders_without_warnings(page):
    groff = shutil.which("groff")
    if not groff:
        missing("groff not installed (Debian package groff-base)")
    r = subprocess.run([groff, "-ww", "-z", "-man", str(ROOT / page)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_every_command_has_help_example_and_man_entry():
    man = (ROOT / "man/sipctl.1").read_text()
    for path, cmd in docgen.commands():
        name = "sipctl " + " ".join(path)
        assert cmd.help and cmd.help.strip(), f"{name} has no help"
        assert "Example:" in cmd.help, f"{name} has no 'Example:' line in its docstring"
        assert f".SS {docgen.esc(name)}\n" in man, f"{name} missing from man/sipctl.1"


def test_every_config_key_is_documented():
    from sipd import config

    man = (ROOT / "man/sipd.toml.5").read_text()
    for key, _type, _default, doc in config.describe():
        assert doc.strip(), f"config key {key} has no documentation"
        section, name = key.split(".", 1)
        assert f".SS [{section}]" in man and f".B {docgen.esc(name)}\n" in man, f"{key} missing from sipd.toml.5"


def test_bash_completion_offers_d_commands():
    bash = shutil.which("bash")
    assert bash
    venv_bin = Path(sys.executable).parent
    script = (
        f"source {ROOT / 'completions/sipctl.bash'}\n"
        "COMP_WORDS=(sipctl d); COMP_CWORD=1\n"
        "_sipctl_completion sipctl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    r = subprocess.run([bash, "-c", script], capture_output=True, text=True, timeout=60,
                       env={"PATH": f"{venv_bin}:/usr/bin:/bin", "HOME": "/tmp"})
    offered = set(r.stdout.split())
    assert {"db", "dns", "domain", "dp", "dialog", "doctor"} <= offered, (offered, r.stderr)
