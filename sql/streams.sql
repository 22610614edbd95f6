-- Streams: creation, envelope, options, partitions, append-only, errors.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = notice;

SELECT stream.create_stream('clicks');
SELECT stream.create_stream('shop.orders');            -- schema missing
CREATE SCHEMA shop;
SELECT stream.create_stream('shop.orders', partition_interval => '1 month',
                            retention => '400 days', dedup_window => '1 day');

-- the envelope, in order
SELECT attnum, attname, format_type(atttypid, atttypmod) AS type, attnotnull,
       pg_get_expr(d.adbin, d.adrelid) AS "default"
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE attrelid = 'clicks'::regclass AND attnum > 0 ORDER BY attnum;
SELECT pg_get_partkeydef('clicks'::regclass);

SELECT stream, schema_name, stream_name, partition_interval, retention, dedup_window,
       partitions >= 8 AS has_partitions_ahead
FROM stream.stream_list ORDER BY stream::text;

-- partitions: stream_events.partitions_behind (3), the current one and
-- stream_events.partitions_ahead (3) after it, plus the default partition
SELECT count(*) FILTER (WHERE pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT') AS default_partitions,
       count(*) FILTER (WHERE pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT') AS range_partitions
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'clicks'::regclass;
SELECT stream._bucket_start('2026-11-23 17:45+00', '1 day') AS day,
       stream._bucket_start('2026-11-23 17:45+00', '1 month') AS month,
       stream._bucket_start('2026-11-23 17:45+00', '3 months') AS quarter,
       stream._bucket_start('2026-11-23 17:45+00', '6 hours') AS six_hours,
       stream._bucket_start('1850-02-03 01:00+00', '1 year') AS old_year;

-- bad input
SELECT stream.create_stream('clicks');                  -- exists
SELECT stream.create_stream('pg_catalog.pg_class');     -- exists
SELECT stream.create_stream('a.b.c');
SELECT stream.create_stream('bad name!');
SELECT stream.create_stream(repeat('x', 49));
SELECT stream.create_stream(NULL);
SELECT stream.create_stream('neg', partition_interval => '-1 day');
SELECT stream.create_stream('zero', partition_interval => '0');
SELECT stream.create_stream('tiny', partition_interval => '5 minutes');
SELECT stream.create_stream('mixed', partition_interval => '1 month 2 days');
SELECT stream.create_stream('neg_ret', retention => '-7 days');
SELECT stream.create_stream('neg_dedup', dedup_window => '-1 hour');
SELECT stream.create_stream('null_part', partition_interval => NULL);
SELECT count(*) AS streams_after_errors FROM stream.streams;

-- inserts of any occurred_at land somewhere, never fail
INSERT INTO clicks (event_id, event_name, occurred_at, user_id, properties) VALUES
  ('00000000-0000-7000-8000-000000000001', 'page_view', now(), 'u1', '{"path": "/"}'),
  ('00000000-0000-7000-8000-000000000002', 'page_view', '1990-01-01', 'u2', '{}'),
  ('00000000-0000-7000-8000-000000000003', 'purchase', '2999-12-31', 'u3', '{"price": 10}');
SELECT event_name, tableoid::regclass::text LIKE 'clicks_default' AS in_default FROM clicks ORDER BY event_id;
-- the worker (or anyone) adopts them into partitions of their own
SELECT partitions_created >= 2 AS created, rows_moved FROM stream.maintain('clicks');
SELECT event_name, tableoid::regclass AS partition FROM clicks
WHERE occurred_at < '2000-01-01' OR occurred_at > '2900-01-01' ORDER BY event_id;
SELECT count(*) AS left_in_default FROM clicks_default;

-- received_at is always the server's
INSERT INTO clicks (event_id, event_name, received_at, anonymous_id)
VALUES ('00000000-0000-7000-8000-000000000004', 'page_view', '1970-01-01', 'a4');
SELECT received_at > '2000-01-01' AS set_by_server FROM clicks
WHERE event_id = '00000000-0000-7000-8000-000000000004';

-- defaults
INSERT INTO clicks (event_name, user_id) VALUES ('signup', 'u5') RETURNING
  stream.uuid_v7_time(event_id) BETWEEN now() - interval '1 minute' AND clock_timestamp() AS v7_id,
  occurred_at = now() AS occurred_default, properties, context;

-- envelope errors
INSERT INTO clicks (event_name) VALUES (NULL);
INSERT INTO clicks (event_name, properties) VALUES ('x', '[1, 2]');
INSERT INTO clicks (event_name, properties) VALUES ('x', '"text"');
INSERT INTO clicks (event_name, context) VALUES ('x', '[]');
INSERT INTO clicks (event_name, properties) VALUES ('x', NULL);
INSERT INTO clicks (event_id, event_name) VALUES (NULL, 'x');
INSERT INTO clicks (event_name, occurred_at) VALUES ('x', NULL);

-- append-only
UPDATE clicks SET user_id = 'someone else';
DELETE FROM clicks WHERE event_name = 'page_view';
DELETE FROM clicks_default;
TRUNCATE clicks;
TRUNCATE clicks_default;
SELECT count(*) AS still_there FROM clicks;

-- uuid_v7: version, variant and order within a session
WITH ids AS (SELECT stream.uuid_v7() AS id, g FROM generate_series(1, 10000) g)
SELECT bool_and(substr(id::text, 15, 1) = '7') AS version7,
       bool_and(substr(id::text, 20, 1) IN ('8', '9', 'a', 'b')) AS variant,
       count(DISTINCT id) AS distinct_ids
FROM ids;
SELECT bool_and(a < b) AS monotonic FROM (
  SELECT id AS a, lead(id) OVER (ORDER BY g) AS b
  FROM (SELECT stream.uuid_v7() AS id, g FROM generate_series(1, 10000) g) s) t
WHERE b IS NOT NULL;
SELECT stream.uuid_v7_time('01890f2c-1f4a-7000-8000-000000000000');
SELECT stream.uuid_v7_time(gen_random_uuid());

-- drop
SELECT stream.drop_stream('pg_class');
SELECT stream.drop_stream('shop.orders');
SELECT count(*) AS orders_rows FROM stream.streams WHERE relid::text = 'shop.orders';
DROP TABLE clicks;                                      -- a plain DROP TABLE cleans up too
SELECT count(*) AS catalog_rows,
       (SELECT count(*) FROM pg_class WHERE relnamespace = 'stream'::regnamespace
                                      AND relname LIKE 'dedup\_keys\_%') AS key_tables
FROM stream.streams;
DROP SCHEMA shop;
