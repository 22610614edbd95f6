/*-------------------------------------------------------------------------
 * queue.c
 *	  The consumer's second source: the ingest queue (queue mode, when
 *	  wal_level is below logical or stream_events.consumer = 'queue';
 *	  docs/queue-mode.md).  Instead of decoding WAL, the worker cuts the
 *	  committed transactions into windows between ticks and reads each
 *	  window's rows from the streams themselves.
 *
 * Ticks (stream.queue_ticks): a tick is a numbered snapshot, made by the
 * worker (or stream.flush's request) under an exclusive lock, so that
 * tick numbers follow snapshot order and every snapshot contains the
 * transactions of the ones before.  Window w holds the transactions
 * visible in tick w's snapshot and not in tick w-1's: the windows
 * partition the committed transactions, each in exactly one window.
 *
 * Positions: a definition's position is "windows before w are applied",
 * written with its state in the apply transaction exactly as the applied
 * LSN of logical mode (it is stored in the same column, as the pg_lsn
 * QUEUE_POSITION(w): tick numbers with the top bit set, which no WAL
 * position reaches), so the driver, the sinks, stream.flush and the
 * failure boundary work unchanged: an event of window w carries
 * QUEUE_POSITION(w) as its "commit LSN".
 *
 * Reading a window: the transactions of the window from stream.queue_txns
 * (written by the producers' trigger, stream/queue.c: per (sub)transaction
 * and stream, its top-level xid8, the xid its rows carry and its first
 * received_at), then each stream's rows whose xmin is one of those xids,
 * from the first received_at on (the streams' BRIN index on received_at).
 * Visibility is decided on top-level xids only (a subtransaction's rows
 * are found through its row), so no pg_subtrans lookup is needed.
 *
 * Release: once every definition (parked ones included) has applied a
 * window, the ticks before it and the queue_txns rows of transactions
 * every remaining tick sees are deleted.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/tupconvert.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/array.h"
#include "utils/hsearch.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "consumer/internal.h"
#include "core/definition.h"
#include "core/guc.h"
#include "core/plans.h"
#include "stream_events.h"

PG_FUNCTION_INFO_V1(stream_consumer_start_position);
PG_FUNCTION_INFO_V1(stream_consumer_mode);

/* rows fetched from a window's cursor at a time */
#define QUEUE_FETCH 1000

/* the position up to which the last read went (upto of the apply) */
XLogRecPtr	queue_read_upto = InvalidXLogRecPtr;
static int64 released_below = 0;
static void queue_summarize(void);
static TimestampTz last_release = 0;

static Oid
queue_ticks_relid(void)
{
	return get_relname_relid("queue_ticks", get_namespace_oid("stream", false));
}

/* ---------- ticks ---------- */

/* this transaction's commit does not wait for its WAL to be flushed */
static void
no_flush_at_commit(void)
{
	(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * Makes the next tick: its number and snapshot under the table's exclusive
 * lock (tick order is snapshot order); made_at is the clock before the
 * snapshot, so a tick made at or after a time sees every transaction
 * committed before it (stream.flush).  In a transaction with SPI.
 */
void
queue_make_tick(void)
{
	Oid			argtypes[1] = {TIMESTAMPTZOID};
	Datum		args[1];

	LockRelationOid(queue_ticks_relid(), ExclusiveLock);
	args[0] = TimestampTzGetDatum(GetCurrentTimestamp());
	/* a statement of its own: its snapshot is taken after the lock */
	if (SPI_execute_with_args("INSERT INTO stream.queue_ticks (tick, snap, made_at) "
							  "SELECT coalesce(max(tick), 0) + 1, pg_catalog.pg_current_snapshot(), $1 "
							  "FROM stream.queue_ticks",
							  1, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not make a tick of the ingest queue");
}

/*
 * Whether a tick is worth making: a transaction committed since the last
 * tick wrote to a stream, or stream.flush asked for one.
 */
static bool
tick_needed(void)
{
	static SPIPlanPtr plan = NULL;

	if (worker_take_tick_request())
	{
		/* as the flush marker in logical mode: positions are written */
		flush_seen = true;
		return true;
	}
	if (plan_execute(&plan, "SELECT 1 FROM (SELECT snap FROM stream.queue_ticks ORDER BY tick DESC LIMIT 1) t, "
					 "stream.queue_txns q "
					 "WHERE q.xid >= pg_catalog.pg_snapshot_xmin(t.snap) "
					 "AND NOT pg_catalog.pg_visible_in_snapshot(q.xid, t.snap) LIMIT 1",
					 0, NULL, NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read stream.queue_txns");
	return SPI_processed > 0;
}

/* ---------- reading windows ---------- */

typedef struct Tick
{
	int64		tick;
	Datum		snap;			/* pg_snapshot, in the read's memory */
	TimestampTz made_at;
} Tick;

/* subxid -> its top-level xid8, for the definitions with a start snapshot */
typedef struct TopXid
{
	TransactionId subxid;
	uint64		xid;
} TopXid;

static bool
feed_has_start_snapshot(StreamFeed *feed)
{
	ListCell   *lc;

	foreach(lc, feed->defs)
		if (((ConsumerDef *) lfirst(lc))->start_snapshot != (Datum) 0)
			return true;
	return false;
}

static HTAB *
top_xids(Datum subxids, Datum xids)
{
	HASHCTL		ctl = {0};
	HTAB	   *tops;
	Datum	   *subs,
			   *tops_d;
	int			n,
				m;

	ctl.keysize = sizeof(TransactionId);
	ctl.entrysize = sizeof(TopXid);
	ctl.hcxt = CurrentMemoryContext;
	tops = hash_create("stream_events window xids", 256, &ctl,
					   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	deconstruct_array(DatumGetArrayTypeP(subxids), XIDOID, sizeof(TransactionId), true,
					  TYPALIGN_INT, &subs, NULL, &n);
	deconstruct_array(DatumGetArrayTypeP(xids), XID8OID, sizeof(uint64), FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, &tops_d, NULL, &m);
	for (int i = 0; i < n && i < m; i++)
	{
		TransactionId sub = DatumGetTransactionId(subs[i]);
		TopXid	   *e = hash_search(tops, &sub, HASH_ENTER, NULL);

		e->xid = DatumGetUInt64(tops_d[i]);
	}
	return tops;
}

/* the stream's rows of one window through its definitions */
static void
read_stream_window(StreamFeed *feed, int64 w, TimestampTz made_at, Datum subxids,
				   Datum xids, TimestampTz from)
{
	Oid			argtypes[2] = {TIMESTAMPTZOID, XIDARRAYOID};
	Datum		args[2] = {TimestampTzGetDatum(from), subxids};
	Portal		portal;
	TupleConversionMap *map = NULL;
	bool		map_done = false;
	char	   *sql;
	HTAB	   *tops = feed_has_start_snapshot(feed) ? top_xids(subxids, xids) : NULL;

	/* the last column is the row's xmin, its (sub)transaction */
	sql = psprintf("SELECT s.*, s.xmin AS \"stream_events xmin\" FROM %s s "
				   "WHERE s.received_at OPERATOR(pg_catalog.>=) $1 "
				   "AND s.xmin OPERATOR(pg_catalog.=) ANY ($2)",
				   definition_relation_name(feed->stream));
	portal = SPI_cursor_open_with_args(NULL, sql, 2, argtypes, args, NULL, true, 0);
	for (;;)
	{
		TupleTableSlot *slot;
		int			natts;

		/* the read is the worker's own, outside any definition's scope */
		fold_scope_end();
		SPI_cursor_fetch(portal, true, QUEUE_FETCH);
		if (SPI_processed == 0)
			break;
		natts = SPI_tuptable->tupdesc->natts;
		slot = MakeSingleTupleTableSlot(SPI_tuptable->tupdesc, &TTSOpsHeapTuple);
		if (!map_done)
		{
			/* the cursor's columns, by name, onto the stream's row type */
			map = convert_tuples_by_name(CreateTupleDescCopy(SPI_tuptable->tupdesc), feed->desc);
			map_done = true;
		}
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			TupleTableSlot *row;
			uint64		top = 0;

			ExecStoreHeapTuple(SPI_tuptable->vals[i], slot, false);
			if (tops)
			{
				bool		isnull;
				TransactionId sub = DatumGetTransactionId(slot_getattr(slot, natts, &isnull));
				TopXid	   *e = hash_search(tops, &sub, HASH_FIND, NULL);

				top = e ? e->xid : 0;
			}
			/* always a map: the cursor has one column more */
			row = execute_attr_map_slot(map->attrMap, slot, feed->slot);
			fold_event(feed, QUEUE_POSITION(w), made_at, top, row);
			consumer_check_memory();
			ExecClearTuple(slot);
		}
		ExecDropSingleTupleTableSlot(slot);
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	fold_scope_end();
	if (tops)
		hash_destroy(tops);
}

/* window w: the transactions visible in hi and not in lo */
static void
read_window(int64 w, Tick *lo, Tick *hi)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {PG_SNAPSHOTOID, PG_SNAPSHOTOID};
	Datum		args[2] = {lo->snap, hi->snap};
	SPITupleTable *tuptable;
	uint64		n;

	if (plan_execute(&plan, "SELECT q.stream, pg_catalog.array_agg(q.subxid), "
					 "pg_catalog.min(q.first_received_at), pg_catalog.array_agg(q.xid) "
					 "FROM stream.queue_txns q "
					 "WHERE q.xid >= pg_catalog.pg_snapshot_xmin($1) "
					 "AND q.xid < pg_catalog.pg_snapshot_xmax($2) "
					 "AND NOT pg_catalog.pg_visible_in_snapshot(q.xid, $1) "
					 "AND pg_catalog.pg_visible_in_snapshot(q.xid, $2) "
					 "GROUP BY q.stream",
					 2, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read stream.queue_txns");
	tuptable = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		Oid			stream = DatumGetObjectId(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 1, &isnull));
		Datum		xids = SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 2, &isnull);
		TimestampTz from = DatumGetTimestampTz(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 3, &isnull));
		Datum		tops = SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 4, &isnull);
		StreamFeed *feed = feed_of(stream);

		if (feed == NULL || feed->defs == NIL)
			continue;
		/* dropped since the definitions were loaded: they go next round */
		if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(stream)))
			continue;
		read_stream_window(feed, w, hi->made_at, xids, tops, from);
	}
	SPI_freetuptable(tuptable);
}

/* the first window some loaded definition has not applied */
static int64
first_unread_window(int64 last)
{
	ListCell   *lc;
	int64		first = last + 1;

	foreach(lc, consumer_defs)
	{
		ConsumerDef *def = lfirst(lc);

		if (def->backfill || def->rides || !QUEUE_POSITION_IS(def->applied_lsn))
			continue;
		first = Min(first, QUEUE_TICK(def->applied_lsn));
	}
	return Max(first, 2);
}

/*
 * Reads what was committed since the definitions' positions: makes a tick
 * when something new is there, then folds every window from the oldest
 * position to the last tick.  Sets queue_read_upto, decode_horizon,
 * decoded_to_end and decoded_end as decoding does.
 */
void
queue_read_available(void)
{
	static SPIPlanPtr last_plan = NULL;
	static SPIPlanPtr ticks_plan = NULL;
	SPITupleTable *tuptable;
	uint64		n;
	Tick	   *ticks;
	int64		first;
	int64		last;
	MemoryContext cxt;
	TimestampTz asked;

	flush_seen = false;

	/*
	 * A tick, in a transaction of its own: readers rely on it committed.
	 * Without one, every transaction committed before asked (the clock
	 * before the check's snapshot) is in a tick already: the horizon of
	 * timers is that time.
	 */
	asked = GetCurrentTimestamp();
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (tick_needed())
	{
		/*
		 * No WAL flush of its own: whatever is applied with this tick is
		 * committed later by the apply transaction, whose flush covers it
		 */
		no_flush_at_commit();
		queue_make_tick();
	}
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "stream_events: reading the ingest queue");

	/*
	 * A window's rows are found through the streams' BRIN index on
	 * received_at: a stream that grows fast has statistics older than its
	 * size, and the planner would scan every partition in full each round
	 * (the work then grows with the stream, not with the window)
	 */
	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
	if (plan_execute(&last_plan, "SELECT max(tick) FROM stream.queue_ticks",
					 0, NULL, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read stream.queue_ticks");
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		last = isnull ? 0 : DatumGetInt64(d);
	}
	first = first_unread_window(last);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "stream_events queue read",
								ALLOCSET_DEFAULT_SIZES);
	if (last >= first)
	{
		Oid			argtypes[1] = {INT8OID};
		Datum		args[1] = {Int64GetDatum(first - 1)};
		MemoryContext old;

		if (plan_execute(&ticks_plan, "SELECT tick, snap, made_at FROM stream.queue_ticks "
						 "WHERE tick >= $1 ORDER BY tick",
						 1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read stream.queue_ticks");
		tuptable = SPI_tuptable;
		n = SPI_processed;
		if (n != (uint64) (last - first + 2))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("ticks %lld to %lld of the ingest queue are missing",
							(long long) (first - 1), (long long) last),
					 errdetail("stream.queue_ticks holds %llu of them.", (unsigned long long) n),
					 errhint("Rebuild the continuous aggregates (stream.rebuild_aggregate).")));
		old = MemoryContextSwitchTo(cxt);
		ticks = palloc(n * sizeof(Tick));
		for (uint64 i = 0; i < n; i++)
		{
			bool		isnull;

			ticks[i].tick = DatumGetInt64(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 1, &isnull));
			ticks[i].snap = datumCopy(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 2, &isnull),
									  false, -1);
			ticks[i].made_at = DatumGetTimestampTz(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 3, &isnull));
		}
		MemoryContextSwitchTo(old);
		SPI_freetuptable(tuptable);
		for (int64 w = first; w <= last; w++)
			read_window(w, &ticks[w - first], &ticks[w - first + 1]);
		decode_horizon = ticks[n - 1].made_at;
	}
	else if (last > 0)
	{
		if (SPI_execute_with_args("SELECT made_at FROM stream.queue_ticks WHERE tick = $1",
								  1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(last)},
								  NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		{
			bool		isnull;

			decode_horizon = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		}
	}
	MemoryContextDelete(cxt);
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);

	decode_horizon = Max(decode_horizon, asked);
	queue_read_upto = QUEUE_POSITION(last + 1);
	queue_summarize();
	decoded_to_end = true;
	decoded_end = queue_read_upto;
}

/* ---------- BRIN upkeep ---------- */

/*
 * Summarizes the new ranges of the BRIN indexes on received_at of the fed
 * streams' partitions, at most once a second: a range autovacuum has not
 * summarized yet matches every window, so each read would scan the whole
 * unsummarized tail again.  A partition another process holds (vacuum) is
 * skipped this time rather than waited for.  In a transaction of its own
 * that does not wait for its WAL flush.
 */
static void
queue_summarize(void)
{
	static SPIPlanPtr plan = NULL;
	static TimestampTz last = 0;
	ListCell   *lc;

	if (!TimestampDifferenceExceeds(last, GetCurrentTimestamp(), 1000))
		return;
	last = GetCurrentTimestamp();
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	no_flush_at_commit();
	foreach(lc, consumer_feeds)
	{
		StreamFeed *feed = lfirst(lc);
		Oid			argtypes[1] = {OIDOID};
		Datum		args[1] = {ObjectIdGetDatum(feed->stream)};
		SPITupleTable *tuptable;
		uint64		n;

		if (plan_execute(&plan, "SELECT i.indexrelid, i.indrelid FROM pg_catalog.pg_inherits h "
						 "JOIN pg_catalog.pg_index i ON i.indrelid = h.inhrelid "
						 "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
						 "JOIN pg_catalog.pg_am a ON a.oid = c.relam "
						 "WHERE h.inhparent = $1 AND a.amname = 'brin'",
						 1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the BRIN indexes of a stream");
		tuptable = SPI_tuptable;
		n = SPI_processed;
		for (uint64 i = 0; i < n; i++)
		{
			bool		isnull;
			Oid			index = DatumGetObjectId(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 1, &isnull));
			Oid			heap = DatumGetObjectId(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 2, &isnull));

			/* the function takes the same lock, held by us already then */
			if (ConditionalLockRelationOid(heap, ShareUpdateExclusiveLock) &&
				SearchSysCacheExists1(RELOID, ObjectIdGetDatum(index)))
				(void) DirectFunctionCall1(brin_summarize_new_values, ObjectIdGetDatum(index));
		}
		SPI_freetuptable(tuptable);
	}
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
}

/* ---------- backfill ---------- */

/*
 * The backfill (backfill.c), in a REPEATABLE READ transaction with SPI:
 * the position after the last tick T its snapshot sees, and in *xids the
 * xids (xid[]) of the stream's rows it sees that T does not: the backfill
 * reads the others, exactly the transactions of windows up to T.
 */
XLogRecPtr
queue_backfill_start(Oid stream, Datum *xids)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(stream)};
	bool		isnull;
	int64		tick;

	if (SPI_execute_with_args("SELECT t.tick, (SELECT coalesce(pg_catalog.array_agg(q.subxid), '{}') "
							  "FROM stream.queue_txns q WHERE q.stream = $1 "
							  "AND q.xid >= pg_catalog.pg_snapshot_xmin(t.snap) "
							  "AND NOT pg_catalog.pg_visible_in_snapshot(q.xid, t.snap)) "
							  "FROM stream.queue_ticks t ORDER BY t.tick DESC LIMIT 1",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the ingest queue has no tick yet"),
				 errdetail("The backfill starts again once the worker has made one.")));
	tick = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*xids = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	return QUEUE_POSITION(tick + 1);
}

/* ---------- release ---------- */

/*
 * Every definition applied the windows before QUEUE_POSITION(confirm):
 * the ticks before confirm - 1 go, and the queue_txns rows of the
 * transactions tick confirm - 1 sees (by its xmin).  At most once a
 * second; in a transaction of its own.
 */
void
queue_release(XLogRecPtr confirm)
{
	int64		below;
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1];

	if (!QUEUE_POSITION_IS(confirm))
		return;
	below = QUEUE_TICK(confirm) - 1;
	if (below <= released_below ||
		!TimestampDifferenceExceeds(last_release, GetCurrentTimestamp(), 1000))
		return;
	args[0] = Int64GetDatum(below);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	/* lost in a crash, it is only done again */
	no_flush_at_commit();
	if (SPI_execute_with_args("DELETE FROM stream.queue_txns q USING stream.queue_ticks t "
							  "WHERE t.tick = $1 AND q.xid < pg_catalog.pg_snapshot_xmin(t.snap)",
							  1, argtypes, args, NULL, false, 0) != SPI_OK_DELETE ||
		SPI_execute_with_args("DELETE FROM stream.queue_ticks WHERE tick < $1",
							  1, argtypes, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not release the ingest queue");
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	released_below = below;
	last_release = GetCurrentTimestamp();
}

/*
 * No definition: nothing reads the queue, so every ten seconds a tick is
 * made and the rows of the transactions it sees deleted (a definition
 * created later backfills from the stream itself).
 */
void
queue_release_idle(void)
{
	static TimestampTz last = 0;

	if (!TimestampDifferenceExceeds(last, GetCurrentTimestamp(), 10000))
		return;
	last = GetCurrentTimestamp();
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute("SELECT 1 FROM stream.queue_txns LIMIT 1", true, 1) == SPI_OK_SELECT &&
		SPI_processed > 0)
	{
		queue_make_tick();
		CommandCounterIncrement();
		if (SPI_execute("DELETE FROM stream.queue_txns q USING stream.queue_ticks t "
						"WHERE t.tick = (SELECT max(tick) FROM stream.queue_ticks) "
						"AND q.xid < pg_catalog.pg_snapshot_xmin(t.snap)",
						false, 0) != SPI_OK_DELETE ||
			SPI_execute("DELETE FROM stream.queue_ticks WHERE tick < (SELECT max(tick) FROM stream.queue_ticks)",
						false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not release the ingest queue");
	}
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
}

/* ---------- changing mode ---------- */

/*
 * Definitions whose position belongs to the other mode (the setting or
 * wal_level changed): stream._consumer_mode_changed() rebuilds the
 * aggregates and starts the activations at the present, after a tick in
 * queue mode (docs/queue-mode.md, "Changing the mode").  In a transaction
 * with SPI, before the definitions are loaded; true when it changed
 * something (the caller commits and loads them in a later round).
 */
bool
queue_adopt_mode(void)
{
	bool		queue = consumer_uses_queue();
	bool		changed;

	if (SPI_execute(queue ?
					"SELECT 1 FROM stream.aggregate_defs WHERE applied_lsn < '80000000/0' "
					"UNION ALL SELECT 1 FROM stream.activation_defs "
					"WHERE delivery = 'batched' AND applied_lsn < '80000000/0' LIMIT 1" :
					"SELECT 1 FROM stream.aggregate_defs WHERE applied_lsn >= '80000000/0' "
					"UNION ALL SELECT 1 FROM stream.activation_defs "
					"WHERE delivery = 'batched' AND applied_lsn >= '80000000/0' LIMIT 1",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the definitions' positions");
	changed = SPI_processed > 0;
	if (!changed)
		return false;
	if (queue)
		queue_make_tick();
	if (SPI_execute("SELECT stream._consumer_mode_changed()", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not move the definitions to the consumer's mode");
	ereport(LOG,
			(errmsg("stream_events consumer now reads %s: continuous aggregates are rebuilt, activations start from now",
					queue ? "the ingest queue" : "logical decoding")));
	return true;
}

/* ---------- SQL ---------- */

/*
 * stream._consumer_start_position(): where a definition created now starts
 * (activations): the WAL insert position in logical mode.  In queue mode,
 * the window after the last tick this call sees (L): every tick up to L
 * sees less than this call's snapshot, which the definition keeps as its
 * start snapshot (activation_defs.start_snapshot): events of transactions
 * it sees are skipped in the windows after L (fold_event).
 */
Datum
stream_consumer_start_position(PG_FUNCTION_ARGS)
{
	int64		last = 0;

	if (!consumer_uses_queue())
		PG_RETURN_LSN(GetXLogInsertRecPtr());
	SPI_connect();
	if (SPI_execute("SELECT max(tick) FROM stream.queue_ticks", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			last = DatumGetInt64(d);
	}
	SPI_finish();
	PG_RETURN_LSN(QUEUE_POSITION(last + 1));
}

/* stream.consumer_mode(): 'logical' or 'queue', as the worker reads */
Datum
stream_consumer_mode(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(consumer_uses_queue() ? "queue" : "logical"));
}
