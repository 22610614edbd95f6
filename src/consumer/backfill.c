/*-------------------------------------------------------------------------
 * backfill.c
 *	  The backfill of a new (or rebuilt) definition from the events already
 *	  in its stream, in a background process of its own, so that the
 *	  database's worker goes on applying every other definition meanwhile
 *	  (a stream of ten million events takes minutes, and the consistent
 *	  point waits for every transaction in progress).
 *
 *	  In the worker (backfill_poll, backfill_schedule): one backfill process
 *	  at a time per database, started for the first loaded definition that
 *	  has no applied LSN.  A process that ended is looked at: its definition
 *	  is parked when the process said so in its row (an error of its own),
 *	  else it is started again after a pause (killed, an error that
 *	  passes); a finished one shows in the catalog signature, and the worker
 *	  loads it again.  While a backfill runs or waits to be loaded again the
 *	  worker does not confirm its slot (backfill_holds_slot); when the
 *	  worker leaves, the process is stopped.
 *
 *	  In the backfill process (stream_events_backfill_main), as the
 *	  definition's owner exactly as the worker folds: a short-lived slot
 *	  gives a consistent point C and a snapshot that sees exactly the
 *	  transactions that commit before C; the events it sees are folded and
 *	  written (sink->backfill_write, tagged with the private origin), and
 *	  the definition's applied LSN set to C, in that snapshot's transaction.
 *	  The database's slot, confirmed no further than before the backfill
 *	  started, decodes from before C, and its commits at or after C are the
 *	  ones folded from then on.  docs/aggregates.md has the argument.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/tupconvert.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "replication/slot.h"
#include "replication/snapbuild.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "consumer/consumer.h"
#include "consumer/internal.h"
#include "core/definition.h"
#include "core/guc.h"
#include "core/origin.h"
#include "core/owner.h"
#include "stream_events.h"

PGDLLEXPORT void stream_events_backfill_main(Datum main_arg);

/* what the worker hands its backfill process (bgw_extra) */
typedef struct BackfillArgs
{
	Oid			dboid;
	int			sink;			/* index in consumer_sinks: _PG_init registers
								 * them in the same order in every process */
	int32		def_id;
	bool		careful;		/* resumed: failing events become dead letters */
	int			attempt;		/* earlier attempts that ended unfinished */
} BackfillArgs;

/*
 * One backfill process at a time per database: it holds this session lock
 * for its whole life, and the worker tests it to know whether one runs
 * (also one started by an earlier incarnation of the worker, which is
 * being stopped).  An advisory lock tag with a field4 that no SQL function
 * uses (pg_advisory_lock's are 1 and 2), so no session can take it.
 */
#define BACKFILL_LOCK_FIELD4 0x5345

/* a definition that failed is started again after this, times its attempts */
#define RETRY_PAUSE_MS 2000
#define RETRY_MAX_FACTOR 15
/* no background worker slot free: tried again after this, warned once a minute */
#define NO_ROOM_RETRY_MS 1000
#define NO_ROOM_WARNING_MS (60 * 1000)

static void
backfill_locktag(LOCKTAG *tag, Oid dboid)
{
	SET_LOCKTAG_ADVISORY(*tag, dboid, 0, 0, BACKFILL_LOCK_FIELD4);
}

/* ---------- in the worker ---------- */

static BackgroundWorkerHandle *bf_handle = NULL;	/* in TopMemoryContext */
static const ConsumerSink *bf_sink = NULL;	/* what the last process backfilled */
static int32 bf_id = 0;
static int	bf_attempts = 0;	/* of bf_id, ended unfinished */
static bool bf_ended = false;	/* its process ended, not parked */
static TimestampTz bf_retry_at = 0; /* bf_id is not started again before */
static TimestampTz bf_next_try = 0; /* nothing is started before */
static bool bf_waiting = false; /* a loaded definition waits for a backfill */
static TimestampTz bf_no_room_warned = 0;
static bool bf_exit_registered = false;

/* the worker leaves (any way but a crash): its backfill process too */
static void
backfill_stop_at_exit(int code, Datum arg)
{
	if (bf_handle != NULL)
		TerminateBackgroundWorker(bf_handle);
}

/* whether a backfill process runs in this database, ours or an earlier worker's */
static bool
backfill_running(void)
{
	pid_t		pid;
	LOCKTAG		tag;

	if (bf_handle != NULL && GetBackgroundWorkerPid(bf_handle, &pid) != BGWH_STOPPED)
		return true;
	backfill_locktag(&tag, MyDatabaseId);
	if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
		return true;
	LockRelease(&tag, ExclusiveLock, true);
	return false;
}

/*
 * Whether the slot must stay where it is: a backfill process runs (its
 * consistent point is at or after the slot's confirmed point when it
 * started), or a definition is loaded as backfilling (its process may have
 * committed already: the worker decodes its commits from C on only once it
 * has loaded it again, which needs the slot not past C).
 */
bool
backfill_holds_slot(void)
{
	ListCell   *lc;

	foreach(lc, consumer_defs)
	{
		ConsumerDef *def = lfirst(lc);

		if (def->backfill && def->sink->backfill_write)
			return true;
	}
	return bf_handle != NULL || backfill_running();
}

/* whether the worker should make a full round though no WAL was written */
bool
backfill_wants_round(void)
{
	pid_t		pid;

	if (bf_handle != NULL)
		return GetBackgroundWorkerPid(bf_handle, &pid) == BGWH_STOPPED;
	return bf_waiting && GetCurrentTimestamp() >= bf_next_try;
}

/*
 * Looks at the backfill process the worker started, if it ended: its
 * definition is parked when its row says error (the process wrote it,
 * after an error of the definition's own: compiling, folding, writing);
 * otherwise (finished, killed, an error that passes) it may start again
 * after a pause, if the catalog still says it backfills (backfill_schedule,
 * once the definitions are loaded again).  Returns true
 * when the definitions must be loaded again.  In a transaction, SPI
 * connected.
 */
bool
backfill_poll(void)
{
	pid_t		pid;
	ListCell   *lc;
	bool		found = false;
	bool		in_error = false;

	if (bf_handle == NULL || GetBackgroundWorkerPid(bf_handle, &pid) != BGWH_STOPPED)
		return false;
	pfree(bf_handle);
	bf_handle = NULL;
	foreach(lc, bf_sink->states())
	{
		ConsumerDefState *st = lfirst(lc);

		if (st->id == bf_id)
		{
			found = true;
			in_error = st->in_error;
		}
	}
	if (found && in_error)
	{
		/* the process warned, naming the definition and stream.resume */
		park_backfill(bf_sink, bf_id);
		bf_attempts = 0;
		return true;
	}
	/* finished, killed or failed for a while: backfill_schedule tells */
	bf_ended = found;
	return false;
}

/*
 * Starts the backfill process of the first loaded definition that has no
 * applied LSN, unless one runs in this database; a definition whose last
 * process ended unfinished waits for its pause.  Outside a transaction,
 * after the database's slot exists (the backfill's consistent point must
 * be at or after its confirmed point).
 */
void
backfill_schedule(void)
{
	TimestampTz now = GetCurrentTimestamp();
	ConsumerDef *next = NULL;
	ListCell   *lc;
	BackgroundWorker bgw;
	BackfillArgs args;
	MemoryContext old;
	bool		started;

	/*
	 * The process that ended: finished if the definition was loaded again
	 * with its applied LSN, else it starts again after a pause that grows
	 * with the attempts (an error that persists is not retried in a loop).
	 */
	if (bf_ended)
	{
		ConsumerDef *last = def_find(bf_sink, bf_id);

		bf_ended = false;
		if (last != NULL && last->backfill)
		{
			bf_attempts++;
			bf_retry_at = TimestampTzPlusMilliseconds(now, RETRY_PAUSE_MS *
													  Min(bf_attempts, RETRY_MAX_FACTOR));
		}
		else
		{
			bf_attempts = 0;
			bf_retry_at = 0;
		}
	}
	bf_waiting = false;
	bf_next_try = 0;
	foreach(lc, consumer_defs)
	{
		ConsumerDef *def = lfirst(lc);

		if (!def->backfill || def->sink->backfill_write == NULL)
			continue;
		bf_waiting = true;
		if (def->sink == bf_sink && def->id == bf_id && now < bf_retry_at)
		{
			bf_next_try = bf_retry_at;
			continue;
		}
		next = def;
		break;
	}
	/*
	 * A process that ended is looked at first (backfill_poll, next round):
	 * its definition may have to be parked, not started again.
	 */
	if (next == NULL || now < bf_next_try || bf_handle != NULL || backfill_running())
		return;

	if (next->sink != bf_sink || next->id != bf_id)
		bf_attempts = 0;
	memset(&args, 0, sizeof(args));
	args.dboid = MyDatabaseId;
	args.sink = -1;
	for (int s = 0; s < consumer_nsinks; s++)
		if (consumer_sinks[s] == next->sink)
			args.sink = s;
	args.def_id = next->id;
	args.careful = next->careful;
	args.attempt = bf_attempts;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "stream_events");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "stream_events_backfill_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "stream_events backfill %u/%d", MyDatabaseId, next->id);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "stream_events backfill");
	bgw.bgw_main_arg = Int32GetDatum(next->id);
	bgw.bgw_notify_pid = MyProcPid; /* its end sets our latch */
	StaticAssertStmt(sizeof(BackfillArgs) <= BGW_EXTRALEN, "BackfillArgs too large");
	memcpy(bgw.bgw_extra, &args, sizeof(args));

	if (!bf_exit_registered)
	{
		before_shmem_exit(backfill_stop_at_exit, (Datum) 0);
		bf_exit_registered = true;
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	started = RegisterDynamicBackgroundWorker(&bgw, &bf_handle);
	MemoryContextSwitchTo(old);
	if (!started)
	{
		bf_handle = NULL;
		bf_next_try = TimestampTzPlusMilliseconds(now, NO_ROOM_RETRY_MS);
		if (TimestampDifferenceExceeds(bf_no_room_warned, now, NO_ROOM_WARNING_MS))
		{
			ereport(WARNING,
					(errmsg("stream_events cannot start the backfill of %s %s: all %d background worker processes are in use",
							next->sink->what, next->name, max_worker_processes),
					 errdetail("The other definitions go on; the backfill is tried again every second."),
					 errhint("Raise max_worker_processes: stream_events needs one per database, one for its launcher and one while a database backfills.")));
			bf_no_room_warned = now;
		}
		return;
	}
	bf_sink = next->sink;
	bf_id = next->id;
	ereport(LOG,
			(errmsg("stream_events started the backfill of %s %s in a process of its own",
					next->sink->what, next->name)));
}

/* ---------- in the backfill process ---------- */

/* how far the process got, which tells whose an error is */
typedef enum BackfillPhase
{
	BF_LOADING,					/* compiling the definition: its own */
	BF_SLOT,					/* waiting for a consistent point: nobody's */
	BF_READING					/* folding and writing: its own (or an event's) */
} BackfillPhase;

static BackfillPhase bf_phase = BF_LOADING;
static char bf_name[NAMEDATALEN * 2];
static XLogRecPtr bf_lsn = InvalidXLogRecPtr;

/* The backfill's read of the stream, as the definition's owner. */
static Portal
backfill_open(ConsumerDef *def, const char *sql, int nargs, Oid *argtypes, Datum *args)
{
	OwnerScope	scope = {0};
	volatile Portal portal = NULL;

	owner_enter(&scope, def->owner, def->search_path);
	PG_TRY();
	{
		portal = SPI_cursor_open_with_args(NULL, sql, nargs, argtypes, args, NULL, true, 0);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	return portal;
}

static void
backfill_fetch(ConsumerDef *def, Portal portal)
{
	OwnerScope	scope = {0};

	owner_enter(&scope, def->owner, def->search_path);
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
 * The database's slot still exists and is confirmed no further than C:
 * the worker decodes every commit from C on after this backfill.  (It
 * does not move while a backfill runs; a slot dropped by hand and created
 * again would have skipped what was committed in between.)
 */
static void
check_main_slot(XLogRecPtr start)
{
	ReplicationSlot *slot;
	XLogRecPtr	confirmed = InvalidXLogRecPtr;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	slot = SearchNamedReplicationSlot(consumer_slot_name(MyDatabaseId), false);
	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		confirmed = slot->data.confirmed_flush;
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);
	if (slot == NULL || confirmed > start)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("replication slot \"%s\" is missing or past the backfill's consistent point %X/%X",
						consumer_slot_name(MyDatabaseId), LSN_FORMAT_ARGS(start)),
				 errdetail("The backfill starts again once the worker has created the slot.")));
}

/* says in the definition's row that it backfills (tagged as our own) */
static void
note_started(const ConsumerSink *sink, int32 id)
{
	OriginTag	tag = {0};

	origin_tag_begin(&tag);
	PG_TRY();
	{
		sink->backfill_note(id, NULL);
	}
	PG_FINALLY();
	{
		origin_tag_end(&tag);
	}
	PG_END_TRY();
}

/*
 * Compiles the definition (as its owner, sink->load) and says in its row
 * that it backfills; NULL when it is gone or has backfilled already.
 */
static ConsumerDef *
backfill_load(const ConsumerSink *sink, int32 id, bool careful)
{
	ConsumerDef *def = NULL;

	bf_phase = BF_LOADING;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "stream_events: loading a definition to backfill");
	if (OidIsValid(get_extension_oid("stream_events", true)))
	{
		/* the worker created the origin before it started this process */
		(void) se_origin_id(true);
		def = load_definition(sink, id);
		if (def != NULL && !def->backfill)
			def = NULL;
	}
	if (def != NULL)
	{
		strlcpy(bf_name, def->name ? def->name : "?", sizeof(bf_name));
		def->careful = careful;
		note_started(sink, id);
	}
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	return def;
}

/* the backfill proper, in one REPEATABLE READ transaction */
static void
backfill_run(ConsumerDef *def)
{
	XLogRecPtr	start;
	Snapshot	snap;
	TupleConversionMap *map = NULL;
	bool		map_done = false;
	Portal		portal;
	int64		nevents = 0;
	char	   *sql;
	int			nargs = 0;
	Oid			argtypes[1];
	Datum		args[1];
	MemoryContext old;
	StreamFeed *feed = feed_of(def->stream);
	List	   *just = list_make1(def);
	TimestampTz started = GetCurrentTimestamp();

	batch_units = 0;
	reset_dead_letters();
	bf_phase = BF_SLOT;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	/* as SnapBuildExportSnapshot does: there is no nicer API */
	XactIsoLevel = XACT_REPEATABLE_READ;
	if (consumer_uses_queue())
	{
		/*
		 * Queue mode: this transaction's snapshot S sees the last tick T;
		 * the events of S but those of transactions T does not see are
		 * the ones up to T's window, and the definition goes on from the
		 * window after T (queue.c).
		 */
		PushActiveSnapshot(GetTransactionSnapshot());
		SPI_connect();
		start = queue_backfill_start(def->stream, &args[0]);
		argtypes[0] = XIDARRAYOID;
		nargs = 1;
		sql = psprintf("SELECT * FROM %s s WHERE s.xmin OPERATOR(pg_catalog.<>) ALL ($1)",
					   definition_relation_name(def->stream));
	}
	else
	{
		pgstat_report_activity(STATE_RUNNING,
							   psprintf("stream_events: backfill of %s: waiting for a consistent point (transactions in progress end)",
										def->name));
		old = MemoryContextSwitchTo(consumer_cxt);
		bf_ctx = create_slot(psprintf("stream_events_%u_backfill_%d", MyDatabaseId, def->id),
							 false, true);
		MemoryContextSwitchTo(old);
		start = MyReplicationSlot->data.confirmed_flush;
		snap = SnapBuildInitialSnapshot(bf_ctx->snapshot_builder);
		RestoreTransactionSnapshot(snap, MyProc);
		release_decoding();		/* ephemeral: dropped; our xmin holds the rows */
		PushActiveSnapshot(GetTransactionSnapshot());
		SPI_connect();
		sql = psprintf("SELECT * FROM %s", definition_relation_name(def->stream));
	}
	bf_lsn = start;

	bf_phase = BF_READING;
	pgstat_report_activity(STATE_RUNNING,
						   psprintf("stream_events: backfill of %s: reading the stream up to %X/%X",
									def->name, LSN_FORMAT_ARGS(start)));
	current_def = def;
	portal = backfill_open(def, sql, nargs, argtypes, args);
	for (;;)
	{
		TupleTableSlot *slot;

		backfill_fetch(def, portal);
		if (SPI_processed == 0)
			break;
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
			ConsumerEvent ev;

			ExecStoreHeapTuple(SPI_tuptable->vals[i], slot, false);
			ev.row = map ? execute_attr_map_slot(map->attrMap, slot, feed->slot) : slot;
			ev.lsn = bf_lsn;
			ev.commit_time = 0;
			fold_def(def, &ev);
			nevents++;
		}
		ExecDropSingleTupleTableSlot(slot);
		SPI_freetuptable(SPI_tuptable);
		current_def = def;
		if (batch_units >= se_aggregate_batch_groups || consumer_over_memory())
		{
			def->sink->backfill_write(def, false, InvalidXLogRecPtr, 0);
			def->sink->reset(just);
			batch_units = 0;
		}
		/* SIGTERM (die) ends the process here at once */
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	if (!consumer_uses_queue())
		check_main_slot(start);
	def->sink->backfill_write(def, true, start, nevents);
	current_def = NULL;
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	/* the worker loads the definition again and decodes from C on */
	worker_wake_database(MyDatabaseId);
	list_free(just);
	ereport(LOG,
			(errmsg("stream_events backfilled %s %s with " INT64_FORMAT " events in %.1f s; changes from %X/%X on are decoded",
					def->sink->what, def->name, nevents,
					(double) (GetCurrentTimestamp() - started) / USECS_PER_SEC,
					LSN_FORMAT_ARGS(start))));
}

/*
 * Writes the outcome of a failed attempt in the definition's row; false
 * when the definition is gone (dropped during its backfill: that was its
 * error, nobody is told).
 */
typedef struct BackfillOutcome
{
	const ConsumerSink *sink;
	int32		id;
	const char *msg;
	bool		park;
} BackfillOutcome;

static bool
backfill_record_body(void *arg)
{
	BackfillOutcome *o = arg;
	ListCell   *lc;
	bool		exists = false;

	foreach(lc, o->sink->states())
		if (((ConsumerDefState *) lfirst(lc))->id == o->id)
			exists = true;
	if (!exists)
		return false;
	if (o->park)
		o->sink->set_error(o->id, o->msg);
	else
		o->sink->backfill_note(o->id, o->msg);
	return true;
}

static bool
backfill_record(const ConsumerSink *sink, int32 id, const char *msg, bool park)
{
	BackfillOutcome o = {sink, id, msg, park};

	/* after an error writing it down, it is taken to exist */
	return consumer_tagged_transaction(backfill_record_body, &o, true);
}

/*
 * One attempt; returns true to try again at once (an event failed in a
 * definition that skips them: now carefully, the failing events become
 * dead letters, as the worker does).  Other errors end the process: the
 * definition's own ones park it (its row says error, which the worker
 * reads), those that pass or are nobody's (waiting for the consistent
 * point) are noted in its row and the worker starts it again.
 */
static ErrorData *
attempt_caught(const ConsumerSink *sink, int32 id, bool careful)
{
	MemoryContext caller = CurrentMemoryContext;
	ErrorData  *volatile edata = NULL;

	PG_TRY();
	{
		ConsumerDef *def = backfill_load(sink, id, careful);

		if (def != NULL)
			backfill_run(def);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
	}
	PG_END_TRY();
	return edata;
}

static bool
backfill_attempt(const ConsumerSink *sink, int32 id, bool *careful, int attempt)
{
	MemoryContext caller = CurrentMemoryContext;
	ErrorData  *edata = attempt_caught(sink, id, *careful);
	bool		events;
	bool		skips;
	bool		was_careful;
	bool		park;
	char	   *msg;

	if (edata == NULL)
		return false;

	/* what the error was about, before the definition is freed */
	events = bf_phase == BF_READING && current_def != NULL && eval_phase &&
		consumer_error_is_events(edata);
	skips = current_def != NULL && current_def->skip_errors;
	was_careful = current_def != NULL && current_def->careful;
	AbortCurrentTransaction();
	MemoryContextSwitchTo(caller);
	PG_TRY();
	{
		release_decoding();
	}
	PG_CATCH();
	{
		FlushErrorState();
		bf_ctx = NULL;
		if (MyReplicationSlot)
			ReplicationSlotRelease();
	}
	PG_END_TRY();
	failure_forget_blame();
	free_definitions();
	MemoryContextSwitchTo(caller);

	if (events && skips && !was_careful)
	{
		ereport(DEBUG1,
				(errmsg("stream_events: an event failed in the backfill of %s (%s); read again, it is skipped for it",
						bf_name, edata->message)));
		*careful = true;
		FreeErrorData(edata);
		return true;
	}
	msg = describe_error(edata, edata->message ? edata->message : "unknown error");
	park = bf_phase != BF_SLOT && !error_is_transient(edata);
	if (!backfill_record(sink, id, msg, park))
		ereport(LOG,
				(errmsg("stream_events: %s %s was dropped during its backfill (%s)",
						sink->what, bf_name[0] ? bf_name : "?", msg)));
	else if (park)
		ereport(WARNING,
				(errmsg("stream_events parked %s %s after an error in its backfill: %s",
						sink->what, bf_name[0] ? bf_name : "?", msg),
				 edata->detail ? errdetail("%s", edata->detail) : 0,
				 errhint("The other definitions go on. Fix the cause, then SELECT stream.resume(name): it backfills again.")));
	else
	{
		/* tried again by the worker, after a pause growing with attempts */
		ereport(attempt == 0 ? WARNING : LOG,
				(errmsg("stream_events could not backfill %s %s: %s",
						sink->what, bf_name[0] ? bf_name : "?", msg),
				 edata->detail ? errdetail("%s", edata->detail) : 0,
				 errhint("It is tried again in a few seconds; the other definitions go on.")));
	}
	FreeErrorData(edata);
	return false;
}

/*
 * The backfill process: connects to the database as the worker does
 * (bootstrap superuser; everything the definition evaluates runs as its
 * owner), waits for the database's backfill lock, and backfills one
 * definition.  SIGTERM ends it at once (die: also while it waits for the
 * lock, for WAL or for a consistent point); nothing is written then, and
 * the worker starts it again.
 */
void
stream_events_backfill_main(Datum main_arg)
{
	BackfillArgs args;
	LOCKTAG		tag;
	bool		careful;

	memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(args.dboid, InvalidOid, 0);
	pgstat_report_appname("stream_events backfill");
	consumer_init();
	if (args.sink < 0 || args.sink >= consumer_nsinks ||
		consumer_sinks[args.sink]->backfill_write == NULL ||
		consumer_sinks[args.sink]->backfill_note == NULL)
		proc_exit(0);

	pgstat_report_activity(STATE_RUNNING, "stream_events: waiting for the database's other backfill to end");
	backfill_locktag(&tag, MyDatabaseId);
	(void) LockAcquire(&tag, ExclusiveLock, true, false);

	careful = args.careful;
	while (backfill_attempt(consumer_sinks[args.sink], args.def_id, &careful, args.attempt))
		;
	proc_exit(0);
}
