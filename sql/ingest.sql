-- Ingest paths: INSERT, COPY and stream.ingest (envelope and Segment
-- messages), with the same checks and dedup everywhere.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = notice;
SET TimeZone = 'UTC';

SELECT stream.create_stream('events');
SELECT stream.create_stream('nodedup', dedup_window => NULL);

-- envelope-named events
SELECT * FROM stream.ingest('events', $$[
  {"event_id": "11111111-1111-7111-8111-111111111111", "event_name": "page_view",
   "occurred_at": "2026-11-20T10:00:00Z", "user_id": "u1", "session_id": "s1",
   "properties": {"path": "/home"}, "context": {"page": {"referrer": "ads"}}},
  {"event_id": "22222222-2222-7222-8222-222222222222", "event_name": "add_to_cart",
   "occurred_at": "2026-11-20T10:01:00+01:00", "anonymous_id": "a2", "properties": {"sku": "X1", "price": 9.99}},
  {"event_name": "no_id_given", "user_id": 42}
]$$);
SELECT event_name,
       CASE WHEN occurred_at > now() - interval '1 hour' THEN 'at ingest' ELSE occurred_at::text END AS occurred_at,
       user_id, anonymous_id, session_id, properties, context
FROM events ORDER BY occurred_at, event_name;

-- retries are dropped and counted, whatever their occurred_at, on every path
SELECT * FROM stream.ingest('events', $$[
  {"event_id": "11111111-1111-7111-8111-111111111111", "event_name": "page_view", "occurred_at": "2026-11-21T00:00:00Z"},
  {"event_id": "33333333-3333-7333-8333-333333333333", "event_name": "purchase"},
  {"event_id": "33333333-3333-7333-8333-333333333333", "event_name": "purchase"}
]$$);
INSERT INTO events (event_id, event_name, occurred_at)
VALUES ('22222222-2222-7222-8222-222222222222', 'add_to_cart', '2001-01-01');
COPY events (event_id, event_name, occurred_at, user_id) FROM stdin;
22222222-2222-7222-8222-222222222222	add_to_cart	2026-11-20 09:00:00+00	u2
44444444-4444-7444-8444-444444444444	checkout	2026-11-20 09:05:00+00	u2
44444444-4444-7444-8444-444444444444	checkout	2026-11-20 09:05:00+00	u2
\.
SELECT event_id, count(*) FROM events GROUP BY 1 HAVING count(*) > 1;
SELECT count(*) AS stored FROM events;
SELECT events, duplicates, duplicate_rate FROM stream.stats WHERE stream = 'events';

-- a rolled-back event is not a duplicate later, and is not counted
BEGIN;
INSERT INTO events (event_id, event_name) VALUES ('55555555-5555-7555-8555-555555555555', 'rolled_back');
ROLLBACK;
INSERT INTO events (event_id, event_name) VALUES ('55555555-5555-7555-8555-555555555555', 'rolled_back') RETURNING event_name;
SELECT events, duplicates FROM stream.stats WHERE stream = 'events';

-- dedup off: retries are stored
INSERT INTO nodedup (event_id, event_name) VALUES
  ('66666666-6666-7666-8666-666666666666', 'x'), ('66666666-6666-7666-8666-666666666666', 'x');
SELECT count(*) FROM nodedup;

-- Segment / RudderStack messages (a /v1/batch body's "batch" array)
SELECT * FROM stream.ingest('events', $$[
  {"type": "track", "event": "Order Completed", "messageId": "node-next-1795421849912-6f1c2b7e-0c3d-4c1e-9e7a-1b2c3d4e5f60",
   "userId": "u7", "anonymousId": "a7", "timestamp": "2026-11-22T08:00:00.123Z",
   "properties": {"revenue": 99.5, "currency": "EUR"},
   "context": {"library": {"name": "analytics-node", "version": "6.0"}, "sessionId": 1700000000},
   "integrations": {"All": true}, "_metadata": {"bundled": ["x"]}, "sentAt": "2026-11-22T08:00:01Z"},
  {"type": "page", "name": "Pricing", "properties": {"path": "/pricing"},
   "messageId": "7a3f1e2d-0000-4000-8000-000000000abc", "anonymousId": "a8",
   "timestamp": "2026-11-22T08:00:02Z"},
  {"type": "screen", "name": "Home", "userId": "u9", "timestamp": "2026-11-22T08:00:03Z", "messageId": "ios-1"},
  {"type": "identify", "userId": "u9", "anonymousId": "a9", "traits": {"email": "u9@example.com"},
   "timestamp": "2026-11-22T08:00:04Z", "messageId": "ios-2"},
  {"type": "alias", "userId": "u9", "previousId": "a9", "timestamp": "2026-11-22T08:00:05Z", "messageId": "ios-3"},
  {"type": "group", "userId": "u9", "groupId": "acme", "traits": {"plan": "pro"},
   "timestamp": "2026-11-22T08:00:06Z", "messageId": "ios-4"},
  {"event": "Signed Up", "userId": "u10", "originalTimestamp": "2026-11-22T08:00:07Z", "messageId": "web-1"}
]$$);
SELECT event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context
FROM events WHERE occurred_at BETWEEN '2026-11-22' AND '2026-11-22 23:59' ORDER BY occurred_at;
-- the same messageId again (SDK retry) is a duplicate: its event_id is derived, not random
SELECT * FROM stream.ingest('events', $$[
  {"type": "track", "event": "Order Completed", "messageId": "node-next-1795421849912-6f1c2b7e-0c3d-4c1e-9e7a-1b2c3d4e5f60",
   "userId": "u7", "timestamp": "2026-11-22T09:00:00Z"},
  {"type": "screen", "name": "Home", "userId": "u9", "messageId": "ios-1"}
]$$);

-- bad input: each names the element and the field
SELECT * FROM stream.ingest('events', '{"event_name": "x"}');
SELECT * FROM stream.ingest('events', '"x"');
SELECT * FROM stream.ingest('events', '[{"event_name": "ok"}, 17]');
SELECT * FROM stream.ingest('events', '[{"event_name": "ok"}, {"event_name": "x", "colour": "red"}]');
SELECT * FROM stream.ingest('events', '[{"event_name": null}]');
SELECT * FROM stream.ingest('events', '[{"event_name": ""}]');
SELECT * FROM stream.ingest('events', '[{"user_id": "u1", "session_id": "s"}]');
SELECT * FROM stream.ingest('events', '[{"event_name": "x", "event_id": "not-a-uuid"}]');
SELECT * FROM stream.ingest('events', '[{"event_name": "x", "occurred_at": "yesterday-ish"}]');
SELECT * FROM stream.ingest('events', '[{"event_name": "x", "occurred_at": 1700000000}]');
SELECT * FROM stream.ingest('events', '[{"event_name": "x", "properties": [1]}]');
SELECT * FROM stream.ingest('events', '[{"event_name": "x", "context": "c"}]');
SELECT * FROM stream.ingest('events', '[{"event_name": "x", "user_id": {"id": 1}}]');
SELECT * FROM stream.ingest('events', '[{"event_name": "x", "received_at": "2026-01-01T00:00:00Z"}]');
SELECT * FROM stream.ingest('events', '[{"type": "track", "userId": "u1"}]');
SELECT * FROM stream.ingest('events', '[{"type": "launch", "userId": "u1"}]');
SELECT * FROM stream.ingest('events', '[{"type": "track", "event": "E", "messageId": 12}]');
SELECT * FROM stream.ingest('events', '[{"type": "track", "event": "E", "timestamp": "not a time"}]');
SELECT * FROM stream.ingest('pg_class', '[]');

-- occurred_at infinity / -infinity fits no partition: refused on every path
-- with 22008, the value, the event_id (and for stream.ingest the element)
INSERT INTO events (event_id, event_name, occurred_at)
VALUES ('66666666-6666-7666-8666-666666666666', 'too_late', 'infinity');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO events (event_id, event_name, occurred_at)
VALUES ('66666666-6666-7666-8666-666666666666', 'too_early', '-infinity');
\echo :LAST_ERROR_SQLSTATE
\set SHOW_CONTEXT errors
COPY events (event_id, event_name, occurred_at) FROM stdin;
66666666-6666-7666-8666-666666666661	fine	2026-11-20 09:00:00+00
66666666-6666-7666-8666-666666666662	too_late	infinity
\.
\echo :LAST_ERROR_SQLSTATE
\set SHOW_CONTEXT never
SELECT * FROM stream.ingest('events', '[{"event_name": "fine"}, {"event_name": "fine"},
  {"event_name": "too_late", "event_id": "66666666-6666-7666-8666-666666666663", "occurred_at": "infinity"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM stream.ingest('events', '[{"event_name": "fine"}, {"event_name": "fine"}, {"event_name": "fine"},
  {"type": "track", "event": "E", "messageId": "m-3", "timestamp": "-infinity"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM stream.ingest('events', '[{"type": "track", "event": "E", "messageId": "m-4", "originalTimestamp": "infinity"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS stored_infinite FROM events WHERE event_name IN ('fine', 'too_late', 'too_early', 'E');
-- a failed batch stores nothing
SELECT count(*) AS stored_after_errors FROM events;
-- an empty batch is fine
SELECT * FROM stream.ingest('events', '[]');

-- a large batch goes in chunks, all or nothing
SELECT * FROM stream.ingest('events',
  (SELECT jsonb_agg(jsonb_build_object('event_name', 'bulk', 'user_id', 'u' || g,
                                       'occurred_at', '2026-11-23T00:00:00Z'))
   FROM generate_series(1, 25000) g));
SELECT count(*) FROM events WHERE event_name = 'bulk';

-- a contract rejection inside stream.ingest names the element and its
-- event_id, and its CONTEXT shows no internal statement
SELECT stream.define_contract('events', 'purchase',
  '{"type": "object", "properties": {"price": {"type": "number"}}, "required": ["price"]}');
\set SHOW_CONTEXT errors
SELECT * FROM stream.ingest('events', '[{"event_name": "purchase", "properties": {"price": 1}},
  {"event_name": "page_view"},
  {"event_name": "purchase", "event_id": "77777777-7777-7777-8777-777777777777", "properties": {"price": "N/A"}}]');
\echo :LAST_ERROR_SQLSTATE
-- an element without an event_id: its generated one is not named
SELECT * FROM stream.ingest('events', '[{"event_name": "purchase"}]');
-- the same in a Segment message
SELECT * FROM stream.ingest('events', '[{"type": "track", "event": "purchase", "messageId": "order-1", "properties": {}}]');
\echo :LAST_ERROR_SQLSTATE
-- past the first chunk: the index counts from the start of the batch
SELECT * FROM stream.ingest('events',
  (SELECT jsonb_agg(CASE WHEN g = 10003
                         THEN jsonb_build_object('event_name', 'purchase', 'event_id', '77777777-7777-7777-8777-777777777778')
                         ELSE jsonb_build_object('event_name', 'bulk2') END ORDER BY g)
   FROM generate_series(0, 10005) g));
\echo :LAST_ERROR_SQLSTATE
-- INSERT's and COPY's own errors are unchanged
INSERT INTO events (event_name, properties) VALUES ('purchase', '{}');
\set SHOW_CONTEXT never
SELECT count(*) AS stored_after_rejections FROM events WHERE event_name IN ('purchase', 'bulk2');

SELECT stream.drop_stream('events');
SELECT stream.drop_stream('nodedup');
