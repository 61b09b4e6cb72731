#!/usr/bin/env bash
# Runs the NautilusTrader peer and Keel on the same 1M synthetic ticks, 3 times each,
# in one session, under /usr/bin/time. Usage: benches/peers/run.sh [RUNS]
# Needs: /tmp/nt-venv with nautilus_trader (see README.md), target/release/keel built.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${1:-3}"
DATA="${DATA:-/tmp/synth1m.csv}"
PY="${PY:-/tmp/nt-venv/bin/python}"
KEEL="${KEEL:-target/release/keel}"

if [ ! -f "$DATA" ]; then
    "$KEEL" data synth --ticks 1000000 --seed 42 --out "$DATA"
fi
echo "# $(date -u +%FT%TZ) $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# nautilus_trader $("$PY" -c 'import nautilus_trader as n; print(n.__version__)'), $("$PY" --version)"
for i in $(seq 1 "$RUNS"); do
    echo "## nautilus run $i"
    /usr/bin/time -f "rss_kb=%M wall=%e" "$PY" benches/peers/nautilus_ema_cross.py --data "$DATA" 2>&1
done
for i in $(seq 1 "$RUNS"); do
    echo "## keel run $i"
    /usr/bin/time -f "rss_kb=%M wall=%e" "$KEEL" backtest --strategy ema_cross \
        --params '{"fast":100,"slow":400,"qty":"0.001"}' --data "$DATA" 2>&1 \
        | grep -E 'ticks|orders|fees|net P&L|end position|rss_kb'
done
