#!/usr/bin/env python3
"""Start sipd as a benchmark target for run.sh (TARGET_CMD / TARGET_AUTH_CMD), in the foreground.

    sipd_target.py --mode noauth|auth --port PORT --out DIR [--credentials CSV] [--users N]

Writes DIR/sipd-<mode>.toml, provisions DIR/sipd-bench.db once (domain 127.0.0.1 -- the realm
run.sh's scenarios use -- plus every user of the credentials CSV and "callee"), then replaces
itself with ``python -m sipd --config ...`` so that run.sh's SIGTERM reaches sipd directly.

Equivalence with bench/kamailio-registrar.cfg: registrations in memory only (Kamailio usrloc
db_mode 0 <-> [location] mode = "memory"), REGISTER challenged only in auth mode (credentials
held in memory by sipd's subscriber cache <-> Kamailio's htable variant), INVITE not challenged,
record-routing stateful proxy; flood/spam protection off (all load comes from 127.0.0.1 and the
call scenario dials user@127.0.0.1, which the IP-domain spam rule would drop).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def toml(conf: dict) -> str:
    from sipd.config import dump

    return dump(conf)


def provision(db_path: Path, credentials: Path | None, users: int) -> None:
    marker = db_path.with_suffix(".provisioned")
    if marker.exists():
        return
    from sipctl.lib import provision as prov
    from sipd.db import connect, schema

    rows: list[tuple[str, str]] = [("callee", "calleepw")]
    if credentials and credentials.exists():
        for line in credentials.read_text().splitlines():
            if "," in line:
                u, p = line.split(",", 1)
                rows.append((u.strip(), p.strip()))
    else:
        rows += [(f"user{i:06d}", f"pw{i:06d}") for i in range(1, users + 1)]
    db = connect(f"sqlite:///{db_path}")
    try:
        schema.create_all(db)
        with db.transaction():
            prov.add_domain(db, "127.0.0.1")
            for u, p in rows:
                prov.add_user(db, u, "127.0.0.1", p)
    finally:
        db.close()
    marker.write_text(f"{len(rows)} users\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["noauth", "auth"], default=os.environ.get("BENCH_MODE", "noauth"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "5070")))
    ap.add_argument("--out", default=os.environ.get("BENCH_OUT", "."))
    ap.add_argument("--credentials", default=os.environ.get("BENCH_CREDENTIALS"))
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--location-mode", default=os.environ.get("SIPD_LOCATION_MODE", "memory"))
    ap.add_argument("--log-level", default=os.environ.get("SIPD_LOG_LEVEL", "warning"))
    ap.add_argument("--max-expires", type=int, default=86400)
    ap.add_argument("--workers", type=int, default=int(os.environ.get("SIPD_WORKERS", "1")),
                    help="[server] workers (processes sharing the UDP socket; Kamailio's run uses 2 children)")
    args = ap.parse_args()

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    db_path = out / "sipd-bench.db"
    provision(db_path, Path(args.credentials) if args.credentials else None, args.users)
    conf = {
        "server": {"listen": [f"udp:127.0.0.1:{args.port}", f"tcp:127.0.0.1:{args.port}"], "workers": args.workers},
        "database": {"url": f"sqlite:///{db_path}"},
        "mgmt": {"socket": str(out / f"sipd-{args.mode}.sock")},
        "log": {"level": args.log_level},
        "location": {"mode": args.location_mode},
        "registrar": {"max_expires": args.max_expires},
        "auth": {"register": args.mode == "auth", "invite": False},
        "antiflood": {"enabled": False},
        "spam": {"enabled": False},
        # every SIPp connection comes from 127.0.0.1 (-t tn: one per call), as Kamailio's
        # tcp_max_connections = 4096 in bench/kamailio-registrar.cfg, with no limit per source
        "limits": {"tcp_max_connections": 4096, "tcp_max_per_source": 4096},
    }
    if os.environ.get("BENCH_FULL") != "1":
        # Equivalent to bench/kamailio-registrar.cfg, which loads no acc, dialog, presence or
        # nathelper module: sipd's defaults for those are turned off (BENCH_FULL=1 keeps them on).
        for section in ("acc", "dialog", "presence", "nat"):
            conf[section] = {"enabled": False}
    cfg = out / f"sipd-{args.mode}.toml"
    cfg.write_text(toml(conf))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    os.execve(sys.executable, [sys.executable, "-m", "sipd", "--config", str(cfg)], env)


if __name__ == "__main__":
    main()
