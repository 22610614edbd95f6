# Shared shell helpers for scripts/*.sh and bench/*.sh (sourced, not run).
# Finds the PostgreSQL 15 installation, runs server-side commands as the
# postgres OS user when we are root, and starts/stops throwaway clusters.

PG_CONFIG=${PG_CONFIG:-pg_config}
PGBIN=$("$PG_CONFIG" --bindir)
PGXS_DIR=$(dirname "$("$PG_CONFIG" --pgxs)")/..
PG_REGRESS="$PGXS_DIR/test/regress/pg_regress"
PG_ISOLATION_REGRESS="$PGXS_DIR/test/isolation/pg_isolation_regress"
PG_PERL_LIB="$PGXS_DIR/test/perl"

if [ "$(id -u)" -eq 0 ]; then
    PG_OS_USER=postgres
else
    PG_OS_USER=$(id -un)
fi

# Runs a command as the OS user that owns clusters (postgres when root).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- env PATH="$PGBIN:$PATH" "$@"
    else
        env PATH="$PGBIN:$PATH" "$@"
    fi
}

# A directory the cluster owner can use: $1 if that user can reach it,
# otherwise a private directory under /tmp (linked from $1).
pg_workdir() {
    local want=$1
    mkdir -p "$(dirname "$want")"
    if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$(dirname "$want")"; then
        local alt="/tmp/stream_events-$(basename "$want")-$(echo "$want" | md5sum | cut -c1-8)"
        mkdir -p "$alt"
        chown postgres: "$alt"
        rm -rf "$want"
        ln -sfn "$alt" "$want"
    else
        mkdir -p "$want"
        [ "$(id -u)" -eq 0 ] && chown postgres: "$want"
    fi
    readlink -f "$want"
}

# Picks a free TCP port starting at $1.
free_port() {
    local p=$1
    while (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null || [ -e "/tmp/.s.PGSQL.$p" ]; do
        p=$((p + 1))
    done
    echo "$p"
}

# True where the server has output_plugin_libraries (PostgreSQL 15.20+),
# which refuses output plugins not listed.  (grep reads all of its input:
# with -q, an early exit would SIGPIPE postgres and fail under pipefail.)
pg_has_output_plugin_libraries() {
    "$PGBIN/postgres" --describe-config 2>/dev/null | grep '^output_plugin_libraries' >/dev/null
}

# cluster_init DIR PORT [extra postgresql.conf lines...]
cluster_init() {
    local dir=$1 port=$2
    shift 2
    as_pg "$PGBIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
    {
        echo "port = $port"
        echo "unix_socket_directories = '$dir'"
        echo "listen_addresses = ''"
        echo "shared_preload_libraries = 'stream_events'"
        echo "wal_level = logical"
        echo "max_worker_processes = 32"
        echo "max_replication_slots = 16"
        echo "fsync = off"
        for line in "$@"; do echo "$line"; done
    } | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
    # PostgreSQL 15.20+ restricts output plugins; allow ours where the setting exists.
    if pg_has_output_plugin_libraries; then
        echo "output_plugin_libraries = 'pgoutput, test_decoding, stream_events'" |
            as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
    fi
}

cluster_start() {
    local dir=$1
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
}

cluster_stop() {
    local dir=$1 mode=${2:-fast}
    [ -f "$dir/data/postmaster.pid" ] || return 0
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m "$mode" -w -t 60 stop >/dev/null 2>&1 || true
}

# ---- benchmarks (bench/*.sh) ----

# Builds and installs the extension unless BUILD=0 (the caller defines log
# and die).
bench_build() {
    [ "${BUILD:-1}" = 1 ] || return 0
    log "build and install"
    make -s >/dev/null || die "build failed (run make to see why, or BENCH_BUILD=0 to use the installed extension)"
    make -s install >/dev/null || die "make install failed (need write access to $("$PG_CONFIG" --pkglibdir))"
}

# Server settings every benchmark uses: durable (fsync and
# synchronous_commit on, whatever cluster_init's defaults), sized for the
# 2-core / 24 GiB machines.
BENCH_SERVER_CONF=(
    "shared_buffers = 2GB"
    "max_wal_size = 8GB"
    "min_wal_size = 4GB"
    "checkpoint_timeout = 30min"
    "fsync = on"
    "synchronous_commit = on"
    "full_page_writes = on"
    "maintenance_work_mem = 512MB"
    "work_mem = 64MB"
    "max_connections = 50"
)
# BENCH_EXTRA_CONF: more postgresql.conf lines for a benchmark's server,
# separated by ';' (a setting tried out, e.g. "stream_events.wake_delay_max
# = 2ms"); runs with it never record (bench_defaults).
if [ -n "${BENCH_EXTRA_CONF:-}" ]; then
    IFS=';' read -r -a _extra <<< "$BENCH_EXTRA_CONF"
    BENCH_SERVER_CONF+=("${_extra[@]}")
fi
