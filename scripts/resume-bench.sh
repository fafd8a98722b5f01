#!/usr/bin/env bash
# How long api-server keeps reads off the cache after Redis comes back from a crash.
#
#   scripts/resume-bench.sh            # 3 runs
#   RUNS=10 scripts/resume-bench.sh
#
# On a throw-away server (lib/server.sh: temporary SQLite database, private redis-server,
# binary built only if missing), it creates one product and reads it until the cache
# serves it. Then, RUNS times:
# 1. kills redis-server (SIGKILL) and reads the product for OUTAGE seconds: every read
#    must succeed (from the database);
# 2. starts an empty redis-server on the same port; T0 is when `redis-cli ping` (run
#    every 10 ms) first answers;
# 3. every 10 ms, GETs the product then /metrics; T1 is the end of the first poll at which
#    cache_requests_total{namespace="product"} with result="hit" or result="miss" has grown
#    since just before the restart: the cache is in use again (after a crash Redis is
#    empty, so the first read that uses it is a miss, which fills it). Reads that skip
#    the cache count as result="error" only. A poll takes a few ms on top of its 10 ms
#    pause, so T1 may be late by that much.
# Prints `resume: T1-T0 s` per run, then the median. Any failed read fails the script.
#
# Settings (environment): RUNS (default 3), OUTAGE (seconds, default 2), RESUME_TIMEOUT
# (seconds to wait for the cache after a restart, default 30), and those of lib/server.sh
# (API_SERVER_BIN, KEEP_TMP, RUST_LOG). Needs redis-server, redis-cli, curl, python3.
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME with a decimal point

. "$(dirname "$0")/lib/server.sh"

RUNS="${RUNS:-3}"
OUTAGE="${OUTAGE:-2}"
RESUME_TIMEOUT="${RESUME_TIMEOUT:-30}"

command -v redis-cli >/dev/null || die "redis-cli is not on PATH"
command -v python3 >/dev/null || die "python3 is not on PATH"

metrics() { curl -fsS --max-time 10 "$SERVER_URL/metrics"; }
read_product() { curl -fsS --max-time 10 -o /dev/null "$SERVER_URL/api/products/$id"; }
# Reads of the product namespace whose result matches the regex $1, from /metrics text.
product_reads() {
  awk -v want="result=\"($1)\"" '$1 ~ /^cache_requests_total[{]/ && $1 ~ /namespace="product"/ && $1 ~ want { s += $NF }
    END { print s + 0 }'
}
# Reads until a hit is counted: the product is cached and the cache serves reads.
warm() {
  local hits i
  hits="$(metrics | product_reads hit)"
  for i in $(seq 600); do
    read_product || die "GET /api/products/$id failed"
    (($(metrics | product_reads hit) > hits)) && return 0
    sleep 0.05
  done
  die "no cache hit within 30 s of reads"
}

# Waits for PING on port $1 (T0), then polls until the cache is in use (T1): prints
# "T1-T0 in ms" and the number of polls. One process, so polls start no processes.
measure() {
  python3 - "$@" <<'PY'
import http.client, re, subprocess, sys, time, urllib.parse
redis_port, server_url, product_id, before, timeout = sys.argv[1:]
used = re.compile(r'^cache_requests_total\{(?=[^}]*namespace="product")'
                  r'(?=[^}]*result="(?:hit|miss)")[^}]*\}\s+(\S+)', re.M)
def ping():
    out = subprocess.run(["redis-cli", "-p", redis_port, "ping"], capture_output=True, text=True)
    return out.stdout.strip() == "PONG"
start = time.monotonic()
while not ping():
    if time.monotonic() - start > 10:
        sys.exit("redis-server did not answer within 10 s of its restart")
    time.sleep(0.01)
t0 = time.monotonic()
server = urllib.parse.urlsplit(server_url)
polls = 0
while True:
    # A fresh connection per poll (cheap on loopback): no keep-alive edge cases.
    conn = http.client.HTTPConnection(server.hostname, server.port, timeout=10)
    conn.request("GET", f"/api/products/{product_id}")
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"GET /api/products/{product_id} answered {response.status} after the restart")
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    conn.close()
    t1 = time.monotonic()
    polls += 1
    if sum(float(v) for v in used.findall(metrics)) > float(before):
        break
    if t1 - t0 > float(timeout):
        sys.exit(f"the cache was not used within {timeout} s of Redis answering PING")
    time.sleep(0.01)
print(round((t1 - t0) * 1000), polls)
PY
}

server_start

created="$(curl -fsS -X POST -H "Authorization: Bearer $API_TOKEN" -H 'Content-Type: application/json' \
  -d '{"sku":"RESUME-BENCH-1","name":"Resume bench","price_cents":1234,"stock":5}' \
  "$SERVER_URL/api/products")"
id="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$created")"
read_product
read_product
warm
log "product $id is served from the cache; $RUNS run(s), Redis down ${OUTAGE} s each"

outage_us="$(awk -v s="$OUTAGE" 'BEGIN { printf "%d", s * 1e6 }')"
results_ms=()
for run in $(seq "$RUNS"); do
  redis_kill
  reads=0
  end=$((${EPOCHREALTIME/./} + outage_us))
  while ((${EPOCHREALTIME/./} < end)); do
    read_product || die "run $run: a read failed while Redis was down"
    reads=$((reads + 1))
    sleep 0.1
  done
  before="$(metrics | product_reads 'hit|miss')"

  redis_spawn
  result="$(measure "$REDIS_PORT" "$SERVER_URL" "$id" "$before" "$RESUME_TIMEOUT")" ||
    die "run $run: no measurement (see above)"
  read -r ms polls <<<"$result"
  info="$(redis-cli -p "$REDIS_PORT" info server)"
  [[ "$info" == *"process_id:$REDIS_PID"* ]] ||
    die "run $run: the redis-server on port $REDIS_PORT is not the one just started"
  results_ms+=("$ms")
  log "run $run: $reads reads from the database while Redis was down; cache in use after $polls polls"
  printf 'resume: %d.%03d s\n' $((ms / 1000)) $((ms % 1000))
  ((run == RUNS)) || warm
done

python3 -c 'import statistics, sys; v = [int(a) for a in sys.argv[1:]]
print(f"resume (median of {len(v)}): {statistics.median(v) / 1000:.3f} s")' "${results_ms[@]}"
