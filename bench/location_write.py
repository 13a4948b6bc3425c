#!/usr/bin/env python3
"""CPU time of one write-through location write arriving alone: the store's hand-off to its
database thread, the transaction there, and the way back.

    bench/location_write.py [--aors 10000] [-n 2000] [--gap 0.002] [--repeat 3] [--kind refresh|new]

An SQLite location table of ``--aors`` AORs (one RFC 5626 binding each, as bench/tls_endpoints.py's
endpoints register) is written by the daemon's ``Store`` on an asyncio loop: ``-n`` writes, each
awaited alone and ``--gap`` s apart (an idle server's REGISTERs do not arrive together, so none
shares a commit). ``refresh``: the binding's expiry, CSeq and time move on (what a refresh
REGISTER changes); ``new``: a binding with another contact URI replaces it. Prints CPU µs per
write, of the whole process and of the database thread, the lowest and the median of ``--repeat``
rounds, the empty loop's own cost (the gaps) taken off. CPU time is load-sensitive: run it under
``flock -x /work/notes/bench.lock`` and compare versions alternately.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import inspect
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sipd.db import connect, schema  # noqa: E402
from sipd.services.location import Contact  # noqa: E402
from sipd.services.store import Store  # noqa: E402

DOMAIN = "bench.example"


def binding(i: int, now: float) -> Contact:
    return Contact(
        uri=f"sip:ua{i}@127.0.1.{i % 200 + 1}:{20000 + i};transport=tls;ob", expires=now + 600, q=None,
        call_id=f"{i:08x}-reg", cseq=1, user_agent="tls_ua", received=f"tls:127.0.1.{i % 200 + 1}:{20000 + i}",
        socket="tls:127.0.0.1:5061", instance=f"<urn:uuid:00000000-0000-4000-8000-{i:012x}>", reg_id=1,
        conn_id=i, last_modified=now, state="CS_NEW")


async def run(args: argparse.Namespace, db_path: Path) -> list[tuple[float, float]]:
    store = Store(f"sqlite:///{db_path}")
    await store.open()
    now = time.time()
    table: dict[str, list[Contact]] = {}
    for start in range(0, args.aors, 1000):  # the table as the ramp leaves it
        chunk = {f"ua{i}@{DOMAIN}": [binding(i, now)] for i in range(start, min(start + 1000, args.aors))}
        await store.flush_all(list(chunk.items()))
        table.update(chunk)
    rng = random.Random(1)
    refresh_hint = "before" in inspect.signature(store.save_aor).parameters  # older code: no such hint
    gap = args.gap

    async def empty_round() -> float:
        t0 = time.process_time()
        for _ in range(args.n):
            await asyncio.sleep(gap)
        return time.process_time() - t0

    def db_thread_cpu() -> float:
        return time.thread_time()

    rounds = []
    for _ in range(args.repeat):
        base = await empty_round()
        db0 = await store.call(db_thread_cpu)
        t0 = time.process_time()
        for _ in range(args.n):
            i = rng.randrange(args.aors)
            aor = f"ua{i}@{DOMAIN}"
            old = table[aor][0]
            now = time.time()
            if args.kind == "refresh":
                new = dataclasses.replace(old, expires=now + 600, cseq=old.cseq + 1, last_modified=now,
                                          state="CS_DIRTY" if old.state != "CS_NEW" else "CS_NEW")
            else:
                new = dataclasses.replace(old, uri=old.uri.replace("ua", "ub", 1) if "ua" in old.uri
                                          else old.uri.replace("ub", "ua", 1), instance=None, reg_id=None,
                                          expires=now + 600, last_modified=now, state="CS_NEW")
            table[aor] = [new]
            await (store.save_aor(aor, [new], [old]) if refresh_hint else store.save_aor(aor, [new]))
            await asyncio.sleep(gap)
        total = time.process_time() - t0
        db = await store.call(db_thread_cpu) - db0
        rounds.append(((total - base) / args.n * 1e6, db / args.n * 1e6))
    await store.close()
    return rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aors", type=int, default=10000)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--gap", type=float, default=0.002)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kind", choices=("refresh", "new"), default="refresh")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sipd-locwrite-") as tmp:
        db = connect(f"sqlite:///{Path(tmp) / 'loc.db'}")
        schema.create_all(db)
        db.close()
        rounds = asyncio.run(run(args, Path(tmp) / "loc.db"))
    whole = [r[0] for r in rounds]
    dbt = [r[1] for r in rounds]
    print(f"{args.kind}, {args.aors} AORs, {args.n} lone writes x {args.repeat}: "
          f"process {min(whole):.0f} µs (median {statistics.median(whole):.0f}), "
          f"database thread {min(dbt):.0f} µs (median {statistics.median(dbt):.0f}) per write")


if __name__ == "__main__":
    main()
