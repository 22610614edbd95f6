# bench/lib.sh: the shell helpers every bench/*.sh script shares (sourced
# after scripts/lib.sh): SQL one-liners, timing, medians, ratios and spreads
# of repetitions, threshold checks.  A ratio or comparison with "nan" (a
# measurement that failed) is "nan" / false, never a division error.

die() { echo "bench: $*" >&2; exit 1; }
# BENCH_ONLY=<part>: run one part only
want() { [ -z "${ONLY:-}" ] || [ "$ONLY" = "$1" ]; }
# one value from the bench database (PSQL: the script's psql command)
sql() { "${PSQL[@]}" -At -c "$1"; }
now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# median of the arguments; an even count averages the middle two, printed
# with MEDIAN_FORMAT (default %.3f)
median() { printf '%s\n' "$@" | sort -g | awk -v f="${MEDIAN_FORMAT:-%.3f}\n" '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf f, (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0 || a == "nan" || b == "nan") print "nan"; else printf "%.3f", a / b }'; }
minimum() { printf '%s\n' "$@" | sort -g | head -1; }
maximum() { printf '%s\n' "$@" | sort -g | tail -1; }
# (max - min) / min of the repetitions, in percent
spread() { awk -v a="$(minimum "$@")" -v b="$(maximum "$@")" 'BEGIN { printf "%.0f", 100 * (b - a) / a }'; }
# measured_sql SQL: runs SQL in one session (PSQL) and prints "wall_s
# cpu_s": the wall clock around the statement and its backend's user +
# system time from /proc/<pid>/stat, which the neighbours' load does not
# change (root or the postgres user can read it).  Scratch files go to
# MEASURE_DIR (default: SRV).
measured_sql() {
    local dir=${MEASURE_DIR:-${SRV:?}}
    "${PSQL[@]}" -At >/dev/null <<SQL
SELECT pg_backend_pid() AS pid \gset
\setenv QB_PID :pid
\! awk '{ print \$14 + \$15 }' /proc/\$QB_PID/stat > $dir/cpu0; date +%s.%N > $dir/t0
$1;
\! date +%s.%N > $dir/t1; awk '{ print \$14 + \$15 }' /proc/\$QB_PID/stat > $dir/cpu1
SQL
    echo "$(elapsed "$(cat "$dir/t0")" "$(cat "$dir/t1")") $(awk -v t="$(getconf CLK_TCK)" 'NR == FNR { a = $1; next } { printf "%.2f", ($1 - a) / t }' "$dir/cpu0" "$dir/cpu1")"
}
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "nan" && a <= b) }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "nan" && a >= b) }'; }

# ---- the results table (bench/results.tsv -> bench/README.md) ----
# Every figure that has a target (and the ratios without one) is recorded in
# bench/results.tsv, one line per measurement, tab-separated:
#   name  value  unit  target  date  commit  what
# value is a number ("nan": the measurement failed; "a-b": a range, for
# figures carried over from notes), target ">= 0.90", "<= 50", "< 0.5" or
# empty (no target), commit the code measured (HEAD, "+" when src/ or sql/
# had uncommitted changes).  bench/table.sh rewrites the table between the
# <!-- results --> markers of bench/README.md from it, so the README's
# figures are never older than the last run.
BENCH_RESULTS_FILE=${BENCH_RESULTS_FILE:-"$REPO/bench/results.tsv"}
BENCH_COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$REPO" status --porcelain -- src sql 2>/dev/null)" ]; then
    BENCH_COMMIT="$BENCH_COMMIT+"
fi

# bench_defaults VAR=VALUE...: 1 when every VAR has its default VALUE, else
# 0; the scripts record by default only runs at the settings their targets
# are for (a quick look with fewer events must not overwrite the table).
# BENCH_RECORD=1 / 0 forces either way.
bench_defaults() {
    local kv var
    [ -z "${BENCH_EXTRA_CONF:-}" ] || { echo 0; return; }
    for kv in "$@"; do
        var=${kv%%=*}
        [ "${!var-}" = "${kv#*=}" ] || { echo 0; return; }
    done
    echo 1
}

# bench_record NAME VALUE UNIT TARGET WHAT: replaces NAME's line in
# bench/results.tsv (appends a new name) and regenerates the README table;
# nothing when RECORD (the script's BENCH_RECORD) is 0.
bench_record() {
    local name=$1 value=$2 unit=$3 target=$4 what=$5 tmp
    [ "${RECORD:-1}" = 1 ] || return 0
    [ -n "$value" ] || value=nan
    [ -f "$BENCH_RESULTS_FILE" ] ||
        printf 'name\tvalue\tunit\ttarget\tdate\tcommit\twhat\n' > "$BENCH_RESULTS_FILE"
    tmp=$(mktemp)
    awk -F '\t' -v OFS='\t' -v n="$name" \
        -v line="$name	$value	$unit	$target	$(date -u +%Y-%m-%d)	$BENCH_COMMIT	$what" '
        $1 == n { if (!done) print line; done = 1; next }
        { print }
        END { if (!done) print line }' "$BENCH_RESULTS_FILE" > "$tmp"
    cat "$tmp" > "$BENCH_RESULTS_FILE"
    rm -f "$tmp"
    "$REPO/bench/table.sh" "$BENCH_RESULTS_FILE" >/dev/null || echo "bench: could not update bench/README.md" >&2
}

# bench_forget NAME...: drops rows a script's own figures supersede (the
# 0.1.0 notes recorded under other names); nothing when RECORD is 0.
bench_forget() {
    local tmp name
    [ "${RECORD:-1}" = 1 ] && [ -f "$BENCH_RESULTS_FILE" ] || return 0
    for name in "$@"; do
        grep -q "^$name	" "$BENCH_RESULTS_FILE" || continue
        tmp=$(mktemp)
        awk -F '\t' -v n="$name" '$1 != n' "$BENCH_RESULTS_FILE" > "$tmp"
        cat "$tmp" > "$BENCH_RESULTS_FILE"
        rm -f "$tmp"
    done
    "$REPO/bench/table.sh" "$BENCH_RESULTS_FILE" >/dev/null || echo "bench: could not update bench/README.md" >&2
}
