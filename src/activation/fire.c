/*-------------------------------------------------------------------------
 * fire.c
 *	  Activations firing (docs/activations.md):
 *	  - the batch queue of the worker's consumer: firings of on_event and
 *	    the open/cancel operations of on_absence timers, kept in commit
 *	    order (spilled to a temporary file past the consumer's memory) and
 *	    carried out in the apply transaction, through outbox.c (firings)
 *	    and timers.c (timers);
 *	  - what each activation records of its position, and the row locks
 *	    that order the worker with drop_activation;
 *	  - threshold edges (stream.threshold_state).
 *
 * Every write here happens in a transaction that also records how far the
 * worker has decoded, so a firing commits exactly once with its NOTIFY.
 * The worker's own writes are tagged with the extension's private
 * replication origin (origin.h).
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
#include "utils/tuplestore.h"
#include "utils/uuid.h"

#include "activation/activation.h"
#include "core/plans.h"
#include "core/origin.h"
#include "core/owner.h"
#include "stream_events.h"

typedef enum ActOpKind
{
	OP_FIRE,					/* on_event matched */
	OP_START,					/* on_absence: open or restart the key's timer */
	OP_CANCEL					/* on_absence: cancel the key's timer */
} ActOpKind;

/* one queued operation, in fire_cxt */
typedef struct ActOp
{
	ActOpKind	op;
	ActRuntime *act;
	char	   *key;			/* NULL: no key */
	char	   *payload;		/* JSON text */
	Datum		event_id;		/* uuid by reference, or 0 */
	TimestampTz occurred_at;
	TimestampTz received_at;
} ActOp;

static MemoryContext fire_cxt = NULL;
static List *queue = NIL;		/* ActOp, commit order */

/* operations spilled in a large transaction (act_spill_queue), before queue */
#define OP_NCOLS 7
static Tuplestorestate *spill = NULL;
static TupleDesc spill_desc = NULL;
static MemoryContext spill_cxt = NULL;

static SPIPlanPtr edge_on_plan = NULL;
static SPIPlanPtr edge_off_plan = NULL;

/* ---------- matching decoded events ---------- */

static MemoryContext
fire_context(void)
{
	if (fire_cxt == NULL)
		fire_cxt = AllocSetContextCreate(consumer_batch_context(), "stream_events activations",
										 ALLOCSET_DEFAULT_SIZES);
	return fire_cxt;
}

static void
queue_op(ActOpKind op, ActRuntime *act, TupleTableSlot *row, const char *key,
		 const char *payload)
{
	Datum		event_id;
	MemoryContext old;
	ActOp	   *o;

	old = MemoryContextSwitchTo(fire_context());
	o = palloc0(sizeof(ActOp));
	o->op = op;
	o->act = act;
	o->key = key ? pstrdup(key) : NULL;
	o->payload = payload ? pstrdup(payload) : NULL;
	act_event_envelope(row, &event_id, &o->occurred_at, &o->received_at);
	if (event_id)
		o->event_id = datumCopy(event_id, false, UUID_LEN);
	queue = lappend(queue, o);
	act->touched = true;
	if (op == OP_FIRE)
		act->queued_fires++;
	MemoryContextSwitchTo(old);
}

/*
 * Evaluates an event or absence activation on a decoded event; what
 * matched is queued for the next apply.  The caller (the consumer, sink.c) is in the
 * activation owner's scope (owner.h), shared by the definitions of one
 * owner and search_path, and has pushed an active snapshot.  An event that
 * matches both cancelled_by and started_by cancels, then restarts.  Absence
 * events without a key open nothing.
 */
int
act_match_in_scope(ActRuntime *act, TupleTableSlot *row)
{
	ActEval		ev;
	int			queued = 0;

	(void) fire_context();
	/* the consumer marks the evaluation: an error there may be the event's */
	act_evaluate_in_scope(act, row, &ev);
	if (act->kind == ACT_EVENT)
	{
		if (ev.starts)
		{
			queue_op(OP_FIRE, act, row, ev.key, ev.payload);
			queued++;
		}
	}
	else if (act->kind == ACT_ABSENCE && !ev.keynull)
	{
		if (ev.cancels)
		{
			queue_op(OP_CANCEL, act, row, ev.key, NULL);
			queued++;
		}
		if (ev.starts)
		{
			queue_op(OP_START, act, row, ev.key, ev.payload);
			queued++;
		}
	}
	if (ev.key)
		pfree(ev.key);
	if (ev.payload)
		pfree(ev.payload);
	return queued;
}

bool
act_queue_pending(void)
{
	return queue != NIL || spill != NULL;
}

/*
 * The queue goes to a temporary file (the consumer's memory bound,
 * consumer/driver.c); act_apply_queue carries it out first, in order.
 */
void
act_spill_queue(void)
{
	ListCell   *lc;
	MemoryContext old;

	if (queue == NIL)
		return;
	if (spill == NULL)
	{
		if (spill_cxt == NULL)
			spill_cxt = AllocSetContextCreate(TopMemoryContext, "stream_events activation spill",
											  ALLOCSET_SMALL_SIZES);
		old = MemoryContextSwitchTo(spill_cxt);
		if (spill_desc == NULL)
		{
			Oid			types[OP_NCOLS] = {INT4OID, INT4OID, TEXTOID, TEXTOID, UUIDOID,
			TIMESTAMPTZOID, TIMESTAMPTZOID};

			spill_desc = CreateTemplateTupleDesc(OP_NCOLS);
			for (int i = 0; i < OP_NCOLS; i++)
				TupleDescInitEntry(spill_desc, i + 1, NULL, types[i], -1, 0);
		}
		/* across transactions: queued while decoding, applied after */
		spill = tuplestore_begin_heap(false, true, 1024);
		MemoryContextSwitchTo(old);
	}
	old = MemoryContextSwitchTo(fire_cxt);
	foreach(lc, queue)
	{
		ActOp	   *o = lfirst(lc);
		Datum		values[OP_NCOLS];
		bool		isnull[OP_NCOLS] = {0};

		values[0] = Int32GetDatum((int32) o->op);
		values[1] = Int32GetDatum(o->act->def.id);
		values[2] = o->key ? CStringGetTextDatum(o->key) : (Datum) 0;
		isnull[2] = (o->key == NULL);
		values[3] = o->payload ? CStringGetTextDatum(o->payload) : (Datum) 0;
		isnull[3] = (o->payload == NULL);
		values[4] = o->event_id;
		isnull[4] = (o->event_id == (Datum) 0);
		values[5] = TimestampTzGetDatum(o->occurred_at);
		values[6] = TimestampTzGetDatum(o->received_at);
		tuplestore_putvalues(spill, spill_desc, values, isnull);
	}
	MemoryContextSwitchTo(old);
	queue = NIL;
	/* the channel counts of an apply live here too: none now */
	MemoryContextReset(fire_cxt);
}

/* ---------- the apply transaction ---------- */

/*
 * The apply transaction starts.  A threshold's row is locked now, before
 * the aggregates' upserts find its edges: the lock orders us with
 * drop_activation, so an activation dropped since the definitions were
 * loaded fires nothing more (its DELETE may have committed before events
 * decoded with the old set).  The other activations' rows are locked by
 * act_record_queued, later in the transaction.  None fires whose owner
 * lost the right to read what it watches (a REVOKE does not reload the
 * definitions): checked for every activation, every apply.
 */
void
act_lock_definitions(List *acts)
{
	static SPIPlanPtr lock_plan = NULL;
	ListCell   *lc;
	Oid			argtypes[1] = {INT4OID};

	act_notify_begin();

	foreach(lc, acts)
	{
		ActRuntime *act = lfirst(lc);
		Datum		args[1];

		if (act->kind == ACT_THRESHOLD)
		{
			args[0] = Int32GetDatum(act->def.id);
			if (plan_execute(&lock_plan, "SELECT 1 FROM stream.activation_defs WHERE act_id = $1 FOR UPDATE",
							 1, argtypes, args, NULL, false, 0) != SPI_OK_SELECT)
				elog(ERROR, "could not lock stream.activation_defs");
			act->gone = (SPI_processed == 0);
		}
		act->def.denied = !act->gone && !act_owner_may_read(act);
	}
}

/* the UPDATE that records an activation's position (and locks its row) */
static bool
record_position(ActRuntime *act, XLogRecPtr upto, int64 fired)
{
	static SPIPlanPtr record_plan = NULL;
	static SPIPlanPtr record_plan_010 = NULL;	/* a 0.1.0 catalog */
	Oid			argtypes[3] = {INT4OID, LSNOID, INT8OID};
	Datum		args[3];
	bool		gone;

	/* it runs: no longer parked (resumed, or retried by a new worker) */
	if (act_position_write(act->def.id, Max(upto, act->def.applied_lsn), fired,
						   consumer_catalog_has_failures, &gone))
		return !gone;
	args[0] = Int32GetDatum(act->def.id);
	args[1] = LSNGetDatum(Max(upto, act->def.applied_lsn));
	args[2] = Int64GetDatum(fired);
	if ((consumer_catalog_has_failures
		 ? plan_execute(&record_plan, "UPDATE stream.activation_defs SET applied_lsn = $2, "
						"applied_at = now(), fired = fired + $3, status = 'running', "
						"last_error = NULL WHERE act_id = $1",
						3, argtypes, args, NULL, false, 0)
		 : plan_execute(&record_plan_010, "UPDATE stream.activation_defs SET applied_lsn = $2, "
						"applied_at = now(), fired = fired + $3 WHERE act_id = $1",
						3, argtypes, args, NULL, false, 0)) != SPI_OK_UPDATE)
		elog(ERROR, "could not update stream.activation_defs");
	return SPI_processed > 0;
}

/*
 * Before the queue is carried out: each event or absence activation that
 * queued something (or has dead letters) records its position now, with
 * the firings it will make; that UPDATE also locks its row, as
 * act_lock_definitions does for thresholds, and finds it gone.  One
 * statement per activation and apply instead of a lock and an update.  A
 * cooldown may drop firings: those count after (act_record_applied).
 */
void
act_record_queued(List *acts, XLogRecPtr upto)
{
	ListCell   *lc;

	foreach(lc, acts)
	{
		ActRuntime *act = lfirst(lc);

		act->recorded = false;
		if (act->kind == ACT_THRESHOLD || act->gone ||
			!(act->touched || act->def.ndead > 0))
			continue;
		act->gone = !record_position(act, upto,
									 (act->def.denied || act->has_cooldown) ? 0 : act->queued_fires);
		act->recorded = !act->gone;
	}
}

static void
apply_op(ActOp *o)
{
	if (o->act->gone || o->act->def.denied)
		return;
	CHECK_FOR_INTERRUPTS();
	switch (o->op)
	{
		case OP_FIRE:
			if (!(o->act->has_cooldown && o->key != NULL && o->received_at != 0))
				act_outbox_add(o->act, o->key, o->payload, o->event_id, o->occurred_at,
							   o->received_at);
			else
			{
				/* the cooldown looks at the rows before this one */
				act_outbox_flush();
				if (act_fire_row(o->act->def.name, o->act->channel, o->key, o->payload,
								 o->event_id, o->occurred_at, o->received_at,
								 o->act->has_cooldown, o->act->cooldown,
								 o->act->notify_id) != 0)
					o->act->fired++;
			}
			break;
		case OP_START:
			act_timer_start(o->act, o->key, o->payload, o->event_id, o->occurred_at,
							o->received_at);
			break;
		case OP_CANCEL:
			act_timer_cancel(o->act, o->key, o->received_at);
			break;
	}
}

/*
 * Carries out the queue, in commit order, in the apply transaction: what
 * was spilled first, then what is in memory; acts are the activations the
 * spilled operations name (by act_id).  Then the channels that had more
 * rows than were announced one by one get one {"id": <last>, "more": true}.
 */
void
act_apply_queue(List *acts)
{
	ListCell   *lc;

	if (spill)
	{
		TupleTableSlot *slot = MakeSingleTupleTableSlot(spill_desc, &TTSOpsMinimalTuple);
		MemoryContext tmp = AllocSetContextCreate(CurrentMemoryContext, "stream_events spilled firings",
												  ALLOCSET_DEFAULT_SIZES);

		tuplestore_rescan(spill);
		while (tuplestore_gettupleslot(spill, true, false, slot))
		{
			MemoryContext old = MemoryContextSwitchTo(tmp);
			ActOp		o = {0};
			int32		act_id;
			bool		isnull;
			Datum		d;

			o.op = (ActOpKind) DatumGetInt32(slot_getattr(slot, 1, &isnull));
			act_id = DatumGetInt32(slot_getattr(slot, 2, &isnull));
			foreach(lc, acts)
				if (((ActRuntime *) lfirst(lc))->def.id == act_id)
					o.act = lfirst(lc);
			d = slot_getattr(slot, 3, &isnull);
			o.key = isnull ? NULL : TextDatumGetCString(d);
			d = slot_getattr(slot, 4, &isnull);
			o.payload = isnull ? NULL : TextDatumGetCString(d);
			d = slot_getattr(slot, 5, &isnull);
			o.event_id = isnull ? (Datum) 0 : d;
			o.occurred_at = DatumGetTimestampTz(slot_getattr(slot, 6, &isnull));
			o.received_at = DatumGetTimestampTz(slot_getattr(slot, 7, &isnull));
			if (o.act)
				apply_op(&o);
			MemoryContextSwitchTo(old);
			MemoryContextReset(tmp);
		}
		MemoryContextDelete(tmp);
		ExecDropSingleTupleTableSlot(slot);
	}
	{
		MemoryContext tmp = AllocSetContextCreate(CurrentMemoryContext, "stream_events queue",
												  ALLOCSET_DEFAULT_SIZES);

		foreach(lc, queue)
		{
			MemoryContext old = MemoryContextSwitchTo(tmp);

			apply_op(lfirst(lc));
			MemoryContextSwitchTo(old);
			MemoryContextReset(tmp);
		}
		MemoryContextDelete(tmp);
	}
	act_outbox_flush();
	act_timers_flush();
	act_notify_end();
}

/*
 * Records how far each activation has looked, in the apply transaction,
 * after its queue was carried out: thresholds that fired, and the others
 * only when asked (write_idle), as the aggregates do (consumer/apply.c);
 * those act_record_queued recorded add what a cooldown let fire.  An
 * activation not recorded keeps its applied LSN in memory too, so the
 * source keeps what it has not recorded; after a restart those events are
 * evaluated again and queue nothing again (its expressions are immutable
 * or stable, definition.c).  Each recorded one is marked for
 * act_committed.  force: every one (retried dead letters).
 */
void
act_record_applied(List *acts, XLogRecPtr upto, bool write_idle, bool force)
{
	static SPIPlanPtr fired_plan = NULL;
	ListCell   *lc;

	foreach(lc, acts)
	{
		ActRuntime *act = lfirst(lc);

		/* act_record_queued ran first: a gone one is not recorded */
		if (act->gone)
			continue;
		if (act->recorded)
		{
			Oid			argtypes[2] = {INT4OID, INT8OID};
			Datum		args[2] = {Int32GetDatum(act->def.id), Int64GetDatum(act->fired)};

			if (act->has_cooldown && act->fired > 0 &&
				plan_execute(&fired_plan, "UPDATE stream.activation_defs SET fired = fired + $2 WHERE act_id = $1",
							 2, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not update stream.activation_defs");
			continue;
		}
		/* a threshold not initialised yet (its aggregate backfills) */
		if (act->kind == ACT_THRESHOLD && XLogRecPtrIsInvalid(act->def.applied_lsn))
			continue;
		/* the first apply after a load says it runs (status) */
		if (!(force || act->touched || act->def.ndead > 0 || !act->written ||
			  (write_idle && upto > act->def.applied_lsn)))
			continue;
		act->recorded = record_position(act, upto, act->fired);
	}
}

void
act_reset_batch(List *acts)
{
	ListCell   *lc;

	foreach(lc, acts)
	{
		ActRuntime *act = lfirst(lc);

		act->fired = 0;
		act->queued_fires = 0;
		act->def.ndead = 0;
		act->touched = false;
		act->recorded = false;
	}
	act_outbox_discard();
	act_timers_discard();
	act_notify_reset();
	queue = NIL;
	if (fire_cxt)
		MemoryContextReset(fire_cxt);
	if (spill)
	{
		tuplestore_end(spill);
		spill = NULL;
	}
}

/* ---------- thresholds ---------- */

/*
 * A group of a threshold's aggregate changed; holds says whether the
 * condition is true for it now.  Fires when it became true (the group is
 * not in stream.threshold_state), forgets it when it became false.  In
 * the apply transaction, as the worker's role.
 */
void
act_threshold_edge(ActRuntime *act, const char *grp, const char *payload, bool holds)
{
	Datum		args[2];

	if (act->gone || act->def.denied)
		return;
	if (edge_on_plan == NULL)
	{
		Oid			types[2] = {INT4OID, TEXTOID};

		edge_on_plan = plan_keep("INSERT INTO stream.threshold_state (act_id, grp) VALUES ($1, $2) "
								 "ON CONFLICT DO NOTHING", 2, types);
		edge_off_plan = plan_keep("DELETE FROM stream.threshold_state WHERE act_id = $1 AND grp = $2",
								  2, types);
	}
	args[0] = Int32GetDatum(act->def.id);
	args[1] = CStringGetTextDatum(grp);
	if (!holds)
	{
		if (SPI_execute_plan(edge_off_plan, args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not update stream.threshold_state");
		return;
	}
	if (SPI_execute_plan(edge_on_plan, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not update stream.threshold_state");
	if (SPI_processed == 0)
		return;					/* it held already */

	/*
	 * Queued, not fired here: firing takes NOTIFY's cluster-wide commit lock
	 * (act_fire_row), which would then be held across every later upsert of
	 * the apply; act_apply_queue fires it after them.
	 */
	{
		MemoryContext old = MemoryContextSwitchTo(fire_context());
		ActOp	   *o = palloc0(sizeof(ActOp));

		o->op = OP_FIRE;
		o->act = act;
		o->key = pstrdup(grp);
		o->payload = pstrdup(payload);
		queue = lappend(queue, o);
		act->touched = true;
		MemoryContextSwitchTo(old);
	}
}

/* Forgets the prepared statements (the definitions are reloaded). */
void
act_free_plans(void)
{
	SPIPlanPtr *plans[] = {&edge_on_plan, &edge_off_plan};

	plan_forget(plans, lengthof(plans));
	act_timers_free_plans();
	act_outbox_free_plans();
}

