/*-------------------------------------------------------------------------
 * ingest.c
 *	  stream.ingest(stream, events jsonb): a JSON array of events, either
 *	  named like the envelope columns (envelope.c) or Segment/RudderStack
 *	  messages (segment.c), is mapped to rows and inserted through the
 *	  stream's ordinary INSERT path (so the trigger's checks and dedup apply
 *	  exactly as for INSERT and COPY), in chunks of INGEST_CHUNK rows.
 *	  Everything made for a chunk (its rows, their jsonb copies, the arrays
 *	  bound to the INSERT) lives in a memory context reset after the chunk
 *	  is inserted, so a call's memory is its argument plus one chunk,
 *	  whatever the array's length (test/t/035_ingest_memory.pl).  An error
 *	  of the insert trigger names the element's index and event_id.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
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
#include "stream/ingest.h"

PG_FUNCTION_INFO_V1(stream_ingest);

#define INGEST_CHUNK 10000

/* the chunk being inserted, counted by the insert trigger (trigger.c) */
IngestProgress *se_ingest_progress = NULL;

/* the types of the columns, in the order of IngestRow */
static const Oid col_types[N_INGEST_COLS] = {
	UUIDOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID
};

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
