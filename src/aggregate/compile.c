/*-------------------------------------------------------------------------
 * compile.c
 *	  A continuous aggregate compiled for the worker: its stored query tree
 *	  (analysed as its owner when it was created) planned and initialised,
 *	  expression by expression (WHERE, hopping window, keys, FILTERs,
 *	  arguments), in an executor state of its own, with the group hash
 *	  table and the aggregate functions' partial-state calls.  All of it
 *	  as the owner (owner.h): expression_planner runs immutable functions,
 *	  ExecInitExpr checks EXECUTE.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_agg.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/typcache.h"

#include "aggregate/runtime.h"
#include "core/owner.h"

typedef struct HopParamContext
{
	Index		hop_rti;
} HopParamContext;

/* the hopping window's column becomes PARAM_EXEC 0, set per window */
static Node *
hop_var_mutator(Node *node, HopParamContext *ctx)
{
	if (node == NULL)
		return NULL;
	if (IsA(node, Var) && ((Var *) node)->varno == ctx->hop_rti &&
		((Var *) node)->varlevelsup == 0)
	{
		Param	   *p = makeNode(Param);

		p->paramkind = PARAM_EXEC;
		p->paramid = 0;
		p->paramtype = TIMESTAMPTZOID;
		p->paramtypmod = -1;
		p->paramcollid = InvalidOid;
		p->location = -1;
		return (Node *) p;
	}
	return expression_tree_mutator(node, hop_var_mutator, (void *) ctx);
}

/*
 * Plans one expression of the defining query and initialises it in the
 * aggregate's executor state, as ExecPrepareExpr does (the hopping
 * window's column first becomes a parameter).  In the owner's scope:
 * expression_planner runs immutable functions with constant arguments,
 * ExecInitExpr checks EXECUTE.
 */
static ExprState *
prepare_expr(AggRuntime *rt, Expr *expr, AggShape *shape)
{
	HopParamContext ctx = {shape->hop_rti};
	MemoryContext old = MemoryContextSwitchTo(rt->estate->es_query_cxt);
	ExprState  *state;

	if (shape->hop_rti != 0)
		expr = (Expr *) hop_var_mutator((Node *) expr, &ctx);
	state = ExecInitExpr(expression_planner(expr), NULL);
	MemoryContextSwitchTo(old);
	return state;
}

static ExprState *
prepare_qual(AggRuntime *rt, Expr *expr, AggShape *shape)
{
	HopParamContext ctx = {shape->hop_rti};
	MemoryContext old = MemoryContextSwitchTo(rt->estate->es_query_cxt);
	ExprState  *state;

	if (shape->hop_rti != 0)
		expr = (Expr *) hop_var_mutator((Node *) expr, &ctx);
	state = ExecInitQual(make_ands_implicit(expression_planner(expr)), NULL);
	MemoryContextSwitchTo(old);
	return state;
}

/* compile_definition's work, in the owner's scope */
static void
compile_shape(AggRuntime *rt, Query *query)
{
	AggShape   *shape;
	ListCell   *lc;
	int			k = 0,
				a = 0;
	AttrNumber *keycols;
	Oid		   *eqops;
	Oid		   *eqfuncs;
	FmgrInfo   *hashfuncs;
	Oid		   *collations;

	shape = aggregate_shape(query, rt->def.owner);
	if (shape->stream != rt->def.stream)
		elog(ERROR, "aggregate %s: stream changed", rt->def.name);

	rt->nkeys = shape->nkeys;
	rt->naggs = shape->naggs;
	rt->keys = palloc0(rt->nkeys * sizeof(ExprState *));
	rt->keynames = palloc0(rt->nkeys * sizeof(char *));
	rt->keytypes = palloc0(rt->nkeys * sizeof(Oid));
	rt->aggs = palloc0(rt->naggs * sizeof(AggCall));
	rt->keydesc = CreateTemplateTupleDesc(rt->nkeys);
	keycols = palloc(rt->nkeys * sizeof(AttrNumber));
	eqops = palloc(rt->nkeys * sizeof(Oid));
	collations = palloc(rt->nkeys * sizeof(Oid));

	/* as for index expressions (FormIndexDatum): an EState of its own */
	rt->estate = CreateExecutorState();
	rt->estate->es_param_exec_vals = palloc0(sizeof(ParamExecData));
	rt->econtext = CreateExprContext(rt->estate);

	foreach(lc, shape->columns)
	{
		AggShapeColumn *col = lfirst(lc);

		if (col->is_key)
		{
			rt->keys[k] = prepare_expr(rt, col->expr, shape);
			rt->keynames[k] = col->name;
			rt->keytypes[k] = col->type;
			TupleDescInitEntry(rt->keydesc, k + 1, col->name, col->type, col->typmod, 0);
			TupleDescInitEntryCollation(rt->keydesc, k + 1, col->collation);
			keycols[k] = k + 1;
			eqops[k] = lookup_type_cache(col->type, TYPECACHE_EQ_OPR)->eq_opr;
			collations[k] = col->collation;
			k++;
		}
		else
		{
			Aggref	   *aggref = (Aggref *) col->expr;
			AggCall    *call = &rt->aggs[a++];
			Oid			inputTypes[FUNC_MAX_ARGS];
			int			nargs = get_aggregate_argtypes(aggref, inputTypes);
			ListCell   *lc2;
			int			i = 0;

			call->info = aggfunc_create(aggref->aggfnoid, inputTypes, nargs,
										aggref->inputcollid, true, consumer_defs_context());
			call->nargs = nargs;
			rt->total_args += nargs;
			call->args = palloc0(Max(nargs, 1) * sizeof(ExprState *));
			foreach(lc2, aggref->args)
			{
				TargetEntry *tle = lfirst_node(TargetEntry, lc2);

				call->args[i++] = prepare_expr(rt, tle->expr, shape);
			}
			if (aggref->aggfilter)
				call->filter = prepare_qual(rt, aggref->aggfilter, shape);
			call->colname = col->name;
			call->statetype = col->statetype;
		}
	}
	if (shape->where)
		rt->where = prepare_qual(rt, (Expr *) shape->where, shape);
	if (shape->hop)
	{
		FuncExpr   *hop = (FuncExpr *) expression_planner((Expr *) shape->hop);
		MemoryContext old;

		if (!IsA(hop, FuncExpr) || list_length(hop->args) != 4)
			elog(ERROR, "unexpected hopping window expression");
		rt->has_hop = true;
		old = MemoryContextSwitchTo(rt->estate->es_query_cxt);
		for (int i = 0; i < 4; i++)
			rt->hop_args[i] = ExecInitExpr(list_nth(hop->args, i), NULL);
		MemoryContextSwitchTo(old);
	}

	rt->keyslot = MakeSingleTupleTableSlot(rt->keydesc, &TTSOpsVirtual);
	rt->readslot = MakeSingleTupleTableSlot(rt->keydesc, &TTSOpsMinimalTuple);
	/* what a spilled group is: its key and its serialised states */
	rt->spilldesc = CreateTemplateTupleDesc(rt->nkeys + rt->naggs);
	for (int i = 0; i < rt->nkeys; i++)
		TupleDescCopyEntry(rt->spilldesc, i + 1, rt->keydesc, i + 1);
	for (int i = 0; i < rt->naggs; i++)
		TupleDescInitEntry(rt->spilldesc, rt->nkeys + i + 1, NULL, rt->aggs[i].statetype, -1, 0);
	execTuplesHashPrepare(rt->nkeys, eqops, &eqfuncs, &hashfuncs);
	rt->keycols = keycols;
	rt->eqfuncs = eqfuncs;
	rt->hashfuncs = hashfuncs;
	rt->collations = collations;
	rt->spillcxt = AllocSetContextCreate(consumer_defs_context(), "stream_events aggregate spill",
										 ALLOCSET_SMALL_SIZES);
	/* last: the batch's memory is not the definitions' (aggregate_release) */
	rt->batchcxt = AllocSetContextCreate(consumer_batch_context(), "stream_events aggregate batch",
										 ALLOCSET_DEFAULT_SIZES);
	rt->hashcxt = AllocSetContextCreate(consumer_batch_context(), "stream_events aggregate groups",
										ALLOCSET_DEFAULT_SIZES);
	aggregate_build_groups(rt);
}

/*
 * Builds the runtime of one catalog row; in a transaction, in consumer_defs_context().
 * Analysed, planned and initialised as the owner (owner.h).
 */
AggRuntime *
aggregate_compile(int32 agg_id, Oid view, Oid state_rel, Oid stream, Oid owner,
				   const char *tree, const char *search_path, bool backfill,
				   XLogRecPtr applied_lsn)
{
	AggRuntime *rt = palloc0(sizeof(AggRuntime));
	Query	   *query = (Query *) stringToNode(tree);
	OwnerScope	scope = {0};

	rt->def.id = agg_id;
	rt->def.name = get_rel_name(view);
	rt->view = view;
	rt->state_rel = state_rel;
	rt->def.stream = stream;
	rt->def.owner = owner;
	rt->def.search_path = search_path ? pstrdup(search_path) : NULL;
	rt->def.backfill = backfill;
	rt->def.applied_lsn = applied_lsn;

	owner_enter(&scope, owner, search_path);
	PG_TRY();
	{
		compile_shape(rt, query);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	return rt;
}
