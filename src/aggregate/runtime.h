/*-------------------------------------------------------------------------
 * runtime.h
 *	  Continuous aggregates as the worker's consumer runs them: one
 *	  compiled definition (AggRuntime, compile.c), its groups folded in
 *	  memory (fold.c), their upsert into the state table (upsert.c), and
 *	  the sink that plugs them into the consumer (sink.c, consumer/sink.h).
 *	  Thresholds (activation/threshold.c) watch an aggregate's groups as
 *	  they are upserted, through AggWatch.
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_AGGREGATE_RUNTIME_H
#define STREAM_EVENTS_AGGREGATE_RUNTIME_H

#include "postgres.h"

#include "executor/spi.h"
#include "nodes/execnodes.h"
#include "utils/tuplestore.h"

#include "aggregate/aggregate.h"
#include "consumer/sink.h"

struct AggRuntime;

/*
 * Something that watches an aggregate's groups (on_threshold): its
 * condition and payload are evaluated over the group's view row in the
 * upsert, and edge() is told the result, in the apply transaction.
 */
typedef struct AggWatch
{
	const char *condition;		/* SQL over the view's row */
	const char *payload;		/* SQL, or NULL: the row as JSON */
	const char *search_path;	/* both are analysed in it */
	void		(*edge) (struct AggWatch *w, const char *grp, const char *payload,
						 bool holds);
	/* when the aggregate has backfilled (it then watches) */
	void		(*init) (struct AggWatch *w, struct AggRuntime *rt);
	void	   *arg;
} AggWatch;

/* one aggregate function of an aggregate */
typedef struct AggCall
{
	AggFuncInfo *info;
	int			nargs;
	ExprState **args;
	ExprState  *filter;
	char	   *colname;
	Oid			statetype;
} AggCall;

/* one continuous aggregate, compiled for the worker */
typedef struct AggRuntime
{
	ConsumerDef def;			/* id: agg_id, name: the view */
	Oid			view;
	char	   *view_select;	/* the view's select list over state columns */
	char	   *state_keys;		/* the state table's key columns */
	List	   *watches;		/* AggWatch evaluated in the upsert */
	List	   *pending_watches;	/* not initialised yet: after the backfill */
	Oid			state_rel;
	double		apply_rate;
	TimestampTz last_apply;
	bool		applied_now;	/* written by this apply */
	int			nkeys;
	int			naggs;
	ExprState **keys;
	char	  **keynames;
	Oid		   *keytypes;
	AggCall    *aggs;
	ExprState  *where;
	ExprState  *hop_args[4];
	bool		has_hop;
	EState	   *estate;			/* the expressions' executor state */
	ExprContext *econtext;		/* per row (its per-tuple memory is reset) */
	TupleDesc	keydesc;
	TupleTableSlot *keyslot;
	TupleTableSlot *readslot;	/* reads keys back from hash entries */
	TupleHashTable groups;		/* in batchcxt (rebuilt when it is reset) */
	AttrNumber *keycols;		/* to rebuild it */
	Oid		   *eqfuncs;
	FmgrInfo   *hashfuncs;
	Oid		   *collations;
	MemoryContext batchcxt;		/* a child of consumer_batch_context() */
	MemoryContext hashcxt;		/* the hash table's buckets (likewise) */
	int64		ngroups;
	TupleDesc	spilldesc;		/* keys and serialised states */
	Tuplestorestate *spill;		/* groups spilled in this batch, or NULL */
	MemoryContext spillcxt;
	int64		nspilled;
	int64		events;			/* folded into this batch */
	TimestampTz last_commit_at;
	SPIPlanPtr	upsert;			/* with the watches' evaluation */
	SPIPlanPtr	upsert_plain;	/* without (backfill) */
	int			total_args;		/* of every aggregate call */
} AggRuntime;

/* compile.c: in a transaction, in CurrentMemoryContext, as the owner */
extern AggRuntime *aggregate_compile(int32 agg_id, Oid view, Oid state_rel, Oid stream,
									 Oid owner, const char *tree,
									 const char *search_path, bool backfill,
									 XLogRecPtr applied_lsn);

/* fold.c: one event into the groups (owner's scope); new groups made */
extern int	aggregate_fold(AggRuntime *rt, TupleTableSlot *row);
extern AggTransValue *aggregate_group(AggRuntime *rt, Datum *keys, bool *nulls, bool *isnew);
extern void aggregate_build_groups(AggRuntime *rt);
extern void aggregate_forget_groups(AggRuntime *rt);
extern void aggregate_reset_batch(AggRuntime *rt);
extern void aggregate_release(AggRuntime *rt);

/* upsert.c: the batch into the state table (apply transaction) */
extern void aggregate_upsert_groups(AggRuntime *rt);
extern void aggregate_spill(AggRuntime *rt);
extern void aggregate_free_plans(AggRuntime *rt);
extern void aggregate_forget_plan(AggRuntime *rt);

/* sink.c */
extern const ConsumerSink aggregate_sink;
extern List *aggregate_runtimes(void);
extern void aggregate_add_watch(AggRuntime *rt, AggWatch *w);
extern void aggregate_add_pending_watch(AggRuntime *rt, AggWatch *w);

#endif							/* STREAM_EVENTS_AGGREGATE_RUNTIME_H */
