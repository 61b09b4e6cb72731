#!/usr/bin/env bash
# Bots RSS: how much memory does Keel hold with 1,000 paper bots running on the sim venue?
#
# Builds release, then RUNS times: starts a fresh `target/release/keel` on 127.0.0.1 (free port,
# temporary data directory, a fixed JWT secret), waits for /health/ready, runs
# `examples/bots_rss.rs` against it (idle RSS as the baseline, then BOTS ema_cross paper bots
# over USERS accounts on BTCUSDT/ETHUSDT, started and left running RUN_SECS while VmRSS is sampled
# every second), and stops Keel with SIGTERM, timing its shutdown. Everything stays on loopback
# and is removed on exit, however the script ends.
#
#   scripts/bots-rss.sh                        # 3 runs of 1000 bots over 20 accounts, 30 s each
#   RUNS=1 BOTS=2000 USERS=40 scripts/bots-rss.sh
#   RUNS=1 RUN_SECS=180 scripts/bots-rss.sh   # longer: RSS follows the store's growth
#   FAST=5000 SLOW=9000 scripts/bots-rss.sh    # bots that never trade (nothing written)
#   KEEL_BIN=/tmp/keel-base scripts/bots-rss.sh  # another build of keel (A/B against a baseline)
#   NO_BUILD=1 scripts/bots-rss.sh             # no cargo build first
#
# Exits non-zero if any run failed, including a largest RSS above MAX_RSS_MB while running.
set -euo pipefail

RUNS=${RUNS:-3}
BOTS=${BOTS:-1000}
USERS=${USERS:-20}
RUN_SECS=${RUN_SECS:-30}
# EMA periods, in trades: 5/20 cross every few seconds on the sim feed, so the bots trade.
FAST=${FAST:-5}
SLOW=${SLOW:-20}
MAX_RSS_MB=${MAX_RSS_MB:-256}
# The keel binary under test (built here unless another one is named).
KEEL_BIN=${KEEL_BIN:-target/release/keel}
# Bots per user allowed: enough for BOTS over USERS accounts.
MAX_PER_USER=$(((BOTS + USERS - 1) / USERS))
# Bounds, so the script always ends by itself.
READY_TIMEOUT_SECS=30
RUN_TIMEOUT_SECS=$((RUN_SECS + 300))
STOP_TIMEOUT_SECS=30

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# NO_BUILD=1 uses the binaries as they are (while another cargo holds the build directory).
if [[ -z ${NO_BUILD:-} ]]; then
    cargo build --release --bin keel --example bots_rss
fi

work=$(mktemp -d -t keel-bots-rss.XXXXXX)
keel_pid=""

stop_keel() {
    if [[ -n $keel_pid ]]; then
        stop_pid "$keel_pid" "$STOP_TIMEOUT_SECS" keel
    fi
    keel_pid=""
}
cleanup() {
    stop_keel
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_keel() {
    local run=$1 port=$2
    mkdir -p "$work/data-$run"
    env -u RUST_LOG \
        KEEL__SERVER__HOST=127.0.0.1 \
        KEEL__SERVER__PORT="$port" \
        KEEL__STORE__PATH="$work/data-$run" \
        KEEL__LOG__LEVEL=warn \
        KEEL__AUTH__JWT_SECRET="bots-rss-only-secret-0123456789abcdef" \
        KEEL__BOTS__MAX_PER_USER="$MAX_PER_USER" \
        "$KEEL_BIN" serve >"$work/keel-$run.log" 2>&1 &
    keel_pid=$!
    wait_ready "$keel_pid" "$port" "$work/keel-$run.log" /health/ready "$READY_TIMEOUT_SECS"
}

others=$(pgrep -af 'criterion|cargo bench|actor_hop|bot_engine' || true)
if [[ -n $others ]]; then
    echo "warning: other benchmarks are running; figures will be polluted:" >&2
    echo "$others" >&2
fi
echo "host: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); keel $KEEL_BIN" \
    "(tree $(git rev-parse --short HEAD 2>/dev/null || echo '?'))" \
    "(workers, bot arbiters and sim venue at their defaults)"

failed=0
for run in $(seq 1 "$RUNS"); do
    port=$(free_port)
    echo
    echo "== run $run of $RUNS (port $port) =="
    start_keel "$run" "$port"
    status=0
    timeout "$RUN_TIMEOUT_SECS" target/release/examples/bots_rss "http://127.0.0.1:$port" \
        --pid "$keel_pid" --bots "$BOTS" --users "$USERS" --run-secs "$RUN_SECS" \
        --fast "$FAST" --slow "$SLOW" --data-dir "$work/data-$run" \
        --max-rss-mb "$MAX_RSS_MB" || status=$?
    stop_keel
    echo "store on disk after run $run: $(du -sh "$work/data-$run" | cut -f1)"
    if ((status != 0)); then
        echo "run $run failed (exit $status)" >&2
        failed=1
    fi
    if [[ -s $work/keel-$run.log ]]; then
        echo "keel warnings during run $run (first 20 lines of $(wc -l <"$work/keel-$run.log")):"
        head -n 20 "$work/keel-$run.log"
    fi
done
exit "$failed"
