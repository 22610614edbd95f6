/*-------------------------------------------------------------------------
 * compile.c
 *	  Activations compiled (docs/activations.md): a definition
 *	  (stream.activation_defs) into an ActRuntime, its condition,
 *	  cancelled_by, key and payload taken from the trees the catalog keeps
 *	  (analysed as the owner when it was made) or analysed again from their
 *	  text, as the owner, in the search_path they were created in; and an
 *	  event evaluated against it (the worker's consumer and the immediate
 *	  trigger).
 *
 * User-supplied SQL is planned, initialised and evaluated only inside an
 * owner scope (owner.h) of the activation's owner, with an active snapshot
 * and an executor state of its own, so that functions of any language (SQL
 * functions the planner does not inline, plpgsql, C) run as they would in a
 * query.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "optimizer/optimizer.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "activation/activation.h"
#include "core/origin.h"
#include "core/owner.h"
#include "stream_events.h"

/* ---------- compiling ---------- */

/*
 * The analysed trees the catalog keeps (columns condition_tree, key_tree,
 * payload_tree, cancelled_by_tree), from SPI columns first.. first+3 of
 * ACT_TREES_SQL; NULL when the row has none (it predates them).
 */
const ActTrees *
act_stored_trees(HeapTuple tup, TupleDesc desc, int first, ActTrees *trees)
{
	trees->condition = SPI_getvalue(tup, desc, first);
	trees->key = SPI_getvalue(tup, desc, first + 1);
	trees->payload = SPI_getvalue(tup, desc, first + 2);
	trees->cancelled_by = SPI_getvalue(tup, desc, first + 3);
	if (trees->condition == NULL || trees->key == NULL)
		return NULL;
	return trees;
}

/*
 * Plans and initialises one analysed expression in the activation's
 * executor state, as ExecPrepareExpr does; the caller is in the owner's
 * scope, since expression_planner runs immutable functions with constant
 * arguments and ExecInitExpr checks EXECUTE.
 */
static ExprState *
prepare_act_expr(ActRuntime *act, Node *expr)
{
	MemoryContext old = MemoryContextSwitchTo(act->estate->es_query_cxt);
	ExprState  *state;

	state = ExecInitExpr(expression_planner((Expr *) expr), NULL);
	MemoryContextSwitchTo(old);
	return state;
}

/*
 * Compiles one definition into CurrentMemoryContext; needs a transaction.
 * The expressions are analysed, planned and initialised as the owner in
 * the definition's search_path (owner.h); a threshold's condition and
 * payload are kept as text (they run in SQL over the aggregate's group,
 * aggregate/upsert.c).
 */
ActRuntime *
act_compile(int32 act_id, const char *name, ActKind kind, Oid rel, Oid owner,
			const char *condition, const char *cancelled_by, const char *key,
			const char *payload, const char *channel, const char *search_path,
			const ActTrees *trees)
{
	ActRuntime *act = palloc0(sizeof(ActRuntime));
	OwnerScope	scope = {0};

	act->def.id = act_id;
	act->def.name = pstrdup(name);
	act->kind = kind;
	act->def.owner = owner;
	act->channel = pstrdup(channel);
	act->condition = pstrdup(condition);
	act->payload_text = payload ? pstrdup(payload) : NULL;
	act->def.search_path = search_path ? pstrdup(search_path) : NULL;
	if (kind == ACT_THRESHOLD)
		act->view = rel;
	else
		act->def.stream = rel;

	if (kind != ACT_THRESHOLD)
	{
		/* an executor state, as for index expressions (FormIndexDatum) */
		act->estate = CreateExecutorState();
		act->econtext = CreateExprContext(act->estate);
	}

	owner_enter(&scope, owner, search_path);
	PG_TRY();
	{
		Node	   *cexpr,
				   *kexpr,
				   *pexpr,
				   *xexpr = NULL,
				   *dummy;

		if (trees && kind != ACT_THRESHOLD)
		{
			/* what was analysed when it was defined (activation_stored_expr) */
			cexpr = activation_stored_expr(rel, trees->condition, BOOLOID, "condition");
			kexpr = activation_stored_expr(rel, trees->key, TEXTOID, "key");
			pexpr = trees->payload
				? activation_stored_expr(rel, trees->payload, TEXTOID, "payload") : NULL;
			if (cancelled_by)
			{
				if (trees->cancelled_by == NULL)
					elog(ERROR, "activation %s: no stored cancelled_by", name);
				xexpr = activation_stored_expr(rel, trees->cancelled_by, BOOLOID,
											   "cancelled_by");
			}
		}
		else
		{
			activation_analyze(rel, condition, kind == ACT_THRESHOLD ? NULL : key, payload,
							   &cexpr, &kexpr, &pexpr);
			if (cancelled_by)
				activation_analyze(rel, cancelled_by, NULL, NULL, &xexpr, &dummy, &dummy);
		}
		if (kind != ACT_THRESHOLD)
		{
			act->cond = prepare_act_expr(act, cexpr);
			act->key = prepare_act_expr(act, kexpr);
			if (pexpr)
				act->payload = prepare_act_expr(act, pexpr);
			if (xexpr)
				act->cancel = prepare_act_expr(act, xexpr);
		}
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	return act;
}

/*
 * Whether an activation's owner may read what it watches (the stream, or a
 * threshold's aggregate view).  The expressions are analysed as the owner,
 * but only they run, never the query around them, so the SELECT privilege
 * that query would need is checked here: when the definitions are loaded
 * and in every apply transaction (a REVOKE does not reload them).  An
 * activation whose owner may not is "denied": its events are not looked
 * at, nothing fires, its applied LSN still advances.
 */
bool
act_owner_may_read(ActRuntime *act)
{
	Oid			rel = act->kind == ACT_THRESHOLD ? act->view : act->def.stream;

	return pg_class_aclcheck(rel, act->def.owner, ACL_SELECT) == ACLCHECK_OK;
}

/*
 * Compiles every activation the worker runs (delivery 'batched') into
 * CurrentMemoryContext; in a transaction with SPI.  Rows restored from a dump of another database are
 * adopted first: they start from the current WAL position.
 */
List *
act_load_batched(List *skip)
{
	List	   *acts = NIL;
	uint64		n;
	SPITupleTable *tuptable;
	MemoryContext cxt = CurrentMemoryContext;

	/* the worker's own write: not decoded (origin.h) */
	if (act_execute_tagged(NULL, consumer_catalog_has_failures ?
						   "UPDATE stream.activation_defs SET applied_lsn = stream._consumer_start_position(), "
						   "start_snapshot = CASE WHEN stream.consumer_mode() = 'queue' THEN pg_current_snapshot() END, "
						   "origin = stream._aggregate_origin() WHERE origin <> stream._aggregate_origin()" :
						   /* a 0.1.0 catalog (no queue mode) */
						   "UPDATE stream.activation_defs SET applied_lsn = pg_current_wal_insert_lsn(), "
						   "origin = stream._aggregate_origin() WHERE origin <> stream._aggregate_origin()",
						   NULL) != SPI_OK_UPDATE)
		elog(ERROR, "could not adopt restored activations");

	/*
	 * notify is read through to_jsonb so that this works with catalogs
	 * that predate the column (it is 'full' there).
	 */
	if (SPI_execute("SELECT act_id, name, kind, coalesce(aggregate, stream)::oid, owner::oid, "
					"condition, cancelled_by, key, payload, channel, cooldown, within, "
					"coalesce(applied_lsn, '0/0'), search_path, "
					"coalesce(pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'notify', 'full') "
					"OPERATOR(pg_catalog.=) 'id', " ACT_TREES_SQL ", "
					"coalesce(pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'on_error', 'stop') "
					"OPERATOR(pg_catalog.=) 'skip', "
					"(pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'start_snapshot')::pg_catalog.pg_snapshot "
					"FROM stream.activation_defs d WHERE delivery = 'batched' ORDER BY act_id",
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read stream.activation_defs");
	n = SPI_processed;
	tuptable = SPI_tuptable;
	act_forget_timers();
	/* SPI returns to its own context: compile into the caller's */
	MemoryContextSwitchTo(cxt);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = tuptable->vals[i];
		TupleDesc	desc = tuptable->tupdesc;
		char	   *kindtext = SPI_getvalue(tup, desc, 3);
		ActKind		kind = strcmp(kindtext, "absence") == 0 ? ACT_ABSENCE :
			strcmp(kindtext, "threshold") == 0 ? ACT_THRESHOLD : ACT_EVENT;
		bool		isnull;
		Datum		d;
		ActRuntime *act;
		ActTrees	trees;
		int32		act_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));

		if (list_member_int(skip, act_id))
			continue;
		/* a definition that does not compile is blamed for it */
		consumer_blame(&activation_sink, act_id, SPI_getvalue(tup, desc, 2),
					  DatumGetLSN(SPI_getbinval(tup, desc, 13, &isnull)));
		act = act_compile(act_id,
						  SPI_getvalue(tup, desc, 2), kind,
						  DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull)),
						  DatumGetObjectId(SPI_getbinval(tup, desc, 5, &isnull)),
						  SPI_getvalue(tup, desc, 6), SPI_getvalue(tup, desc, 7),
						  SPI_getvalue(tup, desc, 8), SPI_getvalue(tup, desc, 9),
						  SPI_getvalue(tup, desc, 10), SPI_getvalue(tup, desc, 14),
						  act_stored_trees(tup, desc, 16, &trees));
		d = SPI_getbinval(tup, desc, 11, &isnull);
		act->has_cooldown = !isnull;
		if (!isnull)
			act->cooldown = datumCopy(d, false, sizeof(Interval));
		d = SPI_getbinval(tup, desc, 12, &isnull);
		if (!isnull)
			act->within = datumCopy(d, false, sizeof(Interval));
		act->def.applied_lsn = DatumGetLSN(SPI_getbinval(tup, desc, 13, &isnull));
		act->notify_id = DatumGetBool(SPI_getbinval(tup, desc, 15, &isnull));
		act->def.skip_errors = DatumGetBool(SPI_getbinval(tup, desc, 20, &isnull));
		d = SPI_getbinval(tup, desc, 21, &isnull);
		act->def.start_snapshot = isnull ? (Datum) 0 : datumCopy(d, false, -1);
		consumer_unblame();
		act->def.denied = !act_owner_may_read(act);
		if (act->def.denied)
			ereport(WARNING,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("stream_events skips the events of activation %s: its owner may not read %s",
							act->def.name, get_rel_name(act->kind == ACT_THRESHOLD ? act->view : act->def.stream)),
					 errhint("GRANT SELECT on it to the activation's owner, or drop the activation.")));
		acts = lappend(acts, act);
	}
	return acts;
}

/* ---------- evaluating an event (worker and immediate trigger) ---------- */

static bool
eval_bool(ExprState *expr, ExprContext *econtext)
{
	bool		isnull;
	Datum		d = ExecEvalExpr(expr, econtext, &isnull);

	return !isnull && DatumGetBool(d);
}

/*
 * Evaluates an event or absence activation on one event: the condition
 * (absence: started_by and cancelled_by), then the key when either holds,
 * and the payload (its expression, or the event as JSON) when it starts
 * something; in act->econtext's per-tuple memory.  The caller is in the
 * activation owner's scope (owner.h) and has an active snapshot.  Key and
 * payload are copied into the caller's CurrentMemoryContext.
 */
void
act_evaluate_in_scope(ActRuntime *act, TupleTableSlot *row, ActEval *ev)
{
	ExprContext *econtext = act->econtext;
	MemoryContext caller = CurrentMemoryContext;

	memset(ev, 0, sizeof(ActEval));
	ev->keynull = true;
	ResetExprContext(econtext);
	econtext->ecxt_scantuple = row;
	MemoryContextSwitchTo(econtext->ecxt_per_tuple_memory);
	ev->starts = eval_bool(act->cond, econtext);
	if (act->kind == ACT_ABSENCE)
		ev->cancels = eval_bool(act->cancel, econtext);
	if (ev->starts || ev->cancels)
	{
		bool		isnull;
		Datum		k = ExecEvalExpr(act->key, econtext, &isnull);

		if (!isnull)
		{
			ev->key = MemoryContextStrdup(caller, TextDatumGetCString(k));
			ev->keynull = false;
		}
	}
	/* absence events without a key open nothing: no payload needed */
	if (ev->starts && (act->kind == ACT_EVENT || !ev->keynull))
	{
		char	   *payload;

		if (act->payload)
		{
			bool		isnull;
			Datum		v = ExecEvalExpr(act->payload, econtext, &isnull);

			payload = isnull ? "null" : TextDatumGetCString(v);
		}
		else
		{
			slot_getallattrs(row);
			payload = TextDatumGetCString(DirectFunctionCall1(row_to_json,
															  ExecFetchSlotHeapTupleDatum(row)));
		}
		ev->payload = MemoryContextStrdup(caller, payload);
	}
	MemoryContextSwitchTo(caller);
}

/*
 * evaluate_in_scope as the activation's owner, restricted, in its
 * search_path (owner.h), with an active snapshot: SQL functions that are
 * not inlined and plpgsql run queries, and need one.
 */
void
act_evaluate(ActRuntime *act, TupleTableSlot *row, ActEval *ev)
{
	OwnerScope	scope = {0};
	volatile bool pushed = false;

	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed = true;
	}
	owner_enter(&scope, act->def.owner, act->def.search_path);
	PG_TRY();
	{
		act_evaluate_in_scope(act, row, ev);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	/* on error, the (sub)transaction's abort pops it */
	if (pushed)
		PopActiveSnapshot();
}

/* The envelope fields an outbox row keeps (0 for NULL); event_id by reference. */
void
act_event_envelope(TupleTableSlot *row, Datum *event_id, TimestampTz *occurred_at,
				   TimestampTz *received_at)
{
	Datum		v;
	bool		isnull;

	v = slot_getattr(row, ENV_EVENT_ID + 1, &isnull);
	*event_id = isnull ? (Datum) 0 : v;
	v = slot_getattr(row, ENV_OCCURRED_AT + 1, &isnull);
	*occurred_at = isnull ? 0 : DatumGetTimestampTz(v);
	v = slot_getattr(row, ENV_RECEIVED_AT + 1, &isnull);
	*received_at = isnull ? 0 : DatumGetTimestampTz(v);
}
