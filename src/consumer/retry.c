/*-------------------------------------------------------------------------
 * retry.c
 *	  stream.retry_dead_letters, carried out by the worker: the dead letters
 *	  asked for, of definitions that run, are read back from their stream
 *	  by event_id and folded again (as the owner, in a subtransaction); in
 *	  one transaction, what they folded is applied, the dead letters that
 *	  succeeded are deleted and the others get their new error: exactly
 *	  once.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/tupconvert.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

#include "consumer/internal.h"
#include "core/definition.h"
#include "core/origin.h"
#include "core/owner.h"

/* ---------- stream.retry_dead_letters ---------- */

/* the rows of a stream with that event_id, read as owner (SPI_tuptable) */
static void
read_event_as(Oid owner, const char *search_path, Oid stream, Datum event_id)
{
	OwnerScope	scope = {0};
	char	   *sql = psprintf("SELECT * FROM %s WHERE event_id OPERATOR(pg_catalog.=) $1",
							   definition_relation_name(stream));
	Oid			types[1] = {UUIDOID};
	Datum		args[1] = {event_id};

	owner_enter(&scope, owner, search_path);
	PG_TRY();
	{
		if (SPI_execute_with_args(sql, 1, types, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the event of a dead letter");
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
}

/* an event read back, for one definition, as its owner, in a subtransaction */
static ErrorData *
retry_one(ConsumerDef *def, TupleTableSlot *row)
{
	OwnerScope	scope = {0};
	ConsumerEvent ev = {row, InvalidXLogRecPtr, 0};
	ErrorData  *volatile e = NULL;

	owner_enter(&scope, def->owner, def->search_path);
	PG_TRY();
	{
		note_event(row);
		/* not decoding: a transaction that writes is fine here */
		e = fold_guarded(def, &ev);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	return e;
}

/*
 * The dead letters stream.retry_dead_letters asked for, of definitions that
 * run: each event is read back from its stream by event_id and applied
 * again (in a subtransaction, as the owner); in one transaction, the groups
 * are upserted, the firings made, the dead letters that succeeded deleted
 * and the others given their new error: exactly once.  The worker calls it
 * when its batches are applied (nothing else is in memory).
 */
static void retry_body(uint64 n, SPITupleTable *tt, MemoryContext cxt);

void
retry_dead_letters(void)
{
	uint64		n;
	SPITupleTable *tt;
	OriginTag	tag = {0};
	MemoryContext cxt;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "stream_events: retrying dead letters");
	cxt = CurrentMemoryContext;
	if (SPI_execute("SELECT id, kind, def_id, event_id "
					"FROM stream.dead_letters WHERE retry_requested ORDER BY id FOR UPDATE",
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read stream.dead_letters");
	n = SPI_processed;
	tt = SPI_tuptable;
	origin_tag_begin(&tag);
	PG_TRY();
	{
		retry_body(n, tt, cxt);
	}
	PG_FINALLY();
	{
		origin_tag_end(&tag);
	}
	PG_END_TRY();
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	reset_batches();
	retry_pending = false;
}

/* the sink whose dead letters have that kind */
static const ConsumerSink *
sink_of_kind(const char *kind)
{
	for (int s = 0; s < consumer_nsinks; s++)
		if (strcmp(consumer_sinks[s]->dead_kind, kind) == 0)
			return consumer_sinks[s];
	return NULL;
}

/* retry_dead_letters' work, tagged as the worker's own */
static void
retry_body(uint64 n, SPITupleTable *tt, MemoryContext cxt)
{
	List	   *touched = NIL;

	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		const ConsumerSink *sink = sink_of_kind(SPI_getvalue(tt->vals[i], tt->tupdesc, 2));
		int32		def_id = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));
		Datum		event_id = SPI_getbinval(tt->vals[i], tt->tupdesc, 4, &isnull);
		ConsumerDef *def;
		StreamFeed *feed;
		ErrorData  *err = NULL;
		uint64		nrows;
		SPITupleTable *rows;
		Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, TEXTOID};
		Datum		args[4];
		char		nulls[4] = "    ";

		CHECK_FOR_INTERRUPTS();
		if (isnull || sink == NULL)
			continue;
		def = def_find(sink, def_id);
		/* parked, not loaded, or folding no stream: stays asked for */
		if (def == NULL || def->backfill || !OidIsValid(def->stream))
			continue;
		feed = feed_of(def->stream);
		if (feed == NULL)
			continue;
		read_event_as(def->owner, def->search_path, feed->stream, event_id);
		nrows = SPI_processed;
		rows = SPI_tuptable;
		if (nrows > 0)
		{
			TupleConversionMap *map = convert_tuples_by_name(rows->tupdesc, feed->desc);
			TupleTableSlot *slot = MakeSingleTupleTableSlot(rows->tupdesc, &TTSOpsHeapTuple);

			for (uint64 r = 0; r < nrows && err == NULL; r++)
			{
				ExecStoreHeapTuple(rows->vals[r], slot, false);
				/* in the stream's row type (payloads as JSON need it) */
				if (map)
					execute_attr_map_slot(map->attrMap, slot, feed->slot);
				else
					ExecCopySlot(feed->slot, slot);
				current_def = def;
				err = retry_one(def, feed->slot);
				current_def = NULL;
			}
			ExecDropSingleTupleTableSlot(slot);
		}
		MemoryContextSwitchTo(cxt);
		args[0] = Int64GetDatum(id);
		if (nrows > 0 && err == NULL)
		{
			if (SPI_execute_with_args("DELETE FROM stream.dead_letters WHERE id OPERATOR(pg_catalog.=) $1",
									  1, types, args, NULL, false, 0) != SPI_OK_DELETE)
				elog(ERROR, "could not update stream.dead_letters");
		}
		else
		{
			args[1] = CStringGetTextDatum(err ? unpack_sql_state(err->sqlerrcode) : "02000");
			args[2] = CStringGetTextDatum(err ? (err->message ? err->message : "unknown error")
										  : "the event is no longer in the stream");
			args[3] = (err && err->detail) ? CStringGetTextDatum(err->detail) : (Datum) 0;
			nulls[3] = (err && err->detail) ? ' ' : 'n';
			if (SPI_execute_with_args("UPDATE stream.dead_letters SET retry_requested = false, "
									  "retries = retries + 1, sqlstate = $2, error = $3, detail = $4, "
									  "at = pg_catalog.now() WHERE id OPERATOR(pg_catalog.=) $1",
									  4, types, args, nulls, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not update stream.dead_letters");
		}
		if (!list_member_ptr(touched, def))
			touched = lappend(touched, def);
	}
	/* as in apply: every sink locks, then every sink writes */
	for (int s = 0; s < consumer_nsinks; s++)
		consumer_sinks[s]->lock(defs_of_in(touched, consumer_sinks[s]));
	for (int s = 0; s < consumer_nsinks; s++)
		consumer_sinks[s]->retried(defs_of_in(touched, consumer_sinks[s]));
}
