/*-------------------------------------------------------------------------
 * sql.c
 *	  SQL-callable functions of the JSON Schema validator:
 *	  stream.json_schema_validate, stream.json_schema_errors,
 *	  stream.json_schema_check, stream.register_schema and the trigger that
 *	  tells the schema cache that stream.schemas changed.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "nodes/primnodes.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/tuplestore.h"

#include "jsonschema/internal.h"

PG_FUNCTION_INFO_V1(stream_json_schema_validate);
PG_FUNCTION_INFO_V1(stream_json_schema_errors);
PG_FUNCTION_INFO_V1(stream_json_schema_check);
PG_FUNCTION_INFO_V1(stream_register_schema);
PG_FUNCTION_INFO_V1(stream_schemas_changed);

/* compiled schema kept in fn_extra while the schema argument is a constant */
typedef struct CallSchema
{
	JsonSchema *schema;
	uint64		epoch;
	LocalTransactionId lxid;
	bool		format_assertion;
} CallSchema;

/*
 * True if argument argnum of the call is a Const.  (Not a Param: PL/pgSQL
 * keeps a simple expression's state, fn_extra included, across evaluations
 * with different parameter values.)
 */
static bool
arg_is_const(FmgrInfo *flinfo, int argnum)
{
	Node	   *expr = flinfo->fn_expr;

	if (expr == NULL || !IsA(expr, FuncExpr))
		return false;
	if (argnum >= list_length(((FuncExpr *) expr)->args))
		return false;
	return IsA(list_nth(((FuncExpr *) expr)->args, argnum), Const);
}

/*
 * The compiled form of argument 0.  When that argument is a constant, the
 * lookup in the cache (hash and compare of the schema bytes) is done once
 * per query instead of once per row; the pointer is trusted only while the
 * cache has freed nothing, the registry has not changed, the transaction
 * is the same and format_assertion has the same value.
 */
static JsonSchema *
schema_arg(FunctionCallInfo fcinfo)
{
	CallSchema *cs = (CallSchema *) fcinfo->flinfo->fn_extra;
	JsonSchema *schema;

	if (cs != NULL && cs->epoch == jsonschema_cache_epoch() &&
		cs->lxid == MyProc->lxid &&
		cs->format_assertion == jsonschema_format_assertion)
		return cs->schema;
	schema = jsonschema_cached(PG_GETARG_JSONB_P(0));
	if (arg_is_const(fcinfo->flinfo, 0))
	{
		if (cs == NULL)
			cs = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(CallSchema));
		cs->schema = schema;
		cs->epoch = jsonschema_cache_epoch();
		cs->lxid = MyProc->lxid;
		cs->format_assertion = jsonschema_format_assertion;
		fcinfo->flinfo->fn_extra = cs;
	}
	return schema;
}

Datum
stream_json_schema_validate(PG_FUNCTION_ARGS)
{
	JsonSchema *schema = schema_arg(fcinfo);
	Jsonb	   *instance = PG_GETARG_JSONB_P(1);

	PG_RETURN_BOOL(jsonschema_validate(schema, instance));
}

Datum
stream_json_schema_errors(PG_FUNCTION_ARGS)
{
	Jsonb	   *instance = PG_GETARG_JSONB_P(1);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	List	   *errors;
	ListCell   *lc;

	SetSingleFuncCall(fcinfo, 0);
	errors = jsonschema_errors(schema_arg(fcinfo), instance, 0);
	foreach(lc, errors)
	{
		JsonSchemaError *err = lfirst(lc);
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = CStringGetTextDatum(err->instance_path);
		values[1] = CStringGetTextDatum(err->schema_path);
		values[2] = CStringGetTextDatum(err->message);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

Datum
stream_json_schema_check(PG_FUNCTION_ARGS)
{
	jsonschema_check(PG_GETARG_JSONB_P(0));
	PG_RETURN_VOID();
}

Datum
stream_register_schema(PG_FUNCTION_ARGS)
{
	char	   *uri = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *schema = PG_GETARG_JSONB_P(1);
	const char *fragment;
	char	   *base = jsuri_split_fragment(uri, &fragment);
	JsonbValue	root;
	Oid			argtypes[2] = {TEXTOID, JSONBOID};
	Datum		values[2];
	int			ret;

	if (!jsuri_is_absolute(base) || (fragment && fragment[0] != '\0'))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schema URI \"%s\" must be an absolute URI without a fragment", uri),
				 errhint("Use a URI with a scheme, such as \"https://example.com/schemas/order.json\".")));
	if (jsonschema_builtin_text(base) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" is a built-in meta-schema and cannot be registered", base),
				 errhint("The draft 2020-12 meta-schemas are always available.")));
	js_root_value(schema, &root);
	if (!js_is_schema_value(&root))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schema must be an object or a boolean, not %s",
						js_type_name(js_type_of(&root))),
				 errhint("A JSON Schema is a JSON object or true or false.")));

	values[0] = CStringGetTextDatum(base);
	values[1] = JsonbPGetDatum(schema);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute_with_args("INSERT INTO stream.schemas AS s (uri, schema) VALUES ($1, $2) "
								"ON CONFLICT (uri) DO UPDATE SET schema = EXCLUDED.schema, "
								"registered_at = now()",
								2, argtypes, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "writing stream.schemas failed: %s", SPI_result_code_string(ret));
	SPI_finish();
	PG_RETURN_VOID();
}

/* AFTER ... FOR EACH STATEMENT trigger on stream.schemas */
Datum
stream_schemas_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("stream.schemas_changed() must be called as a trigger")));
	jsonschema_registry_changed();
	/* and every session's compiled contracts (stream.c listens for this) */
	CacheInvalidateRelcache(((TriggerData *) fcinfo->context)->tg_relation);
	PG_RETURN_POINTER(NULL);
}
