/*-------------------------------------------------------------------------
 * queue.c
 *	  The producers' side of the ingest queue (queue mode,
 *	  docs/queue-mode.md): the first row a (sub)transaction inserts into a
 *	  stream writes one row of stream.queue_txns, (top-level xid8, the
 *	  xid its rows carry as xmin, stream, received_at).  Nothing else is
 *	  written per event: the worker finds a transaction's rows in the
 *	  stream itself (BRIN on received_at, xmin in the subxids of the
 *	  transactions of a window, consumer/queue.c).
 *
 * The row is written in the (sub)transaction that inserts the events, so
 * it shares their fate: a rolled-back savepoint takes it with its rows,
 * and a prepared transaction's rows and row become visible together.
 * Only in queue mode (consumer_uses_queue): logical mode pays nothing.
 *
 * Rights: like stream.dedup_keys, stream.queue_txns is private to the
 * extension and opened directly, without the executor's permission
 * checks; no user code runs (no trigger, the one index is on a column).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/xid8.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "core/guc.h"
#include "stream/queue.h"
#include "stream_events.h"

#define MAX_NOTED 16

/* the streams the current (sub)transaction has a queue_txns row for */
static TransactionId noted_xid = InvalidTransactionId;
static Oid	noted[MAX_NOTED];
static int	n_noted = 0;

static Oid
queue_txns_relid(void)
{
	return get_relname_relid("queue_txns", get_namespace_oid("stream", false));
}

/*
 * A row of stream_relid is about to be inserted by the current
 * (sub)transaction: its queue_txns row, once per (sub)transaction and
 * stream.  Maintenance's moves write none (their rows were queued when
 * they arrived).
 */
void
queue_note_insert(Oid stream_relid, TimestampTz received_at)
{
	TransactionId xid;
	Oid			relid;
	Relation	rel;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	HeapTuple	tup;

	if (!consumer_uses_queue() || OidIsValid(se_maintenance_source))
		return;
	xid = GetCurrentTransactionId();
	if (xid != noted_xid)
	{
		noted_xid = xid;
		n_noted = 0;
	}
	for (int i = 0; i < n_noted; i++)
		if (noted[i] == stream_relid)
			return;

	relid = queue_txns_relid();
	if (!OidIsValid(relid))
		return;					/* a catalog older than queue mode (0.1.0) */
	rel = table_open(relid, RowExclusiveLock);
	values[0] = FullTransactionIdGetDatum(GetTopFullTransactionId());
	values[1] = TransactionIdGetDatum(xid);
	values[2] = ObjectIdGetDatum(stream_relid);
	values[3] = TimestampTzGetDatum(received_at);
	tup = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	CatalogTupleInsert(rel, tup);
	heap_freetuple(tup);
	table_close(rel, RowExclusiveLock);

	/* a transaction writing to many streams writes a row more per stream */
	if (n_noted < MAX_NOTED)
		noted[n_noted++] = stream_relid;
}

/*
 * The xids (as xid[]) of the stream's rows that may still be unread by the
 * worker: those with a queue_txns row (the worker deletes a row once every
 * definition read past its transaction).  Maintenance does not move
 * them: a moved row gets a new xmin, which no window would read.  Read
 * directly, whoever the caller is.
 */
ArrayType *
queue_unread_xids(Oid stream_relid)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	Datum	   *xids = NULL;
	int			n = 0,
				max = 0;
	Oid			relid = queue_txns_relid();

	if (!OidIsValid(relid))
		return construct_empty_array(XIDOID);
	rel = table_open(relid, AccessShareLock);
	scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;

		if (DatumGetObjectId(heap_getattr(tup, 3, RelationGetDescr(rel), &isnull)) != stream_relid)
			continue;
		if (n == max)
		{
			max = Max(16, max * 2);
			xids = xids ? repalloc(xids, max * sizeof(Datum)) : palloc(max * sizeof(Datum));
		}
		xids[n++] = heap_getattr(tup, 2, RelationGetDescr(rel), &isnull);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	return construct_array(xids, n, XIDOID, sizeof(TransactionId), true, TYPALIGN_INT);
}
