-- stream.capture / stream.uncapture (docs/capture.md): the SQL surface and
-- every refusal of issue 14's bad input, with its SQLSTATE (echoed after
-- each error), DETAIL and HINT.
-- The worker's part (events, crashes, privileges at run time) is TAP
-- (test/t/036_capture.pl).
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;

SELECT stream.create_stream('cap_events');
CREATE TABLE cap_orders (id int PRIMARY KEY, customer text, amount numeric, note text);

-- a capture, its catalog row and its trigger
SELECT stream.capture('cap_orders', stream => 'cap_events', columns => '{id,amount}', user_id => 'customer') > 0 AS captured;
SELECT source, stream, event_prefix, columns, key_columns, user_id_column, owner, status,
       start_lsn IS NOT NULL AS has_start, applied_lsn
FROM stream.captures;
SELECT tgname, tgfoid::regprocedure, tgenabled FROM pg_trigger WHERE tgrelid = 'cap_orders'::regclass AND NOT tgisinternal;
-- in logical mode the trigger writes nothing (the worker decodes the change)
INSERT INTO cap_orders VALUES (1, 'c1', 10, 'n');
SELECT count(*) AS queued FROM stream.capture_log;
-- ids are a function of (capture, position) only
SELECT stream._capture_event_id(1, '700/0/16B3F20') = stream._capture_event_id(1, '700/0/16B3F20') AS same,
       stream._capture_event_id(1, '700/0/16B3F20') <> stream._capture_event_id(2, '700/0/16B3F20') AS per_capture,
       substr(stream._capture_event_id(1, 'x')::text, 15, 1) AS version;

-- bad input
-- the same table twice
SELECT stream.capture('cap_orders', stream => 'cap_events');
\echo :LAST_ERROR_SQLSTATE
-- a table without a primary key
CREATE TABLE cap_nokey (a int, b text);
SELECT stream.capture('cap_nokey', stream => 'cap_events');
\echo :LAST_ERROR_SQLSTATE
-- REPLICA IDENTITY NOTHING
CREATE TABLE cap_nothing (id int PRIMARY KEY);
ALTER TABLE cap_nothing REPLICA IDENTITY NOTHING;
SELECT stream.capture('cap_nothing', stream => 'cap_events');
\echo :LAST_ERROR_SQLSTATE
-- a stream, or one of its partitions, as source
SELECT stream.capture('cap_events', stream => 'cap_events');
\echo :LAST_ERROR_SQLSTATE
SELECT stream.capture((SELECT c.oid::regclass FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                       WHERE i.inhparent = 'cap_events'::regclass LIMIT 1), stream => 'cap_events') IS NULL;
\echo :LAST_ERROR_SQLSTATE
-- a view, a materialized view, a partitioned table
CREATE VIEW cap_view AS SELECT * FROM cap_orders;
SELECT stream.capture('cap_view', stream => 'cap_events');
\echo :LAST_ERROR_SQLSTATE
CREATE MATERIALIZED VIEW cap_mv AS SELECT 1 AS id;
SELECT stream.capture('cap_mv', stream => 'cap_events');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE cap_parted (id int PRIMARY KEY) PARTITION BY RANGE (id);
SELECT stream.capture('cap_parted', stream => 'cap_events');
\echo :LAST_ERROR_SQLSTATE
-- a temporary table, an unlogged table
CREATE TEMPORARY TABLE cap_temp (id int PRIMARY KEY);
SELECT stream.capture('cap_temp', stream => 'cap_events');
\echo :LAST_ERROR_SQLSTATE
CREATE UNLOGGED TABLE cap_unlogged (id int PRIMARY KEY);
SELECT stream.capture('cap_unlogged', stream => 'cap_events');
\echo :LAST_ERROR_SQLSTATE
-- a source the caller cannot SELECT
CREATE ROLE cap_user;
GRANT USAGE ON SCHEMA stream TO cap_user;
GRANT INSERT ON cap_events TO cap_user;
CREATE TABLE cap_secret (id int PRIMARY KEY, v text);
SET ROLE cap_user;
SELECT stream.capture('cap_secret', stream => 'cap_events');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- SELECT but neither TRIGGER nor ownership
GRANT SELECT ON cap_secret TO cap_user;
SET ROLE cap_user;
SELECT stream.capture('cap_secret', stream => 'cap_events');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- a stream the caller may not insert into
GRANT TRIGGER ON cap_secret TO cap_user;
REVOKE INSERT ON cap_events FROM cap_user;
SET ROLE cap_user;
SELECT stream.capture('cap_secret', stream => 'cap_events');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- not a stream
CREATE TABLE cap_plain (id int PRIMARY KEY);
SELECT stream.capture('cap_plain', stream => 'cap_orders');
\echo :LAST_ERROR_SQLSTATE
-- columns that do not exist
SELECT stream.capture('cap_plain', stream => 'cap_events', columns => '{id,nope}');
\echo :LAST_ERROR_SQLSTATE
SELECT stream.capture('cap_plain', stream => 'cap_events', user_id => 'who');
\echo :LAST_ERROR_SQLSTATE
SELECT stream.capture('cap_plain', stream => 'cap_events', columns => ARRAY['id', NULL]);
\echo :LAST_ERROR_SQLSTATE
-- NULLs and names that do not exist
SELECT stream.capture(NULL, stream => 'cap_events');
\echo :LAST_ERROR_SQLSTATE
SELECT stream.capture('cap_missing', stream => 'cap_events');
\echo :LAST_ERROR_SQLSTATE
-- the catalogs are written by the extension's functions only
SET ROLE cap_user;
INSERT INTO stream.captures (source, stream, event_prefix, key_columns, owner, start_lsn)
VALUES ('cap_secret', 'cap_events', 'x', '{id}', 'cap_user', '0/0');
\echo :LAST_ERROR_SQLSTATE
SELECT stream._priv_capture('cap_user', 'cap_secret', 'cap_events', NULL, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT stream._capture_drain();
\echo :LAST_ERROR_SQLSTATE
-- uncapture: only its owner (or the table's)
SELECT stream.uncapture('cap_orders');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT stream.uncapture('cap_plain');
\echo :LAST_ERROR_SQLSTATE
SELECT stream.resume_capture('cap_plain');
\echo :LAST_ERROR_SQLSTATE

-- uncapture forgets the capture and drops the trigger; capture again works
SELECT stream.uncapture('cap_orders');
SELECT count(*) AS captures, (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'cap_orders'::regclass AND NOT tgisinternal) AS triggers
FROM stream.captures;
SELECT stream.capture('cap_orders', stream => 'cap_events') > 0 AS captured_again;
-- dropping the stream takes the capture along (the trigger stays, idle, until uncapture or capture again)
SELECT stream.drop_stream('cap_events');
SELECT count(*) AS captures FROM stream.captures;

DROP VIEW cap_view;
DROP MATERIALIZED VIEW cap_mv;
DROP TABLE cap_orders, cap_nokey, cap_nothing, cap_parted, cap_temp, cap_unlogged, cap_secret, cap_plain;
REVOKE ALL ON SCHEMA stream FROM cap_user;
DROP ROLE cap_user;
