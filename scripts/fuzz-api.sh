#!/usr/bin/env bash
# Property-based testing of the HTTP API against its own OpenAPI document, with
# Schemathesis (https://schemathesis.io), on a throw-away server (temporary SQLite
# database, private Redis).
#
#   scripts/fuzz-api.sh                      # 500 examples per operation: ~1-2 min on 2 cores
#   FUZZ_MAX_EXAMPLES=50 scripts/fuzz-api.sh    # a quick smoke run
#   FUZZ_SEED=42 scripts/fuzz-api.sh         # reproduce a run
#   scripts/fuzz-api.sh --include-operation-id createProduct   # extra schemathesis flags
#
# Exits non-zero on any finding. Reports (JUnit, and a pytest file reproducing failures)
# land in target/schemathesis-report/.
set -euo pipefail

. "$(dirname "$0")/lib/server.sh"

SCHEMATHESIS_VERSION="4.32.5"
VENV="$ROOT/target/fuzz-venv"
FUZZ_MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-500}"
REPORT_DIR="$ROOT/target/schemathesis-report"
CONFIG="$ROOT/scripts/schemathesis.toml"

if [ ! -x "$VENV/bin/schemathesis" ] ||
  ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$VENV/bin/schemathesis" --version

server_start

seed_args=()
if [ -n "${FUZZ_SEED:-}" ]; then seed_args=(--seed "$FUZZ_SEED"); fi

# One worker: with two, Python 3.11 < 3.11.8 can fail in ast.parse with "AST constructor
# recursion depth mismatch" (CPython gh-106905), which Schemathesis reports as an error.
# Every check is enabled in schemathesis.toml (not with `--checks all`, which would
# override its one per-operation exception).
log "schemathesis: all checks, all phases (examples, coverage, fuzzing, stateful), at most $FUZZ_MAX_EXAMPLES examples per operation"
status=0
"$VENV/bin/schemathesis" --config-file "$CONFIG" run "$SERVER_URL/openapi.json" \
  --phases examples,coverage,fuzzing,stateful \
  --header "Authorization: Bearer $API_TOKEN" \
  --max-examples "$FUZZ_MAX_EXAMPLES" \
  --workers 1 \
  --generation-database none \
  --report junit,pytest \
  --report-dir "$REPORT_DIR" \
  --no-color \
  "${seed_args[@]}" \
  "$@" || status=$?

if [ "$status" -eq 0 ]; then
  log "schemathesis: no findings"
else
  log "schemathesis: FINDINGS (exit $status); reports in $REPORT_DIR"
fi
exit "$status"
