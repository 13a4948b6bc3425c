#!/usr/bin/env python3
"""Long live-daemon fuzz run: mutated SIP over UDP and TCP against a real sipd (acc, dialogs, presence on).

    nice .venv/bin/python bench/fuzz_live.py [--udp 1000000] [--tcp 50000] [--seed N] [--time-limit 5400]

Starts sipd on a free loopback port with its defaults (accounting, dialogs and presence are on by
default; DNS pointed at a dead loopback port so no lookup leaves the host), registers the fuzzee
and a clean callee, then sends ``--udp`` mutated datagrams and ``--tcp`` mutated messages over TCP
(partial writes, abrupt closes, resets), with a clean call every ``--clean-every`` messages and an
OPTIONS check every ``--check-every``. Prints the seed, messages/s and sipd's RSS (daemon + its
accounting writer) before, during and after. Exit status 1 when sipd stopped answering, logged a
traceback, died, grew by 200 MB or more, a clean call failed, or a completed call has no CDR.
Under Linux it re-runs itself in a private network namespace (``unshare -rn``) when it can, so
even a mutated address cannot send a packet off the host.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.daemon.harness import add_subscriber, live_daemon  # noqa: E402
from tests.helpers.live_fuzz import FUZZEE, CleanCalls, LiveFuzzer, answers, cdrs_missing, fuzz_config, rss_mb  # noqa: E402

RSS_LIMIT_MB = 200.0


def in_namespace() -> bool:
    """Re-exec inside ``unshare -rn`` (loopback only) when possible; True when already there."""
    if os.environ.get("FUZZ_LIVE_NETNS") or not shutil.which("unshare") or not shutil.which("ip"):
        return True
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    if probe.returncode != 0:
        return True
    env = dict(os.environ, FUZZ_LIVE_NETNS="1")
    cmd = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, *sys.argv]
    sys.exit(subprocess.run(cmd, env=env).returncode)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--udp", type=int, default=1_000_000)
    ap.add_argument("--tcp", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--time-limit", type=float, default=5400.0, help="seconds for the whole run")
    ap.add_argument("--clean-every", type=int, default=5000)
    ap.add_argument("--check-every", type=int, default=20000)
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (log, database)")
    ap.add_argument("--workers", type=int, default=1, help="[server] workers (registrar worker processes)")
    args = ap.parse_args()
    in_namespace()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"seed {seed} (reproduce with --seed {seed})", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="sipd-fuzz-live-"))
    conf = fuzz_config(tmp)
    if args.workers > 1:
        conf["server"] = {"workers": args.workers}
    d = live_daemon(tmp, conf)
    for user, pw in ((FUZZEE, "fuzzpw"), ("alice", "alicepw"), ("carol", "carolpw")):
        add_subscriber(d.db_url, user, pw)
    d.start()
    failures: list[str] = []
    try:
        calls = CleanCalls("127.0.0.1", d.port, ("alice", "alicepw"), ("carol", "carolpw"))
        start_rss = rss_mb(d.proc.pid)
        peak = start_rss
        t0 = time.monotonic()
        reports = []
        for proto, count, share in (("udp", args.udp, 0.0), ("tcp", args.tcp, 1.0)):
            # one fuzzer (one fuzzee registration) per transport; RSS printed every 100,000
            fz = LiveFuzzer("127.0.0.1", d.port, seed + (0 if proto == "udp" else 1), fuzzee_password="fuzzpw",
                            tcp_share=share)
            fz.register_fuzzee()
            chunk = 100_000
            for k in range(0, count, chunk):
                rep = fz.run(min(chunk, count - k), time_limit=max(1.0, args.time_limit - (time.monotonic() - t0)),
                             clean_call=calls, clean_every=args.clean_every, check_every=args.check_every,
                             close=False)
                peak = max(peak, rss_mb(d.proc.pid))
                print(f"  {proto}: {rep.sent} of {count}, RSS {rss_mb(d.proc.pid):.0f} MiB "
                      f"(start {start_rss:.0f}, peak {peak:.0f})", flush=True)
                if not d.running() or rep.stalls or time.monotonic() - t0 > args.time_limit:
                    break
            fz.close()
            reports.append(fz.report)
        total = sum(r.sent for r in reports)
        secs = time.monotonic() - t0
        end_rss = rss_mb(d.proc.pid)
        completed = [c for r in reports for c in r.clean_calls + r.completed_calls]
        failed = [c for r in reports for c in r.failed_clean_calls]
        print(f"sent {total} messages in {secs:.0f}s ({total / secs:.0f} msg/s); "
              f"udp {sum(r.udp_sent for r in reports)}, tcp {sum(r.tcp_sent for r in reports)} on "
              f"{sum(r.tcp_connections for r in reports)} connections ({sum(r.tcp_resets for r in reports)} reset)")
        print(f"RSS start {start_rss:.0f} MiB, peak {peak:.0f}, end {end_rss:.0f}: growth {end_rss - start_rss:+.0f} MiB")
        if not d.running():
            failures.append("sipd died")
        elif not answers("127.0.0.1", d.port, 10):
            failures.append("sipd does not answer OPTIONS")
        if any(r.stalls for r in reports):
            failures.append("sipd stopped answering during the run")
        if end_rss - start_rss >= RSS_LIMIT_MB:
            failures.append(f"RSS grew by {end_rss - start_rss:.0f} MiB")
        if not calls("final-" + str(seed)):
            failures.append("a clean call after the run failed")
        else:
            completed.append("final-" + str(seed))
        if failed:
            failures.append(f"{len(failed)} clean calls failed during the run: {failed[:5]}")
        missing = cdrs_missing(d.db_url, completed)
        print(f"calls completed {len(completed)} ({sum(len(r.completed_calls) for r in reports)} fuzzed), "
              f"clean calls failed {len(failed)}, without CDR {len(missing)}")
        if missing:
            failures.append(f"no CDR for {missing[:5]}")
        calls.close()
    finally:
        rc = d.stop()
        log = d.log_text()
        tracebacks = log.count("Traceback")
        print(f"sipd exit status {rc}, tracebacks in the log: {tracebacks}, log lines {log.count(chr(10))}")
        if tracebacks:
            failures.append(f"{tracebacks} tracebacks in the log")
            i = log.find("Traceback")
            print(log[max(0, i - 300):i + 3000])
        if not args.keep and not failures:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"scratch directory kept: {tmp}")
    print("FAIL: " + "; ".join(failures) if failures else "OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
