/*-------------------------------------------------------------------------
 * origin.h
 *	  The extension's private replication origin ("stream_events"): WAL
 *	  records written under it are the extension's own (rows moved between
 *	  partitions, the worker's state and outbox writes); the decoding
 *	  consumer skips them change by change.  No producer can forge it:
 *	  setting a session's origin takes superuser rights.
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_ORIGIN_H
#define STREAM_EVENTS_ORIGIN_H

#include "postgres.h"
#include "access/xlogdefs.h"

#define SE_ORIGIN_NAME "stream_events"

/* The origin's id, created if missing (needs a transaction). */
extern RepOriginId se_origin_id(bool create);

/*
 * Tag the WAL records written between origin_tag_begin and origin_tag_end
 * with the private origin.  Always pair them (PG_FINALLY): the session's
 * origin must be reset before commit, and the pre-commit callback
 * installed here resets it as a last resort.
 */
typedef struct OriginTag
{
	RepOriginId saved;
	bool		active;
} OriginTag;

extern void origin_tag_begin(OriginTag *tag);
extern void origin_tag_end(OriginTag *tag);

#endif							/* STREAM_EVENTS_ORIGIN_H */
