-- Queue mode (docs/queue-mode.md): with wal_level = replica the consumer
-- reads the ingest queue (stream_events.consumer = 'auto'); the SQL surface
-- is the same as in logical mode.
SHOW wal_level;
SHOW stream_events.consumer;
SELECT stream.consumer_mode();

-- Logical decoding cannot be chosen without wal_level = logical.
ALTER SYSTEM SET stream_events.consumer = 'logical';
-- (the others can)
ALTER SYSTEM SET stream_events.consumer = 'queue';
ALTER SYSTEM RESET stream_events.consumer;

-- Aggregates and activations are created without a replication slot.
SELECT stream.create_stream('shop');
INSERT INTO shop (event_name, user_id, properties)
SELECT CASE WHEN g % 3 = 0 THEN 'buy' ELSE 'view' END, 'u' || (g % 7),
       jsonb_build_object('price', g % 50)
FROM generate_series(1, 3000) g;
SELECT stream.create_aggregate('shop_per_user',
  $$SELECT user_id, event_name, count(*) AS n, sum((properties->>'price')::int) AS total
    FROM shop GROUP BY user_id, event_name$$);
SELECT stream.on_event('big_buy', 'shop', $$event_name = 'buy' AND (properties->>'price')::int >= 45$$,
                       channel => 'big_buys');
SELECT count(*) AS slots FROM pg_replication_slots WHERE slot_name LIKE 'stream_events_%';

-- Events committed after the backfill: in one statement, in a savepoint
-- (kept), in a rolled-back savepoint (not), in a rolled-back transaction (not).
INSERT INTO shop (event_name, user_id, properties)
SELECT 'buy', 'u' || (g % 7), jsonb_build_object('price', 45 + g % 5) FROM generate_series(1, 100) g;
BEGIN;
INSERT INTO shop (event_name, user_id, properties) VALUES ('buy', 'sp', '{"price": 46}');
SAVEPOINT kept;
INSERT INTO shop (event_name, user_id, properties) VALUES ('buy', 'sp', '{"price": 47}');
RELEASE kept;
SAVEPOINT gone;
INSERT INTO shop (event_name, user_id, properties) VALUES ('buy', 'sp', '{"price": 48}');
ROLLBACK TO gone;
COMMIT;
BEGIN;
INSERT INTO shop (event_name, user_id, properties) VALUES ('buy', 'rolled_back', '{"price": 49}');
ROLLBACK;
SELECT stream.flush(timeout => '60 s') IS NOT NULL AS flushed;

-- The aggregate equals its defining query; the activation fired once per
-- matching event.
SELECT count(*) AS differences FROM (
  (SELECT user_id, event_name, n, total FROM shop_per_user
   EXCEPT SELECT user_id, event_name, count(*), sum((properties->>'price')::int) FROM shop GROUP BY 1, 2)
  UNION ALL
  (SELECT user_id, event_name, count(*), sum((properties->>'price')::int) FROM shop GROUP BY 1, 2
   EXCEPT SELECT user_id, event_name, n, total FROM shop_per_user)) d;
SELECT (SELECT count(*) FROM stream.activations WHERE activation = 'big_buy') AS fired,
       (SELECT count(*) FROM shop WHERE event_name = 'buy' AND (properties->>'price')::int >= 45
          AND received_at > (SELECT created_at FROM stream.aggregates WHERE name = 'shop_per_user')) AS matching;
SELECT key, count(*) FROM stream.activations WHERE activation = 'big_buy' AND key IN ('sp', 'rolled_back') GROUP BY key;
SELECT state, applied_lsn >= '80000000/0' AS queue_position, lag_bytes IS NULL AS no_lag_bytes, lag_seconds FROM stream.aggregates;
