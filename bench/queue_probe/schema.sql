-- bench/queue_probe/schema.sql: the prototypes of the queue-mode candidates
-- (docs/queue-mode.md), on streams made by stream.create_stream so that every
-- variant pays the real BEFORE INSERT trigger (received_at, envelope, dedup,
-- stats).  Loaded once into the probe database by run.sh.
\set ON_ERROR_STOP 1

-- (b) per-transaction tick: one row per (transaction, stream), written by the
-- first statement of a transaction that inserts into the stream.  The C
-- version would key a backend-local flag on GetCurrentTransactionId() (the
-- subtransaction's xid, so the tick shares the rows' fate) and check it per
-- row at no cost; this prototype is a plpgsql AFTER ... FOR EACH STATEMENT
-- trigger with the flag in a transaction-local setting, so its cost for
-- 1-row transactions is an upper bound of the C version's.
CREATE TABLE IF NOT EXISTS qp_tick (
    xid               xid8        NOT NULL,   -- top-level (pg_current_xact_id)
    stream            oid         NOT NULL,
    first_received_at timestamptz NOT NULL    -- statement_timestamp() of the first statement
) WITH (fillfactor = 100);
CREATE INDEX IF NOT EXISTS qp_tick_xid ON qp_tick (xid);

CREATE OR REPLACE FUNCTION qp_tick_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    x xid8 := pg_current_xact_id();
BEGIN
    IF current_setting('qp.tick_xid', true) IS DISTINCT FROM x::text THEN
        INSERT INTO qp_tick VALUES (x, TG_RELID, statement_timestamp());
        PERFORM set_config('qp.tick_xid', x::text, true);   -- reset at transaction end
    END IF;
    RETURN NULL;
END $$;

-- (c) PgQ-style per-event queue: every event copied into a queue table
-- indexed on ev_txid (PgQ's event_N tables carry ev_id, ev_txid, ev_data and
-- an index on ev_txid; rotation replaces deletes).  Written from an AFTER
-- statement trigger with a transition table: one INSERT ... SELECT per
-- statement, cheaper than PgQ's per-row logutriga, so a lower bound of (c).
CREATE TABLE IF NOT EXISTS qp_queue (
    ev_id        bigint GENERATED ALWAYS AS IDENTITY,
    ev_txid      xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream       oid NOT NULL,
    event_id     uuid NOT NULL,
    event_name   text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    user_id      text,
    anonymous_id text,
    session_id   text,
    properties   jsonb NOT NULL,
    context      jsonb NOT NULL
) WITH (fillfactor = 100);
CREATE INDEX IF NOT EXISTS qp_queue_txid ON qp_queue (ev_txid);

CREATE OR REPLACE FUNCTION qp_queue_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO qp_queue (stream, event_id, event_name, occurred_at, received_at, user_id,
                          anonymous_id, session_id, properties, context)
    SELECT TG_RELID, n.event_id, n.event_name, n.occurred_at, n.received_at, n.user_id,
           n.anonymous_id, n.session_id, n.properties, n.context
    FROM qp_new AS n;
    RETURN NULL;
END $$;

-- The position a reader keeps: the snapshot it consumed to and, for (a), the
-- received_at bound read BEFORE that snapshot was taken (see the doc).
CREATE TABLE IF NOT EXISTS qp_position (
    reader text PRIMARY KEY,
    snap   pg_snapshot NOT NULL,
    bound  timestamptz NOT NULL
);

-- (a) the received_at bound: every row not visible in a snapshot taken after
-- this call was inserted by a statement that started after the earliest
-- transaction start of this database's backends now (or after now).  Read
-- before the snapshot; prepared transactions are not covered (no start time).
CREATE OR REPLACE FUNCTION qp_bound() RETURNS timestamptz LANGUAGE sql VOLATILE AS $$
    SELECT least(clock_timestamp(), min(xact_start))
    FROM pg_stat_activity
    WHERE datname = current_database() AND xact_start IS NOT NULL AND pid <> pg_backend_pid()
$$;

-- Takes the position now: bound first, then the snapshot (separate statements
-- of a READ COMMITTED caller: the snapshot is the second statement's).
CREATE OR REPLACE PROCEDURE qp_mark(r text) LANGUAGE plpgsql AS $$
DECLARE b timestamptz;
BEGIN
    b := qp_bound();
    COMMIT;
    INSERT INTO qp_position VALUES (r, pg_current_snapshot(), b)
    ON CONFLICT (reader) DO UPDATE SET snap = excluded.snap, bound = excluded.bound;
    COMMIT;
END $$;

-- A row's xmin as a 64-bit xid, exactly, in a transaction that has an xid:
-- age(xmin) is (own xid - xmin) modulo 2^32, correct for every unfrozen xmin
-- (within 2^31 of the present), and 2^31-1 for frozen/special xids, which
-- then map far into the past (visible in every snapshot).  No text casts per row.
--   xmin8 = pg_current_xact_id() - age(xmin)
