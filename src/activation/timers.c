/*-------------------------------------------------------------------------
 * timers.c
 *	  on_absence timers (stream.absence_timers, docs/activations.md):
 *	  - opened, restarted and cancelled by decoded events, in the apply
 *	    transaction, set-based: the operations of a batch are folded into
 *	    one final state per (activation, key) and written by one DELETE and
 *	    one INSERT ... ON CONFLICT;
 *	  - fired when due, in transactions of their own.
 *
 * Why fold: a burst of events opens one timer per event, and one SPI
 * statement per timer cost the worker more than the events' decoding
 * (bench/activation.sh, the burst case).  The fold gives what the
 * operations one by one would have left in the table:
 *	  start k V			the row of k is V, whatever it was;
 *	  cancel k r		the row of k goes if its deadline >= r.
 * So a start after anything is "k is V"; a cancel after "k is V" is "k is
 * gone" or "k is V" by V's deadline; a cancel after a cancel keeps the
 * smaller received_at; and "k is gone" is a cancel with no lower bound.
 * Keys of one flush are distinct, so the two statements commute.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "activation/activation.h"
#include "core/origin.h"
#include "core/plans.h"

/* how many due timers one transaction fires */
#define TIMERS_PER_TXN 5000

/* how many keys one flush of the fold writes at most */
#define TIMER_FOLD_MAX 10000

typedef struct TimerKey
{
	int32		act_id;
	const char *key;
} TimerKey;

/* the final state of one (activation, key) in the fold */
typedef struct TimerState
{
	TimerKey	k;				/* hash key: first */
	bool		upsert;			/* the row is this; else: cancel */
	TimestampTz bound;			/* cancel: deadline >= bound goes */
	TimestampTz deadline;		/* upsert: */
	char	   *payload;
	Datum		event_id;		/* uuid by reference, or 0 */
	TimestampTz occurred_at;
	TimestampTz received_at;
} TimerState;

static MemoryContext fold_cxt = NULL;
static HTAB *fold = NULL;

static SPIPlanPtr upsert_plan = NULL;
static SPIPlanPtr cancel_plan = NULL;
static SPIPlanPtr due_plan = NULL;

/* the earliest deadline (DT_NOEND: none; 0: not known) */
static TimestampTz next_due = 0;

static uint32
timer_key_hash(const void *key, Size keysize)
{
	const TimerKey *k = key;

	return hash_combine(murmurhash32((uint32) k->act_id),
						hash_bytes((const unsigned char *) k->key, strlen(k->key)));
}

static int
timer_key_match(const void *a, const void *b, Size keysize)
{
	const TimerKey *x = a;
	const TimerKey *y = b;

	return (x->act_id == y->act_id && strcmp(x->key, y->key) == 0) ? 0 : 1;
}

static TimerState *
fold_entry(ActRuntime *act, const char *key, bool *found)
{
	TimerKey	k;
	TimerState *st;

	if (fold == NULL)
	{
		HASHCTL		ctl;

		if (fold_cxt == NULL)
			fold_cxt = AllocSetContextCreate(TopMemoryContext, "stream_events absence timers",
											 ALLOCSET_DEFAULT_SIZES);
		ctl.keysize = sizeof(TimerKey);
		ctl.entrysize = sizeof(TimerState);
		ctl.hash = timer_key_hash;
		ctl.match = timer_key_match;
		ctl.hcxt = fold_cxt;
		fold = hash_create("stream_events absence timers", 256, &ctl,
						   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	}
	k.act_id = act->def.id;
	k.key = key;
	st = hash_search(fold, &k, HASH_ENTER, found);
	if (!*found)
	{
		/* the entry's key must outlive the caller's string */
		st->k.key = MemoryContextStrdup(fold_cxt, key);
		st->payload = NULL;
		st->event_id = (Datum) 0;
	}
	return st;
}

/*
 * Folds one operation: open (or restart) the timer of key, or cancel it.
 * In the apply transaction, in commit order; act_timers_flush writes.
 */
void
act_timer_start(ActRuntime *act, const char *key, const char *payload, Datum event_id,
				TimestampTz occurred_at, TimestampTz received_at)
{
	bool		found;
	TimerState *st = fold_entry(act, key, &found);
	TimestampTz base = received_at ? received_at : GetCurrentTimestamp();

	st->upsert = true;
	st->deadline = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
														   TimestampTzGetDatum(base),
														   act->within));
	if (st->payload)
		pfree(st->payload);
	st->payload = MemoryContextStrdup(fold_cxt, payload);
	if (st->event_id)
		pfree(DatumGetPointer(st->event_id));
	st->event_id = (Datum) 0;
	if (event_id)
	{
		MemoryContext old = MemoryContextSwitchTo(fold_cxt);

		st->event_id = datumCopy(event_id, false, UUID_LEN);
		MemoryContextSwitchTo(old);
	}
	st->occurred_at = occurred_at;
	st->received_at = received_at;
	if (hash_get_num_entries(fold) >= TIMER_FOLD_MAX)
		act_timers_flush();
}

void
act_timer_cancel(ActRuntime *act, const char *key, TimestampTz received_at)
{
	bool		found;
	TimerState *st = fold_entry(act, key, &found);

	/* a timer already due stays: it should have fired, and will */
	if (!found)
	{
		st->upsert = false;
		st->bound = received_at;
	}
	else if (!st->upsert)
		st->bound = Min(st->bound, received_at);
	else if (st->deadline >= received_at)
	{
		/* what was there before the start is overwritten, then deleted */
		st->upsert = false;
		st->bound = DT_NOBEGIN;
	}
	if (hash_get_num_entries(fold) >= TIMER_FOLD_MAX)
		act_timers_flush();
}

/* Writes the fold: one DELETE of the cancelled keys, one upsert of the rest. */
void
act_timers_flush(void)
{
	HASH_SEQ_STATUS seq;
	TimerState *st;
	ArrayBuildState *c_act, *c_key, *c_bound;
	ArrayBuildState *u_act, *u_key, *u_deadline, *u_payload, *u_event, *u_occurred, *u_received;
	int			ncancel = 0;
	int			nupsert = 0;
	MemoryContext cxt;
	MemoryContext old;

	if (fold == NULL || hash_get_num_entries(fold) == 0)
		return;
	cxt = AllocSetContextCreate(CurrentMemoryContext, "stream_events timer flush",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	c_act = initArrayResult(INT4OID, cxt, false);
	c_key = initArrayResult(TEXTOID, cxt, false);
	c_bound = initArrayResult(TIMESTAMPTZOID, cxt, false);
	u_act = initArrayResult(INT4OID, cxt, false);
	u_key = initArrayResult(TEXTOID, cxt, false);
	u_deadline = initArrayResult(TIMESTAMPTZOID, cxt, false);
	u_payload = initArrayResult(TEXTOID, cxt, false);
	u_event = initArrayResult(UUIDOID, cxt, false);
	u_occurred = initArrayResult(TIMESTAMPTZOID, cxt, false);
	u_received = initArrayResult(TIMESTAMPTZOID, cxt, false);

	hash_seq_init(&seq, fold);
	while ((st = hash_seq_search(&seq)) != NULL)
	{
		Datum		id = Int32GetDatum(st->k.act_id);
		Datum		key = CStringGetTextDatum(st->k.key);

		if (!st->upsert)
		{
			accumArrayResult(c_act, id, false, INT4OID, cxt);
			accumArrayResult(c_key, key, false, TEXTOID, cxt);
			accumArrayResult(c_bound, TimestampTzGetDatum(st->bound), false, TIMESTAMPTZOID, cxt);
			ncancel++;
			continue;
		}
		accumArrayResult(u_act, id, false, INT4OID, cxt);
		accumArrayResult(u_key, key, false, TEXTOID, cxt);
		accumArrayResult(u_deadline, TimestampTzGetDatum(st->deadline), false, TIMESTAMPTZOID, cxt);
		accumArrayResult(u_payload, CStringGetTextDatum(st->payload), false, TEXTOID, cxt);
		accumArrayResult(u_event, st->event_id, st->event_id == (Datum) 0, UUIDOID, cxt);
		accumArrayResult(u_occurred, TimestampTzGetDatum(st->occurred_at), st->occurred_at == 0,
						 TIMESTAMPTZOID, cxt);
		accumArrayResult(u_received, TimestampTzGetDatum(st->received_at), st->received_at == 0,
						 TIMESTAMPTZOID, cxt);
		if (next_due != 0 && st->deadline < next_due)
			next_due = st->deadline;
		nupsert++;
	}

	if (ncancel > 0)
	{
		Oid			types[3] = {INT4ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID};
		Datum		args[3] = {makeArrayResult(c_act, cxt), makeArrayResult(c_key, cxt),
		makeArrayResult(c_bound, cxt)};

		if (plan_execute(&cancel_plan,
						 "DELETE FROM stream.absence_timers t"
						 " USING ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
						 "   pg_catalog.unnest($3)) AS c(act_id, key, bound)"
						 " WHERE t.act_id OPERATOR(pg_catalog.=) c.act_id"
						 " AND t.key OPERATOR(pg_catalog.=) c.key"
						 " AND t.deadline OPERATOR(pg_catalog.>=) c.bound",
						 3, types, args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not cancel absence timers");
	}
	if (nupsert > 0)
	{
		Oid			types[7] = {INT4ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID,
		UUIDARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
		Datum		args[7] = {makeArrayResult(u_act, cxt), makeArrayResult(u_key, cxt),
			makeArrayResult(u_deadline, cxt), makeArrayResult(u_payload, cxt),
			makeArrayResult(u_event, cxt), makeArrayResult(u_occurred, cxt),
		makeArrayResult(u_received, cxt)};

		if (plan_execute(&upsert_plan,
						 "INSERT INTO stream.absence_timers AS t"
						 " (act_id, key, deadline, payload, event_id, occurred_at, received_at)"
						 " SELECT u.act_id, u.key, u.deadline, u.payload::pg_catalog.jsonb, u.event_id,"
						 "   u.occurred_at, u.received_at"
						 " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
						 "   pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
						 "   pg_catalog.unnest($6), pg_catalog.unnest($7))"
						 "   AS u(act_id, key, deadline, payload, event_id, occurred_at, received_at)"
						 " ON CONFLICT (act_id, key) DO UPDATE SET deadline = EXCLUDED.deadline,"
						 " payload = EXCLUDED.payload, event_id = EXCLUDED.event_id,"
						 " occurred_at = EXCLUDED.occurred_at, received_at = EXCLUDED.received_at",
						 7, types, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not open absence timers");
	}
	SPI_freetuptable(SPI_tuptable);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	act_timers_discard();
}

/* Forgets the fold (written, or its transaction failed). */
void
act_timers_discard(void)
{
	if (fold == NULL)
		return;
	hash_destroy(fold);
	fold = NULL;
	MemoryContextReset(fold_cxt);
}

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

static uint64 fire_due_txn(List *acts, TimestampTz horizon);

/* the name and channel of an activation whose timers fire */
typedef struct DueAct
{
	int32		act_id;
	const char *name;			/* NULL: no such activation any more */
	const char *channel;
	bool		notify_id;
} DueAct;

/*
 * The activation act_id, among the loaded ones or else in the catalog (one
 * not loaded any more: parked, or dropped while its timers were due).
 * Runs a statement: the caller's SPI_tuptable is replaced.
 */
static DueAct *
due_act(List **known, List *acts, int32 act_id)
{
	DueAct	   *d;
	ListCell   *lc;

	foreach(lc, *known)
		if (((DueAct *) lfirst(lc))->act_id == act_id)
			return lfirst(lc);
	d = palloc0(sizeof(DueAct));
	d->act_id = act_id;
	foreach(lc, acts)
	{
		ActRuntime *act = lfirst(lc);

		/* one found dropped since it was loaded is looked up again */
		if (act->def.id == act_id && !act->gone)
		{
			d->name = act->def.name;
			d->channel = act->channel;
			d->notify_id = act->notify_id;
			break;
		}
	}
	if (d->name == NULL)
	{
		Oid			types[1] = {INT4OID};
		Datum		args[1] = {Int32GetDatum(act_id)};

		if (SPI_execute_with_args("SELECT name, channel FROM stream.activation_defs WHERE act_id = $1",
								  1, types, args, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read stream.activation_defs");
		if (SPI_processed == 1)
		{
			d->name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			d->channel = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
			/* says no more than the id: its notify setting is not loaded */
			d->notify_id = true;
		}
	}
	*known = lappend(*known, d);
	return d;
}

/*
 * Fires the timers due at or before horizon — the moment up to which every
 * committed event has been decoded and applied, so a cancelled_by event
 * received before a deadline has been seen — in transactions of at most
 * TIMERS_PER_TXN: each deletes its timers and writes their outbox rows in
 * the order of their deadlines (act_outbox_add_due: written directly like
 * the batched firings), marked late when fired more than a second after
 * the deadline.  A timer left without its activation is deleted unfired.
 */
void
act_fire_due_timers(List *acts, TimestampTz horizon)
{
	while (fire_due_txn(acts, horizon) >= TIMERS_PER_TXN)
		;
}

/* one transaction of act_fire_due_timers: how many timers it deleted */
static uint64
fire_due_txn(List *acts, TimestampTz horizon)
{
	Datum		args[1];
	volatile uint64 n = 0;
	OriginTag	tag = {0};

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
							 /* a TID scan: no lookup through the primary key */
							 " WHERE t.ctid = ANY (ARRAY(SELECT ctid FROM stream.absence_timers"
							 "   WHERE deadline <= $1 ORDER BY deadline LIMIT " CppAsString2(TIMERS_PER_TXN) "))"
							 " RETURNING t.act_id, t.key, t.payload, t.event_id, t.occurred_at,"
							 "   t.received_at, t.deadline)"
							 " SELECT * FROM due ORDER BY deadline, act_id, key",
							 1, types);
	}
	args[0] = TimestampTzGetDatum(horizon);
	/* ids in commit order: see act_fire_row */
	LockSharedObject(DatabaseRelationId, InvalidOid, 0, AccessExclusiveLock);
	/* the worker's own writes (no user code here): not decoded */
	origin_tag_begin(&tag);
	PG_TRY();
	{
		SPITupleTable *due;
		List	   *known = NIL;

		if (SPI_execute_plan(due_plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not fire absence timers");
		n = SPI_processed;
		due = SPI_tuptable;
		for (uint64 i = 0; i < n; i++)
		{
			HeapTuple	tup = due->vals[i];
			TupleDesc	desc = due->tupdesc;
			bool		isnull;
			bool		null_event;
			DueAct	   *d;
			Datum		event_id;
			Datum		occurred_at;
			Datum		received_at;

			d = due_act(&known, acts, DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull)));
			if (d->name == NULL)
				continue;
			event_id = SPI_getbinval(tup, desc, 4, &null_event);
			occurred_at = SPI_getbinval(tup, desc, 5, &isnull);
			if (isnull)
				occurred_at = (Datum) 0;
			received_at = SPI_getbinval(tup, desc, 6, &isnull);
			if (isnull)
				received_at = (Datum) 0;
			act_outbox_add_due(d->name, d->channel, d->notify_id,
							   TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull)),
							   SPI_getbinval(tup, desc, 3, &isnull),
							   null_event ? (Datum) 0 : event_id,
							   DatumGetTimestampTz(occurred_at),
							   DatumGetTimestampTz(received_at),
							   DatumGetTimestampTz(SPI_getbinval(tup, desc, 7, &isnull)));
		}
		act_outbox_flush();
	}
	PG_CATCH();
	{
		origin_tag_end(&tag);
		/* the firings not written yet go with the transaction */
		act_outbox_discard();
		PG_RE_THROW();
	}
	PG_END_TRY();
	origin_tag_end(&tag);
	if (n < TIMERS_PER_TXN)
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
	return n;
}

/* Forgets the prepared statements (the definitions are reloaded). */
void
act_timers_free_plans(void)
{
	SPIPlanPtr *plans[] = {&upsert_plan, &cancel_plan, &due_plan};

	plan_forget(plans, lengthof(plans));
	act_timers_discard();
	next_due = 0;
}
