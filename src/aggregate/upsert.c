/*-------------------------------------------------------------------------
 * upsert.c
 *	  A continuous aggregate's batch written into its state table: one
 *	  INSERT ... ON CONFLICT DO UPDATE per group, combining the stored
 *	  partial states with the batch's (stream.combine_states), as the
 *	  aggregate's owner (owner.h).  With watches (thresholds), the same
 *	  statement returns each group's key and, per watch, its payload and
 *	  whether its condition holds over the group's view row; the watch is
 *	  told, as the worker, outside the owner's scope.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/tuplesort.h"
#include "utils/tuplestore.h"
#include "utils/typcache.h"
#include "catalog/pg_operator.h"

#include "aggregate/runtime.h"
#include "core/definition.h"
#include "core/owner.h"

static SPIPlanPtr
prepare_upsert(AggRuntime *rt, bool with_thresholds)
{
	SPIPlanPtr	plan;
	StringInfoData sql;
	Oid		   *types = palloc((rt->nkeys + rt->naggs) * sizeof(Oid));
	char	   *state = definition_relation_name(rt->state_rel);
	int			p = 0;

	initStringInfo(&sql);
	appendStringInfo(&sql, "INSERT INTO %s AS s (", state);
	for (int k = 0; k < rt->nkeys; k++)
		appendStringInfo(&sql, "%s%s", p++ ? ", " : "", quote_identifier(rt->keynames[k]));
	for (int a = 0; a < rt->naggs; a++)
		appendStringInfo(&sql, "%s%s", p++ ? ", " : "", quote_identifier(rt->aggs[a].colname));
	appendStringInfoString(&sql, ") VALUES (");
	for (int i = 1; i <= p; i++)
		appendStringInfo(&sql, "%s$%d", i > 1 ? ", " : "", i);
	appendStringInfoString(&sql, ") ON CONFLICT (");
	for (int k = 0; k < rt->nkeys; k++)
		appendStringInfo(&sql, "%s%s", k ? ", " : "", quote_identifier(rt->keynames[k]));
	appendStringInfoString(&sql, ") DO UPDATE SET ");
	for (int a = 0; a < rt->naggs; a++)
	{
		const char *c = quote_identifier(rt->aggs[a].colname);

		appendStringInfo(&sql, "%s%s = stream.combine_states(s.%s, EXCLUDED.%s, '%u'::pg_catalog.regprocedure)",
						 a ? ", " : "", c, c, c, rt->aggs[a].info->aggfnoid);
	}
	for (int k = 0; k < rt->nkeys; k++)
		types[k] = rt->keytypes[k];
	for (int a = 0; a < rt->naggs; a++)
		types[rt->nkeys + a] = rt->aggs[a].statetype;
	if (with_thresholds)
	{
		/*
		 * With thresholds, the upsert also returns the group's key (a JSON
		 * array of the state's key columns) and, per threshold, its payload
		 * and whether its condition holds over the group's view row.
		 */
		StringInfoData wrap;
		ListCell   *lc;

		initStringInfo(&wrap);
		appendStringInfo(&wrap, "WITH s AS (%s RETURNING *) SELECT "
						 "(SELECT pg_catalog.jsonb_build_array(%s)::pg_catalog.text FROM s)",
						 sql.data, rt->state_keys);
		foreach(lc, rt->watches)
		{
			AggWatch   *w = lfirst(lc);

			if (w->payload)
				appendStringInfo(&wrap, ", pg_catalog.to_jsonb((\n%s\n))::pg_catalog.text",
								 w->payload);
			else
				appendStringInfoString(&wrap, ", pg_catalog.row_to_json(v)::pg_catalog.text");
			appendStringInfo(&wrap, ", coalesce((\n%s\n), false)", w->condition);
		}
		appendStringInfo(&wrap, " FROM (SELECT %s FROM s) v", rt->view_select);
		sql = wrap;
	}
	plan = SPI_prepare(sql.data, p, types);
	if (plan == NULL)
		elog(ERROR, "could not prepare the upsert of aggregate %s: %s", rt->def.name,
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/*
 * The search_path an aggregate's upsert is prepared and run in: with
 * thresholds, the first threshold's (their conditions and payloads are in
 * the statement), otherwise the aggregate's.  The same for both, so that
 * the cached plan is not analysed again at every execution.
 */
static const char *
upsert_search_path(AggRuntime *rt, bool with_thresholds)
{
	if (with_thresholds)
		return ((AggWatch *) linitial(rt->watches))->search_path;
	return rt->def.search_path;
}

/* the result of one group's upsert with thresholds, in the caller's memory */
typedef struct GroupEdges
{
	char	   *grp;			/* the group's key as a JSON array */
	char	  **payloads;		/* per threshold */
	bool	   *holds;			/* per threshold */
} GroupEdges;

/*
 * A group's key and serialised states (the state table's columns) into
 * values/isnull; as the owner (a serial function may be the owner's).
 */
static void
group_values(AggRuntime *rt, TupleHashEntry entry, Datum *values, bool *isnull)
{
	AggTransValue *tv = (AggTransValue *) entry->additional;

	ExecStoreMinimalTuple(entry->firstTuple, rt->readslot, false);
	slot_getallattrs(rt->readslot);
	for (int k = 0; k < rt->nkeys; k++)
	{
		values[k] = rt->readslot->tts_values[k];
		isnull[k] = rt->readslot->tts_isnull[k];
	}
	for (int a = 0; a < rt->naggs; a++)
		values[rt->nkeys + a] = aggfunc_serialize(rt->aggs[a].info, &tv[a],
												  rt->batchcxt, &isnull[rt->nkeys + a]);
}

/*
 * Upserts one group of the table as the aggregate's owner (owner.h): its
 * states serialised, the combine functions in the statement and, with
 * thresholds, their payloads and conditions.  Results into edges.
 */
static void
upsert_one_group(AggRuntime *rt, SPIPlanPtr plan, bool with_thresholds,
				 TupleHashEntry entry, Datum *values, char *nulls, GroupEdges *edges)
{
	OwnerScope	scope = {0};
	MemoryContext cxt = CurrentMemoryContext;
	int			n = rt->nkeys + rt->naggs;

	owner_enter(&scope, rt->def.owner, upsert_search_path(rt, with_thresholds));
	PG_TRY();
	{
		bool	   *isnull = palloc(n * sizeof(bool));

		group_values(rt, entry, values, isnull);
		for (int i = 0; i < n; i++)
			nulls[i] = isnull[i] ? 'n' : ' ';
		if (!with_thresholds)
		{
			if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not apply to continuous aggregate %s", rt->def.name);
		}
		else
		{
			HeapTuple	tup;
			TupleDesc	desc;
			int			col = 2;
			int			nthresholds = list_length(rt->watches);

			if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_SELECT ||
				SPI_processed != 1)
				elog(ERROR, "could not apply to continuous aggregate %s", rt->def.name);
			/* SPI returned to its procedure context: copy into ours */
			MemoryContextSwitchTo(cxt);
			tup = SPI_tuptable->vals[0];
			desc = SPI_tuptable->tupdesc;
			edges->grp = SPI_getvalue(tup, desc, 1);
			edges->payloads = palloc(nthresholds * sizeof(char *));
			edges->holds = palloc(nthresholds * sizeof(bool));
			for (int t = 0; t < nthresholds; t++)
			{
				bool		isnull;

				edges->payloads[t] = SPI_getvalue(tup, desc, col);
				edges->holds[t] = DatumGetBool(SPI_getbinval(tup, desc, col + 1, &isnull)) &&
					!isnull;
				col += 2;
			}
			SPI_freetuptable(SPI_tuptable);
		}
		MemoryContextSwitchTo(cxt);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	ExecClearTuple(rt->readslot);
}

/* upsert_one_group, then each watch is told (as the worker, not the owner) */
static void
upsert_and_tell(AggRuntime *rt, SPIPlanPtr plan, bool with_thresholds,
				TupleHashEntry entry, Datum *values, char *nulls)
{
	GroupEdges	edges = {0};
	ListCell   *lc;
	int			t = 0;

	upsert_one_group(rt, plan, with_thresholds, entry, values, nulls, &edges);
	if (!with_thresholds)
		return;
	foreach(lc, rt->watches)
	{
		AggWatch   *w = lfirst(lc);

		w->edge(w, edges.grp, edges.payloads[t] ? edges.payloads[t] : "null",
				edges.holds[t]);
		t++;
	}
}

/* every group of the table, upserted (upsert_and_tell) */
static void
upsert_table(AggRuntime *rt, SPIPlanPtr plan, bool with_thresholds, Datum *values,
			 char *nulls, MemoryContext tmp)
{
	TupleHashIterator iter;
	TupleHashEntry entry;

	InitTupleHashIterator(rt->groups, &iter);
	while ((entry = ScanTupleHashTable(rt->groups, &iter)) != NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(tmp);

		upsert_and_tell(rt, plan, with_thresholds, entry, values, nulls);
		MemoryContextSwitchTo(old);
		MemoryContextReset(tmp);
	}
	TermTupleHashIterator(&iter);
}

/*
 * A spilled group combined into the table: its serialised states
 * deserialised and combined into the group's (made if new), as the
 * owner (the functions may be the owner's).
 */
static void
merge_spilled(AggRuntime *rt, TupleTableSlot *spilled)
{
	OwnerScope	scope = {0};
	MemoryContext cxt = CurrentMemoryContext;

	slot_getallattrs(spilled);
	owner_enter(&scope, rt->def.owner, rt->def.search_path);
	PG_TRY();
	{
		bool		isnew;
		AggTransValue *tv = aggregate_group(rt, spilled->tts_values, spilled->tts_isnull,
											&isnew);

		for (int a = 0; a < rt->naggs; a++)
		{
			AggTransValue other;

			/*
			 * the other state in the caller's per-row memory: a combine
			 * function copies what it keeps into the group's (as nodeAgg.c
			 * expects of it), so rows do not pile up in the batch
			 */
			aggfunc_deserialize(rt->aggs[a].info, spilled->tts_values[rt->nkeys + a],
								spilled->tts_isnull[rt->nkeys + a], &other, cxt);
			aggfunc_combine(rt->aggs[a].info, &tv[a], &other, rt->batchcxt);
		}
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
}

/*
 * A batch that spilled, when every key type has a sort order: the groups
 * in memory spilled too, the file is sorted by key (then by the order it
 * was written, so a group's states combine in event order) and combined
 * back group after group; the table is upserted and emptied whenever it
 * passes the memory bound (with 1000 groups at least), and a group that
 * was flushed does not come back: each is upserted once (twice at most
 * when a flush falls inside it), however many times it spilled.  False
 * (nothing done) when a key type cannot be sorted.
 */
static bool
merge_sorted(AggRuntime *rt, SPIPlanPtr plan, bool with_thresholds, Datum *values,
			 char *nulls, MemoryContext tmp)
{
	int			n = rt->nkeys + rt->naggs;
	AttrNumber *attnums = palloc((rt->nkeys + 1) * sizeof(AttrNumber));
	Oid		   *sortops = palloc((rt->nkeys + 1) * sizeof(Oid));
	Oid		   *colls = palloc((rt->nkeys + 1) * sizeof(Oid));
	bool	   *nullsfirst = palloc0((rt->nkeys + 1) * sizeof(bool));
	TupleDesc	sortdesc;
	Tuplesortstate *ts;
	TupleTableSlot *slot;
	TupleTableSlot *vslot;
	TupleTableSlot *sslot;
	int64		seq = 0;

	for (int k = 0; k < rt->nkeys; k++)
	{
		sortops[k] = lookup_type_cache(rt->keytypes[k], TYPECACHE_LT_OPR)->lt_opr;
		if (!OidIsValid(sortops[k]))
			return false;
		attnums[k] = k + 1;
		colls[k] = rt->collations[k];
	}
	attnums[rt->nkeys] = n + 1;
	sortops[rt->nkeys] = Int8LessOperator;
	colls[rt->nkeys] = InvalidOid;

	sortdesc = CreateTemplateTupleDesc(n + 1);
	for (int i = 0; i < n; i++)
		TupleDescCopyEntry(sortdesc, i + 1, rt->spilldesc, i + 1);
	TupleDescInitBuiltinEntry(sortdesc, n + 1, "seq", INT8OID, -1, 0);

	aggregate_spill(rt);
	ts = tuplesort_begin_heap(sortdesc, rt->nkeys + 1, attnums, sortops, colls, nullsfirst,
							  work_mem, NULL, TUPLESORT_NONE);
	slot = MakeSingleTupleTableSlot(rt->spilldesc, &TTSOpsMinimalTuple);
	vslot = MakeSingleTupleTableSlot(sortdesc, &TTSOpsVirtual);
	tuplestore_rescan(rt->spill);
	while (tuplestore_gettupleslot(rt->spill, true, false, slot))
	{
		slot_getallattrs(slot);
		ExecClearTuple(vslot);
		memcpy(vslot->tts_values, slot->tts_values, n * sizeof(Datum));
		memcpy(vslot->tts_isnull, slot->tts_isnull, n * sizeof(bool));
		vslot->tts_values[n] = Int64GetDatum(seq++);
		vslot->tts_isnull[n] = false;
		ExecStoreVirtualTuple(vslot);
		tuplesort_puttupleslot(ts, vslot);
		CHECK_FOR_INTERRUPTS();
	}
	tuplesort_performsort(ts);
	sslot = MakeSingleTupleTableSlot(sortdesc, &TTSOpsMinimalTuple);
	while (tuplesort_gettupleslot(ts, true, false, sslot, NULL))
	{
		MemoryContext old;

		if (rt->ngroups >= 1000 && consumer_over_memory())
		{
			upsert_table(rt, plan, with_thresholds, values, nulls, tmp);
			aggregate_forget_groups(rt);
		}
		old = MemoryContextSwitchTo(tmp);
		merge_spilled(rt, sslot);
		MemoryContextSwitchTo(old);
		MemoryContextReset(tmp);
		CHECK_FOR_INTERRUPTS();
	}
	tuplesort_end(ts);
	ExecDropSingleTupleTableSlot(sslot);
	ExecDropSingleTupleTableSlot(vslot);
	ExecDropSingleTupleTableSlot(slot);
	return true;
}

/*
 * Prepares an aggregate's upsert as its owner, in the search_path it will
 * run in.
 */
static SPIPlanPtr
prepare_upsert_as_owner(AggRuntime *rt, bool with_thresholds)
{
	OwnerScope	scope = {0};
	volatile SPIPlanPtr plan = NULL;
	MemoryContext old = MemoryContextSwitchTo(consumer_defs_context());

	owner_enter(&scope, rt->def.owner, upsert_search_path(rt, with_thresholds));
	PG_TRY();
	{
		plan = prepare_upsert(rt, with_thresholds);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	return plan;
}

/*
 * Writes every group of the batch into the state table, each as the owner
 * (upsert_one_group); a threshold's edge and firing are written as the
 * worker, outside the owner's scope.  The caller tags the transaction's
 * writes with the private origin.
 */
void
aggregate_upsert_groups(AggRuntime *rt)
{
	int			n = rt->nkeys + rt->naggs;
	Datum	   *values;
	char	   *nulls;
	MemoryContext tmp,
				old;
	bool		with_thresholds;
	SPIPlanPtr	plan;

	if (rt->ngroups == 0 && rt->spill == NULL)
		return;
	/* thresholds are evaluated on changes, not on a backfill */
	with_thresholds = (rt->watches != NIL && !rt->def.backfill);
	plan = with_thresholds ? rt->upsert : rt->upsert_plain;
	if (plan == NULL)
	{
		plan = prepare_upsert_as_owner(rt, with_thresholds);
		if (with_thresholds)
			rt->upsert = plan;
		else
			rt->upsert_plain = plan;
	}
	tmp = AllocSetContextCreate(CurrentMemoryContext, "stream_events upsert",
								ALLOCSET_DEFAULT_SIZES);
	values = palloc(n * sizeof(Datum));
	nulls = palloc(n * sizeof(char));
	/*
	 * A batch that spilled: the groups in memory go to the file too (after
	 * the older ones), then the file is combined back into the emptied
	 * table in order and upserted whenever the table passes the memory
	 * bound.  A group is so upserted once per table-full, not once per
	 * spill: every upsert of a row this transaction wrote already costs
	 * PostgreSQL a combo command id until the transaction ends.
	 */
	if (rt->spill && merge_sorted(rt, plan, with_thresholds, values, nulls, tmp))
	{
		/* every group upserted (merge_sorted) */
	}
	else if (rt->spill)
	{
		TupleTableSlot *slot = MakeSingleTupleTableSlot(rt->spilldesc, &TTSOpsMinimalTuple);
		int64		flushed = 0;

		aggregate_spill(rt);
		tuplestore_rescan(rt->spill);
		/* (a tuple read back from the file belongs to the slot, not to tmp) */
		while (tuplestore_gettupleslot(rt->spill, true, false, slot))
		{
			old = MemoryContextSwitchTo(tmp);
			merge_spilled(rt, slot);
			MemoryContextSwitchTo(old);
			MemoryContextReset(tmp);
			/*
			 * Past the bound, with at least half as many groups as the last
			 * time: what stays allocated (the buckets, other definitions'
			 * batches) must not make every row a table-full.
			 */
			if (consumer_over_memory() && rt->ngroups >= Max(flushed / 2, 1000))
			{
				flushed = rt->ngroups;
				upsert_table(rt, plan, with_thresholds, values, nulls, tmp);
				aggregate_forget_groups(rt);
			}
			CHECK_FOR_INTERRUPTS();
		}
		ExecDropSingleTupleTableSlot(slot);
	}
	upsert_table(rt, plan, with_thresholds, values, nulls, tmp);
	MemoryContextDelete(tmp);
}

/*
 * The groups of the batch go to a temporary file, serialised as they
 * would be upserted, and the batch's memory is freed: a large transaction
 * is folded within stream_events.consumer_memory.  The file is applied
 * before the groups in memory (aggregate_upsert_groups), in the same
 * apply transaction: the same group may be upserted more than once there,
 * each time combined with what is stored.  In the decoding transaction,
 * as the owner.
 */
void
aggregate_spill(AggRuntime *rt)
{
	TupleHashIterator iter;
	TupleHashEntry entry;
	int			n = rt->nkeys + rt->naggs;
	OwnerScope	scope = {0};
	MemoryContext old;
	Datum	   *values;
	bool	   *isnull;
	MemoryContext tmp;

	if (rt->ngroups == 0)
		return;
	if (rt->spill == NULL)
	{
		/* across transactions: folded while decoding, applied after */
		old = MemoryContextSwitchTo(rt->spillcxt);
		rt->spill = tuplestore_begin_heap(false, true, 1024);
		MemoryContextSwitchTo(old);
	}
	tmp = AllocSetContextCreate(CurrentMemoryContext, "stream_events spill",
								ALLOCSET_DEFAULT_SIZES);
	values = palloc(n * sizeof(Datum));
	isnull = palloc(n * sizeof(bool));
	owner_enter(&scope, rt->def.owner, rt->def.search_path);
	PG_TRY();
	{
		InitTupleHashIterator(rt->groups, &iter);
		while ((entry = ScanTupleHashTable(rt->groups, &iter)) != NULL)
		{
			old = MemoryContextSwitchTo(tmp);
			group_values(rt, entry, values, isnull);
			tuplestore_putvalues(rt->spill, rt->spilldesc, values, isnull);
			ExecClearTuple(rt->readslot);
			MemoryContextSwitchTo(old);
			MemoryContextReset(tmp);
		}
		TermTupleHashIterator(&iter);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	MemoryContextDelete(tmp);
	pfree(values);
	pfree(isnull);
	rt->nspilled += rt->ngroups;
	aggregate_forget_groups(rt);
}

/* the prepared upserts (the definitions are freed, or the watches changed) */
void
aggregate_free_plans(AggRuntime *rt)
{
	if (rt->upsert)
		SPI_freeplan(rt->upsert);
	if (rt->upsert_plain)
		SPI_freeplan(rt->upsert_plain);
	rt->upsert = NULL;
	rt->upsert_plain = NULL;
}

/* the watches changed: the upsert that evaluates them is prepared again */
void
aggregate_forget_plan(AggRuntime *rt)
{
	if (rt->upsert)
		SPI_freeplan(rt->upsert);
	rt->upsert = NULL;
}
