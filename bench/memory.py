#!/usr/bin/env python3
"""Memory benchmarks for sipd: RSS with N registered contacts, and RSS over a long run.

    memory.py contacts [--contacts 100000] [--rate 4000]
        start sipd (bench/sipd_target.py, no auth, location in memory), register N distinct AORs
        with SIPp (reg.xml, Expires 3600) and print RSS before/after and bytes per contact.
    memory.py soak [--duration 60] [--rate 2000] [--scenario reg|call] [--users 10000]
        offer a steady load for DURATION seconds (the target run: 600 s at half the max rate) and sample
        sipd's RSS every --interval s; prints the samples, the drift after warm-up (target:
        within 5 %) and the max.
    --target kamailio runs the same against bench/kamailio-registrar.cfg (RSS of all its processes).

Every SIPp run is bounded by -m, -timeout and a subprocess timeout; sipd is stopped by its PID.
Output: a Markdown summary on stdout (and RESULT json on the last line); files in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import bench_lib  # noqa: E402


def free_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


def rss_kib(pid: int) -> int:
    """VmRSS of pid plus its descendants (Kamailio forks), in KiB."""
    total = 0
    kids = bench_lib._children_map()
    for p in bench_lib._tree([pid], kids):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class Target:
    def __init__(self, kind: str, out: Path, port: int, users: int, py: str) -> None:
        self.kind, self.out, self.port = kind, out, port
        if kind == "sipd":
            argv = [py, str(HERE / "sipd_target.py"), "--mode", "noauth", "--port", str(port),
                    "--out", str(out), "--credentials", str(out / "credentials.csv"), "--max-expires", "7200"]
        else:
            argv = ["kamailio", "-f", str(HERE / "kamailio-registrar.cfg"), "-DD", "-E", "-m", "1024", "-M", "16",
                    "-n", "2", "-w", str(out), "-A", f"BENCH_PORT={port}"]
        self.log = open(out / f"{kind}.log", "wb")
        self.proc = subprocess.Popen(argv, cwd=out, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if bench_lib.wait_ready("127.0.0.1", port, 60) != 0:
            self.stop()
            raise SystemExit(f"{kind} did not answer OPTIONS; see {out}/{kind}.log")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def sipp(out: Path, scenario: str, port: int, inf: Path, rate: int, calls: int, extra: list[str],
         timeout: int, name: str) -> int:
    argv = ["sipp", f"127.0.0.1:{port}", "-sf", str(HERE / "scenarios" / scenario), "-inf", str(inf),
            "-i", "127.0.0.1", "-p", str(free_port()), "-t", "u1", "-r", str(rate), "-m", str(calls),
            "-l", str(rate * 6), "-recv_timeout", "10000", "-nostdin", "-timeout", f"{timeout}s",
            "-trace_stat", "-stf", f"{name}_stat.csv", "-fd", "1", "-buff_size", "1048576", *extra]
    with open(out / f"{name}.out", "wb") as f:
        try:
            return subprocess.run(argv, cwd=out, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=timeout + 15).returncode
        except subprocess.TimeoutExpired:
            return -1


def stats(out: Path, name: str) -> dict[str, str]:
    import csv

    try:
        rows = list(csv.reader(open(out / f"{name}_stat.csv"), delimiter=";"))
        return dict(zip(rows[0], rows[-1]))
    except (OSError, IndexError):
        return {}


def contacts(args, out: Path) -> dict:
    bench_lib.gen_users(str(out), args.contacts)
    t = Target(args.target, out, free_port(), args.contacts, args.python)
    try:
        time.sleep(1)
        before = rss_kib(t.proc.pid)
        n = args.contacts
        rc = sipp(out, "reg.xml", t.port, out / "users.csv", args.rate, n, ["-nd"], n // args.rate + 60, "contacts")
        time.sleep(2)
        after = rss_kib(t.proc.pid)
        st = stats(out, "contacts")
    finally:
        t.stop()
    ok = int(st.get("SuccessfulCall(C)", 0) or 0)
    res = {"target": args.target, "contacts": n, "registered": ok, "failed": int(st.get("FailedCall(C)", 0) or 0),
           "sipp_rc": rc, "rss_before_mib": round(before / 1024, 1), "rss_after_mib": round(after / 1024, 1),
           "bytes_per_contact": round((after - before) * 1024 / max(ok, 1)), "limit_mib": 300,
           "ok": after / 1024 < 300 and ok >= n * 0.99}
    print(f"## RSS with {n:,} registered contacts ({args.target})\n")
    print(f"- registered: {ok:,} (failed {res['failed']}), sipp rc {rc}")
    print(f"- RSS before: {res['rss_before_mib']} MiB, after: {res['rss_after_mib']} MiB "
          f"({res['bytes_per_contact']} bytes/contact); target < 300 MiB: {'met' if res['ok'] else 'MISSED'}")
    return res


def soak(args, out: Path) -> dict:
    bench_lib.gen_users(str(out), args.users)
    t = Target(args.target, out, free_port(), args.users, args.python)
    uas = None
    try:
        calls = args.rate * args.duration
        if args.scenario == "call":
            uas_port = free_port()
            # the callee registers from the UAS's port first (as run.sh does): both cannot hold it at once
            reg = subprocess.run(["sipp", f"127.0.0.1:{t.port}", "-sf", str(HERE / "scenarios" / "reg.xml"), "-inf",
                                  str(out / "callee.csv"), "-i", "127.0.0.1", "-p", str(uas_port), "-t", "u1", "-m", "1",
                                  "-nd", "-nostdin", "-timeout", "20s"], cwd=out, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, timeout=30)
            if reg.returncode != 0:
                raise SystemExit(f"the callee did not register (sipp exit {reg.returncode})")
            uas = subprocess.Popen(["sipp", "-sf", str(HERE / "scenarios" / "call_uas.xml"), "-i", "127.0.0.1",
                                    "-p", str(uas_port), "-t", "u1", "-default_behaviors", "all,-abortunexp",
                                    "-nostdin", "-timeout", f"{args.duration + 60}s", "-buff_size", "1048576"],
                                   cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
            time.sleep(0.5)
            scen, inf, extra = "call_uac.xml", out / "callee.csv", ["-d", "1000", "-default_behaviors", "all,-abortunexp"]
        else:
            scen, inf, extra = "reg.xml", out / "users.csv", ["-nd"]
        argv_name = "soak"
        load = subprocess.Popen(
            ["sipp", f"127.0.0.1:{t.port}", "-sf", str(HERE / "scenarios" / scen), "-inf", str(inf), "-i",
             "127.0.0.1", "-p", str(free_port()), "-t", "u1", "-r", str(args.rate), "-m", str(calls),
             "-l", str(args.rate * 6), "-recv_timeout", "10000", "-nostdin", "-timeout", f"{args.duration + 30}s",
             "-trace_stat", "-stf", f"{argv_name}_stat.csv", "-fd", "1", "-buff_size", "1048576", *extra],
            cwd=out, stdout=open(out / "soak.out", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        samples: list[tuple[float, float]] = []
        t0 = time.monotonic()
        while load.poll() is None and time.monotonic() - t0 < args.duration + 45:
            samples.append((round(time.monotonic() - t0, 1), round(rss_kib(t.proc.pid) / 1024, 1)))
            time.sleep(args.interval)
        if load.poll() is None:
            load.send_signal(signal.SIGTERM)
            load.wait(timeout=10)
        st = stats(out, argv_name)
    finally:
        if uas is not None and uas.poll() is None:
            uas.send_signal(signal.SIGTERM)
            uas.wait(timeout=10)
        t.stop()
    # warm-up: 20 % of the run, and at least one full pass over the users (all AORs bound)
    warm_s = max(args.duration * 0.2, (args.users / args.rate if args.scenario == "reg" else 5) + args.interval)
    warm = [s for s in samples if s[0] >= warm_s] or samples
    first, last = warm[0][1], warm[-1][1]
    drift = (last - first) / first * 100 if first else 0.0
    res = {"target": args.target, "scenario": args.scenario, "rate": args.rate, "duration_s": args.duration,
           "ok_calls": int(st.get("SuccessfulCall(C)", 0) or 0), "failed": int(st.get("FailedCall(C)", 0) or 0),
           "rss_after_warmup_mib": first, "rss_end_mib": last, "rss_max_mib": max(s[1] for s in samples),
           "drift_pct": round(drift, 1), "samples": samples}
    planned = args.rate * args.duration  # a run whose load failed measures nothing: not ok
    res["ok"] = abs(drift) <= 5 and res["ok_calls"] >= planned * 0.99
    print(f"## RSS over {args.duration} s of {args.scenario} at {args.rate}/s ({args.target})\n")
    print(f"- successful {res['ok_calls']:,}, failed {res['failed']:,}")
    print(f"- RSS after warm-up (t >= {warm_s:.0f} s): {first} MiB, at end: {last} MiB, max "
          f"{res['rss_max_mib']} MiB; drift {res['drift_pct']} % (target within 5 %: {'met' if res['ok'] else 'MISSED'})")
    print("- samples (s, MiB): " + ", ".join(f"{a:.0f}:{b}" for a, b in samples))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["contacts", "soak"])
    ap.add_argument("--target", choices=["sipd", "kamailio"], default="sipd")
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--rate", type=int, default=None)
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--scenario", choices=["reg", "call"], default="reg")
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--out", default=None)
    ap.add_argument("--python", default=str(ROOT / ".venv/bin/python") if (ROOT / ".venv/bin/python").exists()
                    else sys.executable)
    args = ap.parse_args()
    if args.rate is None:
        args.rate = 4000 if args.mode == "contacts" else 1000
    out = Path(args.out or HERE / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-mem-{args.mode}-{args.target}")
    out.mkdir(parents=True, exist_ok=True)
    res = contacts(args, out) if args.mode == "contacts" else soak(args, out)
    (out / "memory.json").write_text(json.dumps(res, indent=1))
    print("RESULT " + json.dumps({k: v for k, v in res.items() if k != "samples"}))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
