#!/usr/bin/env python3
"""Instructions and CPU time per operation of sipd, in-process and repeatable.

    bench/instructions.py [reg|reg_auth|call ...] [-n 2000] [--batch 100] [--callgrind] [--profile]
                          [--repeat 5] [--json FILE]

An operation is what SIPp counts in bench/compare.sh: a REGISTER (``reg``), a REGISTER + digest
pair (``reg_auth``: REGISTER, 401, REGISTER with Authorization, 200) or a call through the proxy
(``call``: INVITE, 100, 180, 200, ACK, BYE, 200, and the end of its transactions 32 s later). The
daemon's parts run in this process (bench/inproc.py): bytes in through the endpoint's receive
path, bytes out of the transports' send, no socket, the client's work (messages, digests, parsing
sipd's answers) outside the measured region.

- CPU time (default): process CPU time of the measured region per operation, the lowest and the
  median of ``--repeat`` rounds of ``-n`` operations (a shared machine's neighbours add to it).
- ``--callgrind``: the same run under ``valgrind --tool=callgrind`` with collection switched on
  only around the measured region (a client request from a small C helper built with the system
  compiler): instructions per operation, the same to within a fraction of a percent from run to
  run whatever else the machine does, and the C functions that execute them.
- ``--digest``: a SHA-256 of every byte sipd sent, with its random and clock-derived values made
  fixed: two versions of the code that print the same digest answered identically.
- ``--profile``: cProfile (CPU clock) over the measured region: the Python functions, with their
  calls per operation (cProfile slows the run: shares, not µs).

Every phase checks what sipd answered (401, 200, the forwarded INVITE ...): a broken change fails
here instead of getting faster.
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes
import hashlib
import json
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import inproc  # noqa: E402

TOGGLE_C = "#include <valgrind/callgrind.h>\nvoid sipd_bench_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }\n"


def run_ops(scenario: str, n: int, batch: int, users: int, full: bool, measure: Any, *, warmup: int = 1,
            rounds: int = 1, between: Any = None, seen: Any = None) -> int:
    """``warmup`` unmeasured batches, then ``rounds`` rounds of ``n`` operations through one
    in-process server; ``between(round)`` runs after each round. Returns the operations measured."""
    start = 0
    with inproc.server_for(scenario, users=users, full=full, fixed=seen is not None) as server:
        for _ in range(warmup):
            start += inproc.run_scenario(server, scenario, batch=batch, start=start, users=users, measure=lambda f: f(),
                                         seen=seen)
        inproc.collect_garbage_now()
        done = 0
        for r in range(rounds):
            left = n
            while left > 0:
                size = min(batch, left)
                start += inproc.run_scenario(server, scenario, batch=size, start=start, users=users, measure=measure,
                                             seen=seen)
                left -= size
                done += size
            if between is not None:
                between(r)
        log = server.errors()
    if "Traceback" in log or " ERROR " in log:
        raise SystemExit(f"sipd logged errors during {scenario}:\n{log[-4000:]}")
    return done


# -- CPU time -------------------------------------------------------------------------------------

def cpu_per_op(scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    spent = [0.0]
    per_round: list[float] = []
    clock = time.process_time

    def measure(fn: Any) -> None:
        t0 = clock()
        fn()
        spent[0] += clock() - t0

    def between(_r: int) -> None:
        per_round.append(spent[0] / args.n * 1e6)
        spent[0] = 0.0

    run_ops(scenario, args.n, args.batch, args.users, args.full, measure, rounds=args.repeat, between=between)
    return {"us_per_op_min": round(min(per_round), 1), "us_per_op_median": round(statistics.median(per_round), 1),
            "rounds": [round(x, 1) for x in per_round]}


# -- instructions (callgrind) ---------------------------------------------------------------------

def build_toggle(tmp: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not Path("/usr/include/valgrind/callgrind.h").exists():
        raise SystemExit("--callgrind needs a C compiler and valgrind's headers (Debian: gcc, valgrind)")
    source = tmp / "toggle.c"
    source.write_text(TOGGLE_C)
    lib = tmp / "toggle.so"
    subprocess.run([cc, "-O1", "-shared", "-fPIC", "-o", str(lib), str(source)], check=True)
    return lib


def inner_callgrind(args: argparse.Namespace) -> None:
    """Runs under valgrind: collection is on only inside ``measure``."""
    lib = ctypes.CDLL(args.toggle_lib)
    toggle = lib.sipd_bench_toggle

    def measure(fn: Any) -> None:
        toggle()
        fn()
        toggle()

    ops = run_ops(args.scenarios[0], args.n, args.batch, args.users, args.full, measure)
    Path(args.inner_out).write_text(json.dumps({"ops": ops}))


def callgrind_totals(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")


_ANNOTATE = re.compile(r"^\s*([\d,]+)\s+\([\s\d.]+%\)\s+(.*)$")


def top_c_functions(path: Path, ops: int, top: int) -> list[tuple[str, int]]:
    """Self instructions per operation of the ``top`` costliest C functions (callgrind_annotate)."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", str(path)],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = _ANNOTATE.match(line)
        if m and "PROGRAM TOTALS" not in line:
            name = m.group(2).strip()
            name = re.sub(r"\s*\[[^\]]*\]$", "", name)  # the object file
            rows.append((name.split(":", 1)[-1] if ":" in name else name, int(m.group(1).replace(",", "")) // ops))
        if len(rows) >= top:
            break
    return rows


def instructions_per_op(scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("valgrind") is None:
        raise SystemExit("--callgrind needs valgrind (Debian: valgrind)")
    with tempfile.TemporaryDirectory(prefix="sipd-callgrind-") as tmp_name:
        tmp = Path(tmp_name)
        lib = build_toggle(tmp)
        out, info = tmp / "callgrind.out", tmp / "inner.json"
        cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no", f"--callgrind-out-file={out}",
               sys.executable, str(Path(__file__).resolve()), scenario, "-n", str(args.n), "--batch", str(args.batch),
               "--users", str(args.users), "--inner-callgrind", "--toggle-lib", str(lib), "--inner-out", str(info)]
        if args.full:
            cmd.append("--full")
        env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict layouts every run
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not info.exists():
            raise SystemExit(f"callgrind run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        ops = json.loads(info.read_text())["ops"]
        total = callgrind_totals(out)
        if args.keep:
            shutil.copy(out, args.keep / f"callgrind.{scenario}.out")
        return {"instructions_per_op": total // ops, "ops": ops, "top_c": top_c_functions(out, ops, args.top)}


def output_digest(scenario: str, args: argparse.Namespace) -> str:
    seen = hashlib.sha256()
    run_ops(scenario, args.n, args.batch, args.users, args.full, lambda f: f(), seen=seen)
    return seen.hexdigest()


# -- profile ----------------------------------------------------------------------------------------

def profile(scenario: str, args: argparse.Namespace) -> list[tuple[str, float, float]]:
    """(function, share of the measured CPU time, calls per operation), costliest first by own time."""
    prof = cProfile.Profile(time.process_time)

    def measure(fn: Any) -> None:
        prof.enable()
        fn()
        prof.disable()

    ops = run_ops(scenario, args.n, args.batch, args.users, args.full, measure)
    stats = pstats.Stats(prof)
    total = stats.total_tt or 1.0  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_cc, nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line}({name})" if line else name
        rows.append((where, tt / total, nc / ops))
    rows.sort(key=lambda r: -r[1])
    return rows[: args.top]


# -- the report -------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", default=list(inproc.SCENARIOS), help="reg, reg_auth, call (default: all)")
    ap.add_argument("-n", type=int, default=2000, help="measured operations per round (default 2000)")
    ap.add_argument("--batch", type=int, default=100, help="operations fed per phase (default 100)")
    ap.add_argument("--users", type=int, default=1000, help="subscribers provisioned (default 1000)")
    ap.add_argument("--repeat", type=int, default=5, help="rounds for the CPU time (default 5)")
    ap.add_argument("--full", action="store_true", help="accounting, dialogs, presence and NAT on (sipd's defaults; the accounting writer's own process is not counted)")
    ap.add_argument("--callgrind", action="store_true", help="count instructions with valgrind's callgrind")
    ap.add_argument("--profile", action="store_true", help="cProfile the measured region")
    ap.add_argument("--digest", action="store_true", help="a SHA-256 of all sipd sent (fixed random values and clocks)")
    ap.add_argument("--top", type=int, default=15, help="functions listed (default 15)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    ap.add_argument("--keep", type=Path, help="copy callgrind's output files into this directory")
    ap.add_argument("--inner-callgrind", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--toggle-lib", help=argparse.SUPPRESS)
    ap.add_argument("--inner-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.n < 1 or args.batch < 1 or args.users < 1:
        ap.error("-n, --batch and --users must be at least 1")
    unknown = [s for s in args.scenarios if s not in inproc.SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {', '.join(unknown)}: choose among {', '.join(inproc.SCENARIOS)}")
    if args.inner_callgrind:
        inner_callgrind(args)
        return
    from sipd.corebuild import describe

    core = describe()  # the build measured: pure Python, or the core compiled by scripts/build-core
    print(f"protocol core: {core}", flush=True)
    if args.digest:
        if os.environ.get("PYTHONHASHSEED") != "0":  # stateless To tags are a hash(): fix it
            os.execve(sys.executable, [sys.executable, *sys.argv], dict(os.environ, PYTHONHASHSEED="0"))
        for scenario in args.scenarios:
            print(f"{scenario}: {output_digest(scenario, args)}", flush=True)
        return
    results: dict[str, Any] = {"core": core}
    for scenario in args.scenarios:
        res: dict[str, Any] = {}
        if args.callgrind:
            res.update(instructions_per_op(scenario, args))
            print(f"{scenario}: {res['instructions_per_op']:,} instructions/op ({res['ops']} ops)", flush=True)
            for name, ir in res["top_c"]:
                print(f"    {ir:>10,}  {name}")
        else:
            res.update(cpu_per_op(scenario, args))
            print(f"{scenario}: {res['us_per_op_min']} µs/op CPU (lowest of {args.repeat} rounds of {args.n}; "
                  f"median {res['us_per_op_median']})", flush=True)
        if args.profile:
            res["top_py"] = profile(scenario, args)
            for where, share, calls in res["top_py"]:
                print(f"    {share * 100:5.1f} %  {calls:6.2f}/op  {where}")
        results[scenario] = res
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
