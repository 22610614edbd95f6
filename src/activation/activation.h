/*-------------------------------------------------------------------------
 * activation.h
 *	  Activations as the worker and the producers' trigger run them:
 *	  their expressions analysed (definition.c), compiled definitions
 *	  (ActRuntime, compile.c), the per-batch queue of firings and timer
 *	  operations and threshold edges (fire.c), the outbox rows and their
 *	  NOTIFYs (outbox.c), absence timers (timers.c), the consumer's sink
 *	  (sink.c), and the trigger that
 *	  fires immediate activations in the producer's transaction
 *	  (immediate.c).  docs/activations.md.
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_ACTIVATION_H
#define STREAM_EVENTS_ACTIVATION_H

#include "postgres.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "nodes/execnodes.h"

#include "aggregate/runtime.h"
#include "consumer/sink.h"

typedef enum ActKind
{
	ACT_EVENT,					/* stream.on_event */
	ACT_ABSENCE,				/* stream.on_absence */
	ACT_THRESHOLD				/* stream.on_threshold */
} ActKind;

/*
 * One activation, compiled.  def (consumer/sink.h) holds its id, name,
 * owner, search_path, stream (event, absence), applied LSN and failure
 * state; watch (aggregate/runtime.h) makes a threshold evaluated in its
 * aggregate's upsert.
 */
typedef struct ActRuntime
{
	ConsumerDef def;
	ActKind		kind;
	Oid			view;			/* threshold: the aggregate's view */
	char	   *channel;
	char	   *condition;		/* the text (threshold: used in SQL) */
	char	   *payload_text;	/* NULL: the row as JSON */
	bool		has_cooldown;
	Datum		cooldown;		/* interval */
	Datum		within;			/* absence: interval */
	ExprState  *cond;			/* event: condition; absence: started_by */
	ExprState  *cancel;			/* absence: cancelled_by */
	ExprState  *key;			/* text, or NULL value */
	ExprState  *payload;		/* jsonb as text; NULL: row_to_json */
	bool		notify_id;		/* notify => 'id': the NOTIFY carries the id only */
	EState	   *estate;			/* executor state the expressions run in */
	ExprContext *econtext;		/* its per-tuple context (reset per event) */
	int64		fired;			/* firings in this batch */
	int64		queued_fires;	/* firings this batch queued (none dropped yet) */
	bool		touched;		/* this batch queued something for it */
	bool		recorded;		/* this apply recorded its applied LSN */
	bool		written;		/* recorded once since it was loaded */
	bool		gone;			/* dropped since the definitions were loaded */
	AggWatch	watch;			/* threshold */
} ActRuntime;

/* definition.c */
extern void activation_analyze(Oid rel, const char *condition, const char *key,
							   const char *payload, Node **cond_expr,
							   Node **key_expr, Node **payload_expr);
extern Node *activation_stored_expr(Oid rel, const char *tree, Oid type, const char *what);

/*
 * The analysed expressions the catalog keeps (stream._activation_trees),
 * when it does: the worker runs them instead of analysing the text again.
 */
typedef struct ActTrees
{
	char	   *condition;
	char	   *key;
	char	   *payload;		/* NULL: none */
	char	   *cancelled_by;	/* NULL: none */
} ActTrees;

/* the four columns act_stored_trees reads, through to_jsonb (also before they exist) */
#define ACT_TREES_SQL \
	"pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'condition_tree', " \
	"pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'key_tree', " \
	"pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'payload_tree', " \
	"pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'cancelled_by_tree' "

extern const ActTrees *act_stored_trees(HeapTuple tup, TupleDesc desc, int first,
										ActTrees *trees);

/*
 * compile.c: loading (in a transaction with SPI, into
 * CurrentMemoryContext); the act_ids in skip (parked) are not compiled
 */
extern List *act_load_batched(List *skip);
extern bool act_owner_may_read(ActRuntime *act);
extern ActRuntime *act_compile(int32 act_id, const char *name, ActKind kind, Oid rel,
							   Oid owner, const char *condition, const char *cancelled_by,
							   const char *key, const char *payload,
							   const char *channel, const char *search_path,
							   const ActTrees *trees);

/*
 * What an event is to an activation (worker, immediate trigger): computed
 * by act_evaluate as the activation's owner (owner.h), with an active
 * snapshot; key and payload in the caller's CurrentMemoryContext.
 */
typedef struct ActEval
{
	bool		starts;			/* event: condition; absence: started_by */
	bool		cancels;		/* absence: cancelled_by */
	bool		keynull;
	char	   *key;			/* when starts or cancels */
	char	   *payload;		/* JSON text, when starts */
} ActEval;

extern void act_evaluate(ActRuntime *act, TupleTableSlot *row, ActEval *ev);
/* the same, the caller in the owner's scope with an active snapshot */
extern void act_evaluate_in_scope(ActRuntime *act, TupleTableSlot *row, ActEval *ev);
extern void act_event_envelope(TupleTableSlot *row, Datum *event_id,
							   TimestampTz *occurred_at, TimestampTz *received_at);

/*
 * matching decoded events, in the activation owner's scope (owner.h) with
 * an active snapshot; returns the number of queued operations
 */
extern int	act_match_in_scope(ActRuntime *act, TupleTableSlot *row);

/* in the apply transaction (SPI connected, snapshot pushed) */
extern void act_lock_definitions(List *acts);
extern void act_record_queued(List *acts, XLogRecPtr upto);
extern void act_apply_queue(List *acts);
extern void act_record_applied(List *acts, XLogRecPtr upto, bool write_idle, bool force);
extern void act_threshold_edge(ActRuntime *act, const char *grp, const char *payload,
							   bool holds);

/* after the apply transaction */
extern bool act_queue_pending(void);
extern void act_spill_queue(void);
extern void act_reset_batch(List *acts);

extern void act_free_plans(void);

/*
 * outbox.c: one outbox row and its NOTIFY (SPI connected), the batch of
 * the worker's firings without a cooldown, the NOTIFYs of an apply
 * counted per channel, and SPI statements with the worker's writes tagged
 */
extern int64 act_fire_row(const char *activation, const char *channel, const char *key,
						  const char *payload, Datum event_id, TimestampTz occurred_at,
						  TimestampTz received_at, bool has_cooldown, Datum cooldown,
						  bool notify_id);
extern int	act_execute_tagged(SPIPlanPtr plan, const char *sql, Datum *args);
extern void act_notify_row(const char *channel, int64 id, const char *json, bool id_only);
extern void act_notify_begin(void);
extern void act_notify_end(void);
extern void act_notify_reset(void);
extern void act_outbox_add(ActRuntime *act, const char *key, const char *payload,
						   Datum event_id, TimestampTz occurred_at, TimestampTz received_at);
extern void act_outbox_add_due(const char *activation, const char *channel, bool notify_id,
							   const char *key, Datum payload, Datum event_id,
							   TimestampTz occurred_at, TimestampTz received_at,
							   TimestampTz due_at);
extern void act_outbox_flush(void);
extern void act_outbox_discard(void);
extern void act_outbox_free_plans(void);

/* position.c */
extern bool act_position_write(int32 act_id, XLogRecPtr lsn, int64 fired, bool running,
							   bool *gone);

/*
 * timers.c: absence timers.  Opened and cancelled in the apply transaction
 * (folded, written by act_timers_flush); those due at or before horizon
 * fired in transactions of their own.
 */
extern void act_timer_start(ActRuntime *act, const char *key, const char *payload,
							Datum event_id, TimestampTz occurred_at, TimestampTz received_at);
extern void act_timer_cancel(ActRuntime *act, const char *key, TimestampTz received_at);
extern void act_timers_flush(void);
extern void act_timers_discard(void);
extern void act_fire_due_timers(List *acts, TimestampTz horizon);
extern bool act_timers_due(TimestampTz horizon);
extern void act_forget_timers(void);
extern void act_timers_free_plans(void);

/* sink.c: the consumer's sink of batched activations (consumer/sink.h) */
extern const ConsumerSink activation_sink;
extern void activation_init(void);

#endif							/* STREAM_EVENTS_ACTIVATION_H */
