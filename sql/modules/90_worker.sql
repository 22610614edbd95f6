-- Piece 90 (last): background worker status and start-up.

CREATE FUNCTION stream.worker_status(
    OUT datname name, OUT pid integer, OUT state text, OUT started_at timestamptz,
    OUT last_run_at timestamptz, OUT runs bigint, OUT last_error text)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'stream_worker_status'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION stream.worker_status() IS
    'The stream_events background workers of this cluster and what they last did';

CREATE FUNCTION stream._extension_created() RETURNS void
    AS 'MODULE_PATHNAME', 'stream_extension_created'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION stream._extension_created() IS
    'Asks the launcher to start this database''s worker once CREATE EXTENSION commits (internal)';

SELECT stream._extension_created();
