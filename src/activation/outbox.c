/*-------------------------------------------------------------------------
 * outbox.c
 *	  Writing stream.activations, the outbox, and its NOTIFYs:
 *	  - one firing with a cooldown or from the producer's trigger
 *	    (act_fire_row, immediate.c): without a cooldown, written as the
 *	    batches are;
 *	  - the worker's firings without a cooldown and its due on_absence
 *	    timers, batched (act_outbox_add, act_outbox_add_due,
 *	    act_outbox_flush): the rows written directly with their NOTIFY
 *	    JSON built in C (outbox_direct.c), or, when the outbox has
 *	    triggers, rules or columns that file does not know, by one INSERT
 *	    per FIRE_BATCH rows (outbox_write_spi);
 *	  - the NOTIFY of a row (act_notify_row), counted per channel in an
 *	    apply transaction (act_notify_begin, act_notify_end).
 *
 * Ids are taken, and rows committed, in commit order of the events: see
 * act_fire_row.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "activation/outbox.h"
#include "core/origin.h"
#include "core/plans.h"

/* as in commands/async.c, where it is private */
#define NOTIFY_PAYLOAD_MAX_LENGTH (BLCKSZ - NAMEDATALEN - 128)

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
static List *channel_counts = NIL;	/* ChannelCount, in the transaction */
static SPIPlanPtr fire_plan = NULL;
static SPIPlanPtr fire_plan_plain = NULL;	/* no cooldown to check */
static SPIPlanPtr fire_plan_batch = NULL;

/*
 * Firings without a cooldown (most firings of a busy stream), written
 * together at the end of the apply (or when a cooldown must see them)
 * instead of by one statement each, whose setup costs more than a row.
 * Rows are inserted, numbered and announced in commit order.
 */
#define FIRE_BATCH 1000
typedef struct FireBatch
{
	int			n;
	FireRow		rows[FIRE_BATCH];
	MemoryContext cxt;
} FireBatch;
static FireBatch batch = {0};

/* the payload's JSON text (in the current memory context) */
static char *
fire_row_payload(FireRow *r)
{
	return r->payload ? r->payload :
		DatumGetCString(DirectFunctionCall1(jsonb_out, r->payload_jsonb));
}

/*
 * NOTIFY channel with an outbox row as JSON, or {"id": n, "truncated": true}
 * when that exceeds the NOTIFY limit (the client reads the row by id).
 * With notify => 'id' only {"id": n}: LISTEN has no access control, so an
 * activation whose events are private sends nothing a listener could read;
 * the row is then read through stream.consume, which checks.
 */
void
act_notify_row(const char *channel, int64 id, const char *json, bool id_only)
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
			MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

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

/* An apply transaction starts: its NOTIFYs are counted per channel. */
void
act_notify_begin(void)
{
	channel_counts = NIL;
	notify_capped = true;
}

/*
 * The channels that had more rows than were announced one by one get one
 * {"id": <last>, "more": true}.
 */
void
act_notify_end(void)
{
	ListCell   *lc;

	foreach(lc, channel_counts)
	{
		ChannelCount *cc = lfirst(lc);

		if (cc->sent > NOTIFY_PER_CHANNEL)
			Async_Notify(cc->channel,
						 psprintf("{\"id\": " INT64_FORMAT ", \"more\": true}", cc->last_id));
	}
	act_notify_reset();
}

/* the counts lived in the transaction, which ended */
void
act_notify_reset(void)
{
	channel_counts = NIL;
	notify_capped = false;
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

	/* without a cooldown there is nothing to look up: the row is written */
	if (!cooling)
	{
		FireRow		row = {0};

		row.activation = activation;
		row.channel = channel;
		row.notify_id = notify_id;
		row.key = (char *) key;
		row.payload = (char *) payload;
		row.event_id = event_id;
		row.occurred_at = occurred_at;
		row.received_at = received_at;
		if (outbox_write_direct(&row, 1))
			return row.id;
	}
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
		act_notify_row(channel, id, notify_id ? NULL :
					   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2),
					   notify_id);
	}
	SPI_freetuptable(SPI_tuptable);
	MemoryContextSwitchTo(cxt);
	MemoryContextDelete(tmp);
	return id;
}

/* Forgets the batch (written, or its transaction failed). */
void
act_outbox_discard(void)
{
	batch.n = 0;
	if (batch.cxt)
		MemoryContextReset(batch.cxt);
}

/*
 * Rows by one INSERT in commit order, whose RETURNING
 * gives their ids and JSON in that order (ModifyTable returns rows as it
 * inserts them, and unnest yields its elements in order): the way when
 * the outbox has triggers, rules or columns outbox_write_direct does not
 * know.  Needs SPI.
 */
static void
outbox_write_spi(FireRow *rows, int nrows)
{
	MemoryContext old = MemoryContextSwitchTo(batch.cxt);
	Oid			types[9] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, UUIDARRAYOID,
		TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID,
	BOOLARRAYOID};
	Oid			elems[9] = {TEXTOID, TEXTOID, TEXTOID, UUIDOID, TIMESTAMPTZOID,
	TIMESTAMPTZOID, TEXTOID, TIMESTAMPTZOID, BOOLOID};
	ArrayBuildState *arrays[9];
	Datum		args[9];

	for (int c = 0; c < 9; c++)
		arrays[c] = initArrayResult(elems[c], batch.cxt, false);
	for (int i = 0; i < nrows; i++)
	{
		FireRow    *r = &rows[i];
		Datum		v[9];
		bool		isnull[9] = {false};

		v[0] = CStringGetTextDatum(r->activation);
		v[1] = r->key ? CStringGetTextDatum(r->key) : (Datum) 0;
		isnull[1] = r->key == NULL;
		v[2] = CStringGetTextDatum(fire_row_payload(r));
		v[3] = r->event_id;
		isnull[3] = r->event_id == (Datum) 0;
		v[4] = TimestampTzGetDatum(r->occurred_at);
		isnull[4] = r->occurred_at == 0;
		v[5] = TimestampTzGetDatum(r->received_at);
		isnull[5] = r->received_at == 0;
		v[6] = CStringGetTextDatum(r->channel);
		v[7] = TimestampTzGetDatum(r->due_at);
		isnull[7] = r->due_at == 0;
		v[8] = BoolGetDatum(fire_row_late(r));
		for (int c = 0; c < 9; c++)
			accumArrayResult(arrays[c], v[c], isnull[c], elems[c], batch.cxt);
	}
	for (int c = 0; c < 9; c++)
		args[c] = makeArrayResult(arrays[c], batch.cxt);
	if (plan_execute(&fire_plan_batch,
					 "INSERT INTO stream.activations AS a (activation, key, payload, event_id,"
					 "   occurred_at, received_at, channel, due_at, late)"
					 " SELECT u.activation, u.key, u.payload::pg_catalog.jsonb, u.event_id,"
					 "   u.occurred_at, u.received_at, u.channel, u.due_at, u.late"
					 " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
					 "   pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
					 "   pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8),"
					 "   pg_catalog.unnest($9))"
					 "   AS u(activation, key, payload, event_id, occurred_at, received_at, channel,"
					 "        due_at, late)"
					 " RETURNING a.id, pg_catalog.row_to_json(a)::pg_catalog.text",
					 9, types, args, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not insert into stream.activations");
	if (SPI_processed != (uint64) nrows)
		elog(ERROR, "stream.activations: " UINT64_FORMAT " rows inserted of %d", SPI_processed, nrows);
	for (int i = 0; i < nrows; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		FireRow    *r = &rows[i];
		bool		isnull;

		r->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		act_notify_row(r->channel, r->id,
					   r->notify_id ? NULL : TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull)),
					   r->notify_id);
		if (r->act)
			r->act->fired++;
	}
	SPI_freetuptable(SPI_tuptable);
	MemoryContextSwitchTo(old);
}

/*
 * Writes the batched firings and sends their NOTIFYs, in commit order.
 * Needs SPI (the statements of the defaults and of outbox_write_spi).
 */
void
act_outbox_flush(void)
{
	if (batch.n == 0)
		return;
	/* ids in commit order: see act_fire_row */
	LockSharedObject(DatabaseRelationId, InvalidOid, 0, AccessExclusiveLock);
	if (!outbox_write_direct(batch.rows, batch.n))
		outbox_write_spi(batch.rows, batch.n);
	act_outbox_discard();
}

/* the batch's next row, its strings and uuid copied into the batch's context */
static FireRow *
outbox_add(const char *key, Datum event_id, TimestampTz occurred_at,
		   TimestampTz received_at)
{
	FireRow    *r;

	if (batch.cxt == NULL)
		batch.cxt = AllocSetContextCreate(TopMemoryContext, "stream_events firings",
										  ALLOCSET_DEFAULT_SIZES);
	r = &batch.rows[batch.n++];
	memset(r, 0, sizeof(FireRow));
	r->key = key ? MemoryContextStrdup(batch.cxt, key) : NULL;
	if (event_id != (Datum) 0)
	{
		pg_uuid_t  *copy = MemoryContextAlloc(batch.cxt, sizeof(pg_uuid_t));

		memcpy(copy, DatumGetUUIDP(event_id), sizeof(pg_uuid_t));
		r->event_id = UUIDPGetDatum(copy);
	}
	r->occurred_at = occurred_at;
	r->received_at = received_at;
	return r;
}

/*
 * Adds a firing without a cooldown to the batch (act_outbox_flush writes
 * it); act's name and channel live as long as the loaded definitions.
 */
void
act_outbox_add(ActRuntime *act, const char *key, const char *payload, Datum event_id,
			   TimestampTz occurred_at, TimestampTz received_at)
{
	FireRow    *r = outbox_add(key, event_id, occurred_at, received_at);

	r->act = act;
	r->activation = act->def.name;
	r->channel = act->channel;
	r->notify_id = act->notify_id;
	r->payload = MemoryContextStrdup(batch.cxt, payload);
	if (batch.n >= FIRE_BATCH)
		act_outbox_flush();
}

/*
 * Adds a due on_absence timer's firing to the batch: its activation's
 * name and channel (copied), its payload as jsonb, its deadline (due_at;
 * late is decided when the row is written).  The activation's fired count
 * is not the timers' (act_fire_due_timers).
 */
void
act_outbox_add_due(const char *activation, const char *channel, bool notify_id,
				   const char *key, Datum payload, Datum event_id,
				   TimestampTz occurred_at, TimestampTz received_at,
				   TimestampTz due_at)
{
	FireRow    *r = outbox_add(key, event_id, occurred_at, received_at);
	MemoryContext old;

	r->activation = MemoryContextStrdup(batch.cxt, activation);
	r->channel = MemoryContextStrdup(batch.cxt, channel);
	r->notify_id = notify_id;
	/* a copy, detoasted: the timer's row and its toasted values are deleted */
	old = MemoryContextSwitchTo(batch.cxt);
	r->payload_jsonb = PointerGetDatum(PG_DETOAST_DATUM_COPY(payload));
	MemoryContextSwitchTo(old);
	r->due_at = due_at;
	if (batch.n >= FIRE_BATCH)
		act_outbox_flush();
}

/* Forgets the prepared statements (the definitions are reloaded). */
void
act_outbox_free_plans(void)
{
	SPIPlanPtr *plans[] = {&fire_plan, &fire_plan_plain, &fire_plan_batch};

	plan_forget(plans, lengthof(plans));
	act_outbox_discard();
}
