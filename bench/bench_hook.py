#!/usr/bin/env python3
"""Cost of the routing hook: call throughput with a no-op hook as a ratio to no hook.

Two sipd configurations that differ only in ``[routing] hook`` (none / a ``route()`` that returns at
once) run the same SIPp call load (bench/scenarios/call_uac.xml -> call_uas.xml: INVITE, 200, ACK,
BYE, 200 through the record-routing proxy, no hold) at a fixed rate. The figure is calls per sipd
CPU second (successful calls / sipd user+system CPU during the run, from /proc): a single asyncio
process saturates at that many calls/s on one core, and the figure does not depend on whether the
load generator or the machine's other load limited the offered rate. Runs alternate (none, hook,
none, hook, ...) and the medians are compared. Target: ratio >= 0.9.

A second, in-process figure isolates the hook itself: microseconds per ``hook_stage`` call.

Usage: python bench/bench_hook.py [--rate 300] [--seconds 4] [--rounds 3] [--json OUT]
Everything runs on 127.0.0.1; every process started is ended by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from conftest import free_port  # noqa: E402
from helpers.sipd_proc import SipdProcess  # noqa: E402
from helpers.sipp import SippProcess, sipp_binary  # noqa: E402

SCN = REPO / "bench" / "scenarios"
CLK = os.sysconf("SC_CLK_TCK")
NOOP = "def route(request):\n    return None\n"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime


def one_run(tmp: Path, hook: str | None, rate: int, seconds: float) -> dict:
    conf = {
        "server": {"domains": ["127.0.0.1"]},
        "auth": {"register": False, "invite": False},
        "location": {"mode": "memory"},
        "antiflood": {"enabled": False}, "spam": {"enabled": False},
        "acc": {"enabled": False}, "dialog": {"enabled": False}, "presence": {"enabled": False},
        "log": {"level": "warning"},
    }
    if hook:
        conf["routing"] = {"hook": hook}
    proc = SipdProcess(tmp, conf, transports=("udp",))
    proc.start()
    uas = uac = None
    try:
        uas_port = free_port()
        (tmp / "callee.csv").write_text("SEQUENTIAL\ncallee;\n")
        reg = SippProcess(SCN / "reg.xml", proc.address, port=uas_port, cwd=tmp, inf=tmp / "callee.csv", timeout=10,
                          name="reg").start().wait()
        assert reg.ok, reg.explain()
        calls = int(rate * seconds)
        uas = SippProcess(SCN / "call_uas.xml", None, port=uas_port, cwd=tmp, calls=calls, timeout=seconds + 30,
                          abort_unexpected=False, name="uas").start()
        before = cpu_seconds(proc.pid)
        uac = SippProcess(SCN / "call_uac.xml", proc.address, port=free_port(), cwd=tmp, inf=tmp / "callee.csv",
                          calls=calls, rate=rate, hold_ms=0, timeout=seconds + 30, abort_unexpected=False,
                          extra=["-l", str(max(100, rate * 2))], name="uac").start()
        res = uac.wait(timeout=seconds + 40)
        cpu = cpu_seconds(proc.pid) - before
        ok = res.successful
        return {"hook": bool(hook), "calls": calls, "successful": ok, "failed": res.failed, "elapsed": res.elapsed,
                "cpu": cpu, "calls_per_cpu_s": ok / cpu if cpu > 0 else 0.0}
    finally:
        for p in (uac, uas):
            if p is not None:
                p.stop()
        proc.close(check_log=False)


def stage_cost(n: int = 200_000) -> dict:
    """Microseconds per hook_stage call (no-op hook) on a parsed INVITE, in process."""
    from types import SimpleNamespace

    from sipd import config as cfg
    from sipd.services import hook as hook_mod
    from sipd.services.pipeline import Context
    from sipd.sip.parser import parse_message
    from sipd.state import ServerState

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "noop.py"
        path.write_text(NOOP)
        conf, _ = cfg.from_dict({"routing": {"hook": str(path)}})
        st = ServerState(config=conf)
        hook_mod.setup(st)
    msg = (b"INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
           b"From: <sip:alice@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: x\r\n"
           b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    req = parse_message(msg)
    req.to  # noqa: B018 - parse once, as the pipeline has by then
    ctx = Context(req, ("udp", "10.0.0.1", 5060, None), st, 0.0, 0.0)
    t = min(timeit.repeat(lambda: hook_mod.hook_stage(ctx), number=n, repeat=3))
    return {"us_per_call": t / n * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=300, help="offered calls/s (default 300)")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of one run (default 4)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating (none, hook) pairs (default 3)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args()
    if not sipp_binary():
        print("sipp not installed", file=sys.stderr)
        return 1
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-hook-") as d:
        hook = Path(d) / "noop_hook.py"
        hook.write_text(NOOP)
        for i in range(args.rounds):
            for h in (None, str(hook)):
                tmp = Path(d) / f"run{i}-{'hook' if h else 'none'}"
                tmp.mkdir()
                r = one_run(tmp, h, args.rate, args.seconds)
                runs.append(r)
                print(f"{'no-op hook' if h else 'no hook   '}: {r['successful']}/{r['calls']} calls, sipd CPU "
                      f"{r['cpu']:.2f} s -> {r['calls_per_cpu_s']:.0f} calls per CPU second", flush=True)
    none = statistics.median(r["calls_per_cpu_s"] for r in runs if not r["hook"])
    with_hook = statistics.median(r["calls_per_cpu_s"] for r in runs if r["hook"])
    ratio = with_hook / none if none else 0.0
    cost = stage_cost()
    print(f"median calls per sipd CPU second: no hook {none:.0f}, no-op hook {with_hook:.0f}; "
          f"ratio {ratio:.3f} (target >= 0.9)")
    print(f"hook_stage with a no-op hook: {cost['us_per_call']:.2f} us per initial request (in process)")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "no_hook": none, "noop_hook": with_hook, "ratio": ratio,
                                               "stage": cost}, indent=2))
    return 0 if ratio >= 0.9 else 2


if __name__ == "__main__":
    sys.exit(main())
