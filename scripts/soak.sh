#!/usr/bin/env bash
# Soak: Keel for DURATION_SECS (an hour by default) with BOTS paper bots trading on the sim venue
# (a steady random walk: SIM_REGIME) and CLIENTS WebSocket clients, stopped with SIGTERM and
# started again on the same store at half time. `examples/soak.rs` runs Keel itself (127.0.0.1,
# a free port, a temporary data directory), samples its RSS and open descriptors, has every
# client resume after the restart (subscribe again with `since` its last journal id:
# docs/WEBSOCKET.md, "Resuming"), and at the end checks:
#   - RSS after warm-up within ±RSS_TOLERANCE_PCT % of its reference, in both processes;
#   - open descriptors flat after warm-up;
#   - every client holds each of its bot's journal lines exactly once, none lost or repeated,
#     each connection's ids following on one by one; the server closed connections with 1001
#     (SIGTERM) or 1013, never a reset;
#   - the store against the retention settings: Keel keeps RETENTION_SECS (120) of fills, orders
#     and journal rows (retention.*_max_age_secs, a sweep a minute), so the store holds a steady
#     size; rows of each kind removed, none older than the limit plus two sweeps, fills kept +
#     removed = fill lines seen, the sled files bounded by the rows they hold (RETENTION_SECS=0:
#     Keel's limits in days, nothing removed).
# It prints every figure, and exits non-zero on a violation. Everything stays on loopback and
# is removed on exit, however the script ends (KEEP=1 keeps the data directory and Keel's logs).
#
#   scripts/soak.sh                                   # release build, 1 hour, 200 bots, 200 clients
#   DURATION_SECS=300 PROFILE=debug scripts/soak.sh   # CI's 5-minute version, on the debug build
#   BOTS=50 CLIENTS=50 DURATION_SECS=120 scripts/soak.sh
#   NO_BUILD=1 scripts/soak.sh                        # the binaries as they are
#   KEEL_BIN=/tmp/keel SOAK_BIN=/tmp/soak NO_BUILD=1 scripts/soak.sh   # copies, or another build
set -euo pipefail

DURATION_SECS=${DURATION_SECS:-3600}
BOTS=${BOTS:-200}
CLIENTS=${CLIENTS:-200}
USERS=${USERS:-20}
PROFILE=${PROFILE:-release}
RSS_TOLERANCE_PCT=${RSS_TOLERANCE_PCT:-10}
RETENTION_SECS=${RETENTION_SECS:-120}
# The sim venue's regime: walk, a steady load. SIM_REGIME=schedule is Keel's default, whose
# segments make the bots trade more in some minutes than in others (docs/PERFORMANCE.md, "Soak").
SIM_REGIME=${SIM_REGIME:-walk}
# Empty: the example's default (a tenth of the run, between 30 and 300 s).
WARMUP_SECS=${WARMUP_SECS:-}
# Bound, so the script always ends by itself: the run, two starts and stops, set-up and checks.
TIMEOUT_SECS=$((DURATION_SECS + 900))

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
build_binaries soak
# Other builds of either (a copy, so that rebuilding meanwhile changes nothing mid-run).
KEEL_BIN=${KEEL_BIN:-$dir/keel}
SOAK_BIN=${SOAK_BIN:-$dir/examples/soak}

# Keel holds a descriptor per client connection, and so does the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < CLIENTS + 512)); then
    echo "open-file limit $(ulimit -n) is below $((CLIENTS + 512)); raise it" >&2
    exit 1
fi

work=$(mktemp -d -t keel-soak.XXXXXX)
cleanup() {
    # The example stops Keel itself; if it was killed, Keel (whose pid it wrote) is stopped here.
    local pid
    pid=$(cat "$work/data.keel.pid" 2>/dev/null || true)
    # The kernel keeps 15 characters of a process's name (a renamed copy of keel counts too).
    local name
    name=$(basename "$KEEL_BIN")
    if [[ -n $pid ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "${name:0:15}" ]]; then
        stop_pid "$pid" 30 keel
    fi
    remove_work
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(free_port)
host_line "port $port; "
extra=()
if [[ -n $WARMUP_SECS ]]; then extra=(--warmup-secs "$WARMUP_SECS"); fi
status=0
timeout --kill-after=30 "$TIMEOUT_SECS" "$SOAK_BIN" --keel-bin "$KEEL_BIN" \
    --data-dir "$work/data" --port "$port" --duration-secs "$DURATION_SECS" --bots "$BOTS" \
    --clients "$CLIENTS" --users "$USERS" --rss-tolerance-pct "$RSS_TOLERANCE_PCT" \
    --retention-secs "$RETENTION_SECS" --sim-regime "$SIM_REGIME" \
    "${extra[@]}" || status=$?
for log in "$work"/data.keel-*.log; do
    [[ -s $log ]] || continue
    echo "$(basename "$log"): $(wc -l <"$log") lines; the first 20:"
    head -n 20 "$log"
done
exit "$status"
