/*-------------------------------------------------------------------------
 * segment.c
 *	  stream.ingest's mapping of a Segment / RudderStack message to a row,
 *	  and the test that tells such a message from an element named like
 *	  the envelope columns (envelope.c).
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

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "core/uuid.h"
#include "stream/ingest.h"

/* namespace of name-based event_ids made from Segment messageIds */
static const pg_uuid_t segment_namespace = {{
		0x5e, 0x6d, 0x3a, 0x2b, 0x71, 0x4c, 0x4f, 0x0e,
		0x9a, 0x51, 0x27, 0x0b, 0x3c, 0x8e, 0x11, 0xd4
}};

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
void
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

bool
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
