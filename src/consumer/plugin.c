/*-------------------------------------------------------------------------
 * plugin.c
 *	  This library's logical decoding output plugin, run only inside the
 *	  worker's consumer (slot.c decodes in-process): a decoded insert into
 *	  a partition of a stream some definition folds goes, in the stream's
 *	  row type, through every definition of that stream in order, each in
 *	  its owner's scope (owner.h) with an active snapshot; commits mark the
 *	  boundaries where a batch may be applied; the inserts of a large
 *	  transaction streamed before its commit are kept until it (streamed.c);
 *	  the flush marker (stream.flush) is noted; the extension's own writes
 *	  are filtered out by their private origin (origin.h).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/tupconvert.h"
#include "access/xact.h"
#include "catalog/partition.h"
#include "executor/executor.h"
#include "replication/logical.h"
#include "replication/origin.h"
#include "replication/output_plugin.h"
#include "utils/hsearch.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "consumer/internal.h"
#include "core/guc.h"
#include "core/owner.h"

PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

/* the prefix of the flush marker (stream.flush) */
#define MESSAGE_PREFIX "stream_events"

/* what a relation seen in the WAL is to us */
typedef struct PartEntry
{
	Oid			relid;
	StreamFeed *feed;			/* NULL: not a partition of a fed stream */
	TupleConversionMap *map;	/* partition row -> stream row, or NULL */
	TupleTableSlot *slot;		/* the partition's row type */
} PartEntry;

static HTAB *part_cache = NULL;
static MemoryContext part_cxt = NULL;
static bool part_cache_stale = false;

/* ---------- relation cache: partition -> stream ---------- */

/*
 * Relcache invalidation (a partition attached or detached, a column added):
 * the cache is rebuilt at the next lookup, never under a caller that may
 * still use one of its slots.
 */
static void
part_cache_invalidate(Datum arg, Oid relid)
{
	part_cache_stale = true;
}

void
part_cache_register(void)
{
	CacheRegisterRelcacheCallback(part_cache_invalidate, (Datum) 0);
}

void
part_cache_reset(void)
{
	part_cache = NULL;
	part_cache_stale = false;
	if (part_cxt)
		MemoryContextReset(part_cxt);
}

static PartEntry *
part_lookup(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	PartEntry  *pe;
	bool		found;
	MemoryContext old;
	StreamFeed *feed = NULL;

	if (part_cache_stale)
		part_cache_reset();
	if (part_cache != NULL)
	{
		pe = hash_search(part_cache, &relid, HASH_FIND, NULL);
		if (pe)
			return pe;
	}
	/* catalog reads first: they may process invalidations */
	if (rel->rd_rel->relispartition && rel->rd_rel->relkind == RELKIND_RELATION)
	{
		List	   *ancestors = get_partition_ancestors(relid);
		Oid			root = llast_oid(ancestors);

		feed = feed_of(root);
		list_free(ancestors);
	}
	if (part_cache_stale)
		part_cache_reset();
	if (part_cache == NULL)
	{
		HASHCTL		ctl;

		if (part_cxt == NULL)
			part_cxt = AllocSetContextCreate(consumer_cxt, "stream_events partitions",
											 ALLOCSET_DEFAULT_SIZES);
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(PartEntry);
		ctl.hcxt = part_cxt;
		part_cache = hash_create("stream_events partitions", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	pe = hash_search(part_cache, &relid, HASH_ENTER, &found);
	pe->feed = feed;
	pe->map = NULL;
	pe->slot = NULL;
	if (pe->feed)
	{
		old = MemoryContextSwitchTo(part_cxt);
		pe->slot = MakeSingleTupleTableSlot(CreateTupleDescCopy(RelationGetDescr(rel)),
											&TTSOpsHeapTuple);
		pe->map = convert_tuples_by_name(pe->slot->tts_tupleDescriptor, pe->feed->desc);
		MemoryContextSwitchTo(old);
	}
	return pe;
}

/* ---------- output plugin callbacks ---------- */

static void
cb_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
	if (!consumer_active)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the stream_events output plugin is reserved for the stream_events worker"),
				 errdetail("Consuming its slot elsewhere would lose changes from continuous aggregates."),
				 errhint("Use test_decoding or pgoutput for your own slots.")));
	opt->output_type = OUTPUT_PLUGIN_BINARY_OUTPUT;
	opt->receive_rewrites = false;
	/* large transactions streamed, where slot.c asks for it (streamed.c) */
	if (!decode_streaming)
		ctx->streaming = false;
	decode_streaming = false;
}

static void
cb_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
}

/*
 * The owner scope cb_change evaluates definitions in: entered again only
 * when the next definition has another owner or search_path, so that the
 * definitions of one owner share one scope (a scope costs a GUC nest
 * level).  It stays open from one change of a transaction to the next (no
 * permission is checked between them: the reorder buffer only maps
 * relations) and is left at the transaction's commit callback, or on an
 * error: a large transaction of one owner's stream enters it once.
 */
typedef struct FoldScope
{
	OwnerScope	scope;
	Oid			owner;
	const char *search_path;
} FoldScope;

static FoldScope txn_scope;

/* the round failed: the transaction's abort unwound the scope already */
void
fold_scope_forget(void)
{
	txn_scope.scope.active = false;
}

static void
fold_scope_switch(FoldScope *fs, Oid owner, const char *search_path)
{
	if (fs->scope.active && fs->owner == owner &&
		(fs->search_path == search_path ||
		 (fs->search_path && search_path && strcmp(fs->search_path, search_path) == 0)))
		return;
	owner_exit(&fs->scope);
	owner_enter(&fs->scope, owner, search_path);
	fs->owner = owner;
	fs->search_path = search_path;
}

/*
 * A definition that wrote to the database while it was evaluated (a
 * volatile function called from an immutable one can): logical decoding
 * refuses a transaction ID taken in an output plugin ("output plugin used
 * XID"), after the callback, where the error would be nobody's; say it
 * here, where it is the definition's own, which is then parked.
 */
static void
check_no_writes(ConsumerDef *def)
{
	if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("%s %s wrote to the database while evaluating an event",
						def->sink->what, def->name),
				 errdetail("Its expressions run while the worker decodes committed changes, where nothing may be written."),
				 errhint("Use functions that only compute a value from the event.")));
}

/* fold_event's work; the caller exits the last scope, also on error */
static void
fold_event_body(StreamFeed *feed, XLogRecPtr lsn, TimestampTz commit_time, uint64 xid,
				TupleTableSlot *row, FoldScope *fs)
{
	ListCell   *lc;
	ConsumerEvent ev;

	ev.row = row;
	ev.lsn = lsn;
	ev.commit_time = commit_time;
	eval_lsn = lsn;
	note_event(row);
	foreach(lc, feed->defs)
	{
		ConsumerDef *def = lfirst(lc);

		/*
		 * Exactly once: commits before applied_lsn are applied already.
		 * denied: its owner may not read the stream.
		 */
		if (def->backfill || def->denied || lsn < def->applied_lsn)
			continue;
		/* queue mode: a transaction the definition's creation saw */
		if (def->start_snapshot != (Datum) 0 && xid != 0 &&
			DatumGetBool(DirectFunctionCall2(pg_visible_in_snapshot, UInt64GetDatum(xid),
											 def->start_snapshot)))
			continue;
		fold_scope_switch(fs, def->owner, def->search_path);
		current_def = def;
		fold_one(def, &ev);
		check_no_writes(def);
		current_def = NULL;
	}
}

/*
 * One event (decoded, or read from the ingest queue, queue.c) through
 * every definition of its stream, in order (aggregates, then
 * activations), each in its owner's scope, which is left on every path
 * (PG_CATCH rather than PG_FINALLY: gcc's -Wclobbered misreads the latter
 * here).  The last scope stays open for the next event of the same
 * transaction (fold_scope_end).
 */
void
fold_event(StreamFeed *feed, XLogRecPtr lsn, TimestampTz commit_time, uint64 xid,
		   TupleTableSlot *row)
{
	PG_TRY();
	{
		fold_event_body(feed, lsn, commit_time, xid, row, &txn_scope);
	}
	PG_CATCH();
	{
		owner_exit(&txn_scope.scope);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

void
fold_scope_end(void)
{
	owner_exit(&txn_scope.scope);
}

/*
 * An insert into a partition of a fed stream, as a row in the stream's
 * type (a slot of *pe, cleared by the caller); NULL for any other change.
 */
static TupleTableSlot *
fed_row(Relation relation, ReorderBufferChange *change, PartEntry **pe)
{
	PartEntry  *e;

	if (change->action != REORDER_BUFFER_CHANGE_INSERT ||
		change->data.tp.newtuple == NULL || consumer_feeds == NIL)
		return NULL;
	*pe = e = part_lookup(relation);
	if (e->feed == NULL)
		return NULL;
	ExecStoreHeapTuple(&change->data.tp.newtuple->tuple, e->slot, false);
	if (e->map)
		return execute_attr_map_slot(e->map->attrMap, e->slot, e->feed->slot);
	return e->slot;
}

static void
cb_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation relation,
		  ReorderBufferChange *change)
{
	PartEntry  *pe;
	TupleTableSlot *row;
	bool		pushed = false;

	/* a change of a table a sink captures (capture/sink.c) */
	for (int s = 0; s < consumer_nsinks; s++)
		if (consumer_sinks[s]->change && consumer_sinks[s]->change(relation, txn, change))
			return;
	row = fed_row(relation, change, &pe);
	if (row == NULL)
		return;

	/*
	 * Definitions may call functions that run queries (SQL functions the
	 * planner does not inline, plpgsql): they need an active snapshot, as
	 * in any query.  While decoding, the transaction snapshot is the
	 * historic one of this commit (snapmgr.c).  An error aborts the
	 * transaction, which pops it.
	 */
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed = true;
	}
	fold_event(pe->feed, txn->final_lsn, txn->xact_time.commit_time, 0, row);
	consumer_check_memory();
	if (pushed)
		PopActiveSnapshot();
	ExecClearTuple(pe->slot);
}

/* a commit folded: apply at this boundary once the batch is big or old */
static void
commit_boundary(void)
{
	if (batch_units >= se_aggregate_batch_groups ||
		(batch_units > 0 &&
		 TimestampDifferenceExceeds(batch_started, GetCurrentTimestamp(), 1000)))
		stop_after_commit = true;
}

static void
cb_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
	/* before the reorder buffer ends its replay subtransaction */
	fold_scope_end();
	commit_boundary();
}

/* ---------- streamed transactions (streamed.c) ---------- */

static void
cb_stream_start(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
}

static void
cb_stream_stop(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
}

/*
 * A change of a transaction still in progress: an insert into a fed
 * stream's partition is kept, in the stream's row type, until the commit.
 * No capture is loaded while decoding streams (slot.c), so nothing else
 * wants a change here.
 */
static void
cb_stream_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation relation,
				 ReorderBufferChange *change)
{
	PartEntry  *pe;
	TupleTableSlot *row = fed_row(relation, change, &pe);

	if (row == NULL)
		return;
	streamed_keep(txn->toptxn ? txn->toptxn : txn, change->txn->xid, pe->feed, row);
	ExecClearTuple(pe->slot);
}

static void
cb_stream_abort(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr abort_lsn)
{
	streamed_abort(txn);
}

static void
cb_stream_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
	streamed_commit(txn);
	fold_scope_end();
	commit_boundary();
}

static void
cb_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr lsn,
		   bool transactional, const char *prefix, Size sz, const char *message)
{
	/*
	 * Only the flush marker (stream.flush).  No message skips anything:
	 * pg_logical_emit_message is open to everyone, so a message cannot tell
	 * the extension's own writes from a producer's (the private origin
	 * does, cb_filter_by_origin).
	 */
	if (strcmp(prefix, MESSAGE_PREFIX) != 0)
		return;
	if (!transactional && sz == 5 && memcmp(message, "flush", 5) == 0)
		flush_seen = true;
}

static void
cb_shutdown(LogicalDecodingContext *ctx)
{
}

/*
 * The extension's own writes (the worker's, maintenance's moves) carry its
 * private origin, which only superuser code can set (origin.h): they are
 * skipped change by change.  Records marked "do not replicate" are not for
 * any decoder either.  own_origin is looked up once per round
 * (decode_available), not per change.
 */
static bool
cb_filter_by_origin(LogicalDecodingContext *ctx, RepOriginId origin_id)
{
	return origin_id == DoNotReplicateId ||
		(own_origin != InvalidRepOriginId && origin_id == own_origin);
}

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->startup_cb = cb_startup;
	cb->begin_cb = cb_begin;
	cb->change_cb = cb_change;
	cb->commit_cb = cb_commit;
	cb->message_cb = cb_message;
	cb->shutdown_cb = cb_shutdown;
	cb->filter_by_origin_cb = cb_filter_by_origin;
	cb->stream_start_cb = cb_stream_start;
	cb->stream_stop_cb = cb_stream_stop;
	cb->stream_change_cb = cb_stream_change;
	cb->stream_abort_cb = cb_stream_abort;
	cb->stream_commit_cb = cb_stream_commit;
}

