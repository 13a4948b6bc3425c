"""Both builds tested: the whole suite runs the pure-Python core (tests/conftest.py refuses to run on
a tree holding compiled modules); this test compiles the core with Cython (sipd/corebuild.py, what
scripts/build-core runs) in a copy of the tree, so that no extension module is ever left in the
source tree, and runs there the sans-IO core's tests and live daemons serving with the compiled
core, with SIPD_EXPECT_CORE=compiled making the copy's run refuse a partial build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import missing
from sipd import corebuild

ROOT = Path(__file__).resolve().parents[2]
# The protocol core's own tests, and live daemons (UDP, TCP, worker processes, the proxy) on it.
TESTS = ["tests/sip", "tests/daemon/test_core_build.py", "tests/daemon/test_register.py",
         "tests/daemon/test_proxy.py", "tests/daemon/test_hotpath.py"]
LEFT_OUT = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.so", "*.c", "*.egg-info", ".pytest_cache",
                                  ".hypothesis", "run", "build", "results")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_compiled_core_passes_the_core_tests_and_serves(tmp_path):
    try:
        import Cython  # noqa: F401
    except ImportError:
        missing("Cython not installed (it is in the test extra: pip install -e '.[test]')")
    if not shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0]):
        missing("no C compiler for the compiled core (apt install gcc)")
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=LEFT_OUT)
    # run from the copy: its directory comes first on sys.path, ahead of the editable install
    built = subprocess.run([sys.executable, "-m", "sipd.corebuild", "build", "--root", str(tree)], cwd=tree,
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout + built.stderr
    for name in corebuild.MODULES:
        assert corebuild._extensions(tree, name), f"{name} not compiled"
    assert not list((tree / "sipd").rglob("*.c")), "C sources left beside the modules"

    env = dict(os.environ, SIPD_EXPECT_CORE="compiled", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "-n", "2", *TESTS], cwd=tree,
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert not list((ROOT / "sipd").rglob("*.so")), "an extension module reached the source tree"
