#!/usr/bin/env bash
# bench/table.sh: rewrites the results table of bench/README.md (between
# the <!-- results --> and <!-- /results --> lines) from bench/results.tsv,
# which every bench script updates through bench_record (bench/lib.sh).
# Each row: the measurement, its last value, the target, whether the value
# meets it, and the date and commit it was measured at.  Run by
# bench_record after each figure; run it by hand after editing the TSV.
#   bench/table.sh [results.tsv [README.md]]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
TSV=${1:-"$REPO/bench/results.tsv"}
README=${2:-"$REPO/bench/README.md"}

[ -f "$TSV" ] || { echo "table.sh: no $TSV" >&2; exit 1; }
grep -q '^<!-- results -->$' "$README" && grep -q '^<!-- /results -->$' "$README" ||
    { echo "table.sh: $README has no <!-- results --> ... <!-- /results --> section" >&2; exit 1; }

table=$(mktemp)
trap 'rm -f "$table" "$table.new"' EXIT

# The verdict is computed here, not stored: a target edited in the TSV
# re-judges the last value.  A range ("0.60-0.65", ASCII hyphen) meets a target when both
# ends do, misses it when neither does.
awk -F '\t' '
function meets(v, op, t) {
    if (v == "nan" || v == "") return 0
    v += 0
    if (op == ">=") return v >= t
    if (op == ">")  return v > t
    if (op == "<=") return v <= t
    if (op == "<")  return v < t
    return 0
}
function verdict(value, target,    op, t, n, ends, ok, i) {
    if (target == "") return ""
    split(target, tt, " "); op = tt[1]; t = tt[2] + 0
    n = split(value, ends, "-")
    if (value ~ /^-/) { n = 1; ends[1] = value }   # a negative number, not a range
    ok = 0
    for (i = 1; i <= n; i++) ok += meets(ends[i], op, t)
    return ok == n ? "ok" : (ok == 0 ? "**missed**" : "partly")
}
function unit_of(u) { return (u == "" || u == "x") ? (u == "x" ? "×" : "") : " " u }
NR == 1 { next }
{
    name = $1; value = $2; unit = $3; target = $4; date = $5; commit = $6; what = $7
    shown = (value == "nan") ? "failed" : value unit_of(unit)
    tg = (target == "") ? "—" : target unit_of(unit)
    printf "| %s | `%s` | %s | %s | %s | %s | %s |\n", what, name, shown, tg, verdict(value, target), date, commit
}' "$TSV" > "$table.rows"

{
    echo '| measurement | name | last value | target | verdict | date | commit |'
    echo '|---|---|---|---|---|---|---|'
    cat "$table.rows"
} > "$table"
rm -f "$table.rows"

awk -v table="$table" '
    /^<!-- results -->$/ { print; while ((getline line < table) > 0) print line; skip = 1; next }
    /^<!-- \/results -->$/ { skip = 0 }
    !skip { print }' "$README" > "$table.new"
cat "$table.new" > "$README"
echo "table.sh: $(($(wc -l < "$TSV") - 1)) results written to $README"
