#!/usr/bin/env bash
# Every benchmark of docs/BENCHMARKS.md once, with tiny sizes, on debug builds (no release
# build): checks that they still build and run, not how fast anything is. For CI.
#
#   scripts/bench-smoke.sh
#
# Needs redis-server on PATH, PostgreSQL at BENCH_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/test; skipped loudly without it, except with CI=true)
# and wrk for the HTTP part (likewise). Results of the run go to target/bench-results/.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

echo "== build (debug)"
cargo test --no-run -p cache-service --benches
cargo test --no-run -p api-server --bench write_path
cargo build -p api-server --bin api-server --example http_ceiling --example bench_seed
built=$SECONDS

echo "== cache-service: hit path, group invalidation, stampede (criterion test mode), list hit rate (0.3 s)"
cargo test -p cache-service --benches

echo "== api-server: write path (SQLite, PostgreSQL)"
cargo test -p api-server --bench write_path

echo "== HTTP hit path and memory"
SMOKE=1 scripts/loadtest.sh

echo "== resume after a Redis restart (one run)"
RUNS=1 scripts/resume-bench.sh

echo "bench smoke passed: build $((built - started)) s, runs $((SECONDS - built)) s"
