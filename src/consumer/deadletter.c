/*-------------------------------------------------------------------------
 * deadletter.c
 *	  Dead letters: the events a definition with on_error => 'skip' could
 *	  not evaluate, queued while decoding (in memory, spilled to a
 *	  temporary file past stream_events.consumer_memory) and written to
 *	  stream.dead_letters in the apply transaction that moves the
 *	  definition's applied LSN past them; or written at once by the
 *	  immediate trigger, in the producer's transaction.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

#include "consumer/internal.h"

typedef struct DeadLetter
{
	const ConsumerSink *sink;
	int32		id;
	char	   *name;
	Oid			owner;
	Oid			stream;
	bool		has_event_id;
	pg_uuid_t	event_id;
	XLogRecPtr	lsn;
	int			sqlerrcode;
	char	   *message;
	char	   *detail;
} DeadLetter;

static List *dead_queue = NIL;	/* DeadLetter, in dead_cxt */
static MemoryContext dead_cxt = NULL;

/* dead letters spilled in a large transaction (consumer_check_memory) */
#define DL_NCOLS 10
static Tuplestorestate *dead_spill = NULL;
static TupleDesc dead_spill_desc = NULL;
static MemoryContext dead_spill_cxt = NULL;

/* the queue's memory, counted in the consumer's batches */
MemoryContext
dead_context(void)
{
	if (dead_cxt == NULL)
		dead_cxt = AllocSetContextCreate(consumer_batch_context(), "stream_events dead letters",
										 ALLOCSET_DEFAULT_SIZES);
	return dead_cxt;
}

/* an event def could not evaluate (eval_event), until the apply */
void
queue_dead_letter(ConsumerDef *def, XLogRecPtr lsn, ErrorData *edata)
{
	MemoryContext old = MemoryContextSwitchTo(dead_context());
	DeadLetter *d = palloc0(sizeof(DeadLetter));

	d->sink = def->sink;
	d->id = def->id;
	d->name = pstrdup(def->name);
	d->owner = def->owner;
	d->stream = def->stream;
	d->has_event_id = eval_has_event;
	d->event_id = eval_event;
	d->lsn = lsn;
	d->sqlerrcode = edata->sqlerrcode;
	d->message = pstrdup(edata->message ? edata->message : "unknown error");
	d->detail = edata->detail ? pstrdup(edata->detail) : NULL;
	dead_queue = lappend(dead_queue, d);
	MemoryContextSwitchTo(old);
	def->ndead++;
	batch_units++;
}

/*
 * A dead letter as the row of stream.dead_letters it becomes:
 * (definition, kind, def_id, owner, event_id, stream, lsn, sqlstate,
 * error, detail); the spill keeps the same columns.
 */
static void
dead_letter_row(DeadLetter *d, Datum *values, bool *isnull)
{
	memset(isnull, 0, DL_NCOLS * sizeof(bool));
	values[0] = CStringGetTextDatum(d->name);
	values[1] = d->sink ? CStringGetTextDatum(d->sink->dead_kind) : (Datum) 0;
	values[2] = Int32GetDatum(d->id);
	values[3] = ObjectIdGetDatum(d->owner);
	values[4] = UUIDPGetDatum(&d->event_id);
	isnull[4] = !d->has_event_id;
	values[5] = ObjectIdGetDatum(d->stream);
	values[6] = LSNGetDatum(d->lsn);
	isnull[6] = XLogRecPtrIsInvalid(d->lsn);
	values[7] = CStringGetTextDatum(unpack_sql_state(d->sqlerrcode));
	values[8] = CStringGetTextDatum(d->message);
	values[9] = d->detail ? CStringGetTextDatum(d->detail) : (Datum) 0;
	isnull[9] = (d->detail == NULL);
}

static void
insert_dead_letter(Datum *values, bool *isnull)
{
	Oid			types[DL_NCOLS] = {TEXTOID, TEXTOID, INT4OID, OIDOID, UUIDOID, OIDOID, LSNOID,
	TEXTOID, TEXTOID, TEXTOID};
	char		nulls[DL_NCOLS];

	for (int i = 0; i < DL_NCOLS; i++)
		nulls[i] = isnull[i] ? 'n' : ' ';
	if (SPI_execute_with_args("INSERT INTO stream.dead_letters (definition, kind, def_id, owner, "
							  "event_id, stream, lsn, sqlstate, error, detail) "
							  "VALUES ($1, $2, $3, $4::pg_catalog.regrole, $5, $6::pg_catalog.regclass, "
							  "$7, $8, $9, $10)",
							  DL_NCOLS, types, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert into stream.dead_letters");
}

/*
 * One dead letter written now, in the caller's transaction (the immediate
 * trigger: the producer's), by a caller allowed to write the table.
 */
void
consumer_insert_dead_letter(ConsumerDef *def, const char *kind, Datum event_id,
							XLogRecPtr lsn, ErrorData *edata)
{
	DeadLetter	d = {0};
	Datum		values[DL_NCOLS];
	bool		isnull[DL_NCOLS];

	d.sink = NULL;
	d.id = def->id;
	d.name = def->name;
	d.owner = def->owner;
	d.stream = def->stream;
	d.has_event_id = (event_id != (Datum) 0);
	if (d.has_event_id)
		memcpy(&d.event_id, DatumGetUUIDP(event_id), sizeof(pg_uuid_t));
	d.lsn = lsn;
	d.sqlerrcode = edata->sqlerrcode;
	d.message = edata->message ? edata->message : "unknown error";
	d.detail = edata->detail;
	dead_letter_row(&d, values, isnull);
	values[1] = CStringGetTextDatum(kind);
	insert_dead_letter(values, isnull);
}

/*
 * Writes the queued dead letters of one definition (in the transaction
 * that applies it; tagged by the caller) and forgets them: those spilled
 * first (they are older), then those in memory.
 */
void
consumer_write_dead_letters(ConsumerDef *def)
{
	ListCell   *lc;
	Datum		values[DL_NCOLS];
	bool		isnull[DL_NCOLS];

	if (dead_spill)
	{
		TupleTableSlot *slot = MakeSingleTupleTableSlot(dead_spill_desc, &TTSOpsMinimalTuple);

		tuplestore_rescan(dead_spill);
		while (tuplestore_gettupleslot(dead_spill, true, false, slot))
		{
			bool		n;

			slot_getallattrs(slot);
			if (DatumGetInt32(slot_getattr(slot, 3, &n)) != def->id ||
				strcmp(TextDatumGetCString(slot_getattr(slot, 2, &n)), def->sink->dead_kind) != 0)
				continue;
			insert_dead_letter(slot->tts_values, slot->tts_isnull);
			CHECK_FOR_INTERRUPTS();
		}
		ExecDropSingleTupleTableSlot(slot);
	}
	foreach(lc, dead_queue)
	{
		DeadLetter *d = lfirst(lc);

		if (d->sink != def->sink || d->id != def->id)
			continue;
		dead_letter_row(d, values, isnull);
		insert_dead_letter(values, isnull);
		dead_queue = foreach_delete_current(dead_queue, lc);
	}
	def->ndead = 0;
}

/* the dead letters in memory go to a temporary file (consumer_check_memory) */
void
dead_letters_spill(void)
{
	ListCell   *lc;
	Datum		values[DL_NCOLS];
	bool		isnull[DL_NCOLS];
	MemoryContext old;

	if (dead_queue == NIL)
		return;
	if (dead_spill == NULL)
	{
		if (dead_spill_cxt == NULL)
			dead_spill_cxt = AllocSetContextCreate(TopMemoryContext, "stream_events dead letter spill",
												   ALLOCSET_SMALL_SIZES);
		old = MemoryContextSwitchTo(dead_spill_cxt);
		if (dead_spill_desc == NULL)
		{
			Oid			types[DL_NCOLS] = {TEXTOID, TEXTOID, INT4OID, OIDOID, UUIDOID, OIDOID,
			LSNOID, TEXTOID, TEXTOID, TEXTOID};

			dead_spill_desc = CreateTemplateTupleDesc(DL_NCOLS);
			for (int i = 0; i < DL_NCOLS; i++)
				TupleDescInitEntry(dead_spill_desc, i + 1, NULL, types[i], -1, 0);
		}
		/* across transactions: folded in one, applied in another */
		dead_spill = tuplestore_begin_heap(false, true, 1024);
		MemoryContextSwitchTo(old);
	}
	old = MemoryContextSwitchTo(dead_context());
	foreach(lc, dead_queue)
	{
		dead_letter_row(lfirst(lc), values, isnull);
		tuplestore_putvalues(dead_spill, dead_spill_desc, values, isnull);
	}
	MemoryContextSwitchTo(old);
	dead_queue = NIL;
	MemoryContextReset(dead_cxt);
}

void
reset_dead_letters(void)
{
	dead_queue = NIL;
	if (dead_cxt)
		MemoryContextReset(dead_cxt);
	if (dead_spill)
	{
		tuplestore_end(dead_spill);
		dead_spill = NULL;
	}
}
