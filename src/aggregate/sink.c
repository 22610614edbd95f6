/*-------------------------------------------------------------------------
 * sink.c
 *	  Continuous aggregates as a sink of the worker's consumer
 *	  (consumer/sink.h): their catalog rows (stream.aggregate_defs) read
 *	  and compiled (compile.c), events folded (fold.c), each batch upserted
 *	  (upsert.c) with the aggregate's applied LSN, rate and status in the
 *	  apply transaction, the backfill's writes, errors into the row's
 *	  status.  See docs/aggregates.md.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "aggregate/runtime.h"
#include "core/origin.h"
#include "core/plans.h"

static List *runtimes = NIL;	/* AggRuntime, in the consumer's memory */

List *
aggregate_runtimes(void)
{
	return runtimes;
}

/* a watch (threshold) is evaluated from the next upsert on (not in a backfill) */
void
aggregate_add_watch(AggRuntime *rt, AggWatch *w)
{
	MemoryContext old = MemoryContextSwitchTo(consumer_defs_context());

	rt->watches = lappend(rt->watches, w);
	aggregate_forget_plan(rt);
	MemoryContextSwitchTo(old);
}

/* a watch that starts once the aggregate has backfilled (AggWatch.init) */
void
aggregate_add_pending_watch(AggRuntime *rt, AggWatch *w)
{
	MemoryContext old = MemoryContextSwitchTo(consumer_defs_context());

	rt->pending_watches = lappend(rt->pending_watches, w);
	MemoryContextSwitchTo(old);
}

static List *
agg_states(void)
{
	return consumer_read_states("SELECT agg_id, status = 'error' FROM stream.aggregate_defs");
}

/* reads the catalog and compiles every aggregate but skip; SPI */
static List *
agg_load(List *skip)
{
	MemoryContext cxt = CurrentMemoryContext;
	uint64		n;
	SPITupleTable *tuptable;
	List	   *defs = NIL;

	if (SPI_execute("SELECT agg_id, view::oid, state_table::oid, stream::oid, owner::oid, "
					"query_tree, applied_lsn IS NULL, coalesce(applied_lsn, '0/0'), apply_rate, "
					"view_select, state_keys, search_path, "
					"coalesce(pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'on_error', 'stop') "
					"OPERATOR(pg_catalog.=) 'skip' "
					"FROM stream.aggregate_defs d ORDER BY agg_id", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read stream.aggregate_defs");
	n = SPI_processed;
	tuptable = SPI_tuptable;	/* compiling runs SPI queries too */
	MemoryContextSwitchTo(cxt);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = tuptable->vals[i];
		TupleDesc	desc = tuptable->tupdesc;
		bool		isnull;
		int32		agg_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		Oid			view = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
		Oid			state_rel = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
		Oid			stream = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
		Oid			owner = DatumGetObjectId(SPI_getbinval(tup, desc, 5, &isnull));
		char	   *tree = TextDatumGetCString(SPI_getbinval(tup, desc, 6, &isnull));
		bool		backfill = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
		XLogRecPtr	applied = DatumGetLSN(SPI_getbinval(tup, desc, 8, &isnull));
		Datum		rate = SPI_getbinval(tup, desc, 9, &isnull);
		bool		rate_null = isnull;
		AggRuntime *rt;

		if (list_member_int(skip, agg_id))
			continue;
		/* an error while compiling is this aggregate's own */
		consumer_blame(&aggregate_sink, agg_id, get_rel_name(view),
					   backfill ? InvalidXLogRecPtr : applied);
		rt = aggregate_compile(agg_id, view, state_rel, stream, owner, tree,
							   SPI_getvalue(tup, desc, 12), backfill, applied);
		consumer_unblame();
		rt->apply_rate = rate_null ? 0 : DatumGetFloat8(rate);
		rt->def.skip_errors = DatumGetBool(SPI_getbinval(tup, desc, 13, &isnull));
		rt->view_select = SPI_getvalue(tup, desc, 10);
		rt->state_keys = SPI_getvalue(tup, desc, 11);
		runtimes = lappend(runtimes, rt);
		defs = lappend(defs, rt);
	}
	return defs;
}

static void
agg_free(void)
{
	ListCell   *lc;

	foreach(lc, runtimes)
	{
		aggregate_free_plans(lfirst(lc));
		aggregate_release(lfirst(lc));
	}
	runtimes = NIL;
}

static int
agg_fold(ConsumerDef *def, ConsumerEvent *ev)
{
	AggRuntime *rt = (AggRuntime *) def;
	int			n = aggregate_fold(rt, ev->row);

	if (ev->commit_time)
		rt->last_commit_at = ev->commit_time;
	return n;
}

static bool
agg_pending(ConsumerDef *def)
{
	return ((AggRuntime *) def)->ngroups > 0 || ((AggRuntime *) def)->spill != NULL;
}

/* in the decoding transaction; an error spilling is the aggregate's own */
static void
agg_spill(List *defs)
{
	ListCell   *lc;

	foreach(lc, defs)
	{
		AggRuntime *rt = lfirst(lc);

		if (rt->ngroups == 0)
			continue;
		consumer_blame(&aggregate_sink, rt->def.id, rt->def.name, rt->def.applied_lsn);
		aggregate_spill(rt);
		consumer_unblame();
	}
}

/* the rows are locked one by one in apply (FOR UPDATE, skipping the gone) */
static void
agg_lock(List *defs)
{
}

/*
 * Locks the aggregate's row (ordering us with drop_aggregate and
 * rebuild_aggregate); false when it was dropped or is being rebuilt: its
 * batch is forgotten.
 */
static bool
lock_row(AggRuntime *rt)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(rt->def.id)};

	static SPIPlanPtr plan = NULL;

	if (plan_execute(&plan, "SELECT 1 FROM stream.aggregate_defs WHERE agg_id = $1 "
					 "AND applied_lsn IS NOT NULL FOR UPDATE",
					 1, argtypes, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not lock stream.aggregate_defs");
	return SPI_processed == 1;
}

/* an upsert's error is the aggregate's own (it is parked) */
static void
upsert_blamed(AggRuntime *rt)
{
	consumer_blame(&aggregate_sink, rt->def.id, rt->def.name, rt->def.applied_lsn);
	aggregate_upsert_groups(rt);
	consumer_unblame();
}

static void
agg_apply(List *defs, XLogRecPtr upto, bool write_idle, TimestampTz now)
{
	static SPIPlanPtr applied_plan = NULL;
	ListCell   *lc;

	foreach(lc, defs)
	{
		AggRuntime *rt = lfirst(lc);
		Oid			argtypes[5] = {INT4OID, LSNOID, INT8OID, TIMESTAMPTZOID, FLOAT8OID};
		Datum		args[5];
		char		nulls[5] = "     ";
		double		secs;
		XLogRecPtr	newlsn;

		rt->applied_now = false;
		if (rt->def.backfill ||
			!(agg_pending(&rt->def) || rt->def.ndead > 0 ||
			  (write_idle && upto > rt->def.applied_lsn)))
			continue;
		if (!lock_row(rt))
			continue;
		upsert_blamed(rt);
		consumer_write_dead_letters(&rt->def);
		newlsn = Max(upto, rt->def.applied_lsn);
		secs = rt->last_apply ? (double) (now - rt->last_apply) / USECS_PER_SEC : 0;

		/*
		 * Events per second, smoothed over about ten seconds of time (not
		 * of applies), so that it decays when nothing is applied.
		 */
		if (secs > 0)
		{
			double		keep = exp(-Min(secs, 600.0) / 10.0);

			rt->apply_rate = rt->apply_rate > 0
				? keep * rt->apply_rate + (1 - keep) * (rt->events / secs)
				: rt->events / secs;
		}
		args[0] = Int32GetDatum(rt->def.id);
		args[1] = LSNGetDatum(newlsn);
		args[2] = Int64GetDatum(rt->events);
		args[3] = TimestampTzGetDatum(rt->last_commit_at);
		nulls[3] = rt->last_commit_at ? ' ' : 'n';
		args[4] = Float8GetDatum(rt->apply_rate);
		if (plan_execute(&applied_plan, "UPDATE stream.aggregate_defs SET applied_lsn = $2, "
						 "applied_at = now(), status = 'running', last_error = NULL, "
						 "events_applied = events_applied + $3, "
						 "last_commit_at = coalesce($4, last_commit_at), apply_rate = $5 "
						 "WHERE agg_id = $1",
						 5, argtypes, args, nulls, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not update stream.aggregate_defs");
		rt->applied_now = true;
	}
}

/* stream.retry_dead_letters folded these again: their groups are written */
static void
agg_retried(List *defs)
{
	ListCell   *lc;

	foreach(lc, defs)
	{
		AggRuntime *rt = lfirst(lc);

		if (lock_row(rt))
			upsert_blamed(rt);
	}
}

static void
agg_committed(List *defs, XLogRecPtr upto, TimestampTz now)
{
	ListCell   *lc;

	foreach(lc, defs)
	{
		AggRuntime *rt = lfirst(lc);

		if (!rt->applied_now)
			continue;
		rt->def.applied_lsn = Max(upto, rt->def.applied_lsn);
		rt->last_apply = now;
		rt->applied_now = false;
	}
}

static void
agg_reset(List *defs)
{
	ListCell   *lc;

	foreach(lc, defs)
		aggregate_reset_batch(lfirst(lc));
}

static void
agg_set_error(int32 id, const char *msg)
{
	Oid			argtypes[3] = {TEXTOID, BOOLOID, INT4OID};
	Datum		args[3] = {CStringGetTextDatum(msg), BoolGetDatum(id == 0), Int32GetDatum(id)};

	/*
	 * An error that is nobody's (id 0) is the worker's: an aggregate that
	 * backfills in its own process (consumer/backfill.c) is not concerned,
	 * and its row must not say 'error', which would park it when that
	 * process ends.
	 */
	SPI_execute_with_args("UPDATE stream.aggregate_defs SET status = 'error', last_error = $1 "
						  "WHERE ($2 AND applied_lsn IS NOT NULL) OR agg_id = $3",
						  3, argtypes, args, NULL, false, 0);
}

/* the slot went missing under a running aggregate: it is rebuilt */
static void
agg_slot_lost(ConsumerDef *def)
{
	ereport(WARNING,
			(errmsg("stream_events replication slot was missing; rebuilding continuous aggregate %s",
					def->name)));
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_execute(psprintf("SELECT stream.rebuild_aggregate(%s)",
						 quote_literal_cstr(def->name)), false, 0);
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
}

/*
 * The backfill's writes, tagged as the worker's own (origin.h): the groups
 * folded so far (each upserted as the owner) and, when done, the
 * aggregate's applied LSN; then its watches waiting for the backfill
 * start.  (The backfill process loads no activation: there are none; the
 * worker starts the thresholds from the backfilled groups when it loads
 * the aggregate again, act_loaded.)
 */
static void
agg_backfill_write(ConsumerDef *def, bool done, XLogRecPtr start, int64 nevents)
{
	AggRuntime *rt = (AggRuntime *) def;
	OriginTag	tag = {0};
	ListCell   *lc;

	origin_tag_begin(&tag);
	PG_TRY();
	{
		aggregate_upsert_groups(rt);
		if (done)
		{
			Oid			argtypes[3] = {INT4OID, LSNOID, INT8OID};
			Datum		args[3] = {Int32GetDatum(rt->def.id), LSNGetDatum(start), Int64GetDatum(nevents)};

			consumer_write_dead_letters(def);
			if (SPI_execute_with_args("UPDATE stream.aggregate_defs SET applied_lsn = $2, applied_at = now(), "
									  "status = 'running', last_error = NULL, events_backfilled = $3, "
									  "events_applied = $3 WHERE agg_id = $1 AND applied_lsn IS NULL",
									  3, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not update stream.aggregate_defs");
			if (SPI_processed != 1)
				elog(ERROR, "continuous aggregate %s changed during its backfill", rt->def.name);
		}
	}
	PG_FINALLY();
	{
		origin_tag_end(&tag);
	}
	PG_END_TRY();
	if (!done)
		return;
	/* the watches start from the backfilled groups (in this transaction) */
	rt->def.backfill = false;
	foreach(lc, rt->pending_watches)
	{
		AggWatch   *w = lfirst(lc);

		w->init(w, rt);
	}
	rt->pending_watches = NIL;
}

/*
 * Where the backfill process stands (sink.h): started (an error an earlier
 * attempt left is cleared) or failed for a reason that passes (retried).
 * Only while the aggregate has no applied LSN: a finished backfill's row
 * is the apply's.
 */
static void
agg_backfill_note(int32 id, const char *msg)
{
	Oid			argtypes[2] = {INT4OID, TEXTOID};
	Datum		args[2] = {Int32GetDatum(id), msg ? CStringGetTextDatum(msg) : (Datum) 0};
	char		nulls[2] = {' ', msg ? ' ' : 'n'};
	const char *sql = msg
	? "UPDATE stream.aggregate_defs SET last_error = $2 "
	"WHERE agg_id = $1 AND applied_lsn IS NULL"
	: "UPDATE stream.aggregate_defs SET status = 'backfill', last_error = $2 "
	"WHERE agg_id = $1 AND applied_lsn IS NULL AND status <> 'backfill'";

	if (SPI_execute_with_args(sql, 2, argtypes, args, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update stream.aggregate_defs");
}

const ConsumerSink aggregate_sink = {
	.what = "continuous aggregate",
	.dead_kind = "aggregate",

	/*
	 * Not xmin: the worker's own apply updates these rows, and a signature
	 * that changed with every apply would reload the definitions and
	 * re-read WAL from the slot's restart point each round.  New, dropped,
	 * rebuilt and adopted aggregates show in agg_id and applied_lsn, parked
	 * ones set right in status.
	 */
	.signature_sql = "SELECT string_agg(agg_id || ':' || (applied_lsn IS NULL)::text || "
	"(status = 'error')::text || coalesce(pg_catalog.to_jsonb(g) ->> 'on_error', ''), ',' "
	"ORDER BY agg_id) FROM stream.aggregate_defs g",
	.adopt = aggregates_adopt_restored,
	.states = agg_states,
	.load = agg_load,
	.free = agg_free,
	.fold = agg_fold,
	.pending = agg_pending,
	.spill = agg_spill,
	.lock = agg_lock,
	.apply = agg_apply,
	.retried = agg_retried,
	.committed = agg_committed,
	.reset = agg_reset,
	.set_error = agg_set_error,
	.slot_lost = agg_slot_lost,
	.backfill_write = agg_backfill_write,
	.backfill_note = agg_backfill_note,
};

/* registers the sink; _PG_init, before the activations' (thresholds bind to it) */
void
aggregate_init(void)
{
	consumer_register_sink(&aggregate_sink);
}
