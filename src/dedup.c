/*-------------------------------------------------------------------------
 * dedup.c
 *	  Idempotency keys: registers the event_id of an accepted event in
 *	  stream.dedup_keys, or reports that it was already accepted.
 *
 * This is INSERT ... ON CONFLICT DO NOTHING done inside the trigger,
 * without SPI, with the executor's speculative insertion protocol
 * (nodeModifyTable.c) so that two sessions sending the same event at the
 * same moment never both succeed: the loser waits for the winner's
 * transaction and then sees the key.  Unlike the executor it inserts
 * optimistically and checks only after a conflict (duplicates are rare),
 * which saves a descent of the index per event.  The executor state is built once per
 * transaction and closed at commit.
 *
 * No deadlocks: the stream's dedup lock.  ON CONFLICT alone deadlocks
 * when two transactions send overlapping events in different orders: A
 * stores e1 and holds its key, B stores e2 and holds its key, then A meets
 * e2 and must wait for B's end (if B commits, A's copy is a duplicate; if
 * B rolls back, A's copy must be stored), while B meets e1 and waits for
 * A's end.  No rule decided at the row can break that cycle without giving
 * up a guarantee: the row of the earlier event is already stored, so A can
 * neither drop e2 (lost if B then rolls back) nor store it (twice if B
 * commits).  Ordering keys cannot help either, since COPY and INSERT hand
 * us rows in the producer's order.  So the cycle is made impossible:
 * before it registers its first key of a stream, a transaction takes the
 * stream's dedup lock (an exclusive advisory-style lock, tag (database,
 * 24159, stream_id, 2)) and keeps it until pre-commit (dedup_xact_callback)
 * or until the subtransaction that took it rolls back, which also removes
 * every key it registered since.  Hence at most one transaction at a time
 * holds uncommitted keys of a stream and can still run statements: a key
 * it meets held by someone else belongs to a transaction past pre-commit,
 * which waits for nothing of ours, and the transactions waiting for the
 * lock hold no key of that stream.  The wait for the lock is the "second
 * waits for the first" of the guarantee; the key check after it still
 * drops the copy of a committed event and stores that of a rolled-back
 * one.  Producers of one stream thus run their statements one at a time
 * (commits, and their WAL flushes, still overlap); different streams do not
 * wait for each other.  What remains is the ordinary lock-order case: two
 * transactions that each send to two deduplicated streams, in opposite
 * orders (docs/streams.md).
 *
 * Rights: stream.dedup_keys is private to the extension (no grant to
 * anyone), and a producer with INSERT on the stream needs none: the table
 * is opened directly, without the executor's permission checks, because
 * the key is the extension's bookkeeping, not the producer's write.  No
 * user code runs here with any rights: the table AM insert fires no
 * triggers or rules, and its only index (the primary key on stream_id,
 * event_id) has no expressions or predicates; only the extension's owner
 * could add any.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"

#include "stream_events.h"

typedef struct DedupState
{
	MemoryContext context;
	Relation	rel;
	ResultRelInfo *rri;
	EState	   *estate;
	TupleTableSlot *slot;
} DedupState;

static DedupState *dedup_state = NULL;
static bool callbacks_registered = false;

/* second field of the dedup lock's tag (stream.maintain uses 24158) */
#define DEDUP_LOCK_CLASS 24159

/*
 * Streams whose dedup lock this transaction took (some may have been
 * released since by a subtransaction's rollback), in TopMemoryContext;
 * last_locked caches the latest for the per-row check.
 */
static int32 *locked_streams = NULL;
static int	n_locked = 0;
static int	max_locked = 0;
static int32 last_locked = -1;
static SubTransactionId last_locked_subxid = InvalidSubTransactionId;

static void
dedup_locktag(LOCKTAG *tag, int32 stream_id)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, DEDUP_LOCK_CLASS, (uint32) stream_id, 2);
}

/* Releases the dedup locks still held (pre-commit, pre-prepare). */
static void
dedup_release_locks(void)
{
	ResourceOwner saved_owner = CurrentResourceOwner;

	CurrentResourceOwner = TopTransactionResourceOwner;
	for (int i = 0; i < n_locked; i++)
	{
		LOCKTAG		tag;

		dedup_locktag(&tag, locked_streams[i]);
		if (LockHeldByMe(&tag, ExclusiveLock))
			LockRelease(&tag, ExclusiveLock, false);
	}
	CurrentResourceOwner = saved_owner;
	n_locked = 0;
	last_locked = -1;
}

/*
 * Takes the stream's dedup lock before this transaction's first key of it
 * (see the top of the file), under the current resource owner: a
 * subtransaction that rolls back releases it together with its keys.
 */
static void
dedup_lock_stream(int32 stream_id)
{
	LOCKTAG		tag;

	/* held since a key of this subtransaction or of a parent that is still there */
	if (stream_id == last_locked &&
		last_locked_subxid == GetCurrentSubTransactionId())
		return;
	dedup_locktag(&tag, stream_id);
	if (!LockHeldByMe(&tag, ExclusiveLock))
	{
		(void) LockAcquire(&tag, ExclusiveLock, false, false);
		if (n_locked == max_locked)
		{
			max_locked = Max(8, max_locked * 2);
			locked_streams = locked_streams == NULL ?
				MemoryContextAlloc(TopMemoryContext, max_locked * sizeof(int32)) :
				repalloc(locked_streams, max_locked * sizeof(int32));
		}
		locked_streams[n_locked++] = stream_id;
	}
	last_locked = stream_id;
	last_locked_subxid = GetCurrentSubTransactionId();
}

static void
dedup_close(void)
{
	ResourceOwner saved_owner = CurrentResourceOwner;

	CurrentResourceOwner = TopTransactionResourceOwner;
	ExecDropSingleTupleTableSlot(dedup_state->slot);
	ExecCloseIndices(dedup_state->rri);
	table_close(dedup_state->rel, NoLock);
	FreeExecutorState(dedup_state->estate);
	MemoryContextDelete(dedup_state->context);
	dedup_state = NULL;
	CurrentResourceOwner = saved_owner;
}

static void
dedup_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			if (dedup_state != NULL)
				dedup_close();

			/*
			 * No statement of this transaction runs any more (deferred
			 * triggers have fired): it will wait for no key, so others may
			 * register theirs (and wait for its end if they meet one of
			 * its keys) while it writes its commit record.
			 */
			dedup_release_locks();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* the resource owner released the relations; memory goes too */
			dedup_state = NULL;
			/* and the lock manager the locks */
			n_locked = 0;
			last_locked = -1;
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			n_locked = 0;
			last_locked = -1;
			break;
		default:
			break;
	}
}

static void
dedup_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	/* a rollback may have released the lock; a commit moved it up */
	if (event == SUBXACT_EVENT_ABORT_SUB)
		last_locked = -1;
	else if (event == SUBXACT_EVENT_COMMIT_SUB && last_locked_subxid == mySubid)
		last_locked_subxid = parentSubid;
}

static void
dedup_register_callbacks(void)
{
	if (!callbacks_registered)
	{
		RegisterXactCallback(dedup_xact_callback, NULL);
		RegisterSubXactCallback(dedup_subxact_callback, NULL);
		callbacks_registered = true;
	}
}

static DedupState *
dedup_open(void)
{
	MemoryContext context;
	MemoryContext old;
	ResourceOwner saved_owner;
	DedupState *state;
	Oid			nsp;
	Oid			relid;

	dedup_register_callbacks();

	nsp = get_namespace_oid("stream", false);
	relid = get_relname_relid("dedup_keys", nsp);
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table stream.dedup_keys does not exist"),
				 errhint("Reinstall the extension: DROP EXTENSION stream_events; CREATE EXTENSION stream_events.")));

	/*
	 * The state outlives the statement, so its relation, index and tuple
	 * descriptor references belong to the transaction's resource owner (a
	 * subtransaction's abort leaves them open; commit closes them).
	 */
	context = AllocSetContextCreate(TopTransactionContext, "stream_events dedup",
									ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(context);
	saved_owner = CurrentResourceOwner;
	CurrentResourceOwner = TopTransactionResourceOwner;
	state = palloc0(sizeof(DedupState));
	state->context = context;
	state->rel = table_open(relid, RowExclusiveLock);
	state->estate = CreateExecutorState();
	state->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(state->rri, state->rel, 1, NULL, 0);
	ExecOpenIndices(state->rri, true);
	state->slot = table_slot_create(state->rel, NULL);
	CurrentResourceOwner = saved_owner;
	MemoryContextSwitchTo(old);

	if (state->rri->ri_NumIndices == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table stream.dedup_keys has no unique index"),
				 errhint("Reinstall the extension.")));
	dedup_state = state;
	return state;
}

/*
 * Registers event_id for the stream.  Returns true when the key is new (the
 * event is accepted), false when an accepted event already has it.
 */
bool
dedup_register(Relation streamrel, int32 stream_id, Datum event_id,
			   TimestampTz seen_at)
{
	DedupState *state;
	TupleTableSlot *slot;
	EState	   *estate;
	bool		accepted;

	dedup_register_callbacks();
	dedup_lock_stream(stream_id);
	state = dedup_state ? dedup_state : dedup_open();
	slot = state->slot;
	estate = state->estate;

	for (;;)
	{
		ItemPointerData conflict_tid;
		uint32		token;
		bool		spec_conflict = false;
		List	   *recheck;

		CHECK_FOR_INTERRUPTS();
		ResetPerTupleExprContext(estate);

		ExecClearTuple(slot);
		slot->tts_values[0] = Int32GetDatum(stream_id);
		slot->tts_values[1] = event_id;
		slot->tts_values[2] = TimestampTzGetDatum(seen_at);
		slot->tts_isnull[0] = slot->tts_isnull[1] = slot->tts_isnull[2] = false;
		ExecStoreVirtualTuple(slot);

		/*
		 * Optimistic: insert first, and let the unique index insertion tell
		 * us about a conflict (one descent of the index in the common case).
		 * A conflicting speculative tuple is super-deleted at once, so it
		 * never makes anyone wait for us.
		 */
		token = SpeculativeInsertionLockAcquire(GetCurrentTransactionId());
		table_tuple_insert_speculative(state->rel, slot,
									   GetCurrentCommandId(true), 0, NULL, token);
		recheck = ExecInsertIndexTuples(state->rri, slot, estate, false, true,
										&spec_conflict, NIL);
		table_tuple_complete_speculative(state->rel, slot, token, !spec_conflict);
		SpeculativeInsertionLockRelease(GetCurrentTransactionId());
		list_free(recheck);

		if (!spec_conflict)
		{
			accepted = true;
			break;
		}

		/*
		 * Someone has the key: wait for an in-progress inserter to finish,
		 * then it is a duplicate if the key is still there, else try again.
		 */
		if (!ExecCheckIndexConstraints(state->rri, slot, estate, &conflict_tid, NIL))
		{
			accepted = false;
			break;
		}
	}
	return accepted;
}
