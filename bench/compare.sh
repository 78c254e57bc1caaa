#!/usr/bin/env bash
# Side-by-side benchmark: switchyard against nginx + Nchan and Socket.IO 4.8 on Node
# (issues 4 and 18).
#
# Like for like: every scenario publishes one event per request on both servers (what a
# CMS save or a webhook does, and all Nchan can take), unless its name ends in -batch:
# those use switchyard's batch publishing (100 events per request), a feature Nchan does
# not have, run on switchyard only and reported in a table of their own.
#
# Builds both release binaries, then for every scenario runs REPS repetitions against
# each server, rotating the order per repetition (switchyard, Nchan; Nchan, switchyard;
# …), so that neither server always runs on a machine warmed by the other. Every
# run gets a freshly started server (bytes per connection are read as the growth of a
# fresh process), the generator reads the server's RSS/Pss/CPU through --server-pid
# (nginx: the master, whose workers are summed as descendants), and the server is
# stopped by its pid afterwards. Each run's JSON report, the generator's output and the
# exact commands are stored under $OUT; bench/report.py turns them into BENCHMARKS.md.
#
#   bench/compare.sh                          # every scenario, REPS=3
#   REPS=1 SCENARIOS="fanout-sse lowrate" bench/compare.sh
#   OUT=bench/results/2026-11-25 SCENARIOS=scale bench/compare.sh   # redo one scenario
#
# Environment:
#   REPS         repetitions per scenario and server (default 3)
#   SCALE_REPS   repetitions of the two scale scenarios (default: REPS)
#   SCENARIOS    which scenarios, in order (default: all, see below)
#   OUT          results directory (default bench/results/<UTC date>)
#   PORT_BASE    first TCP port; each run takes the next one (default 18100)
#   NO_BUILD=1   skip cargo build
#   NO_REPORT=1  do not run bench/report.py at the end
#   SERVERS      which servers (default "switchyard nchan socketio"; Socket.IO, which has
#                no SSE, runs the WebSocket and long-poll scenarios; the two scale scenarios also
#                run the bare fan-out server, switchyard-bare, unless BARE=0)
#   BIN_SERVER   the switchyard binary (default target/release/switchyard), e.g. to
#                compare two builds: SERVERS=switchyard BARE=0 BIN_SERVER=/tmp/old …
#   BIN_BENCH    the generator (default target/release/switchyard-bench)
#   GEN_ARGS     more generator flags for every run, e.g. "--procs 2" (subscribers read
#                by two processes); they are in each run's .cmd file
#   BIN_BARE     the bare fan-out server (default target/release/switchyard-bare)
#   BARE=0       do not run the bare fan-out server in the scale scenarios
#   NCHAN_CEILING  events/s the fixed loads are percentages of (default: the median
#                "publishes accepted/s" of this directory's fanout-sse / fanout-ws Nchan
#                runs, so run those first; else 110, this machine's figure of 2026-12-04)
#
# Scenarios:
#   idle-sse     10,000 idle SSE subscribers: bytes per connection
#   idle-ws      10,000 idle WebSocket subscribers: bytes per connection
#   fanout-sse   1,000 SSE subscribers x 2,000 events, one publisher, as fast as possible
#   fanout-ws    1,000 WebSocket subscribers x 2,000 events, one publisher, as fast as possible
#   fanout-sse-16pub, fanout-ws-16pub
#                as above with 16 concurrent publishers (their own connections, one event
#                per request each)
#   load25-sse, load50-sse, load90-sse, load25-ws, load50-ws, load90-ws
#                1,000 subscribers, a fixed offered load of 25 / 50 / 90 % of Nchan's
#                single-publisher ceiling (NCHAN_CEILING) for 15 s: latency, CPU per delivery
#   longpoll     1,000 long-pollers x 1,000 events, one publisher, as fast as possible
#   fanout-sse-batch, fanout-ws-batch, longpoll-batch
#                fanout-sse, fanout-ws and longpoll with switchyard's batch publishing
#                (100 events per request); switchyard only: not like for like
#   fanout-sse-nagle, fanout-ws-nagle, load25-sse-nagle, …, load90-ws-nagle, lowrate-nagle
#                the scenario without -nagle, switchyard started with
#                SWITCHYARD_TCP_NODELAY=off (Nagle's algorithm, which Nchan's subscriber
#                connections run with: nginx sets TCP_NODELAY only on kept-alive ones)
#   lowrate      100 SSE subscribers, 20 events/s for 10 s: latency
#   scale        19,000 idle SSE subscribers (two generator processes), then one event
#                to all of them: time until the last has it, RSS. Also run against
#                switchyard-bare, a fan-out with nothing but one write per subscriber:
#                the floor of this broadcast on this machine
#   scale-mixed  9,500 idle WebSocket subscribers (a background generator) plus 9,500
#                SSE subscribers that time one event; the WebSocket side records when
#                its slowest subscriber got it. Also run against switchyard-bare
#   scale-100k   100,000 idle SSE subscribers from this one machine (six generator
#                processes over six source addresses), then one event to all. switchyard
#                runs as 6 nodes on one Redis log (SWITCHYARD_REDIS_URL, a redis-server
#                of the run's own), each generator process on its own node, the event
#                published on the first; Nchan runs with 6 workers. One process holds at
#                most ~19,000 connections under the 20,000-file limit
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

REPS=${REPS:-3}
SCALE_REPS=${SCALE_REPS:-$REPS}
ALL_SCENARIOS="idle-sse idle-ws fanout-sse fanout-ws fanout-sse-16pub fanout-ws-16pub
load25-sse load50-sse load90-sse load25-ws load50-ws load90-ws longpoll lowrate
fanout-sse-batch fanout-ws-batch longpoll-batch fanout-sse-nagle fanout-ws-nagle
load25-sse-nagle load50-sse-nagle load90-sse-nagle load25-ws-nagle load50-ws-nagle
load90-ws-nagle lowrate-nagle scale scale-mixed scale-100k"
ALL_SCENARIOS=$(echo $ALL_SCENARIOS)
SCENARIOS=${SCENARIOS:-$ALL_SCENARIOS}
OUT=${OUT:-bench/results/$(date -u +%Y-%m-%d)}
PORT=${PORT_BASE:-18100}
SERVERS=${SERVERS:-switchyard nchan socketio}
SOCKETIO_DIR=$ROOT/bench/socketio

BIN_SERVER=${BIN_SERVER:-$ROOT/target/release/switchyard}
BIN_BENCH=${BIN_BENCH:-$ROOT/target/release/switchyard-bench}
BIN_BARE=${BIN_BARE:-$ROOT/target/release/switchyard-bare}
BARE=${BARE:-1}
NGINX=${NGINX:-/usr/sbin/nginx}
NCHAN_CONF=$ROOT/bench/nchan.conf

# shellcheck source=bench/lib/nodes.sh
source "$ROOT/bench/lib/nodes.sh"

SERVER_PID=""
BG_PID=""
T0=$(date +%s)

log() { printf '[%s +%4ds] %s\n' "$(date +%H:%M:%S)" $(($(date +%s) - T0)) "$*"; }
die() { log "ERROR: $*"; exit 1; }

for s in $SCENARIOS; do
    case " $ALL_SCENARIOS " in *" $s "*) ;; *) die "unknown scenario $s (known: $ALL_SCENARIOS)" ;; esac
done
[[ -x $NGINX ]] || die "$NGINX not found (apt-get install nginx libnginx-mod-nchan)"
[[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ]] || die "the Nchan module is not installed"
if [[ " $SERVERS " == *" socketio "* ]]; then
    command -v node >/dev/null || die "node not found (the Socket.IO peer runs on Node.js; or SERVERS=\"switchyard nchan\")"
    if [[ ! -d $SOCKETIO_DIR/node_modules/socket.io ]]; then
        npm ci --prefix "$SOCKETIO_DIR" --no-audit --no-fund --silent || die "npm ci in bench/socketio failed"
    fi
fi

# Stops a process we started: TERM, wait up to 15 s, then KILL.
stop_pid() {
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid still running after 15 s: KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    stop_pid "$BG_PID"
    BG_PID=""
    stop_pid "$SERVER_PID"
    SERVER_PID=""
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# Waits until something accepts connections on 127.0.0.1:$1 (and $2 is still alive).
wait_port() {
    local port=$1 pid=$2 i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# How many switchyard nodes a run starts (on one Redis log when more than one).
switchyard_nodes() {
    case $1 in
    scale-100k.*) echo 6 ;;
    *) echo 1 ;;
    esac
}

# start_server <server> <port> <run name>: sets SERVER_PID, SERVER_CMD and NODE_URLS.
start_server() {
    local server=$1 port=$2 name=$3
    NODE_URLS=http://127.0.0.1:$port
    case $server in
    switchyard)
        if [[ $(switchyard_nodes "$name") -gt 1 ]]; then
            NODE_ENV=(SWITCHYARD_MAX_CONNECTIONS=20000 SWITCHYARD_RETAIN=100000)
            start_nodes "$BIN_SERVER" "$port" "$(switchyard_nodes "$name")" "$WORK/nodes-$name" \
                "$OUT/$name.server.log" || die "$name: the switchyard nodes did not start"
            SERVER_CMD=$NODES_CMD
            return
        fi
        # The -nagle scenarios: Nagle's algorithm on the server's sockets.
        local nodelay=on
        [[ $name == *-nagle.* ]] && nodelay=off
        SERVER_CMD="SWITCHYARD_ADDR=127.0.0.1:$port SWITCHYARD_MAX_CONNECTIONS=20000 SWITCHYARD_RETAIN=100000 SWITCHYARD_TCP_NODELAY=$nodelay RUST_LOG=warn $BIN_SERVER"
        SWITCHYARD_ADDR=127.0.0.1:$port SWITCHYARD_MAX_CONNECTIONS=20000 \
            SWITCHYARD_RETAIN=100000 SWITCHYARD_TCP_NODELAY=$nodelay RUST_LOG=warn \
            "$BIN_SERVER" >"$OUT/$name.server.log" 2>&1 &
        SERVER_PID=$!
        ;;
    socketio)
        SERVER_CMD="node bench/socketio/server.js 127.0.0.1:$port"
        node "$SOCKETIO_DIR/server.js" "127.0.0.1:$port" >"$OUT/$name.server.log" 2>&1 &
        SERVER_PID=$!
        ;;
    bare)
        SERVER_CMD="$BIN_BARE --addr 127.0.0.1:$port"
        "$BIN_BARE" --addr "127.0.0.1:$port" >"$OUT/$name.server.log" 2>&1 &
        SERVER_PID=$!
        ;;
    nchan)
        local dir=$WORK/nginx-$name
        rm -rf "$dir"
        mkdir -p "$dir"
        sed -e "s#{{DIR}}#$dir#g" -e "s#{{PORT}}#$port#g" -e "s#{{WORKERS}}#$(nchan_workers "$name")#g" \
            "$NCHAN_CONF" >"$dir/nginx.conf"
        SERVER_CMD="$NGINX -p DIR -c DIR/nginx.conf -e DIR/error.log  (DIR/nginx.conf = bench/nchan.conf with {{DIR}}, {{PORT}}=$port, {{WORKERS}}=$(nchan_workers "$name"))"
        # daemon off (in the config): $! is the master; the generator sums its workers.
        "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$OUT/$name.server.log" 2>&1 &
        SERVER_PID=$!
        ;;
    esac
    if ! wait_port "$port" "$SERVER_PID"; then
        cat "$OUT/$name.server.log" >&2 || true
        [[ $server == nchan ]] && cat "$WORK/nginx-$name/error.log" >&2 || true
        die "$server did not start on port $port"
    fi
}

stop_server() {
    local server=$1 name=$2
    stop_pid "$SERVER_PID"
    SERVER_PID=""
    if [[ $server == nchan ]]; then
        # Keep nginx's error log with the run (warnings only), drop the prefix dir.
        cp "$WORK/nginx-$name/error.log" "$OUT/$name.nginx-error.log" 2>/dev/null || true
        rm -rf "$WORK/nginx-$name"
    fi
}

# nginx workers for a run: 2 (like switchyard's two runtime threads), but 6 to hold
# 100,000 connections under the 20,000-file limit per process (like switchyard's 6 nodes).
nchan_workers() {
    case $1 in
    scale-100k.*) echo 6 ;;
    *) echo 2 ;;
    esac
}

# Which servers run a scenario.
servers_for() {
    case $1 in
    # The floor: one blocking write per subscriber and nothing else (bench/src/bare.rs).
    scale | scale-mixed)
        echo "$SERVERS" | tr ' ' '\n' | grep -vx socketio || true
        if [[ $BARE == 1 ]]; then echo bare; fi
        ;;
    # Batch publishing is switchyard's alone.
    *-batch) echo "$SERVERS" | tr ' ' '\n' | grep -x switchyard || true ;;
    # Socket.IO has no SSE; the -nagle variants compare switchyard's setting with Nchan's.
    *sse* | lowrate* | scale* | *-nagle) echo "$SERVERS" | tr ' ' '\n' | grep -vx socketio || true ;;
    *) echo "$SERVERS" ;;
    esac
}

# servers_for, rotated by the repetition: rep 1 in order, rep 2 starting at the second, …
rotated() {
    local scenario=$1 rep=$2
    local -a list
    read -r -a list <<<"$(servers_for "$scenario" | tr '\n' ' ')"
    local n=${#list[@]} i
    ((n > 0)) || return 0
    for ((i = 0; i < n; i++)); do
        echo "${list[$(((i + rep - 1) % n))]}"
    done
}

# Nchan's single-publisher ceiling, events/s (see NCHAN_CEILING above).
nchan_ceiling() {
    if [[ -n ${NCHAN_CEILING:-} ]]; then
        echo "$NCHAN_CEILING"
        return
    fi
    python3 - "$OUT" <<'EOF'
import glob, json, statistics, sys
rates = []
for t in ("sse", "ws"):
    for f in glob.glob(f"{sys.argv[1]}/fanout-{t}.nchan.*.json"):
        rates.append(json.load(open(f))["publish_rate"])
print(round(statistics.median(rates)) if rates else 110)
EOF
}

# The generator's flags for a fixed load of $1 % of the ceiling, for 15 s.
fixed_load() {
    local pct=$1 transport=$2 rate
    rate=$(($(nchan_ceiling) * pct / 100))
    ((rate > 0)) || rate=1
    echo "--transport $transport --subscribers 1000 --events $((rate * 15)) --rate $rate"
}

# The generator's flags for a scenario (the server, URL, pid and JSON are added later).
scenario_args() {
    case $1 in
    *-nagle) scenario_args "${1%-nagle}" ;;
    idle-sse) echo "--transport sse --subscribers 10000 --events 0 --hold 2" ;;
    idle-ws) echo "--transport ws --subscribers 10000 --events 0 --hold 2" ;;
    fanout-sse) echo "--transport sse --subscribers 1000 --events 2000" ;;
    fanout-ws) echo "--transport ws --subscribers 1000 --events 2000" ;;
    fanout-sse-16pub) echo "--transport sse --subscribers 1000 --events 2000 --publishers 16" ;;
    fanout-ws-16pub) echo "--transport ws --subscribers 1000 --events 2000 --publishers 16" ;;
    load25-sse) fixed_load 25 sse ;;
    load50-sse) fixed_load 50 sse ;;
    load90-sse) fixed_load 90 sse ;;
    load25-ws) fixed_load 25 ws ;;
    load50-ws) fixed_load 50 ws ;;
    load90-ws) fixed_load 90 ws ;;
    longpoll) echo "--transport longpoll --subscribers 1000 --events 1000" ;;
    fanout-sse-batch) echo "--transport sse --subscribers 1000 --events 2000 --batch 100" ;;
    fanout-ws-batch) echo "--transport ws --subscribers 1000 --events 2000 --batch 100" ;;
    longpoll-batch) echo "--transport longpoll --subscribers 1000 --events 1000 --batch 100" ;;
    lowrate) echo "--transport sse --subscribers 100 --events 200 --rate 20" ;;
    scale) echo "--transport sse --subscribers 19000 --events 1 --hold 2" ;;
    scale-mixed) echo "--transport sse --subscribers 9500 --events 1 --hold 2 --source-ip 127.0.0.21" ;;
    scale-100k) echo "--transport sse --subscribers 100000 --events 1 --hold 2 --procs 6" ;;
    esac
}
# The background generator of scale-mixed: idle WebSocket subscribers that stay
# connected through the timed run (it counts the event as "unexpected").
MIXED_BG_ARGS="--transport ws --subscribers 9500 --events 0 --hold 25 --source-ip 127.0.0.20"

# One line per run, read from its JSON.
brief() {
    python3 - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
f = r.get("server_figures") or {}
parts = [f"connected {r['connected']}/{r['subscribers']} (failed {r['connect_failures']})"]
if r["events"] > 0:
    parts.append(f"delivered {r['delivered_unique']}/{r['expected']}"
                 + (" complete" if r["complete"] else " INCOMPLETE"))
    parts.append(f"{r['deliveries_per_s']:.0f} deliveries/s")
    parts.append(f"p50/p99 {r['latency']['p50_ms']:.1f}/{r['latency']['p99_ms']:.1f} ms")
    parts.append(f"publish {r['publish_rate']:.0f}/s")
elif r["unexpected"]:
    parts.append(f"received {r['unexpected']} events of another run")
if f.get("rss_bytes_per_connection") is not None:
    parts.append(f"{f['rss_bytes_per_connection']:.0f} B/conn RSS")
parts.append(f"server cpu {f.get('cpu_s', 0):.2f} s, generator {r['generator_cpu_s']:.2f} s")
if r["timed_out"]:
    parts.append("TIMED OUT")
print(", ".join(parts))
EOF
}

# run_one <scenario> <server> <rep>
run_one() {
    local scenario=$1 server=$2 rep=$3
    local name=$scenario.$server.$rep
    local port=$PORT
    # Room for several nodes and their Redis.
    PORT=$((PORT + 8))
    start_server "$server" "$port" "$name"
    local url=$NODE_URLS
    local args
    # The bare server speaks the part of Nchan's protocol the generator uses.
    local flavor=$server
    [[ $server == bare ]] && flavor=nchan
    args="$(scenario_args "$scenario") ${GEN_ARGS:-} --server $flavor --url $url --server-pid $SERVER_PID --timeout 300"
    local bg_cmd=""
    if [[ $scenario == scale-mixed ]]; then
        # Both generators on one topic; the background one also reads the server's
        # memory, from the fresh process (idle) to its 9,500 WebSocket connections.
        args="$args --topic $name"
        local bg_args="$MIXED_BG_ARGS --topic $name --server $flavor --url $url --server-pid $SERVER_PID --timeout 300"
        bg_cmd="$BIN_BENCH $bg_args --json $OUT/$name.bg.json"
        # shellcheck disable=SC2086
        "$BIN_BENCH" $bg_args --json "$OUT/$name.bg.json" >"$OUT/$name.bg.log" 2>&1 &
        BG_PID=$!
        # Until the background subscribers are all connected and it has read the
        # server's memory (it prints "holding" right after that reading).
        local i
        for ((i = 0; i < 300; i++)); do
            grep -q '^holding ' "$OUT/$name.bg.log" 2>/dev/null && break
            kill -0 "$BG_PID" 2>/dev/null || break
            sleep 0.1
        done
        grep -q '^holding ' "$OUT/$name.bg.log" || die "$name: background generator did not connect: $(tail -3 "$OUT/$name.bg.log")"
    fi
    {
        echo "server: $SERVER_CMD"
        [[ -n $bg_cmd ]] && echo "background: $bg_cmd"
        echo "generator: $BIN_BENCH $args --json $OUT/$name.json"
    } | sed "s#$ROOT/##g" >"$OUT/$name.cmd"
    local rc=0
    # shellcheck disable=SC2086
    "$BIN_BENCH" $args --json "$OUT/$name.json" >"$OUT/$name.log" 2>&1 || rc=$?
    if [[ -n $BG_PID ]]; then
        # The background generator ends after its hold; wait for its report.
        wait "$BG_PID" || log "$name: background generator exited with $?"
        BG_PID=""
    fi
    stop_server "$server" "$name"
    if [[ $rc -ne 0 || ! -s $OUT/$name.json ]]; then
        tail -5 "$OUT/$name.log" >&2 || true
        die "$name: the generator failed (exit $rc)"
    fi
    log "  $server rep $rep: $(brief "$OUT/$name.json")"
    if [[ -f $OUT/$name.bg.json ]]; then
        log "  $server rep $rep background: $(brief "$OUT/$name.bg.json")"
    fi
}

# Build.
if [[ ${NO_BUILD:-} != 1 ]]; then
    log "building release binaries"
    cargo build --release --quiet
    cargo build --release --quiet -p switchyard-bench
fi
[[ -x $BIN_SERVER && -x $BIN_BENCH ]] || die "release binaries missing"
[[ $BARE != 1 || -x $BIN_BARE ]] || die "$BIN_BARE missing (or BARE=0)"

# The source the binaries were built from, taken now: an edit made while the runs go on
# does not change what they measure.
GIT_DESC="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock bench/src || echo ' (modified)')"

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/switchyard-compare.XXXXXX)
trap 'cleanup; rm -rf "$WORK"' EXIT

# The machine and versions, for the report (kept from the first invocation on this
# directory, so that re-running one scenario does not change them).
[[ -f $OUT/machine.txt ]] || {
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc=$(nproc)"
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "mem_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
    echo "kernel=$(uname -sr)"
    echo "nginx=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
    echo "nchan=$(dpkg -s libnginx-mod-nchan 2>/dev/null | awk -F': ' '/^Version/ {print $2}')"
    echo "rustc=$(rustc --version)"
    echo "git=$GIT_DESC"
    echo "nofile=$(ulimit -Hn)"
} >"$OUT/machine.txt"
# The Socket.IO peer's versions, added once to a directory made before it existed.
if [[ " $SERVERS " == *" socketio "* ]] && ! grep -q '^socketio=' "$OUT/machine.txt"; then
    echo "node=$(node --version)" >>"$OUT/machine.txt"
    echo "socketio=$(node -p 'require(process.argv[1] + "/node_modules/socket.io/package.json").version' "$SOCKETIO_DIR")" >>"$OUT/machine.txt"
fi
[[ -f $OUT/nginx-V.txt ]] || "$NGINX" -V >"$OUT/nginx-V.txt" 2>&1 || true
log "results in $OUT (REPS=$REPS, SCALE_REPS=$SCALE_REPS)"

for scenario in $SCENARIOS; do
    reps=$REPS
    [[ $scenario == scale* ]] && reps=$SCALE_REPS
    # A re-run replaces the scenario's earlier files.
    rm -f "$OUT/$scenario".*
    log "scenario $scenario: $(scenario_args "$scenario") ($reps reps per server)"
    t_scenario=$(date +%s)
    for ((rep = 1; rep <= reps; rep++)); do
        for server in $(rotated "$scenario" "$rep"); do
            run_one "$scenario" "$server" "$rep"
        done
    done
    printf 'started=%s\nelapsed_s=%s\nreps=%s\ngit=%s\n' "$(date -u -d "@$t_scenario" +%Y-%m-%dT%H:%M:%SZ)" \
        $(($(date +%s) - t_scenario)) "$reps" \
        "$GIT_DESC" >"$OUT/$scenario.meta"
    log "scenario $scenario done in $(($(date +%s) - t_scenario)) s"
done

log "all runs done in $(($(date +%s) - T0)) s"
if [[ ${NO_REPORT:-} != 1 ]]; then
    python3 bench/report.py "$OUT"
    log "wrote BENCHMARKS.md and $OUT/summary.tsv"
fi
