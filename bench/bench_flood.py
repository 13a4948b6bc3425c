#!/usr/bin/env python3
"""Flood benchmark: legitimate REGISTERs while one source floods a live sipd on loopback.

Reports
  * the flood rate the generator sustained (packets/s sent from one source, 127.0.0.2),
  * success ratio and p50/p99 latency of legitimate authenticated REGISTERs (401 + 200, from
    127.0.0.3) without and with the flood,
  * the CPU cost of a banned packet: sipd CPU seconds / packets dropped by the ban, during a
    banned-only flood; plus the in-process cost of ``Antiflood.check_packet`` for a banned source,
  * sipd's RSS before and after a flood from many sources (127.0.x.y; parametrised length,
    default short; ``--spread-seconds 600`` for the 10-minute run), to show memory is bounded.

Usage: python bench/bench_flood.py [--seconds 5] [--flooders 2] [--spread-seconds 10]
       [--spread-sources 5000] [--json OUT]
Everything runs on loopback and every process started is ended by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from helpers.sipd_proc import SipdProcess  # noqa: E402

from tests.e2e.security_ua import UA  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")

FLOODER = r"""
import resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
host, port, seconds, src = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
nsrc = int(sys.argv[5]) if len(sys.argv) > 5 else 1
socks = []
for i in range(nsrc):
    a = src if nsrc == 1 else "127.0.%d.%d" % (10 + i // 250, 1 + i % 250)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((a, 0)); s.setblocking(False)
    socks.append((s, a, s.getsockname()[1]))
def msg(a, lp, i):
    return ("OPTIONS sip:%s:%d SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bKf%d\r\nMax-Forwards: 70\r\n"
            "From: <sip:f@%s>;tag=%d\r\nTo: <sip:x@%s>\r\nCall-ID: fl%d\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n" % (host, port, a, lp, i, a, i, host, i)).encode()
payloads = [msg(socks[0][1], socks[0][2], i) for i in range(512)]
sent, end, i = 0, time.monotonic() + seconds, 0
dest = (host, port)
while time.monotonic() < end:
    for _ in range(128):
        s, a, lp = socks[i % len(socks)]
        try:
            s.sendto(payloads[i & 511] if nsrc == 1 else msg(a, lp, i), dest); sent += 1
        except BlockingIOError:
            pass
        except OSError:
            pass
        i += 1
for s, _, _ in socks:
    s.close()
print(sent)
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def stats(proc: SipdProcess, group: str = "antiflood:") -> dict:
    from sipd import config as cfg
    from sipd.mgmt import client

    conf = cfg.Config()
    conf.mgmt.socket = proc.socket_path
    return client.call(conf, "get_statistics", [group], 5.0)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def legit_registers(port: int, seconds: float, host: str = "127.0.0.3", rate: float = 40.0) -> dict:
    """Authenticated REGISTERs paced at ``rate``/s (80 requests/s: a busy NAT, not a flood)."""
    lat: list[float] = []
    ok = total = 0
    with UA(("127.0.0.1", port), host=host) as ua:
        start = time.monotonic()
        end = start + seconds
        while time.monotonic() < end:
            pause = start + total / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            t0 = time.perf_counter()
            r = ua.register("alice", "alicepw", "example.test", timeout=3.0)
            dt = time.perf_counter() - t0
            total += 1
            if r is not None and r.status == 200:
                ok += 1
                lat.append(dt * 1000)
    return {"total": total, "ok": ok, "success": ok / total if total else 0.0,
            "p50_ms": round(percentile(lat, 50), 3), "p99_ms": round(percentile(lat, 99), 3)}


def start_flood(port: int, seconds: float, n: int, src: str = "127.0.0.2", nsrc: int = 1) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", FLOODER, "127.0.0.1", str(port), str(seconds), src, str(nsrc)],
                             stdout=subprocess.PIPE, text=True) for _ in range(n)]


def finish(flooders: list[subprocess.Popen], seconds: float = 0.0) -> int:
    """Wait for the flooders (they stop by themselves after ``seconds``) and add up what they sent."""
    sent = 0
    for f in flooders:
        out, _ = f.communicate(timeout=seconds + 120)
        sent += int(out.strip() or 0)
    return sent


def check_packet_cost() -> float:
    from sipd.services.antiflood import Antiflood, AntifloodSettings

    af = Antiflood(AntifloodSettings(trusted=()))
    af.ban_add("203.0.113.9", 0.0, 3600)
    n = 1_000_000
    return timeit.timeit(lambda: af.check_packet("203.0.113.9", 1.0), number=n) / n * 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each measured phase")
    ap.add_argument("--flooders", type=int, default=2, help="flood processes (all from 127.0.0.2)")
    ap.add_argument("--spread-seconds", type=float, default=10.0, help="many-source flood length (600 = 10 min)")
    ap.add_argument("--spread-sources", type=int, default=5000, help="distinct source addresses in that flood")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    results: dict = {"check_packet_banned_ns": round(check_packet_cost(), 1)}
    with tempfile.TemporaryDirectory() as tmp:
        proc = SipdProcess(Path(tmp), {"antiflood": {"trusted_networks": []}, "log": {"level": "warning"}},
                           domains=["example.test"], users=[("alice@example.test", "alicepw")])
        proc.start()
        try:
            pid = proc.pid
            port = proc.udp_port
            results["rss_start_kib"] = rss_kib(pid)
            results["baseline"] = legit_registers(port, args.seconds)

            flood = start_flood(port, args.seconds + 1, args.flooders)
            time.sleep(0.5)  # flood under way (and banned) before we measure
            results["during_flood"] = legit_registers(port, args.seconds)
            sent = finish(flood)
            results["flood_rate_pps"] = round(sent / (args.seconds + 1))
            results["flood_sent"] = sent

            # CPU per banned packet: the flooding source is still banned; flood alone
            before = stats(proc)
            cpu0 = cpu_seconds(pid)
            flood = start_flood(port, args.seconds, args.flooders)
            sent = finish(flood)
            cpu1 = cpu_seconds(pid)
            after = stats(proc)
            dropped = after["antiflood:dropped_packets"] - before["antiflood:dropped_packets"]
            results["banned_flood"] = {
                "sent": sent, "dropped_by_ban": dropped, "sipd_cpu_s": round(cpu1 - cpu0, 3),
                "us_per_banned_packet": round((cpu1 - cpu0) / dropped * 1e6, 2) if dropped else None,
                "received_share": round(dropped / sent, 3) if sent else None,
            }

            # memory after a flood from many sources (each one tracked, most banned)
            rss0 = rss_kib(pid)
            flood = start_flood(port, args.spread_seconds, 1, nsrc=args.spread_sources)
            samples, t0 = [], time.monotonic()
            while flood[0].poll() is None and time.monotonic() - t0 < args.spread_seconds + 120:
                samples.append((round(time.monotonic() - t0), rss_kib(pid)))
                time.sleep(min(30.0, max(1.0, args.spread_seconds / 20)))
            sent = finish(flood, args.spread_seconds)
            s = stats(proc)
            results["spread_flood"] = {
                "seconds": args.spread_seconds, "sources": args.spread_sources, "sent": sent,
                "rss_before_kib": rss0, "rss_after_kib": rss_kib(pid), "rss_samples_kib": samples,
                "active_bans": s["antiflood:active_bans"], "tracked_sources": s["antiflood:tracked_sources"],
            }
            results["after_spread_legit"] = legit_registers(port, 1.0, host="127.0.0.4")
            results["alive"] = proc.running()
        finally:
            proc.close(check_log=False)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
