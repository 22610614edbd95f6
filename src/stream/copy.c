/*-------------------------------------------------------------------------
 * copy.c
 *	  COPY ... FROM into a stream, with batched inserts.
 *
 * PostgreSQL's COPY inserts row by row into a table that has a BEFORE ROW
 * INSERT trigger (such a trigger might read the table and must see the
 * rows before it), and every stream has one (trigger.c).  Ours reads
 * nothing of the stream, so a COPY into a stream runs here instead: each
 * row is parsed by PostgreSQL's own COPY code (BeginCopyFrom,
 * NextCopyFrom), given the trigger's checks directly (stream_check_row: no
 * trigger call, no tuple deformed and formed again), routed to its
 * partition and buffered.  A full batch registers its rows' dedup keys
 * together (dedup_register_batch: one multi-insert of key tuples instead
 * of a speculative insertion per key), drops the duplicates, runs the
 * partitions' own BEFORE triggers and constraints on the rest, and goes to
 * table_multi_insert (one WAL record per heap page instead of one per
 * row), then to the partitions' indexes and AFTER ROW triggers (immediate
 * activations), as copyfrom.c does for a table without BEFORE ROW
 * triggers.
 *
 * Taken only where the result is the ordinary path's: COPY FROM (STDIN,
 * or a file or program for a role PostgreSQL lets read it; no WHERE) into
 * the stream itself, in a session that fires origin triggers
 * (session_replication_role is not replica), the stream's ingest trigger
 * enabled, no other BEFORE or INSTEAD OF INSERT row trigger and no
 * transition table on the stream, and stream_events.copy_batch on.  A
 * partition with BEFORE INSERT row triggers of its own (created on it
 * alone) gets each row through them, ours disabled in this statement's
 * copy of its trigger list (its work is done).  Rights are checked as DoCopy checks them: INSERT on the copied
 * columns; with row-level security the COPY goes to PostgreSQL's path,
 * which refuses it.  Rows the trigger's work drops (duplicates, events
 * quarantined) count as excluded in pg_stat_progress_copy.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_trigger.h"
#include "commands/copy.h"
#include "commands/copyfrom_internal.h"
#include "commands/progress.h"
#include "commands/trigger.h"
#include "executor/execPartition.h"
#include "executor/executor.h"
#include "executor/nodeModifyTable.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "parser/parse_relation.h"
#include "pgstat.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"

#include "stream_events.h"

/* the flush thresholds of copyfrom.c */
#define COPY_BATCH_ROWS 1000
#define COPY_BATCH_BYTES 65535
#define COPY_MAX_PARTITIONS 32

#define INGEST_TRIGGER_NAME "stream_events_ingest"

/* the rows buffered for one partition */
typedef struct PartBuffer
{
	ResultRelInfo *rri;
	bool		own_triggers;	/* BEFORE INSERT row triggers besides ours */
	BulkInsertState bistate;
	int			nused;
	TupleTableSlot *slots[COPY_BATCH_ROWS];
	uint64		linenos[COPY_BATCH_ROWS];
	bool		keep[COPY_BATCH_ROWS];	/* its key was new */
} PartBuffer;

/*
 * The rows of a batch in the order read, across partitions: where each is
 * buffered, its event_id and occurred_at.  Their keys are registered
 * together when the batch is flushed (dedup_register_batch), before the
 * partitions' own triggers and constraints and the inserts.
 */
typedef struct CopyBatch
{
	CopyFromState cstate;
	EState	   *estate;
	StreamInfo *info;
	TimestampTz received_at;
	CommandId	cid;
	PartBuffer *parts[COPY_MAX_PARTITIONS];
	int			nparts;
	int			nrows;
	Size		nbytes;
	uint64		stored;
	uint64		excluded;
	PartBuffer *row_buf[COPY_BATCH_ROWS];
	int			row_pos[COPY_BATCH_ROWS];
	pg_uuid_t	row_key[COPY_BATCH_ROWS];
	TimestampTz row_occurred[COPY_BATCH_ROWS];
	bool		row_accepted[COPY_BATCH_ROWS];
} CopyBatch;

/* would the trigger fire in this session (TriggerEnabled, trigger.c) */
static bool
trigger_fires(Trigger *trigger)
{
	if (SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA)
		return trigger->tgenabled == TRIGGER_FIRES_ON_REPLICA ||
			trigger->tgenabled == TRIGGER_FIRES_ALWAYS;
	return trigger->tgenabled == TRIGGER_FIRES_ON_ORIGIN ||
		trigger->tgenabled == TRIGGER_FIRES_ALWAYS;
}

static bool
is_before_insert_row(Trigger *trigger)
{
	return TRIGGER_FOR_ROW(trigger->tgtype) &&
		TRIGGER_FOR_BEFORE(trigger->tgtype) &&
		TRIGGER_FOR_INSERT(trigger->tgtype);
}

/* stream._ingest_trigger(), the function of the stream's insert trigger */
static bool
is_ingest_trigger_fn(Oid fn)
{
	char	   *name = get_func_name(fn);

	return name != NULL && strcmp(name, "_ingest_trigger") == 0 &&
		get_func_namespace(fn) == get_namespace_oid("stream", true);
}

/*
 * The stream's own triggers allow the batched path: ours fires, and no
 * other BEFORE (or INSTEAD OF) INSERT row trigger or transition table
 * exists.  Returns the function of our trigger, or InvalidOid.
 */
static Oid
batchable_triggers(TriggerDesc *trigdesc)
{
	Oid			ingest_fn = InvalidOid;

	if (trigdesc == NULL || trigdesc->trig_insert_instead_row ||
		trigdesc->trig_insert_new_table)
		return InvalidOid;
	for (int i = 0; i < trigdesc->numtriggers; i++)
	{
		Trigger    *trigger = &trigdesc->triggers[i];

		if (!is_before_insert_row(trigger) || !trigger_fires(trigger))
			continue;
		if (!OidIsValid(ingest_fn) &&
			strcmp(trigger->tgname, INGEST_TRIGGER_NAME) == 0 &&
			is_ingest_trigger_fn(trigger->tgfoid))
			ingest_fn = trigger->tgfoid;
		else
			return InvalidOid;
	}
	return ingest_fn;
}

/*
 * A partition first met: its buffer.  Its BEFORE INSERT row triggers other
 * than ours (created on the partition alone) will fire for each row; ours
 * is disabled in the statement's copy of the partition's trigger list.
 */
static PartBuffer *
part_buffer_new(ResultRelInfo *rri, Oid ingest_fn)
{
	PartBuffer *buf = palloc0(sizeof(PartBuffer));
	TriggerDesc *trigdesc = rri->ri_TrigDesc;

	if (rri->ri_FdwRoutine != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot copy into partition \"%s\" of a stream: it is a foreign table",
						RelationGetRelationName(rri->ri_RelationDesc)),
				 errhint("SET stream_events.copy_batch = off to copy row by row.")));
	buf->rri = rri;
	buf->bistate = GetBulkInsertState();
	if (trigdesc != NULL && trigdesc->trig_insert_before_row)
	{
		for (int i = 0; i < trigdesc->numtriggers; i++)
		{
			Trigger    *trigger = &trigdesc->triggers[i];

			if (!is_before_insert_row(trigger) || !trigger_fires(trigger))
				continue;
			if (trigger->tgfoid == ingest_fn)
				trigger->tgenabled = TRIGGER_DISABLED;
			else
				buf->own_triggers = true;
		}
	}
	return buf;
}

static void
part_buffer_flush(CopyBatch *batch, PartBuffer *buf)
{
	CopyFromState cstate = batch->cstate;
	EState	   *estate = batch->estate;
	ResultRelInfo *rri = buf->rri;
	uint64		save_lineno = cstate->cur_lineno;
	bool		save_line_buf_valid = cstate->line_buf_valid;
	MemoryContext old;
	bool		after_rows = rri->ri_TrigDesc != NULL &&
		rri->ri_TrigDesc->trig_insert_after_row;
	int			kept = 0;

	if (buf->nused == 0)
		return;

	/* an error below names the row's line, not the line last read */
	cstate->line_buf_valid = false;

	/*
	 * The rows whose key was new, in order, through the partition's own
	 * BEFORE triggers and constraints; the others leave the buffer.
	 */
	for (int i = 0; i < buf->nused; i++)
	{
		TupleTableSlot *slot = buf->slots[i];
		bool		keep = buf->keep[i];

		cstate->cur_lineno = buf->linenos[i];
		if (keep && buf->own_triggers)
		{
			keep = ExecBRInsertTriggers(estate, rri, slot);
			/* the partition's trigger may have changed the partition key */
			if (keep)
				ExecPartitionCheck(rri, slot, estate, true);
		}
		if (keep && rri->ri_RelationDesc->rd_att->constr)
		{
			if (rri->ri_RelationDesc->rd_att->constr->has_generated_stored)
				ExecComputeStoredGenerated(rri, estate, slot, CMD_INSERT);
			ExecConstraints(rri, slot, estate);
		}
		if (!keep)
		{
			ExecClearTuple(slot);
			continue;
		}
		ExecMaterializeSlot(slot);
		buf->slots[i] = buf->slots[kept];
		buf->slots[kept] = slot;
		buf->linenos[kept++] = buf->linenos[i];
	}
	buf->nused = kept;
	if (kept == 0)
	{
		cstate->cur_lineno = save_lineno;
		cstate->line_buf_valid = save_line_buf_valid;
		return;
	}

	old = MemoryContextSwitchTo(GetPerTupleMemoryContext(estate));
	table_multi_insert(rri->ri_RelationDesc, buf->slots, buf->nused,
					   batch->cid, 0, buf->bistate);
	MemoryContextSwitchTo(old);

	for (int i = 0; i < buf->nused; i++)
	{
		List	   *recheck = NIL;

		cstate->cur_lineno = buf->linenos[i];
		if (rri->ri_NumIndices > 0)
			recheck = ExecInsertIndexTuples(rri, buf->slots[i], estate,
											false, false, NULL, NIL);
		if (after_rows)
			ExecARInsertTriggers(estate, rri, buf->slots[i], recheck, NULL);
		list_free(recheck);
		ExecClearTuple(buf->slots[i]);
	}
	batch->stored += buf->nused;
	pgstat_progress_update_param(PROGRESS_COPY_TUPLES_PROCESSED, batch->stored);
	buf->nused = 0;
	ReleaseBulkInsertStatePin(buf->bistate);
	cstate->cur_lineno = save_lineno;
	cstate->line_buf_valid = save_line_buf_valid;
}

static void
batch_flush(CopyBatch *batch)
{
	StreamInfo *info = batch->info;

	if (batch->nrows > 0)
	{
		if (info->dedup)
			dedup_register_batch(info->stream_relid, info->stream_id,
								 batch->nrows, batch->row_key,
								 batch->received_at, batch->row_accepted);
		else
			memset(batch->row_accepted, true, batch->nrows * sizeof(bool));
	}
	for (int i = 0; i < batch->nrows; i++)
	{
		batch->row_buf[i]->keep[batch->row_pos[i]] = batch->row_accepted[i];
		if (batch->row_accepted[i])
			stream_row_accepted(info, batch->row_occurred[i], batch->received_at);
		else
		{
			stats_count_duplicate(info->stream_relid);
			pgstat_progress_update_param(PROGRESS_COPY_TUPLES_EXCLUDED,
										 ++batch->excluded);
		}
	}
	for (int i = 0; i < batch->nparts; i++)
		part_buffer_flush(batch, batch->parts[i]);
	batch->nrows = 0;
	batch->nbytes = 0;
}

static void
batch_cleanup(CopyBatch *batch)
{
	for (int i = 0; i < batch->nparts; i++)
	{
		PartBuffer *buf = batch->parts[i];

		for (int j = 0; j < COPY_BATCH_ROWS && buf->slots[j] != NULL; j++)
			ExecDropSingleTupleTableSlot(buf->slots[j]);
		FreeBulkInsertState(buf->bistate);
		table_finish_bulk_insert(buf->rri->ri_RelationDesc, 0);
		pfree(buf);
	}
	batch->nparts = 0;
}

/* the buffer of a partition; more partitions than buffers: all flushed first */
static PartBuffer *
batch_buffer(CopyBatch *batch, ResultRelInfo *rri, Oid ingest_fn)
{
	for (int i = batch->nparts - 1; i >= 0; i--)
		if (batch->parts[i]->rri == rri)
			return batch->parts[i];
	if (batch->nparts == COPY_MAX_PARTITIONS)
	{
		batch_flush(batch);
		batch_cleanup(batch);
	}
	batch->parts[batch->nparts] = part_buffer_new(rri, ingest_fn);
	return batch->parts[batch->nparts++];
}

/*
 * The rights DoCopy checks for COPY FROM: INSERT on the columns copied.
 * False when row-level security applies (PostgreSQL's path refuses it).
 */
static bool
copy_check_rights(ParseState *pstate, Relation rel, List *attlist)
{
	ParseNamespaceItem *nsitem;
	RangeTblEntry *rte;
	List	   *attnums;
	ListCell   *lc;

	nsitem = addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock,
										   NULL, false, false);
	rte = nsitem->p_rte;
	rte->requiredPerms = ACL_INSERT;
	attnums = CopyGetAttnums(RelationGetDescr(rel), rel, attlist);
	foreach(lc, attnums)
		rte->insertedCols = bms_add_member(rte->insertedCols,
										   lfirst_int(lc) - FirstLowInvalidHeapAttributeNumber);
	ExecCheckRTPerms(pstate->p_rtable, true);
	return check_enable_rls(rte->relid, InvalidOid, false) != RLS_ENABLED;
}

static uint64
copy_rows(CopyFromState cstate, Relation rel, StreamInfo *info, Oid ingest_fn)
{
	EState	   *estate = CreateExecutorState();
	MemoryContext oldcontext = CurrentMemoryContext;
	ResultRelInfo *root;
	ModifyTableState *mtstate;
	PartitionTupleRouting *proute;
	ExprContext *econtext;
	TupleTableSlot *rootslot;
	ErrorContextCallback errcallback;
	CopyBatch	batch = {0};

	batch.cstate = cstate;
	batch.estate = estate;
	batch.info = info;
	/* every row's received_at (stream_check_row) */
	batch.received_at = GetCurrentStatementStartTimestamp();
	batch.cid = GetCurrentCommandId(true);

	ExecInitRangeTable(estate, cstate->range_table);
	root = makeNode(ResultRelInfo);
	ExecInitResultRelation(estate, root, 1);
	CheckValidResultRel(root, CMD_INSERT);

	mtstate = makeNode(ModifyTableState);
	mtstate->ps.plan = NULL;
	mtstate->ps.state = estate;
	mtstate->operation = CMD_INSERT;
	mtstate->mt_nrels = 1;
	mtstate->resultRelInfo = root;
	mtstate->rootResultRelInfo = root;

	AfterTriggerBeginQuery();
	proute = ExecSetupPartitionTupleRouting(estate, rel);
	rootslot = table_slot_create(rel, &estate->es_tupleTable);
	ExecBSInsertTriggers(estate, root);
	econtext = GetPerTupleExprContext(estate);

	errcallback.callback = CopyFromErrorCallback;
	errcallback.arg = (void *) cstate;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	for (;;)
	{
		ResultRelInfo *rri;
		PartBuffer *buf;
		TupleTableSlot *slot;
		TupleConversionMap *map;
		bool		accepted;
		bool		received_changed;

		CHECK_FOR_INTERRUPTS();
		ResetPerTupleExprContext(estate);

		/* parsed and checked in the per-row context, as the trigger runs */
		MemoryContextSwitchTo(GetPerTupleMemoryContext(estate));
		ExecClearTuple(rootslot);
		if (!NextCopyFrom(cstate, econtext, rootslot->tts_values,
						  rootslot->tts_isnull))
		{
			MemoryContextSwitchTo(oldcontext);
			break;
		}
		ExecStoreVirtualTuple(rootslot);
		rootslot->tts_tableOid = RelationGetRelid(rel);
		accepted = stream_check_row(rel, info, rootslot->tts_values,
									rootslot->tts_isnull, &received_changed);
		MemoryContextSwitchTo(oldcontext);
		if (!accepted)
		{
			pgstat_progress_update_param(PROGRESS_COPY_TUPLES_EXCLUDED,
										 ++batch.excluded);
			continue;
		}

		rri = ExecFindPartition(mtstate, root, proute, rootslot, estate);
		buf = batch_buffer(&batch, rri, ingest_fn);
		if (buf->slots[buf->nused] == NULL)
			buf->slots[buf->nused] = table_slot_create(rri->ri_RelationDesc, NULL);
		slot = buf->slots[buf->nused];
		map = rri->ri_RootToPartitionMap;
		if (map != NULL)
			slot = execute_attr_map_slot(map->attrMap, rootslot, slot);
		else
			ExecCopySlot(slot, rootslot);
		slot->tts_tableOid = RelationGetRelid(rri->ri_RelationDesc);
		ExecMaterializeSlot(slot);

		batch.row_buf[batch.nrows] = buf;
		batch.row_pos[batch.nrows] = buf->nused;
		batch.row_key[batch.nrows] =
			*DatumGetUUIDP(rootslot->tts_values[info->attnums[ENV_EVENT_ID] - 1]);
		batch.row_occurred[batch.nrows] =
			DatumGetTimestampTz(rootslot->tts_values[info->attnums[ENV_OCCURRED_AT] - 1]);
		buf->linenos[buf->nused++] = cstate->cur_lineno;
		batch.nrows++;
		batch.nbytes += cstate->line_buf.len;
		if (batch.nrows >= COPY_BATCH_ROWS || batch.nbytes >= COPY_BATCH_BYTES)
			batch_flush(&batch);
	}
	batch_flush(&batch);

	error_context_stack = errcallback.previous;

	ExecASInsertTriggers(estate, root, NULL);
	AfterTriggerEndQuery(estate);
	batch_cleanup(&batch);
	ExecResetTupleTable(estate->es_tupleTable, false);
	ExecCleanupTupleRouting(mtstate, proute);
	ExecCloseResultRelations(estate);
	ExecCloseRangeTableRelations(estate);
	FreeExecutorState(estate);
	return batch.stored;
}

/*
 * COPY FROM into a stream, when it can be batched (see the top of the
 * file): *processed is the rows stored.  False: run PostgreSQL's COPY.
 */
bool
stream_copy_from(CopyStmt *stmt, const char *query_string,
				 QueryEnvironment *query_env, uint64 *processed)
{
	Relation	rel;
	Oid			relid;
	Oid			ingest_fn;
	StreamInfo *info;
	ParseState *pstate;
	CopyFromState cstate;

	if (!se_copy_batch || !stmt->is_from || stmt->relation == NULL ||
		stmt->query != NULL || stmt->whereClause != NULL ||
		SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA)
		return false;

	/* a server file or program: PostgreSQL's path refuses who may not */
	if (stmt->filename != NULL &&
		!has_privs_of_role(GetUserId(), stmt->is_program ?
						   ROLE_PG_EXECUTE_SERVER_PROGRAM :
						   ROLE_PG_READ_SERVER_FILES))
		return false;

	/* the lock COPY FROM takes anyway; most COPYs are into something else */
	relid = RangeVarGetRelid(stmt->relation, RowExclusiveLock, true);
	if (!OidIsValid(relid) || get_rel_relkind(relid) != RELKIND_PARTITIONED_TABLE)
		return false;

	rel = table_open(relid, NoLock);
	ingest_fn = batchable_triggers(rel->trigdesc);
	if (!OidIsValid(ingest_fn) || rel->rd_rel->relispartition)
	{
		table_close(rel, NoLock);
		return false;
	}
	pstate = make_parsestate(NULL);
	pstate->p_sourcetext = query_string;
	pstate->p_queryEnv = query_env;
	if (!copy_check_rights(pstate, rel, stmt->attlist))
	{
		free_parsestate(pstate);
		table_close(rel, NoLock);
		return false;
	}
	info = stream_lookup(rel);
	if (XactReadOnly)
		PreventCommandIfReadOnly("COPY FROM");
	PreventCommandIfParallelMode("COPY FROM");

	cstate = BeginCopyFrom(pstate, rel, NULL, stmt->filename, stmt->is_program,
						   NULL, stmt->attlist, stmt->options);
	/* as CopyFrom refuses it for every partitioned table */
	if (cstate->opts.freeze)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot perform COPY FREEZE on a partitioned table")));
	*processed = copy_rows(cstate, rel, info, ingest_fn);
	EndCopyFrom(cstate);
	free_parsestate(pstate);
	table_close(rel, NoLock);
	return true;
}
