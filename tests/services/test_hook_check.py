"""``sipd --check-config`` and ``sipctl config check`` import the routing hook in a child process
(time-limited) and check ``route(request)``; a daemon starts with a hook whose route is not a plain
``def`` and refuses one whose route has the wrong shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sipd.services.hook_check import probe
from tests.daemon.harness import ROOT, UA, live_daemon

FACTORY = '''
print("a hook may print at import")          # must not spoil the verdict


def make_router(status):
    def route(request):
        if request.ruri_user == "blocked":
            request.reply(status, "Blocked By Hook")
    return route


route = make_router(403)                        # no "def route" text anywhere
'''

CASES = {
    "comment_only": ("# def route(request): is what this file should have\nx = 1\n", "defines no route(request)"),
    "syntax": ("def route(request):\n    if True\n        pass\n", "syntax.py:2: syntax error"),
    "two_args": ("def route(request, extra):\n    pass\n", "cannot be called as route(request)"),
    "not_callable": ("route = 42\n", "route is int, not a function"),
    "raises": ("def helper():\n    raise RuntimeError('no settings')\n\nhelper()\n", "raises.py:2: importing"),
    "exits": ("import sys\nsys.exit(3)\n", "raised SystemExit"),
}


def write_config(tmp_path: Path, hook: Path) -> Path:
    cfg = tmp_path / f"{hook.stem}.toml"
    cfg.write_text(f'[routing]\nhook = "{hook}"\n[database]\nurl = "sqlite:///{tmp_path}/sipd.db"\n')
    return cfg


def check_config(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sipd", "--check-config", "--config", str(cfg)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_config_imports_the_hook(tmp_path, name):
    source, expected = CASES[name]
    hook = tmp_path / f"{name}.py"
    hook.write_text(source)
    proc = check_config(write_config(tmp_path, hook))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert expected in proc.stderr and "routing.hook" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_route_made_by_a_factory_passes_and_sipctl_says_the_same(tmp_path):
    hook = tmp_path / "factory.py"
    hook.write_text(FACTORY)
    cfg = write_config(tmp_path, hook)
    proc = check_config(cfg)
    assert proc.returncode == 0 and "configuration OK" in proc.stdout, proc.stderr
    bad = tmp_path / "two_args.py"
    bad.write_text(CASES["two_args"][0])
    res = subprocess.run([sys.executable, "-m", "sipctl", "--config", str(write_config(tmp_path, bad)),
                          "config", "check", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    problems = json.loads(res.stdout)["problems"]
    assert [p["key"] for p in problems] == ["routing.hook"] and "route(request)" in problems[0]["message"]


def test_a_hook_that_hangs_at_import_is_reported_within_the_limit(tmp_path):
    hook = tmp_path / "hangs.py"
    hook.write_text("import time\nwhile True:\n    time.sleep(1)\n")
    problem = probe(str(hook), time_limit=3)
    assert problem is not None and "did not finish within 3 s" in problem


def test_daemon_runs_a_factory_made_route_and_refuses_a_wrong_signature(tmp_path):
    hook = tmp_path / "factory.py"
    hook.write_text(FACTORY)
    with live_daemon(tmp_path, {"routing": {"hook": str(hook)}}) as d, UA(d.port, "alice") as ua:
        ua.send(ua.request("OPTIONS", "sip:blocked@example.test"))
        reply = ua.expect(403)
        assert reply.reason == "Blocked By Hook"
    hook.write_text(CASES["two_args"][0])
    proc = subprocess.run([sys.executable, "-m", "sipd", "--config", str(d.config_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "cannot be called as route(request)" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
