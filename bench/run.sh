#!/usr/bin/env bash
# SIPp load ladder against a SIP registrar/proxy on 127.0.0.1 (loopback only).
#
#   ./run.sh [TARGET]            TARGET = kamailio (default) or any label
#
# Scenarios (SCENARIOS, default "reg reg_auth call"):
#   reg       REGISTER -> 200                         (target in no-auth mode)
#   reg_auth  REGISTER -> 401 -> REGISTER(auth) -> 200 (target in auth mode)
#   call      INVITE -> 100/180/200 -> ACK -> hold -> BYE -> 200 through the
#             proxy to a SIPp UAS registered as user "callee" (no-auth mode)
#
# Plugging in another target (e.g. sipd):
#   TARGET_CMD       command that runs the target in the FOREGROUND in no-auth
#                    mode (it must not daemonize; it is stopped by SIGTERM to
#                    its PID).  Evaluated by bash with these variables set:
#                    BENCH_HOST (127.0.0.1) BENCH_PORT BENCH_OUT (run folder)
#                    BENCH_DIR (this folder) BENCH_CREDENTIALS (user,password
#                    CSV, one per line) BENCH_MODE (noauth|auth).
#   TARGET_AUTH_CMD  same, in digest-auth mode (REGISTER challenged with 401,
#                    realm = host part of the To URI = 127.0.0.1); when unset
#                    with TARGET_CMD, reg_auth is skipped.
#   TARGET_PORT      port the target listens on (udp, default 5070)
#   sipd: bench/sipd_target.py (see compare.sh, which runs Kamailio and sipd side by side)
#
# Knobs (env): RATES="500 1000 2000 4000 8000 12000 16000 24000 32000"
#   (per scenario: RATES_reg, RATES_reg_auth, RATES_call override RATES)
#   DURATION=10 (s per step; calls = rate*DURATION, capped by MAX_CALLS=200000)  CALL_HOLD_MS=1000
#   USERS=10000  FAIL_PCT=1  STOP_AFTER_FAILS=1  REFINE=2 (bisection steps
#   between the last passing and first failing rate)  SETTLE=2 (s)
#   RESTART_PER_STEP=1: a fresh target for every step, so that transactions
#   still retransmitted after an overloaded step cannot spill into the next
#   (0 = one target per scenario)
#   QUIET_WAIT=120 QUIET_PCT=15: before each step wait (bounded) until other
#   processes on the machine use < 15 % of a core (0 disables)
#   TRANSPORT=u1 (sipp -t: u1, un, t1, tn, l1, ln)  UAS_PORT=15070  UAC_PORT=15071
#   SIPP_MAX_SOCKET=10000 (sipp -max_socket with TCP/TLS: SIPp's default, 50000, is refused
#   above the open-files limit; -t tn opens a connection per call)
#   TARGET_CPUS / SIPP_CPUS / UAS_CPUS (taskset -c lists; empty = no pinning)
#   KAM_CHILDREN=2 (kamailio -n)  KAM_SHM=512  KAM_PKG=16  SIPP_BUFF=1048576
#   KAM_AUTH=dbtext|htable (credential lookup for reg_auth, see the .cfg)
#   SIPP_EXTRA="" (extra sipp args)  OUT=results/<date>-<TARGET> (git-ignored)
# A step PASSes when failed+incomplete < FAIL_PCT % of the planned calls and
# the achieved success rate is >= 95 % of the offered rate.
set -u

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
TARGET=${1:-kamailio}
HOST=127.0.0.1                      # loopback only, not configurable
PORT=${TARGET_PORT:-5070}
SCENARIOS=${SCENARIOS:-"reg reg_auth call"}
RATES=${RATES:-"500 1000 2000 4000 8000 12000 16000 24000 32000"}
DURATION=${DURATION:-10}
MAX_CALLS=${MAX_CALLS:-200000}
CALL_HOLD_MS=${CALL_HOLD_MS:-1000}
USERS=${USERS:-10000}
FAIL_PCT=${FAIL_PCT:-1}
STOP_AFTER_FAILS=${STOP_AFTER_FAILS:-1}
REFINE=${REFINE:-2}
SETTLE=${SETTLE:-2}
RESTART_PER_STEP=${RESTART_PER_STEP:-1}
QUIET_WAIT=${QUIET_WAIT:-120}
QUIET_PCT=${QUIET_PCT:-15}
TRANSPORT=${TRANSPORT:-u1}
UAS_PORT=${UAS_PORT:-15070}
UAC_PORT=${UAC_PORT:-15071}
TARGET_CPUS=${TARGET_CPUS:-}
SIPP_CPUS=${SIPP_CPUS:-}
UAS_CPUS=${UAS_CPUS:-}
KAM_CHILDREN=${KAM_CHILDREN:-2}
KAM_SHM=${KAM_SHM:-512}
KAM_PKG=${KAM_PKG:-16}
KAM_AUTH=${KAM_AUTH:-dbtext}
SIPP_BUFF=${SIPP_BUFF:-1048576}
SIPP_EXTRA=${SIPP_EXTRA:-}
SIPP_MAX_SOCKET=${SIPP_MAX_SOCKET:-10000}
case $TRANSPORT in u*) SOCK_ARGS="" ;; *) SOCK_ARGS="-max_socket $SIPP_MAX_SOCKET" ;; esac
# the callee registers over one connection from UAS_PORT (its Contact), where its UAS then listens:
# with a socket per call (tn, ln) the REGISTER would name a port nobody listens on
case $TRANSPORT in ?n) CALLEE_TRANSPORT=${TRANSPORT%n}1 ;; *) CALLEE_TRANSPORT=$TRANSPORT ;; esac
SIPP=${SIPP:-sipp}
PY=${PY:-python3}
LIB="$BENCH_DIR/bench_lib.py"
SCN="$BENCH_DIR/scenarios"
OUT=${OUT:-"$BENCH_DIR/results/$(date +%Y%m%d-%H%M%S)-$TARGET"}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

TPID=""; TSTART=""; TKIDS=""; UAS_PID=""; UAS_SUB=""

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/run.log" >&2; }
die() { log "ERROR: $*"; exit 1; }

# start time (field 22 of /proc/PID/stat) -- guards against PID reuse
pstart() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; set -- $s; echo "${20}"; }

ts() { [ -n "$1" ] && echo "taskset -c $1"; }

for bin in "$SIPP" "$PY" ss timeout; do command -v "$bin" >/dev/null || die "missing $bin"; done
if [ -z "${TARGET_CMD:-}" ]; then
    [ "$TARGET" = kamailio ] || die "unknown TARGET '$TARGET' and no TARGET_CMD"
    command -v kamailio >/dev/null || die "missing kamailio"
fi
for p in "$PORT" "$UAS_PORT" "$UAC_PORT"; do
    if ss -Hlun "sport = :$p" | grep -q . || ss -Hltn "sport = :$p" | grep -q .; then
        die "port $p already in use on this machine (set TARGET_PORT/UAS_PORT/UAC_PORT)"
    fi
done

# ------------------------------------------------------------------ target
stop_target() {
    [ -n "$TPID" ] || return 0
    if [ "$(pstart "$TPID")" = "$TSTART" ]; then
        kill -TERM "$TPID" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$TPID" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$TPID" 2>/dev/null; then log "target $TPID ignored TERM, KILL"; kill -KILL "$TPID" 2>/dev/null; fi
    fi
    wait "$TPID" 2>/dev/null
    local k
    for k in $TKIDS; do              # pid:starttime of children seen at start
        if [ "$(pstart "${k%%:*}")" = "${k#*:}" ]; then kill -KILL "${k%%:*}" 2>/dev/null; fi
    done
    TPID=""; TSTART=""; TKIDS=""
}

stop_uas() {
    [ -n "$UAS_PID" ] || return 0
    kill -0 "$UAS_PID" 2>/dev/null && kill -TERM "$UAS_PID" 2>/dev/null
    UAS_PID=""
}

cleanup() { stop_uas; stop_target; wait 2>/dev/null; }
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

start_target() {            # $1 = noauth|auth, $2 = label
    local mode=$1 label=$2 cmd
    export BENCH_HOST=$HOST BENCH_PORT=$PORT BENCH_OUT=$OUT BENCH_DIR BENCH_MODE=$mode
    export BENCH_CREDENTIALS="$OUT/credentials.csv"
    if [ -n "${TARGET_CMD:-}" ]; then
        if [ "$mode" = auth ]; then cmd=${TARGET_AUTH_CMD:-}; else cmd=$TARGET_CMD; fi
        [ -n "$cmd" ] || { log "no TARGET_AUTH_CMD: skipping $label"; return 1; }
    else
        cmd="kamailio -f '$BENCH_DIR/kamailio-registrar.cfg' -DD -E -m $KAM_SHM -M $KAM_PKG -n $KAM_CHILDREN -w '$OUT' -A BENCH_PORT=$PORT"
        [ "$mode" = auth ] && cmd="$cmd -A WITH_AUTH -A 'DBURL=\"text://$OUT/dbtext\"'"
        [ "$mode" = auth ] && [ "$KAM_AUTH" = htable ] && cmd="$cmd -A WITH_AUTH_HTABLE"
    fi
    echo "$cmd" > "$OUT/target-$label.cmd"
    log "starting target ($mode): $cmd ${TARGET_CPUS:+[cpus $TARGET_CPUS]}"
    ( cd "$OUT" && exec $(ts "$TARGET_CPUS") bash -c "exec $cmd" ) > "$OUT/target-$label.log" 2>&1 &
    TPID=$!
    sleep 0.3
    TSTART=$(pstart "$TPID") || { log "target exited at once"; tail -20 "$OUT/target-$label.log" >&2; TPID=""; return 1; }
    if ! "$PY" "$LIB" wait-ready "$HOST" "$PORT" 15 > /dev/null; then
        log "target not answering on $HOST:$PORT"; tail -20 "$OUT/target-$label.log" >&2
        stop_target; return 1
    fi
    local k; TKIDS=""
    for k in $(ps -o pid= --ppid "$TPID"); do TKIDS="$TKIDS $k:$(pstart "$k")"; done
    log "target pid $TPID up ($(echo $TKIDS | wc -w) child processes)"
}

# ------------------------------------------------------------------ one step
run_step() {                # $1 scenario, $2 rate  -> TSV row in $OUT/.row
    local scen=$1 rate=$2 xml hold=0 extra="" calls d tmo limit hold_s uas_times="-"
    case $scen in
        reg)      xml=reg.xml;      extra="-nd" ;;
        reg_auth) xml=reg_auth.xml; extra="-nd" ;;
        call)     xml=call_uac.xml; hold=$CALL_HOLD_MS
                  # a 180 overtaken by the 200 (the proxy's workers run in
                  # parallel) is legal on UDP: do not abort the call for it
                  extra="-d $CALL_HOLD_MS -default_behaviors all,-abortunexp" ;;
    esac
    calls=$(( rate * DURATION )); [ "$calls" -gt "$MAX_CALLS" ] && calls=$MAX_CALLS
    hold_s=$(( (hold + 999) / 1000 ))
    tmo=$(( calls / rate + hold_s + 20 ))
    limit=$(( rate * (hold_s + 4) ))
    d="$OUT/$scen/r$rate"; [ -e "$d" ] && d="$d-$(date +%s)"
    mkdir -p "$d"
    if [ "$QUIET_WAIT" -gt 0 ]; then
        local q; q=$("$PY" "$LIB" quiet "$QUIET_WAIT" "$QUIET_PCT" "$TPID")
        [ "${q:-0}" -ge "$QUIET_PCT" ] && log "machine not quiet before $scen @ $rate/s: other processes use ${q}% of a core"
    fi
    if [ "$scen" = call ]; then
        # no -m: INVITEs still retransmitted by the target for an earlier
        # step must not eat this step's call budget; stopped by PID below
        local uas_cmd="$SIPP -sf $SCN/call_uas.xml -i $HOST -p $UAS_PORT -t $TRANSPORT -default_behaviors all,-abortunexp -nostdin -trace_stat -stf uas_stat.csv -fd 1 -buff_size $SIPP_BUFF -timeout $(( tmo + 10 ))s $SOCK_ARGS"
        echo "$(ts "$UAS_CPUS") $uas_cmd" > "$d/uas.cmd"
        ( cd "$d" && { $(ts "$UAS_CPUS") $uas_cmd > uas.out 2>&1 & echo $! > uas.pid; wait $!; echo $? > uas.rc; times > uas_times.txt; } ) &
        UAS_SUB=$!
        for _ in $(seq 1 50); do [ -s "$d/uas.pid" ] && break; sleep 0.1; done
        UAS_PID=$(cat "$d/uas.pid")
        sleep 0.7
        uas_times="$d/uas_times.txt"
    fi
    local uac_cmd="$SIPP $HOST:$PORT -sf $SCN/$xml -inf $OUT/users.csv -i $HOST -p $UAC_PORT -t $TRANSPORT -r $rate -m $calls -l $limit $extra -recv_timeout 10000 -nostdin -trace_stat -stf uac_stat.csv -fd 1 -trace_rtt -rtt_freq 100 -buff_size $SIPP_BUFF -timeout ${tmo}s $SOCK_ARGS $SIPP_EXTRA"
    [ "$scen" = call ] && uac_cmd=${uac_cmd/-inf $OUT\/users.csv/-inf $OUT\/callee.csv}
    echo "$(ts "$SIPP_CPUS") $uac_cmd" > "$d/uac.cmd"
    "$PY" "$LIB" snap "$d/cpu_before.json" "$TPID"
    ( cd "$d" && { $(ts "$SIPP_CPUS") timeout -k 5 $(( tmo + 15 )) $uac_cmd > uac.out 2>&1; echo $? > uac.rc; times > uac_times.txt; } )
    "$PY" "$LIB" snap "$d/cpu_after.json" "$TPID" $UAS_PID
    if [ -n "$UAS_PID" ]; then
        sleep 0.7                        # UAS timewait after the last BYE
        stop_uas
        wait "$UAS_SUB" 2>/dev/null      # UAS subshell (records uas_times.txt)
    fi
    if [ -n "$TPID" ] && ! kill -0 "$TPID" 2>/dev/null; then log "TARGET DIED during $scen @ $rate/s"; fi
    local rd=${d#"$OUT"/} ru=${uas_times#"$OUT"/}     # relative to OUT
    printf '%s\n' "$scen" "$rate" "$calls" "$hold" "$rd" "$rd/cpu_before.json" "$rd/cpu_after.json" \
        "$rd/uac_times.txt" "$ru" "$FAIL_PCT" > "$d/step.args"
    "$PY" "$LIB" step "$scen" "$rate" "$calls" "$hold" "$d" "$d/cpu_before.json" "$d/cpu_after.json" \
        "$d/uac_times.txt" "$uas_times" "$FAIL_PCT" > "$OUT/.row"
    cat "$OUT/.row" >> "$OUT/results.tsv"
    sleep "$SETTLE"
}

verdict_of() { awk -F'\t' '{print $21}' <<< "$1"; }

# ------------------------------------------------------------------ run
{
    echo "target: $TARGET  port: $PORT  date: $(date -u +%FT%TZ)"
    echo "host: $(uname -srm), $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
    echo "sipp: $($SIPP -v 2>&1 | grep -m1 -o 'SIPp v[^ ]*')"
    [ -z "${TARGET_CMD:-}" ] && echo "kamailio: $(kamailio -v 2>&1 | head -1) children(-n)=$KAM_CHILDREN shm=${KAM_SHM}MB auth=$KAM_AUTH"
    [ -n "${TARGET_CMD:-}" ] && echo "TARGET_CMD: $TARGET_CMD" && echo "TARGET_AUTH_CMD: ${TARGET_AUTH_CMD:-}"
    echo "scenarios: $SCENARIOS  rates: $RATES${RATES_reg:+ reg: $RATES_reg}${RATES_reg_auth:+ reg_auth: $RATES_reg_auth}${RATES_call:+ call: $RATES_call}  duration/step: ${DURATION}s  max_calls: $MAX_CALLS  hold: ${CALL_HOLD_MS}ms  users: $USERS  transport: $TRANSPORT"
    echo "pinning: target='${TARGET_CPUS}' sipp='${SIPP_CPUS}' uas='${UAS_CPUS}'  fail limit: ${FAIL_PCT}%  restart per step: $RESTART_PER_STEP"
    echo "load before run: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/meta.txt"
cat "$OUT/meta.txt" >&2

"$PY" "$LIB" gen-users "$OUT" "$USERS"
[ -s "$OUT/results.tsv" ] || "$PY" "$LIB" header > "$OUT/results.tsv"

register_callee() {
    ( cd "$OUT" && timeout 30 "$SIPP" "$HOST:$PORT" -sf "$SCN/reg.xml" -inf "$OUT/callee.csv" -i "$HOST" \
        -p "$UAS_PORT" -t "$CALLEE_TRANSPORT" -m 1 -nd -nostdin -timeout 20s $SOCK_ARGS > "$OUT/callee-register.out" 2>&1 )
}

# one step: (re)start the target if asked, run, record; sets ROW
step() {                    # $1 scenario, $2 mode, $3 rate
    local scen=$1 mode=$2 rate=$3
    ROW=""
    if [ "$RESTART_PER_STEP" = 1 ] || [ -z "$TPID" ]; then
        stop_target
        start_target "$mode" "$scen-r$rate" || return 1
        if [ "$scen" = call ]; then
            register_callee || { log "callee registration failed"; stop_target; return 1; }
        fi
    fi
    run_step "$scen" "$rate"
    ROW=$(cat "$OUT/.row"); echo "$ROW" >&2
    [ "$RESTART_PER_STEP" = 1 ] && stop_target
    return 0
}

for scen in $SCENARIOS; do
    case $scen in
        reg|call) mode=noauth ;;
        reg_auth) mode=auth ;;
        *) log "unknown scenario $scen"; continue ;;
    esac
    if [ "$mode" = auth ] && [ -n "${TARGET_CMD:-}" ] && [ -z "${TARGET_AUTH_CMD:-}" ]; then
        log "no TARGET_AUTH_CMD: skipping $scen"; continue
    fi
    pass=0; fail=0; nfail=0
    rates_var="RATES_$scen"; rates=${!rates_var:-$RATES}
    for rate in $rates; do
        step "$scen" "$mode" "$rate" || { log "step $scen @ $rate/s could not run"; break; }
        if [ "$(verdict_of "$ROW")" = PASS ]; then
            [ "$rate" -gt "$pass" ] && pass=$rate
        else
            { [ "$fail" -eq 0 ] || [ "$rate" -lt "$fail" ]; } && fail=$rate
            nfail=$((nfail + 1)); [ "$nfail" -ge "$STOP_AFTER_FAILS" ] && break
        fi
    done
    for _ in $(seq 1 "$REFINE"); do
        [ "$fail" -gt 0 ] || break
        mid=$(( (pass + fail) / 2 / 50 * 50 ))
        { [ "$mid" -le "$pass" ] || [ "$mid" -ge "$fail" ] || [ "$mid" -le 0 ]; } && break
        step "$scen" "$mode" "$mid" || break
        if [ "$(verdict_of "$ROW")" = PASS ]; then pass=$mid; else fail=$mid; fi
    done
    log "$scen: highest passing offered rate $pass/s (lowest failing ${fail}/s)"
    stop_target
done

"$PY" "$LIB" report "$OUT" > /dev/null
log "report: $OUT/report.md"
cat "$OUT/report.md"
