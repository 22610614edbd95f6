/*-------------------------------------------------------------------------
 * worker.h
 *	  The background workers.  launcher.c owns the launcher (one per
 *	  cluster) and the slots in shared memory, worker.c one database's
 *	  worker, pressure.c what that worker reads of the CPUs' contention.  This header declares what the rest of the extension calls
 *	  and the slot layout the two files share.
 *
 * Declared in stream_events.h instead, because src/consumer/,
 * src/aggregate/ and src/activation/ call them: worker_set_consumer_wake(),
 * worker_wake_database() and worker_note_consumer_position(), all three
 * defined in worker.c.
 *-------------------------------------------------------------------------
 */
#ifndef SE_WORKER_WORKER_H
#define SE_WORKER_WORKER_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "storage/spin.h"

/* ---------- for the rest of the extension ---------- */

/* launcher.c */
extern void worker_shmem_request(void);
extern void worker_shmem_startup(void);
extern void worker_register_launcher(void);
extern void worker_stop_database(Oid dboid);
extern int	worker_database_pid(Oid dboid);
extern void worker_request_database(Oid dboid);
extern void worker_request_database_at_end(Oid dboid);

/* worker.c */
extern void worker_wake_consumer_at_commit(void);

/* pressure.c */
extern double worker_cpu_pressure(TimestampTz now);

/* ---------- shared by launcher.c and worker.c ---------- */

#define SE_ERROR_LEN 256

typedef enum SlotState
{
	SLOT_FREE = 0,
	SLOT_STARTING,				/* launcher asked for it */
	SLOT_RUNNING,
	SLOT_STOPPED				/* exited; see exit_clean */
} SlotState;

/*
 * One database's worker, in shared memory under worker_shared->mutex: the
 * launcher fills dboid and state to start it, the worker its own fields
 * while it runs, stream.worker_status() reads them all.
 */
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
	bool		tick_requested; /* stream.flush in queue mode wants a tick */
	uint64		defs_generation;	/* bumped by commits of definitions' DDL */
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

/* launcher.c: attached in every process by worker_shmem_startup() */
extern WorkerShared *worker_shared;

#define NSLOTS (worker_shared->n_slots)

#endif							/* SE_WORKER_WORKER_H */
