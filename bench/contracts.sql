-- bench/ingest.sh with BENCH_CONTRACTS=1: a tracking plan of three data
-- contracts on the stream side (:stream), the shape of a real one: a
-- shared Product definition ($ref), patterns, enums and numeric bounds.
-- Every generated event that has a contract satisfies it (page_view and
-- purchase are unplanned and allowed), so the cost measured is validation,
-- not rejection.
\set ON_ERROR_STOP 1
SELECT stream.register_schema('https://bench.example.com/product.json', $${
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["product_id", "sku", "price", "currency"],
  "properties": {
    "product_id": {"type": "string", "pattern": "^prod_[0-9]+$"},
    "sku":        {"type": "string", "pattern": "^SKU-[0-9]{6}$", "maxLength": 32},
    "category":   {"enum": ["shoes", "shirts", "bags", "hats", "watches"]},
    "price":      {"type": "number", "exclusiveMinimum": 0, "maximum": 100000},
    "currency":   {"enum": ["EUR", "USD", "GBP"]},
    "quantity":   {"type": "integer", "minimum": 1, "maximum": 99}
  }
}$$);
SELECT stream.define_contract(:'stream', 'product_view',
  '{"$ref": "https://bench.example.com/product.json"}');
SELECT stream.define_contract(:'stream', 'add_to_cart',
  '{"allOf": [{"$ref": "https://bench.example.com/product.json"}], "required": ["quantity"]}');
SELECT stream.define_contract(:'stream', 'checkout', $${
  "type": "object", "required": ["product_id", "price", "quantity"],
  "properties": {"product_id": {"type": "string"}, "price": {"type": "number", "minimum": 0},
                 "quantity": {"type": "integer", "minimum": 1}, "currency": {"enum": ["EUR", "USD", "GBP"]}}}$$);
SELECT stream.set_policy(:'stream', on_violation => 'reject', on_unplanned => 'allow');
