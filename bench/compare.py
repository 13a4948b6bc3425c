#!/usr/bin/env python3
"""Compare two bench/run.sh result folders (Kamailio first, sipd second).

    compare.py KAMAILIO_OUT SIPD_OUT

For each scenario: the highest passing step (fewer than FAIL_PCT % failed or unfinished, achieved
>= 95 % of offered) of each target, its achieved rate, p50/p99 response time, target CPU % and
CPU us per operation, and the ratio sipd/Kamailio of the achieved rates. Stdlib only.
"""

from __future__ import annotations

import os
import sys

TARGETS = {"reg": 0.5, "reg_auth": 0.5, "call": 0.5}   # sipd/Kamailio ratio targets: at least half Kamailio's rate


def best_rows(out: str) -> dict[str, dict[str, str]]:
    path = os.path.join(out, "results.tsv")
    if not os.path.exists(path):
        return {}
    lines = [line.rstrip("\n").split("\t") for line in open(path) if line.strip()]
    hdr, rows = lines[0], lines[1:]
    best: dict[str, dict[str, str]] = {}
    for r in rows:
        d = dict(zip(hdr, r))
        if d.get("verdict") != "PASS":
            continue
        cur = best.get(d["scenario"])
        if cur is None or float(d["achieved/s"]) > float(cur["achieved/s"]):
            best[d["scenario"]] = d
    for r in rows:                      # scenarios without any passing step
        best.setdefault(dict(zip(hdr, r))["scenario"], {})
    return best


def fmt(d: dict[str, str]) -> str:
    if not d:
        return "no passing step | - | - | -"
    return (f"{float(d['achieved/s']):,.0f}/s (offered {int(d['rate']):,}) | "
            f"{d['rt_p50_ms']}/{d['rt_p99_ms']} ms | {d['target_cpu%']} % | {d['target_us/call']} µs")


def main() -> int:
    kam, sipd = best_rows(sys.argv[1]), best_rows(sys.argv[2])
    print("| scenario | Kamailio max sustained | p50/p99 | CPU | CPU/op | sipd max sustained | p50/p99 | CPU | "
          "CPU/op | ratio sipd/Kamailio | target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for scen in ("reg", "reg_auth", "call"):
        if scen not in kam and scen not in sipd:
            continue
        k, s = kam.get(scen, {}), sipd.get(scen, {})
        ratio = "-"
        verdict = ""
        if k and s:
            r = float(s["achieved/s"]) / float(k["achieved/s"])
            ratio = f"{r:.2f}"
            verdict = "met" if r >= TARGETS[scen] else "MISSED"
        elif k:
            ratio, verdict = "0", "MISSED"
        print(f"| {scen} | {fmt(k)} | {fmt(s)} | {ratio} | >= {TARGETS[scen]} {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
