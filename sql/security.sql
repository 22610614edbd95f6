-- The trust boundary (docs/security.md): catalogs change only through the
-- extension's functions, which check ownership and privileges; channels,
-- consumers and status views follow the caller's rights.  Every refusal
-- here is 42501 (or says the object does not exist to whoever may not see
-- it), with a DETAIL naming the object and a HINT naming what to do.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;

CREATE ROLE sec_owner;
CREATE ROLE sec_producer;
CREATE ROLE sec_consumer;
CREATE ROLE sec_outsider;
CREATE SCHEMA sec AUTHORIZATION sec_owner;
GRANT USAGE ON SCHEMA stream TO sec_owner, sec_producer, sec_consumer, sec_outsider;
GRANT USAGE ON SCHEMA sec TO sec_producer, sec_consumer, sec_outsider;
CREATE TABLE public.sec_canary (v int);
INSERT INTO public.sec_canary VALUES (1), (2);

-- a non-superuser owner can do everything with what it owns
SET ROLE sec_owner;
SET search_path = sec;
SELECT stream.create_stream('orders');
SELECT stream.define_contract('orders', 'purchase',
    '{"type": "object", "required": ["price"], "properties": {"price": {"type": "number", "minimum": 0}}}');
SELECT stream.set_policy('orders', on_violation => 'quarantine', format_assertion => true,
                         max_future => '1 day');
GRANT INSERT ON orders TO sec_producer;
SELECT stream.on_event('big_order', 'orders', $$(properties->>'price')::numeric > 100$$,
                       channel => 'sec_orders', delivery => 'immediate');
-- PUBLIC cannot read the stream: its NOTIFY carries ids only
SELECT name, channel, notify, owner FROM stream.activation_defs;
SELECT stream.on_event('big_order_full', 'orders', 'true', channel => 'sec_orders',
                       delivery => 'immediate', notify => 'full');
SELECT stream.on_event('x', 'orders', 'true', notify => 'loud');
RESET ROLE;

-- a producer with INSERT only: dedup and quarantine need no other grant
SET ROLE sec_producer;
INSERT INTO sec.orders (event_id, event_name, properties)
VALUES ('00000000-0000-7000-8000-000000000001', 'purchase', '{"price": 250}'),
       ('00000000-0000-7000-8000-000000000001', 'purchase', '{"price": 250}'),
       ('00000000-0000-7000-8000-000000000002', 'purchase', '{"price": -1}');
-- enforcement settings are the owner's, not the producer's
SET stream_events.format_assertion = off;
SET stream_events.max_future = '';
-- the producer cannot read the stream, its quarantine or its firings
SELECT count(*) FROM sec.orders;
SELECT count(*) FROM sec.orders_quarantine;
SELECT count(*) FROM stream.activations;
RESET ROLE;
SELECT count(*) AS stored FROM sec.orders;
SELECT event_id, errors->0->>'instance_path' AS path FROM sec.orders_quarantine;
SELECT activation, key, payload->>'event_name' AS event FROM stream.activations WHERE channel = 'sec_orders' ORDER BY id;

-- catalogs: no role writes them by hand
SET ROLE sec_outsider;
INSERT INTO stream.streams (relid, partition_interval, quarantine) VALUES ('public.sec_canary', '1 day', 'public.sec_canary');
UPDATE stream.streams SET quarantine = 'public.sec_canary';
DELETE FROM stream.streams;
INSERT INTO stream.aggregate_defs (view, state_table, stream, owner, query, query_tree)
VALUES ('public.sec_canary', 'public.sec_canary', 'sec.orders', 'sec_outsider', 'x', '{QUERY}');
INSERT INTO stream.activation_defs (name, stream, condition, channel, owner)
VALUES ('forged', 'sec.orders', 'true', 'forged', 'sec_outsider');
INSERT INTO stream.contracts (stream_id, stream, event_name, version, schema, compatibility, schema_uri)
VALUES (1, 'sec.orders', 'purchase', 9, 'false', 'none', 'urn:x');
INSERT INTO stream.schemas (uri, schema) VALUES ('https://example.com/s.json', 'true');
INSERT INTO stream.channels VALUES ('sec_orders', 'sec_outsider');
INSERT INTO stream.consumers VALUES ('sec_mailer', 'sec_outsider');
-- nor through the door: _priv_* functions are not the outsider's, and the
-- caller is always the real one
SELECT stream._priv_set_policy('sec_owner', 'sec.orders', 'warn', NULL, NULL, NULL, NULL, NULL);
SELECT stream._priv('stream._priv_set_policy', 'sec.orders'::regclass, 'warn'::text, NULL::text,
                    NULL::text, NULL::boolean, NULL::interval, NULL::boolean);
SELECT stream._priv('pg_catalog.pg_reload_conf', 1);
SELECT stream._priv('stream.create_stream', 'x'::text, '1 day'::interval, NULL::interval, NULL::interval);
-- nor with the owner's functions
SELECT stream.set_policy('sec.orders', on_violation => 'warn');
SELECT stream.define_contract('sec.orders', 'purchase', 'true', compatibility => 'none');
SELECT stream.register_schema('urn:stream-events:contract:sec.orders:purchase:1', 'true');
-- internal functions
SELECT stream._aggregate_adopt();
SELECT stream._stream_changed('sec.orders');
SELECT stream._activation_sync_trigger('sec.orders');
SELECT stream._aggregate_depend('public.sec_canary', 'sec.orders');
SELECT stream.prune_activations();
SELECT stream._move_rows('sec.orders_default', 'public.sec_canary', now(), now());
-- activations on a stream it cannot read, and on another role's channel
SELECT stream.on_event('peek', 'sec.orders', 'true');
RESET ROLE;
GRANT SELECT ON sec.orders TO sec_outsider;
SET ROLE sec_outsider;
SELECT stream.on_event('peek', 'sec.orders', 'true', channel => 'sec_orders', delivery => 'immediate');
SELECT stream.drop_activation('big_order');
-- what it may not see, it does not see
SELECT count(*) FROM stream.activations;
SELECT count(*) FROM stream.activation_stats;
SELECT count(*) FROM stream.aggregate_defs;
RESET ROLE;
REVOKE SELECT ON sec.orders FROM sec_outsider;
SET ROLE sec_outsider;
SELECT count(*) FROM stream.streams;
SELECT count(*) FROM stream.stats;
SELECT count(*) FROM stream.compliance;
SELECT count(*) FROM stream._stream_counters();
SELECT count(*) FROM stream.stream_list;
SELECT count(*) FROM stream.contracts;
RESET ROLE;

-- channels: only the owner grants; consumers are bound to their first role
SET ROLE sec_consumer;
SELECT * FROM stream.consume('sec_mailer', 'sec_orders');
SELECT stream.grant_channel('sec_orders', 'sec_consumer');
RESET ROLE;
SET ROLE sec_owner;
SELECT stream.grant_channel('sec_orders', 'sec_consumer');
SELECT stream.grant_channel('no_such_channel', 'sec_consumer');
RESET ROLE;
SET ROLE sec_consumer;
SELECT activation, key FROM stream.consume('sec_mailer', 'sec_orders');
SELECT stream.ack('sec_mailer', (SELECT max(id) FROM stream.activations));
SELECT count(*) AS pending FROM stream.consume('sec_mailer', 'sec_orders');
RESET ROLE;
SET ROLE sec_outsider;
SELECT * FROM stream.consume('sec_mailer', 'sec_orders');
SELECT stream.ack('sec_mailer', 1);
RESET ROLE;
SET ROLE sec_owner;
SELECT stream.revoke_channel('sec_orders', 'sec_consumer');
RESET ROLE;
SET ROLE sec_consumer;
SELECT * FROM stream.consume('sec_mailer', 'sec_orders');
RESET ROLE;

-- names with quotes and semicolons are names, never SQL
SET ROLE sec_owner;
SELECT stream.create_stream('sec."x; DROP TABLE public.sec_canary; --"');
SELECT stream.on_event('y"; DROP TABLE public.sec_canary; --', 'sec.orders', 'true');
SELECT stream.on_event('y', 'sec.orders', 'true', channel => 'x"; DROP TABLE public.sec_canary; --');
SELECT stream.create_aggregate('sec."a; DROP TABLE public.sec_canary; --"',
    'SELECT event_name, count(*) FROM sec.orders GROUP BY 1');
SELECT relname FROM pg_class WHERE (relname LIKE 'x;%' OR relname LIKE 'a;%') AND relname !~ '_p[0-9]{8}(_received_at_idx)?$' ORDER BY 1;
SELECT stream.drop_stream('sec."x; DROP TABLE public.sec_canary; --"');
RESET ROLE;
SELECT count(*) AS canary_rows FROM public.sec_canary;
SELECT rolname FROM pg_roles WHERE rolsuper AND rolname LIKE 'sec_%';

-- clean up
SELECT stream.drop_activation('big_order');
SELECT stream.drop_activation('big_order_full');
SELECT stream.drop_aggregate('sec."a; DROP TABLE public.sec_canary; --"');
SELECT stream.drop_stream('sec.orders');
DROP SCHEMA sec CASCADE;
DROP TABLE public.sec_canary;
REVOKE USAGE ON SCHEMA stream FROM sec_owner, sec_producer, sec_consumer, sec_outsider;
DELETE FROM stream.consumers;
DELETE FROM stream.consumer_offsets;
DELETE FROM stream.channel_grants;
DELETE FROM stream.channels;
DROP ROLE sec_owner, sec_producer, sec_consumer, sec_outsider;
