#!/usr/bin/env bash
# Scale-out on PostgreSQL: for each count in SERVERS (default "1 3"), that
# many `ledgerdesk serve` processes on one fresh database, the projections in
# a separate `ledgerdesk project` process, and the `bench-http` load (one
# agent adding messages to random tickets) spread evenly over the servers.
# Prints, per count: requests/s, the worst p99, server CPU per request over
# all servers, whether positions are gap-free and the hash chain verifies,
# whether every acknowledged message is in the log, and the projection lag
# the worker process measured. Not part of `make test`.
#
#   scripts/bench-scale.sh   (SERVERS="1 3" TICKETS=2000 CONNECTIONS=63 DURATION=10s)
set -euo pipefail
cd "$(dirname "$0")/.."

SERVERS=${SERVERS:-1 3}
TICKETS=${TICKETS:-2000}
CONNECTIONS=${CONNECTIONS:-63}
DURATION=${DURATION:-10s}
CARGO=${CARGO:-cargo}
PG=${LEDGERDESK_BENCH_POSTGRES_URL:-${LEDGERDESK_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}

for tool in wrk psql; do
  if ! command -v "$tool" >/dev/null; then
    echo "$tool is missing: installing it from Debian" >&2
    apt-get install -y "$([[ $tool == psql ]] && echo postgresql-client || echo wrk)" >/dev/null
  fi
done
if [[ -n "${LEDGERDESK_BIN:-}" ]]; then
  bin=$LEDGERDESK_BIN
else
  $CARGO build --release -q -p ledgerdesk
  target_dir=$($CARGO metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  bin="$target_dir/release/ledgerdesk"
fi

work=$(mktemp -d)
pids=()
databases=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_all
  for db in "${databases[@]}"; do psql -q "$PG" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); PostgreSQL $(psql -tAq "$PG" -c 'SHOW server_version')"
for n in $SERVERS; do
  db="ldbench_scale_$$_$n"
  databases+=("$db")
  psql -q "$PG" -c "CREATE DATABASE $db"
  url="${PG%/*}/$db"
  password="bench-admin-$RANDOM$RANDOM"
  export LEDGERDESK__DATABASE__URL="$url" LEDGERDESK__LOG__LEVEL="${LOG_LEVEL:-warn}"
  export LEDGERDESK__BOOTSTRAP__ADMIN_EMAIL="admin@bench.example" LEDGERDESK__BOOTSTRAP__ADMIN_PASSWORD="$password"
  export LEDGERDESK__FILES__DIR="$work/files-$n"
  bases=()
  servers=()
  for i in $(seq "$n"); do
    port=$(free_port)
    LEDGERDESK__HTTP__BIND="127.0.0.1:$port" LEDGERDESK__PROJECTIONS__RUN_IN_SERVER=false \
      "$bin" serve >"$work/serve-$n-$i.log" 2>&1 &
    pids+=($!)
    servers+=($!)
    bases+=("http://127.0.0.1:$port")
    # The first one migrates and bootstraps alone.
    for _ in $(seq 150); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  done
  LEDGERDESK__LOG__LEVEL=info "$bin" project >"$work/project-$n.log" 2>&1 &
  project=$!
  pids+=("$project")

  python3 scripts/bench/setup.py "${bases[0]}" "$password" "$TICKETS" "$work"
  head_before=$(psql -tAq "$url" -c "SELECT COALESCE(MAX(position), 0) FROM events")
  before=()
  for pid in "${servers[@]}"; do before+=("$(cpu_ticks "$pid")"); done
  per=$((CONNECTIONS / n))
  wrks=()
  for i in $(seq "$n"); do
    BENCH_IDS="$work/ids" BENCH_TOKEN="$(cat "$work/token")" \
      wrk -t1 -c"$per" -d"$DURATION" --latency -s scripts/bench/post_message.lua "${bases[$((i - 1))]}" >"$work/wrk-$n-$i.txt" &
    wrks+=($!)
  done
  for w in "${wrks[@]}"; do wait "$w"; done
  ticks=0
  for i in "${!servers[@]}"; do ticks=$((ticks + $(cpu_ticks "${servers[$i]}") - ${before[$i]})); done

  # Let the worker process catch up (at most 60 s), then stop it for its lag.
  for _ in $(seq 600); do
    behind=$(psql -tAq "$url" -c "SELECT COUNT(*) FROM projection_checkpoints WHERE position < (SELECT MAX(position) FROM events)")
    [[ "$behind" == 0 ]] && break
    sleep 0.1
  done
  kill "$project"; wait "$project" 2>/dev/null || true

  rps=0; requests=0; errors=0; worst=""
  for i in $(seq "$n"); do
    f="$work/wrk-$n-$i.txt"
    rps=$(awk -v a="$rps" '/Requests\/sec/ {printf "%.0f", a + $2}' "$f")
    requests=$((requests + $(awk '/requests in/ {print $1}' "$f")))
    errors=$((errors + $(awk '/Non-2xx/ {print $NF; found = 1} END {if (!found) print 0}' "$f")))
    worst="$worst $(awk '$1 == "99%" {print $2}' "$f")"
  done
  acknowledged=$((requests - errors))
  stored=$(psql -tAq "$url" -c "SELECT COUNT(*) FROM events WHERE position > $head_before AND event_type = 'ticket.message_added'")
  read -r count lowest highest < <(psql -tAq -F' ' "$url" -c "SELECT COUNT(*), MIN(position), MAX(position) FROM events")
  hz=$(getconf CLK_TCK)
  echo
  echo "$n serve process(es), projections in a separate process, wrk -t1 -c$per -d$DURATION against each:"
  echo "  ${rps} requests/s in all, p99 per server:${worst}, non-2xx ${errors}"
  echo "  server CPU $((ticks * 1000000 / hz / (requests > 0 ? requests : 1))) µs per request, summed over the servers"
  if [[ "$count" == "$highest" && "$lowest" == 1 ]]; then gaps="gap-free (1..$highest)"; else gaps="GAPS: $count events over $lowest..$highest"; fi
  if (( stored >= acknowledged )); then lost="every acknowledged message stored ($acknowledged acknowledged, $stored stored)"; else lost="LOST: $acknowledged acknowledged, $stored stored"; fi
  echo "  positions $gaps; $lost"
  verify=$("$bin" verify 2>&1 | tail -n 1)
  echo "  verify: $verify"
  sed -E 's/\x1b\[[0-9;]*m//g' "$work/project-$n.log" | grep "projection lag" | sed -E 's/^.*projection lag *//; s/^/  lag: /' || echo "  lag: not reported"
  stop_all
done
