/*-------------------------------------------------------------------------
 * state.c
 *	  Partial aggregate states of continuous aggregates: calling an
 *	  aggregate function's transition, combine, serial/deserial and final
 *	  functions outside the executor, the way nodeAgg.c calls them, and the
 *	  SQL functions stream.combine_states() and stream.finalize_state().
 *
 * Support functions such as numeric_avg_accum or float8_accum check
 * AggCheckCallContext() to allocate their state in the aggregate's memory
 * context or to update it in place; we pass them a minimal AggState whose
 * curaggcontext names the memory context that owns the states.  As in
 * nodeAgg.c: a strict transition function with a NULL initial value takes
 * the first non-null input as its state; a by-reference state returned by a
 * transition or combine function is copied into that context; states that
 * come from a table are copied before a function may modify them in place.
 * States of type internal are stored serialised (bytea) with serialfn and
 * read back with deserialfn.
 *
 * stream.combine_states and stream.finalize_state take their states from
 * the caller, so they check who may feed which aggregate (state_fn_allowed).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "catalog/pg_aggregate.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "parser/parse_agg.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/expandeddatum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "aggregate/aggregate.h"

PG_FUNCTION_INFO_V1(stream_combine_states);
PG_FUNCTION_INFO_V1(stream_finalize_state);

static Datum
get_init_value(Oid transtype, Datum textInitVal)
{
	Oid			typinput,
				typioparam;
	char	   *str = TextDatumGetCString(textInitVal);

	getTypeInputInfo(transtype, &typinput, &typioparam);
	return OidInputFunctionCall(typinput, str, typioparam, -1);
}

/*
 * Looks an aggregate function up and prepares its support functions.
 * inputTypes are the aggregated arguments' types (NULL: the declared ones).
 */
AggFuncInfo *
aggfunc_create(Oid aggfnoid, Oid *inputTypes, int numInputs, Oid inputcollid,
			   bool with_transfn, MemoryContext mcxt)
{
	MemoryContext old = MemoryContextSwitchTo(mcxt);
	AggFuncInfo *info = palloc0(sizeof(AggFuncInfo));
	HeapTuple	aggTuple,
				procTuple;
	Form_pg_aggregate aggform;
	Form_pg_proc procform;
	Datum		textInitVal;
	Oid			aggtranstype;
	Oid			finalfn_oid;
	Expr	   *expr;

	aggTuple = SearchSysCache1(AGGFNOID, ObjectIdGetDatum(aggfnoid));
	if (!HeapTupleIsValid(aggTuple))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("function %s is not an aggregate function",
						format_procedure(aggfnoid)),
				 errhint("Pass an aggregate function such as pg_catalog.count().")));
	aggform = (Form_pg_aggregate) GETSTRUCT(aggTuple);
	procTuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(aggfnoid));
	if (!HeapTupleIsValid(procTuple))
		elog(ERROR, "cache lookup failed for function %u", aggfnoid);
	procform = (Form_pg_proc) GETSTRUCT(procTuple);

	if (aggform->aggkind != AGGKIND_NORMAL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("ordered-set aggregate %s cannot be kept as a partial state",
						format_procedure(aggfnoid))));
	if (!OidIsValid(aggform->aggcombinefn))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("aggregate %s has no combine function", format_procedure(aggfnoid)),
				 errhint("Only aggregates whose partial states can be combined are supported.")));

	info->aggfnoid = aggfnoid;
	info->numInputs = numInputs;
	if (inputTypes)
		memcpy(info->inputTypes, inputTypes, numInputs * sizeof(Oid));
	else
	{
		if (procform->pronargs != numInputs)
			elog(ERROR, "aggregate %u has %d arguments, not %d",
				 aggfnoid, procform->pronargs, numInputs);
		memcpy(info->inputTypes, procform->proargtypes.values, numInputs * sizeof(Oid));
	}
	info->inputcollid = inputcollid;
	info->resulttype = procform->prorettype;
	info->finalmodify = aggform->aggfinalmodify;

	aggtranstype = resolve_aggregate_transtype(aggfnoid, aggform->aggtranstype,
											   info->inputTypes, numInputs);
	info->transtype = aggtranstype;
	info->internal = (aggtranstype == INTERNALOID);
	get_typlenbyval(aggtranstype, &info->transtypeLen, &info->transtypeByVal);
	if (info->internal &&
		(!OidIsValid(aggform->aggserialfn) || !OidIsValid(aggform->aggdeserialfn)))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("aggregate %s has an internal state without serialization functions",
						format_procedure(aggfnoid)),
				 errhint("Only aggregates whose states can be stored are supported.")));

	/* the minimal AggState; curaggcontext's memory is set before each call */
	info->aggstate = makeNode(AggState);
	info->aggecontext = makeNode(ExprContext);
	info->aggstate->curaggcontext = info->aggecontext;

	if (with_transfn)
	{
		Expr	   *invexpr;

		build_aggregate_transfn_expr(info->inputTypes, numInputs, 0, false,
									 aggtranstype, inputcollid,
									 aggform->aggtransfn, InvalidOid,
									 &expr, &invexpr);
		fmgr_info(aggform->aggtransfn, &info->transfn);
		fmgr_info_set_expr((Node *) expr, &info->transfn);
		info->has_transfn = true;
		info->transfcinfo = palloc0(SizeForFunctionCallInfo(numInputs + 1));
		InitFunctionCallInfoData(*info->transfcinfo, &info->transfn, numInputs + 1,
								 inputcollid, (Node *) info->aggstate, NULL);
	}
	fmgr_info(aggform->aggcombinefn, &info->combinefn);
	if (info->internal)
	{
		fmgr_info(aggform->aggserialfn, &info->serialfn);
		fmgr_info(aggform->aggdeserialfn, &info->deserialfn);
	}

	finalfn_oid = aggform->aggfinalfn;
	if (OidIsValid(finalfn_oid))
	{
		info->has_finalfn = true;
		info->numFinalArgs = aggform->aggfinalextra ? numInputs + 1 : 1;
		build_aggregate_finalfn_expr(info->inputTypes, info->numFinalArgs,
									 aggtranstype, info->resulttype, inputcollid,
									 finalfn_oid, &expr);
		fmgr_info(finalfn_oid, &info->finalfn);
		fmgr_info_set_expr((Node *) expr, &info->finalfn);
	}

	textInitVal = SysCacheGetAttr(AGGFNOID, aggTuple, Anum_pg_aggregate_agginitval,
								  &info->initValueIsNull);
	if (!info->initValueIsNull)
		info->initValue = get_init_value(aggtranstype, textInitVal);

	ReleaseSysCache(procTuple);
	ReleaseSysCache(aggTuple);
	MemoryContextSwitchTo(old);
	return info;
}

static inline void
set_aggcontext(AggFuncInfo *info, MemoryContext aggcontext)
{
	info->aggecontext->ecxt_per_tuple_memory = aggcontext;
}

void
aggfunc_init_trans(AggFuncInfo *info, AggTransValue *tv, MemoryContext aggcontext)
{
	tv->isnull = info->initValueIsNull;
	tv->noTransValue = info->initValueIsNull;
	if (info->initValueIsNull)
		tv->value = (Datum) 0;
	else
	{
		MemoryContext old = MemoryContextSwitchTo(aggcontext);

		tv->value = datumCopy(info->initValue, info->transtypeByVal,
							  info->transtypeLen);
		MemoryContextSwitchTo(old);
	}
}

/* Keeps a new by-reference state in aggcontext, like nodeAgg.c. */
static void
store_new_state(AggFuncInfo *info, AggTransValue *tv, Datum newVal, bool newIsNull,
				MemoryContext aggcontext)
{
	if (!info->transtypeByVal &&
		DatumGetPointer(newVal) != DatumGetPointer(tv->value))
	{
		if (!newIsNull)
		{
			MemoryContext old = MemoryContextSwitchTo(aggcontext);

			if (!(DatumIsReadWriteExpandedObject(newVal, false, info->transtypeLen) &&
				  MemoryContextGetParent(DatumGetEOHP(newVal)->eoh_context) == aggcontext))
				newVal = datumCopy(newVal, false, info->transtypeLen);
			MemoryContextSwitchTo(old);
		}
		if (!tv->isnull)
		{
			if (DatumIsReadWriteExpandedObject(tv->value, false, info->transtypeLen))
				DeleteExpandedObject(tv->value);
			else
				pfree(DatumGetPointer(tv->value));
		}
	}
	tv->value = newVal;
	tv->isnull = newIsNull;
}

/*
 * Advances a transition value by one input row, whose arguments the caller
 * put in info->transfcinfo->args[1 .. numInputs].  Runs in the caller's
 * (per-row) memory context.
 */
void
aggfunc_advance(AggFuncInfo *info, AggTransValue *tv, MemoryContext aggcontext)
{
	FunctionCallInfo fcinfo = info->transfcinfo;
	Datum		newVal;

	if (info->transfn.fn_strict)
	{
		for (int i = 1; i <= info->numInputs; i++)
			if (fcinfo->args[i].isnull)
				return;
		if (tv->noTransValue)
		{
			/* the first non-null input becomes the state */
			MemoryContext old = MemoryContextSwitchTo(aggcontext);

			tv->value = datumCopy(fcinfo->args[1].value, info->transtypeByVal,
								  info->transtypeLen);
			MemoryContextSwitchTo(old);
			tv->isnull = false;
			tv->noTransValue = false;
			return;
		}
		if (tv->isnull)
			return;				/* a strict function keeps a NULL state */
	}
	set_aggcontext(info, aggcontext);
	info->aggstate->curpertrans = NULL;
	fcinfo->args[0].value = tv->value;
	fcinfo->args[0].isnull = tv->isnull;
	fcinfo->isnull = false;
	newVal = FunctionCallInvoke(fcinfo);
	store_new_state(info, tv, newVal, fcinfo->isnull, aggcontext);
}

/* The state as stored: serialised (bytea) when internal. */
Datum
aggfunc_serialize(AggFuncInfo *info, AggTransValue *tv, MemoryContext aggcontext,
				  bool *isnull)
{
	LOCAL_FCINFO(fcinfo, 1);
	Datum		result;

	if (!info->internal || tv->isnull)
	{
		*isnull = tv->isnull;
		return tv->value;
	}
	set_aggcontext(info, aggcontext);
	InitFunctionCallInfoData(*fcinfo, &info->serialfn, 1, InvalidOid,
							 (Node *) info->aggstate, NULL);
	fcinfo->args[0].value = tv->value;
	fcinfo->args[0].isnull = false;
	result = FunctionCallInvoke(fcinfo);
	*isnull = fcinfo->isnull;
	return result;
}

/* Reads a stored state into a transition value of its own (in aggcontext). */
void
aggfunc_deserialize(AggFuncInfo *info, Datum stored, bool isnull,
					AggTransValue *tv, MemoryContext aggcontext)
{
	tv->noTransValue = false;
	if (isnull)
	{
		tv->value = (Datum) 0;
		tv->isnull = true;
		return;
	}
	if (info->internal)
	{
		LOCAL_FCINFO(fcinfo, 2);
		MemoryContext old = MemoryContextSwitchTo(aggcontext);

		set_aggcontext(info, aggcontext);
		InitFunctionCallInfoData(*fcinfo, &info->deserialfn, 2, InvalidOid,
								 (Node *) info->aggstate, NULL);
		fcinfo->args[0].value = stored;
		fcinfo->args[0].isnull = false;
		fcinfo->args[1].value = PointerGetDatum(NULL);
		fcinfo->args[1].isnull = false;
		tv->value = FunctionCallInvoke(fcinfo);
		tv->isnull = fcinfo->isnull;
		MemoryContextSwitchTo(old);
		return;
	}
	/* a private copy: combine functions may update their first input in place */
	if (!info->transtypeByVal)
	{
		MemoryContext old = MemoryContextSwitchTo(aggcontext);

		stored = datumCopy(stored, false, info->transtypeLen);
		MemoryContextSwitchTo(old);
	}
	tv->value = stored;
	tv->isnull = false;
}

/* into := combinefn(into, other) */
void
aggfunc_combine(AggFuncInfo *info, AggTransValue *into, AggTransValue *other,
				MemoryContext aggcontext)
{
	LOCAL_FCINFO(fcinfo, 2);
	Datum		newVal;

	if (info->combinefn.fn_strict)
	{
		if (other->isnull)
			return;
		if (into->isnull)
		{
			/* take the other state over, as nodeAgg.c does */
			MemoryContext old = MemoryContextSwitchTo(aggcontext);

			into->value = datumCopy(other->value, info->transtypeByVal,
									info->transtypeLen);
			MemoryContextSwitchTo(old);
			into->isnull = false;
			into->noTransValue = false;
			return;
		}
	}
	set_aggcontext(info, aggcontext);
	InitFunctionCallInfoData(*fcinfo, &info->combinefn, 2, info->inputcollid,
							 (Node *) info->aggstate, NULL);
	fcinfo->args[0].value = into->value;
	fcinfo->args[0].isnull = into->isnull;
	fcinfo->args[1].value = other->value;
	fcinfo->args[1].isnull = other->isnull;
	newVal = FunctionCallInvoke(fcinfo);
	store_new_state(info, into, newVal, fcinfo->isnull, aggcontext);
	into->noTransValue = false;
}

Datum
aggfunc_finalize(AggFuncInfo *info, AggTransValue *tv, MemoryContext aggcontext,
				 bool *isnull)
{
	LOCAL_FCINFO(fcinfo, FUNC_MAX_ARGS);
	Datum		result;
	bool		anynull;

	if (!info->has_finalfn)
	{
		*isnull = tv->isnull;
		return tv->value;
	}
	set_aggcontext(info, aggcontext);
	InitFunctionCallInfoData(*fcinfo, &info->finalfn, info->numFinalArgs,
							 info->inputcollid, (Node *) info->aggstate, NULL);
	fcinfo->args[0].value = tv->value;
	fcinfo->args[0].isnull = tv->isnull;
	anynull = tv->isnull;
	for (int i = 1; i < info->numFinalArgs; i++)
	{
		fcinfo->args[i].value = (Datum) 0;
		fcinfo->args[i].isnull = true;
		anynull = true;
	}
	if (fcinfo->flinfo->fn_strict && anynull)
	{
		*isnull = true;
		return (Datum) 0;
	}
	result = FunctionCallInvoke(fcinfo);
	*isnull = fcinfo->isnull;
	return result;
}

/* ---------- SQL functions ---------- */

/* built into PostgreSQL: created by initdb, in pg_catalog */
static bool
builtin_function(Oid fnoid)
{
	return !OidIsValid(fnoid) ||
		(fnoid < FirstNormalObjectId &&
		 get_func_namespace(fnoid) == PG_CATALOG_NAMESPACE);
}

/*
 * Who may feed states to which aggregate.
 *
 * A state passed to stream.combine_states or stream.finalize_state is any
 * value of the state type the caller likes, not one the aggregate built: a
 * deserialisation function then reads arbitrary bytes, a combine function
 * merges a state it never produced.  PostgreSQL's own support functions
 * (built in: OID below FirstNormalObjectId, in pg_catalog) check what they
 * read (pq_getmsg* bounds, array shapes, numeric digits) and raise errors.
 * Those of other aggregates may trust their input: a C deserialiser written
 * for the states only its own aggregate produces can read past the end of
 * a forged one.  So an aggregate whose combine, serialisation or
 * deserialisation function is not built in is accepted only from a role
 * that owns the aggregate (it answers for its functions) or a superuser;
 * anyone else gets 42501.  As in nodeAgg.c, the caller needs EXECUTE on
 * the aggregate and the aggregate's owner EXECUTE on its support
 * functions.  The state's type is checked by the caller (cached_aggfunc).
 */
static void
state_fn_allowed(Oid aggfnoid)
{
	HeapTuple	aggTuple;
	HeapTuple	procTuple;
	Form_pg_aggregate aggform;
	Oid			aggowner;
	Oid			fns[4];
	AclResult	aclresult;

	aclresult = pg_proc_aclcheck(aggfnoid, GetUserId(), ACL_EXECUTE);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_AGGREGATE, get_func_name(aggfnoid));

	aggTuple = SearchSysCache1(AGGFNOID, ObjectIdGetDatum(aggfnoid));
	if (!HeapTupleIsValid(aggTuple))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("function %s is not an aggregate function",
						format_procedure(aggfnoid)),
				 errhint("Pass an aggregate function such as pg_catalog.sum(numeric).")));
	aggform = (Form_pg_aggregate) GETSTRUCT(aggTuple);
	fns[0] = aggform->aggcombinefn;
	fns[1] = aggform->aggserialfn;
	fns[2] = aggform->aggdeserialfn;
	fns[3] = aggform->aggfinalfn;
	ReleaseSysCache(aggTuple);

	procTuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(aggfnoid));
	if (!HeapTupleIsValid(procTuple))
		elog(ERROR, "cache lookup failed for function %u", aggfnoid);
	aggowner = ((Form_pg_proc) GETSTRUCT(procTuple))->proowner;
	ReleaseSysCache(procTuple);

	for (int i = 0; i < 3; i++)
	{
		if (builtin_function(fns[i]) || superuser() ||
			pg_proc_ownercheck(aggfnoid, GetUserId()))
			continue;
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to pass partial states to aggregate %s",
						format_procedure(aggfnoid)),
				 errdetail("Its %s function %s is not built into PostgreSQL, and only the aggregate's owner (%s) or a superuser may hand it states that did not come from the aggregate itself.",
						   i == 0 ? "combine" : i == 1 ? "serialization" : "deserialization",
						   format_procedure(fns[i]), GetUserNameFromId(aggowner, false)),
				 errhint("Read the continuous aggregate through its view as a role that owns %s, or define the continuous aggregate with built-in aggregates.",
						 format_procedure(aggfnoid))));
	}

	/* the aggregate's owner must be able to call what it is made of */
	for (int i = 0; i < 4; i++)
	{
		if (!OidIsValid(fns[i]))
			continue;
		aclresult = pg_proc_aclcheck(fns[i], aggowner, ACL_EXECUTE);
		if (aclresult != ACLCHECK_OK)
			aclcheck_error(aclresult, OBJECT_FUNCTION, get_func_name(fns[i]));
	}
}

typedef struct StateFnCache
{
	Oid			aggfnoid;
	Oid			argtype;
	AggFuncInfo *info;
} StateFnCache;

/*
 * The AggFuncInfo of the aggregate named by a regprocedure argument, cached
 * in fn_extra, after checking that statetype is the type its states are
 * stored as (so that a support function only ever sees its own states).
 */
static AggFuncInfo *
cached_aggfunc(FunctionCallInfo fcinfo, Oid aggfnoid, Oid statetype)
{
	StateFnCache *cache = fcinfo->flinfo->fn_extra;
	HeapTuple	procTuple;
	Form_pg_proc procform;
	AggFuncInfo *info;
	Oid			stored;

	if (cache && cache->aggfnoid == aggfnoid && cache->argtype == statetype)
		return cache->info;

	state_fn_allowed(aggfnoid);

	procTuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(aggfnoid));
	if (!HeapTupleIsValid(procTuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", aggfnoid)));
	procform = (Form_pg_proc) GETSTRUCT(procTuple);
	if (procform->prokind != PROKIND_AGGREGATE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("function %s is not an aggregate function", format_procedure(aggfnoid)),
				 errhint("Pass an aggregate function such as pg_catalog.sum(numeric).")));
	for (int i = 0; i < procform->pronargs; i++)
		if (IsPolymorphicType(procform->proargtypes.values[i]))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("aggregate %s has polymorphic arguments", format_procedure(aggfnoid)),
					 errhint("Continuous aggregates support aggregates of concrete argument types.")));
	ReleaseSysCache(procTuple);

	info = aggfunc_create(aggfnoid, NULL, procform->pronargs, InvalidOid, false,
						  fcinfo->flinfo->fn_mcxt);
	stored = info->internal ? BYTEAOID : info->transtype;
	if (statetype != stored)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("a partial state of aggregate %s has type %s, not %s",
						format_procedure(aggfnoid), format_type_be(stored),
						format_type_be(statetype)),
				 errhint("Pass a state column of a continuous aggregate's state table.")));

	if (cache == NULL)
		cache = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(StateFnCache));
	cache->aggfnoid = aggfnoid;
	cache->argtype = statetype;
	cache->info = info;
	fcinfo->flinfo->fn_extra = cache;
	return info;
}

/* stream.combine_states(state1 anyelement, state2 anyelement, aggregate regprocedure) */
Datum
stream_combine_states(PG_FUNCTION_ARGS)
{
	Oid			statetype = get_fn_expr_argtype(fcinfo->flinfo, 0);
	AggFuncInfo *info;
	AggTransValue a,
				b;
	Datum		result;
	bool		isnull;
	MemoryContext mcxt = CurrentMemoryContext;

	if (PG_ARGISNULL(2))
		PG_RETURN_NULL();
	info = cached_aggfunc(fcinfo, PG_GETARG_OID(2), statetype);
	/* the state column carries the aggregate's input collation */
	info->inputcollid = PG_GET_COLLATION();
	aggfunc_deserialize(info, PG_GETARG_DATUM(0), PG_ARGISNULL(0), &a, mcxt);
	aggfunc_deserialize(info, PG_GETARG_DATUM(1), PG_ARGISNULL(1), &b, mcxt);
	aggfunc_combine(info, &a, &b, mcxt);
	result = aggfunc_serialize(info, &a, mcxt, &isnull);
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

/* stream.finalize_state(state "any", aggregate regprocedure, result_type anyelement) */
Datum
stream_finalize_state(PG_FUNCTION_ARGS)
{
	Oid			statetype = get_fn_expr_argtype(fcinfo->flinfo, 0);
	Oid			resulttype = get_fn_expr_argtype(fcinfo->flinfo, 2);
	AggFuncInfo *info;
	AggTransValue tv;
	Datum		result;
	bool		isnull;

	if (PG_ARGISNULL(1))
		PG_RETURN_NULL();
	info = cached_aggfunc(fcinfo, PG_GETARG_OID(1), statetype);
	info->inputcollid = PG_GET_COLLATION();
	if (resulttype != info->resulttype)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("aggregate %s returns %s, not %s",
						format_procedure(info->aggfnoid),
						format_type_be(info->resulttype), format_type_be(resulttype)),
				 errhint("Pass NULL cast to the aggregate's result type as result_type.")));
	/* a private copy, since a final function may modify its state */
	aggfunc_deserialize(info, PG_GETARG_DATUM(0), PG_ARGISNULL(0), &tv,
						CurrentMemoryContext);
	result = aggfunc_finalize(info, &tv, CurrentMemoryContext, &isnull);
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}
