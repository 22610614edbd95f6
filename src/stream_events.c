/*-------------------------------------------------------------------------
 * stream_events.c
 *	  Module entry point: _PG_init, the GUCs, the shared-memory hooks and
 *	  the utility hook: it stops a database's worker before a DROP DATABASE
 *	  that would pass its permission checks, and keeps streams append-only
 *	  at the DDL level (ddl_guard.c: no DROP/DETACH/TRUNCATE of a stream's
 *	  partitions, no change to envelope columns).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "activation/activation.h"
#include "aggregate/aggregate.h"
#include "capture/capture.h"
#include "core/guc.h"
#include "stream/ddl_guard.h"
#include "stream_events.h"
#include "worker/worker.h"

PG_MODULE_MAGIC;

const char *const envelope_column_names[ENV_NCOLUMNS] = {
	"event_id", "event_name", "occurred_at", "received_at", "user_id",
	"anonymous_id", "session_id", "properties", "context"
};

bool		se_preloaded = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

void		_PG_init(void);

static void
se_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	stats_shmem_request();
	worker_shmem_request();
}

static void
se_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	stats_shmem_startup();
	worker_shmem_startup();
}

/*
 * Would DROP DATABASE get past its own checks (dropdb() in dbcommands.c)?
 * The database exists, the caller owns it, it is not a template and not
 * ours, and the command is not in a transaction block.  Only then may the
 * worker be stopped: a refused DROP DATABASE must leave the worker, its
 * slot and the activations alone.
 *
 * The database's lock is taken as dropdb() takes it (AccessExclusiveLock,
 * held to the end of the transaction): no backend, our worker included,
 * can connect between this check and the command, and the database cannot
 * be renamed or dropped under us.  Failures that come later in dropdb()
 * (subscriptions, other sessions, other active slots) only stop the worker
 * for the length of the command: it is asked for again if the command
 * fails, and its slot is never touched here.  An inactive logical slot is
 * dropped by dropdb() itself, after all its checks (ReplicationSlotsDropDBSlots).
 */
static Oid
dropdb_target(DropdbStmt *stmt, ProcessUtilityContext context)
{
	Oid			dboid = get_database_oid(stmt->dbname, true);
	HeapTuple	tup;
	bool		istemplate;

	if (!OidIsValid(dboid))
		return InvalidOid;		/* missing: the command says so, or skips */

	/* the command's own first check, with its own message */
	PreventInTransactionBlock(context == PROCESS_UTILITY_TOPLEVEL, "DROP DATABASE");

	if (!pg_database_ownercheck(dboid, GetUserId()))
		return InvalidOid;
	if (dboid == MyDatabaseId)
		return InvalidOid;

	LockSharedObject(DatabaseRelationId, dboid, 0, AccessExclusiveLock);
	/* renamed or dropped while we waited for the lock */
	if (get_database_oid(stmt->dbname, true) != dboid)
		return InvalidOid;
	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
	if (!HeapTupleIsValid(tup))
		return InvalidOid;
	istemplate = ((Form_pg_database) GETSTRUCT(tup))->datistemplate;
	ReleaseSysCache(tup);
	if (istemplate)
		return InvalidOid;
	/* the owner may have changed while we waited */
	if (!pg_database_ownercheck(dboid, GetUserId()))
		return InvalidOid;
	return dboid;
}

/*
 * The database a command needs alone, though we do not stop our worker for
 * it (ALTER DATABASE ... RENAME, CREATE DATABASE ... TEMPLATE): an error
 * "is being accessed by other users" gets a HINT naming the worker.
 */
static Oid
busy_database(Node *parsetree, const char **dbname)
{
	if (IsA(parsetree, RenameStmt) &&
		((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
	{
		*dbname = ((RenameStmt *) parsetree)->subname;
		return get_database_oid(*dbname, true);
	}
	if (IsA(parsetree, CreatedbStmt))
	{
		ListCell   *lc;
		const char *name = "template1";

		foreach(lc, ((CreatedbStmt *) parsetree)->options)
		{
			DefElem    *opt = lfirst(lc);

			if (strcmp(opt->defname, "template") == 0 && opt->arg != NULL)
				name = defGetString(opt);
		}
		*dbname = name;
		return get_database_oid(name, true);
	}
	return InvalidOid;
}

/*
 * DROP DATABASE refuses to run while another session is connected to the
 * database: stop our worker first, but only once the command would pass
 * its permission checks (dropdb_target), and bring it back if the command
 * fails after all.  Nothing else is stopped for anyone: ALTER DATABASE ...
 * RENAME and CREATE DATABASE ... TEMPLATE need the worker stopped by the
 * DBA (the error gets a HINT saying how).  A new database gets a worker
 * probe (a copy of a database with the extension has it); the probe
 * leaves at once when the extension is not there.
 */
static void
se_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
				  bool readOnlyTree, ProcessUtilityContext context,
				  ParamListInfo params, QueryEnvironment *queryEnv,
				  DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	volatile Oid stopped = InvalidOid;
	const char *volatile created = NULL;
	volatile Oid busy = InvalidOid;
	const char *volatile busy_name = NULL;
	MemoryContext ccxt = CurrentMemoryContext;

	/* append-only: TRUNCATE, DETACH, envelope ALTERs refused up front */
	ddl_guard_before(parsetree);

	/* COPY FROM into a stream: batched (stream/copy.c) */
	if (IsA(parsetree, CopyStmt))
	{
		uint64		processed = 0;

		if (stream_copy_from((CopyStmt *) parsetree, queryString, queryEnv,
							 &processed))
		{
			if (qc)
				SetQueryCompletion(qc, CMDTAG_COPY, processed);
			return;
		}
	}

	if (se_preloaded)
	{
		if (IsA(parsetree, DropdbStmt))
		{
			stopped = dropdb_target((DropdbStmt *) parsetree, context);
			if (OidIsValid(stopped))
				worker_stop_database(stopped);
		}
		else
		{
			const char *name = NULL;

			busy = busy_database(parsetree, &name);
			busy_name = name;
			if (IsA(parsetree, CreatedbStmt))
				created = ((CreatedbStmt *) parsetree)->dbname;
		}
	}

	PG_TRY();
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_CATCH();
	{
		int			pid;

		/*
		 * The command failed: the database is still there.  No catalog
		 * access here (the transaction is failing): names were taken
		 * before, the worker's PID comes from shared memory.
		 */
		if (OidIsValid(stopped))
			worker_request_database_at_end(stopped);
		if (OidIsValid(busy) && geterrcode() == ERRCODE_OBJECT_IN_USE &&
			(pid = worker_database_pid(busy)) != 0)
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(ccxt);
			edata = CopyErrorData();
			FlushErrorState();
			if (edata->hint == NULL)
				edata->hint = psprintf("The stream_events worker (PID %d) is connected to database \"%s\". "
									   "A superuser can stop it with SELECT pg_terminate_backend(%d) and run the command again at once: "
									   "the worker comes back after stream_events.naptime.",
									   pid, busy_name, pid);
			ReThrowError(edata);
		}
		PG_RE_THROW();
	}
	PG_END_TRY();

	/* a stream's partition dropped while the stream stays: undone */
	ddl_guard_after();

	/* once the transaction ends: the launcher sees only committed databases */
	if (created != NULL)
	{
		Oid			newdb = get_database_oid(created, true);

		if (OidIsValid(newdb))
			worker_request_database_at_end(newdb);
	}
}

void
_PG_init(void)
{
	guc_init();
	stats_init();
	aggregate_init();
	activation_init();
	capture_init();

	/*
	 * The DDL guard works wherever the library is loaded (with
	 * shared_preload_libraries: every backend); the utility hook's
	 * DROP DATABASE part acts only when preloaded (se_preloaded).
	 */
	ddl_guard_init();
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = se_ProcessUtility;

	if (!process_shared_preload_libraries_in_progress)
	{
		MarkGUCPrefixReserved("stream_events");
		return;
	}

	guc_init_preloaded();
	MarkGUCPrefixReserved("stream_events");
	se_preloaded = true;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = se_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = se_shmem_startup;

	worker_register_launcher();
}
