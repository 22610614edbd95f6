/*-------------------------------------------------------------------------
 * apply.c
 *	  The consumer's apply transaction (driver.c calls apply_batches at a
 *	  commit boundary): every sink locks, then applies what it folded with
 *	  each definition's new position, in one transaction tagged with the
 *	  private origin; then what every definition has applied may be
 *	  forgotten by the source: the slot is confirmed (logical mode) or
 *	  the ingest queue released (queue.c).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "replication/logical.h"
#include "replication/slot.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "consumer/internal.h"
#include "core/guc.h"
#include "core/origin.h"


/* whether a definition has something to write */
static bool
def_pending(ConsumerDef *def, XLogRecPtr upto, bool write_idle)
{
	if (def->backfill)
		return false;
	return def->ndead > 0 || def->sink->pending(def) ||
		(write_idle && upto > def->applied_lsn);
}

/* the apply transaction's writes, tagged as the worker's own (origin.h) */
static void
apply_tagged(XLogRecPtr upto, bool write_idle, TimestampTz now)
{
	OriginTag	tag = {0};

	origin_tag_begin(&tag);
	PG_TRY();
	{
		/* every lock first, so that thresholds see dropped activations too */
		for (int s = 0; s < consumer_nsinks; s++)
		{
			List	   *defs = defs_of(consumer_sinks[s]);

			consumer_sinks[s]->lock(defs);
			list_free(defs);
		}
		for (int s = 0; s < consumer_nsinks; s++)
		{
			List	   *defs = defs_of(consumer_sinks[s]);

			consumer_sinks[s]->apply(defs, upto, write_idle, now);
			list_free(defs);
		}
	}
	PG_FINALLY();
	{
		origin_tag_end(&tag);
	}
	PG_END_TRY();
}

void
reset_batches(void)
{
	for (int s = 0; s < consumer_nsinks; s++)
	{
		List	   *defs = defs_of(consumer_sinks[s]);

		consumer_sinks[s]->reset(defs);
		list_free(defs);
	}
	reset_dead_letters();
	batch_units = 0;
}

/*
 * Applies every definition's batch and advances its applied LSN to upto
 * (all commits that start before upto have been folded), in one
 * transaction; then confirms the slot up to the smallest applied LSN.
 * Definitions without changes are written only when asked (flush) or
 * every ten seconds, so that an idle worker does not write WAL of its own.
 */
void
apply_batches(XLogRecPtr upto, bool write_idle)
{
	ListCell   *lc;
	TimestampTz now = GetCurrentTimestamp();
	XLogRecPtr	confirm = InvalidXLogRecPtr;
	bool		any = false;

	foreach(lc, consumer_defs)
		if (def_pending(lfirst(lc), upto, write_idle))
			any = true;
	if (any)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "stream_events: applying to continuous aggregates");
		apply_tagged(upto, write_idle, now);
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
		pgstat_report_stat(false);
		pgstat_report_activity(STATE_IDLE, NULL);
		for (int s = 0; s < consumer_nsinks; s++)
		{
			List	   *defs = defs_of(consumer_sinks[s]);

			consumer_sinks[s]->committed(defs, upto, now);
			list_free(defs);
		}
		/*
		 * Only the write of the idle ones restarts their ten seconds: a
		 * busy stream's applies must not keep a quiet one's definitions
		 * (and with them the slot) where they were.
		 */
		if (write_idle)
			last_idle_write = now;
	}
	reset_batches();
	careful_prune();

	/* the slot may forget what every definition has applied */
	foreach(lc, consumer_defs)
	{
		ConsumerDef *def = lfirst(lc);

		if (def->backfill || def->rides)
			continue;
		if (XLogRecPtrIsInvalid(confirm) || def->applied_lsn < confirm)
			confirm = def->applied_lsn;
	}
	/* a parked definition replays from its applied LSN when it runs again */
	confirm = parked_confirm(confirm);

	/*
	 * A backfill running in its own process ends at a consistent point C
	 * at or after where the slot was confirmed when it started, and this
	 * worker then decodes the commits from C on from the slot: the slot
	 * stays where it is until the worker has loaded that aggregate again
	 * (backfill.c, docs/aggregates.md).
	 */
	if (backfill_holds_slot())
		confirm = InvalidXLogRecPtr;

	/*
	 * The slot may forget WAL only once the commits that recorded these
	 * applied LSNs are flushed (they are, with synchronous_commit on; kept
	 * for a server that sets it off for everyone).  WAL is flushed in
	 * order, so the end of this process's last commit is enough.  (Stop 11
	 * tried asynchronous commits in the worker: producer throughput rose a
	 * little, but decoding then waited for the WAL writer, up to
	 * wal_writer_delay, and absence timers fired up to 200 ms late.)
	 */
	if (consumer_uses_queue())
	{
		if (!XLogRecPtrIsInvalid(confirm))
			queue_release(confirm);
	}
	else if (MyReplicationSlot && !XLogRecPtrIsInvalid(confirm) &&
		confirm > MyReplicationSlot->data.confirmed_flush &&
		GetFlushRecPtr(NULL) >= XactLastCommitEnd)
	{
		LogicalConfirmReceivedLocation(confirm);
		ReplicationSlotMarkDirty();
	}
}

