#!/usr/bin/env bash
# bench/ingest.sh (`make bench`): ingest throughput of a stream against a
# plain Postgres table, measured in one run on one throwaway server.
#
#  (a) COPY of BENCH_ROWS click events from one CSV file into a plain table
#      (same 9 columns, PRIMARY KEY on event_id) and into a stream made by
#      stream.create_stream; fresh tables each repetition, alternating; and
#      a third side, the stream with PostgreSQL's row-by-row COPY
#      (stream_events.copy_batch = off), to show what the batched COPY
#      gives.  Wall clock and the COPY backend's CPU time (/proc).
#  (b) pgbench single-row INSERT (BENCH_CLIENTS clients, BENCH_SECONDS each)
#      into the plain table and into the stream, alternating.
#
# Both sides run on the same server with the same durable settings
# (fsync and synchronous_commit on).  Prints every repetition, the medians
# and the ratios stream/plain (throughput; higher is better, 1.0 = as fast
# as plain Postgres).  See bench/README.md.
#
# Environment:
#   BENCH_ROWS=1000000   events in the CSV file
#   BENCH_REPS=3         repetitions of each measurement per side
#   BENCH_SECONDS=20     duration of one pgbench run
#   BENCH_CLIENTS=4 BENCH_THREADS=2   pgbench -c / -j
#   BENCH_MODE=prepared  pgbench query mode (simple | extended | prepared)
#   BENCH_BUILD=1        build and install the extension first (0: use the installed one)
#   BENCH_PROFILE=0      1: after the timed runs, perf-profile one COPY per side
#   BENCH_ONLY=          copy | insert | profile: run one part only (profile: with BENCH_PROFILE=1)
#   BENCH_UUID=v4        event_id of the generated events: v4 (random) or v7 (time-ordered)
#   BENCH_VARIANTS=0     1: also a COPY breakdown (plain without PK, partitioned
#                        plain, stream without dedup), to see where time goes
#   BENCH_WARMUP=1       one untimed COPY per side first (page cache, WAL segments)
#   BENCH_KEEP=0         1: keep the server's data directory and the CSV file
#   BENCH_CONTRACTS=0    1: the stream side enforces three data contracts
#                        (bench/contracts.sql); targets COPY >= 0.60, INSERT >= 0.85
#   BENCH_RECORD         1: record the ratios in bench/results.tsv and the README
#                        table (default: at the default sizes above)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

ROWS=${BENCH_ROWS:-1000000}
REPS=${BENCH_REPS:-3}
SECS=${BENCH_SECONDS:-20}
CLIENTS=${BENCH_CLIENTS:-4}
THREADS=${BENCH_THREADS:-2}
MODE=${BENCH_MODE:-prepared}
BUILD=${BENCH_BUILD:-1}
PROFILE=${BENCH_PROFILE:-0}
ONLY=${BENCH_ONLY:-}
KEEP=${BENCH_KEEP:-0}
WARMUP=${BENCH_WARMUP:-1}
VARIANTS=${BENCH_VARIANTS:-0}
UUID=${BENCH_UUID:-v4}
CONTRACTS=${BENCH_CONTRACTS:-0}
if [ "$CONTRACTS" = 1 ]; then
    TARGET_COPY=0.60
    TARGET_INSERT=0.85
else
    TARGET_COPY=0.90
    TARGET_INSERT=0.95
fi
TARGET=$TARGET_COPY

if [ "$BUILD" = 1 ]; then
    scripts/setup.sh
fi
. scripts/lib.sh
. bench/lib.sh
RECORD=${BENCH_RECORD:-$(bench_defaults ROWS=1000000 REPS=3 SECS=20 CLIENTS=4 THREADS=2 MODE=prepared UUID=v4)}
if [ "$CONTRACTS" = 1 ]; then
    REC=ingest_contracts
    REC_WHAT=", the stream enforcing 3 contracts"
else
    REC=ingest
    REC_WHAT=""
fi

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*"; }

bench_build
command -v pgbench >/dev/null || PATH="$PGBIN:$PATH"

WORK=$(pg_workdir "$REPO/tmp/bench")
cluster_stop "$WORK" immediate
rm -rf "${WORK:?}"/*
PORT=$(free_port 5470)
CSV="$WORK/events.csv"
RESULTS="$REPO/tmp/bench-ingest-$(date +%Y%m%d-%H%M%S).txt"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "${PERF_PID:-}" ] && kill "$PERF_PID" 2>/dev/null || true
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
    "log_checkpoints = on"
cluster_start "$WORK"
# The library the server loaded, for perf's symbols if it is reinstalled meanwhile.
cp "$("$PG_CONFIG" --pkglibdir)/stream_events.so" "$WORK/stream_events.so.loaded" 2>/dev/null || true

export PGOPTIONS="-c client_min_messages=warning"
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
PSQL+=(-d bench)
"${PSQL[@]}" -c "CREATE EXTENSION stream_events"

NOISE=10
verdict() { awk -v r="$1" -v t="$TARGET" 'BEGIN { print (r >= t) ? "ok" : "MISSED" }'; }

COLS="event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context"

# The tables measured.  `plain` and `stream` are the two sides of every
# ratio; the others only appear in the COPY breakdown (BENCH_VARIANTS=1):
#   plain          the stream's 9 columns, a uuid PRIMARY KEY, nothing else
#   plain_nopk     the same without the primary key
#   plain_part     partitioned like the stream (same daily partitions), no
#                  index, no trigger
#   stream_nodedup a stream with dedup_window => NULL (trigger, no dedup keys)
#   stream         stream.create_stream('bench_stream')
table_of() {
    case $1 in
        plain) echo bench_plain ;;
        stream | stream_rows) echo bench_stream ;;
        *) echo "bench_$1" ;;
    esac
}

plain_ddl() {
    cat <<SQL
CREATE TABLE $1 (
    event_id     uuid        NOT NULL $2,
    event_name   text        NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    received_at  timestamptz NOT NULL DEFAULT statement_timestamp(),
    user_id      text,
    anonymous_id text,
    session_id   text,
    properties   jsonb       NOT NULL DEFAULT '{}',
    context      jsonb       NOT NULL DEFAULT '{}'
) $3;
SQL
}

# Daily partitions covering the generated data (4 days back to 4 ahead).
PART_DAYS="generate_series(stream._bucket_start(now() - interval '4 days', '1 day'), now() + interval '4 days', interval '1 day')"

# Drops every measured table, so that each measurement starts from an
# empty database (drop_stream drops the stream's dedup key table too), then
# creates the one table of variant $1 and checkpoints.
setup() {
    local v=$1 left
    "${PSQL[@]}" -o /dev/null <<'SQL'
SELECT stream.drop_stream(s.relid) FROM stream.streams AS s;
DROP TABLE IF EXISTS bench_plain, bench_plain_nopk, bench_plain_part;
SQL
    left=$(sql "SELECT count(*) FROM pg_class WHERE relnamespace = 'stream'::regnamespace AND relname LIKE 'dedup\_keys\_%'")
    [ "$left" = 0 ] || log "WARNING: $left dedup key tables left after drop_stream"
    case $v in
        plain) plain_ddl bench_plain "PRIMARY KEY" "" | "${PSQL[@]}" ;;
        plain_nopk) plain_ddl bench_plain_nopk "" "" | "${PSQL[@]}" ;;
        plain_part)
            {
                plain_ddl bench_plain_part "" "PARTITION BY RANGE (occurred_at)"
                echo "CREATE TABLE bench_plain_part_default PARTITION OF bench_plain_part DEFAULT;"
                echo "SELECT format('CREATE TABLE %I PARTITION OF bench_plain_part FOR VALUES FROM (%L) TO (%L)',"
                echo "              'bench_plain_part_p' || to_char(b, 'YYYYMMDD'), b, b + interval '1 day')"
                echo "FROM $PART_DAYS AS b \gexec"
            } | "${PSQL[@]}" ;;
        stream | stream_nodedup)
            # The partitions for the data's days exist beforehand, as in a
            # stream that has been running (the worker creates them behind
            # and ahead of now): events go to their day's partition.
            "${PSQL[@]}" -o /dev/null <<SQL
SELECT stream.create_stream('$(table_of "$v")', partition_interval => '1 day',
                            dedup_window => $([ "$v" = stream ] && echo "'7 days'" || echo NULL));
SELECT count(stream._ensure_partition('$(table_of "$v")', b, '1 day')) FROM $PART_DAYS AS b;
SQL
            if [ "$CONTRACTS" = 1 ] && [ "$v" = stream ]; then
                "${PSQL[@]}" -o /dev/null -v stream="$(table_of "$v")" -f bench/contracts.sql
            fi
            ;;
        *) die "unknown variant $v" ;;
    esac
    "${PSQL[@]}" -c "CHECKPOINT"
}

# Default partition of a partitioned variant ('' for plain tables).
# the table a side is set up as (stream_rows: the stream)
table_side() { [ "$1" = stream_rows ] && echo stream || echo "$1"; }

default_of() {
    case $1 in
        plain_part | stream | stream_rows | stream_nodedup) echo "$(table_of "$1")_default" ;;
    esac
}

# One timed COPY of the CSV into variant $1; prints the seconds.
# timed_copy VARIANT: one COPY of the CSV; prints "wall_s cpu_s" (the
# backend's CPU time, see measured_sql).  stream_rows is the stream with
# PostgreSQL's row-by-row COPY (stream_events.copy_batch = off).
timed_copy() {
    local v=$1 tbl n d opts=""
    tbl=$(table_of "$v")
    [ "$v" = stream_rows ] && opts="SET stream_events.copy_batch = off;"
    MEASURE_DIR=$WORK measured_sql "$opts COPY $tbl ($COLS) FROM '$CSV' WITH (FORMAT csv)"
    n=$(sql "SELECT count(*) FROM $tbl")
    [ "$n" = "$ROWS" ] || log "WARNING: $tbl has $n rows, expected $ROWS" >&2
    d=$(default_of "$v")
    if [ -n "$d" ]; then
        d=$(sql "SELECT count(*) FROM $d")
        [ "$d" = 0 ] || log "WARNING: $d events of $tbl went to the default partition" >&2
    fi
}

echo "stream_events ingest benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$RESULTS"
echo "host: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $("$PGBIN/postgres" --version), load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS"
echo "settings: rows=$ROWS uuid=$UUID reps=$REPS pgbench: -c $CLIENTS -j $THREADS -T $SECS -M $MODE" | tee -a "$RESULTS"
if [ "$BUILD" = 1 ]; then
    built="built from this tree, git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src sql 2>/dev/null || echo '+changes')"
else
    built="the installed build ($(stat -c %y "$("$PG_CONFIG" --pkglibdir)/stream_events.so" | cut -d. -f1))"
fi
echo "extension: $(sql "SELECT extversion FROM pg_extension WHERE extname = 'stream_events'"), $built" | tee -a "$RESULTS"

copy_plain=(); copy_stream=(); copy_rows=(); cpu_plain=(); cpu_stream=(); cpu_rows=()
ins_plain=(); ins_stream=(); cpu_ins_plain=(); cpu_ins_stream=()

# ---------------------------------------------------------------- (a) COPY
if [ -z "$ONLY" ] || [ "$ONLY" = copy ]; then
    log "generating $ROWS events into $CSV"
    t0=$(now_s)
    "${PSQL[@]}" -v rows="$ROWS" -v file="$CSV" -v uuid="$UUID" -f bench/gen_events.sql >/dev/null
    log "  done in $(elapsed "$t0" "$(now_s)") s, $(du -m "$CSV" | cut -f1) MB"

    # Warm-up (not timed): one COPY per side, so that the CSV file is in the
    # page cache and both sides find recycled WAL segments instead of
    # creating new ones (whoever writes first would pay for that).
    if [ "$WARMUP" = 1 ]; then
        for side in plain stream; do
            setup $side
            "${PSQL[@]}" -c "COPY $(table_of $side) ($COLS) FROM '$CSV' WITH (FORMAT csv)"
        done
        log "  warm-up COPY done"
    fi

    for ((rep = 1; rep <= REPS; rep++)); do
        for side in plain stream stream_rows; do
            setup "$(table_side $side)"
            out=$(timed_copy $side)
            read -r t c <<< "$out"
            [ -n "${c:-}" ] || die "COPY into $side failed"
            case $side in
                plain) copy_plain+=("$t"); cpu_plain+=("$c") ;;
                stream) copy_stream+=("$t"); cpu_stream+=("$c") ;;
                stream_rows) copy_rows+=("$t"); cpu_rows+=("$c") ;;
            esac
            log "COPY   rep $rep  $(printf '%-11s' $side) $(printf '%7.3f' "$t") s  $(awk -v n="$ROWS" -v t="$t" 'BEGIN { printf "%8.0f", n / t }') rows/s  backend CPU $(printf '%6.2f' "$c") s" | tee -a "$RESULTS"
        done
    done
fi

# ---------------------------------------------------------------- (a') breakdown
# Where the stream's COPY time goes, by elimination: the same COPY into
# tables that have one feature of a stream each.  Not part of the ratios.
declare -A bd=()
if [ "$VARIANTS" = 1 ] && { [ -z "$ONLY" ] || [ "$ONLY" = copy ]; }; then
    [ -f "$CSV" ] || "${PSQL[@]}" -v rows="$ROWS" -v file="$CSV" -v uuid="$UUID" -f bench/gen_events.sql >/dev/null
    VLIST="plain_nopk plain plain_part stream_nodedup stream"
    for ((rep = 1; rep <= REPS; rep++)); do
        for v in $VLIST; do
            setup "$v"
            out=$(timed_copy "$v")
            read -r t _ <<< "$out"
            bd[$v]="${bd[$v]:-} $t"
            log "COPY breakdown rep $rep  $(printf '%-15s' "$v") $(printf '%7.3f' "$t") s" | tee -a "$RESULTS"
        done
    done
fi

# ---------------------------------------------------------------- (b) INSERT
# CPU time (user + system, clock ticks) of the server's children that have
# exited: after a pgbench run, its backends, once the postmaster reaped them.
# Per transaction it does not depend on how long WAL flushes took, which
# makes the tps of this machine vary by 20-90% between runs.
children_cpu() { awk '{ print $16 + $17 }' "/proc/$(head -1 "$WORK/data/postmaster.pid")/stat"; }
CLK_TCK=$(getconf CLK_TCK)
if [ -z "$ONLY" ] || [ "$ONLY" = insert ]; then
    for side in plain stream; do
        sed "s/@TABLE@/$(table_of $side)/" bench/insert_event.pgbench > "$WORK/insert_$side.pgbench"
    done
    for ((rep = 1; rep <= REPS; rep++)); do
        for side in plain stream; do
            setup $side
            sleep 0.5
            cpu0=$(children_cpu)
            out=$(pgbench -n -h "$WORK" -p "$PORT" -U postgres -c "$CLIENTS" -j "$THREADS" -T "$SECS" \
                          -M "$MODE" -f "$WORK/insert_$side.pgbench" bench 2>&1) ||
                { echo "$out" >&2; die "pgbench failed on $side"; }
            sleep 0.5
            ntx=$(echo "$out" | awk '/^number of transactions actually processed/ { print $NF; exit }')
            us=$(awk -v a="$cpu0" -v b="$(children_cpu)" -v n="${ntx%%/*}" -v hz="$CLK_TCK" \
                 'BEGIN { printf "%.1f", (b - a) * 1e6 / hz / n }')
            if [ $side = stream ]; then cpu_ins_stream+=("$us"); else cpu_ins_plain+=("$us"); fi
            tps=$(echo "$out" | awk '/^tps = / { printf "%.1f", $3; exit }')
            lat=$(echo "$out" | awk '/^latency average/ { print $4; exit }')
            failed=$(echo "$out" | awk '/^number of failed transactions/ { print $5; exit }')
            [ -n "$tps" ] || { echo "$out" >&2; die "could not read tps from pgbench"; }
            [ "${failed:-0}" = 0 ] || log "WARNING: $failed failed transactions on $side"
            if [ $side = stream ]; then ins_stream+=("$tps"); else ins_plain+=("$tps"); fi
            log "INSERT rep $rep  $(printf '%-6s' $side) $(printf '%8.1f' "$tps") tps  latency avg ${lat} ms  backends' CPU ${us} us/transaction" | tee -a "$RESULTS"
        done
    done
fi

# ---------------------------------------------------------------- profile
# One more COPY per side under `perf record -g` of the backend doing it
# (not timed).  Needs perf and permission to trace the server's processes.
if [ "$PROFILE" = 1 ]; then
    if ! command -v perf >/dev/null; then
        log "BENCH_PROFILE=1 but perf is missing (apt-get install linux-perf)"
    else
        [ -f "$CSV" ] || "${PSQL[@]}" -v rows="$ROWS" -v file="$CSV" -v uuid="$UUID" -f bench/gen_events.sql >/dev/null
        perf buildid-cache -a "$WORK/stream_events.so.loaded" >/dev/null 2>&1 || true
        for side in plain stream; do
            setup $side
            tbl=$(table_of $side)
            t0=$(now_s)
            "${PSQL[@]}" -c "COPY $tbl ($COLS) FROM '$CSV' WITH (FORMAT csv)" &
            copy_pid=$!
            pid=
            for _ in $(seq 1 200); do
                pid=$(sql "SELECT pid FROM pg_stat_activity WHERE query LIKE 'COPY $tbl%' AND pid <> pg_backend_pid()")
                [ -n "$pid" ] && break
                sleep 0.05
            done
            if [ -z "$pid" ]; then
                wait $copy_pid; log "profile: could not find the COPY backend"; continue
            fi
            perf record -q -g -o "$WORK/perf-$side.data" -p "$pid" >/dev/null 2>&1 &
            PERF_PID=$!
            wait $copy_pid
            t=$(elapsed "$t0" "$(now_s)")
            kill -INT "$PERF_PID" 2>/dev/null || true
            wait "$PERF_PID" 2>/dev/null || true
            PERF_PID=
            {
                echo "== perf profile, COPY into $side ($t s under perf): where the time goes"
                perf script -i "$WORK/perf-$side.data" -F ip,sym 2>/dev/null | python3 bench/perf_breakdown.py "$t" || true
                echo "== perf profile, COPY into $side: self time, top symbols"
                perf report -i "$WORK/perf-$side.data" --no-children --sort dso,symbol --stdio 2>/dev/null |
                    grep -E '^ +[0-9.]+%' | head -40 || true
                echo "== perf profile, COPY into $side: with children, top symbols"
                perf report -i "$WORK/perf-$side.data" --children --sort symbol --stdio -g none 2>/dev/null |
                    grep -E '^ +[0-9.]+%' | head -60 || true
            } | tee -a "$RESULTS" || true
            cp "$WORK/perf-$side.data" "$REPO/tmp/perf-copy-$side.data" 2>/dev/null || true
        done
        # pgbench INSERT: the whole machine (4 backends, WAL writer, pgbench)
        # under perf record -a for the middle of one run per side.
        for side in plain stream; do
            [ -f "$WORK/insert_$side.pgbench" ] ||
                sed "s/@TABLE@/$(table_of $side)/" bench/insert_event.pgbench > "$WORK/insert_$side.pgbench"
            setup $side
            pgbench -n -h "$WORK" -p "$PORT" -U postgres -c "$CLIENTS" -j "$THREADS" -T "$SECS" \
                    -M "$MODE" -f "$WORK/insert_$side.pgbench" bench > "$WORK/pgbench-profile-$side.out" 2>&1 &
            pgb=$!
            sleep 2
            perf record -q -a -g -o "$WORK/perf-insert-$side.data" -- sleep $((SECS > 6 ? SECS - 4 : 2)) >/dev/null 2>&1 || true
            wait $pgb || true
            {
                echo "== perf profile, pgbench INSERT into $side ($(awk '/^tps = / { printf "%.0f tps", $3 }' "$WORK/pgbench-profile-$side.out")): postgres processes, with children"
                perf report -i "$WORK/perf-insert-$side.data" --comm postgres --children --sort symbol --stdio -g none 2>/dev/null |
                    grep -E '^ +[0-9.]+%' | head -50 || true
            } | tee -a "$RESULTS" || true
            cp "$WORK/perf-insert-$side.data" "$REPO/tmp/perf-insert-$side.data" 2>/dev/null || true
        done
    fi
fi

# ---------------------------------------------------------------- summary
{
    echo
    echo "== summary (median of $REPS; ratio = stream throughput / plain throughput)"
    [ "$CONTRACTS" = 1 ] && echo "   the stream enforces 3 data contracts (bench/contracts.sql)"
    if [ ${#copy_plain[@]} -gt 0 ]; then
        mp=$(median "${copy_plain[@]}"); ms=$(median "${copy_stream[@]}")
        r=$(ratio "$mp" "$ms")
        printf 'COPY   plain %6.2fs (%6.0f rows/s)  stream %6.2fs (%6.0f rows/s)  ratio %s (target >= %s) %s\n' \
            "$mp" "$(awk -v n="$ROWS" -v t="$mp" 'BEGIN { print n / t }')" \
            "$ms" "$(awk -v n="$ROWS" -v t="$ms" 'BEGIN { print n / t }')" \
            "$r" "$TARGET" "$(verdict "$r")"
        sp=$(spread "${copy_plain[@]}"); ss=$(spread "${copy_stream[@]}")
        bench_record "$REC.copy_ratio" "$r" x ">= $TARGET" \
            "COPY of $ROWS events: stream (dedup)$REC_WHAT / plain table with a uuid primary key, throughput; median of $REPS (best of $REPS: $(ratio "$(minimum "${copy_plain[@]}")" "$(minimum "${copy_stream[@]}")"); spread plain $sp%, stream $ss%)"
        rc=$(ratio "$(median "${cpu_plain[@]}")" "$(median "${cpu_stream[@]}")")
        printf '       backend CPU: plain %.2fs  stream %.2fs  ratio %s (target >= %s) %s\n' \
            "$(median "${cpu_plain[@]}")" "$(median "${cpu_stream[@]}")" "$rc" "$TARGET" "$(verdict "$rc")"
        bench_record "$REC.copy_cpu_ratio" "$rc" x ">= $TARGET" \
            "COPY of $ROWS events: plain table backend CPU / stream (dedup)$REC_WHAT backend CPU; median of $REPS"
        rr=$(ratio "$mp" "$(median "${copy_rows[@]}")")
        rrc=$(ratio "$(median "${cpu_plain[@]}")" "$(median "${cpu_rows[@]}")")
        printf '       stream with PostgreSQL'"'"'s row-by-row COPY (copy_batch = off): %.2fs, ratio %s, CPU ratio %s\n' \
            "$(median "${copy_rows[@]}")" "$rr" "$rrc"
        bench_record "$REC.copy_ratio_rowbyrow" "$rr" x "" \
            "COPY of $ROWS events as before the batched COPY (stream_events.copy_batch = off): plain / stream throughput; CPU ratio $rrc"
        printf '       best of %s: plain %.2fs  stream %.2fs  ratio %s;  spread plain %s%%  stream %s%%\n' \
            "$REPS" "$(minimum "${copy_plain[@]}")" "$(minimum "${copy_stream[@]}")" \
            "$(ratio "$(minimum "${copy_plain[@]}")" "$(minimum "${copy_stream[@]}")")" "$sp" "$ss"
        if [ "$sp" -gt $NOISE ] || [ "$ss" -gt $NOISE ]; then
            echo "       WARNING: the repetitions differ by more than $NOISE%: something else was using the machine; rerun when it is idle"
        fi
    fi
    if [ ${#ins_plain[@]} -gt 0 ]; then
        mp=$(median "${ins_plain[@]}"); ms=$(median "${ins_stream[@]}")
        r=$(ratio "$ms" "$mp")
        TARGET=$TARGET_INSERT
        printf 'INSERT plain %6.0f tps  stream %6.0f tps  ratio %s (target >= %s) %s\n' \
            "$mp" "$ms" "$r" "$TARGET" "$(verdict "$r")"
        sp=$(spread "${ins_plain[@]}"); ss=$(spread "${ins_stream[@]}")
        bench_record "$REC.insert_ratio" "$r" x ">= $TARGET" \
            "pgbench single-row INSERT, $CLIENTS clients: stream$REC_WHAT / plain table with a uuid primary key; median of $REPS (best of $REPS: $(ratio "$(maximum "${ins_stream[@]}")" "$(maximum "${ins_plain[@]}")"); spread plain $sp%, stream $ss%)"
        cp_=$(median "${cpu_ins_plain[@]}"); cs_=$(median "${cpu_ins_stream[@]}"); rcpu=$(ratio "$cp_" "$cs_")
        printf '       backends'"'"' CPU per transaction: plain %s us  stream %s us  ratio %s\n' "$cp_" "$cs_" "$rcpu"
        bench_record "$REC.insert_cpu_ratio" "$rcpu" x "" \
            "pgbench single-row INSERT, $CLIENTS clients: backends' CPU per transaction, plain / stream$REC_WHAT; median of $REPS (plain $cp_ us, stream $cs_ us)"
        printf '       best of %s: plain %.0f tps  stream %.0f tps  ratio %s;  spread plain %s%%  stream %s%%\n' \
            "$REPS" "$(maximum "${ins_plain[@]}")" "$(maximum "${ins_stream[@]}")" \
            "$(ratio "$(maximum "${ins_stream[@]}")" "$(maximum "${ins_plain[@]}")")" "$sp" "$ss"
        if [ "$sp" -gt $NOISE ] || [ "$ss" -gt $NOISE ]; then
            echo "       WARNING: the repetitions differ by more than $NOISE%: something else was using the machine; rerun when it is idle"
        fi
    fi
    if [ "$VARIANTS" = 1 ] && [ -n "${bd[plain]:-}" ]; then
        base=$(median ${bd[plain]})
        echo "COPY breakdown (median seconds; throughput relative to plain with PK):"
        for v in plain_nopk plain plain_part stream_nodedup stream; do
            m=$(median ${bd[$v]})
            printf '  %-15s %7.2fs  %s\n' "$v" "$m" "$(ratio "$base" "$m")"
        done
    fi
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$RESULTS"
echo "results saved in $RESULTS"
