#!/usr/bin/env python3
"""CPU microseconds per operation of a live sipd, driven by SIPp at a fixed (sub-maximal) rate.

    bench/cpu_per_op.py reg|reg_auth|call [--rate R] [--count N] [--profile FILE] [--workers W] [--transport T]

A max-rate ladder on a shared, noisy machine mostly measures the neighbours; CPU time per
operation does not. This starts sipd (the same config as bench/sipd_target.py), runs SIPp at
``--rate`` for ``--count`` operations, and divides the daemon's CPU time (utime+stime of the
process and its children, from /proc) by the number of successful operations. ``--profile``
runs the daemon under cProfile and prints the top entries (cProfile roughly doubles the CPU
time; use it for where, not for how much). ``--callgrind`` runs the daemon and its worker
processes under valgrind's callgrind and prints the instructions per operation of each process
over the SIPp run only (counters zeroed when the processes are idle, dumped when SIPp ends): the
repeatable figure for what two processes add, whatever the neighbours do (run it at a low rate:
the daemon is ~50 times slower under valgrind). Loopback only; every process is stopped by its PID.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import bench_lib  # noqa: E402
import sipd_target  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


def free_udp_port() -> int:
    import socket

    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit("no free port")


def cpu_by_process(pid: int) -> dict[int, tuple[float, float]]:
    """(user, system) CPU seconds of pid and of each of its children, by PID."""
    out = {}
    for p in bench_lib._tree([pid], bench_lib._children_map()):
        try:
            st = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = st[st.rfind(")") + 2:].split()
        out[p] = (int(fields[11]) / CLK, int(fields[12]) / CLK)
    return out


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of pid and its children."""
    by = cpu_by_process(pid).values()
    return sum(u for u, _ in by), sum(s for _, s in by)


def wait_idle(pid: int, quiet: float, limit: float) -> None:
    """Wait (bounded by ``limit`` seconds) until the daemon and its workers used no CPU for ``quiet``
    seconds: every worker started and synced (under valgrind that takes a minute)."""
    deadline = time.monotonic() + limit
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = cpu_by_process(pid)
        ticks = (len(now), round(sum(u + s for u, s in now.values()), 2))
        if ticks != last:
            last, since = ticks, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.25)


def callgrind_instructions(out: Path, pids: list[int]) -> dict[int, int]:
    """Instructions each process executed between its zeroing and its dump (callgrind_control)."""
    found = {}
    for pid in pids:
        for f in sorted(out.glob(f"callgrind.{pid}.*")):
            for line in f.read_text(errors="replace").splitlines():
                if line.startswith(("summary:", "totals:")):
                    found[pid] = found.get(pid, 0) + int(line.split()[1])
                    break
    return found


def print_split(pid: int, before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]], ok: int) -> None:
    """CPU per operation of each process (main first): where two processes spend it."""
    for p in sorted(after, key=lambda p: (p != pid, p)):
        u0, s0 = before.get(p, (0.0, 0.0))
        u, s = after[p][0] - u0, after[p][1] - s0
        if u + s <= 0:
            continue
        name = "main" if p == pid else f"pid {p}"
        print(f"  {name}: {(u + s) / max(ok, 1) * 1e6:.1f} us/op [user {u / max(ok, 1) * 1e6:.1f} + sys {s / max(ok, 1) * 1e6:.1f}]")


def sipp_stat(out: Path) -> tuple[int, int]:
    """(successful, failed) from the last line of SIPp's -trace_stat CSV."""
    files = sorted(out.glob("*_.csv")) or sorted(out.glob("*.csv"))
    for f in files:
        lines = f.read_text(errors="replace").splitlines()
        if len(lines) < 2 or "SuccessfulCall(C)" not in lines[0]:
            continue
        head = lines[0].split(";")
        last = lines[-1].split(";")
        row = dict(zip(head, last))
        return int(row.get("SuccessfulCall(C)", 0)), int(row.get("FailedCall(C)", 0))
    return 0, 0


def print_collapsed(path: str, top: int) -> None:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    from collections import Counter

    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        k = int(n)
        frames = [f.split(" (")[0] + " " + f.split("/")[-1].split(":")[0] if "(" in f else f for f in stack.split(";")]
        total += k
        self_c[frames[-1]] += k
        for f in set(frames):
            incl[f] += k
    print(f"py-spy: {total} samples (busy only; a syscall that wakes SIPp counts its wall time)")
    print("  self%  function")
    for f, k in self_c.most_common(top):
        print(f"  {k / total * 100:5.1f}  {f}")
    print("  incl%  function")
    for f, k in incl.most_common(top + 15):
        print(f"  {k / total * 100:5.1f}  {f}")


def workers_ready(cfg: Path, workers: int, secs: float) -> bool:
    """Wait until every worker process is ready (``sipctl ps``): main hands TCP connections only
    to ready workers, so which process owns SIPp's connection would otherwise depend on timing."""
    if workers < 2:
        return True
    from sipd import config
    from sipd.mgmt.client import call

    conf = config.load(cfg, validators=())
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        try:
            ps = call(conf, "ps", [], 5.0)["Processes"]
        except Exception:  # noqa: BLE001 - not answering yet (a slow start under valgrind)
            time.sleep(0.5)
            continue
        if sum(1 for p in ps if p["ID"] != 0 and p["Type"].endswith("TCP/TLS connections)")) == workers - 1:
            return True
        time.sleep(0.1)
    return False


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=["reg", "reg_auth", "call"])
    ap.add_argument("--rate", type=int, default=300)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--profile", help="write a cProfile dump here and print the top entries")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--pyspy", help="sample the daemon with py-spy (collapsed stacks to this file) and print the top entries")
    ap.add_argument("--tail", type=float, default=0.0,
                    help="seconds to wait after SIPp before reading the CPU time: 34 includes every transaction's end "
                         "(Timer J/K, 32 s); an idle sipd uses no CPU")
    ap.add_argument("--callgrind", action="store_true",
                    help="instructions per operation of each process, under valgrind (use a low --rate)")
    ap.add_argument("--workers", type=int, default=1, help="[server] workers")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--transport", default="u1", choices=["u1", "t1", "tn"],
                    help="SIPp -t: u1 (UDP), t1 (one TCP connection for all), tn (a TCP connection per call or "
                         "REGISTER pair; the callee keeps one, as bench/run.sh)")
    ap.add_argument("--location-mode", default="memory", help="[location] mode (the default config is write-through)")
    ap.add_argument("--extra", default="", help="extra TOML lines appended to the config (e.g. '[server]\\nworkers = 2')")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sipd-cpu-"))
    bench_lib.gen_users(str(tmp), 2000)
    sipd_target.provision(tmp / "sipd-bench.db", tmp / "credentials.csv", 2000)
    port, uas_port, uac_port = free_udp_port(), free_udp_port(), free_udp_port()
    mode = "auth" if args.scenario == "reg_auth" else "noauth"
    conf = {
        "server": {"listen": [f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"], "workers": args.workers},
        "database": {"url": f"sqlite:///{tmp / 'sipd-bench.db'}"},
        "mgmt": {"socket": str(tmp / "sipd.sock")},
        "log": {"level": "warning"},
        "location": {"mode": args.location_mode},
        "auth": {"register": mode == "auth", "invite": False},
        "antiflood": {"enabled": False},
        "spam": {"enabled": False},
    }
    cfg = tmp / "sipd.toml"
    cfg.write_text(sipd_target.toml(conf) + args.extra.replace("\\n", "\n") + "\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    # the build measured: pure Python, or the core compiled by scripts/build-core
    print(subprocess.run([sys.executable, "-m", "sipd", "--version"], env=env, cwd=tmp, capture_output=True, text=True,
                         timeout=60).stdout.strip(), flush=True)
    cmd = [sys.executable]
    if args.callgrind:
        cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={tmp}/callgrind.%p",
               *cmd]
    if args.profile:
        cmd += [str(BENCH / "profiled_sipd.py"), str(Path(args.profile).resolve()), "--config", str(cfg)]
    else:
        cmd += ["-m", "sipd", "--config", str(cfg)]
    log = open(tmp / "sipd.log", "w")
    daemon = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    uas = None
    try:
        if bench_lib.wait_ready("127.0.0.1", port, 300 if args.callgrind else 15) != 0 \
                or not workers_ready(cfg, args.workers, 300 if args.callgrind else 30):
            print((tmp / "sipd.log").read_text()[-2000:])
            return 1
        scn = BENCH / "scenarios"
        sipp_common = ["-i", "127.0.0.1", "-nostdin", "-buff_size", "1048576"]
        if args.transport != "u1":
            sipp_common += ["-max_socket", "4096"]
        uac_t = ["-t", args.transport]
        uas_t = ["-t", "t1" if args.transport == "tn" else args.transport]
        if args.scenario == "call":
            subprocess.run(["timeout", "20", "sipp", f"127.0.0.1:{port}", "-sf", str(scn / "reg.xml"), "-inf",
                            str(tmp / "callee.csv"), "-p", str(uas_port), *sipp_common, *uas_t, "-m", "1", "-nd",
                            "-timeout", "15s"], cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            uas_dir = tmp / "uas"
            uas_dir.mkdir()
            uas = subprocess.Popen(["sipp", "-sf", str(scn / "call_uas.xml"), "-p", str(uas_port), *sipp_common,
                                    *uas_t, "-default_behaviors", "all,-abortunexp", "-timeout", "600s"],
                                   cwd=uas_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        xml = {"reg": "reg.xml", "reg_auth": "reg_auth.xml", "call": "call_uac.xml"}[args.scenario]
        extra = ["-d", "1000", "-default_behaviors", "all,-abortunexp"] if args.scenario == "call" else ["-nd"]
        inf = tmp / ("callee.csv" if args.scenario == "call" else "users.csv")
        run_dir = tmp / "uac"
        run_dir.mkdir()
        tmo = args.count // args.rate + 30
        spy = None
        if args.pyspy:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(daemon.pid), "-r", "2000",
                                    "-f", "raw", "-o", args.pyspy, "-d", str(int(args.count // args.rate + args.tail + 2)), "--nonblocking",
                                    *(["--subprocesses"] if args.workers > 1 else [])],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        if args.callgrind:
            wait_idle(daemon.pid, 3.0, 300.0)
            pids = sorted(cpu_by_process(daemon.pid), key=lambda p: (p != daemon.pid, p))
            subprocess.run(["callgrind_control", "-z", *map(str, pids)], stdout=subprocess.DEVNULL, check=False)
        split0 = cpu_by_process(daemon.pid)
        before = cpu_seconds(daemon.pid)
        t0 = time.monotonic()
        subprocess.run(["timeout", "-k", "5", str(tmo + 10), "sipp", f"127.0.0.1:{port}", "-sf", str(scn / xml),
                        "-inf", str(inf), "-p", str(uac_port), *sipp_common, *uac_t, "-r", str(args.rate), "-m",
                        str(args.count), "-l", str(args.rate * 6), *extra, "-trace_stat", "-stf", "stat.csv",
                        "-fd", "1", "-timeout", f"{tmo}s"], cwd=run_dir, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        wall = time.monotonic() - t0
        mid = cpu_seconds(daemon.pid)
        if args.callgrind:
            wait_idle(daemon.pid, 1.0, 60.0)  # the last replies, and the frames that follow them
            subprocess.run(["callgrind_control", "-d", *map(str, pids)], stdout=subprocess.DEVNULL, check=False)
        time.sleep(args.tail)
        after = cpu_seconds(daemon.pid)
        split1 = cpu_by_process(daemon.pid)
        if args.tail:
            print(f"CPU during SIPp {sum(mid) - sum(before):.2f}s, in the {args.tail:g}s after {sum(after) - sum(mid):.2f}s")
        if spy is not None:
            spy.wait(30)
        ok, failed = sipp_stat(run_dir)
        cpu = sum(after) - sum(before)
        usr, sys_ = after[0] - before[0], after[1] - before[1]
        load = os.getloadavg()[0]
        print(f"{args.scenario}: {ok} ok, {failed} failed in {wall:.1f}s at {args.rate}/s; daemon CPU {cpu:.2f}s "
              f"= {cpu / max(ok, 1) * 1e6:.0f} us/op [user {usr / max(ok, 1) * 1e6:.0f} + sys {sys_ / max(ok, 1) * 1e6:.0f}] ({cpu / wall * 100:.0f}% of a core); load {load:.1f}")
        if args.workers > 1:
            print_split(daemon.pid, split0, split1, ok)
        if args.callgrind:
            time.sleep(1)
            counts = callgrind_instructions(tmp, pids)
            print(f"instructions/op: {sum(counts.values()) / max(ok, 1):,.0f} = " + " + ".join(
                f"{'main' if p == daemon.pid else f'pid {p}'} {n / max(ok, 1):,.0f}" for p, n in counts.items()))
    finally:
        for p in (uas, daemon):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        log.close()
    if args.profile:
        import pstats

        st = pstats.Stats(str(Path(args.profile).resolve()))
        st.sort_stats("tottime").print_stats(args.top)
        st.sort_stats("cumulative").print_stats(args.top)
    if args.pyspy:
        print_collapsed(args.pyspy, args.top)
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print("kept", tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
