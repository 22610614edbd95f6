-- stream_events 0.1.0 -> 0.2.0 (issue 12: trust boundary).
--
-- Brings a 0.1.0 installation to exactly what a fresh 0.2.0 install
-- (sql/modules/*.sql) creates; test/t/040_upgrade.pl compares the two with
-- pg_dump --binary-upgrade and fails on any difference.  Rules: tables are
-- altered in place (their rows and pg_extension_config_dump registrations
-- stay; new columns go last, as in the modules); functions whose arguments
-- or result change are dropped and created again; views whose columns change
-- are dropped and created again.
--
-- The block from "-- ---- functions, views, privileges and policies" to its
-- end marker is generated (functions, views, privileges on tables and
-- sequences, row level security, policies) and replaced as a whole by
--   make upgrade-functions   (scripts/upgrade-functions.sh --update THIS-FILE 0.1.0)
-- everything else is written by hand; make test-upgrade shows what differs.

\echo Use "ALTER EXTENSION stream_events UPDATE TO '0.2.0'" to load this file. \quit

-- The catalogs this script changes, locked up front in the order the
-- worker reads them (aggregate_defs, then activation_defs): taken one by
-- one as the script goes, they deadlocked with a worker round.
LOCK TABLE stream.aggregate_defs, stream.activation_defs, stream.streams, stream.contracts,
           stream.schemas, stream.activations, stream.absence_timers, stream.threshold_state,
           stream.consumer_offsets, stream.consumer_acks
    IN ACCESS EXCLUSIVE MODE;

-- ---- before the generated block: tables (their privileges, row level ----
-- ---- security and policies are in the block)                          ----

-- new columns
ALTER TABLE stream.streams ADD COLUMN format_assertion boolean;
ALTER TABLE stream.schemas ADD COLUMN owner regrole;
COMMENT ON COLUMN stream.schemas.owner IS 'The role that registered it, who alone may replace it (NULL: a contract version, written by define_contract)';
ALTER TABLE stream.activation_defs
    ADD COLUMN notify text NOT NULL DEFAULT 'full' CHECK (notify IN ('full', 'id'));
COMMENT ON COLUMN stream.activation_defs.notify IS
    'What the NOTIFY carries: full (the outbox row as JSON) or id (only {"id": N}; read the row with stream.consume, which checks the channel grant)';
ALTER TABLE stream.activation_defs
    ADD COLUMN condition_tree text,
    ADD COLUMN key_tree text,
    ADD COLUMN payload_tree text,
    ADD COLUMN cancelled_by_tree text;
ALTER TABLE stream.activation_defs
    ADD COLUMN on_error text NOT NULL DEFAULT 'skip' CHECK (on_error IN ('skip', 'stop')),
    ADD COLUMN status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'error')),
    ADD COLUMN last_error text;
COMMENT ON COLUMN stream.activation_defs.on_error IS
    'skip: an event that makes the activation fail is left out and kept in stream.dead_letters; stop: the activation is parked (status error) until stream.resume';
COMMENT ON COLUMN stream.activation_defs.status IS
    'running, or error: parked by the worker after an error of its own (last_error), until stream.resume';
ALTER TABLE stream.aggregate_defs
    ADD COLUMN on_error text NOT NULL DEFAULT 'skip' CHECK (on_error IN ('skip', 'stop'));
COMMENT ON COLUMN stream.aggregate_defs.on_error IS
    'skip: an event that makes the aggregate fail is left out of it and kept in stream.dead_letters; stop: the aggregate is parked (status error) until stream.resume';

-- absence timers: no foreign key (sql/modules/70_activations.sql says why)
ALTER TABLE stream.absence_timers DROP CONSTRAINT absence_timers_act_id_fkey;

-- new tables
CREATE TABLE stream.channels (
    channel      text PRIMARY KEY,
    owner        regrole NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('stream.channels', '');
COMMENT ON TABLE stream.channels IS
    'Activation channels and the role that owns each (the first to define an activation on it)';

CREATE TABLE stream.channel_grants (
    channel      text NOT NULL REFERENCES stream.channels ON DELETE CASCADE,
    grantee      regrole NOT NULL,
    granted_by   regrole NOT NULL,
    granted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, grantee)
);
SELECT pg_catalog.pg_extension_config_dump('stream.channel_grants', '');
COMMENT ON TABLE stream.channel_grants IS
    'Roles allowed to consume a channel they do not own (stream.grant_channel / stream.revoke_channel)';

CREATE TABLE stream.consumers (
    consumer     text PRIMARY KEY,
    role         regrole NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('stream.consumers', '');
COMMENT ON TABLE stream.consumers IS
    'Consumer names of stream.consume / stream.ack and the role each is bound to (the first that used it)';

CREATE TABLE stream.dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    definition  text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('aggregate', 'activation')),
    def_id      integer NOT NULL,
    owner       regrole NOT NULL,
    event_id    uuid,
    stream      regclass NOT NULL,
    lsn         pg_lsn,
    sqlstate    text NOT NULL,
    error       text NOT NULL,
    detail      text,
    at          timestamptz NOT NULL DEFAULT now(),
    retries     integer NOT NULL DEFAULT 0,
    retry_requested boolean NOT NULL DEFAULT false
);
CREATE INDEX dead_letters_definition ON stream.dead_letters (kind, def_id);
COMMENT ON TABLE stream.dead_letters IS
    'Events a continuous aggregate or activation with on_error => skip could not apply: definition, event, stream, commit LSN, SQLSTATE and error (written by the worker; stream.retry_dead_letters applies them again)';
COMMENT ON COLUMN stream.dead_letters.retry_requested IS
    'stream.retry_dead_letters asked the worker to apply the event again';

-- The ingest queue (queue mode, docs/queue-mode.md).
CREATE TABLE stream.queue_ticks (
    tick    bigint PRIMARY KEY,
    snap    pg_snapshot NOT NULL,
    made_at timestamptz NOT NULL
);
COMMENT ON TABLE stream.queue_ticks IS
    'Ticks of the ingest queue: numbered snapshots cutting committed transactions into windows (internal, queue mode)';
INSERT INTO stream.queue_ticks VALUES (1, pg_catalog.pg_current_snapshot(), pg_catalog.clock_timestamp());
CREATE TABLE stream.queue_txns (
    xid               xid8 NOT NULL,
    subxid            xid NOT NULL,
    stream            oid NOT NULL,
    first_received_at timestamptz NOT NULL
);
CREATE INDEX queue_txns_xid ON stream.queue_txns (xid);
COMMENT ON TABLE stream.queue_txns IS
    'Transactions that inserted events, per stream, not yet read by every definition (internal, queue mode)';
ALTER TABLE stream.activation_defs ADD COLUMN start_snapshot pg_snapshot;
COMMENT ON COLUMN stream.activation_defs.start_snapshot IS
    'Queue mode: the snapshot of the activation''s start; events of transactions it sees are not looked at';
-- every stream gets the index the queue reads new events by
DO $upgrade$
DECLARE
    s record;
BEGIN
    FOR s IN SELECT st.relid, c.relname FROM stream.streams st JOIN pg_catalog.pg_class c ON c.oid = st.relid LOOP
        EXECUTE format('CREATE INDEX %I ON %s USING brin (received_at) WITH (autosummarize = on)',
                       s.relname || '_received_at', s.relid);
    END LOOP;
END
$upgrade$;

-- capture of operational tables (piece 80)
CREATE TABLE stream.captures (
    capture_id     integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    source         regclass NOT NULL UNIQUE,
    stream         regclass NOT NULL,
    event_prefix   text NOT NULL,   -- <prefix>.insert|update|delete: the table's name when captured
    columns        text[],          -- the columns in properties (NULL: every column)
    key_columns    text[] NOT NULL, -- the replica identity's columns: context.key
    user_id_column text,            -- the column whose value is the event's user_id
    owner          regrole NOT NULL,
    start_lsn      pg_lsn NOT NULL, -- logical mode: commits before it are not captured
    applied_lsn    pg_lsn,          -- logical mode: commits before it are written to the stream
    applied_at     timestamptz,
    captured       bigint NOT NULL DEFAULT 0,
    quarantined    bigint NOT NULL DEFAULT 0,
    status         text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'error')),
    last_error     text,
    origin         text NOT NULL DEFAULT stream._aggregate_origin(),
    created_at     timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('stream.captures', '');
SELECT pg_catalog.pg_extension_config_dump('stream.captures_capture_id_seq', '');
COMMENT ON TABLE stream.captures IS
    'Operational tables captured into streams (stream.capture): what each change becomes, whose rights write it, and how far the worker has written';
COMMENT ON COLUMN stream.captures.start_lsn IS
    'Logical mode: changes committed before it are not captured (the capture''s creation, or a restore)';
COMMENT ON COLUMN stream.captures.applied_lsn IS
    'Logical mode: every change committed before it has been written to the stream (NULL until the worker first wrote)';
COMMENT ON COLUMN stream.captures.status IS
    'running, or error: stopped by the worker after an error of its own (last_error) until stream.resume_capture';
-- Written by the extension only (the worker writes events as owner).

CREATE TABLE stream.capture_log (
    capture_id   integer,
    xid          xid8,         -- the source transaction
    seq          bigint,       -- the change's position in it
    event_name   text,
    occurred_at  timestamptz,  -- the source transaction's start (its commit time is not known yet)
    user_id      text,
    properties   json,         -- JSON text: parsed into jsonb by the worker, not the producer
    context      json
);
SELECT pg_catalog.pg_extension_config_dump('stream.capture_log', '');
COMMENT ON TABLE stream.capture_log IS
    'Queue mode: captured changes not yet written to their stream (appended by the capture trigger, drained by the worker)';

-- ---- functions, views, privileges and policies (scripts/upgrade-functions.sh) ----
DROP POLICY streams_read ON stream.streams;
DROP POLICY streams_owner_write ON stream.streams;
DROP POLICY contracts_read ON stream.contracts;
DROP POLICY contracts_owner_insert ON stream.contracts;
DROP POLICY aggregate_defs_read ON stream.aggregate_defs;
DROP POLICY aggregate_defs_owner_write ON stream.aggregate_defs;
DROP POLICY activation_defs_read ON stream.activation_defs;
DROP POLICY activation_defs_owner_write ON stream.activation_defs;
DROP VIEW stream.aggregates;
DROP VIEW stream.compliance;
DROP VIEW stream.stats;
DROP VIEW stream.stream_list;
DROP FUNCTION stream._prune_dedup_keys(integer);
DROP FUNCTION stream.set_policy(regclass,text,text,text,boolean,interval);
DROP FUNCTION stream.create_aggregate(text,text);
DROP FUNCTION stream.on_event(text,regclass,text,text,text,text,interval,text);
DROP FUNCTION stream.on_absence(text,regclass,text,text,interval,text,text,text);
DROP FUNCTION stream.on_threshold(text,text,text,text,text);

CREATE OR REPLACE FUNCTION stream._priv(fn regproc, VARIADIC args "any")
 RETURNS text
 LANGUAGE c
AS '$libdir/stream_events', $function$stream_priv$function$
;
COMMENT ON FUNCTION stream._priv(regproc,"any") IS 'Runs a catalog writer (stream._priv_*) of this extension as its owner, passing the caller''s role first (internal)';


CREATE OR REPLACE FUNCTION stream._check_owner(caller regrole, rel regclass, what text)
 RETURNS void
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    own regrole;
BEGIN
    SELECT c.relowner::regrole INTO own FROM pg_catalog.pg_class c WHERE c.oid = rel;
    IF own IS NULL THEN
        RAISE EXCEPTION 'relation with OID % does not exist', rel::oid
            USING ERRCODE = 'undefined_table';
    END IF;
    IF NOT pg_catalog.pg_has_role(caller, own, 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of % %', what, rel
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('%s is owned by role %s; role %s is not a member of it.', rel, own, caller),
                  HINT = format('Ask role %s (or a superuser) to do it, or to grant you membership in role %s.', own, own);
    END IF;
END $function$
;
COMMENT ON FUNCTION stream._check_owner(regrole,regclass,text) IS 'Raises 42501 unless caller owns the relation (or is a member of its owner) (internal)';


CREATE OR REPLACE FUNCTION stream._check_privilege(caller regrole, rel regclass, privilege text, why text)
 RETURNS void
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF NOT coalesce(pg_catalog.has_table_privilege(caller, rel, privilege), false) THEN
        RAISE EXCEPTION 'permission denied for %', rel
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Role %s has no %s privilege on %s; %s', caller, privilege, rel, why),
                  HINT = format('Ask the owner of %s: GRANT %s ON %s TO %s.', rel, privilege, rel, caller);
    END IF;
END $function$
;
COMMENT ON FUNCTION stream._check_privilege(regrole,regclass,text,text) IS 'Raises 42501 unless caller holds privilege on the relation (internal)';


CREATE OR REPLACE FUNCTION stream._stream_visible(rel regclass)
 RETURNS boolean
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT coalesce(pg_catalog.has_table_privilege(rel, 'SELECT')
                    OR pg_catalog.has_table_privilege(rel, 'INSERT')
                    OR pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c
                                               WHERE c.oid = rel), 'USAGE'), false)
$function$
;
COMMENT ON FUNCTION stream._stream_visible(regclass) IS 'True if the current role owns the stream or may SELECT from or INSERT into it: what it may see of it in catalogs and views (internal)';


CREATE OR REPLACE FUNCTION stream._create_dedup_keys(stream_id integer)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    t text := 'dedup_keys_' || _create_dedup_keys.stream_id;
BEGIN
    EXECUTE format('CREATE TABLE stream.%I (event_id uuid PRIMARY KEY, seen_at timestamptz NOT NULL) '
                   'WITH (fillfactor = 100)', t);
    EXECUTE format('REVOKE ALL ON stream.%I FROM PUBLIC', t);
    EXECUTE format('COMMENT ON TABLE stream.%I IS %L', t,
                   format('Idempotency keys of the accepted events of stream %s, kept for its dedup_window (internal)',
                          _create_dedup_keys.stream_id));
END $function$
;
COMMENT ON FUNCTION stream._create_dedup_keys(integer) IS 'Creates the dedup key table of a stream, stream.dedup_keys_<stream_id> (internal)';
REVOKE ALL ON FUNCTION stream._create_dedup_keys(integer) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream._dedup_keys_of(stream_id integer)
 RETURNS regclass
 LANGUAGE sql
 STABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT pg_catalog.to_regclass(pg_catalog.format('stream.%I', 'dedup_keys_' || stream_id))
$function$
;
COMMENT ON FUNCTION stream._dedup_keys_of(integer) IS 'The dedup key table of a stream, or NULL when it has none (internal)';
REVOKE ALL ON FUNCTION stream._dedup_keys_of(integer) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream.create_stream(name text, partition_interval interval DEFAULT '1 day'::interval, retention interval DEFAULT NULL::interval, dedup_window interval DEFAULT '7 days'::interval)
 RETURNS regclass
 LANGUAGE plpgsql
AS $function$
DECLARE
    parts    text[];
    nsp      text;
    rel      text;
    relid    regclass;
    n_months integer;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'stream name must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass a table name such as ''clicks'' or ''shop.orders''.';
    END IF;
    BEGIN
        parts := parse_ident(name);
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION 'invalid stream name "%"', name
            USING ERRCODE = 'invalid_name',
                  DETAIL = 'A stream name is a table name, optionally schema-qualified.',
                  HINT = 'Use letters, digits and underscores, or double-quote the name, e.g. ''shop.orders''.';
    END;
    IF array_length(parts, 1) = 1 THEN
        nsp := current_schema();
        IF nsp IS NULL THEN
            RAISE EXCEPTION 'no schema has been selected to create stream "%" in', name
                USING ERRCODE = 'invalid_schema_name',
                      HINT = 'Qualify the name with a schema, e.g. ''public.clicks''.';
        END IF;
        rel := parts[1];
    ELSIF array_length(parts, 1) = 2 THEN
        nsp := parts[1];
        rel := parts[2];
    ELSE
        RAISE EXCEPTION 'invalid stream name "%"', name
            USING ERRCODE = 'invalid_name',
                  DETAIL = format('The name has %s parts; a stream name is [schema.]table.', array_length(parts, 1)),
                  HINT = 'Use a table name, optionally schema-qualified, e.g. ''shop.orders''.';
    END IF;
    IF rel = '' OR octet_length(rel) > 48 THEN
        RAISE EXCEPTION 'invalid stream name "%"', name
            USING ERRCODE = 'invalid_name',
                  DETAIL = format('The table name is %s bytes long; a stream name may have 1 to 48 bytes.', octet_length(rel)),
                  HINT = 'Choose a shorter name: partitions and side tables add suffixes to it.';
    END IF;
    IF to_regnamespace(quote_ident(nsp)) IS NULL THEN
        RAISE EXCEPTION 'schema "%" does not exist', nsp
            USING ERRCODE = 'invalid_schema_name',
                  HINT = format('Create it first with CREATE SCHEMA %I.', nsp);
    END IF;
    IF to_regclass(format('%I.%I', nsp, rel)) IS NOT NULL THEN
        RAISE EXCEPTION 'relation "%.%" already exists', nsp, rel
            USING ERRCODE = 'duplicate_table',
                  DETAIL = 'create_stream creates a new table and never converts an existing one.',
                  HINT = 'Choose another name, or drop the existing relation first.';
    END IF;

    PERFORM stream._check_interval('partition_interval', partition_interval, false);
    PERFORM stream._check_interval('retention', retention, true);
    PERFORM stream._check_interval('dedup_window', dedup_window, true);
    n_months := extract(year FROM partition_interval)::integer * 12
                + extract(month FROM partition_interval)::integer;
    IF n_months > 0 AND (extract(day FROM partition_interval) <> 0
                         OR extract(epoch FROM partition_interval)::numeric
                            <> extract(epoch FROM make_interval(months => n_months))::numeric) THEN
        RAISE EXCEPTION 'partition_interval % mixes months with days or time', partition_interval
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A partition width is either whole months or a fixed duration.',
                  HINT = 'Use e.g. ''1 month'' or ''7 days''.';
    END IF;
    IF n_months = 0 AND partition_interval < interval '1 hour' THEN
        RAISE EXCEPTION 'partition_interval % is too small', partition_interval
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The smallest partition width is 1 hour.',
                  HINT = 'Use ''1 hour'' or more; windows finer than a partition are set in aggregates.';
    END IF;

    EXECUTE format($ddl$
        CREATE TABLE %I.%I (
            event_id     uuid        NOT NULL DEFAULT stream.uuid_v7(),
            event_name   text        NOT NULL,
            occurred_at  timestamptz NOT NULL DEFAULT now(),
            received_at  timestamptz NOT NULL DEFAULT statement_timestamp(),
            user_id      text,
            anonymous_id text,
            session_id   text,
            properties   jsonb       NOT NULL DEFAULT '{}',
            context      jsonb       NOT NULL DEFAULT '{}'
        ) PARTITION BY RANGE (occurred_at) $ddl$, nsp, rel);
    relid := format('%I.%I', nsp, rel)::regclass;

    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s DEFAULT', nsp, rel || '_default', relid);
    -- the ingest queue finds new events by received_at (docs/queue-mode.md)
    EXECUTE format('CREATE INDEX %I ON %s USING brin (received_at) WITH (autosummarize = on)',
                   rel || '_received_at', relid);
    EXECUTE format('CREATE TRIGGER stream_events_ingest BEFORE INSERT ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION stream._ingest_trigger()', relid);
    EXECUTE format('CREATE TRIGGER stream_events_append_only BEFORE UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION stream._append_only_trigger()', relid);
    PERFORM stream._add_truncate_guard(relid);
    PERFORM stream._add_truncate_guard(format('%I.%I', nsp, rel || '_default')::regclass);

    EXECUTE format('COMMENT ON TABLE %s IS %L', relid,
                   'Event stream (stream_events): append-only, partitioned on occurred_at');

    -- Events that break the stream's contracts or policy, when it says so.
    EXECUTE format($ddl$
        CREATE TABLE %I.%I (
            event_id         uuid        NOT NULL,
            event_name       text,
            occurred_at      timestamptz,
            received_at      timestamptz NOT NULL,
            user_id          text,
            anonymous_id     text,
            session_id       text,
            properties       jsonb,
            context          jsonb,
            errors           jsonb       NOT NULL,
            contract_version integer,
            quarantined_at   timestamptz NOT NULL DEFAULT clock_timestamp()
        ) $ddl$, nsp, rel || '_quarantine');
    EXECUTE format('COMMENT ON TABLE %I.%I IS %L', nsp, rel || '_quarantine',
                   format('Quarantined events of stream %s: envelope, errors (JSON pointer + message) and contract version; see stream.replay_quarantine', relid));

    PERFORM stream._priv('stream._priv_register_stream', relid, create_stream.partition_interval,
                         create_stream.retention, create_stream.dedup_window,
                         format('%I.%I', nsp, rel || '_quarantine')::regclass);

    PERFORM stream.maintain(relid);
    RETURN relid;
END
$function$
;


CREATE OR REPLACE FUNCTION stream._priv_register_stream(caller regrole, rel regclass, partition_interval interval, retention interval, dedup_window interval, quarantine regclass)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    c   record;
    q   record;
    sid integer;
BEGIN
    PERFORM stream._check_owner(caller, rel, 'table');
    PERFORM stream._check_owner(caller, quarantine, 'table');
    SELECT cl.relname, cl.relnamespace, cl.relkind INTO c FROM pg_catalog.pg_class cl WHERE cl.oid = rel;
    SELECT cl.relname, cl.relnamespace, cl.relkind INTO q FROM pg_catalog.pg_class cl WHERE cl.oid = quarantine;
    IF c.relkind <> 'p' OR q.relkind <> 'r' OR q.relnamespace <> c.relnamespace
       OR q.relname <> c.relname || '_quarantine'
       OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                      WHERE t.tgrelid = rel AND t.tgname = 'stream_events_ingest'
                        AND t.tgfoid = 'stream._ingest_trigger()'::regprocedure)
       OR (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_catalog.pg_attribute a
           WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped)
          IS DISTINCT FROM ARRAY['event_id', 'event_name', 'occurred_at', 'received_at', 'user_id',
                                 'anonymous_id', 'session_id', 'properties', 'context'] THEN
        RAISE EXCEPTION '% is not a table made by stream.create_stream', rel
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Only tables with the event envelope, the ingest trigger and a quarantine table next to them can be registered as streams.',
                  HINT = 'Create streams with stream.create_stream().';
    END IF;
    IF EXISTS (SELECT 1 FROM stream.streams s WHERE s.relid = rel OR s.quarantine = _priv_register_stream.quarantine) THEN
        RAISE EXCEPTION '% is already a stream', rel
            USING ERRCODE = 'duplicate_object',
                  HINT = 'See stream.stream_list.';
    END IF;
    INSERT INTO stream.streams (relid, partition_interval, retention, dedup_window, quarantine)
    VALUES (rel, partition_interval, retention, dedup_window, quarantine)
    RETURNING stream_id INTO sid;
    IF dedup_window IS NOT NULL THEN
        PERFORM stream._create_dedup_keys(sid);
    END IF;
END $function$
;
COMMENT ON FUNCTION stream._priv_register_stream(regrole,regclass,interval,interval,interval,regclass) IS 'Records a new stream in stream.streams after checking the caller owns it and create_stream made it (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_register_stream(regrole,regclass,interval,interval,interval,regclass) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream._on_sql_drop()
 RETURNS event_trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    gone    record;
    q       regclass;
    sid     integer;
    keys    regclass;
    changed boolean;
BEGIN
    -- activations of a dropped stream, or of a dropped aggregate's view
    -- (piece 70), go with it: their outbox rows stay
    DELETE FROM stream.activation_defs a
    USING pg_event_trigger_dropped_objects() o
    WHERE o.classid = 'pg_class'::regclass AND o.objsubid = 0
      AND (a.stream = o.objid OR a.aggregate = o.objid);
    changed := FOUND;
    IF changed THEN
        DELETE FROM stream.absence_timers t
        WHERE NOT EXISTS (SELECT 1 FROM stream.activation_defs a WHERE a.act_id = t.act_id);
    END IF;
    FOR gone IN SELECT objid FROM pg_event_trigger_dropped_objects()
                WHERE classid = 'pg_class'::regclass AND objsubid = 0
                  AND object_type IN ('table', 'partitioned table')
    LOOP
        SELECT quarantine INTO q FROM stream.streams WHERE relid = gone.objid;
        changed := changed OR FOUND;
        WITH s AS (DELETE FROM stream.streams WHERE relid = gone.objid RETURNING stream_id),
             c AS (DELETE FROM stream.contracts k USING s WHERE k.stream_id = s.stream_id
                   RETURNING k.schema_uri),
             r AS (DELETE FROM stream.schemas g USING c WHERE g.uri = c.schema_uri)
        SELECT s.stream_id INTO sid FROM s;
        -- (DROP SCHEMA ... CASCADE and DROP OWNED drop it in the same command)
        IF q IS NOT NULL AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = q) THEN
            EXECUTE format('DROP TABLE IF EXISTS %s', q);
        END IF;
        keys := stream._dedup_keys_of(sid);
        IF keys IS NOT NULL THEN
            EXECUTE format('DROP TABLE %s', keys);
        END IF;
    END LOOP;
    -- the worker reads its catalogs again at the commit (it may feed them)
    IF changed THEN
        PERFORM stream._aggregate_wake(false);
    END IF;
END $function$
;


CREATE OR REPLACE FUNCTION stream._ensure_partition(rel regclass, lower_bound timestamp with time zone, width interval)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    moved       bigint := 0;
    upper_bound timestamptz := stream._bucket_end(lower_bound, width);
    nsp         text;
    owner       regrole;
    pname       text := stream._partition_name(rel, lower_bound, width);
    part        regclass;
    dflt        regclass;
    again       bigint;
    waited      integer;
    left_behind boolean;
BEGIN
    SELECT n.nspname, c.relowner::regrole INTO nsp, owner
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = rel;
    IF to_regclass(format('%I.%I', nsp, pname)) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    SELECT i.inhrelid::regclass INTO dflt
    FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = rel AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT';

    -- a block of its own: undone when the worker has not read some of the
    -- rows yet (queue mode moves only rows it has read: stream._move_rows)
    BEGIN
        EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING STORAGE)', nsp, pname, rel);
        part := format('%I.%I', nsp, pname)::regclass;
        EXECUTE format('ALTER TABLE %s OWNER TO %I', part, owner::text);
        IF dflt IS NOT NULL THEN
            -- the bulk, while producers go on
            moved := stream._move_rows(dflt, part, lower_bound, upper_bound);
            IF moved > 0 THEN
                -- events moved: readers too finish first, then wait (above)
                SELECT s.setting::integer INTO waited FROM pg_catalog.pg_settings s
                WHERE s.name = 'lock_timeout';
                PERFORM pg_catalog.set_config('lock_timeout',
                    CASE WHEN waited BETWEEN 1 AND 1000 THEN waited ELSE 1000 END || 'ms', true);
                BEGIN
                    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', rel);
                EXCEPTION WHEN lock_not_available THEN
                    RAISE EXCEPTION USING ERRCODE = 'SE001';
                END;
                PERFORM pg_catalog.set_config('lock_timeout', waited || 'ms', true);
            ELSIF lower_bound > now() + interval '1 hour' THEN
                -- ahead: only producers writing to the default partition wait
                EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', dflt);
            ELSE
                -- the range receives events: in-flight producers finish first
                EXECUTE format('LOCK TABLE %s IN SHARE MODE', rel);
            END IF;
            -- what arrived since the bulk move (the lock stops more)
            again := stream._move_rows(dflt, part, lower_bound, upper_bound);
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE occurred_at >= $1 AND occurred_at < $2)', dflt)
               INTO left_behind USING lower_bound, upper_bound;
            -- moved under a lock readers pass: the next run moves them (above)
            IF left_behind OR (again > 0 AND moved = 0) THEN
                RAISE EXCEPTION USING ERRCODE = 'SE001';
            END IF;
            moved := moved + again;
        END IF;
        -- bounds in UTC ISO form, whatever the session's DateStyle and TimeZone
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)', rel, part,
                       to_char(lower_bound AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00',
                       to_char(upper_bound AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00');
        PERFORM stream._add_truncate_guard(part);
    EXCEPTION WHEN SQLSTATE 'SE001' THEN
        -- tried again by the next maintenance run
        RETURN NULL;
    END;
    RETURN moved;
END $function$
;
COMMENT ON FUNCTION stream._ensure_partition(regclass,timestamp with time zone,interval) IS 'Creates one partition of a stream if missing, adopting matching rows of the default partition; returns the rows adopted, NULL if it existed or is left for the next run (the queue''s reader, a lock, events that arrived meanwhile) (internal)';


CREATE OR REPLACE FUNCTION stream._drop_expired_partition(part regclass)
 RETURNS boolean
 LANGUAGE c
 STRICT
AS '$libdir/stream_events', $function$stream_drop_expired_partition$function$
;
COMMENT ON FUNCTION stream._drop_expired_partition(regclass) IS 'Drops a partition of a stream that ends before now() - the stream''s retention (true), else nothing (false); DROP TABLE checks ownership (internal, stream.maintain)';


CREATE OR REPLACE FUNCTION stream._expire_default_events(dflt regclass)
 RETURNS bigint
 LANGUAGE c
 STRICT
AS '$libdir/stream_events', $function$stream_expire_default_events$function$
;
COMMENT ON FUNCTION stream._expire_default_events(regclass) IS 'Deletes the events of a stream''s default partition older than now() - the stream''s retention; returns how many (internal, stream.maintain, owner only)';


CREATE OR REPLACE FUNCTION stream._priv_default_partition_events(caller regrole, stream regclass)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    dflt regclass;
    n    bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM stream.streams s WHERE s.relid = _priv_default_partition_events.stream)
       OR NOT pg_catalog.has_table_privilege(caller, stream, 'SELECT') THEN
        RETURN NULL;
    END IF;
    SELECT i.inhrelid::regclass INTO dflt
    FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = stream AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT';
    IF dflt IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('SELECT count(*) FROM %s', dflt) INTO n;
    RETURN n;
END $function$
;
COMMENT ON FUNCTION stream._priv_default_partition_events(regrole,regclass) IS 'Events a stream''s default partition holds, for a caller that may SELECT from the stream, else NULL (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_default_partition_events(regrole,regclass) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream._default_partition_events(stream regclass)
 RETURNS bigint
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT stream._priv('stream._priv_default_partition_events', stream)::bigint
$function$
;
COMMENT ON FUNCTION stream._default_partition_events(regclass) IS 'Events a stream''s default partition holds (outside the partition bound, or not adopted yet); NULL without SELECT on the stream (internal, stream.stream_list)';


CREATE OR REPLACE FUNCTION stream._priv_prune_dedup_keys(caller regrole, stream_id integer)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    rel  regclass;
    win  interval;
    keys regclass;
    n    bigint;
BEGIN
    SELECT s.relid, s.dedup_window INTO rel, win
    FROM stream.streams s WHERE s.stream_id = _priv_prune_dedup_keys.stream_id;
    IF rel IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM stream._check_owner(caller, rel, 'stream');
    -- only keys older than the stream's own window
    keys := stream._dedup_keys_of(_priv_prune_dedup_keys.stream_id);
    IF win IS NULL OR keys IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('DELETE FROM %s WHERE seen_at < now() - $1', keys) USING win;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $function$
;
COMMENT ON FUNCTION stream._priv_prune_dedup_keys(regrole,integer) IS 'Deletes a stream''s dedup keys older than its dedup_window, for its owner (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_prune_dedup_keys(regrole,integer) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream.maintain(target regclass DEFAULT NULL::regclass, prune boolean DEFAULT true)
 RETURNS TABLE(stream regclass, partitions_created integer, rows_moved bigint, partitions_dropped integer, dedup_keys_pruned bigint)
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    s       record;
    b       timestamptz;
    n_ahead  integer := coalesce(current_setting('stream_events.partitions_ahead', true)::integer, 3);
    n_behind integer := coalesce(current_setting('stream_events.partitions_behind', true)::integer, 3);
    max_behind integer := coalesce(current_setting('stream_events.max_partitions_behind', true)::integer, 100);
    per_run  integer := coalesce(current_setting('stream_events.max_partitions_per_run', true)::integer, 16);
    lo      timestamptz;
    hi      timestamptz;
    dflt    regclass;
    p       record;
    created integer;
    moved   bigint;
    dropped integer;
    pruned  bigint;
    n       bigint;
BEGIN
    -- the streams the caller owns (the worker calls it per stream as its owner)
    FOR s IN SELECT st.* FROM stream.streams st JOIN pg_catalog.pg_class c ON c.oid = st.relid
             WHERE (maintain.target IS NULL OR st.relid = maintain.target)
               AND pg_catalog.pg_has_role(c.relowner, 'USAGE')
             ORDER BY st.stream_id
    LOOP
        created := 0; moved := 0; dropped := 0; pruned := 0;
      BEGIN
        -- one maintainer per stream at a time (the worker, or a user)
        PERFORM pg_advisory_xact_lock(24158, s.stream_id);
        -- Partitions: n_behind before the current one (late events), the
        -- current one and n_ahead after it, none already past retention.
        b := stream._bucket_start(now(), s.partition_interval);
        FOR i IN 1 .. n_behind LOOP
            b := stream._bucket_start(b - interval '1 microsecond', s.partition_interval);
        END LOOP;
        FOR i IN 0 .. n_behind + n_ahead LOOP
            IF (s.retention IS NULL OR stream._bucket_end(b, s.partition_interval) > now() - s.retention)
               AND stream._ensure_partition(s.relid, b, s.partition_interval) IS NOT NULL THEN
                created := created + 1;
            END IF;
            b := stream._bucket_end(b, s.partition_interval);
        END LOOP;
        -- Events that landed in the default partition (late or early):
        -- partitions for them only within the bound, at most per_run per
        -- run.  The bound: from max_behind partitions before the current
        -- one (not before now() - retention) to the end of the last one
        -- kept ahead.  Events outside stay in the default partition
        -- (stream.stream_list.default_partition_events), so random far-past
        -- or far-future timestamps cannot create thousands of partitions.
        b := stream._bucket_start(now(), s.partition_interval);
        lo := ((b AT TIME ZONE 'UTC') - s.partition_interval * max_behind) AT TIME ZONE 'UTC';
        hi := ((b AT TIME ZONE 'UTC') + s.partition_interval * (n_ahead + 1)) AT TIME ZONE 'UTC';
        IF s.retention IS NOT NULL AND lo < now() - s.retention THEN
            lo := now() - s.retention;
        END IF;
        SELECT i.inhrelid::regclass INTO dflt
        FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = s.relid AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT';
        IF dflt IS NOT NULL AND lo < hi THEN
            FOR b IN EXECUTE format('SELECT DISTINCT stream._bucket_start(occurred_at, $1) FROM %s '
                                    'WHERE occurred_at >= $2 AND occurred_at < $3 ORDER BY 1 DESC LIMIT $4', dflt)
                     USING s.partition_interval, lo, hi, per_run
            LOOP
                -- a bucket that starts before lo may end after now() - retention
                CONTINUE WHEN s.retention IS NOT NULL
                              AND stream._bucket_end(b, s.partition_interval) <= now() - s.retention;
                n := stream._ensure_partition(s.relid, b, s.partition_interval);
                IF n IS NOT NULL THEN
                    created := created + 1;
                    moved := moved + n;
                END IF;
            END LOOP;
        END IF;
        -- Retention: drop whole partitions that end before now() - retention,
        -- and delete the default partition's events older than that.
        IF s.retention IS NOT NULL THEN
            IF dflt IS NOT NULL THEN
                PERFORM stream._expire_default_events(dflt);
            END IF;
            FOR p IN SELECT c.oid::regclass AS part
                     FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
                     WHERE i.inhparent = s.relid
                       AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
                       AND (regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid),
                                         'TO \(''([^'']*)''\)'))[1]::timestamptz
                           <= now() - s.retention
            LOOP
                IF stream._drop_expired_partition(p.part) THEN
                    dropped := dropped + 1;
                END IF;
            END LOOP;
        END IF;
        -- Dedup keys past the window.
        IF prune AND s.dedup_window IS NOT NULL THEN
            pruned := stream._priv('stream._priv_prune_dedup_keys', s.stream_id)::bigint;
        END IF;
      EXCEPTION WHEN lock_not_available THEN
        -- a long transaction holds a lock we need (lock_timeout): this
        -- stream's maintenance is undone and tried again at the next run
        RAISE WARNING 'maintenance of stream % postponed: %', s.relid, SQLERRM
            USING DETAIL = 'A transaction that read or wrote the stream holds a lock that partition maintenance needs.',
                  HINT = 'See pg_locks and pg_stat_activity for long transactions on the stream; the worker tries again after stream_events.naptime.';
        created := 0; moved := 0; dropped := 0; pruned := 0;
      END;
        stream := s.relid;
        partitions_created := created;
        rows_moved := moved;
        partitions_dropped := dropped;
        dedup_keys_pruned := pruned;
        RETURN NEXT;
    END LOOP;
END $function$
;


CREATE OR REPLACE FUNCTION stream._stream_readable(rel regclass)
 RETURNS boolean
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT coalesce(pg_catalog.has_table_privilege(rel, 'SELECT')
                    OR pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c
                                               WHERE c.oid = rel), 'USAGE'), false)
$function$
;
COMMENT ON FUNCTION stream._stream_readable(regclass) IS 'True if the current role owns the stream or may SELECT from it: what status views show it (internal)';


CREATE OR REPLACE FUNCTION stream._contract_schema_check(stream regclass, schema jsonb, uri text DEFAULT NULL::text)
 RETURNS void
 LANGUAGE c
AS '$libdir/stream_events', $function$stream_contract_schema_check$function$
;
COMMENT ON FUNCTION stream._contract_schema_check(regclass,jsonb,text) IS 'Compiles a contract''s schema as ingest will (with the stream''s format_assertion), raising what would otherwise refuse every event (internal)';


CREATE OR REPLACE FUNCTION stream._priv_define_contract(caller regrole, stream regclass, event_name text, schema jsonb, compatibility text)
 RETURNS integer
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
END $function$
;
COMMENT ON FUNCTION stream._priv_define_contract(regrole,regclass,text,jsonb,text) IS 'The body of define_contract: checks ownership and compatibility, records the version and registers its schema (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_define_contract(regrole,regclass,text,jsonb,text) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream.define_contract(stream regclass, event_name text, schema jsonb, compatibility text DEFAULT 'backward'::text)
 RETURNS integer
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT stream._priv('stream._priv_define_contract', stream, event_name, schema, compatibility)::integer
$function$
;


CREATE OR REPLACE FUNCTION stream._priv_set_policy(caller regrole, stream regclass, on_violation text, on_unplanned text, event_name_pattern text, require_identity boolean, max_future interval, format_assertion boolean)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
END $function$
;
COMMENT ON FUNCTION stream._priv_set_policy(regrole,regclass,text,text,text,boolean,interval,boolean) IS 'The body of set_policy, for the stream''s owner (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_set_policy(regrole,regclass,text,text,text,boolean,interval,boolean) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream.set_policy(stream regclass, on_violation text DEFAULT NULL::text, on_unplanned text DEFAULT NULL::text, event_name_pattern text DEFAULT NULL::text, require_identity boolean DEFAULT NULL::boolean, max_future interval DEFAULT NULL::interval, format_assertion boolean DEFAULT NULL::boolean)
 RETURNS void
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT stream._priv('stream._priv_set_policy', stream, on_violation, on_unplanned,
                        event_name_pattern, require_identity, max_future, format_assertion)
$function$
;
COMMENT ON FUNCTION stream.set_policy(regclass,text,text,text,boolean,interval,boolean) IS 'Sets what happens to events that break a contract (reject, quarantine, warn), to unplanned events, the envelope rules and whether JSON Schema format asserts (format_assertion); NULL keeps a setting, '''' clears the pattern';


CREATE OR REPLACE FUNCTION stream._register_schema_internal(uri text, schema jsonb)
 RETURNS void
 LANGUAGE c
 STRICT
AS '$libdir/stream_events', $function$stream_register_schema$function$
;
COMMENT ON FUNCTION stream._register_schema_internal(text,jsonb) IS 'Checks and stores a schema document under its URI in stream.schemas (internal, run by the catalog writers)';
REVOKE ALL ON FUNCTION stream._register_schema_internal(text,jsonb) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream._priv_register_schema(caller regrole, uri text, schema jsonb)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
END $function$
;
COMMENT ON FUNCTION stream._priv_register_schema(regrole,text,jsonb) IS 'The body of register_schema: a URI belongs to the role that registered it first (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_register_schema(regrole,text,jsonb) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream.register_schema(uri text, schema jsonb)
 RETURNS void
 LANGUAGE sql
 STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT stream._priv('stream._priv_register_schema', uri, schema)
$function$
;
COMMENT ON FUNCTION stream.register_schema(text,jsonb) IS 'Stores (or replaces) schema under an absolute URI in stream.schemas, for $ref and $schema; only the role that first registered a URI may replace it';


CREATE OR REPLACE FUNCTION stream._consumer_position(OUT decoded_lsn pg_lsn, OUT decoded_at timestamp with time zone)
 RETURNS record
 LANGUAGE c
AS '$libdir/stream_events', $function$stream_consumer_position$function$
;
COMMENT ON FUNCTION stream._consumer_position() IS 'WAL position this database''s worker has decoded and applied everything up to, and when (internal; the lag of stream.aggregates and stream.activation_status)';


CREATE OR REPLACE FUNCTION stream.consumer_mode()
 RETURNS text
 LANGUAGE c
 STABLE
AS '$libdir/stream_events', $function$stream_consumer_mode$function$
;
COMMENT ON FUNCTION stream.consumer_mode() IS 'What feeds continuous aggregates and batched activations here: logical (decoding) or queue (the ingest queue); see stream_events.consumer';


CREATE OR REPLACE FUNCTION stream._consumer_start_position()
 RETURNS pg_lsn
 LANGUAGE c
AS '$libdir/stream_events', $function$stream_consumer_start_position$function$
;
COMMENT ON FUNCTION stream._consumer_start_position() IS 'Where a definition created now starts: the WAL insert position, or in queue mode the window after the last tick (internal)';


CREATE OR REPLACE FUNCTION stream._queue_lag(pos pg_lsn)
 RETURNS double precision
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT coalesce(greatest(extract(epoch FROM now() - min(q.first_received_at)), 0)::double precision, 0)
    FROM stream.queue_ticks t, stream.queue_txns q
    WHERE t.tick = (pos - '80000000/0'::pg_lsn)::bigint - 1
      AND q.xid >= pg_snapshot_xmin(t.snap) AND NOT pg_visible_in_snapshot(q.xid, t.snap)
$function$
;
COMMENT ON FUNCTION stream._queue_lag(pg_lsn) IS 'Queue mode: age in seconds of the oldest committed event a definition at this position has not read (internal; the lag of stream.aggregates)';


CREATE OR REPLACE FUNCTION stream._consumer_mode_changed()
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    queue boolean := stream.consumer_mode() = 'queue';
    d record;
BEGIN
    FOR d IN SELECT a.view, a.owner FROM stream.aggregate_defs a
             WHERE a.applied_lsn IS NOT NULL AND (a.applied_lsn >= '80000000/0') <> queue LOOP
        PERFORM stream._priv_rebuild_aggregate(d.owner, d.view);
    END LOOP;
    UPDATE stream.activation_defs a
       SET applied_lsn = CASE WHEN a.kind = 'threshold' THEN NULL ELSE stream._consumer_start_position() END,
           start_snapshot = CASE WHEN queue THEN pg_catalog.pg_current_snapshot() END
     WHERE a.delivery = 'batched' AND a.applied_lsn IS NOT NULL
       AND (a.applied_lsn >= '80000000/0') <> queue;
END $function$
;
COMMENT ON FUNCTION stream._consumer_mode_changed() IS 'Moves every definition to the consumer''s mode: aggregates rebuilt, activations started from now (internal, the worker)';
REVOKE ALL ON FUNCTION stream._consumer_mode_changed() FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream._aggregate_analyze_as(role regrole, search_path text, query text, OUT stream regclass, OUT query_tree text, OUT column_names text[], OUT is_key boolean[], OUT visible boolean[], OUT state_types text[], OUT result_types text[], OUT aggregates regprocedure[])
 RETURNS record
 LANGUAGE c
AS '$libdir/stream_events', $function$stream_call_as$function$
;
COMMENT ON FUNCTION stream._aggregate_analyze_as(regrole,text,text) IS 'stream._aggregate_analyze run as role in search_path, restricted: the analysed tree the worker executes is made here, with the owner''s rights (internal)';
REVOKE ALL ON FUNCTION stream._aggregate_analyze_as(regrole,text,text) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream._aggregate_columns(column_names text[], is_key boolean[], visible boolean[], result_types text[], aggregates regprocedure[], OUT view_select text, OUT state_keys text)
 RETURNS record
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    view_select := '';
    state_keys := '';
    FOR i IN 1 .. array_length(column_names, 1) LOOP
        IF is_key[i] THEN
            state_keys := state_keys || format('%I, ', column_names[i]);
            IF visible[i] THEN
                view_select := view_select || format('%I, ', column_names[i]);
            END IF;
        ELSE
            view_select := view_select || format('stream.finalize_state(%I, %L::regprocedure, NULL::%s) AS %I, ',
                                                 column_names[i], aggregates[i]::text, result_types[i],
                                                 column_names[i]);
        END IF;
    END LOOP;
    view_select := left(view_select, -2);
    state_keys := left(state_keys, -2);
END $function$
;
COMMENT ON FUNCTION stream._aggregate_columns(text[],boolean[],boolean[],text[],regprocedure[]) IS 'The view select list and state key columns of an analysed aggregate query (internal)';


CREATE OR REPLACE FUNCTION stream._priv_register_aggregate(caller regrole, view_rel regclass, state_rel regclass, query text, search_path text, on_error text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    a record;
    c record;
BEGIN
    PERFORM stream._check_owner(caller, view_rel, 'view');
    PERFORM stream._check_owner(caller, state_rel, 'table');
    IF EXISTS (SELECT 1 FROM stream.aggregate_defs d WHERE d.view = view_rel OR d.state_table = state_rel) THEN
        RAISE EXCEPTION 'continuous aggregate % already exists', view_rel
            USING ERRCODE = 'duplicate_object',
                  HINT = 'See stream.aggregates.';
    END IF;
    a := stream._aggregate_analyze_as(caller, search_path, query);
    PERFORM stream._check_privilege(caller, a.stream, 'SELECT',
                                    'the worker reads the stream as the aggregate''s owner.');
    c := stream._aggregate_columns(a.column_names, a.is_key, a.visible, a.result_types, a.aggregates);
    PERFORM stream._aggregate_depend(state_rel, a.stream);
    PERFORM stream._check_on_error(on_error);
    INSERT INTO stream.aggregate_defs (view, state_table, stream, owner, query, query_tree, search_path,
                                       view_select, state_keys, on_error)
    VALUES (view_rel, state_rel, a.stream, caller, query, a.query_tree, search_path,
            c.view_select, c.state_keys, on_error);
END $function$
;
COMMENT ON FUNCTION stream._priv_register_aggregate(regrole,regclass,regclass,text,text,text) IS 'Records a continuous aggregate after analysing its query as the caller and checking ownership and SELECT on the stream (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_register_aggregate(regrole,regclass,regclass,text,text,text) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream._check_on_error(on_error text)
 RETURNS void
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF on_error IS NULL OR on_error NOT IN ('skip', 'stop') THEN
        RAISE EXCEPTION 'invalid on_error %', coalesce(quote_literal(on_error), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'skip: an event that makes the definition fail is left out of it and kept in stream.dead_letters; stop: the definition is parked until stream.resume.',
                  HINT = 'Pass on_error => ''skip'' (the default) or ''stop''.';
    END IF;
END $function$
;
COMMENT ON FUNCTION stream._check_on_error(text) IS 'Raises unless on_error is skip or stop (internal)';


CREATE OR REPLACE FUNCTION stream.create_aggregate(name text, query text, on_error text DEFAULT 'skip'::text)
 RETURNS regclass
 LANGUAGE plpgsql
AS $function$
DECLARE
    n        record;
    a        record;
    state_rel regclass;
    view_rel regclass;
    cols     text := '';
    keys     text := '';
    sel      text := '';
BEGIN
    n := stream._aggregate_name(name);
    IF to_regnamespace(quote_ident(n.schema_name)) IS NULL THEN
        RAISE EXCEPTION 'schema "%" does not exist', n.schema_name
            USING ERRCODE = 'invalid_schema_name',
                  HINT = format('Create it first with CREATE SCHEMA %I.', n.schema_name);
    END IF;
    IF to_regclass(format('%I.%I', n.schema_name, n.rel_name)) IS NOT NULL THEN
        RAISE EXCEPTION 'relation "%.%" already exists', n.schema_name, n.rel_name
            USING ERRCODE = 'duplicate_table',
                  DETAIL = 'create_aggregate creates a view of that name.',
                  HINT = 'Choose another name, or drop the existing aggregate with stream.drop_aggregate.';
    END IF;
    IF to_regclass(format('%I.%I', n.schema_name, n.rel_name || '_state')) IS NOT NULL THEN
        RAISE EXCEPTION 'relation "%.%" already exists', n.schema_name, n.rel_name || '_state'
            USING ERRCODE = 'duplicate_table',
                  DETAIL = 'create_aggregate creates its state table under that name.',
                  HINT = 'Choose another name for the aggregate.';
    END IF;
    IF query IS NULL THEN
        RAISE EXCEPTION 'the defining query must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass a query such as SELECT stream.tumble(occurred_at, ''1 minute'') AS minute, count(*) FROM clicks GROUP BY 1.';
    END IF;

    PERFORM stream._check_on_error(on_error);
    a := stream._aggregate_analyze(query);
    PERFORM stream._activation_decoding();

    FOR i IN 1 .. array_length(a.column_names, 1) LOOP
        cols := cols || format('%I %s, ', a.column_names[i], a.state_types[i]);
    END LOOP;
    cols := left(cols, -2);
    SELECT c.view_select, c.state_keys INTO sel, keys
    FROM stream._aggregate_columns(a.column_names, a.is_key, a.visible, a.result_types, a.aggregates) c;

    EXECUTE format('CREATE TABLE %I.%I (%s)', n.schema_name, n.rel_name || '_state', cols);
    state_rel := format('%I.%I', n.schema_name, n.rel_name || '_state')::regclass;
    EXECUTE format('CREATE UNIQUE INDEX %I ON %s (%s) NULLS NOT DISTINCT',
                   n.rel_name || '_state_key', state_rel, keys);
    EXECUTE format('COMMENT ON TABLE %s IS %L', state_rel,
                   format('Partial aggregate states of continuous aggregate %I.%I (stream_events; written by the background worker)',
                          n.schema_name, n.rel_name));
    EXECUTE format('CREATE VIEW %I.%I AS SELECT %s FROM %s',
                   n.schema_name, n.rel_name, sel, state_rel);
    view_rel := format('%I.%I', n.schema_name, n.rel_name)::regclass;
    EXECUTE format('COMMENT ON VIEW %s IS %L', view_rel,
                   format('Continuous aggregate over stream %s (stream_events): %s', a.stream, query));
    PERFORM stream._priv('stream._priv_register_aggregate', view_rel, state_rel, query,
                         stream._search_path(), create_aggregate.on_error);
    PERFORM stream._aggregate_wake(false);
    RETURN view_rel;
END
$function$
;
COMMENT ON FUNCTION stream.create_aggregate(text,text,text) IS 'Creates a continuous aggregate: a view kept equal to the defining query over one stream by the background worker (backfilled, then exactly once from logical decoding); on_error: skip (poison events go to stream.dead_letters) or stop (park)';


CREATE OR REPLACE FUNCTION stream._priv_rebuild_aggregate(caller regrole, view_rel regclass)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    def stream.aggregate_defs;
BEGIN
    -- The row lock orders us with the worker's apply transaction.
    SELECT d.* INTO def FROM stream.aggregate_defs d WHERE d.view = view_rel FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'continuous aggregate % does not exist', view_rel
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT name FROM stream.aggregates.';
    END IF;
    IF NOT pg_catalog.pg_has_role(caller, def.owner, 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of continuous aggregate %', view_rel
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Its owner is %s.', def.owner),
                  HINT = format('Ask %s, its owner.', def.owner);
    END IF;
    EXECUTE format('TRUNCATE %s', def.state_table);
    -- the backfill records again what still fails
    DELETE FROM stream.dead_letters l WHERE l.kind = 'aggregate' AND l.def_id = def.agg_id;
    UPDATE stream.aggregate_defs d
       SET status = 'backfill', last_error = NULL, applied_lsn = NULL, applied_at = NULL,
           events_backfilled = NULL, apply_rate = NULL
     WHERE d.agg_id = def.agg_id;
END $function$
;
COMMENT ON FUNCTION stream._priv_rebuild_aggregate(regrole,regclass) IS 'The body of rebuild_aggregate, for the aggregate''s owner (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_rebuild_aggregate(regrole,regclass) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream.rebuild_aggregate(name text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    def stream.aggregate_defs;
BEGIN
    def := stream._aggregate_lookup(name);
    PERFORM stream._priv('stream._priv_rebuild_aggregate', def.view);
    PERFORM stream._aggregate_wake(false);
END $function$
;


CREATE OR REPLACE FUNCTION stream._flush_hint(status text, last_error text)
 RETURNS text
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT CASE
        WHEN current_setting('shared_preload_libraries') !~ '(^|[ ,])"?stream_events"?($|[ ,])' THEN
            'The background worker is not running: add stream_events to shared_preload_libraries in postgresql.conf and restart the server.'
        WHEN current_setting('wal_level') <> 'logical' AND stream.consumer_mode() <> 'queue' THEN
            'The worker reads changes by logical decoding: set wal_level = logical in postgresql.conf and restart the server.'
        WHEN last_error LIKE '%may not be used as an output plugin%' THEN
            'The server refuses this library as an output plugin: add stream_events to output_plugin_libraries (superuser setting, PostgreSQL 15.20 and later) and reload.'
        WHEN NOT EXISTS (SELECT 1 FROM stream.worker_status() w
                         WHERE w.datname = current_database() AND w.pid IS NOT NULL) THEN
            'This database has no running stream_events worker: see stream.worker_status() and the server log (max_worker_processes may be too low).'
        WHEN status = 'error' THEN
            'The definition is parked after the error above: fix its cause, then SELECT stream.resume(...) (it replays from its applied LSN).'
        WHEN status = 'retry' THEN
            'The worker has not applied the dead letters stream.retry_dead_letters asked for yet: pass a longer timeout; a parked definition needs stream.resume first.'
        WHEN status = 'backfill' THEN
            'The aggregate is still backfilling its stream: pass a longer timeout (see stream.aggregates for progress).'
        ELSE
            'The worker is behind: pass a longer timeout, and see lag_bytes and apply_rate in stream.aggregates.'
    END
$function$
;
COMMENT ON FUNCTION stream._flush_hint(text,text) IS 'The HINT of stream.flush when it times out: the likeliest cause (internal)';


CREATE OR REPLACE FUNCTION stream.flush(name text DEFAULT NULL::text, timeout interval DEFAULT '00:00:10'::interval)
 RETURNS pg_lsn
 LANGUAGE plpgsql
AS $function$
DECLARE
    target   pg_lsn;
    started  timestamptz := clock_timestamp();
    deadline timestamptz := clock_timestamp() + coalesce(timeout, interval '10 s');
    one      stream.aggregate_defs;
    behind   record;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'stream.flush cannot wait inside a % transaction', current_setting('transaction_isolation')
            USING ERRCODE = 'active_sql_transaction',
                  DETAIL = 'Its snapshot would never show the worker''s progress.',
                  HINT = 'Call stream.flush in a READ COMMITTED transaction, before starting the REPEATABLE READ one.';
    END IF;
    IF name IS NOT NULL THEN
        one := stream._aggregate_lookup(name);
    END IF;
    -- Every change committed before this call ends before target.  In
    -- queue mode: the window after the first tick made after this call.
    target := stream._aggregate_wake(true);
    WHILE target IS NULL AND stream.consumer_mode() = 'queue'
          AND (EXISTS (SELECT 1 FROM stream.aggregate_defs)
               OR EXISTS (SELECT 1 FROM stream.activation_defs WHERE delivery = 'batched')) LOOP
        SELECT '80000000/0'::pg_lsn + (t.tick + 1) INTO target
        FROM stream.queue_ticks t WHERE t.made_at >= started ORDER BY t.tick LIMIT 1;
        EXIT WHEN target IS NOT NULL;
        IF clock_timestamp() >= deadline THEN
            RAISE EXCEPTION 'the worker has not read the ingest queue within %', timeout
                USING ERRCODE = 'query_canceled',
                      DETAIL = 'No tick was made since the call.',
                      HINT = 'Check that the stream_events worker runs in this database (stream.worker_status()).';
        END IF;
        PERFORM pg_sleep(0.005);
        PERFORM stream._aggregate_wake(true);
    END LOOP;
    LOOP
        SELECT d.view, d.status, d.last_error, d.applied_lsn INTO behind
        FROM stream.aggregate_defs d
        WHERE (one.agg_id IS NULL OR d.agg_id = one.agg_id)
          AND (d.status <> 'running' OR d.applied_lsn IS NULL OR d.applied_lsn < target)
        ORDER BY d.agg_id LIMIT 1;
        IF NOT FOUND AND one.agg_id IS NULL THEN
            -- activations (piece 70) are looked at by the same consumer
            SELECT d.name AS view, d.status, d.last_error, d.applied_lsn INTO behind
            FROM stream.activation_defs d
            WHERE d.delivery = 'batched' AND (d.applied_lsn IS NULL OR d.applied_lsn < target)
            ORDER BY d.act_id LIMIT 1;
        END IF;
        IF NOT FOUND THEN
            -- dead letters stream.retry_dead_letters asked the worker for
            SELECT l.definition AS view, 'retry' AS status, l.error AS last_error, NULL::pg_lsn AS applied_lsn
              INTO behind
            FROM stream.dead_letters l
            WHERE l.retry_requested
              AND (one.agg_id IS NULL OR (l.kind = 'aggregate' AND l.def_id = one.agg_id))
            LIMIT 1;
        END IF;
        EXIT WHEN NOT FOUND;
        IF stream.consumer_mode() = 'queue' THEN
            -- the worker writes positions of definitions without new events
            -- when asked (a tick request: the flush marker of queue mode)
            PERFORM stream._aggregate_wake(true);
        END IF;
        IF clock_timestamp() >= deadline THEN
            RAISE EXCEPTION 'continuous aggregate % has not caught up within %', behind.view, timeout
                USING ERRCODE = 'query_canceled',
                      DETAIL = format('Status %s, applied up to %s, waiting for %s.%s', behind.status,
                                      coalesce(behind.applied_lsn::text, 'nothing yet'), target,
                                      coalesce(' Last error: ' || behind.last_error, '')),
                      HINT = stream._flush_hint(behind.status, behind.last_error);
        END IF;
        PERFORM pg_sleep(0.005);
    END LOOP;
    RETURN target;
END $function$
;


CREATE OR REPLACE FUNCTION stream._aggregate_adopt()
 RETURNS integer
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    here text := stream._aggregate_origin();
    d    record;
    a    record;
    n    integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM stream.aggregate_defs WHERE origin IS DISTINCT FROM here) THEN
        RETURN 0;
    END IF;
    FOR d IN SELECT * FROM stream.aggregate_defs WHERE origin IS DISTINCT FROM here
             ORDER BY agg_id FOR UPDATE
    LOOP
        n := n + 1;
        IF EXISTS (SELECT 1 FROM pg_stat_activity
                   WHERE datname = current_database() AND application_name = 'pg_restore'
                     AND pid <> pg_backend_pid())
           OR NOT EXISTS (SELECT 1 FROM stream.streams s WHERE s.relid = d.stream) THEN
            CONTINUE;       -- the restore is not finished: try again later
        END IF;
        a := stream._aggregate_analyze_as(d.owner, coalesce(nullif(d.search_path, ''), 'public'), d.query);
        IF a.stream IS DISTINCT FROM d.stream THEN
            RAISE EXCEPTION 'restored continuous aggregate % reads %, its catalog says %', d.view, a.stream, d.stream
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = format('Drop it (SELECT stream.drop_aggregate(%L)) and create it again.', d.view::text);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_depend
                       WHERE classid = 'pg_class'::regclass AND objid = d.state_table::oid
                         AND refclassid = 'pg_class'::regclass AND refobjid = d.stream::oid) THEN
            PERFORM stream._aggregate_depend(d.state_table, d.stream);
        END IF;
        EXECUTE format('TRUNCATE %s', d.state_table);
        UPDATE stream.aggregate_defs
           SET query_tree = a.query_tree, origin = here, status = 'backfill', last_error = NULL,
               applied_lsn = NULL, applied_at = NULL, last_commit_at = NULL, events_applied = 0,
               events_backfilled = NULL, apply_rate = NULL
         WHERE agg_id = d.agg_id;
        RAISE LOG 'stream_events: continuous aggregate % was restored from a dump; it is rebuilt from its stream', d.view;
        PERFORM stream._aggregate_wake(false);
    END LOOP;
    RETURN n;
END $function$
;


CREATE OR REPLACE FUNCTION stream._on_aggregate_drop()
 RETURNS event_trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    gone record;
    n    integer := 0;
BEGIN
    FOR gone IN SELECT objid FROM pg_event_trigger_dropped_objects()
                WHERE classid = 'pg_class'::regclass AND objsubid = 0
                  AND object_type IN ('table', 'view')
    LOOP
        DELETE FROM stream.dead_letters l
        USING stream.aggregate_defs d
        WHERE l.kind = 'aggregate' AND l.def_id = d.agg_id
          AND (d.view::oid = gone.objid OR d.state_table::oid = gone.objid);
        DELETE FROM stream.aggregate_defs d
        WHERE d.view::oid = gone.objid OR d.state_table::oid = gone.objid;
        IF FOUND THEN n := n + 1; END IF;
    END LOOP;
    IF n > 0 THEN
        PERFORM stream._aggregate_wake(false);
    END IF;
END $function$
;


CREATE OR REPLACE FUNCTION stream._channel_readable_by(who regrole, channel text)
 RETURNS boolean
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT EXISTS (SELECT 1 FROM stream.channels c
                   WHERE c.channel = _channel_readable_by.channel
                     AND (pg_catalog.pg_has_role(who, c.owner, 'USAGE')
                          OR EXISTS (SELECT 1 FROM stream.channel_grants g
                                     WHERE g.channel = c.channel
                                       AND pg_catalog.pg_has_role(who, g.grantee, 'USAGE'))))
$function$
;
COMMENT ON FUNCTION stream._channel_readable_by(regrole,text) IS 'True if the role owns the channel or was granted it (internal)';


CREATE OR REPLACE FUNCTION stream._channel_readable(channel text)
 RETURNS boolean
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT stream._channel_readable_by(current_user::regrole, channel)
$function$
;
COMMENT ON FUNCTION stream._channel_readable(text) IS 'True if the current role owns the channel or was granted it (internal; row level security of the outbox)';


CREATE OR REPLACE FUNCTION stream._activation_check_as(role regrole, search_path text, rel regclass, condition text, key text, payload text)
 RETURNS void
 LANGUAGE c
AS '$libdir/stream_events', $function$stream_call_as$function$
;
COMMENT ON FUNCTION stream._activation_check_as(regrole,text,regclass,text,text,text) IS 'stream._activation_check run as role in search_path, restricted (internal)';
REVOKE ALL ON FUNCTION stream._activation_check_as(regrole,text,regclass,text,text,text) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream._activation_trees(rel regclass, condition text, key text, payload text, cancelled_by text)
 RETURNS text[]
 LANGUAGE c
AS '$libdir/stream_events', $function$stream_activation_trees$function$
;
COMMENT ON FUNCTION stream._activation_trees(regclass,text,text,text,text) IS 'An activation''s condition, key, payload and cancelled_by analysed into node trees for the catalog (internal)';
REVOKE ALL ON FUNCTION stream._activation_trees(regclass,text,text,text,text) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream._activation_trees_as(role regrole, search_path text, rel regclass, condition text, key text, payload text, cancelled_by text)
 RETURNS text[]
 LANGUAGE c
AS '$libdir/stream_events', $function$stream_call_as$function$
;
COMMENT ON FUNCTION stream._activation_trees_as(regrole,text,regclass,text,text,text,text) IS 'stream._activation_trees run as role in search_path, restricted: the trees the worker runs are analysed with the owner''s rights (internal)';
REVOKE ALL ON FUNCTION stream._activation_trees_as(regrole,text,regclass,text,text,text,text) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream._activation_validate(name text, channel text, rel regclass)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF name IS NULL OR name !~ '^[A-Za-z_][A-Za-z0-9_.-]*$' OR length(name) >= 64 THEN
        RAISE EXCEPTION 'invalid activation name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_name',
                  HINT = 'Use at most 63 letters, digits, _ . and -, starting with a letter or _.';
    END IF;
    IF channel IS NULL OR channel !~ '^[a-z_][a-z0-9_$]*$' OR length(channel) >= 64 THEN
        RAISE EXCEPTION 'invalid channel name %', coalesce(quote_ident(channel), 'NULL')
            USING ERRCODE = 'invalid_name',
                  DETAIL = 'The channel is what clients LISTEN on (it defaults to the activation''s name).',
                  HINT = 'Use a lower-case identifier of at most 63 characters, e.g. cart_events, so that LISTEN works without quoting.';
    END IF;
END $function$
;
COMMENT ON FUNCTION stream._activation_validate(text,text,regclass) IS 'Checks an activation''s name and channel (internal)';


CREATE OR REPLACE FUNCTION stream._priv_register_activation(caller regrole, name text, kind text, rel regclass, aggregate regclass, condition text, cancelled_by text, within interval, key text, payload text, channel text, cooldown interval, delivery text, notify text, search_path text, on_error text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    watched regclass := coalesce(aggregate, rel);
    ch_owner regrole;
    agg stream.aggregate_defs;
    mode text := notify;
    trees text[];
BEGIN
    PERFORM stream._activation_validate(name, channel, NULL);
    PERFORM stream._check_on_error(on_error);
    IF EXISTS (SELECT 1 FROM stream.activation_defs d WHERE d.name = _priv_register_activation.name) THEN
        RAISE EXCEPTION 'activation "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Drop it first with stream.drop_activation, or choose another name.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM stream.streams s WHERE s.relid = rel) THEN
        RAISE EXCEPTION 'relation % is not a stream', coalesce(rel::text, 'NULL')
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Activations watch streams created with stream.create_stream.';
    END IF;
    PERFORM stream._check_privilege(caller, watched, 'SELECT',
                                    'the worker evaluates the activation as its owner, who must be able to read what it watches.');
    IF kind = 'threshold' THEN
        SELECT d.* INTO agg FROM stream.aggregate_defs d WHERE d.view = aggregate;
        IF NOT FOUND OR agg.stream <> rel THEN
            RAISE EXCEPTION '% is not a continuous aggregate of stream %', aggregate, rel
                USING ERRCODE = 'wrong_object_type',
                      HINT = 'See SELECT name, stream FROM stream.aggregates.';
        END IF;
        IF NOT pg_catalog.pg_has_role(caller, agg.owner, 'USAGE') THEN
            RAISE EXCEPTION 'permission denied for continuous aggregate %', aggregate
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = format('The condition is evaluated as the aggregate is applied, as its owner %s.', agg.owner),
                      HINT = 'Define thresholds as the aggregate''s owner (or a member of that role).';
        END IF;
    END IF;
    IF mode IS NOT NULL AND mode NOT IN ('full', 'id') THEN
        RAISE EXCEPTION 'invalid notify %', quote_literal(mode)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'full: the NOTIFY carries the outbox row as JSON; id: only its id.',
                  HINT = 'Pass notify => ''full'' or ''id'' (LISTEN has no access control: use id for private data).';
    END IF;
    -- LISTEN/NOTIFY has no access control: unless told otherwise, a stream
    -- that PUBLIC cannot read notifies ids only.
    mode := coalesce(mode, CASE WHEN coalesce(pg_catalog.has_table_privilege('public', watched, 'SELECT'), false)
                                THEN 'full' ELSE 'id' END);
    -- the expressions, analysed as the caller in the caller's search_path
    PERFORM stream._activation_check_as(caller, search_path, watched, condition,
                                        CASE WHEN kind = 'threshold' THEN NULL ELSE key END, payload);
    IF cancelled_by IS NOT NULL THEN
        PERFORM stream._activation_check_as(caller, search_path, rel, cancelled_by, NULL::text, NULL::text);
    END IF;
    IF kind <> 'threshold' THEN
        trees := stream._activation_trees_as(caller, search_path, rel, condition, key, payload, cancelled_by);
    END IF;
    -- the channel: new (the caller owns it from now on) or the caller's
    INSERT INTO stream.channels (channel, owner) VALUES (_priv_register_activation.channel, caller)
    ON CONFLICT DO NOTHING;
    SELECT c.owner INTO ch_owner FROM stream.channels c WHERE c.channel = _priv_register_activation.channel;
    IF NOT pg_catalog.pg_has_role(caller, ch_owner, 'USAGE') THEN
        RAISE EXCEPTION 'permission denied for channel %', channel
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Channel %s belongs to role %s.', channel, ch_owner),
                  HINT = 'Choose another channel name: a channel carries the activations of the role that owns it.';
    END IF;
    INSERT INTO stream.activation_defs (name, kind, stream, aggregate, condition, cancelled_by, within, key,
                                        payload, channel, cooldown, delivery, owner, search_path,
                                        applied_lsn, notify, condition_tree, key_tree, payload_tree,
                                        cancelled_by_tree, on_error, start_snapshot)
    VALUES (name, kind, rel, aggregate, condition, cancelled_by, within, key, payload, channel,
            cooldown, delivery, caller, search_path,
            -- a threshold's stays NULL until the worker has noted which groups
            -- already satisfy it (they fire only after they stop, then rise)
            CASE WHEN kind = 'threshold' THEN NULL ELSE stream._consumer_start_position() END,
            mode, trees[1], trees[2], trees[3], trees[4], _priv_register_activation.on_error,
            CASE WHEN stream.consumer_mode() = 'queue' THEN pg_catalog.pg_current_snapshot() END);
    IF delivery = 'immediate' THEN
        PERFORM stream._activation_sync_trigger(rel);
    END IF;
END $function$
;
COMMENT ON FUNCTION stream._priv_register_activation(regrole,text,text,regclass,regclass,text,text,interval,text,text,text,interval,text,text,text,text) IS 'Records an activation for the caller after checking its name, channel, SELECT on what it watches and its expressions (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_register_activation(regrole,text,text,regclass,regclass,text,text,interval,text,text,text,interval,text,text,text,text) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream._activation_stream(stream regclass)
 RETURNS regclass
 LANGUAGE plpgsql
 STABLE
AS $function$
BEGIN
    IF stream IS NOT NULL AND NOT coalesce(has_table_privilege(stream, 'SELECT'), true) THEN
        RAISE EXCEPTION 'permission denied for table %', stream
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The worker evaluates an activation as its owner, who must be able to read the stream.',
                  HINT = format('Ask the owner of %s: GRANT SELECT ON %s TO %s.', stream, stream, current_user);
    END IF;
    IF stream IS NULL OR NOT EXISTS (SELECT 1 FROM stream.streams s WHERE s.relid = _activation_stream.stream) THEN
        RAISE EXCEPTION 'relation % is not a stream', coalesce(stream::text, 'NULL')
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Activations watch streams created with stream.create_stream.';
    END IF;
    RETURN stream;
END $function$
;


CREATE OR REPLACE FUNCTION stream.on_event(name text, stream regclass, condition text, channel text DEFAULT NULL::text, payload text DEFAULT NULL::text, key text DEFAULT 'coalesce(user_id, anonymous_id)'::text, cooldown interval DEFAULT NULL::interval, delivery text DEFAULT 'batched'::text, notify text DEFAULT NULL::text, on_error text DEFAULT 'skip'::text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    ch text := coalesce(channel, name);
BEGIN
    PERFORM stream._activation_stream(stream);
    PERFORM stream._activation_validate(name, ch, stream);
    PERFORM stream._check_on_error(on_error);
    IF cooldown <= interval '0' THEN
        RAISE EXCEPTION 'cooldown must be positive, not %', cooldown
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass e.g. cooldown => ''1 hour'', or NULL to fire on every matching event.';
    END IF;
    IF delivery IS NULL OR delivery NOT IN ('batched', 'immediate') THEN
        RAISE EXCEPTION 'invalid delivery %', coalesce(quote_literal(delivery), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'batched: the worker fires from committed changes (producers never wait on NOTIFY); immediate: the producer''s transaction fires (lowest latency, serialises notifying commits).',
                  HINT = 'Pass delivery => ''batched'' or ''immediate''.';
    END IF;
    IF delivery = 'batched' THEN
        PERFORM stream._activation_decoding();
    END IF;
    PERFORM stream._priv('stream._priv_register_activation', name, 'event'::text, stream, NULL::regclass,
                         condition, NULL::text, NULL::interval, key, payload, ch, cooldown, delivery,
                         on_event.notify, stream._search_path(), on_event.on_error);
    IF delivery = 'batched' THEN
        PERFORM stream._aggregate_wake(false);
    END IF;
END $function$
;
COMMENT ON FUNCTION stream.on_event(text,regclass,text,text,text,text,interval,text,text,text) IS 'Defines an activation: every committed event of the stream that satisfies condition is written to stream.activations and sent with NOTIFY on channel (default: the name), at most once per key per cooldown; on_error: skip (poison events go to stream.dead_letters) or stop (park)';


CREATE OR REPLACE FUNCTION stream.on_absence(name text, stream regclass, started_by text, cancelled_by text, within interval, key text DEFAULT 'coalesce(user_id, anonymous_id)'::text, channel text DEFAULT NULL::text, payload text DEFAULT NULL::text, notify text DEFAULT NULL::text, on_error text DEFAULT 'skip'::text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    ch text := coalesce(channel, name);
BEGIN
    PERFORM stream._activation_stream(stream);
    PERFORM stream._activation_validate(name, ch, stream);
    PERFORM stream._check_on_error(on_error);
    IF within IS NULL OR within <= interval '0' THEN
        RAISE EXCEPTION 'within must be a positive interval, not %', coalesce(within::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass e.g. within => ''30 minutes''.';
    END IF;
    IF key IS NULL THEN
        RAISE EXCEPTION 'an absence activation needs a key'
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'Timers are kept per key: started_by opens the key''s timer, cancelled_by for the same key cancels it.',
                  HINT = 'Pass e.g. key => ''user_id''.';
    END IF;
    IF cancelled_by IS NULL THEN
        RAISE EXCEPTION 'the cancelled_by of an activation must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass a boolean expression, e.g. event_name = ''purchase''.';
    END IF;
    PERFORM stream._activation_decoding();
    PERFORM stream._priv('stream._priv_register_activation', name, 'absence'::text, stream, NULL::regclass,
                         started_by, cancelled_by, within, key, payload, ch, NULL::interval,
                         'batched'::text, on_absence.notify, stream._search_path(), on_absence.on_error);
    PERFORM stream._aggregate_wake(false);
END $function$
;
COMMENT ON FUNCTION stream.on_absence(text,regclass,text,text,interval,text,text,text,text,text) IS 'Defines an absence activation: an event matching started_by opens a timer for its key, one matching cancelled_by cancels it; a timer that runs out (within, after the start event was received) fires once';


CREATE OR REPLACE FUNCTION stream.on_threshold(name text, aggregate text, condition text, channel text DEFAULT NULL::text, payload text DEFAULT NULL::text, notify text DEFAULT NULL::text, on_error text DEFAULT 'skip'::text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    ch  text := coalesce(channel, name);
    def stream.aggregate_defs;
BEGIN
    def := stream._aggregate_lookup(aggregate);
    PERFORM stream._activation_validate(name, ch, def.view);
    PERFORM stream._check_on_error(on_error);
    IF def.view_select IS NULL THEN
        RAISE EXCEPTION 'continuous aggregate % predates thresholds', def.view
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Rebuild it with stream.drop_aggregate and stream.create_aggregate.';
    END IF;
    PERFORM stream._priv('stream._priv_register_activation', name, 'threshold'::text, def.stream, def.view,
                         condition, NULL::text, NULL::interval, NULL::text, payload, ch, NULL::interval,
                         'batched'::text, on_threshold.notify, stream._search_path(), on_threshold.on_error);
    PERFORM stream._aggregate_wake(false);
END $function$
;
COMMENT ON FUNCTION stream.on_threshold(text,text,text,text,text,text,text) IS 'Defines a threshold activation on a continuous aggregate: fires once when a group starts to satisfy condition (again only after it stopped), evaluated by the worker as it applies changes';


CREATE OR REPLACE FUNCTION stream._priv_drop_activation(caller regrole, name text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    d stream.activation_defs;
BEGIN
    SELECT a.* INTO d FROM stream.activation_defs a WHERE a.name = _priv_drop_activation.name FOR UPDATE;
    IF NOT FOUND OR NOT (pg_catalog.pg_has_role(caller, d.owner, 'USAGE')
                         OR stream._channel_readable_by(caller, d.channel)) THEN
        RAISE EXCEPTION 'activation "%" does not exist', name
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT activation FROM stream.activation_stats.';
    END IF;
    IF NOT pg_catalog.pg_has_role(caller, d.owner, 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of activation %', name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Its owner is %s.', d.owner),
                  HINT = format('Ask %s to drop it.', d.owner);
    END IF;
    DELETE FROM stream.activation_defs a WHERE a.act_id = d.act_id;
    DELETE FROM stream.absence_timers t WHERE t.act_id = d.act_id;
    DELETE FROM stream.dead_letters l WHERE l.kind = 'activation' AND l.def_id = d.act_id;
    IF d.delivery = 'immediate' THEN
        PERFORM stream._activation_sync_trigger(d.stream);
    END IF;
END $function$
;
COMMENT ON FUNCTION stream._priv_drop_activation(regrole,text) IS 'The body of drop_activation, for its owner (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_drop_activation(regrole,text) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream.drop_activation(name text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    PERFORM stream._priv('stream._priv_drop_activation', name);
    PERFORM stream._aggregate_wake(false);
END $function$
;


CREATE OR REPLACE FUNCTION stream._priv_grant_channel(caller regrole, channel text, role regrole, revoke boolean)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    own regrole;
BEGIN
    IF channel IS NULL OR role IS NULL THEN
        RAISE EXCEPTION 'a channel and a role are needed'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'e.g. SELECT stream.grant_channel(''cart_events'', ''mailer'').';
    END IF;
    SELECT c.owner INTO own FROM stream.channels c WHERE c.channel = _priv_grant_channel.channel;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel "%" does not exist', channel
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'A channel exists once an activation has been defined on it.',
                  HINT = 'See SELECT channel, owner FROM stream.channels.';
    END IF;
    IF NOT pg_catalog.pg_has_role(caller, own, 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of channel %', channel
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Channel %s belongs to role %s.', channel, own),
                  HINT = format('Ask %s to run stream.grant_channel(%L, %L).', own, channel, role::text);
    END IF;
    IF revoke THEN
        DELETE FROM stream.channel_grants g WHERE g.channel = _priv_grant_channel.channel AND g.grantee = role;
    ELSE
        INSERT INTO stream.channel_grants (channel, grantee, granted_by)
        VALUES (_priv_grant_channel.channel, role, caller)
        ON CONFLICT ON CONSTRAINT channel_grants_pkey DO NOTHING;
    END IF;
END $function$
;
COMMENT ON FUNCTION stream._priv_grant_channel(regrole,text,regrole,boolean) IS 'The body of grant_channel and revoke_channel, for the channel''s owner (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_grant_channel(regrole,text,regrole,boolean) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream.grant_channel(channel text, role regrole)
 RETURNS void
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT stream._priv('stream._priv_grant_channel', channel, role, false)
$function$
;
COMMENT ON FUNCTION stream.grant_channel(text,regrole) IS 'Lets role read the activations of a channel you own with stream.consume (and see them in stream.activations)';


CREATE OR REPLACE FUNCTION stream.revoke_channel(channel text, role regrole)
 RETURNS void
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT stream._priv('stream._priv_grant_channel', channel, role, true)
$function$
;
COMMENT ON FUNCTION stream.revoke_channel(text,regrole) IS 'Takes back grant_channel';


CREATE OR REPLACE FUNCTION stream._consumer_claim(caller regrole, consumer text, channel text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    bound regrole;
BEGIN
    INSERT INTO stream.consumers (consumer, role) VALUES (_consumer_claim.consumer, caller)
    ON CONFLICT DO NOTHING;
    SELECT c.role INTO bound FROM stream.consumers c WHERE c.consumer = _consumer_claim.consumer;
    IF NOT pg_catalog.pg_has_role(caller, bound, 'USAGE') THEN
        RAISE EXCEPTION 'consumer "%" belongs to another role', consumer
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Consumer name %s is bound to role %s, the first to use it.', consumer, bound),
                  HINT = 'Choose a consumer name of your own.';
    END IF;
    IF channel IS NOT NULL AND NOT stream._channel_readable_by(caller, channel) THEN
        RAISE EXCEPTION 'permission denied for channel %', channel
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Role %s neither owns channel %s nor was granted it.', caller, channel),
                  HINT = format('Ask the channel''s owner to run stream.grant_channel(%L, %L).', channel, caller::text);
    END IF;
END $function$
;
COMMENT ON FUNCTION stream._consumer_claim(regrole,text,text) IS 'Binds a consumer name to the caller on first use and checks the caller may read the channel (internal)';
REVOKE ALL ON FUNCTION stream._consumer_claim(regrole,text,text) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream._priv_consume_position(caller regrole, consumer text, channel text)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
DECLARE
    pos stream.consumer_offsets;
BEGIN
    PERFORM stream._consumer_claim(caller, _priv_consume_position.consumer, _priv_consume_position.channel);
    INSERT INTO stream.consumer_offsets AS o (consumer, channel)
    VALUES (_priv_consume_position.consumer, _priv_consume_position.channel)
    ON CONFLICT (consumer, channel) DO NOTHING;
    -- held until the caller's transaction ends: one consume at a time per consumer and channel
    SELECT o.* INTO pos FROM stream.consumer_offsets o
    WHERE o.consumer = _priv_consume_position.consumer AND o.channel = _priv_consume_position.channel FOR UPDATE;
    RETURN pos.acked_id;
END $function$
;
COMMENT ON FUNCTION stream._priv_consume_position(regrole,text,text) IS 'Claims the consumer name, checks the channel grant, locks and returns the acknowledged position (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_consume_position(regrole,text,text) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream._priv_consume_delivered(caller regrole, consumer text, channel text, upto_id bigint)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
BEGIN
    PERFORM stream._consumer_claim(caller, _priv_consume_delivered.consumer, _priv_consume_delivered.channel);
    UPDATE stream.consumer_offsets o
       SET delivered_id = greatest(o.delivered_id, upto_id)
     WHERE o.consumer = _priv_consume_delivered.consumer AND o.channel = _priv_consume_delivered.channel;
END $function$
;
COMMENT ON FUNCTION stream._priv_consume_delivered(regrole,text,text,bigint) IS 'Records how far stream.consume delivered (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_consume_delivered(regrole,text,text,bigint) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream.consume(consumer text, channel text, max integer DEFAULT 100)
 RETURNS SETOF stream.activations
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
DECLARE
    acked bigint;
    batch stream.activations[];
BEGIN
    IF consumer IS NULL OR channel IS NULL OR max IS NULL OR max < 1 THEN
        RAISE EXCEPTION 'stream.consume needs a consumer, a channel and max >= 1'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. SELECT * FROM stream.consume(''mailer'', ''cart_events'', 100).';
    END IF;
    acked := stream._priv('stream._priv_consume_position', consume.consumer, consume.channel)::bigint;
    -- read with the caller's rights: row level security shows granted channels only
    SELECT array_agg(b ORDER BY b.id) INTO batch
    FROM (SELECT a.* FROM stream.activations a
          WHERE a.channel = consume.channel AND a.id > acked
          ORDER BY a.id LIMIT max) b;
    IF batch IS NOT NULL THEN
        PERFORM stream._priv('stream._priv_consume_delivered', consume.consumer, consume.channel,
                             batch[array_length(batch, 1)].id);
        RETURN QUERY SELECT * FROM unnest(batch);
    END IF;
END $function$
;
COMMENT ON FUNCTION stream.consume(text,text,integer) IS 'Activations of channel not yet acknowledged by consumer, oldest first (at most max); delivered again until stream.ack; the consumer name is bound to the first role that used it, and the channel must be owned or granted';


CREATE OR REPLACE FUNCTION stream._priv_ack(caller regrole, consumer text, upto_id bigint)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
DECLARE
    ch  text;
    pos stream.consumer_offsets;
BEGIN
    -- the consumer name first: acknowledging for another role's consumer
    -- is refused whatever the id
    PERFORM stream._consumer_claim(caller, _priv_ack.consumer, NULL);
    SELECT a.channel INTO ch FROM stream.activations a WHERE a.id = upto_id;
    IF NOT FOUND OR NOT stream._channel_readable_by(caller, ch) THEN
        RAISE EXCEPTION 'activation % does not exist', coalesce(upto_id::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Acknowledge an id returned by stream.consume.';
    END IF;
    PERFORM stream._consumer_claim(caller, _priv_ack.consumer, ch);
    SELECT o.* INTO pos FROM stream.consumer_offsets o
    WHERE o.consumer = _priv_ack.consumer AND o.channel = ch FOR UPDATE;
    IF NOT FOUND OR upto_id > pos.delivered_id THEN
        RAISE EXCEPTION 'consumer "%" never received activation %', _priv_ack.consumer, upto_id
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Channel %s: delivered up to %s.', ch, coalesce(pos.delivered_id, 0)),
                  HINT = 'Acknowledge only ids that stream.consume returned to this consumer.';
    END IF;
    IF upto_id > pos.acked_id THEN
        INSERT INTO stream.consumer_acks (consumer, id, acked_at)
        SELECT _priv_ack.consumer, a.id, now() FROM stream.activations a
        WHERE a.channel = ch AND a.id > pos.acked_id AND a.id <= upto_id
        ON CONFLICT DO NOTHING;
    END IF;
    UPDATE stream.consumer_offsets o
       SET acked_id = greatest(o.acked_id, upto_id), acked_at = now()
     WHERE o.consumer = _priv_ack.consumer AND o.channel = ch;
END $function$
;
COMMENT ON FUNCTION stream._priv_ack(regrole,text,bigint) IS 'The body of ack, for the role the consumer name is bound to (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_ack(regrole,text,bigint) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream.ack(consumer text, upto_id bigint)
 RETURNS void
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT stream._priv('stream._priv_ack', consumer, upto_id)
$function$
;


CREATE OR REPLACE FUNCTION stream._definitions_named(name text, v regclass, OUT kind text, OUT def_id integer, OUT owner regrole, OUT status text, OUT label text)
 RETURNS SETOF record
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    RETURN QUERY
        SELECT 'aggregate'::text, d.agg_id, d.owner, d.status, d.view::text
        FROM stream.aggregate_defs d WHERE d.view = v
        UNION ALL
        SELECT 'activation'::text, a.act_id, a.owner, a.status, a.name
        FROM stream.activation_defs a WHERE a.name = _definitions_named.name;
END $function$
;
COMMENT ON FUNCTION stream._definitions_named(text,regclass) IS 'The continuous aggregate (view v) and/or activation (name) a name stands for (internal)';


CREATE OR REPLACE FUNCTION stream._regclass_or_null(name text)
 RETURNS regclass
 LANGUAGE plpgsql
 STABLE
AS $function$
BEGIN
    RETURN pg_catalog.to_regclass(name);
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END $function$
;
COMMENT ON FUNCTION stream._regclass_or_null(text) IS 'to_regclass in the caller''s search_path, NULL for a name that is not valid syntax (internal)';


CREATE OR REPLACE FUNCTION stream._priv_resume(caller regrole, name text, view_rel regclass)
 RETURNS integer
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    d record;
    n integer := 0;
    seen boolean := false;
BEGIN
    FOR d IN SELECT * FROM stream._definitions_named(name, view_rel) LOOP
        IF NOT pg_catalog.pg_has_role(caller, d.owner, 'USAGE') THEN
            CONTINUE;
        END IF;
        seen := true;
        IF d.status <> 'error' THEN
            CONTINUE;
        END IF;
        -- the worker sees the status change, loads the definition again and
        -- replays from its applied LSN (which held the slot meanwhile)
        IF d.kind = 'aggregate' THEN
            UPDATE stream.aggregate_defs SET status = 'running', last_error = NULL
             WHERE agg_id = d.def_id AND status = 'error';
        ELSE
            UPDATE stream.activation_defs SET status = 'running', last_error = NULL
             WHERE act_id = d.def_id AND status = 'error';
        END IF;
        n := n + 1;
    END LOOP;
    IF NOT seen THEN
        RAISE EXCEPTION 'continuous aggregate or activation "%" does not exist', name
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT name, state FROM stream.aggregates and stream.activation_status.';
    END IF;
    IF n = 0 THEN
        RAISE EXCEPTION '"%" is not parked', name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Only a definition whose state is error (stopped after an error of its own) can be resumed.',
                  HINT = 'See its state in stream.aggregates or stream.activation_status; events it skipped are in stream.dead_letters (stream.retry_dead_letters).';
    END IF;
    RETURN n;
END $function$
;
COMMENT ON FUNCTION stream._priv_resume(regrole,text,regclass) IS 'The body of stream.resume, for the definition''s owner (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_resume(regrole,text,regclass) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream.resume(name text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    PERFORM stream._priv('stream._priv_resume', name, stream._regclass_or_null(name));
    PERFORM stream._aggregate_wake(false);
END $function$
;
COMMENT ON FUNCTION stream.resume(text) IS 'Runs a parked continuous aggregate or activation again once the cause of its error is fixed: it replays from its applied LSN (no rebuild)';


CREATE OR REPLACE FUNCTION stream._priv_retry_dead_letters(caller regrole, name text, view_rel regclass)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    d record;
    n bigint := 0;
    c bigint;
    seen boolean := false;
BEGIN
    FOR d IN SELECT * FROM stream._definitions_named(name, view_rel) LOOP
        IF NOT pg_catalog.pg_has_role(caller, d.owner, 'USAGE') THEN
            CONTINUE;
        END IF;
        seen := true;
        IF d.status = 'error' THEN
            RAISE EXCEPTION '% "%" is parked', CASE d.kind WHEN 'aggregate' THEN 'continuous aggregate'
                                                ELSE 'activation' END, name
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'The worker applies dead letters only for a definition that runs.',
                      HINT = format('Fix the cause, then SELECT stream.resume(%L) first.', name);
        END IF;
        IF d.kind = 'activation' AND EXISTS (SELECT FROM stream.activation_defs a
                                             WHERE a.act_id = d.def_id AND a.delivery = 'immediate') THEN
            RAISE EXCEPTION 'activation "%" fires in the producers'' transactions: its dead letters are not retried', name
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = 'The worker retries only what it evaluated itself; each dead letter keeps the event_id and the error.',
                      HINT = 'Fix the cause, then insert the events again with new event_ids, or define the activation with delivery => ''batched''.';
        END IF;
        UPDATE stream.dead_letters l SET retry_requested = true
         WHERE l.kind = d.kind AND l.def_id = d.def_id AND l.event_id IS NOT NULL;
        GET DIAGNOSTICS c = ROW_COUNT;
        n := n + c;
    END LOOP;
    IF NOT seen THEN
        RAISE EXCEPTION 'continuous aggregate or activation "%" does not exist', name
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT definition FROM stream.dead_letters, stream.aggregates and stream.activation_status.';
    END IF;
    RETURN n;
END $function$
;
COMMENT ON FUNCTION stream._priv_retry_dead_letters(regrole,text,regclass) IS 'The body of stream.retry_dead_letters, for the definition''s owner (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_retry_dead_letters(regrole,text,regclass) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream.retry_dead_letters(name text)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    n bigint;
BEGIN
    n := stream._priv('stream._priv_retry_dead_letters', name, stream._regclass_or_null(name))::bigint;
    PERFORM stream._aggregate_wake(false);
    RETURN n;
END $function$
;
COMMENT ON FUNCTION stream.retry_dead_letters(text) IS 'Asks the worker to apply a definition''s dead letters again (the events read back by event_id): those that succeed are applied exactly once and deleted, the others keep their new error; returns how many were asked for (stream.flush waits for them)';


CREATE OR REPLACE FUNCTION stream._capture_trigger()
 RETURNS trigger
 LANGUAGE c
AS '$libdir/stream_events', $function$stream_capture_trigger$function$
;
COMMENT ON FUNCTION stream._capture_trigger() IS 'AFTER row trigger of captured tables: in queue mode, appends the change to stream.capture_log; in logical mode does nothing (internal)';


CREATE OR REPLACE FUNCTION stream._capture_mode()
 RETURNS text
 LANGUAGE c
 STABLE
AS '$libdir/stream_events', $function$stream_capture_mode$function$
;
COMMENT ON FUNCTION stream._capture_mode() IS 'How captured changes reach their stream in this server: logical (decoding) or queue (the capture trigger) (internal)';


CREATE OR REPLACE FUNCTION stream._capture_event_id(capture_id integer, change_position text)
 RETURNS uuid
 LANGUAGE c
 IMMUTABLE PARALLEL SAFE STRICT
AS '$libdir/stream_events', $function$stream_capture_event_id$function$
;
COMMENT ON FUNCTION stream._capture_event_id(integer,text) IS 'The event_id a capture gives the change at change_position (its event''s context.position): a version 5 UUID, the same however often the change is written (internal)';


CREATE OR REPLACE FUNCTION stream._capture_signature()
 RETURNS text
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT CASE WHEN stream._capture_mode() = 'logical' THEN
        (SELECT 'c' || string_agg(k.capture_id::text || ':' || k.status || ':' || k.origin, ','
                                  ORDER BY k.capture_id)
         FROM stream.captures k) END
$function$
;
COMMENT ON FUNCTION stream._capture_signature() IS 'Changes when the captures the worker decodes for must be loaded again; NULL in queue mode (internal)';


CREATE OR REPLACE FUNCTION stream._capture_drain()
 RETURNS bigint
 LANGUAGE c
AS '$libdir/stream_events', $function$stream_capture_drain$function$
;
COMMENT ON FUNCTION stream._capture_drain() IS 'Queue mode: writes the committed rows of stream.capture_log to their streams in the caller''s transaction, as the worker does each round; returns the events written (internal)';
REVOKE ALL ON FUNCTION stream._capture_drain() FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream._priv_capture(caller regrole, source regclass, stream regclass, columns text[], user_id text)
 RETURNS integer
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    c        pg_catalog.pg_class;
    keycols  text[];
    idx      oid;
    missing  text;
    id       integer;
BEGIN
    IF source IS NULL OR stream IS NULL THEN
        RAISE EXCEPTION 'stream.capture needs a source table and a stream'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'SELECT stream.capture(''orders'', stream => ''order_changes'').';
    END IF;
    SELECT * INTO c FROM pg_catalog.pg_class r WHERE r.oid = source;
    IF EXISTS (SELECT 1 FROM stream.streams s
               WHERE s.relid = source OR s.relid = pg_catalog.pg_partition_root(source)) THEN
        RAISE EXCEPTION 'cannot capture stream %', pg_catalog.pg_partition_root(source)
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = CASE WHEN pg_catalog.pg_partition_root(source) = source
                                THEN format('%s is a stream: its events are already events.', source)
                                ELSE format('%s is a partition of stream %s: its events are already events.',
                                            source, pg_catalog.pg_partition_root(source)) END,
                  HINT = 'Capture ordinary tables; aggregates and activations read a stream directly.';
    END IF;
    IF c.relkind <> 'r' THEN
        RAISE EXCEPTION 'cannot capture %', source
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = format('%s is a %s, not an ordinary table.', source,
                                  CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                                                 WHEN 'p' THEN 'partitioned table' WHEN 'f' THEN 'foreign table'
                                                 WHEN 'S' THEN 'sequence' ELSE 'relation of kind ' || c.relkind::text END),
                  HINT = CASE c.relkind WHEN 'p' THEN 'Capture its partitions one by one.'
                                        ELSE 'Capture the table the view reads from.' END;
    END IF;
    IF c.relpersistence = 't' THEN
        RAISE EXCEPTION 'cannot capture temporary table %', source
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A temporary table''s changes are seen by its own session only.',
                  HINT = 'Capture a permanent table.';
    END IF;
    IF c.relpersistence = 'u' THEN
        RAISE EXCEPTION 'cannot capture unlogged table %', source
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('%s is unlogged: its changes are not written to the WAL the worker reads, and are lost in a crash.', source),
                  HINT = format('ALTER TABLE %s SET LOGGED first.', source);
    END IF;
    PERFORM stream._check_privilege(caller, source, 'SELECT',
                                    'a capture copies the table''s rows into a stream.');
    PERFORM stream._check_privilege(caller, source, 'TRIGGER',
                                    'a capture puts a trigger on the table (it records changes in queue mode).');
    IF NOT EXISTS (SELECT 1 FROM stream.streams s WHERE s.relid = stream) THEN
        RAISE EXCEPTION 'relation % is not a stream', stream
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Create it first with stream.create_stream.';
    END IF;
    PERFORM stream._check_privilege(caller, stream, 'INSERT',
                                    'the worker writes the captured events as the capture''s owner.');
    IF EXISTS (SELECT 1 FROM stream.captures k WHERE k.source = _priv_capture.source) THEN
        RAISE EXCEPTION 'table % is already captured', source
            USING ERRCODE = 'duplicate_object',
                  DETAIL = format('It is captured into stream %s.',
                                  (SELECT k.stream FROM stream.captures k WHERE k.source = _priv_capture.source)),
                  HINT = format('SELECT stream.uncapture(%L) first to capture it elsewhere.', source::text);
    END IF;
    -- the key of updates and deletes is the replica identity's
    IF c.relreplident = 'n' THEN
        RAISE EXCEPTION 'table % has REPLICA IDENTITY NOTHING', source
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Captured updates and deletes carry the old key, which the replica identity gives.',
                  HINT = format('ALTER TABLE %s REPLICA IDENTITY DEFAULT (its primary key).', source);
    END IF;
    idx := CASE WHEN c.relreplident = 'i'
                THEN (SELECT i.indexrelid FROM pg_catalog.pg_index i
                      WHERE i.indrelid = source AND i.indisreplident)
                ELSE (SELECT i.indexrelid FROM pg_catalog.pg_index i
                      WHERE i.indrelid = source AND i.indisprimary) END;
    IF idx IS NULL THEN
        RAISE EXCEPTION 'table % has no primary key', source
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Captured updates and deletes carry the old key, which comes from the table''s REPLICA IDENTITY: by default its primary key.',
                  HINT = format('Add a primary key (ALTER TABLE %s ADD PRIMARY KEY (...)), or name a unique index with ALTER TABLE %s REPLICA IDENTITY USING INDEX.', source, source);
    END IF;
    SELECT array_agg(a.attname::text ORDER BY k.n) INTO keycols
    FROM pg_catalog.pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, n), pg_catalog.pg_attribute a
    WHERE i.indexrelid = idx AND a.attrelid = source AND a.attnum = k.attnum;
    SELECT x INTO missing
    FROM unnest(coalesce(columns, '{}') || CASE WHEN user_id IS NULL THEN '{}'::text[] ELSE ARRAY[user_id] END) AS x
    WHERE x IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                                   WHERE a.attrelid = source AND a.attname = x
                                     AND a.attnum > 0 AND NOT a.attisdropped)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'column % of table % does not exist', coalesce(quote_ident(missing), 'NULL'), source
            USING ERRCODE = 'undefined_column',
                  DETAIL = format('The %s argument names it.',
                                  CASE WHEN missing = ANY (coalesce(columns, '{}')) OR missing IS NULL
                                       THEN 'columns' ELSE 'user_id' END),
                  HINT = format('Name columns of %s.', source);
    END IF;
    INSERT INTO stream.captures (source, stream, event_prefix, columns, key_columns, user_id_column,
                                 owner, start_lsn)
    VALUES (source, stream, c.relname, columns, keycols, user_id, caller,
            pg_catalog.pg_current_wal_insert_lsn())
    RETURNING capture_id INTO id;
    -- every session's capture trigger reads the catalog again
    PERFORM stream._stream_changed(source);
    RETURN id;
END $function$
;
COMMENT ON FUNCTION stream._priv_capture(regrole,regclass,regclass,text[],text) IS 'The body of stream.capture: checks the source, the stream and the caller''s rights, records the capture (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_capture(regrole,regclass,regclass,text[],text) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream.capture(source regclass, stream regclass, columns text[] DEFAULT NULL::text[], user_id text DEFAULT NULL::text)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    id integer;
BEGIN
    id := stream._priv('stream._priv_capture', source, capture.stream, columns, user_id)::integer;
    -- the caller's own DDL: needs TRIGGER on the table (checked above)
    EXECUTE format('CREATE OR REPLACE TRIGGER stream_events_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION stream._capture_trigger()', source);
    PERFORM stream._aggregate_wake(false);
    RETURN id;
END $function$
;
COMMENT ON FUNCTION stream.capture(regclass,regclass,text[],text) IS 'Turns every committed INSERT, UPDATE and DELETE of an ordinary table into an event <table>.insert|update|delete of a stream (properties: the new row, or the old key; context: the key and changed columns); returns the capture''s id';


CREATE OR REPLACE FUNCTION stream._capture_of(caller regrole, source regclass, or_table boolean)
 RETURNS stream.captures
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    k stream.captures;
BEGIN
    SELECT * INTO k FROM stream.captures c WHERE c.source = _capture_of.source;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not captured', coalesce(source::text, 'NULL')
            USING ERRCODE = 'undefined_object',
                  HINT = 'stream.captures lists the captured tables.';
    END IF;
    IF NOT pg_catalog.pg_has_role(caller, k.owner, 'USAGE') THEN
        IF or_table THEN
            PERFORM stream._check_owner(caller, source, 'table');
        ELSE
            RAISE EXCEPTION 'must be owner of the capture of %', source
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = format('The capture belongs to role %s.', k.owner),
                      HINT = format('Ask role %s to do it.', k.owner);
        END IF;
    END IF;
    RETURN k;
END $function$
;
COMMENT ON FUNCTION stream._capture_of(regrole,regclass,boolean) IS 'The capture of a table, checked to belong to the caller (or, with or_table, the caller to own the table) (internal)';
REVOKE ALL ON FUNCTION stream._capture_of(regrole,regclass,boolean) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream._priv_uncapture(caller regrole, source regclass)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    k stream.captures;
BEGIN
    k := stream._capture_of(caller, source, true);
    DELETE FROM stream.captures c WHERE c.capture_id = k.capture_id;
    DELETE FROM stream.capture_log l WHERE l.capture_id = k.capture_id;
    -- the extension's own trigger only (DROP TRIGGER needs ownership)
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
               WHERE t.tgrelid = source AND t.tgname = 'stream_events_capture'
                 AND t.tgfoid = 'stream._capture_trigger()'::regprocedure) THEN
        EXECUTE format('DROP TRIGGER stream_events_capture ON %s', source);
    END IF;
    PERFORM stream._stream_changed(source);
END $function$
;
COMMENT ON FUNCTION stream._priv_uncapture(regrole,regclass) IS 'The body of stream.uncapture: checks the caller owns the capture or the table, forgets the capture and its queued changes, drops its trigger (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_uncapture(regrole,regclass) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream.uncapture(source regclass)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    PERFORM stream._priv('stream._priv_uncapture', source);
    PERFORM stream._aggregate_wake(false);
END $function$
;
COMMENT ON FUNCTION stream.uncapture(regclass) IS 'Stops capturing a table: changes committed after it are no longer events (those queued and not yet written are dropped)';


CREATE OR REPLACE FUNCTION stream._priv_resume_capture(caller regrole, source regclass)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    k stream.captures;
BEGIN
    k := stream._capture_of(caller, source, false);
    UPDATE stream.captures c SET status = 'running', last_error = NULL
    WHERE c.capture_id = k.capture_id;
END $function$
;
COMMENT ON FUNCTION stream._priv_resume_capture(regrole,regclass) IS 'The body of stream.resume_capture (internal, through stream._priv)';
REVOKE ALL ON FUNCTION stream._priv_resume_capture(regrole,regclass) FROM PUBLIC;


CREATE OR REPLACE FUNCTION stream.resume_capture(source regclass)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    PERFORM stream._priv('stream._priv_resume_capture', source);
    PERFORM stream._aggregate_wake(false);
END $function$
;
COMMENT ON FUNCTION stream.resume_capture(regclass) IS 'Runs a capture stopped by an error again once its cause is fixed: it goes on from where it stopped';


CREATE OR REPLACE FUNCTION stream._on_capture_drop()
 RETURNS event_trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    WITH gone AS (
        DELETE FROM stream.captures k
        USING pg_event_trigger_dropped_objects() o
        WHERE o.classid = 'pg_class'::regclass AND o.objsubid = 0
          AND (k.source = o.objid OR k.stream = o.objid)
        RETURNING k.capture_id)
    DELETE FROM stream.capture_log l USING gone WHERE l.capture_id = gone.capture_id;
END $function$
;
COMMENT ON FUNCTION stream._on_capture_drop() IS 'Removes the captures (and their queued changes) of dropped tables and streams (internal)';

REVOKE ALL ON FUNCTION stream._stream_changed(regclass) FROM PUBLIC;

REVOKE ALL ON FUNCTION stream._aggregate_depend(regclass,regclass) FROM PUBLIC;

REVOKE ALL ON FUNCTION stream._activation_sync_trigger(regclass) FROM PUBLIC;


CREATE VIEW stream.stream_list AS
 SELECT (s.relid)::text AS stream,
    n.nspname AS schema_name,
    c.relname AS stream_name,
    (c.relowner)::regrole AS owner,
    s.partition_interval,
    s.retention,
    s.dedup_window,
    ( SELECT count(*) AS count
           FROM pg_inherits i
          WHERE (i.inhparent = (s.relid)::oid)) AS partitions,
    s.created_at,
    stream._default_partition_events(s.relid) AS default_partition_events
   FROM ((stream.streams s
     JOIN pg_class c ON ((c.oid = (s.relid)::oid)))
     JOIN pg_namespace n ON ((n.oid = c.relnamespace)))
  WHERE stream._stream_visible(s.relid);
COMMENT ON VIEW stream.stream_list IS 'Streams with their options, partition count and the events their default partition holds (outside the partition bound, or not adopted yet)';
GRANT SELECT ON TABLE stream.stream_list TO PUBLIC;


CREATE VIEW stream.stats AS
 SELECT (s.relid)::text AS stream,
    COALESCE(k.events_accepted, (0)::bigint) AS events,
    COALESCE(k.duplicates, (0)::bigint) AS duplicates,
        CASE
            WHEN ((COALESCE(k.events_accepted, (0)::bigint) + COALESCE(k.duplicates, (0)::bigint)) > 0) THEN round(((k.duplicates)::numeric / ((k.events_accepted + k.duplicates))::numeric), 4)
            ELSE NULL::numeric
        END AS duplicate_rate,
        CASE
            WHEN ((k.counting_since IS NOT NULL) AND (now() > k.counting_since)) THEN round(((k.events_accepted)::numeric / EXTRACT(epoch FROM (now() - k.counting_since))), 2)
            ELSE NULL::numeric
        END AS events_per_second,
    COALESCE(k.checked, (0)::bigint) AS checked,
    COALESCE(k.passed, (0)::bigint) AS passed,
    COALESCE(k.failed, (0)::bigint) AS failed,
    COALESCE(k.quarantined, (0)::bigint) AS quarantined,
    COALESCE(k.rejected, (0)::bigint) AS rejected,
    COALESCE(k.unplanned, (0)::bigint) AS unplanned,
        CASE
            WHEN (k.checked > 0) THEN round(((k.passed)::numeric / (k.checked)::numeric), 4)
            ELSE NULL::numeric
        END AS compliance_rate,
    k.last_received_at,
    k.last_occurred_at,
    (now() - k.last_received_at) AS freshness,
    k.counting_since
   FROM (stream.streams s
     LEFT JOIN stream._stream_counters() k(relid, event_name, events_accepted, duplicates, last_received_at, last_occurred_at, counting_since, checked, passed, failed, quarantined, rejected, unplanned) ON (((k.relid = (s.relid)::oid) AND (k.event_name IS NULL))))
  WHERE stream._stream_readable(s.relid);
COMMENT ON VIEW stream.stats IS 'Per-stream counters since counting_since (server start or reset): events accepted, duplicates dropped, contract checks and compliance rate, freshness';
GRANT SELECT ON TABLE stream.stats TO PUBLIC;


CREATE VIEW stream.compliance AS
 SELECT (s.relid)::text AS stream,
    k.event_name,
    k.checked,
    k.passed,
    k.failed,
    k.quarantined,
    k.rejected,
    k.unplanned,
        CASE
            WHEN (k.checked > 0) THEN round(((k.passed)::numeric / (k.checked)::numeric), 4)
            ELSE NULL::numeric
        END AS compliance_rate
   FROM (stream.streams s
     JOIN stream._stream_counters() k(relid, event_name, events_accepted, duplicates, last_received_at, last_occurred_at, counting_since, checked, passed, failed, quarantined, rejected, unplanned) ON (((k.relid = (s.relid)::oid) AND (k.event_name IS NOT NULL))))
  WHERE stream._stream_readable(s.relid);
COMMENT ON VIEW stream.compliance IS 'Contract compliance per stream and event name: checked, passed, failed (stored under warn), quarantined, rejected, unplanned';
GRANT SELECT ON TABLE stream.compliance TO PUBLIC;


CREATE VIEW stream.aggregates AS
 SELECT (d.view)::text AS name,
    (d.stream)::text AS stream,
    d.owner,
    d.query,
    d.status AS state,
    d.last_error,
    d.applied_lsn,
        CASE
            WHEN ((d.applied_lsn IS NOT NULL) AND (d.applied_lsn < '80000000/0'::pg_lsn)) THEN GREATEST(pg_wal_lsn_diff(pg_current_wal_lsn(), p.pos), (0)::numeric)
            ELSE NULL::numeric
        END AS lag_bytes,
        CASE
            WHEN (d.applied_lsn IS NULL) THEN NULL::double precision
            WHEN (d.applied_lsn >= '80000000/0'::pg_lsn) THEN stream._queue_lag(d.applied_lsn)
            WHEN (pg_current_wal_lsn() <= p.pos) THEN (0)::double precision
            ELSE (GREATEST(EXTRACT(epoch FROM (now() - p.pos_at)), (0)::numeric))::double precision
        END AS lag_seconds,
    (d.apply_rate * exp(((- (LEAST(GREATEST(EXTRACT(epoch FROM (now() - p.pos_at)), (0)::numeric), (600)::numeric))::double precision) / (10)::double precision))) AS apply_rate,
    d.events_applied,
    d.events_backfilled,
    d.applied_at,
    d.last_commit_at,
    d.state_table,
    d.created_at,
    d.on_error,
    ( SELECT count(*) AS count
           FROM stream.dead_letters l
          WHERE ((l.kind = 'aggregate'::text) AND (l.def_id = d.agg_id))) AS dead_letters
   FROM ((stream.aggregate_defs d
     CROSS JOIN stream._consumer_position() c(decoded_lsn, decoded_at))
     CROSS JOIN LATERAL ( SELECT
                CASE
                    WHEN ((d.status = 'running'::text) AND (c.decoded_lsn > d.applied_lsn)) THEN c.decoded_lsn
                    ELSE d.applied_lsn
                END AS pos,
                CASE
                    WHEN ((d.status = 'running'::text) AND (c.decoded_lsn >= d.applied_lsn)) THEN c.decoded_at
                    ELSE d.applied_at
                END AS pos_at) p)
  WHERE (pg_has_role((d.owner)::oid, 'USAGE'::text) OR COALESCE(has_table_privilege((d.view)::oid, 'SELECT'::text), false));
COMMENT ON VIEW stream.aggregates IS 'Continuous aggregates: stream, defining query, state (backfill/running/error = parked), applied LSN, lag in bytes and seconds (0 when nothing is left to apply), apply rate (events/s, decays when idle), on_error and the number of dead letters';
GRANT SELECT ON TABLE stream.aggregates TO PUBLIC;


CREATE OR REPLACE VIEW stream.activation_stats AS
 WITH fired AS (
         SELECT a.activation,
            count(*) AS fired,
            max(a.id) AS last_id,
            (percentile_cont((0.5)::double precision) WITHIN GROUP (ORDER BY ((EXTRACT(epoch FROM (a.fired_at - a.occurred_at)))::double precision)) * '00:00:01'::interval) AS fire_p50,
            (percentile_cont((0.99)::double precision) WITHIN GROUP (ORDER BY ((EXTRACT(epoch FROM (a.fired_at - a.occurred_at)))::double precision)) * '00:00:01'::interval) AS fire_p99
           FROM stream.activations a
          GROUP BY a.activation
        ), acked AS (
         SELECT a.activation,
            k_1.consumer,
            count(*) AS delivered,
            (percentile_cont((0.5)::double precision) WITHIN GROUP (ORDER BY ((EXTRACT(epoch FROM (k_1.acked_at - a.fired_at)))::double precision)) * '00:00:01'::interval) AS ack_p50,
            (percentile_cont((0.99)::double precision) WITHIN GROUP (ORDER BY ((EXTRACT(epoch FROM (k_1.acked_at - a.fired_at)))::double precision)) * '00:00:01'::interval) AS ack_p99
           FROM (stream.consumer_acks k_1
             JOIN stream.activations a ON ((a.id = k_1.id)))
          GROUP BY a.activation, k_1.consumer
        )
 SELECT d.name AS activation,
    d.kind,
    d.channel,
    o.consumer,
    COALESCE(f.fired, (0)::bigint) AS fired,
    COALESCE(k.delivered, (0)::bigint) AS delivered,
    ( SELECT count(*) AS count
           FROM stream.activations a
          WHERE ((a.activation = d.name) AND (a.id > COALESCE(o.acked_id, (0)::bigint)))) AS pending,
    f.fire_p50 AS latency_p50,
    f.fire_p99 AS latency_p99,
    k.ack_p50 AS ack_latency_p50,
    k.ack_p99 AS ack_latency_p99,
    d.applied_lsn,
    d.applied_at
   FROM (((stream.activation_defs d
     LEFT JOIN stream.consumer_offsets o ON ((o.channel = d.channel)))
     LEFT JOIN fired f ON ((f.activation = d.name)))
     LEFT JOIN acked k ON (((k.activation = d.name) AND (k.consumer = o.consumer))))
  WHERE (pg_has_role((d.owner)::oid, 'USAGE'::text) OR stream._channel_readable(d.channel));


CREATE VIEW stream.activation_status AS
 SELECT d.name,
    d.kind,
    (d.stream)::text AS stream,
    (d.aggregate)::text AS aggregate,
    d.owner,
    d.delivery,
    d.on_error,
        CASE
            WHEN ((d.kind = 'threshold'::text) AND (d.applied_lsn IS NULL) AND (d.status = 'running'::text)) THEN 'starting'::text
            ELSE d.status
        END AS state,
    d.last_error,
    d.applied_lsn,
        CASE
            WHEN (d.delivery = 'immediate'::text) THEN (0)::numeric
            WHEN ((d.applied_lsn IS NOT NULL) AND (d.applied_lsn < '80000000/0'::pg_lsn)) THEN GREATEST(pg_wal_lsn_diff(pg_current_wal_lsn(),
            CASE
                WHEN ((d.status = 'running'::text) AND (c.decoded_lsn > d.applied_lsn)) THEN c.decoded_lsn
                ELSE d.applied_lsn
            END), (0)::numeric)
            ELSE NULL::numeric
        END AS lag_bytes,
    d.fired,
    ( SELECT count(*) AS count
           FROM stream.dead_letters l
          WHERE ((l.kind = 'activation'::text) AND (l.def_id = d.act_id))) AS dead_letters,
    d.applied_at,
    d.created_at
   FROM (stream.activation_defs d
     CROSS JOIN stream._consumer_position() c(decoded_lsn, decoded_at))
  WHERE pg_has_role((d.owner)::oid, 'USAGE'::text);
COMMENT ON VIEW stream.activation_status IS 'Activations of the caller: state (running, error = parked, starting), last error, applied LSN, lag in bytes (0 when nothing is left to apply), firings and dead letters';
GRANT SELECT ON TABLE stream.activation_status TO PUBLIC;


-- tables and sequences: row level security and privileges
ALTER TABLE stream.schemas ENABLE ROW LEVEL SECURITY;
ALTER TABLE stream.dead_letters ENABLE ROW LEVEL SECURITY;
ALTER TABLE stream.consumers ENABLE ROW LEVEL SECURITY;
ALTER TABLE stream.activations ENABLE ROW LEVEL SECURITY;
ALTER TABLE stream.absence_timers ENABLE ROW LEVEL SECURITY;
ALTER TABLE stream.threshold_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE stream.consumer_offsets ENABLE ROW LEVEL SECURITY;
ALTER TABLE stream.consumer_acks ENABLE ROW LEVEL SECURITY;
ALTER TABLE stream.captures ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON SEQUENCE stream.streams_stream_id_seq FROM PUBLIC;

REVOKE ALL ON TABLE stream.streams FROM PUBLIC;
GRANT SELECT ON TABLE stream.streams TO PUBLIC;

GRANT SELECT ON TABLE stream.queue_ticks TO PUBLIC;

REVOKE ALL ON TABLE stream.contracts FROM PUBLIC;
GRANT SELECT ON TABLE stream.contracts TO PUBLIC;

REVOKE ALL ON SEQUENCE stream.aggregate_defs_agg_id_seq FROM PUBLIC;

REVOKE ALL ON TABLE stream.aggregate_defs FROM PUBLIC;
GRANT SELECT ON TABLE stream.aggregate_defs TO PUBLIC;

GRANT SELECT ON TABLE stream.dead_letters TO PUBLIC;

REVOKE ALL ON SEQUENCE stream.activation_defs_act_id_seq FROM PUBLIC;

REVOKE ALL ON TABLE stream.activation_defs FROM PUBLIC;
GRANT SELECT ON TABLE stream.activation_defs TO PUBLIC;

GRANT SELECT ON TABLE stream.channels TO PUBLIC;

GRANT SELECT ON TABLE stream.channel_grants TO PUBLIC;

GRANT SELECT ON TABLE stream.consumers TO PUBLIC;

GRANT SELECT ON TABLE stream.captures TO PUBLIC;

-- policies
CREATE POLICY streams_read ON stream.streams FOR SELECT
    USING (stream._stream_visible(relid));
CREATE POLICY contracts_read ON stream.contracts FOR SELECT
    USING (stream._stream_visible(stream));
CREATE POLICY schemas_read ON stream.schemas FOR SELECT
    USING (((uri !~~ 'urn:stream-events:%'::text) OR (EXISTS ( SELECT 1
   FROM stream.contracts c
  WHERE (c.schema_uri = schemas.uri)))));
CREATE POLICY aggregate_defs_read ON stream.aggregate_defs FOR SELECT
    USING ((pg_has_role((owner)::oid, 'USAGE'::text) OR COALESCE(has_table_privilege((view)::oid, 'SELECT'::text), false)));
CREATE POLICY dead_letters_read ON stream.dead_letters FOR SELECT
    USING (pg_has_role((owner)::oid, 'USAGE'::text));
CREATE POLICY consumers_read ON stream.consumers FOR SELECT
    USING (pg_has_role((role)::oid, 'USAGE'::text));
CREATE POLICY activation_defs_read ON stream.activation_defs FOR SELECT
    USING ((pg_has_role((owner)::oid, 'USAGE'::text) OR stream._channel_readable(channel)));
CREATE POLICY activations_read ON stream.activations FOR SELECT
    USING (stream._channel_readable(channel));
CREATE POLICY absence_timers_read ON stream.absence_timers FOR SELECT
    USING ((EXISTS ( SELECT 1
   FROM stream.activation_defs d
  WHERE ((d.act_id = absence_timers.act_id) AND pg_has_role((d.owner)::oid, 'USAGE'::text)))));
CREATE POLICY threshold_state_read ON stream.threshold_state FOR SELECT
    USING ((EXISTS ( SELECT 1
   FROM stream.activation_defs d
  WHERE ((d.act_id = threshold_state.act_id) AND pg_has_role((d.owner)::oid, 'USAGE'::text)))));
CREATE POLICY consumer_offsets_read ON stream.consumer_offsets FOR SELECT
    USING ((EXISTS ( SELECT 1
   FROM stream.consumers c
  WHERE ((c.consumer = consumer_offsets.consumer) AND pg_has_role((c.role)::oid, 'USAGE'::text)))));
CREATE POLICY consumer_acks_read ON stream.consumer_acks FOR SELECT
    USING ((EXISTS ( SELECT 1
   FROM stream.consumers c
  WHERE ((c.consumer = consumer_acks.consumer) AND pg_has_role((c.role)::oid, 'USAGE'::text)))));
CREATE POLICY captures_read ON stream.captures FOR SELECT
    USING ((pg_has_role((owner)::oid, 'USAGE'::text) OR COALESCE(has_table_privilege((source)::oid, 'SELECT'::text), false)));
-- ---- end of functions, views, privileges and policies ----

-- ---- data: what 0.1.0 catalogs did not record ----

-- 0.1.0 let any role write catalog rows for relations it owns, with any
-- values in the other columns, which superuser code then trusted: rows that
-- the functions could not have written are put right or removed, each with
-- a warning.
DO $upgrade$
DECLARE
    r record;
BEGIN
    -- a stream's quarantine is the <stream>_quarantine table next to it,
    -- with the same owner (the sql_drop trigger drops it with the stream)
    FOR r IN SELECT s.stream_id, s.relid, s.quarantine
             FROM stream.streams s
             JOIN pg_catalog.pg_class c ON c.oid = s.relid
             LEFT JOIN pg_catalog.pg_class q ON q.oid = s.quarantine
             WHERE s.quarantine IS NOT NULL
               AND (q.oid IS NULL OR q.relkind <> 'r' OR q.relnamespace <> c.relnamespace
                    OR q.relname <> c.relname || '_quarantine' OR q.relowner <> c.relowner)
             ORDER BY s.stream_id LOOP
        UPDATE stream.streams SET quarantine = NULL WHERE stream_id = r.stream_id;
        RAISE WARNING 'stream %: quarantine % is not its quarantine table; cleared', r.relid, r.quarantine
            USING HINT = 'Quarantined events of this stream are rejected until it has a quarantine table again.';
    END LOOP;
    -- a contract belongs to the stream its stream_id names
    FOR r IN SELECT c.stream_id, c.stream, c.event_name, c.version
             FROM stream.contracts c
             WHERE NOT EXISTS (SELECT 1 FROM stream.streams s
                               WHERE s.stream_id = c.stream_id AND s.relid = c.stream)
             ORDER BY 1, 3, 4 LOOP
        DELETE FROM stream.contracts c
         WHERE c.stream_id = r.stream_id AND c.event_name = r.event_name AND c.version = r.version;
        RAISE WARNING 'contract for event "%" version % of % removed: it named stream id % of another stream',
                      r.event_name, r.version, r.stream, r.stream_id;
    END LOOP;
    -- an aggregate's view and state table belong to its owner
    FOR r IN SELECT d.agg_id, d.view, d.state_table, d.owner
             FROM stream.aggregate_defs d
             LEFT JOIN pg_catalog.pg_class v ON v.oid = d.view
             LEFT JOIN pg_catalog.pg_class t ON t.oid = d.state_table
             WHERE v.oid IS NULL OR t.oid IS NULL
                OR NOT pg_catalog.pg_has_role(d.owner, v.relowner, 'USAGE')
                OR NOT pg_catalog.pg_has_role(d.owner, t.relowner, 'USAGE')
             ORDER BY d.agg_id LOOP
        DELETE FROM stream.aggregate_defs WHERE agg_id = r.agg_id;
        RAISE WARNING 'continuous aggregate % removed: its owner % does not own its view or its state table %',
                      r.view, r.owner, r.state_table
            USING HINT = 'Create it again with stream.create_aggregate.';
    END LOOP;
END
$upgrade$;

-- 0.1.0 let any role insert activation_defs rows of its own, past the
-- check that its owner may read what the activation watches.  0.2.0 checks
-- it as the worker loads and applies definitions (such an activation gets
-- no events): they are kept, with a warning.
DO $upgrade$
DECLARE
    d record;
BEGIN
    FOR d IN SELECT a.name, a.owner, coalesce(a.aggregate, a.stream) AS watched
             FROM stream.activation_defs a
             WHERE NOT coalesce(pg_catalog.has_table_privilege(a.owner, coalesce(a.aggregate, a.stream), 'SELECT'), false)
             ORDER BY a.act_id LOOP
        RAISE WARNING 'activation "%": its owner % cannot read %, so it gets no events', d.name, d.owner, d.watched
            USING DETAIL = 'stream_events 0.1.0 let a role record an activation on a relation it cannot read; 0.2.0 runs an activation only for an owner who may read what it watches.',
                  HINT = format('GRANT SELECT ON %s TO %s, or drop the activation with stream.drop_activation.', d.watched, d.owner);
    END LOOP;
END
$upgrade$;

-- Channels become owned.  A channel whose activations (those whose owner
-- may read what they watch; else all of them) belong to one role is that
-- role's.  0.1.0 let every role use any channel, and the order in which
-- rows were written could be forged: a channel used by several roles goes
-- to the extension's owner, who grants it with stream.grant_channel.
DO $upgrade$
DECLARE
    c record;
    ext_owner regrole := (SELECT e.extowner::regrole FROM pg_catalog.pg_extension e
                          WHERE e.extname = 'stream_events');
BEGIN
    FOR c IN SELECT d.channel,
                    array_agg(DISTINCT d.owner::oid) FILTER (
                        WHERE coalesce(pg_catalog.has_table_privilege(d.owner, coalesce(d.aggregate, d.stream), 'SELECT'), false)) AS readers,
                    array_agg(DISTINCT d.owner::oid) AS owners,
                    min(d.created_at) AS since
             FROM stream.activation_defs d
             GROUP BY d.channel ORDER BY d.channel LOOP
        IF cardinality(c.readers) = 1 OR (c.readers IS NULL AND cardinality(c.owners) = 1) THEN
            INSERT INTO stream.channels (channel, owner, created_at)
            VALUES (c.channel, (coalesce(c.readers, c.owners))[1]::regrole, c.since);
        ELSE
            INSERT INTO stream.channels (channel, owner, created_at) VALUES (c.channel, ext_owner, c.since);
            RAISE WARNING 'channel "%" is used by activations of several roles (%): it now belongs to %',
                          c.channel,
                          (SELECT string_agg(o::regrole::text, ', ' ORDER BY o::regrole::text) FROM unnest(c.owners) o),
                          ext_owner
                USING DETAIL = 'A channel belongs to one role in 0.2.0; its activations keep firing, but only the channel''s owner and the roles it grants read them.',
                      HINT = format('As %s: SELECT stream.grant_channel(%L, <role>) for each role that should consume it.',
                                    ext_owner, c.channel);
        END IF;
    END LOOP;
END
$upgrade$;
-- Consumer names stay unbound: each is bound to the first role that uses it
-- with 0.2.0 (which must own or have been granted the channel).

-- LISTEN has no access control: activations of streams (or aggregates) that
-- PUBLIC cannot read notify ids only, as new ones do unless told otherwise.
UPDATE stream.activation_defs d SET notify = 'id'
WHERE NOT coalesce(pg_catalog.has_table_privilege('public', coalesce(d.aggregate, d.stream), 'SELECT'), false);

-- Activations run the trees analysed as their owner when they were defined
-- (a function or operator planted later on their search_path is never
-- picked up): made here for those of 0.1.0, as stream.on_event and
-- stream.on_absence make them (thresholds have none).  One that no longer
-- analyses keeps none and is analysed from its text as it runs, with a
-- warning.
DO $upgrade$
DECLARE
    d record;
    t text[];
BEGIN
    FOR d IN SELECT * FROM stream.activation_defs WHERE kind <> 'threshold' ORDER BY act_id LOOP
        BEGIN
            t := stream._activation_trees_as(d.owner, d.search_path, d.stream, d.condition, d.key,
                                             d.payload, d.cancelled_by);
            UPDATE stream.activation_defs
               SET condition_tree = t[1], key_tree = t[2], payload_tree = t[3], cancelled_by_tree = t[4]
             WHERE act_id = d.act_id;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'activation "%" could not be analysed as its owner %: %', d.name, d.owner, SQLERRM
                USING HINT = 'It is analysed from its text as it runs; drop it and define it again to keep its analysed trees.';
        END;
    END LOOP;
END
$upgrade$;

-- 0.1.0 let any role write aggregate_defs rows of its own: the analysed
-- tree the worker executes, the view's select list and the key columns are
-- made again here from the query text, analysed as the owner in the
-- recorded search_path (restricted), as stream.create_aggregate does now.
-- An aggregate that no longer analyses is left in error.
DO $upgrade$
DECLARE
    d record;
    a record;
    c record;
BEGIN
    FOR d IN SELECT * FROM stream.aggregate_defs ORDER BY agg_id LOOP
        BEGIN
            a := stream._aggregate_analyze_as(d.owner, d.search_path, d.query);
            c := stream._aggregate_columns(a.column_names, a.is_key, a.visible, a.result_types, a.aggregates);
            UPDATE stream.aggregate_defs
               SET query_tree = a.query_tree, view_select = c.view_select, state_keys = c.state_keys
             WHERE agg_id = d.agg_id;
        EXCEPTION WHEN OTHERS THEN
            UPDATE stream.aggregate_defs
               SET status = 'error',
                   last_error = format('not analysed again when updating to 0.2.0: %s', SQLERRM)
             WHERE agg_id = d.agg_id;
            RAISE WARNING 'continuous aggregate % could not be analysed again as its owner %: %',
                          d.view, d.owner, SQLERRM
                USING HINT = 'Drop it and create it again with stream.create_aggregate.';
        END;
    END LOOP;
END
$upgrade$;

-- Dedup keys: one table per stream (sql/modules/10_streams.sql), made by
-- the same function as for a new stream; each stream's keys move there.
-- Created inside this script, the tables would become members of the
-- extension, which pg_dump does not dump: they are taken out of it, as a
-- stream made by stream.create_stream has them.
DO $upgrade$
DECLARE
    s    record;
    keys regclass;
BEGIN
    FOR s IN SELECT stream_id FROM stream.streams WHERE dedup_window IS NOT NULL ORDER BY stream_id LOOP
        PERFORM stream._create_dedup_keys(s.stream_id);
        keys := stream._dedup_keys_of(s.stream_id);
        EXECUTE format('ALTER EXTENSION stream_events DROP TABLE %s', keys);
        EXECUTE format('INSERT INTO %s (event_id, seen_at) '
                       'SELECT event_id, seen_at FROM stream.dedup_keys WHERE stream_id = $1', keys)
            USING s.stream_id;
    END LOOP;
END
$upgrade$;
ALTER EXTENSION stream_events DROP TABLE stream.dedup_keys;
DROP TABLE stream.dedup_keys;

-- sessions that cached a stream's options under 0.1.0 read them again
SELECT stream._stream_changed(s.relid) FROM stream.streams s;

-- capture (piece 80): its event trigger, once its function exists
CREATE EVENT TRIGGER stream_events_capture_drop ON sql_drop
    EXECUTE FUNCTION stream._on_capture_drop();
