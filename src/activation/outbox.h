/*-------------------------------------------------------------------------
 * outbox.h
 *	  What outbox.c (the firings, their batch, the INSERT) and
 *	  outbox_direct.c (the rows written without SQL) share: an outbox row
 *	  to write.  Internal to those two files.
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_ACTIVATION_OUTBOX_H
#define STREAM_EVENTS_ACTIVATION_OUTBOX_H

#include "utils/timestamp.h"

#include "activation/activation.h"

/* one firing to write into stream.activations */
typedef struct FireRow
{
	ActRuntime *act;			/* counts its firings; NULL: act_fire_row's */
	const char *activation;
	const char *channel;
	bool		notify_id;
	int64		id;				/* set when written */
	char	   *key;			/* NULL: none */
	char	   *payload;		/* JSON text, or NULL: payload_jsonb */
	Datum		payload_jsonb;	/* the payload as jsonb, when payload is NULL */
	Datum		event_id;		/* 0: none; a copy in the batch's context */
	TimestampTz occurred_at;	/* 0: none */
	TimestampTz received_at;	/* 0: none */
	TimestampTz due_at;			/* on_absence: the deadline; 0: none */
} FireRow;

/*
 * An on_absence firing is late when written more than a second after its
 * deadline (the server was down or behind); others never are.
 */
static inline bool
fire_row_late(FireRow *r)
{
	return r->due_at != 0 && GetCurrentTimestamp() - r->due_at > USECS_PER_SEC;
}

/* outbox_direct.c */
extern bool outbox_write_direct(FireRow *rows, int nrows);

#endif							/* STREAM_EVENTS_ACTIVATION_OUTBOX_H */
