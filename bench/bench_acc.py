#!/usr/bin/env python3
"""Calls per second with accounting + dialog tracking on, as a ratio to the same run with both off,
and the database write load per call.

    python bench/bench_acc.py [--calls 3000] [--rate 400] [--mysql mysql://root@127.0.0.1:3306]
                              [--writer process|thread] [--hold MS] [--profile FILE]

For each mode (off, on) a fresh sipd is started (tests/helpers/sipd_proc.py; SQLite, or a scratch
MariaDB database with --mysql), a SIPp UAS registers as "callee", and a SIPp UAC places ``--calls``
calls (INVITE/180/200/ACK/BYE/200, no hold unless --hold) at up to ``--rate`` calls/s with at most
``--limit`` concurrent. Reported per mode: achieved calls/s (successful calls / wall time of the UAC
run), the daemon's CPU ms per call (utime+stime of its process from /proc) and, separately, that
of the accounting writer process ([acc] writer = "process", the default), and with acc on: records
written per call and database transactions per call (from the acc:* statistics; the writer
batches records, so a transaction carries several calls' records under load).

Ratios: calls/s on/off (noisy on a shared machine), and the CPU-based capacity ratio: the event
loop's CPU per call off / on -- the loop is what saturates; the writer process runs on another
core -- and the same counting the writer process's CPU too (what a one-core machine would see).
Target: ratio on/off >= 0.8. Note: with no hold, most calls end within the writer's 50 ms batch
window, so their dialog row insert + delete cancel out in the writer (``coalesce``); --hold 1000
shows the cost of persisting every dialog.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from helpers.sipd_proc import SipdProcess  # noqa: E402
from helpers.sipp import SippProcess, run_sipp, sipp_binary  # noqa: E402

SCN = REPO / "bench" / "scenarios"


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The daemon's child processes (the accounting writer process)."""
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def free_port() -> int:
    from conftest import free_port as fp

    return fp()


def run_mode(tmp: Path, on: bool, args: argparse.Namespace, db_url: str | None) -> dict:
    conf = {
        "auth": {"register": False, "invite": False},
        "antiflood": {"enabled": False}, "spam": {"enabled": False},
        "location": {"mode": "memory"}, "log": {"level": "warning"},
        "acc": {"enabled": on, "spool": str(tmp / f"acc-{on}.spool"), "writer": args.writer},
        "dialog": {"enabled": on},
    }
    prof_out = f"{args.profile}.{'on' if on else 'off'}"

    class Profiled(SipdProcess):
        def argv(self) -> list[str]:
            return [sys.executable, str(REPO / "bench" / "profiled_sipd.py"), prof_out,
                    "--config", str(self.config_path)]

    proc = (Profiled if args.profile else SipdProcess)(tmp, conf, db_url, domains=["127.0.0.1"], users=[("callee@127.0.0.1", "calleepw")])
    proc.start()
    try:
        (tmp / "callee.csv").write_text("SEQUENTIAL\ncallee;127.0.0.1;[authentication username=callee password=calleepw]\n")
        uas_port = free_port()
        reg = run_sipp(SCN / "reg.xml", f"127.0.0.1:{proc.udp_port}", port=uas_port, cwd=tmp,
                       inf=tmp / "callee.csv", calls=1, timeout=20)
        assert reg.ok, reg.explain()
        uas = SippProcess(SCN / "call_uas.xml", None, port=uas_port, cwd=tmp, calls=args.calls,
                          timeout=args.calls / 20 + 120, abort_unexpected=False)
        uas.start()
        try:
            kids = child_pids(proc.pid)
            cpu0 = cpu_seconds(proc.pid)
            kcpu0 = sum(cpu_seconds(k) for k in kids)
            t0 = time.monotonic()
            res = run_sipp(SCN / "call_uac.xml", f"127.0.0.1:{proc.udp_port}", port=free_port(), cwd=tmp,
                           inf=tmp / "callee.csv", calls=args.calls, rate=args.rate, hold_ms=args.hold,
                           extra=["-l", str(args.limit)], timeout=args.calls / 20 + 60, abort_unexpected=False)
            wall = time.monotonic() - t0
            cpu = cpu_seconds(proc.pid) - cpu0
        finally:
            uas.stop()
        stats = {}
        if on:
            time.sleep(1.0)  # let the writer finish the last batch
        kcpu = sum(cpu_seconds(k) for k in kids) - kcpu0  # the writer process (its CPU, not the loop's)
        if on:
            from sipd import config as cfg
            from sipd.mgmt import client

            st = client.call(cfg.load(proc.config_path, validators=()), "get_statistics", [["acc:", "dialog:"]], 5)
            stats = {k.split(":", 1)[1]: v for k, v in st.items()}
        ok = res.successful
        return {"mode": "on" if on else "off", "calls": ok, "failed": res.failed, "wall_s": round(wall, 2),
                "cps": round(ok / wall, 1) if wall else 0.0, "cpu_ms_per_call": round(cpu * 1000 / max(ok, 1), 3),
                "writer_ms_per_call": round(kcpu * 1000 / max(ok, 1), 3), "stats": stats}
    finally:
        proc.close(check_log=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--rate", type=int, default=400, help="SIPp call rate (calls/s) to attempt")
    ap.add_argument("--limit", type=int, default=200, help="concurrent calls at most")
    ap.add_argument("--mysql", default="", help="server URL (mysql://root@127.0.0.1:3306): use a scratch database there")
    ap.add_argument("--writer", default="process", choices=["process", "thread"], help="[acc] writer")
    ap.add_argument("--hold", type=int, default=0, help="call hold time in ms (0: BYE right after the ACK)")
    ap.add_argument("--profile", default="", help="run sipd under cProfile (CPU clock); stats to FILE.on / FILE.off")
    args = ap.parse_args()
    if not sipp_binary():
        print("sipp not installed", file=sys.stderr)
        return 2
    results = []
    load0 = f"{os.getloadavg()[0]:.2f}"
    with tempfile.TemporaryDirectory(prefix="bench-acc-") as d:
        for on in (False, True):
            db_url = None
            name = ""
            if args.mysql:
                import pymysql

                name = "sipd_bench_" + secrets.token_hex(4)
                db_url = f"{args.mysql.rstrip('/')}/{name}"
            try:
                results.append(run_mode(Path(d) / ("on" if on else "off"), on, args, db_url))
            finally:
                if name:
                    from urllib.parse import urlparse

                    u = urlparse(args.mysql)
                    conn = pymysql.connect(host=u.hostname, port=u.port or 3306, user=u.username or "root",
                                           password=u.password or "", autocommit=True)
                    with conn.cursor() as cur:
                        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
                    conn.close()
    off, on = results
    backend = "MariaDB" if args.mysql else "SQLite"
    print(f"backend {backend}, {args.calls} calls at up to {args.rate}/s, {args.limit} concurrent, "
          f"hold {args.hold} ms, writer {args.writer}; load average {load0} before, {os.getloadavg()[0]:.2f} after")
    for r in results:
        extra = f" (+ {r['writer_ms_per_call']} ms in the writer process)" if r["writer_ms_per_call"] else ""
        print(f"  acc+dialog {r['mode']:>3}: {r['calls']} ok / {r['failed']} failed, {r['cps']} calls/s, "
              f"{r['cpu_ms_per_call']} ms daemon CPU per call{extra}")
    ratio = on["cps"] / off["cps"] if off["cps"] else 0.0
    cpu_ratio = off["cpu_ms_per_call"] / on["cpu_ms_per_call"] if on["cpu_ms_per_call"] else 0.0
    st = on["stats"]
    calls = max(on["calls"], 1)
    total_ratio = off["cpu_ms_per_call"] / (on["cpu_ms_per_call"] + on["writer_ms_per_call"]) \
        if on["cpu_ms_per_call"] else 0.0
    print(f"  ratio on/off: {ratio:.2f} calls/s (CPU-based capacity ratio {cpu_ratio:.2f}: the event loop's; "
          f"counting the writer process too {total_ratio:.2f}); target >= 0.8")
    print(f"  DB load with acc on: {st.get('written_records', 0) / calls:.2f} records/call "
          f"(acc INVITE+BYE, cdr, dialog insert+delete), {st.get('db_transactions', 0) / calls:.3f} "
          f"transactions/call, spooled {st.get('spooled_records', 0)}")
    return 0 if min(ratio, cpu_ratio) >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
