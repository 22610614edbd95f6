/*-------------------------------------------------------------------------
 * jsonschema.c
 *	  The JSON Schema validator's public API (jsonschema.h): GUCs, the
 *	  per-backend cache of compiled schemas, the schema registry
 *	  (stream.schemas) and the meta-schema check.
 *
 * Cache: compiled schemas are kept per backend in a hash keyed by a hash of
 * the schema's jsonb bytes (and the format-assertion setting it was
 * compiled with); a hit compares the full bytes.  At most
 * stream_events.max_schema_cache entries are kept, the least recently used
 * is evicted.
 *
 * Invalidation: a compiled schema that loaded documents from the registry
 * remembers their bytes.  On its first use in each transaction, and after
 * any change to stream.schemas made by this backend (a statement trigger
 * bumps a local counter), those documents are read again and compared; if
 * one changed or disappeared the schema is recompiled.  So a registry
 * change committed by another session is seen from the next transaction
 * on, and one's own change at once.  Schemas that never touched the
 * registry are never rechecked.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "jsonschema/internal.h"


typedef struct CacheItem
{
	Jsonb	   *bytes;			/* copy of the schema, in schema->cxt */
	JsonSchema *schema;
	uint64		last_used;
	LocalTransactionId checked_lxid;	/* registry verified in this xact */
	uint64		checked_generation;
	struct CacheItem *next;		/* same hash */
} CacheItem;

typedef struct CacheBucket
{
	uint32		hash;
	CacheItem  *items;
} CacheBucket;

static HTAB *schema_cache = NULL;
static uint64 cache_epoch = 0;	/* see jsonschema_cache_epoch() */
static MemoryContext cache_cxt = NULL;
static int	cache_count = 0;
static uint64 cache_clock = 0;

/* bumped by stream.schemas' trigger when this backend changes the registry */
static uint64 registry_generation = 1;


/* ---------- registry ---------- */

/*
 * The schema registered under uri in stream.schemas, or NULL.  The result
 * is allocated in CurrentMemoryContext.
 */
Jsonb *
jsonschema_registry_fetch(const char *uri)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	Jsonb	   *result = NULL;
	int			ret;

	values[0] = CStringGetTextDatum(uri);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute_with_args("SELECT schema FROM stream.schemas WHERE uri = $1",
								1, argtypes, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading stream.schemas failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			result = (Jsonb *) DatumGetPointer(SPI_datumTransfer(PointerGetDatum(DatumGetJsonbP(d)),
																 false, -1));
	}
	SPI_finish();
	return result;
}

/* Called by the statement trigger on stream.schemas. */
void
jsonschema_registry_changed(void)
{
	registry_generation++;
	cache_epoch++;
}

/* True if every registry document schema was compiled from is unchanged. */
static bool
registry_unchanged(CacheItem *item)
{
	ListCell   *lc;

	if (!item->schema->uses_registry)
		return true;
	if (item->checked_lxid == MyProc->lxid &&
		item->checked_generation == registry_generation)
		return true;
	foreach(lc, item->schema->documents)
	{
		JsDocument *doc = lfirst(lc);
		Jsonb	   *now;

		if (!doc->from_registry)
			continue;
		now = jsonschema_registry_fetch(doc->uri);
		if (now == NULL || VARSIZE(now) != VARSIZE(doc->jb) ||
			memcmp(now, doc->jb, VARSIZE(now)) != 0)
			return false;
	}
	item->checked_lxid = MyProc->lxid;
	item->checked_generation = registry_generation;
	return true;
}

/* ---------- cache ---------- */

static void
cache_remove(CacheBucket *bucket, CacheItem *item)
{
	CacheItem **p;

	for (p = &bucket->items; *p; p = &(*p)->next)
	{
		if (*p == item)
		{
			*p = item->next;
			break;
		}
	}
	MemoryContextDelete(item->schema->cxt);
	pfree(item);
	cache_count--;
	cache_epoch++;
	if (bucket->items == NULL)
		hash_search(schema_cache, &bucket->hash, HASH_REMOVE, NULL);
}

static void
cache_evict_one(void)
{
	HASH_SEQ_STATUS status;
	CacheBucket *bucket;
	CacheBucket *oldest_bucket = NULL;
	CacheItem  *oldest = NULL;

	hash_seq_init(&status, schema_cache);
	while ((bucket = hash_seq_search(&status)) != NULL)
	{
		CacheItem  *item;

		for (item = bucket->items; item; item = item->next)
		{
			if (oldest == NULL || item->last_used < oldest->last_used)
			{
				oldest = item;
				oldest_bucket = bucket;
			}
		}
	}
	if (oldest)
		cache_remove(oldest_bucket, oldest);
}

JsonSchema *
jsonschema_cached(Jsonb *schema)
{
	uint32		hash;
	CacheBucket *bucket;
	CacheItem  *item;
	bool		found;
	bool		fa = jsonschema_format_assertion;
	JsonSchema *compiled;

	if (schema_cache == NULL)
	{
		HASHCTL		ctl;

		cache_cxt = AllocSetContextCreate(TopMemoryContext, "json schema cache",
										  ALLOCSET_DEFAULT_SIZES);
		ctl.keysize = sizeof(uint32);
		ctl.entrysize = sizeof(CacheBucket);
		ctl.hcxt = cache_cxt;
		schema_cache = hash_create("json schema cache", 64, &ctl,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}

	hash = hash_bytes((const unsigned char *) schema, VARSIZE(schema)) ^ (fa ? 0x5bd1e995 : 0);
	bucket = hash_search(schema_cache, &hash, HASH_FIND, NULL);
	for (item = bucket ? bucket->items : NULL; item; item = item->next)
	{
		if (item->schema->format_assertion != fa ||
			VARSIZE(item->bytes) != VARSIZE(schema) ||
			memcmp(item->bytes, schema, VARSIZE(schema)) != 0)
			continue;
		if (!registry_unchanged(item))
		{
			cache_remove(bucket, item);
			break;
		}
		item->last_used = ++cache_clock;
		return item->schema;
	}

	/* miss: compile (an error leaves the cache as it was) */
	compiled = jsonschema_compile_internal(schema, NULL, cache_cxt, fa);

	while (cache_count >= jsonschema_max_cache_entries)
		cache_evict_one();
	bucket = hash_search(schema_cache, &hash, HASH_ENTER, &found);
	if (!found)
		bucket->items = NULL;
	item = MemoryContextAllocZero(cache_cxt, sizeof(CacheItem));
	item->schema = compiled;
	item->bytes = MemoryContextAlloc(compiled->cxt, VARSIZE(schema));
	memcpy(item->bytes, schema, VARSIZE(schema));
	item->last_used = ++cache_clock;
	item->checked_lxid = MyProc->lxid;
	item->checked_generation = registry_generation;
	item->next = bucket->items;
	bucket->items = item;
	cache_count++;
	return compiled;
}

/*
 * Changes whenever a schema returned by jsonschema_cached() may have been
 * freed or become stale within a transaction: an entry was removed, or this
 * backend changed the registry.  Callers that keep a JsonSchema pointer
 * across calls (the SQL functions, per query) compare it, together with
 * the transaction (registry documents are rechecked once per transaction).
 */
uint64
jsonschema_cache_epoch(void)
{
	return cache_epoch;
}

/* ---------- public API ---------- */

JsonSchema *
jsonschema_compile(Jsonb *schema, const char *base_uri)
{
	return jsonschema_compile_internal(schema, base_uri, CurrentMemoryContext,
									   jsonschema_format_assertion);
}

/*
 * As jsonschema_compile, with "format" asserted or not as the caller says
 * instead of the session's stream_events.format_assertion: contracts are
 * compiled with their stream's setting, never the producer's.
 */
JsonSchema *
jsonschema_compile_opts(Jsonb *schema, const char *base_uri, bool format_assertion)
{
	return jsonschema_compile_internal(schema, base_uri, CurrentMemoryContext,
									   format_assertion);
}

void
jsonschema_free(JsonSchema *schema)
{
	if (schema)
		MemoryContextDelete(schema->cxt);
}

bool
jsonschema_validate(JsonSchema *schema, Jsonb *instance)
{
	return jsonschema_validate_internal(schema, instance, NULL, 0);
}

List *
jsonschema_errors(JsonSchema *schema, Jsonb *instance, int max_errors)
{
	List	   *errors = NIL;

	(void) jsonschema_validate_internal(schema, instance, &errors, max_errors);
	return errors;
}

/* A schema that is just {"$ref": uri}, to validate against a meta-schema. */
static Jsonb *
ref_schema(const char *uri)
{
	JsonbParseState *state = NULL;
	JsonbValue	k,
				v;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	k.type = jbvString;
	k.val.string.val = "$ref";
	k.val.string.len = 4;
	pushJsonbValue(&state, WJB_KEY, &k);
	v.type = jbvString;
	v.val.string.val = (char *) uri;
	v.val.string.len = strlen(uri);
	pushJsonbValue(&state, WJB_VALUE, &v);
	return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
}

void
jsonschema_check(Jsonb *schema)
{
	const char *meta_uri = JS_META_2020_12;
	JsonbValue	root;
	JsonbValue	s;
	List	   *errors;

	/* compiling checks $schema, keyword values, references and regexes */
	(void) jsonschema_cached(schema);

	js_root_value(schema, &root);
	if (root.type == jbvBinary && JsonContainerIsObject(root.val.binary.data) &&
		js_get_key(root.val.binary.data, "$schema", 7, &s) && s.type == jbvString)
		meta_uri = js_cstring(&s);

	errors = jsonschema_errors(jsonschema_cached(ref_schema(meta_uri)), schema, 1);
	if (errors != NIL)
	{
		JsonSchemaError *err = linitial(errors);

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schema does not conform to its meta-schema: %s", err->message),
				 errdetail("at schema location \"%s\" (meta-schema keyword \"%s\")",
						   err->instance_path, err->schema_path),
				 errhint("The meta-schema is \"%s\".", meta_uri)));
	}
}
