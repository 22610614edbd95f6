/*-------------------------------------------------------------------------
 * act_runtime.h
 *	  Activations as the worker and the producers' trigger run them:
 *	  compiled definitions (ActRuntime), the per-batch queue of firings and
 *	  timer operations, the outbox insert + NOTIFY, absence timers and
 *	  threshold edges.  Implemented in act_runtime.c; decode.c feeds it
 *	  decoded events and calls it in the apply transaction; act_immediate.c
 *	  fires immediate activations from a row trigger.  docs/activations.md.
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_ACT_RUNTIME_H
#define STREAM_EVENTS_ACT_RUNTIME_H

#include "postgres.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "nodes/execnodes.h"

typedef enum ActKind
{
	ACT_EVENT,					/* stream.on_event */
	ACT_ABSENCE,				/* stream.on_absence */
	ACT_THRESHOLD				/* stream.on_threshold */
} ActKind;

/* one activation, compiled */
typedef struct ActRuntime
{
	int32		act_id;
	char	   *name;
	ActKind		kind;
	Oid			stream;			/* event, absence: the stream watched */
	Oid			view;			/* threshold: the aggregate's view */
	Oid			owner;
	char	   *channel;
	char	   *condition;		/* the text (threshold: used in SQL) */
	char	   *payload_text;	/* NULL: the row as JSON */
	char	   *search_path;
	bool		has_cooldown;
	Datum		cooldown;		/* interval */
	Datum		within;			/* absence: interval */
	XLogRecPtr	applied_lsn;	/* commits before it were looked at */
	ExprState  *cond;			/* event: condition; absence: started_by */
	ExprState  *cancel;			/* absence: cancelled_by */
	ExprState  *key;			/* text, or NULL value */
	ExprState  *payload;		/* jsonb as text; NULL: row_to_json */
	bool		notify_id;		/* notify => 'id': the NOTIFY carries the id only */
	EState	   *estate;			/* executor state the expressions run in */
	ExprContext *econtext;		/* its per-tuple context (reset per event) */
	int64		fired;			/* firings in this batch */
	bool		gone;			/* dropped since the definitions were loaded */
	bool		denied;			/* its owner may not read what it watches */
	bool		skip_errors;	/* on_error => 'skip': poison events are dead letters */
	bool		careful;		/* evaluated per event in a subtransaction (decode.c) */
	int			ndead;			/* dead letters queued in this batch */
} ActRuntime;

/*
 * The catalog has the failure columns and stream.dead_letters (0.2.0; the
 * worker may run with this library before ALTER EXTENSION UPDATE).  Set
 * by decode.c when it loads the definitions.
 */
extern bool act_catalog_has_failures;

/* activation.c */
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
 * The activation whose compilation or evaluation is under way (0: none),
 * and its applied LSN: an error then is its own (decode.c parks it).
 */
extern int32 act_blame;
extern XLogRecPtr act_blame_lsn;
extern char act_blame_name[NAMEDATALEN * 2];

extern void act_set_blame(int32 act_id, const char *name, XLogRecPtr applied_lsn);

/*
 * act_runtime.c: loading (in a transaction with SPI, into
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
extern void act_event_envelope(TupleTableSlot *row, Datum *event_id,
							   TimestampTz *occurred_at, TimestampTz *received_at);

/*
 * matching decoded events, in the activation owner's scope (owner.h) with
 * an active snapshot; returns the number of queued operations
 */
extern int	act_match_in_scope(ActRuntime *act, TupleTableSlot *row);

/* in the apply transaction (SPI connected, snapshot pushed) */
extern void act_lock_definitions(List *acts);
extern void act_apply_queue(void);
extern void act_record_applied(List *acts, XLogRecPtr upto);
extern void act_threshold_edge(ActRuntime *act, const char *grp, const char *payload,
							   bool holds);
extern int64 act_fire_row(const char *activation, const char *channel, const char *key,
						  const char *payload, Datum event_id, TimestampTz occurred_at,
						  TimestampTz received_at, bool has_cooldown, Datum cooldown,
						  bool notify_id);

/* after the apply transaction */
extern bool act_queue_pending(void);
extern void act_reset_batch(List *acts);

/* absence timers: fires those due at or before horizon (own transaction) */
extern void act_fire_due_timers(TimestampTz horizon);
extern bool act_timers_due(TimestampTz horizon);
extern void act_forget_timers(void);
extern void act_free_plans(void);

#endif							/* STREAM_EVENTS_ACT_RUNTIME_H */
