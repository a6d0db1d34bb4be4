#!/usr/bin/env bash
# Audit search latency with a large audit_log (issue 6): for each backend,
# fill a fresh database with N rows (default 10,000,000) and time
# `audit::search` for one agent + one action + one month and other shapes.
# PostgreSQL runs when LEDGERDESK_BENCH_POSTGRES_URL (or
# LEDGERDESK_TEST_POSTGRES_URL) names a server. LEDGERDESK_BENCH_AUDIT_ROWS
# sets N; the 10M fill needs about 10 GiB of disk per backend (SQLite file or
# PostgreSQL database), removed afterwards. LEDGERDESK_BENCH_AUDIT_BACKENDS=sqlite or
# =postgres runs one backend.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB; load average $(cut -d' ' -f1-3 /proc/loadavg)"
exec "${CARGO:-cargo}" bench -p ledgerdesk-projections --bench audit_search
