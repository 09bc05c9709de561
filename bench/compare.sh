#!/usr/bin/env bash
# compare.sh: the same memcached text-protocol load against three targets, side by side.
#
#   memcached   one memcached (-t 2), started for the run
#   twemproxy   nutcracker, ketama over three memcached instances
#   kumo        `kumo local -n 3`: a manager, three servers and a gateway
#
# Reference load (examples/loadgen.rs): 2 threads x 25 connections, 32-byte values,
# 100000 keys, every key set once (a warm-up, not measured), then pure GET for
# BENCH_SECS seconds, then pure SET for BENCH_SECS seconds. Prints ops/s and p99 per
# target and op, each target's ratio to memcached, and its CPU per request: the user
# plus system time of every process the target runs (not loadgen's) over the requests
# served, and that against memcached's. CPU per request is the figure noise moves
# least. Beside it, context switches per request of the same processes: on loopback a
# request's kernel time is mostly the wakeups of the processes its messages go to. A
# target that cannot start is reported and skipped.
#
# With BENCH_ROUNDS above 1, the targets run in turn that many times (memcached,
# twemproxy, kumo, memcached, ...), and the table gives each figure's median over the
# rounds; a ratio is the median of the rounds' ratios, each taken between runs minutes
# apart at most, so that the drift of a shared machine moves both sides of it.
#
# Environment:
#   BENCH_SECS     seconds per measured run (default 10)
#   BENCH_ROUNDS   times each target runs, in turn (default 1)
#   BENCH_TARGETS  which targets, in order (default "memcached twemproxy kumo")
#   BENCH_VALUE_BYTES  size of each value (default 32)
#   BENCH_KEYS     key space (default 100000)
#   READY_SECS     how long a target may take to answer (default 30)
#   KUMO_BIN       a kumo binary to use instead of building target/release/kumo
#
# Run from anywhere: `bash bench/compare.sh` (or `make bench`). Every target process it starts
# runs in its own process group and is stopped when the script exits, however it exits.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BENCH_SECS=${BENCH_SECS:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-1}
BENCH_TARGETS=${BENCH_TARGETS:-memcached twemproxy kumo}
READY_SECS=${READY_SECS:-30}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
PATH=$PATH:/usr/sbin:/sbin # Debian puts nutcracker in /usr/sbin
LOAD=(--threads 2 --conns 25 --value-size "${BENCH_VALUE_BYTES:-32}" --keys "${BENCH_KEYS:-100000}" --duration "$BENCH_SECS")

log() { printf 'compare: %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------
# Cleanup: every process we start is a process-group leader (setsid); kill the groups.

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kumo-compare.XXXXXX")
PIDS=()
declare -A REAPED # pids already waited for: never signal them again (pid reuse)

LOADGEN_PID=""

# group_alive PGID: some process of the group still runs (a zombie does not count: our
# own children stay zombies until waited for).
group_alive() {
    ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

# stop_group PID: SIGTERM to the process group PID leads, SIGKILL to what is left after 5s.
stop_group() {
    local pid=$1 i
    [[ -z ${REAPED[$pid]:-} ]] || return 0
    REAPED[$pid]=1
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        group_alive "$pid" || break
        sleep 0.1
    done
    if group_alive "$pid"; then
        log "process group $pid did not stop on SIGTERM; killing it"
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    if [[ -n $LOADGEN_PID ]]; then
        kill -TERM "$LOADGEN_PID" 2>/dev/null || true
        wait "$LOADGEN_PID" 2>/dev/null || true
    fi
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
        stop_group "$pid"
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: runs CMD in its own session (so its pid is its process group), stdout
# to $WORK/NAME.out, stderr to $WORK/NAME.err; sets STARTED.
start() {
    local name=$1
    shift
    setsid "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null &
    STARTED=$!
    PIDS+=("$STARTED")
}

# ---------------------------------------------------------------------------------------
# Ports: a run of N consecutive free ports on 127.0.0.1, never one handed out before.

USED_PORTS=" "

port_free() {
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$1" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
    else
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 1; fi
    fi
}

# Pick below the kernel's ephemeral range, so that no outgoing connection (loadgen's, or
# between kumo's nodes) takes a port between the check and the listen.
EPHEMERAL_LOW=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
if ((EPHEMERAL_LOW > 12000)); then
    PORT_LOW=10000 PORT_SPAN=$((EPHEMERAL_LOW - 10000 - 128))
else
    PORT_LOW=20000 PORT_SPAN=30000
fi

# free_ports N: prints the first of N consecutive free ports.
free_ports() {
    local n=$1 base p ok
    for _ in $(seq 1 200); do
        base=$((PORT_LOW + RANDOM % PORT_SPAN))
        ok=1
        for ((p = base; p < base + n; p++)); do
            if [[ $USED_PORTS == *" $p "* ]] || ! port_free "$p"; then
                ok=0
                break
            fi
        done
        if ((ok)); then
            for ((p = base; p < base + n; p++)); do USED_PORTS+="$p "; done
            echo "$base"
            return 0
        fi
    done
    log "no run of $n free ports found"
    return 1
}

# ---------------------------------------------------------------------------------------
# Readiness: the target answers `version` (loadgen --ping) while its process lives.
# Functions that can fail set WHY and return 1; they run in this shell (not in $(...)) so
# that the processes they start are tracked in PIDS.

WHY=""

# wait_ready PORT PID [READY_OUT]: with READY_OUT (a target's stdout), a line containing
# the word `ready` must also have appeared there.
wait_ready() {
    local port=$1 pid=$2 ready_log=${3:-} deadline=$((SECONDS + READY_SECS)) rc
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rc=0
            wait "$pid" 2>/dev/null || rc=$?
            REAPED[$pid]=1
            WHY="exited (status $rc) before it was ready"
            return 1
        fi
        if [[ -z $ready_log ]] || grep -qw ready "$ready_log" 2>/dev/null; then
            if "$LOADGEN" --ping --timeout 1 --addr "127.0.0.1:$port" >/dev/null 2>&1; then
                return 0
            fi
        fi
        sleep 0.2
    done
    if [[ -n $ready_log ]] && ! grep -qw ready "$ready_log" 2>/dev/null; then
        WHY="printed no 'ready' line within ${READY_SECS}s"
    else
        WHY="did not answer 'version' on 127.0.0.1:$port within ${READY_SECS}s"
    fi
    return 1
}

# ---------------------------------------------------------------------------------------
# Build.

LOADGEN="$TARGET_DIR/release/examples/loadgen"
log "building loadgen"
if ! cargo build --release --example loadgen; then
    # loadgen is std-only; while the library does not compile, build the file on its own.
    log "cargo could not build the loadgen example; building examples/loadgen.rs with rustc"
    LOADGEN="$WORK/loadgen"
    rustc -O --edition 2021 examples/loadgen.rs -o "$LOADGEN"
fi

KUMO_BUILD_ERROR=""
if [[ -z ${KUMO_BIN:-} && " $BENCH_TARGETS " == *" kumo "* ]]; then
    log "building kumo"
    if ! cargo build --release; then
        KUMO_BUILD_ERROR="cargo build --release failed"
    fi
fi

# The bench peers (memcached, nutcracker) come from tests/peers.list; a target whose
# peer is still missing afterwards is reported and skipped.
bash tests/peers.sh bench >&2 || log "some bench peers are missing; their targets are skipped"
need() { command -v "$1" >/dev/null 2>&1; } # need CMD

# memcached refuses to run as root without -u.
MC_USER=()
[[ $(id -u) -ne 0 ]] || MC_USER=(-u root)

# start_memcached NAME PORT: sets STARTED.
start_memcached() {
    start "$1" memcached -p "$2" -l 127.0.0.1 -U 0 -t 2 -m 1024 "${MC_USER[@]}"
}

# ---------------------------------------------------------------------------------------
# Targets. Each setup_* starts its processes, waits until they answer and sets ADDR, or
# sets WHY and returns 1.

# ports N: sets PORT to the first of N consecutive free ports.
ports() { PORT=$(free_ports "$1") || { WHY="no run of $1 free ports"; return 1; }; }

setup_memcached() {
    need memcached || { WHY="memcached is not installed"; return 1; }
    ports 1 || return 1
    start_memcached memcached "$PORT"
    wait_ready "$PORT" "$STARTED" || return 1
    ADDR=127.0.0.1:$PORT
}

setup_twemproxy() {
    need memcached || { WHY="memcached is not installed"; return 1; }
    need nutcracker || { WHY="nutcracker (twemproxy) is not installed"; return 1; }
    local mc listen stats i
    ports 3 || return 1
    mc=$PORT
    ports 1 || return 1
    listen=$PORT
    ports 1 || return 1
    stats=$PORT
    for i in 0 1 2; do
        start_memcached "twemproxy-memcached$i" $((mc + i))
        wait_ready $((mc + i)) "$STARTED" || { WHY="backend memcached $i: $WHY"; return 1; }
    done
    cat >"$WORK/nutcracker.yml" <<CONF
kumo_compare:
  listen: 127.0.0.1:$listen
  hash: fnv1a_64
  distribution: ketama
  timeout: 5000
  auto_eject_hosts: false
  servers:
   - 127.0.0.1:$mc:1
   - 127.0.0.1:$((mc + 1)):1
   - 127.0.0.1:$((mc + 2)):1
CONF
    start twemproxy nutcracker -c "$WORK/nutcracker.yml" -s "$stats" -a 127.0.0.1 \
        -o "$WORK/nutcracker.out" -p "$WORK/nutcracker.pid"
    wait_ready "$listen" "$STARTED" || return 1
    ADDR=127.0.0.1:$listen
}

setup_kumo() {
    [[ -z $KUMO_BUILD_ERROR ]] || { WHY=$KUMO_BUILD_ERROR; return 1; }
    local bin=${KUMO_BIN:-$TARGET_DIR/release/kumo} gw mgr srv
    [[ -x $bin ]] || { WHY="$bin does not exist"; return 1; }
    ports 1 || return 1
    gw=$PORT
    ports 1 || return 1
    mgr=$PORT
    # Three servers on consecutive ports, whose stream ports (-L) are 100 above.
    local try p ok
    for try in $(seq 1 20); do
        ports 3 || return 1
        srv=$PORT
        ok=1
        for ((p = srv + 100; p < srv + 103; p++)); do
            if [[ $USED_PORTS == *" $p "* ]] || ! port_free "$p"; then ok=0; fi
        done
        if ((ok)); then
            for ((p = srv + 100; p < srv + 103; p++)); do USED_PORTS+="$p "; done
            break
        fi
        [[ $try -lt 20 ]] || { WHY="no free server ports"; return 1; }
    done
    mkdir -p "$WORK/kumo-data"
    start kumo "$bin" local -n 3 --dir "$WORK/kumo-data" \
        -t "127.0.0.1:$gw" -m "127.0.0.1:$mgr" -l "127.0.0.1:$srv"
    wait_ready "$gw" "$STARTED" "$WORK/kumo.out" || return 1
    ADDR=127.0.0.1:$gw
}

# stop_target: stops every process started since the mark, so targets never overlap.
stop_target() {
    local i
    for ((i = MARK; i < ${#PIDS[@]}; i++)); do
        stop_group "${PIDS[$i]}"
    done
    PIDS=("${PIDS[@]:0:MARK}")
}

# ---------------------------------------------------------------------------------------
# Measure.

# jfield JSON KEY: a number field of loadgen's JSON line.
jfield() { sed -nE "s/.*\"$2\":([0-9.]+).*/\1/p" <<<"$1"; }

# Figures by ROUND/TARGET/OP; ERRORS and FAILED by target.
declare -A OPS P99 CPU CSW ERRORS FAILED
CLK_TCK=$(getconf CLK_TCK)

# cpu_ticks: user plus system time, in clock ticks, of every process the current target
# started (each in its own process group, children included); loadgen is not counted.
cpu_ticks() {
    local i pg p total=0 t
    for ((i = MARK; i < ${#PIDS[@]}; i++)); do
        pg=${PIDS[$i]}
        for p in $(pgrep -g "$pg" 2>/dev/null); do
            # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends comm.
            t=$(sed -E 's/^.*\) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
            total=$((total + ${t:-0}))
        done
    done
    echo "$total"
}

# cswitches: context switches, voluntary and not, of every thread of every process the
# current target started. On loopback most of a request's kernel time is the wakeup of
# the process each message goes to, so this is what a design with fewer hops saves.
cswitches() {
    local i pg p total=0 t
    for ((i = MARK; i < ${#PIDS[@]}; i++)); do
        pg=${PIDS[$i]}
        for p in $(pgrep -g "$pg" 2>/dev/null); do
            t=$(cat /proc/"$p"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { n += $2 } END { print n + 0 }') || t=0
            total=$((total + ${t:-0}))
        done
    done
    echo "$total"
}

# run_load TARGET OP [--prefill]: one loadgen run; prints loadgen's line, records figures.
run_load() {
    local target=$1 op=$2 json out="$WORK/loadgen-$1-$2.out" err="$WORK/loadgen-$1-$2.err" errors
    shift 2
    local ticks_before ticks switches_before switches
    ticks_before=$(cpu_ticks)
    switches_before=$(cswitches)
    # In the background, so that a signal to this script is handled at once.
    local mix=$op
    [[ $op != warmup ]] || mix=get
    "$LOADGEN" --addr "$ADDR" "${LOAD[@]}" --mix "$mix" --label "$target" --json "$@" >"$out" 2>"$err" &
    LOADGEN_PID=$!
    if ! wait "$LOADGEN_PID"; then
        LOADGEN_PID=""
        WHY="loadgen $op: $(tail -n 1 "$err")"
        return 1
    fi
    LOADGEN_PID=""
    ticks=$(($(cpu_ticks) - ticks_before))
    switches=$(($(cswitches) - switches_before))
    json=$(tail -n 1 "$out")
    [[ $op != warmup ]] || return 0
    errors=$(($(jfield "$json" errors) + $(jfield "$json" prefill_errors)))
    printf '%s %s: %s ops/s  p50 %sus p99 %sus p999 %sus  errors %s misses %s\n' \
        "$target" "$op" "$(jfield "$json" ops_per_sec)" "$(jfield "$json" p50_us)" \
        "$(jfield "$json" p99_us)" "$(jfield "$json" p999_us)" "$errors" "$(jfield "$json" misses)"
    [[ ! -s $err ]] || sed 's/^/    /' "$err" >&2
    OPS[$ROUND/$target/$op]=$(jfield "$json" ops_per_sec)
    P99[$ROUND/$target/$op]=$(jfield "$json" p99_us)
    # CPU per request: the target's user plus system time over the requests served.
    CPU[$ROUND/$target/$op]=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v n="$(jfield "$json" ops)" \
        'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "n/a" }')
    CSW[$ROUND/$target/$op]=$(awk -v s="$switches" -v n="$(jfield "$json" ops)" \
        'BEGIN { if (n > 0) printf "%.2f", s / n; else print "n/a" }')
    # Figures from a run with errors are not comparable: mark them.
    ((errors == 0)) || ERRORS[$target/$op]=1
}

log "load: 2 threads x 25 conns, ${BENCH_VALUE_BYTES:-32}-byte values, ${BENCH_KEYS:-100000} keys; prefill, then get and set, ${BENCH_SECS}s each; $BENCH_ROUNDS round(s)"
for target in $BENCH_TARGETS; do
    case $target in
    memcached | twemproxy | kumo) ;;
    *)
        log "unknown target $target (known: memcached twemproxy kumo)"
        exit 2
        ;;
    esac
done
for ROUND in $(seq 1 "$BENCH_ROUNDS"); do
    for target in $BENCH_TARGETS; do
        # A target that failed once is not run again.
        [[ -z ${FAILED[$target]:-} ]] || continue
        MARK=${#PIDS[@]}
        ADDR=""
        WHY=""
        log "$target: starting (round $ROUND of $BENCH_ROUNDS)"
        if ! "setup_$target"; then
            FAILED[$target]="did not start: $WHY"
            log "$target: ${FAILED[$target]}"
            for f in "$WORK/$target.out" "$WORK/$target.err"; do
                if [[ -s $f ]]; then
                    log "$target: last lines of its ${f##*.}:"
                    tail -n 15 "$f" | sed 's/^/    /' >&2
                fi
            done
        elif ! run_load "$target" warmup --prefill --duration 0.5 ||
            ! run_load "$target" get || ! run_load "$target" set; then
            FAILED[$target]=$WHY
            log "$target: $WHY"
        fi
        stop_target
    done
done

# ---------------------------------------------------------------------------------------
# Table.

# median N...: the median of numbers ("n/a" where there are none).
median() {
    printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# per_round MAP TARGET OP: the figure of each round.
per_round() {
    local -n map=$1
    local r
    for r in $(seq 1 "$BENCH_ROUNDS"); do echo "${map[$r/$2/$3]:-}"; done
}

# ratios MAP TARGET OP: each round's figure over memcached's in the same round.
ratios() {
    local -n map=$1
    local r
    for r in $(seq 1 "$BENCH_ROUNDS"); do
        awk -v a="${map[$r/$2/$3]:-}" -v b="${map[$r/memcached/$3]:-}" \
            'BEGIN { if (a != "" && b > 0) printf "%.2f\n", a / b }'
    done
}

# fixed DIGITS VALUE: VALUE with DIGITS decimals, or as it is when it is no number.
fixed() { awk -v d="$1" -v v="$2" 'BEGIN { if (v ~ /^[0-9.]+$/) printf "%.*f", d, v; else print v }'; }

echo
printf 'compare: %s s per run, %s round(s)%s, 2 threads x 25 conns, %s-byte values, %s keys\n' \
    "$BENCH_SECS" "$BENCH_ROUNDS" "$( ((BENCH_ROUNDS == 1)) || echo ' (medians)')" \
    "${BENCH_VALUE_BYTES:-32}" "${BENCH_KEYS:-100000}"
printf '%-10s %-4s %10s %9s %8s %11s %8s %6s\n' target op ops/s p99_us vs_mc cpu_us/op cpu_vs_mc cs/op
for target in $BENCH_TARGETS; do
    if [[ -n ${FAILED[$target]:-} ]]; then
        printf '%-10s %-4s %s\n' "$target" - "FAILED: ${FAILED[$target]}"
        continue
    fi
    for op in get set; do
        ratio=n/a cpu_ratio=n/a
        if [[ -z ${FAILED[memcached]:-} && " $BENCH_TARGETS " == *" memcached "* ]]; then
            ratio=$(fixed 2 "$(median $(ratios OPS "$target" "$op"))")
            cpu_ratio=$(fixed 2 "$(median $(ratios CPU "$target" "$op"))")
        fi
        p99=$(fixed 0 "$(median $(per_round P99 "$target" "$op"))")
        [[ -z ${ERRORS[$target/$op]:-} ]] || p99+="*"
        printf '%-10s %-4s %10s %9s %8s %11s %8s %6s\n' "$target" "$op" \
            "$(fixed 0 "$(median $(per_round OPS "$target" "$op"))")" "$p99" "$ratio" \
            "$(fixed 1 "$(median $(per_round CPU "$target" "$op"))")" "$cpu_ratio" \
            "$(fixed 2 "$(median $(per_round CSW "$target" "$op"))")"
    done
done
if [[ -n ${ERRORS[*]:-} ]]; then
    echo "(* a run had errors)"
fi
