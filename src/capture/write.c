/*-------------------------------------------------------------------------
 * write.c
 *	  Captured events into their stream, in both modes: an INSERT per event
 *	  through the ordinary path (the stream's trigger: received_at,
 *	  contracts, dedup, counters; immediate activations), as the capture's
 *	  owner (owner.h), so a capture never writes where its creator could
 *	  not.  The batch is written in a subtransaction; when an event of it
 *	  fails with an error of its own (a contract rejecting it, an envelope
 *	  rule), the batch is written again event by event and the failing
 *	  ones go to the stream's quarantine, as the stream's owner
 *	  (contract_quarantine): the source's changes are never refused for
 *	  the stream's sake.  Other errors (the owner lost INSERT, the stream's
 *	  quarantine table is gone) are thrown: the caller stops the capture.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "replication/origin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "capture/capture.h"
#include "consumer/sink.h"
#include "core/owner.h"
#include "stream_events.h"

#define NCOLS 6

TupleDesc
capture_event_desc(void)
{
	static TupleDesc desc = NULL;

	if (desc == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		desc = CreateTemplateTupleDesc(NCOLS);
		TupleDescInitEntry(desc, 1, "event_id", UUIDOID, -1, 0);
		TupleDescInitEntry(desc, 2, "event_name", TEXTOID, -1, 0);
		TupleDescInitEntry(desc, 3, "occurred_at", TIMESTAMPTZOID, -1, 0);
		TupleDescInitEntry(desc, 4, "user_id", TEXTOID, -1, 0);
		TupleDescInitEntry(desc, 5, "properties", JSONOID, -1, 0);
		TupleDescInitEntry(desc, 6, "context", JSONOID, -1, 0);
		MemoryContextSwitchTo(old);
	}
	return desc;
}

void
capture_store_event(Tuplestorestate *store, CapturedEvent *ev)
{
	Datum		values[NCOLS];
	bool		nulls[NCOLS] = {false};

	values[0] = UUIDPGetDatum(&ev->event_id);
	values[1] = PointerGetDatum(ev->event_name);
	values[2] = TimestampTzGetDatum(ev->occurred_at);
	values[3] = PointerGetDatum(ev->user_id);
	nulls[3] = (ev->user_id == NULL);
	values[4] = PointerGetDatum(ev->properties);
	values[5] = PointerGetDatum(ev->context);
	tuplestore_putvalues(store, capture_event_desc(), values, nulls);
}

typedef struct WriteState
{
	CaptureSpec *spec;
	Tuplestorestate *store;
	TupleTableSlot *slot;
	char	   *sql;			/* one event */
	char	   *sql_chunk;		/* a chunk of them, as arrays */
	bool		one;			/* only the row in slot */
	int64		n;
} WriteState;

static void
insert_row(WriteState *ws, SPIPlanPtr plan)
{
	Datum		values[NCOLS];
	char		nulls[NCOLS];
	int			ret;

	for (int i = 0; i < NCOLS; i++)
	{
		bool		isnull;

		values[i] = slot_getattr(ws->slot, i + 1, &isnull);
		nulls[i] = isnull ? 'n' : ' ';
	}
	ret = SPI_execute_plan(plan, values, nulls, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not write a captured event: %s", SPI_result_code_string(ret));
	ws->n++;
}

/*
 * The batch, chunk by chunk: one INSERT ... SELECT FROM unnest(arrays) per
 * CHUNK events (the executor starts once per chunk, not per event; each
 * row still goes through the stream's trigger).  unnest is unqualified:
 * only the FROM-clause form takes several arrays, and the owner scope's
 * search_path is pg_catalog alone.
 */
#define CHUNK 1000

static void
insert_chunks(WriteState *ws, SPIPlanPtr plan)
{
	static const Oid elemtypes[NCOLS] = {UUIDOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, JSONOID, JSONOID};
	MemoryContext chunk_cxt = AllocSetContextCreate(CurrentMemoryContext, "capture chunk",
													ALLOCSET_DEFAULT_SIZES);
	Datum	   *values[NCOLS];
	bool	   *nulls[NCOLS];
	int16		typlen[NCOLS];
	bool		typbyval[NCOLS];
	char		typalign[NCOLS];
	bool		more = true;

	for (int c = 0; c < NCOLS; c++)
	{
		values[c] = palloc(sizeof(Datum) * CHUNK);
		nulls[c] = palloc(sizeof(bool) * CHUNK);
		get_typlenbyvalalign(elemtypes[c], &typlen[c], &typbyval[c], &typalign[c]);
	}
	tuplestore_rescan(ws->store);
	while (more)
	{
		int			n = 0;
		Datum		args[NCOLS];
		MemoryContext old = MemoryContextSwitchTo(chunk_cxt);
		int			ret;

		while (n < CHUNK && (more = tuplestore_gettupleslot(ws->store, true, false, ws->slot)))
		{
			for (int c = 0; c < NCOLS; c++)
			{
				Datum		d = slot_getattr(ws->slot, c + 1, &nulls[c][n]);

				values[c][n] = nulls[c][n] ? (Datum) 0 : datumCopy(d, typbyval[c], typlen[c]);
			}
			n++;
		}
		if (n > 0)
		{
			int			dims[1] = {n};
			int			lbs[1] = {1};

			for (int c = 0; c < NCOLS; c++)
				args[c] = PointerGetDatum(construct_md_array(values[c], nulls[c], 1, dims, lbs,
															 elemtypes[c], typlen[c], typbyval[c],
															 typalign[c]));
			MemoryContextSwitchTo(old);
			ret = SPI_execute_plan(plan, args, NULL, false, 0);
			if (ret != SPI_OK_INSERT)
				elog(ERROR, "could not write captured events: %s", SPI_result_code_string(ret));
			ws->n += n;
		}
		else
			MemoryContextSwitchTo(old);
		/* a tuple read back from disk was palloc'd in chunk_cxt: the slot lets go first */
		ExecClearTuple(ws->slot);
		MemoryContextReset(chunk_cxt);
	}
	MemoryContextDelete(chunk_cxt);
}

/* the batch (or one event), as the capture's owner; in a subtransaction */
static void
write_guarded(void *arg)
{
	WriteState *ws = arg;
	OwnerScope	scope = {0};
	Oid			argtypes[NCOLS] = {UUIDOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, JSONOID, JSONOID};
	Oid			arraytypes[NCOLS] = {UUIDARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID,
	JSONARRAYOID, JSONARRAYOID};
	SPIPlanPtr	plan;

	/* an error leaves the scope through the subtransaction's abort */
	owner_enter(&scope, ws->spec->owner, NULL);
	SPI_connect();
	plan = ws->one ? SPI_prepare(ws->sql, NCOLS, argtypes) :
		SPI_prepare(ws->sql_chunk, NCOLS, arraytypes);
	if (plan == NULL)
		elog(ERROR, "could not prepare the insert of captured events: %s",
			 SPI_result_code_string(SPI_result));
	if (ws->one)
		insert_row(ws, plan);
	else
		insert_chunks(ws, plan);
	SPI_finish();
	owner_exit(&scope);
}

/*
 * The capture's owner may still read its table and write its stream (a
 * right revoked since stream.capture); 42501 naming the missing one.
 */
void
capture_check_rights(CaptureSpec *spec)
{
	Oid			denied = InvalidOid;
	const char *what = NULL;

	if (pg_class_aclcheck(spec->source, spec->owner, ACL_SELECT) != ACLCHECK_OK)
	{
		denied = spec->source;
		what = "SELECT";
	}
	else if (pg_class_aclcheck(spec->stream, spec->owner, ACL_INSERT) != ACLCHECK_OK)
	{
		denied = spec->stream;
		what = "INSERT";
	}
	if (!OidIsValid(denied))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("the owner of the capture of %s has no %s privilege on %s",
					spec->source_name, what, get_rel_name(denied)),
			 errdetail("A capture reads its table and writes its stream with its owner's rights (role %s).",
					   GetUserNameFromId(spec->owner, false)),
			 errhint("GRANT %s ON %s TO %s, then SELECT stream.resume_capture('%s').",
					 what, get_rel_name(denied), GetUserNameFromId(spec->owner, false),
					 spec->source_name)));
}

/* the errors of an event the stream refused, as stream.<q>.errors has them */
static Jsonb *
error_jsonb(ErrorData *edata)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "[{\"instance_path\": \"\", \"schema_path\": \"capture\", \"message\": ");
	escape_json(&buf, edata->message ? edata->message : "error");
	appendStringInfo(&buf, ", \"sqlstate\": \"%s\"}]", unpack_sql_state(edata->sqlerrcode));
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/*
 * The event in ws->slot into the stream's quarantine: with the contract's
 * errors when a contract or envelope rule refuses it, else with the error
 * the insert raised.
 */
static void
quarantine_one(WriteState *ws, ErrorData *edata)
{
	Relation	rel = relation_open(ws->spec->stream, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	StreamInfo *info = stream_lookup(rel);
	Datum	   *values = palloc0(sizeof(Datum) * desc->natts);
	bool	   *nulls = palloc(sizeof(bool) * desc->natts);
	static const EnvelopeColumn from[NCOLS] = {ENV_EVENT_ID, ENV_EVENT_NAME, ENV_OCCURRED_AT,
	ENV_USER_ID, ENV_PROPERTIES, ENV_CONTEXT};
	int			version = 0;
	Jsonb	   *errors = NULL;
	char	   *first = NULL;
	CheckResult result = CHECK_NOT_CHECKED;

	memset(nulls, true, sizeof(bool) * desc->natts);
	for (int i = 0; i < NCOLS; i++)
	{
		AttrNumber a = info->attnums[from[i]];

		values[a - 1] = slot_getattr(ws->slot, i + 1, &nulls[a - 1]);
		if (from[i] == ENV_PROPERTIES || from[i] == ENV_CONTEXT)
			values[a - 1] = JsonbPGetDatum(capture_jsonb(DatumGetTextPP(values[a - 1])));
	}
	values[info->attnums[ENV_RECEIVED_AT] - 1] = TimestampTzGetDatum(GetCurrentStatementStartTimestamp());
	nulls[info->attnums[ENV_RECEIVED_AT] - 1] = false;
	if (info->enforce)
		result = contract_check(info, values, nulls, &version, &errors, &first);
	if (result != CHECK_FAILED && result != CHECK_UNPLANNED)
	{
		errors = error_jsonb(edata);
		version = 0;
	}
	contract_quarantine(info, values, nulls, version, errors);
	if (result == CHECK_FAILED || result == CHECK_UNPLANNED)
		stats_count_check(info->stream_relid,
						  DatumGetTextPP(values[info->attnums[ENV_EVENT_NAME] - 1]),
						  result, 'q');
	relation_close(rel, AccessShareLock);
}

static void
quarantine_guarded(void *arg)
{
	void	  **a = arg;

	quarantine_one((WriteState *) a[0], (ErrorData *) a[1]);
}

/*
 * Never tagged with the private origin: the consumer must decode these
 * inserts (aggregates and activations of the stream fold them).  The
 * apply transaction tags its writes; the tag is lifted here and put back.
 */
CaptureWritten
capture_write_events(CaptureSpec *spec, Tuplestorestate *store)
{
	CaptureWritten result = {0};
	WriteState	ws = {0};
	RepOriginId saved_origin = replorigin_session_origin;
	MemoryContext cxt = CurrentMemoryContext;
	ErrorData  *edata;
	const char *stream;

	if (tuplestore_tuple_count(store) == 0)
		return result;
	ws.spec = spec;
	ws.store = store;
	ws.slot = MakeSingleTupleTableSlot(capture_event_desc(), &TTSOpsMinimalTuple);
	stream = quote_qualified_identifier(get_namespace_name(get_rel_namespace(spec->stream)),
										get_rel_name(spec->stream));
	ws.sql = psprintf("INSERT INTO %s (event_id, event_name, occurred_at, user_id, properties, context) "
					  "VALUES ($1, $2, $3, $4, $5, $6)", stream);
	ws.sql_chunk = psprintf("INSERT INTO %s (event_id, event_name, occurred_at, user_id, properties, context) "
							"SELECT * FROM unnest($1, $2, $3, $4, $5, $6)", stream);
	replorigin_session_origin = InvalidRepOriginId;
	PG_TRY();
	{
		edata = consumer_guarded(write_guarded, &ws, false, cxt);
		if (edata == NULL)
			result.written = ws.n;
		else
		{
			/* again event by event: the refused ones to the quarantine */
			FreeErrorData(edata);
			ws.one = true;
			tuplestore_rescan(store);
			while (tuplestore_gettupleslot(store, true, false, ws.slot))
			{
				ws.n = 0;
				edata = consumer_guarded(write_guarded, &ws, false, cxt);
				if (edata == NULL)
				{
					result.written++;
					continue;
				}
				{
					void	   *arg[2] = {&ws, edata};

					/* an error here is the capture's (a missing quarantine) */
					if (consumer_guarded(quarantine_guarded, arg, false, cxt) != NULL)
						ereport(ERROR,
								(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
								 errmsg("could not quarantine an event captured from %s",
										spec->source_name),
								 errdetail("The stream refused it: %s", edata->message)));
				}
				result.quarantined++;
				FreeErrorData(edata);
			}
		}
	}
	PG_FINALLY();
	{
		replorigin_session_origin = saved_origin;
	}
	PG_END_TRY();
	ExecDropSingleTupleTableSlot(ws.slot);
	return result;
}
