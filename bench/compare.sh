#!/usr/bin/env bash
# Side-by-side benchmark: Kamailio 5.6 (bench/kamailio-registrar.cfg, 2 children, REGISTER auth
# from an htable) and then sipd (bench/sipd_target.py, [server] workers = 2, or SIPD_WORKERS),
# same SIPp scenarios, same rate ladder,
# one after the other on this machine; then bench/compare.py prints max sustained rate, p50/p99,
# CPU and the ratio sipd/Kamailio.
#
#   bench/compare.sh                         # all three scenarios, default ladders
#   SCENARIOS=reg bench/compare.sh           # one scenario
#   QUICK=1 bench/compare.sh                 # short smoke run (3 s steps, low rates)
#
# Knobs are run.sh's (RATES_reg, RATES_reg_auth, RATES_call, DURATION, ...), passed through.
# Every SIPp run is bounded (-m, -timeout, timeout(1)); targets are stopped by PID.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
py=${SIPD_PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=python3
stamp=$(date +%Y%m%d-%H%M%S)
base=${BASE:-$here/results/$stamp}
mkdir -p "$base"
export SCENARIOS=${SCENARIOS:-"reg reg_auth call"}
if [ "${QUICK:-0}" = 1 ]; then
  export DURATION=${DURATION:-3} REFINE=${REFINE:-0} QUIET_WAIT=${QUIET_WAIT:-10} USERS=${USERS:-1000}
  export RATES_reg=${RATES_reg:-"500 1000 2000"} RATES_reg_auth=${RATES_reg_auth:-"500 1000"} RATES_call=${RATES_call:-"100 200"}
else
  export RATES_reg=${RATES_reg:-"1000 2000 4000 6000 8000 12000 16000 20000"}
  export RATES_reg_auth=${RATES_reg_auth:-"1000 2000 4000 6000 8000 12000"}
  export RATES_call=${RATES_call:-"200 400 600 800 1000 1350 1600"}
fi
# ports chosen at run time (other work on this machine may hold 5070/15070/15071)
free_port() { python3 -c 'import random, socket
for _ in range(200):
    p = random.randint(12000, 19999)      # below the ephemeral range: no client socket takes it
    u, t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket()
    try:
        u.bind(("127.0.0.1", p)); t.bind(("127.0.0.1", p)); print(p); break
    except OSError: pass
    finally: u.close(); t.close()'; }
export TARGET_PORT=${TARGET_PORT:-$(free_port)} UAS_PORT=${UAS_PORT:-$(free_port)} UAC_PORT=${UAC_PORT:-$(free_port)}
if [ "${SKIP_KAMAILIO:-0}" != 1 ]; then
  OUT="$base/kamailio" KAM_AUTH=htable KAM_CHILDREN=${KAM_CHILDREN:-2} "$here/run.sh" kamailio
fi
export SIPD_PYTHON="$py"
# the build measured: pure Python, or the core compiled by scripts/build-core
(cd "$root" && "$py" -m sipd --version) | tee "$base/sipd-core.txt"
# like for like: as many sipd processes ([server] workers) as Kamailio children
export SIPD_WORKERS=${SIPD_WORKERS:-${KAM_CHILDREN:-2}}
OUT="$base/sipd" \
TARGET_CMD='"$SIPD_PYTHON" "$BENCH_DIR/sipd_target.py" --mode noauth' \
TARGET_AUTH_CMD='"$SIPD_PYTHON" "$BENCH_DIR/sipd_target.py" --mode auth' \
  "$here/run.sh" sipd
{ cat "$base/sipd-core.txt"; python3 "$here/compare.py" "$base/kamailio" "$base/sipd"; } | tee "$base/compare.md"
