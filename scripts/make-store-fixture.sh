#!/usr/bin/env bash
# Writes a small but complete Keel data directory with a given binary, for the on-disk
# compatibility test (tests/api/store_fixture.rs):
#   scripts/make-store-fixture.sh KEEL_BIN OUT_DIR
# OUT_DIR gets `data/` (the store and the development secrets) and `expected.json`: what the API
# answered for every user just before the binary was stopped. A later Keel must open `data/` and
# answer the same.
#
# Two users: alice has an exchange account, a paper bot that traded by itself and was stopped, and
# a quiet paper bot with a manual market fill and a resting limit order, left running; bob has one
# bot that was never started. Loopback only, and every wait is bounded.
set -euo pipefail

bin=$(realpath "$1")
out=$(realpath -m "$2")
port=${PORT:-18089}
base="http://127.0.0.1:$port/api/v1"
password='correct horse battery staple'
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

KEEL__STORE__PATH="$work/data" KEEL__SERVER__PORT=$port KEEL__VENUES__SIM__TRADES_PER_SEC=200 \
    KEEL__LOG__LEVEL=warn "$bin" >"$work/keel.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.1; done

call() { # METHOD PATH TOKEN [BODY]
    curl -sS --fail-with-body -X "$1" "$base$2" -H "authorization: Bearer $3" -H 'content-type: application/json' \
        ${4:+-d "$4"}
}
register() {
    curl -sf -X POST "$base/auth/register" -H 'content-type: application/json' \
        -d "{\"email\":\"$1\",\"password\":\"$password\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"]["access_token"])'
}
id() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }

alice=$(register alice@example.com)
bob=$(register bob@example.com)

call POST /exchange-accounts "$alice" \
    '{"venue":"binance","label":"main","api_key":"fixture-key-0123456789","api_secret":"fixture-secret-0123456789","testnet":true}' >/dev/null

trader=$(call POST /bots "$alice" '{"name":"trader","venue":"sim","symbol":"BTCUSDT","mode":"paper",
  "strategy":{"kind":"ema_cross","params":{"fast":2,"slow":5,"qty":"0.001"}},
  "paper":{"starting_quote":"10000","fee_bps":"10"}}' | id)
quiet=$(call POST /bots "$alice" '{"name":"quiet","venue":"sim","symbol":"ETHUSDT","mode":"paper",
  "strategy":{"kind":"ema_cross","params":{"fast":5000,"slow":9000,"qty":"0.01"}},
  "paper":{"starting_quote":"5000","fee_bps":"10"}}' | id)
call POST /bots "$bob" '{"name":"idle","venue":"sim","symbol":"BTCUSDT","mode":"paper",
  "strategy":{"kind":"rsi","params":{"period":14,"oversold":30,"overbought":70,"qty":"0.1"}},
  "paper":{"starting_quote":"1000","fee_bps":"10"}}' >/dev/null

call POST "/bots/$trader/start" "$alice" >/dev/null
call POST "/bots/$quiet/start" "$alice" >/dev/null
sleep 1
call POST "/bots/$quiet/orders" "$alice" '{"side":"buy","qty":"0.01","type":"market"}' >/dev/null
call POST "/bots/$quiet/orders" "$alice" '{"side":"buy","qty":"0.01","type":"limit","price":"1000.00"}' >/dev/null

# Until the trader has a few fills (bounded: 30 s).
for _ in $(seq 300); do
    n=$(call GET "/bots/$trader/fills?limit=500" "$alice" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')
    [ "$n" -ge 6 ] && break
    sleep 0.1
done
call POST "/bots/$trader/stop" "$alice" >/dev/null

# What the API says now, per user: the test compares a later Keel's answers with these.
snapshot() { # TOKEN
    local token=$1
    echo "{\"me\": $(call GET /me "$token"),"
    echo " \"exchange_accounts\": $(call GET /exchange-accounts "$token"),"
    echo " \"bots\": $(call GET /bots "$token"),"
    echo " \"per_bot\": {"
    local first=1
    for bot in $(call GET /bots "$token" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(" ".join(str(b["id"]) for b in d["items"]))'); do
        [ $first = 1 ] || echo ","
        first=0
        echo "\"$bot\": {\"orders\": $(call GET "/bots/$bot/orders?limit=500" "$token"),"
        echo " \"fills\": $(call GET "/bots/$bot/fills?limit=500" "$token"),"
        echo " \"position\": $(call GET "/bots/$bot/position" "$token")}"
    done
    echo "}}"
}
{
    echo "{\"password\": \"$password\", \"written_by\": \"$("$bin" --version)\","
    echo "\"users\": {\"alice@example.com\": $(snapshot "$alice"), \"bob@example.com\": $(snapshot "$bob")}}"
} | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), indent=1, sort_keys=True))' >"$work/expected.json"

kill -TERM "$pid"
wait "$pid" || true
rm -rf "$out"
mkdir -p "$out"
cp -r "$work/data" "$out/data"
cp "$work/expected.json" "$out/expected.json"
du -sh "$out"
