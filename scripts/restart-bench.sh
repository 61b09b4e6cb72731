#!/usr/bin/env bash
# Restart bench: how long does Keel take from process start to /health/ready = 200 on a store
# with many running bots and a long trading history?
#
# Seeds an empty store once with `keel store seed` (USERS users, BOTS running paper bots on the
# sim venue, ORDERS orders with their fills, three of each bot's left open), then RUNS times:
# starts `keel serve` on it (127.0.0.1, a free port), polls /health/ready every 20 ms until it
# answers 200 (every bot that was running is back with its open orders), reads
# keel_startup_seconds from /metrics, and stops Keel with SIGTERM. Prints each run and the median.
# Everything stays on loopback; the seeded store is removed on exit unless SEED_DIR names it.
#
#   scripts/restart-bench.sh                                  # 1,000 bots, 10 M orders, 5 runs
#   ORDERS=1000000 RUNS=3 scripts/restart-bench.sh
#   SEED_DIR=/var/tmp/keel-seed scripts/restart-bench.sh      # keep (or reuse) the seeded store
#   PROFILE=debug scripts/restart-bench.sh                    # a debug build (slower; say so)
#   KEEL_BIN=/tmp/keel-base NO_BUILD=1 scripts/restart-bench.sh  # another build, no cargo build
#   DROP_CACHES=1 scripts/restart-bench.sh                    # cold page cache per run (root)
#
# Exits non-zero if a run did not become ready within READY_TIMEOUT_SECS.
set -euo pipefail

USERS=${USERS:-20}
BOTS=${BOTS:-1000}
ORDERS=${ORDERS:-10000000}
RUNS=${RUNS:-5}
PROFILE=${PROFILE:-release}
KEEL_BIN=${KEEL_BIN:-target/$PROFILE/keel}
# Bots per user allowed: enough for BOTS over USERS accounts.
MAX_PER_USER=$(((BOTS + USERS - 1) / USERS))
# Bounds, so the script always ends by itself.
READY_TIMEOUT_SECS=${READY_TIMEOUT_SECS:-120}
STOP_TIMEOUT_SECS=30

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
if [[ -z ${NO_BUILD:-} ]]; then
    if [[ $PROFILE == release ]]; then
        cargo build --release --bin keel
    else
        cargo build --profile "$PROFILE" --bin keel
    fi
fi

work=$(mktemp -d -t keel-restart-bench.XXXXXX)
data=${SEED_DIR:-$work/data}
keel_pid=""
cleanup() {
    if [[ -n $keel_pid ]]; then
        stop_pid "$keel_pid" "$STOP_TIMEOUT_SECS" keel
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The same settings for seeding and serving (the seed checks bots.max_per_user).
export KEEL__SERVER__HOST=127.0.0.1
export KEEL__STORE__PATH=$data
export KEEL__LOG__LEVEL=warn
export KEEL__AUTH__JWT_SECRET="restart-bench-only-secret-0123456789abcdef"
export KEEL__BOTS__MAX_PER_USER=$MAX_PER_USER
unset RUST_LOG

if [[ -e $data/conf ]]; then
    echo "reusing the store in $data"
else
    echo "seeding $data: $USERS users, $BOTS bots, $ORDERS orders"
    seed_began=$EPOCHREALTIME
    "$KEEL_BIN" store seed --users "$USERS" --bots "$BOTS" --orders "$ORDERS" --store "$data"
    echo "seeding took $(awk -v a="$seed_began" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"
fi
echo "store size: $(du -sh "$data" | cut -f1)"

times=()
for run in $(seq 1 "$RUNS"); do
    if [[ -n ${DROP_CACHES:-} ]]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches
    fi
    port=$(free_port)
    log=$work/keel-$run.log
    began=$EPOCHREALTIME
    KEEL__SERVER__PORT=$port "$KEEL_BIN" serve >"$log" 2>&1 &
    keel_pid=$!
    deadline=$((SECONDS + READY_TIMEOUT_SECS))
    until curl -fsS --max-time 2 "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; do
        if ! kill -0 "$keel_pid" 2>/dev/null; then
            echo "run $run: keel exited during start-up:" >&2
            cat "$log" >&2
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "run $run: not ready within $READY_TIMEOUT_SECS s:" >&2
            curl -sS "http://127.0.0.1:$port/health/ready" >&2 || true
            exit 1
        fi
        sleep 0.02
    done
    took=$(awk -v a="$began" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
    metric=$(curl -fsS "http://127.0.0.1:$port/metrics" |
        awk '$1 == "keel_startup_seconds" { print $2 }')
    running=$(curl -fsS "http://127.0.0.1:$port/metrics" |
        awk '$1 == "keel_bots_running" { print $2 }')
    printf 'run %d: ready after %.3f s (keel_startup_seconds %s, keel_bots_running %s)\n' \
        "$run" "$took" "${metric:-?}" "${running:-?}"
    times+=("$took")
    stop_pid "$keel_pid" "$STOP_TIMEOUT_SECS" keel
    keel_pid=""
done

median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
printf 'restart to ready, median of %d runs: %.3f s (%s bots, %s orders, %s build)\n' \
    "$RUNS" "$median" "$BOTS" "$ORDERS" "$PROFILE"
