#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what is missing, then tests.
#
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh --test log # one area: the arguments go to `cargo test` instead
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests need: headless Chromium and its driver for the browser
# client tests, nginx for the proxy tests, redis-server for the Redis log. Installed
# only when missing.
need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v redis-server >/dev/null || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "==> installing ${need_apt[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  else
    echo "missing packages: ${need_apt[*]} (run as root, or: sudo apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi

command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup)" >&2; exit 1; }

if [ $# -eq 0 ]; then
  echo "==> cargo test --workspace --all-targets (switchyard and the switchyard-bench load generator)"
  cargo test --workspace --all-targets
else
  # One area, e.g. `--test browser` (cargo lets --all-targets win over --test).
  echo "==> cargo test $*"
  cargo test "$@"
fi
