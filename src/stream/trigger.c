/*-------------------------------------------------------------------------
 * trigger.c
 *	  Streams at row level: the BEFORE INSERT trigger every stream carries
 *	  (server-set received_at, envelope checks, dedup, counters), the
 *	  append-only trigger, and the per-backend cache of stream options,
 *	  invalidated through relcache callbacks.
 *
 * The catalog (stream.streams, stream.contracts, stream.schemas) is read as
 * the extension's owner, inside an owner scope (owner.h): a producer needs
 * INSERT on the stream and nothing else, whatever the catalogs' row level
 * security shows it, and the fixed queries run no user code.  Enforcement
 * options are the stream's (max_future, format_assertion), else the
 * server-wide defaults, which only a superuser sets: a producer's session
 * settings never weaken them.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "access/xact.h"

#include "jsonschema/jsonschema.h"
#include "core/owner.h"
#include "stream/queue.h"
#include "stream_events.h"

PG_FUNCTION_INFO_V1(stream_ingest_trigger);
PG_FUNCTION_INFO_V1(stream_append_only_trigger);
PG_FUNCTION_INFO_V1(stream_stream_changed);

typedef struct StreamCacheEntry
{
	Oid			relid;			/* hash key: relation the trigger fires on */
	bool		valid;
	StreamInfo	info;
} StreamCacheEntry;

static HTAB *stream_cache = NULL;
static Oid	schema_registry_relid = InvalidOid;	/* stream.schemas */

static void
stream_cache_invalidate(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	StreamCacheEntry *entry;

	if (stream_cache == NULL)
		return;
	hash_seq_init(&status, stream_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		/* a registry change may alter what a contract's $ref points to */
		if (relid == InvalidOid || relid == schema_registry_relid ||
			entry->relid == relid || entry->info.stream_relid == relid)
			entry->valid = false;
	}
}

static void
stream_cache_init(void)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(StreamCacheEntry);
	ctl.hcxt = CacheMemoryContext;
	stream_cache = hash_create("stream_events stream cache", 64, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	CacheRegisterRelcacheCallback(stream_cache_invalidate, (Datum) 0);
}

Oid
stream_catalog_relid(void)
{
	Oid			nsp = get_namespace_oid("stream", false);

	return get_relname_relid("streams", nsp);
}

/*
 * Reads the catalog row of a stream into info (options, policy, compiled
 * contracts); false if it is not a stream.
 */
static bool
stream_read_catalog(Oid stream_relid, StreamInfo *info)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(stream_relid)};
	bool		found = false;
	int			ret;
	OwnerScope	scope;

	/*
	 * As the extension's owner (see the top of the file); an error leaves
	 * the scope through the (sub)transaction's abort.  format_assertion is
	 * read through to_jsonb so that a catalog without the column (before
	 * the upgrade that adds it) reads as NULL: the server default.
	 */
	owner_enter(&scope, owner_of_extension(), NULL);
	SPI_connect();
	ret = SPI_execute_with_args("SELECT stream_id, dedup_window IS NOT NULL, on_violation, "
								"on_unplanned, event_name_pattern, require_identity, "
								"extract(epoch FROM max_future)::float8, quarantine::oid, "
								"EXISTS (SELECT 1 FROM stream.contracts c "
								"        WHERE c.stream_id = s.stream_id), "
								"(to_jsonb(s) ->> 'format_assertion')::boolean "
								"FROM stream.streams s WHERE relid = $1::regclass",
								1, argtypes, args, NULL, true, 1);
	if (ret == SPI_OK_SELECT && SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;
		MemoryContext old;
		bool		has_contracts;

		info->stream_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		info->dedup = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
		info->on_violation = SPI_getvalue(tup, desc, 3)[0];
		info->on_unplanned = SPI_getvalue(tup, desc, 4)[0];
		d = SPI_getbinval(tup, desc, 5, &isnull);
		old = MemoryContextSwitchTo(info->context);
		info->event_name_pattern = isnull ? NULL : DatumGetTextPCopy(d);
		MemoryContextSwitchTo(old);
		info->require_identity = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
		d = SPI_getbinval(tup, desc, 7, &isnull);
		info->has_max_future = !isnull;
		info->max_future_usecs = isnull ? 0 : (int64) (DatumGetFloat8(d) * USECS_PER_SEC);
		d = SPI_getbinval(tup, desc, 8, &isnull);
		info->quarantine_relid = isnull ? InvalidOid : DatumGetObjectId(d);
		has_contracts = DatumGetBool(SPI_getbinval(tup, desc, 9, &isnull));
		d = SPI_getbinval(tup, desc, 10, &isnull);
		info->format_assertion_default = isnull;
		info->format_assertion = isnull ? jsonschema_format_assertion : DatumGetBool(d);
		info->contracts = has_contracts ?
			contract_load(info->stream_id, info->context, info->format_assertion) : NULL;
		found = true;
	}
	SPI_finish();
	owner_exit(&scope);
	return found;
}

/*
 * What the trigger needs to know about the relation it fired on (a stream's
 * partition, or the stream itself): cached until a relcache invalidation of
 * the relation or of its stream (define_contract and set_policy send one).
 */
StreamInfo *
stream_lookup(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	StreamCacheEntry *entry;
	bool		found;
	Oid			stream_relid;
	MemoryContext context;

	if (stream_cache == NULL)
		stream_cache_init();
	if (!OidIsValid(schema_registry_relid))
		schema_registry_relid = get_relname_relid("schemas",
												  get_namespace_oid("stream", false));

	entry = hash_search(stream_cache, &relid, HASH_FIND, &found);

	/*
	 * The server-wide defaults changed (a reload) since the entry was
	 * built: contracts compiled with the old format_assertion, or enforce
	 * computed without the new max_future, are rebuilt.
	 */
	if (found && entry->valid &&
		(entry->info.guc_max_future_set != se_max_future_set ||
		 (entry->info.format_assertion_default &&
		  entry->info.format_assertion != jsonschema_format_assertion)))
		entry->valid = false;
	if (found && entry->valid)
		return &entry->info;
	if (found && entry->info.context)
	{
		MemoryContextDelete(entry->info.context);
		entry->info.context = NULL;
	}

	stream_relid = relid;
	if (rel->rd_rel->relispartition)
		stream_relid = get_partition_parent(relid, true);

	entry = hash_search(stream_cache, &relid, HASH_ENTER, &found);
	entry->valid = false;
	memset(&entry->info, 0, sizeof(StreamInfo));
	context = AllocSetContextCreate(CacheMemoryContext, "stream_events stream",
									ALLOCSET_SMALL_SIZES);
	entry->info.context = context;
	entry->info.relid = relid;
	entry->info.stream_relid = stream_relid;
	if (!stream_read_catalog(stream_relid, &entry->info))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("relation \"%s\" is not a stream",
						RelationGetRelationName(rel)),
				 errdetail("The stream_events triggers are installed on it, but stream.streams has no row for it."),
				 errhint("Create streams with stream.create_stream().")));
	entry->info.guc_max_future_set = se_max_future_set;
	entry->info.enforce = entry->info.contracts != NULL ||
		entry->info.event_name_pattern != NULL ||
		entry->info.require_identity ||
		entry->info.has_max_future ||
		se_max_future_set ||
		entry->info.on_unplanned != 'a';

	for (int i = 0; i < ENV_NCOLUMNS; i++)
	{
		AttrNumber	attnum = InvalidAttrNumber;

		for (int a = 0; a < RelationGetDescr(rel)->natts; a++)
		{
			Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), a);

			if (!att->attisdropped &&
				strcmp(NameStr(att->attname), envelope_column_names[i]) == 0)
			{
				attnum = att->attnum;
				break;
			}
		}
		if (attnum == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("stream \"%s\" has no column \"%s\"",
							RelationGetRelationName(rel), envelope_column_names[i]),
					 errhint("Every stream has the event envelope columns; do not drop or rename them.")));
		entry->info.attnums[i] = attnum;
	}
	entry->valid = true;
	return &entry->info;
}

static void
check_not_null(Relation rel, StreamInfo *info, bool *nulls, EnvelopeColumn col,
			   const char *hint)
{
	if (nulls[info->attnums[col] - 1])
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("%s must not be null", envelope_column_names[col]),
				 errdetail("The event was sent to stream \"%s\".",
						   get_rel_name(info->stream_relid)),
				 errhint("%s", hint)));
}

static void
check_object(StreamInfo *info, Datum *values, bool *nulls, EnvelopeColumn col)
{
	Jsonb	   *jb;

	if (nulls[info->attnums[col] - 1])
		return;
	jb = DatumGetJsonbP(values[info->attnums[col] - 1]);
	if (!JB_ROOT_IS_OBJECT(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", envelope_column_names[col]),
				 errdetail("The value at \"/%s\" is a JSON %s.",
						   envelope_column_names[col],
						   JB_ROOT_IS_SCALAR(jb) ? "scalar" : "array"),
				 errhint("Send %s as an object of named fields, e.g. '{\"price\": 9.99}'.",
						 envelope_column_names[col])));
}

/*
 * occurred_at = 'infinity' or '-infinity' fits no partition and no window:
 * refused at the door (stream.ingest refuses it earlier, naming the batch
 * index).
 */
static void
check_finite_occurred_at(StreamInfo *info, Datum *values)
{
	TimestampTz occurred = DatumGetTimestampTz(values[info->attnums[ENV_OCCURRED_AT] - 1]);

	if (TIMESTAMP_NOT_FINITE(occurred))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("occurred_at must be a finite time"),
				 errdetail("Event %s sent to stream \"%s\" has occurred_at = %s.",
						   DatumGetCString(DirectFunctionCall1(uuid_out,
															   values[info->attnums[ENV_EVENT_ID] - 1])),
						   get_rel_name(info->stream_relid),
						   TIMESTAMP_IS_NOBEGIN(occurred) ? "-infinity" : "infinity"),
				 errhint("Send the time the event happened, or omit occurred_at to use the time of ingest.")));
}

/*
 * The insert trigger's work on one row of a stream before dedup, in the row
 * type of rel (the stream or one of its partitions): the envelope checks,
 * the server's received_at (set in values), the envelope rules and
 * contracts (a quarantined event is stored in the quarantine instead).
 * Returns false when the row is not to be stored (quarantined);
 * *received_changed says whether received_at was changed.  The batched
 * COPY (copy.c) calls it per row and registers a batch's keys together.
 */
bool
stream_check_row(Relation rel, StreamInfo *info, Datum *values, bool *nulls,
				 bool *received_changed)
{
	TimestampTz received_at;

	check_not_null(rel, info, nulls, ENV_EVENT_ID,
				   "Omit event_id to get a generated one, or send a UUID.");
	check_not_null(rel, info, nulls, ENV_EVENT_NAME,
				   "Every event needs a name such as 'page_view'.");
	check_not_null(rel, info, nulls, ENV_OCCURRED_AT,
				   "Omit occurred_at to use the time of ingest, or send the event time.");
	check_not_null(rel, info, nulls, ENV_PROPERTIES,
				   "Omit properties or send '{}' when the event has none.");
	check_not_null(rel, info, nulls, ENV_CONTEXT,
				   "Omit context or send '{}' when the event has none.");
	check_object(info, values, nulls, ENV_PROPERTIES);
	check_object(info, values, nulls, ENV_CONTEXT);
	check_finite_occurred_at(info, values);

	/* received_at is always the server's: the start of the statement */
	received_at = GetCurrentStatementStartTimestamp();
	/* the column default (statement_timestamp()) already gave it, usually */
	*received_changed = nulls[info->attnums[ENV_RECEIVED_AT] - 1] ||
		DatumGetTimestampTz(values[info->attnums[ENV_RECEIVED_AT] - 1]) != received_at;
	values[info->attnums[ENV_RECEIVED_AT] - 1] = TimestampTzGetDatum(received_at);
	nulls[info->attnums[ENV_RECEIVED_AT] - 1] = false;

	/* envelope rules and contracts, before dedup: a refused event is no key */
	if (info->enforce)
	{
		int			version = 0;
		Jsonb	   *errors = NULL;
		char	   *first_errors = NULL;
		CheckResult result = contract_check(info, values, nulls, &version,
											&errors, &first_errors);
		text	   *name = DatumGetTextPP(values[info->attnums[ENV_EVENT_NAME] - 1]);
		char		policy = result == CHECK_UNPLANNED ? info->on_unplanned : info->on_violation;

		if (result == CHECK_FAILED || result == CHECK_UNPLANNED)
		{
			if (policy == 'r')
			{
				stats_count_rejected(info->stream_relid, name);
				contract_reject(info, values, result, version, first_errors);
			}
			if (policy == 'q')
			{
				contract_quarantine(info, values, nulls, version, errors);
				stats_count_check(info->stream_relid, name, result, policy);
				return false;
			}
		}
		if (result != CHECK_NOT_CHECKED)
			stats_count_check(info->stream_relid, name, result, policy);
	}
	return true;
}

/*
 * An event passed its checks and dedup and is about to be stored: the
 * counters and, in queue mode, the transaction's row of stream.queue_txns.
 */
void
stream_row_accepted(StreamInfo *info, TimestampTz occurred_at,
					TimestampTz received_at)
{
	stats_count_event(info->stream_relid, occurred_at, received_at);
	/* queue mode: the (sub)transaction's row of stream.queue_txns */
	queue_note_insert(info->stream_relid, received_at);
}

/*
 * The insert trigger's work on one row: stream_check_row, dedup (one key),
 * stream_row_accepted.  Returns false when the row is not to be stored
 * (quarantined, or a duplicate).
 */
static bool
stream_accept_row(Relation rel, StreamInfo *info, Datum *values, bool *nulls,
				  bool *received_changed)
{
	TimestampTz received_at;

	if (!stream_check_row(rel, info, values, nulls, received_changed))
		return false;
	received_at = DatumGetTimestampTz(values[info->attnums[ENV_RECEIVED_AT] - 1]);
	if (info->dedup &&
		!dedup_register(info->stream_relid, info->stream_id,
						values[info->attnums[ENV_EVENT_ID] - 1], received_at))
	{
		stats_count_duplicate(info->stream_relid);
		return false;
	}
	stream_row_accepted(info,
						DatumGetTimestampTz(values[info->attnums[ENV_OCCURRED_AT] - 1]),
						received_at);
	return true;
}

/*
 * BEFORE INSERT FOR EACH ROW on every stream (cloned onto its partitions).
 * COPY into a stream does the same work in copy.c, batched, without it.
 */
Datum
stream_ingest_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	StreamInfo *info;
	Datum	   *values;
	bool	   *nulls;
	HeapTuple	newtuple;
	bool		received_changed;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("stream._ingest_trigger() must be a BEFORE INSERT row trigger")));

	rel = trigdata->tg_relation;
	desc = RelationGetDescr(rel);
	info = stream_lookup(rel);

	values = palloc(desc->natts * sizeof(Datum));
	nulls = palloc(desc->natts * sizeof(bool));
	heap_deform_tuple(trigdata->tg_trigtuple, desc, values, nulls);

	/* stream.ingest: one more row of its batch */
	if (se_ingest_progress != NULL &&
		se_ingest_progress->stream_relid == info->stream_relid)
		se_ingest_progress->rows_seen++;

	if (!stream_accept_row(rel, info, values, nulls, &received_changed))
		newtuple = NULL;
	else if (received_changed)
		newtuple = heap_form_tuple(desc, values, nulls);
	else
		newtuple = trigdata->tg_trigtuple;
	pfree(values);
	pfree(nulls);
	return PointerGetDatum(newtuple);
}

/*
 * BEFORE UPDATE OR DELETE FOR EACH ROW and BEFORE TRUNCATE on every stream:
 * streams are append-only.
 */
Datum
stream_append_only_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	const char *what;
	Relation	rel;
	Oid			stream_relid;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("stream._append_only_trigger() must be called as a trigger")));

	/*
	 * The extension's own partition maintenance moves rows, out of one
	 * default partition: the owner's triggers that run meanwhile still
	 * cannot delete from any other partition or stream.
	 */
	if (OidIsValid(se_maintenance_source) &&
		TRIGGER_FIRED_BY_DELETE(trigdata->tg_event) &&
		RelationGetRelid(trigdata->tg_relation) == se_maintenance_source)
		return PointerGetDatum(trigdata->tg_trigtuple);

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		what = "UPDATE";
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		what = "DELETE";
	else
		what = "TRUNCATE";

	/* name the stream, not the partition the row happens to be in */
	rel = trigdata->tg_relation;
	stream_relid = RelationGetRelid(rel);
	if (rel->rd_rel->relispartition)
		stream_relid = get_partition_parent(stream_relid, true);

	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("%s is not allowed on stream \"%s\"", what,
					get_rel_name(stream_relid)),
			 errdetail("Streams are append-only: events are never changed once accepted."),
			 errhint("Events leave a stream only through its retention, which drops whole partitions (the retention option of stream.create_stream).")));
	PG_RETURN_NULL();
}

/* Invalidates every session's cached options of a stream. */
Datum
stream_stream_changed(PG_FUNCTION_ARGS)
{
	CacheInvalidateRelcacheByRelid(PG_GETARG_OID(0));
	PG_RETURN_VOID();
}
