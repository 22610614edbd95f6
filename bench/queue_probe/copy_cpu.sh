#!/bin/bash
# bench/queue_probe/copy_cpu.sh: CPU seconds (user + system, from
# /proc/<pid>/stat) of the server backend that runs the COPY of the events
# into each variant's table, alternating the variants in each repetition.
# On a shared, loaded machine the wall-clock time of run.sh swings with the
# neighbours' load; the backend's own CPU time is what the producer pays.
# Writes "rep copy_cpu_s variant seconds s" lines to results.tsv.
# Must run on the server's machine as a user that can read /proc/<pid>/stat.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${QP_BIN:-/opt/pgD/lib/postgresql/15/bin}
HOST=${QP_HOST:-/tmp/wtg_qp}; PORT=${QP_PORT:-58500}; DB=${QP_DB:-qp}
REPS=${QP_REPS:-3}; FIRST=${QP_FIRST_REP:-1}
VARIANTS=${QP_VARIANTS:-"plain stream a b c"}
CSV=${QP_CSV:-$HOST/events.csv}
OUT=${QP_OUT:-$HERE/results.tsv}
PSQL=("$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PORT" -U postgres -d "$DB")
export PGOPTIONS="-c client_min_messages=warning"
COLS="event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context"
TCK=$(getconf CLK_TCK)
# create() and tbl() as in run.sh
eval "$(sed -n '/^tbl()/p; /^create() {/,/^}/p' "$HERE/run.sh")"
sql() { "${PSQL[@]}" -At -c "$1"; }
for rep in $(seq "$FIRST" $((FIRST + REPS - 1))); do
    for v in $VARIANTS; do
        t=$(tbl "$v"); create "$v" >/dev/null
        cpu=$("${PSQL[@]}" -At <<SQL
SELECT pg_backend_pid() AS pid \gset
\setenv QP_PID :pid
\! awk '{ print \$14 + \$15 }' /proc/\$QP_PID/stat > $HOST/cpu0
COPY $t ($COLS) FROM '$CSV' WITH (FORMAT csv);
\! awk '{ print \$14 + \$15 }' /proc/\$QP_PID/stat > $HOST/cpu1
SQL
        )
        c=$(awk -v t="$TCK" 'NR == FNR { a = $1; next } { printf "%.2f", ($1 - a) / t }' "$HOST/cpu0" "$HOST/cpu1")
        printf '%s\tcopy_cpu_s\t%s\t%s\ts\n' "$rep" "$v" "$c" >>"$OUT"
        echo "rep $rep $v COPY backend CPU $c s" >&2
    done
done
