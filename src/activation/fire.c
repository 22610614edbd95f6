/*-------------------------------------------------------------------------
 * fire.c
 *	  Activations firing (docs/activations.md):
 *	  - the batch queue of the worker's consumer: firings of on_event and
 *	    the open/cancel operations of on_absence timers, kept in commit
 *	    order and carried out in the apply transaction;
 *	  - the outbox insert + NOTIFY (act_fire_row), shared with the
 *	    immediate trigger (immediate.c);
 *	  - threshold edges (stream.threshold_state) and due absence timers.
 *
 * Every write here happens in a transaction that also records how far the
 * worker has decoded (or, for timers, that deletes the timer), so a firing
 * commits exactly once with its NOTIFY.  The worker's own writes are
 * tagged with the extension's private replication origin (origin.h).
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

/* as in commands/async.c, where it is private */
#define NOTIFY_PAYLOAD_MAX_LENGTH (BLCKSZ - NAMEDATALEN - 128)

/* how many due timers one transaction fires */
#define TIMERS_PER_TXN 1000

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

/*
 * NOTIFYs of one apply transaction, per channel: past NOTIFY_PER_CHANNEL
 * the rows are announced by one {"id": <last>, "more": true} at the end
 * (PostgreSQL keeps every pending NOTIFY of a transaction in memory).
 */
#define NOTIFY_PER_CHANNEL 10000
typedef struct ChannelCount
{
	char	   *channel;
	int64		sent;
	int64		last_id;		/* of the rows not announced one by one */
	bool		id_only;
} ChannelCount;
static bool notify_capped = false;
static List *channel_counts = NIL;	/* ChannelCount, in fire_cxt */
static SPIPlanPtr fire_plan = NULL;
static SPIPlanPtr fire_plan_plain = NULL;	/* no cooldown to check */
static SPIPlanPtr start_plan = NULL;
static SPIPlanPtr cancel_plan = NULL;
static SPIPlanPtr edge_on_plan = NULL;
static SPIPlanPtr edge_off_plan = NULL;
static SPIPlanPtr due_plan = NULL;

static TimestampTz next_due = 0;

/*
 * NOTIFY channel with an outbox row as JSON, or {"id": n, "truncated": true}
 * when that exceeds the NOTIFY limit (the client reads the row by id).
 * With notify => 'id' only {"id": n}: LISTEN has no access control, so an
 * activation whose events are private sends nothing a listener could read;
 * the row is then read through stream.consume, which checks.
 */
static void
notify_row(const char *channel, int64 id, const char *json, bool id_only)
{
	if (notify_capped)
	{
		ListCell   *lc;
		ChannelCount *cc = NULL;

		foreach(lc, channel_counts)
			if (strcmp(((ChannelCount *) lfirst(lc))->channel, channel) == 0)
				cc = lfirst(lc);
		if (cc == NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(fire_cxt);

			cc = palloc0(sizeof(ChannelCount));
			cc->channel = pstrdup(channel);
			channel_counts = lappend(channel_counts, cc);
			MemoryContextSwitchTo(old);
		}
		if (++cc->sent > NOTIFY_PER_CHANNEL)
		{
			cc->last_id = id;
			return;
		}
	}
	if (id_only)
		json = psprintf("{\"id\": " INT64_FORMAT "}", id);
	else if (strlen(json) >= NOTIFY_PAYLOAD_MAX_LENGTH)
		json = psprintf("{\"id\": " INT64_FORMAT ", \"truncated\": true}", id);
	Async_Notify(channel, json);
}

/*
 * SPI_execute_plan (plan) or SPI_execute (sql) with the WAL it writes
 * tagged as the worker's own (origin.h): not decoded.  Only for the
 * extension's fixed statements, never user code.
 */
int
act_execute_tagged(SPIPlanPtr plan, const char *sql, Datum *args)
{
	OriginTag	tag = {0};
	volatile int rc;

	origin_tag_begin(&tag);
	PG_TRY();
	{
		if (plan)
			rc = SPI_execute_plan(plan, args, NULL, false, 0);
		else
			rc = SPI_execute(sql, false, 0);
	}
	PG_FINALLY();
	{
		origin_tag_end(&tag);
	}
	PG_END_TRY();
	return rc;
}

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
 * Locks the definitions' rows, which orders us with drop_activation: an
 * activation dropped since the definitions were loaded fires nothing more
 * (its DELETE may have committed before events decoded with the old set).
 * Nor does one whose owner lost the right to read what it watches (a
 * REVOKE does not reload the definitions).
 */
void
act_lock_definitions(List *acts)
{
	static SPIPlanPtr lock_plan = NULL;
	ListCell   *lc;
	Oid			argtypes[1] = {INT4OID};

	/* the apply transaction starts: its NOTIFYs are counted per channel */
	channel_counts = NIL;
	notify_capped = true;

	foreach(lc, acts)
	{
		ActRuntime *act = lfirst(lc);
		Datum		args[1];

		args[0] = Int32GetDatum(act->def.id);
		if (plan_execute(&lock_plan, "SELECT 1 FROM stream.activation_defs WHERE act_id = $1 FOR UPDATE",
						 1, argtypes, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not lock stream.activation_defs");
		act->gone = (SPI_processed == 0);
		act->def.denied = !act->gone && !act_owner_may_read(act);
	}
}

/*
 * One outbox row and its NOTIFY: the row as JSON, or {"id": n,
 * "truncated": true} when that exceeds the NOTIFY limit.  With a cooldown,
 * nothing when the key fired within it before (measured on received_at).
 * Returns the row's id, or 0.  Needs SPI; runs with search_path
 * pg_catalog-first names only.
 */
int64
act_fire_row(const char *activation, const char *channel, const char *key,
			 const char *payload, Datum event_id, TimestampTz occurred_at,
			 TimestampTz received_at, bool has_cooldown, Datum cooldown,
			 bool notify_id)
{
	Datum		args[8];
	char		nulls[8] = "        ";
	bool		isnull;
	int64		id = 0;
	bool		cooling;
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext tmp;

	/*
	 * The lock NOTIFY takes at commit (async.c, PreCommit_Notify), taken now
	 * and held to the end of the transaction: whoever writes the outbox
	 * (the worker, producers with immediate delivery) commits in the order
	 * the ids were taken, so a consumer's "acknowledged up to id" never
	 * skips a row that commits later with a lower id.
	 */
	LockSharedObject(DatabaseRelationId, InvalidOid, 0, AccessExclusiveLock);
	cooling = has_cooldown && key != NULL && received_at != 0;
	if (cooling && fire_plan == NULL)
	{
		Oid			types[8] = {TEXTOID, TEXTOID, TEXTOID, UUIDOID, TIMESTAMPTZOID,
		TIMESTAMPTZOID, TEXTOID, INTERVALOID};

		fire_plan = plan_keep("WITH f AS ("
							  " INSERT INTO stream.activations AS a (activation, key, payload, event_id, "
							  "   occurred_at, received_at, channel)"
							  " SELECT $1, $2, $3::pg_catalog.jsonb, $4, $5, $6, $7"
							  " WHERE $8 IS NULL OR $2 IS NULL OR $6 IS NULL OR NOT EXISTS ("
							  "   SELECT 1 FROM stream.activations p WHERE p.activation OPERATOR(pg_catalog.=) $1"
							  "   AND p.key OPERATOR(pg_catalog.=) $2"
							  "   AND p.received_at OPERATOR(pg_catalog.>) ($6 OPERATOR(pg_catalog.-) $8)"
							  "   AND p.received_at OPERATOR(pg_catalog.<=) $6)"
							  " RETURNING a.id, pg_catalog.row_to_json(a)::pg_catalog.text)"
							  " SELECT * FROM f",
							  8, types);
	}

	/*
	 * Without a cooldown the statement has no subquery to set up for every
	 * firing: the worker fires most events of a busy stream this way.
	 */
	if (!cooling && fire_plan_plain == NULL)
	{
		Oid			types[7] = {TEXTOID, TEXTOID, TEXTOID, UUIDOID, TIMESTAMPTZOID,
		TIMESTAMPTZOID, TEXTOID};

		fire_plan_plain = plan_keep("INSERT INTO stream.activations AS a (activation, key, payload, event_id, "
									"   occurred_at, received_at, channel)"
									" VALUES ($1, $2, $3::pg_catalog.jsonb, $4, $5, $6, $7)"
									" RETURNING a.id, pg_catalog.row_to_json(a)::pg_catalog.text",
									7, types);
	}
	/*
	 * What one row needs is freed with it: SPI leaves its procedure context
	 * current, where a million firings of one apply would pile up.
	 */
	tmp = AllocSetContextCreate(cxt, "stream_events firing", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(tmp);
	args[0] = CStringGetTextDatum(activation);
	args[1] = key ? CStringGetTextDatum(key) : (Datum) 0;
	nulls[1] = key ? ' ' : 'n';
	args[2] = CStringGetTextDatum(payload);
	args[3] = event_id;
	nulls[3] = event_id ? ' ' : 'n';
	args[4] = TimestampTzGetDatum(occurred_at);
	nulls[4] = occurred_at ? ' ' : 'n';
	args[5] = TimestampTzGetDatum(received_at);
	nulls[5] = received_at ? ' ' : 'n';
	args[6] = CStringGetTextDatum(channel);
	args[7] = cooldown;
	nulls[7] = has_cooldown ? ' ' : 'n';
	if (cooling
		? SPI_execute_plan(fire_plan, args, nulls, false, 0) != SPI_OK_SELECT
		: SPI_execute_plan(fire_plan_plain, args, nulls, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not insert into stream.activations");
	MemoryContextSwitchTo(tmp);
	if (SPI_processed > 0)		/* else: cooldown */
	{
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		notify_row(channel, id, notify_id ? NULL :
				   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2),
				   notify_id);
	}
	SPI_freetuptable(SPI_tuptable);
	MemoryContextSwitchTo(cxt);
	MemoryContextDelete(tmp);
	return id;
}

static void
apply_timer_op(ActOp *o)
{
	Datum		args[7];
	char		nulls[7] = "       ";

	args[0] = Int32GetDatum(o->act->def.id);
	args[1] = CStringGetTextDatum(o->key);
	if (o->op == OP_CANCEL)
	{
		if (cancel_plan == NULL)
		{
			Oid			types[3] = {INT4OID, TEXTOID, TIMESTAMPTZOID};

			/* a timer already due stays: it should have fired, and will */
			cancel_plan = plan_keep("DELETE FROM stream.absence_timers "
									"WHERE act_id = $1 AND key = $2 AND deadline >= $3",
									3, types);
		}
		args[2] = TimestampTzGetDatum(o->received_at);
		if (SPI_execute_plan(cancel_plan, args, nulls, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not cancel an absence timer");
		return;
	}
	if (start_plan == NULL)
	{
		Oid			types[7] = {INT4OID, TEXTOID, TIMESTAMPTZOID, TEXTOID, UUIDOID,
		TIMESTAMPTZOID, TIMESTAMPTZOID};

		start_plan = plan_keep("INSERT INTO stream.absence_timers AS t "
							   "(act_id, key, deadline, payload, event_id, occurred_at, received_at) "
							   "VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7) "
							   "ON CONFLICT (act_id, key) DO UPDATE SET deadline = EXCLUDED.deadline, "
							   "payload = EXCLUDED.payload, event_id = EXCLUDED.event_id, "
							   "occurred_at = EXCLUDED.occurred_at, received_at = EXCLUDED.received_at",
							   7, types);
	}
	{
		TimestampTz base = o->received_at ? o->received_at : GetCurrentTimestamp();
		TimestampTz deadline;

		deadline = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
														   TimestampTzGetDatum(base),
														   o->act->within));
		args[2] = TimestampTzGetDatum(deadline);
		args[3] = CStringGetTextDatum(o->payload);
		args[4] = o->event_id;
		nulls[4] = o->event_id ? ' ' : 'n';
		args[5] = TimestampTzGetDatum(o->occurred_at);
		nulls[5] = o->occurred_at ? ' ' : 'n';
		args[6] = TimestampTzGetDatum(o->received_at);
		nulls[6] = o->received_at ? ' ' : 'n';
		if (SPI_execute_plan(start_plan, args, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not open an absence timer");
		if (next_due != 0 && deadline < next_due)
			next_due = deadline;
	}
}

static void
apply_op(ActOp *o)
{
	if (o->act->gone || o->act->def.denied)
		return;
	CHECK_FOR_INTERRUPTS();
	if (o->op == OP_FIRE)
	{
		if (act_fire_row(o->act->def.name, o->act->channel, o->key, o->payload, o->event_id,
						 o->occurred_at, o->received_at, o->act->has_cooldown,
						 o->act->cooldown, o->act->notify_id) != 0)
			o->act->fired++;
	}
	else
		apply_timer_op(o);
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
	foreach(lc, channel_counts)
	{
		ChannelCount *cc = lfirst(lc);

		if (cc->sent > NOTIFY_PER_CHANNEL)
			Async_Notify(cc->channel,
						 psprintf("{\"id\": " INT64_FORMAT ", \"more\": true}", cc->last_id));
	}
	channel_counts = NIL;
	notify_capped = false;
}

/* Records how far each activation has looked, in the apply transaction. */
void
act_record_applied(List *acts, XLogRecPtr upto)
{
	static SPIPlanPtr record_plan = NULL;
	static SPIPlanPtr record_plan_010 = NULL;	/* a 0.1.0 catalog */
	ListCell   *lc;
	Oid			argtypes[3] = {INT4OID, LSNOID, INT8OID};

	foreach(lc, acts)
	{
		ActRuntime *act = lfirst(lc);
		Datum		args[3];

		if (act->gone)
			continue;
		/* a threshold not initialised yet (its aggregate backfills) */
		if (act->kind == ACT_THRESHOLD && XLogRecPtrIsInvalid(act->def.applied_lsn))
			continue;
		args[0] = Int32GetDatum(act->def.id);
		args[1] = LSNGetDatum(Max(upto, act->def.applied_lsn));
		args[2] = Int64GetDatum(act->fired);
		/* it runs: no longer parked (resumed, or retried by a new worker) */
		if ((consumer_catalog_has_failures
			 ? plan_execute(&record_plan, "UPDATE stream.activation_defs SET applied_lsn = $2, "
							"applied_at = now(), fired = fired + $3, status = 'running', "
							"last_error = NULL WHERE act_id = $1",
							3, argtypes, args, NULL, false, 0)
			 : plan_execute(&record_plan_010, "UPDATE stream.activation_defs SET applied_lsn = $2, "
							"applied_at = now(), fired = fired + $3 WHERE act_id = $1",
							3, argtypes, args, NULL, false, 0)) != SPI_OK_UPDATE)
			elog(ERROR, "could not update stream.activation_defs");
	}
}

void
act_reset_batch(List *acts)
{
	ListCell   *lc;

	foreach(lc, acts)
	{
		((ActRuntime *) lfirst(lc))->fired = 0;
		((ActRuntime *) lfirst(lc))->def.ndead = 0;
	}
	queue = NIL;
	channel_counts = NIL;
	notify_capped = false;
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
		MemoryContextSwitchTo(old);
	}
}

/* ---------- absence timers ---------- */

/* Whether a timer may be due at or before horizon. */
bool
act_timers_due(TimestampTz horizon)
{
	return next_due == 0 || (next_due != DT_NOEND && next_due <= horizon);
}

void
act_forget_timers(void)
{
	next_due = 0;
}

/*
 * Fires the timers due at or before horizon — the moment up to which every
 * committed event has been decoded and applied, so a cancelled_by event
 * received before a deadline has been seen — in transactions of at most
 * TIMERS_PER_TXN: each deletes its timers and inserts their outbox rows,
 * marked late when fired more than a second after the deadline.
 */
void
act_fire_due_timers(TimestampTz horizon)
{
	bool		more = true;

	while (more)
	{
		Datum		args[1];
		uint64		n;

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "stream_events: firing absence timers");
		if (due_plan == NULL)
		{
			Oid			types[1] = {TIMESTAMPTZOID};

			due_plan = plan_keep("WITH due AS ("
								 " DELETE FROM stream.absence_timers t"
								 " WHERE (t.act_id, t.key) IN (SELECT act_id, key FROM stream.absence_timers"
								 "   WHERE deadline <= $1 ORDER BY deadline LIMIT " CppAsString2(TIMERS_PER_TXN) ")"
								 " RETURNING t.*),"
								 " ins AS ("
								 " INSERT INTO stream.activations AS a (activation, key, payload, event_id,"
								 "   occurred_at, received_at, channel, due_at, late)"
								 " SELECT d.name, due.key, due.payload, due.event_id, due.occurred_at,"
								 "   due.received_at, d.channel, due.deadline,"
								 "   clock_timestamp() - due.deadline > interval '1 second'"
								 " FROM due JOIN stream.activation_defs d USING (act_id)"
								 " ORDER BY due.deadline, due.act_id, due.key"
								 " RETURNING a.id, a.channel, row_to_json(a)::text AS j, a.activation)"
								 /* notify through to_jsonb: also before the column exists */
								 " SELECT ins.id, ins.channel, ins.j,"
								 "   coalesce(to_jsonb(d) ->> 'notify', 'full') = 'id'"
								 " FROM ins LEFT JOIN stream.activation_defs d ON d.name = ins.activation"
								 " ORDER BY ins.id",
								 1, types);
		}
		args[0] = TimestampTzGetDatum(horizon);
		/* ids in commit order: see act_fire_row */
		LockSharedObject(DatabaseRelationId, InvalidOid, 0, AccessExclusiveLock);
		/* the worker's own writes (no user code here): not decoded */
		if (act_execute_tagged(due_plan, NULL, args) != SPI_OK_SELECT)
			elog(ERROR, "could not fire absence timers");
		n = SPI_processed;
		for (uint64 i = 0; i < n; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			bool		id_only = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));

			notify_row(SPI_getvalue(tup, desc, 2),
					   DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)),
					   SPI_getvalue(tup, desc, 3), !isnull && id_only);
		}
		more = (n >= TIMERS_PER_TXN);
		if (!more)
		{
			bool		isnull;
			Datum		d;

			if (SPI_execute("SELECT min(deadline) FROM stream.absence_timers", true, 1) != SPI_OK_SELECT)
				elog(ERROR, "could not read stream.absence_timers");
			d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			next_due = isnull ? DT_NOEND : DatumGetTimestampTz(d);
		}
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
		pgstat_report_activity(STATE_IDLE, NULL);
		CHECK_FOR_INTERRUPTS();
	}
}

/* Forgets the prepared statements (the definitions are reloaded). */
void
act_free_plans(void)
{
	SPIPlanPtr *plans[] = {&fire_plan, &fire_plan_plain, &start_plan, &cancel_plan,
	&edge_on_plan, &edge_off_plan, &due_plan};

	for (int i = 0; i < lengthof(plans); i++)
	{
		if (*plans[i])
			SPI_freeplan(*plans[i]);
		*plans[i] = NULL;
	}
	next_due = 0;
}

