/*-------------------------------------------------------------------------
 * guc.c
 *	  Every setting of stream_events (stream_events.*), defined in one
 *	  place: the variables the modules read (declared in guc.h) and their
 *	  definitions, with units, bounds and who may set them.  README.md and
 *	  docs/ describe them for users.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/xlog.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "core/guc.h"

/* the worker and maintenance */
int			se_naptime = 5;
int			se_partitions_ahead = 3;
int			se_partitions_behind = 3;
static int	se_max_partitions_behind = 100;	/* read by stream.maintain() in SQL */
static int	se_max_partitions_per_run = 16; /* likewise */

/* ingest */
int			se_max_streams = 1000;
char	   *se_max_future = NULL;
bool		se_max_future_set = false;
int64		se_max_future_usecs = 0;
bool		jsonschema_format_assertion = false;
bool		se_copy_batch = true;
int			jsonschema_max_cache_entries = 256;

/* the consumer */
int			se_aggregate_poll_ms = 20;
int			se_aggregate_batch_groups = 50000;
int			se_consumer_memory_kb = 256 * 1024;
bool		se_decode_streaming = true;
int			se_slot_warning_size_mb = 1024;
int			se_wake_delay_max_ms = 5;
int			se_activation_retention = 7 * 24 * 3600;
int			se_consumer_source = CONSUMER_AUTO;

static const struct config_enum_entry consumer_source_options[] = {
	{"auto", CONSUMER_AUTO, false},
	{"logical", CONSUMER_LOGICAL, false},
	{"queue", CONSUMER_QUEUE, false},
	{NULL, 0, false}
};

/*
 * stream_events.max_future: parsed once here (an interval, not negative)
 * into microseconds for the ingest path; '' means no limit.
 */
static bool
check_max_future(char **newval, void **extra, GucSource source)
{
	volatile bool ok = true;
	volatile bool negative = false;
	volatile int64 usecs = 0;
	int64	   *parsed;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	PG_TRY();
	{
		Interval   *iv = DatumGetIntervalP(DirectFunctionCall3(interval_in,
															   CStringGetDatum(*newval),
															   ObjectIdGetDatum(InvalidOid),
															   Int32GetDatum(-1)));

		negative = (iv->time < 0 || iv->day < 0 || iv->month < 0);
		usecs = iv->time + (int64) iv->day * USECS_PER_DAY +
			(int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
	}
	PG_CATCH();
	{
		FlushErrorState();
		ok = false;
	}
	PG_END_TRY();
	if (!ok)
	{
		GUC_check_errdetail("stream_events.max_future must be an interval such as '1 day'.");
		return false;
	}
	if (negative)
	{
		GUC_check_errdetail("stream_events.max_future must not be negative.");
		return false;
	}
	parsed = malloc(sizeof(int64));	/* GUC extra: released with free() */
	if (parsed == NULL)
		return false;
	*parsed = usecs;
	*extra = parsed;
	return true;
}

static void
assign_max_future(const char *newval, void *extra)
{
	se_max_future_set = (extra != NULL);
	se_max_future_usecs = extra ? *(int64 *) extra : 0;
}

/*
 * stream_events.consumer_memory: below the floor, spilling would run for
 * every few events (and a partial state of many aggregates alone can be
 * larger than that).
 */
#define CONSUMER_MEMORY_FLOOR_KB (16 * 1024)

static bool
check_consumer_memory(int *newval, void **extra, GucSource source)
{
	if (*newval >= CONSUMER_MEMORY_FLOOR_KB)
		return true;
	GUC_check_errdetail("stream_events.consumer_memory is %d kB; the least it may be is %d kB (16MB).",
						*newval, CONSUMER_MEMORY_FLOOR_KB);
	GUC_check_errhint("Set it to 16MB or more; the worker spills what it folds to temporary files beyond it.");
	return false;
}

/*
 * stream_events.consumer = 'logical' needs logical decoding: refused when
 * the server runs with a lower wal_level (read before any library loads).
 */
static bool
check_consumer_source(int *newval, void **extra, GucSource source)
{
	if (*newval != CONSUMER_LOGICAL || wal_level >= WAL_LEVEL_LOGICAL)
		return true;
	GUC_check_errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE);
	GUC_check_errdetail("The server runs with wal_level = %s; logical decoding needs wal_level = logical.",
						GetConfigOption("wal_level", false, false));
	GUC_check_errhint("Use stream_events.consumer = 'queue' (or 'auto'), or set wal_level = logical and restart the server.");
	return false;
}

/* the source the consumer reads: logical decoding or the ingest queue */
bool
consumer_uses_queue(void)
{
	return se_consumer_source == CONSUMER_QUEUE ||
		(se_consumer_source == CONSUMER_AUTO && wal_level < WAL_LEVEL_LOGICAL);
}

void
guc_init(void)
{
	DefineCustomIntVariable("stream_events.naptime",
							"Seconds the background worker sleeps between maintenance runs.",
							NULL, &se_naptime, 5, 1, 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("stream_events.partitions_ahead",
							"Partitions the worker keeps created ahead of the current one.",
							NULL, &se_partitions_ahead, 3, 0, 1000,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("stream_events.partitions_behind",
							"Partitions the worker keeps created before the current one, for late events.",
							NULL, &se_partitions_behind, 3, 0, 1000,
							PGC_USERSET, 0, NULL, NULL, NULL);
	/* the bound of partition creation (stream.maintain, docs/streams.md) */
	DefineCustomIntVariable("stream_events.max_partitions_behind",
							"Oldest partition maintenance creates for late events, in partitions before the current one.",
							"Events older than that (or than now() - retention) stay in the default partition, "
							"as do events after the last partition kept ahead (stream_events.partitions_ahead).",
							&se_max_partitions_behind, 100, 0, 100000,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("stream_events.max_partitions_per_run",
							"Partitions one maintenance run creates per stream for events in its default partition.",
							"The rest are created at the next runs.",
							&se_max_partitions_per_run, 16, 1, 10000,
							PGC_USERSET, 0, NULL, NULL, NULL);

	DefineCustomBoolVariable("stream_events.copy_batch",
							 "COPY FROM into a stream inserts its rows in batches.",
							 "The stream's insert trigger makes PostgreSQL's COPY insert row by row; "
							 "stream_events runs such a COPY itself, doing the trigger's work per row "
							 "and inserting in batches (docs/streams.md). Off: PostgreSQL's COPY.",
							 &se_copy_batch, true, PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("stream_events.max_future",
							   "How far ahead of the server clock occurred_at may be, for streams with no max_future of their own (empty: no limit).",
							   "A server-wide default set by the DBA (superuser only): a producer's SET cannot "
							   "weaken what the stream owner enforces; per stream, stream.set_policy(max_future => ...).",
							   &se_max_future, "", PGC_SUSET, 0,
							   check_max_future, assign_max_future, NULL);
	DefineCustomBoolVariable("stream_events.format_assertion",
							 "Makes the JSON Schema \"format\" keyword an assertion.",
							 "When off, \"format\" is an annotation, as draft 2020-12 specifies by default; "
							 "a schema whose meta-schema requires the format-assertion vocabulary asserts it anyway. "
							 "The server-wide default of contracts (superuser only, so a producer's SET cannot weaken one); "
							 "per stream, stream.set_policy(format_assertion => ...).",
							 &jsonschema_format_assertion,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("stream_events.max_schema_cache",
							"Maximum number of compiled JSON Schemas cached per session.",
							NULL,
							&jsonschema_max_cache_entries,
							256,
							1,
							1000000,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("stream_events.aggregate_poll_interval",
							"Milliseconds between the worker's checks for new WAL to apply to continuous aggregates.",
							NULL, &se_aggregate_poll_ms, 20, 1, 10000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("stream_events.slot_warning_size",
							"WAL a continuous aggregates slot may hold before the worker warns (a stalled consumer).",
							NULL, &se_slot_warning_size_mb, 1024, 1, INT_MAX / 2,
							PGC_SIGHUP, GUC_UNIT_MB, NULL, NULL, NULL);
	DefineCustomIntVariable("stream_events.aggregate_batch_groups",
							"Groups held in memory before the worker applies a batch to continuous aggregates.",
							NULL, &se_aggregate_batch_groups, 50000, 100, 10000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("stream_events.consumer_memory",
							"Memory the worker's consumer may hold for what it folded and not yet applied.",
							"Within one large transaction, groups, queued firings and dead letters beyond it are "
							"spilled to temporary files and applied with the rest at the transaction's commit "
							"(docs/aggregates.md). At least 16MB.",
							&se_consumer_memory_kb, 256 * 1024, 1, MAX_KILOBYTES,
							PGC_SIGHUP, GUC_UNIT_KB, check_consumer_memory, NULL, NULL);
	DefineCustomBoolVariable("stream_events.decode_streaming",
							 "Logical decoding hands the worker a large transaction's inserts before its commit.",
							 "A transaction larger than logical_decoding_work_mem is streamed to the worker, which keeps "
							 "its events (past 16MB in a temporary file) and folds them at the "
							 "commit, instead of the reorder buffer spilling every change to disk "
							 "(docs/aggregates.md). Not while a capture is defined. Takes effect at the worker's next "
							 "decoding start (a definition changed, an error, a restart).",
							 &se_decode_streaming, true, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("stream_events.wake_delay_max",
							"Longest rest of the worker between rounds when producers wake it.",
							"Producers that commit events wake the worker of a database with activations; it rests ten times as long as its last round took, at most this, so that busy streams are batched.",
							&se_wake_delay_max_ms, 5, 0, 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("stream_events.activation_retention",
							"How long acknowledged rows of stream.activations are kept.",
							"Rows every consumer of their channel acknowledged (or of channels without consumers) are deleted once older; unacknowledged rows stay.",
							&se_activation_retention, 7 * 24 * 3600, 60, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomEnumVariable("stream_events.consumer",
							 "What feeds continuous aggregates and batched activations: logical decoding or the ingest queue.",
							 "auto: logical decoding when wal_level = logical, else the ingest queue "
							 "(transactions read by snapshot, docs/queue-mode.md). Changing it makes every "
							 "definition start again from its stream (docs/queue-mode.md, \"Changing the mode\").",
							 &se_consumer_source, CONSUMER_AUTO, consumer_source_options,
							 PGC_SIGHUP, 0, check_consumer_source, NULL, NULL);
}

/* settings that only server start can set: defined only when preloaded */
void
guc_init_preloaded(void)
{
	/* only settable at server start, so only defined when preloaded */
	DefineCustomIntVariable("stream_events.max_streams",
							"Streams and event names whose counters shared memory holds, cluster-wide.",
							NULL, &se_max_streams, 1000, 16, 1000000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
}
