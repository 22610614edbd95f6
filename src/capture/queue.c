/*-------------------------------------------------------------------------
 * queue.c
 *	  Captures in queue mode (wal_level = replica, or
 *	  stream_events.consumer = 'queue'), where nothing decodes the WAL:
 *	  - the capture trigger (AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW
 *	    on every captured table, in both modes; it returns at once in
 *	    logical mode) builds the event in the source's transaction and
 *	    appends it to stream.capture_log with heap_insert: no index, no
 *	    constraint, no contract check, no privilege the writer must hold,
 *	    so that the stream's rules can never fail the source's
 *	    transaction (what still can: docs/capture.md);
 *	  - capture_drain() reads and deletes the committed log rows and
 *	    inserts their events (write.c) in one transaction, so a change is
 *	    written exactly once; its event_id, a v5 UUID of (capture, xid,
 *	    position in the transaction), makes a second write a duplicate
 *	    for the stream's dedup all the same.  Each capture drains in a
 *	    subtransaction: one that fails is stopped (status error), its rows
 *	    kept, the others drained.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/xid8.h"

#include "capture/capture.h"
#include "core/guc.h"
#include "core/owner.h"

PG_FUNCTION_INFO_V1(stream_capture_trigger);
PG_FUNCTION_INFO_V1(stream_capture_drain);

/* log rows drained per statement (bounds the drain's memory) */
#define DRAIN_CHUNK 10000

/* ---------- the trigger's cache: source relid -> its capture ---------- */

typedef struct TriggerEntry
{
	Oid			relid;
	bool		valid;
	CaptureSpec *spec;			/* NULL: not captured */
	CaptureShape *shape;
	MemoryContext cxt;			/* spec and shape */
} TriggerEntry;

static HTAB *trigger_cache = NULL;
static Oid	log_relid = InvalidOid;

/* a capture or uncapture (a relcache invalidation of the source) */
static void
trigger_cache_invalidate(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	TriggerEntry *e;

	log_relid = InvalidOid;
	if (trigger_cache == NULL)
		return;
	hash_seq_init(&status, trigger_cache);
	while ((e = hash_seq_search(&status)) != NULL)
		if (relid == InvalidOid || e->relid == relid)
			e->valid = false;
}

/* the source's capture, read as the extension's owner (NULL: none) */
static TriggerEntry *
trigger_lookup(Oid relid)
{
	TriggerEntry *e;
	bool		found;
	OwnerScope	scope = {0};
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(relid)};

	if (trigger_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(TriggerEntry);
		ctl.hcxt = CacheMemoryContext;
		trigger_cache = hash_create("stream_events capture triggers", 16, &ctl,
									HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		CacheRegisterRelcacheCallback(trigger_cache_invalidate, (Datum) 0);
	}
	e = hash_search(trigger_cache, &relid, HASH_ENTER, &found);
	if (found && e->valid)
		return e;
	if (!found)
		e->cxt = NULL;
	if (e->cxt)
		MemoryContextReset(e->cxt);
	else
		e->cxt = AllocSetContextCreate(CacheMemoryContext, "stream_events capture trigger",
									   ALLOCSET_SMALL_SIZES);
	e->spec = NULL;
	e->shape = NULL;
	e->valid = false;

	owner_enter(&scope, owner_of_extension(), NULL);
	SPI_connect();
	if (SPI_execute_with_args("SELECT " CAPTURE_SPEC_COLUMNS " FROM " CAPTURE_SPEC_FROM
							  " WHERE k.source OPERATOR(pg_catalog.=) $1",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read stream.captures");
	if (SPI_processed == 1)
		e->spec = capture_spec_from_row(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, e->cxt);
	SPI_finish();
	owner_exit(&scope);
	e->valid = true;
	return e;
}

/* the position of a change in queue mode: its transaction and rank */
static char *
queue_position(uint64 xid, int64 seq)
{
	return psprintf(UINT64_FORMAT "/q" INT64_FORMAT, xid, seq);
}

static void
append_log_row(CaptureSpec *spec, FullTransactionId fxid, int64 seq, CapturedEvent *ev)
{
	Relation	log;
	Datum		values[8];
	bool		nulls[8] = {false};
	HeapTuple	tup;

	if (!OidIsValid(log_relid))
		log_relid = get_relname_relid("capture_log", get_namespace_oid("stream", false));
	log = table_open(log_relid, RowExclusiveLock);
	values[0] = Int32GetDatum(spec->capture_id);
	values[1] = FullTransactionIdGetDatum(fxid);
	values[2] = Int64GetDatum(seq);
	values[3] = PointerGetDatum(ev->event_name);
	values[4] = TimestampTzGetDatum(ev->occurred_at);
	values[5] = PointerGetDatum(ev->user_id);
	nulls[5] = (ev->user_id == NULL);
	values[6] = PointerGetDatum(ev->properties);
	values[7] = PointerGetDatum(ev->context);
	tup = heap_form_tuple(RelationGetDescr(log), values, nulls);
	/* no index, no constraint: nothing about the row can fail */
	simple_heap_insert(log, tup);
	table_close(log, NoLock);
}

/*
 * stream._capture_trigger(): AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW
 * on a captured table.
 */
Datum
stream_capture_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	static FullTransactionId last_fxid = {0};
	static int64 seq = 0;
	TriggerEntry *e;
	TupleDesc	desc;
	CaptureChange ch = {0};
	CapturedEvent ev;
	FullTransactionId fxid;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("stream._capture_trigger() must be an AFTER row trigger")));
	if (!consumer_uses_queue())
		return PointerGetDatum(NULL);

	/*
	 * Only the capture's own trigger: one another role with TRIGGER on the
	 * table attached to this function would queue every change twice.
	 */
	if (strcmp(td->tg_trigger->tgname, "stream_events_capture") != 0)
		return PointerGetDatum(NULL);
	e = trigger_lookup(RelationGetRelid(td->tg_relation));
	if (e->spec == NULL)
		return PointerGetDatum(NULL);

	desc = RelationGetDescr(td->tg_relation);
	e->shape = capture_shape(e->spec, e->shape, desc, e->cxt);
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
		ch.op = CAPTURE_INSERT;
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		ch.op = CAPTURE_UPDATE;
	else
		ch.op = CAPTURE_DELETE;
	if (ch.op != CAPTURE_DELETE)
	{
		HeapTuple	newtup = ch.op == CAPTURE_INSERT ? td->tg_trigtuple : td->tg_newtuple;

		ch.new_values = palloc(sizeof(Datum) * desc->natts);
		ch.new_nulls = palloc(sizeof(bool) * desc->natts);
		heap_deform_tuple(newtup, desc, ch.new_values, ch.new_nulls);
	}
	if (ch.op != CAPTURE_INSERT)
	{
		ch.old_values = palloc(sizeof(Datum) * desc->natts);
		ch.old_nulls = palloc(sizeof(bool) * desc->natts);
		heap_deform_tuple(td->tg_trigtuple, desc, ch.old_values, ch.old_nulls);
		ch.old_is_full = true;
	}

	/* the change's rank in its (top-level) transaction */
	fxid = GetTopFullTransactionId();
	if (!FullTransactionIdEquals(fxid, last_fxid))
	{
		last_fxid = fxid;
		seq = 0;
	}
	seq++;
	ch.position = queue_position(U64FromFullTransactionId(fxid), seq);
	capture_build_event(e->spec, e->shape, &ch, &ev);
	ev.occurred_at = GetCurrentTransactionStartTimestamp();
	append_log_row(e->spec, fxid, seq, &ev);
	return PointerGetDatum(NULL);
}

/* ---------- the drain ---------- */

/* one capture's committed log rows into its stream; SPI connected */
static CaptureWritten
drain_one(CaptureSpec *spec)
{
	CaptureWritten total = {0};
	Oid			argtypes[2] = {INT4OID, TIDOID};
	Datum		args[2];
	ItemPointerData after;

	/*
	 * Each chunk starts past the last row of the one before (a TID range
	 * scan): the rows the chunks before deleted are dead until vacuum, and
	 * scanning them again from the first page for every chunk was most of
	 * the worker's time under a steady load.  A row written meanwhile into
	 * space vacuum freed before that point waits for the next drain.
	 */
	ItemPointerSet(&after, 0, 0);
	args[0] = Int32GetDatum(spec->capture_id);
	args[1] = PointerGetDatum(&after);

	capture_check_rights(spec);
	for (;;)
	{
		Tuplestorestate *store;
		uint64		n;
		CaptureWritten w;

		/*
		 * A chunk in the log's physical order (no sort of the whole log per
		 * chunk: the worker's CPU is the producers'), its events in
		 * transaction order; the commit time when the server keeps it, else
		 * the source transaction's start (docs/capture.md).
		 */
		if (SPI_execute_with_args("WITH d AS (DELETE FROM stream.capture_log l "
								  "  WHERE l.ctid OPERATOR(pg_catalog.=) ANY (ARRAY("
								  "    SELECT ctid FROM stream.capture_log "
								  "    WHERE capture_id OPERATOR(pg_catalog.=) $1 "
								  "    AND ctid OPERATOR(pg_catalog.>) $2 LIMIT "
								  CppAsString2(DRAIN_CHUNK) ")) RETURNING l.*, l.ctid AS row_ctid) "
								  "SELECT xid, seq, event_name, coalesce(CASE WHEN "
								  "  pg_catalog.current_setting('track_commit_timestamp')::boolean "
								  "  THEN pg_catalog.pg_xact_commit_timestamp(pg_catalog.xid(xid)) END, "
								  "  occurred_at), user_id, properties, context, row_ctid "
								  "FROM d ORDER BY xid, seq",
								  2, argtypes, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read stream.capture_log");
		n = SPI_processed;
		if (n == 0)
			break;
		store = tuplestore_begin_heap(false, false, work_mem);
		for (uint64 i = 0; i < n; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			CapturedEvent ev;
			bool		isnull;
			uint64		xid = U64FromFullTransactionId(DatumGetFullTransactionId(SPI_getbinval(tup, desc, 1, &isnull)));
			int64		seq = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
			Datum		d;

			capture_event_id(spec->capture_id, queue_position(xid, seq), &ev.event_id);
			ev.event_name = DatumGetTextPP(SPI_getbinval(tup, desc, 3, &isnull));
			ev.occurred_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
			d = SPI_getbinval(tup, desc, 5, &isnull);
			ev.user_id = isnull ? NULL : DatumGetTextPP(d);
			ev.properties = DatumGetTextPP(SPI_getbinval(tup, desc, 6, &isnull));
			ev.context = DatumGetTextPP(SPI_getbinval(tup, desc, 7, &isnull));
			capture_store_event(store, &ev);
			d = SPI_getbinval(tup, desc, 8, &isnull);
			if (ItemPointerCompare((ItemPointer) DatumGetPointer(d), &after) > 0)
				ItemPointerCopy((ItemPointer) DatumGetPointer(d), &after);
		}
		SPI_freetuptable(SPI_tuptable);
		w = capture_write_events(spec, store);
		tuplestore_end(store);
		total.written += w.written;
		total.quarantined += w.quarantined;
		if (n < DRAIN_CHUNK)
			break;
	}
	return total;
}

static void
record_drain(int32 id, CaptureWritten w, const char *error)
{
	Oid			argtypes[4] = {INT4OID, INT8OID, INT8OID, TEXTOID};
	Datum		args[4] = {Int32GetDatum(id), Int64GetDatum(w.written), Int64GetDatum(w.quarantined),
	error ? CStringGetTextDatum(error) : (Datum) 0};
	char		nulls[4] = {' ', ' ', ' ', error ? ' ' : 'n'};

	if (SPI_execute_with_args("UPDATE stream.captures SET captured = captured + $2, "
							  "quarantined = quarantined + $3, applied_at = now(), "
							  "status = CASE WHEN $4 IS NULL THEN status ELSE 'error' END, "
							  "last_error = coalesce($4, last_error) WHERE capture_id = $1",
							  4, argtypes, args, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the progress of capture %d", id);
}

/*
 * One capture drained in a subtransaction: NULL, or the message of the
 * error that stopped it (its rows are kept).
 */
static char *
drain_guarded(CaptureSpec *spec, CaptureWritten *w)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	char	   *volatile error = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		*w = drain_one(spec);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		error = pstrdup(edata->message);
		ereport(WARNING,
				(errmsg("stream_events stopped the capture of %s: %s",
						spec->source_name, edata->message),
				 errhint("Fix the cause, then SELECT stream.resume_capture('%s').",
						 spec->source_name)));
		FreeErrorData(edata);
		w->written = w->quarantined = 0;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return error;
}

/*
 * every running capture, in the caller's transaction; SPI not connected;
 * *any: whether there is one
 */
static int64
drain_all(bool *any)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *specs = NIL;
	ListCell   *lc;
	int64		total = 0;
	Oid			nsp = get_namespace_oid("stream", true);

	if (any)
		*any = false;
	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("capture_log", nsp)))
		return 0;
	SPI_connect();
	if (SPI_execute("SELECT " CAPTURE_SPEC_COLUMNS " FROM " CAPTURE_SPEC_FROM
					" WHERE k.status OPERATOR(pg_catalog.=) 'running' ORDER BY k.capture_id",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read stream.captures");
	for (uint64 i = 0; i < SPI_processed; i++)
		specs = lappend(specs, capture_spec_from_row(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc, cxt));
	if (any)
		*any = (specs != NIL);
	foreach(lc, specs)
	{
		CaptureSpec *spec = lfirst(lc);
		CaptureWritten w = {0};
		char	   *error = drain_guarded(spec, &w);

		if (error || w.written > 0 || w.quarantined > 0)
			record_drain(spec->capture_id, w, error);
		total += w.written;
	}
	SPI_finish();
	return total;
}

bool
capture_drain(void)
{
	static XLogRecPtr last_insert = InvalidXLogRecPtr;
	static bool have_captures = false;
	XLogRecPtr	insert = GetXLogInsertRecPtr();
	MemoryContext cxt = CurrentMemoryContext;

	/* a queued change writes WAL: none since the last call, nothing queued */
	if (insert == last_insert)
		return have_captures;
	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "stream_events: writing captured changes");
		have_captures = false;
		if (OidIsValid(get_extension_oid("stream_events", true)))
			(void) drain_all(&have_captures);
		PopActiveSnapshot();
		CommitTransactionCommand();
		pgstat_report_activity(STATE_IDLE, NULL);
		last_insert = insert;
	}
	PG_CATCH();
	{
		/* not the worker's error: said, and tried again next time */
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	return have_captures;
}

/* stream._capture_drain(): the same, in the caller's transaction */
Datum
stream_capture_drain(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(drain_all(NULL));
}
