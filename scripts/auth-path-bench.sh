#!/usr/bin/env bash
# The authenticated request path against the cheapest actix-web request (issue 18, "Speed of the
# authenticated path"; docs/PERFORMANCE.md, "The authenticated request path").
#
# Both servers run with one HTTP worker, pinned with all their threads to core 0 (`taskset -c 0`);
# wrk runs on core 1 (`wrk -t1 -c32`). Keel serves `GET /api/v1/bots` to a user with 3 bots
# (created, not started), with a valid bearer token; hello world is `examples/hello_world.rs`,
# built from the same actix-web. Keel runs its defaults (access log to stdout, here /dev/null;
# metrics; rate limits raised so that wrk measures serving, not 429s). Prints each run and the
# medians; every Keel response must be a 200 with the 3 bots.
#
#   cargo build --release --bin keel --example hello_world
#   scripts/auth-path-bench.sh [KEEL_BIN] [HELLO_BIN]
#
# RUNS (default 5) and DURATION (seconds, default 10) set the runs per server. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

KEEL=${1:-${CARGO_TARGET_DIR:-target}/release/keel}
HELLO=${2:-${CARGO_TARGET_DIR:-target}/release/examples/hello_world}
RUNS=${RUNS:-5}
DURATION=${DURATION:-10}
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 2; }
command -v taskset >/dev/null || { echo "taskset is needed (util-linux)" >&2; exit 2; }
[[ $(nproc) -ge 2 ]] || { echo "two cores are needed" >&2; exit 2; }

data=$(mktemp -d)
log=$(mktemp)
pid=
cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$data" "$log"
}
trap cleanup EXIT

# wrk's requests/s for URL with optional header; fails on any non-2xx answer.
measure() {
    local url=$1 header=${2:-}
    local out
    if [[ -n $header ]]; then
        out=$(taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" -H "$header" "$url")
    else
        out=$(taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" "$url")
    fi
    if grep -q "Non-2xx" <<<"$out"; then
        echo "non-2xx answers:" >&2
        echo "$out" >&2
        return 1
    fi
    awk '/Requests\/sec/ {print $2}' <<<"$out"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

port=$(free_port)
KEEL__SERVER__PORT=$port KEEL__SERVER__WORKERS=1 KEEL__STORE__PATH="$data/store" \
    KEEL__PROTECTION__PER_USER_PER_MINUTE=1000000000 \
    KEEL__PROTECTION__PER_IP_PER_MINUTE=1000000000 \
    KEEL__PROTECTION__MAX_IN_FLIGHT=100000 \
    taskset -c 0 "$KEEL" >/dev/null 2>"$log" &
pid=$!
wait_ready "$pid" "$port" "$log" /health/live 60
base="http://127.0.0.1:$port/api/v1"
token=$(curl -fsS -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"correct horse battery staple"}' \
    "$base/auth/register" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"]["access_token"])')
bot='{"name":"quiet","venue":"sim","symbol":"BTCUSDT","mode":"paper",
  "strategy":{"kind":"ema_cross","params":{"fast":5000,"slow":9000,"qty":"0.001"}}}'
for _ in 1 2 3; do
    curl -fsS -o /dev/null -H 'content-type: application/json' -H "authorization: Bearer $token" \
        -d "$bot" "$base/bots"
done
count=$(curl -fsS -H "authorization: Bearer $token" "$base/bots" |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')
[[ $count == 3 ]] || { echo "expected 3 bots, got $count" >&2; exit 1; }

keel_runs=()
for i in $(seq 1 "$RUNS"); do
    keel_runs+=("$(measure "$base/bots" "Authorization: Bearer $token")")
    echo "keel  run $i: ${keel_runs[-1]} req/s"
done
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=

port=$(free_port)
taskset -c 0 "$HELLO" --port "$port" --workers 1 >/dev/null 2>"$log" &
pid=$!
wait_ready "$pid" "$port" "$log" / 30
hello_runs=()
for i in $(seq 1 "$RUNS"); do
    hello_runs+=("$(measure "http://127.0.0.1:$port/")")
    echo "hello run $i: ${hello_runs[-1]} req/s"
done

keel_median=$(printf '%s\n' "${keel_runs[@]}" | median)
hello_median=$(printf '%s\n' "${hello_runs[@]}" | median)
echo "median: keel GET /api/v1/bots $keel_median req/s, hello world $hello_median req/s," \
    "ratio $(awk -v k="$keel_median" -v h="$hello_median" 'BEGIN {printf "%.1f%%", 100 * k / h}')"
