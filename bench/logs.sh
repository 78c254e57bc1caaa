#!/usr/bin/env bash
# Publish → delivery latency on each log backend (memory, data dir, Redis), one node,
# 100 WebSocket subscribers; then the fan-out across two nodes on Redis against one node,
# 1,000 WebSocket subscribers over two generator processes either way. One event per
# publish request everywhere (--batch 1).
#
#   bench/logs.sh                 # REPS=3, both parts
#   REPS=1 PARTS=fanout bench/logs.sh
#
# Needs redis-server. Prints one line per run and a Markdown table of medians per part
# for BENCHMARKS.md ("The log backends"). Results go to $OUT (default
# bench/results/logs-<date>). PARTS: "latency fanout" (default), or one of them.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
PARTS=${PARTS:-latency fanout}
OUT=${OUT:-bench/results/logs-$(date +%Y-%m-%d)}
mkdir -p "$OUT"
command -v redis-server >/dev/null || { echo "redis-server is needed (apt-get install redis-server)" >&2; exit 1; }

echo "==> building release binaries"
cargo build --release -q
cargo build --release -q -p switchyard-bench
BIN=target/release/switchyard
BENCH=target/release/switchyard-bench

# shellcheck source=bench/lib/nodes.sh
source bench/lib/nodes.sh

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# start_node <port> <env...>: starts a node and waits until it answers /readyz.
start_node() {
    local port=$1; shift
    env -i PATH="$PATH" RUST_LOG=warn SWITCHYARD_ADDR=127.0.0.1:$port "$@" "$BIN" >"$OUT/node-$port.log" 2>&1 &
    PIDS+=($!)
    NODE_PID=$!
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "node on $port did not start: $(tail -3 "$OUT/node-$port.log")" >&2
    exit 1
}

stop_all() { cleanup; # shellcheck source=bench/lib/nodes.sh
source bench/lib/nodes.sh

PIDS=(); sleep 0.3; }

start_redis() {
    REDIS_PORT=$1
    rm -rf "$OUT/redis" && mkdir -p "$OUT/redis"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$OUT/redis" >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 50); do
        [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]] && return
        sleep 0.1
    done
    echo "redis-server did not start" >&2; exit 1
}

# run <name> <subscribe url> <publish url> <server pid> <rate> <events>
run() {
    local name=$1 url=$2 pub=$3 pid=$4 rate=$5 events=$6
    "$BENCH" --transport ws --subscribers 100 --events "$events" --rate "$rate" --batch 1 \
        --url "$url" --publish-url "$pub" --server-pid "$pid" --timeout 120 \
        --json "$OUT/$name.json" >"$OUT/$name.log" 2>&1
    python3 - "$OUT/$name.json" "$name" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency"]
print(f"{sys.argv[2]}: delivered {r['delivered_unique']}/{r['expected']}"
      f"{'' if r['complete'] else ' INCOMPLETE'}, p50 {l['p50_ms']:.2f} p99 {l['p99_ms']:.2f} max {l['max_ms']:.2f} ms,"
      f" publish {r['publish_rate']:.0f}/s")
EOF
}

# fanout <name> <subscribe urls> <publish url> <server pid>: 1,000 WebSocket subscribers
# over two generator processes (each on one of the URLs, round robin), 2,000 events as
# fast as one publisher sending one event per request gets them accepted.
fanout() {
    local name=$1 urls=$2 pub=$3 pid=$4
    "$BENCH" --transport ws --subscribers 1000 --procs 2 --events 2000 --batch 1 \
        --url "$urls" --publish-url "$pub" --server-pid "$pid" --timeout 300 \
        --json "$OUT/fanout.$name.json" >"$OUT/fanout.$name.log" 2>&1
    python3 - "$OUT/fanout.$name.json" "$name" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
l, f = r["latency"], r["server_figures"]
print(f"fanout {sys.argv[2]}: delivered {r['delivered_unique']}/{r['expected']}"
      f"{'' if r['complete'] else ' INCOMPLETE'}, {r['deliveries_per_s']:.0f} deliveries/s,"
      f" p50 {l['p50_ms']:.1f} p99 {l['p99_ms']:.1f} ms, server cpu {f['cpu_delivery_s']:.2f} s,"
      f" publish {r['publish_rate']:.0f}/s")
EOF
}

[[ " $PARTS " == *" latency "* ]] && for rep in $(seq "$REPS"); do
    for rate in 20 1000; do
        events=$((rate == 20 ? 200 : 5000))
        start_node 4101
        run "memory.$rate.$rep" http://127.0.0.1:4101 http://127.0.0.1:4101 "$NODE_PID" $rate $events
        stop_all
        rm -rf "$OUT/data"
        start_node 4102 SWITCHYARD_DATA_DIR="$OUT/data"
        run "data_dir.$rate.$rep" http://127.0.0.1:4102 http://127.0.0.1:4102 "$NODE_PID" $rate $events
        stop_all
        start_redis 4190
        start_node 4103 SWITCHYARD_REDIS_URL=redis://127.0.0.1:4190/
        run "redis.$rate.$rep" http://127.0.0.1:4103 http://127.0.0.1:4103 "$NODE_PID" $rate $events
        # Two nodes: publish on one, subscribers on the other (the server figures are B's).
        start_node 4104 SWITCHYARD_REDIS_URL=redis://127.0.0.1:4190/
        run "redis-2nodes.$rate.$rep" http://127.0.0.1:4104 http://127.0.0.1:4103 "$NODE_PID" $rate $events
        stop_all
    done
done

[[ " $PARTS " == *" fanout "* ]] && for rep in $(seq "$REPS"); do
    start_node 4111
    fanout "memory-1node.$rep" http://127.0.0.1:4111 http://127.0.0.1:4111 "$NODE_PID"
    stop_all
    NODE_ENV=()
    start_nodes "$BIN" 4121 1 "$OUT/redis" "$OUT/nodes-4121.log" || exit 1
    PIDS+=("$SERVER_PID")
    fanout "redis-1node.$rep" "$NODE_URLS" http://127.0.0.1:4121 "$SERVER_PID"
    stop_all
    start_nodes "$BIN" 4131 2 "$OUT/redis" "$OUT/nodes-4131.log" || exit 1
    PIDS+=("$SERVER_PID")
    fanout "redis-2nodes.$rep" "$NODE_URLS" http://127.0.0.1:4131 "$SERVER_PID"
    stop_all
done

python3 - "$OUT" <<'EOF'
import glob, json, statistics, sys
out = sys.argv[1]
rows, fan = {}, {}
for f in glob.glob(f"{out}/fanout.*.json"):
    _, setup, _ = f.rsplit("/", 1)[1][:-5].split(".")
    fan.setdefault(setup, []).append(json.load(open(f)))
for f in glob.glob(f"{out}/*.json"):
    if f.rsplit("/", 1)[1].startswith("fanout."):
        continue
    name = f.rsplit("/", 1)[1][:-5]
    backend, rate, _ = name.split(".")
    r = json.load(open(f))
    rows.setdefault((backend, int(rate)), []).append(r)
print()
print("| log | events/s | p50 ms | p99 ms | max ms | complete | runs |")
print("|---|---:|---:|---:|---:|---|---:|")
for (backend, rate), rs in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    med = lambda k: statistics.median(r["latency"][k] for r in rs)
    ok = all(r["complete"] for r in rs)
    print(f"| {backend} | {rate} | {med('p50_ms'):.2f} | {med('p99_ms'):.2f} | {med('max_ms'):.2f} | {'yes' if ok else 'NO'} | {len(rs)} |")
if fan:
    print()
    print("| setup | deliveries/s | p50 ms | p99 ms | server CPU s | publishes/s | complete | runs |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for setup, rs in sorted(fan.items()):
        med = lambda fn: statistics.median(fn(r) for r in rs)
        ok = all(r["complete"] for r in rs)
        print(f"| {setup} | {med(lambda r: r['deliveries_per_s']):,.0f} | {med(lambda r: r['latency']['p50_ms']):.1f}"
              f" | {med(lambda r: r['latency']['p99_ms']):.1f} | {med(lambda r: r['server_figures']['cpu_delivery_s']):.2f}"
              f" | {med(lambda r: r['publish_rate']):,.0f} | {'yes' if ok else 'NO'} | {len(rs)} |")
EOF
