#!/usr/bin/env bash
# bench/aggregate.sh: continuous aggregates, measured in one run on one
# throwaway server (wal_level = logical, the library preloaded, our output
# plugin allowed where output_plugin_libraries exists), on the same
# BENCH_ROWS click events (bench/gen_events.sql) as bench/ingest.sh.
# Three aggregates over one stream:
#   agg_minute  tumble 1 minute: count, count(user_id), sum(price), max(occurred_at)
#   agg_hop     hop 10 minutes / slide 1 minute: count, sum(price)  (10 windows per event)
#   agg_name    per event_name: count, count(user_id), max(occurred_at)
#
#  (1) drain: a backlog of BENCH_ROWS events committed by one COPY while the
#      worker is stopped (pg_terminate_backend; with stream_events.naptime =
#      3600 the launcher does not restart it by itself), against the same WAL
#      decoded by pg_logical_slot_get_changes with test_decoding (a slot
#      created just before the COPY).  Worker side: from asking the launcher
#      for the worker again (stream._extension_created(), as CREATE EXTENSION
#      does: worker start-up included) until stream.flush() returns, i.e. all
#      three aggregates applied and committed.  Order alternates per rep.
#      Target: test_decoding time / worker time >= 2.
#  (2) freshness: pgbench inserts single events at BENCH_RATE/s (-R) while a
#      probe session inserts one marker event at a time, commits, notes the
#      WAL insert position after its commit (an upper bound of its commit
#      record) and polls stream.aggregate_defs every 1 ms until every
#      aggregate's applied_lsn passes it: commit -> applied as a reader of the
#      aggregates sees it.  Target p99 <= 50 ms.
#  (3) producer cost: COPY and pgbench single-row INSERT (BENCH_CLIENTS) into
#      a stream with the three aggregates (the worker decoding and applying on
#      the same cores) against the same stream without aggregates; fresh
#      stream each time, sides alternate.  Ratio = throughput with / without.
#  (4) read: one day by minute from agg_minute against the defining query on
#      the raw events of that day (and a check that both return the same rows).
#
# Environment: BENCH_ROWS=1000000 BENCH_REPS=3 BENCH_RATE=5000
#   BENCH_FRESH_SECONDS=30 BENCH_SECONDS=20 BENCH_CLIENTS=4 BENCH_THREADS=2
#   BENCH_RATE_CLIENTS=8 BENCH_READ_REPS=10 BENCH_ONLY=(drain|fresh|producer|read)
#   BENCH_BUILD=1 BENCH_PROFILE=0 BENCH_KEEP=0 BENCH_RECORD (1: record the
#   figures in bench/results.tsv and the README table; default: at the
#   default sizes).  See bench/README.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

ROWS=${BENCH_ROWS:-1000000}
REPS=${BENCH_REPS:-3}
RATE=${BENCH_RATE:-5000}
FRESH_SECS=${BENCH_FRESH_SECONDS:-30}
SECS=${BENCH_SECONDS:-20}
CLIENTS=${BENCH_CLIENTS:-4}
THREADS=${BENCH_THREADS:-2}
RATE_CLIENTS=${BENCH_RATE_CLIENTS:-8}
READ_REPS=${BENCH_READ_REPS:-10}
ONLY=${BENCH_ONLY:-}
BUILD=${BENCH_BUILD:-1}
PROFILE=${BENCH_PROFILE:-0}
KEEP=${BENCH_KEEP:-0}
TARGET_DRAIN=2.0
TARGET_P99=50

if [ "$BUILD" = 1 ]; then
    scripts/setup.sh
fi
. scripts/lib.sh
. bench/lib.sh
RECORD=${BENCH_RECORD:-$(bench_defaults ROWS=1000000 REPS=3 RATE=5000 FRESH_SECS=30 SECS=20 CLIENTS=4 THREADS=2 RATE_CLIENTS=8)}

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bench_build
PATH="$PGBIN:$PATH"

WORK=$(pg_workdir "$REPO/tmp/bench-aggregate")
cluster_stop "$WORK" immediate
rm -rf "${WORK:?}"/*
PORT=$(free_port 5470)
CSV="$WORK/events.csv"
RESULTS="$REPO/tmp/bench-aggregate-$(date +%Y%m%d-%H%M%S).txt"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "${PERF_PID:-}" ] && kill "$PERF_PID" 2>/dev/null || true
    [ -n "${PGB_PID:-}" ] && kill "$PGB_PID" 2>/dev/null || true
    cluster_stop "$WORK" fast
    if [ "$KEEP" != 1 ]; then
        rm -rf "${WORK:?}/data" "$CSV"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "server on port $PORT under $WORK (shared_buffers=2GB, fsync=on, synchronous_commit=on)"
cluster_init "$WORK" "$PORT" "${BENCH_SERVER_CONF[@]}" \
    "stream_events.naptime = 3600"
cluster_start "$WORK"

export PGOPTIONS="-c client_min_messages=warning"
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
PSQL+=(-d bench)
"${PSQL[@]}" -c "CREATE EXTENSION stream_events"

out() { echo "$*" | tee -a "$RESULTS"; }

COLS="event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context"
PART_DAYS="generate_series(stream._bucket_start(now() - interval '4 days', '1 day'), now() + interval '4 days', interval '1 day')"
PRICE="(properties->>'price')::numeric"

# A fresh, empty stream bench_stream (no aggregates), daily partitions for
# the data's days as in a stream that has been running; checkpoint.
new_stream() {
    "${PSQL[@]}" -o /dev/null <<SQL
SELECT stream.drop_aggregate(name::text) FROM stream.aggregates;
SELECT stream.drop_stream(s.relid) FROM stream.streams AS s;
SELECT stream.create_stream('bench_stream', partition_interval => '1 day');
SELECT count(stream._ensure_partition('bench_stream', b, '1 day')) FROM $PART_DAYS AS b;
DROP TABLE IF EXISTS bench_probe;
CHECKPOINT;
SQL
}

create_aggregates() {
    "${PSQL[@]}" -o /dev/null <<SQL
SELECT stream.create_aggregate('agg_minute', \$q\$
  SELECT stream.tumble(occurred_at, '1 minute') AS minute, count(*) AS events,
         count(user_id) AS identified, sum($PRICE) AS revenue, max(occurred_at) AS last_seen
  FROM bench_stream GROUP BY 1 \$q\$);
SELECT stream.create_aggregate('agg_hop', \$q\$
  SELECT w.window_start, count(*) AS events, sum($PRICE) AS revenue
  FROM bench_stream CROSS JOIN LATERAL stream.hop(occurred_at, '10 minutes', '1 minute') AS w(window_start)
  GROUP BY 1 \$q\$);
SELECT stream.create_aggregate('agg_name', \$q\$
  SELECT event_name, count(*) AS events, count(user_id) AS identified, max(occurred_at) AS last_seen
  FROM bench_stream GROUP BY 1 \$q\$);
SELECT stream.flush(NULL, '5 min');
SQL
}

worker_pid() { sql "SELECT pid FROM stream.worker_status() WHERE datname = 'bench' AND state = 'running'"; }

# Stops the database's worker; it stays stopped (naptime 3600) until resumed.
pause_worker() {
    local pid
    pid=$(worker_pid)
    [ -n "$pid" ] || die "no running worker to pause"
    sql "SELECT pg_terminate_backend($pid)" >/dev/null
    for _ in $(seq 1 200); do
        [ -z "$(sql "SELECT 1 FROM pg_stat_activity WHERE pid = $pid")" ] && return 0
        sleep 0.05
    done
    die "the worker did not stop"
}

resume_worker() { sql "SELECT stream._extension_created()" >/dev/null; }

copy_csv() { "${PSQL[@]}" -c "COPY bench_stream ($COLS) FROM '$CSV' WITH (FORMAT csv)"; }

check_count() {
    local n
    n=$(sql "SELECT coalesce(sum(events), 0) FROM agg_name")
    [ "$n" = "$1" ] || log "WARNING: agg_name counts $n events, expected $1"
}

echo "stream_events continuous aggregate benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$RESULTS"
out "host: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $("$PGBIN/postgres" --version), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
out "settings: rows=$ROWS reps=$REPS rate=$RATE/s (${RATE_CLIENTS} clients, ${FRESH_SECS}s) producer pgbench -c $CLIENTS -j $THREADS -T $SECS, aggregate_poll_interval=$(sql "SHOW stream_events.aggregate_poll_interval")"
out "extension: $(sql "SELECT extversion FROM pg_extension WHERE extname = 'stream_events'") from $("$PG_CONFIG" --pkglibdir)/stream_events.so ($(stat -c %y "$("$PG_CONFIG" --pkglibdir)/stream_events.so" | cut -d. -f1))"

if want drain || want producer || want read || [ "$PROFILE" = 1 ]; then
    log "generating $ROWS events into $CSV"
    "${PSQL[@]}" -v rows="$ROWS" -v file="$CSV" -f bench/gen_events.sql >/dev/null
    cat "$CSV" > /dev/null
fi

sed "s/@TABLE@/bench_stream/" bench/insert_event.pgbench > "$WORK/insert.pgbench"

# ---------------------------------------------------------------- (1) drain
drain_td=(); drain_worker=(); copy_paused=()
drain_once() {     # $1 = rep; prints nothing, fills the arrays
    local rep=$1 t0 t_td t_w n first
    new_stream
    create_aggregates
    pause_worker
    sql "SELECT pg_create_logical_replication_slot('bench_td', 'test_decoding')" >/dev/null
    t0=$(now_s); copy_csv; copy_paused+=("$(elapsed "$t0" "$(now_s)")")
    first=$([ $((rep % 2)) = 1 ] && echo td || echo worker)
    for side in $first $([ "$first" = td ] && echo worker || echo td); do
        if [ "$side" = td ]; then
            t0=$(now_s)
            n=$(sql "SELECT count(*) FROM pg_logical_slot_get_changes('bench_td', NULL, NULL)")
            t_td=$(elapsed "$t0" "$(now_s)")
            sql "SELECT pg_drop_replication_slot('bench_td')" >/dev/null
            [ "$n" -ge "$ROWS" ] || log "WARNING: test_decoding returned $n changes"
        else
            t0=$(now_s)
            resume_worker
            sql "SELECT stream.flush(NULL, '30 min')" >/dev/null
            t_w=$(elapsed "$t0" "$(now_s)")
            check_count "$ROWS"
        fi
    done
    drain_td+=("$t_td"); drain_worker+=("$t_w")
    log "drain  rep $rep  test_decoding $t_td s  worker (3 aggregates) $t_w s  ratio $(ratio "$t_td" "$t_w")  (first: $first)"
    echo "drain  rep $rep  test_decoding $t_td s  worker $t_w s  ratio $(ratio "$t_td" "$t_w")" >> "$RESULTS"
}
if want drain; then
    for ((rep = 1; rep <= REPS; rep++)); do
        drain_once "$rep"
    done
fi

# ---------------------------------------------------------------- (4) read
read_agg=; read_raw=; read_same=
if want read; then
    if [ "$(sql "SELECT count(*) FROM stream.aggregates")" != 3 ] ||
       [ "$(sql "SELECT count(*) FROM bench_stream")" != "$ROWS" ]; then
        new_stream; create_aggregates; copy_csv
    fi
    sql "SELECT stream.flush(NULL, '30 min')" >/dev/null
    "${PSQL[@]}" -c "VACUUM ANALYZE bench_stream" -c "VACUUM ANALYZE agg_minute_state"
    # one day ending at the last full minute of the data
    D1=$(sql "SELECT max(minute) FROM agg_minute")
    read -r read_agg read_raw read_same < <("${PSQL[@]}" -At -F ' ' <<SQL
CREATE TEMP TABLE t (side text, ms float8);
DO \$\$
DECLARE
    d1 timestamptz := '$D1';
    d0 timestamptz := d1 - interval '1 day';
    t0 timestamptz;
BEGIN
    FOR i IN 1 .. $READ_REPS LOOP
        t0 := clock_timestamp();
        PERFORM count(*) FROM (SELECT minute, events, identified, revenue, last_seen FROM agg_minute
                               WHERE minute >= d0 AND minute < d1 ORDER BY 1) q;
        INSERT INTO t VALUES ('agg', extract(epoch FROM clock_timestamp() - t0) * 1000);
        t0 := clock_timestamp();
        PERFORM count(*) FROM (SELECT stream.tumble(occurred_at, '1 minute') AS minute, count(*) AS events,
                                      count(user_id) AS identified, sum($PRICE) AS revenue,
                                      max(occurred_at) AS last_seen
                               FROM bench_stream WHERE occurred_at >= d0 AND occurred_at < d1
                               GROUP BY 1 ORDER BY 1) q;
        INSERT INTO t VALUES ('raw', extract(epoch FROM clock_timestamp() - t0) * 1000);
    END LOOP;
END \$\$;
WITH a AS (SELECT minute, events, identified, revenue, last_seen FROM agg_minute
           WHERE minute >= timestamptz '$D1' - interval '1 day' AND minute < '$D1'),
     r AS (SELECT stream.tumble(occurred_at, '1 minute') AS minute, count(*) AS events,
                  count(user_id) AS identified, sum($PRICE) AS revenue, max(occurred_at) AS last_seen
           FROM bench_stream WHERE occurred_at >= timestamptz '$D1' - interval '1 day' AND occurred_at < '$D1'
           GROUP BY 1)
SELECT (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM t WHERE side = 'agg')::numeric(12,3),
       (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM t WHERE side = 'raw')::numeric(12,3),
       NOT EXISTS (SELECT * FROM a EXCEPT SELECT * FROM r) AND NOT EXISTS (SELECT * FROM r EXCEPT SELECT * FROM a);
SQL
)
    log "read   one day by minute: aggregate $read_agg ms  raw $read_raw ms  same rows: $read_same"
fi

# ---------------------------------------------------------------- (2) freshness
fresh_p50=; fresh_p99=; fresh_n=; fresh_max=; fresh_tps=
if want fresh; then
    new_stream
    create_aggregates
    "${PSQL[@]}" -c "CREATE TABLE bench_probe (ms float8)"
    pgbench -n -h "$WORK" -p "$PORT" -U postgres -c "$RATE_CLIENTS" -j "$THREADS" -T "$FRESH_SECS" \
            -R "$RATE" -M prepared -f "$WORK/insert.pgbench" bench > "$WORK/pgbench-fresh.out" 2>&1 &
    PGB_PID=$!
    sleep 3
    "${PSQL[@]}" <<SQL
DO \$\$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '$((FRESH_SECS - 6)) seconds';
    t0 timestamptz;
    target pg_lsn;
BEGIN
    WHILE clock_timestamp() < deadline LOOP
        INSERT INTO bench_stream (event_id, event_name, occurred_at, properties)
        VALUES (gen_random_uuid(), 'probe', now(), '{}');
        COMMIT;
        t0 := clock_timestamp();
        target := pg_current_wal_insert_lsn();
        WHILE (SELECT min(applied_lsn) FROM stream.aggregate_defs) < target LOOP
            PERFORM pg_sleep(0.001);
        END LOOP;
        INSERT INTO bench_probe VALUES (extract(epoch FROM clock_timestamp() - t0) * 1000);
        COMMIT;
        PERFORM pg_sleep(0.02 + random() * 0.03);
    END LOOP;
END \$\$;
SQL
    wait "$PGB_PID" || { cat "$WORK/pgbench-fresh.out" >&2; die "pgbench failed"; }
    PGB_PID=
    fresh_tps=$(awk '/^tps = / { printf "%.0f", $3; exit }' "$WORK/pgbench-fresh.out")
    read -r fresh_n fresh_p50 fresh_p99 fresh_max < <(sql "SELECT count(*),
        percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric(10,1),
        percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric(10,1), max(ms)::numeric(10,1)
        FROM bench_probe" | tr '|' ' ')
    lagline=$(awk '/schedule lag/ { print; exit }' "$WORK/pgbench-fresh.out")
    log "fresh  pgbench $fresh_tps tps (asked $RATE; $lagline)  probes $fresh_n  p50 $fresh_p50 ms  p99 $fresh_p99 ms  max $fresh_max ms"
    sql "SELECT stream.flush(NULL, '5 min')" >/dev/null
    check_count "$(sql "SELECT count(*) FROM bench_stream")"
fi

# ---------------------------------------------------------------- (3) producer cost
copy_none=(); copy_aggs=(); ins_none=(); ins_aggs=()
if want producer; then
    for ((rep = 1; rep <= REPS; rep++)); do
        for side in none aggs; do
            new_stream
            [ $side = aggs ] && create_aggregates
            t0=$(now_s); copy_csv; t=$(elapsed "$t0" "$(now_s)")
            if [ $side = aggs ]; then
                copy_aggs+=("$t")
                t1=$(now_s); sql "SELECT stream.flush(NULL, '30 min')" >/dev/null
                extra=" (then caught up $(elapsed "$t1" "$(now_s)") s after commit)"
                check_count "$ROWS"
            else
                copy_none+=("$t"); extra=
            fi
            log "COPY   rep $rep  $(printf '%-4s' $side) $t s$extra"
            echo "COPY   rep $rep  $side $t s$extra" >> "$RESULTS"
        done
    done
    for ((rep = 1; rep <= REPS; rep++)); do
        for side in none aggs; do
            new_stream
            [ $side = aggs ] && create_aggregates
            pgbench -n -h "$WORK" -p "$PORT" -U postgres -c "$CLIENTS" -j "$THREADS" -T "$SECS" \
                    -M prepared -f "$WORK/insert.pgbench" bench > "$WORK/pgbench.out" 2>&1 ||
                { cat "$WORK/pgbench.out" >&2; die "pgbench failed"; }
            tps=$(awk '/^tps = / { printf "%.1f", $3; exit }' "$WORK/pgbench.out")
            if [ $side = aggs ]; then
                ins_aggs+=("$tps")
                sql "SELECT stream.flush(NULL, '5 min')" >/dev/null
                check_count "$(sql "SELECT count(*) FROM bench_stream")"
            else
                ins_none+=("$tps")
            fi
            log "INSERT rep $rep  $(printf '%-4s' $side) $tps tps"
            echo "INSERT rep $rep  $side $tps tps" >> "$RESULTS"
        done
    done
fi

# ---------------------------------------------------------------- profile
# One more drain under perf record -g of the worker (not timed).
if [ "$PROFILE" = 1 ]; then
    if ! command -v perf >/dev/null; then
        log "BENCH_PROFILE=1 but perf is missing (apt-get install linux-perf)"
    else
        new_stream; create_aggregates; pause_worker
        copy_csv
        resume_worker
        pid=
        for _ in $(seq 1 200); do pid=$(worker_pid); [ -n "$pid" ] && break; sleep 0.02; done
        perf record -q -g -o "$WORK/perf-drain.data" -p "$pid" >/dev/null 2>&1 &
        PERF_PID=$!
        sql "SELECT stream.flush(NULL, '30 min')" >/dev/null
        kill -INT "$PERF_PID" 2>/dev/null || true
        wait "$PERF_PID" 2>/dev/null || true
        PERF_PID=
        {
            echo "== perf profile, worker draining $ROWS events into 3 aggregates: with children"
            perf report -i "$WORK/perf-drain.data" --children --sort symbol --stdio -g none 2>/dev/null |
                grep -E '^ +[0-9.]+%' | head -60 || true
            echo "== self time"
            perf report -i "$WORK/perf-drain.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
                grep -E '^ +[0-9.]+%' | head -40 || true
        } | tee -a "$RESULTS"
        cp "$WORK/perf-drain.data" "$REPO/tmp/perf-aggregate-drain.data" 2>/dev/null || true
        # and the worker while pgbench inserts at BENCH_RATE/s
        new_stream; create_aggregates
        pgbench -n -h "$WORK" -p "$PORT" -U postgres -c "$RATE_CLIENTS" -j "$THREADS" -T 12 \
                -R "$RATE" -M prepared -f "$WORK/insert.pgbench" bench > "$WORK/pgbench-profile.out" 2>&1 &
        PGB_PID=$!
        sleep 2
        perf record -q -g -o "$WORK/perf-fresh.data" -p "$(worker_pid)" -- sleep 8 >/dev/null 2>&1 || true
        wait "$PGB_PID" || true
        PGB_PID=
        {
            echo "== perf profile, worker while pgbench inserts at ${RATE}/s: with children"
            perf report -i "$WORK/perf-fresh.data" --children --sort symbol --stdio -g none 2>/dev/null |
                grep -E '^ +[0-9.]+%' | head -60 || true
        } | tee -a "$RESULTS"
        cp "$WORK/perf-fresh.data" "$REPO/tmp/perf-aggregate-fresh.data" 2>/dev/null || true
    fi
fi

# ---------------------------------------------------------------- summary
verdict() { if ge "$1" "$2"; then echo ok; else echo MISSED; fi; }
{
    echo
    echo "== summary (median of $REPS where repeated; every repetition above)"
    printf '%-34s %-44s %-16s %s\n' measurement "result" target verdict
    if [ ${#drain_td[@]} -gt 0 ]; then
        td=$(median "${drain_td[@]}"); w=$(median "${drain_worker[@]}"); r=$(ratio "$td" "$w")
        printf '%-34s %-44s %-16s %s\n' "drain $ROWS events (backlog)" \
            "test_decoding ${td}s, worker ${w}s: ${r}x" ">= ${TARGET_DRAIN}x" "$(verdict "$r" $TARGET_DRAIN)"
        printf '%-34s %s\n' "" "reps: test_decoding ${drain_td[*]}; worker ${drain_worker[*]}; COPY (worker stopped) ${copy_paused[*]}"
        printf '%-34s %s\n' "" "worker: $(awk -v n="$ROWS" -v t="$w" 'BEGIN { printf "%.0f", n / t }') events/s; test_decoding $(awk -v n="$ROWS" -v t="$td" 'BEGIN { printf "%.0f", n / t }') rows/s"
        bench_record aggregate.drain_ratio "$r" x ">= $TARGET_DRAIN" \
            "drain of a $ROWS-event backlog with 3 aggregates: test_decoding time / worker time"
        bench_record aggregate.drain_rate "$(awk -v n="$ROWS" -v t="$w" 'BEGIN { printf "%.0f", n / t }')" events/s "" \
            "drain of a $ROWS-event backlog with 3 aggregates: the worker's rate"
    fi
    if [ -n "$fresh_p99" ]; then
        printf '%-34s %-44s %-16s %s\n' "freshness at ${RATE}/s asked" \
            "p50 ${fresh_p50} ms, p99 ${fresh_p99} ms (max $fresh_max)" "p99 <= ${TARGET_P99} ms" \
            "$(verdict "$TARGET_P99" "$fresh_p99")"
        printf '%-34s %s\n' "" "$fresh_n probes; pgbench reached $fresh_tps tps"
        bench_record aggregate.fresh_p99 "$fresh_p99" ms "<= $TARGET_P99" \
            "aggregate freshness p99, commit → applied and visible, pgbench -R $RATE"
        ge "$fresh_tps" "$(awk -v r="$RATE" 'BEGIN { print r * 0.95 }')" ||
            printf '%-34s %s\n' "" "WARNING: pgbench did not sustain the asked rate on this machine"
    fi
    if [ ${#copy_none[@]} -gt 0 ]; then
        n=$(median "${copy_none[@]}"); a=$(median "${copy_aggs[@]}"); r=$(ratio "$n" "$a")
        printf '%-34s %-44s %-16s %s\n' "producer COPY, 3 aggs / none" "none ${n}s, with ${a}s: ${r}" "(pg_ivm 0.69)" ""
        printf '%-34s %s\n' "" "reps: none ${copy_none[*]}; with ${copy_aggs[*]}"
        bench_record aggregate.producer_copy_ratio "$r" x "" \
            "producer COPY with 3 aggregates / without, throughput (pg_ivm 0.69, TimescaleDB 0.78)"
        n=$(median "${ins_none[@]}"); a=$(median "${ins_aggs[@]}"); r=$(ratio "$a" "$n")
        printf '%-34s %-44s %-16s %s\n' "producer INSERT ($CLIENTS clients)" "none ${n} tps, with ${a} tps: ${r}" "(pg_ivm 0.17)" ""
        printf '%-34s %s\n' "" "reps: none ${ins_none[*]}; with ${ins_aggs[*]}"
        bench_record aggregate.producer_insert_ratio "$r" x "" \
            "producer INSERT ($CLIENTS clients) with 3 aggregates / without, throughput (pg_ivm 0.17)"
    fi
    if [ -n "$read_agg" ]; then
        printf '%-34s %-44s %-16s %s\n' "read one day by minute" \
            "aggregate ${read_agg} ms, raw ${read_raw} ms: $(ratio "$read_raw" "$read_agg")x faster" "" \
            "$([ "$read_same" = t ] && echo "same rows" || echo "ROWS DIFFER")"
        bench_record aggregate.read_speedup "$([ "$read_same" = t ] && ratio "$read_raw" "$read_agg" || echo nan)" x "" \
            "one day by minute: defining query on raw events time / aggregate view time (nan: rows differ)"
    fi
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$RESULTS"
echo "results saved in $RESULTS"
