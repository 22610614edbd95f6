-- Piece 20: stream.ingest, the JSON batch ingest path.

CREATE FUNCTION stream.ingest(stream regclass, events jsonb,
                              OUT accepted bigint, OUT duplicates bigint, OUT quarantined bigint)
    RETURNS record
    AS 'MODULE_PATHNAME', 'stream_ingest'
    LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION stream.ingest(regclass, jsonb) IS
    'Ingests a JSON array of events (envelope columns or Segment/RudderStack messages) into a stream';
