# shellcheck shell=bash
# Sourced by bench/compare.sh and bench/logs.sh: several switchyard nodes on one Redis log.
#
# start_nodes <binary> <first port> <n> <dir> <log file>
#   Starts redis-server on port+n (no persistence, files in <dir>) and n switchyard nodes
#   on ports port … port+n-1 sharing it (SWITCHYARD_REDIS_URL), all children of one
#   wrapper shell, and waits until every node answers /readyz. Sets SERVER_PID to the
#   wrapper (so a --server-pid of it sums the memory and CPU of every node and of Redis;
#   TERM to it stops them all), NODE_URLS (comma-separated base URLs) and NODES_CMD (what
#   was run, for the record). Returns 1 (and leaves the log) when a node is not ready.
#   Extra environment for the nodes: NODE_ENV (an array of VAR=value).
start_nodes() {
    local bin=$1 port=$2 n=$3 dir=$4 log=$5 i j
    local rport=$((port + n))
    command -v redis-server >/dev/null || {
        echo "redis-server not found (apt-get install redis-server)" >&2
        return 1
    }
    mkdir -p "$dir"
    NODE_URLS=""
    for ((i = 0; i < n; i++)); do
        NODE_URLS="$NODE_URLS${NODE_URLS:+,}http://127.0.0.1:$((port + i))"
    done
    local env=(SWITCHYARD_REDIS_URL=redis://127.0.0.1:$rport/ "${NODE_ENV[@]}" RUST_LOG=warn)
    NODES_CMD="redis-server --port $rport --bind 127.0.0.1 --save '' --appendonly no; then $n nodes, SWITCHYARD_ADDR=127.0.0.1:<$port … $((port + n - 1))> ${env[*]} $bin"
    (
        pids=()
        trap 'kill "${pids[@]}" 2>/dev/null; wait' TERM
        redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" &
        pids+=($!)
        for ((i = 0; i < 50; i++)); do
            [[ $(redis-cli -p "$rport" ping 2>/dev/null) == PONG ]] && break
            sleep 0.1
        done
        for ((i = 0; i < n; i++)); do
            env "${env[@]}" SWITCHYARD_ADDR=127.0.0.1:$((port + i)) "$bin" &
            pids+=($!)
        done
        wait
    ) >"$log" 2>&1 &
    SERVER_PID=$!
    for ((i = 0; i < n; i++)); do
        for ((j = 0; j < 100; j++)); do
            curl -fs "http://127.0.0.1:$((port + i))/readyz" >/dev/null 2>&1 && break
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if ! curl -fs "http://127.0.0.1:$((port + i))/readyz" >/dev/null 2>&1; then
            echo "switchyard node $i is not ready on port $((port + i)):" >&2
            tail -5 "$log" >&2
            return 1
        fi
    done
}
