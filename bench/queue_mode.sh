#!/usr/bin/env bash
# bench/queue_mode.sh: queue mode against logical mode (issue 14, item 5),
# measured in one run on two (or three) throwaway servers, one after the
# other, with the same settings (BENCH_SERVER_CONF, stream_events.naptime = 3600):
#   L   logical   wal_level = logical   the consumer decodes WAL   (stream.consumer_mode() = 'logical')
#   Q   queue     wal_level = replica   the consumer reads the ingest queue ('queue', consumer = 'auto')
#   QL  qlogical  wal_level = logical, stream_events.consumer = 'queue': the
#                 consumer reads the ingest queue ('queue') on a server that
#                 can also decode its WAL; only when BENCH_MODES names it
# On each server, on the same BENCH_ROWS click events (bench/gen_events.sql):
#
#  (1) producer cost: COPY of the events into a stream with dedup against a
#      plain table with a uuid primary key (wall clock, and the CPU time of
#      the COPY's backend from /proc/<pid>/stat, which the neighbours' load
#      does not change), and pgbench single-row INSERT (BENCH_CLIENTS,
#      prepared) into each; with BENCH_PRODUCER_AGGS=1 a third side: the
#      stream with the three aggregates of bench/aggregate.sh and one
#      on_event activation applied meanwhile.  Fresh tables every time, sides
#      alternating (order reversed every other rep).  Ratio = plain time /
#      stream time (throughput).  Target >= 0.90 in both modes.
#  (2) drain of a backlog into the three aggregates (agg_minute, agg_hop 10
#      min / 1 min, agg_name): the worker stopped (pg_terminate_backend;
#      naptime 3600 keeps the launcher from restarting it), the backlog
#      committed, then from stream._extension_created() (the worker asked
#      for again) until stream.flush() returns.  Backlogs: BENCH_ROWS events
#      in one COPY, and the single-row INSERT transactions of BENCH_SMALL_CLIENTS
#      pgbench clients for BENCH_SMALL_SECONDS.  On L and QL the same WAL is
#      also decoded by test_decoding and pgoutput (slots made before the
#      backlog; issue 13: worker >= 2x test_decoding, >= 1.5x pgoutput; on QL
#      the queue-mode worker against the decoders on one server).  The
#      worker's CPU time is read from /proc too.
#  (3) after every drain, every aggregate is compared with its defining
#      query on the raw events (EXCEPT ALL both ways); a FAIL stops the run.
#  (5) poll cost: the worker's CPU (/proc) while pgbench inserts single
#      events at a low rate (BENCH_POLL_RATE/s, 2 clients, BENCH_POLL_SECONDS)
#      into the stream with the three aggregates, the stream empty and then
#      holding BENCH_ROWS events already applied: what one poll costs as the
#      stream grows.
#  (4) BENCH_PROFILE=1: one more 1M drain per server under perf record of
#      the worker, top symbols and bench/perf_drain.py's buckets.
#
# Environment: BENCH_ROWS=1000000 BENCH_REPS=3 BENCH_SECONDS=20
#   BENCH_CLIENTS=4 BENCH_THREADS=2 BENCH_SMALL_CLIENTS=8 BENCH_SMALL_SECONDS=20
#   BENCH_MODES="logical queue" (any of logical, queue, qlogical: "qlogical"
#   or "logical queue qlogical" for QL) BENCH_PRODUCER_AGGS=1 BENCH_WARMUP=1
#   BENCH_POLL_RATE=100 BENCH_POLL_SECONDS=20 BENCH_ONLY=(producer|drain|small|poll, or several) BENCH_PROFILE=1 BENCH_CALLGRAPH=dwarf
#   BENCH_INSTALL=fresh (upgrade: CREATE EXTENSION ... VERSION '0.1.0' then
#   ALTER EXTENSION ... UPDATE) BENCH_BUILD=1 BENCH_KEEP=0 BENCH_RECORD (default: 1 at the
#   default sizes and modes, "logical queue" with or without qlogical after them).
#   PG_CONFIG picks the PostgreSQL installation (scripts/lib.sh, make).
#   See bench/README.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

ROWS=${BENCH_ROWS:-1000000}
REPS=${BENCH_REPS:-3}
SECS=${BENCH_SECONDS:-20}
CLIENTS=${BENCH_CLIENTS:-4}
THREADS=${BENCH_THREADS:-2}
SMALL_CLIENTS=${BENCH_SMALL_CLIENTS:-8}
SMALL_SECS=${BENCH_SMALL_SECONDS:-20}
MODES=${BENCH_MODES:-logical queue}
AGGS=${BENCH_PRODUCER_AGGS:-1}
WARMUP=${BENCH_WARMUP:-1}
ONLY=${BENCH_ONLY:-}
BUILD=${BENCH_BUILD:-1}
PROFILE=${BENCH_PROFILE:-1}
CALLGRAPH=${BENCH_CALLGRAPH:-dwarf}
KEEP=${BENCH_KEEP:-0}
POLL_RATE=${BENCH_POLL_RATE:-100}
POLL_SECS=${BENCH_POLL_SECONDS:-20}
INSTALL=${BENCH_INSTALL:-fresh}
TARGET_PRODUCER=0.90
TARGET_TD=2.0
TARGET_PO=1.5

if [ "$BUILD" = 1 ]; then
    scripts/setup.sh
fi
. scripts/lib.sh
. bench/lib.sh
# qlogical after the default two servers still records (its figures have names of their own)
MODES_REC=${MODES% qlogical}
RECORD=${BENCH_RECORD:-$(bench_defaults ROWS=1000000 REPS=3 SECS=20 CLIENTS=4 THREADS=2 SMALL_CLIENTS=8 SMALL_SECS=20 POLL_RATE=100 POLL_SECS=20 "MODES_REC=logical queue")}

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# decodes MODE: its server has wal_level = logical (L, QL), so test_decoding
# and pgoutput read the drains' WAL there
decodes() { [ "$1" = logical ] || [ "$1" = qlogical ]; }
# what MODE is, for the recorded figures' descriptions
mode_desc() { if [ "$1" = qlogical ]; then echo "queue mode at wal_level=logical"; else echo "$1 mode"; fi; }
# BENCH_ONLY may name several parts ("drain small")
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }

bench_build
PATH="$PGBIN:$PATH"
TCK=$(getconf CLK_TCK)

WORK=$(pg_workdir "$REPO/tmp/bench-queue")
for m in logical queue qlogical; do cluster_stop "$WORK/$m" immediate; done
rm -rf "${WORK:?}"/*
CSV="$WORK/events.csv"
RESULTS="$REPO/tmp/bench-queue-mode-$(date +%Y%m%d-%H%M%S).txt"
SRV=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "${PERF_PID:-}" ] && kill -INT "$PERF_PID" 2>/dev/null || true
    [ -n "${PGB_PID:-}" ] && kill "$PGB_PID" 2>/dev/null || true
    for m in logical queue qlogical; do cluster_stop "$WORK/$m" fast; done
    if [ "$KEEP" != 1 ]; then
        rm -rf "${WORK:?}/logical/data" "${WORK:?}/queue/data" "${WORK:?}/qlogical/data" "$CSV" "$WORK"/*.data
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export PGOPTIONS="-c client_min_messages=warning"
out() { echo "$*" | tee -a "$RESULTS"; }

COLS="event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context"
PART_DAYS="generate_series(stream._bucket_start(now() - interval '4 days', '1 day'), now() + interval '4 days', interval '1 day')"
PRICE="(properties->>'price')::numeric"

# ---------------------------------------------------------------- the server
# start_server MODE: a fresh server for MODE (logical | queue | qlogical);
# sets SRV, PORT, PSQL.  Dies unless stream.consumer_mode() says MODE's
# consumer (qlogical: queue).
start_server() {
    local mode=$1 wal consumer expect got conf
    SRV="$WORK/$mode"
    mkdir -p "$SRV"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$SRV"
    PORT=$(free_port 5480)
    case $mode in
        logical)  wal=logical; consumer=auto;  expect=logical ;;
        queue)    wal=replica; consumer=auto;  expect=queue ;;
        qlogical) wal=logical; consumer=queue; expect=queue ;;
        *) die "unknown mode '$mode' in BENCH_MODES (logical, queue, qlogical)" ;;
    esac
    log "server $mode: port $PORT under $SRV (wal_level=$wal, stream_events.consumer=$consumer, shared_buffers=2GB, fsync=on, synchronous_commit=on)"
    conf=("${BENCH_SERVER_CONF[@]}" "stream_events.naptime = 3600" "wal_level = $wal")
    [ "$consumer" = auto ] || conf+=("stream_events.consumer = '$consumer'")
    cluster_init "$SRV" "$PORT" "${conf[@]}"
    cluster_start "$SRV"
    PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$SRV" -p "$PORT" -U postgres)
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
    PSQL+=(-d bench)
    if [ "$INSTALL" = upgrade ]; then
        "${PSQL[@]}" -c "CREATE EXTENSION stream_events VERSION '0.1.0'" -c "ALTER EXTENSION stream_events UPDATE"
    else
        "${PSQL[@]}" -c "CREATE EXTENSION stream_events"
    fi
    [ "$(sql "SELECT to_regprocedure('stream.consumer_mode()') IS NOT NULL AND to_regclass('stream.queue_txns') IS NOT NULL")" = t ] ||
        die "CREATE EXTENSION ($INSTALL) made version $(sql "SELECT extversion FROM pg_extension WHERE extname = 'stream_events'") without stream.consumer_mode() or stream.queue_txns (queue mode's SQL is missing from that install script; BENCH_INSTALL=upgrade installs 0.1.0 and updates)"
    got=$(sql "SELECT stream.consumer_mode()")
    [ "$got" = "$expect" ] || die "server $mode: stream.consumer_mode() says '$got', expected '$expect'"
    out "server $mode: wal_level $(sql "SHOW wal_level"), stream_events.consumer $(sql "SHOW stream_events.consumer"), stream.consumer_mode() $got"
    if [ ! -f "$CSV" ]; then
        log "generating $ROWS events into $CSV"
        "${PSQL[@]}" -v rows="$ROWS" -v file="$CSV" -f bench/gen_events.sql >/dev/null
    fi
    cat "$CSV" > /dev/null
    sed "s/@TABLE@/bench_stream/" bench/insert_event.pgbench > "$SRV/insert_stream.pgbench"
    sed "s/@TABLE@/bench_plain/" bench/insert_event.pgbench > "$SRV/insert_plain.pgbench"
}

stop_server() {
    cluster_stop "$SRV" fast
    [ "$KEEP" = 1 ] || rm -rf "${SRV:?}/data"
}

# ---------------------------------------------------------------- tables
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
SQL
}

# setup SIDE: drops every measured table and definition, then creates SIDE:
#   plain       the stream's 9 columns, a uuid PRIMARY KEY, nothing else
#   stream      stream.create_stream (dedup 7 days), daily partitions for the data's days
#   stream_aggs the stream, the three aggregates and one on_event activation
#   drain       the stream and the three aggregates (and, on L and QL, a publication of it)
# then flushes the definitions in and checkpoints.
setup() {
    local side=$1
    "${PSQL[@]}" -o /dev/null <<'SQL'
SELECT stream.drop_activation(name) FROM stream.activation_defs;
SELECT stream.drop_aggregate(name::text) FROM stream.aggregates;
SELECT stream.drop_stream(s.relid) FROM stream.streams AS s;
DROP TABLE IF EXISTS bench_plain;
DROP PUBLICATION IF EXISTS bench_pub;
SQL
    "${PSQL[@]}" -c "VACUUM stream.queue_txns" -c "VACUUM stream.queue_ticks"
    if [ "$side" = plain ]; then
        "${PSQL[@]}" <<'SQL'
CREATE TABLE bench_plain (
    event_id     uuid        NOT NULL PRIMARY KEY,
    event_name   text        NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    received_at  timestamptz NOT NULL DEFAULT statement_timestamp(),
    user_id      text,
    anonymous_id text,
    session_id   text,
    properties   jsonb       NOT NULL DEFAULT '{}',
    context      jsonb       NOT NULL DEFAULT '{}'
);
SQL
    else
        "${PSQL[@]}" -o /dev/null <<SQL
SELECT stream.create_stream('bench_stream', partition_interval => '1 day', dedup_window => '7 days');
SELECT count(stream._ensure_partition('bench_stream', b, '1 day')) FROM $PART_DAYS AS b;
SQL
        case $side in
            stream_aggs)
                create_aggregates
                "${PSQL[@]}" -o /dev/null -c "SELECT stream.on_event('purchases', 'bench_stream', \$c\$event_name = 'purchase'\$c\$, channel => 'bench_c1')" ;;
            drain)
                create_aggregates
                if decodes "$MODE"; then "${PSQL[@]}" -c "CREATE PUBLICATION bench_pub FOR TABLE bench_stream"; fi ;;
        esac
        sql "SELECT stream.flush(NULL, '5 min')" >/dev/null
    fi
    "${PSQL[@]}" -c "CHECKPOINT"
}

table_of() { [ "$1" = plain ] && echo bench_plain || echo bench_stream; }

check_rows() {     # TABLE N
    local n
    n=$(sql "SELECT count(*) FROM $1")
    [ "$n" = "$2" ] || die "$1 has $n rows, expected $2"
    if [ "$1" = bench_stream ]; then
        n=$(sql "SELECT count(*) FROM bench_stream_default")
        [ "$n" = 0 ] || log "WARNING: $n events went to the default partition"
    fi
}

copy_sql() { echo "COPY $1 ($COLS) FROM '$CSV' WITH (FORMAT csv)"; }

proc_cpu() {       # PID: user + system seconds of the process so far
    awk -v t="$TCK" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat" 2>/dev/null || echo nan
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

assert_paused() {
    local p
    p=$(sql "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bench' AND backend_type LIKE 'stream_events%'")
    [ "$p" = 0 ] || die "the worker came back while paused ($p stream_events backends in bench)"
}

resume_worker() { sql "SELECT stream._extension_created()" >/dev/null; }

# Every aggregate against its defining query on the raw events (EXCEPT ALL
# both ways); prints "ok" or dies.
oracle() {
    local what=$1 r
    r=$("${PSQL[@]}" -At <<SQL
WITH m AS (SELECT minute, events, identified, revenue, last_seen FROM agg_minute),
     mq AS (SELECT stream.tumble(occurred_at, '1 minute') AS minute, count(*) AS events,
                   count(user_id) AS identified, sum($PRICE) AS revenue, max(occurred_at) AS last_seen
            FROM bench_stream GROUP BY 1),
     h AS (SELECT window_start, events, revenue FROM agg_hop),
     hq AS (SELECT w.window_start, count(*) AS events, sum($PRICE) AS revenue
            FROM bench_stream CROSS JOIN LATERAL stream.hop(occurred_at, '10 minutes', '1 minute') AS w(window_start)
            GROUP BY 1),
     n AS (SELECT event_name, events, identified, last_seen FROM agg_name),
     nq AS (SELECT event_name, count(*) AS events, count(user_id) AS identified, max(occurred_at) AS last_seen
            FROM bench_stream GROUP BY 1)
SELECT concat_ws(' ',
  (SELECT count(*) FROM (SELECT * FROM m EXCEPT ALL SELECT * FROM mq) x),
  (SELECT count(*) FROM (SELECT * FROM mq EXCEPT ALL SELECT * FROM m) x),
  (SELECT count(*) FROM (SELECT * FROM h EXCEPT ALL SELECT * FROM hq) x),
  (SELECT count(*) FROM (SELECT * FROM hq EXCEPT ALL SELECT * FROM h) x),
  (SELECT count(*) FROM (SELECT * FROM n EXCEPT ALL SELECT * FROM nq) x),
  (SELECT count(*) FROM (SELECT * FROM nq EXCEPT ALL SELECT * FROM n) x),
  (SELECT count(*) FROM agg_minute), (SELECT count(*) FROM agg_hop), (SELECT coalesce(sum(events), 0) FROM agg_name),
  (SELECT count(*) FROM bench_stream))
SQL
)
    set -- $r
    if [ "$1 $2 $3 $4 $5 $6" = "0 0 0 0 0 0" ] && [ "$9" = "${10}" ] && [ "$7" -gt 0 ]; then
        echo "ok"
    else
        out "oracle FAIL after $what on $MODE: agg_minute -/+ $1/$2, agg_hop -/+ $3/$4, agg_name -/+ $5/$6; rows: agg_minute $7, agg_hop $8, agg_name counts $9 events, stream ${10}"
        die "oracle FAIL ($what, $MODE)"
    fi
}

# Arrays of results, keyed by MODE.side: space-separated repetitions.
declare -A POLL_CPU=() COPY_WALL=() COPY_CPU=() INS_TPS=() DRAIN_T=() DRAIN_CPU=() DRAIN_N=() SMALL_T=() SMALL_CPU=() SMALL_N=() PROF=()
add() { local -n arr=$1; arr[$2]="${arr[$2]:-}${arr[$2]:+ }$3"; }

# rotate LIST REP: LIST in order on odd reps, reversed on even ones (for
# three sides: rotated as well, so each goes first once in three reps)
order() {
    local rep=$1; shift
    local a=("$@") n=$# i r=()
    for ((i = 0; i < n; i++)); do r+=("${a[((i + rep - 1) % n)]}"); done
    if [ $((rep % 2)) = 0 ]; then
        local rr=()
        for ((i = n - 1; i >= 0; i--)); do rr+=("${r[i]}"); done
        r=("${rr[@]}")
    fi
    echo "${r[@]}"
}

# ---------------------------------------------------------------- (1) producer
producer() {
    local sides=(plain stream) rep side t wall cpu tps extra
    [ "$AGGS" = 1 ] && sides+=(stream_aggs)
    if [ "$WARMUP" = 1 ]; then
        for side in plain stream; do
            setup "$side"
            "${PSQL[@]}" -c "$(copy_sql "$(table_of $side)")"
        done
        log "$MODE warm-up COPY done"
    fi
    for ((rep = 1; rep <= REPS; rep++)); do
        for side in $(order "$rep" "${sides[@]}"); do
            setup "$side"
            read -r wall cpu < <(measured_sql "$(copy_sql "$(table_of "$side")")")
            [ -n "${cpu:-}" ] || die "COPY into $side failed"
            check_rows "$(table_of "$side")" "$ROWS"
            extra=
            if [ "$side" = stream_aggs ]; then
                t=$(now_s); sql "SELECT stream.flush(NULL, '30 min')" >/dev/null
                extra="  (applied $(elapsed "$t" "$(now_s)") s after commit; oracle $(oracle "COPY with aggregates"))"
            fi
            add COPY_WALL "$MODE.$side" "$wall"; add COPY_CPU "$MODE.$side" "$cpu"
            out "$MODE  COPY    rep $rep  $(printf '%-11s' "$side") wall $(printf '%7.2f' "$wall") s  backend CPU $(printf '%6.2f' "$cpu") s$extra"
        done
    done
    for ((rep = 1; rep <= REPS; rep++)); do
        for side in $(order "$rep" "${sides[@]}"); do
            setup "$side"
            pgbench -n -h "$SRV" -p "$PORT" -U postgres -c "$CLIENTS" -j "$THREADS" -T "$SECS" -M prepared \
                    -f "$SRV/insert_$([ "$side" = plain ] && echo plain || echo stream).pgbench" bench > "$SRV/pgbench.out" 2>&1 ||
                { cat "$SRV/pgbench.out" >&2; die "pgbench failed"; }
            tps=$(awk '/^tps = / { printf "%.1f", $3; exit }' "$SRV/pgbench.out")
            [ -n "$tps" ] || { cat "$SRV/pgbench.out" >&2; die "no tps from pgbench"; }
            extra=
            if [ "$side" = stream_aggs ]; then
                t=$(now_s); sql "SELECT stream.flush(NULL, '30 min')" >/dev/null
                extra="  (applied $(elapsed "$t" "$(now_s)") s after; oracle $(oracle "INSERT with aggregates"))"
            fi
            add INS_TPS "$MODE.$side" "$tps"
            out "$MODE  INSERT  rep $rep  $(printf '%-11s' "$side") $(printf '%8.1f' "$tps") tps$extra"
        done
    done
}

# ---------------------------------------------------------------- (2) drains
# drain KIND REP: KIND big (one COPY of ROWS events) or small (pgbench
# single-row INSERTs with the worker stopped); the worker (and on L and QL
# test_decoding and pgoutput) read it.
drain() {
    local kind=$1 rep=$2 t0 t wall cpu n pid sides side c
    setup drain
    pause_worker
    if decodes "$MODE"; then
        sql "SELECT pg_create_logical_replication_slot('bench_td', 'test_decoding')" >/dev/null
        sql "SELECT pg_create_logical_replication_slot('bench_po', 'pgoutput')" >/dev/null
        sides=$(order "$rep" worker td po)
    else
        sides=worker
    fi
    if [ "$kind" = big ]; then
        read -r wall cpu < <(measured_sql "$(copy_sql bench_stream)")
        [ -n "${cpu:-}" ] || die "COPY of the backlog failed"
        n=$ROWS
        check_rows bench_stream "$n"
        c="COPY $wall s"
    else
        pgbench -n -h "$SRV" -p "$PORT" -U postgres -c "$SMALL_CLIENTS" -j "$THREADS" -T "$SMALL_SECS" -M prepared \
                -f "$SRV/insert_stream.pgbench" bench > "$SRV/pgbench.out" 2>&1 ||
            { cat "$SRV/pgbench.out" >&2; die "pgbench failed"; }
        n=$(sql "SELECT count(*) FROM bench_stream")
        c="pgbench $(awk '/^tps = / { printf "%.0f", $3; exit }' "$SRV/pgbench.out") tps"
    fi
    assert_paused
    local line="$MODE  drain-$kind rep $rep  $n events ($c):"
    for side in $sides; do
        case $side in
            td)
                read -r wall cpu < <(measured_sql "SELECT count(*) FROM pg_logical_slot_get_changes('bench_td', NULL, NULL)")
                [ -n "${cpu:-}" ] || die "test_decoding failed"
                sql "SELECT pg_drop_replication_slot('bench_td')" >/dev/null ;;
            po)
                read -r wall cpu < <(measured_sql "SELECT count(*) FROM pg_logical_slot_get_binary_changes('bench_po', NULL, NULL, 'proto_version', '1', 'publication_names', 'bench_pub')")
                [ -n "${cpu:-}" ] || die "pgoutput failed"
                sql "SELECT pg_drop_replication_slot('bench_po')" >/dev/null ;;
            worker)
                t0=$(now_s)
                resume_worker
                sql "SELECT stream.flush(NULL, '30 min')" >/dev/null
                wall=$(elapsed "$t0" "$(now_s)")
                pid=$(worker_pid)
                cpu=$([ -n "$pid" ] && proc_cpu "$pid" || echo nan) ;;
        esac
        if [ "$kind" = big ]; then
            add DRAIN_T "$MODE.$side" "$wall"; add DRAIN_CPU "$MODE.$side" "$cpu"; add DRAIN_N "$MODE.$side" "$n"
        else
            add SMALL_T "$MODE.$side" "$wall"; add SMALL_CPU "$MODE.$side" "$cpu"; add SMALL_N "$MODE.$side" "$n"
        fi
        line+="  $side $wall s (CPU $cpu s, $(awk -v n="$n" -v t="$wall" 'BEGIN { printf "%.0f", n / t }') ev/s)"
    done
    out "$line  oracle $(oracle "drain-$kind")"
}

# ---------------------------------------------------------------- (5) poll cost
poll() {
    local side w c0 c1 pct tps
    for side in empty full; do
        setup drain
        if [ "$side" = full ]; then
            "${PSQL[@]}" -c "$(copy_sql bench_stream)"
            sql "SELECT stream.flush(NULL, '30 min')" >/dev/null
            sleep 2
        fi
        w=$(worker_pid)
        [ -n "$w" ] || die "poll: no worker"
        c0=$(proc_cpu "$w")
        pgbench -n -h "$SRV" -p "$PORT" -U postgres -c 2 -j 2 -T "$POLL_SECS" -R "$POLL_RATE" -M prepared \
                -f "$SRV/insert_stream.pgbench" bench > "$SRV/pgbench.out" 2>&1 ||
            { cat "$SRV/pgbench.out" >&2; die "pgbench failed"; }
        c1=$(proc_cpu "$w")
        [ "$(worker_pid)" = "$w" ] || log "WARNING: the worker changed during the poll run"
        tps=$(awk '/^tps = / { printf "%.1f", $3; exit }' "$SRV/pgbench.out")
        sql "SELECT stream.flush(NULL, '5 min')" >/dev/null
        pct=$(awk -v a="$c0" -v b="$c1" -v t="$POLL_SECS" 'BEGIN { printf "%.1f", 100 * (b - a) / t }')
        POLL_CPU[$MODE.$side]=$pct
        out "$MODE  poll    stream $side ($(sql "SELECT count(*) FROM bench_stream") rows at the end): pgbench -R $POLL_RATE for $POLL_SECS s, $tps tps; worker CPU $pct% of a core  oracle $(oracle "poll $side")"
    done
}

# ---------------------------------------------------------------- (4) profile
profile() {
    local pid t0 t
    if ! command -v perf >/dev/null; then
        out "$MODE  profile: perf is missing (apt-get install linux-perf)"
        return
    fi
    setup drain
    pause_worker
    "${PSQL[@]}" -c "$(copy_sql bench_stream)"
    t0=$(now_s)
    resume_worker
    pid=
    for _ in $(seq 1 200); do pid=$(worker_pid); [ -n "$pid" ] && break; sleep 0.02; done
    [ -n "$pid" ] || die "profile: no worker"
    if [ "$CALLGRAPH" = dwarf ]; then
        perf record -q -F 999 --call-graph dwarf,16384 -o "$WORK/perf-drain-$MODE.data" -p "$pid" >/dev/null 2>&1 &
    else
        perf record -q -g -o "$WORK/perf-drain-$MODE.data" -p "$pid" >/dev/null 2>&1 &
    fi
    PERF_PID=$!
    sql "SELECT stream.flush(NULL, '30 min')" >/dev/null
    t=$(elapsed "$t0" "$(now_s)")
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=
    {
        echo "== $MODE: perf profile of the worker draining $ROWS events into 3 aggregates ($t s under perf, --call-graph $CALLGRAPH)"
        echo "-- where the time goes (bench/perf_drain.py)"
        perf script -i "$WORK/perf-drain-$MODE.data" -F ip,sym 2>/dev/null | python3 bench/perf_drain.py "$t" || true
        echo "-- self time, top symbols"
        perf report -i "$WORK/perf-drain-$MODE.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
            grep -E '^ +[0-9.]+%' | head -30 || true
        echo "-- with children, top symbols"
        perf report -i "$WORK/perf-drain-$MODE.data" --children --sort symbol --stdio -g none 2>/dev/null |
            grep -E '^ +[0-9.]+%' | head -50 || true
    } | tee -a "$RESULTS"
    PROF[$MODE]=$t
    out "$MODE  profile run: oracle $(oracle profile)"
    cp "$WORK/perf-drain-$MODE.data" "$REPO/tmp/perf-queue-mode-drain-$MODE.data" 2>/dev/null || true
}

# ---------------------------------------------------------------- run
echo "stream_events queue mode benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$RESULTS"
out "host: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $("$PGBIN/postgres" --version) ($PGBIN), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
out "settings: rows=$ROWS reps=$REPS COPY/INSERT pgbench -c $CLIENTS -j $THREADS -T $SECS -M prepared; small-transaction backlog pgbench -c $SMALL_CLIENTS -T $SMALL_SECS; producer with aggregates: $AGGS"
out "code: git $BENCH_COMMIT, install: $INSTALL, extension from $("$PG_CONFIG" --pkglibdir)/stream_events.so ($(stat -c %y "$("$PG_CONFIG" --pkglibdir)/stream_events.so" | cut -d. -f1))"

for MODE in $MODES; do
    start_server "$MODE"
    if want producer; then producer; fi
    if want drain; then
        for ((rep = 1; rep <= REPS; rep++)); do drain big "$rep"; done
    fi
    if want small; then
        for ((rep = 1; rep <= REPS; rep++)); do drain small "$rep"; done
    fi
    if want poll; then poll; fi
    if [ "$PROFILE" = 1 ] && want drain; then profile; fi
    grep -E 'ERROR|PANIC|FATAL|WARNING' "$SRV/server.log" | grep -v -E 'terminating background worker|terminating connection due to administrator command' |
        head -20 | sed "s/^/$MODE server log: /" | tee -a "$RESULTS" || true
    stop_server
done

# ---------------------------------------------------------------- summary
med() { [ -n "${1:-}" ] && median $1 || echo nan; }
rng() { [ -n "${1:-}" ] && echo "$(minimum $1)–$(maximum $1)" || echo "-"; }
eps() { awk -v n="$1" -v t="$2" 'BEGIN { if (t == "nan" || t == 0) print "nan"; else printf "%.0f", n / t }'; }
verdict() { if ge "$1" "$2"; then echo ok; else echo MISSED; fi; }
# per-rep ratios a_i / b_i of two lists, as "min–max"
rep_ratios() {
    local a=($1) b=($2) i r=()
    for ((i = 0; i < ${#a[@]} && i < ${#b[@]}; i++)); do r+=("$(ratio "${a[i]}" "${b[i]}")"); done
    [ ${#r[@]} -gt 0 ] && echo "$(minimum "${r[@]}")–$(maximum "${r[@]}")" || echo "-"
}
{
    echo
    echo "== summary: medians of $REPS reps [min–max]; producer ratios = plain time / stream time (throughput)"
    for MODE in $MODES; do
        if [ -n "${COPY_WALL[$MODE.plain]:-}" ]; then
            for s in plain stream stream_aggs; do
                [ -n "${COPY_WALL[$MODE.$s]:-}" ] || continue
                printf '%-8s COPY %-11s wall %7.2f s [%s]  backend CPU %6.2f s [%s]\n' "$MODE" "$s" \
                    "$(med "${COPY_WALL[$MODE.$s]}")" "$(rng "${COPY_WALL[$MODE.$s]}")" \
                    "$(med "${COPY_CPU[$MODE.$s]}")" "$(rng "${COPY_CPU[$MODE.$s]}")"
            done
            for s in stream stream_aggs; do
                [ -n "${COPY_WALL[$MODE.$s]:-}" ] || continue
                rw=$(ratio "$(med "${COPY_WALL[$MODE.plain]}")" "$(med "${COPY_WALL[$MODE.$s]}")")
                rc=$(ratio "$(med "${COPY_CPU[$MODE.plain]}")" "$(med "${COPY_CPU[$MODE.$s]}")")
                printf '%-8s COPY ratio %-11s wall %s (per rep %s)  CPU %s (per rep %s)  target >= %s: wall %s, CPU %s\n' "$MODE" "$s" \
                    "$rw" "$(rep_ratios "${COPY_WALL[$MODE.plain]}" "${COPY_WALL[$MODE.$s]}")" \
                    "$rc" "$(rep_ratios "${COPY_CPU[$MODE.plain]}" "${COPY_CPU[$MODE.$s]}")" \
                    "$TARGET_PRODUCER" "$(verdict "$rw" $TARGET_PRODUCER)" "$(verdict "$rc" $TARGET_PRODUCER)"
                if [ "$s" = stream ]; then
                    bench_record "queue.copy_ratio_$MODE" "$rw" x ">= $TARGET_PRODUCER" \
                        "$(mode_desc "$MODE"): COPY of $ROWS events, plain table (uuid PK) wall time / stream (dedup) wall time; median of $REPS"
                    bench_record "queue.copy_cpu_ratio_$MODE" "$rc" x ">= $TARGET_PRODUCER" \
                        "$(mode_desc "$MODE"): COPY of $ROWS events, plain table backend CPU / stream backend CPU; median of $REPS"
                else
                    bench_record "queue.copy_ratio_aggs_$MODE" "$rw" x "" \
                        "$(mode_desc "$MODE"): COPY of $ROWS events, plain / stream with 3 aggregates + 1 on_event (wall); CPU ratio $rc"
                fi
            done
        fi
        if [ -n "${INS_TPS[$MODE.plain]:-}" ]; then
            for s in plain stream stream_aggs; do
                [ -n "${INS_TPS[$MODE.$s]:-}" ] || continue
                printf '%-8s INSERT %-11s %8.1f tps [%s]\n' "$MODE" "$s" "$(med "${INS_TPS[$MODE.$s]}")" "$(rng "${INS_TPS[$MODE.$s]}")"
            done
            for s in stream stream_aggs; do
                [ -n "${INS_TPS[$MODE.$s]:-}" ] || continue
                r=$(ratio "$(med "${INS_TPS[$MODE.$s]}")" "$(med "${INS_TPS[$MODE.plain]}")")
                printf '%-8s INSERT ratio %-11s %s (per rep %s)  target >= %s: %s\n' "$MODE" "$s" "$r" \
                    "$(rep_ratios "${INS_TPS[$MODE.$s]}" "${INS_TPS[$MODE.plain]}")" "$TARGET_PRODUCER" "$(verdict "$r" $TARGET_PRODUCER)"
                if [ "$s" = stream ]; then
                    bench_record "queue.insert_ratio_$MODE" "$r" x ">= $TARGET_PRODUCER" \
                        "$(mode_desc "$MODE"): pgbench single-row INSERT, $CLIENTS clients, stream / plain table tps; median of $REPS"
                else
                    bench_record "queue.insert_ratio_aggs_$MODE" "$r" x "" \
                        "$(mode_desc "$MODE"): pgbench single-row INSERT, $CLIENTS clients, stream with 3 aggregates + 1 on_event / plain tps"
                fi
            done
        fi
        for kind in big small; do
            if [ $kind = big ]; then declare -n T=DRAIN_T C=DRAIN_CPU N=DRAIN_N; what="$ROWS events in one COPY"
            else declare -n T=SMALL_T C=SMALL_CPU N=SMALL_N; what="single-row txns of $SMALL_CLIENTS clients x ${SMALL_SECS}s"; fi
            [ -n "${T[$MODE.worker]:-}" ] || continue
            for s in worker td po; do
                [ -n "${T[$MODE.$s]:-}" ] || continue
                printf '%-8s drain %-5s %-6s %7.2f s [%s]  CPU %6.2f s [%s]  %s ev/s  (%s; events %s)\n' "$MODE" "$kind" "$s" \
                    "$(med "${T[$MODE.$s]}")" "$(rng "${T[$MODE.$s]}")" "$(med "${C[$MODE.$s]}")" "$(rng "${C[$MODE.$s]}")" \
                    "$(eps "$(med "${N[$MODE.$s]}")" "$(med "${T[$MODE.$s]}")")" "$what" "${N[$MODE.$s]}"
            done
            if [ -n "${T[$MODE.td]:-}" ]; then
                rt=$(ratio "$(med "${T[$MODE.td]}")" "$(med "${T[$MODE.worker]}")")
                rp=$(ratio "$(med "${T[$MODE.po]}")" "$(med "${T[$MODE.worker]}")")
                if [ $kind = big ]; then
                    printf '%-8s drain big: worker vs test_decoding %sx (per rep %s, target >= %s: %s), vs pgoutput %sx (per rep %s, target >= %s: %s)\n' "$MODE" \
                        "$rt" "$(rep_ratios "${T[$MODE.td]}" "${T[$MODE.worker]}")" "$TARGET_TD" "$(verdict "$rt" $TARGET_TD)" \
                        "$rp" "$(rep_ratios "${T[$MODE.po]}" "${T[$MODE.worker]}")" "$TARGET_PO" "$(verdict "$rp" $TARGET_PO)"
                    bench_record "queue.drain_vs_test_decoding_$MODE" "$rt" x ">= $TARGET_TD" \
                        "$(mode_desc "$MODE"): drain of $ROWS events (one COPY) into 3 aggregates, test_decoding time / worker time, same WAL"
                    bench_record "queue.drain_vs_pgoutput_$MODE" "$rp" x ">= $TARGET_PO" \
                        "$(mode_desc "$MODE"): drain of $ROWS events (one COPY) into 3 aggregates, pgoutput time / worker time, same WAL"
                else
                    printf '%-8s drain small: worker vs test_decoding %sx, vs pgoutput %sx (no target)\n' "$MODE" "$rt" "$rp"
                fi
            fi
            if [ $kind = big ]; then
                bench_record "queue.drain_eps_$MODE" "$(eps "$ROWS" "$(med "${T[$MODE.worker]}")")" events/s "" \
                    "$(mode_desc "$MODE"): drain of a $ROWS-event backlog (one COPY) into 3 aggregates, resume → flush; median of $REPS"
            else
                bench_record "queue.drain_small_eps_$MODE" "$(eps "$(med "${N[$MODE.worker]}")" "$(med "${T[$MODE.worker]}")")" events/s "" \
                    "$(mode_desc "$MODE"): drain of the single-row transactions of $SMALL_CLIENTS pgbench clients x ${SMALL_SECS}s into 3 aggregates"
            fi
            unset -n T C N
        done
    done
    for kind in big small; do
        if [ $kind = big ]; then declare -n T=DRAIN_T N=DRAIN_N; else declare -n T=SMALL_T N=SMALL_N; fi
        if [ -n "${T[queue.worker]:-}" ] && [ -n "${T[logical.worker]:-}" ]; then
            eq=$(eps "$(med "${N[queue.worker]}")" "$(med "${T[queue.worker]}")")
            el=$(eps "$(med "${N[logical.worker]}")" "$(med "${T[logical.worker]}")")
            r=$(ratio "$eq" "$el")
            printf 'drain %-5s queue / logical (events/s): %s / %s = %sx\n' "$kind" "$eq" "$el" "$r"
            if [ $kind = big ]; then
                bench_record queue.drain_ratio_queue_vs_logical "$r" x "" \
                    "drain of a $ROWS-event backlog into 3 aggregates: queue mode events/s / logical mode events/s"
                if [ -n "${T[logical.td]:-}" ]; then
                    printf 'drain big   queue worker vs logical test_decoding %sx, vs pgoutput %sx (different servers; no target)\n' \
                        "$(ratio "$(med "${T[logical.td]}")" "$(med "${T[queue.worker]}")")" \
                        "$(ratio "$(med "${T[logical.po]}")" "$(med "${T[queue.worker]}")")"
                fi
            else
                bench_record queue.drain_small_ratio_queue_vs_logical "$r" x "" \
                    "drain of a backlog of single-row transactions into 3 aggregates: queue mode events/s / logical mode events/s"
            fi
        fi
        unset -n T N
    done
    for MODE in $MODES; do
        [ -n "${POLL_CPU[$MODE.empty]:-}" ] || continue
        printf '%-8s poll at %s events/s: worker CPU %s%% of a core with the stream empty, %s%% holding %s events\n' "$MODE" "$POLL_RATE" \
            "${POLL_CPU[$MODE.empty]}" "${POLL_CPU[$MODE.full]}" "$ROWS"
        bench_record "queue.poll_cpu_empty_$MODE" "${POLL_CPU[$MODE.empty]}" "% core" "" \
            "$(mode_desc "$MODE"): the worker's CPU while pgbench inserts $POLL_RATE events/s (3 aggregates), stream empty"
        bench_record "queue.poll_cpu_full_$MODE" "${POLL_CPU[$MODE.full]}" "% core" "" \
            "$(mode_desc "$MODE"): the worker's CPU while pgbench inserts $POLL_RATE events/s (3 aggregates), stream holding $ROWS events"
    done
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$RESULTS"
echo "results saved in $RESULTS"
