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
#   API_SERVER_BIN     the binary (default: target/release/api-server if built, else
#                      target/debug/api-server; build with `cargo build --release -p api-server`)
#   TEST_DATABASE_URL  a PostgreSQL server (any database on it), e.g.
#                      postgres://postgres@127.0.0.1:5432/test; without it PostgreSQL is skipped
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS="${1:-100000}"

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

if [ -n "${API_SERVER_BIN:-}" ]; then
  BIN="$API_SERVER_BIN"
elif [ -x "$ROOT/target/release/api-server" ]; then
  BIN="$ROOT/target/release/api-server"
else
  BIN="$ROOT/target/debug/api-server"
fi
[ -x "$BIN" ] || die "no $BIN: run 'cargo build --release -p api-server' (or 'cargo build -p api-server')"
command -v redis-server >/dev/null || die "redis-server is not on PATH"
command -v redis-cli >/dev/null || die "redis-cli is not on PATH"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/import-bench.XXXXXX")"
REDIS_PID=""
PG_ADMIN_URL="${TEST_DATABASE_URL:-}"
PG_DB=""

cleanup() {
  if [ -n "$REDIS_PID" ]; then
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  if [ -n "$PG_DB" ]; then
    psql "$PG_ADMIN_URL" -q -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# A private Redis on a free port.
REDIS_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$TMP" --logfile "$TMP/redis.log" &
REDIS_PID=$!
for _ in $(seq 100); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.05
done
redis-cli -p "$REDIS_PORT" ping >/dev/null || die "redis-server did not start"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

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
