/*-------------------------------------------------------------------------
 * streamed.c
 *	  Transactions that logical decoding streams to the worker while they
 *	  are still in progress (PostgreSQL's streaming of large transactions,
 *	  the stream_* output plugin callbacks), instead of spilling every
 *	  change of them to pg_replslot/ and reading it back at the commit.
 *
 * Why: a large transaction (a COPY of a million events) is bigger than
 * logical_decoding_work_mem, so the reorder buffer writes each of its
 * changes (the event's row, its dedup key, every other table's change)
 * with one write() each to a file and reads them back at the commit:
 * well over half of the worker's time draining such a backlog
 * (docs/aggregates.md, "Large transactions").  Streamed, the reorder
 * buffer hands the changes over as it reads them and frees them.
 *
 * What is kept: a definition may be folded only with a commit's LSN and
 * time (exactly once against its applied LSN, event time, dead letters),
 * which a streamed change does not have yet, and a transaction that
 * streamed may still abort, whole or one subtransaction.  So the rows of
 * fed streams, in the stream's row type, are kept per top-level
 * transaction in a tuplestore (memory, then a temporary file past 16MB, or
 * a quarter of stream_events.consumer_memory if less, written in blocks),
 * with runs of (stream, subtransaction) beside them; a subtransaction's
 * abort is noted, the top-level abort drops all, and the commit folds the
 * kept rows of the subtransactions that did not abort, in the order
 * decoding gave them, through fold_event as a commit's replay does.
 *
 * Not streamed: while a capture is loaded (its changes need the commit's
 * LSN too and are not kept here), in a backfill's decoding, and with
 * stream_events.decode_streaming off; slot.c decides when it creates the
 * decoding context.  Everything kept is dropped with the decoding context
 * (release_decoding): decoding starts again at the slot's restart LSN,
 * which is never after the start of a transaction still in progress, so
 * the transaction is streamed (or replayed) again from its beginning.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "executor/tuptable.h"
#include "storage/procarray.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

#include "consumer/internal.h"
#include "core/guc.h"

/* consecutive kept rows of one stream and one (sub)transaction */
typedef struct KeptRun
{
	Oid			stream;
	TransactionId subxid;
	int64		count;
} KeptRun;

typedef struct StreamedTxn
{
	TransactionId xid;			/* the top-level transaction: hash key */
	Tuplestorestate *rows;
	KeptRun    *runs;
	int			nruns;
	int			maxruns;
	List	   *aborted;		/* xids of its subtransactions that aborted, as
								 * an OID list (both uint32; PostgreSQL 16
								 * adds xid lists) */
} StreamedTxn;

bool		decode_streaming = false;

/* rows of one streamed transaction kept in memory before its file */
#define STREAMED_MEMORY_KB Min(Max(se_consumer_memory_kb / 4, 1024), 16 * 1024)

static HTAB *streamed = NULL;
static MemoryContext streamed_cxt = NULL;

static void
streamed_drop(StreamedTxn *st)
{
	if (st->rows)
		tuplestore_end(st->rows);
	if (st->runs)
		pfree(st->runs);
	list_free(st->aborted);
	hash_search(streamed, &st->xid, HASH_REMOVE, NULL);
}

/* Everything kept goes (the decoding context is released). */
void
streamed_reset(void)
{
	if (streamed != NULL)
	{
		HASH_SEQ_STATUS seq;
		StreamedTxn *st;

		hash_seq_init(&seq, streamed);
		while ((st = hash_seq_search(&seq)) != NULL)
		{
			if (st->rows)
				tuplestore_end(st->rows);
			st->rows = NULL;
		}
	}
	streamed = NULL;
	if (streamed_cxt)
		MemoryContextReset(streamed_cxt);
}

/*
 * A transaction that ended without an abort record (the server crashed)
 * gets no stream_abort from PostgreSQL 15: its rows are dropped when
 * another transaction starts streaming and it is neither running nor
 * committed.
 */
static void
streamed_forget_dead(TransactionId except)
{
	HASH_SEQ_STATUS seq;
	StreamedTxn *st;

	hash_seq_init(&seq, streamed);
	while ((st = hash_seq_search(&seq)) != NULL)
	{
		if (st->xid == except || TransactionIdIsInProgress(st->xid) ||
			TransactionIdDidCommit(st->xid))
			continue;
		elog(DEBUG1, "stream_events: dropped the kept rows of transaction %u, which ended without an abort record",
			 st->xid);
		streamed_drop(st);
	}
}

static StreamedTxn *
streamed_find(TransactionId xid, bool create)
{
	StreamedTxn *st;
	bool		found;

	if (streamed == NULL)
	{
		HASHCTL		ctl;

		if (!create)
			return NULL;
		if (streamed_cxt == NULL)
			streamed_cxt = AllocSetContextCreate(consumer_cxt, "stream_events streamed transactions",
												 ALLOCSET_DEFAULT_SIZES);
		ctl.keysize = sizeof(TransactionId);
		ctl.entrysize = sizeof(StreamedTxn);
		ctl.hcxt = streamed_cxt;
		streamed = hash_create("stream_events streamed transactions", 8, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	st = hash_search(streamed, &xid, create ? HASH_ENTER : HASH_FIND, &found);
	if (create && !found)
	{
		MemoryContext old;

		streamed_forget_dead(xid);
		old = MemoryContextSwitchTo(streamed_cxt);
		/*
		 * interXact: the rows outlive the decoding transaction (a round).
		 * The sinks fold within consumer_memory meanwhile, so the rows kept
		 * in memory stay small: they are read back in order, in blocks.
		 */
		st->rows = tuplestore_begin_heap(false, true, STREAMED_MEMORY_KB);
		MemoryContextSwitchTo(old);
		st->runs = NULL;
		st->nruns = st->maxruns = 0;
		st->aborted = NIL;
	}
	return st;
}

/*
 * A streamed insert into a partition of a fed stream: row is the event in
 * the stream's row type.  txn is the top-level transaction, subxid the
 * (sub)transaction that made the change.
 */
void
streamed_keep(ReorderBufferTXN *txn, TransactionId subxid, StreamFeed *feed,
			  TupleTableSlot *row)
{
	StreamedTxn *st = streamed_find(txn->xid, true);
	KeptRun    *run = st->nruns > 0 ? &st->runs[st->nruns - 1] : NULL;

	if (run == NULL || run->stream != feed->stream || run->subxid != subxid)
	{
		if (st->nruns == st->maxruns)
		{
			st->maxruns = Max(16, st->maxruns * 2);
			st->runs = st->runs == NULL ?
				MemoryContextAlloc(streamed_cxt, st->maxruns * sizeof(KeptRun)) :
				repalloc(st->runs, st->maxruns * sizeof(KeptRun));
		}
		run = &st->runs[st->nruns++];
		run->stream = feed->stream;
		run->subxid = subxid;
		run->count = 0;
	}
	tuplestore_puttupleslot(st->rows, row);
	run->count++;
}

/* stream_abort: a subtransaction (its rows are skipped) or the whole */
void
streamed_abort(ReorderBufferTXN *txn)
{
	StreamedTxn *st;

	if (txn->toptxn == NULL)
	{
		st = streamed_find(txn->xid, false);
		if (st)
		{
			elog(DEBUG1, "stream_events: dropped the kept rows of aborted transaction %u", txn->xid);
			streamed_drop(st);
		}
		return;
	}
	st = streamed_find(txn->toptxn->xid, false);
	if (st != NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(streamed_cxt);

		st->aborted = lappend_oid(st->aborted, (Oid) txn->xid);
		MemoryContextSwitchTo(old);
	}
}

/*
 * stream_commit: the kept rows of the transaction, but those of aborted
 * subtransactions, go through their streams' definitions with the
 * commit's LSN and time, as cb_change folds a replayed commit's.  The
 * reorder buffer has ended its replay subtransaction by now, so this runs
 * in the round's transaction, with a transaction snapshot, as queue mode
 * folds.
 */
void
streamed_commit(ReorderBufferTXN *txn)
{
	StreamedTxn *st = streamed_find(txn->xid, false);
	TupleTableSlot *slot = NULL;
	Oid			slot_stream = InvalidOid;
	bool		pushed = false;

	if (st == NULL)
		return;
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed = true;
	}
	for (int r = 0; r < st->nruns; r++)
	{
		KeptRun    *run = &st->runs[r];
		StreamFeed *feed = feed_of(run->stream);

		if (feed == NULL || list_member_oid(st->aborted, (Oid) run->subxid))
		{
			if (!tuplestore_skiptuples(st->rows, run->count, true))
				elog(ERROR, "streamed transaction %u: kept rows missing", txn->xid);
			continue;
		}
		if (slot == NULL || slot_stream != run->stream)
		{
			if (slot)
				ExecDropSingleTupleTableSlot(slot);
			slot = MakeSingleTupleTableSlot(feed->desc, &TTSOpsMinimalTuple);
			slot_stream = run->stream;
		}
		for (int64 i = 0; i < run->count; i++)
		{
			if (!tuplestore_gettupleslot(st->rows, true, false, slot))
				elog(ERROR, "streamed transaction %u: kept rows missing", txn->xid);
			fold_event(feed, txn->final_lsn, txn->xact_time.commit_time, 0, slot);
			consumer_check_memory();
		}
	}
	if (slot)
		ExecDropSingleTupleTableSlot(slot);
	if (pushed)
		PopActiveSnapshot();
	streamed_drop(st);
}
