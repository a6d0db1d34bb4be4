#!/usr/bin/env bash
# Contract test: the running server against its own /openapi.json, with
# schemathesis. Fails on any 5xx and on any response the document does not
# describe (status code, content type, body schema, headers), on any request
# outside the document that is accepted (negative data, unsupported methods,
# 405 without Allow) and on ignored authentication. Every check runs but
# positive_data_acceptance, which cannot know that an id in a path must exist.
# Bounded to a few minutes.
#
#   scripts/api-contract.sh        (MAX_EXAMPLES=10; SCHEMATHESIS_VENV to reuse a venv)
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
MAX_EXAMPLES=${MAX_EXAMPLES:-10}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/ledgerdesk
venv=${SCHEMATHESIS_VENV:-$cache/schemathesis-venv}

if [[ ! -x "$venv/bin/schemathesis" ]]; then
  echo "installing schemathesis into $venv" >&2
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet schemathesis
fi

$CARGO build -q -p ledgerdesk
target_dir=$($CARGO metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/debug/ledgerdesk"

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
password="contract-$RANDOM$RANDOM-pw"
cleanup() {
  [[ -n "${server:-}" ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

LEDGERDESK__DATABASE__URL="sqlite://$work/contract.db" \
LEDGERDESK__HTTP__BIND="127.0.0.1:$port" \
LEDGERDESK__AUDIT__SIGNING_KEY_FILE="$work/checkpoint.key" \
LEDGERDESK__BOOTSTRAP__ADMIN_EMAIL="admin@contract.example" \
LEDGERDESK__BOOTSTRAP__ADMIN_PASSWORD="$password" \
LEDGERDESK__FILES__DIR="$work/files" \
LEDGERDESK__AUTH__MAX_FAILED_LOGINS=1000000 \
LEDGERDESK__LOG__LEVEL="${LOG_LEVEL:-warn}" \
  "$bin" serve >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  curl -fs "$base/readyz" >/dev/null && break
  sleep 0.1
done

token=$(curl -fs -H 'Content-Type: application/json' \
  -d "{\"email\":\"admin@contract.example\",\"password\":\"$password\"}" \
  "$base/api/v1/auth/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

# Logging out would end the session the run goes on with; the live audit
# stream never ends, so a request to it can only time out.
status=0
"$venv/bin/schemathesis" run "$base/openapi.json" \
  --url "$base" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --exclude-checks positive_data_acceptance \
  --exclude-path /api/v1/auth/logout \
  --exclude-path /api/v1/audit/stream \
  --max-examples "$MAX_EXAMPLES" \
  --request-timeout 10 \
  --no-color || status=$?

if grep -q "panicked" "$work/server.log"; then
  echo "the server panicked:" >&2
  grep -A5 "panicked" "$work/server.log" >&2
  status=1
fi
exit $status
