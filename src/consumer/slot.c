/*-------------------------------------------------------------------------
 * slot.c
 *	  The database's logical replication slot and its decoding: created
 *	  when the first definition needs it, dropped with the last; the WAL
 *	  read in-process through this library's output plugin (plugin.c) up
 *	  to what is flushed; the ephemeral slot a backfill takes its snapshot
 *	  from; the warning when the slot holds too much WAL.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogutils.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "storage/latch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "consumer/consumer.h"
#include "consumer/internal.h"
#include "core/guc.h"
#include "core/origin.h"

LogicalDecodingContext *dctx = NULL;
LogicalDecodingContext *bf_ctx = NULL;
bool		consumer_active = false;
RepOriginId own_origin = InvalidRepOriginId;	/* looked up per round */
bool		flush_seen = false;
bool		stop_after_commit = false;
TimestampTz decode_horizon = 0;
bool		decoded_to_end = false;
XLogRecPtr	decoded_end = InvalidXLogRecPtr;
static TimestampTz last_slot_warning = 0;

/* ---------- slot ---------- */

/*
 * read_local_xlog_page, but never waiting for WAL in its own loop: that
 * loop (pg_usleep + CHECK_FOR_INTERRUPTS) ends only for a die() handler,
 * and this worker's SIGTERM just sets ShutdownRequestPending, so a record
 * that crosses the flush pointer at shutdown kept a fast shutdown waiting.
 * Here the wait is on the latch, and a shutdown request makes the read
 * fail quietly (no error message): decode_available then stops.
 */
static int
read_flushed_page(XLogReaderState *state, XLogRecPtr targetPagePtr, int reqLen,
				  XLogRecPtr targetRecPtr, char *cur_page)
{
	XLogRecPtr	needed = targetPagePtr + reqLen;

	while (GetFlushRecPtr(NULL) < needed)
	{
		if (ShutdownRequestPending)
			return -1;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return read_local_xlog_page(state, targetPagePtr, reqLen, targetRecPtr, cur_page);
}

static XLogReaderRoutine local_wal_routine = {
	.page_read = read_flushed_page,
	.segment_open = wal_segment_open,
	.segment_close = wal_segment_close
};

static XLogReaderRoutine *
xl_routine(void)
{
	return &local_wal_routine;
}

void
release_decoding(void)
{
	if (dctx)
	{
		LogicalDecodingContext *ctx = dctx;

		dctx = NULL;
		streamed_reset();
		FreeDecodingContext(ctx);
	}
	if (bf_ctx)
	{
		LogicalDecodingContext *ctx = bf_ctx;

		bf_ctx = NULL;
		FreeDecodingContext(ctx);
	}
	if (MyReplicationSlot)
		ReplicationSlotRelease();
}

/*
 * Creates a logical slot of our output plugin; the caller is in a
 * transaction that has written nothing.  An ephemeral slot is dropped
 * when released (or at error), a persistent one stays.
 */
LogicalDecodingContext *
create_slot(const char *name, bool persistent, bool need_full_snapshot)
{
	LogicalDecodingContext *ctx;

	CheckSlotRequirements();
	CheckLogicalDecodingRequirements();
	ReplicationSlotCreate(name, true, RS_EPHEMERAL, false);
	consumer_active = true;
	decode_streaming = false;	/* a backfill's decoding never streams */
	ctx = CreateInitDecodingContext("stream_events", NIL, need_full_snapshot,
									InvalidXLogRecPtr, xl_routine(), NULL, NULL, NULL);
	DecodingContextFindStartpoint(ctx);
	if (persistent)
	{
		FreeDecodingContext(ctx);
		ReplicationSlotPersist();
		ReplicationSlotRelease();
		return NULL;
	}
	return ctx;
}

/* The database's slot exists; true if it had to be created. */
bool
ensure_main_slot(void)
{
	char	   *name = consumer_slot_name(MyDatabaseId);

	if (SearchNamedReplicationSlot(name, true) != NULL)
		return false;
	release_decoding();
	StartTransactionCommand();
	(void) create_slot(name, true, false);
	CommitTransactionCommand();
	ereport(LOG,
			(errmsg("stream_events created replication slot \"%s\" for continuous aggregates", name)));
	return true;
}

void
drop_main_slot(const char *why)
{
	char	   *name = consumer_slot_name(MyDatabaseId);

	release_decoding();
	if (SearchNamedReplicationSlot(name, true) != NULL)
	{
		ReplicationSlotDrop(name, true);
		ereport(LOG,
				(errmsg("stream_events dropped replication slot \"%s\": %s", name, why)));
	}
}

/* ---------- decoding ---------- */

/*
 * Large transactions are streamed to the plugin before their commit
 * (streamed.c) unless the setting is off or a capture is loaded: a
 * capture takes every change of its table at the commit, and streamed.c
 * keeps only streams' inserts.  Definitions reloaded release the decoding
 * context, so this is decided again whenever the set of sinks changes.
 */
static bool
streaming_wanted(void)
{
	ListCell   *lc;

	if (!se_decode_streaming)
		return false;
	foreach(lc, consumer_defs)
	{
		ConsumerDef *def = lfirst(lc);

		if (def->sink->change != NULL)
			return false;
	}
	return true;
}

void
decode_available(void)
{
	TimestampTz asked = GetCurrentTimestamp();
	XLogRecPtr	end = GetFlushRecPtr(NULL);
	ResourceOwner owner = CurrentResourceOwner;
	MemoryContext old;

	decoded_to_end = false;
	if (dctx != NULL && dctx->reader->EndRecPtr >= end)
	{
		/* every commit flushed before "asked" is decoded */
		decode_horizon = asked;
		decoded_to_end = true;
		decoded_end = end;
		return;
	}

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	owner = CurrentResourceOwner;
	/* cb_filter_by_origin's: once per round, not per change */
	own_origin = se_origin_id(false);
	if (dctx == NULL)
	{
		old = MemoryContextSwitchTo(consumer_cxt);
		ReplicationSlotAcquire(consumer_slot_name(MyDatabaseId), true);
		consumer_active = true;
		/* read by the plugin's startup callback, and reset there */
		decode_streaming = streaming_wanted();
		dctx = CreateDecodingContext(InvalidXLogRecPtr, NIL, false, xl_routine(),
									 NULL, NULL, NULL);
		XLogBeginRead(dctx->reader, MyReplicationSlot->data.restart_lsn);
		MemoryContextSwitchTo(old);
		InvalidateSystemCaches();
	}
	pgstat_report_activity(STATE_RUNNING, "stream_events: decoding");
	stop_after_commit = false;
	flush_seen = false;
	batch_started = GetCurrentTimestamp();
	old = CurrentMemoryContext;
	while (dctx->reader->EndRecPtr < end && !stop_after_commit)
	{
		XLogRecord *record;
		char	   *errm = NULL;

		/*
		 * The reader allocates in the current context: its record buffer
		 * when a record is larger than any before (a commit with many
		 * invalidations, a pg_restore's), an oversized decoded record, its
		 * decode buffer.  They must live as long as the reader, and the
		 * replay of a commit (ReorderBufferProcessTXN) leaves
		 * TopTransactionContext current behind it (it rolls back its
		 * internal subtransaction): a buffer grown there was freed by our
		 * commit below and written again by the next decoding, a heap
		 * corruption found when the reader was freed.  So every read is
		 * made in the decoding context's own memory.
		 */
		MemoryContextSwitchTo(dctx->context);
		record = XLogReadRecord(dctx->reader, &errm);
		if (record == NULL && ShutdownRequestPending)
			break;				/* read_flushed_page gave up for the shutdown */
		if (errm)
			elog(ERROR, "could not read WAL for continuous aggregates: %s", errm);
		if (record != NULL)
			LogicalDecodingProcessRecord(dctx, dctx->reader);
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			break;
	}
	MemoryContextSwitchTo(old);
	/* decoding may have clobbered it, as logicalfuncs.c notes */
	CurrentResourceOwner = owner;
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	if (dctx->reader->EndRecPtr >= end)
	{
		decode_horizon = asked;
		decoded_to_end = true;
		decoded_end = end;
	}
}

/*
 * A slot that stopped advancing (the consumer fails, or cannot keep up)
 * makes the server keep WAL forever: say so, once a minute, while it holds
 * more than stream_events.slot_warning_size.  stream.aggregates shows the
 * lag in bytes too.
 */
void
warn_if_slot_holds_wal(void)
{
	char	   *name;
	ReplicationSlot *slot;
	XLogRecPtr	restart = InvalidXLogRecPtr;
	XLogRecPtr	now_lsn;
	TimestampTz now = GetCurrentTimestamp();
	static TimestampTz last_check = 0;

	/* looked at every ten seconds, said at most once a minute */
	if (!TimestampDifferenceExceeds(last_check, now, 10 * 1000) ||
		!TimestampDifferenceExceeds(last_slot_warning, now, 60 * 1000))
		return;
	last_check = now;
	name = consumer_slot_name(MyDatabaseId);
	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	slot = SearchNamedReplicationSlot(name, false);
	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		restart = slot->data.restart_lsn;
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);
	if (XLogRecPtrIsInvalid(restart))
		return;
	now_lsn = GetXLogInsertRecPtr();
	if (now_lsn > restart &&
		(now_lsn - restart) / (1024 * 1024) >= (uint64) se_slot_warning_size_mb)
	{
		char	   *held;

		/* the parked definitions are what usually holds it back: name them */
		held = parked_describe();
		ereport(WARNING,
				(errmsg("replication slot \"%s\" of the continuous aggregates holds %llu MB of WAL",
						name, (unsigned long long) ((now_lsn - restart) / (1024 * 1024))),
				 errdetail("The slot has not advanced past %X/%X; the server keeps the WAL after it.%s",
						   LSN_FORMAT_ARGS(restart), held),
				 errhint("See state and last_error in stream.aggregates and stream.activation_status; fix the cause and SELECT stream.resume(name), or drop the definitions to release the slot.")));
		pfree(held);
		last_slot_warning = now;
	}
}

