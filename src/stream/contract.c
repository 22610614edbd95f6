/*-------------------------------------------------------------------------
 * contract.c
 *	  Enforcement of data contracts and envelope rules at ingest: loads and
 *	  compiles the latest contract version of each event name of a stream,
 *	  checks an event (from the insert trigger, or stream.check_event), and
 *	  carries out the policy: reject with SQLSTATE 23514, or quarantine into
 *	  <stream>_quarantine (as the stream's owner).  The contract catalog and
 *	  the compatibility rules are SQL (sql/modules/40_contracts.sql).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "jsonschema/jsonschema.h"
#include "core/owner.h"
#include "stream_events.h"

PG_FUNCTION_INFO_V1(stream_check_event);
PG_FUNCTION_INFO_V1(stream_contract_schema_check);


/* errors named in a rejection's DETAIL, and kept per quarantined event */
#define MAX_REPORTED_ERRORS 5


typedef struct Contract
{
	char	   *event_name;
	int			version;
	JsonSchema *schema;
} Contract;

struct ContractSet
{
	int			n;
	Contract   *contracts;		/* sorted by event_name */
};

static int
contract_cmp(const void *a, const void *b)
{
	return strcmp(((const Contract *) a)->event_name, ((const Contract *) b)->event_name);
}

/*
 * The latest version of every contract of a stream, compiled into context
 * with the stream's format_assertion (never the session's setting).
 */
ContractSet *
contract_load(int32 stream_id, MemoryContext context, bool format_assertion)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(stream_id)};
	ContractSet *set;
	int			ret;

	ret = SPI_execute_with_args("SELECT DISTINCT ON (event_name) event_name, version, schema, schema_uri "
								"FROM stream.contracts WHERE stream_id = $1 "
								"ORDER BY event_name, version DESC",
								1, argtypes, args, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read the contracts of stream %d", stream_id);

	set = MemoryContextAllocZero(context, sizeof(ContractSet));
	set->n = (int) SPI_processed;
	set->contracts = MemoryContextAllocZero(context, sizeof(Contract) * Max(set->n, 1));
	for (int i = 0; i < set->n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Jsonb	   *schema = DatumGetJsonbP(SPI_getbinval(tup, desc, 3, &isnull));
		char	   *uri = SPI_getvalue(tup, desc, 4);
		MemoryContext old;

		set->contracts[i].event_name = MemoryContextStrdup(context, SPI_getvalue(tup, desc, 1));
		set->contracts[i].version = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		old = MemoryContextSwitchTo(context);
		set->contracts[i].schema = jsonschema_compile_opts(schema, uri, format_assertion);
		MemoryContextSwitchTo(old);
	}
	qsort(set->contracts, set->n, sizeof(Contract), contract_cmp);
	return set;
}

static Contract *
contract_find(ContractSet *set, text *event_name)
{
	int			lo = 0;
	int			hi;
	const char *name = VARDATA_ANY(event_name);
	int			len = VARSIZE_ANY_EXHDR(event_name);

	if (set == NULL)
		return NULL;
	hi = set->n - 1;
	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		const char *cand = set->contracts[mid].event_name;
		int			c = strncmp(cand, name, len);

		if (c == 0 && cand[len] != '\0')
			c = 1;
		if (c == 0)
			return &set->contracts[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return NULL;
}

/* errors as [{"instance_path":..., "schema_path":..., "message":...}] */
static void
push_error(JsonbParseState **state, const char *instance_path,
		   const char *schema_path, const char *message)
{
	const char *keys[3] = {"instance_path", "schema_path", "message"};
	const char *vals[3] = {instance_path, schema_path, message};

	pushJsonbValue(state, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < 3; i++)
	{
		JsonbValue	k;
		JsonbValue	v;

		k.type = jbvString;
		k.val.string.val = (char *) keys[i];
		k.val.string.len = strlen(keys[i]);
		v.type = jbvString;
		v.val.string.val = (char *) vals[i];
		v.val.string.len = strlen(vals[i]);
		pushJsonbValue(state, WJB_KEY, &k);
		pushJsonbValue(state, WJB_VALUE, &v);
	}
	pushJsonbValue(state, WJB_END_OBJECT, NULL);
}

static void
single_error(const char *instance_path, const char *schema_path, const char *message,
			 Jsonb **errors, char **first_errors)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;

	pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
	push_error(&state, instance_path, schema_path, message);
	res = pushJsonbValue(&state, WJB_END_ARRAY, NULL);
	*errors = JsonbValueToJsonb(res);
	*first_errors = psprintf("\"%s\": %s", instance_path, message);
}

/*
 * Checks one event: envelope rules first, then the contract of its name.
 * On failure *errors (jsonb array) and *first_errors (for a DETAIL) are set.
 */
CheckResult
contract_check(StreamInfo *info, Datum *values, bool *nulls,
			   int *version, Jsonb **errors, char **first_errors)
{
	text	   *name = DatumGetTextPP(values[info->attnums[ENV_EVENT_NAME] - 1]);
	Contract   *contract;
	Jsonb	   *properties;

	*version = 0;
	if (info->event_name_pattern != NULL &&
		!DatumGetBool(DirectFunctionCall2Coll(textregexeq, C_COLLATION_OID,
											  PointerGetDatum(name),
											  PointerGetDatum(info->event_name_pattern))))
	{
		single_error("/event_name", "envelope/event_name_pattern",
					 psprintf("must match the pattern \"%s\"",
							  text_to_cstring(info->event_name_pattern)),
					 errors, first_errors);
		return CHECK_FAILED;
	}
	if (info->require_identity &&
		nulls[info->attnums[ENV_USER_ID] - 1] &&
		nulls[info->attnums[ENV_ANONYMOUS_ID] - 1])
	{
		single_error("/user_id", "envelope/require_identity",
					 "user_id or anonymous_id is required", errors, first_errors);
		return CHECK_FAILED;
	}
	if (info->has_max_future || se_max_future_set)
	{
		int64		horizon = info->has_max_future ? info->max_future_usecs : se_max_future_usecs;
		TimestampTz occurred = DatumGetTimestampTz(values[info->attnums[ENV_OCCURRED_AT] - 1]);

		if (occurred > GetCurrentTransactionStartTimestamp() + horizon)
		{
			single_error("/occurred_at", "envelope/max_future",
						 psprintf("must not be more than %s ahead of the server clock",
								  info->has_max_future ?
								  DatumGetCString(DirectFunctionCall1(interval_out,
																	  IntervalPGetDatum(&(Interval)
																						{.time = horizon}))) :
								  se_max_future),
						 errors, first_errors);
			return CHECK_FAILED;
		}
	}

	contract = contract_find(info->contracts, name);
	if (contract == NULL)
	{
		if (info->on_unplanned == 'a')
		{
			if (info->contracts)
				return CHECK_UNPLANNED;
			/* no contracts at all: the envelope rules were the check */
			return (info->event_name_pattern || info->require_identity ||
					info->has_max_future || se_max_future_set) ?
				CHECK_PASSED : CHECK_NOT_CHECKED;
		}
		single_error("/event_name", "envelope/on_unplanned",
					 psprintf("event \"%s\" has no contract", text_to_cstring(name)),
					 errors, first_errors);
		return CHECK_UNPLANNED;
	}

	*version = contract->version;
	properties = DatumGetJsonbP(values[info->attnums[ENV_PROPERTIES] - 1]);
	if (jsonschema_validate(contract->schema, properties))
		return CHECK_PASSED;

	/* slow path: every error, for the DETAIL and the quarantine */
	{
		List	   *errs = jsonschema_errors(contract->schema, properties, MAX_REPORTED_ERRORS);
		JsonbParseState *state = NULL;
		StringInfoData detail;
		ListCell   *lc;
		JsonbValue *res;

		initStringInfo(&detail);
		pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
		foreach(lc, errs)
		{
			JsonSchemaError *e = lfirst(lc);

			push_error(&state, e->instance_path, e->schema_path, e->message);
			appendStringInfo(&detail, "%s\"%s\": %s", detail.len ? "; " : "",
							 e->instance_path, e->message);
		}
		res = pushJsonbValue(&state, WJB_END_ARRAY, NULL);
		*errors = JsonbValueToJsonb(res);
		*first_errors = detail.data;
	}
	return CHECK_FAILED;
}

void
contract_reject(StreamInfo *info, Datum *values, CheckResult result, int version,
				const char *first_errors)
{
	char	   *name = TextDatumGetCString(values[info->attnums[ENV_EVENT_NAME] - 1]);
	char	   *stream = get_rel_name(info->stream_relid);

	if (result == CHECK_UNPLANNED)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("event \"%s\" has no contract on stream \"%s\"", name, stream),
				 errdetail("The stream's policy rejects unplanned events (on_unplanned => 'reject')."),
				 errhint("Define one with stream.define_contract('%s', '%s', ...), or quarantine unplanned events with stream.set_policy('%s', on_unplanned => 'quarantine').",
						 stream, name, stream)));
	if (version > 0)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("event \"%s\" violates contract version %d of stream \"%s\"",
						name, version, stream),
				 errdetail("%s", first_errors),
				 errhint("Fix the producer, or keep violating events aside with stream.set_policy('%s', on_violation => 'quarantine').",
						 stream)));
	ereport(ERROR,
			(errcode(ERRCODE_CHECK_VIOLATION),
			 errmsg("event \"%s\" violates the envelope rules of stream \"%s\"", name, stream),
			 errdetail("%s", first_errors),
			 errhint("Fix the producer, or keep violating events aside with stream.set_policy('%s', on_violation => 'quarantine').",
					 stream)));
}

/*
 * Stores a refused event in the stream's quarantine table, as the stream's
 * owner: a producer needs INSERT on the stream only, not on
 * <stream>_quarantine (the owner decides who reads it).  The INSERT runs in
 * an owner scope (owner.h), so triggers or rules the owner put on the
 * quarantine table run with the owner's rights, restricted, never the
 * producer's (who may be a superuser), and a producer's temporary objects
 * cannot capture the names.  Nothing of the producer's reaches the
 * statement but the event's values, as parameters.
 */
void
contract_quarantine(StreamInfo *info, Datum *values, bool *nulls, int version,
					Jsonb *errors)
{
	OwnerScope	scope;
	Oid			nsp;
	Datum		args[11];
	char		argnulls[11];
	Oid			argtypes[11] = {UUIDOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID,
	TEXTOID, TEXTOID, JSONBOID, JSONBOID, JSONBOID, INT4OID};
	char	   *sql;

	if (!OidIsValid(info->quarantine_relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("stream \"%s\" has no quarantine table", get_rel_name(info->stream_relid)),
				 errhint("Recreate it with the columns of stream.create_stream's <stream>_quarantine, or set on_violation => 'reject'.")));

	for (int i = 0; i < ENV_NCOLUMNS; i++)
	{
		args[i] = values[info->attnums[i] - 1];
		argnulls[i] = nulls[info->attnums[i] - 1] ? 'n' : ' ';
	}
	args[9] = JsonbPGetDatum(errors);
	argnulls[9] = ' ';
	args[10] = Int32GetDatum(version);
	argnulls[10] = version > 0 ? ' ' : 'n';

	nsp = get_rel_namespace(info->quarantine_relid);
	if (!OidIsValid(nsp))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the quarantine table of stream \"%s\" does not exist",
						get_rel_name(info->stream_relid)),
				 errhint("Recreate it with the columns of stream.create_stream's <stream>_quarantine, or set on_violation => 'reject'.")));
	sql = psprintf("INSERT INTO %s (event_id, event_name, occurred_at, received_at, user_id, "
				   "anonymous_id, session_id, properties, context, errors, contract_version) "
				   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
				   quote_qualified_identifier(get_namespace_name(nsp),
											  get_rel_name(info->quarantine_relid)));
	/* an error leaves the scope through the (sub)transaction's abort */
	owner_enter(&scope, owner_of_relation(info->stream_relid), NULL);
	SPI_connect();
	if (SPI_execute_with_args(sql, 11, argtypes, args, argnulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not quarantine an event of stream %s", get_rel_name(info->stream_relid));
	SPI_finish();
	owner_exit(&scope);
}

/*
 * stream.check_event(stream, event_name, properties, user_id, anonymous_id,
 * occurred_at) -> (valid, contract_version, errors): the ingest check
 * without its side effects.
 */
Datum
stream_check_event(PG_FUNCTION_ARGS)
{
	Oid			stream_relid = PG_GETARG_OID(0);
	TupleDesc	tupdesc;
	Relation	rel;
	StreamInfo *info;
	Datum		values[ENV_NCOLUMNS];
	bool		nulls[ENV_NCOLUMNS];
	Datum		result[3];
	bool		rnulls[3] = {false, false, false};
	int			version = 0;
	Jsonb	   *errors = NULL;
	char	   *first = NULL;
	CheckResult res;
	StreamInfo	copy;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream and event_name must not be null"),
				 errhint("Pass the stream and the event's name.")));

	rel = relation_open(stream_relid, AccessShareLock);
	info = stream_lookup(rel);
	relation_close(rel, AccessShareLock);
	copy = *info;
	/* the stream's own column order: a pseudo row in envelope order */
	for (int i = 0; i < ENV_NCOLUMNS; i++)
		copy.attnums[i] = i + 1;
	memset(nulls, true, sizeof(nulls));
	values[ENV_EVENT_NAME] = PG_GETARG_DATUM(1);
	nulls[ENV_EVENT_NAME] = false;
	values[ENV_PROPERTIES] = PG_ARGISNULL(2) ? DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"))
		: PG_GETARG_DATUM(2);
	nulls[ENV_PROPERTIES] = false;
	if (!PG_ARGISNULL(3))
	{
		values[ENV_USER_ID] = PG_GETARG_DATUM(3);
		nulls[ENV_USER_ID] = false;
	}
	if (!PG_ARGISNULL(4))
	{
		values[ENV_ANONYMOUS_ID] = PG_GETARG_DATUM(4);
		nulls[ENV_ANONYMOUS_ID] = false;
	}
	values[ENV_OCCURRED_AT] = PG_ARGISNULL(5) ?
		TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()) : PG_GETARG_DATUM(5);
	nulls[ENV_OCCURRED_AT] = false;

	res = copy.enforce ? contract_check(&copy, values, nulls, &version, &errors, &first)
		: CHECK_NOT_CHECKED;
	result[0] = BoolGetDatum(res == CHECK_PASSED || res == CHECK_NOT_CHECKED ||
							 (res == CHECK_UNPLANNED && copy.on_unplanned == 'a'));
	result[1] = Int32GetDatum(version);
	rnulls[1] = version == 0;
	if (errors)
		result[2] = JsonbPGetDatum(errors);
	else
		result[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum("[]"));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, rnulls)));
}

/*
 * stream._contract_schema_check(stream regclass, schema jsonb, uri text):
 * compiles a contract's schema the way ingest will, with the stream's
 * format_assertion (else the server default), and raises what compiling
 * raises (an unsupported format, say).  For define_contract and
 * set_policy: a contract that only fails to compile at ingest would refuse
 * every event of its stream.
 */
Datum
stream_contract_schema_check(PG_FUNCTION_ARGS)
{
	Relation	rel;
	StreamInfo *info;
	bool		format_assertion;
	char	   *uri = NULL;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream and schema must not be null")));
	if (!PG_ARGISNULL(2))
		uri = text_to_cstring(PG_GETARG_TEXT_PP(2));
	rel = relation_open(PG_GETARG_OID(0), AccessShareLock);
	info = stream_lookup(rel);
	format_assertion = info->format_assertion;
	relation_close(rel, AccessShareLock);
	jsonschema_free(jsonschema_compile_opts(PG_GETARG_JSONB_P(1), uri, format_assertion));
	PG_RETURN_VOID();
}
