#!/usr/bin/env bash
# HTTP load benchmark: the release server on a fresh SQLite file, one agent
# adding messages to many tickets from 64 connections for ~10 s with wrk.
# Prints requests/s and p99 latency. Not part of `make test`.
#
#   scripts/bench-http.sh            (TICKETS=2000 CONNECTIONS=64 DURATION=10s THREADS=2)
set -euo pipefail
cd "$(dirname "$0")/.."

TICKETS=${TICKETS:-2000}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CARGO=${CARGO:-cargo}

if ! command -v wrk >/dev/null; then
  echo "wrk is missing: installing it from Debian" >&2
  apt-get install -y wrk >/dev/null
fi

if [[ -n "${LEDGERDESK_BIN:-}" ]]; then
  bin=$LEDGERDESK_BIN   # a binary built elsewhere, e.g. to compare two builds
else
  $CARGO build --release -q -p ledgerdesk
  target_dir=$($CARGO metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  bin="$target_dir/release/ledgerdesk"
fi

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
password="bench-admin-$RANDOM$RANDOM"
cleanup() {
  [[ -n "${server:-}" ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

LEDGERDESK__DATABASE__URL="sqlite://$work/bench.db" \
LEDGERDESK__HTTP__BIND="127.0.0.1:$port" \
LEDGERDESK__BOOTSTRAP__ADMIN_EMAIL="admin@bench.example" \
LEDGERDESK__BOOTSTRAP__ADMIN_PASSWORD="$password" \
LEDGERDESK__FILES__DIR="$work/files" \
LEDGERDESK__LOG__LEVEL="${LOG_LEVEL:-warn}" \
  "$bin" serve >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  curl -fs "$base/readyz" >/dev/null && break
  sleep 0.1
done

# An agent, logged in, and the tickets (4 clients in parallel).
python3 scripts/bench/setup.py "$base" "$password" "$TICKETS" "$work"

echo "server: $bin (release, SQLite), $(nproc) cores; $TICKETS tickets; wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
total_ticks() { awk '/^cpu / {s = 0; for (i = 2; i <= NF; i++) s += $i; print s, $5}' /proc/stat; }
curl -fs "$base/metrics" >"$work/metrics.before" || true
server_before=$(cpu_ticks); read -r total_before idle_before < <(total_ticks)
BENCH_IDS="$work/ids" BENCH_TOKEN="$(cat "$work/token")" \
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s scripts/bench/post_message.lua "$base" | tee "$work/wrk.txt"

server_after=$(cpu_ticks); read -r total_after idle_after < <(total_ticks)
# The projections catch up (at most 30 s) so that every event of the run
# counts in their lag.
for _ in $(seq 300); do
  curl -fs "$base/metrics" >"$work/metrics.after" || true
  awk '/^ledgerdesk_projection_lag_events/ && $2 > 0 {behind = 1} END {exit behind}' "$work/metrics.after" && break
  sleep 0.1
done
requests=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
hz=$(getconf CLK_TCK)
server_us=$(( (server_after - server_before) * 1000000 / hz / (requests > 0 ? requests : 1) ))
busy=$(( 100 - 100 * (idle_after - idle_before) / (total_after - total_before) ))
rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
errors=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt")
echo
echo "add a message: ${rps} requests/s, p99 ${p99}, non-2xx ${errors:-0}"
echo "machine CPU busy ${busy}% during the run; server CPU ${server_us} µs per request"
python3 scripts/bench/metrics_diff.py "$work/metrics.before" "$work/metrics.after"
