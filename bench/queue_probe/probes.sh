#!/bin/bash
# bench/queue_probe/probes.sh: the correctness and long-transaction probes of
# docs/queue-mode.md, for the SQL prototypes of (a) snapshot windows over the
# stream and (b) per-transaction ticks (schema.sql, read.sql).  Runs in its own
# database (qp_probe) so that its long transaction does not pin the bound of
# run.sh's readers.  Prints one line per probe: what each design read.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${QP_BIN:-/opt/pgD/lib/postgresql/15/bin}
HOST=${QP_HOST:-/tmp/wtg_qp}; PORT=${QP_PORT:-58500}; DB=qp_probe
LROWS=${QP_LONG_ROWS:-200000}
export PGOPTIONS="-c client_min_messages=warning"
P=("$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PORT" -U postgres)
Q=("${P[@]}" -d "$DB")
sql() { "${Q[@]}" -At -c "$1"; }
read_w() { "${Q[@]}" -At -v design="$1" -v tbl="$2" -v reader="$3" -v v2=1 -f "$HERE/read.sql"; }
timed_read() { local t0 t1 n; t0=$(date +%s.%N); n=$(read_w "$@"); t1=$(date +%s.%N); awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%s rows in %.3f s", n, b - a }'; }
mark() { "${Q[@]}" -c "CALL qp_mark('$1')"; }
ROW="(gen_random_uuid(), 'probe', now(), 'u1', 'a1', 's1', '{}', '{}')"
COLS="(event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context)"

"${P[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
"${Q[@]}" -c "CREATE EXTENSION stream_events" -f "$HERE/schema.sql" >/dev/null
for t in s_pa s_pb; do
    sql "SELECT stream.create_stream('$t', partition_interval => '1 day')" >/dev/null
    sql "CREATE INDEX ON $t USING brin (received_at)"
done
sql "CREATE TRIGGER qp_tick AFTER INSERT ON s_pb FOR EACH STATEMENT EXECUTE FUNCTION qp_tick_trigger()"
mark ra; mark rb; read_w a s_pa ra >/dev/null; read_w b s_pb rb >/dev/null

probe() {   # name, the producer's SQL (runs in the background), seconds before the middle read
    local name=$1 producer=$2 wait=$3 n1a n1b n2a n2b
    "${Q[@]}" -At -c "$producer" >"$HOST/probe_$name.out" 2>&1 &
    local pid=$!
    sleep "$wait"
    # the producer has written and sleeps: its (sub)transaction is open now
    until [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE datname = '$DB' AND wait_event = 'PgSleep'")" = 1 ]; do sleep 0.2; done
    # another transaction, with a later xid, completes (as other producers' do)
    sql "SELECT pg_current_xact_id()" >/dev/null
    n1a=$(read_w a s_pa ra); n1b=$(read_w b s_pb rb)
    wait $pid
    n2a=$(read_w a s_pa ra); n2b=$(read_w b s_pb rb)
    echo "$name: during (a) $n1a (b) $n1b; after commit (a) $n2a (b) $n2b; expected 0 then 1 each; producer said: $(tr '\n' ' ' <"$HOST/probe_$name.out")"
}

# 1. plain transaction open across a read: control
probe plain_txn "BEGIN; INSERT INTO s_pa $COLS VALUES $ROW; INSERT INTO s_pb $COLS VALUES $ROW; SELECT pg_sleep(3); COMMIT;" 1
# 2. rows written in a subtransaction (SAVEPOINT; plpgsql EXCEPTION blocks do the same)
probe subxact "BEGIN; SAVEPOINT s; INSERT INTO s_pa $COLS VALUES $ROW; INSERT INTO s_pb $COLS VALUES $ROW; SELECT 'top', pg_current_xact_id(), 'row xmin', (SELECT xmin FROM s_pa WHERE event_name = 'probe' ORDER BY received_at DESC LIMIT 1); SELECT pg_sleep(3); RELEASE s; COMMIT;" 1
# 3. a prepared transaction: inserted, prepared, the read's position taken, committed later
"${Q[@]}" -c "BEGIN; INSERT INTO s_pa $COLS VALUES $ROW; INSERT INTO s_pb $COLS VALUES $ROW; PREPARE TRANSACTION 'qp_probe';"
sleep 1
n1a=$(read_w a s_pa ra); n1b=$(read_w b s_pb rb)
sql "COMMIT PREPARED 'qp_probe'"
n2a=$(read_w a s_pa ra); n2b=$(read_w b s_pb rb)
echo "prepared: during (a) $n1a (b) $n1b; after COMMIT PREPARED (a) $n2a (b) $n2b; expected 0 then 1 each"
# 4. rows moved by maintenance out of the default partition, after they were read
sql "INSERT INTO s_pa $COLS SELECT gen_random_uuid(), 'old', now() - interval '10 days', 'u', 'a', 's', '{}', '{}' FROM generate_series(1, 1000)"
sql "INSERT INTO s_pb $COLS SELECT gen_random_uuid(), 'old', now() - interval '10 days', 'u', 'a', 's', '{}', '{}' FROM generate_series(1, 1000)"
n1a=$(read_w a s_pa ra); n1b=$(read_w b s_pb rb)
d=$(sql "SELECT count(*) FROM s_pa_default")
sql "SELECT stream.maintain('s_pa'::regclass)" >/dev/null; sql "SELECT stream.maintain('s_pb'::regclass)" >/dev/null
d2=$(sql "SELECT count(*) FROM s_pa_default")
n2a=$(read_w a s_pa ra); n2b=$(read_w b s_pb rb)
echo "moved: new rows read (a) $n1a (b) $n1b; default partition $d -> $d2 rows after stream.maintain; read after the move (a) $n2a (b) $n2b; expected 0 each"
# 5. a long-running producer transaction: the cost of the polls that follow a backlog
"${Q[@]}" -At -c "BEGIN; INSERT INTO s_pa $COLS VALUES $ROW; INSERT INTO s_pb $COLS VALUES $ROW; SELECT pg_sleep(${QP_LONG_SECS:-40}); COMMIT;" >/dev/null &
lpid=$!
sleep 1
"${Q[@]}" -c "INSERT INTO s_pa $COLS SELECT gen_random_uuid(), 'bulk', now(), 'u' || i % 1000, 'a', 's', jsonb_build_object('i', i), '{}' FROM generate_series(1, $LROWS) i"
"${Q[@]}" -c "INSERT INTO s_pb $COLS SELECT gen_random_uuid(), 'bulk', now(), 'u' || i % 1000, 'a', 's', jsonb_build_object('i', i), '{}' FROM generate_series(1, $LROWS) i"
echo "long txn open, backlog of $LROWS: (a) $(timed_read a s_pa ra); (b) $(timed_read b s_pb rb)"
for i in 1 2 3; do
    sql "INSERT INTO s_pa $COLS VALUES $ROW"; sql "INSERT INTO s_pb $COLS VALUES $ROW"
    echo "long txn open, poll $i (1 new row each): (a) $(timed_read a s_pa ra); (b) $(timed_read b s_pb rb)"
done
# 4b. the same move while a transaction older than the moved rows is open
sql "INSERT INTO s_pa $COLS SELECT gen_random_uuid(), 'old', now() - interval '20 days', 'u', 'a', 's', '{}', '{}' FROM generate_series(1, 1000)"
sql "INSERT INTO s_pb $COLS SELECT gen_random_uuid(), 'old', now() - interval '20 days', 'u', 'a', 's', '{}', '{}' FROM generate_series(1, 1000)"
n1a=$(read_w a s_pa ra); n1b=$(read_w b s_pb rb)
sql "SELECT stream.maintain('s_pa'::regclass)" >/dev/null; sql "SELECT stream.maintain('s_pb'::regclass)" >/dev/null
n2a=$(read_w a s_pa ra); n2b=$(read_w b s_pb rb)
echo "moved, long txn open: new rows read (a) $n1a (b) $n1b ; read after the move (a) $n2a (b) $n2b; expected 0 each"
wait $lpid
echo "long txn committed: (a) $(timed_read a s_pa ra); (b) $(timed_read b s_pb rb)"
for i in 1 2 3; do
    sql "INSERT INTO s_pa $COLS VALUES $ROW"; sql "INSERT INTO s_pb $COLS VALUES $ROW"
    echo "after, poll $i (1 new row each): (a) $(timed_read a s_pa ra); (b) $(timed_read b s_pb rb)"
done
