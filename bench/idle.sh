#!/usr/bin/env bash
# bench/idle.sh: what the background processes cost when nothing happens
# (issue 13, item 4), measured on one throwaway server.
#
# One database with a stream, the three continuous aggregates of
# bench/aggregate.sh, an on_event and an on_absence activation, and no
# events.  After BENCH_SETTLE seconds (creation, backfill and the first
# maintenance runs are over), `pidstat -u -p <worker>,<launcher> 1
# BENCH_SECONDS` measures the CPU of the database's worker and of the
# launcher.  Target: both together < 0.5% of one core.  Also printed, over
# the same window, from /proc and pg_stat_database: the CPU by the
# processes' own tick counters (a cross-check of pidstat), their wakeups
# (voluntary context switches) per second and the transactions per second
# in the database (nobody else is connected, so they are the worker's).
#
# Environment:
#   BENCH_SECONDS=60   the measured window
#   BENCH_SETTLE=15    seconds between the definitions and the window
#   BENCH_BUILD=1      build and install first (0: the installed extension)
#   BENCH_PROFILE=0    1: also perf-record the worker over the window, top symbols
#   BENCH_KEEP=0       1: keep the data directory
#   BENCH_RECORD       1: record the figures in bench/results.tsv and the
#                      README table (default: when BENCH_SECONDS is 60)
# See bench/README.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

SECS=${BENCH_SECONDS:-60}
SETTLE=${BENCH_SETTLE:-15}
BUILD=${BENCH_BUILD:-1}
PROFILE=${BENCH_PROFILE:-0}
KEEP=${BENCH_KEEP:-0}
TARGET=0.5          # % of one core, worker + launcher, less than

if [ "$BUILD" = 1 ]; then
    scripts/setup.sh
fi
. scripts/lib.sh
. bench/lib.sh
RECORD=${BENCH_RECORD:-$(bench_defaults SECS=60)}

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bench_build
PATH="$PGBIN:$PATH"

# pidstat comes with sysstat; install it the way scripts/setup.sh installs
# packages (apt-get as root, else name it and stop)
if ! command -v pidstat >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
        log "installing sysstat (pidstat)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends sysstat >/dev/null ||
            { apt-get update -qq || true; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends sysstat >/dev/null; }
    else
        die "pidstat is missing: sudo apt-get install sysstat"
    fi
fi

WORK=$(pg_workdir "$REPO/tmp/bench-idle")
cluster_stop "$WORK" immediate
rm -rf "${WORK:?}"/*
PORT=$(free_port 5470)
mkdir -p "$REPO/tmp"
RESULTS="$REPO/tmp/bench-idle-$(date +%Y%m%d-%H%M%S).txt"
BG_PIDS=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    cluster_stop "$WORK" fast
    if [ "$KEEP" != 1 ]; then
        rm -rf "${WORK:?}/data"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "server on port $PORT under $WORK"
cluster_init "$WORK" "$PORT" "${BENCH_SERVER_CONF[@]}"
cluster_start "$WORK"

export PGOPTIONS="-c client_min_messages=warning"
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
PSQL_PG=("${PSQL[@]}" -d postgres)
PSQL+=(-d bench)
"${PSQL[@]}" -c "CREATE EXTENSION stream_events"

out() { echo "$*" | tee -a "$RESULTS"; }

echo "stream_events idle benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$RESULTS"
out "host: $(nproc) cores, $("$PGBIN/postgres" --version), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
out "settings: window ${SECS}s after ${SETTLE}s; naptime $(sql "SHOW stream_events.naptime"), aggregate_poll_interval $(sql "SHOW stream_events.aggregate_poll_interval")"
out "extension: $(sql "SELECT extversion FROM pg_extension WHERE extname = 'stream_events'"), commit $BENCH_COMMIT"

PRICE="(properties->>'price')::numeric"
log "a stream, 3 aggregates, an on_event and an on_absence activation"
"${PSQL[@]}" -o /dev/null <<SQL
SELECT stream.create_stream('clicks', partition_interval => '1 day');
SELECT stream.create_aggregate('agg_minute', \$q\$
  SELECT stream.tumble(occurred_at, '1 minute') AS minute, count(*) AS events,
         count(user_id) AS identified, sum($PRICE) AS revenue, max(occurred_at) AS last_seen
  FROM clicks GROUP BY 1 \$q\$);
SELECT stream.create_aggregate('agg_hop', \$q\$
  SELECT w.window_start, count(*) AS events, sum($PRICE) AS revenue
  FROM clicks CROSS JOIN LATERAL stream.hop(occurred_at, '10 minutes', '1 minute') AS w(window_start)
  GROUP BY 1 \$q\$);
SELECT stream.create_aggregate('agg_name', \$q\$
  SELECT event_name, count(*) AS events, count(user_id) AS identified, max(occurred_at) AS last_seen
  FROM clicks GROUP BY 1 \$q\$);
SELECT stream.on_event('vip_view', 'clicks',
       \$c\$event_name = 'page_view' AND (context->>'tier') = 'vip'\$c\$, channel => 'vip');
SELECT stream.on_absence('cart_abandoned', 'clicks',
       started_by => \$c\$event_name = 'add_to_cart'\$c\$,
       cancelled_by => \$c\$event_name = 'purchase'\$c\$,
       within => '30 minutes', key => 'user_id', channel => 'recovery');
SELECT stream.flush(NULL, '1 min');
SQL

WORKER=$(sql "SELECT pid FROM stream.worker_status() WHERE datname = 'bench' AND state = 'running'")
[ -n "$WORKER" ] || die "the database's worker does not run"
LAUNCHER=$(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'stream_events launcher'")
[ -n "$LAUNCHER" ] || die "the launcher does not run"
log "worker pid $WORKER, launcher pid $LAUNCHER; settling ${SETTLE}s"
sleep "$SETTLE"

# Counters read from outside the measured database (a session in it would
# be counted in its transactions).
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
wakeups() { awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$1/status"; }
xacts() { "${PSQL_PG[@]}" -At -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'bench'"; }

if [ "$PROFILE" = 1 ]; then
    command -v perf >/dev/null || die "BENCH_PROFILE=1 needs perf (apt-get install linux-perf)"
    perf record -q -g -p "$WORKER" -o "$WORK/perf-idle.data" -- sleep "$SECS" >/dev/null 2>&1 &
    BG_PIDS+=($!)
fi
x0=$(xacts); w0=$(ticks "$WORKER"); l0=$(ticks "$LAUNCHER")
ww0=$(wakeups "$WORKER"); lw0=$(wakeups "$LAUNCHER")
log "pidstat for ${SECS}s"
LC_ALL=C pidstat -u -p "$WORKER,$LAUNCHER" 1 "$SECS" > "$WORK/pidstat.out"
w1=$(ticks "$WORKER"); l1=$(ticks "$LAUNCHER")
ww1=$(wakeups "$WORKER"); lw1=$(wakeups "$LAUNCHER")
# the worker reports its transactions at most once a second
sleep 1.5
x1=$(xacts)

# pidstat's Average line of a pid: its %CPU column, found by the header
pidstat_cpu() {
    awk -v pid="$1" '
        $1 == "Average:" && $0 ~ /%CPU/ { for (i = 1; i <= NF; i++) { if ($i == "PID") p = i; if ($i == "%CPU") c = i } next }
        $1 == "Average:" && p && $p == pid { print $c; found = 1 }
        END { if (!found) print "nan" }' "$WORK/pidstat.out"
}
HZ=$(getconf CLK_TCK)
pct() { awk -v d="$1" -v hz="$HZ" -v s="$SECS" 'BEGIN { printf "%.2f", 100 * d / hz / s }'; }
per_s() { awk -v d="$1" -v s="$SECS" 'BEGIN { printf "%.1f", d / s }'; }

wcpu=$(pidstat_cpu "$WORKER"); lcpu=$(pidstat_cpu "$LAUNCHER")
total=$(awk -v a="$wcpu" -v b="$lcpu" 'BEGIN { if (a == "nan" || b == "nan") print "nan"; else printf "%.2f", a + b }')
if awk -v t="$total" -v m="$TARGET" 'BEGIN { exit !(t != "nan" && t < m) }'; then verdict=PASS; else verdict=FAIL; fi

if [ "$PROFILE" = 1 ]; then
    wait "${BG_PIDS[@]}" 2>/dev/null || true
    {
        echo "== perf profile of the idle worker (${SECS}s), with children"
        perf report -i "$WORK/perf-idle.data" --children --sort symbol --stdio -g none 2>/dev/null |
            grep -E '^ +[0-9.]+%' | head -40 || true
    } | tee -a "$RESULTS"
    cp "$WORK/perf-idle.data" "$REPO/tmp/perf-idle.data" 2>/dev/null || true
fi

{
    echo
    echo "== summary (${SECS}s idle: definitions, no events; % of one core)"
    printf '  %-9s pid %-7s %6s%% (pidstat)  %6s%% (/proc ticks)  %7s wakeups/s\n' \
        worker "$WORKER" "$wcpu" "$(pct $((w1 - w0)))" "$(per_s $((ww1 - ww0)))"
    printf '  %-9s pid %-7s %6s%% (pidstat)  %6s%% (/proc ticks)  %7s wakeups/s\n' \
        launcher "$LAUNCHER" "$lcpu" "$(pct $((l1 - l0)))" "$(per_s $((lw1 - lw0)))"
    echo "  transactions in the database: $(per_s $((x1 - x0)))/s"
    echo "  worker + launcher: ${total}% of a core (target < ${TARGET}%) $verdict"
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$RESULTS"
echo "results saved in $RESULTS"

bench_record idle.worker_cpu "$wcpu" % "" \
    "idle worker (stream, 3 aggregates, on_event, on_absence; no events), % of a core (pidstat, ${SECS} s)"
bench_record idle.launcher_cpu "$lcpu" % "" "idle launcher, % of a core (pidstat, ${SECS} s)"
bench_record idle.total_cpu "$total" % "< $TARGET" "idle worker + launcher, % of a core"
[ "$verdict" = PASS ]
