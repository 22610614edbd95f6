/*-------------------------------------------------------------------------
 * dedup.c
 *	  Idempotency keys: registers the event_id of an accepted event in its
 *	  stream's key table, stream.dedup_keys_<stream_id>, or reports that it
 *	  was already accepted.
 *
 * This is INSERT ... ON CONFLICT DO NOTHING done inside the trigger,
 * without SPI, with the executor's speculative insertion protocol
 * (nodeModifyTable.c) so that two sessions sending the same event at the
 * same moment never both succeed: the loser waits for the winner's
 * transaction and then sees the key.  Unlike the executor it inserts
 * optimistically and checks only after a conflict (duplicates are rare),
 * which saves a descent of the index per event.  The executor state is built once per
 * transaction and closed at commit.  A batched COPY registers a batch's
 * keys together, without speculative insertion (dedup_register_batch).
 *
 * No deadlocks: the stream's dedup lock.  ON CONFLICT alone deadlocks
 * when two statements send overlapping events in different orders: A
 * stores e1 and holds its key, B stores e2 and holds its key, then A meets
 * e2 and must wait for B's end (if B commits, A's copy is a duplicate; if
 * B rolls back, A's copy must be stored), while B meets e1 and waits for
 * A's end.  No rule decided at the row can break that cycle without giving
 * up a guarantee: the row of the earlier event is already stored, so A can
 * neither drop e2 (lost if B then rolls back) nor store it (twice if B
 * commits).  Ordering keys cannot help either, since COPY and INSERT hand
 * us rows in the producer's order.  So the cycle is made impossible while
 * a statement runs: before it registers its first key of a stream, a
 * statement takes the stream's dedup lock (an exclusive advisory-style
 * lock, tag (database, 24159, stream_id, 2)) and keeps it until the end of
 * the top-level statement (dedup_executor_end), or for COPY and utility
 * statements (DO) until the transaction's pre-commit (dedup_xact_callback)
 * or abort.  Hence at most one
 * statement at a time registers keys of a stream; a key it meets held by
 * someone else belongs to a transaction that runs no statement (idle in
 * its block, or committing), which waits for nothing of ours; and the
 * statements waiting for the lock hold no key they have registered
 * themselves.  So single-statement transactions (autocommit INSERT, COPY,
 * SELECT stream.ingest(...)) never deadlock, whatever their orders.  The
 * wait for the lock is part of "the second waits for the first"; the key
 * check after it still drops the copy of a committed event and stores that
 * of a rolled-back one.
 *
 * What is left is provably unavoidable without serialising whole
 * transactions: an explicit transaction that sends events in several
 * statements holds their keys between statements, while other producers
 * must be free to run (a producer's open transaction cannot stop a
 * stream); if another producer then sends some of the same events in
 * another order, the cycle above can form.  For the same reason a later
 * statement of a transaction that already holds keys of the stream takes
 * the lock only if it is free: the holder may be waiting for those keys,
 * and waiting for the holder would be a deadlock of our own making (TAP
 * 003: transactions of several statements, all in ascending order, never
 * deadlocked before and must not now).  docs/streams.md says so.
 * The statements of one stream's producers run one at a time; their
 * commits (and WAL flushes) still overlap, and different streams never
 * wait for each other.
 *
 * One exception: a statement the client sent that is INSERT ... VALUES of
 * one row into the stream (a web back end's event), in a transaction that
 * registered no key of the stream before, takes no lock.  It can close no
 * cycle: until its one key is registered it holds none of the stream's,
 * so whoever it waits for waits for nothing of its own; once registered,
 * it waits for no key any more.  Four producers of single-row INSERTs
 * otherwise queued on the lock for 4% of their time (bench/ingest.sh's
 * pgbench).  Should the statement register a second key of the stream all
 * the same (a function in its VALUES inserting more events), that key is
 * treated as a later statement's: the lock only if free.  TAP 033 sends
 * such INSERTs in another order among the other paths.
 *
 * Rights: the key tables are private to the extension (no grant to
 * anyone), and a producer with INSERT on the stream needs none: the table
 * is opened directly, without the executor's permission checks, because
 * the key is the extension's bookkeeping, not the producer's write.  No
 * user code runs here with any rights: the table AM insert fires no
 * triggers or rules, and its only index (the primary key on event_id)
 * has no expressions or predicates; only the extension's owner could add
 * any.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "parser/parsetree.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "tcop/pquery.h"
#include "tcop/tcopprot.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "stream_events.h"

typedef struct DedupState
{
	struct DedupState *next;
	int32		stream_id;
	bool		legacy;			/* 0.1.0's stream.dedup_keys (stream_id, ...) */
	MemoryContext context;
	Relation	rel;
	ResultRelInfo *rri;
	EState	   *estate;
	TupleTableSlot *slot;
	/* dedup_register_batch: one slot per key of a batch, and a scan slot */
	TupleTableSlot **batch_slots;
	int			nbatch_slots;
	TupleTableSlot *scan_slot;
	int		   *batch_rows;		/* the batch's row of each slot inserted */
	bool		precheck;		/* the last batch met many duplicates */
} DedupState;

/* the key tables this transaction opened, one state each (TopTransactionContext) */
static DedupState *dedup_states = NULL;
static bool callbacks_registered = false;

/* second field of the dedup lock's tag (stream.maintain uses 24158) */
#define DEDUP_LOCK_CLASS 24159

/*
 * Streams whose dedup lock this transaction took (some may have been
 * released since at a statement's end), in TopMemoryContext;
 * last_locked caches the latest for the per-row check.
 */
static int32 *locked_streams = NULL;
static int	n_locked = 0;
static int	max_locked = 0;
static int32 last_locked = -1;

/* streams this transaction registered keys of (TopMemoryContext) */
static int32 *keyed_streams = NULL;
static int	n_keyed = 0;
static int	max_keyed = 0;

static ExecutorEnd_hook_type prev_ExecutorEnd = NULL;
static bool executor_end_installed = false;

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
 * At the end of a top-level statement (its query text is the one the
 * client sent): no more key of this statement, so the locks go (see the
 * top of the file).  Nested statements (SPI, PL/pgSQL, stream.ingest's own
 * INSERT) keep them for the statement that runs them.
 */
static void
dedup_executor_end(QueryDesc *queryDesc)
{
	if (prev_ExecutorEnd)
		prev_ExecutorEnd(queryDesc);
	else
		standard_ExecutorEnd(queryDesc);
	if (last_locked != -1 && debug_query_string != NULL &&
		queryDesc->sourceText == debug_query_string &&
		IsTransactionState())
		dedup_release_locks();
}

static bool
stream_keyed(int32 stream_id)
{
	for (int i = 0; i < n_keyed; i++)
		if (keyed_streams[i] == stream_id)
			return true;
	return false;
}

static void
int_list_add(int32 **list, int *n, int *max, int32 v)
{
	if (*n == *max)
	{
		*max = Max(8, *max * 2);
		*list = *list == NULL ?
			MemoryContextAlloc(TopMemoryContext, *max * sizeof(int32)) :
			repalloc(*list, *max * sizeof(int32));
	}
	(*list)[(*n)++] = v;
}

/*
 * The statement the client sent is INSERT ... VALUES of one row into the
 * stream: a ModifyTable over a Result without input, whose target is the
 * stream.  Read from the active portal, which nested statements (SPI) do
 * not replace.
 */
static bool
statement_inserts_one_row(Oid stream_relid)
{
	PlannedStmt *stmt;
	ModifyTable *mt;
	Plan	   *source;
	RangeTblEntry *rte;

	if (ActivePortal == NULL || list_length(ActivePortal->stmts) != 1)
		return false;
	stmt = linitial(ActivePortal->stmts);
	if (!IsA(stmt, PlannedStmt) || stmt->commandType != CMD_INSERT ||
		stmt->planTree == NULL || !IsA(stmt->planTree, ModifyTable))
		return false;
	mt = (ModifyTable *) stmt->planTree;
	source = outerPlan(mt);
	if (source == NULL || !IsA(source, Result) || outerPlan(source) != NULL ||
		list_length(mt->resultRelations) != 1)
		return false;
	rte = rt_fetch(linitial_int(mt->resultRelations), stmt->rtable);
	return rte->rtekind == RTE_RELATION && rte->relid == stream_relid;
}

/*
 * Before a statement's first key of a stream: its dedup lock (see the top
 * of the file), owned by the transaction so that the statement's end can
 * release it.  A transaction that already registered keys of the stream in
 * an earlier statement only takes it if it is free: waiting for it could
 * close a cycle with a holder that waits for those keys.
 */
static void
dedup_lock_stream(int32 stream_id, Oid stream_relid)
{
	LOCKTAG		tag;
	ResourceOwner saved_owner;

	if (stream_id == last_locked)
		return;					/* decided for this statement */
	if (!stream_keyed(stream_id) && statement_inserts_one_row(stream_relid))
	{
		/*
		 * The statement's only key, the transaction's first of the stream:
		 * no lock (see the top of the file).  Any further key of the
		 * stream in this transaction counts as a later statement's.
		 */
		int_list_add(&keyed_streams, &n_keyed, &max_keyed, stream_id);
		return;
	}
	dedup_locktag(&tag, stream_id);
	if (!LockHeldByMe(&tag, ExclusiveLock))
	{
		bool		got;

		if (!executor_end_installed)
		{
			/* installed here, not in _PG_init: only sessions that dedup */
			prev_ExecutorEnd = ExecutorEnd_hook;
			ExecutorEnd_hook = dedup_executor_end;
			executor_end_installed = true;
		}
		saved_owner = CurrentResourceOwner;
		CurrentResourceOwner = TopTransactionResourceOwner;
		if (stream_keyed(stream_id))
			got = LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
		else
		{
			(void) LockAcquire(&tag, ExclusiveLock, false, false);
			got = true;
		}
		CurrentResourceOwner = saved_owner;
		if (got)
			int_list_add(&locked_streams, &n_locked, &max_locked, stream_id);
	}
	if (!stream_keyed(stream_id))
		int_list_add(&keyed_streams, &n_keyed, &max_keyed, stream_id);
	last_locked = stream_id;
}

static void
dedup_close_all(void)
{
	ResourceOwner saved_owner = CurrentResourceOwner;

	CurrentResourceOwner = TopTransactionResourceOwner;
	while (dedup_states != NULL)
	{
		DedupState *state = dedup_states;

		dedup_states = state->next;
		ExecDropSingleTupleTableSlot(state->slot);
		for (int i = 0; i < state->nbatch_slots; i++)
			ExecDropSingleTupleTableSlot(state->batch_slots[i]);
		if (state->scan_slot != NULL)
			ExecDropSingleTupleTableSlot(state->scan_slot);
		ExecCloseIndices(state->rri);
		table_close(state->rel, NoLock);
		FreeExecutorState(state->estate);
		MemoryContextDelete(state->context);
	}
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
			dedup_close_all();

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
			dedup_states = NULL;
			/* and the lock manager the locks */
			n_locked = 0;
			n_keyed = 0;
			last_locked = -1;
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			n_locked = 0;
			n_keyed = 0;
			last_locked = -1;
			break;
		default:
			break;
	}
}

static void
dedup_register_callbacks(void)
{
	if (!callbacks_registered)
	{
		RegisterXactCallback(dedup_xact_callback, NULL);
		callbacks_registered = true;
	}
}

/*
 * The state of the stream's key table, stream.dedup_keys_<stream_id>
 * (sql/modules/10_streams.sql), opened at the transaction's first key of
 * the stream.
 */
static DedupState *
dedup_open(int32 stream_id, Oid stream_relid)
{
	MemoryContext context;
	MemoryContext old;
	ResourceOwner saved_owner;
	DedupState *state;
	Oid			nsp;
	Oid			relid;
	Oid			legacy_relid = InvalidOid;
	char		name[NAMEDATALEN];

	for (state = dedup_states; state != NULL; state = state->next)
		if (state->stream_id == stream_id)
			return state;

	dedup_register_callbacks();

	nsp = get_namespace_oid("stream", false);
	snprintf(name, sizeof(name), "dedup_keys_%d", stream_id);
	relid = get_relname_relid(name, nsp);
	/* the library is newer than the catalog: 0.1.0's table of all streams */
	if (!OidIsValid(relid) &&
		OidIsValid(legacy_relid = get_relname_relid("dedup_keys", nsp)))
		relid = legacy_relid;
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the dedup keys of stream \"%s\" are missing",
						get_rel_name(stream_relid)),
				 errdetail("Table stream.%s does not exist.", name),
				 errhint("Restore it from a dump of the database, or create it empty as the extension's owner: SELECT stream._create_dedup_keys(%d).",
						 stream_id)));

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
	state->stream_id = stream_id;
	state->legacy = relid == legacy_relid;
	state->context = context;
	state->rel = table_open(relid, RowExclusiveLock);
	state->estate = CreateExecutorState();
	state->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(state->rri, state->rel, 1, NULL, 0);
	ExecOpenIndices(state->rri, true);
	state->slot = table_slot_create(state->rel, NULL);
	CurrentResourceOwner = saved_owner;
	MemoryContextSwitchTo(old);

	state->next = dedup_states;
	dedup_states = state;
	if (state->rri->ri_NumIndices != 1 ||
		!state->rri->ri_IndexRelationDescs[0]->rd_index->indisunique)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table stream.%s must have exactly one index, its primary key",
						RelationGetRelationName(state->rel)),
				 state->rri->ri_NumIndices == 1 ?
				 errdetail("Its only index is not unique.") :
				 errdetail("It has %d indexes.", state->rri->ri_NumIndices),
				 errhint("As the extension's owner, leave stream.%s its primary key on event_id and no other index.",
						 RelationGetRelationName(state->rel))));
	return state;
}

/*
 * A slot of the state's table, which lives as long as the state: in its
 * memory context, owned by the transaction (as dedup_open's).
 */
static TupleTableSlot *
dedup_slot_create(DedupState *state)
{
	MemoryContext old = MemoryContextSwitchTo(state->context);
	ResourceOwner saved_owner = CurrentResourceOwner;
	TupleTableSlot *slot;

	CurrentResourceOwner = TopTransactionResourceOwner;
	slot = table_slot_create(state->rel, NULL);
	CurrentResourceOwner = saved_owner;
	MemoryContextSwitchTo(old);
	return slot;
}

/* a key's row in the state's table */
static void
dedup_fill(DedupState *state, TupleTableSlot *slot, Datum event_id,
		   TimestampTz seen_at)
{
	int			i = 0;

	ExecClearTuple(slot);
	if (state->legacy)
		slot->tts_values[i++] = Int32GetDatum(state->stream_id);
	slot->tts_values[i++] = event_id;
	slot->tts_values[i++] = TimestampTzGetDatum(seen_at);
	memset(slot->tts_isnull, false, i * sizeof(bool));
	ExecStoreVirtualTuple(slot);
}

/*
 * Registers event_id for the stream.  Returns true when the key is new (the
 * event is accepted), false when an accepted event already has it.
 */
bool
dedup_register(Oid stream_relid, int32 stream_id, Datum event_id,
			   TimestampTz seen_at)
{
	DedupState *state;
	TupleTableSlot *slot;
	EState	   *estate;
	bool		accepted;

	dedup_register_callbacks();
	dedup_lock_stream(stream_id, stream_relid);
	state = dedup_open(stream_id, stream_relid);
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

		dedup_fill(state, slot, event_id, seen_at);

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

/*
 * Does an accepted event hold the key in values (a row of dedup_keys),
 * other than the key tuple at self (ours, just inserted; NULL: none)?
 * Waits for the transaction of an in-progress inserter or deleter, as the
 * executor's unique check does (execIndexing.c), then looks again.  Our
 * own keys, from this batch or an earlier one, count: they are live to the
 * dirty snapshot.
 */
static bool
dedup_key_taken(DedupState *state, Datum *values, ItemPointer self)
{
	Relation	index = state->rri->ri_IndexRelationDescs[0];
	IndexInfo  *ii = state->rri->ri_IndexRelationInfo[0];
	int			nkeys = ii->ii_NumIndexKeyAttrs;
	SnapshotData dirty;
	ScanKeyData keys[INDEX_MAX_KEYS];
	bool		taken;

	if (state->scan_slot == NULL)
		state->scan_slot = dedup_slot_create(state);
	InitDirtySnapshot(dirty);
	/* the unique index's equality (ExecOpenIndices for speculation set it) */
	for (int i = 0; i < nkeys; i++)
		ScanKeyEntryInitialize(&keys[i], 0, i + 1, ii->ii_UniqueStrats[i],
							   InvalidOid, index->rd_indcollation[i],
							   ii->ii_UniqueProcs[i],
							   values[ii->ii_IndexAttrNumbers[i] - 1]);
	for (;;)
	{
		IndexScanDesc scan;
		TransactionId xwait = InvalidTransactionId;
		uint32		spec_token = 0;
		ItemPointerData wait_tid;

		taken = false;
		scan = index_beginscan(state->rel, index, &dirty, nkeys, 0);
		index_rescan(scan, keys, nkeys, NULL, 0);
		while (index_getnext_slot(scan, ForwardScanDirection, state->scan_slot))
		{
			if (self != NULL && ItemPointerEquals(self, &state->scan_slot->tts_tid))
				continue;
			xwait = TransactionIdIsValid(dirty.xmin) ? dirty.xmin : dirty.xmax;
			spec_token = dirty.speculativeToken;
			wait_tid = state->scan_slot->tts_tid;
			if (!TransactionIdIsValid(xwait))
				taken = true;
			break;
		}
		index_endscan(scan);
		ExecClearTuple(state->scan_slot);
		if (!TransactionIdIsValid(xwait))
			return taken;
		if (spec_token != 0)
			SpeculativeInsertionWait(xwait, spec_token);
		else
			XactLockTableWait(xwait, state->rel, &wait_tid, XLTW_InsertIndex);
	}
}

/*
 * Registers the keys of a batch of events of one COPY (copy.c), in the
 * order of the batch: accepted[i] says whether event_ids[i] is new.  The
 * keys are not speculative: their tuples go in with one multi-insert (one
 * WAL record per page instead of a heap record and a confirmation per
 * key), then each key's index entry, whose uniqueness check reports a
 * conflict without an error (UNIQUE_CHECK_PARTIAL).  A conflict is
 * resolved as the executor does, waiting for an in-progress holder; a
 * key found taken makes its event a duplicate (an event repeated within
 * the batch included), and its tuple is deleted again.  The deletion needs
 * a command id after the one that inserted it, hence the
 * CommandCounterIncrement, only when a duplicate was met: the batch's
 * events are inserted with the COPY's command id, as before.  Others that
 * meet a key of ours wait for our transaction, as for any committed key.
 */
void
dedup_register_batch(Oid stream_relid, int32 stream_id, int n,
					 const pg_uuid_t *event_ids, TimestampTz seen_at,
					 bool *accepted)
{
	DedupState *state;
	EState	   *estate;
	int			ninsert = 0;
	int			nduplicates = 0;
	int			nretract = 0;

	if (n == 0)
		return;
	dedup_register_callbacks();
	dedup_lock_stream(stream_id, stream_relid);
	state = dedup_open(stream_id, stream_relid);
	estate = state->estate;

	if (state->nbatch_slots < n)
	{
		if (state->batch_slots == NULL)
		{
			state->batch_slots = MemoryContextAlloc(state->context,
													n * sizeof(TupleTableSlot *));
			state->batch_rows = MemoryContextAlloc(state->context, n * sizeof(int));
		}
		else
		{
			state->batch_slots = repalloc(state->batch_slots,
										  n * sizeof(TupleTableSlot *));
			state->batch_rows = repalloc(state->batch_rows, n * sizeof(int));
		}
		for (int i = state->nbatch_slots; i < n; i++)
			state->batch_slots[i] = dedup_slot_create(state);
		state->nbatch_slots = n;
	}

	/*
	 * A batch of retries (a COPY sent again) would insert every key only to
	 * delete it: after a batch that met many duplicates, each key is looked
	 * up first and only those not found are inserted.
	 */
	for (int i = 0; i < n; i++)
	{
		TupleTableSlot *slot = state->batch_slots[ninsert];

		dedup_fill(state, slot, UUIDPGetDatum(&event_ids[i]), seen_at);
		accepted[i] = !state->precheck ||
			!dedup_key_taken(state, slot->tts_values, NULL);
		if (accepted[i])
			state->batch_rows[ninsert++] = i;
		else
			nduplicates++;
	}
	if (ninsert > 0)
		table_multi_insert(state->rel, state->batch_slots, ninsert,
						   GetCurrentCommandId(true), 0, NULL);

	for (int k = 0; k < ninsert; k++)
	{
		TupleTableSlot *slot = state->batch_slots[k];
		bool		conflict = false;
		List	   *recheck;

		CHECK_FOR_INTERRUPTS();
		ResetPerTupleExprContext(estate);
		recheck = ExecInsertIndexTuples(state->rri, slot, estate, false, true,
										&conflict, NIL);
		list_free(recheck);
		if (conflict)
		{
			slot_getallattrs(slot);
			if (dedup_key_taken(state, slot->tts_values, &slot->tts_tid))
			{
				accepted[state->batch_rows[k]] = false;
				nretract++;
			}
		}
	}

	if (nretract > 0)
	{
		CommandCounterIncrement();
		for (int k = 0; k < ninsert; k++)
			if (!accepted[state->batch_rows[k]])
				simple_heap_delete(state->rel, &state->batch_slots[k]->tts_tid);
	}
	state->precheck = (nduplicates + nretract) * 8 > n;
	for (int k = 0; k < ninsert; k++)
		ExecClearTuple(state->batch_slots[k]);
}
