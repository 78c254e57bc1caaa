#!/usr/bin/env bash
# Checks every answer of a live server against its own API description
# (/v1/openapi.json) with schemathesis (PyPI, in a venv under target/): no 5xx, every
# status, content type, header and body as documented. Part of .ci/run, not of the
# README's quick test command (it takes about a minute).
#
#   scripts/schemathesis.sh                 # 100 examples per operation
#   EXAMPLES=500 scripts/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLES=${EXAMPLES:-100}
VENV=target/venv-schemathesis
if [ ! -x "$VENV/bin/schemathesis" ]; then
  echo "==> installing schemathesis into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==4.32.5"
fi
cargo build -q --bin switchyard
BIN=${CARGO_TARGET_DIR:-target}/debug/switchyard
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The demo's own API (/demo/api) is not part of the product API: off. A token key, so
# that tickets can be asked for, with every topic public, so that streams open; a short
# poll time-out, so that polls answer quickly.
env -i PATH="$PATH" RUST_LOG=warn SWITCHYARD_ADDR="127.0.0.1:$PORT" SWITCHYARD_DEMO=off \
  SWITCHYARD_TOKEN_SECRET=0123456789abcdef0123456789abcdef SWITCHYARD_PUBLIC_TOPICS='*' \
  SWITCHYARD_POLL_TIMEOUT=1s \
  "$BIN" > target/schemathesis-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
# A subscriber token for every topic, so that tickets are issued too.
TOKEN=$(python3 - <<'PY'
import base64, hashlib, hmac, json, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
unsigned = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(
    json.dumps({"topics": ["*"], "exp": int(time.time()) + 3600}).encode())
sig = hmac.new(b"0123456789abcdef0123456789abcdef", unsigned.encode(), hashlib.sha256).digest()
print(unsigned + "." + b64(sig))
PY
)
echo "==> schemathesis against http://127.0.0.1:$PORT ($EXAMPLES examples per operation)"
# Event streams never end, so /v1/sse is left out of the live run (it is described in
# the document all the same; its refusals are the other streams' and are tested there).
# /v1/ws answers a plain GET with its refusal (no upgrade): schemathesis says so as a
# warning, not a failure.
"$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/v1/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --exclude-path /v1/sse -H "Authorization: Bearer $TOKEN" \
  --max-examples "$EXAMPLES" --request-timeout 10 --seed 1
