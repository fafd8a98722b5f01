#!/usr/bin/env bash
# Every benchmark of docs/BENCHMARKS.md at full size, on release builds (a cold release
# build takes ~10 minutes on 2 cores). Results (Markdown tables) are appended to
# target/bench-results/*.md; criterion's own reports are in target/criterion/.
#
#   scripts/bench-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== 1, 3, 5, 9: cache-service (hit path, group invalidation, stampede, list hit rate)"
cargo bench -p cache-service
echo "== 4: write path (SQLite, PostgreSQL)"
cargo bench -p api-server --bench write_path
echo "== 2, 6: HTTP hit path, memory"
scripts/loadtest.sh
echo "results: target/bench-results/"
