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
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "nan" && a <= b) }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "nan" && a >= b) }'; }
