/*-------------------------------------------------------------------------
 * guc.h
 *	  The settings of stream_events (stream_events.*), all defined in
 *	  guc.c.
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_CORE_GUC_H
#define STREAM_EVENTS_CORE_GUC_H

#include "postgres.h"

extern void guc_init(void);
extern void guc_init_preloaded(void);

/* the worker and maintenance */
extern int	se_naptime;
extern int	se_partitions_ahead;
extern int	se_partitions_behind;

/* ingest */
extern int	se_max_streams;
extern char *se_max_future;
extern bool se_max_future_set;	/* stream_events.max_future is not '' */
extern int64 se_max_future_usecs;
extern bool jsonschema_format_assertion;
extern bool se_copy_batch;
extern int	jsonschema_max_cache_entries;

/* the consumer */
extern int	se_aggregate_poll_ms;
extern int	se_aggregate_batch_groups;
extern int	se_consumer_memory_kb;
extern bool se_decode_streaming;
extern int	se_slot_warning_size_mb;
extern int	se_wake_delay_max_ms;
extern int	se_activation_retention;

/* stream_events.consumer */
typedef enum ConsumerSource
{
	CONSUMER_AUTO,
	CONSUMER_LOGICAL,
	CONSUMER_QUEUE
}			ConsumerSource;
extern int	se_consumer_source;
/* the consumer reads the ingest queue (not logical decoding) */
extern bool consumer_uses_queue(void);

#endif							/* STREAM_EVENTS_CORE_GUC_H */
