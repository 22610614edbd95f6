/*-------------------------------------------------------------------------
 * worker.c
 *	  The background workers: one launcher per cluster, registered in
 *	  _PG_init, and one worker per database that has the extension.
 *
 * The launcher connects to no database (it reads only the shared catalog
 * pg_database).  At start it starts a worker in every database that accepts
 * connections and is not a template; a worker that finds no extension in
 * its database exits for good.  CREATE EXTENSION asks the launcher for a
 * worker once its transaction commits, so no restart is needed; a worker
 * exits when it sees that the extension was dropped, and a DROP DATABASE
 * that passes its permission checks stops its worker first
 * (stream_events.c); the slot is left to DROP DATABASE itself.  A worker
 * that fails is started again after stream_events.naptime.
 *
 * There is a slot per database that can have a worker: as many as
 * max_worker_processes (at least 64), so any number of databases is
 * served as long as max_worker_processes lets their workers run.  A worker
 * that cannot start (max_worker_processes all in use) is asked for again
 * every second, quietly: one WARNING per database per minute, with the
 * reason in stream.worker_status().
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
 * stream_events.aggregate_poll_interval; its latch is set by
 * stream.flush() and by aggregate DDL (worker_wake_database()).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
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
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/pg_lsn.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "aggregate/aggregate.h"
#include "consumer/consumer.h"
#include "core/owner.h"
#include "stream_events.h"

PG_FUNCTION_INFO_V1(stream_worker_status);
PG_FUNCTION_INFO_V1(stream_consumer_position);
PG_FUNCTION_INFO_V1(stream_extension_created);

PGDLLEXPORT void stream_events_launcher_main(Datum main_arg);
PGDLLEXPORT void stream_events_worker_main(Datum main_arg);

/* worker slots: Max(SE_MIN_SLOTS, max_worker_processes) */
#define SE_MIN_SLOTS 64
#define NSLOTS (worker_shared->n_slots)
/* a database whose worker cannot start: one WARNING per this interval */
#define START_WARNING_INTERVAL_MS (60 * 1000)
#define START_RETRY_MS 1000
#define SE_ERROR_LEN 256

typedef enum SlotState
{
	SLOT_FREE = 0,
	SLOT_STARTING,				/* launcher asked for it */
	SLOT_RUNNING,
	SLOT_STOPPED				/* exited; see exit_clean */
} SlotState;

typedef struct WorkerSlot
{
	Oid			dboid;
	SlotState	state;
	pid_t		pid;
	bool		exit_clean;		/* exited on purpose: do not restart */
	bool		stop_requested; /* DROP DATABASE: do not restart */
	bool		reaped;			/* the launcher has seen it stop */
	TimestampTz started_at;
	TimestampTz last_run_at;
	int64		runs;
	int			procno;			/* the worker's PGPROC, for wakeups */
	bool		consumer_wake;	/* producers wake it at commit (activations) */
	char		last_error[SE_ERROR_LEN];
	XLogRecPtr	decoded_lsn;	/* the consumer decoded and applied up to */
	TimestampTz decoded_at;		/* when it last was there */
} WorkerSlot;

typedef struct WorkerShared
{
	slock_t		mutex;
	Latch	   *launcher_latch;
	int			n_slots;
	int			n_requests;
	bool		rescan;			/* a request did not fit: look at every database */
	Oid		   *requests;		/* n_slots of them, after the slots */
	WorkerSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} WorkerShared;

static WorkerShared *worker_shared = NULL;
static WorkerSlot *my_slot = NULL;

static void request_database(Oid dboid);

/* ---------- shared memory ---------- */

/* max_worker_processes is PGC_POSTMASTER: the same in every process */
static int
worker_slot_count(void)
{
	return Max(SE_MIN_SLOTS, max_worker_processes);
}

static Size
worker_shmem_size(void)
{
	return add_size(MAXALIGN(add_size(offsetof(WorkerShared, slots),
									  mul_size(worker_slot_count(), sizeof(WorkerSlot)))),
					mul_size(worker_slot_count(), sizeof(Oid)));
}

void
worker_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(worker_shmem_size()));
}

void
worker_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	worker_shared = ShmemInitStruct("stream_events workers", worker_shmem_size(), &found);
	if (!found)
	{
		memset(worker_shared, 0, worker_shmem_size());
		SpinLockInit(&worker_shared->mutex);
		worker_shared->n_slots = worker_slot_count();
		worker_shared->requests = (Oid *)
			((char *) worker_shared +
			 MAXALIGN(offsetof(WorkerShared, slots) + worker_shared->n_slots * sizeof(WorkerSlot)));
	}
	LWLockRelease(AddinShmemInitLock);
}

void
worker_request_database(Oid dboid)
{
	if (worker_shared != NULL)
		request_database(dboid);
}

/*
 * Asks for a worker once the current transaction ends (either way): the
 * launcher cannot see a database whose CREATE has not committed yet.
 */
static List *requests_at_end = NIL;
static bool request_callback_registered = false;

static void
requests_at_end_callback(XactEvent event, void *arg)
{
	ListCell   *lc;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT)
		return;
	foreach(lc, requests_at_end)
		worker_request_database(lfirst_oid(lc));
	list_free(requests_at_end);
	requests_at_end = NIL;
}

void
worker_request_database_at_end(Oid dboid)
{
	MemoryContext old;

	if (worker_shared == NULL)
		return;
	if (!request_callback_registered)
	{
		RegisterXactCallback(requests_at_end_callback, NULL);
		request_callback_registered = true;
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	requests_at_end = lappend_oid(requests_at_end, dboid);
	MemoryContextSwitchTo(old);
}

static void
request_database(Oid dboid)
{
	bool		queued = false;
	Latch	   *latch;

	SpinLockAcquire(&worker_shared->mutex);
	for (int i = 0; i < worker_shared->n_requests; i++)
		if (worker_shared->requests[i] == dboid)
			queued = true;
	if (!queued && worker_shared->n_requests < NSLOTS)
		worker_shared->requests[worker_shared->n_requests++] = dboid;
	else if (!queued)
		worker_shared->rescan = true;	/* the launcher looks at every database */
	for (int i = 0; i < NSLOTS; i++)
		if (worker_shared->slots[i].dboid == dboid)
			worker_shared->slots[i].stop_requested = false;
	latch = worker_shared->launcher_latch;
	SpinLockRelease(&worker_shared->mutex);
	if (latch)
		SetLatch(latch);
}

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
 * The worker says whether producers should wake it when they commit events
 * (while it runs activations, whose latency is the time to its next round).
 */
void
worker_set_consumer_wake(bool on)
{
	if (my_slot != NULL && my_slot->consumer_wake != on)
	{
		SpinLockAcquire(&worker_shared->mutex);
		my_slot->consumer_wake = on;
		SpinLockRelease(&worker_shared->mutex);
	}
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

/* ---------- CREATE EXTENSION and DROP DATABASE ---------- */

static bool created_callback_registered = false;
static bool created_pending = false;

static void
extension_created_xact_callback(XactEvent event, void *arg)
{
	if (!created_pending)
		return;
	if (event == XACT_EVENT_COMMIT)
	{
		created_pending = false;
		if (worker_shared)
			request_database(MyDatabaseId);
	}
	else if (event == XACT_EVENT_ABORT)
		created_pending = false;
}

Datum
stream_extension_created(PG_FUNCTION_ARGS)
{
	if (!se_preloaded || worker_shared == NULL)
	{
		ereport(WARNING,
				(errmsg("stream_events is not loaded through shared_preload_libraries, so its background worker is off"),
				 errdetail("Streams work, but partitions are not created ahead and retention is not applied automatically."),
				 errhint("Add stream_events to shared_preload_libraries in postgresql.conf and restart the server; until then run SELECT * FROM stream.maintain() regularly.")));
		PG_RETURN_VOID();
	}
	if (!created_callback_registered)
	{
		RegisterXactCallback(extension_created_xact_callback, NULL);
		created_callback_registered = true;
	}
	created_pending = true;
	PG_RETURN_VOID();
}

/* The PID of a database's running worker, 0 if none. */
int
worker_database_pid(Oid dboid)
{
	int			pid = 0;

	if (worker_shared == NULL)
		return 0;
	SpinLockAcquire(&worker_shared->mutex);
	for (int i = 0; i < NSLOTS; i++)
		if (worker_shared->slots[i].dboid == dboid &&
			worker_shared->slots[i].state == SLOT_RUNNING)
			pid = worker_shared->slots[i].pid;
	SpinLockRelease(&worker_shared->mutex);
	return pid;
}

/*
 * Called before a DROP DATABASE that passed its permission checks: stop
 * that database's worker and wait (up to five seconds) until its process
 * has left, so that its replication slot is inactive.  The slot itself is
 * not dropped here: DROP DATABASE drops a database's inactive slots once
 * all its own checks have passed, and a DROP that fails keeps it.
 */
void
worker_stop_database(Oid dboid)
{
	pid_t		pid = 0;

	if (worker_shared == NULL)
		return;
	SpinLockAcquire(&worker_shared->mutex);
	for (int i = 0; i < worker_shared->n_requests; i++)
		if (worker_shared->requests[i] == dboid)
			worker_shared->requests[i] = InvalidOid;
	for (int i = 0; i < NSLOTS; i++)
	{
		WorkerSlot *slot = &worker_shared->slots[i];

		if (slot->dboid == dboid && slot->state != SLOT_FREE)
		{
			slot->stop_requested = true;
			pid = slot->pid;
		}
	}
	SpinLockRelease(&worker_shared->mutex);

	if (pid == 0)
		return;
	kill(pid, SIGTERM);

	/*
	 * Until the process is gone, not only its slot state: the worker marks
	 * its slot stopped in a before_shmem_exit callback that runs before the
	 * one releasing its replication slot.
	 */
	for (int i = 0; i < 500; i++)
	{
		if (BackendPidGetProc(pid) == NULL)
			break;
		CHECK_FOR_INTERRUPTS();
		pg_usleep(10000L);
	}
}

/* ---------- launcher ---------- */

void
worker_register_launcher(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "stream_events");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "stream_events_launcher_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "stream_events launcher");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "stream_events launcher");
	RegisterBackgroundWorker(&bgw);
}

/* Databases that accept connections and are not templates. */
static List *
list_databases(void)
{
	List	   *result = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	MemoryContext caller = CurrentMemoryContext;

	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (db->datallowconn && !db->datistemplate)
		{
			MemoryContext old = MemoryContextSwitchTo(caller);

			result = lappend_oid(result, db->oid);
			MemoryContextSwitchTo(old);
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return result;
}

/* the launcher's own state, one entry per slot (launcher_init_local) */
static BackgroundWorkerHandle **handles;

/* failed workers wait a naptime before they are started again */
static TimestampTz *restart_at;
static Oid *restart_db;

/*
 * Databases whose worker the launcher is to start, with when to try next
 * (a worker that could not start is tried again every START_RETRY_MS) and
 * when it last warned about one (at most one WARNING per database per
 * START_WARNING_INTERVAL_MS).  Launcher-local, in TopMemoryContext.
 */
typedef struct PendingStart
{
	Oid			dboid;
	TimestampTz next_try;
	TimestampTz last_warning;	/* 0: never */
	int64		failures;		/* since last_warning */
} PendingStart;

static PendingStart *pending;
static int	n_pending = 0;
static int	max_pending = 0;

typedef enum StartResult
{
	START_DONE,					/* started, already running, or no such database */
	START_NO_ROOM				/* no background worker slot: try again later */
} StartResult;

static void
launcher_init_local(void)
{
	handles = MemoryContextAllocZero(TopMemoryContext, NSLOTS * sizeof(*handles));
	restart_at = MemoryContextAllocZero(TopMemoryContext, NSLOTS * sizeof(*restart_at));
	restart_db = MemoryContextAllocZero(TopMemoryContext, NSLOTS * sizeof(*restart_db));
}

static void
pending_add(Oid dboid)
{
	for (int i = 0; i < n_pending; i++)
		if (pending[i].dboid == dboid)
			return;
	if (n_pending == max_pending)
	{
		max_pending = Max(64, max_pending * 2);
		pending = pending == NULL ?
			MemoryContextAlloc(TopMemoryContext, max_pending * sizeof(PendingStart)) :
			repalloc(pending, max_pending * sizeof(PendingStart));
	}
	pending[n_pending].dboid = dboid;
	pending[n_pending].next_try = 0;
	pending[n_pending].last_warning = 0;
	pending[n_pending].failures = 0;
	n_pending++;
}

static char *
launcher_database_name(Oid dboid)
{
	char	   *name;
	MemoryContext caller = CurrentMemoryContext;

	StartTransactionCommand();
	name = get_database_name(dboid);
	if (name)
		name = MemoryContextStrdup(caller, name);
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
	return name ? name : psprintf("%u", dboid);
}

/* Records in the slot why the database has no worker (stream.worker_status). */
static void
launcher_no_room(int slot_index, Oid dboid, const char *why)
{
	SpinLockAcquire(&worker_shared->mutex);
	if (slot_index >= 0)
	{
		WorkerSlot *slot = &worker_shared->slots[slot_index];

		memset(slot, 0, sizeof(WorkerSlot));
		slot->dboid = dboid;
		slot->state = SLOT_STOPPED;
		slot->reaped = true;	/* the pending list retries it, not launcher_reap */
		strlcpy(slot->last_error, why, SE_ERROR_LEN);
	}
	SpinLockRelease(&worker_shared->mutex);
}

static StartResult
launcher_start_worker(Oid dboid, List *databases)
{
	BackgroundWorker bgw;
	int			free_slot = -1;

	if (!list_member_oid(databases, dboid))
		return START_DONE;		/* gone, template or not connectable */

	SpinLockAcquire(&worker_shared->mutex);
	for (int i = 0; i < NSLOTS; i++)
	{
		WorkerSlot *slot = &worker_shared->slots[i];

		if (slot->state != SLOT_FREE && slot->dboid == dboid &&
			(slot->state == SLOT_STARTING || slot->state == SLOT_RUNNING))
		{
			SpinLockRelease(&worker_shared->mutex);
			return START_DONE;	/* already there */
		}
		if (free_slot < 0 && (slot->state == SLOT_FREE ||
							  (slot->state == SLOT_STOPPED && slot->dboid == dboid)))
			free_slot = i;
	}
	if (free_slot < 0)
	{
		for (int i = 0; i < NSLOTS; i++)
			if (worker_shared->slots[i].state == SLOT_STOPPED)
			{
				free_slot = i;
				break;
			}
	}
	if (free_slot < 0)
	{
		/* as many slots as max_worker_processes: every one is running */
		SpinLockRelease(&worker_shared->mutex);
		return START_NO_ROOM;
	}
	memset(&worker_shared->slots[free_slot], 0, sizeof(WorkerSlot));
	worker_shared->slots[free_slot].dboid = dboid;
	worker_shared->slots[free_slot].state = SLOT_STARTING;
	SpinLockRelease(&worker_shared->mutex);

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "stream_events");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "stream_events_worker_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "stream_events worker %u", dboid);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "stream_events worker");
	bgw.bgw_main_arg = Int32GetDatum(free_slot);
	bgw.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&bgw, &handles[free_slot]))
	{
		handles[free_slot] = NULL;
		launcher_no_room(free_slot, dboid,
						 psprintf("could not start: all %d background worker processes (max_worker_processes) are in use",
								  max_worker_processes));
		return START_NO_ROOM;
	}
	return START_DONE;
}

/*
 * Tries to start the worker of every pending database whose time has come.
 * One that cannot start stays pending, tried again in START_RETRY_MS (not
 * at once: that loop wrote 150,000 WARNINGs a second), with one WARNING per
 * database per START_WARNING_INTERVAL_MS.
 */
static void
launcher_start_pending(void)
{
	TimestampTz now = GetCurrentTimestamp();
	List	   *databases = NIL;
	bool		listed = false;
	int			kept = 0;

	for (int i = 0; i < n_pending; i++)
	{
		PendingStart *p = &pending[i];

		if (p->next_try <= now)
		{
			if (!listed)
			{
				databases = list_databases();
				listed = true;
			}
			if (launcher_start_worker(p->dboid, databases) == START_DONE)
				continue;		/* dropped from the list */
			p->failures++;
			p->next_try = TimestampTzPlusMilliseconds(now, START_RETRY_MS);
			if (p->last_warning == 0 ||
				TimestampDifferenceExceeds(p->last_warning, now, START_WARNING_INTERVAL_MS))
			{
				ereport(WARNING,
						(errmsg("stream_events could not start a worker for database \"%s\": all %d background worker processes are in use",
								launcher_database_name(p->dboid), max_worker_processes),
						 p->last_warning == 0 ?
						 errdetail("Partitions, retention, continuous aggregates and batched activations of that database wait; the launcher tries again every second and warns once a minute.") :
						 errdetail("%lld attempts failed since the last warning.",
								   (long long) p->failures),
						 errhint("Raise max_worker_processes (stream_events needs one per database that has the extension, plus one for its launcher) and restart the server.")));
				p->last_warning = now;
				p->failures = 0;
			}
		}
		pending[kept++] = *p;
	}
	n_pending = kept;
	list_free(databases);
}

/*
 * Notices workers that ended; those that failed are asked for again after a
 * naptime.  A worker records its own end in its slot (worker_on_exit); the
 * handle only tells about a worker that never ran.  Workers started by an
 * earlier launcher have no handle here and are watched through their slot.
 */
static void
launcher_reap(void)
{
	for (int i = 0; i < NSLOTS; i++)
	{
		pid_t		pid;
		bool		restart = false;
		bool		ended = false;
		Oid			dboid = InvalidOid;

		if (handles[i] != NULL &&
			GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED)
		{
			pfree(handles[i]);
			handles[i] = NULL;
			SpinLockAcquire(&worker_shared->mutex);
			if (worker_shared->slots[i].state != SLOT_FREE &&
				worker_shared->slots[i].state != SLOT_STOPPED)
			{
				/* never ran, or died without its exit callback */
				worker_shared->slots[i].state = SLOT_STOPPED;
				worker_shared->slots[i].pid = 0;
			}
			SpinLockRelease(&worker_shared->mutex);
		}

		SpinLockAcquire(&worker_shared->mutex);
		{
			WorkerSlot *slot = &worker_shared->slots[i];

			if (slot->state == SLOT_STOPPED && !slot->reaped)
			{
				slot->reaped = true;
				ended = true;
				restart = !slot->exit_clean && !slot->stop_requested;
				dboid = slot->dboid;
			}
		}
		SpinLockRelease(&worker_shared->mutex);
		if (ended && restart)
		{
			restart_db[i] = dboid;
			restart_at[i] = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														se_naptime * 1000L);
		}
	}
}

static void
launcher_schedule_restarts(void)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < NSLOTS; i++)
	{
		if (OidIsValid(restart_db[i]) && now >= restart_at[i])
		{
			request_database(restart_db[i]);
			restart_db[i] = InvalidOid;
		}
	}
}

void
stream_events_launcher_main(Datum main_arg)
{
	List	   *databases;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("stream_events launcher");
	launcher_init_local();

	/*
	 * After a restart of the launcher alone, the workers of the previous one
	 * are still running: keep their slots (launcher_start_worker then skips
	 * their databases).  Slots whose process is gone are stopped.
	 */
	SpinLockAcquire(&worker_shared->mutex);
	worker_shared->launcher_latch = MyLatch;
	for (int i = 0; i < NSLOTS; i++)
	{
		WorkerSlot *slot = &worker_shared->slots[i];

		if (slot->state == SLOT_RUNNING && (slot->pid == 0 || kill(slot->pid, 0) != 0))
		{
			slot->state = SLOT_STOPPED;
			slot->pid = 0;
		}
		else if (slot->state == SLOT_STARTING)
			slot->state = SLOT_STOPPED; /* its handle died with the old launcher */
	}
	SpinLockRelease(&worker_shared->mutex);

	/* a worker in every database; those without the extension leave */
	databases = list_databases();
	{
		ListCell   *lc;

		foreach(lc, databases)
			pending_add(lfirst_oid(lc));
	}
	list_free(databases);

	while (!ShutdownRequestPending)
	{
		Oid		   *requests = palloc(NSLOTS * sizeof(Oid));
		int			n;
		bool		rescan;

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		launcher_reap();
		launcher_schedule_restarts();

		SpinLockAcquire(&worker_shared->mutex);
		n = worker_shared->n_requests;
		memcpy(requests, worker_shared->requests, n * sizeof(Oid));
		worker_shared->n_requests = 0;
		rescan = worker_shared->rescan;
		worker_shared->rescan = false;
		SpinLockRelease(&worker_shared->mutex);
		for (int i = 0; i < n; i++)
			if (OidIsValid(requests[i]))
				pending_add(requests[i]);
		pfree(requests);
		if (rescan)
		{
			/* more requests than the queue holds: every database */
			ListCell   *lc;

			databases = list_databases();
			foreach(lc, databases)
				pending_add(lfirst_oid(lc));
			list_free(databases);
		}
		launcher_start_pending();

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}

	SpinLockAcquire(&worker_shared->mutex);
	worker_shared->launcher_latch = NULL;
	SpinLockRelease(&worker_shared->mutex);

	/*
	 * Exit status 1: the postmaster restarts the launcher after
	 * bgw_restart_time (status 0 would unregister it).  At shutdown nothing
	 * is restarted anyway.
	 */
	proc_exit(1);
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
			aggregates = consumer_round(&installed);
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
		if (aggregates && timeout > se_aggregate_poll_ms)
			timeout = se_aggregate_poll_ms;
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		/*
		 * Woken by a producer's commit (activations): a duty cycle.  The
		 * worker rests ten times as long as its last round took, at most
		 * stream_events.wake_delay_max, before the next one: a quiet stream
		 * (short rounds) fires within a millisecond or so; a busy one is
		 * batched into longer, rarer rounds, so the worker takes little of
		 * a core from the producers.
		 */
		if ((rc & WL_LATCH_SET) && aggregates && se_wake_delay_max_ms > 0 &&
			!ShutdownRequestPending)
		{
			TimestampTz woke = GetCurrentTimestamp();
			long		rest = Min((long) se_wake_delay_max_ms * 1000,
								   10 * (long) (now - round_started));
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

/* ---------- stream.worker_status() ---------- */

Datum
stream_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	WorkerSlot *slots;

	InitMaterializedSRF(fcinfo, 0);
	if (worker_shared == NULL)
		return (Datum) 0;

	slots = palloc(NSLOTS * sizeof(WorkerSlot));
	SpinLockAcquire(&worker_shared->mutex);
	memcpy(slots, worker_shared->slots, NSLOTS * sizeof(WorkerSlot));
	SpinLockRelease(&worker_shared->mutex);

	for (int i = 0; i < NSLOTS; i++)
	{
		Datum		values[7];
		bool		nulls[7] = {0};
		char	   *datname;
		static const char *const names[] = {"free", "starting", "running", "stopped"};

		if (slots[i].state == SLOT_FREE)
			continue;
		if (slots[i].state == SLOT_STOPPED && slots[i].exit_clean &&
			slots[i].runs == 0)
			continue;			/* probed a database without the extension */
		datname = get_database_name(slots[i].dboid);
		if (datname == NULL)
			continue;
		values[0] = CStringGetDatum(datname);
		values[0] = DirectFunctionCall1(namein, values[0]);
		values[1] = Int32GetDatum(slots[i].pid);
		nulls[1] = (slots[i].pid == 0);
		values[2] = CStringGetTextDatum(names[slots[i].state]);
		values[3] = TimestampTzGetDatum(slots[i].started_at);
		nulls[3] = (slots[i].started_at == 0);
		values[4] = TimestampTzGetDatum(slots[i].last_run_at);
		nulls[4] = (slots[i].last_run_at == 0);
		values[5] = Int64GetDatum(slots[i].runs);
		values[6] = CStringGetTextDatum(slots[i].last_error);
		nulls[6] = (slots[i].last_error[0] == '\0');
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
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
