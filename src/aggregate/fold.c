/*-------------------------------------------------------------------------
 * fold.c
 *	  One event folded into a continuous aggregate's groups in memory: its
 *	  expressions evaluated first (WHERE, windows, keys, FILTERs,
 *	  arguments: the errors an event can cause), then the groups looked up
 *	  and the transition functions called, so that an event that fails
 *	  leaves no trace and can be skipped (on_error => 'skip').  The caller
 *	  (the consumer) is in the owner's scope with an active snapshot.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/executor.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "aggregate/runtime.h"

/* ---------- folding one event ---------- */

/*
 * The states of the group with these keys, made (initial states) when it
 * is new; the keys are copied into the table.
 */
AggTransValue *
aggregate_group(AggRuntime *rt, Datum *keys, bool *nulls, bool *isnew)
{
	TupleHashEntry entry;

	ExecClearTuple(rt->keyslot);
	for (int k = 0; k < rt->nkeys; k++)
	{
		rt->keyslot->tts_values[k] = keys[k];
		rt->keyslot->tts_isnull[k] = nulls[k];
	}
	ExecStoreVirtualTuple(rt->keyslot);
	entry = LookupTupleHashEntry(rt->groups, rt->keyslot, isnew, NULL);
	if (*isnew)
	{
		AggTransValue *tv = MemoryContextAlloc(rt->batchcxt,
											   Max(rt->naggs, 1) * sizeof(AggTransValue));

		for (int a = 0; a < rt->naggs; a++)
			aggfunc_init_trans(rt->aggs[a].info, &tv[a], rt->batchcxt);
		entry->additional = tv;
		rt->ngroups++;
	}
	return (AggTransValue *) entry->additional;
}

/*
 * Folds one event; returns the number of groups it made.  The expressions'
 * evaluation is marked for the consumer (consumer_evaluating): an error
 * there may be the event's own.
 */
int
aggregate_fold(AggRuntime *rt, TupleTableSlot *row)
{
	ExprContext *econtext = rt->econtext;
	TimestampTz starts[HOP_MAX_WINDOWS];
	int			nwindows = 1;
	MemoryContext old;
	Datum	   *keyv = NULL;
	bool	   *keyn = NULL;
	bool	   *pass = NULL;
	Datum	   *argv = NULL;
	bool	   *argn = NULL;
	int			nk = Max(rt->nkeys, 1);
	int			na = Max(rt->naggs, 1);
	int			nt = Max(rt->total_args, 1);
	int			newgroups = 0;

	ResetExprContext(econtext);
	econtext->ecxt_scantuple = row;
	old = MemoryContextSwitchTo(econtext->ecxt_per_tuple_memory);
	consumer_evaluating(true);

	if (rt->where && !ExecQual(rt->where, econtext))
		nwindows = 0;
	else if (rt->has_hop)
	{
		Datum		v[4];
		bool		isnull;

		for (int i = 0; i < 4 && nwindows > 0; i++)
		{
			v[i] = ExecEvalExpr(rt->hop_args[i], econtext, &isnull);
			if (isnull)
				nwindows = 0;	/* a strict set-returning function: no rows */
		}
		if (nwindows > 0)
			nwindows = hop_windows(DatumGetTimestampTz(v[0]), DatumGetIntervalP(v[1]),
								   DatumGetIntervalP(v[2]), DatumGetTimestampTz(v[3]),
								   starts, HOP_MAX_WINDOWS);
	}
	if (nwindows > 0)
	{
		keyv = palloc(nwindows * nk * sizeof(Datum));
		keyn = palloc(nwindows * nk * sizeof(bool));
		pass = palloc(nwindows * na * sizeof(bool));
		argv = palloc(nwindows * nt * sizeof(Datum));
		argn = palloc(nwindows * nt * sizeof(bool));
	}
	for (int w = 0; w < nwindows; w++)
	{
		int			ai = w * nt;

		if (rt->has_hop)
		{
			econtext->ecxt_param_exec_vals[0].value = TimestampTzGetDatum(starts[w]);
			econtext->ecxt_param_exec_vals[0].isnull = false;
			econtext->ecxt_param_exec_vals[0].execPlan = NULL;
		}
		for (int k = 0; k < rt->nkeys; k++)
			keyv[w * nk + k] = ExecEvalExpr(rt->keys[k], econtext, &keyn[w * nk + k]);
		for (int a = 0; a < rt->naggs; a++)
		{
			AggCall    *call = &rt->aggs[a];
			bool		p = !call->filter || ExecQual(call->filter, econtext);

			pass[w * na + a] = p;
			for (int i = 0; i < call->nargs; i++, ai++)
			{
				if (p)
					argv[ai] = ExecEvalExpr(call->args[i], econtext, &argn[ai]);
				else
					argn[ai] = true;
			}
		}
	}
	consumer_evaluating(false);

	for (int w = 0; w < nwindows; w++)
	{
		bool		isnew;
		AggTransValue *tv;
		int			ai = w * nt;

		tv = aggregate_group(rt, &keyv[w * nk], &keyn[w * nk], &isnew);
		if (isnew)
			newgroups++;
		for (int a = 0; a < rt->naggs; a++)
		{
			AggCall    *call = &rt->aggs[a];
			FunctionCallInfo fcinfo = call->info->transfcinfo;

			if (!pass[w * na + a])
			{
				ai += call->nargs;
				continue;
			}
			for (int i = 0; i < call->nargs; i++, ai++)
			{
				fcinfo->args[i + 1].value = argv[ai];
				fcinfo->args[i + 1].isnull = argn[ai];
			}
			aggfunc_advance(call->info, &tv[a], rt->batchcxt);
		}
	}
	if (nwindows > 0)
		rt->events++;
	MemoryContextSwitchTo(old);
	return newgroups;
}

/*
 * The group hash table (in a transaction: it looks up its functions).  Its
 * buckets are in hashcxt, the groups in batchcxt, both counted in the
 * consumer's memory; the buckets stay as large as the largest batch.
 */
void
aggregate_build_groups(AggRuntime *rt)
{
	rt->groups = BuildTupleHashTableExt(NULL, rt->keydesc, rt->nkeys, rt->keycols,
										rt->eqfuncs, rt->hashfuncs, rt->collations, 1024, 0,
										rt->hashcxt, rt->batchcxt,
										rt->econtext->ecxt_per_tuple_memory, false);
}

/* the groups in memory are gone (applied, or spilled) */
void
aggregate_forget_groups(AggRuntime *rt)
{
	ResetTupleHashTable(rt->groups);
	MemoryContextReset(rt->batchcxt);
	rt->ngroups = 0;
}

/* after an apply: the batch is empty again */
void
aggregate_reset_batch(AggRuntime *rt)
{
	aggregate_forget_groups(rt);
	if (rt->spill)
	{
		tuplestore_end(rt->spill);
		rt->spill = NULL;
	}
	rt->nspilled = 0;
	rt->events = 0;
	rt->def.ndead = 0;
}

/* the definitions are freed: the batch's memory and files too */
void
aggregate_release(AggRuntime *rt)
{
	if (rt->spill)
		tuplestore_end(rt->spill);
	rt->spill = NULL;
	if (rt->batchcxt)
		MemoryContextDelete(rt->batchcxt);
	rt->batchcxt = NULL;
	if (rt->hashcxt)
		MemoryContextDelete(rt->hashcxt);
	rt->hashcxt = NULL;
}
