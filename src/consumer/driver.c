/*-------------------------------------------------------------------------
 * driver.c
 *	  The consumer's driver, run by each database's worker (worker.c calls
 *	  consumer_round() every loop): loads the definitions of every sink
 *	  (sink.h: continuous aggregates, batched activations), has new ones
 *	  backfilled in a process of their own (backfill.c), decodes what was
 *	  flushed through the database's logical slot (slot.c, plugin.c),
 *	  applies what the sinks folded in one transaction with each
 *	  definition's applied LSN, and lets the slot forget what every
 *	  definition has applied.  Errors go through the
 *	  failure boundary (failure.c): one definition is parked or skips an
 *	  event; the others go on.  docs/aggregates.md has the exactly-once
 *	  argument.
 *
 * Memory: definitions live in defs_cxt (rebuilt when the catalog changes);
 * what sinks fold lives in their own batch memory, reset after every
 * apply; a batch is applied at a commit boundary once it holds
 * stream_events.aggregate_batch_groups units or is a second old.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "access/relation.h"
#include "catalog/namespace.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "replication/slot.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "consumer/consumer.h"
#include "consumer/internal.h"
#include "core/guc.h"
#include "core/origin.h"
#include "core/plans.h"
#include "stream_events.h"

/* an idle worker still makes a full round this often */
#define IDLE_ROUND_MS 5000

const ConsumerSink *consumer_sinks[MAX_SINKS];
int			consumer_nsinks = 0;
MemoryContext consumer_cxt = NULL;
MemoryContext defs_cxt = NULL;
static MemoryContext batch_cxt = NULL;
int64		spills = 0;
List	   *consumer_defs = NIL;
List	   *consumer_feeds = NIL;
int64		batch_units = 0;
TimestampTz batch_started = 0;
bool		consumer_catalog_has_failures = false;

static char *defs_signature = NULL;
static bool have_definitions = false;
static TimestampTz next_attempt = 0;
TimestampTz last_idle_write = 0;
static XLogRecPtr last_round_insert = InvalidXLogRecPtr;
static TimestampTz last_full_round = 0;
static int	loaded_queue = -1;	/* the mode the definitions were loaded in */
static uint64 seen_generation = 0;	/* worker_definitions_generation() read */
static TimestampTz last_catalog_check = 0;

void
consumer_register_sink(const ConsumerSink *sink)
{
	if (consumer_nsinks >= MAX_SINKS)
		elog(ERROR, "too many consumer sinks");
	consumer_sinks[consumer_nsinks++] = sink;
}

char *
consumer_slot_name(Oid dboid)
{
	return psprintf("stream_events_%u", dboid);
}

MemoryContext
consumer_defs_context(void)
{
	return defs_cxt;
}

MemoryContext
consumer_batch_context(void)
{
	if (batch_cxt == NULL)
		batch_cxt = AllocSetContextCreate(TopMemoryContext, "stream_events batches",
										  ALLOCSET_DEFAULT_SIZES);
	return batch_cxt;
}

/*
 * What the sinks hold passed stream_events.consumer_memory: they spill it
 * to temporary files (applied with the rest, in the same apply
 * transaction, so exactly once holds as before).  Checked after every
 * decoded event: MemoryContextMemAllocated only adds up a few contexts.
 */
bool
consumer_over_memory(void)
{
	return batch_cxt != NULL &&
		MemoryContextMemAllocated(batch_cxt, true) > (Size) se_consumer_memory_kb * 1024;
}

void
consumer_check_memory(void)
{
	if (!consumer_over_memory())
		return;
	for (int s = 0; s < consumer_nsinks; s++)
	{
		List	   *defs;

		if (consumer_sinks[s]->spill == NULL)
			continue;
		defs = defs_of(consumer_sinks[s]);
		consumer_sinks[s]->spill(defs);
		list_free(defs);
	}
	dead_letters_spill();
	spills++;
	elog(DEBUG1, "stream_events spilled the batches of a large transaction (%lld)",
		 (long long) spills);
}

/* ---------- definitions ---------- */

ConsumerDef *
def_find(const ConsumerSink *sink, int32 id)
{
	ListCell   *lc;

	foreach(lc, consumer_defs)
	{
		ConsumerDef *def = lfirst(lc);

		if (def->sink == sink && def->id == id)
			return def;
	}
	return NULL;
}

/* the definitions of one sink among defs, in a list of the caller's */
List *
defs_of_in(List *defs, const ConsumerSink *sink)
{
	List	   *l = NIL;
	ListCell   *lc;

	foreach(lc, defs)
		if (((ConsumerDef *) lfirst(lc))->sink == sink)
			l = lappend(l, lfirst(lc));
	return l;
}

List *
defs_of(const ConsumerSink *sink)
{
	return defs_of_in(consumer_defs, sink);
}

/*
 * A sink's states(): the rows of sql, (id int4, in_error bool), as
 * ConsumerDefState; SPI connected.
 */
List *
consumer_read_states(const char *sql)
{
	List	   *states = NIL;

	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the definitions' status");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		ConsumerDefState *st = palloc(sizeof(ConsumerDefState));
		bool		isnull;

		st->id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		st->in_error = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
		states = lappend(states, st);
	}
	return states;
}

StreamFeed *
feed_of(Oid stream)
{
	ListCell   *lc;

	foreach(lc, consumer_feeds)
		if (((StreamFeed *) lfirst(lc))->stream == stream)
			return lfirst(lc);
	return NULL;
}

/* the feed of a stream, made on first use; in a transaction, in defs_cxt */
static StreamFeed *
feed_for(Oid stream)
{
	StreamFeed *feed = feed_of(stream);
	Relation	rel;

	if (feed)
		return feed;
	rel = relation_open(stream, AccessShareLock);
	feed = palloc0(sizeof(StreamFeed));
	feed->stream = stream;
	feed->desc = CreateTupleDescCopy(RelationGetDescr(rel));
	feed->slot = MakeSingleTupleTableSlot(feed->desc, &TTSOpsVirtual);
	relation_close(rel, AccessShareLock);
	consumer_feeds = lappend(consumer_feeds, feed);
	return feed;
}

void
free_definitions(void)
{
	last_round_insert = InvalidXLogRecPtr;
	for (int s = 0; s < consumer_nsinks; s++)
		consumer_sinks[s]->free();
	consumer_defs = NIL;
	consumer_feeds = NIL;
	if (defs_cxt)
		MemoryContextReset(defs_cxt);
	part_cache_reset();
	defs_signature = NULL;
	have_definitions = false;
	batch_units = 0;
}

/* a compiled definition joins the driver's lists; in defs_cxt */
static void
def_register(const ConsumerSink *sink, ConsumerDef *def)
{
	def->sink = sink;
	def->skip_errors = def->skip_errors && consumer_catalog_has_failures;
	def->careful = careful_is(sink, def->id);
	consumer_defs = lappend(consumer_defs, def);
	if (OidIsValid(def->stream))
		feed_for(def->stream)->defs = lappend(feed_for(def->stream)->defs, def);
}

/*
 * Reads every sink's catalog and compiles its definitions but the parked
 * ones; in a transaction with SPI.
 */
static void
load_definitions(const char *signature)
{
	MemoryContext old;
	ListCell   *lc;

	free_definitions();
	consumer_catalog_has_failures =
		OidIsValid(get_relname_relid("dead_letters", get_namespace_oid("stream", false)));
	for (int s = 0; s < consumer_nsinks; s++)
	{
		const ConsumerSink *sink = consumer_sinks[s];
		List	   *states = sink->states();
		List	   *skip = NIL;
		List	   *defs;

		/* parked definitions stay so while their row says error */
		foreach(lc, states)
		{
			ConsumerDefState *st = lfirst(lc);

			if (def_is_parked(sink, st->id, st->in_error))
				skip = lappend_int(skip, st->id);
		}
		parked_prune(sink, states);
		old = MemoryContextSwitchTo(defs_cxt);
		defs = sink->load(skip);
		foreach(lc, defs)
			def_register(sink, lfirst(lc));
		MemoryContextSwitchTo(old);
	}
	for (int s = 0; s < consumer_nsinks; s++)
		if (consumer_sinks[s]->loaded)
			consumer_sinks[s]->loaded();
	old = MemoryContextSwitchTo(consumer_cxt);
	defs_signature = pstrdup(signature);
	MemoryContextSwitchTo(old);
	have_definitions = (consumer_defs != NIL);
}

/*
 * Compiles one definition of one sink, as the only one loaded (the
 * backfill process, backfill.c); NULL when it is gone.  In a transaction
 * with SPI.
 */
ConsumerDef *
load_definition(const ConsumerSink *sink, int32 id)
{
	List	   *skip = NIL;
	List	   *defs;
	ListCell   *lc;
	MemoryContext old;
	ConsumerDef *found = NULL;

	free_definitions();
	consumer_catalog_has_failures =
		OidIsValid(get_relname_relid("dead_letters", get_namespace_oid("stream", false)));
	foreach(lc, sink->states())
	{
		ConsumerDefState *st = lfirst(lc);

		if (st->id != id)
			skip = lappend_int(skip, st->id);
	}
	old = MemoryContextSwitchTo(defs_cxt);
	defs = sink->load(skip);
	foreach(lc, defs)
	{
		ConsumerDef *def = lfirst(lc);

		if (def->id != id)
			continue;
		def_register(sink, def);
		found = def;
	}
	MemoryContextSwitchTo(old);
	have_definitions = (found != NULL);
	return found;
}

/* ---------- timers ---------- */

/* whether a sink's timer falls due by horizon (or its next one is not known) */
bool
consumer_timers_due(TimestampTz horizon)
{
	for (int s = 0; s < consumer_nsinks; s++)
		if (consumer_sinks[s]->timers_due && consumer_sinks[s]->timers_due(horizon))
			return true;
	return false;
}

static void
consumer_timers(TimestampTz horizon)
{
	for (int s = 0; s < consumer_nsinks; s++)
		if (consumer_sinks[s]->fire_timers && consumer_sinks[s]->timers_due(horizon))
			consumer_sinks[s]->fire_timers(horizon);
}

/* ---------- the round ---------- */

static char *
read_signature(bool *installed)
{
	static SPIPlanPtr plan = NULL;
	static char *sql = NULL;
	char	   *sig = NULL;

	*installed = OidIsValid(get_extension_oid("stream_events", true));
	if (!*installed)
		return NULL;
	if (sql == NULL)
	{
		StringInfoData buf;

		initStringInfo(&buf);
		appendStringInfoString(&buf, "SELECT nullif(concat_ws('|'");
		for (int s = 0; s < consumer_nsinks; s++)
			appendStringInfo(&buf, ", (%s)", consumer_sinks[s]->signature_sql);
		appendStringInfoString(&buf, "), '')");
		sql = MemoryContextStrdup(TopMemoryContext, buf.data);
		pfree(buf.data);
	}
	SPI_connect();
	/* every round: prepared once (planning it was most of a round's cost) */
	if (plan_execute(&plan, sql, 0, NULL, NULL, NULL, true, 0) == SPI_OK_SELECT &&
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

/* the definitions must go (no extension, no definition left) */
static void
drop_everything(void)
{
	if (have_definitions || consumer_defs != NIL)
		free_definitions();
	drop_main_slot("no continuous aggregate left");
}

static void
round_body(bool *installed)
{
	char	   *sig;
	ListCell   *lc;
	XLogRecPtr	upto;
	XLogRecPtr	round_insert = GetXLogInsertRecPtr();
	uint64		generation;

	/*
	 * The catalogs are looked at again (signature, a backfill's end, dead
	 * letters to retry) when definitions' DDL committed since, a backfill
	 * wants it, or a second passed (changes nobody signals: DROP VIEW of an
	 * aggregate, rows restored by pg_restore).  Otherwise a round goes
	 * straight to reading what was committed: a round woken by every
	 * producer's commit must be short.
	 */
	generation = worker_definitions_generation();
	if (defs_signature != NULL && generation == seen_generation &&
		loaded_queue == (int) consumer_uses_queue() && !backfill_wants_round() &&
		!TimestampDifferenceExceeds(last_catalog_check, GetCurrentTimestamp(), 1000))
		goto read;
	last_catalog_check = GetCurrentTimestamp();
	seen_generation = generation;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	sig = read_signature(installed);
	if (sig == NULL)
	{
		/* no definition (or no extension): no slot */
		PopActiveSnapshot();
		CommitTransactionCommand();
		drop_everything();
		if (*installed && consumer_uses_queue())
			queue_release_idle();
		return;
	}
	/*
	 * A backfill process that ended: parked if it says so (a reload).  Its
	 * commit may postdate the signature just read: the next round reads it
	 * again.
	 */
	SPI_connect();
	if (backfill_wants_round())
		last_catalog_check = 0;
	if (backfill_poll())
		defs_signature = NULL;
	SPI_finish();
	if (loaded_queue != (int) consumer_uses_queue())
		defs_signature = NULL;
	if (defs_signature == NULL || strcmp(sig, defs_signature) != 0)
	{
		release_decoding();
		/* rows restored from a dump of another database: adopted first */
		for (int s = 0; s < consumer_nsinks; s++)
		{
			if (consumer_sinks[s]->adopt && consumer_sinks[s]->adopt())
			{
				PopActiveSnapshot();
				CommitTransactionCommand();
				if (have_definitions || consumer_defs != NIL)
					free_definitions();
				return;
			}
		}
		/* the private origin exists before anything is tagged with it */
		(void) se_origin_id(true);
		SPI_connect();
		/* positions of the other mode: rebuilt or restarted (queue.c) */
		if (queue_adopt_mode())
		{
			SPI_finish();
			PopActiveSnapshot();
			CommitTransactionCommand();
			if (have_definitions || consumer_defs != NIL)
				free_definitions();
			return;
		}
		load_definitions(sig);
		loaded_queue = (int) consumer_uses_queue();
		SPI_finish();
	}
	/* dead letters stream.retry_dead_letters asked for (a partial index) */
	if (consumer_catalog_has_failures)
	{
		static SPIPlanPtr retry_plan = NULL;

		SPI_connect();
		retry_pending =
			plan_execute(&retry_plan, "SELECT 1 FROM stream.dead_letters WHERE retry_requested LIMIT 1",
						 0, NULL, NULL, NULL, true, 0) == SPI_OK_SELECT && SPI_processed > 0;
		SPI_finish();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();

read:

	/*
	 * Queue mode needs no slot (and must not keep one holding WAL); in
	 * logical mode, the slot went missing under running definitions.
	 */
	if (consumer_uses_queue())
		drop_main_slot("the consumer reads the ingest queue (stream_events.consumer)");
	else if (ensure_main_slot())
	{
		foreach(lc, consumer_defs)
		{
			ConsumerDef *def = lfirst(lc);

			if (!def->backfill && def->sink->slot_lost)
				def->sink->slot_lost(def);
		}
		free_definitions();
		/* go on at once (next round), not after a naptime */
		next_attempt = GetCurrentTimestamp();
		return;
	}

	/*
	 * New definitions backfill in a process of their own, one at a time;
	 * this worker goes on with the others meanwhile.
	 */
	backfill_schedule();
	if (consumer_defs == NIL)
		return;

	do
	{
		if (consumer_uses_queue())
		{
			queue_read_available();
			upto = queue_read_upto;
		}
		else
		{
			decode_available();
			upto = dctx->reader->EndRecPtr;
		}
		apply_batches(upto, flush_seen ||
					  TimestampDifferenceExceeds(last_idle_write, GetCurrentTimestamp(), 10000));
	} while (stop_after_commit && !ShutdownRequestPending);

	/*
	 * Absence timers fire once everything committed before their deadline
	 * has been decoded and applied, so that a cancelling event that arrived
	 * in time is never missed.
	 */
	if (decoded_to_end && !stop_after_commit)
		consumer_timers(decode_horizon);
	if (retry_pending && decoded_to_end && !stop_after_commit)
		retry_dead_letters();
	failure_round_ok();

	/*
	 * Everything flushed up to decoded_end is decoded and applied: the
	 * status views' lag.  The next round may be skipped while no WAL is
	 * written after round_insert (consumer_round).
	 */
	if (decoded_to_end && !stop_after_commit)
	{
		worker_note_consumer_position(decoded_end);
		last_round_insert = round_insert;
		last_full_round = GetCurrentTimestamp();
	}
}

/* the consumer's memory, once per process (the worker, a backfill process) */
void
consumer_init(void)
{
	if (consumer_cxt != NULL)
		return;
	consumer_cxt = AllocSetContextCreate(TopMemoryContext, "stream_events consumer",
										 ALLOCSET_DEFAULT_SIZES);
	defs_cxt = AllocSetContextCreate(consumer_cxt, "stream_events definitions",
									 ALLOCSET_DEFAULT_SIZES);
	part_cache_register();
}

/*
 * One round of the consumer: (re)load definitions, start the backfill of
 * new aggregates, decode what was flushed and apply it.  Returns true while
 * there are definitions (the worker then polls every
 * stream_events.aggregate_poll_interval).  Errors are reported as a
 * WARNING and in the status views, and everything held in memory is
 * dropped: the next round decodes again from the slot, which never passes
 * what was applied.
 */
bool
consumer_round(bool *installed)
{
	MemoryContext caller = CurrentMemoryContext;

	*installed = true;
	consumer_init();
	if (next_attempt != 0 && GetCurrentTimestamp() < next_attempt)
		return true;
	next_attempt = 0;

	/*
	 * Nothing written since the last round started (the WAL insert position
	 * has not moved: no event, no definition changed, no flush, resume or
	 * retry asked), no timer due: no round, so no transaction every poll
	 * interval.  A full round at least every IDLE_ROUND_MS all the same.
	 */
	if (have_definitions && !retry_pending && !XLogRecPtrIsInvalid(last_round_insert) &&
		GetXLogInsertRecPtr() == last_round_insert && !backfill_wants_round() &&
		!worker_tick_requested() && loaded_queue == (int) consumer_uses_queue() &&
		!TimestampDifferenceExceeds(last_full_round, GetCurrentTimestamp(), IDLE_ROUND_MS) &&
		!consumer_timers_due(GetCurrentTimestamp()))
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
		bool		at_once;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		fold_scope_forget();
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
		/* parks or makes careful the definition to blame (before free) */
		round_failed(edata, &at_once);
		free_definitions();
		reset_dead_letters();
		failure_record(edata);
		FreeErrorData(edata);
		failure_forget_blame();
		last_round_insert = InvalidXLogRecPtr;
		/* a poison event: again at once, carefully; other errors: in 2 s */
		next_attempt = at_once ? GetCurrentTimestamp() :
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
consumer_extension_dropped(void)
{
	PG_TRY();
	{
		if (defs_cxt)
			free_definitions();
		drop_main_slot("no continuous aggregate left");
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
}

void
consumer_shutdown(void)
{
	if (consumer_cxt == NULL)
		return;
	release_decoding();
}
