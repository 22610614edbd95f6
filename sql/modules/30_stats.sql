-- Piece 30: per-stream and per-event-name counters (shared memory, added
-- at commit; rejections at once).

CREATE FUNCTION stream._stream_counters(
    OUT relid oid, OUT event_name text, OUT events_accepted bigint, OUT duplicates bigint,
    OUT last_received_at timestamptz, OUT last_occurred_at timestamptz,
    OUT counting_since timestamptz, OUT checked bigint, OUT passed bigint,
    OUT failed bigint, OUT quarantined bigint, OUT rejected bigint, OUT unplanned bigint)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'stream_stream_counters'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION stream._stream_counters() IS
    'Shared-memory counters of the streams of this database (internal; see stream.stats and stream.compliance)';

CREATE FUNCTION stream.reset_stats(stream regclass DEFAULT NULL) RETURNS void
    AS 'MODULE_PATHNAME', 'stream_reset_stats'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION stream.reset_stats(regclass) IS
    'Resets the counters of one stream, or of every stream of this database';
REVOKE EXECUTE ON FUNCTION stream.reset_stats(regclass) FROM PUBLIC;

-- Status views show a stream to roles that own it or may read it (as
-- pg_stat_statements hides other users' queries).
CREATE FUNCTION stream._stream_readable(rel regclass) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(pg_catalog.has_table_privilege(rel, 'SELECT')
                    OR pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c
                                               WHERE c.oid = rel), 'USAGE'), false)
$$;
COMMENT ON FUNCTION stream._stream_readable(regclass) IS
    'True if the current role owns the stream or may SELECT from it: what status views show it (internal)';

CREATE VIEW stream.stats AS
SELECT s.relid::text AS stream,
       coalesce(k.events_accepted, 0) AS events,
       coalesce(k.duplicates, 0) AS duplicates,
       CASE WHEN coalesce(k.events_accepted, 0) + coalesce(k.duplicates, 0) > 0
            THEN round(k.duplicates::numeric / (k.events_accepted + k.duplicates), 4)
       END AS duplicate_rate,
       CASE WHEN k.counting_since IS NOT NULL AND now() > k.counting_since
            THEN round(k.events_accepted / extract(epoch FROM now() - k.counting_since)::numeric, 2)
       END AS events_per_second,
       coalesce(k.checked, 0) AS checked,
       coalesce(k.passed, 0) AS passed,
       coalesce(k.failed, 0) AS failed,
       coalesce(k.quarantined, 0) AS quarantined,
       coalesce(k.rejected, 0) AS rejected,
       coalesce(k.unplanned, 0) AS unplanned,
       CASE WHEN k.checked > 0 THEN round(k.passed::numeric / k.checked, 4) END AS compliance_rate,
       k.last_received_at,
       k.last_occurred_at,
       now() - k.last_received_at AS freshness,
       k.counting_since
FROM stream.streams s
LEFT JOIN stream._stream_counters() k ON k.relid = s.relid::oid AND k.event_name IS NULL
WHERE stream._stream_readable(s.relid);
COMMENT ON VIEW stream.stats IS
    'Per-stream counters since counting_since (server start or reset): events accepted, duplicates dropped, contract checks and compliance rate, freshness';
GRANT SELECT ON stream.stats TO PUBLIC;

CREATE VIEW stream.compliance AS
SELECT s.relid::text AS stream,
       k.event_name,
       k.checked, k.passed, k.failed, k.quarantined, k.rejected, k.unplanned,
       CASE WHEN k.checked > 0 THEN round(k.passed::numeric / k.checked, 4) END AS compliance_rate
FROM stream.streams s
JOIN stream._stream_counters() k ON k.relid = s.relid::oid AND k.event_name IS NOT NULL
WHERE stream._stream_readable(s.relid);
COMMENT ON VIEW stream.compliance IS
    'Contract compliance per stream and event name: checked, passed, failed (stored under warn), quarantined, rejected, unplanned';
GRANT SELECT ON stream.compliance TO PUBLIC;
