#!/usr/bin/env bash
# Cluster mode, users: what forwarding a request to the user's owner adds (p50, p99), and how long
# a user and their bot are without an owner after kill -9 of that node, RUNS times, with medians.
#
# Each run (`examples/cluster_forward.rs`) creates a database of its own on the Postgres at
# POSTGRES_URL, starts two Keel nodes (own ports, data directories and cluster name) on 127.0.0.1
# against it and the NATS at NATS_URL, registers a user, and times `GET /api/v1/bots` sent to the
# user's owner (served there: the baseline) and to the other node (forwarded over NATS to the
# owner), one request at a time; then it starts a paper bot for the user, kills the owner with
# SIGKILL and times until the other node serves the user itself, shows the bot running, and
# shows the bot's first fill made there. Everything stays on loopback, each run is bounded by
# RUN_TIMEOUT_SECS, the database and NATS streams are dropped, and the work directory is removed
# on exit (KEEP=1 keeps it, with the nodes' logs).
#
#   scripts/cluster-forward.sh                  # release build, 5 runs
#   RUNS=1 REQUESTS=500 scripts/cluster-forward.sh
#   PROFILE=debug NO_BUILD=1 scripts/cluster-forward.sh
set -euo pipefail

RUNS=${RUNS:-5}
REQUESTS=${REQUESTS:-2000}
PROFILE=${PROFILE:-release}
NATS_URL=${NATS_URL:-${KEEL_TEST_NATS_URL:-nats://127.0.0.1:4222}}
POSTGRES_URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
RUN_TIMEOUT_SECS=${RUN_TIMEOUT_SECS:-300}

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_loopback_nats "$NATS_URL"
case $POSTGRES_URL in
postgres://*@127.* | postgres://*@localhost[:/]* | postgres://127.* | postgres://localhost[:/]*) ;;
*)
    echo "POSTGRES_URL must be on loopback: $POSTGRES_URL" >&2
    exit 1
    ;;
esac

build_binaries cluster_forward
KEEL_BIN=${KEEL_BIN:-$dir/keel}
EXAMPLE_BIN=${EXAMPLE_BIN:-$dir/examples/cluster_forward}

one_run() {
    local run=$1
    run_example "$run" "$work" "$work/run-$run.log" \
        timeout --kill-after=30 "$RUN_TIMEOUT_SECS" "$EXAMPLE_BIN" --keel-bin "$KEEL_BIN" \
        --work-dir "$work/run-$run" --nats-url "$NATS_URL" --postgres-url "$POSTGRES_URL" \
        --requests "$REQUESTS"
}
load_runs keel-cluster-forward ""
print_medians "$results" direct_p50_us direct_p99_us forwarded_p50_us forwarded_p99_us failover_ms \
    bot_running_ms bot_fill_ms
exit "$failed"
