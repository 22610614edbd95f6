/*-------------------------------------------------------------------------
 * stream_events.h
 *	  Declarations shared by the modules of stream_events: GUCs, module
 *	  initialisation entry points and the small cross-module APIs.
 *	  src/README.md maps the modules.
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_H
#define STREAM_EVENTS_H

#include "postgres.h"
#include "access/attnum.h"
#include "nodes/nodes.h"
#include "datatype/timestamp.h"
#include "storage/itemptr.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"
#include "utils/uuid.h"

#include "core/guc.h"

/* Envelope columns of a stream, in table order. */
typedef enum EnvelopeColumn
{
	ENV_EVENT_ID = 0,
	ENV_EVENT_NAME,
	ENV_OCCURRED_AT,
	ENV_RECEIVED_AT,
	ENV_USER_ID,
	ENV_ANONYMOUS_ID,
	ENV_SESSION_ID,
	ENV_PROPERTIES,
	ENV_CONTEXT,
	ENV_NCOLUMNS
} EnvelopeColumn;

extern const char *const envelope_column_names[ENV_NCOLUMNS];

/* settings: core/guc.h */

/* true when loaded through shared_preload_libraries */
extern bool se_preloaded;

/* contract.c: the contracts of a stream, compiled */
typedef struct ContractSet ContractSet;

/* what an event's check against policy and contracts concluded */
typedef enum CheckResult
{
	CHECK_NOT_CHECKED,			/* no rule or contract applies */
	CHECK_PASSED,
	CHECK_FAILED,				/* errors set; policy says what to do */
	CHECK_UNPLANNED				/* no contract for this event name */
} CheckResult;

/* stream.c: what the insert trigger knows about a stream */
typedef struct StreamInfo
{
	Oid			relid;			/* the relation the trigger fired on */
	Oid			stream_relid;	/* the stream (partitioned parent) */
	int32		stream_id;
	bool		dedup;			/* dedup_window is not NULL */
	AttrNumber	attnums[ENV_NCOLUMNS];
	/* policy (stream.set_policy) */
	char		on_violation;	/* 'r'eject, 'q'uarantine, 'w'arn */
	char		on_unplanned;	/* 'a'llow, 'q'uarantine, 'r'eject */
	text	   *event_name_pattern; /* NULL: no rule */
	bool		require_identity;
	bool		has_max_future;
	int64		max_future_usecs;	/* from the stream, else the GUC */
	Oid			quarantine_relid;
	/* "format" asserted by its contracts: the stream's, else the GUC's */
	bool		format_assertion;
	bool		format_assertion_default;	/* the stream's is NULL */
	bool		guc_max_future_set; /* se_max_future_set when built */
	ContractSet *contracts;		/* NULL: none; compiled as above */
	bool		enforce;		/* any rule or contract applies */
	MemoryContext context;		/* owns pattern and contracts */
} StreamInfo;

extern StreamInfo *stream_lookup(Relation rel);
extern bool stream_check_row(Relation rel, StreamInfo *info, Datum *values,
							 bool *nulls, bool *received_changed);
extern void stream_row_accepted(StreamInfo *info, TimestampTz occurred_at,
								TimestampTz received_at);
extern Oid	stream_catalog_relid(void);

/* copy.c: COPY FROM into a stream, batched (false: not taken) */
struct CopyStmt;
struct QueryEnvironment;
extern bool stream_copy_from(struct CopyStmt *stmt, const char *query_string,
							 struct QueryEnvironment *query_env,
							 uint64 *processed);

/* contract.c */
extern ContractSet *contract_load(int32 stream_id, MemoryContext context,
								  bool format_assertion);
extern CheckResult contract_check(StreamInfo *info, Datum *values, bool *nulls,
								  int *version, Jsonb **errors, char **first_errors);
extern void contract_quarantine(StreamInfo *info, Datum *values, bool *nulls,
								int version, Jsonb *errors);
extern void contract_reject(StreamInfo *info, Datum *values, CheckResult result,
							int version, const char *first_errors);

/*
 * ingest.c: while stream.ingest inserts a chunk, the insert trigger counts
 * the rows of that stream it sees, so that an error names the batch index.
 */
typedef struct IngestProgress
{
	Oid			stream_relid;
	int			rows_seen;
} IngestProgress;

extern IngestProgress *se_ingest_progress;

/* dedup.c */
extern void dedup_register_batch(Oid stream_relid, int32 stream_id, int n,
								 const pg_uuid_t *event_ids, TimestampTz seen_at,
								 bool *accepted);
extern bool dedup_register(Oid stream_relid, int32 stream_id, Datum event_id,
						   TimestampTz seen_at);

/* stats.c */
extern void stats_shmem_request(void);
extern void stats_shmem_startup(void);
extern void stats_init(void);
extern void stats_count_event(Oid stream_relid, TimestampTz occurred_at,
							  TimestampTz received_at);
extern void stats_count_duplicate(Oid stream_relid);
extern void stats_count_check(Oid stream_relid, text *event_name, CheckResult result,
							  char on_failure);
extern void stats_count_rejected(Oid stream_relid, text *event_name);
extern uint64 stats_backend_duplicates;
extern uint64 stats_backend_accepted;
extern uint64 stats_backend_quarantined;

/*
 * worker/worker.c, for src/consumer/, src/aggregate/ and src/activation/,
 * which include this header rather than worker/worker.h (the rest of the
 * workers' API)
 */
extern void worker_set_consumer_wake(bool on);
extern void worker_wake_database(Oid dboid);
/* everything flushed before lsn is decoded and applied (now) */
extern void worker_note_consumer_position(XLogRecPtr lsn);
/*
 * definitions' DDL committed (bumps a counter the worker reads before it
 * looks at the catalogs again)
 */
extern void worker_definitions_changed(Oid dboid);
extern uint64 worker_definitions_generation(void);
/* queue mode: stream.flush asks for a tick, the worker takes the request */
extern void worker_request_tick(Oid dboid);
extern bool worker_take_tick_request(void);
extern bool worker_tick_requested(void);

/*
 * maintain.c: the default partition the extension is moving rows out of
 * (InvalidOid when none); the append-only trigger lets only its DELETE by.
 */
extern Oid	se_maintenance_source;



#endif							/* STREAM_EVENTS_H */
