#!/usr/bin/env python3
"""Distributed flood: does the institution's own endpoint still register while a botnet floods?

Reproduces the table of the "service under attack" report, sipd and Kamailio 5.6 side by side in
the same run (one target flooded at a time, the other idle):

* the flood: ``--sources`` loopback addresses (127.1.x.y), each below sipd's per-source limit,
  sending INVITEs from random users of the domain to random users (never ACKed) and REGISTERs of
  random users without credentials, at each rate of ``--rates`` packets/s in total;
* the legitimate endpoint (127.3.0.1), registered before the flood starts, registers alice with
  digest (REGISTER -> 401 -> REGISTER -> 200) every 0.2 s, ``--count`` times per step; each
  request is retransmitted as Timer A does (0.5, 1, 2 s) and the registration is given up 4 s
  after its first send;
* per step: legitimate REGISTERs ok (%), p50/p99 of the successful ones (first send to 200), CPU of
  the server (all its processes, % of one core), kernel drops at its UDP socket (the drops column
  of /proc/net/udp for its port, all sockets on it), what the flooders really sent;
* per target: RSS (all processes) before the first and after the last step (``--settle`` s after
  it), and whether a registration and ``sipctl ul show`` work at once after the flood.

sipd runs with its defaults except ``[antiflood] trusted_networks = []`` and ``[server] workers``;
Kamailio (bench/kamailio-flood.cfg) with as many children. Ports are free ones chosen at run time;
every process started is ended by its PID; every phase is bounded in count and time.

    bench/flood.py                                  # 5k/15k/35k pkt/s, workers 1 and 2, ~12 min
    bench/flood.py --rates 5000 --workers 1 --count 50 --targets sipd   # a quick look
    bench/flood.py --json bench/results/flood.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from helpers.procstat import cpu_seconds, process_tree, rss_kib  # noqa: E402
from helpers.sipd_proc import SipdProcess, options_ping  # noqa: E402

from helpers.flood import (  # noqa: E402
    DOMAIN, GIVE_UP, LEGIT_HOST, finish_flood, legit_run, register_once, sources as flood_sources, start_flood,
)

from tests.e2e.security_ua import UA  # noqa: E402


# -- measuring ---------------------------------------------------------------------------------


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped at the sockets bound to ``port`` (receive buffer full)."""
    total = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port:
            total += int(f[-1])
    return total


# -- the legitimate endpoint -------------------------------------------------------------------


# -- targets -----------------------------------------------------------------------------------


class Sipd:
    name = "sipd"

    def __init__(self, tmp: Path, workers: int):
        self.proc = SipdProcess(tmp / f"sipd-w{workers}", {"antiflood": {"trusted_networks": []},
                                                            "server": {"workers": workers}},
                                domains=[DOMAIN], users=[("alice@" + DOMAIN, "alicepw")])

    def start(self) -> None:
        self.proc.start()
        self.port = self.proc.udp_port
        self.pid = self.proc.pid

    def registrations(self) -> str:
        r = self.proc.sipctl("ul", "show", check=False, timeout=30)
        return "ok" if r.returncode == 0 and "alice" in r.stdout else f"failed (rc {r.returncode})"

    def stop(self) -> None:
        self.proc.close(check_log=False)

    def log_lines(self) -> int:
        return len(self.proc.log_text().splitlines())


class Kamailio:
    name = "kamailio"

    def __init__(self, tmp: Path, workers: int):
        self.dir = tmp / f"kamailio-w{workers}"
        self.workers = workers
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        db = self.dir / "dbtext"
        db.mkdir(parents=True)
        (db / "version").write_text("id(int,auto) table_name(string) table_version(int) \n0:version:1\n0:subscriber:7\n")
        (db / "subscriber").write_text("id(int,auto) username(string) domain(string) password(string) "
                                       f"ha1(string,null) ha1b(string,null) \n1:alice:{DOMAIN}:alicepw:::\n")
        from helpers.sipd_proc import _free_port

        self.port = _free_port("127.0.0.1", None)
        cmd = ["kamailio", "-f", str(REPO / "bench" / "kamailio-flood.cfg"), "-DD", "-E", "-m", "256", "-M", "16",
               "-n", str(self.workers), "-w", str(self.dir), "-A", f"BENCH_PORT={self.port}",
               "-A", f'DBURL="text://{db}"', "-A", f'BENCH_DOMAIN="{DOMAIN}"']
        self.log = open(self.dir / "kamailio.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 20
        while options_ping("127.0.0.1", self.port) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kamailio did not start: {(self.dir / 'kamailio.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def registrations(self) -> str:
        return "n/a"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            kids = process_tree(self.proc.pid)[1:]
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            for k in kids:  # children left behind (they normally exit with the main process)
                try:
                    os.kill(k, 9)
                except OSError:
                    pass
        self.log.close()


def flood_step(target, rate: int, sources: list[str], count: int) -> dict:
    seconds = count * 0.2 + GIVE_UP + 2
    pids = process_tree(target.pid)
    cpu0, drops0, t0 = cpu_seconds(pids), udp_drops(target.port), time.monotonic()
    procs = start_flood(target.port, rate, seconds, sources)
    try:
        time.sleep(1.0)  # the flood is under way before the endpoint starts
        legit = legit_run(target.port, count)
    finally:
        sent, errors = finish_flood(procs, seconds)
    wall = time.monotonic() - t0
    return {**legit, "flood_pps": round(sent / seconds), "flood_send_errors": errors,
            "cpu_pct": round(100 * (cpu_seconds(pids) - cpu0) / wall), "kernel_drops": udp_drops(target.port) - drops0}


def run_target(target, rates: list[int], args: argparse.Namespace, sources: list[str]) -> dict:
    out: dict = {"steps": {}}
    pids = process_tree(target.pid)
    with UA(("127.0.0.1", target.port), host=LEGIT_HOST) as ua:  # registered before the flood
        out["registered_before"] = register_once(ua, "alice", "alicepw") is not None
    time.sleep(1.0)
    out["rss_before_kib"] = rss_kib(pids)
    for rate in rates:
        step = flood_step(target, rate, sources, args.count)
        out["steps"][rate] = step
        print(f"  {target.name:8} w={args._w} {rate:>6} pkt/s: ok {step['ok_pct']}% p50/p99 {step['p50_ms']}/{step['p99_ms']} ms"
              f" cpu {step['cpu_pct']}% drops {step['kernel_drops']} (sent {step['flood_pps']}/s)", flush=True)
        time.sleep(2.0)
    t = time.monotonic()
    with UA(("127.0.0.1", target.port), host=LEGIT_HOST) as ua:
        ms = register_once(ua, "alice", "alicepw")
    out["register_after_ms"] = None if ms is None else round(ms, 1)
    out["ul_show_after"] = target.registrations()
    out["after_checks_s"] = round(time.monotonic() - t, 2)
    time.sleep(args.settle)
    out["rss_after_kib"] = rss_kib(process_tree(target.pid))
    out["rss_change_pct"] = round(100 * (out["rss_after_kib"] - out["rss_before_kib"]) / out["rss_before_kib"], 1)
    return out


def table(results: dict, rates: list[int]) -> str:
    lines = ["| workers | flood | sipd ok | p50 / p99 | sipd CPU | drops at sipd | Kamailio ok | p50 / p99 | Kamailio CPU | drops at Kamailio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for w, per in results.items():
        for rate in rates:
            cells = []
            for name in ("sipd", "kamailio"):
                s = per.get(name, {}).get("steps", {}).get(rate)
                cells += (["-"] * 4 if s is None else
                          [f"{s['ok_pct']} %", f"{s['p50_ms']} / {s['p99_ms']} ms", f"{s['cpu_pct']} %", f"{s['kernel_drops']:,}"])
            lines.append(f"| {w} | {rate:,} pkt/s | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="5000,15000,35000", help="flood rates, packets/s in total (comma list)")
    ap.add_argument("--workers", default="1,2", help="[server] workers / Kamailio children to run (comma list)")
    ap.add_argument("--targets", default="sipd,kamailio", help="sipd, kamailio or both")
    ap.add_argument("--sources", type=int, default=250, help="flood source addresses (127.1.x.y)")
    ap.add_argument("--count", type=int, default=100, help="legitimate registrations per step (one each 0.2 s)")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds after the last step before RSS is read")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # timeout(1): the targets are still stopped
    rates = [int(r) for r in args.rates.split(",") if r]
    names = [t for t in args.targets.split(",") if t]
    if "kamailio" in names and shutil.which("kamailio") is None:
        sys.exit("kamailio is not installed (apt-get install kamailio), or run with --targets sipd")
    sources = flood_sources(args.sources)
    results: dict = {}
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"flood benchmark, {started:%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="sipd-flood-") as tmp:
        for w in [int(x) for x in args.workers.split(",") if x]:
            args._w = w
            targets = [Sipd(Path(tmp), w) if n == "sipd" else Kamailio(Path(tmp), w) for n in names]
            try:
                for t in targets:
                    t.start()
                # side by side: each rate against every target in turn, in the same run
                per: dict = {t.name: {"steps": {}} for t in targets}
                for t in targets:
                    per[t.name] = run_target(t, rates, args, sources)
                results[w] = per
            finally:
                for t in targets:
                    t.stop()
    finished = datetime.datetime.now(datetime.timezone.utc)
    print(table(results, rates))
    for w, per in results.items():
        for name, r in per.items():
            print(f"workers={w} {name}: RSS {r['rss_before_kib']} -> {r['rss_after_kib']} KiB ({r['rss_change_pct']:+} %),"
                  f" REGISTER after the flood {r['register_after_ms']} ms, ul show {r['ul_show_after']}")
    doc = {"started": started.isoformat(), "finished": finished.isoformat(), "load_average": os.getloadavg(),
           "args": {k: v for k, v in vars(args).items() if not k.startswith("_")}, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
