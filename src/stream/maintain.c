/*-------------------------------------------------------------------------
 * maintain.c
 *	  The one place where rows of a stream move: adopting events that landed
 *	  in a stream's default partition (far past or future occurred_at) into
 *	  the partition created for them, and deleting the events of a default
 *	  partition that are older than the stream's retention (they never get
 *	  a partition: stream.maintain creates none past retention).  The rest
 *	  of partition maintenance (creation ahead, dropping partitions past
 *	  retention, dedup pruning) is SQL in stream.maintain().
 *
 * A move is a DELETE from the default partition and an INSERT into the new
 * table in one statement.  The append-only trigger lets the DELETE through
 * only for the default partition being moved from, while a move runs
 * (se_maintenance_source).
 *
 * Who runs it: the stream's owner, in an owner scope (owner.h), whoever
 * called.  The DELETE fires the owner's row triggers and evaluates the
 * owner's index expressions; a superuser running stream.maintain() (or the
 * worker) must not run them with its own rights (CVE-2022-1552's class).
 *
 * Exactly once: moved events were counted by the decoding consumer when
 * they arrived.  The WAL records of the move are tagged with the
 * extension's private replication origin (origin.h), which the consumer
 * skips change by change.  Only the moved rows are tagged, nothing else in
 * the transaction, and no producer can set an origin (that takes superuser
 * rights) — unlike the logical message "move" this replaces, which any role
 * could emit to hide its own later inserts.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "stream/ddl_guard.h"
#include "core/origin.h"
#include "core/owner.h"
#include "stream/queue.h"
#include "stream_events.h"

PG_FUNCTION_INFO_V1(stream_move_rows);
PG_FUNCTION_INFO_V1(stream_expire_default_events);

Oid			se_maintenance_source = InvalidOid;

/*
 * Runs one of the extension's statements on a partition of a stream the way
 * every row change of maintenance runs: as the stream's owner, restricted
 * (its triggers and index expressions, analysis, planning and execution
 * included), with the records it writes tagged with the private origin,
 * and the append-only trigger letting it through for `source` only.
 * Returns the rows processed; `what` names the work in an error.
 */
static uint64
run_on_partition(Oid stream, Oid source, const char *sql, int nargs, Oid *argtypes,
				 Datum *args, int expected, const char *what)
{
	volatile uint64 processed = 0;
	Oid			saved_source = se_maintenance_source;
	OwnerScope	scope;
	OriginTag	tag;

	owner_enter(&scope, owner_of_relation(stream), NULL);
	SPI_connect();
	origin_tag_begin(&tag);
	se_maintenance_source = source;
	PG_TRY();
	{
		if (SPI_execute_with_args(sql, nargs, argtypes, args, NULL, false, 0) != expected)
			elog(ERROR, "could not %s %s", what, get_rel_name(source));
		processed = SPI_processed;
	}
	PG_FINALLY();
	{
		se_maintenance_source = saved_source;
		origin_tag_end(&tag);
	}
	PG_END_TRY();
	SPI_finish();
	owner_exit(&scope);
	return processed;
}

/* schema-qualified always: the owner scope has its own search_path */
static char *
qualified_name(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

Datum
stream_move_rows(PG_FUNCTION_ARGS)
{
	Oid			source = PG_GETARG_OID(0);
	Oid			target = PG_GETARG_OID(1);
	TimestampTz lower = PG_GETARG_TIMESTAMPTZ(2);
	TimestampTz upper = PG_GETARG_TIMESTAMPTZ(3);
	Oid			argtypes[3] = {TIMESTAMPTZOID, TIMESTAMPTZOID, XIDARRAYOID};
	Datum		args[3] = {TimestampTzGetDatum(lower), TimestampTzGetDatum(upper), 0};
	char	   *sql;
	Oid			stream;

	/* the caller's own right to move: it owns both tables */
	if (!pg_class_ownercheck(source, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, get_rel_name(source));
	if (!pg_class_ownercheck(target, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, get_rel_name(target));
	stream = get_rel_relispartition(source) ? get_partition_parent(source, true) : InvalidOid;
	if (!OidIsValid(stream))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a partition of a stream", get_rel_name(source)),
				 errhint("stream._move_rows moves events out of a stream's default partition; stream.maintain() calls it.")));

	/*
	 * Rows the queue's reader may not have read yet stay for a later run: a
	 * moved row has a new xmin, which no window reads (stream/queue.c).
	 * Logical decoding reads the WAL of their insert whatever happens later.
	 */
	args[2] = PointerGetDatum(queue_unread_xids(stream));
	sql = psprintf("WITH moved AS (DELETE FROM %s WHERE occurred_at >= $1 AND occurred_at < $2 "
				   "AND xmin OPERATOR(pg_catalog.<>) ALL ($3) "
				   "RETURNING *) INSERT INTO %s SELECT * FROM moved",
				   qualified_name(source), qualified_name(target));

	PG_RETURN_INT64((int64) run_on_partition(stream, source, sql, 3, argtypes, args,
												SPI_OK_INSERT, "move events from"));
}

/*
 * stream._expire_default_events(dflt regclass) returns bigint: deletes the
 * events of a stream's default partition older than now() - the stream's
 * retention, which retention would have dropped with their partition had
 * they had one.  Nothing else: the limit is the stream's own, read here.
 * As a move: the caller owns the partition, the DELETE runs as the
 * stream's owner, its records carry the private origin, and the
 * append-only trigger lets it through for this partition only.
 */
Datum
stream_expire_default_events(PG_FUNCTION_ARGS)
{
	Oid			source = PG_GETARG_OID(0);
	Oid			stream;
	Interval   *retention;
	TimestampTz limit;
	Oid			argtypes[1] = {TIMESTAMPTZOID};
	Datum		args[1];
	char	   *sql;

	if (!pg_class_ownercheck(source, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, get_rel_name(source));
	stream = get_rel_relispartition(source) ? get_partition_parent(source, true) : InvalidOid;
	if (!OidIsValid(stream) || get_default_partition_oid(stream) != source ||
		!ddl_stream_registered(stream, &retention))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not the default partition of a stream", get_rel_name(source)),
				 errhint("stream.maintain() applies retention; it calls this function.")));
	if (retention == NULL)
		PG_RETURN_INT64(0);
	limit = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
													TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
													IntervalPGetDatum(retention)));
	args[0] = TimestampTzGetDatum(limit);
	sql = psprintf("DELETE FROM %s WHERE occurred_at < $1", qualified_name(source));

	PG_RETURN_INT64((int64) run_on_partition(stream, source, sql, 1, argtypes, args,
												SPI_OK_DELETE, "expire events of"));
}
