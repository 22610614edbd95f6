/*-------------------------------------------------------------------------
 * worker.c
 *	  One database's background worker (started by launcher.c, in the slot
 *	  the launcher gave it): its main loop of maintenance and the
 *	  continuous-aggregate and activation consumer, the wakeups that reach
 *	  it (stream.flush, aggregate DDL, producers' commits) and the position
 *	  it reports (stream._consumer_position).
 *
 * The worker's loop runs maintenance every naptime, in a transaction of
 * its own with a short lock_timeout, in a memory context reset every loop:
 * stream.maintain(stream) (partitions ahead, adoption of default-partition
 * rows, retention) for each stream as that stream's owner, in a
 * subtransaction per stream (one stream's failure is a WARNING naming it,
 * the others are maintained; dedup keys are pruned there too, through
 * stream._priv, when due: see worker_maintain), then the outbox's retention
 * as itself (fixed SQL on the extension's private tables).  It reacts to SIGTERM, SIGHUP and
 * postmaster death.
 * Every loop it also runs the continuous-aggregate consumer (src/consumer/),
 * and while there are aggregates it loops every
 * stream_events.aggregate_poll_interval (more slowly once nothing has been
 * written for a while: idle_poll_timeout); its latch is set by
 * stream.flush(), by aggregate DDL (worker_wake_database()) and by
 * producers' commits when the worker asks for them.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xlog.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/spin.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "aggregate/aggregate.h"
#include "capture/capture.h"
#include "consumer/consumer.h"
#include "core/guc.h"
#include "core/owner.h"
#include "stream_events.h"
#include "worker/worker.h"

PG_FUNCTION_INFO_V1(stream_consumer_position);

PGDLLEXPORT void stream_events_worker_main(Datum main_arg);

/* this worker's slot (NULL in other processes) */
static WorkerSlot *my_slot = NULL;

/* ---------- wakeups ---------- */

/* Sets the latch of a database's worker, if it runs. */
void
worker_wake_database(Oid dboid)
{
	pid_t		pids[4];
	int			n = 0;

	if (worker_shared == NULL)
		return;
	SpinLockAcquire(&worker_shared->mutex);
	for (int i = 0; i < NSLOTS && n < lengthof(pids); i++)
		if (worker_shared->slots[i].dboid == dboid &&
			worker_shared->slots[i].state == SLOT_RUNNING &&
			worker_shared->slots[i].pid != 0)
			pids[n++] = worker_shared->slots[i].pid;
	SpinLockRelease(&worker_shared->mutex);
	for (int i = 0; i < n; i++)
	{
		PGPROC	   *proc = BackendPidGetProc(pids[i]);

		if (proc)
			SetLatch(&proc->procLatch);
	}
}

/*
 * Whether producers should wake the worker when they commit events: while
 * it runs activations (whose latency is the time to its next round), and
 * while it polls slowly because nothing was written for a while (see
 * idle_poll_timeout).
 */
static bool wake_for_activations = false;
static bool wake_while_idle = false;

static void
publish_consumer_wake(void)
{
	bool		on = wake_for_activations || wake_while_idle;

	if (my_slot != NULL && my_slot->consumer_wake != on)
	{
		SpinLockAcquire(&worker_shared->mutex);
		my_slot->consumer_wake = on;
		SpinLockRelease(&worker_shared->mutex);
	}
}

void
worker_set_consumer_wake(bool on)
{
	wake_for_activations = on;
	publish_consumer_wake();
}

/*
 * At the commit of a transaction that stored events: sets the latch of this
 * database's worker if it asked for it.  No lock: the slot's fields are read
 * as they are; a stale read costs a spurious wakeup, or a wakeup missed
 * until the worker's next poll (stream_events.aggregate_poll_interval).
 */
void
worker_wake_consumer_at_commit(void)
{
	static int	cached = -1;
	volatile WorkerSlot *slot;

	if (worker_shared == NULL)
		return;
	if (cached < 0 || worker_shared->slots[cached].dboid != MyDatabaseId)
	{
		cached = -1;
		for (int i = 0; i < NSLOTS; i++)
			if (worker_shared->slots[i].dboid == MyDatabaseId)
			{
				cached = i;
				break;
			}
		if (cached < 0)
			return;
	}
	slot = &worker_shared->slots[cached];
	if (slot->consumer_wake && slot->state == SLOT_RUNNING &&
		slot->procno >= 0 && slot->procno < (int) ProcGlobal->allProcCount)
		SetLatch(&ProcGlobal->allProcs[slot->procno].procLatch);
}

/* ---------- per-database worker ---------- */

/* set when the worker leaves because its database has no extension */
static bool extension_gone = false;

static void
worker_on_exit(int code, Datum arg)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&worker_shared->mutex);
	my_slot->pid = 0;
	my_slot->state = SLOT_STOPPED;
	/* any other exit (error, pg_terminate_backend) is restarted */
	my_slot->exit_clean = extension_gone;
	SpinLockRelease(&worker_shared->mutex);
}

static void
worker_set_error(const char *message)
{
	SpinLockAcquire(&worker_shared->mutex);
	strlcpy(my_slot->last_error, message ? message : "", SE_ERROR_LEN);
	SpinLockRelease(&worker_shared->mutex);
}

/*
 * Runs sql (with up to one argument) in a subtransaction, as the owner of
 * relation as_owner_of when valid (an owner scope: the stream owner's
 * triggers, index expressions and functions never run with the worker's
 * superuser rights).  A failure (the relation dropped meanwhile included)
 * is a WARNING naming `what`, and the worker carries on; returns false
 * then, with the message in the worker's status.
 */
static bool
worker_run_isolated(const char *what, Oid as_owner_of, const char *sql,
					Oid argtype, Datum arg)
{
	MemoryContext ctx = CurrentMemoryContext;
	ResourceOwner resowner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		OwnerScope	scope;

		if (OidIsValid(as_owner_of))
			owner_enter(&scope, owner_of_relation(as_owner_of), NULL);
		if (SPI_execute_with_args(sql, OidIsValid(argtype) ? 1 : 0, &argtype, &arg,
								  NULL, false, 0) < 0)
			elog(ERROR, "could not run %s", sql);
		if (OidIsValid(as_owner_of))
			owner_exit(&scope);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(ctx);
		CurrentResourceOwner = resowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* the subtransaction's abort restores the user id and GUCs */
		MemoryContextSwitchTo(ctx);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(ctx);
		CurrentResourceOwner = resowner;
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("stream_events maintenance of %s failed: %s", what, edata->message),
				 edata->detail ? errdetail("%s", edata->detail) : 0,
				 edata->hint ? errhint("%s", edata->hint) : 0));
		worker_set_error(psprintf("%s: %s", what, edata->message));
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * One maintenance run: each stream as its owner, in a subtransaction of
 * its own, so that one stream's failure (a lock it cannot get within
 * lock_timeout, an owner's trigger that fails, a partition it may not
 * create) names that stream and leaves the others maintained.  The
 * outbox is pruned as the worker itself: fixed SQL on the extension's
 * private tables, no user code.
 *
 * Dedup keys: pruning a stream's keys walks all of them (through the
 * primary key's stream_id prefix: there is no index on seen_at, which
 * would cost every ingested event one more index insertion), so it is
 * done only when it can find something and not more often than needed:
 * never while the stream is younger than its dedup_window (no key can
 * have expired yet), and per stream at most once per hundredth of its
 * window (at least a minute apart; prune says the minute has passed).
 * Keys thus live at least dedup_window and at most 1% (or a minute, plus
 * a naptime) longer; a longer life only drops more late retries.
 */
typedef struct KeyPruneEntry
{
	Oid			relid;			/* hash key: the stream */
	TimestampTz last;			/* its keys' last successful prune */
} KeyPruneEntry;

static HTAB *key_prunes = NULL;

static void
worker_maintain(bool prune)
{
	MemoryContext ctx = CurrentMemoryContext;
	int			nstreams;
	Oid		   *relids;
	char	  **names;
	bool	   *prunable;
	int64	   *prune_every;	/* microseconds */
	bool		all_ok = true;
	TimestampTz now = GetCurrentTimestamp();

	if (key_prunes == NULL)
	{
		HASHCTL		hctl;

		hctl.keysize = sizeof(Oid);
		hctl.entrysize = sizeof(KeyPruneEntry);
		hctl.hcxt = TopMemoryContext;
		key_prunes = hash_create("stream_events key prunes", 16, &hctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}

	SPI_connect();
	/* for the whole transaction, so also inside the owner scopes */
	SPI_execute("SET LOCAL lock_timeout = '2s'", false, 0);
	if (SPI_execute("SELECT relid::pg_catalog.oid, relid::pg_catalog.text, "
					"dedup_window IS NOT NULL AND created_at <= pg_catalog.now() - dedup_window, "
					"(pg_catalog.date_part('epoch', dedup_window) * '10000'::pg_catalog.float8)::pg_catalog.int8 "
					"FROM stream.streams ORDER BY stream_id", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list the streams");
	nstreams = (int) SPI_processed;
	relids = MemoryContextAlloc(ctx, sizeof(Oid) * Max(nstreams, 1));
	names = MemoryContextAlloc(ctx, sizeof(char *) * Max(nstreams, 1));
	prunable = MemoryContextAlloc(ctx, sizeof(bool) * Max(nstreams, 1));
	prune_every = MemoryContextAlloc(ctx, sizeof(int64) * Max(nstreams, 1));
	for (int i = 0; i < nstreams; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;

		relids[i] = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		names[i] = MemoryContextStrdup(ctx, SPI_getvalue(tup, desc, 2));
		d = SPI_getbinval(tup, desc, 3, &isnull);
		prunable[i] = !isnull && DatumGetBool(d);
		d = SPI_getbinval(tup, desc, 4, &isnull);
		/* a hundredth of the window, in microseconds; at least a minute */
		prune_every[i] = Max(isnull ? 0 : DatumGetInt64(d), 60 * USECS_PER_SEC);
	}
	SPI_freetuptable(SPI_tuptable);

	/* forget the streams dropped since (the table stays small) */
	{
		HASH_SEQ_STATUS status;
		KeyPruneEntry *entry;

		hash_seq_init(&status, key_prunes);
		while ((entry = hash_seq_search(&status)) != NULL)
		{
			bool		listed = false;

			for (int i = 0; i < nstreams && !listed; i++)
				listed = relids[i] == entry->relid;
			if (!listed)
				hash_search(key_prunes, &entry->relid, HASH_REMOVE, NULL);
		}
	}

	for (int i = 0; i < nstreams; i++)
	{
		char	   *what = psprintf("stream %s", names[i]);
		KeyPruneEntry *entry;
		bool		found;
		bool		prune_keys;

		CHECK_FOR_INTERRUPTS();
		/* dropped since it was listed: nothing to maintain */
		if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relids[i])))
			continue;
		/* dedup keys past the stream's window, when due (see above) */
		entry = hash_search(key_prunes, &relids[i], HASH_FIND, &found);
		prune_keys = prune && prunable[i] &&
			(!found || now - entry->last >= prune_every[i]);
		if (!worker_run_isolated(what, relids[i],
								 prune_keys ? "SELECT count(*) FROM stream.maintain($1, true)"
								 : "SELECT count(*) FROM stream.maintain($1, false)",
								 REGCLASSOID, ObjectIdGetDatum(relids[i])))
			all_ok = false;
		else if (prune_keys)
		{
			entry = hash_search(key_prunes, &relids[i], HASH_ENTER, &found);
			entry->last = now;
		}
	}
	/* acknowledged activations past stream_events.activation_retention */
	if (prune &&
		!worker_run_isolated("the outbox", InvalidOid,
							 "SELECT stream.prune_activations()", InvalidOid, (Datum) 0))
		all_ok = false;
	SPI_finish();
	if (all_ok)
		worker_set_error(NULL);
}

/* ---------- idle back-off ---------- */

/*
 * While definitions exist the worker polls every
 * stream_events.aggregate_poll_interval for WAL to read.  Once nothing at
 * all has been written for IDLE_AFTER_MS (the WAL insert position has not
 * moved), it polls every IDLE_POLL_MS instead and asks producers to wake it
 * when they commit events, so an idle database costs few wakeups and the
 * first event after a quiet spell is not delayed.  Changes no producer
 * announces (captured tables, DDL) are seen at the next slow poll, and an
 * absence timer falling due sooner keeps the normal interval.
 */
#define IDLE_AFTER_MS 1000
#define IDLE_POLL_MS 200

static XLogRecPtr idle_insert_lsn = InvalidXLogRecPtr;
static TimestampTz idle_since = 0;

static long
idle_poll_timeout(TimestampTz now)
{
	XLogRecPtr	insert;

	if (RecoveryInProgress() || se_aggregate_poll_ms >= IDLE_POLL_MS)
		return se_aggregate_poll_ms;
	insert = GetXLogInsertRecPtr();
	if (insert != idle_insert_lsn)
	{
		idle_insert_lsn = insert;
		idle_since = now;
	}
	else if (TimestampDifferenceExceeds(idle_since, now, IDLE_AFTER_MS) &&
			 !consumer_timers_due(TimestampTzPlusMilliseconds(now, IDLE_POLL_MS)))
	{
		/*
		 * The flag first, then the position again: a producer that read
		 * the flag unset had inserted its commit record before, so the
		 * position has moved and the worker keeps polling fast.
		 */
		wake_while_idle = true;
		publish_consumer_wake();
		if (GetXLogInsertRecPtr() == idle_insert_lsn)
			return IDLE_POLL_MS;
	}
	if (wake_while_idle)
	{
		wake_while_idle = false;
		publish_consumer_wake();
	}
	return se_aggregate_poll_ms;
}

void
stream_events_worker_main(Datum main_arg)
{
	int			slot_index = DatumGetInt32(main_arg);
	MemoryContext loop_context;
	TimestampTz last_prune = 0;
	TimestampTz next_maintain = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	my_slot = &worker_shared->slots[slot_index];
	SpinLockAcquire(&worker_shared->mutex);
	my_slot->pid = MyProcPid;
	my_slot->procno = MyProc->pgprocno;
	my_slot->consumer_wake = false;
	my_slot->state = SLOT_RUNNING;
	my_slot->decoded_lsn = InvalidXLogRecPtr;
	my_slot->started_at = GetCurrentTimestamp();
	SpinLockRelease(&worker_shared->mutex);
	before_shmem_exit(worker_on_exit, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(my_slot->dboid, InvalidOid, 0);
	pgstat_report_appname("stream_events worker");

	/*
	 * No JIT: the worker's statements handle a round's few rows, but some
	 * are planned every round against the streams' statistics (the ingest
	 * queue's read of a window), and once a stream held a million events
	 * their estimates passed jit_above_cost: every round compiled its plan
	 * with LLVM, which took more of a core than the round itself
	 * (bench/queue_mode.sh, the poll cost).  A session setting, above the
	 * database's and the role's.
	 */
	SetConfigOption("jit", "off", PGC_USERSET, PGC_S_SESSION);

	/*
	 * No session-wide origin: what this worker writes for itself (state
	 * rows, outbox, timers: the consumer; rows moved by
	 * maintenance: maintain.c) is tagged record by record with the
	 * extension's private origin (origin.h), which its own decoding
	 * consumer skips.  Other subscribers still see those writes, as they
	 * would not under DoNotReplicateId.  The rest of maintenance (partition
	 * DDL, retention, dedup pruning) writes no stream rows.
	 */

	loop_context = AllocSetContextCreate(TopMemoryContext, "stream_events worker loop",
										 ALLOCSET_DEFAULT_SIZES);

	while (!ShutdownRequestPending)
	{
		bool		installed = true;
		bool		aggregates;
		bool		captures;
		TimestampTz now;
		long		timeout;
		int			rc;
		TimestampTz round_started;

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			next_maintain = 0;	/* maintain now, then at the new naptime */
		}

		now = GetCurrentTimestamp();
		if (now >= next_maintain)
		{
			MemoryContextSwitchTo(loop_context);
			SetCurrentStatementStartTimestamp();
			StartTransactionCommand();
			PushActiveSnapshot(GetTransactionSnapshot());
			pgstat_report_activity(STATE_RUNNING, "stream_events maintenance");

			installed = OidIsValid(get_extension_oid("stream_events", true));
			if (installed)
			{
				/* dedup keys and the outbox: at most once a minute */
				worker_maintain(TimestampDifferenceExceeds(last_prune, now, 60 * 1000));
				if (TimestampDifferenceExceeds(last_prune, now, 60 * 1000))
					last_prune = now;
			}

			PopActiveSnapshot();
			CommitTransactionCommand();
			pgstat_report_activity(STATE_IDLE, NULL);
			MemoryContextSwitchTo(TopMemoryContext);
			MemoryContextReset(loop_context);

			SpinLockAcquire(&worker_shared->mutex);
			my_slot->last_run_at = GetCurrentTimestamp();
			my_slot->runs++;
			SpinLockRelease(&worker_shared->mutex);
			next_maintain = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														se_naptime * 1000L);
		}

		/* continuous aggregates: decode and apply what was committed */
		round_started = GetCurrentTimestamp();
		if (installed)
		{
			MemoryContextSwitchTo(loop_context);
			/* queue mode: captured tables' changes into their streams first */
			captures = consumer_uses_queue() && capture_drain();
			aggregates = consumer_round(&installed) || captures;
			MemoryContextSwitchTo(TopMemoryContext);
			MemoryContextReset(loop_context);
		}
		else
			aggregates = false;

		if (!installed)
		{
			/* DROP EXTENSION, or probed a database without it */
			consumer_extension_dropped();
			extension_gone = true;
			proc_exit(0);
		}

		/*
		 * What the transactions of this loop did, for the cumulative
		 * statistics (n_tup_ins of the state tables and the outbox, which
		 * autovacuum goes by): a background worker reports them itself, at
		 * most once a second (pgstat_report_stat limits itself).
		 */
		pgstat_report_stat(false);

		now = GetCurrentTimestamp();
		timeout = next_maintain > now ? (long) ((next_maintain - now) / 1000) + 1 : 0;
		if (aggregates)
			timeout = Min(timeout, idle_poll_timeout(now));
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		/*
		 * Woken by a producer's commit (activations): a duty cycle.  The
		 * worker rests ten times as long as its last round took, at most
		 * stream_events.wake_delay_max, before the next one, so that while
		 * producers keep the CPUs busy they are batched into longer, rarer
		 * rounds and the worker takes little CPU time from them.  The rest
		 * is scaled by the share of time tasks waited for a CPU lately
		 * (pressure.c): with a CPU free, resting would save the producers
		 * nothing and delay every activation.
		 */
		if ((rc & WL_LATCH_SET) && aggregates && se_wake_delay_max_ms > 0 &&
			!ShutdownRequestPending)
		{
			TimestampTz woke = GetCurrentTimestamp();
			long		rest = (long) (worker_cpu_pressure(woke) *
									   Min((long) se_wake_delay_max_ms * 1000,
										   10 * (long) (now - round_started)));
			long		since = (long) (woke - now);

			if (since < rest)
			{
				(void) WaitLatch(NULL, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 Max(1, (rest - since) / 1000), PG_WAIT_EXTENSION);
				CHECK_FOR_INTERRUPTS();
			}
		}
	}
	consumer_shutdown();
	proc_exit(0);
}

/* ---------- definitions changed (the consumer's signature check) ---------- */

/* a committed transaction changed definitions of the database */
void
worker_definitions_changed(Oid dboid)
{
	if (worker_shared == NULL)
		return;
	SpinLockAcquire(&worker_shared->mutex);
	for (int i = 0; i < NSLOTS; i++)
		if (worker_shared->slots[i].dboid == dboid)
			worker_shared->slots[i].defs_generation++;
	SpinLockRelease(&worker_shared->mutex);
}

/* in the worker: how many times that happened (0 outside a worker) */
uint64
worker_definitions_generation(void)
{
	uint64		gen;

	if (my_slot == NULL)
		return 0;
	SpinLockAcquire(&worker_shared->mutex);
	gen = my_slot->defs_generation;
	SpinLockRelease(&worker_shared->mutex);
	return gen;
}

/* ---------- ticks of the ingest queue (consumer/queue.c) ---------- */

/* stream.flush in queue mode: the database's worker makes a tick soon */
void
worker_request_tick(Oid dboid)
{
	if (worker_shared == NULL)
		return;
	SpinLockAcquire(&worker_shared->mutex);
	for (int i = 0; i < NSLOTS; i++)
		if (worker_shared->slots[i].dboid == dboid)
			worker_shared->slots[i].tick_requested = true;
	SpinLockRelease(&worker_shared->mutex);
	worker_wake_database(dboid);
}

/* whether a tick was asked for since the last call (in the worker) */
bool
worker_take_tick_request(void)
{
	bool		asked;

	if (my_slot == NULL)
		return false;
	SpinLockAcquire(&worker_shared->mutex);
	asked = my_slot->tick_requested;
	my_slot->tick_requested = false;
	SpinLockRelease(&worker_shared->mutex);
	return asked;
}

bool
worker_tick_requested(void)
{
	bool		asked;

	if (my_slot == NULL)
		return false;
	SpinLockAcquire(&worker_shared->mutex);
	asked = my_slot->tick_requested;
	SpinLockRelease(&worker_shared->mutex);
	return asked;
}

/* ---------- the consumer's position (stream.aggregates' lag) ---------- */

void
worker_note_consumer_position(XLogRecPtr lsn)
{
	if (my_slot == NULL || XLogRecPtrIsInvalid(lsn))
		return;
	SpinLockAcquire(&worker_shared->mutex);
	my_slot->decoded_lsn = lsn;
	my_slot->decoded_at = GetCurrentTimestamp();
	SpinLockRelease(&worker_shared->mutex);
}

/*
 * stream._consumer_position(): the WAL position this database's running
 * worker has decoded and applied everything up to, and when; NULLs when
 * none runs (or it has not got there yet).
 */
Datum
stream_consumer_position(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[2] = {0};
	bool		nulls[2] = {true, true};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (worker_shared != NULL)
	{
		SpinLockAcquire(&worker_shared->mutex);
		for (int i = 0; i < NSLOTS; i++)
		{
			WorkerSlot *slot = &worker_shared->slots[i];

			if (slot->dboid == MyDatabaseId && slot->state == SLOT_RUNNING &&
				!XLogRecPtrIsInvalid(slot->decoded_lsn))
			{
				values[0] = LSNGetDatum(slot->decoded_lsn);
				values[1] = TimestampTzGetDatum(slot->decoded_at);
				nulls[0] = nulls[1] = false;
			}
		}
		SpinLockRelease(&worker_shared->mutex);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
