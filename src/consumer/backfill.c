/*-------------------------------------------------------------------------
 * backfill.c
 *	  The backfill of a new (or rebuilt) definition from the events already
 *	  in its stream.  A short-lived slot gives a consistent point C and a
 *	  snapshot that sees exactly the transactions that commit before C; the
 *	  events it sees are folded and written (sink->backfill_write), and the
 *	  definition's applied LSN set to C, in that snapshot's transaction.
 *	  The database's slot, created earlier, decodes from before C, and its
 *	  commits at or after C are the ones folded from then on.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/tupconvert.h"
#include "access/xact.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "replication/slot.h"
#include "replication/snapbuild.h"
#include "storage/proc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "consumer/internal.h"
#include "core/definition.h"
#include "core/guc.h"
#include "core/owner.h"

XLogRecPtr	bf_lsn = InvalidXLogRecPtr;

/* The backfill's read of the stream, as the definition's owner. */
static Portal
backfill_open(ConsumerDef *def, const char *sql)
{
	OwnerScope	scope = {0};
	volatile Portal portal = NULL;

	owner_enter(&scope, def->owner, def->search_path);
	PG_TRY();
	{
		portal = SPI_cursor_open_with_args(NULL, sql, 0, NULL, NULL, NULL, true, 0);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	return portal;
}

static void
backfill_fetch(ConsumerDef *def, Portal portal)
{
	OwnerScope	scope = {0};

	owner_enter(&scope, def->owner, def->search_path);
	PG_TRY();
	{
		SPI_cursor_fetch(portal, true, 10000);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
}

void
backfill(ConsumerDef *def)
{
	XLogRecPtr	start;
	Snapshot	snap;
	TupleConversionMap *map = NULL;
	bool		map_done = false;
	Portal		portal;
	int64		nevents = 0;
	char	   *sql;
	MemoryContext old;
	StreamFeed *feed = feed_of(def->stream);
	List	   *just = list_make1(def);

	release_decoding();
	ensure_main_slot();

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	/* as SnapBuildExportSnapshot does: there is no nicer API */
	XactIsoLevel = XACT_REPEATABLE_READ;
	pgstat_report_activity(STATE_RUNNING, "stream_events: backfilling a continuous aggregate");
	old = MemoryContextSwitchTo(consumer_cxt);
	bf_ctx = create_slot(psprintf("stream_events_%u_backfill", MyDatabaseId), false, true);
	MemoryContextSwitchTo(old);
	start = MyReplicationSlot->data.confirmed_flush;
	bf_lsn = start;
	snap = SnapBuildInitialSnapshot(bf_ctx->snapshot_builder);
	RestoreTransactionSnapshot(snap, MyProc);
	release_decoding();			/* ephemeral: dropped; our xmin holds the rows */

	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	sql = psprintf("SELECT * FROM %s", definition_relation_name(def->stream));
	current_def = def;
	portal = backfill_open(def, sql);
	for (;;)
	{
		TupleTableSlot *slot;

		backfill_fetch(def, portal);
		if (SPI_processed == 0)
			break;
		slot = MakeSingleTupleTableSlot(SPI_tuptable->tupdesc, &TTSOpsHeapTuple);
		if (!map_done)
		{
			/* the cursor's columns, by name, onto the stream's row type */
			old = MemoryContextSwitchTo(consumer_cxt);
			map = convert_tuples_by_name(CreateTupleDescCopy(SPI_tuptable->tupdesc), feed->desc);
			MemoryContextSwitchTo(old);
			map_done = true;
		}
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			ConsumerEvent ev;

			ExecStoreHeapTuple(SPI_tuptable->vals[i], slot, false);
			ev.row = map ? execute_attr_map_slot(map->attrMap, slot, feed->slot) : slot;
			ev.lsn = bf_lsn;
			ev.commit_time = 0;
			fold_def(def, &ev);
			nevents++;
		}
		ExecDropSingleTupleTableSlot(slot);
		SPI_freetuptable(SPI_tuptable);
		current_def = def;
		if (batch_units >= se_aggregate_batch_groups || consumer_over_memory())
		{
			def->sink->backfill_write(def, false, InvalidXLogRecPtr, 0);
			def->sink->reset(just);
			batch_units = 0;
		}
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			elog(ERROR, "backfill interrupted by shutdown");
	}
	SPI_cursor_close(portal);
	def->sink->backfill_write(def, true, start, nevents);
	current_def = NULL;
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	def->sink->reset(just);
	batch_units = 0;
	reset_dead_letters();
	def->backfill = false;
	def->applied_lsn = start;
	/* a careful backfill is done: the events after it are decoded */
	careful_forget(def->sink, def->id);
	def->careful = false;
	list_free(just);
	ereport(LOG,
			(errmsg("stream_events backfilled %s %s with " INT64_FORMAT " events; changes from %X/%X on are decoded",
					def->sink->what, def->name, nevents, LSN_FORMAT_ARGS(start))));
}
