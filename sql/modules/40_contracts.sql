-- Piece 40: data contracts (versioned JSON Schemas per stream and event
-- name), compatibility checks, ingest policy and the quarantine.

CREATE TABLE stream.contracts (
    stream_id     integer NOT NULL,
    stream        regclass NOT NULL,
    event_name    text NOT NULL,
    version       integer NOT NULL CHECK (version > 0),
    schema        jsonb NOT NULL,
    compatibility text NOT NULL,
    schema_uri    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    name NOT NULL DEFAULT current_user,
    PRIMARY KEY (stream_id, event_name, version)
);
COMMENT ON TABLE stream.contracts IS
    'Versioned data contracts: a JSON Schema (draft 2020-12) for the properties of one event name of one stream';
SELECT pg_catalog.pg_extension_config_dump('stream.contracts', '');
-- written by define_contract only; read by roles that see the stream
REVOKE ALL ON stream.contracts FROM PUBLIC;
GRANT SELECT ON stream.contracts TO PUBLIC;
ALTER TABLE stream.contracts ENABLE ROW LEVEL SECURITY;
CREATE POLICY contracts_read ON stream.contracts FOR SELECT USING (stream._stream_visible(stream));

CREATE FUNCTION stream._compatibility_modes() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY['none', 'backward', 'forward', 'full',
                 'backward_transitive', 'forward_transitive', 'full_transitive']
$$;
COMMENT ON FUNCTION stream._compatibility_modes() IS
    'The compatibility modes define_contract accepts, with Confluent Schema Registry meaning (internal)';

-- Structural differences between two JSON Schemas, each flagged with the
-- compatibility it breaks: backward (data valid under the old schema may be
-- invalid under the new one) and forward (the reverse).  The rules follow
-- Confluent Schema Registry's for JSON Schema; see docs/contracts.md.
CREATE FUNCTION stream.schema_diff(old_schema jsonb, new_schema jsonb, base_path text DEFAULT '')
RETURNS TABLE(path text, change text, breaks_backward boolean, breaks_forward boolean)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    o jsonb := old_schema;
    n jsonb := new_schema;
    p text := base_path;
    k text;
    ot text[];
    nt text[];
    o_open boolean;
    n_open boolean;
    bound record;
BEGIN
    IF o = n THEN
        RETURN;
    END IF;
    IF jsonb_typeof(o) <> 'object' OR jsonb_typeof(n) <> 'object' THEN
        RETURN QUERY SELECT coalesce(nullif(p, ''), '/'), format('schema changed from %s to %s', o, n),
                            n <> 'true'::jsonb AND n <> '{}'::jsonb,
                            o <> 'true'::jsonb AND o <> '{}'::jsonb;
        RETURN;
    END IF;

    -- type: integer is a subset of number
    ot := CASE jsonb_typeof(o->'type') WHEN 'string' THEN ARRAY[o->>'type']
               WHEN 'array' THEN ARRAY(SELECT jsonb_array_elements_text(o->'type')) END;
    nt := CASE jsonb_typeof(n->'type') WHEN 'string' THEN ARRAY[n->>'type']
               WHEN 'array' THEN ARRAY(SELECT jsonb_array_elements_text(n->'type')) END;
    IF ot IS DISTINCT FROM nt THEN
        RETURN QUERY SELECT coalesce(nullif(p, ''), '/'),
            format('type changed from %s to %s', coalesce(o->'type', '"any"'), coalesce(n->'type', '"any"')),
            -- narrowed: some old type no longer accepted
            nt IS NOT NULL AND (ot IS NULL OR EXISTS (
                SELECT 1 FROM unnest(ot) t
                WHERE NOT (t = ANY (nt) OR (t = 'integer' AND 'number' = ANY (nt))))),
            ot IS NOT NULL AND (nt IS NULL OR EXISTS (
                SELECT 1 FROM unnest(nt) t
                WHERE NOT (t = ANY (ot) OR (t = 'integer' AND 'number' = ANY (ot)))));
    END IF;

    -- required
    RETURN QUERY
        SELECT p || '/properties/' || r, format('property "%s" became required', r), true, false
        FROM jsonb_array_elements_text(coalesce(n->'required', '[]')) r
        WHERE NOT coalesce(o->'required', '[]') ? r
        UNION ALL
        SELECT p || '/properties/' || r, format('property "%s" is no longer required', r), false, true
        FROM jsonb_array_elements_text(coalesce(o->'required', '[]')) r
        WHERE NOT coalesce(n->'required', '[]') ? r;

    -- properties, open and closed content models
    o_open := coalesce(o->'additionalProperties', 'true'::jsonb) <> 'false'::jsonb;
    n_open := coalesce(n->'additionalProperties', 'true'::jsonb) <> 'false'::jsonb;
    FOR k IN SELECT jsonb_object_keys(coalesce(n->'properties', '{}'))
             UNION SELECT jsonb_object_keys(coalesce(o->'properties', '{}')) ORDER BY 1
    LOOP
        IF o->'properties' ? k AND n->'properties' ? k THEN
            RETURN QUERY SELECT * FROM stream.schema_diff(o->'properties'->k, n->'properties'->k,
                                                          p || '/properties/' || k);
        ELSIF n->'properties' ? k THEN
            RETURN QUERY SELECT p || '/properties/' || k,
                format('property "%s" added to %s content model', k,
                       CASE WHEN o_open THEN 'an open' ELSE 'a closed' END),
                o_open AND n->'properties'->k NOT IN ('true'::jsonb, '{}'::jsonb), NOT o_open;
        ELSE
            RETURN QUERY SELECT p || '/properties/' || k,
                format('property "%s" removed from %s content model', k,
                       CASE WHEN n_open THEN 'an open' ELSE 'a closed' END),
                NOT n_open, n_open AND o->'properties'->k NOT IN ('true'::jsonb, '{}'::jsonb);
        END IF;
    END LOOP;
    IF o->'additionalProperties' IS DISTINCT FROM n->'additionalProperties' THEN
        IF jsonb_typeof(o->'additionalProperties') = 'object' AND jsonb_typeof(n->'additionalProperties') = 'object' THEN
            RETURN QUERY SELECT * FROM stream.schema_diff(o->'additionalProperties', n->'additionalProperties',
                                                          p || '/additionalProperties');
        ELSE
            RETURN QUERY SELECT p || '/additionalProperties',
                format('additionalProperties changed from %s to %s',
                       coalesce(o->'additionalProperties', 'true'), coalesce(n->'additionalProperties', 'true')),
                o_open AND n->'additionalProperties' IS NOT NULL AND n->'additionalProperties' <> 'true'::jsonb,
                n_open AND o->'additionalProperties' IS NOT NULL AND o->'additionalProperties' <> 'true'::jsonb;
        END IF;
    END IF;

    -- enum and const
    IF o->'enum' IS DISTINCT FROM n->'enum' THEN
        RETURN QUERY SELECT coalesce(nullif(p, ''), '/'),
            format('enum changed from %s to %s', coalesce(o->'enum', '"any"'), coalesce(n->'enum', '"any"')),
            n ? 'enum' AND (NOT o ? 'enum' OR EXISTS (
                SELECT 1 FROM jsonb_array_elements(o->'enum') e WHERE NOT n->'enum' @> jsonb_build_array(e))),
            o ? 'enum' AND (NOT n ? 'enum' OR EXISTS (
                SELECT 1 FROM jsonb_array_elements(n->'enum') e WHERE NOT o->'enum' @> jsonb_build_array(e)));
    END IF;
    IF o->'const' IS DISTINCT FROM n->'const' THEN
        RETURN QUERY SELECT coalesce(nullif(p, ''), '/'),
            format('const changed from %s to %s', coalesce(o->'const', '"any"'), coalesce(n->'const', '"any"')),
            n ? 'const', o ? 'const';
    END IF;

    -- lower and upper bounds: a higher lower bound or a lower upper bound narrows
    FOR bound IN SELECT * FROM (VALUES
        ('minimum', true), ('exclusiveMinimum', true), ('minLength', true), ('minItems', true),
        ('minProperties', true), ('minContains', true),
        ('maximum', false), ('exclusiveMaximum', false), ('maxLength', false), ('maxItems', false),
        ('maxProperties', false), ('maxContains', false)) v(kw, lower)
    LOOP
        IF o->bound.kw IS DISTINCT FROM n->bound.kw THEN
            RETURN QUERY SELECT p || '/' || bound.kw,
                format('%s changed from %s to %s', bound.kw, coalesce(o->>bound.kw, 'none'), coalesce(n->>bound.kw, 'none')),
                n ? bound.kw AND (NOT o ? bound.kw OR
                    CASE WHEN bound.lower THEN (n->>bound.kw)::numeric > (o->>bound.kw)::numeric
                         ELSE (n->>bound.kw)::numeric < (o->>bound.kw)::numeric END),
                o ? bound.kw AND (NOT n ? bound.kw OR
                    CASE WHEN bound.lower THEN (n->>bound.kw)::numeric < (o->>bound.kw)::numeric
                         ELSE (n->>bound.kw)::numeric > (o->>bound.kw)::numeric END);
        END IF;
    END LOOP;
    IF o->'multipleOf' IS DISTINCT FROM n->'multipleOf' THEN
        RETURN QUERY SELECT p || '/multipleOf',
            format('multipleOf changed from %s to %s', coalesce(o->>'multipleOf', 'none'), coalesce(n->>'multipleOf', 'none')),
            n ? 'multipleOf' AND (NOT o ? 'multipleOf' OR (o->>'multipleOf')::numeric % (n->>'multipleOf')::numeric <> 0),
            o ? 'multipleOf' AND (NOT n ? 'multipleOf' OR (n->>'multipleOf')::numeric % (o->>'multipleOf')::numeric <> 0);
    END IF;
    IF o->'uniqueItems' IS DISTINCT FROM n->'uniqueItems' THEN
        RETURN QUERY SELECT p || '/uniqueItems',
            format('uniqueItems changed from %s to %s', coalesce(o->>'uniqueItems', 'false'), coalesce(n->>'uniqueItems', 'false')),
            coalesce((n->>'uniqueItems')::boolean, false), coalesce((o->>'uniqueItems')::boolean, false);
    END IF;

    -- items
    IF o->'items' IS DISTINCT FROM n->'items' THEN
        RETURN QUERY SELECT * FROM stream.schema_diff(coalesce(o->'items', 'true'), coalesce(n->'items', 'true'),
                                                      p || '/items');
    END IF;

    -- keywords compared only as a whole: any change is assumed to break both ways
    FOR k IN SELECT kw FROM unnest(ARRAY['pattern', 'format', 'prefixItems', 'contains', 'patternProperties',
                                         'propertyNames', 'dependentRequired', 'dependentSchemas',
                                         'allOf', 'anyOf', 'oneOf', 'not', 'if', 'then', 'else',
                                         '$ref', '$dynamicRef', 'unevaluatedProperties',
                                         'unevaluatedItems']) kw
    LOOP
        IF o->k IS DISTINCT FROM n->k THEN
            RETURN QUERY SELECT p || '/' || k,
                format('%s changed from %s to %s', k, coalesce(o->k, '"none"'), coalesce(n->k, '"none"')),
                n ? k, o ? k;
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION stream.schema_diff(jsonb, jsonb, text) IS
    'Structural differences between two JSON Schemas, each flagged with whether it breaks backward or forward compatibility';

CREATE FUNCTION stream.contract_diff(stream regclass, event_name text, schema jsonb)
RETURNS TABLE(against_version integer, path text, change text,
              breaks_backward boolean, breaks_forward boolean)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.version, d.path, d.change, d.breaks_backward, d.breaks_forward
    FROM stream.contracts c, stream.schema_diff(c.schema, contract_diff.schema) d
    WHERE c.stream_id = stream._stream_id(contract_diff.stream)
      AND c.event_name = contract_diff.event_name
    ORDER BY c.version DESC, d.path, d.change
$$;
COMMENT ON FUNCTION stream.contract_diff(regclass, text, jsonb) IS
    'What a proposed schema changes against every published version of a contract, before define_contract';


CREATE FUNCTION stream._contract_schema_check(stream regclass, schema jsonb, uri text DEFAULT NULL)
    RETURNS void
    AS 'MODULE_PATHNAME', 'stream_contract_schema_check'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION stream._contract_schema_check(regclass, jsonb, text) IS
    'Compiles a contract''s schema as ingest will (with the stream''s format_assertion), raising what would otherwise refuse every event (internal)';

-- The body of define_contract, run as the extension's owner for the
-- stream's owner (the contract and its registry entry are catalog rows).
CREATE FUNCTION stream._priv_define_contract(caller regrole, stream regclass, event_name text, schema jsonb,
                                             compatibility text)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sid     integer := stream._stream_id(_priv_define_contract.stream);
    latest  record;
    v       integer;
    broken  record;
    mode    text := lower(_priv_define_contract.compatibility);
    dir     text;
    uri     text;
BEGIN
    PERFORM stream._check_owner(caller, _priv_define_contract.stream, 'stream');
    IF event_name IS NULL OR event_name = '' THEN
        RAISE EXCEPTION 'event_name must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A contract applies to one event name, e.g. ''add_to_cart''.';
    END IF;
    IF schema IS NULL THEN
        RAISE EXCEPTION 'schema must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass a JSON Schema (draft 2020-12) for the event''s properties.';
    END IF;
    IF mode IS NULL OR NOT mode = ANY (stream._compatibility_modes()) THEN
        RAISE EXCEPTION 'unknown compatibility mode "%"', _priv_define_contract.compatibility
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Modes are %s.', array_to_string(stream._compatibility_modes(), ', ')),
                  HINT = 'Use ''backward'' (the default) unless consumers need another guarantee.';
    END IF;
    PERFORM stream.json_schema_check(schema);
    PERFORM stream._contract_schema_check(_priv_define_contract.stream, schema, NULL);

    SELECT c.version, c.schema INTO latest FROM stream.contracts c
    WHERE c.stream_id = sid AND c.event_name = _priv_define_contract.event_name
    ORDER BY c.version DESC LIMIT 1;
    IF FOUND AND latest.schema = schema THEN
        RETURN latest.version;            -- publishing the same schema again is a no-op
    END IF;

    IF mode <> 'none' THEN
        dir := split_part(mode, '_', 1);
        SELECT d.* INTO broken
        FROM stream.contracts c, stream.schema_diff(c.schema, _priv_define_contract.schema) d
        WHERE c.stream_id = sid AND c.event_name = _priv_define_contract.event_name
          AND (mode LIKE '%_transitive' OR c.version = latest.version)
          AND ((dir IN ('backward', 'full') AND d.breaks_backward)
               OR (dir IN ('forward', 'full') AND d.breaks_forward))
        ORDER BY c.version DESC, d.path LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'new contract for event "%" of stream % is not % compatible',
                            _priv_define_contract.event_name, _priv_define_contract.stream, mode
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('%s (at %s).', broken.change, broken.path),
                      HINT = 'See every difference with stream.contract_diff(); publish under a new event name, or pass compatibility => ''none'' to accept the break.';
        END IF;
    END IF;

    v := coalesce(latest.version, 0) + 1;
    uri := format('urn:stream-events:contract:%s:%s:%s', _priv_define_contract.stream::text,
                  _priv_define_contract.event_name, v);
    INSERT INTO stream.contracts (stream_id, stream, event_name, version, schema, compatibility, schema_uri)
    VALUES (sid, _priv_define_contract.stream, _priv_define_contract.event_name, v, schema, mode, uri);
    PERFORM stream._register_schema_internal(uri, schema);
    PERFORM stream._stream_changed(_priv_define_contract.stream);
    RETURN v;
END $$;
COMMENT ON FUNCTION stream._priv_define_contract(regrole, regclass, text, jsonb, text) IS
    'The body of define_contract: checks ownership and compatibility, records the version and registers its schema (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_define_contract(regrole, regclass, text, jsonb, text) FROM PUBLIC;

CREATE FUNCTION stream.define_contract(stream regclass, event_name text, schema jsonb,
                                       compatibility text DEFAULT 'backward')
RETURNS integer
LANGUAGE sql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT stream._priv('stream._priv_define_contract', stream, event_name, schema, compatibility)::integer
$$;
COMMENT ON FUNCTION stream.define_contract(regclass, text, jsonb, text) IS
    'Publishes a new version of the contract (JSON Schema of properties) of one event name of a stream, checked for compatibility';


CREATE FUNCTION stream._priv_set_policy(caller regrole, stream regclass, on_violation text,
                                        on_unplanned text, event_name_pattern text,
                                        require_identity boolean, max_future interval,
                                        format_assertion boolean)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sid integer := stream._stream_id(_priv_set_policy.stream);
BEGIN
    PERFORM stream._check_owner(caller, _priv_set_policy.stream, 'stream');
    IF on_violation IS NOT NULL AND on_violation NOT IN ('reject', 'quarantine', 'warn') THEN
        RAISE EXCEPTION 'unknown on_violation policy "%"', on_violation
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Policies are reject, quarantine and warn.',
                  HINT = 'Use ''quarantine'' to keep violating events aside without failing producers.';
    END IF;
    IF on_unplanned IS NOT NULL AND on_unplanned NOT IN ('allow', 'quarantine', 'reject') THEN
        RAISE EXCEPTION 'unknown on_unplanned policy "%"', on_unplanned
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Policies are allow, quarantine and reject.',
                  HINT = 'Events whose name has no contract are "unplanned"; ''allow'' stores them.';
    END IF;
    IF event_name_pattern IS NOT NULL AND event_name_pattern <> '' THEN
        BEGIN
            PERFORM '' ~ event_name_pattern;
        EXCEPTION WHEN invalid_regular_expression THEN
            RAISE EXCEPTION 'invalid event_name_pattern "%"', event_name_pattern
                USING ERRCODE = 'invalid_regular_expression',
                      DETAIL = SQLERRM,
                      HINT = 'Use a POSIX regular expression such as ''^[a-z][a-z0-9_]*$''.';
        END;
    END IF;
    IF max_future IS NOT NULL AND max_future < interval '0' THEN
        RAISE EXCEPTION 'max_future must not be negative'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The value given was %s.', max_future),
                  HINT = 'Pass how far ahead of the server clock occurred_at may be, e.g. ''1 day''.';
    END IF;
    UPDATE stream.streams s SET
        on_violation = coalesce(_priv_set_policy.on_violation, s.on_violation),
        on_unplanned = coalesce(_priv_set_policy.on_unplanned, s.on_unplanned),
        event_name_pattern = CASE WHEN _priv_set_policy.event_name_pattern IS NULL THEN s.event_name_pattern
                                  ELSE nullif(_priv_set_policy.event_name_pattern, '') END,
        require_identity = coalesce(_priv_set_policy.require_identity, s.require_identity),
        max_future = coalesce(_priv_set_policy.max_future, s.max_future),
        format_assertion = coalesce(_priv_set_policy.format_assertion, s.format_assertion)
    WHERE s.stream_id = sid;
    PERFORM stream._stream_changed(_priv_set_policy.stream);
    -- every current contract must still compile as ingest will compile it
    IF _priv_set_policy.format_assertion IS NOT NULL THEN
        PERFORM stream._contract_schema_check(_priv_set_policy.stream, c.schema, c.schema_uri)
        FROM (SELECT DISTINCT ON (k.event_name) k.schema, k.schema_uri FROM stream.contracts k
              WHERE k.stream_id = sid ORDER BY k.event_name, k.version DESC) c;
    END IF;
END $$;
COMMENT ON FUNCTION stream._priv_set_policy(regrole, regclass, text, text, text, boolean, interval, boolean) IS
    'The body of set_policy, for the stream''s owner (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_set_policy(regrole, regclass, text, text, text, boolean, interval, boolean) FROM PUBLIC;

CREATE FUNCTION stream.set_policy(stream regclass,
                                  on_violation text DEFAULT NULL,
                                  on_unplanned text DEFAULT NULL,
                                  event_name_pattern text DEFAULT NULL,
                                  require_identity boolean DEFAULT NULL,
                                  max_future interval DEFAULT NULL,
                                  format_assertion boolean DEFAULT NULL)
RETURNS void
LANGUAGE sql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT stream._priv('stream._priv_set_policy', stream, on_violation, on_unplanned,
                        event_name_pattern, require_identity, max_future, format_assertion)
$$;
COMMENT ON FUNCTION stream.set_policy(regclass, text, text, text, boolean, interval, boolean) IS
    'Sets what happens to events that break a contract (reject, quarantine, warn), to unplanned events, the envelope rules and whether JSON Schema format asserts (format_assertion); NULL keeps a setting, '''' clears the pattern';

CREATE FUNCTION stream.check_event(stream regclass, event_name text, properties jsonb,
                                   user_id text DEFAULT NULL, anonymous_id text DEFAULT NULL,
                                   occurred_at timestamptz DEFAULT now(),
                                   OUT valid boolean, OUT contract_version integer, OUT errors jsonb)
    RETURNS record
    AS 'MODULE_PATHNAME', 'stream_check_event'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION stream.check_event(regclass, text, jsonb, text, text, timestamptz) IS
    'Checks one event against the stream''s envelope rules and current contract, as ingest would; errors as [{"instance_path", "schema_path", "message"}]';

CREATE FUNCTION stream.replay_quarantine(stream regclass) RETURNS bigint
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q      regclass;
    r      record;
    moved  bigint := 0;
    ok     boolean;
BEGIN
    PERFORM stream._stream_id(replay_quarantine.stream);
    SELECT s.quarantine INTO q FROM stream.streams s WHERE s.relid = replay_quarantine.stream;
    FOR r IN EXECUTE format('SELECT ctid AS row_ctid, * FROM %s ORDER BY quarantined_at FOR UPDATE', q)
    LOOP
        SELECT c.valid INTO ok
        FROM stream.check_event(replay_quarantine.stream, r.event_name, r.properties, r.user_id,
                                r.anonymous_id, r.occurred_at) c;
        CONTINUE WHEN NOT coalesce(ok, false) OR r.event_name IS NULL OR r.occurred_at IS NULL;
        -- the ordinary ingest path: checks, dedup and counters apply
        EXECUTE format('INSERT INTO %s (event_id, event_name, occurred_at, user_id, anonymous_id, '
                       'session_id, properties, context) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)',
                       replay_quarantine.stream)
            USING r.event_id, r.event_name, r.occurred_at, r.user_id, r.anonymous_id, r.session_id,
                  coalesce(r.properties, '{}'), coalesce(r.context, '{}');
        EXECUTE format('DELETE FROM %s WHERE ctid = $1', q) USING r.row_ctid;
        moved := moved + 1;
    END LOOP;
    RETURN moved;
END $$;
COMMENT ON FUNCTION stream.replay_quarantine(regclass) IS
    'Re-checks quarantined events against the current contracts and moves the passing ones into the stream (through the ingest path, dedup included); returns how many left the quarantine';
