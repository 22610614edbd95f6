#!/usr/bin/env bash
# bench/activation.sh: activations, measured in one run on one throwaway
# server (wal_level = logical, the library preloaded, our output plugin
# allowed where output_plugin_libraries exists; durable: fsync and
# synchronous_commit on), against plain PostgreSQL doing the same job.
#
#  (1) latency, producer commit -> the line printed by the listening client:
#      raw  a plain table (the stream's 9 columns) with an AFTER INSERT row
#           trigger PERFORM pg_notify('raw', row_to_json(NEW)::text), heard
#           by a LISTEN client (activation_driver.py rawlisten) - the baseline
#      batched    stream.on_event(..., delivery => 'batched') (the worker fires
#                 from logical decoding), heard by stream_listen
#      immediate  stream.on_event(..., delivery => 'immediate') (a row trigger
#                 fires in the producer's transaction), heard by stream_listen
#      at 1 and 8 producers, each inserting single events (one transaction
#      each) at BENCH_RATE/s (exponential gaps).  Latency = when the listener's
#      line reached the reader - when the producer's INSERT (commit included)
#      returned; every event carries its own user_id, the activation's key.
#      Target: p99(mode) / p99(raw) <= 1.5.
#  (2) producer throughput: pgbench single-row INSERTs (bench/activation_insert.pgbench,
#      10 event names) into a stream without activations, with one on_event
#      matching 10% (event_name = 'purchase'), batched and immediate, and one
#      matching all events; 1 and BENCH_CLIENTS clients; fresh stream each run,
#      sides alternate.  Target: with / without >= 0.85.  For reference, the
#      same stream with the baseline's raw NOTIFY row trigger instead (10% and
#      all events): what plain PostgreSQL's NOTIFY costs the producers.
#  (3) on_absence, target p99 of the firing delay after the deadline <= 1 s:
#      (a) burst: BENCH_TIMERS add_to_cart events (distinct users, 10 big
#      multi-row INSERTs) open as many timers (within BENCH_WITHIN seconds);
#      each INSERT is followed by purchases cancelling BENCH_CANCEL_PCT% of
#      its users; the rest expire within a second or two of each other.
#      Delay of every firing: fired_at - due_at (stream.activations) and
#      stream_listen's line arrival - due_at.  Also the time to insert the
#      events with and without the activation, and until the worker has
#      opened the timers (stream.flush).
#      (b) steady: BENCH_TIMERS timers open (within 1 hour) while probe
#      timers (within BENCH_PROBE_WITHIN s, 10% cancelled) are opened by
#      pgbench -R BENCH_PROBE_RATE for BENCH_PROBE_SECONDS and expire one by
#      one: the same delays, for the probes.
#
# Environment:
#   BENCH_LAT_SECONDS=5    latency: seconds of events per configuration and
#                          repetition (BENCH_RATE x producers x this many events:
#                          every producer count gets as long a run, so the 8
#                          producers' p99 is not the tail of a 1-second burst)
#   BENCH_EVENTS=          latency: a fixed number of events per configuration instead
#   BENCH_RATE=200         latency: events/s of each producer
#   BENCH_PRODUCERS="1 8"  latency: producer counts
#   BENCH_SECONDS=10       one pgbench run
#   BENCH_CLIENTS=8 BENCH_THREADS=2   pgbench -c / -j of the concurrent runs (the other is -c 1)
#   BENCH_REPS=2           repetitions of (1) and (2)
#   BENCH_TIMERS=100000 BENCH_WITHIN=5 BENCH_CANCEL_PCT=20   (3a)
#   BENCH_PROBE_RATE=50 BENCH_PROBE_SECONDS=10 BENCH_PROBE_WITHIN=2   (3b)
#   BENCH_ONLY=            latency | insert | absence: one part only
#   BENCH_BUILD=1          build and install first (0: the installed extension)
#   BENCH_KEEP=0           1: keep the data directory.
#   BENCH_RECORD           1: record the figures in bench/results.tsv and the
#                          README table (default: at the default sizes)
# See bench/README.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

EVENTS=${BENCH_EVENTS:-}
LAT_SECS=${BENCH_LAT_SECONDS:-5}
RATE=${BENCH_RATE:-200}
PRODUCERS=${BENCH_PRODUCERS:-"1 8"}
SECS=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-8}
THREADS=${BENCH_THREADS:-2}
REPS=${BENCH_REPS:-2}
TIMERS=${BENCH_TIMERS:-100000}
WITHIN=${BENCH_WITHIN:-5}
CANCEL_PCT=${BENCH_CANCEL_PCT:-20}
PROBE_WITHIN=${BENCH_PROBE_WITHIN:-2}
PROBE_RATE=${BENCH_PROBE_RATE:-50}
PROBE_SECONDS=${BENCH_PROBE_SECONDS:-10}
ONLY=${BENCH_ONLY:-}
BUILD=${BENCH_BUILD:-1}
KEEP=${BENCH_KEEP:-0}
TARGET_LAT=1.5      # p99 on_event / p99 raw NOTIFY, at most
TARGET_INS=0.85     # tps with / without, at least
TARGET_ABS=1000     # ms, p99 of fired_at - due_at, at most
NOISE=10            # % spread of the throughput repetitions above which we warn

if [ "$BUILD" = 1 ]; then
    scripts/setup.sh
fi
. scripts/lib.sh
. bench/lib.sh
RECORD=${BENCH_RECORD:-$(bench_defaults EVENTS= LAT_SECS=5 RATE=200 "PRODUCERS=1 8" SECS=10 CLIENTS=8 THREADS=2 REPS=2 TIMERS=100000 WITHIN=5 CANCEL_PCT=20 PROBE_RATE=50 PROBE_SECONDS=10 PROBE_WITHIN=2)}
MEDIAN_FORMAT=%.1f

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bench_build
PATH="$PGBIN:$PATH"
command -v stream_listen >/dev/null ||
    die "stream_listen is not installed in $PGBIN (make install builds it from src/stream_listen)"

WORK=$(pg_workdir "$REPO/tmp/bench-activation")
cluster_stop "$WORK" immediate
rm -rf "${WORK:?}"/*
PORT=$(free_port 5470)
mkdir -p "$REPO/tmp"
RESULTS="$REPO/tmp/bench-activation-$(date +%Y%m%d-%H%M%S).txt"
BG_PIDS=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    cluster_stop "$WORK" fast
    if [ "$KEEP" != 1 ]; then
        rm -rf "${WORK:?}/data"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "server on port $PORT under $WORK (shared_buffers=2GB, fsync=on, synchronous_commit=on)"
cluster_init "$WORK" "$PORT" "${BENCH_SERVER_CONF[@]}"
cluster_start "$WORK"

export PGOPTIONS="-c client_min_messages=warning"
export PGTZ=UTC
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
PSQL+=(-d bench)
"${PSQL[@]}" -c "CREATE EXTENSION stream_events"
# the baseline's trigger function: NOTIFY with the row as JSON
"${PSQL[@]}" <<'SQL'
CREATE FUNCTION raw_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('raw', row_to_json(NEW)::text);
    RETURN NULL;
END $$;
SQL
CONNINFO="host=$WORK port=$PORT user=postgres dbname=bench"
DRIVER=(python3 "$REPO/bench/activation_driver.py")

field() { echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }   # field NAME "a=1 b=2"
out() { echo "$*" | tee -a "$RESULTS" >&2; }

# Removes every activation, stream and baseline table, empties the outbox;
# each measurement starts from an empty database.
reset_db() {
    "${PSQL[@]}" -o /dev/null <<'SQL'
SELECT stream.drop_activation(name) FROM stream.activation_defs;
SELECT stream.drop_stream(s.relid) FROM stream.streams AS s;
DROP TABLE IF EXISTS raw_clicks;
TRUNCATE stream.activations;
CHECKPOINT;
SQL
}

# A plain table with the stream's columns and a raw NOTIFY row trigger.
create_raw() {
    "${PSQL[@]}" -o /dev/null <<'SQL'
CREATE TABLE raw_clicks (
    event_id     uuid        NOT NULL DEFAULT stream.uuid_v7() PRIMARY KEY,
    event_name   text        NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    received_at  timestamptz NOT NULL DEFAULT statement_timestamp(),
    user_id      text,
    anonymous_id text,
    session_id   text,
    properties   jsonb       NOT NULL DEFAULT '{}',
    context      jsonb       NOT NULL DEFAULT '{}'
);
CREATE TRIGGER raw_notify AFTER INSERT ON raw_clicks
    FOR EACH ROW WHEN (NEW.event_name = 'purchase') EXECUTE FUNCTION raw_notify();
SQL
}

# create_stream NAME [on_event delivery [condition]]; delivery "notify": no
# activation but the baseline's raw NOTIFY trigger on the stream
create_stream() {
    local s=$1 delivery=${2:-} cond=${3:-"event_name = 'purchase'"}
    sql "SELECT stream.create_stream('$s')" >/dev/null
    if [ "$delivery" = notify ]; then
        sql "CREATE TRIGGER raw_notify AFTER INSERT ON $s FOR EACH ROW WHEN ($(echo "$cond" | sed 's/event_name/NEW.event_name/')) EXECUTE FUNCTION raw_notify()" >/dev/null
    elif [ -n "$delivery" ]; then
        sql "SELECT stream.on_event('act', '$s', \$c\$$cond\$c\$, channel => 'act', delivery => '$delivery', notify => 'full')" >/dev/null
    fi
}

echo "stream_events activation benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$RESULTS"
out "host: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $("$PGBIN/postgres" --version), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
out "settings: latency ${EVENTS:-${LAT_SECS} s of} events x ${REPS} reps per configuration at ${RATE}/s per producer (producers: $PRODUCERS); pgbench -c 1 and -c $CLIENTS -j $THREADS -T $SECS x $REPS; timers $TIMERS within ${WITHIN}s, ${CANCEL_PCT}% cancelled; aggregate_poll_interval=$(sql "SHOW stream_events.aggregate_poll_interval")"
out "extension: $(sql "SELECT extversion FROM pg_extension WHERE extname = 'stream_events'") from $("$PG_CONFIG" --pkglibdir)/stream_events.so ($(stat -c %y "$("$PG_CONFIG" --pkglibdir)/stream_events.so" | cut -d. -f1)), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src sql 2>/dev/null || echo '+changes'); $(stream_listen --version 2>/dev/null | head -1)"
LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)

# ---------------------------------------------------------------- (1) latency
# events of one configuration with $1 producers
events_for() { if [ -n "$EVENTS" ]; then echo "$EVENTS"; else awk -v r="$RATE" -v p="$1" -v s="$LAT_SECS" 'BEGIN { printf "%d", r * p * s }'; fi; }
MODES="raw batched immediate"
declare -A LAT=()      # "$mode $p" -> stats line over all repetitions
declare -A LATREPS=()  # "$mode $p" -> p99 of each repetition
if want latency; then
    rm -f "$WORK"/lat-*.txt "$WORK"/ins-*.txt
    for ((rep = 1; rep <= REPS; rep++)); do
        # alternate the order of the modes from one repetition to the next
        order=$MODES
        [ $((rep % 2)) = 0 ] && order=$(echo "$MODES" | tr ' ' '\n' | tac | tr '\n' ' ')
        for p in $PRODUCERS; do
            for mode in $order; do
                reset_db
                if [ "$mode" = raw ]; then
                    create_raw
                    table=raw_clicks
                    listen=("${DRIVER[@]}" rawlisten --conninfo "$CONNINFO" --channel raw)
                else
                    create_stream lat_clicks "$mode"
                    table=lat_clicks
                    listen=(stream_listen -d "$CONNINFO" -c act)
                fi
                res=$("${DRIVER[@]}" latency --conninfo "$CONNINFO" --table "$table" --tag "r${rep}_${mode}_${p}" \
                          --producers "$p" --events "$(events_for "$p")" --rate "$RATE" \
                          --out "$WORK/lat-$mode-$p.txt" --insert-out "$WORK/ins-$mode-$p.txt" \
                          --listener-log "$WORK/listener.log" -- "${listen[@]}") ||
                    { tail -5 "$WORK/listener.log" >&2; die "latency run failed ($mode, $p producers)"; }
                LATREPS["$mode $p"]="${LATREPS["$mode $p"]:-} $(field p99 "$res")"
                m=$(field missing "$res")
                [ "$m" = 0 ] || log "WARNING: $mode, $p producers: $m of $(field sent "$res") events never reached the listener"
                [ "$(field dup "$res")" = 0 ] || log "WARNING: $mode, $p producers: $(field dup "$res") events printed twice"
                out "latency rep $rep  $(printf '%-9s' "$mode") $p producer(s)  $res"
            done
        done
    done
    for p in $PRODUCERS; do
        for mode in $MODES; do
            LAT["$mode $p"]=$("${DRIVER[@]}" stats "$WORK/lat-$mode-$p.txt")
            LAT["$mode $p insert"]=$("${DRIVER[@]}" stats "$WORK/ins-$mode-$p.txt")
        done
    done
fi

# ---------------------------------------------------------------- (2) throughput
SIDES="none batched immediate notify batched_all immediate_all notify_all"
declare -A TPS=()      # "$side $c" -> tps of every repetition
declare -A CATCHUP=()  # "$side $c" -> seconds to flush after the run
if want insert; then
    sed "s/@TABLE@/ins_clicks/" bench/activation_insert.pgbench > "$WORK/insert.pgbench"
    for ((rep = 1; rep <= REPS; rep++)); do
        order=$SIDES
        [ $((rep % 2)) = 0 ] && order=$(echo "$SIDES" | tr ' ' '\n' | tac | tr '\n' ' ')
        for c in 1 "$CLIENTS"; do
            j=$((c < THREADS ? c : THREADS))
            for side in $order; do
                reset_db
                case $side in
                    none) create_stream ins_clicks ;;
                    batched | immediate | notify) create_stream ins_clicks "$side" ;;
                    *_all) create_stream ins_clicks "${side%_all}" "event_name <> ''" ;;
                esac
                # the worker has loaded the new definition before the run starts
                sql "SELECT stream.flush(NULL, '1 min')" >/dev/null
                pgbench -n -h "$WORK" -p "$PORT" -U postgres -c "$c" -j "$j" -T "$SECS" \
                        -M prepared -f "$WORK/insert.pgbench" bench > "$WORK/pgbench.out" 2>&1 ||
                    { cat "$WORK/pgbench.out" >&2; die "pgbench failed ($side, $c clients)"; }
                tps=$(awk '/^tps = / { printf "%.1f", $3; exit }' "$WORK/pgbench.out")
                failed=$(awk '/^number of failed transactions/ { print $5; exit }' "$WORK/pgbench.out")
                [ "${failed:-0}" = 0 ] || log "WARNING: $failed failed transactions ($side, $c clients)"
                TPS["$side $c"]="${TPS["$side $c"]:-} $tps"
                extra=
                if [ "$side" != none ] && [ "${side#notify}" = "$side" ]; then
                    t0=$(now_s)
                    sql "SELECT stream.flush(NULL, '10 min')" >/dev/null
                    t=$(elapsed "$t0" "$(now_s)")
                    CATCHUP["$side $c"]="${CATCHUP["$side $c"]:-} $t"
                    cond=$([ "${side%_all}" = "$side" ] && echo "event_name = 'purchase'" || echo "event_name <> ''")
                    read -r fired want_n < <(sql "SELECT (SELECT count(*) FROM stream.activations WHERE activation = 'act'),
                                                         (SELECT count(*) FROM ins_clicks WHERE $cond)" | tr '|' ' ')
                    extra="  fired $fired of $want_n matching (caught up ${t}s after the run)"
                    [ "$fired" = "$want_n" ] || log "WARNING: $side, $c clients: $fired activations for $want_n matching events"
                fi
                out "insert  rep $rep  $(printf '%-13s' "$side") $(printf '%2d' "$c") client(s)  $(printf '%8.1f' "$tps") tps$extra"
            done
        done
    done
fi

# ---------------------------------------------------------------- (3) on_absence
ABS_FIRED=; ABS_EXPECTED=; ABS_STATS=; ABS_LISTEN=; ABS_LATE=; ABS_SPAN=; ABS_DUE_SPAN=
ABS_INS_NONE=; ABS_INS_WITH=; ABS_OPENED=
PRB_FIRED=; PRB_EXPECTED=; PRB_STATS=; PRB_LISTEN=; PRB_OPEN=; PRB_TPS=; PRB_INS=
BATCHES=10
# open_sql STREAM NCANCEL: BATCHES statements of TIMERS/BATCHES add_to_cart
# events (distinct users), each followed by one of NCANCEL purchases that
# cancel the first users of that batch; every statement its own transaction.
open_sql() {
    local s=$1 ncancel=$2 per=$((TIMERS / BATCHES)) b
    for ((b = 0; b < BATCHES; b++)); do
        echo "INSERT INTO $s (event_name, user_id, session_id, properties)
              SELECT 'add_to_cart', 'cart_' || g, 's_' || g,
                     jsonb_build_object('product_id', 'prod_' || g % 2000, 'price', 5 + g % 195, 'currency', 'EUR')
              FROM generate_series($((b * per + 1)), $(((b + 1) * per))) g;"
        if [ "$ncancel" -gt 0 ]; then
            echo "INSERT INTO $s (event_name, user_id, session_id, properties)
                  SELECT 'purchase', 'cart_' || g, 's_' || g, jsonb_build_object('order_id', 'o_' || g)
                  FROM generate_series($((b * per + 1)), $((b * per + ncancel))) g;"
        fi
    done
}
# on_absence NAME STARTED_BY_EVENT CANCELLED_BY_EVENT WITHIN_SECONDS
on_absence() {
    sql "SELECT stream.on_absence('$1', 'carts', started_by => \$\$event_name = '$2'\$\$,
                                  cancelled_by => \$\$event_name = '$3'\$\$,
                                  within => '$4 seconds', key => 'user_id', notify => 'full')" >/dev/null
}
# How many timers of activation $1 should have fired: started, and no
# cancelling event for the key before the deadline.
absence_expected() {
    sql "SELECT count(*) FROM carts s WHERE s.event_name = '$2' AND NOT EXISTS (
           SELECT 1 FROM carts c WHERE c.event_name = '$3' AND c.user_id = s.user_id
              AND c.received_at >= s.received_at AND c.received_at < s.received_at + interval '$4 seconds')"
}
# Waits until activation $1 has no open timer and its last deadline ($2,
# epoch) has passed (5 minutes at most), then until the worker is idle.
absence_wait() {
    local left=
    for _ in $(seq 1 3000); do
        left=$(sql "SELECT count(*) FROM stream.absence_timers t JOIN stream.activation_defs d USING (act_id) WHERE d.name = '$1'")
        if [ "$left" = 0 ] && ge "$(now_s)" "$2"; then break; fi
        sleep 0.1
    done
    [ "$left" = 0 ] || log "WARNING: $left timers of $1 still open 5 minutes after the last deadline"
    sql "SELECT stream.flush(NULL, '10 min')" >/dev/null
}
# fired_at - due_at of activation $1's firings (ms): n p50 p99 max min, late count
absence_stats() {
    sql "SELECT count(*) FILTER (WHERE late),
        format('n=%s p50=%s p99=%s max=%s min=%s', count(*),
               round(percentile_disc(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2),
               round(percentile_disc(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2),
               round(max(ms)::numeric, 2), round(min(ms)::numeric, 2))
        FROM (SELECT late, extract(epoch FROM fired_at - due_at) * 1000 AS ms
              FROM stream.activations WHERE activation = '$1') s" | tr '|' ' '
}
# start_capture CHANNEL: stream_listen on CHANNEL, every line timestamped
start_capture() {
    "${DRIVER[@]}" capture --out "$WORK/capture-$1.txt" -- stream_listen -d "$CONNINFO" -c "$1" 2>>"$WORK/listener.log" &
    CAP_PID=$!
    BG_PIDS+=("$CAP_PID")
    sleep 1
}
# stop_capture ACTIVATION: once the listener has printed every firing
stop_capture() {
    local n got
    n=$(sql "SELECT count(*) FROM stream.activations WHERE activation = '$1'")
    for _ in $(seq 1 200); do
        got=$(grep -c "\"activation\": *\"$1\"" "$WORK/capture-$1.txt" 2>/dev/null) || true
        [ "${got:-0}" -ge "$n" ] && break
        sleep 0.1
    done
    kill "$CAP_PID" 2>/dev/null || true
    wait "$CAP_PID" 2>/dev/null || true
    "${DRIVER[@]}" absence --capture "$WORK/capture-$1.txt" --activation "$1" --out "$WORK/listen-$1.txt"
}

if want absence; then
    ncancel=$((TIMERS / BATCHES * CANCEL_PCT / 100))
    # (a) burst: TIMERS timers opened by big INSERTs, expiring together
    reset_db
    create_stream carts
    t0=$(now_s); open_sql carts "$ncancel" | "${PSQL[@]}"; ABS_INS_NONE=$(elapsed "$t0" "$(now_s)")
    log "absence: $TIMERS add_to_cart + $((ncancel * BATCHES)) purchase events into a stream without activations: ${ABS_INS_NONE}s"
    reset_db
    create_stream carts
    on_absence abandon add_to_cart purchase "$WITHIN"
    sql "SELECT stream.flush(NULL, '1 min')" >/dev/null
    start_capture abandon
    t0=$(now_s); open_sql carts "$ncancel" | "${PSQL[@]}"; ABS_INS_WITH=$(elapsed "$t0" "$(now_s)")
    sql "SELECT stream.flush(NULL, '10 min')" >/dev/null
    ABS_OPENED=$(elapsed "$t0" "$(now_s)")
    log "absence: the same with on_absence: inserts ${ABS_INS_WITH}s, timers opened/cancelled by the worker ${ABS_OPENED}s after the first insert ($(sql "SELECT count(*) FROM stream.absence_timers") open then)"
    ABS_EXPECTED=$(absence_expected abandon add_to_cart purchase "$WITHIN")
    absence_wait abandon "$(sql "SELECT extract(epoch FROM max(received_at) + interval '$WITHIN seconds') FROM carts")"
    read -r ABS_LATE ABS_STATS < <(absence_stats abandon)
    ABS_FIRED=$(field n "$ABS_STATS")
    read -r ABS_SPAN ABS_DUE_SPAN < <(sql "SELECT round(extract(epoch FROM max(fired_at) - min(due_at))::numeric, 2),
                                                  round(extract(epoch FROM max(due_at) - min(due_at))::numeric, 2)
                                           FROM stream.activations WHERE activation = 'abandon'" | tr '|' ' ')
    ABS_LISTEN=$(stop_capture abandon)
    [ "$ABS_FIRED" = "$ABS_EXPECTED" ] || log "WARNING: on_absence fired $ABS_FIRED times, expected $ABS_EXPECTED"
    out "absence burst   fired $ABS_FIRED (expected $ABS_EXPECTED, late $ABS_LATE); deadlines over ${ABS_DUE_SPAN}s, the last fired ${ABS_SPAN}s after the first; fired_at - due_at ms: $ABS_STATS"
    out "absence burst   stream_listen line - due_at ms: $ABS_LISTEN"

    # (b) steady: TIMERS timers open (within 1 hour), probes expiring one by one
    reset_db
    create_stream carts
    on_absence hold add_to_cart purchase 3600
    on_absence probe probe_start probe_cancel "$PROBE_WITHIN"
    sql "SELECT stream.flush(NULL, '1 min')" >/dev/null
    open_sql carts 0 | "${PSQL[@]}"
    sql "SELECT stream.flush(NULL, '10 min')" >/dev/null
    PRB_OPEN=$(sql "SELECT count(*) FROM stream.absence_timers")
    start_capture probe
    sed "s/@TABLE@/carts/" bench/activation_probe.pgbench > "$WORK/probe.pgbench"
    pgbench -n -h "$WORK" -p "$PORT" -U postgres -c 1 -R "$PROBE_RATE" -T "$PROBE_SECONDS" \
            -M prepared -f "$WORK/probe.pgbench" bench > "$WORK/pgbench-probe.out" 2>&1 ||
        { cat "$WORK/pgbench-probe.out" >&2; die "pgbench (probes) failed"; }
    PRB_TPS=$(awk '/^tps = / { printf "%.1f", $3; exit }' "$WORK/pgbench-probe.out")
    PRB_EXPECTED=$(absence_expected probe probe_start probe_cancel "$PROBE_WITHIN")
    absence_wait probe "$(sql "SELECT extract(epoch FROM max(received_at) + interval '$PROBE_WITHIN seconds') FROM carts")"
    read -r _ PRB_STATS < <(absence_stats probe)
    PRB_FIRED=$(field n "$PRB_STATS")
    PRB_LISTEN=$(stop_capture probe)
    [ "$PRB_FIRED" = "$PRB_EXPECTED" ] || log "WARNING: the probe activation fired $PRB_FIRED times, expected $PRB_EXPECTED"
    hold_left=$(sql "SELECT count(*) FROM stream.absence_timers t JOIN stream.activation_defs d USING (act_id) WHERE d.name = 'hold'")
    [ "$hold_left" = "$TIMERS" ] || log "WARNING: $hold_left of the $TIMERS one-hour timers are open, expected all"
    out "absence steady  $PRB_OPEN timers open; probes at $PRB_TPS/s (within ${PROBE_WITHIN}s, 10% cancelled): fired $PRB_FIRED (expected $PRB_EXPECTED); fired_at - due_at ms: $PRB_STATS"
    out "absence steady  stream_listen line - due_at ms: $PRB_LISTEN"
fi

# ---------------------------------------------------------------- summary
verdict_le() { if le "$1" "$2"; then echo PASS; else echo MISS; fi; }
verdict_ge() { if ge "$1" "$2"; then echo PASS; else echo MISS; fi; }
{
    echo
    echo "== summary"
    if want latency; then
        echo "latency, producer commit -> listener line (ms; ${EVENTS:-${LAT_SECS} s of} events x ${REPS} reps per row; ratio = p99 / p99 of raw NOTIFY, target <= $TARGET_LAT)"
        for p in $PRODUCERS; do
            raw99=$(field p99 "${LAT["raw $p"]}")
            for mode in $MODES; do
                s=${LAT["$mode $p"]}
                line=$(printf '  %-9s %d producer(s)  p50 %7s  p99 %7s  max %8s  (n %s, p99 per rep:%s; INSERT+COMMIT p50 %s ms)' \
                    "$mode" "$p" "$(field p50 "$s")" "$(field p99 "$s")" "$(field max "$s")" "$(field n "$s")" \
                    "${LATREPS["$mode $p"]}" "$(field p50 "${LAT["$mode $p insert"]}")")
                if [ "$mode" = raw ]; then
                    echo "$line"
                else
                    r=$(ratio "$(field p99 "$s")" "$raw99")
                    echo "$line  p99 ratio $r $(verdict_le "$r" $TARGET_LAT)"
                    bench_record "activation.latency_ratio.$mode.${p}p" "$r" x "<= $TARGET_LAT" \
                        "on_event $mode, $p producer(s): p99 commit → stream_listen line / p99 of raw NOTIFY"
                    bench_record "activation.p99.$mode.${p}p" "$(field p99 "$s")" ms "" \
                        "on_event $mode, $p producer(s): p99 commit → stream_listen line"
                    bench_forget "activation.${mode}_p99"
                fi
            done
        done
    fi
    if want insert; then
        echo "producer INSERT throughput (pgbench -T $SECS, median of $REPS; ratio = tps with / without, target >= $TARGET_INS)"
        for c in 1 "$CLIENTS"; do
            none=$(median ${TPS["none $c"]})
            printf '  %-28s %2d client(s)  %8.1f tps  (reps:%s)\n' "no activation" "$c" "$none" "${TPS["none $c"]}"
            for side in batched immediate notify batched_all immediate_all notify_all; do
                t=$(median ${TPS["$side $c"]})
                r=$(ratio "$t" "$none")
                case $side in
                    notify) label="raw NOTIFY trigger, 10%" ;;
                    notify_all) label="raw NOTIFY trigger, all" ;;
                    *_all) label="${side%_all}, all events match" ;;
                    *) label="$side, 10% match" ;;
                esac
                if [ "${side#notify}" = "$side" ]; then
                    printf '  %-28s %2d client(s)  %8.1f tps  ratio %s %s  (reps:%s; flush after:%s s)\n' \
                        "$label" "$c" "$t" "$r" "$(verdict_ge "$r" $TARGET_INS)" "${TPS["$side $c"]}" "${CATCHUP["$side $c"]}"
                    bench_record "activation.insert_ratio.$side.${c}c" "$r" x ">= $TARGET_INS" \
                        "producer INSERT, $c client(s), on_event $label: tps with / without"
                else
                    printf '  %-28s %2d client(s)  %8.1f tps  ratio %s (reference: plain PostgreSQL NOTIFY)  (reps:%s)\n' \
                        "$label" "$c" "$t" "$r" "${TPS["$side $c"]}"
                    bench_record "activation.insert_ratio.$side.${c}c" "$r" x "" \
                        "producer INSERT, $c client(s), $label (reference): tps with / without"
                fi
            done
            for side in $SIDES; do
                # shellcheck disable=SC2086
                sp=$(spread ${TPS["$side $c"]})
                if [ "$sp" -gt $NOISE ]; then
                    echo "  WARNING: the $c-client repetitions of '$side' differ by $sp% (> $NOISE%): something else was using the machine; rerun when it is idle"
                fi
            done
        done
    fi
    if want absence; then
        echo "on_absence firing delay after the deadline (ms; target p99 fired_at - due_at <= $TARGET_ABS ms)"
        echo "  burst: $TIMERS timers (within ${WITHIN}s, ${CANCEL_PCT}% cancelled): fired $ABS_FIRED (expected $ABS_EXPECTED; late flag on $ABS_LATE); deadlines spread over ${ABS_DUE_SPAN}s, the last fired ${ABS_SPAN}s after the first deadline"
        echo "    fired_at - due_at:           $ABS_STATS  $(verdict_le "$(field p99 "$ABS_STATS")" $TARGET_ABS)"
        bench_record activation.absence_p99.burst "$(field p99 "$ABS_STATS")" ms "<= $TARGET_ABS" \
            "on_absence burst, $TIMERS timers: p99 of fired_at - due_at"
        echo "    stream_listen line - due_at: $ABS_LISTEN"
        echo "    inserting the $((TIMERS + TIMERS / BATCHES * CANCEL_PCT / 100 * BATCHES)) events: ${ABS_INS_NONE}s without the activation, ${ABS_INS_WITH}s with (throughput ratio $(ratio "$ABS_INS_NONE" "$ABS_INS_WITH")); timers opened by the worker ${ABS_OPENED}s after the first insert"
        echo "  steady: $PRB_OPEN timers open, probe timers (within ${PROBE_WITHIN}s) opened at $PRB_TPS/s: fired $PRB_FIRED (expected $PRB_EXPECTED)"
        echo "    fired_at - due_at:           $PRB_STATS  $(verdict_le "$(field p99 "$PRB_STATS")" $TARGET_ABS)"
        bench_record activation.absence_p99.steady "$(field p99 "$PRB_STATS")" ms "<= $TARGET_ABS" \
            "on_absence steady, $PRB_OPEN timers open: p99 of fired_at - due_at of probe timers"
        echo "    stream_listen line - due_at: $PRB_LISTEN"
    fi
    if awk -v l="$LOAD_BEFORE" -v n="$(nproc)" 'BEGIN { exit !(l > n / 4) }'; then
        echo "WARNING: load average was $LOAD_BEFORE before the run: something else was using the machine; the figures are noisy"
    fi
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$RESULTS"
echo "results saved in $RESULTS"
