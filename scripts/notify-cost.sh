#!/usr/bin/env bash
# What a NOTIFY per write costs concurrent PostgreSQL writers (docs/BENCHMARKS.md, 4).
#
#   scripts/notify-cost.sh          # 8 clients, 3 rounds of 5 s per variant
#
# In a scratch database it updates random rows of a 1 000-row table with pgbench:
# plain; with an outbox INSERT trigger; with the trigger and a pg_notify (as the outbox
# trigger did for every writer); and the same with the session setting that the
# service's connections use to skip the NOTIFY (cache_outbox.notify=off).
# Settings: BENCH_DATABASE_URL (a server to create the scratch database on; default
# postgres://postgres@127.0.0.1:5432/postgres), CLIENTS, SECONDS, ROUNDS.
set -euo pipefail

admin="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
clients="${CLIENTS:-8}"; seconds="${SECONDS_PER_RUN:-5}"; rounds="${ROUNDS:-3}"
for tool in psql pgbench; do
  command -v "$tool" >/dev/null || { echo "SKIPPED notify-cost: $tool is not installed" >&2; exit 0; }
done
db="notify_cost_$$"
url="${admin%/*}/$db"
work="$(mktemp -d)"
cleanup() { psql -q "$admin" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
psql -q "$admin" -c "CREATE DATABASE $db" >/dev/null
psql -q "$url" >/dev/null <<'SQL'
CREATE TABLE outbox (id bigserial PRIMARY KEY, row_id bigint, version bigint);
CREATE FUNCTION owe() RETURNS trigger AS $$
BEGIN INSERT INTO outbox (row_id, version) VALUES (NEW.id, NEW.version); RETURN NULL; END $$ LANGUAGE plpgsql;
CREATE FUNCTION owe_and_notify() RETURNS trigger AS $$
BEGIN
  INSERT INTO outbox (row_id, version) VALUES (NEW.id, NEW.version);
  IF current_setting('cache_outbox.notify', true) IS DISTINCT FROM 'off' THEN
    PERFORM pg_notify('cache_outbox', '');
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TABLE plain (id bigint PRIMARY KEY, price bigint, version bigint);
CREATE TABLE outboxed (LIKE plain INCLUDING ALL);
CREATE TABLE notifying (LIKE plain INCLUDING ALL);
INSERT INTO plain SELECT g, 100, 1 FROM generate_series(1, 1000) g;
INSERT INTO outboxed SELECT * FROM plain;
INSERT INTO notifying SELECT * FROM plain;
CREATE TRIGGER owe AFTER UPDATE ON outboxed FOR EACH ROW EXECUTE FUNCTION owe();
CREATE TRIGGER owe AFTER UPDATE ON notifying FOR EACH ROW EXECUTE FUNCTION owe_and_notify();
SQL
for table in plain outboxed notifying; do
  printf '\\set id random(1, 1000)\nUPDATE %s SET price = price + 1, version = version + 1 WHERE id = :id;\n' \
    "$table" >"$work/$table.sql"
done
run() { # label table [PGOPTIONS]
  PGOPTIONS="${3:-}" pgbench -n -c "$clients" -j 2 -T "$seconds" -f "$work/$2.sql" "$url" 2>/dev/null \
    | awk -v l="$1" '/^tps/ {printf "  %-40s %8.0f commits/s\n", l, $3}'
}
echo "pgbench: $clients clients, ${seconds}s per run, $rounds rounds"
for round in $(seq "$rounds"); do
  echo "round $round"
  run "plain UPDATE" plain
  run "UPDATE + outbox trigger" outboxed
  run "UPDATE + outbox trigger + NOTIFY" notifying
  run "same, cache_outbox.notify=off" notifying "-c cache_outbox.notify=off"
done
