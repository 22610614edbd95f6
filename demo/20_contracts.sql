-- demo step 20: a tracking plan for clicks — data contracts (JSON Schema
-- 2020-12) for the five funnel events, with a shared Product definition
-- registered once and $ref'd.  Violations go to clicks_quarantine.
\echo
\echo '== 20  data contracts (a tracking plan for clicks)'

\echo '   SELECT stream.register_schema(''https://shop.example.com/schemas/product.json'', ...);'
SELECT stream.register_schema('https://shop.example.com/schemas/product.json', $${
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "Product",
  "type": "object",
  "required": ["product_id", "sku", "price"],
  "properties": {
    "product_id": {"type": "string", "pattern": "^prod_[0-9]{4}$"},
    "sku":        {"type": "string", "pattern": "^SKU-[0-9]{5}$"},
    "name":       {"type": "string", "maxLength": 200},
    "category":   {"type": "string"},
    "price":      {"type": "number", "exclusiveMinimum": 0},
    "currency":   {"enum": ["EUR", "USD", "GBP"]}
  }
}$$) \g /dev/null

\echo '   SELECT stream.define_contract(''clicks'', ''page_view'' | ''product_view'' | ''add_to_cart'' | ''checkout'' | ''purchase'', ...);'
SELECT stream.define_contract('clicks', 'page_view', $${
  "type": "object", "required": ["path"],
  "properties": {"path": {"type": "string", "pattern": "^/"}, "url": {"type": "string", "format": "uri"},
                 "title": {"type": "string"}, "referrer": {"type": "string"}}}$$) \g /dev/null
SELECT stream.define_contract('clicks', 'product_view', $${
  "$ref": "https://shop.example.com/schemas/product.json"}$$) \g /dev/null
SELECT stream.define_contract('clicks', 'add_to_cart', $${
  "allOf": [{"$ref": "https://shop.example.com/schemas/product.json"}],
  "required": ["quantity", "cart_id"],
  "properties": {"quantity": {"type": "integer", "minimum": 1, "maximum": 99},
                 "cart_id": {"type": "string"}}}$$) \g /dev/null
SELECT stream.define_contract('clicks', 'checkout', $${
  "type": "object", "required": ["cart_id", "value", "currency"],
  "properties": {"cart_id": {"type": "string"}, "value": {"type": "number", "minimum": 0},
                 "currency": {"enum": ["EUR", "USD", "GBP"]}, "num_items": {"type": "integer", "minimum": 1}}}$$) \g /dev/null
SELECT stream.define_contract('clicks', 'purchase', $${
  "type": "object", "required": ["order_id", "revenue", "currency"],
  "properties": {"order_id": {"type": "string", "pattern": "^ord_[0-9]+$"},
                 "revenue": {"type": "number", "minimum": 0},
                 "currency": {"enum": ["EUR", "USD", "GBP"]},
                 "payment": {"enum": ["card", "paypal", "klarna"]}}}$$) \g /dev/null

\echo '   SELECT stream.set_policy(''clicks'', on_violation => ''quarantine'', on_unplanned => ''allow'');'
SELECT stream.set_policy('clicks', on_violation => 'quarantine', on_unplanned => 'allow',
                         event_name_pattern => '^[A-Za-z][A-Za-z0-9_ ]*$') \g /dev/null

SELECT event_name, version, compatibility FROM stream.contracts ORDER BY event_name;

\echo '-- a breaking change is refused (backward compatibility is the default):'
\set ON_ERROR_STOP 0
SELECT stream.define_contract('clicks', 'purchase', $${
  "type": "object", "required": ["order_id", "revenue", "currency", "coupon"],
  "properties": {"order_id": {"type": "string"}, "revenue": {"type": "number", "minimum": 0},
                 "currency": {"enum": ["EUR", "USD", "GBP"]}, "coupon": {"type": "string"}}}$$);
\set ON_ERROR_STOP 1

\echo '-- and some producers send malformed events (they land in clicks_quarantine):'
INSERT INTO clicks (event_name, anonymous_id, properties) VALUES
  ('add_to_cart', 'anon-bad-1', '{"product_id": "prod_0007", "sku": "shoe-1", "price": 0, "quantity": 0, "cart_id": "c1"}'),
  ('purchase', 'anon-bad-2', '{"order_id": "ord_1", "revenue": -5, "currency": "BTC"}'),
  ('product_view', 'anon-bad-3', '{"product_id": "seven"}'),
  ('Purchase!!', 'anon-bad-4', '{}');
