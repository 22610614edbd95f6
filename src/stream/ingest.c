/*-------------------------------------------------------------------------
 * ingest.c
 *	  stream.ingest(stream, events jsonb): a JSON array of events, either
 *	  named like the envelope columns or Segment/RudderStack messages, is
 *	  mapped to rows and inserted through the stream's ordinary INSERT path
 *	  (so the trigger's checks and dedup apply exactly as for INSERT and
 *	  COPY), in chunks of INGEST_CHUNK rows.  Everything made for a chunk
 *	  (its rows, their jsonb copies, the arrays bound to the INSERT) lives
 *	  in a memory context reset after the chunk is inserted, so a call's
 *	  memory is its argument plus one chunk, whatever the array's length
 *	  (test/t/035_ingest_memory.pl).
 *
 * Segment mapping (docs/ingest.md): type track -> event_name = event;
 * page/screen/identify/alias/group -> event_name = the type, with name,
 * traits, groupId and previousId kept in properties; messageId -> event_id
 * (a name-based UUID when it is not a UUID); timestamp -> occurred_at;
 * userId/anonymousId -> user_id/anonymous_id; context.sessionId ->
 * session_id; every other top-level key is kept under context.segment.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "stream_events.h"
#include "core/uuid.h"

PG_FUNCTION_INFO_V1(stream_ingest);

#define INGEST_CHUNK 10000
#define N_INGEST_COLS 8			/* every envelope column but received_at */

/* namespace of name-based event_ids made from Segment messageIds */
static const pg_uuid_t segment_namespace = {{
		0x5e, 0x6d, 0x3a, 0x2b, 0x71, 0x4c, 0x4f, 0x0e,
		0x9a, 0x51, 0x27, 0x0b, 0x3c, 0x8e, 0x11, 0xd4
}};

typedef struct IngestRow
{
	Datum		values[N_INGEST_COLS];
	bool		nulls[N_INGEST_COLS];
	const char *occurred_field; /* the key occurred_at came from, or NULL */
	bool		id_given;		/* event_id (or messageId) sent, not generated */
} IngestRow;

/* the chunk being inserted, counted by the insert trigger (stream.c) */
IngestProgress *se_ingest_progress = NULL;

/* column order of the INSERT below */
enum
{
	C_EVENT_ID, C_EVENT_NAME, C_OCCURRED_AT, C_USER_ID, C_ANONYMOUS_ID,
	C_SESSION_ID, C_PROPERTIES, C_CONTEXT
};

static const Oid col_types[N_INGEST_COLS] = {
	UUIDOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID
};

static void bad_field(int index, const char *field, const char *problem,
					  const char *hint) pg_attribute_noreturn();

static void
bad_field(int index, const char *field, const char *problem, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid event at index %d of the batch: field \"%s\" %s",
					index, field, problem),
			 errdetail("The value at JSON pointer \"/%d/%s\" is not accepted.", index, field),
			 errhint("%s", hint)));
}

static const char *
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

static bool
get_field(Jsonb *obj, const char *key, JsonbValue *out)
{
	JsonbValue	k;
	JsonbValue *v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&obj->root, JB_FOBJECT, &k);
	if (v == NULL)
		return false;
	*out = *v;
	return true;
}

static Jsonb *
jbv_to_jsonb(JsonbValue *v)
{
	return JsonbValueToJsonb(v);
}

/* text of a string or number identity field; NULL for JSON null */
static Datum
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
static void
set_object_column(IngestRow *row, int index, const char *key, JsonbValue *v)
{
	bool		isnull;
	Datum		d = object_field(index, key, v, &isnull);

	if (!isnull)
		row->values[key[0] == 'p' ? C_PROPERTIES : C_CONTEXT] = d;
}

static char *
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

static Datum
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

/*
 * A row of defaults; empty_object is the one '{}' of the call (jsonb_in
 * per row cost about 2 kB and a parse each).
 */
static void
default_row(IngestRow *row, Datum empty_object)
{
	pg_uuid_t  *id = palloc(UUID_LEN);

	uuid_v7_generate(id);
	memset(row->nulls, 0, sizeof(row->nulls));
	row->values[C_EVENT_ID] = UUIDPGetDatum(id);
	row->nulls[C_EVENT_NAME] = true;
	row->values[C_OCCURRED_AT] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	row->nulls[C_USER_ID] = row->nulls[C_ANONYMOUS_ID] = row->nulls[C_SESSION_ID] = true;
	row->values[C_PROPERTIES] = empty_object;
	row->values[C_CONTEXT] = empty_object;
	row->occurred_field = NULL;
	row->id_given = false;
}

/*
 * Copies a mapped row's values to the current (chunk) context at their
 * exact size, so that the element's scratch memory can go.  The shared
 * empty object is not copied: it lives as long as the call.
 */
static void
keep_row(IngestRow *row, Datum empty_object)
{
	for (int c = 0; c < N_INGEST_COLS; c++)
	{
		int16		typlen;
		bool		typbyval;

		if (row->nulls[c] || row->values[c] == empty_object)
			continue;
		get_typlenbyval(col_types[c], &typlen, &typbyval);
		row->values[c] = datumCopy(row->values[c], typbyval, typlen);
	}
}

/* "event_id <uuid>", or that none was sent (a generated one means nothing) */
static char *
row_event_id(IngestRow *row)
{
	if (!row->id_given)
		return "no event_id sent";
	return psprintf("event_id %s",
					DatumGetCString(DirectFunctionCall1(uuid_out, row->values[C_EVENT_ID])));
}

/*
 * occurred_at 'infinity' / '-infinity' fits no partition and no window
 * (the insert trigger refuses it too; here the error names the element).
 */
static void
check_finite(int index, IngestRow *row)
{
	TimestampTz t = DatumGetTimestampTz(row->values[C_OCCURRED_AT]);

	if (!TIMESTAMP_NOT_FINITE(t))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
			 errmsg("invalid event at index %d of the batch: field \"%s\" must be a finite time",
					index, row->occurred_field ? row->occurred_field : "occurred_at"),
			 errdetail("The value at JSON pointer \"/%d/%s\" is %s (%s).",
					   index, row->occurred_field ? row->occurred_field : "occurred_at",
					   TIMESTAMP_IS_NOBEGIN(t) ? "-infinity" : "infinity",
					   row_event_id(row)),
			 errhint("Send the time the event happened as an ISO 8601 string, e.g. \"2026-11-23T10:00:00Z\", or omit it to use the time of ingest.")));
}

/* An element named like the envelope columns. */
static void
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

/* Builds {"key": value, ...} from parallel arrays; NULL values skipped. */
static Jsonb *
build_object(int n, const char **keys, JsonbValue **vals)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < n; i++)
	{
		JsonbValue	k;

		if (vals[i] == NULL)
			continue;
		k.type = jbvString;
		k.val.string.val = (char *) keys[i];
		k.val.string.len = strlen(keys[i]);
		pushJsonbValue(&state, WJB_KEY, &k);
		pushJsonbValue(&state, WJB_VALUE, vals[i]);
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

static Datum
jsonb_merge(Datum a, Jsonb *b)
{
	return DirectFunctionCall2(jsonb_concat, a, JsonbPGetDatum(b));
}

static bool
is_uuid_text(const char *s, int len)
{
	int			hex = 0;

	if (len != 36)
		return false;
	for (int i = 0; i < len; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (s[i] != '-')
				return false;
		}
		else if (isxdigit((unsigned char) s[i]))
			hex++;
		else
			return false;
	}
	return hex == 32;
}

/* A Segment / RudderStack message (spec: track, page, screen, identify, alias, group). */
static void
map_segment(int index, Jsonb *obj, IngestRow *row)
{
	JsonbIterator *it = JsonbIteratorInit(&obj->root);
	JsonbValue	k;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *type = NULL;
	JsonbValue	event = {.type = jbvNull};
	JsonbValue	name = {.type = jbvNull};
	JsonbValue	traits = {.type = jbvNull};
	JsonbValue	group_id = {.type = jbvNull};
	JsonbValue	previous_id = {.type = jbvNull};
	JsonbValue	message_id_orig = {.type = jbvNull};
	JsonbParseState *extra = NULL;
	JsonbValue *extra_obj;
	int			n_extra = 0;
	bool		have_timestamp = false;

	pushJsonbValue(&extra, WJB_BEGIN_OBJECT, NULL);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		char	   *key;

		if (tok != WJB_KEY)
			continue;
		key = jbv_cstring(&k);
		tok = JsonbIteratorNext(&it, &v, true);

		if (strcmp(key, "type") == 0)
		{
			if (v.type != jbvString)
				bad_field(index, key, psprintf("must be a string, not %s", jbv_type_name(&v)),
						  "Segment message types are track, page, screen, identify, alias and group.");
			type = jbv_cstring(&v);
		}
		else if (strcmp(key, "event") == 0)
			event = v;
		else if (strcmp(key, "name") == 0)
			name = v;
		else if (strcmp(key, "traits") == 0)
			traits = v;
		else if (strcmp(key, "groupId") == 0)
			group_id = v;
		else if (strcmp(key, "previousId") == 0)
			previous_id = v;
		else if (strcmp(key, "messageId") == 0)
		{
			if (v.type == jbvNull)
				continue;
			if (v.type != jbvString || v.val.string.len == 0)
				bad_field(index, key, v.type == jbvString ? "must not be empty" :
						  psprintf("must be a string, not %s", jbv_type_name(&v)),
						  "Send messageId as a string; retries must carry the same one.");
			row->id_given = true;
			if (is_uuid_text(v.val.string.val, v.val.string.len))
				row->values[C_EVENT_ID] = DirectFunctionCall1(uuid_in,
															  CStringGetDatum(jbv_cstring(&v)));
			else
			{
				pg_uuid_t  *id = palloc(UUID_LEN);

				uuid_v5_from_name(&segment_namespace, v.val.string.val,
								  v.val.string.len, id);
				row->values[C_EVENT_ID] = UUIDPGetDatum(id);
				message_id_orig = v;
			}
		}
		else if (strcmp(key, "timestamp") == 0 ||
				 (strcmp(key, "originalTimestamp") == 0 && !have_timestamp))
		{
			bool		isnull;
			Datum		d = timestamp_field(index, key, &v, &isnull);

			if (!isnull)
			{
				row->values[C_OCCURRED_AT] = d;
				row->occurred_field = key[0] == 't' ? "timestamp" : "originalTimestamp";
				have_timestamp = (key[0] == 't');
			}
			if (key[0] == 'o')
				goto keep;		/* originalTimestamp is also kept */
		}
		else if (strcmp(key, "userId") == 0)
			row->values[C_USER_ID] = identity_text(index, key, &v, &row->nulls[C_USER_ID]);
		else if (strcmp(key, "anonymousId") == 0)
			row->values[C_ANONYMOUS_ID] = identity_text(index, key, &v, &row->nulls[C_ANONYMOUS_ID]);
		else if (strcmp(key, "properties") == 0 || strcmp(key, "context") == 0)
			set_object_column(row, index, key, &v);
		else
			goto keep;
		continue;
keep:
		/* unknown or unmapped top-level keys are kept, never an error */
		pushJsonbValue(&extra, WJB_KEY, &k);
		pushJsonbValue(&extra, WJB_VALUE, &v);
		n_extra++;
	}

	if (type == NULL)
		type = "track";
	if (strcmp(type, "track") == 0)
	{
		if (event.type != jbvString || event.val.string.len == 0)
			bad_field(index, "event", event.type == jbvString ? "must not be empty" :
					  event.type == jbvNull ? "is missing" :
					  psprintf("must be a string, not %s", jbv_type_name(&event)),
					  "A Segment track call names its event, e.g. \"event\": \"Order Completed\".");
		row->values[C_EVENT_NAME] = PointerGetDatum(cstring_to_text_with_len(event.val.string.val,
																			 event.val.string.len));
	}
	else if (strcmp(type, "page") == 0 || strcmp(type, "screen") == 0 ||
			 strcmp(type, "identify") == 0 || strcmp(type, "alias") == 0 ||
			 strcmp(type, "group") == 0)
		row->values[C_EVENT_NAME] = CStringGetTextDatum(type);
	else
		bad_field(index, "type", psprintf("has unknown value \"%s\"", type),
				  "Segment message types are track, page, screen, identify, alias and group.");
	row->nulls[C_EVENT_NAME] = false;

	/* fields kept in properties */
	{
		const char *keys[4] = {"name", "traits", "group_id", "previous_id"};
		JsonbValue *vals[4] = {NULL, NULL, NULL, NULL};

		if (name.type != jbvNull)
			vals[0] = &name;
		if (traits.type != jbvNull)
			vals[1] = &traits;
		if (group_id.type != jbvNull)
			vals[2] = &group_id;
		if (previous_id.type != jbvNull)
			vals[3] = &previous_id;
		if (vals[0] || vals[1] || vals[2] || vals[3])
			row->values[C_PROPERTIES] = jsonb_merge(row->values[C_PROPERTIES],
													build_object(4, keys, vals));
	}

	/* session_id from context.sessionId (RudderStack) */
	{
		JsonbValue	sid;

		if (get_field(DatumGetJsonbP(row->values[C_CONTEXT]), "sessionId", &sid) &&
			(sid.type == jbvString || sid.type == jbvNumeric))
			row->values[C_SESSION_ID] = identity_text(index, "context/sessionId", &sid,
													  &row->nulls[C_SESSION_ID]);
	}

	/* original messageId and unknown keys under context.segment */
	if (message_id_orig.type != jbvNull)
	{
		JsonbValue	mk = {.type = jbvString};

		mk.val.string.val = "messageId";
		mk.val.string.len = 9;
		pushJsonbValue(&extra, WJB_KEY, &mk);
		pushJsonbValue(&extra, WJB_VALUE, &message_id_orig);
		n_extra++;
	}
	extra_obj = pushJsonbValue(&extra, WJB_END_OBJECT, NULL);
	if (n_extra > 0)
	{
		const char *keys[1] = {"segment"};
		JsonbValue	wrapped;
		JsonbValue *vals[1] = {&wrapped};
		Jsonb	   *inner = JsonbValueToJsonb(extra_obj);

		wrapped.type = jbvBinary;
		wrapped.val.binary.data = &inner->root;
		wrapped.val.binary.len = VARSIZE(inner) - VARHDRSZ;
		row->values[C_CONTEXT] = jsonb_merge(row->values[C_CONTEXT],
											 build_object(1, keys, vals));
	}
}

static bool
looks_like_segment(Jsonb *obj)
{
	static const char *const keys[] = {"type", "event", "messageId", "userId",
	"anonymousId", "timestamp"};
	JsonbValue	v;

	if (get_field(obj, "event_name", &v))
		return false;
	for (int i = 0; i < lengthof(keys); i++)
		if (get_field(obj, keys[i], &v))
			return true;
	return false;
}

/*
 * An error the insert trigger raised for one row of the chunk (a contract
 * rejection, an envelope check), re-raised naming the batch index and the
 * event_id, without the internal INSERT in its CONTEXT.  Other errors
 * (cancel, lock timeout, ...) go on as they are.
 */
static void
insert_chunk_error(ErrorData *edata, IngestRow *rows, int n, int base, int seen)
{
	int			cls = ERRCODE_TO_CATEGORY(edata->sqlerrcode);
	int			i = seen - 1;

	if (cls != ERRCODE_DATA_EXCEPTION && cls != ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION &&
		cls != ERRCODE_TO_CATEGORY(ERRCODE_INVALID_PARAMETER_VALUE))
		ReThrowError(edata);
	if (i < 0 || i >= n)
		ereport(ERROR,
				(errcode(edata->sqlerrcode),
				 errmsg_internal("%s", edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
				 edata->hint ? errhint("%s", edata->hint) : 0));
	ereport(ERROR,
			(errcode(edata->sqlerrcode),
			 errmsg_internal("invalid event at index %d of the batch: %s",
							 base + i, edata->message),
			 edata->detail ?
			 errdetail_internal("At JSON pointer \"/%d\", %s: %s",
								base + i, row_event_id(&rows[i]), edata->detail) :
			 errdetail_internal("At JSON pointer \"/%d\", %s.",
								base + i, row_event_id(&rows[i])),
			 edata->hint ? errhint("%s", edata->hint) : 0));
}

static uint64
insert_chunk(const char *sql, Oid relid, IngestRow *rows, int n, int base)
{
	Datum		args[N_INGEST_COLS];
	char		nulls[N_INGEST_COLS];
	Datum	   *elems = palloc(n * sizeof(Datum));
	bool	   *elnulls = palloc(n * sizeof(bool));
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int			ret;

	for (int c = 0; c < N_INGEST_COLS; c++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;

		for (int i = 0; i < n; i++)
		{
			elems[i] = rows[i].values[c];
			elnulls[i] = rows[i].nulls[c];
		}
		get_typlenbyvalalign(col_types[c], &typlen, &typbyval, &typalign);
		args[c] = PointerGetDatum(construct_md_array(elems, elnulls, 1, dims, lbs,
													 col_types[c], typlen, typbyval, typalign));
		nulls[c] = ' ';
	}
	{
		Oid			argtypes[N_INGEST_COLS];
		IngestProgress progress = {.stream_relid = relid,.rows_seen = 0};
		IngestProgress *saved = se_ingest_progress;
		MemoryContext ctx = CurrentMemoryContext;

		for (int c = 0; c < N_INGEST_COLS; c++)
			argtypes[c] = get_array_type(col_types[c]);
		se_ingest_progress = &progress;
		PG_TRY();
		{
			ret = SPI_execute_with_args(sql, N_INGEST_COLS, argtypes, args, nulls, false, 0);
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			se_ingest_progress = saved;
			MemoryContextSwitchTo(ctx);
			edata = CopyErrorData();
			FlushErrorState();
			insert_chunk_error(edata, rows, n, base, progress.rows_seen);
		}
		PG_END_TRY();
		se_ingest_progress = saved;
	}
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "stream.ingest: insert failed: %s", SPI_result_code_string(ret));
	pfree(elems);
	pfree(elnulls);
	return SPI_processed;
}

Datum
stream_ingest(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	Jsonb	   *events = PG_GETARG_JSONB_P(1);
	TupleDesc	tupdesc;
	Datum		result[3];
	bool		rnulls[3] = {false, false, false};
	uint64		dup_before = stats_backend_duplicates;
	uint64		quarantined_before = stats_backend_quarantined;
	uint64		accepted = 0;
	IngestRow  *rows;
	int			n_rows = 0;
	int			n;
	char	   *sql;
	Datum		empty_object;
	MemoryContext chunk_context;
	MemoryContext element_context;
	MemoryContext call_context;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			index = -1;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	if (!JB_ROOT_IS_ARRAY(events) || JB_ROOT_IS_SCALAR(events))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("events must be a JSON array"),
				 errdetail("The value given is a JSON %s.",
						   JB_ROOT_IS_SCALAR(events) ? "scalar" : "object"),
				 errhint("Wrap events in an array: [{\"event_name\": \"page_view\"}, ...]; for a Segment batch body pass its \"batch\" member.")));

	sql = psprintf("INSERT INTO %s (event_id, event_name, occurred_at, user_id, anonymous_id, "
				   "session_id, properties, context) "
				   "SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8)",
				   DatumGetCString(DirectFunctionCall1(regclassout, ObjectIdGetDatum(relid))));
	{
		/* refuse anything that is not a stream before touching it */
		Oid			argtypes[1] = {OIDOID};
		Datum		args[1] = {ObjectIdGetDatum(relid)};

		SPI_connect();
		if (SPI_execute_with_args("SELECT 1 FROM stream.streams WHERE relid = $1::regclass",
								  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("relation \"%s\" is not a stream", get_rel_name(relid)),
					 errhint("Create streams with stream.create_stream(); see stream.stream_list.")));
	}

	/*
	 * Three lifetimes.  The call's own allocations (SPI's procedure context,
	 * freed by SPI_finish) hold only what lasts the whole call: the row
	 * array, the iterator, the statement text.  An element is mapped in
	 * element_context, reset for the next one: the mapping makes jsonb
	 * copies and intermediate objects of at least 1 kB each (StringInfo
	 * buffers), about 7 kB an event, which kept until the end of the call
	 * came to 2.6 GB for 300,000 events.  Only the row's final values are
	 * copied, at their exact size, to chunk_context (a generation context:
	 * no power-of-two rounding), with the chunk's arrays; it is reset once
	 * the chunk is inserted.
	 */
	call_context = CurrentMemoryContext;
	chunk_context = GenerationContextCreate(call_context, "stream.ingest chunk",
											ALLOCSET_DEFAULT_SIZES);
	element_context = AllocSetContextCreate(call_context, "stream.ingest element",
											ALLOCSET_DEFAULT_SIZES);
	empty_object = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
	n = JB_ROOT_COUNT(events);
	rows = palloc(Min(n, INGEST_CHUNK) * sizeof(IngestRow) + 1);
	it = JsonbIteratorInit(&events->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		Jsonb	   *obj;

		if (tok != WJB_ELEM)
			continue;
		index++;
		CHECK_FOR_INTERRUPTS();
		MemoryContextReset(element_context);
		MemoryContextSwitchTo(element_context);
		if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid event at index %d of the batch: not a JSON object", index),
					 errdetail("The value at JSON pointer \"/%d\" is %s.", index, jbv_type_name(&v)),
					 errhint("Each element is an object such as {\"event_name\": \"page_view\", \"user_id\": \"u1\"}.")));
		obj = JsonbValueToJsonb(&v);
		default_row(&rows[n_rows], empty_object);
		if (looks_like_segment(obj))
			map_segment(index, obj, &rows[n_rows]);
		else
			map_envelope(index, obj, &rows[n_rows]);
		check_finite(index, &rows[n_rows]);
		MemoryContextSwitchTo(chunk_context);
		keep_row(&rows[n_rows], empty_object);
		n_rows++;
		if (n_rows == INGEST_CHUNK)
		{
			accepted += insert_chunk(sql, relid, rows, n_rows, index + 1 - n_rows);
			n_rows = 0;
			MemoryContextReset(chunk_context);
		}
		MemoryContextSwitchTo(call_context);
	}
	if (n_rows > 0)
	{
		MemoryContextSwitchTo(chunk_context);
		accepted += insert_chunk(sql, relid, rows, n_rows, index + 1 - n_rows);
		MemoryContextSwitchTo(call_context);
	}
	SPI_finish();

	result[0] = Int64GetDatum((int64) accepted);
	result[1] = Int64GetDatum((int64) (stats_backend_duplicates - dup_before));
	result[2] = Int64GetDatum((int64) (stats_backend_quarantined - quarantined_before));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, rnulls)));
}
