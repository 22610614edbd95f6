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

# -- live: cart abandonment arriving in a stream_listen window -----------------
# demo/85_abandonment.sql defines it (within => 4 seconds for the demo); here
# shoppers add to cart in real time, some buy within a second, and
# stream_listen prints the activations of those who did not as they fire.
echo
echo "== 85  live: cart abandonment, as stream_listen prints it"
echo "   stream_listen -d 'host=$WORK port=$PORT dbname=demo' -c recovery -c ops --consumer demo-mailer"
CONN="host=$WORK port=$PORT user=postgres dbname=demo"
"$PGBIN/stream_listen" -d "$CONN" -c recovery -c ops --consumer demo-mailer 2>/dev/null |
    sed -u -e 's/^/   [stream_listen] /' &
LISTENER=$!
sleep 1
for round in 1 2 3 4 5 6; do
    "${PSQL[@]}" -d demo -c "INSERT INTO clicks (event_name, user_id, properties)
        SELECT 'add_to_cart', 'live_' || $round || '_' || k,
               jsonb_build_object('product_id', 'prod_' || lpad(((k * 7 + $round) % 50)::text, 4, '0'),
                                  'sku', 'SKU-' || lpad(((k * 7 + $round) % 50)::text, 5, '0'),
                                  'price', 19.90, 'quantity', 1, 'cart_id', 'cart_live_' || $round || '_' || k)
        FROM generate_series(1, 3) k" >/dev/null
    echo "   [generator] round $round: live_${round}_1..3 add to cart; live_${round}_2 and live_vip buy (42 EUR)"
    sleep 0.7
    "${PSQL[@]}" -d demo -c "INSERT INTO clicks (event_name, user_id, properties)
        VALUES ('purchase', 'live_${round}_2', '{\"order_id\": \"ord_77${round}\", \"revenue\": 42, \"currency\": \"EUR\"}'),
               ('purchase', 'live_vip', '{\"order_id\": \"ord_78${round}\", \"revenue\": 42, \"currency\": \"EUR\"}')" >/dev/null
    sleep 0.8
done
sleep 5
pkill -INT -P $$ -x stream_listen 2>/dev/null || true
wait $LISTENER 2>/dev/null || true
"${PSQL[@]}" -d demo -P footer=off -c "SELECT activation, count(*) AS fired, count(*) FILTER (WHERE late) AS late,
        round(avg(extract(epoch FROM fired_at - due_at))::numeric * 1000, 1) AS avg_ms_after_deadline
    FROM stream.activations WHERE activation IN ('cart_abandoned', 'vip_customer') GROUP BY 1"

# -- live: support tickets pausing promotions ---------------------------------
# demo/87_support_tickets.sql captures support_tickets into support_events;
# here agents open and resolve tickets with plain SQL while stream_listen
# prints the promotions channel.
echo
echo "== 87  live: support tickets pause and resume promotions, as stream_listen prints them"
echo "   stream_listen -d 'host=$WORK port=$PORT dbname=demo' -c promotions --consumer demo-promotions"
"$PGBIN/stream_listen" -d "$CONN" -c promotions --consumer demo-promotions 2>/dev/null |
    sed -u -e 's/^/   [stream_listen] /' &
LISTENER=$!
sleep 1
for t in 10 11 12; do
    "${PSQL[@]}" -d demo -c "INSERT INTO support_tickets (id, user_id, subject) VALUES ($t, 'live_$t', 'live ticket $t')" >/dev/null
    echo "   [agent] INSERT INTO support_tickets ... ticket $t for live_$t (open)"
    sleep 1.5
done
for t in 10 12; do
    "${PSQL[@]}" -d demo -c "UPDATE support_tickets SET status = 'resolved', updated_at = now() WHERE id = $t" >/dev/null
    echo "   [agent] UPDATE support_tickets SET status = 'resolved' WHERE id = $t"
    sleep 1.5
done
sleep 3
pkill -INT -P $$ -x stream_listen 2>/dev/null || true
wait $LISTENER 2>/dev/null || true
"${PSQL[@]}" -d demo -P footer=off -c "SELECT user_id, open_tickets,
        CASE WHEN open_tickets > 0 THEN 'paused' ELSE 'ok' END AS promotions
    FROM open_tickets WHERE user_id LIKE 'live_%' ORDER BY 1"

cat <<EOF

== the demo server is running
   connect:  psql -h $WORK -p $PORT -U postgres demo
   try:      SELECT * FROM stream.stats;
             SELECT event_name, count(*) FROM clicks GROUP BY 1;
             SELECT * FROM stream.ingest('clicks', '[{"type": "track", "event": "add_to_cart", "userId": "u1", "messageId": "m-1"}]');
   stop:     make demo-stop
EOF
