/*-------------------------------------------------------------------------
 * internal.h
 *	  State shared by the files of the consumer (src/consumer/): the
 *	  definitions loaded, the feeds of the streams they fold, the decoding
 *	  context, the batch, the failure boundary.  Not for other layers:
 *	  sinks use sink.h, the worker consumer.h.
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_CONSUMER_INTERNAL_H
#define STREAM_EVENTS_CONSUMER_INTERNAL_H

#include "postgres.h"

#include "replication/logical.h"
#include "utils/elog.h"
#include "utils/uuid.h"

#include "consumer/sink.h"

#define MAX_SINKS 4

/* a stream that feeds definitions */
typedef struct StreamFeed
{
	Oid			stream;
	TupleDesc	desc;
	TupleTableSlot *slot;		/* a row in the stream's type */
	List	   *defs;			/* ConsumerDef, in sink order */
} StreamFeed;

/* driver.c */
extern const ConsumerSink *consumer_sinks[MAX_SINKS];
extern int	consumer_nsinks;
extern MemoryContext consumer_cxt;	/* lives as long as the worker */
extern MemoryContext defs_cxt;	/* the definitions; reset on reload */
extern List *consumer_defs;		/* ConsumerDef of every sink, in sink order */
extern List *consumer_feeds;	/* StreamFeed */
extern int64 batch_units;		/* memory units folded since the last apply */
extern TimestampTz batch_started;
extern StreamFeed *feed_of(Oid stream);
extern ConsumerDef *def_find(const ConsumerSink *sink, int32 id);
extern List *defs_of(const ConsumerSink *sink);
extern List *defs_of_in(List *defs, const ConsumerSink *sink);
extern TimestampTz last_idle_write;	/* the last apply that wrote */

/* apply.c */
extern void apply_batches(XLogRecPtr upto, bool write_idle);
extern void reset_batches(void);
extern void consumer_check_memory(void);
extern int64 spills;			/* times the batches were spilled (for DEBUG) */
extern void consumer_init(void);
extern void free_definitions(void);
extern ConsumerDef *load_definition(const ConsumerSink *sink, int32 id);

/* slot.c: the database's slot and its decoding */
extern LogicalDecodingContext *dctx;
extern LogicalDecodingContext *bf_ctx;	/* a backfill's short-lived slot */
extern bool consumer_active;	/* our output plugin runs in the worker */
extern RepOriginId own_origin;
extern bool flush_seen;
extern bool stop_after_commit;
extern TimestampTz decode_horizon;	/* every commit before it is decoded */
extern bool decoded_to_end;
extern XLogRecPtr decoded_end;
extern void release_decoding(void);
extern LogicalDecodingContext *create_slot(const char *name, bool persistent,
										   bool need_full_snapshot);
extern bool ensure_main_slot(void);
extern void drop_main_slot(const char *why);
extern void decode_available(void);
extern void warn_if_slot_holds_wal(void);

/* streamed.c: large transactions decoded before their commit */
extern bool decode_streaming;	/* slot.c asks the plugin to stream */
extern void streamed_keep(ReorderBufferTXN *txn, TransactionId subxid,
						  StreamFeed *feed, TupleTableSlot *row);
extern void streamed_abort(ReorderBufferTXN *txn);
extern void streamed_commit(ReorderBufferTXN *txn);
extern void streamed_reset(void);

/* plugin.c: the output plugin and the fold of a decoded event */
extern void part_cache_reset(void);
extern void part_cache_register(void);
extern void fold_scope_forget(void);
/*
 * one event (of the commit at lsn; in queue mode of the top-level
 * transaction xid, else 0) through its stream's definitions
 */
extern void fold_event(StreamFeed *feed, XLogRecPtr lsn, TimestampTz commit_time,
					   uint64 xid, TupleTableSlot *row);
/* leaves the owner scope fold_event left open (end of a transaction) */
extern void fold_scope_end(void);

/*
 * queue.c: the ingest queue.  A position in queue mode is window w as the
 * pg_lsn QUEUE_POSITION(w) (docs/queue-mode.md): the top bit, never set
 * in a WAL position, tells the two apart.
 */
#define QUEUE_POSITION_BIT (UINT64CONST(1) << 63)
#define QUEUE_POSITION(w) ((XLogRecPtr) (QUEUE_POSITION_BIT | (uint64) (w)))
#define QUEUE_POSITION_IS(lsn) (((lsn) & QUEUE_POSITION_BIT) != 0)
#define QUEUE_TICK(lsn) ((int64) ((lsn) & ~QUEUE_POSITION_BIT))
extern XLogRecPtr queue_read_upto;
extern void queue_make_tick(void);
extern void queue_read_available(void);
extern void queue_release(XLogRecPtr confirm);
extern bool queue_adopt_mode(void);
extern void queue_release_idle(void);
extern XLogRecPtr queue_backfill_start(Oid stream, Datum *xids);

/* failure.c: the failure boundary per definition */
extern ConsumerDef *current_def;	/* the definition being folded or applied */
extern bool eval_phase;			/* its expressions are being evaluated */
extern XLogRecPtr eval_lsn;
extern bool eval_has_event;
extern pg_uuid_t eval_event;
extern List *parked;			/* ParkedDef */
extern bool retry_pending;
extern void note_event(TupleTableSlot *row);
extern void fold_def(ConsumerDef *def, ConsumerEvent *ev);
extern bool def_is_parked(const ConsumerSink *sink, int32 id, bool in_error);
extern void parked_prune(const ConsumerSink *sink, List *states);
extern bool careful_is(const ConsumerSink *sink, int32 id);
extern void careful_forget(const ConsumerSink *sink, int32 id);
extern void careful_prune(void);
extern XLogRecPtr parked_confirm(XLogRecPtr confirm);
extern char *parked_describe(void);
extern void reset_dead_letters(void);
extern void dead_letters_spill(void);
extern MemoryContext dead_context(void);
extern void queue_dead_letter(ConsumerDef *def, XLogRecPtr lsn, ErrorData *edata);
extern void fold_one(ConsumerDef *def, ConsumerEvent *ev);
extern void round_failed(ErrorData *edata, bool *retry_at_once);
extern void failure_record(ErrorData *edata);
extern bool consumer_tagged_transaction(bool (*fn) (void *arg), void *arg, bool on_error);
extern void failure_round_ok(void);
extern void failure_forget_blame(void);
extern ErrorData *fold_guarded(ConsumerDef *def, ConsumerEvent *ev);
extern bool error_is_transient(ErrorData *edata);
extern char *describe_error(ErrorData *edata, const char *raw);
extern void park_backfill(const ConsumerSink *sink, int32 id);

/* retry.c */
extern void retry_dead_letters(void);

/* backfill.c: in the worker */
extern bool backfill_poll(void);
extern void backfill_schedule(void);
extern bool backfill_holds_slot(void);
extern bool backfill_wants_round(void);

#endif							/* STREAM_EVENTS_CONSUMER_INTERNAL_H */
