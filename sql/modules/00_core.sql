-- stream_events install script, piece 00: schema-wide objects.
-- (The install script is assembled from sql/modules/*.sql by `make`.)

\echo Use "CREATE EXTENSION stream_events" to load this file. \quit

COMMENT ON SCHEMA stream IS 'stream_events: event streams, data contracts, continuous aggregates and activations';

CREATE FUNCTION stream.uuid_v7() RETURNS uuid
    AS 'MODULE_PATHNAME', 'stream_uuid_v7'
    LANGUAGE C VOLATILE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION stream.uuid_v7() IS
    'A time-ordered UUID (RFC 9562 version 7), monotonic within a session';

CREATE FUNCTION stream.uuid_v7_time(uuid) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'stream_uuid_v7_time'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION stream.uuid_v7_time(uuid) IS
    'The millisecond timestamp embedded in a version 7 UUID (NULL for other versions)';

CREATE FUNCTION stream._search_path() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT string_agg(quote_ident(sp), ', ' ORDER BY o)
    FROM unnest(current_schemas(false)) WITH ORDINALITY AS c(sp, o)
$$;
COMMENT ON FUNCTION stream._search_path() IS
    'The caller''s effective search_path (without pg_catalog), quoted: what a definition''s names were resolved in, for the worker to resolve them again (internal)';

-- The door for catalog writes (src/privileged.c, docs/security.md): a
-- user-facing function hands a catalog change to stream._priv, which calls
-- the named _priv_* function with the real caller as its first argument,
-- as the extension's owner inside a security-restricted operation.  The
-- _priv_* functions are not executable by PUBLIC and check the caller's
-- ownership and privileges before they write.
CREATE FUNCTION stream._priv(fn regproc, VARIADIC args "any") RETURNS text
    AS 'MODULE_PATHNAME', 'stream_priv' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION stream._priv(regproc, "any") IS
    'Runs a catalog writer (stream._priv_*) of this extension as its owner, passing the caller''s role first (internal)';

-- Checks used by the _priv_* functions: the caller is the owner (or a
-- member of the owning role) of a relation, or holds a privilege on it.
CREATE FUNCTION stream._check_owner(caller regrole, rel regclass, what text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    own regrole;
BEGIN
    SELECT c.relowner::regrole INTO own FROM pg_catalog.pg_class c WHERE c.oid = rel;
    IF own IS NULL THEN
        RAISE EXCEPTION 'relation with OID % does not exist', rel::oid
            USING ERRCODE = 'undefined_table';
    END IF;
    IF NOT pg_catalog.pg_has_role(caller, own, 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of % %', what, rel
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('%s is owned by role %s; role %s is not a member of it.', rel, own, caller),
                  HINT = format('Ask role %s (or a superuser) to do it, or to grant you membership in role %s.', own, own);
    END IF;
END $$;
COMMENT ON FUNCTION stream._check_owner(regrole, regclass, text) IS
    'Raises 42501 unless caller owns the relation (or is a member of its owner) (internal)';

CREATE FUNCTION stream._check_privilege(caller regrole, rel regclass, privilege text, why text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT coalesce(pg_catalog.has_table_privilege(caller, rel, privilege), false) THEN
        RAISE EXCEPTION 'permission denied for %', rel
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Role %s has no %s privilege on %s; %s', caller, privilege, rel, why),
                  HINT = format('Ask the owner of %s: GRANT %s ON %s TO %s.', rel, privilege, rel, caller);
    END IF;
END $$;
COMMENT ON FUNCTION stream._check_privilege(regrole, regclass, text, text) IS
    'Raises 42501 unless caller holds privilege on the relation (internal)';
