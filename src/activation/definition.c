/*-------------------------------------------------------------------------
 * definition.c
 *	  Activations: the analysis of an activation's condition, key and
 *	  payload expressions, shared by the SQL surface (checked at creation)
 *	  and the code that runs them (compile.c compiles them again, from
 *	  the text, when it loads the definitions).  See docs/activations.md.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "access/relation.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/regproc.h"

#include "activation/activation.h"
#include "core/definition.h"
#include "stream_events.h"

PG_FUNCTION_INFO_V1(stream_activation_check);
PG_FUNCTION_INFO_V1(stream_activation_trees);

typedef struct ActWalk
{
	Oid			volatile_func;
	const char *problem;
} ActWalk;

static bool
volatile_checker(Oid func_id, void *context)
{
	if (func_volatile(func_id) == PROVOLATILE_VOLATILE)
	{
		*(Oid *) context = func_id;
		return true;
	}
	return false;
}

static bool
act_walker(Node *node, ActWalk *w)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var))
	{
		Var		   *var = (Var *) node;

		if (var->varlevelsup != 0)
			w->problem = "an outer reference";
		else if (var->varattno == 0)
			w->problem = "a whole-row reference";
		else if (var->varattno < 0)
			w->problem = "a system column";
		return w->problem != NULL;
	}
	if (check_functions_in_node(node, volatile_checker, &w->volatile_func))
		return true;
	if (IsA(node, NextValueExpr))
	{
		w->problem = "a sequence";
		return true;
	}
	if (IsA(node, Param))
	{
		w->problem = "a parameter";
		return true;
	}
	return expression_tree_walker(node, act_walker, (void *) w);
}

static void
check_act_expr(Node *expr, const char *what)
{
	ActWalk		w = {InvalidOid, NULL};

	/* analysed as the role it will run as (the owner): its EXECUTE rights */
	definition_check_execute(expr, GetUserId());

	if (!act_walker(expr, &w))
		return;
	if (OidIsValid(w.volatile_func))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("function %s in the %s of an activation is volatile",
						format_procedure(w.volatile_func), what),
				 errdetail("The worker evaluates the %s once per committed event, later and in another session.", what),
				 errhint("Use immutable or stable expressions over the event's columns.")));
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("the %s of an activation holds %s", what, w.problem),
			 errhint("Refer only to the columns of the stream, e.g. event_name = 'add_to_cart' AND (properties->>'price')::numeric > 100.")));
}

#define ACT_REFUSE(what, hint) \
	ereport(ERROR, \
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED), \
			 errmsg("%s are not allowed in the condition or key of an activation", what), \
			 errhint("%s", hint)))

static void
analyse_error_callback(void *arg)
{
	const char *what = (const char *) arg;

	/* positions point into the generated statement, not the caller's */
	errposition(0);
	errcontext("analysing the %s of an activation", what);
}

/*
 * Parses and analyses "SELECT (expr) FROM stream" and checks that expr is a
 * plain expression over one event.  Returns the analysed expression (Vars
 * of range table entry 1).
 */
typedef enum AnalyseAs
{
	AS_VALUE,
	AS_TEXT,
	AS_JSON						/* to_jsonb(expr)::text */
} AnalyseAs;

static Node *
analyse_one(Oid stream, const char *text, const char *what, AnalyseAs as)
{
	char	   *sql;
	List	   *raws;
	Query	   *query;
	RangeTblEntry *rte;
	ErrorContextCallback errcb;

	sql = psprintf(as == AS_TEXT ? "SELECT (\n%s\n)::pg_catalog.text FROM %s" :
				   as == AS_JSON ? "SELECT pg_catalog.to_jsonb((\n%s\n))::pg_catalog.text FROM %s" :
				   "SELECT (\n%s\n) FROM %s",
				   text, definition_relation_name(stream));
	errcb.callback = analyse_error_callback;
	errcb.arg = (void *) what;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	raws = raw_parser(sql, RAW_PARSE_DEFAULT);
	if (list_length(raws) != 1 || !IsA(linitial_node(RawStmt, raws)->stmt, SelectStmt))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the %s of an activation must be one expression", what),
				 errhint("Pass an expression, not a statement, e.g. event_name = 'purchase'.")));
	query = parse_analyze_fixedparams(linitial_node(RawStmt, raws), sql, NULL, 0, NULL);
	error_context_stack = errcb.previous;
	if (query->hasSubLinks)
		ACT_REFUSE("subqueries", "Use expressions of the event row only; look dimension data up in the client that receives the activation.");
	if (query->hasAggs)
		ACT_REFUSE("aggregate functions", "An activation looks at one event; for thresholds over many events use a continuous aggregate.");
	if (query->hasWindowFuncs)
		ACT_REFUSE("window functions", "An activation looks at one event at a time.");
	if (query->hasTargetSRFs)
		ACT_REFUSE("set-returning functions", "Use expressions that return one value per event.");
	if (list_length(query->targetList) != 1 || list_length(query->rtable) != 1 ||
		query->jointree->quals != NULL || query->groupClause != NIL ||
		query->havingQual != NULL || query->sortClause != NIL ||
		query->limitCount != NULL || query->limitOffset != NULL ||
		query->distinctClause != NIL || query->cteList != NIL ||
		query->setOperations != NULL || query->rowMarks != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the %s of an activation must be one expression", what),
				 errhint("Pass an expression over the stream's columns, without FROM, WHERE or other clauses.")));
	rte = linitial_node(RangeTblEntry, query->rtable);
	if (rte->rtekind != RTE_RELATION || rte->relid != stream)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the %s of an activation must be one expression", what),
				 errhint("Pass an expression over the stream's columns.")));
	return (Node *) linitial_node(TargetEntry, query->targetList)->expr;
}

/*
 * Analyses an activation's condition (boolean) and key (any type, as
 * text; NULL: no key) over the stream.  Errors say what is refused, with a
 * HINT.
 */
void
activation_analyze(Oid stream, const char *condition, const char *key,
				   const char *payload, Node **cond_expr, Node **key_expr,
				   Node **payload_expr)
{
	if (condition == NULL || *condition == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the condition of an activation must not be empty"),
				 errhint("Pass a boolean expression over the stream's columns, e.g. event_name = 'purchase', or true for every event.")));
	if (key == NULL || *key == '\0')
		key = "NULL";
	*cond_expr = analyse_one(stream, condition, "condition", AS_VALUE);
	if (exprType(*cond_expr) != BOOLOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("the condition of an activation must return boolean, not %s",
						format_type_be(exprType(*cond_expr))),
				 errdetail("Condition: %s", condition),
				 errhint("Compare the value, e.g. (properties->>'vip')::boolean or properties ? 'coupon'.")));
	check_act_expr(*cond_expr, "condition");
	*key_expr = analyse_one(stream, key, "key", AS_TEXT);
	check_act_expr(*key_expr, "key");
	if (payload != NULL && *payload == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the payload of an activation must not be empty"),
				 errhint("Pass an expression such as jsonb_build_object('user', user_id, 'sku', properties->'sku'), or NULL for the whole event.")));
	*payload_expr = NULL;
	if (payload != NULL)
	{
		*payload_expr = analyse_one(stream, payload, "payload", AS_JSON);
		check_act_expr(*payload_expr, "payload");
	}
}

/*
 * The analysis both SQL entry points below start with: arguments (rel
 * regclass, condition text, key text, payload text), NULL texts absent.
 */
static void
analyze_arguments(FunctionCallInfo fcinfo, Node **c, Node **k, Node **p)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("an activation needs a stream")));
	activation_analyze(PG_GETARG_OID(0),
					   PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)),
					   PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2)),
					   PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3)),
					   c, k, p);
}

/* stream._activation_check(rel regclass, condition text, key text, payload text) */
Datum
stream_activation_check(PG_FUNCTION_ARGS)
{
	Node	   *c,
			   *k,
			   *p;

	analyze_arguments(fcinfo, &c, &k, &p);
	PG_RETURN_VOID();
}

/*
 * stream._activation_trees(rel regclass, condition text, key text,
 * payload text, cancelled_by text) returns text[]: the expressions analysed
 * as the caller, in the caller's search_path, as node trees (condition,
 * key, payload or NULL, cancelled_by or NULL), for the catalog to keep, so
 * that the worker runs what was analysed when the activation was defined,
 * not the text analysed again later (an operator planted since in a schema
 * of the search_path would be picked up).
 */
Datum
stream_activation_trees(PG_FUNCTION_ARGS)
{
	Node	   *c,
			   *k,
			   *p,
			   *x = NULL,
			   *dummy;
	Datum		elems[4];
	bool		nulls[4] = {false, false, true, true};
	int			dims[1] = {4};
	int			lbs[1] = {1};

	analyze_arguments(fcinfo, &c, &k, &p);
	if (!PG_ARGISNULL(4))
		activation_analyze(PG_GETARG_OID(0), text_to_cstring(PG_GETARG_TEXT_PP(4)),
						   NULL, NULL, &x, &dummy, &dummy);
	elems[0] = CStringGetTextDatum(nodeToString(c));
	elems[1] = CStringGetTextDatum(nodeToString(k));
	if (p)
	{
		elems[2] = CStringGetTextDatum(nodeToString(p));
		nulls[2] = false;
	}
	if (x)
	{
		elems[3] = CStringGetTextDatum(nodeToString(x));
		nulls[3] = false;
	}
	PG_RETURN_ARRAYTYPE_P(construct_md_array(elems, nulls, 1, dims, lbs,
											 TEXTOID, -1, false, TYPALIGN_INT));
}

/* a stored tree refers to columns of the stream that exist (by number) */
static bool
stored_vars_walker(Node *node, int *natts)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var))
	{
		Var		   *var = (Var *) node;

		if (var->varno != 1 || var->varlevelsup != 0 ||
			var->varattno < 1 || var->varattno > *natts)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("a stored activation expression refers to a column the stream does not have")));
		return false;
	}
	return expression_tree_walker(node, stored_vars_walker, (void *) natts);
}

/*
 * An expression kept by stream._activation_trees, read back for the worker
 * (rel: the stream; type: what it must return).  Checked as it was when
 * analysed (no volatile functions, subqueries, parameters...), and for
 * columns the stream has: the tree is the extension's, but it is read from
 * a table.
 */
Node *
activation_stored_expr(Oid rel, const char *tree, Oid type, const char *what)
{
	Node	   *expr = stringToNode(tree);
	Relation	r;
	int			natts;

	/* exprType refuses what is not an expression */
	if (expr == NULL || IsA(expr, List) || IsA(expr, Query))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the stored %s of an activation is not an expression", what)));
	if (exprType(expr) != type)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the stored %s of an activation returns %s, not %s", what,
						format_type_be(exprType(expr)), format_type_be(type))));
	r = relation_open(rel, AccessShareLock);
	natts = RelationGetDescr(r)->natts;
	relation_close(r, AccessShareLock);
	(void) stored_vars_walker(expr, &natts);
	check_act_expr(expr, what);
	return expr;
}
