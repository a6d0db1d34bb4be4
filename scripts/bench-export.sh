#!/usr/bin/env bash
# Audit export memory: seed a log of N events (default 1,000,000) on SQLite,
# let the server project it, then download the whole audit log as CSV and as
# NDJSON while sampling the server's resident memory every 100 ms. Prints
# rows, bytes, seconds and the server's RSS before and at its peak.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${BENCH_EVENTS:-1000000}"
${CARGO:-cargo} build --release -q -p ledgerdesk
BIN="${CARGO_TARGET_DIR:-target}/release/ledgerdesk"
WORK="$(mktemp -d)"
export LEDGERDESK__LOG__LEVEL=warn
export LEDGERDESK__DATABASE__URL="sqlite://$WORK/bench.db"
export LEDGERDESK__AUDIT__SIGNING_KEY_FILE="$WORK/checkpoint.key"
export LEDGERDESK__FILES__DIR="$WORK/files"
export LEDGERDESK__BOOTSTRAP__ADMIN_EMAIL="admin@bench.example"
export LEDGERDESK__BOOTSTRAP__ADMIN_PASSWORD="bench-password-1"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export LEDGERDESK__HTTP__BIND="127.0.0.1:$port"
base="http://127.0.0.1:$port/api/v1"
cleanup() { [[ -n "${server:-}" ]] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

echo "seeding $EVENTS events"
"$BIN" seed --events "$EVENTS" 2>/dev/null | tail -n 1
"$BIN" serve >"$WORK/server.log" 2>&1 &
server=$!
for _ in $(seq 300); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
token=$(curl -fs "$base/auth/login" -H 'Content-Type: application/json' \
  -d '{"email":"admin@bench.example","password":"bench-password-1"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
head=$(curl -fs "$base/admin/projections" -H "Authorization: Bearer $token" \
  | python3 -c 'import json,sys; print(max(p["head"] for p in json.load(sys.stdin)["items"]))')
echo "waiting for the audit view to reach position $head"
curl -fs -o /dev/null "$base/audit?limit=1&min_position=$head" -H "Authorization: Bearer $token"
until curl -fs "$base/admin/projections" -H "Authorization: Bearer $token" \
  | python3 -c "import json,sys; a=[p for p in json.load(sys.stdin)['items'] if p['name']=='audit'][0]; sys.exit(0 if a['position']>=$head else 1)"; do
  sleep 1
done

rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
for format in csv ndjson; do
  before=$(rss)
  peak=$before
  start=$(date +%s.%N)
  curl -fs "$base/audit?format=$format" -H "Authorization: Bearer $token" -o "$WORK/export.$format" &
  dl=$!
  while kill -0 "$dl" 2>/dev/null; do
    now=$(rss); (( now > peak )) && peak=$now
    sleep 0.1
  done
  wait "$dl"
  end=$(date +%s.%N)
  lines=$(wc -l <"$WORK/export.$format")
  bytes=$(stat -c %s "$WORK/export.$format")
  [[ $format == csv ]] && lines=$((lines - 1))
  printf '%s: %d rows, %d MB in %.1f s; server RSS %d MB before, %d MB peak\n' \
    "$format" "$lines" $((bytes / 1048576)) "$(python3 -c "print($end - $start)")" $((before / 1024)) $((peak / 1024))
done
