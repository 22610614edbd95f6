/*-------------------------------------------------------------------------
 * definition.c
 *	  The defining query of a continuous aggregate: parsed and analysed
 *	  with PostgreSQL's own parser, then checked node by node for what can
 *	  be maintained incrementally (one stream, optional hopping window,
 *	  immutable group keys, aggregates with combine functions), and
 *	  described as an AggShape, the one description both
 *	  stream.create_aggregate (state table and view) and the worker
 *	  (evaluation of each decoded row) build on; stream._aggregate_analyze
 *	  hands it to stream.create_aggregate (sql/modules/60_aggregates.sql).
 *	  What surrounds a definition (prerequisites, dependency, waking the
 *	  worker, dump and restore) is lifecycle.c's.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_aggregate.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/clauses.h"
#include "optimizer/optimizer.h"
#include "parser/analyze.h"
#include "parser/parse_agg.h"
#include "parser/parse_func.h"
#include "parser/parser.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "aggregate/aggregate.h"
#include "core/definition.h"
#include "core/owner.h"

PG_FUNCTION_INFO_V1(stream_aggregate_analyze);

#define REFUSE(msg, detail, hint) \
	ereport(ERROR, \
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED), \
			 errmsg("%s", msg), \
			 (detail) ? errdetail("%s", (const char *) (detail)) : 0, \
			 errhint("%s", hint)))

Query *
aggregate_parse_query(const char *sql)
{
	List	   *raws = raw_parser(sql, RAW_PARSE_DEFAULT);
	RawStmt    *raw;

	if (list_length(raws) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the defining query must be exactly one SELECT statement"),
				 errdetail("The text holds %d statements.", list_length(raws)),
				 errhint("Pass one SELECT ... FROM <stream> GROUP BY ... without a trailing second statement.")));
	raw = linitial_node(RawStmt, raws);
	if (!IsA(raw->stmt, SelectStmt))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the defining query must be a SELECT statement"),
				 errhint("Pass SELECT <group keys>, <aggregates> FROM <stream> [WHERE ...] GROUP BY ...")));
	return parse_analyze_fixedparams(raw, sql, NULL, 0, NULL);
}

Oid
aggregate_hop_oid(void)
{
	Oid			argtypes[4] = {TIMESTAMPTZOID, INTERVALOID, INTERVALOID, TIMESTAMPTZOID};

	return LookupFuncName(list_make2(makeString("stream"), makeString("hop")),
						  4, argtypes, true);
}

/*
 * Constant widths and slides of stream.tumble/stream.hop are checked when
 * the aggregate is created (a width of '1 month' would otherwise be
 * accepted and then fail in the worker on the first event).
 */
typedef struct WindowConsts
{
	Oid			tumble;
	Oid			hop;
} WindowConsts;

static bool
window_consts_walker(Node *node, WindowConsts *w)
{
	if (node == NULL)
		return false;
	if (IsA(node, FuncExpr) &&
		(((FuncExpr *) node)->funcid == w->tumble || ((FuncExpr *) node)->funcid == w->hop))
	{
		FuncExpr   *f = (FuncExpr *) node;
		int			i = 0;
		ListCell   *lc;

		foreach(lc, f->args)
		{
			Node	   *arg = lfirst(lc);

			if ((i == 1 || (i == 2 && f->funcid == w->hop)) &&
				IsA(arg, Const) && !((Const *) arg)->constisnull)
				window_check_interval(DatumGetIntervalP(((Const *) arg)->constvalue),
									  i == 1 ? "width" : "slide");
			i++;
		}
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, window_consts_walker, (void *) w, 0);
	return expression_tree_walker(node, window_consts_walker, (void *) w);
}

static Query *
checked_query(Query *query)
{
	Oid			argtypes[3] = {TIMESTAMPTZOID, INTERVALOID, TIMESTAMPTZOID};
	WindowConsts w;

	w.tumble = LookupFuncName(list_make2(makeString("stream"), makeString("tumble")),
							  3, argtypes, true);
	w.hop = aggregate_hop_oid();
	(void) query_tree_walker(query, window_consts_walker, (void *) &w, 0);
	return query;
}

/*
 * Whether relid is a stream: read as the extension's owner, since the
 * catalog shows a role only the streams it may read, and one it may not
 * read deserves "permission denied" (aggregate_shape), not "not a stream".
 */
static bool
relation_is_stream(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(relid)};
	volatile bool found = false;
	OwnerScope	scope = {0};

	SPI_connect();
	owner_enter(&scope, owner_of_extension(), NULL);
	PG_TRY();
	{
		if (SPI_execute_with_args("SELECT 1 FROM stream.streams "
								  "WHERE relid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
								  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read stream.streams");
		found = SPI_processed > 0;
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	SPI_finish();
	return found;
}

/* the first function that is not immutable */
static bool
mutable_checker(Oid func_id, void *context)
{
	if (func_volatile(func_id) != PROVOLATILE_IMMUTABLE)
	{
		*(Oid *) context = func_id;
		return true;
	}
	return false;
}

typedef struct ShapeWalk
{
	Index		stream_rti;
	Index		hop_rti;
	Oid			mutable_func;
	const char *problem;
} ShapeWalk;

/* Vars must be user columns of the stream or the hop window; no mutable calls. */
static bool
shape_walker(Node *node, ShapeWalk *w)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var))
	{
		Var		   *var = (Var *) node;

		if (var->varlevelsup != 0)
			w->problem = "outer reference";
		else if (var->varno == w->stream_rti && var->varattno <= 0)
			w->problem = var->varattno == 0 ? "whole-row reference" : "system column";
		else if (var->varno != w->stream_rti &&
				 !(w->hop_rti != 0 && var->varno == w->hop_rti && var->varattno == 1))
			w->problem = "reference to another relation";
		return w->problem != NULL;
	}
	if (check_functions_in_node(node, mutable_checker, &w->mutable_func))
		return true;
	if (IsA(node, NextValueExpr) || IsA(node, Param))
	{
		w->problem = IsA(node, Param) ? "parameter" : "sequence";
		return true;
	}
	return expression_tree_walker(node, shape_walker, (void *) w);
}

static void
check_expression(Node *node, ShapeWalk *w, const char *where)
{
	w->problem = NULL;
	w->mutable_func = InvalidOid;
	if (!shape_walker(node, w))
		return;
	if (OidIsValid(w->mutable_func))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("function %s in the %s is not immutable",
						format_procedure(w->mutable_func), where),
				 errdetail("The worker evaluates the defining query once per event, at a later time and in another session; only immutable expressions give the same result there."),
				 errhint("Use immutable expressions of the event (e.g. stream.tumble(occurred_at, '1 day') rather than occurred_at::date, which depends on TimeZone).")));
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("the %s holds a %s", where, w->problem),
			 errhint("Refer only to the columns of the stream and to the hopping window.")));
}

static void
check_key_type(Oid type, const char *name)
{
	TypeCacheEntry *tce = lookup_type_cache(type, TYPECACHE_EQ_OPR | TYPECACHE_HASH_PROC);

	if (!OidIsValid(tce->eq_opr) || !OidIsValid(tce->hash_proc) ||
		!OidIsValid(GetDefaultOpClass(type, BTREE_AM_OID)))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("group key \"%s\" has type %s, which cannot be hashed and indexed",
						name, format_type_be(type)),
				 errhint("Group by an expression of a type with equality, hashing and a btree operator class, e.g. cast json to jsonb or text.")));
}

static void
check_aggref(Aggref *aggref)
{
	HeapTuple	tup;
	Form_pg_aggregate aggform;
	Oid			inputTypes[FUNC_MAX_ARGS];
	int			nargs;
	Oid			transtype;
	char	   *fname = format_procedure(aggref->aggfnoid);

	if (aggref->aggdistinct != NIL)
		REFUSE(psprintf("DISTINCT aggregate %s cannot be maintained incrementally", fname),
			   "Counting distinct values needs every value seen so far, not a partial state.",
			   "Use stream.approx_count_distinct (HyperLogLog, hll) once available, or count(DISTINCT ...) over the stream itself.");
	if (aggref->aggkind != AGGKIND_NORMAL)
		REFUSE(psprintf("ordered-set aggregate %s cannot be maintained incrementally", fname),
			   "Percentiles and modes need every value, not a partial state.",
			   "Use an approximate sketch (tdigest) once available, or query the stream itself.");
	if (aggref->aggorder != NIL)
		REFUSE(psprintf("ORDER BY inside aggregate %s is not supported", fname),
			   NULL,
			   "Drop the ORDER BY inside the aggregate call; partial states are combined in no particular order.");
	tup = SearchSysCache1(AGGFNOID, ObjectIdGetDatum(aggref->aggfnoid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for aggregate %u", aggref->aggfnoid);
	aggform = (Form_pg_aggregate) GETSTRUCT(tup);
	if (!OidIsValid(aggform->aggcombinefn))
		REFUSE(psprintf("aggregate %s has no combine function", fname),
			   "A continuous aggregate keeps a partial state per group and combines it with each batch of new events.",
			   "Use an aggregate with a combine function (count, sum, avg, min, max, bool_and, bool_or, stddev, variance, ...).");
	nargs = get_aggregate_argtypes(aggref, inputTypes);
	{
		HeapTuple	ptup = SearchSysCache1(PROCOID, ObjectIdGetDatum(aggref->aggfnoid));
		Form_pg_proc proc = (Form_pg_proc) GETSTRUCT(ptup);

		for (int i = 0; i < proc->pronargs; i++)
			if (IsPolymorphicType(proc->proargtypes.values[i]))
				REFUSE(psprintf("aggregate %s has polymorphic arguments", fname),
					   NULL,
					   "Continuous aggregates support aggregates of concrete argument types; cast the argument, e.g. max(x::text).");
		ReleaseSysCache(ptup);
	}
	transtype = resolve_aggregate_transtype(aggref->aggfnoid, aggform->aggtranstype,
											inputTypes, nargs);
	if (transtype == INTERNALOID &&
		(!OidIsValid(aggform->aggserialfn) || !OidIsValid(aggform->aggdeserialfn)))
		REFUSE(psprintf("aggregate %s has an internal state that cannot be serialised", fname),
			   NULL,
			   "Use an aggregate with serialization functions.");
	ReleaseSysCache(tup);
}

/*
 * Checks a defining query and describes it.  owner must be allowed to read
 * the stream.  Errors say what is refused and why, with a HINT.
 */
AggShape *
aggregate_shape(Query *query, Oid owner)
{
	AggShape   *shape = palloc0(sizeof(AggShape));
	ShapeWalk	w = {0};
	ListCell   *lc;
	int			rti = 0;
	int			nstreams = 0;
	Oid			other_rel = InvalidOid;
	List	   *tlist;
	List	   *hidden = NIL;
	int			keyno = 0;

	if (query->commandType != CMD_SELECT || query->utilityStmt != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the defining query must be a SELECT statement"),
				 errhint("Pass SELECT <group keys>, <aggregates> FROM <stream> [WHERE ...] GROUP BY ...")));
	if (query->cteList != NIL)
		REFUSE("WITH is not supported in the defining query", NULL,
			   "Write the query over the stream directly.");
	if (query->setOperations != NULL)
		REFUSE("UNION, INTERSECT and EXCEPT are not supported in the defining query", NULL,
			   "Create one aggregate per stream and combine them in a view.");
	if (query->hasSubLinks)
		REFUSE("subqueries are not supported in the defining query", NULL,
			   "Use expressions of the event row only; join dimension data in a view over the aggregate.");
	if (query->hasWindowFuncs)
		REFUSE("window functions are not supported in the defining query", NULL,
			   "For event-time windows group by stream.tumble(...) or use CROSS JOIN LATERAL stream.hop(...).");
	if (query->hasTargetSRFs)
		REFUSE("set-returning functions in the select list are not supported", NULL,
			   "For hopping windows write FROM <stream> CROSS JOIN LATERAL stream.hop(occurred_at, width, slide) AS w(window_start).");
	if (query->rowMarks != NIL)
		REFUSE("FOR UPDATE/SHARE is not supported in the defining query", NULL,
			   "Remove the locking clause.");
	if (query->distinctClause != NIL)
		REFUSE("DISTINCT is not supported in the defining query", NULL,
			   "GROUP BY already makes the groups distinct; remove DISTINCT.");
	if (query->groupingSets != NIL)
		REFUSE("GROUPING SETS, ROLLUP and CUBE are not supported", NULL,
			   "Create one aggregate per grouping, or roll up in a view over the finest one.");
	if (query->havingQual != NULL)
		REFUSE("HAVING is not supported in the defining query", NULL,
			   "Filter groups when reading: SELECT * FROM <aggregate> WHERE <condition>.");
	if (query->limitCount != NULL || query->limitOffset != NULL)
		REFUSE("LIMIT and OFFSET are not supported in the defining query", NULL,
			   "Apply LIMIT when reading the aggregate's view.");
	if (query->sortClause != NIL)
		REFUSE("ORDER BY is not supported in the defining query", NULL,
			   "Order when reading the aggregate's view.");
	if (!query->hasAggs)
		REFUSE("the defining query has no aggregate function", NULL,
			   "Add an aggregate such as count(*) or sum(...).");
	if (query->groupClause == NIL)
		REFUSE("the defining query has no GROUP BY", NULL,
			   "Group by a window and/or keys, e.g. GROUP BY stream.tumble(occurred_at, '1 hour').");

	/* FROM: one stream, optionally CROSS JOIN LATERAL stream.hop(...) */
	foreach(lc, query->rtable)
	{
		RangeTblEntry *rte = lfirst_node(RangeTblEntry, lc);

		rti++;
		switch (rte->rtekind)
		{
			case RTE_RELATION:
				if (rte->relkind == RELKIND_PARTITIONED_TABLE && relation_is_stream(rte->relid))
				{
					nstreams++;
					if (nstreams > 1)
						REFUSE("a continuous aggregate reads exactly one stream",
							   psprintf("The query reads streams \"%s\" and \"%s\".",
										get_rel_name(shape->stream),
										get_rel_name(rte->relid)),
							   "Create one aggregate per stream and combine them in a view.");
					shape->stream = rte->relid;
					shape->stream_rti = rti;
					if (rte->tablesample)
						REFUSE("TABLESAMPLE is not supported in the defining query", NULL,
							   "Remove TABLESAMPLE.");
				}
				else if (!OidIsValid(other_rel))
					other_rel = rte->relid;
				break;
			case RTE_FUNCTION:
				{
					RangeTblFunction *rtf;
					FuncExpr   *fexpr;

					if (list_length(rte->functions) != 1 || rte->funcordinality)
						REFUSE("only stream.hop(...) may appear as a function in FROM", NULL,
							   "Write CROSS JOIN LATERAL stream.hop(occurred_at, width, slide) AS w(window_start).");
					rtf = linitial_node(RangeTblFunction, rte->functions);
					fexpr = (FuncExpr *) rtf->funcexpr;
					if (!IsA(fexpr, FuncExpr) || fexpr->funcid != aggregate_hop_oid())
						REFUSE(psprintf("function %s in FROM is not supported",
										IsA(fexpr, FuncExpr) ? format_procedure(fexpr->funcid) : "expression"),
							   NULL,
							   "Only stream.hop may appear in FROM: CROSS JOIN LATERAL stream.hop(occurred_at, width, slide) AS w(window_start).");
					if (shape->hop_rti != 0)
						REFUSE("only one stream.hop(...) may appear in FROM", NULL,
							   "Create one aggregate per hopping window.");
					shape->hop_rti = rti;
					shape->hop = fexpr;
				}
				break;
			case RTE_JOIN:
				if (rte->jointype != JOIN_INNER)
					REFUSE("outer joins are not supported in the defining query", NULL,
						   "Only FROM <stream> CROSS JOIN LATERAL stream.hop(...) is supported; enrich in a view over the aggregate.");
				break;
			case RTE_SUBQUERY:
				REFUSE("subqueries are not supported in the defining query", NULL,
					   "Write the query over the stream directly.");
				break;
			default:
				REFUSE("the FROM clause may hold only the stream and stream.hop(...)", NULL,
					   "Write FROM <stream> [CROSS JOIN LATERAL stream.hop(...) AS w(window_start)].");
		}
	}
	if (nstreams == 0)
	{
		if (OidIsValid(other_rel))
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("relation \"%s\" is not a stream", get_rel_name(other_rel)),
					 errdetail("Continuous aggregates are maintained from the changes of a stream."),
					 errhint("Create the table with stream.create_stream(...); see stream.stream_list.")));
		REFUSE("the defining query reads no stream", NULL,
			   "Write SELECT ... FROM <stream> GROUP BY ...");
	}
	if (OidIsValid(other_rel))
		REFUSE(psprintf("joins are not supported in the defining query (relation \"%s\")",
						get_rel_name(other_rel)),
			   NULL,
			   "Aggregate the stream alone and join dimension tables in a view over the aggregate.");
	/* joins: only cross joins (no ON condition) */
	{
		List	   *stack = list_copy(query->jointree->fromlist);

		while (stack != NIL)
		{
			Node	   *n = linitial(stack);

			stack = list_delete_first(stack);
			if (IsA(n, JoinExpr))
			{
				JoinExpr   *j = (JoinExpr *) n;

				if (j->quals != NULL || j->usingClause != NIL)
					REFUSE("joins with a condition are not supported in the defining query", NULL,
						   "Only FROM <stream> CROSS JOIN LATERAL stream.hop(...) is supported.");
				stack = lappend(stack, j->larg);
				stack = lappend(stack, j->rarg);
			}
			else if (IsA(n, FromExpr))
				stack = list_concat(stack, ((FromExpr *) n)->fromlist);
		}
	}

	definition_check_execute((Node *) query, owner);
	if (pg_class_aclcheck(shape->stream, owner, ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for stream %s", get_rel_name(shape->stream)),
				 errdetail("The worker reads the stream on behalf of the aggregate's owner, role %s.",
						   GetUserNameFromId(owner, false)),
				 errhint("Ask the stream's owner for GRANT SELECT ON %s TO %s.",
						 quote_identifier(get_rel_name(shape->stream)),
						 quote_identifier(GetUserNameFromId(owner, false)))));

	w.stream_rti = shape->stream_rti;
	w.hop_rti = shape->hop_rti;
	if (shape->hop)
	{
		shape->hop = (FuncExpr *) flatten_join_alias_vars(query, (Node *) shape->hop);
		w.hop_rti = 0;			/* hop arguments read the stream only */
		check_expression((Node *) shape->hop->args, &w, "hopping window");
		w.hop_rti = shape->hop_rti;
	}
	shape->where = flatten_join_alias_vars(query, query->jointree->quals);
	if (shape->where)
	{
		if (contain_agg_clause(shape->where))
			REFUSE("aggregate functions are not allowed in WHERE", NULL, "Use HAVING-like filters on the view.");
		check_expression(shape->where, &w, "WHERE clause");
	}

	tlist = (List *) flatten_join_alias_vars(query, (Node *) query->targetList);
	foreach(lc, tlist)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);
		AggShapeColumn *col = palloc0(sizeof(AggShapeColumn));
		Node	   *expr = (Node *) tle->expr;

		if (tle->ressortgroupref != 0 &&
			get_sortgroupref_clause_noerr(tle->ressortgroupref, query->groupClause))
		{
			col->is_key = true;
			col->visible = !tle->resjunk;
			col->name = tle->resjunk || tle->resname == NULL
				? psprintf("_key_%d", ++keyno) : pstrdup(tle->resname);
			col->expr = (Expr *) expr;
			col->type = exprType(expr);
			col->typmod = exprTypmod(expr);
			col->collation = exprCollation(expr);
			check_expression(expr, &w, psprintf("group key \"%s\"", col->name));
			check_key_type(col->type, col->name);
			col->statetype = col->type;
			if (tle->resjunk)
			{
				hidden = lappend(hidden, col);
				continue;
			}
		}
		else if (tle->resjunk)
			continue;
		else if (IsA(expr, Aggref))
		{
			Aggref	   *aggref = (Aggref *) expr;
			Oid			inputTypes[FUNC_MAX_ARGS];
			int			nargs;
			HeapTuple	tup;

			check_aggref(aggref);
			col->name = pstrdup(tle->resname ? tle->resname : "?column?");
			col->visible = true;
			col->expr = (Expr *) aggref;
			col->type = aggref->aggtype;
			col->typmod = -1;
			col->collation = aggref->inputcollid;
			col->aggfnoid = aggref->aggfnoid;
			nargs = get_aggregate_argtypes(aggref, inputTypes);
			tup = SearchSysCache1(AGGFNOID, ObjectIdGetDatum(aggref->aggfnoid));
			col->transtype = resolve_aggregate_transtype(aggref->aggfnoid,
														 ((Form_pg_aggregate) GETSTRUCT(tup))->aggtranstype,
														 inputTypes, nargs);
			ReleaseSysCache(tup);
			col->statetype = col->transtype == INTERNALOID ? BYTEAOID : col->transtype;
			check_expression((Node *) aggref->args, &w,
							 psprintf("arguments of aggregate \"%s\"", col->name));
			if (aggref->aggfilter)
				check_expression((Node *) aggref->aggfilter, &w,
								 psprintf("FILTER of aggregate \"%s\"", col->name));
			shape->naggs++;
		}
		else
			REFUSE(psprintf("select list entry \"%s\" is neither a GROUP BY key nor an aggregate call",
							tle->resname ? tle->resname : "?column?"),
				   contain_agg_clause(expr) ? "Expressions over aggregate results are computed when the view is read, not stored." : "Every non-aggregate output column must be a GROUP BY expression.",
				   "Select plain aggregate calls and GROUP BY keys, and compute derived columns in a view over the aggregate.");
		if (col->is_key)
			shape->nkeys++;
		shape->columns = lappend(shape->columns, col);
	}
	foreach(lc, hidden)
	{
		shape->columns = lappend(shape->columns, lfirst(lc));
		shape->nkeys++;
	}
	/* every GROUP BY clause is a key column */
	if (shape->nkeys != list_length(query->groupClause))
		REFUSE("every GROUP BY item must be an expression of the event or window", NULL,
			   "GROUP BY select-list positions or expressions.");
	/* distinct column names */
	foreach(lc, shape->columns)
	{
		AggShapeColumn *a = lfirst(lc);
		ListCell   *lc2;

		for_each_from(lc2, shape->columns, foreach_current_index(lc) + 1)
		{
			AggShapeColumn *b = lfirst(lc2);

			if (strcmp(a->name, b->name) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_COLUMN),
						 errmsg("column name \"%s\" appears more than once in the defining query", a->name),
						 errhint("Give each output column a distinct alias, e.g. count(*) AS events.")));
		}
	}
	return shape;
}

/*
 * stream._aggregate_analyze(query text): the stream, the analysed query
 * tree and, per column of the state table, its name, whether it is a key,
 * whether the view shows it, its state type, the result type and the
 * aggregate function.
 */
Datum
stream_aggregate_analyze(PG_FUNCTION_ARGS)
{
	char	   *sql = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Query	   *query = checked_query(aggregate_parse_query(sql));
	AggShape   *shape = aggregate_shape(query, GetUserId());
	int			n = list_length(shape->columns);
	Datum	   *names = palloc(n * sizeof(Datum)),
			   *keys = palloc(n * sizeof(Datum)),
			   *visible = palloc(n * sizeof(Datum)),
			   *stypes = palloc(n * sizeof(Datum)),
			   *rtypes = palloc(n * sizeof(Datum)),
			   *aggs = palloc(n * sizeof(Datum));
	bool	   *aggnulls = palloc0(n * sizeof(bool));
	int			dims[1] = {n};
	int			lbs[1] = {1};
	TupleDesc	tupdesc;
	Datum		values[8];
	bool		nulls[8] = {0};
	ListCell   *lc;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	foreach(lc, shape->columns)
	{
		AggShapeColumn *col = lfirst(lc);
		int			i = foreach_current_index(lc);

		names[i] = CStringGetTextDatum(col->name);
		keys[i] = BoolGetDatum(col->is_key);
		visible[i] = BoolGetDatum(col->visible);
		if (col->is_key && OidIsValid(col->collation) &&
			col->collation != get_typcollation(col->type))
			stypes[i] = CStringGetTextDatum(psprintf("%s COLLATE %s",
													 format_type_with_typemod(col->type, col->typmod),
													 generate_collation_name(col->collation)));
		else if (col->is_key)
			stypes[i] = CStringGetTextDatum(format_type_with_typemod(col->type, col->typmod));
		else if (OidIsValid(col->collation) && type_is_collatable(col->statetype))
			stypes[i] = CStringGetTextDatum(psprintf("%s COLLATE %s",
													 format_type_be_qualified(col->statetype),
													 generate_collation_name(col->collation)));
		else
			stypes[i] = CStringGetTextDatum(format_type_be_qualified(col->statetype));
		rtypes[i] = CStringGetTextDatum(format_type_be_qualified(col->type));
		aggs[i] = ObjectIdGetDatum(col->aggfnoid);
		aggnulls[i] = !OidIsValid(col->aggfnoid);
	}
	values[0] = ObjectIdGetDatum(shape->stream);
	values[1] = CStringGetTextDatum(nodeToString(query));
	values[2] = PointerGetDatum(construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(keys, n, BOOLOID, 1, true, TYPALIGN_CHAR));
	values[4] = PointerGetDatum(construct_array(visible, n, BOOLOID, 1, true, TYPALIGN_CHAR));
	values[5] = PointerGetDatum(construct_array(stypes, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[6] = PointerGetDatum(construct_array(rtypes, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[7] = PointerGetDatum(construct_md_array(aggs, aggnulls, 1, dims, lbs,
												   REGPROCEDUREOID, 4, true, TYPALIGN_INT));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
