#!/usr/bin/env bash
# Projection rebuild throughput from a realistic log made by `ledgerdesk seed`:
# for each backend, seed N events (default 1,000,000) into a fresh database,
# then rebuild the tickets and audit projections and print events/s.
# PostgreSQL runs when LEDGERDESK_BENCH_POSTGRES_URL (or
# LEDGERDESK_TEST_POSTGRES_URL) names a server and psql is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${BENCH_EVENTS:-1000000}"
cargo build --release -q -p ledgerdesk
BIN="${CARGO_TARGET_DIR:-target}/release/ledgerdesk"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export LEDGERDESK__LOG__LEVEL=warn

run() {
    local label="$1"
    echo "$label: seeding $EVENTS events"
    "$BIN" seed --events "$EVENTS" 2>/dev/null | sed 's/^/  /'
    for p in tickets audit; do
        "$BIN" projections rebuild "$p" 2>/dev/null | tail -n 1 | sed "s/^/  /"
    done
}

LEDGERDESK__DATABASE__URL="sqlite://$WORK/bench.db" run sqlite

PG="${LEDGERDESK_BENCH_POSTGRES_URL:-${LEDGERDESK_TEST_POSTGRES_URL:-}}"
if [ -n "$PG" ] && command -v psql >/dev/null 2>&1; then
    DB="ldbench_proj_$$"
    psql -q "$PG" -c "CREATE DATABASE $DB"
    trap 'psql -q "$PG" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1; rm -rf "$WORK"' EXIT
    LEDGERDESK__DATABASE__URL="${PG%/*}/$DB" run postgres
else
    echo "postgres: skipped (set LEDGERDESK_BENCH_POSTGRES_URL and install psql)"
fi
