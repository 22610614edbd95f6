-- COPY FROM STDIN into a stream runs batched (stream/copy.c): the same
-- rows, checks, dedup, quarantine, errors, triggers and rights as the
-- ordinary row-by-row COPY (stream_events.copy_batch = off), which the
-- first cases are compared with.  (psql's \copy runs COPY FROM STDIN.)
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = notice;
SET TimeZone = 'UTC';

SELECT stream.create_stream('cp_batched', partition_interval => '1 day');
SELECT stream.create_stream('cp_rows', partition_interval => '1 day');
SELECT count(stream._ensure_partition(s, '2026-11-20', '1 day'))
FROM unnest(ARRAY['cp_batched', 'cp_rows']::regclass[]) AS s;

-- duplicates within the COPY and of earlier events, a late event (default
-- partition), NULLs for the columns the envelope allows, received_at sent
-- by the producer (the server's wins)
CREATE TEMP TABLE cp_input (event_id text, event_name text, occurred_at text,
                            user_id text, properties text, received_at text);
COPY cp_input FROM stdin;
00000000-0000-4000-8000-000000000001	view	2026-11-20 10:00:00+00	u1	{"path": "/"}	2001-01-01 00:00:00+00
00000000-0000-4000-8000-000000000002	view	2026-11-20 10:00:01+00	\N	{}	2001-01-01 00:00:00+00
00000000-0000-4000-8000-000000000001	view	2026-11-20 10:00:02+00	u1	{"retry": true}	2001-01-01 00:00:00+00
00000000-0000-4000-8000-000000000003	buy	2020-01-01 00:00:00+00	u3	{"price": 5}	2001-01-01 00:00:00+00
\.
\copy cp_input TO '/tmp/stream_events_copy_input.tsv'
-- the same file twice into each stream: the second time every row is a retry
SET stream_events.copy_batch = on;
\copy cp_batched (event_id, event_name, occurred_at, user_id, properties, received_at) FROM '/tmp/stream_events_copy_input.tsv'
\copy cp_batched (event_id, event_name, occurred_at, user_id, properties, received_at) FROM '/tmp/stream_events_copy_input.tsv'
SET stream_events.copy_batch = off;
\copy cp_rows (event_id, event_name, occurred_at, user_id, properties, received_at) FROM '/tmp/stream_events_copy_input.tsv'
\copy cp_rows (event_id, event_name, occurred_at, user_id, properties, received_at) FROM '/tmp/stream_events_copy_input.tsv'
SET stream_events.copy_batch = on;

-- the same rows, in the same partitions
SELECT event_id, event_name, occurred_at, user_id, properties,
       received_at > '2026-01-01' AS server_received_at,
       replace(tableoid::regclass::text, 'cp_batched', '<stream>') AS partition
FROM cp_batched
EXCEPT
SELECT event_id, event_name, occurred_at, user_id, properties,
       received_at > '2026-01-01', replace(tableoid::regclass::text, 'cp_rows', '<stream>')
FROM cp_rows;
SELECT event_id, event_name, occurred_at, user_id, properties,
       received_at > '2026-01-01' AS server_received_at,
       replace(tableoid::regclass::text, 'cp_batched', '<stream>') AS partition
FROM cp_batched ORDER BY event_id;
SELECT stream, events, duplicates FROM stream.stats
WHERE stream IN ('cp_batched', 'cp_rows') ORDER BY stream;

-- more rows than one batch (1000 rows), over two partitions (one day's and
-- the default), 300 of them retries: the same count both ways
\copy (SELECT md5((g % 2700)::text)::uuid, 'many', '2026-11-20'::timestamptz + (g % 3) * interval '1 day' + g * interval '1 second' FROM generate_series(1, 3000) g) TO '/tmp/stream_events_copy_many.tsv'
\copy cp_batched (event_id, event_name, occurred_at) FROM '/tmp/stream_events_copy_many.tsv'
SET stream_events.copy_batch = off;
\copy cp_rows (event_id, event_name, occurred_at) FROM '/tmp/stream_events_copy_many.tsv'
SET stream_events.copy_batch = on;
SELECT (SELECT count(*) FROM cp_batched WHERE event_name = 'many') AS batched,
       (SELECT count(*) FROM cp_rows WHERE event_name = 'many') AS row_by_row,
       (SELECT count(DISTINCT tableoid) FROM cp_batched WHERE event_name = 'many') AS partitions;

-- errors: the envelope's and the contract's (SQLSTATEs as on INSERT,
-- sql/ingest.sql), with the line of COPY; nothing
-- of a failed COPY is stored (and its keys are not taken)
\set SHOW_CONTEXT errors
COPY cp_batched (event_id, event_name, occurred_at) FROM stdin;
00000000-0000-4000-8000-000000000011	fine	2026-11-20 09:00:00+00
00000000-0000-4000-8000-000000000012	\N	2026-11-20 09:00:00+00
\.
COPY cp_batched (event_id, event_name, properties) FROM stdin;
00000000-0000-4000-8000-000000000013	fine	{}
00000000-0000-4000-8000-000000000014	fine	[1, 2]
\.
SELECT stream.define_contract('cp_batched', 'purchase',
  '{"type": "object", "required": ["price"], "properties": {"price": {"type": "number"}}}') AS version;
COPY cp_batched (event_id, event_name, properties) FROM stdin;
00000000-0000-4000-8000-000000000015	purchase	{"price": 1}
00000000-0000-4000-8000-000000000016	purchase	{"price": "N/A"}
\.
\set SHOW_CONTEXT never
SELECT count(*) AS stored_after_errors FROM cp_batched
WHERE event_id BETWEEN '00000000-0000-4000-8000-000000000011' AND '00000000-0000-4000-8000-000000000016';
COPY cp_batched (event_id, event_name) FROM stdin;
00000000-0000-4000-8000-000000000011	fine_now
\.
SELECT event_name FROM cp_batched WHERE event_id = '00000000-0000-4000-8000-000000000011';

-- quarantine: the violating rows go to the quarantine, the others are stored
SELECT stream.set_policy('cp_batched', on_violation => 'quarantine');
COPY cp_batched (event_id, event_name, properties) FROM stdin;
00000000-0000-4000-8000-000000000021	purchase	{"price": 2}
00000000-0000-4000-8000-000000000022	purchase	{"price": "free"}
00000000-0000-4000-8000-000000000023	purchase	{"price": 3}
\.
SELECT event_id, event_name FROM cp_batched WHERE event_name = 'purchase' ORDER BY 1;
SELECT event_id, errors FROM cp_batched_quarantine;

-- a BEFORE INSERT trigger of the user's on the stream: PostgreSQL's COPY
-- runs (row by row), with both triggers
CREATE FUNCTION cp_tag() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.properties := NEW.properties || jsonb_build_object('tagged_by', TG_RELNAME::text ~ '_p\d+$|_default$');
  RETURN NEW;
END $$;
CREATE TRIGGER a_tag BEFORE INSERT ON cp_rows FOR EACH ROW EXECUTE FUNCTION cp_tag();
COPY cp_rows (event_id, event_name, occurred_at) FROM stdin;
00000000-0000-4000-8000-000000000031	tagged	2026-11-20 12:00:00+00
00000000-0000-4000-8000-000000000031	tagged	2026-11-20 12:00:00+00
\.
SELECT event_name, properties, received_at > '2026-01-01' AS server_received_at
FROM cp_rows WHERE event_name = 'tagged';
DROP TRIGGER a_tag ON cp_rows;
-- one on a single partition: it fires for that partition's rows (ours
-- does not fire twice: the duplicate check would drop every row)
CREATE TRIGGER a_tag BEFORE INSERT ON cp_batched_p20261120 FOR EACH ROW EXECUTE FUNCTION cp_tag();
COPY cp_batched (event_id, event_name, occurred_at) FROM stdin;
00000000-0000-4000-8000-000000000032	tagged	2026-11-20 12:00:00+00
00000000-0000-4000-8000-000000000033	tagged	2026-11-21 12:00:00+00
00000000-0000-4000-8000-000000000032	tagged	2026-11-20 12:00:00+00
\.
SELECT event_id, tableoid::regclass AS partition, properties FROM cp_batched
WHERE event_name = 'tagged' ORDER BY 1;
DROP TRIGGER a_tag ON cp_batched_p20261120;

-- an immediate activation fires for COPY's rows (its AFTER ROW trigger)
SELECT stream.on_event('cp_big', 'cp_batched', $$(properties->>'price')::numeric >= 100$$,
    delivery => 'immediate');
COPY cp_batched (event_id, event_name, properties) FROM stdin;
00000000-0000-4000-8000-000000000041	purchase	{"price": 150}
00000000-0000-4000-8000-000000000042	purchase	{"price": 50}
00000000-0000-4000-8000-000000000043	purchase	{"price": 500}
\.
SELECT event_id FROM stream.activations WHERE activation = 'cp_big' ORDER BY 1;

-- rights: a producer with INSERT on the stream copies; INSERT on some
-- columns copies those; no INSERT, or a column without it, is refused
CREATE ROLE cp_producer;
CREATE ROLE cp_partial;
CREATE ROLE cp_nobody;
GRANT USAGE ON SCHEMA stream TO cp_producer, cp_partial, cp_nobody;
GRANT INSERT ON cp_batched TO cp_producer;
GRANT INSERT (event_id, event_name) ON cp_batched TO cp_partial;
SET ROLE cp_producer;
COPY cp_batched (event_id, event_name) FROM stdin;
00000000-0000-4000-8000-000000000051	by_producer
\.
RESET ROLE;
SET ROLE cp_partial;
COPY cp_batched (event_id, event_name) FROM stdin;
00000000-0000-4000-8000-000000000052	by_partial
\.
COPY cp_batched (event_id, event_name, user_id) FROM stdin;
00000000-0000-4000-8000-000000000053	by_partial	u1
\.
RESET ROLE;
SET ROLE cp_nobody;
COPY cp_batched (event_id, event_name) FROM stdin;
00000000-0000-4000-8000-000000000054	by_nobody
\.
RESET ROLE;
SELECT event_name FROM cp_batched WHERE event_name LIKE 'by_%' ORDER BY 1;

-- session_replication_role = replica fires no origin trigger: PostgreSQL's
-- COPY, and the rows are stored as sent (what pg_restore --disable-triggers
-- relies on)
SET session_replication_role = replica;
COPY cp_batched (event_id, event_name, occurred_at, received_at) FROM stdin;
00000000-0000-4000-8000-000000000061	restored	2026-11-20 12:00:00+00	2026-11-20 12:00:01+00
\.
RESET session_replication_role;
SELECT event_name, received_at FROM cp_batched WHERE event_name = 'restored';

-- FREEZE is refused, as PostgreSQL refuses it for a partitioned table
COPY cp_batched (event_id, event_name) FROM stdin WITH (FREEZE);
00000000-0000-4000-8000-000000000062	frozen
\.

-- COPY into one partition directly: PostgreSQL's COPY, with the trigger
COPY cp_batched_p20261120 (event_id, event_name, occurred_at) FROM stdin;
00000000-0000-4000-8000-000000000071	direct	2026-11-20 13:00:00+00
00000000-0000-4000-8000-000000000071	direct	2026-11-20 13:00:00+00
\.
SELECT count(*) AS direct FROM cp_batched WHERE event_name = 'direct';

SELECT stream.drop_activation('cp_big');
-- a foreign-table partition (allowed once the stream has no immediate
-- activation, whose constraint trigger foreign tables cannot carry), here
-- through postgres_fdw to a table of this database: the batched COPY
-- refuses it before writing anything (0A000; the HINT's way out, the
-- row-by-row COPY, then writes through the wrapper, our trigger included)
CREATE EXTENSION postgres_fdw;
SELECT current_database() AS cp_db \gset
\getenv cp_host PGHOST
\getenv cp_port PGPORT
CREATE SERVER cp_loopback FOREIGN DATA WRAPPER postgres_fdw
    OPTIONS (dbname :'cp_db', host :'cp_host', port :'cp_port');
CREATE USER MAPPING FOR CURRENT_USER SERVER cp_loopback;
CREATE TABLE cp_remote (LIKE cp_batched);
CREATE FOREIGN TABLE cp_batched_foreign PARTITION OF cp_batched
    FOR VALUES FROM ('2026-11-25') TO ('2026-11-26')
    SERVER cp_loopback OPTIONS (table_name 'cp_remote');
COPY cp_batched (event_id, event_name, occurred_at) FROM stdin;
00000000-0000-4000-8000-0000000000f1	foreign	2026-11-20 12:00:00+00
00000000-0000-4000-8000-0000000000f2	foreign	2026-11-25 12:00:00+00
\.
\set VERBOSITY sqlstate
COPY cp_batched (event_id, event_name, occurred_at) FROM stdin;
00000000-0000-4000-8000-0000000000f2	foreign	2026-11-25 12:00:00+00
\.
\set VERBOSITY default
SELECT count(*) AS foreign_kept FROM cp_batched WHERE event_name = 'foreign';
SET stream_events.copy_batch = off;
COPY cp_batched (event_id, event_name, occurred_at) FROM stdin;
00000000-0000-4000-8000-0000000000f1	foreign	2026-11-20 12:00:00+00
00000000-0000-4000-8000-0000000000f2	foreign	2026-11-25 12:00:00+00
00000000-0000-4000-8000-0000000000f2	foreign	2026-11-25 12:00:00+00
\.
SET stream_events.copy_batch = on;
SELECT event_id, tableoid::regclass AS partition, received_at IS NOT NULL AS received
FROM cp_batched WHERE event_name = 'foreign' ORDER BY event_id;
SELECT count(*) AS remote_rows FROM cp_remote;

SELECT stream.drop_stream('cp_batched');
DROP TABLE cp_remote;
DROP USER MAPPING FOR CURRENT_USER SERVER cp_loopback;
DROP SERVER cp_loopback;
DROP EXTENSION postgres_fdw;
SELECT stream.drop_stream('cp_rows');
DROP FUNCTION cp_tag();
REVOKE USAGE ON SCHEMA stream FROM cp_producer, cp_partial, cp_nobody;
DROP ROLE cp_producer, cp_partial, cp_nobody;
