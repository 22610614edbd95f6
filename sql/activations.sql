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
SELECT stream.on_event('a1', 'act_clicks', 'true', payload => '');
SELECT stream.on_event('a1', 'act_clicks', 'true', payload => 'nosuchcol');
SELECT stream.on_event('a1', 'act_clicks', 'true', payload => 'random()');
SELECT stream.on_event('a1', 'act_clicks', 'true', delivery => 'eventually');
SELECT stream.on_absence('a1', 'act_clicks', started_by => 'true', cancelled_by => 'true', within => '0 seconds');
SELECT stream.on_absence('a1', 'act_clicks', started_by => 'true', cancelled_by => 'true', within => '1 minute', key => NULL);
SELECT stream.on_absence('a1', 'act_clicks', started_by => 'true', cancelled_by => NULL, within => '1 minute');
SELECT stream.on_absence('a1', 'act_clicks', started_by => 'true', cancelled_by => 'user_id', within => '1 minute');
SELECT stream.on_absence('a1', 'act_plain', started_by => 'true', cancelled_by => 'true', within => '1 minute');
SELECT stream.on_threshold('a1', 'nosuch_aggregate', 'true');

-- definitions
SELECT stream.on_event('vip_purchase', 'act_clicks',
    $$event_name = 'purchase' AND (properties->>'price')::numeric >= 100$$,
    channel => 'vip');
SELECT stream.on_event('cart', 'act_clicks', $$event_name = 'add_to_cart'$$,
    cooldown => '1 hour', key => 'coalesce(user_id, anonymous_id)');
SELECT stream.on_event('cart', 'act_clicks', 'true');
SELECT stream.on_event('big_ticket', 'act_clicks', $$(properties->>'price')::numeric >= 500$$,
    payload => $$jsonb_build_object('who', user_id, 'price', properties->'price')$$,
    delivery => 'immediate');
SELECT stream.on_absence('cart_abandoned', 'act_clicks',
    started_by => $$event_name = 'add_to_cart'$$,
    cancelled_by => $$event_name = 'purchase'$$,
    within => '1 day', key => 'user_id', channel => 'recovery');
SELECT stream.create_aggregate('act_spend', $$SELECT user_id, sum((properties->>'price')::numeric) AS spend,
    count(*) AS purchases FROM act_clicks WHERE event_name = 'purchase' GROUP BY 1$$);
SELECT stream.on_threshold('whale', 'act_spend', 'spend >= 1000', channel => 'ops');
SELECT stream.on_threshold('a1', 'act_spend', 'nosuchcol > 1');
SELECT stream.on_threshold('a1', 'act_spend', 'spend');
SELECT name, kind, stream, aggregate, condition, cancelled_by, within, key, payload IS NOT NULL AS payload,
       channel, cooldown, delivery
FROM stream.activation_defs ORDER BY act_id;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'act_clicks'::regclass AND tgname LIKE 'stream_events_act%';
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
FROM stream.activations WHERE activation IN ('vip_purchase', 'cart') ORDER BY id;

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
SELECT activation, kind, channel, consumer, fired, delivered, pending,
       latency_p50 >= '0' AS p50, latency_p99 >= latency_p50 AS p99,
       ack_latency_p99 >= ack_latency_p50 AS ack_p99
FROM stream.activation_stats ORDER BY activation, consumer;
SELECT consumer, count(*) AS acks FROM stream.consumer_acks GROUP BY 1 ORDER BY 1;
-- retention: acknowledged rows older than the horizon go; the others stay
SELECT stream.prune_activations(interval '0 seconds') AS pruned;
SELECT activation, count(*) FROM stream.activations GROUP BY 1 ORDER BY 1;

-- immediate delivery: the producer's transaction fires, at its commit (with
-- the payload expression); a rolled-back producer fires nothing
BEGIN;
INSERT INTO act_clicks (event_name, user_id, properties) VALUES ('purchase', 'u8', '{"price": 700}');
SELECT count(*) AS before_commit FROM stream.activations WHERE activation = 'big_ticket';
ROLLBACK;
INSERT INTO act_clicks (event_name, user_id, properties) VALUES ('purchase', 'u9', '{"price": 800}');
SELECT activation, key, payload, fired_at = received_at AS in_producer_txn
FROM stream.activations WHERE activation = 'big_ticket';

-- absence: add_to_cart opens a timer per user, purchase cancels it, a
-- later add_to_cart restarts it; events without the key open nothing
INSERT INTO act_clicks (event_name, user_id) VALUES ('add_to_cart', 'u10'), ('add_to_cart', 'u11');
INSERT INTO act_clicks (event_name, anonymous_id) VALUES ('add_to_cart', 'anon-12');
INSERT INTO act_clicks (event_name, user_id, properties) VALUES ('purchase', 'u10', '{"price": 5}');
SELECT stream.flush() IS NOT NULL AS flushed;
SELECT d.name, t.key, t.deadline - t.received_at AS within, t.payload->>'event_name' AS started_by
FROM stream.absence_timers t JOIN stream.activation_defs d USING (act_id) ORDER BY t.key;
INSERT INTO act_clicks (event_name, user_id) VALUES ('add_to_cart', 'u11');
SELECT stream.flush() IS NOT NULL AS flushed;
SELECT count(*) AS timers, count(DISTINCT event_id) AS events,
       bool_and(event_id = (SELECT c.event_id FROM act_clicks c WHERE c.user_id = 'u11'
                            ORDER BY c.received_at DESC LIMIT 1)) AS restarted
FROM stream.absence_timers WHERE key = 'u11';

-- thresholds fire once per rise of a group: u13 crosses 1000, stays above,
-- u14 crosses in one go; groups already above when it was defined do not fire
INSERT INTO act_clicks (event_name, user_id, properties) VALUES ('purchase', 'u13', '{"price": 600}');
SELECT stream.flush() IS NOT NULL AS flushed;
INSERT INTO act_clicks (event_name, user_id, properties) VALUES ('purchase', 'u13', '{"price": 600}');
SELECT stream.flush() IS NOT NULL AS flushed;
INSERT INTO act_clicks (event_name, user_id, properties) VALUES ('purchase', 'u13', '{"price": 10}'),
    ('purchase', 'u14', '{"price": 2000}');
SELECT stream.flush() IS NOT NULL AS flushed;
SELECT activation, key, channel, payload FROM stream.activations WHERE activation = 'whale' ORDER BY id;
SELECT grp FROM stream.threshold_state ORDER BY grp;

SELECT id, activation, key, channel FROM stream.activations ORDER BY id;

-- drop
SELECT stream.drop_activation('nosuch');
-- failures: bad on_error, resume of a running activation, status view
SELECT stream.on_event('bad_on_error', 'act_clicks', 'true', on_error => 'never');
SELECT stream.on_absence('bad_on_error', 'act_clicks', 'true', 'false', '1 minute', on_error => NULL);
SELECT stream.resume('cart');
SELECT name, kind, state, on_error, dead_letters FROM stream.activation_status WHERE name = 'cart';
SELECT stream.drop_activation('cart');
INSERT INTO act_clicks (event_name, user_id) VALUES ('add_to_cart', 'u7');
SELECT stream.flush() IS NOT NULL AS flushed;
SELECT count(*) AS cart_firings FROM stream.activations WHERE activation = 'cart';
SELECT stream.drop_activation('vip_purchase');
SELECT stream.drop_activation('cart_abandoned');
SELECT count(*) AS timers_left FROM stream.absence_timers;
SELECT stream.drop_activation('big_ticket');
SELECT count(*) AS immediate_triggers FROM pg_trigger WHERE tgname = 'stream_events_activations';
SELECT stream.on_threshold('whale2', 'act_spend', 'spend >= 2000');
SELECT stream.drop_activation('whale');
SELECT stream.drop_aggregate('act_spend');
SELECT count(*) AS thresholds_left FROM stream.activation_defs WHERE kind = 'threshold';
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
-- an immediate activation skips a poison event into its dead letters (on_error
-- => 'skip', the default): the producer's row and the other events fire
SELECT stream.on_event('imm_price', 'act_clicks', $$(properties->>'price')::numeric > 10$$,
    channel => 'imm_price', delivery => 'immediate');
INSERT INTO act_clicks (event_name, occurred_at, properties)
VALUES ('buy', now(), '{"price": 20}'), ('buy', now(), '{"price": "N/A"}');
SELECT count(*) AS fired FROM stream.activations WHERE activation = 'imm_price';
SELECT definition, kind, sqlstate, error, event_id IS NOT NULL AS has_event
FROM stream.dead_letters WHERE definition = 'imm_price';
SELECT stream.retry_dead_letters('imm_price');
-- with on_error => 'stop' the producer's statement fails instead
SELECT stream.on_event('imm_price_stop', 'act_clicks', $$(properties->>'price')::numeric > 10$$,
    channel => 'imm_price', delivery => 'immediate', on_error => 'stop');
INSERT INTO act_clicks (event_name, occurred_at, properties) VALUES ('buy', now(), '{"price": "N/A"}');
SELECT stream.drop_activation('imm_price_stop');
SELECT stream.drop_activation('imm_price');
-- dropping a stream drops its activations (immediate trigger included)
SELECT stream.on_event('last', 'act_clicks', 'true', delivery => 'immediate');
SELECT stream.drop_stream('act_clicks');
SELECT count(*) AS activations_left FROM stream.activation_defs;
