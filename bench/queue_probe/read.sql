-- bench/queue_probe/read.sql: one read of a window per design, in one
-- REPEATABLE READ transaction whose snapshot is S_now and which commits the
-- new position with the "state" (here: the count), as the apply would.
--   psql -v design=a|b|c -v tbl=<stream> -v reader=<name> [-v v2=1] -f read.sql
-- v2=1 (probes.sh): the BRIN indexes of the stream's partitions summarized
-- first (brin_summarize_new_values, in its own transaction), and (b) reads
-- its ticks into literals first and skips the stream when there is none.
-- Without v2 (the run.sh figures) an unsummarized BRIN range always matches,
-- so a poll rescans every row inserted since the last VACUUM.
\set ON_ERROR_STOP 1
\if :{?v2}
\else
\set v2 0
\endif
SELECT :'design' = 'a' AS is_a, :'design' = 'b' AS is_b, :'design' = 'c' AS is_c,
       :'v2' = '1' AND :'design' IN ('a', 'b') AS summarize \gset
\if :summarize
SELECT count(brin_summarize_new_values(i.indexrelid)) AS nsum
FROM pg_inherits h JOIN pg_index i ON i.indrelid = h.inhrelid
     JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
WHERE h.inhparent = :'tbl'::regclass AND am.amname = 'brin' \gset
\endif
-- the next bound is read before the snapshot is taken (see qp_bound)
SELECT qp_bound() AS new_bound \gset
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_current_xact_id()::text::bigint AS me \gset
SELECT snap AS prev_snap, bound AS prev_bound,
       pg_snapshot_xmax(snap)::text::bigint AS prev_xmax,
       coalesce((SELECT array_agg(x::text::bigint) FROM pg_snapshot_xip(snap) x), '{}') AS prev_xip
FROM qp_position WHERE reader = :'reader' \gset
\if :is_a
-- (a) snapshot window over the stream: received_at bound, then xmin window
SELECT count(s.*) AS n FROM :tbl s
WHERE s.received_at >= :'prev_bound'
  AND (:me - age(s.xmin) >= :prev_xmax OR :me - age(s.xmin) = ANY (:'prev_xip'::bigint[])) \gset
\elif :is_b
\if :v2
-- (b) the window's ticks (index on xid: xmax_prev onwards + the xip list) as
-- literals, then their rows: received_at >= the earliest tick's, xmin in the set
SELECT count(*) AS nt, min(first_received_at) AS tmin,
       coalesce(array_agg(xid::text::bigint), '{}') AS txs
FROM qp_tick
WHERE stream = :'tbl'::regclass
  AND (xid >= :'prev_xmax'::xid8 OR xid = ANY (:'prev_xip'::xid8[])) \gset
SELECT :nt > 0 AS has_ticks \gset
\if :has_ticks
SELECT count(s.*) AS n FROM :tbl s
WHERE s.received_at >= :'tmin' AND :me - age(s.xmin) = ANY (:'txs'::bigint[]) \gset
\else
\set n 0
\endif
\else
-- (b) ticks of the window (index on xid: xmax_prev onwards + the xip list),
-- then their rows: received_at >= the earliest tick's, xmin in the tick set
WITH t AS (SELECT xid::text::bigint AS x, first_received_at FROM qp_tick
           WHERE stream = :'tbl'::regclass
             AND (xid >= :'prev_xmax'::xid8 OR xid = ANY (:'prev_xip'::xid8[])))
SELECT count(s.*) AS n FROM :tbl s
WHERE s.received_at >= (SELECT min(first_received_at) FROM t)
  AND :me - age(s.xmin) IN (SELECT x FROM t) \gset
\endif
\else
-- (c) the queue table, PgQ-style (the stream itself is not read)
SELECT count(q.*) AS n FROM qp_queue q
WHERE q.stream = :'tbl'::regclass
  AND (q.ev_txid >= :'prev_xmax'::xid8 OR q.ev_txid = ANY (:'prev_xip'::xid8[])) \gset
\endif
UPDATE qp_position SET snap = pg_current_snapshot(), bound = :'new_bound' WHERE reader = :'reader';
COMMIT;
\echo :n
