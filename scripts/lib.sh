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
