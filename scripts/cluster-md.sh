#!/usr/bin/env bash
# Cluster mode, market data: the latency the JetStream hop adds (p50, p99; 3 nodes, RATE trades/s)
# and failover times (kill -9 of the holder; SIGTERM of the next one), RUNS times, with medians.
#
# Each run (`examples/cluster_md.rs`) starts a fake Binance, three Keel nodes (own ports, data
# directories and cluster name) on 127.0.0.1 against the NATS at NATS_URL, and a WebSocket client
# per node; it measures client receive − fake send on the holder (the baseline) and on the two
# followers, then kills the holder with SIGKILL (time to a new exchange connection, and to
# trades at each survivor), then stops the new holder with SIGTERM (the same, with the lease
# released at shutdown). Everything stays on loopback, each run is bounded by RUN_TIMEOUT_SECS,
# and the work directory is removed on exit (KEEP=1 keeps it, with the nodes' logs).
#
#   scripts/cluster-md.sh                       # release build, 5 runs
#   RUNS=1 MEASURE_SECS=10 scripts/cluster-md.sh
#   PROFILE=debug scripts/cluster-md.sh         # the debug build (slower, for a quick check)
#   NO_BUILD=1 scripts/cluster-md.sh            # the binaries as they are
#
# Needs a NATS server with JetStream (NATS_URL, default KEEL_TEST_NATS_URL or
# nats://127.0.0.1:4222). Exits non-zero if a run failed.
set -euo pipefail

RUNS=${RUNS:-5}
RATE=${RATE:-1000}
WARMUP_SECS=${WARMUP_SECS:-5}
MEASURE_SECS=${MEASURE_SECS:-20}
PROFILE=${PROFILE:-release}
NATS_URL=${NATS_URL:-${KEEL_TEST_NATS_URL:-nats://127.0.0.1:4222}}
RUN_TIMEOUT_SECS=$((WARMUP_SECS + MEASURE_SECS + 300))

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_loopback_nats "$NATS_URL"

build_binaries cluster_md
KEEL_BIN=${KEEL_BIN:-$dir/keel}
EXAMPLE_BIN=${EXAMPLE_BIN:-$dir/examples/cluster_md}

one_run() {
    local run=$1
    run_example "$run" "$work" "$work/run-$run.log" \
        timeout --kill-after=30 "$RUN_TIMEOUT_SECS" "$EXAMPLE_BIN" --keel-bin "$KEEL_BIN" \
        --work-dir "$work/run-$run" --nats-url "$NATS_URL" --rate "$RATE" \
        --warmup-secs "$WARMUP_SECS" --measure-secs "$MEASURE_SECS"
}
load_runs keel-cluster-md "NATS $NATS_URL; "
print_medians "$results" holder_p50_us holder_p99_us follower_p50_us follower_p99_us hop_p50_us \
    hop_p99_us kill9_connect_ms kill9_holder_trades_ms kill9_follower_trades_ms kill9_pause_ms \
    kill9_missed term_exit_ms term_connect_ms term_pause_ms term_missed
for key in holder_received b_received c_received; do
    printf '%-26s %s\n' "$key" "$(tr ' ' '\n' <"$results" | sed -n "s/^$key=//p" | tr '\n' ' ')"
done
exit "$failed"
