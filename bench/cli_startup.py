#!/usr/bin/env python3
"""Start-up time of sipctl: median wall time of `sipctl --help` and `sipctl domain list` (SQLite).

Usage: python bench/cli_startup.py [-n RUNS] [--json]

Each run is a fresh process (`python -m sipctl ...`), as an operator or a cron job would start it.
Also reports which heavy modules a plain `--help` imports (should be none: start-up stays lean
because command modules import sipd.db, PyMySQL, cryptography and dnspython inside functions).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("sipd.db", "pymysql", "cryptography", "dns.resolver", "sqlite3")


def _time(cmd: list[str], env: dict[str, str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        samples.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.decode()[-300:]}")
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "sipd.toml"
        cfg.write_text(f'[database]\nurl = "sqlite:///{tmp}/sipd.db"\n')
        env = {**os.environ, "SIPD_CONFIG": str(cfg)}
        env.pop("SIPCTL_DB_URL", None)
        base = [py, "-m", "sipctl"]
        subprocess.run(base + ["db", "create"], env=env, check=True, stdout=subprocess.DEVNULL, timeout=60)
        subprocess.run(base + ["domain", "add", "example.org"], env=env, check=True, stdout=subprocess.DEVNULL,
                       timeout=60)
        results = {
            "python -c pass": _time([py, "-c", "pass"], env, args.runs),
            "sipctl --help": _time(base + ["--help"], env, args.runs),
            "sipctl domain list": _time(base + ["domain", "list"], env, args.runs),
        }
        probe = ("import sys; from sipctl.app import main; "
                 "import contextlib, io\n"
                 "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
                 f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
        heavy = subprocess.run([py, "-c", probe], env=env, capture_output=True, text=True, timeout=60).stdout.strip()
    summary = {name: {"median_ms": round(statistics.median(s) * 1000, 1), "min_ms": round(min(s) * 1000, 1),
                      "runs": len(s)} for name, s in results.items()}
    summary["heavy_modules_at_help"] = heavy.split(",") if heavy else []  # type: ignore[assignment]
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for name, s in results.items():
            print(f"{name:22} median {statistics.median(s) * 1000:7.1f} ms   min {min(s) * 1000:7.1f} ms   ({len(s)} runs)")
        print(f"heavy modules imported by --help: {heavy or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
