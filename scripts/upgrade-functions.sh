#!/usr/bin/env bash
# Prints the generated part of an upgrade script: what turns the
# functions and views of the installed extension at version FROM into those
# of version TO (default: the control file's default_version), as SQL for
# sql/stream_events--FROM--TO.sql.  Uses the installed extension (make
# install first) in a throwaway cluster: one database created at FROM, one at
# TO; compares every member function (signature, result, definition, comment,
# privileges) and view (columns, definition, comment, privileges), and the
# row level security, privileges and policies of its tables and sequences.
#   scripts/upgrade-functions.sh 0.1.0 [0.2.0] > /tmp/functions.sql
#   scripts/upgrade-functions.sh --update sql/stream_events--0.1.0--0.2.0.sql 0.1.0
# (--update FILE: replaces the lines from "-- ---- functions" to "-- ---- end
# of functions" of FILE with the new output.)
# Views gone or whose columns changed: DROP VIEW, first; functions gone or
# whose arguments/result changed: DROP FUNCTION (other objects that depend on
# them, such as policies, must be dropped before by hand); new or changed
# functions: CREATE OR REPLACE in the order a fresh install creates them,
# with their comments and grants; then new or changed views (CREATE OR
# REPLACE VIEW when the columns stay) with theirs; then row level security,
# privileges on tables and sequences, and new or changed policies (changed or
# gone ones are dropped first).  Not covered: tables and columns themselves
# (CREATE/ALTER TABLE, pg_extension_config_dump, comments on them), data,
# and other kinds of objects: test/t/040_upgrade.pl shows what is left.  The
# block goes after the script's table changes.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
. scripts/lib.sh

UPDATE=
if [ "${1:-}" = --update ]; then
    UPDATE=${2:?usage: $0 [--update FILE] FROM [TO]}
    shift 2
    grep -q '^-- ---- functions' "$UPDATE" && grep -q '^-- ---- end of functions' "$UPDATE" ||
        { echo "$UPDATE has no '-- ---- functions' ... '-- ---- end of functions' block" >&2; exit 1; }
fi
FROM=${1:?usage: $0 [--update FILE] FROM [TO]}
TO=${2:-}

DIR=$(mktemp -d /tmp/stream_events-upgrade-functions.XXXXXX)
[ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
PORT=$(free_port 56432)
cluster_init "$DIR" "$PORT" >/dev/null || exit 1
trap 'cluster_stop "$DIR" immediate; rm -rf "$DIR"' EXIT
cluster_start "$DIR" || { cat "$DIR/server.log" >&2; exit 1; }

q() { as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -U postgres "$@"; }

q -d postgres -c 'CREATE DATABASE old' -c 'CREATE DATABASE new' >/dev/null || exit 1
q -d old -c "CREATE EXTENSION stream_events VERSION '$FROM'" >/dev/null || exit 1
if [ -n "$TO" ]; then
    q -d new -c "CREATE EXTENSION stream_events VERSION '$TO'" >/dev/null || exit 1
else
    q -d new -c "CREATE EXTENSION stream_events" >/dev/null || exit 1
fi

INFO="
SELECT p.oid::regprocedure::text AS ident, p.oid::bigint AS ord,
       pg_catalog.pg_get_function_arguments(p.oid) AS args,
       pg_catalog.pg_get_function_result(p.oid) AS result,
       pg_catalog.pg_get_functiondef(p.oid) AS def,
       pg_catalog.obj_description(p.oid, 'pg_proc') AS comment,
       (SELECT array_agg(i ORDER BY i)
        FROM (SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(r.rolname) END
                     || ':' || a.privilege_type || ':' || a.is_grantable AS i
              FROM pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
              LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
              WHERE a.grantee <> p.proowner) x) AS acl
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
     AND d.deptype = 'e'
JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'stream_events'"

VIEWS="
SELECT c.oid::regclass::text AS ident, c.oid::bigint AS ord,
       (SELECT string_agg(pg_catalog.quote_ident(a.attname) || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod),
                          ', ' ORDER BY a.attnum)
        FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS cols,
       pg_catalog.pg_get_viewdef(c.oid) AS def,
       pg_catalog.obj_description(c.oid, 'pg_class') AS comment,
       (SELECT array_agg(i ORDER BY i)
        FROM (SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(r.rolname) END
                     || ':' || a.privilege_type || ':' || a.is_grantable AS i
              FROM pg_catalog.aclexplode(coalesce(c.relacl, pg_catalog.acldefault('r', c.relowner))) a
              LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
              WHERE a.grantee <> c.relowner) x) AS acl
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
     AND d.deptype = 'e'
JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'stream_events'
WHERE c.relkind = 'v'"

RELS="
SELECT c.oid::regclass::text AS ident, c.oid::bigint AS ord,
       CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind,
       c.relrowsecurity AS rls, c.relforcerowsecurity AS force_rls,
       (SELECT array_agg(i ORDER BY i)
        FROM (SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(r.rolname) END
                     || ':' || a.privilege_type || ':' || a.is_grantable AS i
              FROM pg_catalog.aclexplode(coalesce(c.relacl,
                       pg_catalog.acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::\"char\", c.relowner))) a
              LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
              WHERE a.grantee <> c.relowner) x) AS acl
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
     AND d.deptype = 'e'
JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'stream_events'
WHERE c.relkind IN ('r', 'p', 'S')"

POLICIES="
SELECT format('%I ON %s', p.polname, p.polrelid::regclass) AS ident, p.oid::bigint AS ord,
       format('CREATE POLICY %I ON %s%s FOR %s%s%s%s;', p.polname, p.polrelid::regclass,
              CASE WHEN p.polpermissive THEN '' ELSE ' AS RESTRICTIVE' END,
              CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                            WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
              CASE WHEN p.polroles = '{0}' THEN ''
                   ELSE ' TO ' || (SELECT string_agg(pg_catalog.quote_ident(r.rolname), ', ' ORDER BY r.rolname)
                                   FROM pg_catalog.pg_roles r WHERE r.oid = ANY (p.polroles)) END,
              E'\n    USING (' || pg_catalog.pg_get_expr(p.polqual, p.polrelid) || ')',
              E'\n    WITH CHECK (' || pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) || ')') AS def
FROM pg_catalog.pg_policy p
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = p.polrelid
     AND d.deptype = 'e'
JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'stream_events'"

# the old functions and views, copied into the new database's temp schema
{
    echo "CREATE TEMP TABLE old_f (ident text, ord bigint, args text, result text, def text, comment text, acl text[]);"
    echo "COPY old_f FROM STDIN;"
    q -d old -At -c "COPY ($INFO) TO STDOUT"
    echo '\.'
    echo "CREATE TEMP TABLE old_v (ident text, ord bigint, cols text, def text, comment text, acl text[]);"
    echo "COPY old_v FROM STDIN;"
    q -d old -At -c "COPY ($VIEWS) TO STDOUT"
    echo '\.'
    echo "CREATE TEMP TABLE new_v AS $VIEWS;"
    echo "CREATE TEMP TABLE old_r (ident text, ord bigint, kind text, rls boolean, force_rls boolean, acl text[]);"
    echo "COPY old_r FROM STDIN;"
    q -d old -At -c "COPY ($RELS) TO STDOUT"
    echo '\.'
    echo "CREATE TEMP TABLE new_r AS $RELS;"
    echo "CREATE TEMP TABLE old_p (ident text, ord bigint, def text);"
    echo "COPY old_p FROM STDIN;"
    q -d old -At -c "COPY ($POLICIES) TO STDOUT"
    echo '\.'
    echo "CREATE TEMP TABLE new_p AS $POLICIES;"
    cat <<'EOF'
CREATE TEMP TABLE new_f AS
EOF
    echo "$INFO;"
    cat <<'EOF'
CREATE FUNCTION pg_temp.acl_sql(ident text, old_acl text[], new_acl text[], kind text DEFAULT 'FUNCTION') RETURNS text
LANGUAGE sql AS $$
    SELECT coalesce((SELECT string_agg(format('REVOKE ALL ON %s %s FROM %s;', kind, ident, g), E'\n')
                     FROM (SELECT DISTINCT split_part(x, ':', 1) AS g FROM unnest(old_acl) x
                           WHERE x <> ALL (coalesce(new_acl, '{}'))) o) || E'\n', '')
        || coalesce((SELECT string_agg(format('GRANT %s ON %s %s TO %s%s;', split_part(x, ':', 2), kind, ident,
                                              split_part(x, ':', 1),
                                              CASE WHEN split_part(x, ':', 3) = 'true' THEN ' WITH GRANT OPTION' ELSE '' END),
                                       E'\n')
                     FROM unnest(new_acl) x
                     WHERE x <> ALL (coalesce(old_acl, '{}'))
                        OR split_part(x, ':', 1) IN (SELECT split_part(y, ':', 1) FROM unnest(old_acl) y
                                                     WHERE y <> ALL (coalesce(new_acl, '{}')))) || E'\n', '')
$$;
-- the default privileges of a new function: EXECUTE for PUBLIC
CREATE TEMP TABLE plan AS
SELECT n.ident, n.ord, n.def, n.comment, n.acl,
       o.ident IS NOT NULL AS existed,
       o.ident IS NOT NULL AND (o.args IS DISTINCT FROM n.args OR o.result IS DISTINCT FROM n.result) AS recreate,
       o.def AS old_def, o.comment AS old_comment,
       CASE WHEN o.ident IS NULL OR o.args IS DISTINCT FROM n.args OR o.result IS DISTINCT FROM n.result
            THEN ARRAY['PUBLIC:EXECUTE:false'] ELSE o.acl END AS old_acl
FROM new_f n LEFT JOIN old_f o USING (ident);

\pset format unaligned
\pset tuples_only on
\pset fieldsep ''
-- views: the default privileges of a new view are its owner's only
CREATE TEMP TABLE vplan AS
SELECT n.ident, n.ord, n.def, n.comment, n.acl, n.cols,
       o.ident IS NOT NULL AS existed,
       o.ident IS NOT NULL AND o.cols IS DISTINCT FROM n.cols AS recreate,
       o.def AS old_def, o.comment AS old_comment,
       CASE WHEN o.ident IS NULL OR o.cols IS DISTINCT FROM n.cols THEN NULL ELSE o.acl END AS old_acl
FROM new_v n LEFT JOIN old_v o USING (ident);

SELECT '-- ---- functions, views, privileges and policies (scripts/upgrade-functions.sh) ----';
SELECT format('DROP POLICY %s;', o.ident)
FROM old_p o
WHERE NOT EXISTS (SELECT 1 FROM new_p n WHERE n.ident = o.ident AND n.def = o.def)
ORDER BY o.ord;
SELECT format('DROP VIEW %s;', o.ident)
FROM old_v o
WHERE NOT EXISTS (SELECT 1 FROM new_v n WHERE n.ident = o.ident)
   OR EXISTS (SELECT 1 FROM vplan p WHERE p.ident = o.ident AND p.recreate)
ORDER BY o.ord DESC;
SELECT format('DROP FUNCTION %s;', o.ident)
FROM old_f o
WHERE NOT EXISTS (SELECT 1 FROM new_f n WHERE n.ident = o.ident)
   OR EXISTS (SELECT 1 FROM plan p WHERE p.ident = o.ident AND p.recreate)
ORDER BY o.ord;
SELECT E'\n' || p.def || E';\n'
       || CASE WHEN p.comment IS DISTINCT FROM CASE WHEN p.recreate THEN NULL ELSE p.old_comment END
               THEN format(E'COMMENT ON FUNCTION %s IS %s;\n', p.ident, coalesce(quote_literal(p.comment), 'NULL'))
               ELSE '' END
       || pg_temp.acl_sql(p.ident, p.old_acl, p.acl)
FROM plan p
WHERE NOT p.existed OR p.recreate OR p.def IS DISTINCT FROM p.old_def
ORDER BY p.ord;
SELECT format('COMMENT ON FUNCTION %s IS %s;', p.ident, coalesce(quote_literal(p.comment), 'NULL'))
FROM plan p
WHERE p.existed AND NOT p.recreate AND p.def IS NOT DISTINCT FROM p.old_def
  AND p.comment IS DISTINCT FROM p.old_comment
ORDER BY p.ord;
SELECT pg_temp.acl_sql(p.ident, p.old_acl, p.acl)
FROM plan p
WHERE p.existed AND NOT p.recreate AND p.def IS NOT DISTINCT FROM p.old_def
  AND p.acl IS DISTINCT FROM p.old_acl
ORDER BY p.ord;
SELECT E'\n' || format('CREATE %sVIEW %s AS', CASE WHEN p.existed AND NOT p.recreate THEN 'OR REPLACE ' ELSE '' END, p.ident)
       || regexp_replace(E'\n' || p.def, ';\s*$', '') || E';\n'
       || CASE WHEN p.comment IS DISTINCT FROM CASE WHEN p.existed AND NOT p.recreate THEN p.old_comment END
               THEN format(E'COMMENT ON VIEW %s IS %s;\n', p.ident, coalesce(quote_literal(p.comment), 'NULL'))
               ELSE '' END
       || pg_temp.acl_sql(p.ident, p.old_acl, p.acl, 'TABLE')
FROM vplan p
WHERE NOT p.existed OR p.recreate OR p.def IS DISTINCT FROM p.old_def
ORDER BY p.ord;
SELECT format('COMMENT ON VIEW %s IS %s;', p.ident, coalesce(quote_literal(p.comment), 'NULL'))
FROM vplan p
WHERE p.existed AND NOT p.recreate AND p.def IS NOT DISTINCT FROM p.old_def
  AND p.comment IS DISTINCT FROM p.old_comment
ORDER BY p.ord;
SELECT pg_temp.acl_sql(p.ident, p.old_acl, p.acl, 'TABLE')
FROM vplan p
WHERE p.existed AND NOT p.recreate AND p.def IS NOT DISTINCT FROM p.old_def
  AND p.acl IS DISTINCT FROM p.old_acl
ORDER BY p.ord;
-- tables and sequences: row level security, privileges (a new table: from
-- the defaults; the script creates it before this block)
SELECT E'\n-- tables and sequences: row level security and privileges';
SELECT format('ALTER TABLE %s %s ROW LEVEL SECURITY;', n.ident, CASE WHEN n.rls THEN 'ENABLE' ELSE 'DISABLE' END)
FROM new_r n LEFT JOIN old_r o USING (ident)
WHERE n.rls IS DISTINCT FROM coalesce(o.rls, false)
ORDER BY n.ord;
SELECT format('ALTER TABLE %s %s ROW LEVEL SECURITY;', n.ident, CASE WHEN n.force_rls THEN 'FORCE' ELSE 'NO FORCE' END)
FROM new_r n LEFT JOIN old_r o USING (ident)
WHERE n.force_rls IS DISTINCT FROM coalesce(o.force_rls, false)
ORDER BY n.ord;
SELECT pg_temp.acl_sql(n.ident, o.acl, n.acl, n.kind)
FROM new_r n LEFT JOIN old_r o USING (ident)
WHERE n.acl IS DISTINCT FROM o.acl
ORDER BY n.ord;
SELECT E'-- policies';
SELECT n.def
FROM new_p n
WHERE NOT EXISTS (SELECT 1 FROM old_p o WHERE o.ident = n.ident AND o.def = n.def)
ORDER BY n.ord;
SELECT '-- ---- end of functions, views, privileges and policies ----';
EOF
} | q -d new > "$DIR/functions.sql" || exit 1

if [ -z "$UPDATE" ]; then
    cat "$DIR/functions.sql"
else
    awk -v gen="$DIR/functions.sql" '
        /^-- ---- functions/ { while ((getline line < gen) > 0) print line; skip = 1; next }
        /^-- ---- end of functions/ { skip = 0; next }
        !skip { print }' "$UPDATE" > "$DIR/updated.sql" && cp "$DIR/updated.sql" "$UPDATE"
    echo "updated the generated block of $UPDATE" >&2
fi
