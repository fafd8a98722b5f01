#!/usr/bin/env bash
# Swagger UI end to end, in headless Chromium: on a throw-away server (temporary SQLite
# database, private Redis), open /docs, Authorize with the bearer token, "Try it out" on
# "Create a product" and then on "Get a product", and check what the page shows.
# Saves a screenshot to target/swagger-ui.png. Exits non-zero on failure.
#
# Needs node (>= 18) and Chromium at /usr/bin/chromium (Debian: apt-get install chromium;
# or set CHROMIUM). Playwright never downloads a browser here.
set -euo pipefail

. "$(dirname "$0")/lib/server.sh"

BROWSER_DIR="$ROOT/scripts/browser"
SCREENSHOT="$ROOT/target/swagger-ui.png"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export CHROMIUM

command -v node >/dev/null || die "node is not on PATH"
[ -x "$CHROMIUM" ] || die "no Chromium at $CHROMIUM (Debian: apt-get install chromium)"

if [ ! -d "$BROWSER_DIR/node_modules/playwright-core" ]; then
  log "installing playwright-core (npm ci)"
  (cd "$BROWSER_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

server_start
mkdir -p "$(dirname "$SCREENSHOT")"

log "Swagger UI in headless Chromium"
status=0
node "$BROWSER_DIR/swagger.mjs" "$SERVER_URL" "$API_TOKEN" "$SCREENSHOT" || status=$?
if [ "$status" -eq 0 ]; then
  log "browser test passed"
else
  log "browser test FAILED (exit $status); see $SCREENSHOT"
fi
exit "$status"
