/*-------------------------------------------------------------------------
 * owner.h
 *	  The one way stream_events runs user-supplied SQL: as the owner of the
 *	  definition or stream, inside a security-restricted operation, in a
 *	  new GUC nest level with a pinned search_path (docs/security.md).
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_OWNER_H
#define STREAM_EVENTS_OWNER_H

#include "postgres.h"

typedef struct OwnerScope
{
	Oid			saved_userid;
	int			saved_sec;
	int			nestlevel;
	bool		active;
} OwnerScope;

/*
 * Become `owner` (SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION)
 * with search_path set to `search_path` followed by pg_temp (NULL or "":
 * "pg_catalog, pg_temp").  Everything between owner_enter and owner_exit —
 * parse analysis, planning (expression_planner folds immutable calls),
 * ExecInitExpr (EXECUTE checks) and execution — runs with the owner's
 * rights only.  Scopes nest.  owner_exit must run on every path out,
 * including errors caught with PG_TRY (a transaction or subtransaction
 * abort restores the user id and GUCs by itself).
 */
extern void owner_enter(OwnerScope *scope, Oid owner, const char *search_path);
extern void owner_exit(OwnerScope *scope);

/* The owner of a relation (ERROR if it does not exist). */
extern Oid	owner_of_relation(Oid relid);

/* The role that owns the extension's objects (catalog writes run as it). */
extern Oid	owner_of_extension(void);

#endif							/* STREAM_EVENTS_OWNER_H */
