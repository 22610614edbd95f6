-- JSON Schema (draft 2020-12) validator: SQL functions, errors and limits.
-- The extension is created by pg_regress (--load-extension).

-- validate
SELECT stream.json_schema_validate('{"type": "integer", "minimum": 0}', '5');
SELECT stream.json_schema_validate('{"type": "integer", "minimum": 0}', '-5');
SELECT stream.json_schema_validate('true', '{"any": "thing"}');
SELECT stream.json_schema_validate('false', 'null');
SELECT stream.json_schema_validate('{}', '[1, "two", null]');

-- every error of an event against a realistic contract
SELECT * FROM stream.json_schema_errors($s$
{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["sku", "price", "currency", "cart"],
  "properties": {
    "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
    "price": {"type": "number", "minimum": 0, "multipleOf": 0.01},
    "currency": {"enum": ["EUR", "USD", "GBP"]},
    "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
    "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true, "maxItems": 3},
    "cart": {
      "type": "object",
      "properties": {"id": {"type": "string", "minLength": 8}},
      "unevaluatedProperties": false
    }
  },
  "additionalProperties": false
}
$s$, $i$
{
  "sku": "abc-1",
  "price": -0.001,
  "currency": "JPY",
  "quantity": 1.5,
  "tags": ["a", "b", "a", "c"],
  "cart": {"id": "short", "extra": true},
  "a/b~c": 1
}
$i$);

-- numbers are compared exactly, as numeric, also beyond the range of double
SELECT stream.json_schema_validate('{"multipleOf": 0.01}', '19.99');
SELECT stream.json_schema_validate('{"multipleOf": 0.01}', '19.999');
SELECT stream.json_schema_validate('{"multipleOf": 0.0001}', '0.0075');
SELECT stream.json_schema_validate('{"maximum": 1e308}', '1e400');
SELECT stream.json_schema_validate('{"minimum": 1e308, "type": "integer"}', '1e400');
SELECT stream.json_schema_validate('{"const": 1e400}', '1.000e400');
SELECT stream.json_schema_validate('{"exclusiveMinimum": 1e-400}', '1e-401');
SELECT stream.json_schema_validate('{"type": "integer"}', '1.0');
SELECT stream.json_schema_validate('{"type": "integer"}', '1.000000000000000000001');
SELECT * FROM stream.json_schema_errors('{"exclusiveMaximum": 1e400}', '1e400');
SELECT * FROM stream.json_schema_errors('{"minimum": 0.000000000000000000000000000000000000000000001}', '0');

-- lengths count code points, not bytes
SELECT stream.json_schema_validate('{"maxLength": 2}', '"éé"');
SELECT stream.json_schema_validate('{"minLength": 2}', '"😀"');

-- regular expressions: ECMA-262 semantics through PCRE2
SELECT p AS pattern, s AS subject,
       stream.json_schema_validate(jsonb_build_object('pattern', p), to_jsonb(s)) AS matches
FROM (VALUES
    ('^\d+$', '123'),
    ('^\d+$', '١٢٣'),
    ('^\w+$', 'é'),
    ('^\s$', E'\u00a0'),
    ('^a.c$', E'a\nc'),
    ('^abc$', E'abc\n'),
    ('^\p{Letter}+$', 'Ωmega'),
    ('^\u00e9$', 'é'),
    ('^[^]$', E'\n'),
    ('colou?r', 'my colour')
) AS t(p, s);
SELECT stream.json_schema_validate('{"patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": false}',
                                   '{"x-a": 1, "x-b": 2}');
-- catastrophic backtracking stops at the match limit
SELECT stream.json_schema_validate('{"pattern": "^(a+)+$"}', to_jsonb(repeat('a', 40) || 'b'));

-- format is an annotation by default, an assertion with the GUC
SELECT stream.json_schema_validate('{"format": "date"}', '"2024-02-30"');
SET stream_events.format_assertion = on;
SELECT f AS format, s AS value,
       stream.json_schema_validate(jsonb_build_object('format', f), to_jsonb(s)) AS valid
FROM (VALUES
    ('date-time', '2024-02-29T23:59:60Z'),
    ('date-time', '2024-02-29T12:00:00+01:00'),
    ('date-time', '2024-02-29 12:00:00Z'),
    ('date', '2024-02-29'),
    ('date', '2023-02-29'),
    ('time', '08:30:06.283185Z'),
    ('time', '08:30:06'),
    ('email', 'joe.bloggs@example.com'),
    ('email', 'joe..bloggs@example.com'),
    ('hostname', 'www.example.com'),
    ('hostname', '-a-host-name-that-starts-with--'),
    ('hostname', 'xn--bcher-kva.example'),
    ('ipv4', '192.168.0.1'),
    ('ipv4', '192.168.00.1'),
    ('ipv6', '::ffff:192.168.0.1'),
    ('ipv6', '12345::'),
    ('uri', 'https://example.com/path?q=1#frag'),
    ('uri', '//example.com/no-scheme'),
    ('uri-reference', '../relative/path'),
    ('uri-reference', '\\\\WINDOWS\\fileshare'),
    ('uuid', '2eb8aa08-aa98-11ea-b4aa-73b441d16380'),
    ('uuid', '2eb8aa08aa9811eab4aa73b441d16380'),
    ('duration', 'P4DT12H30M5S'),
    ('duration', 'P1Y2D'),
    ('regex', '^[a-z]+$'),
    ('regex', '^(abc]'),
    ('json-pointer', '/foo/bar~0baz'),
    ('json-pointer', '/foo/bar~2')
) AS t(f, s);
SELECT * FROM stream.json_schema_errors('{"properties": {"at": {"format": "date-time"}}}', '{"at": "yesterday"}');
-- a format that is not implemented cannot be asserted
SELECT stream.json_schema_validate('{"format": "idn-email"}', '"x@example.com"');
RESET stream_events.format_assertion;
SELECT stream.json_schema_validate('{"format": "idn-email"}', '"x@example.com"');

-- bad schemas: every error names the schema location
SELECT stream.json_schema_validate('5', 'null');
SELECT stream.json_schema_validate('[{"type": "string"}]', 'null');
SELECT stream.json_schema_validate('{"properties": {"a": "string"}}', 'null');
SELECT stream.json_schema_validate('{"$schema": "https://example.com/my-dialect"}', 'null');
SELECT stream.json_schema_validate('{"$schema": "http://json-schema.org/draft-07/schema#"}', 'null');
SELECT stream.json_schema_validate('{"type": "text"}', 'null');
SELECT stream.json_schema_validate('{"properties": {"price": {"pattern": "^[0-9+$"}}}', 'null');
SELECT stream.json_schema_validate('{"patternProperties": {"(": {}}}', 'null');
SELECT stream.json_schema_validate('{"properties": {"a": {"$ref": "#/$defs/missing"}}}', 'null');
SELECT stream.json_schema_validate('{"$ref": "https://example.com/not-registered.json"}', 'null');
SELECT stream.json_schema_validate('{"$ref": "#"}', 'null');
SELECT stream.json_schema_validate('{"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/b"}]}, "b": {"$ref": "#/$defs/a"}}}', 'null');
SELECT stream.json_schema_validate('{"minLength": -1}', 'null');
SELECT stream.json_schema_validate('{"multipleOf": 0}', 'null');
SELECT stream.json_schema_validate('{"required": ["a", "a"]}', 'null');
SELECT stream.json_schema_validate('{"items": [{"type": "string"}]}', 'null');
SELECT stream.json_schema_validate('{"dependencies": {"a": ["b"]}}', 'null');
SELECT stream.json_schema_validate('{"$defs": {"x": {"$id": "#frag"}}}', 'null');
SELECT stream.json_schema_validate('{"$defs": {"x": {"$anchor": "1bad"}}}', 'null');
SELECT stream.json_schema_validate('{"properties": {"a": {"$schema": "https://json-schema.org/draft/2020-12/schema"}}}', 'null');
-- a schema nested 10,000 levels deep
SELECT stream.json_schema_validate((repeat('{"items": ', 10000) || '{}' || repeat('}', 10000))::jsonb, '[]');
-- 1,000 levels are fine
SELECT stream.json_schema_validate((repeat('{"items": ', 1000) || '{"type": "string"}' || repeat('}', 1000))::jsonb,
                                   (repeat('[', 1000) || '"x"' || repeat(']', 1000))::jsonb);
SELECT * FROM stream.json_schema_errors((repeat('{"items": ', 3) || '{"type": "string"}' || repeat('}', 3))::jsonb,
                                        '[[["x", 1]]]');
-- unknown keywords are annotations and are ignored
SELECT stream.json_schema_validate('{"x-ui-widget": "slider", "description": "d", "type": "string"}', '"s"');

-- json_schema_check: the meta-schema, then compilation
SELECT stream.json_schema_check('{"type": "object", "properties": {"a": {"type": "string"}}}');
SELECT stream.json_schema_check('{"title": 5}');
SELECT stream.json_schema_check('{"properties": {"a": {"deprecated": "yes"}}}');
SELECT stream.json_schema_check('{"pattern": "["}');
SELECT stream.json_schema_check('{"minimum": "0"}');

-- huge enum
SELECT stream.json_schema_validate(jsonb_build_object('enum', (SELECT jsonb_agg('value-' || i) FROM generate_series(1, 100000) i)),
                                   '"value-99999"');
SELECT stream.json_schema_validate(jsonb_build_object('enum', (SELECT jsonb_agg('value-' || i) FROM generate_series(1, 100000) i)),
                                   '"value-100001"');
SELECT stream.json_schema_validate('{"enum": [1, "1", [1], {"a": 1}, null]}', '1.0');
SELECT stream.json_schema_validate('{"enum": [1, "1", [1], {"a": 1}, null]}', '{"a": 1.0}');
SELECT stream.json_schema_validate('{"enum": [1, "1", [1], {"a": 1}, null]}', 'false');

-- uniqueItems on 100,000 elements (sorted by hash, not quadratic)
SELECT stream.json_schema_validate('{"uniqueItems": true}',
                                   (SELECT jsonb_agg(i) FROM generate_series(1, 100000) i));
SELECT * FROM stream.json_schema_errors('{"uniqueItems": true}',
                                        (SELECT jsonb_agg(CASE WHEN i = 100000 THEN 7.0 ELSE i END) FROM generate_series(1, 100000) i));
SELECT stream.json_schema_validate('{"uniqueItems": true}',
                                   (SELECT jsonb_agg(jsonb_build_object('id', i, 'tags', jsonb_build_array(i, 'x'))) FROM generate_series(1, 100000) i));

-- 10 MB strings
SELECT stream.json_schema_validate('{"type": "string", "minLength": 10000000, "pattern": "^a+$"}',
                                   to_jsonb(repeat('a', 10000000)));
SELECT * FROM stream.json_schema_errors('{"maxLength": 9999999}', to_jsonb(repeat('a', 10000000)));

-- deep instances: jsonb itself refuses 100,000 levels
DO $$
BEGIN
    PERFORM (repeat('[', 100000) || repeat(']', 100000))::jsonb;
EXCEPTION WHEN statement_too_complex THEN
    RAISE NOTICE 'jsonb input: % (SQLSTATE %)', SQLERRM, SQLSTATE;
END
$$;
-- a recursive schema follows 2,000 levels, and stops cleanly at 10,000
SELECT stream.json_schema_validate('{"$defs": {"a": {"type": "array", "items": {"$ref": "#/$defs/a"}}}, "$ref": "#/$defs/a"}',
                                   (repeat('[', 2000) || repeat(']', 2000))::jsonb);
DO $$
BEGIN
    PERFORM stream.json_schema_validate('{"items": {"$ref": "#"}}', (repeat('[', 10000) || repeat(']', 10000))::jsonb);
EXCEPTION WHEN statement_too_complex THEN
    RAISE NOTICE 'validator: % (SQLSTATE %)', SQLERRM, SQLSTATE;
END
$$;

-- the registry: $ref by URI
SELECT stream.register_schema('https://example.com/schemas/money.json',
    '{"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number", "minimum": 0}}}');
SELECT uri, schema ->> 'type' AS type FROM stream.schemas WHERE uri LIKE 'https://example.com/%' ORDER BY uri;
SELECT stream.json_schema_validate('{"properties": {"total": {"$ref": "https://example.com/schemas/money.json"}}}',
                                   '{"total": {"amount": 5}}');
SELECT * FROM stream.json_schema_errors('{"properties": {"total": {"$ref": "https://example.com/schemas/money.json"}}}',
                                        '{"total": {"amount": -5}}');
-- a relative $ref against the schema's $id, and a pointer into the registered document
SELECT stream.json_schema_validate('{"$id": "https://example.com/schemas/order.json", "properties": {"n": {"$ref": "money.json#/properties/amount"}}}',
                                   '{"n": -1}');
-- re-registering changes what cached schemas see
SELECT stream.register_schema('https://example.com/schemas/money.json',
    '{"type": "object", "required": ["amount", "currency"]}');
SELECT stream.json_schema_validate('{"properties": {"total": {"$ref": "https://example.com/schemas/money.json"}}}',
                                   '{"total": {"amount": 5}}');
DELETE FROM stream.schemas WHERE uri = 'https://example.com/schemas/money.json';
SELECT stream.json_schema_validate('{"properties": {"total": {"$ref": "https://example.com/schemas/money.json"}}}',
                                   '{"total": {"amount": 5}}');
-- a registered meta-schema that requires format-assertion makes format assert
SELECT stream.register_schema('https://example.com/meta/strict-format',
    '{"$schema": "https://json-schema.org/draft/2020-12/schema",
      "$vocabulary": {"https://json-schema.org/draft/2020-12/vocab/core": true,
                      "https://json-schema.org/draft/2020-12/vocab/applicator": true,
                      "https://json-schema.org/draft/2020-12/vocab/format-assertion": true},
      "allOf": [{"$ref": "https://json-schema.org/draft/2020-12/meta/core"},
                {"$ref": "https://json-schema.org/draft/2020-12/meta/applicator"},
                {"$ref": "https://json-schema.org/draft/2020-12/meta/format-assertion"}]}');
SELECT stream.json_schema_validate('{"$schema": "https://example.com/meta/strict-format", "format": "ipv4"}', '"300.1.1.1"');
SELECT stream.register_schema('https://example.com/meta/custom-vocab',
    '{"$vocabulary": {"https://json-schema.org/draft/2020-12/vocab/core": true,
                      "https://example.com/vocab/units": true}}');
SELECT stream.json_schema_validate('{"$schema": "https://example.com/meta/custom-vocab"}', '1');
-- register_schema errors
SELECT stream.register_schema('schemas/relative.json', '{}');
SELECT stream.register_schema('https://example.com/a.json#/frag', '{}');
SELECT stream.register_schema('https://json-schema.org/draft/2020-12/schema', '{}');
SELECT stream.register_schema('https://example.com/a.json', '"string"');
DELETE FROM stream.schemas WHERE uri LIKE 'https://example.com/%';

-- PL/pgSQL reuses expression state across calls: a schema passed as a
-- variable is looked up per call, a constant one follows the setting
CREATE FUNCTION pg_temp.check_with(s jsonb, d jsonb) RETURNS boolean
    LANGUAGE plpgsql AS $$ BEGIN RETURN stream.json_schema_validate(s, d); END $$;
CREATE FUNCTION pg_temp.check_date(d jsonb) RETURNS boolean
    LANGUAGE plpgsql AS $$ BEGIN RETURN stream.json_schema_validate('{"format": "date"}', d); END $$;
BEGIN;
SELECT pg_temp.check_with('{"type": "string"}', '1') AS string,
       pg_temp.check_with('{"type": "integer"}', '1') AS integer,
       pg_temp.check_with('{"type": "string"}', '1') AS string_again;
SELECT pg_temp.check_date('"2020-02-30"') AS annotation;
SET LOCAL stream_events.format_assertion = on;
SELECT pg_temp.check_date('"2020-02-30"') AS assertion;
COMMIT;

-- the settings
SHOW stream_events.format_assertion;
SHOW stream_events.max_schema_cache;
