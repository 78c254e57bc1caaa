#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what is missing, then tests.
#
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh --test log # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests need. None yet beyond the Rust toolchain; the browser
# (chromium, chromium-driver) and nginx join this list with the browser-client tests.
need_apt=()
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "==> installing ${need_apt[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  else
    echo "missing packages: ${need_apt[*]} (run as root or install them)" >&2
    exit 1
  fi
fi

command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup)" >&2; exit 1; }

echo "==> cargo test"
cargo test --all-targets "$@"
