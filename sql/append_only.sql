-- Append-only at the DDL level (src/ddl_guard.c) and the partition bound of
-- stream.maintain: refusals pinned with their DETAIL and HINT.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = notice;

SELECT stream.create_stream('ao') IS NOT NULL AS created;
-- a partition with a name that does not depend on today's date
SET stream_events.max_partitions_behind = 100000;
INSERT INTO ao (event_id, event_name, occurred_at, user_id) VALUES
  ('00000000-0000-7000-8000-00000000a001', 'page_view', '2001-01-15 12:00+00', 'u1'),
  ('00000000-0000-7000-8000-00000000a002', 'page_view', now(), 'u2');
SELECT partitions_created, rows_moved FROM stream.maintain('ao');
RESET stream_events.max_partitions_behind;
SELECT tableoid::regclass AS partition FROM ao WHERE occurred_at < '2002-01-01';

-- DROP of a partition, the default one included: refused, nothing dropped
DROP TABLE ao_default;
DROP TABLE ao_p20010115;
DROP TABLE IF EXISTS ao_p20010115, ao_default;
SELECT count(*) AS events FROM ao;

-- DETACH, CONCURRENTLY too
ALTER TABLE ao DETACH PARTITION ao_default;
ALTER TABLE ao DETACH PARTITION ao_p20010115;
ALTER TABLE ao DETACH PARTITION ao_p20010115 CONCURRENTLY;

-- TRUNCATE of the stream or any partition
TRUNCATE ao;
TRUNCATE ao_default;
TRUNCATE ONLY ao_p20010115;

-- refused inside a subtransaction: the transaction goes on, nothing noted
BEGIN;
DO $$
BEGIN
    DROP TABLE ao_default;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'refused: %', SQLERRM;
END $$;
INSERT INTO ao (event_name, occurred_at) VALUES ('late', '1999-06-01');
COMMIT;
SELECT count(*) AS events, (SELECT count(*) FROM ao_default) AS in_default FROM ao;

-- a partition moved to another schema, or given to another owner: DROP
-- SCHEMA ... CASCADE and DROP OWNED cannot take it either
CREATE SCHEMA ao_elsewhere;
ALTER TABLE ao_p20010115 SET SCHEMA ao_elsewhere;
DROP SCHEMA ao_elsewhere CASCADE;
ALTER TABLE ao_elsewhere.ao_p20010115 SET SCHEMA public;
DROP SCHEMA ao_elsewhere;
CREATE ROLE ao_other;
ALTER TABLE ao_default OWNER TO ao_other;
DROP OWNED BY ao_other;
ALTER TABLE ao_default OWNER TO CURRENT_USER;
DROP ROLE ao_other;

-- envelope columns: not dropped, renamed, retyped or made nullable
ALTER TABLE ao DROP COLUMN user_id;
ALTER TABLE ao RENAME COLUMN event_name TO name;
ALTER TABLE ao ALTER COLUMN properties TYPE json;
ALTER TABLE ao ALTER COLUMN event_id DROP NOT NULL;
ALTER TABLE ao_default ALTER COLUMN context TYPE json;
ALTER TABLE ao_default RENAME COLUMN session_id TO sid;
-- the stream's own triggers: not dropped or disabled (others are the owner's)
DROP TRIGGER stream_events_append_only ON ao_default;
DROP TRIGGER IF EXISTS stream_events_ingest ON public.ao;
ALTER TABLE ao DISABLE TRIGGER stream_events_append_only;
ALTER TABLE ao_default DISABLE TRIGGER ALL;
ALTER TABLE ao DISABLE TRIGGER USER;
ALTER TABLE ao ENABLE REPLICA TRIGGER stream_events_no_truncate;
ALTER TABLE ao ENABLE TRIGGER stream_events_ingest;
CREATE FUNCTION ao_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER ao_own BEFORE INSERT ON ao FOR EACH ROW EXECUTE FUNCTION ao_noop();
ALTER TABLE ao DISABLE TRIGGER ao_own;
DROP TRIGGER ao_own ON ao;
DROP FUNCTION ao_noop();
-- other columns and other changes are the owner's
ALTER TABLE ao ADD COLUMN note text;
ALTER TABLE ao RENAME COLUMN note TO remark;
ALTER TABLE ao DROP COLUMN remark;
ALTER TABLE ao ALTER COLUMN user_id SET STATISTICS 500;
-- the DETAIL names the aggregates and activations over the stream
SELECT stream.create_aggregate('ao_daily', $$
  SELECT stream.tumble(occurred_at, '1 day') AS day, count(*) AS events FROM ao GROUP BY 1 $$) IS NOT NULL AS aggregate;
SELECT stream.on_event('ao_signup', 'ao', $$event_name = 'signup'$$) IS NOT NULL AS activation;
ALTER TABLE ao ALTER COLUMN occurred_at TYPE timestamp;
ALTER TABLE ao RENAME COLUMN user_id TO uid;
SELECT stream.drop_aggregate('ao_daily');
SELECT stream.drop_activation('ao_signup');

-- the bound: events after the last partition kept ahead, or before
-- stream_events.max_partitions_behind (or retention), stay in the default
-- partition, counted in stream.stream_list
INSERT INTO ao (event_name, occurred_at) VALUES
  ('far', '2999-12-31'), ('far', '2500-06-01'), ('far', '1800-01-01'),
  ('far', now() + interval '400 days');
SELECT partitions_created, rows_moved FROM stream.maintain('ao');
SELECT stream, default_partition_events FROM stream.stream_list WHERE stream = 'ao';
-- within the bound, at most stream_events.max_partitions_per_run per run
INSERT INTO ao (event_name, occurred_at)
SELECT 'late', now() - make_interval(days => d) FROM generate_series(10, 14) d;
SET stream_events.max_partitions_per_run = 2;
SELECT partitions_created, rows_moved FROM stream.maintain('ao');
SELECT partitions_created, rows_moved FROM stream.maintain('ao');
SELECT partitions_created, rows_moved FROM stream.maintain('ao');
SELECT partitions_created, rows_moved FROM stream.maintain('ao');
RESET stream_events.max_partitions_per_run;
SELECT default_partition_events FROM stream.stream_list WHERE stream = 'ao';
-- a role that may not read the stream gets NULL, not a count; one that may
-- read the stream (not its default partition) gets the count
CREATE ROLE ao_reader;
GRANT USAGE ON SCHEMA stream TO ao_reader;
GRANT INSERT ON ao TO ao_reader;
SET ROLE ao_reader;
SELECT stream, default_partition_events FROM stream.stream_list WHERE stream = 'ao';
RESET ROLE;
GRANT SELECT ON ao TO ao_reader;
SET ROLE ao_reader;
SELECT stream, default_partition_events FROM stream.stream_list WHERE stream = 'ao';
SELECT stream._priv_default_partition_events('ao_reader', 'ao');
RESET ROLE;

-- retention: the one way a partition leaves a stream that stays
SELECT stream._drop_expired_partition('ao_p20010115');      -- no retention: kept
SELECT stream._drop_expired_partition('ao');                -- not a partition
SELECT stream._drop_expired_partition('stream.streams');
UPDATE stream.streams SET retention = '30 days' WHERE relid = 'ao'::regclass;
SELECT stream._drop_expired_partition('ao_default');        -- the default: kept
SELECT partitions_dropped >= 1 AS dropped FROM stream.maintain('ao');
SELECT to_regclass('ao_p20010115') AS old_partition;
-- and the default partition's events older than the retention are gone too
SELECT event_name, occurred_at > now() FROM ao_default ORDER BY occurred_at;
SELECT stream._expire_default_events('ao');
SELECT count(*) FILTER (WHERE pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT') > 0 AS recent_partitions_kept
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'ao'::regclass;

-- drops of a whole stream take its partitions with it
SELECT stream.drop_stream('ao');
SELECT stream.create_stream('ao2') IS NOT NULL AS created;
DROP TABLE ao2_default, ao2;
CREATE SCHEMA ao_s;
SELECT stream.create_stream('ao_s.events') IS NOT NULL AS created;
DROP SCHEMA ao_s CASCADE;
CREATE ROLE ao_owner;
GRANT CREATE, USAGE ON SCHEMA public TO ao_owner;
GRANT USAGE ON SCHEMA stream TO ao_owner;
SET ROLE ao_owner;
SELECT stream.create_stream('ao3') IS NOT NULL AS created;
RESET ROLE;
DROP OWNED BY ao_owner;
SELECT count(*) AS streams_left FROM stream.streams WHERE relid::text LIKE 'ao%';
SELECT count(*) AS tables_left FROM pg_class WHERE relname LIKE 'ao%' AND relkind IN ('r', 'p');
REVOKE ALL ON SCHEMA public FROM ao_owner;
REVOKE ALL ON SCHEMA stream FROM ao_owner, ao_reader;
DROP ROLE ao_owner;
DROP ROLE ao_reader;
