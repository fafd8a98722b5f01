#!/usr/bin/env bash
# The callgrind profiles behind docs/BENCHMARKS.md ("Profiles"): instructions per read on
# the cache hit path (raw GET vs get_or_load_json and get_or_load hits), and per HTTP request (api-server with
# its in-process cache vs the HTTP ceiling, product and list routes).
#
#   scripts/bench-profile.sh          # release build; N=20000 cache reads, 1000 HTTP requests
#   SMOKE=1 scripts/bench-profile.sh  # debug build, tiny counts
#
# Needs valgrind, redis-server, curl, python3. Outputs in target/bench-results/profile/.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE="${SMOKE:-0}"
if [[ "$SMOKE" == 1 ]]; then PROFILE=debug; READS=200; REQUESTS=20; else PROFILE=release; READS=20000; REQUESTS=1000; fi
command -v valgrind >/dev/null || { echo "SKIPPED bench-profile: valgrind is not installed" >&2; exit 0; }

flags=(-p api-server --bin api-server --example http_ceiling --example bench_seed)
if [[ "$PROFILE" == release ]]; then
  cargo build --release "${flags[@]}"
  cargo build --release -p cache-service --example hit_profile
else
  cargo build "${flags[@]}"
  cargo build -p cache-service --example hit_profile
fi
# shellcheck source=lib/server.sh
. scripts/lib/server.sh
target_dir="$(cargo_target_dir)"
bin="$target_dir/$PROFILE"
out="$target_dir/bench-results/profile"
rm -rf "$out" && mkdir -p "$out"
pids=()
# Run by server_cleanup on exit, before it removes the directory.
server_cleanup_hook() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
server_tmp bench-profile
work="$SERVER_TMP"

total() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }

echo "== cache hit path: $READS reads each"
declare -A ir
for mode in raw json hit; do
  for n in 0 "$READS"; do
    valgrind --tool=callgrind --callgrind-out-file="$out/cache-$mode-$n.out" \
      "$bin/examples/hit_profile" "$mode" "$n" 2>/dev/null
    ir[$mode-$n]="$(total "$out/cache-$mode-$n.out")"
  done
  echo "  $mode: $(( (ir[$mode-$READS] - ir[$mode-0]) / READS )) instructions per read"
done

echo "== HTTP: $REQUESTS requests per route and server"
DATABASE_URL="sqlite://$work/db.sqlite?mode=rwc" COUNT=100 "$bin/examples/bench_seed"
run() { # name route kind
  local name=$1 route=$2 kind=$3 port pid path
  port="$(free_port)"
  path="/api/products/1"; [[ $route == list ]] && path="/api/products?page=1&per_page=20"
  if [[ $kind == server ]]; then
    env -u REDIS_URL DATABASE_URL="sqlite://$work/db.sqlite?mode=rwc" BIND="127.0.0.1:$port" API_TOKEN=x \
      valgrind --tool=callgrind --callgrind-out-file="$out/$name.out" "$bin/api-server" >"$work/$name.log" 2>&1 &
  else
    PRODUCT_BODY="$work/product.json" LIST_BODY="$work/list.json" BIND="127.0.0.1:$port" \
      valgrind --tool=callgrind --callgrind-out-file="$out/$name.out" "$bin/examples/http_ceiling" >"$work/$name.log" 2>&1 &
  fi
  pid=$!
  pids+=("$pid")
  for _ in $(seq 600); do curl -fs -o /dev/null "http://127.0.0.1:$port$path" && break; sleep 0.1; done
  sleep 1.5 # the relay's first pass: reads use the cache after it
  curl -fs -o /dev/null "http://127.0.0.1:$port$path"
  [[ -f $work/product.json ]] || curl -fs "http://127.0.0.1:$port/api/products/1" >"$work/product.json"
  [[ -f $work/list.json ]] || curl -fs "http://127.0.0.1:$port/api/products?page=1&per_page=20" >"$work/list.json"
  for _ in $(seq "$REQUESTS"); do printf 'url = "http://127.0.0.1:%s%s"\noutput = /dev/null\n' "$port" "$path"; done >"$work/urls"
  callgrind_control -z "$pid" >/dev/null 2>&1
  curl -fs -K "$work/urls"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill -INT "$pid"; wait "$pid" || true
  echo "  $name: $(( $(total "$out/$name.out.1") / REQUESTS )) instructions per request"
}
run server-product product server
run server-list list server
run ceiling-product product ceiling
run ceiling-list list ceiling
echo "profiles in $out (callgrind_annotate --inclusive=yes FILE | head -80)"
