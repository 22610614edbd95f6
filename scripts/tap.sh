#!/usr/bin/env bash
# Runs some TAP files the way `make test` does (prove as the cluster owner,
# PERL5LIB with test/perl), after building and installing the extension.
#   scripts/tap.sh test/t/040_upgrade.pl [more files...]     (default: all)
# BUILD=0 skips the build and install (use what is installed).  The logs of
# a failing run are printed (tail); all of them stay in tmp/tap-<first file>.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
. scripts/lib.sh

if [ "${BUILD:-1}" = 1 ]; then
    make -s >/dev/null || { echo "FAIL: build (run make to see why)"; exit 1; }
    make -s install >/dev/null || { echo "FAIL: make install"; exit 1; }
fi

[ $# -gt 0 ] || set -- test/t/*.pl
WORK=$(pg_workdir "$REPO/tmp/tap-$(basename "$1" .pl)")
rm -rf "${WORK:?}"/*
cp -r sql expected test "$WORK"/
mkdir -p "$WORK/tap"
[ "$(id -u)" -eq 0 ] && chown -R postgres: "$WORK"
(cd "$WORK" && as_pg env TESTDIR="$WORK/tap" PG_REGRESS="$PG_REGRESS" \
    PERL5LIB="$PG_PERL_LIB:$WORK/test/perl" PG_TEST_NOCLEAN= \
    prove --timer "$@")
rc=$?
if [ $rc -ne 0 ]; then
    for f in "$WORK"/tap/tmp_check/log/regress_log_*; do
        [ -f "$f" ] && { echo "--- $f (tail)"; tail -60 "$f"; }
    done
    echo "logs: $WORK/tap/tmp_check/log"
fi
exit $rc
