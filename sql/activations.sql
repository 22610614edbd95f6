-- Activations: stream.on_event, the outbox, consume/ack, stats, refusals.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = notice;

SELECT stream.create_stream('act_clicks');
CREATE TABLE act_plain (user_id text);

-- refused definitions
SELECT stream.on_event('a1', 'act_plain', 'true');
SELECT stream.on_event('a1', 'act_clicks', 'random() > 0.5');
SELECT stream.on_event('a1', 'act_clicks', 'event_name');
SELECT stream.on_event('a1', 'act_clicks', $$event_name IN (SELECT 'x')$$);
SELECT stream.on_event('a1', 'act_clicks', 'count(*) > 1');
SELECT stream.on_event('a1', 'act_clicks', 'row_number() OVER () = 1');
SELECT stream.on_event('a1', 'act_clicks', 'xmin IS NOT NULL');
SELECT stream.on_event('a1', 'act_clicks', 'nosuchcol = 1');
SELECT stream.on_event('a1', 'act_clicks', 'true) FROM pg_class --');
SELECT stream.on_event('a1', 'act_clicks', 'true; DROP TABLE act_plain');
SELECT stream.on_event('a1', 'act_clicks', '');
SELECT stream.on_event('a1', 'act_clicks', 'true', key => 'gen_random_uuid()');
SELECT stream.on_event('a1', 'act_clicks', 'true', channel => 'Bad Channel');
SELECT stream.on_event('a 1', 'act_clicks', 'true');
SELECT stream.on_event('a1', 'act_clicks', 'true', cooldown => '-1 minute');
SELECT stream.on_event('a1', 'nosuch', 'true');

-- definitions
SELECT stream.on_event('vip_purchase', 'act_clicks',
    $$event_name = 'purchase' AND (properties->>'price')::numeric >= 100$$,
    channel => 'vip');
SELECT stream.on_event('cart', 'act_clicks', $$event_name = 'add_to_cart'$$,
    cooldown => '1 hour', key => 'coalesce(user_id, anonymous_id)');
SELECT stream.on_event('cart', 'act_clicks', 'true');
SELECT name, stream, condition, key, channel, cooldown FROM stream.activation_defs ORDER BY act_id;
-- live once the worker has it: flush waits for that (and creates the slot of
-- the first activation or aggregate of the database)
SELECT stream.flush() IS NOT NULL AS flushed;

-- committed events fire, rolled-back ones never
INSERT INTO act_clicks (event_name, user_id, properties, received_at) VALUES
    ('purchase', 'u1', '{"price": 150}', now()),
    ('purchase', 'u2', '{"price": 50}', now()),
    ('page_view', 'u1', '{}', now());
BEGIN;
INSERT INTO act_clicks (event_name, user_id, properties) VALUES ('purchase', 'u3', '{"price": 900}');
ROLLBACK;
-- cooldown per key: u4's second add_to_cart within the hour does not fire
INSERT INTO act_clicks (event_name, user_id) VALUES ('add_to_cart', 'u4');
INSERT INTO act_clicks (event_name, user_id) VALUES ('add_to_cart', 'u4');
INSERT INTO act_clicks (event_name, anonymous_id) VALUES ('add_to_cart', 'anon-5');
INSERT INTO act_clicks (event_name, user_id, properties) VALUES ('purchase', 'u6', '{"price": 100}');
SELECT stream.flush() IS NOT NULL AS flushed;
SELECT id, activation, key, channel, payload->>'event_name' AS event_name,
       payload->>'user_id' AS user_id, payload->'properties' AS properties,
       event_id = (payload->>'event_id')::uuid AS same_event,
       fired_at >= received_at AS after_receipt
FROM stream.activations ORDER BY id;

-- consume / ack: at least once, in order, per consumer
SELECT id, key FROM stream.consume('mailer', 'vip', 1);
SELECT id, key FROM stream.consume('mailer', 'vip', 1);      -- not acked: again
SELECT stream.ack('mailer', 1);
SELECT id, key FROM stream.consume('mailer', 'vip');
SELECT id, key FROM stream.consume('crm', 'vip');             -- another consumer: from the start
SELECT stream.ack('mailer', 999);
SELECT stream.ack('mailer', 3);                               -- a cart activation: never consumed
SELECT stream.ack('crm', 4);                                  -- both delivered: fine
SELECT id FROM stream.consume('mailer', 'vip', 0);
SELECT consumer, channel, delivered_id, acked_id FROM stream.consumer_offsets ORDER BY 1, 2;
SELECT activation, channel, fired, delivered, pending, latency_p50 >= '0' AS p50, latency_p99 >= latency_p50 AS p99
FROM stream.activation_stats ORDER BY activation;

-- drop
SELECT stream.drop_activation('nosuch');
SELECT stream.drop_activation('cart');
INSERT INTO act_clicks (event_name, user_id) VALUES ('add_to_cart', 'u7');
SELECT stream.flush() IS NOT NULL AS flushed;
SELECT count(*) AS cart_firings FROM stream.activations WHERE activation = 'cart';
SELECT stream.drop_activation('vip_purchase');
SELECT count(*) FROM stream.activation_defs;
-- the last one gone, the worker releases the replication slot
DO $$
BEGIN
    FOR i IN 1 .. 1000 LOOP
        EXIT WHEN NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = 'stream_events_' || (SELECT oid FROM pg_database WHERE datname = current_database()));
        PERFORM pg_sleep(0.01);
    END LOOP;
END $$;
SELECT count(*) AS slots FROM pg_replication_slots WHERE slot_name = 'stream_events_' || (SELECT oid FROM pg_database WHERE datname = current_database());
DROP TABLE act_plain;
SELECT stream.drop_stream('act_clicks');
