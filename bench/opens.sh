#!/usr/bin/env bash
# Stream opens per second with and without subscriber tokens (issue 14): long polls that
# answer at once, each a whole admission, over 16 kept-alive connections for 5 s.
#
#   bench/opens.sh              # 3 rounds of the three modes, rotated; release builds
#   ROUNDS=1 SECONDS_EACH=2 bench/opens.sh
#
# Modes (each on a freshly started server):
#   no-key       no token key configured, public topic, no token sent (the default)
#   key-public   SWITCHYARD_TOKEN_SECRET set, a public topic, no token sent
#   key-token    the same server, a private topic, a Bearer HS256 token with every poll
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-5}
PORT=${PORT:-18700}
SECRET=0123456789abcdef0123456789abcdef
[[ -n ${NO_BUILD:-} ]] || cargo build --release -q -p switchyard -p switchyard-bench
SERVER_PID=""
cleanup() { [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

run_mode() {
    local mode=$1 port=$2 env=() topic=projects secret=()
    case $mode in
        no-key) ;;
        key-public) env=(SWITCHYARD_TOKEN_SECRET=$SECRET SWITCHYARD_PUBLIC_TOPICS=projects) ;;
        key-token) env=(SWITCHYARD_TOKEN_SECRET=$SECRET SWITCHYARD_PUBLIC_TOPICS=projects); topic=notifications/ada; secret=(--secret "$SECRET") ;;
    esac
    env "${env[@]}" SWITCHYARD_ADDR=127.0.0.1:$port RUST_LOG=warn target/release/switchyard &
    SERVER_PID=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
    local cpu0 cpu1 out
    cpu0=$(awk '{print $14+$15}' /proc/$SERVER_PID/stat)
    out=$(target/release/switchyard-opens --url "http://127.0.0.1:$port" --topic "$topic" "${secret[@]}" --seconds "$SECONDS_EACH")
    cpu1=$(awk '{print $14+$15}' /proc/$SERVER_PID/stat)
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
    # The server's CPU (user + system, in 1/100 s ticks) during the measurement.
    echo "{\"mode\":\"$mode\",\"server_cpu_s\":$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {print (b - a) / 100}'),\"result\":$out}"
}

order=(no-key key-public key-token)
for ((r = 0; r < ROUNDS; r++)); do
    for m in "${order[@]}"; do
        PORT=$((PORT + 1))
        run_mode "$m" "$PORT"
    done
    order=("${order[2]}" "${order[0]}" "${order[1]}")
done
