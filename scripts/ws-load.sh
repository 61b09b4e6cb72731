#!/usr/bin/env bash
# WebSocket fan-out load: tick-to-client latency of 1,000 clients on one market channel, Keel
# against a plain tokio-tungstenite baseline, and what 100 clients that never read do to it.
#
# Builds release, then RUNS times, each scenario on a fresh server (free port on 127.0.0.1,
# temporary data directory, sim venue at RATE trades/s):
#   1. keel:         `target/release/keel`, CLIENTS reading clients over USERS accounts, RUN_SECS;
#   2. baseline:     `ws_load baseline` (tokio-tungstenite, per-client tasks fed from a tokio
#                    broadcast channel), same clients, same rate, same frame size, same client code;
#   3. keel+silent:  Keel again, CLIENTS reading + SILENT clients that subscribe and never read;
#                    watched until the server has dropped them (or SILENT_WAIT_SECS).
# Each server is stopped with SIGTERM. The client (`examples/ws_load.rs`) reports latency
# percentiles, events, seq gaps, lagged notices, server RSS and CPU, and for scenario 3 when the
# silent clients were dropped; the medians over the runs are printed at the end. Everything stays on
# loopback and is removed on exit, however the script ends. Every client is 127.0.0.1, so Keel
# runs with its per-address connection and in-flight caps raised.
#
#   scripts/ws-load.sh                           # 3 runs × 3 scenarios, ~2 min per run plus the build
#   RUNS=1 CLIENTS=200 RATE=100 scripts/ws-load.sh
#   SCENARIOS="keel baseline" scripts/ws-load.sh
#   KEEL_BIN=/tmp/keel-base NO_BUILD=1 scripts/ws-load.sh   # another build of keel, no cargo build
#   BOTS=1 scripts/ws-load.sh                    # + a trading paper bot per account, its channel
#                                                # subscribed too: did every client get every line?
#
# Exits non-zero if a scenario failed to run. Missing the p99 target (ws_load exits 2) is reported
# in the summary, not treated as a failure of the script.
set -euo pipefail

RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-1000}
SILENT=${SILENT:-100}
USERS=${USERS:-10}
RATE=${RATE:-1000}
RUN_SECS=${RUN_SECS:-30}
WARMUP_SECS=${WARMUP_SECS:-3}
SILENT_WAIT_SECS=${SILENT_WAIT_SECS:-40}
TARGET_P99_MS=${TARGET_P99_MS:-5}
SCENARIOS=${SCENARIOS:-"keel baseline keel+silent"}
# BOTS=1: one trading paper bot per account in the Keel scenarios (ws_load --bots).
BOTS=${BOTS:-}
# The keel binary under test (built here unless another one is named).
KEEL_BIN=${KEEL_BIN:-target/release/keel}
# Connections per user Keel must allow (ws.max_per_user is 20 by default).
MAX_PER_USER=$(((CLIENTS + SILENT + USERS - 1) / USERS))
# Bounds, so the script always ends by itself: connecting may take SETUP_LIMIT_SECS (reading
# clients, then again for the silent ones) before the run goes on with what is connected.
SETUP_LIMIT_SECS=${SETUP_LIMIT_SECS:-240}
READY_TIMEOUT_SECS=30
RUN_TIMEOUT_SECS=$((RUN_SECS + WARMUP_SECS + SILENT_WAIT_SECS + 2 * SETUP_LIMIT_SECS + 120))
STOP_TIMEOUT_SECS=20

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# NO_BUILD=1 uses the binaries as they are (while another cargo holds the build directory).
if [[ -z ${NO_BUILD:-} ]]; then
    cargo build --release --bin keel --examples
fi

# Each process holds one descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < CLIENTS + SILENT + 256)); then
    echo "open-file limit $(ulimit -n) is below $((CLIENTS + SILENT + 256)); raise it" >&2
    exit 1
fi

work=$(mktemp -d -t keel-ws-load.XXXXXX)
server_pid=""
results="$work/results"
: >"$results"

stop_server() {
    if [[ -n $server_pid ]]; then
        stop_pid "$server_pid" "$STOP_TIMEOUT_SECS" server
    fi
    server_pid=""
}
cleanup() {
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_keel() {
    local name=$1 port=$2
    mkdir -p "$work/data-$name"
    env -u RUST_LOG \
        KEEL__SERVER__HOST=127.0.0.1 \
        KEEL__SERVER__PORT="$port" \
        KEEL__STORE__PATH="$work/data-$name" \
        KEEL__LOG__LEVEL=warn \
        KEEL__AUTH__JWT_SECRET="ws-load-only-secret-0123456789abcdef" \
        KEEL__WS__MAX_PER_USER="$MAX_PER_USER" \
        KEEL__WS__MAX_CONNECTIONS=10000 \
        KEEL__PROTECTION__MAX_CONNECTIONS_PER_IP=100000 \
        KEEL__PROTECTION__MAX_IN_FLIGHT_PER_IP=100000 \
        KEEL__VENUES__SIM__TRADES_PER_SEC="$RATE" \
        "$KEEL_BIN" serve >"$work/server-$name.log" 2>&1 &
    server_pid=$!
    wait_ready "$server_pid" "$port" "$work/server-$name.log" /health/ready "$READY_TIMEOUT_SECS"
}

start_baseline() {
    local name=$1 port=$2
    target/release/examples/ws_load baseline --port "$port" --rate "$RATE" --queue 1024 \
        --max-secs $((RUN_TIMEOUT_SECS + 60)) >"$work/server-$name.log" 2>&1 &
    server_pid=$!
    wait_ready "$server_pid" "$port" "$work/server-$name.log" "" "$READY_TIMEOUT_SECS"
}

others=$(pgrep -af 'criterion|cargo bench|actor_hop|bot_engine|bots_rss|login_burst' || true)
if [[ -n $others ]]; then
    echo "warning: other benchmarks are running; figures will be polluted:" >&2
    echo "$others" >&2
fi
echo "host: $(nproc) cores; keel $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "(uncommitted changes: $(git status --porcelain 2>/dev/null | wc -l) files);" \
    "$CLIENTS clients, $SILENT silent, $USERS users, $RATE events/s, ${RUN_SECS} s measured"

failed=0
for run in $(seq 1 "$RUNS"); do
    for scenario in $SCENARIOS; do
        port=$(free_port)
        name="$run-${scenario//+/-}"
        echo
        echo "== run $run of $RUNS: $scenario (port $port) =="
        extra=()
        case $scenario in
        keel)
            start_keel "$name" "$port"
            if [[ -n $BOTS ]]; then extra=(--bots); fi
            ;;
        baseline)
            start_baseline "$name" "$port"
            extra=(--no-auth)
            ;;
        keel+silent)
            start_keel "$name" "$port"
            extra=(--silent "$SILENT" --silent-wait-secs "$SILENT_WAIT_SECS")
            if [[ -n $BOTS ]]; then extra+=(--bots); fi
            ;;
        *)
            echo "unknown scenario $scenario" >&2
            exit 1
            ;;
        esac
        status=0
        timeout "$RUN_TIMEOUT_SECS" target/release/examples/ws_load run "http://127.0.0.1:$port" \
            --label "$scenario" --pid "$server_pid" --clients "$CLIENTS" --users "$USERS" \
            --duration-secs "$RUN_SECS" --warmup-secs "$WARMUP_SECS" --rate "$RATE" \
            --target-p99-ms "$TARGET_P99_MS" --setup-limit-secs "$SETUP_LIMIT_SECS" "${extra[@]}" | tee "$work/client-$name.log" ||
            status=${PIPESTATUS[0]}
        stop_server
        grep '^RESULT ' "$work/client-$name.log" | sed "s/^RESULT /RESULT run=$run /" >>"$results" || true
        if ((status == 2)); then
            echo "run $run $scenario: p99 target missed"
        elif ((status != 0)); then
            echo "run $run $scenario failed (exit $status)" >&2
            failed=1
        fi
        if [[ -s $work/server-$name.log ]]; then
            echo "server output during run $run $scenario (first 10 lines of" \
                "$(wc -l <"$work/server-$name.log")):"
            head -n 10 "$work/server-$name.log"
        fi
    done
done

echo
echo "== medians over $RUNS runs =="
for scenario in $SCENARIOS; do
    for key in setup_s p50_ms p90_ms p99_ms max_ms events_median gaps lagged rss_idle_mib \
        rss_max_mib server_cpu_pct client_cpu_pct silent_all_dropped_s bot_lines bot_missed failed; do
        values=$(grep " label=$scenario " "$results" | tr ' ' '\n' | sed -n "s/^$key=//p" |
            sort -g | tr '\n' ' ')
        [[ -z $values ]] && continue
        med=$(echo "$values" | tr ' ' '\n' | grep -v '^$' |
            awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}')
        printf '%-12s %-22s median %-10s (runs: %s)\n' "$scenario" "$key" "$med" "$values"
    done
done
exit "$failed"
