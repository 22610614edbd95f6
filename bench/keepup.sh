#!/usr/bin/env bash
# bench/keepup.sh: does the worker keep up with producers (issue 13 item 2)?
# For each consumer mode (logical decoding on a wal_level = logical server,
# the ingest queue on a wal_level = replica server; one after the other in
# one run), BENCH_PRODUCERS sessions COPY chunks of BENCH_CHUNK events as
# fast as they can for BENCH_SECONDS into a stream with the three
# aggregates of bench/aggregate.sh (agg_minute, agg_hop 10 min / 1 min,
# agg_name) and one on_event activation (1% of the events).  Every second:
# events committed by the producers and events applied (sum of agg_name),
# and the lag in events and in seconds of production (lag / the producers'
# rate over the run so far).  Target: lag at the end <= 1 s of events.
# Then the time the worker needs to catch up, and the oracle of agg_name.
#
# Environment: BENCH_MODES="logical queue" BENCH_SECONDS=60 BENCH_PRODUCERS=4
#   BENCH_CHUNK=20000 BENCH_BUILD=1 BENCH_RECORD (default: at the defaults)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

MODES=${BENCH_MODES:-"logical queue"}
SECS=${BENCH_SECONDS:-60}
PRODUCERS=${BENCH_PRODUCERS:-4}
CHUNK=${BENCH_CHUNK:-20000}
BUILD=${BENCH_BUILD:-1}
TARGET_LAG=1.0

[ "$BUILD" = 1 ] && scripts/setup.sh
. scripts/lib.sh
. bench/lib.sh
RECORD=${BENCH_RECORD:-$(bench_defaults SECS=60 PRODUCERS=4 CHUNK=20000)}
log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
bench_build
PATH="$PGBIN:$PATH"
RESULTS="$REPO/tmp/bench-keepup-$(date +%Y%m%d-%H%M%S).txt"
mkdir -p "$REPO/tmp"
out() { echo "$*" | tee -a "$RESULTS"; }
out "stream_events keep-up benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit $BENCH_COMMIT"
out "host: $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg); $PRODUCERS producers x COPY of $CHUNK events for ${SECS}s"

WORK=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    jobs -p | xargs -r kill 2>/dev/null || true
    [ -n "$WORK" ] && cluster_stop "$WORK" fast && rm -rf "${WORK:?}/data"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

run_mode() {
    local mode=$1 wal port
    wal=$([ "$mode" = logical ] && echo logical || echo replica)
    WORK=$(pg_workdir "$REPO/tmp/bench-keepup-$mode")
    cluster_stop "$WORK" immediate
    rm -rf "${WORK:?}"/*
    port=$(free_port 5490)
    cluster_init "$WORK" "$port" "${BENCH_SERVER_CONF[@]}" "wal_level = $wal" "stream_events.naptime = 3600"
    cluster_start "$WORK"
    PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$port" -U postgres -d postgres)
    export PGOPTIONS="-c client_min_messages=warning"
    "${PSQL[@]}" -c "CREATE EXTENSION stream_events"
    [ "$(sql "SELECT stream.consumer_mode()")" = "$mode" ] || die "server $mode: consumer mode is $(sql "SELECT stream.consumer_mode()")"
    local csv="$WORK/chunk.csv"
    # event_id omitted: every COPY gets new ids (uuid_v7 default), dedup on
    "${PSQL[@]}" <<SQL
SELECT stream.create_stream('bench_stream', partition_interval => '1 day');
COPY (SELECT (ARRAY['page_view','add_to_cart','purchase','search'])[1 + g % 4],
             now() - ((g % 7200) || ' seconds')::interval, 'u' || (g % 5000),
             jsonb_build_object('price', g % 100, 'rare', g % 100 = 0)
      FROM generate_series(1, $CHUNK) g) TO '$csv' WITH (FORMAT csv);
SELECT stream.create_aggregate('agg_minute', \$q\$
  SELECT stream.tumble(occurred_at, '1 minute') AS minute, count(*) AS events,
         count(user_id) AS identified, sum((properties->>'price')::numeric) AS revenue, max(occurred_at) AS last_seen
  FROM bench_stream GROUP BY 1 \$q\$);
SELECT stream.create_aggregate('agg_hop', \$q\$
  SELECT w.window_start, count(*) AS events, sum((properties->>'price')::numeric) AS revenue
  FROM bench_stream CROSS JOIN LATERAL stream.hop(occurred_at, '10 minutes', '1 minute') AS w(window_start)
  GROUP BY 1 \$q\$);
SELECT stream.create_aggregate('agg_name', \$q\$
  SELECT event_name, count(*) AS events, count(user_id) AS identified, max(occurred_at) AS last_seen
  FROM bench_stream GROUP BY 1 \$q\$);
SELECT stream.on_event('rare', 'bench_stream', \$\$(properties->>'rare')::boolean\$\$, channel => 'rare');
SELECT stream.flush(NULL, '5 min');
SQL
    [ "$(id -u)" -eq 0 ] && chown postgres "$csv"
    local end t0 p
    t0=$(now_s)
    end=$(awk -v a="$t0" -v s="$SECS" 'BEGIN { printf "%.3f", a + s }')
    for p in $(seq 1 "$PRODUCERS"); do
        (
            n=0
            while awk -v e="$end" -v t="$(now_s)" 'BEGIN { exit !(t < e) }'; do
                "${PSQL[@]}" -c "COPY bench_stream (event_name, occurred_at, user_id, properties) FROM '$csv' WITH (FORMAT csv)"
                n=$((n + CHUNK))
                echo "$n" > "$WORK/producer.$p"
            done
        ) &
    done
    local t committed applied rate lag lag_s last_lag_s=nan
    out "$mode: t(s) committed applied lag_events lag_s"
    while :; do
        sleep 1
        t=$(elapsed "$t0" "$(now_s)")
        committed=$(cat "$WORK"/producer.* 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
        applied=$(sql "SELECT coalesce(sum(events), 0) FROM agg_name")
        rate=$(awk -v c="$committed" -v t="$t" 'BEGIN { printf "%.0f", (t > 0 ? c / t : 0) }')
        lag=$((committed - applied))
        [ "$lag" -lt 0 ] && lag=0
        lag_s=$(awk -v l="$lag" -v r="$rate" 'BEGIN { if (r > 0) printf "%.2f", l / r; else print "nan" }')
        out "$mode: $t $committed $applied $lag $lag_s"
        if ! awk -v e="$end" -v t="$(now_s)" 'BEGIN { exit !(t < e) }'; then
            last_lag_s=$lag_s
            break
        fi
    done
    wait
    committed=$(cat "$WORK"/producer.* | awk '{ s += $1 } END { print s + 0 }')
    local t_end; t_end=$(now_s)
    sql "SELECT stream.flush(NULL, '30 min')" >/dev/null
    local catchup; catchup=$(elapsed "$t_end" "$(now_s)")
    applied=$(sql "SELECT coalesce(sum(events), 0) FROM agg_name")
    local oracle
    oracle=$(sql "SELECT count(*) FROM ((TABLE agg_name EXCEPT SELECT event_name, count(*), count(user_id), max(occurred_at) FROM bench_stream GROUP BY 1) UNION ALL (SELECT event_name, count(*), count(user_id), max(occurred_at) FROM bench_stream GROUP BY 1 EXCEPT TABLE agg_name)) d")
    [ "$oracle" = 0 ] || die "$mode: agg_name differs from its defining query ($oracle rows)"
    [ "$applied" = "$committed" ] || die "$mode: applied $applied events, producers committed $committed"
    rate=$(awk -v c="$committed" -v s="$SECS" 'BEGIN { printf "%.0f", c / s }')
    out "$mode: producers $rate events/s over ${SECS}s ($committed events); lag at the end ${last_lag_s} s of events; caught up ${catchup} s after the producers stopped; oracle ok; target lag <= ${TARGET_LAG} s: $(le "$last_lag_s" "$TARGET_LAG" && echo ok || echo MISSED)"
    bench_record "keepup.lag_end_s_$mode" "$last_lag_s" s "<= $TARGET_LAG" \
        "$mode mode: worker lag when $PRODUCERS COPY producers stop after ${SECS}s ($rate events/s; 3 aggregates + on_event), in seconds of production; caught up ${catchup} s later"
    cluster_stop "$WORK" fast
    rm -rf "${WORK:?}/data"     # millions of events: do not keep them
    WORK=
}

for mode in $MODES; do
    run_mode "$mode"
done
out "load after: $(cut -d' ' -f1-3 /proc/loadavg); results saved in $RESULTS"
