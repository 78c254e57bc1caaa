#!/usr/bin/env bash
# Soak: 15,000 streams over all three transports (6,500 WebSocket, 6,500 SSE, 2,000
# long-pollers; three generators, each on its own topic and source address) with steady
# publishing (2 events/s per topic, one event per request) for DURATION seconds, while
# the server's RSS is sampled every 10 s. Each generator reports lost, duplicated and
# out-of-order deliveries; the RSS curve goes to $OUT/rss.tsv.
#
#   bench/soak.sh                  # 600 s
#   DURATION=120 bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-600}
OUT=${OUT:-bench/results/soak-$(date -u +%Y-%m-%d)}
PORT=${PORT:-4301}
mkdir -p "$OUT"
echo "==> building release binaries"
cargo build --release -q
cargo build --release -q -p switchyard-bench
BIN=target/release/switchyard
BENCH=target/release/switchyard-bench

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

env -i PATH="$PATH" RUST_LOG=warn SWITCHYARD_ADDR=127.0.0.1:$PORT SWITCHYARD_MAX_CONNECTIONS=19000 \
    "$BIN" >"$OUT/server.log" 2>&1 &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

events=$((DURATION * 2))
run() { # <name> <transport> <subscribers> <source ip>
    "$BENCH" --transport "$2" --subscribers "$3" --events "$events" --rate 2 --batch 1 \
        --source-ip "$4" --url "http://127.0.0.1:$PORT" --server-pid "$SERVER" \
        --ramp-per-sec 1000 --timeout $((DURATION + 300)) --json "$OUT/$1.json" >"$OUT/$1.log" 2>&1 &
    PIDS+=($!)
    GEN+=($!)
}
GEN=()
run ws ws 6500 127.0.0.31
run sse sse 6500 127.0.0.32
run longpoll longpoll 2000 127.0.0.33

printf 's\trss_mib\topen_streams\tretained_bytes\n' >"$OUT/rss.tsv"
t0=$(date +%s)
while kill -0 "${GEN[0]}" 2>/dev/null || kill -0 "${GEN[1]}" 2>/dev/null || kill -0 "${GEN[2]}" 2>/dev/null; do
    rss=$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$SERVER/status")
    read -r open retained < <(curl -fs "http://127.0.0.1:$PORT/v1/status" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["connections"]["open"], s["log"]["retained_bytes"])' 2>/dev/null || echo "? ?")
    printf '%s\t%s\t%s\t%s\n' $(($(date +%s) - t0)) "$rss" "$open" "$retained" | tee -a "$OUT/rss.tsv"
    sleep 10
done
for p in "${GEN[@]}"; do wait "$p" || echo "generator $p exited with $?"; done

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
for name in ("ws", "sse", "longpoll"):
    r = json.load(open(f"{out}/{name}.json"))
    print(f"{name}: connected {r['connected']}/{r['subscribers']}, delivered {r['delivered_unique']}/{r['expected']},"
          f" missing {r['missing']}, duplicated {r['duplicated']}, out of order {r['out_of_order']},"
          f" p50/p99 {r['latency']['p50_ms']:.1f}/{r['latency']['p99_ms']:.1f} ms, complete {r['complete']}")
rows = [l.split("\t") for l in open(f"{out}/rss.tsv").read().split("\n")[1:] if l]
rss = [float(r[1]) for r in rows]
if rss:
    print(f"RSS MiB: first {rss[0]}, min {min(rss)}, max {max(rss)}, last {rss[-1]} over {rows[-1][0]} s ({len(rss)} samples)")
PY
