-- Data contracts: versions, compatibility, policy (reject / quarantine /
-- warn), envelope rules, quarantine replay, compliance counters.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = notice;

SELECT stream.create_stream('shop');

-- a shared definition, registered once and $ref'd by contracts
SELECT stream.register_schema('https://example.com/schemas/product.json', '{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object", "required": ["sku", "price"],
  "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]+$"},
                 "price": {"type": "number", "minimum": 0}}}');

SELECT stream.define_contract('shop', 'add_to_cart', '{
  "type": "object", "required": ["product", "quantity"],
  "properties": {
    "product": {"$ref": "https://example.com/schemas/product.json"},
    "quantity": {"type": "integer", "minimum": 1, "maximum": 99},
    "currency": {"enum": ["EUR", "USD"]}
  }}') AS version;
-- the same schema again: no new version
SELECT stream.define_contract('shop', 'add_to_cart', '{
  "type": "object", "required": ["product", "quantity"],
  "properties": {
    "product": {"$ref": "https://example.com/schemas/product.json"},
    "quantity": {"type": "integer", "minimum": 1, "maximum": 99},
    "currency": {"enum": ["EUR", "USD"]}
  }}') AS same_version;

-- reject (the default policy)
INSERT INTO shop (event_name, user_id, properties)
VALUES ('add_to_cart', 'u1', '{"product": {"sku": "AB-1", "price": 5}, "quantity": 2}');
INSERT INTO shop (event_name, user_id, properties)
VALUES ('add_to_cart', 'u1', '{"product": {"sku": "nope", "price": -1}, "quantity": 0}');
COPY shop (event_name, user_id, properties) FROM stdin;
add_to_cart	u2	{"product": {"sku": "AB-2", "price": 1}, "quantity": 1}
add_to_cart	u2	{"quantity": 1}
\.
SELECT * FROM stream.ingest('shop', '[{"event_name": "add_to_cart", "properties": {"quantity": "two"}}]');
SELECT count(*) AS stored FROM shop;

-- compatibility
SELECT * FROM stream.contract_diff('shop', 'add_to_cart', '{
  "type": "object", "required": ["product", "quantity", "coupon"],
  "properties": {
    "product": {"$ref": "https://example.com/schemas/product.json"},
    "quantity": {"type": "integer", "minimum": 1, "maximum": 50},
    "currency": {"enum": ["EUR", "USD", "GBP"]},
    "coupon": {"type": "string"}
  }}');
SELECT stream.define_contract('shop', 'add_to_cart', '{
  "type": "object", "required": ["product", "quantity", "coupon"],
  "properties": {
    "product": {"$ref": "https://example.com/schemas/product.json"},
    "quantity": {"type": "integer", "minimum": 1, "maximum": 99},
    "currency": {"enum": ["EUR", "USD"]},
    "coupon": {"type": "string"}
  }}');
SELECT stream.define_contract('shop', 'add_to_cart', '{
  "type": "object", "required": ["product"],
  "properties": {
    "product": {"$ref": "https://example.com/schemas/product.json"},
    "quantity": {"type": "integer", "minimum": 1, "maximum": 99},
    "currency": {"enum": ["EUR", "USD", "GBP"]}
  }}') AS backward_ok;
SELECT stream.define_contract('shop', 'add_to_cart', '{
  "type": "object", "required": ["product", "quantity"],
  "properties": {"product": true, "quantity": {"type": "integer"}}}', 'forward');
SELECT stream.define_contract('shop', 'add_to_cart', '{"type": "object"}', 'full_transitive');
SELECT stream.define_contract('shop', 'add_to_cart', '{"type": "array"}', 'none') AS anything_goes;
SELECT stream.define_contract('shop', 'add_to_cart', '{}', 'sideways');
SELECT stream.define_contract('shop', 'add_to_cart', '{"type": "object", "frobnicate": {"$ref": "#/nowhere"}, "properties": {"a": {"$ref": "#/nowhere"}}}');
SELECT stream.define_contract('pg_class', 'x', '{}');
SELECT event_name, version, compatibility, schema_uri FROM stream.contracts ORDER BY version;
SELECT path, change, breaks_backward, breaks_forward FROM stream.schema_diff(
  '{"type": "object", "additionalProperties": false, "properties": {"a": {"type": "integer"}, "b": {"type": "string", "maxLength": 10}}}',
  '{"type": "object", "additionalProperties": false, "properties": {"a": {"type": "number"}, "b": {"type": "string", "maxLength": 5}, "c": {"type": "boolean"}}}');

-- quarantine, warn, unplanned, envelope rules
SELECT stream.define_contract('shop', 'purchase', '{
  "type": "object", "required": ["order_id", "revenue"],
  "properties": {"order_id": {"type": "string"}, "revenue": {"type": "number", "minimum": 0}}}');
SELECT stream.set_policy('shop', on_violation => 'quarantine', on_unplanned => 'quarantine',
                         event_name_pattern => '^[a-z_]+$', require_identity => true);
SELECT * FROM stream.ingest('shop', '[
  {"event_id": "aaaaaaaa-0000-7000-8000-000000000001", "event_name": "purchase", "user_id": "u1",
   "properties": {"order_id": "o1", "revenue": 10}},
  {"event_id": "aaaaaaaa-0000-7000-8000-000000000002", "event_name": "purchase", "user_id": "u1",
   "properties": {"order_id": "o2", "revenue": -10}},
  {"event_id": "aaaaaaaa-0000-7000-8000-000000000003", "event_name": "purchase",
   "properties": {"order_id": "o3", "revenue": 1}},
  {"event_id": "aaaaaaaa-0000-7000-8000-000000000004", "event_name": "Purchase!", "user_id": "u1"},
  {"event_id": "aaaaaaaa-0000-7000-8000-000000000005", "event_name": "refund", "user_id": "u1"}
]');
SELECT event_id, event_name, contract_version, errors FROM shop_quarantine ORDER BY event_id;
SELECT * FROM stream.check_event('shop', 'purchase', '{"order_id": 7}', 'u1');
SELECT * FROM stream.check_event('shop', 'purchase', '{"order_id": "o9", "revenue": 0}', 'u1');

-- replay: fix the contract so o2's negative revenue (a refund) is allowed
SELECT stream.define_contract('shop', 'purchase', '{
  "type": "object", "required": ["order_id", "revenue"],
  "properties": {"order_id": {"type": "string"}, "revenue": {"type": "number"}}}') AS relaxed;
SELECT stream.replay_quarantine('shop') AS moved;
SELECT event_id, event_name FROM shop_quarantine ORDER BY event_id;
SELECT event_id FROM shop WHERE event_name = 'purchase' ORDER BY event_id;
-- a replayed event that is already in the stream is dropped as a duplicate
INSERT INTO shop_quarantine (event_id, event_name, occurred_at, received_at, user_id, properties, context, errors)
SELECT event_id, event_name, occurred_at, received_at, user_id, properties, context, '[]'
FROM shop WHERE event_id = 'aaaaaaaa-0000-7000-8000-000000000001';
SELECT stream.replay_quarantine('shop') AS moved_again;
SELECT count(*) AS copies FROM shop WHERE event_id = 'aaaaaaaa-0000-7000-8000-000000000001';

SELECT stream.set_policy('shop', on_violation => 'warn', on_unplanned => 'allow', event_name_pattern => '');
INSERT INTO shop (event_name, user_id, properties) VALUES ('purchase', 'u3', '{"revenue": "lots"}');
SELECT count(*) AS stored_with_warning FROM shop WHERE user_id = 'u3';

SELECT stream, checked, passed, failed, quarantined, rejected, compliance_rate
FROM stream.stats WHERE stream = 'shop';
SELECT event_name, checked, passed, failed, quarantined, rejected, unplanned, compliance_rate
FROM stream.compliance WHERE stream = 'shop' ORDER BY event_name;

-- the GUC horizon, for streams without a max_future of their own
SET stream_events.max_future = 'soon';
SET stream_events.max_future = '-1 day';
SET stream_events.max_future = '1 hour';
SELECT stream.create_stream('horizon');
INSERT INTO horizon (event_name, user_id, occurred_at) VALUES ('late_night', 'u1', now() + interval '2 hours');
INSERT INTO horizon (event_name, user_id, occurred_at) VALUES ('soon', 'u1', now() + interval '30 minutes');
RESET stream_events.max_future;
SELECT stream.drop_stream('horizon');

-- policy errors
SELECT stream.set_policy('shop', on_violation => 'ignore');
SELECT stream.set_policy('shop', on_unplanned => 'drop');
SELECT stream.set_policy('shop', event_name_pattern => '[');
SELECT stream.set_policy('shop', max_future => '-1 day');
SELECT stream.set_policy('pg_class');

SELECT stream.drop_stream('shop');
SELECT count(*) AS contracts_left FROM stream.contracts;
SELECT count(*) AS contract_schemas_left FROM stream.schemas WHERE uri LIKE 'urn:stream-events:contract:%';
DELETE FROM stream.schemas WHERE uri = 'https://example.com/schemas/product.json';
