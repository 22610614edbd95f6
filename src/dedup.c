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
	if (dedup_state == NULL)
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			dedup_close();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* the resource owner released the relations; memory goes too */
			dedup_state = NULL;
			break;
		default:
			break;
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

	if (!callbacks_registered)
	{
		RegisterXactCallback(dedup_xact_callback, NULL);
		callbacks_registered = true;
	}

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
	DedupState *state = dedup_state ? dedup_state : dedup_open();
	TupleTableSlot *slot = state->slot;
	EState	   *estate = state->estate;
	bool		accepted;

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
