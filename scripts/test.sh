#!/usr/bin/env bash
# `make test`: installs what is missing, builds, installs, then runs every
# suite (pg_regress, isolation, TAP, JSON Schema conformance) and prints a
# pass/fail summary.  Works as root (servers run as the postgres OS user)
# and as an ordinary user who can write to the PostgreSQL install dirs.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

scripts/setup.sh || exit 1
. scripts/lib.sh

echo "== build"
make -s 2>&1 | grep -v "^$" ; [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "FAIL: build"; exit 1; }
make -s install >/dev/null || { echo "FAIL: make install (need write access to $("$PG_CONFIG" --pkglibdir))"; exit 1; }

# Everything the tests write goes to a work dir the cluster owner can use.
WORK=$(pg_workdir "$REPO/tmp/test")
rm -rf "${WORK:?}"/*
cp -r sql expected test "$WORK"/
# PostgreSQL 15.20+ restricts output plugins; the aggregates' worker decodes
# through this library's, so allow it where the setting exists.
if pg_has_output_plugin_libraries; then
    echo "output_plugin_libraries = 'pgoutput, test_decoding, stream_events'" >> "$WORK/test/regress.conf"
fi
[ "$(id -u)" -eq 0 ] && chown -R postgres: "$WORK"

declare -a names results
record() { names+=("$1"); results+=("$2"); }

# -- pg_regress ---------------------------------------------------------
echo "== pg_regress"
TESTS=$(ls sql/*.sql | xargs -n1 basename | sed 's/\.sql$//' | grep -v '^stream_events--' | sort | tr '\n' ' ')
PORT=$(free_port 55432)
if (cd "$WORK" && as_pg "$PG_REGRESS" --inputdir=. --outputdir=regress \
        --bindir="$PGBIN" --temp-instance=regress/instance --temp-config=test/regress.conf \
        --port="$PORT" --load-extension=stream_events $TESTS); then
    record "pg_regress ($(echo $TESTS | wc -w) suites)" PASS
else
    record "pg_regress" FAIL
    [ -f "$WORK/regress/regression.diffs" ] && head -200 "$WORK/regress/regression.diffs"
fi

# -- pg_regress in queue mode (wal_level = replica) ----------------------
if ls test/queue/sql/*.sql >/dev/null 2>&1; then
    echo "== pg_regress, queue mode"
    QTESTS=$(ls test/queue/sql/*.sql | xargs -n1 basename | sed 's/\.sql$//' | sort | tr '\n' ' ')
    sed 's/^wal_level.*/wal_level = replica/' "$WORK/test/regress.conf" > "$WORK/test/regress-queue.conf"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/test/regress-queue.conf"
    PORT=$(free_port 55482)
    if (cd "$WORK" && as_pg "$PG_REGRESS" --inputdir=test/queue --outputdir=regress-queue \
            --bindir="$PGBIN" --temp-instance=regress-queue/instance --temp-config=test/regress-queue.conf \
            --port="$PORT" --load-extension=stream_events $QTESTS); then
        record "pg_regress, queue mode ($(echo $QTESTS | wc -w) suites)" PASS
    else
        record "pg_regress, queue mode" FAIL
        [ -f "$WORK/regress-queue/regression.diffs" ] && head -200 "$WORK/regress-queue/regression.diffs"
    fi
fi

# -- isolation (concurrency) --------------------------------------------
if ls test/isolation/specs/*.spec >/dev/null 2>&1; then
    echo "== isolation"
    ISO=$(ls test/isolation/specs/*.spec | xargs -n1 basename | sed 's/\.spec$//' | sort | tr '\n' ' ')
    PORT=$(free_port 55532)
    if (cd "$WORK" && as_pg "$PG_ISOLATION_REGRESS" --inputdir=test/isolation --outputdir=isolation \
            --bindir="$PGBIN" --temp-instance=isolation/instance --temp-config=test/regress.conf \
            --port="$PORT" --load-extension=stream_events $ISO); then
        record "isolation ($(echo $ISO | wc -w) specs)" PASS
    else
        record "isolation" FAIL
        [ -f "$WORK/isolation/regression.diffs" ] && head -200 "$WORK/isolation/regression.diffs"
    fi
fi

# -- TAP ------------------------------------------------------------------
if ls test/t/*.pl >/dev/null 2>&1; then
    echo "== TAP"
    mkdir -p "$WORK/tap"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/tap"
    if (cd "$WORK" && as_pg env TESTDIR="$WORK/tap" PG_REGRESS="$PG_REGRESS" \
            PERL5LIB="$PG_PERL_LIB:$WORK/test/perl" PG_TEST_NOCLEAN= \
            prove --timer test/t/*.pl); then
        record "TAP ($(ls test/t/*.pl | wc -l) files)" PASS
    else
        record "TAP" FAIL
        for f in "$WORK"/tap/tmp_check/log/regress_log_*; do
            [ -f "$f" ] && { echo "--- $f (tail)"; tail -40 "$f"; }
        done
    fi
fi

# -- TAP in queue mode ----------------------------------------------------
# The files that say so run again with the ingest queue as the consumer's
# source (wal_level = replica, docs/queue-mode.md).
QUEUE_TAP=$(cd "$WORK" && grep -l '^# Runs in both consumer modes' test/t/*.pl 2>/dev/null | tr '\n' ' ')
if [ -n "$QUEUE_TAP" ]; then
    echo "== TAP, queue mode"
    mkdir -p "$WORK/tap-queue"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/tap-queue"
    if (cd "$WORK" && as_pg env TESTDIR="$WORK/tap-queue" PG_REGRESS="$PG_REGRESS" \
            PERL5LIB="$PG_PERL_LIB:$WORK/test/perl" PG_TEST_NOCLEAN= STREAM_EVENTS_TEST_MODE=queue \
            prove --timer $QUEUE_TAP); then
        record "TAP, queue mode ($(echo $QUEUE_TAP | wc -w) files)" PASS
    else
        record "TAP, queue mode" FAIL
        for f in "$WORK"/tap-queue/tmp_check/log/regress_log_*; do
            [ -f "$f" ] && { echo "--- $f (tail)"; tail -40 "$f"; }
        done
    fi
fi

# -- JSON Schema conformance ---------------------------------------------
if [ -x test/conformance/run.sh ]; then
    echo "== conformance"
    if test/conformance/run.sh "$WORK/conformance"; then
        record "JSON Schema conformance" PASS
    else
        record "JSON Schema conformance" FAIL
    fi
fi

echo
echo "== summary"
fail=0
for i in "${!names[@]}"; do
    printf '  %-4s %s\n' "${results[$i]}" "${names[$i]}"
    [ "${results[$i]}" = PASS ] || fail=1
done
if [ $fail -eq 0 ]; then
    echo "ALL TESTS PASSED"
else
    # repeat the first lines of each diff last, where a truncated log shows them
    for d in "$WORK"/regress/regression.diffs "$WORK"/regress-queue/regression.diffs "$WORK"/isolation/regression.diffs; do
        [ -s "$d" ] && { echo "--- $d (head)"; head -40 "$d"; }
    done
    echo "SOME TESTS FAILED (work files in $WORK)"
fi
exit $fail
