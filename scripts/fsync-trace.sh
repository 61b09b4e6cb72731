#!/usr/bin/env bash
# Durability proof: every acknowledged order follows a completed fdatasync of sled's log.
#
# Builds and starts the real binary under strace on a fresh data directory, registers a user,
# starts one quiet paper bot on the sim venue, places N market orders on it with curl, one at a
# time, and checks the trace against the curl timestamps.
#
#   scripts/fsync-trace.sh                  # 50 orders, debug build
#   N=200 PROFILE=release scripts/fsync-trace.sh
#   KEEL_BIN=/tmp/keel-base NO_BUILD=1 scripts/fsync-trace.sh   # another build (main: fails)
#
# How the match works. strace runs with `-f -ttt -T -y -e trace=fsync,fdatasync,sync_file_range,
# pwrite64`: `-ttt` stamps each call with the wall clock in epoch seconds (the clock `date +%s.%N`
# reads, so the two compare directly), `-T` adds its duration (so a call's completion is start +
# duration, also for calls split into `<unfinished ...>` / `<... resumed>` across threads), and
# `-y` prints the path behind each fd, so "sled's log" is any fd whose path ends in `/data/db`.
# For order i, curl is bracketed by `sent_i` (just before curl starts) and `acked_i` (just after
# it returned 200). The order's bytes reach the log by a pwrite64 on the log after `sent_i` (the
# server cannot write them before it has the request). The check: there is such a pwrite64, and
# an fsync/fdatasync of the log that starts after that pwrite64 ended and completes before
# `acked_i`. Orders go one at a time, so no other request's sync can be mistaken for this one's.
# The summary also counts sync_file_range (sled's own, not a durability barrier) and the syncs
# per acknowledged order.
#
# Exits non-zero if any acknowledged order is not covered. Needs strace (apt-get install strace);
# `.ci/run` does not run this script.
set -euo pipefail

N=${N:-50}
PROFILE=${PROFILE:-debug}
READY_TIMEOUT_SECS=${READY_TIMEOUT_SECS:-60}
PASSWORD="correct horse battery staple"

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
target=${CARGO_TARGET_DIR:-target}
if [[ -z ${KEEL_BIN:-} ]]; then
    KEEL_BIN=$target/$PROFILE/keel
fi
if [[ -z ${NO_BUILD:-} ]]; then
    if [[ $PROFILE == release ]]; then
        cargo build --release --bin keel
    else
        cargo build --bin keel
    fi
fi
if ! command -v strace >/dev/null; then
    echo "strace is missing: apt-get install -y strace" >&2
    exit 2
fi

work=$(mktemp -d -t keel-fsync-trace.XXXXXX)
strace_pid=""
cleanup() {
    if [[ -n $strace_pid ]]; then
        local keel_pid
        keel_pid=$(pgrep -P "$strace_pid" || true)
        if [[ -n $keel_pid ]]; then stop_pid "$keel_pid" 20 keel >/dev/null; fi
        wait "$strace_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(free_port)
env -u RUST_LOG KEEL__SERVER__HOST=127.0.0.1 KEEL__SERVER__PORT="$port" \
    KEEL__STORE__PATH="$work/data" KEEL__LOG__LEVEL=warn \
    KEEL__AUTH__JWT_SECRET="fsync-trace-only-secret-0123456789abcdef" \
    strace -f -ttt -T -y -e trace=fsync,fdatasync,sync_file_range,pwrite64 -o "$work/trace" \
    "$KEEL_BIN" serve >"$work/keel.log" 2>&1 &
strace_pid=$!
wait_ready "$strace_pid" "$port" "$work/keel.log" /health/ready "$READY_TIMEOUT_SECS"

# call METHOD PATH [BODY]: the JSON answer; fails, printing it, on a non-2xx status.
call() {
    local method=$1 path=$2 body=${3:-}
    local args=(-sS --max-time 30 -X "$method" -H 'content-type: application/json')
    if [[ -n ${token:-} ]]; then args+=(-H "authorization: Bearer $token"); fi
    if [[ -n $body ]]; then args+=(-d "$body"); fi
    local answer status
    answer=$(curl "${args[@]}" -w '\n%{http_code}' "http://127.0.0.1:$port$path")
    status=${answer##*$'\n'}
    answer=${answer%$'\n'*}
    if [[ $status != 2* ]]; then
        echo "$method $path answered $status: $answer" >&2
        return 1
    fi
    echo "$answer"
}
json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

token=""
token=$(call POST /api/v1/auth/register \
    "{\"email\":\"fsync-trace@example.com\",\"password\":\"$PASSWORD\"}" | json '["tokens"]["access_token"]')
bot='{"name":"fsync","venue":"sim","symbol":"BTCUSDT","mode":"paper",
      "strategy":{"kind":"ema_cross","params":{"fast":5000,"slow":9000,"qty":"0.001"}},
      "paper":{"starting_quote":"1000000","fee_bps":"10"}}'
id=$(call POST /api/v1/bots "$bot" | json '["id"]')
call POST "/api/v1/bots/$id/start" >/dev/null

# A market order needs a price: wait for the sim feed's first trade (this order is not counted).
order='{"type":"market","side":"buy","qty":"0.001"}'
for _ in $(seq 1 100); do
    if call POST "/api/v1/bots/$id/orders" "$order" >/dev/null 2>&1; then break; fi
    sleep 0.1
done

: >"$work/acks"
for i in $(seq 1 "$N"); do
    side=$([[ $((i % 2)) == 1 ]] && echo buy || echo sell)
    sent=$(date +%s.%N)
    call POST "/api/v1/bots/$id/orders" "{\"type\":\"market\",\"side\":\"$side\",\"qty\":\"0.001\"}" >/dev/null
    acked=$(date +%s.%N)
    echo "$i $sent $acked" >>"$work/acks"
done

keel_pid=$(pgrep -P "$strace_pid")
stop_pid "$keel_pid" 20 keel >/dev/null
wait "$strace_pid" 2>/dev/null || true
strace_pid=""

python3 - "$work/trace" "$work/acks" <<'EOF'
import re, sys

# `PID START CALL(ARGS) = RET <DUR>`, possibly split into `<unfinished ...>` and `<... CALL resumed>`.
line_re = re.compile(r'^(\d+)\s+(\d+\.\d+)\s+(.*)$')
call_re = re.compile(r'^(fsync|fdatasync|sync_file_range|pwrite64)\((\d+)<([^>]*)>')
resumed_re = re.compile(r'^<\.\.\. (\w+) resumed>.*<(\d+\.\d+)>\s*$')
done_re = re.compile(r'= (-?\d+).*<(\d+\.\d+)>\s*$')

calls = []          # (name, path, start, end, ok)
pending = {}        # pid -> (name, path, start)
for raw in open(sys.argv[1]):
    m = line_re.match(raw.strip())
    if not m:
        continue
    pid, start, rest = m.group(1), float(m.group(2)), m.group(3)
    c = call_re.match(rest)
    if c:
        name, path = c.group(1), c.group(3)
        if rest.endswith('<unfinished ...>'):
            pending[pid] = (name, path, start)
            continue
        d = done_re.search(rest)
        if d:
            calls.append((name, path, start, start + float(d.group(2)), int(d.group(1)) >= 0))
        continue
    r = resumed_re.match(rest)
    if r and pid in pending:
        name, path, began = pending.pop(pid)
        ok = not re.search(r'= -1 ', rest)
        # the duration on the resumed line runs from the call's start.
        calls.append((name, path, began, began + float(r.group(2)), ok))

def is_log(path):
    return path.endswith('/data/db')

writes = sorted((s, e) for n, p, s, e, ok in calls if n == 'pwrite64' and is_log(p) and ok)
syncs = sorted((s, e) for n, p, s, e, ok in calls if n in ('fsync', 'fdatasync') and is_log(p) and ok)
ranges = [1 for n, p, s, e, ok in calls if n == 'sync_file_range' and is_log(p)]
acks = [tuple(map(float, l.split()[1:])) for l in open(sys.argv[2])]

uncovered = []
margins = []
for i, (sent, acked) in enumerate(acks, 1):
    after = [e for s, e in writes if s >= sent and e <= acked]
    if not after:
        uncovered.append((i, 'no pwrite64 to the log while the request was in flight'))
        continue
    first_write_end = min(after)
    covering = [(s, e) for s, e in syncs if s >= first_write_end and e <= acked]
    if not covering:
        uncovered.append((i, 'no fsync/fdatasync of the log after its pwrite64 and before the ack'))
        continue
    margins.append(acked - max(e for s, e in covering))

print(f"orders acknowledged: {len(acks)}")
print(f"pwrite64 on the log: {len(writes)}, sync_file_range on the log: {len(ranges)}, "
      f"fsync/fdatasync on the log: {len(syncs)} (whole run, start-up and shutdown included)")
syncs_in_flight = sum(1 for s, e in syncs if any(a <= s and e <= b for a, b in acks))
print(f"fdatasyncs while an order was in flight: {syncs_in_flight} "
      f"({syncs_in_flight / max(len(acks), 1):.2f} per acknowledged order)")
if margins:
    margins.sort()
    print(f"covered: {len(margins)} of {len(acks)}; sync end -> curl return, median "
          f"{margins[len(margins) // 2] * 1e3:.2f} ms, min {margins[0] * 1e3:.2f} ms")
for i, why in uncovered:
    print(f"NOT COVERED: order {i}: {why}")
sys.exit(1 if uncovered else 0)
EOF
