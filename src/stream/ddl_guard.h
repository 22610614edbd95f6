/*-------------------------------------------------------------------------
 * ddl_guard.h
 *	  Append-only at the DDL level (ddl_guard.c): what the utility hook
 *	  calls around each utility statement.
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_DDL_GUARD_H
#define STREAM_EVENTS_DDL_GUARD_H

#include "postgres.h"
#include "datatype/timestamp.h"
#include "nodes/nodes.h"

/* once per backend, from _PG_init: the object-access hook, xact callbacks */
extern void ddl_guard_init(void);

/* before a utility statement runs: TRUNCATE, DETACH, envelope ALTERs */
extern void ddl_guard_before(Node *parsetree);

/* after it ran: partitions dropped while their stream stays */
extern void ddl_guard_after(void);

/*
 * Is relid a registered stream (read without row level security)?
 * *retention, if asked, gets a palloc'd copy of its retention (NULL: none).
 */
extern bool ddl_stream_registered(Oid relid, Interval **retention);

#endif							/* STREAM_EVENTS_DDL_GUARD_H */
