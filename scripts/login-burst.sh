#!/usr/bin/env bash
# Login burst: does a burst of concurrent logins (Argon2id) leave GET /health/live fast?
#
# Builds release, then RUNS times: starts a fresh `target/release/keel` on 127.0.0.1 (free port,
# temporary data directory, login throttles raised so the burst measures hashing rather than
# 429s), waits for /health/ready, runs `examples/login_burst.rs` against it (idle health baseline,
# then LOGINS concurrent logins over USERS accounts while health is polled every 5 ms, then
# API_CLIENTS callers of GET /api/v1/bots back to back for API_SECS: the API saturated, health still
# polled), and stops Keel with SIGTERM. The per-IP and per-user rate limits (and the per-address connection and in-flight caps: every client is 127.0.0.1) are raised as well, so
# the saturation reaches the handlers instead of being answered 429. Everything stays on loopback and is removed on exit, however the script ends.
#
#   scripts/login-burst.sh                    # 3 runs of 200 logins over 20 accounts
#   RUNS=1 LOGINS=500 scripts/login-burst.sh
#   API_CLIENTS=0 scripts/login-burst.sh      # the login burst only
#
# Exits non-zero if any run failed, including a health p99 during the burst or the saturation of
# 50 ms or more.
set -euo pipefail

RUNS=${RUNS:-3}
LOGINS=${LOGINS:-200}
USERS=${USERS:-20}
IDLE_SECS=${IDLE_SECS:-3}
API_CLIENTS=${API_CLIENTS:-256}
API_SECS=${API_SECS:-10}
# High enough that no login of the burst is throttled.
THROTTLE=100000
# Bounds, so the script always ends by itself.
READY_TIMEOUT_SECS=30
RUN_TIMEOUT_SECS=300
STOP_TIMEOUT_SECS=15

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
cargo build --release --bin keel --example login_burst

work=$(mktemp -d -t keel-login-burst.XXXXXX)
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
        KEEL__AUTH__LOGIN_ATTEMPTS_PER_MINUTE_PER_ACCOUNT=$THROTTLE \
        KEEL__AUTH__LOGIN_ATTEMPTS_PER_MINUTE_PER_IP=$THROTTLE \
        KEEL__PROTECTION__PER_IP_PER_MINUTE=$THROTTLE \
        KEEL__PROTECTION__PER_USER_PER_MINUTE=$THROTTLE \
        KEEL__PROTECTION__MAX_CONNECTIONS_PER_IP=100000 \
        KEEL__PROTECTION__MAX_IN_FLIGHT_PER_IP=100000 \
        target/release/keel serve >"$work/keel-$run.log" 2>&1 &
    keel_pid=$!
    wait_ready "$keel_pid" "$port" "$work/keel-$run.log" /health/ready "$READY_TIMEOUT_SECS"
}

others=$(pgrep -af 'criterion|cargo bench|actor_hop' || true)
if [[ -n $others ]]; then
    echo "warning: other benchmarks are running; figures will be polluted:" >&2
    echo "$others" >&2
fi
echo "host: $(nproc) cores; keel $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "(workers and hash_concurrency at their defaults)"

failed=0
for run in $(seq 1 "$RUNS"); do
    port=$(free_port)
    echo
    echo "== run $run of $RUNS (port $port) =="
    start_keel "$run" "$port"
    status=0
    timeout "$RUN_TIMEOUT_SECS" target/release/examples/login_burst "http://127.0.0.1:$port" \
        --logins "$LOGINS" --users "$USERS" --idle-secs "$IDLE_SECS" \
        --api-clients "$API_CLIENTS" --api-secs "$API_SECS" || status=$?
    stop_keel
    if ((status != 0)); then
        echo "run $run failed (exit $status)" >&2
        failed=1
    fi
    if [[ -s $work/keel-$run.log ]]; then
        echo "keel warnings during run $run:"
        cat "$work/keel-$run.log"
    fi
done
exit "$failed"
