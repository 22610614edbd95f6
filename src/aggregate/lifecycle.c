/*-------------------------------------------------------------------------
 * lifecycle.c
 *	  What happens around a definition rather than inside its query, for
 *	  the kinds the worker runs (aggregates, activations, captures): the
 *	  prerequisites checked when one is created (logical decoding possible)
 *	  and an aggregate's state table made to depend on its stream; the
 *	  worker woken at commit when a definition's DDL changed the catalogs,
 *	  and stream.flush's marker (stream._aggregate_wake); dump and restore:
 *	  the origin a catalog row's OIDs and applied LSN belong to
 *	  (stream._aggregate_origin) and the worker's adoption of aggregates
 *	  restored from another database.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/dependency.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "replication/message.h"
#include "replication/slot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"

#include "aggregate/aggregate.h"
#include "consumer/consumer.h"
#include "core/guc.h"
#include "stream_events.h"

PG_FUNCTION_INFO_V1(stream_aggregate_check_decoding);
PG_FUNCTION_INFO_V1(stream_aggregate_depend);
PG_FUNCTION_INFO_V1(stream_aggregate_wake);
PG_FUNCTION_INFO_V1(stream_aggregate_origin);

/* ---------- creating a definition ---------- */

/*
 * stream._aggregate_check_decoding(new_slot): logical decoding must be
 * possible: wal_level, free replication slots (the database's slot when it
 * is new, plus a short-lived one for the backfill snapshot), the worker.
 */
Datum
stream_aggregate_check_decoding(PG_FUNCTION_ARGS)
{
	bool		new_slot = PG_GETARG_BOOL(0);
	int			free_slots = 0;
	int			needed;

	/* the ingest queue needs no slot and works at any wal_level */
	if (consumer_uses_queue())
		PG_RETURN_VOID();
	if (wal_level < WAL_LEVEL_LOGICAL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("continuous aggregates need wal_level = logical"),
				 errdetail("The current setting of \"wal_level\" is \"%s\"; the worker reads committed changes by logical decoding.",
						   GetConfigOption("wal_level", false, false)),
				 errhint("Set wal_level = logical in postgresql.conf and restart the server.")));
	if (!se_preloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("continuous aggregates need the stream_events background worker"),
				 errhint("Add stream_events to shared_preload_libraries in postgresql.conf and restart the server.")));

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (int i = 0; i < max_replication_slots; i++)
		if (!ReplicationSlotCtl->replication_slots[i].in_use)
			free_slots++;
	LWLockRelease(ReplicationSlotControlLock);
	needed = new_slot && SearchNamedReplicationSlot(consumer_slot_name(MyDatabaseId), true) == NULL ? 2 : 1;
	if (free_slots < needed)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("all replication slots are in use"),
				 errdetail("Continuous aggregates need %d free replication slot%s (one per database, and one while a backfill starts); %d of max_replication_slots = %d are free.",
						   needed, needed > 1 ? "s" : "", free_slots, max_replication_slots),
				 errhint("Free one or increase max_replication_slots (requires a restart).")));
	PG_RETURN_VOID();
}

/* stream._aggregate_depend(state_table, stream) */
Datum
stream_aggregate_depend(PG_FUNCTION_ARGS)
{
	ObjectAddress state,
				stream;

	ObjectAddressSet(state, RelationRelationId, PG_GETARG_OID(0));
	ObjectAddressSet(stream, RelationRelationId, PG_GETARG_OID(1));
	if (!pg_class_ownercheck(PG_GETARG_OID(0), GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, get_rel_name(PG_GETARG_OID(0)));
	recordDependencyOn(&state, &stream, DEPENDENCY_NORMAL);
	PG_RETURN_VOID();
}

/* ---------- waking the worker at commit ---------- */

static bool wake_pending = false;
static bool defs_changed = false;	/* the commit changes definitions */
static bool wake_callback_registered = false;

static void
wake_xact_callback(XactEvent event, void *arg)
{
	if (!wake_pending)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		/* once committed, so that the worker reads the change itself */
		if (defs_changed)
			worker_definitions_changed(MyDatabaseId);
		wake_pending = false;
		defs_changed = false;
		worker_wake_database(MyDatabaseId);
	}
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		wake_pending = false;
		defs_changed = false;
	}
}

#define FLUSH_MESSAGE_PREFIX "stream_events"

/*
 * stream._aggregate_wake(flush): wakes the worker of this database (now,
 * and again at commit).  With flush, writes and flushes a non-transactional
 * logical message first: every transaction committed before this call ends
 * before the message's end LSN, which is returned, and the worker applies
 * up to it even when no aggregate changed.
 */
Datum
stream_aggregate_wake(PG_FUNCTION_ARGS)
{
	bool		flush = PG_GETARG_BOOL(0);
	XLogRecPtr	lsn = InvalidXLogRecPtr;

	/*
	 * Queue mode: no LSN to wait for; the worker makes a tick, which
	 * stream.flush waits for (the first made after this call)
	 */
	if (flush && consumer_uses_queue())
	{
		worker_request_tick(MyDatabaseId);
		flush = false;
	}
	else if (flush && XLogLogicalInfoActive() && !RecoveryInProgress())
	{
		lsn = LogLogicalMessage(FLUSH_MESSAGE_PREFIX, "flush", 5, false);
		XLogFlush(lsn);
	}
	else if (flush)
		lsn = GetXLogInsertRecPtr();
	if (!wake_callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		wake_callback_registered = true;
	}
	wake_pending = true;
	/* without flush: DDL of a definition (create, drop, resume, ...) */
	if (!PG_GETARG_BOOL(0))
		defs_changed = true;
	worker_wake_database(MyDatabaseId);
	if (XLogRecPtrIsInvalid(lsn))
		PG_RETURN_NULL();
	PG_RETURN_LSN(lsn);
}

/* ---------- dump and restore ---------- */

/*
 * stream._aggregate_origin(): "<system identifier>:<database OID>", where a
 * catalog row's analysed tree (OIDs) and applied LSN are valid.  A row
 * restored by pg_restore carries the origin of the dumped database.
 */
Datum
stream_aggregate_origin(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(psprintf(UINT64_FORMAT ":%u",
											  GetSystemIdentifier(), MyDatabaseId)));
}

/*
 * Called by the worker, in a transaction with a snapshot, before it loads
 * the definitions: stream._aggregate_adopt() re-analyses rows restored from
 * another database and schedules their rebuild.  True when such rows exist
 * (adopted now, or waiting for the restore to finish): the caller then
 * commits and loads the definitions in a later round.
 */
bool
aggregates_adopt_restored(void)
{
	bool		found = false;

	SPI_connect();
	if (SPI_execute("SELECT stream._aggregate_adopt()", false, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		found = !isnull && DatumGetInt32(d) > 0;
	}
	SPI_finish();
	return found;
}
