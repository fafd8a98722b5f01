#!/usr/bin/env bash
# Times `api-server import` on generated files (100 000 rows by default) against SQLite
# and PostgreSQL, with a private Redis, as a user would run it (wall time of the whole
# process: connect, import, drain the outbox):
#
#   create     the file into an empty database (every row creates a product)
#   unchanged  the same file again (every row is compared, nothing is written)
#   update     a file with every price changed (every row updates a product)
#   dry run    the update file again with --dry-run (validated, rolled back)
#
# Usage:
#   scripts/import-bench.sh [ROWS]
#
# Environment:
#   API_SERVER_BIN     the binary (default: release/api-server in cargo's target directory
#                      if built, else debug/api-server; build with
#                      `cargo build --release -p api-server`)
#   TEST_DATABASE_URL  a PostgreSQL server (any database on it), e.g.
#                      postgres://postgres@127.0.0.1:5432/test; without it PostgreSQL is skipped
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS="${1:-100000}"
CHOSEN_BIN="${API_SERVER_BIN:-}"
# shellcheck source=lib/server.sh
. "$ROOT/scripts/lib/server.sh"

target="$(cargo_target_dir)"
if [ -n "$CHOSEN_BIN" ]; then
  BIN="$CHOSEN_BIN"
elif [ -x "$target/release/api-server" ]; then
  BIN="$target/release/api-server"
else
  BIN="$target/debug/api-server"
fi
[ -x "$BIN" ] || die "no $BIN: run 'cargo build --release -p api-server' (or 'cargo build -p api-server')"

PG_ADMIN_URL="${TEST_DATABASE_URL:-}"
PG_DB=""
# Run by server_cleanup on exit, before it stops Redis and removes the directory.
server_cleanup_hook() {
  if [ -n "$PG_DB" ]; then
    psql "$PG_ADMIN_URL" -q -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  fi
}
server_tmp import-bench
TMP="$SERVER_TMP"
redis_start
REDIS_URL="$PRIVATE_REDIS_URL"

# The files: every column, 50 categories.
generate() { # FILE PRICE_OFFSET
  awk -v n="$ROWS" -v offset="$2" 'BEGIN {
    print "sku,name,description,price_cents,stock,category"
    for (i = 1; i <= n; i++)
      printf "BENCH-%07d,Product %d,Generated product number %d,%d,%d,category-%d\n", i, i, i, offset + i, i % 1000, i % 50
  }' >"$1"
}
log "generating $ROWS rows"
generate "$TMP/initial.csv" 100
generate "$TMP/update.csv" 200

# Runs one import and prints its wall time and summary.
timed() { # LABEL DATABASE_URL FILE [FLAGS…]
  local label="$1" url="$2" file="$3"
  shift 3
  local start end summary
  start="$(date +%s.%N)"
  if ! DATABASE_URL="$url" REDIS_URL="$REDIS_URL" CACHE_PREFIX=bench RUST_LOG=warn \
    "$BIN" import "$file" "$@" >"$TMP/out" 2>"$TMP/err"; then
    cat "$TMP/err" >&2
    die "$label failed"
  fi
  end="$(date +%s.%N)"
  summary="$(cat "$TMP/out")"
  printf '%-22s %7.2f s   %s\n' "$label" "$(echo "$end - $start" | bc)" "$summary"
}

bench() { # NAME DATABASE_URL
  local name="$1" url="$2"
  DATABASE_URL="$url" RUST_LOG=warn "$BIN" migrate >/dev/null
  timed "$name create" "$url" "$TMP/initial.csv"
  timed "$name unchanged" "$url" "$TMP/initial.csv"
  timed "$name update" "$url" "$TMP/update.csv"
  timed "$name dry run" "$url" "$TMP/update.csv" --dry-run
}

echo "binary: $BIN; rows: $ROWS; $(nproc) cores"
bench sqlite "sqlite://$TMP/bench.db?mode=rwc"

if [ -n "$PG_ADMIN_URL" ]; then
  command -v psql >/dev/null || die "psql is not on PATH"
  PG_DB="import_bench_$$"
  psql "$PG_ADMIN_URL" -q -c "CREATE DATABASE \"$PG_DB\"" >/dev/null
  base="${PG_ADMIN_URL%%\?*}"
  bench postgres "${base%/*}/$PG_DB"
else
  log "PostgreSQL skipped: set TEST_DATABASE_URL"
fi
