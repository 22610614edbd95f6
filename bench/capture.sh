#!/usr/bin/env bash
# bench/capture.sh: the write overhead of stream.capture on its source table
# (issue 14, item 5): 4-client pgbench UPDATE tps of one table while it is
# captured into a stream, against the same table not captured, in one run.
# Target: captured / not captured >= 0.85.
#
# Per mode, one throwaway server (durable settings, BENCH_SERVER_CONF): a
# table `accounts` (BENCH_ROWS rows, primary key), a stream.  Repetitions
# alternate: BENCH_SECONDS of pgbench UPDATE (one row by primary key per
# transaction) with no capture at all, then stream.capture(accounts), the
# same run, stream.uncapture(accounts).  After each captured run the script
# waits until every update is an event and checks the count: the tps of a
# capture that drops changes would mean nothing.
#   logical: wal_level = logical; the worker decodes and writes the events
#            while pgbench runs (its CPU is part of the cost: 2 cores).
#   queue:   wal_level = replica; the capture trigger queues each change in
#            the producer's transaction; the worker drains the queue each loop
#            (capture_drain, worker.c) while pgbench runs.
#
# Environment:
#   BENCH_MODES="logical queue"
#   BENCH_SECONDS=20   each pgbench run
#   BENCH_REPS=3       repetitions of the pair (medians are compared)
#   BENCH_ROWS=100000
#   BENCH_BUILD=1      build and install first (0: the installed extension)
#   BENCH_RECORD       1: record the ratios in bench/results.tsv (default: at
#                      the default settings)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

MODES=${BENCH_MODES:-"logical queue"}
SECS=${BENCH_SECONDS:-20}
REPS=${BENCH_REPS:-3}
ROWS=${BENCH_ROWS:-100000}
BUILD=${BENCH_BUILD:-1}
TARGET=0.85

. scripts/lib.sh
. bench/lib.sh
RECORD=${BENCH_RECORD:-$(bench_defaults SECS=20 REPS=3 ROWS=100000)}

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bench_build
PATH="$PGBIN:$PATH"

WORK=$(pg_workdir "$REPO/tmp/bench-capture")
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    cluster_stop "$WORK" immediate
    rm -rf "${WORK:?}/data"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat > "$WORK/update.pgbench" <<EOF
\set id random(1, $ROWS)
UPDATE accounts SET balance = balance + 1, updated_at = now() WHERE id = :id;
EOF
[ "$(id -u)" -eq 0 ] && chown -R postgres: "$WORK"

# tps of one pgbench run (4 clients)
run_pgbench() {
    as_pg pgbench -n -c 4 -j 4 -T "$SECS" -f "$WORK/update.pgbench" -h "$WORK" -p "$PORT" bench 2>&1 |
        awk '/^tps/ { print $3; exit }'
}

# every committed update is an event (logical: the capture's applied LSN
# passed a flush marker; queue: the queue is drained)
caught_up() {
    local mode=$1 target
    if [ "$mode" = queue ]; then
        sql "SELECT stream._capture_drain()" >/dev/null
        return
    fi
    target=$(sql "SELECT stream._aggregate_wake(true)")
    for _ in $(seq 1 600); do
        [ "$(sql "SELECT coalesce(bool_and(applied_lsn >= '$target'), false) FROM stream.captures")" = t ] && return
        sleep 0.5
    done
    die "the capture did not catch up"
}

# waits until the worker has the new capture (logical mode)
capture_live() {
    for _ in $(seq 1 240); do
        [ "$(sql "SELECT applied_lsn IS NOT NULL FROM stream.captures")" = t ] && return
        sleep 0.5
    done
    die "the capture never went live"
}

for MODE in $MODES; do
    cluster_stop "$WORK" immediate
    rm -rf "${WORK:?}/data"
    PORT=$(free_port 5480)
    if [ "$MODE" = queue ]; then WAL="wal_level = replica"; else WAL="wal_level = logical"; fi
    cluster_init "$WORK" "$PORT" "${BENCH_SERVER_CONF[@]}" "$WAL" >/dev/null
    cluster_start "$WORK" || { cat "$WORK/server.log" >&2; die "server did not start"; }
    PSQL=(as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -d bench)
    as_pg psql -X -q -h "$WORK" -p "$PORT" -d postgres -c 'CREATE DATABASE bench'
    sql "CREATE EXTENSION stream_events" >/dev/null
    sql "SELECT stream.create_stream('account_changes')" >/dev/null
    sql "CREATE TABLE accounts (id int PRIMARY KEY, user_id text, balance bigint NOT NULL DEFAULT 0,
         status text NOT NULL DEFAULT 'active', updated_at timestamptz)" >/dev/null
    sql "INSERT INTO accounts (id, user_id) SELECT i, 'u' || (i % 5000) FROM generate_series(1, $ROWS) i" >/dev/null
    sql "VACUUM ANALYZE accounts" >/dev/null
    [ "$(sql "SELECT stream._capture_mode()")" = "$MODE" ] || die "the server is not in $MODE mode"

    plain=()
    captured=()
    for rep in $(seq 1 "$REPS"); do
        sql "CHECKPOINT" >/dev/null
        p=$(run_pgbench)
        plain+=("$p")
        sql "SELECT stream.capture('accounts', stream => 'account_changes', user_id => 'user_id')" >/dev/null
        [ "$MODE" = logical ] && capture_live
        before=$(sql "SELECT count(*) FROM account_changes")
        updates_before=$(sql "SELECT coalesce(sum(balance), 0) FROM accounts")
        sql "CHECKPOINT" >/dev/null
        c=$(run_pgbench)
        caught_up "$MODE"
        events=$(( $(sql "SELECT count(*) FROM account_changes") - before ))
        updates=$(( $(sql "SELECT sum(balance) FROM accounts") - updates_before ))
        [ "$events" -eq "$updates" ] || die "$MODE rep $rep: $updates updates but $events events"
        captured+=("$c")
        sql "SELECT stream.uncapture('accounts')" >/dev/null
        log "$MODE rep $rep: not captured $p tps, captured $c tps ($events updates = $events events)"
    done
    mp=$(median "${plain[@]}")
    mc=$(median "${captured[@]}")
    r=$(ratio "$mc" "$mp")
    verdict=missed
    ge "$r" "$TARGET" && verdict=ok
    printf 'capture %-7s  4-client UPDATE tps: not captured %s (spread %s%%), captured %s (spread %s%%): ratio %s (target >= %s: %s)\n' \
        "$MODE" "$mp" "$(spread "${plain[@]}")" "$mc" "$(spread "${captured[@]}")" "$r" "$TARGET" "$verdict"
    bench_record "capture_update_ratio_$MODE" "$r" x ">= $TARGET" \
        "4-client UPDATE tps of a captured table / not captured ($MODE mode)"
done
