/*-------------------------------------------------------------------------
 * ddl_guard.c
 *	  Append-only at the DDL level: a stream's partitions (the default one
 *	  included) are not dropped, detached or truncated, the envelope
 *	  columns of a stream or its partitions are not dropped, renamed,
 *	  retyped or made nullable, and the stream's own triggers (ingest,
 *	  append-only, no-truncate) are not dropped or disabled, except by the
 *	  extension itself.
 *
 * Row-level triggers (stream.c) stop UPDATE, DELETE and TRUNCATE; DDL needs
 * more.  Two mechanisms, both in C so that no role can switch them off:
 *
 * - Before a utility statement runs (the utility hook, stream_events.c):
 *   TRUNCATE of a stream or partition, ALTER TABLE ... DETACH PARTITION of
 *   a stream (CONCURRENTLY too: its first transaction commits before any
 *   event trigger could object), ALTER TABLE / RENAME on envelope columns.
 *   These are refused before anything happens.
 *
 * - Drops: the object-access hook sees every relation dropped, whatever
 *   the command (DROP TABLE, DROP SCHEMA ... CASCADE, DROP OWNED, a
 *   partition moved to another schema or given to another owner), while
 *   its catalog rows still exist.  A partition of a stream is noted; once
 *   the utility statement has run (and again at pre-commit, for drops not
 *   made by a utility statement), a noted partition whose stream still
 *   exists makes the command fail, and its transaction undoes the drop.
 *   A drop that takes the whole stream with it (stream.drop_stream, DROP
 *   TABLE of the stream, DROP SCHEMA ... CASCADE, DROP OWNED) passes.  An
 *   event trigger could not do this: at sql_drop the partition's parent is
 *   gone from pg_inherits, and at ddl_command_start the objects are not
 *   known yet.
 *
 * The extension's own exceptions: retention (stream._drop_expired_partition,
 * which drops only a partition that ends before now() - retention, and
 * lets the hook pass exactly that relation for the length of its DROP),
 * and extension scripts (CREATE/ALTER EXTENSION).  The exception is a
 * backend-local variable no SQL can set.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "stream/ddl_guard.h"
#include "stream_events.h"

PG_FUNCTION_INFO_V1(stream_drop_expired_partition);

/* A partition of a stream dropped by the current command, not yet judged. */
typedef struct PendingDrop
{
	Oid			part;
	Oid			stream;
	char	   *part_name;
	bool		is_default;
	SubTransactionId subid;
} PendingDrop;

static List *pending_drops = NIL;	/* in TopTransactionContext */

/* the one partition retention is dropping right now (InvalidOid: none) */
static Oid	retention_drop = InvalidOid;

static object_access_hook_type prev_object_access_hook = NULL;

/*
 * Is relid a registered stream?  Read from stream.streams directly (no
 * row level security: the guard must see every stream, whoever asks),
 * with the latest snapshot so a stream created in this transaction counts.
 * *retention (if asked) gets a copy of its retention, NULL when none.
 */
bool
ddl_stream_registered(Oid relid, Interval **retention)
{
	Oid			nsp = get_namespace_oid("stream", true);
	Oid			catalog;
	AttrNumber	relid_att;
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Snapshot	snap;
	bool		found;

	if (retention)
		*retention = NULL;
	if (!OidIsValid(nsp))
		return false;
	catalog = get_relname_relid("streams", nsp);
	if (!OidIsValid(catalog))
		return false;
	relid_att = get_attnum(catalog, "relid");
	if (relid_att == InvalidAttrNumber)
		return false;

	rel = table_open(catalog, AccessShareLock);
	ScanKeyInit(&key, relid_att, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = systable_beginscan(rel, InvalidOid, false, snap, 1, &key);
	tup = systable_getnext(scan);
	found = HeapTupleIsValid(tup);
	if (found && retention)
	{
		AttrNumber	ret_att = get_attnum(catalog, "retention");
		bool		isnull = true;
		Datum		d = (Datum) 0;

		if (ret_att != InvalidAttrNumber)
			d = heap_getattr(tup, ret_att, RelationGetDescr(rel), &isnull);
		if (!isnull)
		{
			*retention = palloc(sizeof(Interval));
			memcpy(*retention, DatumGetIntervalP(d), sizeof(Interval));
		}
	}
	systable_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * The stream relid is, or belongs to as a partition (*is_partition), or
 * InvalidOid.
 */
static Oid
stream_of(Oid relid, bool *is_partition)
{
	char		relkind = get_rel_relkind(relid);

	*is_partition = false;
	if (relkind == RELKIND_PARTITIONED_TABLE && ddl_stream_registered(relid, NULL))
		return relid;
	if ((relkind == RELKIND_RELATION || relkind == RELKIND_PARTITIONED_TABLE ||
		 relkind == RELKIND_FOREIGN_TABLE) && get_rel_relispartition(relid))
	{
		Oid			parent = get_partition_parent(relid, true);

		if (OidIsValid(parent) && get_rel_relkind(parent) == RELKIND_PARTITIONED_TABLE &&
			ddl_stream_registered(parent, NULL))
		{
			*is_partition = true;
			return parent;
		}
	}
	return InvalidOid;
}

/* as regclass prints it: schema-qualified unless on the search path */
static char *
rel_display(Oid relid)
{
	return DatumGetCString(DirectFunctionCall1(regclassout, ObjectIdGetDatum(relid)));
}

static char *
retention_hint(Oid stream)
{
	return psprintf("Events leave a stream only through its retention, which stream.maintain() applies by dropping whole partitions; "
					"to remove the stream and all its events use SELECT stream.drop_stream(%s).",
					quote_literal_cstr(rel_display(stream)));
}

/* ---- drops ---------------------------------------------------------- */

static void
guard_object_access(ObjectAccessType access, Oid classId, Oid objectId,
					int subId, void *arg)
{
	bool		is_partition;
	Oid			stream;
	MemoryContext old;
	PendingDrop *p;

	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);

	if (access != OAT_DROP || classId != RelationRelationId || subId != 0)
		return;
	if (!IsTransactionState() || creating_extension)
		return;
	if (OidIsValid(retention_drop) && objectId == retention_drop)
		return;
	stream = stream_of(objectId, &is_partition);
	if (!OidIsValid(stream) || !is_partition)
		return;

	old = MemoryContextSwitchTo(TopTransactionContext);
	p = palloc(sizeof(PendingDrop));
	p->part = objectId;
	p->stream = stream;
	p->part_name = pstrdup(get_rel_name(objectId));
	p->is_default = (get_default_partition_oid(stream) == objectId);
	p->subid = GetCurrentSubTransactionId();
	pending_drops = lappend(pending_drops, p);
	MemoryContextSwitchTo(old);
}

/* A noted partition whose stream is still there: the command fails. */
static void
check_pending_drops(void)
{
	ListCell   *lc;

	if (pending_drops == NIL)
		return;
	foreach(lc, pending_drops)
	{
		PendingDrop *p = lfirst(lc);

		if (SearchSysCacheExists1(RELOID, ObjectIdGetDatum(p->stream)))
		{
			char	   *part_name = pstrdup(p->part_name);
			char	   *stream_name = rel_display(p->stream);
			Oid			stream = p->stream;
			bool		is_default = p->is_default;

			pending_drops = NIL;
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot drop partition \"%s\" of stream \"%s\"",
							part_name, stream_name),
					 errdetail("Stream %s is append-only: dropping its partition \"%s\" would delete the events it holds%s.",
							   stream_name, part_name,
							   is_default ? " and make later inserts of events outside the other partitions fail" : ""),
					 errhint("%s", retention_hint(stream))));
		}
	}
	/* every stream went with its partitions */
	pending_drops = NIL;
}

void
ddl_guard_after(void)
{
	check_pending_drops();
}

static void
guard_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			check_pending_drops();
			break;
		default:
			pending_drops = NIL;
			retention_drop = InvalidOid;
			break;
	}
}

/* drops made in an aborted subtransaction (or its children) are undone */
static void
guard_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (event != SUBXACT_EVENT_ABORT_SUB || pending_drops == NIL)
		return;
	foreach(lc, pending_drops)
	{
		PendingDrop *p = lfirst(lc);

		if (p->subid >= mySubid)
			pending_drops = foreach_delete_current(pending_drops, lc);
	}
}

/* ---- before a utility statement ------------------------------------- */

static int
envelope_column(const char *name)
{
	if (name == NULL)
		return -1;
	for (int i = 0; i < ENV_NCOLUMNS; i++)
		if (strcmp(name, envelope_column_names[i]) == 0)
			return i;
	return -1;
}

/*
 * What uses the stream, as the caller may see it (row level security of
 * the catalogs): "aggregates a, b; activations c", or "".
 */
static char *
stream_users(Oid stream)
{
	Oid			argtypes[1] = {REGCLASSOID};
	Datum		args[1] = {ObjectIdGetDatum(stream)};
	char	   *result = "";

	SPI_connect();
	if (SPI_execute_with_args(
							  "SELECT (SELECT pg_catalog.string_agg(a.view::pg_catalog.text, ', ' ORDER BY a.view::pg_catalog.text) "
							  "          FROM stream.aggregate_defs a WHERE a.stream OPERATOR(pg_catalog.=) $1), "
							  "       (SELECT pg_catalog.string_agg(d.name, ', ' ORDER BY d.name) "
							  "          FROM stream.activation_defs d WHERE d.stream OPERATOR(pg_catalog.=) $1 "
							  "            OR d.aggregate IN (SELECT a.view FROM stream.aggregate_defs a "
							  "                               WHERE a.stream OPERATOR(pg_catalog.=) $1))",
							  1, argtypes, args, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		char	   *aggs = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		char	   *acts = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		StringInfoData buf;

		initStringInfo(&buf);
		if (aggs)
			appendStringInfo(&buf, "; aggregates over it: %s", aggs);
		if (acts)
			appendStringInfo(&buf, "; activations on it: %s", acts);
		result = MemoryContextStrdup(CurTransactionContext, buf.data);
	}
	SPI_finish();
	return result;
}

/* the triggers that make a stream what it is (created by create_stream) */
static bool
guard_trigger(const char *name)
{
	return name != NULL &&
		(strcmp(name, "stream_events_ingest") == 0 ||
		 strcmp(name, "stream_events_append_only") == 0 ||
		 strcmp(name, "stream_events_no_truncate") == 0);
}

static void
refuse_trigger_change(Oid relid, Oid stream, bool is_partition,
					  const char *trigger, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 trigger ?
			 errmsg("cannot %s trigger \"%s\" of %s \"%s\"", what, trigger,
					is_partition ? "stream partition" : "stream",
					is_partition ? get_rel_name(relid) : rel_display(stream)) :
			 errmsg("cannot %s the triggers of %s \"%s\"", what,
					is_partition ? "stream partition" : "stream",
					is_partition ? get_rel_name(relid) : rel_display(stream)),
			 errdetail("The triggers of stream %s check, deduplicate and count every event and keep the stream append-only.",
					   rel_display(stream)),
			 errhint("What ingest checks is set with stream.set_policy() and stream.define_contract(); "
					 "to remove the stream and all its events use SELECT stream.drop_stream(%s).",
					 quote_literal_cstr(rel_display(stream)))));
}

static void
refuse_envelope_change(Oid relid, Oid stream, bool is_partition,
					   const char *column, const char *what)
{
	char	   *stream_name = rel_display(stream);

	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot %s column \"%s\" of %s \"%s\"", what, column,
					is_partition ? "stream partition" : "stream",
					is_partition ? get_rel_name(relid) : stream_name),
			 errdetail("\"%s\" is an envelope column of stream %s: ingest, dedup, partitioning, contracts and the worker rely on it%s.",
					   column, stream_name, stream_users(stream)),
			 errhint("The envelope of a stream does not change: put new fields in properties or context, "
					 "or create a stream of another shape with stream.create_stream() and move producers to it.")));
}

static void
check_truncate(TruncateStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->relations)
	{
		RangeVar   *rv = lfirst_node(RangeVar, lc);
		Oid			relid = RangeVarGetRelid(rv, NoLock, true);
		bool		is_partition;
		Oid			stream;

		if (!OidIsValid(relid))
			continue;			/* TRUNCATE says it is missing */
		stream = stream_of(relid, &is_partition);
		if (!OidIsValid(stream))
			continue;
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("TRUNCATE is not allowed on stream \"%s\"", rel_display(stream)),
				 is_partition ?
				 errdetail("\"%s\" is a partition of stream %s, which is append-only: events are never removed once accepted.",
						   get_rel_name(relid), rel_display(stream)) :
				 errdetail("Stream %s is append-only: events are never removed once accepted.",
						   rel_display(stream)),
				 errhint("%s", retention_hint(stream))));
	}
}

static void
check_alter_table(AlterTableStmt *stmt)
{
	Oid			relid;
	Oid			stream;
	bool		is_partition;
	ListCell   *lc;

	if (stmt->objtype != OBJECT_TABLE && stmt->objtype != OBJECT_FOREIGN_TABLE)
		return;
	relid = RangeVarGetRelid(stmt->relation, NoLock, true);
	if (!OidIsValid(relid))
		return;
	stream = stream_of(relid, &is_partition);
	if (!OidIsValid(stream))
		return;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

		switch (cmd->subtype)
		{
			case AT_DetachPartition:
				if (!is_partition)
				{
					PartitionCmd *pc = (PartitionCmd *) cmd->def;
					Oid			part = RangeVarGetRelid(pc->name, NoLock, true);

					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("cannot detach partition \"%s\" from stream \"%s\"",
									pc->name->relname, rel_display(stream)),
							 errdetail("Stream %s is append-only: a detached partition takes its events out of the stream%s.",
									   rel_display(stream),
									   (OidIsValid(part) && part == get_default_partition_oid(stream)) ?
									   ", and inserts outside the other partitions would fail" : ""),
							 errhint("%s", retention_hint(stream))));
				}
				break;
			case AT_DropColumn:
				if (envelope_column(cmd->name) >= 0)
					refuse_envelope_change(relid, stream, is_partition, cmd->name, "drop");
				break;
			case AT_AlterColumnType:
				if (envelope_column(cmd->name) >= 0)
					refuse_envelope_change(relid, stream, is_partition, cmd->name, "change the type of");
				break;
			case AT_DropNotNull:
				if (envelope_column(cmd->name) >= 0)
					refuse_envelope_change(relid, stream, is_partition, cmd->name, "drop NOT NULL of");
				break;
			case AT_DisableTrig:
			case AT_EnableReplicaTrig:
				/* ENABLE REPLICA: fires only when session_replication_role = replica */
				if (guard_trigger(cmd->name))
					refuse_trigger_change(relid, stream, is_partition, cmd->name,
										  cmd->subtype == AT_DisableTrig ? "disable" : "change the firing of");
				break;
			case AT_DisableTrigAll:
			case AT_DisableTrigUser:
				refuse_trigger_change(relid, stream, is_partition, NULL, "disable");
				break;
			default:
				break;
		}
	}
}

static void
check_rename(RenameStmt *stmt)
{
	Oid			relid;
	Oid			stream;
	bool		is_partition;

	if (stmt->renameType != OBJECT_COLUMN || stmt->relation == NULL ||
		envelope_column(stmt->subname) < 0)
		return;
	relid = RangeVarGetRelid(stmt->relation, NoLock, true);
	if (!OidIsValid(relid))
		return;
	stream = stream_of(relid, &is_partition);
	if (OidIsValid(stream))
		refuse_envelope_change(relid, stream, is_partition, stmt->subname, "rename");
}

/* DROP TRIGGER stream_events_... ON <stream or partition> */
static void
check_drop_trigger(DropStmt *stmt)
{
	ListCell   *lc;

	if (stmt->removeType != OBJECT_TRIGGER)
		return;
	foreach(lc, stmt->objects)
	{
		List	   *names = (List *) lfirst(lc);
		char	   *trigger;
		RangeVar   *rv;
		Oid			relid;
		Oid			stream;
		bool		is_partition;

		if (list_length(names) < 2)
			continue;
		trigger = strVal(llast(names));
		if (!guard_trigger(trigger))
			continue;
		rv = makeRangeVarFromNameList(list_truncate(list_copy(names), list_length(names) - 1));
		relid = RangeVarGetRelid(rv, NoLock, true);
		if (!OidIsValid(relid))
			continue;
		stream = stream_of(relid, &is_partition);
		if (OidIsValid(stream))
			refuse_trigger_change(relid, stream, is_partition, trigger, "drop");
	}
}

void
ddl_guard_before(Node *parsetree)
{
	if (creating_extension || !IsTransactionState())
		return;
	switch (nodeTag(parsetree))
	{
		case T_TruncateStmt:
			check_truncate((TruncateStmt *) parsetree);
			break;
		case T_AlterTableStmt:
			check_alter_table((AlterTableStmt *) parsetree);
			break;
		case T_RenameStmt:
			check_rename((RenameStmt *) parsetree);
			break;
		case T_DropStmt:
			check_drop_trigger((DropStmt *) parsetree);
			break;
		default:
			break;
	}
}

void
ddl_guard_init(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = guard_object_access;
	RegisterXactCallback(guard_xact_callback, NULL);
	RegisterSubXactCallback(guard_subxact_callback, NULL);
}

/* ---- retention ------------------------------------------------------ */

/* The upper bound of a range partition on timestamptz; false if none. */
static bool
partition_upper_bound(Oid part, TimestampTz *upper)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(part));
	Datum		d;
	bool		isnull;
	PartitionBoundSpec *spec;
	PartitionRangeDatum *prd;
	Const	   *c;

	if (!HeapTupleIsValid(tup))
		return false;
	d = SysCacheGetAttr(RELOID, tup, Anum_pg_class_relpartbound, &isnull);
	if (isnull)
	{
		ReleaseSysCache(tup);
		return false;
	}
	spec = (PartitionBoundSpec *) stringToNode(TextDatumGetCString(d));
	ReleaseSysCache(tup);
	if (!IsA(spec, PartitionBoundSpec) || spec->is_default ||
		spec->strategy != PARTITION_STRATEGY_RANGE || list_length(spec->upperdatums) != 1)
		return false;
	prd = linitial_node(PartitionRangeDatum, spec->upperdatums);
	if (prd->kind != PARTITION_RANGE_DATUM_VALUE || !IsA(prd->value, Const))
		return false;
	c = (Const *) prd->value;
	if (c->consttype != TIMESTAMPTZOID || c->constisnull)
		return false;
	*upper = DatumGetTimestampTz(c->constvalue);
	return true;
}

/*
 * stream._drop_expired_partition(part regclass) returns boolean: drops one
 * partition of a stream if it ends before now() - the stream's retention
 * (true), else leaves it (false).  DROP TABLE checks the caller owns it.
 * The only way a partition of a stream is dropped while the stream stays.
 */
Datum
stream_drop_expired_partition(PG_FUNCTION_ARGS)
{
	Oid			part = PG_GETARG_OID(0);
	Oid			parent;
	Interval   *retention;
	TimestampTz upper;
	TimestampTz limit;
	char	   *sql;
	Oid			saved = retention_drop;

	if (get_rel_relkind(part) != RELKIND_RELATION || !get_rel_relispartition(part) ||
		!OidIsValid(parent = get_partition_parent(part, true)) ||
		!ddl_stream_registered(parent, &retention))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a partition of a stream", get_rel_name(part) ? get_rel_name(part) : "?"),
				 errhint("stream.maintain() applies retention; it calls this function.")));
	if (retention == NULL || !partition_upper_bound(part, &upper))
		PG_RETURN_BOOL(false);
	limit = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
													TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
													IntervalPGetDatum(retention)));
	if (upper > limit)
		PG_RETURN_BOOL(false);

	sql = psprintf("DROP TABLE %s",
				   quote_qualified_identifier(get_namespace_name(get_rel_namespace(part)),
											  get_rel_name(part)));
	SPI_connect();
	retention_drop = part;
	PG_TRY();
	{
		if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not drop partition %s", get_rel_name(part));
	}
	PG_FINALLY();
	{
		retention_drop = saved;
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_BOOL(true);
}
