#!/usr/bin/env bash
# Runs the official JSON-Schema-Test-Suite through stream.json_schema_validate
# on a throwaway cluster (called by scripts/test.sh; $1 = a work directory).
# The suite is ../shared/json-schema-test-suite when it exists (kept current
# by the project), else the copy under test/conformance/.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
. "$REPO/scripts/lib.sh"

if [ -z "${JSON_SCHEMA_SUITE:-}" ]; then
    if [ -d "$REPO/../shared/json-schema-test-suite/tests" ]; then
        JSON_SCHEMA_SUITE=$(cd "$REPO/../shared/json-schema-test-suite" && pwd)
    else
        JSON_SCHEMA_SUITE="$REPO/test/conformance/json-schema-test-suite"
    fi
fi
export JSON_SCHEMA_SUITE
echo "suite: $JSON_SCHEMA_SUITE"

DIR=$(pg_workdir "${1:-$REPO/tmp/conformance}")
cluster_stop "$DIR" immediate
rm -rf "${DIR:?}"/*
PORT=$(free_port 55632)
cluster_init "$DIR" "$PORT"
trap 'cluster_stop "$DIR" fast' EXIT
cluster_start "$DIR" || { cat "$DIR/server.log"; exit 1; }
export PGHOST="$DIR" PGPORT="$PORT" PGUSER=postgres PGDATABASE=postgres
psql -X -q -c "CREATE EXTENSION stream_events" || exit 1
perl "$REPO/test/conformance/jsonschema.pl"
