/*-------------------------------------------------------------------------
 * envelope.c
 *	  stream.ingest's mapping of an element named like the envelope
 *	  columns (event_id, event_name, occurred_at, user_id, anonymous_id,
 *	  session_id, properties, context) to a row, and the field parsers
 *	  segment.c shares: a value they refuse is an error that names the
 *	  element's index and field (its JSON pointer) and says what to send
 *	  instead.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "stream/ingest.h"

void
bad_field(int index, const char *field, const char *problem, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid event at index %d of the batch: field \"%s\" %s",
					index, field, problem),
			 errdetail("The value at JSON pointer \"/%d/%s\" is not accepted.", index, field),
			 errhint("%s", hint)));
}

const char *
jbv_type_name(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "a string";
		case jbvNumeric:
			return "a number";
		case jbvBool:
			return "a boolean";
		case jbvBinary:
			return JsonContainerIsArray(v->val.binary.data) ? "an array" : "an object";
		default:
			return "a value";
	}
}

static Jsonb *
jbv_to_jsonb(JsonbValue *v)
{
	return JsonbValueToJsonb(v);
}

/* text of a string or number identity field; NULL for JSON null */
Datum
identity_text(int index, const char *field, JsonbValue *v, bool *isnull)
{
	*isnull = false;
	if (v->type == jbvString)
		return PointerGetDatum(cstring_to_text_with_len(v->val.string.val, v->val.string.len));
	if (v->type == jbvNumeric)
		return CStringGetTextDatum(DatumGetCString(DirectFunctionCall1(numeric_out,
																	   NumericGetDatum(v->val.numeric))));
	if (v->type == jbvNull)
	{
		*isnull = true;
		return (Datum) 0;
	}
	bad_field(index, field, psprintf("must be a string, not %s", jbv_type_name(v)),
			  "Send identities as JSON strings.");
}

static Datum
object_field(int index, const char *field, JsonbValue *v, bool *isnull)
{
	*isnull = false;
	if (v->type == jbvNull)
	{
		*isnull = true;
		return (Datum) 0;
	}
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		bad_field(index, field, psprintf("must be a JSON object, not %s", jbv_type_name(v)),
				  "Send properties and context as objects of named fields, e.g. {\"price\": 9.99}.");
	return JsonbPGetDatum(jbv_to_jsonb(v));
}

/* properties or context from a JSON object; JSON null keeps the default {} */
void
set_object_column(IngestRow *row, int index, const char *key, JsonbValue *v)
{
	bool		isnull;
	Datum		d = object_field(index, key, v, &isnull);

	if (!isnull)
		row->values[key[0] == 'p' ? C_PROPERTIES : C_CONTEXT] = d;
}

char *
jbv_cstring(JsonbValue *v)
{
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * Runs an input function, turning its error into one that names the
 * element and field.
 */
static Datum
parse_input(PGFunction infunc, const char *str, int index, const char *field,
			const char *hint)
{
	volatile Datum result = (Datum) 0;
	MemoryContext ctx = CurrentMemoryContext;

	PG_TRY();
	{
		if (infunc == timestamptz_in)
			result = DirectFunctionCall3(timestamptz_in, CStringGetDatum(str),
										 ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
		else
			result = DirectFunctionCall1(infunc, CStringGetDatum(str));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(ctx);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(ERROR,
				(errcode(edata->sqlerrcode),
				 errmsg("invalid event at index %d of the batch: field \"%s\" is not valid",
						index, field),
				 errdetail("At JSON pointer \"/%d/%s\": %s.", index, field, edata->message),
				 errhint("%s", hint)));
	}
	PG_END_TRY();
	return result;
}

Datum
timestamp_field(int index, const char *field, JsonbValue *v, bool *isnull)
{
	*isnull = false;
	if (v->type == jbvNull)
	{
		*isnull = true;
		return (Datum) 0;
	}
	if (v->type != jbvString)
		bad_field(index, field, psprintf("must be a string, not %s", jbv_type_name(v)),
				  "Send times as ISO 8601 strings, e.g. \"2026-11-23T10:00:00Z\".");
	return parse_input(timestamptz_in, jbv_cstring(v), index, field,
					   "Send times as ISO 8601 strings, e.g. \"2026-11-23T10:00:00Z\".");
}

/* An element named like the envelope columns. */
void
map_envelope(int index, Jsonb *obj, IngestRow *row)
{
	JsonbIterator *it = JsonbIteratorInit(&obj->root);
	JsonbValue	k;
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		has_name = false;

	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		char	   *key;

		if (tok != WJB_KEY)
			continue;
		key = jbv_cstring(&k);
		tok = JsonbIteratorNext(&it, &v, true);

		if (strcmp(key, "event_id") == 0)
		{
			if (v.type == jbvNull)
				continue;		/* generated */
			if (v.type != jbvString)
				bad_field(index, key, psprintf("must be a string, not %s", jbv_type_name(&v)),
						  "Send event_id as a UUID string, or omit it to get a generated one.");
			row->values[C_EVENT_ID] = parse_input(uuid_in, jbv_cstring(&v), index, key,
												  "Send event_id as a UUID string, or omit it to get a generated one.");
			row->id_given = true;
		}
		else if (strcmp(key, "event_name") == 0)
		{
			if (v.type != jbvString || v.val.string.len == 0)
				bad_field(index, key,
						  v.type == jbvString ? "must not be empty" :
						  psprintf("must be a string, not %s", jbv_type_name(&v)),
						  "Every event needs a name such as \"page_view\".");
			row->values[C_EVENT_NAME] = PointerGetDatum(cstring_to_text_with_len(v.val.string.val,
																				 v.val.string.len));
			row->nulls[C_EVENT_NAME] = false;
			has_name = true;
		}
		else if (strcmp(key, "occurred_at") == 0)
		{
			bool		isnull;
			Datum		d = timestamp_field(index, key, &v, &isnull);

			if (!isnull)
			{
				row->values[C_OCCURRED_AT] = d;
				row->occurred_field = "occurred_at";
			}
		}
		else if (strcmp(key, "received_at") == 0)
			bad_field(index, key, "is set by the server",
					  "Omit received_at: the server records when each event arrives.");
		else if (strcmp(key, "user_id") == 0)
			row->values[C_USER_ID] = identity_text(index, key, &v, &row->nulls[C_USER_ID]);
		else if (strcmp(key, "anonymous_id") == 0)
			row->values[C_ANONYMOUS_ID] = identity_text(index, key, &v, &row->nulls[C_ANONYMOUS_ID]);
		else if (strcmp(key, "session_id") == 0)
			row->values[C_SESSION_ID] = identity_text(index, key, &v, &row->nulls[C_SESSION_ID]);
		else if (strcmp(key, "properties") == 0 || strcmp(key, "context") == 0)
			set_object_column(row, index, key, &v);
		else
			bad_field(index, key, "is not an envelope column",
					  "Fields are event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties and context; put anything else inside properties or context.");
	}
	if (!has_name)
		bad_field(index, "event_name", "is missing",
				  "Every event needs a name such as \"page_view\".");
}
