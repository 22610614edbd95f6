/*-------------------------------------------------------------------------
 * owner.c
 *	  Owner scopes: the single place that switches identity to run
 *	  user-supplied SQL (aggregate queries, activation conditions, keys,
 *	  payloads, thresholds, backfill, maintenance moves) as the owner of the
 *	  definition or stream, the way PostgreSQL runs index expressions and
 *	  REFRESH MATERIALIZED VIEW since CVE-2022-1552 (see matview.c).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "core/owner.h"

void
owner_enter(OwnerScope *scope, Oid owner, const char *search_path)
{
	char	   *path;
	static const char *const bare = "pg_catalog, pg_temp";

	Assert(OidIsValid(owner));
	GetUserIdAndSecContext(&scope->saved_userid, &scope->saved_sec);
	SetUserIdAndSecContext(owner, scope->saved_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	scope->nestlevel = NewGUCNestLevel();
	scope->active = true;

	/*
	 * pg_temp last, explicitly: otherwise it is searched first for relations
	 * and types, and in a producer's session (immediate activations) its
	 * temporary objects could capture the owner's names.
	 */
	if (search_path == NULL || search_path[0] == '\0')
		path = (char *) bare;
	else
		path = psprintf("%s, pg_temp", search_path);
	(void) set_config_option("search_path", path, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	/* the GUC keeps its own copy; a scope per decoded event must not pile up */
	if (path != bare)
		pfree(path);
}

void
owner_exit(OwnerScope *scope)
{
	if (!scope->active)
		return;
	scope->active = false;
	AtEOXact_GUC(false, scope->nestlevel);
	SetUserIdAndSecContext(scope->saved_userid, scope->saved_sec);
}

Oid
owner_of_relation(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

Oid
owner_of_extension(void)
{
	Oid			extoid = get_extension_oid("stream_events", true);
	HeapTuple	tup;
	Oid			owner = BOOTSTRAP_SUPERUSERID;

	if (!OidIsValid(extoid))
		return owner;
	tup = SearchSysCache1(EXTENSIONOID, ObjectIdGetDatum(extoid));
	if (HeapTupleIsValid(tup))
	{
		owner = ((Form_pg_extension) GETSTRUCT(tup))->extowner;
		ReleaseSysCache(tup);
	}
	return owner;
}
