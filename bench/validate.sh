#!/usr/bin/env bash
# bench/validate.sh: throughput of stream.json_schema_validate against a
# scan that does no validation, measured in one run on one throwaway server.
#
# Builds BENCH_ROWS jsonb events (10 properties: nested objects, enums,
# patterns, numeric bounds, an array) in a table, then times, alternating,
# BENCH_REPS times each:
#   floor      SELECT count(*) FILTER (WHERE e IS NOT NULL) FROM events
#   floor_c    SELECT count(*) FILTER (WHERE jsonb_typeof(e) = 'object') FROM events
#   validate   SELECT count(*) FILTER (WHERE stream.json_schema_validate(schema, e)) FROM events
# in one backend without parallel query (events/s of one core), after one
# untimed warm-up scan (the table is in shared_buffers).  Prints every
# repetition, the medians in events/s and the ratios validate/floor.
# There is no peer to compare with here (pg_jsonschema is not packaged).
#
# Environment:
#   BENCH_ROWS=1000000   events
#   BENCH_REPS=3         repetitions of each query
#   BENCH_BUILD=1        build and install the extension first (0: use the installed one)
#   BENCH_KEEP=0         1: keep the server's data directory
#   BENCH_INVALID=5      percent of events that violate the schema
#   BENCH_RECORD         1: record the figures in bench/results.tsv and the
#                        README table (default: at the default sizes above)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

ROWS=${BENCH_ROWS:-1000000}
REPS=${BENCH_REPS:-3}
BUILD=${BENCH_BUILD:-1}
KEEP=${BENCH_KEEP:-0}
INVALID=${BENCH_INVALID:-5}

if [ "$BUILD" = 1 ]; then
    scripts/setup.sh
fi
. scripts/lib.sh
. bench/lib.sh
RECORD=${BENCH_RECORD:-$(bench_defaults ROWS=1000000 REPS=3 INVALID=5)}
MEDIAN_FORMAT=%.1f

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*"; }

bench_build

WORK=$(pg_workdir "$REPO/tmp/bench-validate")
cluster_stop "$WORK" immediate
rm -rf "${WORK:?}"/*
PORT=$(free_port 5480)

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    cluster_stop "$WORK" fast
    [ "$KEEP" = 1 ] || rm -rf "${WORK:?}/data"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "server on port $PORT under $WORK"
cluster_init "$WORK" "$PORT" \
    "shared_buffers = 2GB" \
    "max_parallel_workers_per_gather = 0" \
    "jit = off" \
    "work_mem = 64MB" \
    "log_min_messages = warning"
cluster_start "$WORK"

export PGOPTIONS="-c client_min_messages=warning"
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
PSQL+=(-d bench)
"${PSQL[@]}" -c "CREATE EXTENSION stream_events"

# The event contract: what a shop's add_to_cart / purchase event carries.
SCHEMA='{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["event_id", "event_name", "occurred_at", "user_id", "sku", "price", "currency", "quantity", "page", "device"],
  "additionalProperties": false,
  "properties": {
    "event_id":    {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"},
    "event_name":  {"enum": ["page_view", "product_view", "add_to_cart", "checkout", "purchase"]},
    "occurred_at": {"type": "string", "format": "date-time"},
    "user_id":     {"type": "string", "pattern": "^u[0-9]{1,9}$"},
    "sku":         {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
    "price":       {"type": "number", "minimum": 0, "maximum": 100000, "multipleOf": 0.01},
    "currency":    {"enum": ["EUR", "USD", "GBP", "CHF"]},
    "quantity":    {"type": "integer", "minimum": 1, "maximum": 100},
    "page": {
      "type": "object",
      "required": ["url"],
      "properties": {
        "url":      {"type": "string", "minLength": 1, "maxLength": 2048},
        "referrer": {"type": ["string", "null"]}
      },
      "additionalProperties": false
    },
    "device": {
      "type": "object",
      "required": ["type"],
      "properties": {
        "type": {"enum": ["desktop", "mobile", "tablet"]},
        "os":   {"type": "string", "maxLength": 64}
      }
    },
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5, "uniqueItems": true}
  }
}'

log "generating $ROWS events ($INVALID% invalid)"
"${PSQL[@]}" -o /dev/null -v rows="$ROWS" -v invalid="$INVALID" <<'SQL'
SELECT setseed(0.42) \gset
CREATE TABLE events AS
SELECT jsonb_build_object(
           'event_id', gen_random_uuid()::text,
           'event_name', (ARRAY['page_view', 'product_view', 'add_to_cart', 'checkout', 'purchase'])[1 + (i % 5)],
           'occurred_at', to_char((now() - make_interval(secs => i)) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'user_id', 'u' || (i % 100000),
           'sku', chr(65 + i % 26) || chr(65 + (i / 26) % 26) || 'X-' || lpad((i % 10000)::text, 4, '0'),
           'price', CASE WHEN random() * 100 < :invalid THEN -1 ELSE round((random() * 500)::numeric, 2) END,
           'currency', (ARRAY['EUR', 'USD', 'GBP', 'CHF'])[1 + (i % 4)],
           'quantity', 1 + (i % 7),
           'page', jsonb_build_object('url', 'https://shop.example.com/p/' || (i % 5000),
                                      'referrer', CASE WHEN i % 3 = 0 THEN NULL ELSE 'https://www.example.org/' END),
           'device', jsonb_build_object('type', (ARRAY['desktop', 'mobile', 'tablet'])[1 + (i % 3)], 'os', 'Linux'),
           'tags', jsonb_build_array('t' || (i % 10), 'promo')
       ) AS e
FROM generate_series(1, :rows) AS i;
VACUUM ANALYZE events;
SQL
log "table: $("${PSQL[@]}" -At -c "SELECT pg_size_pretty(pg_table_size('events')) || ', ' || round(avg(pg_column_size(e))) || ' bytes per event' FROM events")"

# the schema is valid and compiles
"${PSQL[@]}" -o /dev/null -v schema="$SCHEMA" <<'SQL'
SELECT stream.json_schema_check(:'schema'::jsonb);
SQL

query_of() {
    case $1 in
        floor) echo "SELECT count(*) FILTER (WHERE e IS NOT NULL) FROM events" ;;
        floor_c) echo "SELECT count(*) FILTER (WHERE jsonb_typeof(e) = 'object') FROM events" ;;
        validate) echo "SELECT count(*) FILTER (WHERE stream.json_schema_validate(:'schema'::jsonb, e)) FROM events" ;;
    esac
}

# One timed run of query $1 in a fresh session; prints "ms count".
timed() {
    local q out ms count
    q=$(query_of "$1")
    out=$("${PSQL[@]}" -v schema="$SCHEMA" -At <<SQL
\timing on
$q;
SQL
)
    count=$(echo "$out" | sed -n 1p)
    ms=$(echo "$out" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
    echo "$ms $count"
}

rate() { awk -v n="$ROWS" -v ms="$1" 'BEGIN { printf "%.0f", n / (ms / 1000) }'; }

log "warm-up"
timed floor >/dev/null
timed validate >/dev/null

declare -A RUNS
for rep in $(seq 1 "$REPS"); do
    for side in floor floor_c validate; do
        read -r ms count < <(timed "$side")
        RUNS[$side]="${RUNS[$side]:-} $(rate "$ms")"
        printf '%s  rep %d  %-9s %9.1f ms  %10s events/s  (count %s)\n' \
            "$(date +%H:%M:%S)" "$rep" "$side" "$ms" "$(rate "$ms")" "$count"
    done
done

F=$(median ${RUNS[floor]})
FC=$(median ${RUNS[floor_c]})
V=$(median ${RUNS[validate]})
echo
echo "median events/s over $REPS runs of $ROWS events (one backend, no parallel query):"
printf '  %-40s %12s\n' "floor (e IS NOT NULL)" "$F"
printf '  %-40s %12s\n' "floor_c (jsonb_typeof(e) = 'object')" "$FC"
printf '  %-40s %12s\n' "stream.json_schema_validate" "$V"
echo "ratio validate/floor:   $(ratio "$V" "$F")"
echo "ratio validate/floor_c: $(ratio "$V" "$FC")"
echo "validation cost: $(awk -v v="$V" -v f="$F" 'BEGIN { printf "%.2f", 1e6 / v - 1e6 / f }') us per event"
bench_record validate.events_per_s "$V" events/s "" \
    "stream.json_schema_validate, 10-property event schema, one backend"
bench_record validate.ratio_floor "$(ratio "$V" "$F")" x "" \
    "json_schema_validate throughput / a scan testing e IS NOT NULL"
bench_record validate.ratio_floor_c "$(ratio "$V" "$FC")" x "" \
    "json_schema_validate throughput / a scan calling jsonb_typeof per row"
