/*-------------------------------------------------------------------------
 * decode.c
 *	  The consumer of continuous aggregates, run by each database's worker
 *	  (worker.c calls aggregates_round() every loop): one logical
 *	  replication slot per database, decoded in-process through this
 *	  library's output plugin callbacks; decoded inserts into a stream's
 *	  partitions are folded into per-group partial states in memory and
 *	  applied, with the applied LSN, in one transaction; then the slot is
 *	  advanced.  Activations ride on the same decoding (act_runtime.c):
 *	  matching events become outbox rows and NOTIFYs, absence timers are
 *	  opened and cancelled, threshold edges are evaluated as groups are
 *	  upserted, all in the apply transaction (docs/activations.md).  Also
 *	  the backfill of a new aggregate from the snapshot of a short-lived
 *	  slot's consistent point.  docs/aggregates.md has the exactly-once
 *	  argument.
 *
 * Identities: every piece of an aggregate's defining query (analysis,
 * planning, ExecInitExpr, evaluation of keys, WHERE, FILTER, aggregate
 * arguments and transition functions, the upsert with its thresholds, the
 * backfill's read) runs in an owner scope (owner.h) of the aggregate's
 * owner, restricted, in the search_path it was created in.  Expressions
 * are evaluated with an active snapshot and an executor state, so that SQL
 * functions the planner does not inline and plpgsql work as in a query.
 *
 * Origins: the worker's own writes (state rows, catalog rows, outbox,
 * timers) are tagged with the extension's private replication origin
 * (origin.h), and cb_filter_by_origin skips them change by change; nothing
 * else is skipped (a producer cannot forge that origin).
 *
 * Memory: definitions live in defs_cxt (rebuilt when the catalog changes);
 * each aggregate's groups and states in its batch context, reset after
 * every apply; a batch is applied at a commit boundary once it holds
 * stream_events.aggregate_batch_groups groups or is a second old, so memory
 * is bounded by groups, not by the backlog (the reorder buffer spills large
 * transactions to disk by itself).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/tupconvert.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogutils.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/extension.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_agg.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/origin.h"
#include "replication/output_plugin.h"
#include "replication/slot.h"
#include "replication/snapbuild.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "utils/datum.h"
#include "utils/uuid.h"

#include "activation/activation.h"
#include "aggregate/aggregate.h"
#include "core/origin.h"
#include "core/owner.h"
#include "stream_events.h"

#include <math.h>

PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

int			se_aggregate_poll_ms = 20;
int			se_aggregate_batch_groups = 50000;
int			se_activation_retention = 7 * 24 * 3600;
int			se_wake_delay_max_ms = 5;

/* an idle worker still makes a full round this often */
#define IDLE_ROUND_MS 5000

/* the prefix of the flush marker (stream.flush) */
#define MESSAGE_PREFIX "stream_events"

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
	int32		agg_id;
	char	   *name;			/* the view, for messages */
	Oid			view;
	char	   *view_select;	/* the view's select list over state columns */
	char	   *state_keys;		/* the state table's key columns */
	List	   *thresholds;		/* ActRuntime of on_threshold on this aggregate */
	List	   *pending_thresholds; /* not initialised yet: after the backfill */
	Oid			state_rel;
	Oid			stream;
	Oid			owner;
	char	   *search_path;	/* the schemas the query was analysed in */
	bool		backfill;		/* not backfilled yet: no applied LSN */
	XLogRecPtr	applied_lsn;	/* changes of commits before it are applied */
	double		apply_rate;
	TimestampTz last_apply;
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
	TupleHashTable groups;
	MemoryContext batchcxt;
	int64		ngroups;
	int64		events;			/* folded into this batch */
	TimestampTz last_commit_at;
	SPIPlanPtr	upsert;			/* with the thresholds' evaluation */
	SPIPlanPtr	upsert_plain;	/* without (backfill) */
	int			total_args;		/* of every aggregate call */
	bool		skip_errors;	/* on_error => 'skip': poison events are dead letters */
	bool		careful;		/* folded per event in a subtransaction */
	int			ndead;			/* dead letters queued in this batch */
} AggRuntime;

/* a stream that feeds aggregates or activations */
typedef struct StreamFeed
{
	Oid			stream;
	TupleDesc	desc;
	TupleTableSlot *slot;
	List	   *runtimes;
	List	   *acts;
} StreamFeed;

/* what a relation seen in the WAL is to us */
typedef struct PartEntry
{
	Oid			relid;
	StreamFeed *feed;			/* NULL: not a partition of a fed stream */
	TupleConversionMap *map;	/* partition row -> stream row, or NULL */
	TupleTableSlot *slot;		/* the partition's row type */
} PartEntry;

static MemoryContext consumer_cxt = NULL;	/* lives as long as the worker */
static MemoryContext defs_cxt = NULL;
static List *runtimes = NIL;
static List *feeds = NIL;
static List *acts = NIL;			/* ActRuntime, delivery 'batched' */
static bool have_absence = false;
static TimestampTz decode_horizon = 0;	/* every commit before it is decoded */
static bool decoded_to_end = false;
static HTAB *part_cache = NULL;
static MemoryContext part_cxt = NULL;
static bool part_cache_stale = false;
static char *defs_signature = NULL;
static bool have_definitions = false;

static LogicalDecodingContext *dctx = NULL;
static LogicalDecodingContext *bf_ctx = NULL;	/* during a backfill's start */
static bool consumer_active = false;	/* our callbacks run in the worker */
static RepOriginId own_origin = InvalidRepOriginId;	/* looked up per round */
static bool flush_seen = false;
static bool stop_after_commit = false;
static int64 batch_groups = 0;
static TimestampTz batch_started = 0;
static TimestampTz next_attempt = 0;
static TimestampTz last_idle_write = 0;
static AggRuntime *current_rt = NULL;	/* for error attribution */
static int32 blame_agg = 0;		/* the aggregate being compiled */
static XLogRecPtr blame_lsn = InvalidXLogRecPtr;
static char blame_name[NAMEDATALEN];

/*
 * Definitions parked after an error of their own (a failure boundary per
 * definition): not loaded, so the others go on; their applied LSN still
 * holds the slot, so a parked definition replays from it once it runs
 * again.  Kept by this worker only: an aggregate runs again when rebuilt
 * (stream.rebuild_aggregate), either kind when the worker restarts.
 */
typedef struct ParkedDef
{
	bool		is_act;
	int32		id;
	XLogRecPtr	applied_lsn;	/* invalid: was backfilling */
} ParkedDef;

static List *parked = NIL;		/* ParkedDef, in consumer_cxt */

/*
 * Poison events (on_error => 'skip').  The hot path evaluates without a
 * subtransaction.  When an event's evaluation fails for a definition that
 * skips, the round is aborted as for any error, but instead of parking the
 * definition it becomes careful: from the next round on (at once, from the
 * slot) its events are evaluated one by one in a subtransaction, those
 * that fail are queued as dead letters, and the queue is written in the
 * apply transaction that moves the definition's applied LSN past them
 * (exactly once, like the states).  Once it has applied past the event
 * that failed (until), it goes back to the hot path.
 */
typedef struct CarefulDef
{
	bool		is_act;
	int32		id;
	XLogRecPtr	until;			/* invalid: a backfill */
} CarefulDef;

static List *careful = NIL;		/* CarefulDef, in consumer_cxt */

typedef struct DeadLetter
{
	bool		is_act;
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

/* an evaluation of an event under way (its errors may be the event's) */
static bool eval_phase = false;
static ActRuntime *eval_act = NULL;
static XLogRecPtr eval_lsn = InvalidXLogRecPtr;
static bool eval_has_event = false;
static pg_uuid_t eval_event;

static bool retry_pending = false;	/* stream.retry_dead_letters asked */
static XLogRecPtr decoded_end = InvalidXLogRecPtr;	/* decoded and applied to */
static XLogRecPtr last_round_insert = InvalidXLogRecPtr;
static XLogRecPtr bf_lsn = InvalidXLogRecPtr;	/* the backfill's consistent point */
static TimestampTz last_full_round = 0;
static char *last_warning = NULL;
static int	se_slot_warning_mb = 1024;
static TimestampTz last_slot_warning = 0;

static void release_decoding(void);
static struct CarefulDef *careful_find(bool is_act, int32 id);
static void careful_add(bool is_act, int32 id, XLogRecPtr until);

char *
aggregate_slot_name(Oid dboid)
{
	return psprintf("stream_events_%u", dboid);
}

void
aggregate_init(void)
{
	DefineCustomIntVariable("stream_events.aggregate_poll_interval",
							"Milliseconds between the worker's checks for new WAL to apply to continuous aggregates.",
							NULL, &se_aggregate_poll_ms, 20, 1, 10000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("stream_events.slot_warning_size",
							"WAL a continuous aggregates slot may hold before the worker warns (a stalled consumer).",
							NULL, &se_slot_warning_mb, 1024, 1, INT_MAX / 2,
							PGC_SIGHUP, GUC_UNIT_MB, NULL, NULL, NULL);
	DefineCustomIntVariable("stream_events.aggregate_batch_groups",
							"Groups held in memory before the worker applies a batch to continuous aggregates.",
							NULL, &se_aggregate_batch_groups, 50000, 100, 10000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("stream_events.wake_delay_max",
							"Longest rest of the worker between rounds when producers wake it.",
							"Producers that commit events wake the worker of a database with activations; it rests ten times as long as its last round took, at most this, so that busy streams are batched.",
							&se_wake_delay_max_ms, 5, 0, 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("stream_events.activation_retention",
							"How long acknowledged rows of stream.activations are kept.",
							"Rows every consumer of their channel acknowledged (or of channels without consumers) are deleted once older; unacknowledged rows stay.",
							&se_activation_retention, 7 * 24 * 3600, 60, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
}

/* ---------- relation cache: partition -> stream ---------- */

/*
 * Relcache invalidation (a partition attached or detached, a column added):
 * the cache is rebuilt at the next lookup, never under a caller that may
 * still use one of its slots.
 */
static void
part_cache_invalidate(Datum arg, Oid relid)
{
	part_cache_stale = true;
}

static void
part_cache_reset(void)
{
	part_cache = NULL;
	part_cache_stale = false;
	if (part_cxt)
		MemoryContextReset(part_cxt);
}

static PartEntry *
part_lookup(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	PartEntry  *pe;
	bool		found;
	MemoryContext old;
	StreamFeed *feed = NULL;

	if (part_cache_stale)
		part_cache_reset();
	if (part_cache != NULL)
	{
		pe = hash_search(part_cache, &relid, HASH_FIND, NULL);
		if (pe)
			return pe;
	}
	/* catalog reads first: they may process invalidations */
	if (rel->rd_rel->relispartition && rel->rd_rel->relkind == RELKIND_RELATION)
	{
		List	   *ancestors = get_partition_ancestors(relid);
		Oid			root = llast_oid(ancestors);
		ListCell   *lc;

		foreach(lc, feeds)
			if (((StreamFeed *) lfirst(lc))->stream == root)
				feed = lfirst(lc);
		list_free(ancestors);
	}
	if (part_cache_stale)
		part_cache_reset();
	if (part_cache == NULL)
	{
		HASHCTL		ctl;

		if (part_cxt == NULL)
			part_cxt = AllocSetContextCreate(consumer_cxt, "stream_events partitions",
											 ALLOCSET_DEFAULT_SIZES);
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(PartEntry);
		ctl.hcxt = part_cxt;
		part_cache = hash_create("stream_events partitions", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	pe = hash_search(part_cache, &relid, HASH_ENTER, &found);
	pe->feed = feed;
	pe->map = NULL;
	pe->slot = NULL;
	if (pe->feed)
	{
		old = MemoryContextSwitchTo(part_cxt);
		pe->slot = MakeSingleTupleTableSlot(CreateTupleDescCopy(RelationGetDescr(rel)),
											&TTSOpsHeapTuple);
		pe->map = convert_tuples_by_name(pe->slot->tts_tupleDescriptor, pe->feed->desc);
		MemoryContextSwitchTo(old);
	}
	return pe;
}

/* ---------- definitions ---------- */

typedef struct HopParamContext
{
	Index		hop_rti;
} HopParamContext;

/* the hopping window's column becomes PARAM_EXEC 0, set per window */
static Node *
hop_var_mutator(Node *node, HopParamContext *ctx)
{
	if (node == NULL)
		return NULL;
	if (IsA(node, Var) && ((Var *) node)->varno == ctx->hop_rti &&
		((Var *) node)->varlevelsup == 0)
	{
		Param	   *p = makeNode(Param);

		p->paramkind = PARAM_EXEC;
		p->paramid = 0;
		p->paramtype = TIMESTAMPTZOID;
		p->paramtypmod = -1;
		p->paramcollid = InvalidOid;
		p->location = -1;
		return (Node *) p;
	}
	return expression_tree_mutator(node, hop_var_mutator, (void *) ctx);
}

/*
 * Plans one expression of the defining query and initialises it in the
 * aggregate's executor state, as ExecPrepareExpr does (the hopping
 * window's column first becomes a parameter).  In the owner's scope:
 * expression_planner runs immutable functions with constant arguments,
 * ExecInitExpr checks EXECUTE.
 */
static ExprState *
prepare_expr(AggRuntime *rt, Expr *expr, AggShape *shape)
{
	HopParamContext ctx = {shape->hop_rti};
	MemoryContext old = MemoryContextSwitchTo(rt->estate->es_query_cxt);
	ExprState  *state;

	if (shape->hop_rti != 0)
		expr = (Expr *) hop_var_mutator((Node *) expr, &ctx);
	state = ExecInitExpr(expression_planner(expr), NULL);
	MemoryContextSwitchTo(old);
	return state;
}

static ExprState *
prepare_qual(AggRuntime *rt, Expr *expr, AggShape *shape)
{
	HopParamContext ctx = {shape->hop_rti};
	MemoryContext old = MemoryContextSwitchTo(rt->estate->es_query_cxt);
	ExprState  *state;

	if (shape->hop_rti != 0)
		expr = (Expr *) hop_var_mutator((Node *) expr, &ctx);
	state = ExecInitQual(make_ands_implicit(expression_planner(expr)), NULL);
	MemoryContextSwitchTo(old);
	return state;
}

/* compile_definition's work, in the owner's scope */
static void
compile_shape(AggRuntime *rt, Query *query)
{
	AggShape   *shape;
	ListCell   *lc;
	int			k = 0,
				a = 0;
	AttrNumber *keycols;
	Oid		   *eqops;
	Oid		   *eqfuncs;
	FmgrInfo   *hashfuncs;
	Oid		   *collations;

	shape = aggregate_shape(query, rt->owner);
	if (shape->stream != rt->stream)
		elog(ERROR, "aggregate %s: stream changed", rt->name);

	rt->nkeys = shape->nkeys;
	rt->naggs = shape->naggs;
	rt->keys = palloc0(rt->nkeys * sizeof(ExprState *));
	rt->keynames = palloc0(rt->nkeys * sizeof(char *));
	rt->keytypes = palloc0(rt->nkeys * sizeof(Oid));
	rt->aggs = palloc0(rt->naggs * sizeof(AggCall));
	rt->keydesc = CreateTemplateTupleDesc(rt->nkeys);
	keycols = palloc(rt->nkeys * sizeof(AttrNumber));
	eqops = palloc(rt->nkeys * sizeof(Oid));
	collations = palloc(rt->nkeys * sizeof(Oid));

	/* as for index expressions (FormIndexDatum): an EState of its own */
	rt->estate = CreateExecutorState();
	rt->estate->es_param_exec_vals = palloc0(sizeof(ParamExecData));
	rt->econtext = CreateExprContext(rt->estate);

	foreach(lc, shape->columns)
	{
		AggShapeColumn *col = lfirst(lc);

		if (col->is_key)
		{
			rt->keys[k] = prepare_expr(rt, col->expr, shape);
			rt->keynames[k] = col->name;
			rt->keytypes[k] = col->type;
			TupleDescInitEntry(rt->keydesc, k + 1, col->name, col->type, col->typmod, 0);
			TupleDescInitEntryCollation(rt->keydesc, k + 1, col->collation);
			keycols[k] = k + 1;
			eqops[k] = lookup_type_cache(col->type, TYPECACHE_EQ_OPR)->eq_opr;
			collations[k] = col->collation;
			k++;
		}
		else
		{
			Aggref	   *aggref = (Aggref *) col->expr;
			AggCall    *call = &rt->aggs[a++];
			Oid			inputTypes[FUNC_MAX_ARGS];
			int			nargs = get_aggregate_argtypes(aggref, inputTypes);
			ListCell   *lc2;
			int			i = 0;

			call->info = aggfunc_create(aggref->aggfnoid, inputTypes, nargs,
										aggref->inputcollid, true, defs_cxt);
			call->nargs = nargs;
			rt->total_args += nargs;
			call->args = palloc0(Max(nargs, 1) * sizeof(ExprState *));
			foreach(lc2, aggref->args)
			{
				TargetEntry *tle = lfirst_node(TargetEntry, lc2);

				call->args[i++] = prepare_expr(rt, tle->expr, shape);
			}
			if (aggref->aggfilter)
				call->filter = prepare_qual(rt, aggref->aggfilter, shape);
			call->colname = col->name;
			call->statetype = col->statetype;
		}
	}
	if (shape->where)
		rt->where = prepare_qual(rt, (Expr *) shape->where, shape);
	if (shape->hop)
	{
		FuncExpr   *hop = (FuncExpr *) expression_planner((Expr *) shape->hop);
		MemoryContext old;

		if (!IsA(hop, FuncExpr) || list_length(hop->args) != 4)
			elog(ERROR, "unexpected hopping window expression");
		rt->has_hop = true;
		old = MemoryContextSwitchTo(rt->estate->es_query_cxt);
		for (int i = 0; i < 4; i++)
			rt->hop_args[i] = ExecInitExpr(list_nth(hop->args, i), NULL);
		MemoryContextSwitchTo(old);
	}

	rt->keyslot = MakeSingleTupleTableSlot(rt->keydesc, &TTSOpsVirtual);
	rt->readslot = MakeSingleTupleTableSlot(rt->keydesc, &TTSOpsMinimalTuple);
	rt->batchcxt = AllocSetContextCreate(defs_cxt, "stream_events aggregate batch",
										 ALLOCSET_DEFAULT_SIZES);
	execTuplesHashPrepare(rt->nkeys, eqops, &eqfuncs, &hashfuncs);
	rt->groups = BuildTupleHashTableExt(NULL, rt->keydesc, rt->nkeys, keycols,
										eqfuncs, hashfuncs, collations, 1024, 0,
										defs_cxt, rt->batchcxt,
										rt->econtext->ecxt_per_tuple_memory, false);
}

/*
 * Builds the runtime of one catalog row; in a transaction, in defs_cxt.
 * Analysed, planned and initialised as the owner (owner.h).
 */
static AggRuntime *
compile_definition(int32 agg_id, Oid view, Oid state_rel, Oid stream, Oid owner,
				   const char *tree, const char *search_path, bool backfill,
				   XLogRecPtr applied_lsn)
{
	AggRuntime *rt = palloc0(sizeof(AggRuntime));
	Query	   *query = (Query *) stringToNode(tree);
	OwnerScope	scope = {0};

	rt->agg_id = agg_id;
	rt->name = get_rel_name(view);
	rt->view = view;
	rt->state_rel = state_rel;
	rt->stream = stream;
	rt->owner = owner;
	rt->search_path = search_path ? pstrdup(search_path) : NULL;
	rt->backfill = backfill;
	rt->applied_lsn = applied_lsn;

	owner_enter(&scope, owner, search_path);
	PG_TRY();
	{
		compile_shape(rt, query);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	return rt;
}

static void
free_definitions(void)
{
	ListCell   *lc;

	last_round_insert = InvalidXLogRecPtr;

	foreach(lc, runtimes)
	{
		AggRuntime *rt = lfirst(lc);

		if (rt->upsert)
			SPI_freeplan(rt->upsert);
		if (rt->upsert_plain)
			SPI_freeplan(rt->upsert_plain);
	}
	runtimes = NIL;
	feeds = NIL;
	act_reset_batch(acts);
	acts = NIL;
	have_absence = false;
	worker_set_consumer_wake(false);
	act_free_plans();
	if (defs_cxt)
		MemoryContextReset(defs_cxt);
	part_cache_reset();
	defs_signature = NULL;
	have_definitions = false;
	batch_groups = 0;
}

static StreamFeed *
feed_for(Oid stream)
{
	ListCell   *lc;
	StreamFeed *feed;
	Relation	rel;

	foreach(lc, feeds)
		if (((StreamFeed *) lfirst(lc))->stream == stream)
			return lfirst(lc);
	rel = relation_open(stream, AccessShareLock);
	feed = palloc0(sizeof(StreamFeed));
	feed->stream = stream;
	feed->desc = CreateTupleDescCopy(RelationGetDescr(rel));
	feed->slot = MakeSingleTupleTableSlot(feed->desc, &TTSOpsVirtual);
	relation_close(rel, AccessShareLock);
	feeds = lappend(feeds, feed);
	return feed;
}

/* Runs a read-only query as owner (owner.h); SPI_OK_SELECT or an error. */
static void
select_as(Oid owner, const char *search_path, const char *sql, const char *what)
{
	OwnerScope	scope = {0};

	owner_enter(&scope, owner, search_path);
	PG_TRY();
	{
		if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not evaluate %s", what);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
}

/*
 * A new threshold starts from the groups that already satisfy its condition
 * (they fire only once they stopped and rose again): read as the
 * aggregate's owner, in the threshold's search_path, written as the worker
 * (tagged as its own, origin.h), with the threshold's applied_lsn, which
 * marks it initialised.  Not while the aggregate is backfilling: backfill()
 * calls this when it is done.  In a transaction with SPI.
 */
static void
init_threshold(AggRuntime *rt, ActRuntime *act)
{
	char	   *state = definition_relation_name(rt->state_rel);
	char	   *sql;
	uint64		n;
	SPITupleTable *tuptable;
	XLogRecPtr	now_lsn = GetXLogInsertRecPtr();
	MemoryContext cxt = CurrentMemoryContext;
	OriginTag	tag = {0};

	sql = psprintf("SELECT g FROM (SELECT pg_catalog.jsonb_build_array(%s)::pg_catalog.text AS g, "
				   "(SELECT coalesce((\n%s\n), false) FROM (SELECT %s) v) AS holds FROM %s) s "
				   "WHERE holds", rt->state_keys, act->condition, rt->view_select, state);
	select_as(rt->owner, act->search_path, sql, act->name);
	n = SPI_processed;
	tuptable = SPI_tuptable;
	origin_tag_begin(&tag);
	PG_TRY();
	{
		Oid			types[2] = {INT4OID, TEXTOID};
		Datum		args[2];

		args[0] = Int32GetDatum(act->act_id);
		for (uint64 i = 0; i < n; i++)
		{
			args[1] = CStringGetTextDatum(SPI_getvalue(tuptable->vals[i], tuptable->tupdesc, 1));
			if (SPI_execute_with_args("INSERT INTO stream.threshold_state (act_id, grp) VALUES ($1, $2) "
									  "ON CONFLICT DO NOTHING", 2, types, args, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not initialise threshold %s", act->name);
		}
		types[1] = LSNOID;
		args[1] = LSNGetDatum(now_lsn);
		if (SPI_execute_with_args("UPDATE stream.activation_defs SET applied_lsn = $2, applied_at = now() "
								  "WHERE act_id = $1", 2, types, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not initialise threshold %s", act->name);
	}
	PG_FINALLY();
	{
		origin_tag_end(&tag);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	act->applied_lsn = now_lsn;
	/* evaluated from now on, with the group's upsert */
	if (rt->upsert)
		SPI_freeplan(rt->upsert);
	rt->upsert = NULL;
	rt->thresholds = lappend(rt->thresholds, act);
}

/*
 * Whether a definition is parked.  An aggregate stays parked while its
 * catalog row says 'error'; rebuilt (or set right otherwise), it runs again.
 */
static bool
is_parked(bool is_act, int32 id, bool in_error)
{
	ListCell   *lc;

	foreach(lc, parked)
	{
		ParkedDef  *p = lfirst(lc);

		if (p->is_act != is_act || p->id != id)
			continue;
		if (is_act || in_error)
			return true;
		parked = foreach_delete_current(parked, lc);
		careful_add(false, id, GetXLogInsertRecPtr());
		return false;
	}
	return false;
}

/*
 * After an error: the definition it belongs to, if any, is parked (*what
 * names it), unless the error is one that passes by itself (deadlock,
 * serialisation, lock or statement timeout, shutdown, resources), which is
 * retried as before.  Returns the aggregate the error belongs to (0: none
 * or an activation).
 */
static int32
park_blamed(ErrorData *edata, char **what, int32 *act_id)
{
	int			class = ERRCODE_TO_CATEGORY(edata->sqlerrcode);
	ParkedDef  *p;
	MemoryContext old;

	*what = NULL;
	*act_id = 0;
	if (class == ERRCODE_TO_CATEGORY(ERRCODE_T_R_SERIALIZATION_FAILURE) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_INSUFFICIENT_RESOURCES) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_OPERATOR_INTERVENTION) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_SYSTEM_ERROR) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_CONNECTION_EXCEPTION))
		return current_rt ? current_rt->agg_id : blame_agg;
	old = MemoryContextSwitchTo(consumer_cxt);
	p = palloc0(sizeof(ParkedDef));
	if (current_rt)
	{
		p->id = current_rt->agg_id;
		p->applied_lsn = current_rt->backfill ? InvalidXLogRecPtr : current_rt->applied_lsn;
		*what = psprintf("continuous aggregate %s", current_rt->name);
	}
	else if (blame_agg)
	{
		p->id = blame_agg;
		p->applied_lsn = blame_lsn;
		*what = psprintf("continuous aggregate %s", blame_name);
	}
	else if (act_blame || eval_act)
	{
		p->is_act = true;
		p->id = act_blame ? act_blame : eval_act->act_id;
		p->applied_lsn = act_blame ? act_blame_lsn : eval_act->applied_lsn;
		*what = psprintf("activation %s", act_blame ? act_blame_name : eval_act->name);
		*act_id = p->id;
	}
	else
	{
		pfree(p);
		p = NULL;
	}
	if (p)
		parked = lappend(parked, p);
	MemoryContextSwitchTo(old);
	return (p && !p->is_act) ? p->id : 0;
}

/*
 * Forgets parked definitions that no longer exist (dropped): their applied
 * LSN must not hold the slot.  In a transaction with SPI.
 */
static void
prune_parked(List *agg_ids)
{
	List	   *act_ids = NIL;
	List	   *resumed = NIL;
	ListCell   *lc;

	if (parked == NIL)
		return;

	/*
	 * An activation stays parked while its status says error (before
	 * 0.2.0's catalog, which has no status: until the worker restarts);
	 * stream.resume sets it running.
	 */
	if (SPI_execute("SELECT act_id, coalesce(pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'status', 'error') "
					"OPERATOR(pg_catalog.=) 'error' FROM stream.activation_defs d", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read stream.activation_defs");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int32		id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc, 1, &isnull));

		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull)))
			act_ids = lappend_int(act_ids, id);
		else
			resumed = lappend_int(resumed, id);
	}
	foreach(lc, parked)
	{
		ParkedDef  *p = lfirst(lc);

		if (!list_member_int(p->is_act ? act_ids : agg_ids, p->id))
		{
			if (p->is_act && list_member_int(resumed, p->id))
				careful_add(true, p->id, GetXLogInsertRecPtr());
			parked = foreach_delete_current(parked, lc);
		}
	}
}

/* reads the catalog and compiles every aggregate; in a transaction with SPI */
static void
load_definitions(const char *signature)
{
	MemoryContext old;
	uint64		n;
	SPITupleTable *tuptable;
	ListCell   *lc;
	List	   *agg_ids = NIL;

	free_definitions();
	act_catalog_has_failures =
		OidIsValid(get_relname_relid("dead_letters", get_namespace_oid("stream", false)));
	if (SPI_execute("SELECT agg_id, view::oid, state_table::oid, stream::oid, owner::oid, "
					"query_tree, applied_lsn IS NULL, coalesce(applied_lsn, '0/0'), apply_rate, "
					"view_select, state_keys, search_path, status = 'error', "
					"coalesce(pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'on_error', 'stop') "
					"OPERATOR(pg_catalog.=) 'skip' "
					"FROM stream.aggregate_defs d ORDER BY agg_id", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read stream.aggregate_defs");
	n = SPI_processed;
	tuptable = SPI_tuptable;	/* compile_definition runs SPI queries too */
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = tuptable->vals[i];
		TupleDesc	desc = tuptable->tupdesc;
		bool		isnull;
		int32		agg_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		Oid			view = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
		Oid			state_rel = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
		Oid			stream = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
		Oid			owner = DatumGetObjectId(SPI_getbinval(tup, desc, 5, &isnull));
		char	   *tree = TextDatumGetCString(SPI_getbinval(tup, desc, 6, &isnull));
		bool		backfill = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
		XLogRecPtr	applied = DatumGetLSN(SPI_getbinval(tup, desc, 8, &isnull));
		Datum		rate = SPI_getbinval(tup, desc, 9, &isnull);
		bool		in_error = DatumGetBool(SPI_getbinval(tup, desc, 13, &isnull));
		AggRuntime *rt;
		StreamFeed *feed;

		agg_ids = lappend_int(agg_ids, agg_id);
		if (is_parked(false, agg_id, in_error))
			continue;
		old = MemoryContextSwitchTo(defs_cxt);
		/* an error while compiling is this aggregate's own */
		blame_agg = agg_id;
		blame_lsn = backfill ? InvalidXLogRecPtr : applied;
		strlcpy(blame_name, get_rel_name(view) ? get_rel_name(view) : "?", sizeof(blame_name));
		rt = compile_definition(agg_id, view, state_rel, stream, owner, tree,
								SPI_getvalue(tup, desc, 12), backfill, applied);
		blame_agg = 0;
		rt->apply_rate = isnull ? 0 : DatumGetFloat8(rate);
		rt->skip_errors = act_catalog_has_failures &&
			DatumGetBool(SPI_getbinval(tup, desc, 14, &isnull));
		rt->careful = careful_find(false, agg_id) != NULL;
		rt->view_select = SPI_getvalue(tup, desc, 10);
		rt->state_keys = SPI_getvalue(tup, desc, 11);
		runtimes = lappend(runtimes, rt);
		feed = feed_for(stream);
		feed->runtimes = lappend(feed->runtimes, rt);
		MemoryContextSwitchTo(old);
	}
	prune_parked(agg_ids);
	{
		ListCell   *lc2;

		foreach(lc2, careful)
			if (!((CarefulDef *) lfirst(lc2))->is_act &&
				!list_member_int(agg_ids, ((CarefulDef *) lfirst(lc2))->id))
				careful = foreach_delete_current(careful, lc2);
	}
	old = MemoryContextSwitchTo(defs_cxt);
	{
		List	   *skip = NIL;

		foreach(lc, parked)
			if (((ParkedDef *) lfirst(lc))->is_act)
				skip = lappend_int(skip, ((ParkedDef *) lfirst(lc))->id);
		acts = act_load_batched(skip);
	}
	foreach(lc, acts)
	{
		ActRuntime *act = lfirst(lc);

		act->skip_errors = act->skip_errors && act_catalog_has_failures;
		act->careful = careful_find(true, act->act_id) != NULL;
		if (act->kind == ACT_THRESHOLD)
		{
			ListCell   *lc2;

			foreach(lc2, runtimes)
			{
				AggRuntime *rt = lfirst(lc2);

				if (rt->view != act->view)
					continue;

				/*
				 * A threshold's condition runs as the aggregate's owner
				 * (in its upsert): only for a definer who holds that
				 * role's rights, as stream.on_threshold demands.
				 */
				if (!has_privs_of_role(act->owner, rt->owner))
				{
					ereport(WARNING,
							(errmsg("stream_events ignores threshold %s: its owner has no rights of the owner of continuous aggregate %s",
									act->name, rt->name)));
					continue;
				}
				if (!XLogRecPtrIsInvalid(act->applied_lsn))
					rt->thresholds = lappend(rt->thresholds, act);
				else if (!rt->backfill)
				{
					/* an error in its condition is the threshold's own */
					act_set_blame(act->act_id, act->name, InvalidXLogRecPtr);
					init_threshold(rt, act);
					act_blame = 0;
				}
				else
					rt->pending_thresholds = lappend(rt->pending_thresholds, act);
			}
		}
		else
		{
			feed_for(act->stream)->acts = lappend(feed_for(act->stream)->acts, act);
			if (act->kind == ACT_ABSENCE)
				have_absence = true;
			/* event activations fire at once when producers wake us */
			worker_set_consumer_wake(true);
		}
	}
	MemoryContextSwitchTo(old);
	old = MemoryContextSwitchTo(consumer_cxt);
	defs_signature = pstrdup(signature);
	MemoryContextSwitchTo(old);
	have_definitions = (n > 0 || acts != NIL);
}

/* ---------- folding one event ---------- */

/*
 * fold_row's work, in the owner's scope.  First every expression of the
 * event is evaluated (WHERE, windows, keys, FILTERs, arguments: the
 * errors an event can cause, eval_phase), then the groups are looked up
 * and the transition functions called: an event that fails leaves no
 * trace in the groups, so it can be skipped (on_error => 'skip').
 */
static void
fold_row_body(AggRuntime *rt, TupleTableSlot *row)
{
	ExprContext *econtext = rt->econtext;
	TimestampTz starts[HOP_MAX_WINDOWS];
	int			nwindows = 1;
	MemoryContext old;
	Datum	   *keyv = NULL;
	bool	   *keyn = NULL;
	bool	   *pass = NULL;
	Datum	   *argv = NULL;
	bool	   *argn = NULL;
	int			nk = Max(rt->nkeys, 1);
	int			na = Max(rt->naggs, 1);
	int			nt = Max(rt->total_args, 1);

	ResetExprContext(econtext);
	econtext->ecxt_scantuple = row;
	old = MemoryContextSwitchTo(econtext->ecxt_per_tuple_memory);
	eval_phase = true;

	if (rt->where && !ExecQual(rt->where, econtext))
		nwindows = 0;
	else if (rt->has_hop)
	{
		Datum		v[4];
		bool		isnull;

		for (int i = 0; i < 4 && nwindows > 0; i++)
		{
			v[i] = ExecEvalExpr(rt->hop_args[i], econtext, &isnull);
			if (isnull)
				nwindows = 0;	/* a strict set-returning function: no rows */
		}
		if (nwindows > 0)
			nwindows = hop_windows(DatumGetTimestampTz(v[0]), DatumGetIntervalP(v[1]),
								   DatumGetIntervalP(v[2]), DatumGetTimestampTz(v[3]),
								   starts, HOP_MAX_WINDOWS);
	}
	if (nwindows > 0)
	{
		keyv = palloc(nwindows * nk * sizeof(Datum));
		keyn = palloc(nwindows * nk * sizeof(bool));
		pass = palloc(nwindows * na * sizeof(bool));
		argv = palloc(nwindows * nt * sizeof(Datum));
		argn = palloc(nwindows * nt * sizeof(bool));
	}
	for (int w = 0; w < nwindows; w++)
	{
		int			ai = w * nt;

		if (rt->has_hop)
		{
			econtext->ecxt_param_exec_vals[0].value = TimestampTzGetDatum(starts[w]);
			econtext->ecxt_param_exec_vals[0].isnull = false;
			econtext->ecxt_param_exec_vals[0].execPlan = NULL;
		}
		for (int k = 0; k < rt->nkeys; k++)
			keyv[w * nk + k] = ExecEvalExpr(rt->keys[k], econtext, &keyn[w * nk + k]);
		for (int a = 0; a < rt->naggs; a++)
		{
			AggCall    *call = &rt->aggs[a];
			bool		p = !call->filter || ExecQual(call->filter, econtext);

			pass[w * na + a] = p;
			for (int i = 0; i < call->nargs; i++, ai++)
			{
				if (p)
					argv[ai] = ExecEvalExpr(call->args[i], econtext, &argn[ai]);
				else
					argn[ai] = true;
			}
		}
	}
	eval_phase = false;

	for (int w = 0; w < nwindows; w++)
	{
		TupleHashEntry entry;
		bool		isnew;
		AggTransValue *tv;
		int			ai = w * nt;

		ExecClearTuple(rt->keyslot);
		for (int k = 0; k < rt->nkeys; k++)
		{
			rt->keyslot->tts_values[k] = keyv[w * nk + k];
			rt->keyslot->tts_isnull[k] = keyn[w * nk + k];
		}
		ExecStoreVirtualTuple(rt->keyslot);
		entry = LookupTupleHashEntry(rt->groups, rt->keyslot, &isnew, NULL);
		if (isnew)
		{
			tv = MemoryContextAlloc(rt->batchcxt, Max(rt->naggs, 1) * sizeof(AggTransValue));
			for (int a = 0; a < rt->naggs; a++)
				aggfunc_init_trans(rt->aggs[a].info, &tv[a], rt->batchcxt);
			entry->additional = tv;
			rt->ngroups++;
			batch_groups++;
		}
		tv = (AggTransValue *) entry->additional;
		for (int a = 0; a < rt->naggs; a++)
		{
			AggCall    *call = &rt->aggs[a];
			FunctionCallInfo fcinfo = call->info->transfcinfo;

			if (!pass[w * na + a])
			{
				ai += call->nargs;
				continue;
			}
			for (int i = 0; i < call->nargs; i++, ai++)
			{
				fcinfo->args[i + 1].value = argv[ai];
				fcinfo->args[i + 1].isnull = argn[ai];
			}
			aggfunc_advance(call->info, &tv[a], rt->batchcxt);
		}
	}
	if (nwindows > 0)
		rt->events++;
	MemoryContextSwitchTo(old);
}

/* ---------- poison events ---------- */

/*
 * Errors that are an event's own: data exceptions (a cast of a bad
 * value, division by zero, overflow), cardinality, integrity, errors
 * raised by functions (RAISE, routine exceptions).  Others (an undefined
 * or dropped function, privileges, internal errors) are the definition's:
 * every event would fail the same way, so it is parked instead.  And those
 * that pass by themselves (serialisation, resources, shutdown, ...) are
 * retried as before.
 */
static bool
error_is_events(ErrorData *edata)
{
	int			class = ERRCODE_TO_CATEGORY(edata->sqlerrcode);

	return class == ERRCODE_TO_CATEGORY(ERRCODE_DATA_EXCEPTION) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_CARDINALITY_VIOLATION) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_SQL_ROUTINE_EXCEPTION) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_RAISE_EXCEPTION);
}

static MemoryContext
dead_context(void)
{
	if (dead_cxt == NULL)
		dead_cxt = AllocSetContextCreate(TopMemoryContext, "stream_events dead letters",
										 ALLOCSET_DEFAULT_SIZES);
	return dead_cxt;
}

/* the event's id, for messages and dead letters (before it is evaluated) */
static void
note_event(TupleTableSlot *row)
{
	bool		isnull;
	Datum		v = slot_getattr(row, ENV_EVENT_ID + 1, &isnull);

	eval_has_event = !isnull;
	if (!isnull)
		memcpy(&eval_event, DatumGetUUIDP(v), sizeof(pg_uuid_t));
}

static void
queue_dead_letter(bool is_act, int32 id, const char *name, Oid owner, Oid stream,
				  XLogRecPtr lsn, ErrorData *edata)
{
	MemoryContext old = MemoryContextSwitchTo(dead_context());
	DeadLetter *d = palloc0(sizeof(DeadLetter));

	d->is_act = is_act;
	d->id = id;
	d->name = pstrdup(name);
	d->owner = owner;
	d->stream = stream;
	d->has_event_id = eval_has_event;
	d->event_id = eval_event;
	d->lsn = lsn;
	d->sqlerrcode = edata->sqlerrcode;
	d->message = pstrdup(edata->message ? edata->message : "unknown error");
	d->detail = edata->detail ? pstrdup(edata->detail) : NULL;
	dead_queue = lappend(dead_queue, d);
	MemoryContextSwitchTo(old);
	batch_groups++;
}

/* one evaluation of an event for one definition, in a subtransaction */
typedef struct GuardedCall
{
	AggRuntime *rt;				/* an aggregate's fold, or */
	ActRuntime *act;			/* an activation's match */
	TupleTableSlot *row;
	int			queued;
} GuardedCall;

/*
 * Runs the evaluation in a subtransaction (the safe way to go on after an
 * error in executor code).  Returns NULL, or the event's error (in
 * dead_cxt) after rolling the subtransaction back; an error that is not
 * the event's (error_is_events), or that came after the evaluation
 * (a transition function), is thrown again.
 */
static ErrorData *
call_guarded(GuardedCall *g)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		if (g->rt)
			fold_row_body(g->rt, g->row);
		else
		{
			eval_phase = true;
			g->queued = act_match_in_scope(g->act, g->row);
			eval_phase = false;
		}
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		bool		events = eval_phase;

		MemoryContextSwitchTo(dead_context());
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (!events || !error_is_events(edata))
			ReThrowError(edata);	/* blamed as any error (park_blamed) */
		eval_phase = false;
		act_blame = 0;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}

static struct CarefulDef *
careful_find(bool is_act, int32 id)
{
	ListCell   *lc;

	foreach(lc, careful)
	{
		CarefulDef *c = lfirst(lc);

		if (c->is_act == is_act && c->id == id)
			return c;
	}
	return NULL;
}

/*
 * A resumed definition replays from its applied LSN; decoding sees the
 * catalog as it was at each event's commit (a function replaced since is
 * not seen by earlier events), so the event it stopped on would stop it
 * again: until it has replayed what was committed before the resume, it is
 * careful and events that fail become dead letters, which
 * stream.retry_dead_letters applies with today's definitions.
 */
static void
careful_add(bool is_act, int32 id, XLogRecPtr until)
{
	MemoryContext old = MemoryContextSwitchTo(consumer_cxt);
	CarefulDef *c = careful_find(is_act, id);

	if (c == NULL)
	{
		c = palloc0(sizeof(CarefulDef));
		c->is_act = is_act;
		c->id = id;
		careful = lappend(careful, c);
	}
	c->until = Max(c->until, until);
	MemoryContextSwitchTo(old);
}

/*
 * After an error: when it is an event's error in a definition that skips
 * them, the definition becomes careful (and is not parked).
 */
static bool
careful_blamed(ErrorData *edata)
{
	CarefulDef *c;
	MemoryContext old;

	if (!eval_phase || !error_is_events(edata))
		return false;
	if (current_rt && current_rt->skip_errors && !current_rt->careful)
	{
		old = MemoryContextSwitchTo(consumer_cxt);
		c = palloc0(sizeof(CarefulDef));
		c->id = current_rt->agg_id;
		c->until = current_rt->backfill ? InvalidXLogRecPtr : eval_lsn;
	}
	else if (!current_rt && eval_act && eval_act->skip_errors && !eval_act->careful)
	{
		old = MemoryContextSwitchTo(consumer_cxt);
		c = palloc0(sizeof(CarefulDef));
		c->is_act = true;
		c->id = eval_act->act_id;
		c->until = eval_lsn;
	}
	else
		return false;
	careful = lappend(careful, c);
	MemoryContextSwitchTo(old);
	return true;
}

/* careful definitions that have applied past the event that failed */
static void
careful_prune(void)
{
	ListCell   *lc;

	foreach(lc, careful)
	{
		CarefulDef *c = lfirst(lc);
		XLogRecPtr	applied = InvalidXLogRecPtr;
		bool		found = false;
		ListCell   *lc2;

		if (c->is_act)
		{
			foreach(lc2, acts)
				if (((ActRuntime *) lfirst(lc2))->act_id == c->id)
				{
					applied = ((ActRuntime *) lfirst(lc2))->applied_lsn;
					found = true;
				}
		}
		else
		{
			foreach(lc2, runtimes)
				if (((AggRuntime *) lfirst(lc2))->agg_id == c->id &&
					!((AggRuntime *) lfirst(lc2))->backfill)
				{
					applied = ((AggRuntime *) lfirst(lc2))->applied_lsn;
					found = true;
				}
		}
		if (found && applied > c->until)
		{
			foreach(lc2, runtimes)
				if (!c->is_act && ((AggRuntime *) lfirst(lc2))->agg_id == c->id)
					((AggRuntime *) lfirst(lc2))->careful = false;
			foreach(lc2, acts)
				if (c->is_act && ((ActRuntime *) lfirst(lc2))->act_id == c->id)
					((ActRuntime *) lfirst(lc2))->careful = false;
			careful = foreach_delete_current(careful, lc);
		}
	}
}

/*
 * Writes the queued dead letters of one definition (in the transaction
 * that applies it; tagged by the caller) and forgets them.
 */
static void
write_dead_letters(bool is_act, int32 id)
{
	ListCell   *lc;
	Oid			types[10] = {TEXTOID, TEXTOID, INT4OID, OIDOID, UUIDOID, OIDOID, LSNOID,
	TEXTOID, TEXTOID, TEXTOID};

	foreach(lc, dead_queue)
	{
		DeadLetter *d = lfirst(lc);
		Datum		args[10];
		char		nulls[10] = "          ";

		if (d->is_act != is_act || d->id != id)
			continue;
		args[0] = CStringGetTextDatum(d->name);
		args[1] = CStringGetTextDatum(is_act ? "activation" : "aggregate");
		args[2] = Int32GetDatum(d->id);
		args[3] = ObjectIdGetDatum(d->owner);
		args[4] = UUIDPGetDatum(&d->event_id);
		nulls[4] = d->has_event_id ? ' ' : 'n';
		args[5] = ObjectIdGetDatum(d->stream);
		args[6] = LSNGetDatum(d->lsn);
		nulls[6] = XLogRecPtrIsInvalid(d->lsn) ? 'n' : ' ';
		args[7] = CStringGetTextDatum(unpack_sql_state(d->sqlerrcode));
		args[8] = CStringGetTextDatum(d->message);
		args[9] = d->detail ? CStringGetTextDatum(d->detail) : (Datum) 0;
		nulls[9] = d->detail ? ' ' : 'n';
		if (SPI_execute_with_args("INSERT INTO stream.dead_letters (definition, kind, def_id, owner, "
								  "event_id, stream, lsn, sqlstate, error, detail) "
								  "VALUES ($1, $2, $3, $4::pg_catalog.regrole, $5, $6::pg_catalog.regclass, "
								  "$7, $8, $9, $10)",
								  10, types, args, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert into stream.dead_letters");
		dead_queue = foreach_delete_current(dead_queue, lc);
	}
}

static void
reset_dead_letters(void)
{
	dead_queue = NIL;
	if (dead_cxt)
		MemoryContextReset(dead_cxt);
}

/*
 * Folds one event into the aggregate's groups: WHERE, hopping windows,
 * keys, FILTERs, arguments and transition functions all run as the owner
 * (owner.h).  The caller has pushed an active snapshot (cb_change, the
 * backfill's transaction).
 */
static void
fold_row(AggRuntime *rt, TupleTableSlot *row)
{
	OwnerScope	scope = {0};

	current_rt = rt;
	owner_enter(&scope, rt->owner, rt->search_path);
	PG_TRY();
	{
		if (rt->careful)
		{
			GuardedCall g = {rt, NULL, row, 0};
			ErrorData  *e;

			note_event(row);
			e = call_guarded(&g);
			if (e)
			{
				queue_dead_letter(false, rt->agg_id, rt->name, rt->owner, rt->stream,
								  bf_lsn, e);
				rt->ndead++;
			}
		}
		else
			fold_row_body(rt, row);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	current_rt = NULL;
}

/* ---------- output plugin callbacks ---------- */

static void
cb_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
	if (!consumer_active)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the stream_events output plugin is reserved for the stream_events worker"),
				 errdetail("Consuming its slot elsewhere would lose changes from continuous aggregates."),
				 errhint("Use test_decoding or pgoutput for your own slots.")));
	opt->output_type = OUTPUT_PLUGIN_BINARY_OUTPUT;
	opt->receive_rewrites = false;
}

static void
cb_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
}

/*
 * The owner scope cb_change evaluates definitions in: entered again only
 * when the next definition has another owner or search_path, so that the
 * definitions of one owner share one scope per event (a scope costs a GUC
 * nest level).
 */
typedef struct FoldScope
{
	OwnerScope	scope;
	Oid			owner;
	const char *search_path;
} FoldScope;

static void
fold_scope_switch(FoldScope *fs, Oid owner, const char *search_path)
{
	if (fs->scope.active && fs->owner == owner &&
		(fs->search_path == search_path ||
		 (fs->search_path && search_path && strcmp(fs->search_path, search_path) == 0)))
		return;
	owner_exit(&fs->scope);
	owner_enter(&fs->scope, owner, search_path);
	fs->owner = owner;
	fs->search_path = search_path;
}

/*
 * A definition that wrote to the database while it was evaluated (a
 * volatile function called from an immutable one can): logical decoding
 * refuses a transaction ID taken in an output plugin ("output plugin used
 * XID"), after the callback, where the error would be nobody's; say it
 * here, where it is the definition's own, which is then parked.
 */
static void
check_no_writes(const char *what, const char *name)
{
	if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("%s %s wrote to the database while evaluating an event", what, name),
				 errdetail("Its expressions run while the worker decodes committed changes, where nothing may be written."),
				 errhint("Use functions that only compute a value from the event.")));
}

/* fold_change's work; the caller exits the last scope, also on error */
static void
fold_change_body(StreamFeed *feed, ReorderBufferTXN *txn, TupleTableSlot *row, FoldScope *fs)
{
	ListCell   *lc;

	eval_lsn = txn->final_lsn;
	note_event(row);
	foreach(lc, feed->runtimes)
	{
		AggRuntime *rt = lfirst(lc);

		/* exactly once: commits before applied_lsn are in the state already */
		if (rt->backfill || txn->final_lsn < rt->applied_lsn)
			continue;
		fold_scope_switch(fs, rt->owner, rt->search_path);
		current_rt = rt;
		if (rt->careful)
		{
			GuardedCall g = {rt, NULL, row, 0};
			ErrorData  *e = call_guarded(&g);

			if (e)
			{
				queue_dead_letter(false, rt->agg_id, rt->name, rt->owner, rt->stream,
								  txn->final_lsn, e);
				rt->ndead++;
			}
		}
		else
			fold_row_body(rt, row);
		check_no_writes("continuous aggregate", rt->name);
		current_rt = NULL;
		rt->last_commit_at = txn->xact_time.commit_time;
	}
	foreach(lc, feed->acts)
	{
		ActRuntime *act = lfirst(lc);

		/* denied: its owner may not read the stream (act_owner_may_read) */
		if (txn->final_lsn < act->applied_lsn || act->denied)
			continue;
		fold_scope_switch(fs, act->owner, act->search_path);
		eval_act = act;
		if (act->careful)
		{
			GuardedCall g = {NULL, act, row, 0};
			ErrorData  *e = call_guarded(&g);

			if (e)
			{
				queue_dead_letter(true, act->act_id, act->name, act->owner, act->stream,
								  txn->final_lsn, e);
				act->ndead++;
			}
			batch_groups += g.queued;
		}
		else
		{
			eval_phase = true;
			batch_groups += act_match_in_scope(act, row);
			eval_phase = false;
		}
		eval_act = NULL;
		if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
		{
			act_set_blame(act->act_id, act->name, act->applied_lsn);
			check_no_writes("activation", act->name);
		}
	}
}

/*
 * One decoded event through every definition of its stream, in order
 * (aggregates, then activations), each in its owner's scope, which is
 * left on every path (PG_CATCH rather than PG_FINALLY: gcc's -Wclobbered
 * misreads the latter here).
 */
static void
fold_change(StreamFeed *feed, ReorderBufferTXN *txn, TupleTableSlot *row)
{
	FoldScope	fs = {{0}};

	PG_TRY();
	{
		fold_change_body(feed, txn, row, &fs);
	}
	PG_CATCH();
	{
		owner_exit(&fs.scope);
		PG_RE_THROW();
	}
	PG_END_TRY();
	owner_exit(&fs.scope);
}

static void
cb_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation relation,
		  ReorderBufferChange *change)
{
	PartEntry  *pe;
	TupleTableSlot *row;
	bool		pushed = false;

	if (change->action != REORDER_BUFFER_CHANGE_INSERT ||
		change->data.tp.newtuple == NULL || feeds == NIL)
		return;
	pe = part_lookup(relation);
	if (pe->feed == NULL)
		return;

	ExecStoreHeapTuple(&change->data.tp.newtuple->tuple, pe->slot, false);
	if (pe->map)
		row = execute_attr_map_slot(pe->map->attrMap, pe->slot, pe->feed->slot);
	else
		row = pe->slot;

	/*
	 * Definitions may call functions that run queries (SQL functions the
	 * planner does not inline, plpgsql): they need an active snapshot, as
	 * in any query.  While decoding, the transaction snapshot is the
	 * historic one of this commit (snapmgr.c).  An error aborts the
	 * transaction, which pops it.
	 */
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed = true;
	}
	fold_change(pe->feed, txn, row);
	if (pushed)
		PopActiveSnapshot();
	ExecClearTuple(pe->slot);
}

static void
cb_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
	/* apply at a commit boundary once the batch is big or old enough */
	if (batch_groups >= se_aggregate_batch_groups ||
		(batch_groups > 0 &&
		 TimestampDifferenceExceeds(batch_started, GetCurrentTimestamp(), 1000)))
		stop_after_commit = true;
}

static void
cb_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr lsn,
		   bool transactional, const char *prefix, Size sz, const char *message)
{
	/*
	 * Only the flush marker (stream.flush).  No message skips anything:
	 * pg_logical_emit_message is open to everyone, so a message cannot tell
	 * the extension's own writes from a producer's (the private origin
	 * does, cb_filter_by_origin).
	 */
	if (strcmp(prefix, MESSAGE_PREFIX) != 0)
		return;
	if (!transactional && sz == 5 && memcmp(message, "flush", 5) == 0)
		flush_seen = true;
}

static void
cb_shutdown(LogicalDecodingContext *ctx)
{
}

/*
 * The extension's own writes (the worker's, maintenance's moves) carry its
 * private origin, which only superuser code can set (origin.h): they are
 * skipped change by change.  Records marked "do not replicate" are not for
 * any decoder either.  own_origin is looked up once per round
 * (decode_available), not per change.
 */
static bool
cb_filter_by_origin(LogicalDecodingContext *ctx, RepOriginId origin_id)
{
	return origin_id == DoNotReplicateId ||
		(own_origin != InvalidRepOriginId && origin_id == own_origin);
}

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->startup_cb = cb_startup;
	cb->begin_cb = cb_begin;
	cb->change_cb = cb_change;
	cb->commit_cb = cb_commit;
	cb->message_cb = cb_message;
	cb->shutdown_cb = cb_shutdown;
	cb->filter_by_origin_cb = cb_filter_by_origin;
}

/* ---------- slot ---------- */

/*
 * read_local_xlog_page, but never waiting for WAL in its own loop: that
 * loop (pg_usleep + CHECK_FOR_INTERRUPTS) ends only for a die() handler,
 * and this worker's SIGTERM just sets ShutdownRequestPending, so a record
 * that crosses the flush pointer at shutdown kept a fast shutdown waiting.
 * Here the wait is on the latch, and a shutdown request makes the read
 * fail quietly (no error message): decode_available then stops.
 */
static int
read_flushed_page(XLogReaderState *state, XLogRecPtr targetPagePtr, int reqLen,
				  XLogRecPtr targetRecPtr, char *cur_page)
{
	XLogRecPtr	needed = targetPagePtr + reqLen;

	while (GetFlushRecPtr(NULL) < needed)
	{
		if (ShutdownRequestPending)
			return -1;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return read_local_xlog_page(state, targetPagePtr, reqLen, targetRecPtr, cur_page);
}

static XLogReaderRoutine local_wal_routine = {
	.page_read = read_flushed_page,
	.segment_open = wal_segment_open,
	.segment_close = wal_segment_close
};

static XLogReaderRoutine *
xl_routine(void)
{
	return &local_wal_routine;
}

static void
release_decoding(void)
{
	if (dctx)
	{
		LogicalDecodingContext *ctx = dctx;

		dctx = NULL;
		FreeDecodingContext(ctx);
	}
	if (bf_ctx)
	{
		LogicalDecodingContext *ctx = bf_ctx;

		bf_ctx = NULL;
		FreeDecodingContext(ctx);
	}
	if (MyReplicationSlot)
		ReplicationSlotRelease();
}

/*
 * Creates a logical slot of our output plugin; the caller is in a
 * transaction that has written nothing.  An ephemeral slot is dropped
 * when released (or at error), a persistent one stays.
 */
static LogicalDecodingContext *
create_slot(const char *name, bool persistent, bool need_full_snapshot)
{
	LogicalDecodingContext *ctx;

	CheckSlotRequirements();
	CheckLogicalDecodingRequirements();
	ReplicationSlotCreate(name, true, RS_EPHEMERAL, false);
	consumer_active = true;
	ctx = CreateInitDecodingContext("stream_events", NIL, need_full_snapshot,
									InvalidXLogRecPtr, xl_routine(), NULL, NULL, NULL);
	DecodingContextFindStartpoint(ctx);
	if (persistent)
	{
		FreeDecodingContext(ctx);
		ReplicationSlotPersist();
		ReplicationSlotRelease();
		return NULL;
	}
	return ctx;
}

/* The database's slot exists; true if it had to be created. */
static bool
ensure_main_slot(void)
{
	char	   *name = aggregate_slot_name(MyDatabaseId);

	if (SearchNamedReplicationSlot(name, true) != NULL)
		return false;
	release_decoding();
	StartTransactionCommand();
	(void) create_slot(name, true, false);
	CommitTransactionCommand();
	ereport(LOG,
			(errmsg("stream_events created replication slot \"%s\" for continuous aggregates", name)));
	return true;
}

static void
drop_main_slot(void)
{
	char	   *name = aggregate_slot_name(MyDatabaseId);

	release_decoding();
	if (SearchNamedReplicationSlot(name, true) != NULL)
	{
		ReplicationSlotDrop(name, true);
		ereport(LOG,
				(errmsg("stream_events dropped replication slot \"%s\": no continuous aggregate left", name)));
	}
}

/* ---------- apply ---------- */

static SPIPlanPtr
prepare_upsert(AggRuntime *rt, bool with_thresholds)
{
	SPIPlanPtr	plan;
	StringInfoData sql;
	Oid		   *types = palloc((rt->nkeys + rt->naggs) * sizeof(Oid));
	char	   *state = definition_relation_name(rt->state_rel);
	int			p = 0;

	initStringInfo(&sql);
	appendStringInfo(&sql, "INSERT INTO %s AS s (", state);
	for (int k = 0; k < rt->nkeys; k++)
		appendStringInfo(&sql, "%s%s", p++ ? ", " : "", quote_identifier(rt->keynames[k]));
	for (int a = 0; a < rt->naggs; a++)
		appendStringInfo(&sql, "%s%s", p++ ? ", " : "", quote_identifier(rt->aggs[a].colname));
	appendStringInfoString(&sql, ") VALUES (");
	for (int i = 1; i <= p; i++)
		appendStringInfo(&sql, "%s$%d", i > 1 ? ", " : "", i);
	appendStringInfoString(&sql, ") ON CONFLICT (");
	for (int k = 0; k < rt->nkeys; k++)
		appendStringInfo(&sql, "%s%s", k ? ", " : "", quote_identifier(rt->keynames[k]));
	appendStringInfoString(&sql, ") DO UPDATE SET ");
	for (int a = 0; a < rt->naggs; a++)
	{
		const char *c = quote_identifier(rt->aggs[a].colname);

		appendStringInfo(&sql, "%s%s = stream.combine_states(s.%s, EXCLUDED.%s, '%u'::pg_catalog.regprocedure)",
						 a ? ", " : "", c, c, c, rt->aggs[a].info->aggfnoid);
	}
	for (int k = 0; k < rt->nkeys; k++)
		types[k] = rt->keytypes[k];
	for (int a = 0; a < rt->naggs; a++)
		types[rt->nkeys + a] = rt->aggs[a].statetype;
	if (with_thresholds)
	{
		/*
		 * With thresholds, the upsert also returns the group's key (a JSON
		 * array of the state's key columns) and, per threshold, its payload
		 * and whether its condition holds over the group's view row.
		 */
		StringInfoData wrap;
		ListCell   *lc;

		initStringInfo(&wrap);
		appendStringInfo(&wrap, "WITH s AS (%s RETURNING *) SELECT "
						 "(SELECT pg_catalog.jsonb_build_array(%s)::pg_catalog.text FROM s)",
						 sql.data, rt->state_keys);
		foreach(lc, rt->thresholds)
		{
			ActRuntime *act = lfirst(lc);

			if (act->payload_text)
				appendStringInfo(&wrap, ", pg_catalog.to_jsonb((\n%s\n))::pg_catalog.text",
								 act->payload_text);
			else
				appendStringInfoString(&wrap, ", pg_catalog.row_to_json(v)::pg_catalog.text");
			appendStringInfo(&wrap, ", coalesce((\n%s\n), false)", act->condition);
		}
		appendStringInfo(&wrap, " FROM (SELECT %s FROM s) v", rt->view_select);
		sql = wrap;
	}
	plan = SPI_prepare(sql.data, p, types);
	if (plan == NULL)
		elog(ERROR, "could not prepare the upsert of aggregate %s: %s", rt->name,
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/*
 * The search_path an aggregate's upsert is prepared and run in: with
 * thresholds, the first threshold's (their conditions and payloads are in
 * the statement), otherwise the aggregate's.  The same for both, so that
 * the cached plan is not analysed again at every execution.
 */
static const char *
upsert_search_path(AggRuntime *rt, bool with_thresholds)
{
	if (with_thresholds)
		return ((ActRuntime *) linitial(rt->thresholds))->search_path;
	return rt->search_path;
}

/* the result of one group's upsert with thresholds, in the caller's memory */
typedef struct GroupEdges
{
	char	   *grp;			/* the group's key as a JSON array */
	char	  **payloads;		/* per threshold */
	bool	   *holds;			/* per threshold */
} GroupEdges;

/*
 * Upserts one group of the batch as the aggregate's owner (owner.h): the
 * serialisation of its states, the combine functions in the statement and,
 * with thresholds, their payloads and conditions.  Results into edges.
 */
static void
upsert_one_group(AggRuntime *rt, SPIPlanPtr plan, bool with_thresholds,
				 TupleHashEntry entry, Datum *values, char *nulls, GroupEdges *edges)
{
	AggTransValue *tv = (AggTransValue *) entry->additional;
	OwnerScope	scope = {0};
	MemoryContext cxt = CurrentMemoryContext;

	ExecStoreMinimalTuple(entry->firstTuple, rt->readslot, false);
	slot_getallattrs(rt->readslot);
	for (int k = 0; k < rt->nkeys; k++)
	{
		values[k] = rt->readslot->tts_values[k];
		nulls[k] = rt->readslot->tts_isnull[k] ? 'n' : ' ';
	}
	owner_enter(&scope, rt->owner, upsert_search_path(rt, with_thresholds));
	PG_TRY();
	{
		for (int a = 0; a < rt->naggs; a++)
		{
			bool		isnull;

			values[rt->nkeys + a] = aggfunc_serialize(rt->aggs[a].info, &tv[a],
													  rt->batchcxt, &isnull);
			nulls[rt->nkeys + a] = isnull ? 'n' : ' ';
		}
		if (!with_thresholds)
		{
			if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not apply to continuous aggregate %s", rt->name);
		}
		else
		{
			HeapTuple	tup;
			TupleDesc	desc;
			int			col = 2;
			int			nthresholds = list_length(rt->thresholds);

			if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_SELECT ||
				SPI_processed != 1)
				elog(ERROR, "could not apply to continuous aggregate %s", rt->name);
			/* SPI returned to its procedure context: copy into ours */
			MemoryContextSwitchTo(cxt);
			tup = SPI_tuptable->vals[0];
			desc = SPI_tuptable->tupdesc;
			edges->grp = SPI_getvalue(tup, desc, 1);
			edges->payloads = palloc(nthresholds * sizeof(char *));
			edges->holds = palloc(nthresholds * sizeof(bool));
			for (int t = 0; t < nthresholds; t++)
			{
				bool		isnull;

				edges->payloads[t] = SPI_getvalue(tup, desc, col);
				edges->holds[t] = DatumGetBool(SPI_getbinval(tup, desc, col + 1, &isnull)) &&
					!isnull;
				col += 2;
			}
			SPI_freetuptable(SPI_tuptable);
		}
		MemoryContextSwitchTo(cxt);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	ExecClearTuple(rt->readslot);
}

/*
 * Prepares an aggregate's upsert as its owner, in the search_path it will
 * run in.
 */
static SPIPlanPtr
prepare_upsert_as_owner(AggRuntime *rt, bool with_thresholds)
{
	OwnerScope	scope = {0};
	volatile SPIPlanPtr plan = NULL;
	MemoryContext old = MemoryContextSwitchTo(defs_cxt);

	owner_enter(&scope, rt->owner, upsert_search_path(rt, with_thresholds));
	PG_TRY();
	{
		plan = prepare_upsert(rt, with_thresholds);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	return plan;
}

/*
 * Writes every group of the batch into the state table, each as the owner
 * (upsert_one_group); a threshold's edge and firing are written as the
 * worker, outside the owner's scope.  The caller tags the transaction's
 * writes with the private origin.
 */
static void
upsert_groups(AggRuntime *rt)
{
	TupleHashIterator iter;
	TupleHashEntry entry;
	int			n = rt->nkeys + rt->naggs;
	Datum	   *values;
	char	   *nulls;
	MemoryContext tmp,
				old;
	bool		with_thresholds;
	SPIPlanPtr	plan;

	if (rt->ngroups == 0)
		return;
	/* thresholds are evaluated on changes, not on a backfill */
	with_thresholds = (rt->thresholds != NIL && !rt->backfill);
	plan = with_thresholds ? rt->upsert : rt->upsert_plain;
	if (plan == NULL)
	{
		plan = prepare_upsert_as_owner(rt, with_thresholds);
		if (with_thresholds)
			rt->upsert = plan;
		else
			rt->upsert_plain = plan;
	}
	tmp = AllocSetContextCreate(CurrentMemoryContext, "stream_events upsert",
								ALLOCSET_DEFAULT_SIZES);
	values = palloc(n * sizeof(Datum));
	nulls = palloc(n * sizeof(char));
	current_rt = rt;
	InitTupleHashIterator(rt->groups, &iter);
	while ((entry = ScanTupleHashTable(rt->groups, &iter)) != NULL)
	{
		GroupEdges	edges = {0};

		old = MemoryContextSwitchTo(tmp);
		upsert_one_group(rt, plan, with_thresholds, entry, values, nulls, &edges);
		if (with_thresholds)
		{
			ListCell   *lc;
			int			t = 0;

			foreach(lc, rt->thresholds)
			{
				act_threshold_edge(lfirst(lc), edges.grp,
								   edges.payloads[t] ? edges.payloads[t] : "null",
								   edges.holds[t]);
				t++;
			}
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(tmp);
	}
	TermTupleHashIterator(&iter);
	current_rt = NULL;
	MemoryContextDelete(tmp);
}

static void
reset_batch(AggRuntime *rt)
{
	ResetTupleHashTable(rt->groups);
	MemoryContextReset(rt->batchcxt);
	rt->ngroups = 0;
	rt->events = 0;
	rt->ndead = 0;
}

/*
 * apply_batches' work in the apply transaction (SPI connected, snapshot
 * pushed): the upserts, the catalog rows, the activations' queue.
 * Returns the aggregates written.
 */
static List *
apply_in_transaction(XLogRecPtr upto, bool write_idle, TimestampTz now)
{
	ListCell   *lc;
	List	   *done = NIL;

	/* first, so that thresholds see dropped activations too */
	act_lock_definitions(acts);
	foreach(lc, runtimes)
	{
		AggRuntime *rt = lfirst(lc);
		Oid			argtypes[6] = {INT4OID, LSNOID, INT8OID, TIMESTAMPTZOID, FLOAT8OID, BOOLOID};
		Datum		args[6];
		char		nulls[6] = "      ";
		double		secs;
		XLogRecPtr	newlsn;

		if (rt->backfill ||
			!(rt->ngroups > 0 || rt->ndead > 0 || (write_idle && upto > rt->applied_lsn)))
			continue;
		/* the row lock orders us with drop_aggregate and rebuild_aggregate */
		args[0] = Int32GetDatum(rt->agg_id);
		if (SPI_execute_with_args("SELECT 1 FROM stream.aggregate_defs WHERE agg_id = $1 "
								  "AND applied_lsn IS NOT NULL FOR UPDATE",
								  1, argtypes, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not lock stream.aggregate_defs");
		if (SPI_processed == 0)
			continue;		/* dropped or being rebuilt: forget the batch */
		upsert_groups(rt);
		write_dead_letters(false, rt->agg_id);
		newlsn = Max(upto, rt->applied_lsn);
		secs = rt->last_apply ? (double) (now - rt->last_apply) / USECS_PER_SEC : 0;

		/*
		 * Events per second, smoothed over about ten seconds of time (not
		 * of applies), so that it decays when nothing is applied.
		 */
		if (secs > 0)
		{
			double		keep = exp(-Min(secs, 600.0) / 10.0);

			rt->apply_rate = rt->apply_rate > 0
				? keep * rt->apply_rate + (1 - keep) * (rt->events / secs)
				: rt->events / secs;
		}
		args[1] = LSNGetDatum(newlsn);
		args[2] = Int64GetDatum(rt->events);
		args[3] = TimestampTzGetDatum(rt->last_commit_at);
		nulls[3] = rt->last_commit_at ? ' ' : 'n';
		args[4] = Float8GetDatum(rt->apply_rate);
		if (SPI_execute_with_args("UPDATE stream.aggregate_defs SET applied_lsn = $2, "
								  "applied_at = now(), status = 'running', last_error = NULL, "
								  "events_applied = events_applied + $3, "
								  "last_commit_at = coalesce($4, last_commit_at), apply_rate = $5 "
								  "WHERE agg_id = $1",
								  5, argtypes, args, nulls, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not update stream.aggregate_defs");
		done = lappend(done, rt);
	}
	act_apply_queue();
	foreach(lc, acts)
	{
		ActRuntime *act = lfirst(lc);

		if (act->ndead > 0 && !act->gone)
			write_dead_letters(true, act->act_id);
	}
	act_record_applied(acts, upto);
	return done;
}

/*
 * apply_in_transaction with everything it writes tagged as the worker's
 * own (origin.h): not decoded.  The combine functions and threshold
 * conditions in the upserts run inside the tag too (as the aggregate's
 * owner, restricted).
 */
static List *
apply_tagged(XLogRecPtr upto, bool write_idle, TimestampTz now)
{
	OriginTag	tag = {0};
	List	   *volatile done = NIL;

	origin_tag_begin(&tag);
	PG_TRY();
	{
		done = apply_in_transaction(upto, write_idle, now);
	}
	PG_FINALLY();
	{
		origin_tag_end(&tag);
	}
	PG_END_TRY();
	return done;
}

/*
 * Applies every running aggregate's batch and advances its applied LSN to
 * upto (all commits that start before upto have been folded), in one
 * transaction; then confirms the slot up to the smallest applied LSN.
 * Aggregates without changes are written only when asked (flush) or every
 * ten seconds, so that an idle worker does not write WAL of its own.
 */
static void
apply_batches(XLogRecPtr upto, bool write_idle)
{
	ListCell   *lc;
	List	   *done = NIL;
	TimestampTz now = GetCurrentTimestamp();
	XLogRecPtr	confirm = InvalidXLogRecPtr;
	bool		any = false;

	foreach(lc, runtimes)
	{
		AggRuntime *rt = lfirst(lc);

		if (!rt->backfill &&
			(rt->ngroups > 0 || rt->ndead > 0 || (write_idle && upto > rt->applied_lsn)))
			any = true;
	}
	if (act_queue_pending())
		any = true;
	foreach(lc, acts)
		if ((write_idle && upto > ((ActRuntime *) lfirst(lc))->applied_lsn) ||
			((ActRuntime *) lfirst(lc))->ndead > 0)
			any = true;
	if (any)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "stream_events: applying to continuous aggregates");
		done = apply_tagged(upto, write_idle, now);
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
		pgstat_report_activity(STATE_IDLE, NULL);
		foreach(lc, done)
		{
			AggRuntime *rt = lfirst(lc);

			rt->applied_lsn = Max(upto, rt->applied_lsn);
			rt->last_apply = now;
		}
		foreach(lc, acts)
		{
			ActRuntime *act = lfirst(lc);

			if (act->kind != ACT_THRESHOLD || !XLogRecPtrIsInvalid(act->applied_lsn))
				act->applied_lsn = Max(upto, act->applied_lsn);
		}
		last_idle_write = now;
	}
	foreach(lc, runtimes)
		reset_batch((AggRuntime *) lfirst(lc));
	act_reset_batch(acts);
	reset_dead_letters();
	batch_groups = 0;
	if (careful != NIL)
		careful_prune();

	/* the slot may forget what every aggregate has applied */
	foreach(lc, runtimes)
	{
		AggRuntime *rt = lfirst(lc);

		if (!rt->backfill && (XLogRecPtrIsInvalid(confirm) || rt->applied_lsn < confirm))
			confirm = rt->applied_lsn;
	}
	foreach(lc, acts)
	{
		ActRuntime *act = lfirst(lc);

		/* thresholds ride on their aggregate's applied LSN */
		if (act->kind == ACT_THRESHOLD)
			continue;
		if (XLogRecPtrIsInvalid(confirm) || act->applied_lsn < confirm)
			confirm = act->applied_lsn;
	}
	/* a parked definition replays from its applied LSN when it runs again */
	foreach(lc, parked)
	{
		ParkedDef  *p = lfirst(lc);

		if (!XLogRecPtrIsInvalid(p->applied_lsn) &&
			!XLogRecPtrIsInvalid(confirm) && p->applied_lsn < confirm)
			confirm = p->applied_lsn;
	}
	/*
	 * The slot may forget WAL only once the commits that recorded these
	 * applied LSNs are flushed (they are, with synchronous_commit on; kept
	 * for a server that sets it off for everyone).  WAL is flushed in
	 * order, so the end of this process's last commit is enough.  (Stop 11
	 * tried asynchronous commits in the worker: producer throughput rose a
	 * little, but decoding then waited for the WAL writer, up to
	 * wal_writer_delay, and absence timers fired up to 200 ms late.)
	 */
	if (MyReplicationSlot && !XLogRecPtrIsInvalid(confirm) &&
		confirm > MyReplicationSlot->data.confirmed_flush &&
		GetFlushRecPtr(NULL) >= XactLastCommitEnd)
	{
		LogicalConfirmReceivedLocation(confirm);
		ReplicationSlotMarkDirty();
	}
}

/* ---------- backfill ---------- */

/* The backfill's read of the stream, as the aggregate's owner. */
static Portal
backfill_open(AggRuntime *rt, const char *sql)
{
	OwnerScope	scope = {0};
	volatile Portal portal = NULL;

	owner_enter(&scope, rt->owner, rt->search_path);
	PG_TRY();
	{
		portal = SPI_cursor_open_with_args(NULL, sql, 0, NULL, NULL, NULL, true, 0);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	return portal;
}

static void
backfill_fetch(AggRuntime *rt, Portal portal)
{
	OwnerScope	scope = {0};

	owner_enter(&scope, rt->owner, rt->search_path);
	PG_TRY();
	{
		SPI_cursor_fetch(portal, true, 10000);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
}

/*
 * The backfill's writes, tagged as the worker's own (origin.h): the groups
 * folded so far (upsert_groups runs each as the owner) and, when done, the
 * aggregate's applied LSN.
 */
static void
backfill_write(AggRuntime *rt, bool done, XLogRecPtr start, int64 nevents)
{
	OriginTag	tag = {0};

	origin_tag_begin(&tag);
	PG_TRY();
	{
		upsert_groups(rt);
		if (done)
			write_dead_letters(false, rt->agg_id);
		if (done)
		{
			Oid			argtypes[3] = {INT4OID, LSNOID, INT8OID};
			Datum		args[3] = {Int32GetDatum(rt->agg_id), LSNGetDatum(start), Int64GetDatum(nevents)};

			if (SPI_execute_with_args("UPDATE stream.aggregate_defs SET applied_lsn = $2, applied_at = now(), "
									  "status = 'running', last_error = NULL, events_backfilled = $3, "
									  "events_applied = $3 WHERE agg_id = $1 AND applied_lsn IS NULL",
									  3, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not update stream.aggregate_defs");
			if (SPI_processed != 1)
				elog(ERROR, "continuous aggregate %s changed during its backfill", rt->name);
		}
	}
	PG_FINALLY();
	{
		origin_tag_end(&tag);
	}
	PG_END_TRY();
}

/*
 * Backfills a new (or rebuilt) aggregate.  A short-lived slot gives a
 * consistent point C and a snapshot that sees exactly the transactions
 * that commit before C; the events it sees are folded and applied, and the
 * aggregate's applied LSN set to C, in that snapshot's transaction.  The
 * database's slot, created earlier, decodes from before C, and its
 * commits at or after C are the ones folded from then on.
 */
static void
backfill(AggRuntime *rt)
{
	XLogRecPtr	start;
	Snapshot	snap;
	TupleConversionMap *map = NULL;
	bool		map_done = false;
	Portal		portal;
	int64		nevents = 0;
	char	   *sql;
	MemoryContext old;

	release_decoding();
	ensure_main_slot();

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	/* as SnapBuildExportSnapshot does: there is no nicer API */
	XactIsoLevel = XACT_REPEATABLE_READ;
	pgstat_report_activity(STATE_RUNNING, "stream_events: backfilling a continuous aggregate");
	old = MemoryContextSwitchTo(consumer_cxt);
	bf_ctx = create_slot(psprintf("stream_events_%u_backfill", MyDatabaseId), false, true);
	MemoryContextSwitchTo(old);
	start = MyReplicationSlot->data.confirmed_flush;
	bf_lsn = start;
	snap = SnapBuildInitialSnapshot(bf_ctx->snapshot_builder);
	RestoreTransactionSnapshot(snap, MyProc);
	release_decoding();	/* ephemeral: dropped; our xmin holds the rows */

	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	sql = psprintf("SELECT * FROM %s", definition_relation_name(rt->stream));
	portal = backfill_open(rt, sql);
	for (;;)
	{
		StreamFeed *feed = NULL;
		ListCell   *lc;
		TupleTableSlot *slot;

		backfill_fetch(rt, portal);
		if (SPI_processed == 0)
			break;
		foreach(lc, feeds)
			if (((StreamFeed *) lfirst(lc))->stream == rt->stream)
				feed = lfirst(lc);
		slot = MakeSingleTupleTableSlot(SPI_tuptable->tupdesc, &TTSOpsHeapTuple);
		if (!map_done)
		{
			/* the cursor's columns, by name, onto the stream's row type */
			old = MemoryContextSwitchTo(consumer_cxt);
			map = convert_tuples_by_name(CreateTupleDescCopy(SPI_tuptable->tupdesc), feed->desc);
			MemoryContextSwitchTo(old);
			map_done = true;
		}
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			ExecStoreHeapTuple(SPI_tuptable->vals[i], slot, false);
			fold_row(rt, map ? execute_attr_map_slot(map->attrMap, slot, feed->slot) : slot);
			nevents++;
		}
		ExecDropSingleTupleTableSlot(slot);
		SPI_freetuptable(SPI_tuptable);
		if (rt->ngroups >= se_aggregate_batch_groups)
		{
			backfill_write(rt, false, 0, 0);
			reset_batch(rt);
		}
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			elog(ERROR, "backfill interrupted by shutdown");
	}
	SPI_cursor_close(portal);
	backfill_write(rt, true, start, nevents);
	rt->backfill = false;		/* for init_threshold; stays so: we commit */
	{
		ListCell   *lc;

		foreach(lc, rt->pending_thresholds)
			init_threshold(rt, lfirst(lc));
		rt->pending_thresholds = NIL;
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	reset_batch(rt);
	rt->backfill = false;
	rt->applied_lsn = start;
	/* a careful backfill is done: the events after it are decoded */
	{
		ListCell   *lc;

		foreach(lc, careful)
			if (!((CarefulDef *) lfirst(lc))->is_act && ((CarefulDef *) lfirst(lc))->id == rt->agg_id)
				careful = foreach_delete_current(careful, lc);
		rt->careful = false;
	}
	ereport(LOG,
			(errmsg("stream_events backfilled continuous aggregate %s with " INT64_FORMAT " events; changes from %X/%X on are decoded",
					rt->name, nevents, LSN_FORMAT_ARGS(start))));
}

/* ---------- decoding ---------- */

static void
decode_available(void)
{
	TimestampTz asked = GetCurrentTimestamp();
	XLogRecPtr	end = GetFlushRecPtr(NULL);
	ResourceOwner owner = CurrentResourceOwner;
	MemoryContext old;

	decoded_to_end = false;
	if (dctx != NULL && dctx->reader->EndRecPtr >= end)
	{
		/* every commit flushed before "asked" is decoded */
		decode_horizon = asked;
		decoded_to_end = true;
		decoded_end = end;
		return;
	}

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	owner = CurrentResourceOwner;
	/* cb_filter_by_origin's: once per round, not per change */
	own_origin = se_origin_id(false);
	if (dctx == NULL)
	{
		old = MemoryContextSwitchTo(consumer_cxt);
		ReplicationSlotAcquire(aggregate_slot_name(MyDatabaseId), true);
		consumer_active = true;
		dctx = CreateDecodingContext(InvalidXLogRecPtr, NIL, false, xl_routine(),
									 NULL, NULL, NULL);
		XLogBeginRead(dctx->reader, MyReplicationSlot->data.restart_lsn);
		MemoryContextSwitchTo(old);
		InvalidateSystemCaches();
	}
	pgstat_report_activity(STATE_RUNNING, "stream_events: decoding");
	stop_after_commit = false;
	flush_seen = false;
	batch_started = GetCurrentTimestamp();
	old = CurrentMemoryContext;
	while (dctx->reader->EndRecPtr < end && !stop_after_commit)
	{
		XLogRecord *record;
		char	   *errm = NULL;

		/*
		 * The reader allocates in the current context: its record buffer
		 * when a record is larger than any before (a commit with many
		 * invalidations, a pg_restore's), an oversized decoded record, its
		 * decode buffer.  They must live as long as the reader, and the
		 * replay of a commit (ReorderBufferProcessTXN) leaves
		 * TopTransactionContext current behind it (it rolls back its
		 * internal subtransaction): a buffer grown there was freed by our
		 * commit below and written again by the next decoding, a heap
		 * corruption found when the reader was freed.  So every read is
		 * made in the decoding context's own memory.
		 */
		MemoryContextSwitchTo(dctx->context);
		record = XLogReadRecord(dctx->reader, &errm);
		if (record == NULL && ShutdownRequestPending)
			break;				/* read_flushed_page gave up for the shutdown */
		if (errm)
			elog(ERROR, "could not read WAL for continuous aggregates: %s", errm);
		if (record != NULL)
			LogicalDecodingProcessRecord(dctx, dctx->reader);
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			break;
	}
	MemoryContextSwitchTo(old);
	/* decoding may have clobbered it, as logicalfuncs.c notes */
	CurrentResourceOwner = owner;
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	if (dctx->reader->EndRecPtr >= end)
	{
		decode_horizon = asked;
		decoded_to_end = true;
		decoded_end = end;
	}
}

/* ---------- errors ---------- */

/*
 * Reports an error of a round; what names the definition parked for it
 * (park_blamed), agg_id the aggregate whose catalog row says so (0: the
 * error is nobody's own, every aggregate's row says it).
 */
/* what the status views say: the error, its SQLSTATE, the event */
static char *
describe_error(ErrorData *edata, const char *raw)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "%s (SQLSTATE %s", raw, unpack_sql_state(edata->sqlerrcode));
	if (eval_has_event && !XLogRecPtrIsInvalid(eval_lsn))
		appendStringInfo(&buf, ", event_id %s, commit %X/%X",
						 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&eval_event))),
						 LSN_FORMAT_ARGS(eval_lsn));
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

static void
record_error(ErrorData *edata, int32 agg_id, int32 act_id, const char *what)
{
	const char *raw = edata->message ? edata->message : "unknown error";
	char	   *msg = what ? describe_error(edata, raw) : pstrdup(raw);
	bool		all = (agg_id == 0 && what == NULL);
	OriginTag	tag = {0};

	if (what != NULL)
		ereport(WARNING,
				(errmsg("stream_events parked %s after its error: %s", what, msg),
				 edata->detail ? errdetail("%s", edata->detail) : 0,
				 errhint("The other definitions go on. Fix the cause, then SELECT stream.resume(name): it replays from its applied LSN; the worker also retries it when it restarts.")));
	else if (last_warning == NULL || strcmp(last_warning, msg) != 0)
	{
		ereport(WARNING,
				(errmsg("stream_events could not maintain continuous aggregates: %s", msg),
				 edata->detail ? errdetail("%s", edata->detail) : 0,
				 edata->hint ? errhint("%s", edata->hint) : 0));
		last_warning = MemoryContextStrdup(consumer_cxt, msg);
	}
	PG_TRY();
	{
		Oid			argtypes[3] = {TEXTOID, BOOLOID, INT4OID};
		Datum		args[3] = {CStringGetTextDatum(msg), BoolGetDatum(all), Int32GetDatum(agg_id)};

		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (OidIsValid(get_extension_oid("stream_events", true)))
		{
			/* the worker's own write */
			origin_tag_begin(&tag);
			SPI_execute_with_args("UPDATE stream.aggregate_defs SET status = 'error', last_error = $1 "
								  "WHERE $2 OR agg_id = $3",
								  3, argtypes, args, NULL, false, 0);
			if (act_id != 0 && act_catalog_has_failures)
			{
				args[2] = Int32GetDatum(act_id);
				SPI_execute_with_args("UPDATE stream.activation_defs SET status = 'error', last_error = $1 "
									  "WHERE NOT $2 AND act_id = $3",
									  3, argtypes, args, NULL, false, 0);
			}
			origin_tag_end(&tag);
		}
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		origin_tag_end(&tag);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
}


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
retry_one(AggRuntime *rt, ActRuntime *act, TupleTableSlot *row)
{
	OwnerScope	scope = {0};
	GuardedCall g = {rt, act, row, 0};
	ErrorData  *volatile e = NULL;

	owner_enter(&scope, rt ? rt->owner : act->owner, rt ? rt->search_path : act->search_path);
	PG_TRY();
	{
		note_event(row);
		/* not decoding: a transaction that writes is fine here */
		e = call_guarded(&g);
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

static void
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
	if (SPI_execute("SELECT id, kind OPERATOR(pg_catalog.=) 'activation', def_id, event_id "
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
	pgstat_report_activity(STATE_IDLE, NULL);
	{
		ListCell   *lc;

		foreach(lc, runtimes)
			reset_batch((AggRuntime *) lfirst(lc));
	}
	act_reset_batch(acts);
	batch_groups = 0;
	retry_pending = false;
}

/* retry_dead_letters' work, tagged as the worker's own */
static void
retry_body(uint64 n, SPITupleTable *tt, MemoryContext cxt)
{
	List	   *touched_rts = NIL;
	List	   *touched_acts = NIL;

		for (uint64 i = 0; i < n; i++)
		{
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
			bool		is_act = DatumGetBool(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
			int32		def_id = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));
			Datum		event_id = SPI_getbinval(tt->vals[i], tt->tupdesc, 4, &isnull);
			AggRuntime *rt = NULL;
			ActRuntime *act = NULL;
			StreamFeed *feed = NULL;
			ListCell   *lc;
			ErrorData  *err = NULL;
			uint64		nrows;
			SPITupleTable *rows;
			Oid			types[5] = {INT8OID, TEXTOID, TEXTOID, TEXTOID};
			Datum		args[5];
			char		nulls[5] = "     ";

			CHECK_FOR_INTERRUPTS();
			if (isnull)
				continue;
			if (is_act)
			{
				foreach(lc, acts)
					if (((ActRuntime *) lfirst(lc))->act_id == def_id &&
						((ActRuntime *) lfirst(lc))->kind != ACT_THRESHOLD)
						act = lfirst(lc);
			}
			else
			{
				foreach(lc, runtimes)
					if (((AggRuntime *) lfirst(lc))->agg_id == def_id &&
						!((AggRuntime *) lfirst(lc))->backfill)
						rt = lfirst(lc);
			}
			if (rt == NULL && act == NULL)
				continue;		/* parked or not loaded: stays asked for */
			foreach(lc, feeds)
				if (((StreamFeed *) lfirst(lc))->stream == (rt ? rt->stream : act->stream))
					feed = lfirst(lc);
			if (feed == NULL)
				continue;
			read_event_as(rt ? rt->owner : act->owner, rt ? rt->search_path : act->search_path,
						  feed->stream, event_id);
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
					current_rt = rt;
					eval_act = act;
					err = retry_one(rt, act, feed->slot);
					current_rt = NULL;
					eval_act = NULL;
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
			if (rt && !list_member_ptr(touched_rts, rt))
				touched_rts = lappend(touched_rts, rt);
			if (act && !list_member_ptr(touched_acts, act))
				touched_acts = lappend(touched_acts, act);
		}
		{
			ListCell   *lc;

			act_lock_definitions(touched_acts);
			foreach(lc, touched_rts)
			{
				AggRuntime *rt = lfirst(lc);
				Oid			argtypes[1] = {INT4OID};
				Datum		args[1] = {Int32GetDatum(rt->agg_id)};

				/* the row lock orders us with drop_aggregate and rebuild_aggregate */
				if (SPI_execute_with_args("SELECT 1 FROM stream.aggregate_defs WHERE agg_id = $1 "
										  "AND applied_lsn IS NOT NULL FOR UPDATE",
										  1, argtypes, args, NULL, false, 0) != SPI_OK_SELECT)
					elog(ERROR, "could not lock stream.aggregate_defs");
				if (SPI_processed == 1)
					upsert_groups(rt);
			}
			act_apply_queue();
			act_record_applied(touched_acts, InvalidXLogRecPtr);
		}
}

/* ---------- the round ---------- */

static char *
read_signature(bool *installed)
{
	char	   *sig = NULL;

	*installed = OidIsValid(get_extension_oid("stream_events", true));
	if (!*installed)
		return NULL;
	SPI_connect();
	/*
	 * Not xmin: the worker's own apply updates these rows, and a signature
	 * that changed with every apply would reload the definitions and
	 * re-read WAL from the slot's restart point each round.  New, dropped,
	 * rebuilt and adopted aggregates show in agg_id and applied_lsn, parked
	 * ones set right in status; an activation's notify mode and stored
	 * trees (set by an upgrade) in its part.
	 */
	if (SPI_execute("SELECT nullif(concat_ws('|', "
					"(SELECT string_agg(agg_id || ':' || (applied_lsn IS NULL)::text || (status = 'error')::text || "
					"  coalesce(pg_catalog.to_jsonb(g) ->> 'on_error', ''), ',' ORDER BY agg_id) "
					" FROM stream.aggregate_defs g), "
					"(SELECT 'a' || string_agg(act_id::text || ':' || coalesce(j ->> 'notify', '') || "
					"  (j ->> 'condition_tree' IS NOT NULL)::text || coalesce(j ->> 'status', '') || "
					"  coalesce(j ->> 'on_error', ''), ',' ORDER BY act_id) "
					" FROM stream.activation_defs d, LATERAL (SELECT pg_catalog.to_jsonb(d) AS j) x "
					" WHERE delivery = 'batched')), '')", true, 0) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			sig = MemoryContextStrdup(TopTransactionContext, TextDatumGetCString(d));
	}
	SPI_finish();
	return sig;
}

static void
round_body(bool *installed)
{
	char	   *sig;
	ListCell   *lc;
	bool		running = false;
	XLogRecPtr	upto;
	XLogRecPtr	round_insert = GetXLogInsertRecPtr();

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	sig = read_signature(installed);
	if (sig == NULL)
	{
		/* no aggregate (or no extension): no slot */
		PopActiveSnapshot();
		CommitTransactionCommand();
		if (have_definitions || runtimes != NIL)
			free_definitions();
		drop_main_slot();
		return;
	}
	if (defs_signature == NULL || strcmp(sig, defs_signature) != 0)
	{
		release_decoding();
		/* rows restored from a dump of another database: adopted first */
		if (aggregates_adopt_restored())
		{
			PopActiveSnapshot();
			CommitTransactionCommand();
			if (have_definitions || runtimes != NIL)
				free_definitions();
			return;
		}
		/* the private origin exists before anything is tagged with it */
		(void) se_origin_id(true);
		SPI_connect();
		load_definitions(sig);
		SPI_finish();
	}
	/* dead letters stream.retry_dead_letters asked for (a partial index) */
	if (act_catalog_has_failures)
	{
		SPI_connect();
		retry_pending =
			SPI_execute("SELECT 1 FROM stream.dead_letters WHERE retry_requested LIMIT 1",
						true, 0) == SPI_OK_SELECT && SPI_processed > 0;
		SPI_finish();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();

	/* the slot went missing under running aggregates: rebuild them */
	if (ensure_main_slot())
	{
		foreach(lc, runtimes)
		{
			AggRuntime *rt = lfirst(lc);

			if (!rt->backfill)
			{
				ereport(WARNING,
						(errmsg("stream_events replication slot was missing; rebuilding continuous aggregate %s", rt->name)));
				StartTransactionCommand();
				SPI_connect();
				PushActiveSnapshot(GetTransactionSnapshot());
				SPI_execute(psprintf("SELECT stream.rebuild_aggregate(%s)",
									 quote_literal_cstr(rt->name)), false, 0);
				PopActiveSnapshot();
				SPI_finish();
				CommitTransactionCommand();
			}
		}
		free_definitions();
		/* go on at once (next round), not after a naptime */
		next_attempt = GetCurrentTimestamp();
		return;
	}

	foreach(lc, runtimes)
	{
		AggRuntime *rt = lfirst(lc);

		if (rt->backfill)
		{
			current_rt = rt;
			backfill(rt);
			current_rt = NULL;
		}
		running = true;
	}
	if (acts != NIL)
		running = true;
	if (!running)
		return;

	do
	{
		decode_available();
		upto = dctx->reader->EndRecPtr;
		apply_batches(upto, flush_seen ||
					  TimestampDifferenceExceeds(last_idle_write, GetCurrentTimestamp(), 10000));
	} while (stop_after_commit && !ShutdownRequestPending);

	/*
	 * Absence timers fire once everything committed before their deadline
	 * has been decoded and applied, so that a cancelling event that arrived
	 * in time is never missed.
	 */
	if (have_absence && decoded_to_end && !stop_after_commit &&
		act_timers_due(decode_horizon))
		act_fire_due_timers(decode_horizon);
	if (retry_pending && decoded_to_end && !stop_after_commit)
		retry_dead_letters();
	last_warning = NULL;

	/*
	 * Everything flushed up to decoded_end is decoded and applied: the
	 * status views' lag.  The next round may be skipped while no WAL is
	 * written after round_insert (aggregates_round).
	 */
	if (decoded_to_end && !stop_after_commit)
	{
		worker_note_consumer_position(decoded_end);
		last_round_insert = round_insert;
		last_full_round = GetCurrentTimestamp();
	}
}

/*
 * A slot that stopped advancing (the consumer fails, or cannot keep up)
 * makes the server keep WAL forever: say so, once a minute, while it holds
 * more than stream_events.slot_warning_size.  stream.aggregates shows the
 * lag in bytes too.
 */
static void
warn_if_slot_holds_wal(void)
{
	char	   *name = aggregate_slot_name(MyDatabaseId);
	ReplicationSlot *slot;
	XLogRecPtr	restart = InvalidXLogRecPtr;
	XLogRecPtr	now_lsn;
	TimestampTz now = GetCurrentTimestamp();

	if (!TimestampDifferenceExceeds(last_slot_warning, now, 60 * 1000))
		return;
	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	slot = SearchNamedReplicationSlot(name, false);
	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		restart = slot->data.restart_lsn;
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);
	if (XLogRecPtrIsInvalid(restart))
		return;
	now_lsn = GetXLogInsertRecPtr();
	if (now_lsn > restart &&
		(now_lsn - restart) / (1024 * 1024) >= (uint64) se_slot_warning_mb)
	{
		StringInfoData held;
		ListCell   *lc;

		/* the parked definitions are what usually holds it back: name them */
		initStringInfo(&held);
		foreach(lc, parked)
		{
			ParkedDef  *p = lfirst(lc);

			appendStringInfo(&held, "%s%s %d (applied up to %X/%X)",
							 held.len > 0 ? ", " : " Parked: ",
							 p->is_act ? "activation act_id" : "aggregate agg_id", p->id,
							 LSN_FORMAT_ARGS(p->applied_lsn));
		}
		ereport(WARNING,
				(errmsg("replication slot \"%s\" of the continuous aggregates holds %llu MB of WAL",
						name, (unsigned long long) ((now_lsn - restart) / (1024 * 1024))),
				 errdetail("The slot has not advanced past %X/%X; the server keeps the WAL after it.%s",
						   LSN_FORMAT_ARGS(restart), held.data),
				 errhint("See state and last_error in stream.aggregates and stream.activation_status; fix the cause and SELECT stream.resume(name), or drop the definitions to release the slot.")));
		pfree(held.data);
		last_slot_warning = now;
	}
}

/*
 * One round of the consumer: (re)load definitions, backfill new
 * aggregates, decode what was flushed and apply it.  Returns true while
 * there are aggregates (the worker then polls every
 * stream_events.aggregate_poll_interval).  Errors are reported as a
 * WARNING and in stream.aggregates, and everything held in memory is
 * dropped: the next round decodes again from the slot, which never passes
 * what was applied.
 */
bool
aggregates_round(bool *installed)
{
	MemoryContext caller = CurrentMemoryContext;

	*installed = true;
	if (consumer_cxt == NULL)
	{
		consumer_cxt = AllocSetContextCreate(TopMemoryContext, "stream_events consumer",
											 ALLOCSET_DEFAULT_SIZES);
		defs_cxt = AllocSetContextCreate(consumer_cxt, "stream_events aggregates",
										 ALLOCSET_DEFAULT_SIZES);
		CacheRegisterRelcacheCallback(part_cache_invalidate, (Datum) 0);
	}
	if (next_attempt != 0 && GetCurrentTimestamp() < next_attempt)
		return true;
	next_attempt = 0;

	/*
	 * Nothing written since the last round started (the WAL insert position
	 * has not moved: no event, no definition changed, no flush, resume or
	 * retry asked), no absence timer due: no round, so no transaction every
	 * poll interval.  A full round at least every IDLE_ROUND_MS all the same.
	 */
	if (have_definitions && !retry_pending && !XLogRecPtrIsInvalid(last_round_insert) &&
		GetXLogInsertRecPtr() == last_round_insert &&
		!TimestampDifferenceExceeds(last_full_round, GetCurrentTimestamp(), IDLE_ROUND_MS) &&
		!(have_absence && act_timers_due(GetCurrentTimestamp())))
	{
		worker_note_consumer_position(decoded_end);
		warn_if_slot_holds_wal();
		return true;
	}

	PG_TRY();
	{
		round_body(installed);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		int32		park_agg;
		int32		park_act;
		char	   *park_what;
		bool		skip;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(caller);
		PG_TRY();
		{
			release_decoding();
		}
		PG_CATCH();
		{
			FlushErrorState();
			dctx = NULL;
			if (MyReplicationSlot)
				ReplicationSlotRelease();
		}
		PG_END_TRY();
		/* before free_definitions: current_rt lives in defs_cxt */
		if (!eval_phase)
			eval_has_event = false; /* the error is not an event's */
		skip = careful_blamed(edata);
		park_agg = 0;
		park_act = 0;
		park_what = NULL;
		if (skip)
			ereport(DEBUG1,
					(errmsg("stream_events: an event failed in %s %s (%s); decoded again, it is skipped for it",
							current_rt ? "continuous aggregate" : "activation",
							current_rt ? current_rt->name : (eval_act ? eval_act->name : "?"),
							edata->message)));
		else
			park_agg = park_blamed(edata, &park_what, &park_act);
		free_definitions();
		reset_dead_letters();
		if (!skip)
			record_error(edata, park_agg, park_act, park_what);
		FreeErrorData(edata);
		current_rt = NULL;
		blame_agg = 0;
		act_blame = 0;
		eval_act = NULL;
		eval_phase = false;
		eval_lsn = InvalidXLogRecPtr;
		last_round_insert = InvalidXLogRecPtr;
		/* a poison event: again at once, carefully; other errors: in 2 s */
		next_attempt = skip ? GetCurrentTimestamp() :
			TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 2000);
		MemoryContextSwitchTo(caller);
	}
	PG_END_TRY();
	warn_if_slot_holds_wal();
	return have_definitions || next_attempt != 0;
}

/*
 * DROP EXTENSION: forget the definitions and drop the database's slot
 * before the worker leaves.
 */
void
aggregates_extension_dropped(void)
{
	PG_TRY();
	{
		if (defs_cxt)
			free_definitions();
		drop_main_slot();
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
}

void
aggregates_shutdown(void)
{
	if (consumer_cxt == NULL)
		return;
	release_decoding();
}
