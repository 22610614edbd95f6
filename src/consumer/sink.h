/*-------------------------------------------------------------------------
 * sink.h
 *	  The interface between the consumer (the driver: slot, decoding loop,
 *	  apply transaction, LSN bookkeeping, failure boundary) and the kinds of
 *	  definitions it feeds (sinks: continuous aggregates, batched
 *	  activations).  A sink compiles its definitions, folds events into
 *	  them, and writes what it folded in the driver's apply transaction.
 *	  The driver knows nothing of aggregates or activations: a definition is
 *	  a ConsumerDef at the start of the sink's own runtime struct.
 *
 * Exactly once: a definition's applied LSN is written in the transaction
 * that writes what it folded; the driver skips, for each definition, the
 * commits before it, and never lets the slot forget WAL a definition
 * still needs.  docs/aggregates.md has the argument.
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_CONSUMER_SINK_H
#define STREAM_EVENTS_CONSUMER_SINK_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "executor/tuptable.h"
#include "nodes/pg_list.h"
#include "utils/elog.h"

struct ConsumerSink;
struct RelationData;
struct ReorderBufferTXN;
struct ReorderBufferChange;

/* one definition as the driver sees it (the first member of a runtime) */
typedef struct ConsumerDef
{
	const struct ConsumerSink *sink;
	int32		id;				/* agg_id, act_id */
	char	   *name;			/* for messages */
	Oid			owner;
	char	   *search_path;	/* its expressions run in it (owner.h) */
	Oid			stream;			/* the stream it folds; InvalidOid: none */
	XLogRecPtr	applied_lsn;	/* commits before it are applied (queue mode:
								 * windows, consumer/queue.c) */
	Datum		start_snapshot; /* queue mode: pg_snapshot whose transactions
								 * it skips (created then), or 0 */
	bool		backfill;		/* not backfilled yet: no applied LSN */
	bool		rides;			/* its applied LSN follows another's (thresholds) */
	bool		denied;			/* its owner may not read what it watches */
	bool		skip_errors;	/* on_error => 'skip': poison events are dead letters */
	bool		careful;		/* evaluated per event in a subtransaction */
	int			ndead;			/* dead letters queued in this batch */
} ConsumerDef;

/* a catalog row as the driver needs it to park and resume */
typedef struct ConsumerDefState
{
	int32		id;
	bool		in_error;		/* status = 'error' (stream.resume clears it) */
} ConsumerDefState;

/* one event folded into a definition */
typedef struct ConsumerEvent
{
	TupleTableSlot *row;		/* in the stream's row type */
	XLogRecPtr	lsn;			/* its commit's; invalid in a backfill */
	TimestampTz commit_time;	/* 0 in a backfill */
} ConsumerEvent;

typedef struct ConsumerSink
{
	const char *what;			/* "continuous aggregate", "activation" */
	const char *dead_kind;		/* stream.dead_letters.kind */

	/*
	 * A text expression that changes when the definitions must be loaded
	 * again (not with every apply: then WAL would be read again each round)
	 */
	const char *signature_sql;
	/* rows restored from a dump of another database: true if adopted (optional) */
	bool		(*adopt) (void);

	/* the catalog's definitions and whether each is in error (SPI) */
	List	   *(*states) (void);
	/* compiles the definitions but those in skip (SPI, in CurrentMemoryContext) */
	List	   *(*load) (List *skip);
	/* after every sink loaded (a sink may bind to another's definitions) */
	void		(*loaded) (void);
	/* forgets every compiled definition (their memory is the driver's) */
	void		(*free) (void);

	/*
	 * One event into one definition, in its owner's scope with an active
	 * snapshot; returns the units of memory it queued (groups, firings).
	 */
	int			(*fold) (ConsumerDef *def, ConsumerEvent *ev);
	/* whether something is folded and not applied */
	bool		(*pending) (ConsumerDef *def);

	/*
	 * The batch memory (consumer_batch_context) passed
	 * stream_events.consumer_memory in the middle of a transaction: what
	 * is folded goes to temporary files, to be applied with the rest
	 * (optional; in a transaction, outside any owner scope)
	 */
	void		(*spill) (List *defs);

	/*
	 * The apply transaction (SPI, snapshot, tagged with the private
	 * origin): every sink locks, then every sink applies, in order.  apply
	 * writes what was folded, the dead letters (consumer_write_dead_letters)
	 * and the applied LSN, and marks what it applied.  retried: the same
	 * for stream.retry_dead_letters (no LSN moves).
	 */
	void		(*lock) (List *defs);
	void		(*apply) (List *defs, XLogRecPtr upto, bool write_idle, TimestampTz now);
	void		(*retried) (List *defs);
	/* after the apply transaction committed (committed) or not */
	void		(*committed) (List *defs, XLogRecPtr upto, TimestampTz now);
	void		(*reset) (List *defs);

	/* an error: status 'error' with msg (id 0: every definition), SPI */
	void		(*set_error) (int32 id, const char *msg);
	/* the database's slot was lost under a running definition (optional) */
	void		(*slot_lost) (ConsumerDef *def);

	/*
	 * Timers (optional): whether one is due at horizon, and firing those due
	 * once every commit before horizon is decoded and applied (own
	 * transaction)
	 */
	bool		(*timers_due) (TimestampTz horizon);
	void		(*fire_timers) (TimestampTz horizon);

	/* backfill (optional): folded groups so far, and the end */
	void		(*backfill_write) (ConsumerDef *def, bool done, XLogRecPtr start,
								   int64 nevents);

	/*
	 * The backfill runs in a process of its own (backfill.c), which says
	 * where it stands in the definition's row (SPI, tagged by the caller):
	 * msg NULL when it starts (the status is 'backfilling' again, an error
	 * left by an earlier attempt cleared), or the error of an attempt that
	 * is tried again, the status unchanged.  A definition's own error goes
	 * to set_error, which parks it.  Needed with backfill_write.
	 */
	void		(*backfill_note) (int32 id, const char *msg);

	/*
	 * A decoded insert, update or delete of a relation that is not a
	 * stream's partition (optional; capture/): true when the sink took it.
	 * Called in the decoding transaction, outside any owner scope.
	 */
	bool		(*change) (struct RelationData *relation, struct ReorderBufferTXN *txn,
						   struct ReorderBufferChange *change);
} ConsumerSink;

/* driver.c: what sinks may call */
extern void consumer_register_sink(const ConsumerSink *sink);
/* for states(): the rows of sql, (id int4, in_error bool) */
extern List *consumer_read_states(const char *sql);

/*
 * Errors raised while an event's expressions are evaluated may be the
 * event's own (a poison event, skipped with on_error => 'skip'); those
 * raised otherwise (a transition function, an upsert) are the
 * definition's.  A sink's fold marks the evaluation.
 */
extern void consumer_evaluating(bool on);

/*
 * A definition's own error outside fold (compiling it, initialising it):
 * blamed on it (parked) rather than on the round.
 */
extern void consumer_blame(const ConsumerSink *sink, int32 id, const char *name,
						   XLogRecPtr applied_lsn);
extern void consumer_unblame(void);

/* in apply: writes the definition's queued dead letters */
extern void consumer_write_dead_letters(ConsumerDef *def);

/*
 * Errors that are an event's own (data exceptions, RAISE, ...): with
 * on_error => 'skip' such an event becomes a dead letter
 */
extern bool consumer_error_is_events(ErrorData *edata);
/*
 * fn(arg) in a subtransaction; an event's own error is returned (copied
 * into errcxt), others thrown (failure.c)
 */
extern ErrorData *consumer_guarded(void (*fn) (void *arg), void *arg, bool only_evaluation,
								   MemoryContext errcxt);
/* one dead letter now, in the caller's transaction (the immediate trigger) */
extern void consumer_insert_dead_letter(ConsumerDef *def, const char *kind, Datum event_id,
										XLogRecPtr lsn, ErrorData *edata);

/* whether the catalog has the failure columns and dead_letters (0.2.0) */
extern bool consumer_catalog_has_failures;

/* the driver's memory for compiled definitions (reset on reload) */
extern MemoryContext consumer_defs_context(void);

/*
 * The parent of every sink's batch memory (what is folded and not yet
 * applied): the driver bounds it by stream_events.consumer_memory.
 */
extern MemoryContext consumer_batch_context(void);
/* whether the batches passed stream_events.consumer_memory */
extern bool consumer_over_memory(void);

#endif							/* STREAM_EVENTS_CONSUMER_SINK_H */
