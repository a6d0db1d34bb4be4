#!/usr/bin/env bash
# The console in a real browser: headless Chromium driven by Selenium
# (scripts/browser_test.py) against `ledgerdesk serve` on a fresh SQLite
# database. Installs Debian's chromium and chromium-driver when they are
# missing (root) and Selenium into a venv under ~/.cache; `make test` does
# not need any of it.
#
#   scripts/browser-test.sh                          (SCREENSHOT_DIR=docs/screenshots to refresh the README's pictures)
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/ledgerdesk
venv=${BROWSER_VENV:-$cache/browser-venv}

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "installing chromium and chromium-driver" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium chromium-driver >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }
fi
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import selenium, requests' 2>/dev/null; then
  echo "installing selenium into $venv" >&2
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet selenium requests
fi

$CARGO build -q -p ledgerdesk
target_dir=$($CARGO metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/debug/ledgerdesk"

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
password="browser-$RANDOM$RANDOM-pw"
cleanup() {
  [[ -n "${server:-}" ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

LEDGERDESK__DATABASE__URL="sqlite://$work/browser.db" \
LEDGERDESK__HTTP__BIND="127.0.0.1:$port" \
LEDGERDESK__AUDIT__SIGNING_KEY_FILE="$work/checkpoint.key" \
LEDGERDESK__BOOTSTRAP__ADMIN_EMAIL="admin@browser.example" \
LEDGERDESK__BOOTSTRAP__ADMIN_PASSWORD="$password" \
LEDGERDESK__FILES__DIR="$work/files" \
LEDGERDESK__LOG__LEVEL="${LOG_LEVEL:-warn}" \
  "$bin" serve >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  curl -fs "$base/readyz" >/dev/null && break
  sleep 0.1
done

status=0
"$venv/bin/python" scripts/browser_test.py "$base" admin@browser.example "$password" || status=$?
if grep -q "panicked" "$work/server.log"; then
  echo "the server panicked:" >&2
  grep -A5 "panicked" "$work/server.log" >&2
  status=1
fi
if [[ $status -ne 0 ]]; then
  echo "--- server log (tail) ---" >&2
  tail -n 40 "$work/server.log" >&2
fi
exit $status
