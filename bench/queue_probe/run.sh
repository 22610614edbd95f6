#!/bin/bash
# bench/queue_probe/run.sh: the figures of docs/queue-mode.md.
# Producer cost of each queue-mode candidate against a plain table with a uuid
# primary key (COPY of N events, pgbench 4-client single-row INSERT), and the
# read (drain) rate of each candidate's window over the backlog the producer
# step left, alternating the variants in every repetition.
#   QP_PORT=58500 QP_HOST=/tmp/wtg_qp QP_ROWS=1000000 QP_REPS=3 QP_SECS=15 run.sh
# Needs a running server (wal_level = logical, shared_preload_libraries =
# 'stream_events', max_prepared_transactions > 0) with a database qp.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${QP_BIN:-/opt/pgD/lib/postgresql/15/bin}
HOST=${QP_HOST:-/tmp/wtg_qp}; PORT=${QP_PORT:-58500}; DB=${QP_DB:-qp}
ROWS=${QP_ROWS:-1000000}; REPS=${QP_REPS:-3}; SECS=${QP_SECS:-15}
VARIANTS=${QP_VARIANTS:-"plain stream a b c"}
STEPS=${QP_STEPS:-"copy insert"}   # which producer steps
FIRST=${QP_FIRST_REP:-1}          # number of the first repetition (to add reps to results.tsv)
CSV=${QP_CSV:-$HOST/events.csv}          # written by the server
OUT=${QP_OUT:-$HERE/results.tsv}
PSQL=("$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PORT" -U postgres -d "$DB")
export PGOPTIONS="-c client_min_messages=warning"
sql() { "${PSQL[@]}" -At -c "$1"; }
now_s() { date +%s.%N; }
log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
rec() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$OUT"; }  # rep metric variant value unit

COLS="event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context"
tbl() { case $1 in plain) echo qp_plain ;; stream) echo s_stream ;; *) echo "s_$1" ;; esac; }

create() {   # create the variant's table afresh
    local v=$1 t; t=$(tbl "$v")
    "${PSQL[@]}" -o /dev/null <<SQL
SELECT stream.drop_stream(relid) FROM stream.streams WHERE relid::text = '$t';
DROP TABLE IF EXISTS qp_plain;
TRUNCATE qp_tick, qp_queue;
DELETE FROM qp_position;
SQL
    sql "VACUUM qp_tick, qp_queue" >/dev/null
    case $v in
        plain) "${PSQL[@]}" -c "CREATE TABLE qp_plain (
                 event_id uuid NOT NULL PRIMARY KEY, event_name text NOT NULL,
                 occurred_at timestamptz NOT NULL DEFAULT now(),
                 received_at timestamptz NOT NULL DEFAULT statement_timestamp(),
                 user_id text, anonymous_id text, session_id text,
                 properties jsonb NOT NULL DEFAULT '{}', context jsonb NOT NULL DEFAULT '{}')" ;;
        *) "${PSQL[@]}" -o /dev/null -c "SELECT stream.create_stream('$t', partition_interval => '1 day')" ;;
    esac
    case $v in
        a) "${PSQL[@]}" -c "CREATE INDEX ON $t USING brin (received_at)" ;;
        b) "${PSQL[@]}" -c "CREATE INDEX ON $t USING brin (received_at)" \
                        -c "CREATE TRIGGER qp_tick AFTER INSERT ON $t FOR EACH STATEMENT EXECUTE FUNCTION qp_tick_trigger()" ;;
        c) "${PSQL[@]}" -c "CREATE TRIGGER qp_queue AFTER INSERT ON $t REFERENCING NEW TABLE AS qp_new FOR EACH STATEMENT EXECUTE FUNCTION qp_queue_trigger()" ;;
    esac
    sql "CHECKPOINT" >/dev/null
}

slots_create() {
    # pgoutput publishes the stream alone (test_decoding sees the dedup key table too)
    sql "DROP PUBLICATION IF EXISTS qp_pub" >/dev/null
    sql "CREATE PUBLICATION qp_pub FOR TABLE s_stream WITH (publish = 'insert', publish_via_partition_root = true)" >/dev/null
    sql "SELECT pg_create_logical_replication_slot('qp_td', 'test_decoding')" >/dev/null
    sql "SELECT pg_create_logical_replication_slot('qp_po', 'pgoutput')" >/dev/null
}
slots_drop() {
    sql "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ('qp_td','qp_po')" >/dev/null
}

# drain: read the window the producer step wrote, for the variant's design
drain() {   # rep step variant expected
    local rep=$1 step=$2 v=$3 t0 t1 n s
    t=$(tbl "$v")
    case $v in
        plain) return ;;
        stream)   # (d) logical decoding of the same backlog, both plugins
            t0=$(now_s)
            n=$(sql "SELECT count(*) FROM pg_logical_slot_peek_changes('qp_td', NULL, NULL) WHERE data LIKE 'table public.$t%INSERT%'")
            t1=$(now_s); s=$(awk -v a=$t0 -v b=$t1 'BEGIN{print b-a}')
            rec "$rep" "drain_${step}_rows" d_test_decoding "$n" rows; rec "$rep" "drain_${step}_s" d_test_decoding "$s" s
            t0=$(now_s)
            n=$(sql "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('qp_po', NULL, NULL, 'proto_version', '1', 'publication_names', 'qp_pub') WHERE get_byte(data, 0) = 73")
            t1=$(now_s); s=$(awk -v a=$t0 -v b=$t1 'BEGIN{print b-a}')
            rec "$rep" "drain_${step}_rows" d_pgoutput "$n" rows; rec "$rep" "drain_${step}_s" d_pgoutput "$s" s
            ;;
        a|b|c)
            # read twice: the window with the backlog, then an empty window
            # (the cost of a poll that finds nothing)
            t0=$(now_s)
            n=$("${PSQL[@]}" -At -v design="$v" -v tbl="$t" -v reader=r -f "$HERE/read.sql")
            t1=$(now_s); s=$(awk -v a=$t0 -v b=$t1 'BEGIN{print b-a}')
            rec "$rep" "drain_${step}_rows" "$v" "$n" rows; rec "$rep" "drain_${step}_s" "$v" "$s" s
            t0=$(now_s)
            n=$("${PSQL[@]}" -At -v design="$v" -v tbl="$t" -v reader=r -f "$HERE/read.sql")
            t1=$(now_s); s=$(awk -v a=$t0 -v b=$t1 'BEGIN{print b-a}')
            rec "$rep" "poll_empty_${step}_rows" "$v" "$n" rows; rec "$rep" "poll_empty_${step}_s" "$v" "$s" s
            ;;
    esac
}

mark() { [ "$1" = plain ] && return 0; "${PSQL[@]}" -c "CALL qp_mark('r')"; [ "$1" = stream ] && slots_create; return 0; }

[ -f "$CSV" ] || { log "generating $ROWS events into $CSV"; "${PSQL[@]}" -v rows="$ROWS" -v file="$CSV" -f "$HERE/../gen_events.sql" >/dev/null; }
"${PSQL[@]}" -f "$HERE/schema.sql" >/dev/null

for rep in $(seq "$FIRST" $((FIRST + REPS - 1))); do
    for v in $VARIANTS; do
        [[ " $STEPS " == *" copy "* ]] || break
        t=$(tbl "$v")
        slots_drop
        create "$v"; mark "$v"
        t0=$(now_s)
        "${PSQL[@]}" -c "COPY $t ($COLS) FROM '$CSV' WITH (FORMAT csv)"
        t1=$(now_s); s=$(awk -v a=$t0 -v b=$t1 'BEGIN{print b-a}')
        rec "$rep" copy_s "$v" "$s" s; log "rep $rep $v COPY $s s"
        drain "$rep" copy "$v"
        slots_drop
    done
    for v in $VARIANTS; do
        [[ " $STEPS " == *" insert "* ]] || break
        t=$(tbl "$v")
        create "$v"; mark "$v"
        sed "s/@TABLE@/$t/" "$HERE/../insert_event.pgbench" >"$HOST/qp_insert.pgbench"
        tps=$("$BIN/pgbench" -n -h "$HOST" -p "$PORT" -U postgres -c 4 -j 2 -M prepared -T "$SECS" \
              -f "$HOST/qp_insert.pgbench" "$DB" 2>&1 | awk '/^tps/ { print $3; exit }')
        rec "$rep" insert_tps "$v" "$tps" tps; log "rep $rep $v INSERT $tps tps"
        drain "$rep" insert "$v"
        slots_drop
    done
done
