/*-------------------------------------------------------------------------
 * consumer.h
 *	  The consumer as the worker runs it: one round at a time (load the
 *	  definitions, backfill, decode what was flushed, apply), and its end.
 *	  Implemented in src/consumer/; sinks plug in through sink.h.
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_CONSUMER_H
#define STREAM_EVENTS_CONSUMER_H

#include "postgres.h"

#include "datatype/timestamp.h"

/* true while there are definitions (the worker then polls) */
extern bool consumer_round(bool *installed);
/* whether an activation timer falls due by horizon (or that is not known) */
extern bool consumer_timers_due(TimestampTz horizon);
extern void consumer_shutdown(void);
extern void consumer_extension_dropped(void);
extern char *consumer_slot_name(Oid dboid);

#endif							/* STREAM_EVENTS_CONSUMER_H */
