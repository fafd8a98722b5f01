# shellcheck shell=bash
# Start a throw-away api-server for black-box tools: a temporary SQLite database, a
# private redis-server, a fixed API token and free ports. Everything is removed on exit.
#
# Usage (from a script with `set -euo pipefail`):
#
#   . "$(dirname "$0")/lib/server.sh"
#   server_start            # sets SERVER_URL, API_TOKEN, SERVER_TMP, REDIS_PORT
#   curl "$SERVER_URL/health"
#   redis_kill; redis_spawn; redis_wait   # crash the private Redis, start an empty one
#                                         # on the same REDIS_PORT, wait for its PONG
#
# Scripts that start servers of their own use the parts: `server_tmp NAME` (a temporary
# directory, removed on exit with everything started here; a function
# `server_cleanup_hook`, if defined, runs first), `redis_start` (a private Redis:
# PRIVATE_REDIS_URL, REDIS_PORT, REDIS_PID), `free_port` and `cargo_target_dir`.
#
# Environment:
#   API_SERVER_BIN  the binary (default: debug/api-server in cargo's target directory, which
#                   honours CARGO_TARGET_DIR; built if missing)
#   API_TOKEN       the write token (default: a fixed test token)
#   KEEP_TMP=1      keep the temporary directory (database, logs) after exit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
API_TOKEN="${API_TOKEN:-test-token-0123456789abcdef}"
SERVER_TMP=""
SERVER_PID=""
REDIS_PID=""
REDIS_PORT=""
SERVER_URL=""

# Cargo's target directory (CARGO_TARGET_DIR, a config file, or $ROOT/target).
cargo_target_dir() {
  (cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null) ||
    echo "$ROOT/target"
}
API_SERVER_BIN="${API_SERVER_BIN:-$(cargo_target_dir)/debug/api-server}"

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# A TCP port nobody listens on right now (the kernel's choice).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

server_cleanup() {
  local status=$?
  if declare -F server_cleanup_hook >/dev/null; then
    server_cleanup_hook || true
  fi
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ -n "$REDIS_PID" ] && kill -0 "$REDIS_PID" 2>/dev/null; then
    kill -TERM "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -n "$SERVER_TMP" ] && [ -f "$SERVER_TMP/server.log" ]; then
    printf '\n--- last lines of the server log (%s) ---\n' "$SERVER_TMP/server.log" >&2
    tail -n 40 "$SERVER_TMP/server.log" >&2 || true
  fi
  if [ -n "$SERVER_TMP" ]; then
    if [ "${KEEP_TMP:-0}" = 1 ]; then
      log "kept $SERVER_TMP"
    else
      rm -rf "$SERVER_TMP"
    fi
  fi
  return "$status"
}

# Builds the binary if it is missing.
server_build() {
  if [ -x "$API_SERVER_BIN" ]; then
    log "using $API_SERVER_BIN (built $(date -r "$API_SERVER_BIN" "+%F %T"); cargo build -p api-server to refresh)"
  else
    log "building api-server"
    (cd "$ROOT" && cargo build -p api-server)
  fi
}

# Creates SERVER_TMP (named after $1) and arranges for everything started here to be
# stopped, and SERVER_TMP removed, on exit.
server_tmp() {
  SERVER_TMP="$(mktemp -d "${TMPDIR:-/tmp}/${1:-api-server-test}.XXXXXX")"
  trap server_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# Starts an empty private redis-server on a free port and waits for its PONG; sets
# REDIS_PORT, REDIS_PID and PRIVATE_REDIS_URL. Needs SERVER_TMP (see server_tmp).
redis_start() {
  command -v redis-server >/dev/null || die "redis-server is not on PATH"
  command -v redis-cli >/dev/null || die "redis-cli is not on PATH"
  REDIS_PORT="$(free_port)"
  redis_spawn
  redis_wait || die "redis-server did not answer on 127.0.0.1:$REDIS_PORT"
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server | tr -d '\r' | grep -qx "process_id:$REDIS_PID" ||
    die "the redis-server on port $REDIS_PORT is not the one just started"
  PRIVATE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
  log "redis-server (pid $REDIS_PID) on 127.0.0.1:$REDIS_PORT"
}

# Starts redis-server and api-server; returns once /health answers 200.
server_start() {
  command -v curl >/dev/null || die "curl is not on PATH"
  server_build
  server_tmp api-server-test

  local port i
  redis_start

  port="$(free_port)"
  SERVER_URL="http://127.0.0.1:$port"
  BIND="127.0.0.1:$port" \
    DATABASE_URL="sqlite://$SERVER_TMP/x.db?mode=rwc" \
    REDIS_URL="$PRIVATE_REDIS_URL" \
    API_TOKEN="$API_TOKEN" \
    CACHE_PREFIX="test" \
    RUST_LOG="${RUST_LOG:-warn}" \
    "$API_SERVER_BIN" serve >"$SERVER_TMP/server.log" 2>&1 &
  SERVER_PID=$!
  for i in $(seq 300); do
    if curl -fsS -o /dev/null "$SERVER_URL/health" 2>/dev/null; then
      log "api-server (pid $SERVER_PID) at $SERVER_URL"
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || die "api-server exited during start-up"
    sleep 0.1
  done
  die "api-server did not answer $SERVER_URL/health within 30 s"
}

# Starts an empty redis-server on REDIS_PORT (data in $SERVER_TMP/redis, log appended to
# $SERVER_TMP/redis.log) and sets REDIS_PID; does not wait for it (see redis_wait).
redis_spawn() {
  mkdir -p "$SERVER_TMP/redis"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$SERVER_TMP/redis" \
    --save "" --appendonly no --daemonize no --loglevel warning \
    >>"$SERVER_TMP/redis.log" 2>&1 &
  REDIS_PID=$!
}

# Returns as soon as REDIS_PORT answers PING (polled every 10 ms); returns 1 after 500
# tries (about 6 s). Dies if redis-server exits.
redis_wait() {
  local i
  for i in $(seq 500); do
    if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then return 0; fi
    kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited: $(tail -n 5 "$SERVER_TMP/redis.log")"
    sleep 0.01
  done
  return 1
}

# Kills redis-server with SIGKILL (a crash: its data is lost) and waits until it is gone.
redis_kill() {
  if [ -n "$REDIS_PID" ]; then
    kill -KILL "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
  fi
}
