#!/usr/bin/env bash
# Resource attacks against a fresh Keel on loopback (docs/SECURITY.md, "Resources"): builds the
# binary, starts it on a free 127.0.0.1 port with a temporary data directory, runs
# scripts/attacks.py (every attack, or those named), prints what held, and stops Keel. Every
# count and wait is bounded; nothing leaves loopback (the attacker address is 127.0.0.2).
#
#   scripts/attacks.sh                        # every attack, debug build
#   PROFILE=release scripts/attacks.sh slow-body
#   SLOW=500 HOLD=5 LABEL_REQUESTS=10000 scripts/attacks.sh
#
# Keel runs with its default limits, except: the per-IP request budget is raised (the attacks
# would otherwise be answered 429 long before they test anything else) and
# ws.max_unauthenticated is 50 (so the WebSocket attack needs few sockets). Needs python3 and
# `ulimit -n` above SLOW + 200. Exits non-zero if any attack got through.
set -euo pipefail

PROFILE=${PROFILE:-dev}
SLOW=${SLOW:-2000}
HOLD=${HOLD:-15}
LABEL_REQUESTS=${LABEL_REQUESTS:-100000}
WS_CAP=50
READY_TIMEOUT_SECS=60
STOP_TIMEOUT_SECS=15

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

if (($(ulimit -n) < SLOW + 200)); then
    ulimit -n $((SLOW + 200)) 2>/dev/null || {
        echo "ulimit -n is $(ulimit -n); SLOW=$SLOW needs $((SLOW + 200))" >&2
        exit 2
    }
fi

cargo build --profile "$PROFILE" --bin keel
target=${CARGO_TARGET_DIR:-target}
dir=$([[ $PROFILE == dev ]] && echo debug || echo "$PROFILE")
binary="$target/$dir/keel"

work=$(mktemp -d -t keel-attacks.XXXXXX)
keel_pid=""
cleanup() {
    if [[ -n $keel_pid ]]; then
        stop_pid "$keel_pid" "$STOP_TIMEOUT_SECS" keel
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(free_port)
env -u RUST_LOG \
    KEEL__SERVER__HOST=127.0.0.1 \
    KEEL__SERVER__PORT="$port" \
    KEEL__STORE__PATH="$work/data" \
    KEEL__LOG__LEVEL=error \
    KEEL__ACCESS_LOG__OUTPUT=off \
    KEEL__PROTECTION__PER_IP_PER_MINUTE=10000000 \
    KEEL__WS__MAX_UNAUTHENTICATED=$WS_CAP \
    "$binary" serve >"$work/keel.log" 2>&1 &
keel_pid=$!
wait_ready "$keel_pid" "$port" "$work/keel.log" /health/ready "$READY_TIMEOUT_SECS"
echo "keel (pid $keel_pid, $PROFILE build) on 127.0.0.1:$port; RSS $(grep VmRSS /proc/$keel_pid/status)"

status=0
timeout 900 python3 scripts/attacks.py --port "$port" --pid "$keel_pid" --slow "$SLOW" \
    --hold "$HOLD" --label-requests "$LABEL_REQUESTS" --ws-cap "$WS_CAP" "$@" || status=$?
echo "keel's peak RSS: $(grep VmHWM /proc/$keel_pid/status)"
exit $status
