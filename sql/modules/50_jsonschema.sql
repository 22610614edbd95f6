-- stream_events install script, piece 50: the JSON Schema (draft 2020-12)
-- validator and the schema registry.  See docs/jsonschema.md.

CREATE TABLE stream.schemas (
    uri           text PRIMARY KEY,
    schema        jsonb NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    owner         regrole       -- who registered it (NULL: a contract, or the installing superuser)
);
COMMENT ON TABLE stream.schemas IS
    'Registry of JSON Schemas by absolute URI, resolved by $ref and $schema';
COMMENT ON COLUMN stream.schemas.uri IS 'Absolute URI without fragment';
COMMENT ON COLUMN stream.schemas.schema IS 'The schema document (object or boolean)';
COMMENT ON COLUMN stream.schemas.registered_at IS 'When the schema was last registered';
COMMENT ON COLUMN stream.schemas.owner IS 'The role that registered it, who alone may replace it (NULL: a contract version, written by define_contract)';
SELECT pg_catalog.pg_extension_config_dump('stream.schemas', '');
-- Written by register_schema and define_contract only.  A contract's
-- schema is visible to whoever sees its contract; other documents to all.
REVOKE ALL ON stream.schemas FROM PUBLIC;
GRANT SELECT ON stream.schemas TO PUBLIC;
ALTER TABLE stream.schemas ENABLE ROW LEVEL SECURITY;
CREATE POLICY schemas_read ON stream.schemas FOR SELECT
    USING (uri NOT LIKE 'urn:stream-events:%'
           OR EXISTS (SELECT 1 FROM stream.contracts c WHERE c.schema_uri = schemas.uri));

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

CREATE FUNCTION stream._register_schema_internal(uri text, schema jsonb)
    RETURNS void
    AS 'MODULE_PATHNAME', 'stream_register_schema'
    LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION stream._register_schema_internal(text, jsonb) IS
    'Checks and stores a schema document under its URI in stream.schemas (internal, run by the catalog writers)';
REVOKE ALL ON FUNCTION stream._register_schema_internal(text, jsonb) FROM PUBLIC;

CREATE FUNCTION stream._priv_register_schema(caller regrole, uri text, schema jsonb)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cur regrole;
    found_row boolean;
BEGIN
    IF uri IS NULL OR schema IS NULL THEN
        RAISE EXCEPTION 'register_schema needs a URI and a schema'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'e.g. SELECT stream.register_schema(''https://example.com/product.json'', ''{"type": "object"}'').';
    END IF;
    IF uri LIKE 'urn:stream-events:%' THEN
        RAISE EXCEPTION 'permission denied to register schema "%"', uri
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'URIs under urn:stream-events: are the versions of data contracts.',
                  HINT = 'Publish a contract with stream.define_contract(), or register the document under a URI of your own.';
    END IF;
    SELECT s.owner, true INTO cur, found_row FROM stream.schemas s WHERE s.uri = _priv_register_schema.uri FOR UPDATE;
    IF found_row AND NOT (CASE WHEN cur IS NULL
                               THEN (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = caller)
                               ELSE pg_catalog.pg_has_role(caller, cur, 'USAGE') END) THEN
        RAISE EXCEPTION 'permission denied to replace schema "%"', uri
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('It was registered by %s.', coalesce(cur::text, 'a superuser')),
                  HINT = format('Ask %s to replace it, or register your document under another URI.',
                                coalesce(cur::text, 'a superuser'));
    END IF;
    PERFORM stream._register_schema_internal(uri, schema);
    UPDATE stream.schemas s SET owner = caller WHERE s.uri = _priv_register_schema.uri;
END $$;
COMMENT ON FUNCTION stream._priv_register_schema(regrole, text, jsonb) IS
    'The body of register_schema: a URI belongs to the role that registered it first (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_register_schema(regrole, text, jsonb) FROM PUBLIC;

CREATE FUNCTION stream.register_schema(uri text, schema jsonb)
RETURNS void
LANGUAGE sql VOLATILE STRICT SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT stream._priv('stream._priv_register_schema', uri, schema)
$$;
COMMENT ON FUNCTION stream.register_schema(text, jsonb) IS
    'Stores (or replaces) schema under an absolute URI in stream.schemas, for $ref and $schema; only the role that first registered a URI may replace it';
