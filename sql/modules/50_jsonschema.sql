-- stream_events install script, piece 50: the JSON Schema (draft 2020-12)
-- validator and the schema registry.  See docs/jsonschema.md.

CREATE TABLE stream.schemas (
    uri           text PRIMARY KEY,
    schema        jsonb NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE stream.schemas IS
    'Registry of JSON Schemas by absolute URI, resolved by $ref and $schema';
COMMENT ON COLUMN stream.schemas.uri IS 'Absolute URI without fragment';
COMMENT ON COLUMN stream.schemas.schema IS 'The schema document (object or boolean)';
COMMENT ON COLUMN stream.schemas.registered_at IS 'When the schema was last registered';
SELECT pg_catalog.pg_extension_config_dump('stream.schemas', '');
GRANT SELECT ON stream.schemas TO PUBLIC;

CREATE FUNCTION stream.schemas_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'stream_schemas_changed'
    LANGUAGE C;
COMMENT ON FUNCTION stream.schemas_changed() IS
    'Trigger: tells this session''s compiled-schema cache that stream.schemas changed';

CREATE TRIGGER schemas_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON stream.schemas
    FOR EACH STATEMENT EXECUTE FUNCTION stream.schemas_changed();
COMMENT ON TRIGGER schemas_changed ON stream.schemas IS
    'Invalidates compiled schemas that loaded documents from the registry';

CREATE FUNCTION stream.json_schema_validate(schema jsonb, instance jsonb)
    RETURNS boolean
    AS 'MODULE_PATHNAME', 'stream_json_schema_validate'
    LANGUAGE C STABLE STRICT PARALLEL SAFE SECURITY INVOKER;
COMMENT ON FUNCTION stream.json_schema_validate(jsonb, jsonb) IS
    'True if instance is valid against the JSON Schema (draft 2020-12) schema';

CREATE FUNCTION stream.json_schema_errors(schema jsonb, instance jsonb)
    RETURNS TABLE (instance_path text, schema_path text, message text)
    AS 'MODULE_PATHNAME', 'stream_json_schema_errors'
    LANGUAGE C STABLE STRICT PARALLEL SAFE SECURITY INVOKER ROWS 5;
COMMENT ON FUNCTION stream.json_schema_errors(jsonb, jsonb) IS
    'Every validation error of instance against schema: JSON pointer into the instance, keyword location, message';

CREATE FUNCTION stream.json_schema_check(schema jsonb)
    RETURNS void
    AS 'MODULE_PATHNAME', 'stream_json_schema_check'
    LANGUAGE C STABLE STRICT PARALLEL SAFE SECURITY INVOKER;
COMMENT ON FUNCTION stream.json_schema_check(jsonb) IS
    'Raises an error if schema is not a valid, supported JSON Schema (meta-schema check and compilation)';

CREATE FUNCTION stream.register_schema(uri text, schema jsonb)
    RETURNS void
    AS 'MODULE_PATHNAME', 'stream_register_schema'
    LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE SECURITY INVOKER;
COMMENT ON FUNCTION stream.register_schema(text, jsonb) IS
    'Stores (or replaces) schema under an absolute URI in stream.schemas, for $ref and $schema';
