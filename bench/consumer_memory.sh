#!/usr/bin/env bash
# bench/consumer_memory.sh: peak memory of the worker's consumer applying one
# huge transaction (issue 15, item 6), measured on one throwaway server.
#
# For each N in BENCH_ROWS and each stream_events.consumer_memory in
# BENCH_CONSUMER_MEMORY, in a fresh database (so a fresh worker, whose VmHWM
# is its own): a stream `s`, a per-user aggregate
#   SELECT user_id, count(*) AS n, sum((properties->>'price')::numeric) AS revenue
#   FROM s GROUP BY 1
# and stream.on_event('all', 's', 'true', channel => 'c1'); then N events
# inserted in ONE transaction (INSERT ... SELECT ... FROM generate_series,
# user_id 'u' || (g % BENCH_USERS), small properties) and stream.flush until
# the worker has applied it.  Meanwhile the worker's /proc/<pid>/status is
# sampled every 0.2 s: RssAnon (its private memory) and VmHWM (peak resident
# set, which also counts the pages of shared_buffers it touched).  Target:
#   peak RssAnon <= consumer_memory + logical_decoding_work_mem (64MB) + 64MB
# per run, PASS/FAIL.  Also: evidence of spilling (the worker's temporary
# files, logged with log_temp_files = 0, and its DEBUG1 "spilled" lines via
# ALTER DATABASE ... SET log_min_messages = debug1), the insert time and the
# apply time (commit -> stream.flush returned), and correctness: the
# aggregate equals its defining query (EXCEPT ALL both ways) and the outbox
# holds exactly N rows of the activation with N distinct event_ids.  When
# RssAnon passes the bound, pg_log_backend_memory_contexts(<worker>) is
# called (again at each further 10% growth) and the largest contexts of the
# last dump are printed.
#
# Environment:
#   BENCH_ROWS="1000000 10000000"     events of the one transaction (each a run)
#   BENCH_CONSUMER_MEMORY="256MB 32MB" stream_events.consumer_memory of the runs
#   BENCH_USERS=200000                distinct user_ids (the aggregate's groups)
#   BENCH_TIMEOUT="3 hours"           stream.flush's timeout
#   BENCH_DUMP_MB=                    RssAnon (MB) past which the worker's memory
#                                     contexts are logged (default: the run's bound)
#   BENCH_BUILD=1                     build and install first (0: the installed extension)
#   BENCH_KEEP=0                      1: keep the data directory (and each run's database)
#   BENCH_RECORD                      1: record in bench/results.tsv and the README
#                                     table (default: when BENCH_USERS is 200000)
# See bench/README.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

ROWS_LIST=${BENCH_ROWS:-"1000000 10000000"}
MEMS=${BENCH_CONSUMER_MEMORY:-"256MB 32MB"}
USERS=${BENCH_USERS:-200000}
TIMEOUT=${BENCH_TIMEOUT:-"3 hours"}
DUMP_MB=${BENCH_DUMP_MB:-}
BUILD=${BENCH_BUILD:-1}
KEEP=${BENCH_KEEP:-0}
DECODING_MB=64      # logical_decoding_work_mem of the server (set below)
SLACK_MB=64         # what the target allows beyond the two settings
SAMPLE=0.2          # seconds between two samples of /proc/<pid>/status

if [ "$BUILD" = 1 ]; then
    scripts/setup.sh
fi
. scripts/lib.sh
. bench/lib.sh
RECORD=${BENCH_RECORD:-$(bench_defaults USERS=200000)}

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bench_build
PATH="$PGBIN:$PATH"

WORK=$(pg_workdir "$REPO/tmp/bench-consumer-memory")
cluster_stop "$WORK" immediate
rm -rf "${WORK:?}"/*
PORT=$(free_port "${BENCH_PORT:-56000}")
mkdir -p "$REPO/tmp"
RESULTS="$REPO/tmp/bench-consumer-memory-$(date +%Y%m%d-%H%M%S).txt"
SAMPLER_PID=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null || true
    cluster_stop "$WORK" fast
    if [ "$KEEP" != 1 ]; then
        rm -rf "${WORK:?}/data"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "server on port $PORT under $WORK"
cluster_init "$WORK" "$PORT" "${BENCH_SERVER_CONF[@]}" \
    "logical_decoding_work_mem = ${DECODING_MB}MB" \
    "log_temp_files = 0" \
    "log_line_prefix = '%m [%p] '"
cluster_start "$WORK"
LOGFILE="$WORK/server.log"

export PGOPTIONS="-c client_min_messages=warning"
PSQL0=(psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -U postgres)
PSQL=("${PSQL0[@]}" -d postgres)
# sqldb DB SQL: one value from database DB
sqldb() { "${PSQL0[@]}" -d "$1" -At -c "$2"; }

out() { echo "$*" | tee -a "$RESULTS"; }

# "256MB", "1GB", "32768kB" -> MB
mem_mb() {
    awk -v s="$1" 'BEGIN {
        v = s + 0; u = toupper(s); sub(/^[0-9.]+ */, "", u)
        if (u == "KB") v /= 1024; else if (u == "GB") v *= 1024; else if (u == "TB") v *= 1048576
        printf "%d", v }'
}
# 1000000 -> 1M, 10000000 -> 10M, 20000 -> 20k
short_n() { awk -v n="$1" 'BEGIN { if (n % 1000000 == 0) printf "%dM", n / 1000000; else if (n % 1000 == 0) printf "%dk", n / 1000; else print n }'; }

# sampler PID FILE BOUND_KB: appends "epoch RssAnon_kB VmHWM_kB RssShmem_kB"
# every SAMPLE seconds while the process lives and FILE.stop does not
# exist; past BOUND_KB of RssAnon (and at each further 10%) it asks the
# process to log its memory contexts.
sampler() {
    local pid=$1 file=$2 bound=$3 next=$3 line anon
    while [ ! -e "$file.stop" ] && [ -r "/proc/$pid/status" ]; do
        line=$(awk -v t="$(date +%s.%N)" '
            /^RssAnon:/ { a = $2 } /^VmHWM:/ { h = $2 } /^RssShmem:/ { s = $2 }
            END { if (a != "") print t, a, h, s }' "/proc/$pid/status" 2>/dev/null) || true
        if [ -n "$line" ]; then
            echo "$line" >> "$file"
            anon=$(echo "$line" | cut -d' ' -f2)
            if [ "$anon" -gt "$next" ]; then
                echo "$line dump" >> "$file.dumps"
                "${PSQL[@]}" -At -c "SELECT pg_log_backend_memory_contexts($pid)" >/dev/null 2>&1 || true
                next=$((anon * 11 / 10))
            fi
        fi
        sleep "$SAMPLE"
    done
}

# The largest memory contexts of the last dump PID logged after byte OFFSET
# of the server log: "total_kB name" for the top 15, and the grand total.
last_context_dump() {
    local pid=$1 offset=$2
    tail -c +"$((offset + 1))" "$LOGFILE" | awk -v p="[$pid]" '
        index($0, p) == 0 { next }
        /logging memory contexts of PID/ { n = 0; grand = ""; next }
        /level: [0-9]+; / {
            line = $0; sub(/.*level: /, "", line)
            lvl = line; sub(/;.*/, "", lvl)
            name = line; sub(/^[0-9]+; /, "", name); sub(/: [0-9]+ total in .*/, "", name)
            tot = line; sub(/.*: /, "", tot)
            if (match(line, /: [0-9]+ total in [0-9]+ blocks/)) {
                t = substr(line, RSTART + 2); t = t + 0
                rows[++n] = sprintf("%10.1f MB  level %s  %s", t / 1048576, lvl, name)
            }
            next
        }
        /Grand total:/ { grand = $0; sub(/.*Grand total: /, "", grand) }
        END {
            for (i = 1; i <= n; i++) print rows[i] | "sort -rn | head -15"
            close("sort -rn | head -15")
            if (grand != "") print "    grand total: " grand
        }'
}

echo "stream_events consumer memory benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$RESULTS"
out "host: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $("$PGBIN/postgres" --version), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
out "settings: rows '$ROWS_LIST', consumer_memory '$MEMS', $USERS users; shared_buffers $(sqldb postgres "SHOW shared_buffers"), logical_decoding_work_mem $(sqldb postgres "SHOW logical_decoding_work_mem"), fsync $(sqldb postgres "SHOW fsync"), synchronous_commit $(sqldb postgres "SHOW synchronous_commit"); commit $BENCH_COMMIT"
out "target: peak RssAnon <= consumer_memory + logical_decoding_work_mem (${DECODING_MB}MB) + ${SLACK_MB}MB"

declare -a TABLE=()
AGG_QUERY="SELECT user_id, count(*) AS n, sum((properties->>'price')::numeric) AS revenue FROM s GROUP BY 1"

run_one() {
    local n=$1 mem=$2 db sn mem_mb bound_mb pid base t0 tc ta ins_s apply_s samples offset
    local peak_anon peak_ins peak_apply hwm shm_peak spill_files spill_mb spills oracle_a oracle_b rows outbox outbox_ids
    local oracle verdict mismatch worker_now restarts
    sn=$(short_n "$n")
    db="cm_${sn,,}_${mem,,}"
    mem_mb=$(mem_mb "$mem")
    bound_mb=$((mem_mb + DECODING_MB + SLACK_MB))
    samples="$WORK/samples-$sn-$mem"
    rm -f "$samples" "$samples.stop" "$samples.dumps"

    log "run: N=$n consumer_memory=$mem (database $db)"
    "${PSQL[@]}" -o /dev/null -c "ALTER SYSTEM SET stream_events.consumer_memory = '$mem'" -c "SELECT pg_reload_conf()"
    sleep 1
    [ "$(mem_mb "$(sqldb postgres "SHOW stream_events.consumer_memory")")" = "$mem_mb" ] ||
        die "stream_events.consumer_memory is $(sqldb postgres "SHOW stream_events.consumer_memory"), not $mem"
    "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $db"
    "${PSQL[@]}" -c "CREATE DATABASE $db"
    # the worker connects to the database: these apply to it
    "${PSQL[@]}" -c "ALTER DATABASE $db SET log_min_messages = debug1"
    "${PSQL0[@]}" -d "$db" -o /dev/null <<SQL
CREATE EXTENSION stream_events;
SELECT stream.create_stream('s', dedup_window => NULL);
SELECT stream.create_aggregate('per_user', \$q\$ $AGG_QUERY \$q\$);
SELECT stream.on_event('all', 's', 'true', channel => 'c1');
SELECT stream.flush(timeout => '2 min');
SQL
    pid=
    for _ in $(seq 1 150); do
        pid=$(sqldb "$db" "SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'stream_events%' AND datname = '$db'" | head -1)
        [ -n "$pid" ] && break
        sleep 0.2
    done
    [ -n "$pid" ] || die "no worker for database $db in pg_stat_activity"
    base=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status")
    log "  worker pid $pid, RssAnon before: $((base / 1024)) MB"

    offset=$(stat -c %s "$LOGFILE")
    sampler "$pid" "$samples" "$((${DUMP_MB:-$bound_mb} * 1024))" &
    SAMPLER_PID=$!

    t0=$(now_s)
    "${PSQL0[@]}" -d "$db" -c "INSERT INTO s (event_name, user_id, properties)
        SELECT 'purchase', 'u' || (g % $USERS),
               jsonb_build_object('price', (g % 1000) / 100.0, 'sku', 'sku-' || (g % 5000))
        FROM generate_series(1, $n) AS g"
    tc=$(now_s)
    ins_s=$(elapsed "$t0" "$tc")
    log "  inserted in $ins_s s; waiting for the worker to apply"
    if ! "${PSQL0[@]}" -d "$db" -o /dev/null -c "SELECT stream.flush(timeout => '$TIMEOUT')"; then
        log "  WARNING: stream.flush failed (see $LOGFILE)"
    fi
    ta=$(now_s)
    apply_s=$(elapsed "$tc" "$ta")
    touch "$samples.stop"
    wait "$SAMPLER_PID" || true
    SAMPLER_PID=
    worker_now=$(sqldb "$db" "SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'stream_events%' AND datname = '$db'" | head -1)
    restarts=""
    [ "$worker_now" = "$pid" ] || restarts=" (the worker changed: pid $pid -> ${worker_now:-none}; figures are the first one's)"

    read -r peak_anon peak_ins peak_apply hwm shm_peak < <(awk -v tc="$tc" '
        { a = $2; if (a > pa) pa = a; if ($1 < tc) { if (a > pi) pi = a } else if (a > pp) pp = a
          if ($3 > h) h = $3; if ($4 > s) s = $4 }
        END { printf "%.0f %.0f %.0f %.0f %.0f\n", pa / 1024, pi / 1024, pp / 1024, h / 1024, s / 1024 }' "$samples")
    # the worker's temporary files (log_temp_files = 0) and spill lines (DEBUG1)
    read -r spill_files spill_mb < <(tail -c +"$((offset + 1))" "$LOGFILE" | awk -v p="[$pid]" '
        index($0, p) && /temporary file: path/ { n++; s = $0; sub(/.*size /, "", s); b += s }
        END { printf "%d %.0f\n", n, b / 1048576 }')
    spills=$(tail -c +"$((offset + 1))" "$LOGFILE" | grep -F "[$pid]" | grep -c "spilled the batches" || true)

    rows=$(sqldb "$db" "SELECT count(*) FROM s")
    oracle_a=$(sqldb "$db" "SELECT count(*) FROM (SELECT user_id, n, revenue FROM per_user EXCEPT ALL $AGG_QUERY) x")
    oracle_b=$(sqldb "$db" "SELECT count(*) FROM ($AGG_QUERY EXCEPT ALL SELECT user_id, n, revenue FROM per_user) x")
    read -r outbox outbox_ids < <(sqldb "$db" "SELECT count(*), count(DISTINCT event_id) FROM stream.activations WHERE activation = 'all'" | tr '|' ' ')
    mismatch=""
    [ "$rows" = "$n" ] || mismatch="$mismatch stream has $rows rows;"
    [ "$oracle_a/$oracle_b" = "0/0" ] || mismatch="$mismatch aggregate differs from its query ($oracle_a/$oracle_b);"
    [ "$outbox" = "$n" ] && [ "$outbox_ids" = "$n" ] || mismatch="$mismatch outbox $outbox rows, $outbox_ids event_ids;"
    if [ -z "$mismatch" ]; then oracle="ok"; else oracle="WRONG"; fi
    if le "$peak_anon" "$bound_mb"; then verdict=PASS; else verdict=FAIL; fi

    out ""
    out "N=$n consumer_memory=$mem: worker $pid$restarts"
    out "  insert (one transaction) $ins_s s; applied $apply_s s after its commit"
    out "  RssAnon: before $((base / 1024)) MB, peak $peak_anon MB (during the insert $peak_ins MB, after the commit $peak_apply MB); VmHWM $hwm MB; RssShmem peak $shm_peak MB; $(wc -l < "$samples") samples"
    out "  spilled: $spills DEBUG1 'spilled the batches' lines, $spill_files temporary files logged ($spill_mb MB)"
    out "  correctness: stream $rows rows; aggregate EXCEPT ALL query $oracle_a, query EXCEPT ALL aggregate $oracle_b; outbox $outbox rows, $outbox_ids distinct event_ids -> $oracle${mismatch:+ ($mismatch)}"
    out "  peak RssAnon $peak_anon MB vs bound $bound_mb MB ($mem + ${DECODING_MB}MB + ${SLACK_MB}MB): $verdict"
    if [ -s "$samples.dumps" ]; then
        out "  memory contexts logged at RssAnon (kB): $(cut -d' ' -f2 "$samples.dumps" | tr '\n' ' ')"
        out "  largest contexts of the last dump (total allocated):"
        last_context_dump "$pid" "$offset" | sed 's/^/    /' | tee -a "$RESULTS"
    fi
    TABLE+=("$(printf '%-9s %-8s %9s %9s %9s %9s %-6s %9s  %s' "$n" "$mem" "$peak_anon" "$hwm" "$ins_s" "$apply_s" "$oracle" "$outbox" "$verdict (<= $bound_mb)")")
    bench_record "consumer_memory.rss_anon_${sn}_${mem}" "$peak_anon" MB "<= $bound_mb" \
        "peak RssAnon of the worker applying one $sn-event transaction (per-user aggregate, $USERS groups, on_event 'true'), consumer_memory=$mem; that run: VmHWM $hwm MB, applied in ${apply_s} s, oracle $oracle"

    if [ "$KEEP" != 1 ]; then
        "${PSQL[@]}" -c "DROP DATABASE $db" || log "  WARNING: could not drop $db"
    fi
}

for n in $ROWS_LIST; do
    for mem in $MEMS; do
        run_one "$n" "$mem"
    done
done
"${PSQL[@]}" -o /dev/null -c "ALTER SYSTEM RESET stream_events.consumer_memory" -c "SELECT pg_reload_conf()"

{
    echo
    echo "== summary (MB; seconds; target: peak RssAnon <= consumer_memory + ${DECODING_MB}MB + ${SLACK_MB}MB)"
    printf '%-9s %-8s %9s %9s %9s %9s %-6s %9s  %s\n' N memory "RssAnon" VmHWM "insert s" "apply s" oracle outbox verdict
    for row in "${TABLE[@]}"; do echo "$row"; done
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$RESULTS"
echo "results saved in $RESULTS"
