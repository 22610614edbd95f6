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
