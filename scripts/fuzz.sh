#!/usr/bin/env bash
# Fuzzes every parser a client reaches, each for a fixed budget (not part of the test
# command): the first request head, a stream query and Last-Event-ID, a publish body,
# and what a WebSocket client sends after the handshake. Needs a nightly toolchain and
# cargo-fuzz (cargo install cargo-fuzz). Crashing inputs land in fuzz/artifacts/<target>/;
# keep each as a regression test before fixing it.
#
#   scripts/fuzz.sh              # 60 s per target
#   SECS=600 scripts/fuzz.sh request_head
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${SECS:-60}
TARGETS=${*:-request_head query publish_body websocket_client}
rustup run nightly true 2>/dev/null || { echo "a nightly toolchain is needed (rustup toolchain install nightly)" >&2; exit 1; }
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is needed (cargo install cargo-fuzz)" >&2; exit 1; }
cargo +nightly fuzz build -O
for t in $TARGETS; do
    mkdir -p "corpus/$t"
    echo "==> $t for $SECS s"
    cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$SECS" -print_final_stats=1 2>&1 \
        | tee "/tmp/switchyard-fuzz-$t.log" | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|Done)" || true
    if ls "artifacts/$t"/crash-* >/dev/null 2>&1; then
        echo "!! $t found crashing inputs: $(ls "artifacts/$t")" >&2
        exit 1
    fi
done
