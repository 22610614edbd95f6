/*-------------------------------------------------------------------------
 * capture.h
 *	  Capture of operational tables (stream.capture, docs/capture.md): a
 *	  committed change of a captured table becomes an event of a stream.
 *	  Logical mode: the worker's decoding hands the change to the capture
 *	  sink (sink.c), which writes the events in the apply transaction with
 *	  the capture's applied LSN.  Queue mode: a row trigger appends the
 *	  change to stream.capture_log (queue.c), which capture_drain() writes
 *	  to the streams.  Both build events the same way (event.c) and write
 *	  them the same way (write.c): as the capture's owner, an event the
 *	  stream refuses kept in its quarantine.
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_CAPTURE_H
#define STREAM_EVENTS_CAPTURE_H

#include "postgres.h"

#include "access/attnum.h"
#include "access/tupdesc.h"
#include "datatype/timestamp.h"
#include "utils/jsonb.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

/* ---------- event.c: a change made into an event ---------- */

/* what a capture makes of a change (its catalog row, stream.captures) */
typedef struct CaptureSpec
{
	int32		capture_id;
	Oid			source;
	Oid			stream;
	Oid			owner;
	char	   *event_prefix;	/* <prefix>.insert|update|delete */
	char	   *source_name;	/* schema-qualified, for context.source */
	List	   *columns;		/* char *; NIL: every column */
	List	   *key_columns;	/* char *: the replica identity's */
	char	   *user_id_column; /* NULL: none */
} CaptureSpec;

/*
 * The columns of a spec in one row type of its source: rebuilt when the
 * row type differs (a column added or dropped).
 */
typedef struct CaptureShape
{
	TupleDesc	source_desc;	/* the row type it was built for (a copy) */
	TupleDesc	seen_desc;		/* the descriptor last compared equal to it */
	int			nprops;
	AttrNumber *props;			/* properties' columns */
	TupleDesc	props_desc;		/* blessed record of them */
	int			nkey;
	AttrNumber *key;
	TupleDesc	key_desc;		/* blessed record of the key */
	AttrNumber	user_attno;		/* 0: none */
} CaptureShape;

/* the operation of a change */
typedef enum CaptureOp
{
	CAPTURE_INSERT = 'i',
	CAPTURE_UPDATE = 'u',
	CAPTURE_DELETE = 'd'
} CaptureOp;

/* a change as the builder gets it: rows deformed in the shape's row type */
typedef struct CaptureChange
{
	CaptureOp	op;
	Datum	   *new_values;		/* NULL for a delete */
	bool	   *new_nulls;
	Datum	   *old_values;		/* NULL: not known */
	bool	   *old_nulls;
	bool		old_is_full;	/* the old row has every column (not just the key) */
	bool	   *unchanged;		/* NULL, or new columns whose value was not logged */
	const char *position;		/* for context.position (xid/lsn or xid/seq) */
} CaptureChange;

/* an event as it is written to the stream */
typedef struct CapturedEvent
{
	pg_uuid_t	event_id;
	text	   *event_name;
	TimestampTz occurred_at;
	text	   *user_id;		/* NULL: none */
	text	   *properties;		/* JSON text: parsed into jsonb by the worker, */
	text	   *context;		/* never in a producer's transaction */
} CapturedEvent;

/* the shape of a spec in desc, reused when desc has not changed */
extern CaptureShape *capture_shape(CaptureSpec *spec, CaptureShape *shape, TupleDesc desc,
								   MemoryContext cxt);
/* the event of a change (event_id and occurred_at are the caller's) */
extern void capture_build_event(CaptureSpec *spec, CaptureShape *shape,
								CaptureChange *change, CapturedEvent *ev);
/* JSON text (CapturedEvent's) as jsonb */
extern Jsonb *capture_jsonb(text *json);
/* the deterministic event_id of a change: v5 of (capture, position) */
extern void capture_event_id(int32 capture_id, const char *position, pg_uuid_t *result);
/* a catalog row (SPI result row) as a spec, in cxt */
extern CaptureSpec *capture_spec_from_row(HeapTuple tup, TupleDesc desc, MemoryContext cxt);
/* the select list capture_spec_from_row reads, FROM stream.captures k */
#define CAPTURE_SPEC_COLUMNS \
	"k.capture_id, k.source::oid, k.stream::oid, k.owner::oid, k.event_prefix, " \
	"pg_catalog.format('%I.%I', n.nspname, c.relname), k.columns, k.key_columns, k.user_id_column"
#define CAPTURE_SPEC_FROM \
	"stream.captures k JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) k.source " \
	"JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace"

/* ---------- write.c: events into their stream ---------- */

/* a batch of events (tuplestore rows in capture_event_desc()) */
extern TupleDesc capture_event_desc(void);
extern void capture_store_event(Tuplestorestate *store, CapturedEvent *ev);

/* what capture_write_events did */
typedef struct CaptureWritten
{
	int64		written;		/* inserted (or dropped as duplicates by dedup) */
	int64		quarantined;	/* refused by the stream, kept in its quarantine */
} CaptureWritten;

/*
 * Inserts the batch into spec's stream as spec's owner, in the caller's
 * transaction; an event the stream refuses (an error of the event's own:
 * contract, envelope) goes to the stream's quarantine instead; any other
 * error is thrown.  Writes are never tagged with the private origin, so
 * the consumer decodes them like a producer's.
 */
extern CaptureWritten capture_write_events(CaptureSpec *spec, Tuplestorestate *store);
/* ERROR (42501) unless the owner may still SELECT the table and INSERT into the stream */
extern void capture_check_rights(CaptureSpec *spec);

/* ---------- sink.c: logical mode ---------- */

extern void capture_init(void);

/* ---------- queue.c: queue mode ---------- */

/*
 * Writes the committed rows of stream.capture_log to their streams, in a
 * transaction of its own; every capture in a subtransaction, a failing
 * one stopped (status error) and the others written.  The worker calls it
 * every loop in queue mode (worker.c); nothing is done while no WAL was
 * written since the last call.  Returns whether captures exist (the
 * worker then polls at stream_events.aggregate_poll_interval).
 */
extern bool capture_drain(void);

#endif							/* STREAM_EVENTS_CAPTURE_H */
