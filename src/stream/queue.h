/*-------------------------------------------------------------------------
 * queue.h
 *	  The producers' side of the ingest queue (queue.c).
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_STREAM_QUEUE_H
#define STREAM_EVENTS_STREAM_QUEUE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/array.h"

extern void queue_note_insert(Oid stream_relid, TimestampTz received_at);
extern ArrayType *queue_unread_xids(Oid stream_relid);

#endif							/* STREAM_EVENTS_STREAM_QUEUE_H */
