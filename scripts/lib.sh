# Helpers shared by the load scripts (sourced, not run): a free loopback port, waiting for a
# server to be ready, and stopping it. Everything stays on 127.0.0.1 and every wait is bounded.

# A port nothing listens on (the server refuses to start, and `wait_ready` says so, if it is
# taken in the meantime).
free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

# wait_ready PID PORT LOG PATH TIMEOUT_SECS: until `GET PATH` answers 2xx (or, with an empty
# PATH, the port accepts a connection). Fails, printing LOG, if PID exits or TIMEOUT_SECS pass.
wait_ready() {
    local pid=$1 port=$2 log=$3 path=$4 timeout=$5
    local deadline=$((SECONDS + timeout))
    until if [[ -n $path ]]; then
        curl -fsS --max-time 2 "http://127.0.0.1:$port$path" >/dev/null 2>&1
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
    fi; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the server exited during start-up:" >&2
            cat "$log" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "the server was not ready within $timeout s:" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.1
    done
}

# stop_pid PID TIMEOUT_SECS NAME: SIGTERM, then SIGKILL if PID is still there after
# TIMEOUT_SECS; says how long the graceful stop took.
stop_pid() {
    local pid=$1 timeout=$2 name=$3
    kill -0 "$pid" 2>/dev/null || return 0
    local began=$SECONDS stopped=0
    kill -TERM "$pid"
    for _ in $(seq 1 $((timeout * 10))); do
        if ! kill -0 "$pid" 2>/dev/null; then
            stopped=1
            break
        fi
        sleep 0.1
    done
    if ((stopped)); then
        echo "$name stopped $((SECONDS - began)) s after SIGTERM (whole seconds)"
    else
        echo "$name did not stop within $timeout s of SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# build_binaries EXAMPLE: builds Keel and examples/EXAMPLE for PROFILE (release or debug; not with
# NO_BUILD set) and sets `dir`, where both are.
build_binaries() {
    local target=${CARGO_TARGET_DIR:-target} profile_flag=()
    if [[ $PROFILE == release ]]; then
        dir=$target/release
        profile_flag=(--release)
    else
        dir=$target/debug
    fi
    if [[ -z ${NO_BUILD:-} ]]; then
        cargo build "${profile_flag[@]}" --bin keel --example "$1"
    fi
}

# stop_node_pids WORK KEEL_BIN: stops every node a load example wrote down as WORK/run-*/*.pid
# and that is still a keel process (the example stops its nodes itself; this is for when it was
# killed).
stop_node_pids() {
    local work=$1 name pidfile pid
    name=$(basename "$2")
    for pidfile in "$work"/run-*/*.pid; do
        [[ -e $pidfile ]] || continue
        pid=$(cat "$pidfile")
        if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "${name:0:15}" ]]; then
            stop_pid "$pid" 20 keel
        fi
    done
}

# print_medians RESULTS KEY...: for each KEY, the median of its values over the `KEY=value`
# lines of RESULTS (one line per run), and every run's value.
print_medians() {
    local results=$1 key values med
    shift
    for key in "$@"; do
        values=$(tr ' ' '\n' <"$results" | sed -n "s/^$key=//p" | sort -g | tr '\n' ' ')
        [[ -z $values ]] && continue
        med=$(echo "$values" | tr ' ' '\n' | grep -v '^$' |
            awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}')
        printf '%-26s median %-8s (runs: %s)\n' "$key" "$med" "$values"
    done
}

# run_example RUN WORK LOG CMD...: runs one load run, its output also in LOG, adds its
# `RESULT` line to WORK/results, and on failure prints the first 20 lines of each node's log.
# Sets `failed=1` when the run failed.
run_example() {
    local run=$1 work=$2 log=$3 status=0 node_log
    shift 3
    "$@" | tee "$log" || status=${PIPESTATUS[0]}
    grep '^RESULT ' "$log" | sed "s/^RESULT /RESULT run=$run /" >>"$work/results" || true
    if ((status != 0)); then
        echo "run $run failed (exit $status); the nodes' logs (first 20 lines each):" >&2
        for node_log in "$work/run-$run"/node-*.log; do
            [[ -s $node_log ]] && { echo "-- $node_log" >&2; head -n 20 "$node_log" >&2; }
        done
        failed=1
    fi
}

# require_loopback_nats URL: exits unless URL is a NATS server on loopback that accepts a
# connection (load runs never reach beyond 127.0.0.0/8).
require_loopback_nats() {
    local url=$1 hostport
    case $url in
    nats://127.* | nats://localhost:*) ;;
    *)
        echo "NATS_URL must be on loopback (nats://127.0.0.1:PORT): $url" >&2
        exit 1
        ;;
    esac
    hostport=${url#nats://}
    if ! (exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}") 2>/dev/null; then
        echo "no NATS server at $url (start one with JetStream: nats-server -js)" >&2
        exit 1
    fi
}

# remove_work: removes the run's work directory `$work`, or keeps it with KEEP=1 and says where.
remove_work() {
    if [[ -n ${KEEP:-} ]]; then
        echo "kept $work"
    else
        rm -rf "$work"
    fi
}

# host_line DETAIL: one line naming the host, its load, the keel binary and profile, the tree,
# DETAIL and the time, for the top of a run's output.
host_line() {
    echo "host: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); keel $KEEL_BIN ($PROFILE)," \
        "tree $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $1$(date -u +%FT%TZ)"
}

# load_runs PREFIX DETAIL: for a script that runs a load example RUNS times. Makes the work
# directory `$work` (removed at exit, KEEP=1 keeps it; nodes left running are stopped) with an
# empty `$results`, prints the host line (with DETAIL), calls the script's `one_run RUN` for
# each run, and prints the heading of the medians. `one_run` uses `run_example`, which sets
# `failed=1` when a run fails.
load_runs() {
    work=$(mktemp -d -t "$1.XXXXXX")
    results="$work/results"
    : >"$results"
    trap 'stop_node_pids "$work" "$KEEL_BIN"; remove_work' EXIT
    trap 'exit 130' INT TERM
    host_line "$2"
    failed=0
    local run
    for run in $(seq 1 "$RUNS"); do
        echo
        echo "== run $run of $RUNS =="
        one_run "$run"
    done
    echo
    echo "== medians over the runs that finished ($(wc -l <"$results") of $RUNS) =="
}
