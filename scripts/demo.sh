#!/usr/bin/env bash
# `make demo`: installs what is missing, builds and installs the extension,
# starts a throwaway PostgreSQL under ./tmp/demo (its own port and socket
# directory), creates the database `demo` and runs demo/NN_*.sql in order:
# streams, a generated click-stream delivered by INSERT, COPY and
# stream.ingest, and a tour of what the extension did.  The server keeps
# running so that you can look around; `make demo-stop` stops it.
# Running `make demo` again restarts it from scratch.
#
#   scripts/demo.sh          build, start, load, show
#   scripts/demo.sh stop     stop the demo server
#
# Environment: DEMO_USERS (default 3000) shoppers to generate;
# DEMO_BUILD=0 uses the installed extension instead of building it.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

DEMO_DIR="$REPO/tmp/demo"
USERS=${DEMO_USERS:-3000}
BUILD=${DEMO_BUILD:-1}

# Stops the demo server if one runs; returns 1 if there was none.
demo_stop() {
    local dir
    [ -e "$DEMO_DIR" ] || return 1
    dir=$(readlink -f "$DEMO_DIR")
    [ -f "$dir/data/postmaster.pid" ] || return 1
    cluster_stop "$dir" fast
    echo "demo: server stopped"
}

if [ "${1:-}" = stop ]; then
    if ! command -v "${PG_CONFIG:-pg_config}" >/dev/null; then
        echo "demo: PostgreSQL is not installed; nothing to stop"
        exit 0
    fi
    . scripts/lib.sh
    demo_stop || echo "demo: not running"
    exit 0
elif [ $# -gt 0 ]; then
    echo "usage: scripts/demo.sh [stop]" >&2
    exit 2
fi

if [ "$BUILD" = 1 ]; then
    scripts/setup.sh
fi
. scripts/lib.sh

if [ "$BUILD" = 1 ]; then
    echo "== build and install"
    make -s || { echo "demo: build failed" >&2; exit 1; }
    make -s install >/dev/null ||
        { echo "demo: make install failed (need write access to $("$PG_CONFIG" --pkglibdir))" >&2; exit 1; }
fi

# A demo that is still running is stopped and replaced.
demo_stop || true
WORK=$(pg_workdir "$DEMO_DIR")
rm -rf "${WORK:?}"/*
PORT=$(free_port 5440)

echo "== starting PostgreSQL on port $PORT (socket and data under $WORK)"
cluster_init "$WORK" "$PORT" \
    "stream_events.naptime = 1" \
    "log_min_messages = warning" \
    "log_line_prefix = '%m [%p] %q%u@%d '"
if ! cluster_start "$WORK"; then
    echo "demo: the server did not start; the end of its log:" >&2
    tail -20 "$WORK/server.log" >&2
    exit 1
fi
echo "$PORT" > "$WORK/port" 2>/dev/null || true

on_error() {
    echo >&2
    echo "demo: a step failed; the server is still running (make demo-stop)." >&2
    echo "demo: server log: $WORK/server.log" >&2
}
trap on_error ERR

PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -U postgres)
PGOPTIONS="-c client_min_messages=notice" "${PSQL[@]}" -d postgres -c "CREATE DATABASE demo"

for f in demo/[0-9][0-9]_*.sql; do
    "${PSQL[@]}" -d demo -P footer=off -v users="$USERS" -v workdir="$WORK" -f "$f" 2>&1
done

cat <<EOF

== the demo server is running
   connect:  psql -h $WORK -p $PORT -U postgres demo
   try:      SELECT * FROM stream.stats;
             SELECT event_name, count(*) FROM clicks GROUP BY 1;
             SELECT * FROM stream.ingest('clicks', '[{"type": "track", "event": "add_to_cart", "userId": "u1", "messageId": "m-1"}]');
   stop:     make demo-stop
EOF
