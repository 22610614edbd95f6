-- demo step 80: activations — a per-event condition fires a NOTIFY and a
-- durable outbox row, from the worker, for committed events only.
\echo
\echo '== 80  activations: big purchases to the ops channel'

\echo '   SELECT stream.on_event(''big_purchase'', ''clicks'', $$event_name = ''purchase'' AND (properties->>''revenue'')::numeric >= 300$$, channel => ''ops'');'
SELECT stream.on_event('big_purchase', 'clicks',
    $$event_name = 'purchase' AND (properties->>'revenue')::numeric >= 300$$,
    channel => 'ops') \g /dev/null
-- the consumer starts from the activation's creation: make sure it is live
SELECT stream.flush(NULL, '60 s') \g /dev/null

\echo '-- three purchases arrive; one is rolled back, one is small, one is big:'
BEGIN;
INSERT INTO clicks (event_name, user_id, properties)
VALUES ('purchase', 'user_00007', '{"order_id": "ord_900001", "revenue": 999.00, "currency": "EUR"}');
ROLLBACK;
INSERT INTO clicks (event_name, user_id, properties) VALUES
  ('purchase', 'user_00008', '{"order_id": "ord_900002", "revenue": 25.00, "currency": "EUR"}'),
  ('purchase', 'user_00009', '{"order_id": "ord_900003", "revenue": 450.00, "currency": "EUR"}');
SELECT stream.flush(NULL, '60 s') \g /dev/null

\echo '-- the outbox (LISTEN ops would have received the same row as JSON):'
SELECT id, activation, key, payload ->> 'event_name' AS event_name,
       payload -> 'properties' ->> 'revenue' AS revenue
FROM stream.activations ORDER BY id;

\echo '-- a durable consumer reads it, and acknowledges it:'
SELECT id, key FROM stream.consume('ops-mailer', 'ops', 10);
SELECT stream.ack('ops-mailer', max(id)) FROM stream.activations \g /dev/null

\echo '-- SELECT * FROM stream.activation_stats:'
SELECT * FROM stream.activation_stats;
