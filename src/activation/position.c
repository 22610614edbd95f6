/*-------------------------------------------------------------------------
 * position.c
 *	  An activation's position (applied_lsn, applied_at, fired) written to
 *	  its row of stream.activation_defs without SQL, once per apply that
 *	  touched it.
 *
 * The UPDATE statement this replaces cost about a sixth of the worker's
 * CPU time in rounds of a few events: planning and executor setup, and
 * above all the row's ten CHECK constraints, parsed and prepared again at
 * every execution although none of them reads a column written here.
 * The row is found through the primary key with the latest snapshot and
 * updated as UPDATE would: waiting for a transaction that has it (a
 * drop_activation, a resume), then finding it again, or finding it gone.
 * The row's only triggers are those of the foreign keys that reference
 * act_id, which an UPDATE that keeps act_id does not run either; a table
 * with other triggers or rules, or without the columns this file knows,
 * is left to the UPDATE statement (fire.c).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "activation/activation.h"

enum
{
	POS_ACT_ID, POS_APPLIED_LSN, POS_APPLIED_AT, POS_FIRED, POS_STATUS,
	POS_LAST_ERROR, POS_NCOLS
};
static const struct
{
	const char *name;
	Oid			type;
}			pos_cols[POS_NCOLS] = {
	{"act_id", INT4OID}, {"applied_lsn", LSNOID}, {"applied_at", TIMESTAMPTZOID},
	{"fired", INT8OID}, {"status", TEXTOID}, {"last_error", TEXTOID}
};

/* triggers an UPDATE of other columns than the referenced key would run */
static bool
has_own_triggers(Relation rel)
{
	if (rel->trigdesc == NULL)
		return false;
	for (int i = 0; i < rel->trigdesc->numtriggers; i++)
	{
		Trigger    *t = &rel->trigdesc->triggers[i];

		if (!t->tgisinternal || RI_FKey_trigger_type(t->tgfoid) != RI_TRIGGER_PK)
			return true;
	}
	return false;
}

/*
 * Sets the position of activation act_id: applied_lsn = lsn, applied_at =
 * the transaction's start, fired += fired; with running, also status =
 * 'running' and last_error = NULL.  *gone: the row is not there (dropped).
 * Returns false, having written nothing, when the UPDATE statement must do
 * it instead.
 */
bool
act_position_write(int32 act_id, XLogRecPtr lsn, int64 fired, bool running, bool *gone)
{
	Oid			nsp = get_namespace_oid("stream", true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid("activation_defs", nsp) : InvalidOid;
	Relation	rel;
	TupleDesc	desc;
	int			col[POS_NCOLS];
	Oid			pkey;
	Relation	idx;
	ScanKeyData key;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *oldslot;
	TupleTableSlot *newslot;

	*gone = false;
	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, RowExclusiveLock);
	desc = RelationGetDescr(rel);
	for (int c = 0; c < POS_NCOLS; c++)
	{
		AttrNumber	att = get_attnum(relid, pos_cols[c].name);

		col[c] = att > 0 ? att - 1 : -1;
		if (col[c] >= 0 && TupleDescAttr(desc, col[c])->atttypid != pos_cols[c].type)
			col[c] = -1;
	}
	pkey = RelationGetPrimaryKeyIndex(rel);
	if (has_own_triggers(rel) || rel->rd_rules != NULL || !OidIsValid(pkey) ||
		col[POS_ACT_ID] < 0 || col[POS_APPLIED_LSN] < 0 || col[POS_APPLIED_AT] < 0 ||
		col[POS_FIRED] < 0 || (running && (col[POS_STATUS] < 0 || col[POS_LAST_ERROR] < 0)))
	{
		table_close(rel, NoLock);
		return false;
	}
	idx = index_open(pkey, RowExclusiveLock);
	if (IndexRelationGetNumberOfKeyAttributes(idx) != 1 ||
		idx->rd_index->indkey.values[0] != col[POS_ACT_ID] + 1)
	{
		index_close(idx, NoLock);
		table_close(rel, NoLock);
		return false;
	}
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(act_id));

	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 0, NULL, 0);
	ExecOpenIndices(rri, false);
	oldslot = table_slot_create(rel, NULL);
	newslot = table_slot_create(rel, NULL);

	for (;;)
	{
		Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
		IndexScanDesc scan;
		bool		found;
		TM_Result	res;
		TM_FailureData tmfd;
		LockTupleMode lockmode;
		bool		update_indexes;
		int64		was_fired;

		CHECK_FOR_INTERRUPTS();
		scan = index_beginscan(rel, idx, snap, 1, 0);
		index_rescan(scan, &key, 1, NULL, 0);
		found = index_getnext_slot(scan, ForwardScanDirection, oldslot);
		index_endscan(scan);
		UnregisterSnapshot(snap);
		if (!found)
		{
			*gone = true;
			break;
		}

		slot_getallattrs(oldslot);
		ExecClearTuple(newslot);
		memcpy(newslot->tts_values, oldslot->tts_values, sizeof(Datum) * desc->natts);
		memcpy(newslot->tts_isnull, oldslot->tts_isnull, sizeof(bool) * desc->natts);
		newslot->tts_values[col[POS_APPLIED_LSN]] = LSNGetDatum(lsn);
		newslot->tts_isnull[col[POS_APPLIED_LSN]] = false;
		newslot->tts_values[col[POS_APPLIED_AT]] =
			TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
		newslot->tts_isnull[col[POS_APPLIED_AT]] = false;
		was_fired = oldslot->tts_isnull[col[POS_FIRED]] ? 0 :
			DatumGetInt64(oldslot->tts_values[col[POS_FIRED]]);
		newslot->tts_values[col[POS_FIRED]] = Int64GetDatum(was_fired + fired);
		newslot->tts_isnull[col[POS_FIRED]] = false;
		if (running)
		{
			newslot->tts_values[col[POS_STATUS]] = CStringGetTextDatum("running");
			newslot->tts_isnull[col[POS_STATUS]] = false;
			newslot->tts_isnull[col[POS_LAST_ERROR]] = true;
		}
		ExecStoreVirtualTuple(newslot);

		res = table_tuple_update(rel, &oldslot->tts_tid, newslot, GetCurrentCommandId(true),
								 GetActiveSnapshot(), InvalidSnapshot, true,
								 &tmfd, &lockmode, &update_indexes);
		if (res == TM_Ok)
		{
			if (update_indexes && rri->ri_NumIndices > 0)
				list_free(ExecInsertIndexTuples(rri, newslot, estate, false, false, NULL, NIL));
			break;
		}
		/* changed or deleted by a transaction that committed meanwhile */
		if (res != TM_Updated && res != TM_Deleted)
			elog(ERROR, "could not update the position of activation %d (%d)", act_id, (int) res);
	}

	ExecDropSingleTupleTableSlot(oldslot);
	ExecDropSingleTupleTableSlot(newslot);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	index_close(idx, NoLock);
	table_close(rel, NoLock);
	/* what runs next in this transaction sees the new row */
	CommandCounterIncrement();
	return true;
}
