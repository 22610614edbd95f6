/*-------------------------------------------------------------------------
 * privileged.c
 *	  The door through which the extension's catalogs are written.
 *
 * Catalog tables (stream.streams, stream.aggregate_defs, ...) belong to
 * the extension's owner and PUBLIC may not write them.  A user-facing
 * function (SECURITY INVOKER, so DDL it runs is the caller's) hands the
 * catalog change to stream._priv(fn, args...), which:
 *	 - accepts only functions of this extension named _priv_*;
 *	 - calls fn(caller, args...) where caller is the role that called
 *	   _priv: GetUserId() here is the invoker's identity, which no argument
 *	   can forge (a plain SECURITY DEFINER function could not tell who
 *	   called it);
 *	 - runs fn as the extension's owner, inside a security-restricted
 *	   operation with search_path pinned (owner.c).
 * The _priv_* functions are not executable by PUBLIC; each checks the
 * caller's ownership and privileges before it writes anything, and takes
 * names of tables from what it recorded, never from text a user wrote.
 *
 * Also here: running the analysis of a definition as its owner on behalf
 * of a _priv_* function (the analysed tree the worker executes is then
 * produced by the extension, never passed in by a caller).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "core/owner.h"

PG_FUNCTION_INFO_V1(stream_priv);
PG_FUNCTION_INFO_V1(stream_call_as);

#define PRIV_PREFIX "_priv_"
#define PG_NARGS_OUTER(f) ((f)->nargs)

/* fn must be a member of this extension; returns its pg_proc row's data */
static void
check_extension_function(Oid fn, const char *prefix)
{
	Oid			extoid = get_extension_oid("stream_events", false);
	char	   *name = get_func_name(fn);

	if (name == NULL || getExtensionOfObject(ProcedureRelationId, fn) != extoid ||
		(prefix != NULL && strncmp(name, prefix, strlen(prefix)) != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("function %s is not a catalog writer of stream_events",
						name ? name : "(unknown)"),
				 errhint("Catalogs of stream_events change only through its documented functions.")));
}

/*
 * Calls fn with the given leading arguments followed by this call's
 * arguments from position `first`, as `role` in a restricted scope, and
 * returns fn's result: as text when as_text (NULL for void), else as is
 * (the SQL declaration of the caller has fn's result type).
 */
static Datum
call_as(FunctionCallInfo outer, Oid fn, Oid role, const char *search_path,
		int nlead, Datum *lead, bool *leadnull, int first, bool as_text, bool *isnull)
{
	HeapTuple	proctup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Form_pg_proc proc;
	int			nargs;
	FmgrInfo	flinfo;
	LOCAL_FCINFO(fcinfo, FUNC_MAX_ARGS);
	OwnerScope	scope;
	volatile Datum result = (Datum) 0;
	Oid			rettype;

	if (!HeapTupleIsValid(proctup))
		elog(ERROR, "cache lookup failed for function %u", fn);
	proc = (Form_pg_proc) GETSTRUCT(proctup);
	nargs = nlead + (PG_NARGS_OUTER(outer) - first);
	if (proc->pronargs != nargs)
		elog(ERROR, "%s takes %d arguments, %d given", NameStr(proc->proname),
			 proc->pronargs, nargs);
	for (int i = nlead; i < nargs; i++)
	{
		Oid			given = get_fn_expr_argtype(outer->flinfo, first + i - nlead);

		if (given != proc->proargtypes.values[i])
			elog(ERROR, "argument %d of %s is of type %s, not %s", i + 1,
				 NameStr(proc->proname), format_type_be(given),
				 format_type_be(proc->proargtypes.values[i]));
	}
	rettype = proc->prorettype;
	if (proc->proretset)
		elog(ERROR, "set-returning functions cannot be called through stream._priv");
	ReleaseSysCache(proctup);

	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, nargs, outer->fncollation, NULL, NULL);
	for (int i = 0; i < nlead; i++)
	{
		fcinfo->args[i].value = lead[i];
		fcinfo->args[i].isnull = leadnull[i];
	}
	for (int i = nlead; i < nargs; i++)
	{
		fcinfo->args[i].value = outer->args[first + i - nlead].value;
		fcinfo->args[i].isnull = outer->args[first + i - nlead].isnull;
	}

	owner_enter(&scope, role, search_path);
	PG_TRY();
	{
		result = FunctionCallInvoke(fcinfo);
		*isnull = fcinfo->isnull;
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();

	if (*isnull || rettype == VOIDOID)
	{
		*isnull = true;
		return (Datum) 0;
	}
	if (!as_text)
		return result;
	{
		Oid			outfn;
		bool		varlena;

		getTypeOutputInfo(rettype, &outfn, &varlena);
		return CStringGetTextDatum(OidOutputFunctionCall(outfn, result));
	}
}

/*
 * stream._priv(fn regproc, VARIADIC "any") RETURNS text
 */
Datum
stream_priv(PG_FUNCTION_ARGS)
{
	Oid			fn;
	Datum		lead[1];
	bool		leadnull[1] = {false};
	Datum		result;
	bool		isnull;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream._priv needs a function")));
	fn = PG_GETARG_OID(0);
	check_extension_function(fn, PRIV_PREFIX);
	lead[0] = ObjectIdGetDatum(GetUserId());
	result = call_as(fcinfo, fn, owner_of_extension(), NULL, 1, lead, leadnull, 1, true, &isnull);
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

/*
 * stream.<name>_as(role regrole, search_path text, args...)
 *
 * Runs stream.<name>(args...), one of this extension's analysis functions,
 * as `role` in a definition's search_path, restricted: what _priv_*
 * functions use to analyse a definition with its owner's rights, never
 * their own.  The target is named by the SQL function's own name, so no
 * argument chooses what runs.  Not executable by PUBLIC; declared in SQL
 * with the result type of the function it wraps.
 */
Datum
stream_call_as(PG_FUNCTION_ARGS)
{
	Oid			self = fcinfo->flinfo->fn_oid;
	char	   *selfname = get_func_name(self);
	size_t		len = selfname ? strlen(selfname) : 0;
	char	   *target;
	Oid			argtypes[FUNC_MAX_ARGS];
	int			nargs = PG_NARGS() - 2;
	Oid			fn;
	Oid			role;
	char	   *path;
	Datum		result;
	bool		isnull;

	if (len < 4 || strcmp(selfname + len - 3, "_as") != 0)
		elog(ERROR, "stream_call_as must be declared as <function>_as");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s needs a role", selfname)));
	check_extension_function(self, NULL);
	target = pnstrdup(selfname, len - 3);
	for (int i = 0; i < nargs; i++)
		argtypes[i] = get_fn_expr_argtype(fcinfo->flinfo, i + 2);
	fn = LookupFuncName(list_make2(makeString(get_namespace_name(get_func_namespace(self))),
								   makeString(target)),
						nargs, argtypes, false);
	check_extension_function(fn, NULL);
	role = PG_GETARG_OID(0);
	path = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	result = call_as(fcinfo, fn, role, path, 0, NULL, NULL, 2, false, &isnull);
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}
