#!/usr/bin/env bash
# HTTP hit path and memory of api-server (docs/BENCHMARKS.md, sections 2 and 6).
#
#   scripts/loadtest.sh            # release build, 100 000 products, 3 rounds of 10 s per target
#   SMOKE=1 scripts/loadtest.sh    # debug build, 200 products, 1 round of 1 s: checks that it works
#
# What it does, on a private redis-server and a fresh SQLite file in a temporary directory:
# 1. seeds COUNT products through the write path (example `bench_seed`);
# 2. starts five servers: `api-server` with Redis (CACHE_L1=off), `api-server` with Redis
#    and its near cache (CACHE_L1=strict, and CACHE_L1=bounded), `api-server` with its in-process cache, and the
#    HTTP ceiling (example `http_ceiling`: the same poem stack and middleware answering
#    the server's own response bytes from memory);
# 3. with wrk (CONNECTIONS connections, THREADS threads), in ROUNDS interleaved rounds,
#    loads `GET /api/products/1` and `GET /api/products?page=1&per_page=20` on each
#    (warm cache) and reports the median req/s and p99, the median of the per-round
#    ratios to the ceiling, and the CPU time per request of the server process and of
#    redis-server (from /proc/PID/stat);
# 4. starts a fresh `api-server` with Redis (and the near cache, unless MEM_L1=off), sends
#    MEM_REQUESTS GETs of random ids among the COUNT products, and reads VmRSS (and VmHWM)
#    from /proc/PID/status.
#
# Settings (environment): SMOKE, PROFILE (release|debug), COUNT, ROUNDS, DURATION,
# CONNECTIONS, THREADS, MEM_REQUESTS, RUST_LOG (servers' log level; default info, as shipped),
# SCRAPE_EVERY (seconds: fetch /metrics that often during the memory run, as Prometheus
# would; default 0, never), SKIP_LOAD=1 (only the memory run), MEM_L1 (strict|off).
# Needs wrk (`apt-get install -y wrk`), redis-server, curl, python3. Without wrk it
# prints SKIPPED and exits 0, except with CI=true, where it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE="${SMOKE:-0}"
if [[ "$SMOKE" == 1 ]]; then
  PROFILE="${PROFILE:-debug}"
  COUNT="${COUNT:-200}"
  ROUNDS="${ROUNDS:-1}"
  DURATION="${DURATION:-1}"
  MEM_REQUESTS="${MEM_REQUESTS:-2000}"
else
  PROFILE="${PROFILE:-release}"
  COUNT="${COUNT:-100000}"
  ROUNDS="${ROUNDS:-3}"
  DURATION="${DURATION:-10}"
  MEM_REQUESTS="${MEM_REQUESTS:-1000000}"
fi
CONNECTIONS="${CONNECTIONS:-64}"
SCRAPE_EVERY="${SCRAPE_EVERY:-0}"
SKIP_LOAD="${SKIP_LOAD:-0}"
THREADS="${THREADS:-2}"
export RUST_LOG="${RUST_LOG:-info}"

skip() {
  if [[ "${CI:-}" == true || "${CI:-}" == 1 ]]; then
    echo "loadtest: cannot run in CI: $1" >&2
    exit 1
  fi
  printf '%s\nSKIPPED loadtest: %s\n%s\n' "$(printf '=%.0s' {1..72})" "$1" "$(printf '=%.0s' {1..72})" >&2
  exit 0
}
for tool in wrk redis-server curl python3; do
  command -v "$tool" >/dev/null || skip "$tool is not installed (wrk: apt-get install -y wrk)"
done

echo "== build ($PROFILE)"
build_flags=(-p api-server --bin api-server --example http_ceiling --example bench_seed)
if [[ "$PROFILE" == release ]]; then
  cargo build --release "${build_flags[@]}"
else
  cargo build "${build_flags[@]}"
fi
# shellcheck source=lib/server.sh
. scripts/lib/server.sh
target_dir="$(cargo_target_dir)"
bin="$target_dir/$PROFILE"

pids=()
# Run by server_cleanup on exit, before it stops Redis and removes the directory.
server_cleanup_hook() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
server_tmp loadtest
work="$SERVER_TMP"

wait_http() { # url pid
  for _ in $(seq 300); do
    curl -fs -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "loadtest: process $2 died; its log:" >&2; tail -n 20 "$work"/*.log >&2; exit 1; }
    sleep 0.1
  done
  echo "loadtest: $1 did not answer" >&2
  exit 1
}

echo "== redis"
redis_start
redis_port="$REDIS_PORT"
redis_pid="$REDIS_PID"
redis_url="$PRIVATE_REDIS_URL"

echo "== seed $COUNT products"
export DATABASE_URL="sqlite://$work/load.db?mode=rwc"
COUNT="$COUNT" "$bin/examples/bench_seed"

start_server() { # name port [REDIS_URL [CACHE_L1]]
  local name=$1 port=$2 redis=${3:-} l1=${4:-off}
  if [[ -n "$redis" ]]; then
    REDIS_URL="$redis" CACHE_L1="$l1" BIND="127.0.0.1:$port" API_TOKEN=loadtest \
      CACHE_PREFIX="load-$name" "$bin/api-server" >"$work/$name.log" 2>&1 &
  else
    # An in-process cache cannot share its database with another server (it would not
    # see the other's writes, and the server refuses to start): it gets its own copy.
    db_copy="$work/$name.db"
    cp "$work/load.db" "$db_copy"
    env -u REDIS_URL DATABASE_URL="sqlite://$db_copy?mode=rwc" BIND="127.0.0.1:$port" \
      API_TOKEN=loadtest "$bin/api-server" >"$work/$name.log" 2>&1 &
  fi
  pids+=($!)
  wait_http "http://127.0.0.1:$port/health" $!
  echo $! >"$work/$name.pid"
}

echo "== servers"
redis_srv_port="$(free_port)"; start_server redis "$redis_srv_port" "$redis_url"
l1_srv_port="$(free_port)"; start_server l1 "$l1_srv_port" "$redis_url" strict
bounded_srv_port="$(free_port)"; start_server bounded "$bounded_srv_port" "$redis_url" bounded
memory_srv_port="$(free_port)"; start_server memory "$memory_srv_port"
# The relay's first pass checks which Redis this is; reads use the cache after it.
sleep 1
product_path="/api/products/1"
list_path="/api/products?page=1&per_page=20"
for port in "$redis_srv_port" "$l1_srv_port" "$bounded_srv_port" "$memory_srv_port"; do
  for _ in 1 2 3; do
    curl -fs -o /dev/null "http://127.0.0.1:$port$product_path"
    curl -fs -o /dev/null "http://127.0.0.1:$port$list_path"
  done
done
curl -fs "http://127.0.0.1:$redis_srv_port$product_path" >"$work/product.json"
curl -fs "http://127.0.0.1:$redis_srv_port$list_path" >"$work/list.json"
ceiling_port="$(free_port)"
PRODUCT_BODY="$work/product.json" LIST_BODY="$work/list.json" BIND="127.0.0.1:$ceiling_port" \
  "$bin/examples/http_ceiling" >"$work/ceiling.log" 2>&1 &
pids+=($!)
ceiling_pid=$!
wait_http "http://127.0.0.1:$ceiling_port$product_path" $!
for port in "$redis_srv_port" "$l1_srv_port" "$bounded_srv_port" "$memory_srv_port" "$ceiling_port"; do
  cmp -s <(curl -fs "http://127.0.0.1:$port$product_path") "$work/product.json" \
    || { echo "loadtest: port $port answers other product bytes" >&2; exit 1; }
  cmp -s <(curl -fs "http://127.0.0.1:$port$list_path") "$work/list.json" \
    || { echo "loadtest: port $port answers other list bytes" >&2; exit 1; }
done
echo "product body: $(wc -c <"$work/product.json") bytes; list body: $(wc -c <"$work/list.json") bytes"

if [[ "$SKIP_LOAD" != 1 ]]; then
  echo "== load: $ROUNDS round(s) x ${DURATION}s per target, $CONNECTIONS connections, $THREADS wrk threads"
  results="$work/results.tsv"
  : >"$results"
  targets=(ceiling redis l1 bounded memory)
  declare -A port_of=([ceiling]=$ceiling_port [redis]=$redis_srv_port [l1]=$l1_srv_port [bounded]=$bounded_srv_port [memory]=$memory_srv_port)
  declare -A pid_of=([ceiling]=$ceiling_pid [redis]=$(cat "$work/redis.pid") [l1]=$(cat "$work/l1.pid") [bounded]=$(cat "$work/bounded.pid") [memory]=$(cat "$work/memory.pid"))
  # CPU time (user + system) a process has used, in clock ticks.
  cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
  ticks_per_s="$(getconf CLK_TCK)"
  # Commands Redis has processed so far (every client's).
  redis_commands() { redis-cli -p "$redis_port" info stats | awk -F: '/^total_commands_processed/ {print $2 + 0}'; }
  for round in $(seq "$ROUNDS"); do
    for route in product list; do
      path=$product_path; [[ $route == list ]] && path=$list_path
      n=${#targets[@]}
      for k in $(seq 0 $((n - 1))); do
        target=${targets[$(((round + k) % n))]}
        server_before="$(cpu_ticks "${pid_of[$target]}")"; redis_before="$(cpu_ticks "$redis_pid")"
        commands_before="$(redis_commands)"
        out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:${port_of[$target]}$path")"
        server_ticks=$(($(cpu_ticks "${pid_of[$target]}") - server_before)); redis_ticks=$(($(cpu_ticks "$redis_pid") - redis_before))
        commands=$(($(redis_commands) - commands_before))
        requests="$(awk '/requests in/ {print $1}' <<<"$out")"
        server_us="$(python3 -c "print(f'{$server_ticks / $ticks_per_s * 1e6 / max($requests, 1):.1f}')")"
        redis_us="$(python3 -c "print(f'{$redis_ticks / $ticks_per_s * 1e6 / max($requests, 1):.1f}')")"
        per_request="$(python3 -c "print(f'{$commands / max($requests, 1):.3f}')")"
        rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
        p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
        errors="$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")"
        [[ -z "$errors" ]] || { echo "loadtest: errors from $target: $errors" >&2; exit 1; }
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$route" "$target" "$rps" "$p99" "$server_us" "$redis_us" "$per_request" >>"$results"
        printf '  round %s %-7s %-8s %10s req/s  p99 %-8s CPU/request: server %s µs, redis %s µs; Redis commands/request %s\n' "$round" "$route" "$target" "$rps" "$p99" "$server_us" "$redis_us" "$per_request"
      done
    done
  done
  # The server with Redis served every request above from the cache.
  loads="$(curl -fs "http://127.0.0.1:$redis_srv_port/metrics" | awk '/^cache_loads_total/ {s += $2} END {print s + 0}')"
  echo "database reads (cache_loads_total) on the Redis server during the load: $loads"
  # The near cache's barriers: reads per barrier, and Redis commands per read.
  l1_metrics="$(curl -fs "http://127.0.0.1:$l1_srv_port/metrics")"
  grep -E '^cache_l1_(requests_total|barrier_reads)' <<<"$l1_metrics" || true
  l1_reads="$(awk '/^cache_l1_requests_total/ {s += $2} END {print s + 0}' <<<"$l1_metrics")"
  l1_barriers="$(awk '/^cache_l1_barrier_reads_count/ {s += $2} END {print s + 0}' <<<"$l1_metrics")"
  l1_waiting="$(awk '/^cache_l1_barrier_reads_sum/ {s += $2} END {print s + 0}' <<<"$l1_metrics")"
  echo "near cache: $l1_reads reads, $l1_barriers barrier rounds, $(python3 -c "print(f'{$l1_waiting / max($l1_barriers, 1):.1f}')") reads per barrier round"
else
  results="$work/results.tsv"; : >"$results"; loads=0
fi
# Only the server under test runs from here on.
kill "$(cat "$work/redis.pid")" "$(cat "$work/l1.pid")" "$(cat "$work/bounded.pid")" "$(cat "$work/memory.pid")" "${pids[-1]}" 2>/dev/null || true

MEM_L1="${MEM_L1:-strict}"
echo "== memory: $MEM_REQUESTS GETs of random ids among $COUNT products, fresh server with Redis (CACHE_L1=$MEM_L1)"
mem_port="$(free_port)"
redis-cli -p "$redis_port" flushall >/dev/null # private server: start the cache empty
start_server rss "$mem_port" "$redis_url" "$MEM_L1"
sleep 1
rss_pid="$(cat "$work/rss.pid")"
rss_kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
rss_start="$(rss_kib "$rss_pid" VmRSS)"
cat >"$work/random.lua" <<EOF
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/api/products/" .. math.random(1, $COUNT))
end
EOF
if ((SCRAPE_EVERY > 0)); then
  (while sleep "$SCRAPE_EVERY"; do curl -fs -o /dev/null "http://127.0.0.1:$mem_port/metrics" || true; done) &
  pids+=($!)
fi
sent=0
chunk=$((DURATION < 10 ? DURATION : 10))
while ((sent < MEM_REQUESTS)); do
  out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${chunk}s" -s "$work/random.lua" "http://127.0.0.1:$mem_port/")"
  done_now="$(awk '/requests in/ {print $1}' <<<"$out")"
  errors="$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")"
  [[ -z "$errors" ]] || { echo "loadtest: errors: $errors" >&2; exit 1; }
  sent=$((sent + done_now))
  echo "  $sent requests; VmRSS $(rss_kib "$rss_pid" VmRSS) KiB"
done
rss_end="$(rss_kib "$rss_pid" VmRSS)"
hwm_end="$(rss_kib "$rss_pid" VmHWM)"
mem_metrics="$(curl -fs "http://127.0.0.1:$mem_port/metrics")"
mem_loads="$(awk '/^cache_loads_total/ {s += $2} END {print s + 0}' <<<"$mem_metrics")"
mem_hits="$(awk '/^cache_requests_total/ && /result="hit"/ {s += $2} END {print s + 0}' <<<"$mem_metrics")"
grep -E '^(cache_requests_total|http_requests_total)' <<<"$mem_metrics" || true
cached_keys="$(redis-cli -p "$redis_port" dbsize)"

echo "== results"
mkdir -p "$target_dir/bench-results"
python3 - "$results" "$ROUNDS" "$DURATION" "$CONNECTIONS" "$THREADS" "$COUNT" "$PROFILE" "$SMOKE" \
  "$sent" "$rss_start" "$rss_end" "$hwm_end" "$mem_loads" "$mem_hits" "$cached_keys" "$loads" "$SCRAPE_EVERY" "$MEM_L1" <<'EOF' | tee -a "$target_dir/bench-results/loadtest.md"
import statistics, sys
(path, rounds, duration, conns, threads, count, profile, smoke,
 sent, rss_start, rss_end, hwm_end, mem_loads, mem_hits, cached_keys, loads, scrape, mem_l1) = sys.argv[1:]
def ms(p99):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if p99.endswith(unit):
            return float(p99[: -len(unit)]) * f
    return float(p99)
rows = [line.split("\t") for line in open(path).read().splitlines()]
data = {}
for rnd, route, target, rps, p99, server_us, redis_us, commands in rows:
    data.setdefault((route, target), {})[rnd] = (float(rps), ms(p99), float(server_us), float(redis_us), float(commands))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
import os
print(f"\n## loadtest {'SMOKE' if smoke == '1' else 'run'} ({profile} build; machine: {os.cpu_count()} cores, {cpu}; "
      f"wrk -t{threads} -c{conns} -d{duration}s, {rounds} interleaved round(s); {count} products)\n")
names = {"ceiling": "HTTP ceiling (fixed bytes, same stack)", "redis": "api-server, Redis cache",
         "l1": "api-server, Redis + near cache (strict)",
         "bounded": "api-server, Redis + near cache (bounded, 10 ms)", "memory": "api-server, in-process cache"}
paths = {"product": "GET /api/products/1", "list": "GET /api/products?page=1&per_page=20"}
if data:
    print("| route | server | req/s (median) | p99 ms (median) | req/s vs ceiling (median of per-round ratios) "
          "| server CPU µs/request (median) | ceiling's CPU / server's CPU per request (median of per-round ratios) | Redis CPU µs/request (median) "
          "| Redis commands/request (median) |")
    print("|---|---|---|---|---|---|---|---|---|")
for route in ("product", "list") if data else ():
    base = data[(route, "ceiling")]
    for target in ("ceiling", "redis", "l1", "bounded", "memory"):
        d = data[(route, target)]
        ratio = statistics.median(d[r][0] / base[r][0] for r in d)
        cpu_ratio = statistics.median(base[r][2] / d[r][2] for r in d)
        print(f"| `{paths[route]}` | {names[target]} | {statistics.median(v[0] for v in d.values()):.0f} | "
              f"{statistics.median(v[1] for v in d.values()):.2f} | {ratio:.3f} | "
              f"{statistics.median(v[2] for v in d.values()):.1f} | {cpu_ratio:.3f} | "
              f"{statistics.median(v[3] for v in d.values()):.1f} | {statistics.median(v[4] for v in d.values()):.3f} |")
print(f"\ndatabase reads by the Redis server during the load (cache_loads_total): {loads}")
verdict = "(smoke: no verdict)" if smoke == "1" else ("PASS" if int(rss_end) < 64 * 1024 else "MISS")
print(f"\nmemory ({'/metrics scraped every ' + scrape + ' s' if scrape != '0' else '/metrics never scraped'}): {sent} GETs of random ids among {count} products on a fresh api-server with Redis (CACHE_L1={mem_l1}): "
      f"VmRSS {int(rss_start)/1024:.1f} MiB after start-up, {int(rss_end)/1024:.1f} MiB after the GETs "
      f"(VmHWM {int(hwm_end)/1024:.1f} MiB); target < 64 MiB: {verdict}. "
      f"Loads {mem_loads}, hits {mem_hits}, keys in Redis {cached_keys}.")
EOF
