/*-------------------------------------------------------------------------
 * sink.c
 *	  Captures in logical mode, as a sink of the worker's consumer
 *	  (consumer/sink.h).  A capture is a definition without a stream: the
 *	  decoding plugin hands it the changes of its source table (the sink's
 *	  change callback), which become events (event.c) in a batch that
 *	  spills to a temporary file past its share of consumer_memory; the
 *	  apply transaction writes them (write.c, untagged, as the capture's
 *	  owner) with the capture's applied LSN, so every change is written
 *	  exactly once, and the slot is never confirmed past a change a
 *	  capture has not written.  A capture's own error (its owner lost a
 *	  right, the stream's quarantine is gone) parks it alone, like any
 *	  definition.  In queue mode no capture is loaded here (queue.c).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "replication/reorderbuffer.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"

#include "capture/capture.h"
#include "consumer/sink.h"
#include "core/guc.h"
#include "core/owner.h"

typedef struct CaptureRuntime
{
	ConsumerDef def;			/* first: the driver's view */
	CaptureSpec *spec;
	CaptureShape *shape;		/* of the last row type seen */
	Tuplestorestate *batch;		/* events not applied yet; NULL: none */
	bool		fresh;			/* never applied: the first apply marks it live */
} CaptureRuntime;

typedef struct SourceEntry
{
	Oid			relid;
	CaptureRuntime *rt;
} SourceEntry;

static const ConsumerSink capture_sink;
static List *captures = NIL;	/* CaptureRuntime */
static HTAB *by_source = NULL;	/* source relid -> runtime */
static MemoryContext batch_cxt = NULL;	/* the batches' tuplestores */
static MemoryContext change_cxt = NULL; /* one change's work */

/* the catalog exists (before the upgrade to 0.2.0 it does not) */
static bool
catalog_exists(void)
{
	Oid			nsp = get_namespace_oid("stream", true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("captures", nsp));
}

static List *
capture_states(void)
{
	if (!catalog_exists())
		return NIL;
	return consumer_read_states("SELECT capture_id, status OPERATOR(pg_catalog.=) 'error' "
								"FROM stream.captures");
}

/* the owner's rights are checked at every load, as for every definition */
static void
check_rights(CaptureRuntime *rt)
{
	consumer_blame(&capture_sink, rt->spec->capture_id, rt->spec->source_name,
				   rt->def.applied_lsn);
	capture_check_rights(rt->spec);
	consumer_unblame();
}

static List *
capture_load(List *skip)
{
	HASHCTL		ctl;
	MemoryContext cxt = CurrentMemoryContext;

	captures = NIL;
	by_source = NULL;
	if (consumer_uses_queue() || !catalog_exists())
		return NIL;
	if (SPI_execute("SELECT " CAPTURE_SPEC_COLUMNS ", "
					"coalesce(k.applied_lsn, k.start_lsn), k.applied_lsn IS NULL FROM "
					CAPTURE_SPEC_FROM " ORDER BY k.capture_id", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read stream.captures");
	/* SPI_execute left us in SPI's own memory, freed at SPI_finish */
	MemoryContextSwitchTo(cxt);
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(SourceEntry);
	ctl.hcxt = cxt;
	by_source = hash_create("stream_events captures", 16, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		CaptureRuntime *rt;
		SourceEntry *e;
		bool		isnull;
		int32		id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));

		if (list_member_int(skip, id))
			continue;
		rt = MemoryContextAllocZero(cxt, sizeof(CaptureRuntime));
		rt->spec = capture_spec_from_row(tup, desc, cxt);
		rt->def.id = id;
		rt->def.name = rt->spec->source_name;
		rt->def.owner = rt->spec->owner;
		rt->def.stream = InvalidOid;	/* fed by change(), not by a stream */
		rt->def.applied_lsn = DatumGetLSN(SPI_getbinval(tup, desc, 10, &isnull));
		rt->fresh = DatumGetBool(SPI_getbinval(tup, desc, 11, &isnull));
		check_rights(rt);
		captures = lappend(captures, rt);
		e = hash_search(by_source, &rt->spec->source, HASH_ENTER, NULL);
		e->rt = rt;
	}
	return list_copy(captures);
}

/* the batches of these captures are gone (applied, or given up) */
static void
end_batches(List *defs)
{
	ListCell   *lc;

	foreach(lc, defs)
	{
		CaptureRuntime *rt = lfirst(lc);

		if (rt->batch)
			tuplestore_end(rt->batch);
		rt->batch = NULL;
	}
}

static void
capture_free(void)
{
	end_batches(captures);
	captures = NIL;
	by_source = NULL;
	if (batch_cxt)
		MemoryContextReset(batch_cxt);
}

/* captures are fed by change(), never by a stream's events */
static int
capture_fold(ConsumerDef *def, ConsumerEvent *ev)
{
	return 0;
}

static bool
capture_pending(ConsumerDef *def)
{
	CaptureRuntime *rt = (CaptureRuntime *) def;

	return rt->fresh || (rt->batch && tuplestore_tuple_count(rt->batch) > 0);
}

/* a tuple of the change, deformed in desc (NULL: none) */
static void
deform(ReorderBufferTupleBuf *buf, TupleDesc desc, Datum **values, bool **nulls)
{
	if (buf == NULL)
	{
		*values = NULL;
		*nulls = NULL;
		return;
	}
	*values = palloc(sizeof(Datum) * desc->natts);
	*nulls = palloc(sizeof(bool) * desc->natts);
	heap_deform_tuple(&buf->tuple, desc, *values, *nulls);
}

static void
capture_one_change(CaptureRuntime *rt, Relation relation, ReorderBufferTXN *txn,
				   ReorderBufferChange *change)
{
	TupleDesc	desc = RelationGetDescr(relation);
	CaptureChange ch = {0};
	CapturedEvent ev;

	rt->shape = capture_shape(rt->spec, rt->shape, desc, consumer_defs_context());
	ch.op = change->action == REORDER_BUFFER_CHANGE_INSERT ? CAPTURE_INSERT :
		change->action == REORDER_BUFFER_CHANGE_UPDATE ? CAPTURE_UPDATE : CAPTURE_DELETE;
	deform(ch.op == CAPTURE_DELETE ? NULL : change->data.tp.newtuple, desc,
		   &ch.new_values, &ch.new_nulls);
	deform(change->data.tp.oldtuple, desc, &ch.old_values, &ch.old_nulls);
	ch.old_is_full = relation->rd_rel->relreplident == REPLICA_IDENTITY_FULL;
	if (ch.op == CAPTURE_DELETE && ch.old_values == NULL)
	{
		/* no key logged (replica identity changed to NOTHING since) */
		ch.old_values = palloc0(sizeof(Datum) * desc->natts);
		ch.old_nulls = palloc(sizeof(bool) * desc->natts);
		memset(ch.old_nulls, true, sizeof(bool) * desc->natts);
		ch.old_is_full = false;
	}

	/* values of the new row the WAL did not carry (unchanged TOAST) */
	if (ch.new_values)
	{
		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (att->attisdropped || att->attlen != -1 || ch.new_nulls[i] ||
				!VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(ch.new_values[i])))
				continue;
			if (ch.unchanged == NULL)
				ch.unchanged = palloc0(sizeof(bool) * desc->natts);
			ch.unchanged[i] = true;
		}
	}
	ch.position = psprintf("%u/%X/%X", txn->xid, LSN_FORMAT_ARGS(change->lsn));
	capture_build_event(rt->spec, rt->shape, &ch, &ev);
	ev.occurred_at = txn->xact_time.commit_time;

	if (rt->batch == NULL)
	{
		MemoryContext old;
		int			kb = Max(se_consumer_memory_kb / (4 * Max(list_length(captures), 1)), 64);

		if (batch_cxt == NULL)
			batch_cxt = AllocSetContextCreate(TopMemoryContext, "stream_events capture batches",
											  ALLOCSET_DEFAULT_SIZES);
		old = MemoryContextSwitchTo(batch_cxt);
		/* interXact: the batch outlives the decoding transaction */
		rt->batch = tuplestore_begin_heap(false, true, kb);
		MemoryContextSwitchTo(old);
	}
	capture_store_event(rt->batch, &ev);
}

/*
 * A decoded change of any relation that is not a stream's partition:
 * true when it belongs to a capture (nothing else wants it then).  The
 * change's values are turned into JSON as the capture's owner (a column
 * type's output function is user code).
 */
static bool
capture_change(Relation relation, ReorderBufferTXN *txn, ReorderBufferChange *change)
{
	Oid			relid = RelationGetRelid(relation);
	SourceEntry *e;
	CaptureRuntime *rt;
	MemoryContext old;
	OwnerScope	scope = {0};

	if (by_source == NULL)
		return false;
	e = hash_search(by_source, &relid, HASH_FIND, NULL);
	if (e == NULL)
		return false;
	rt = e->rt;
	/* exactly once: commits before the applied LSN are written already */
	if (txn->final_lsn < rt->def.applied_lsn)
		return true;
	if (change->action != REORDER_BUFFER_CHANGE_INSERT &&
		change->action != REORDER_BUFFER_CHANGE_UPDATE &&
		change->action != REORDER_BUFFER_CHANGE_DELETE)
		return true;

	if (change_cxt == NULL)
		change_cxt = AllocSetContextCreate(TopMemoryContext, "stream_events capture change",
										   ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(change_cxt);
	consumer_blame(&capture_sink, rt->def.id, rt->def.name, rt->def.applied_lsn);
	owner_enter(&scope, rt->spec->owner, NULL);
	PG_TRY();
	{
		capture_one_change(rt, relation, txn, change);
	}
	PG_CATCH();
	{
		owner_exit(&scope);
		PG_RE_THROW();
	}
	PG_END_TRY();
	owner_exit(&scope);
	consumer_unblame();
	MemoryContextSwitchTo(old);
	MemoryContextReset(change_cxt);
	return true;
}

static void
capture_lock(List *defs)
{
}

static void
capture_apply(List *defs, XLogRecPtr upto, bool write_idle, TimestampTz now)
{
	ListCell   *lc;
	Oid			argtypes[4] = {INT4OID, LSNOID, INT8OID, INT8OID};

	foreach(lc, defs)
	{
		CaptureRuntime *rt = lfirst(lc);
		CaptureWritten w = {0};
		Datum		args[4];

		if (!capture_pending(&rt->def) && !(write_idle && upto > rt->def.applied_lsn))
			continue;
		consumer_blame(&capture_sink, rt->def.id, rt->def.name, rt->def.applied_lsn);
		if (rt->batch)
			w = capture_write_events(rt->spec, rt->batch);
		args[0] = Int32GetDatum(rt->def.id);
		args[1] = LSNGetDatum(Max(upto, rt->def.applied_lsn));
		args[2] = Int64GetDatum(w.written);
		args[3] = Int64GetDatum(w.quarantined);
		if (SPI_execute_with_args("UPDATE stream.captures SET applied_lsn = $2, applied_at = now(), "
								  "captured = captured + $3, quarantined = quarantined + $4 "
								  "WHERE capture_id = $1", 4, argtypes, args, NULL, false, 0)
			!= SPI_OK_UPDATE)
			elog(ERROR, "could not record the progress of capture %d", rt->def.id);
		consumer_unblame();
	}
}

static void
capture_retried(List *defs)
{
}

static void
capture_committed(List *defs, XLogRecPtr upto, TimestampTz now)
{
	ListCell   *lc;

	foreach(lc, defs)
	{
		CaptureRuntime *rt = lfirst(lc);

		rt->def.applied_lsn = Max(upto, rt->def.applied_lsn);
		rt->fresh = false;
	}
}

static void
capture_reset(List *defs)
{
	end_batches(defs);
}

static void
capture_set_error(int32 id, const char *msg)
{
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		args[2];

	if (id == 0 || !catalog_exists())
		return;
	args[0] = CStringGetTextDatum(msg);
	args[1] = Int32GetDatum(id);
	SPI_execute_with_args("UPDATE stream.captures SET status = 'error', last_error = $1 "
						  "WHERE capture_id = $2", 2, argtypes, args, NULL, false, 0);
}

/*
 * Rows restored from another database: their LSNs are another server's.
 * They start again from here (changes made before the restore are the
 * restored stream's already).
 */
static bool
capture_adopt(void)
{
	bool		found = false;

	if (!catalog_exists())
		return false;
	SPI_connect();
	if (SPI_execute("UPDATE stream.captures SET origin = stream._aggregate_origin(), "
					"applied_lsn = NULL, start_lsn = pg_catalog.pg_current_wal_insert_lsn() "
					"WHERE origin OPERATOR(pg_catalog.<>) stream._aggregate_origin()",
					false, 0) == SPI_OK_UPDATE)
		found = SPI_processed > 0;
	SPI_finish();
	return found;
}

static const ConsumerSink capture_sink = {
	.what = "capture",
	.dead_kind = "capture",

	/*
	 * NULL in queue mode (no slot for captures), and on a catalog from
	 * before 0.2.0 (the function is called through query_to_xml so that
	 * the query parses there too).
	 */
	.signature_sql = "SELECT CASE WHEN pg_catalog.to_regprocedure('stream._capture_signature()') IS NOT NULL "
	"THEN nullif(pg_catalog.query_to_xml('SELECT s FROM stream._capture_signature() s "
	"WHERE s IS NOT NULL', false, true, '')::text, '') END",
	.states = capture_states,
	.load = capture_load,
	.free = capture_free,
	.fold = capture_fold,
	.pending = capture_pending,
	.lock = capture_lock,
	.apply = capture_apply,
	.retried = capture_retried,
	.committed = capture_committed,
	.reset = capture_reset,
	.set_error = capture_set_error,
	.adopt = capture_adopt,
	.change = capture_change,
};

/* registers the sink; _PG_init, after the other sinks */
void
capture_init(void)
{
	consumer_register_sink(&capture_sink);
}
