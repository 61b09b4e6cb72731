#!/usr/bin/env bash
# Fault test: stopping bots while the disk is slow. Starts a fresh release Keel on loopback (sim
# venue at 1,000 trades/s), starts BOTS trading paper bots, lets them trade, then writes
# DIRTY_MB of zeros next to the data directory (dirty page cache, so Keel's flushes wait behind
# writeback) and stops every bot, timing each stop. RUNS times, each on a fresh server.
#
# Before the group-commit fix this hung in about a third of the runs: a bot's own flush held
# the commit lock while its stop waited on another commit, every stop answered 504 and nothing
# became durable again. A run passes when every stop answers 200 within its deadline.
#
#   scripts/stop-under-io.sh                       # 5 runs, 10 bots, 4,000 MB of dirty pages
#   RUNS=10 DIRTY_MB=2000 scripts/stop-under-io.sh
#   KEEL_BIN=/tmp/keel-base NO_BUILD=1 scripts/stop-under-io.sh   # another build
#
# Exits non-zero if any stop failed. Needs DIRTY_MB of free disk under the temporary directory;
# everything is removed on exit, however the script ends.
set -euo pipefail

RUNS=${RUNS:-5}
BOTS=${BOTS:-10}
DIRTY_MB=${DIRTY_MB:-4000}
TRADE_SECS=${TRADE_SECS:-10}
KEEL_BIN=${KEEL_BIN:-target/release/keel}
READY_TIMEOUT_SECS=30
STOP_TIMEOUT_SECS=20
PASSWORD="correct horse battery staple"

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
if [[ -z ${NO_BUILD:-} ]]; then
    cargo build --release --bin keel
fi

work=$(mktemp -d -t keel-stop-io.XXXXXX)
keel_pid=""
writer_pid=""
cleanup() {
    if [[ -n $writer_pid ]]; then kill "$writer_pid" 2>/dev/null || true; fi
    if [[ -n $keel_pid ]]; then
        stop_pid "$keel_pid" "$STOP_TIMEOUT_SECS" keel >/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# call METHOD PATH [BODY]: the JSON answer; fails on a non-2xx status.
call() {
    local method=$1 path=$2 body=${3:-}
    local args=(-sS --max-time 30 -X "$method" -H 'content-type: application/json')
    if [[ -n ${token:-} ]]; then args+=(-H "authorization: Bearer $token"); fi
    if [[ -n $body ]]; then args+=(-d "$body"); fi
    curl "${args[@]}" -f "http://127.0.0.1:$port$path"
}

failed=0
for run in $(seq 1 "$RUNS"); do
    port=$(free_port)
    rm -rf "$work/data"
    env -u RUST_LOG KEEL__SERVER__HOST=127.0.0.1 KEEL__SERVER__PORT="$port" \
        KEEL__STORE__PATH="$work/data" KEEL__LOG__LEVEL=warn \
        KEEL__AUTH__JWT_SECRET="stop-under-io-only-secret-0123456789" \
        KEEL__VENUES__SIM__TRADES_PER_SEC=1000 KEEL__BOTS__MAX_PER_USER="$BOTS" \
        "$KEEL_BIN" serve >"$work/keel.log" 2>&1 &
    keel_pid=$!
    wait_ready "$keel_pid" "$port" "$work/keel.log" /health/ready "$READY_TIMEOUT_SECS"
    token=""
    token=$(call POST /api/v1/auth/register \
        "{\"email\":\"stop-io-$run@example.com\",\"password\":\"$PASSWORD\"}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["tokens"]["access_token"])')
    ids=()
    for n in $(seq 1 "$BOTS"); do
        bot="{\"name\":\"io-$n\",\"venue\":\"sim\",\"symbol\":\"BTCUSDT\",\"mode\":\"paper\",
              \"strategy\":{\"kind\":\"ema_cross\",\"params\":{\"fast\":50,\"slow\":200,\"qty\":\"0.0001\"}},
              \"paper\":{\"starting_quote\":\"100000\",\"fee_bps\":\"10\"}}"
        id=$(call POST /api/v1/bots "$bot" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
        call POST "/api/v1/bots/$id/start" >/dev/null
        ids+=("$id")
    done
    sleep "$TRADE_SECS"
    dd if=/dev/zero of="$work/dirty" bs=1M count="$DIRTY_MB" status=none &
    writer_pid=$!
    sleep 6
    ok=0
    slowest=0
    for id in "${ids[@]}"; do
        answer=$(curl -sS --max-time 30 -o /dev/null -w '%{http_code} %{time_total}' -X POST \
            -H "authorization: Bearer $token" "http://127.0.0.1:$port/api/v1/bots/$id/stop" || true)
        read -r status took <<<"$answer"
        if [[ $status == 200 ]]; then
            ok=$((ok + 1))
        fi
        slowest=$(python3 -c "print(max($slowest, ${took:-0}))")
    done
    wait "$writer_pid" 2>/dev/null || true
    writer_pid=""
    rm -f "$work/dirty"
    echo "run $run: $ok of ${#ids[@]} stops answered 200, slowest ${slowest} s"
    if ((ok != ${#ids[@]})); then
        failed=1
    fi
    stop_pid "$keel_pid" "$STOP_TIMEOUT_SECS" keel >/dev/null
    keel_pid=""
done
exit "$failed"
