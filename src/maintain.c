/*-------------------------------------------------------------------------
 * maintain.c
 *	  The one place where rows of a stream move: adopting events that landed
 *	  in a stream's default partition (far past or future occurred_at) into
 *	  the partition created for them.  The rest of partition maintenance
 *	  (creation ahead, retention, dedup pruning) is SQL in stream.maintain().
 *
 * A move is a DELETE from the default partition and an INSERT into the new
 * table in one transaction.  The append-only trigger lets the DELETE through
 * only while se_maintenance_in_progress is set here, and the transaction is
 * marked with a transactional logical message (prefix "stream_events",
 * content "move") so that the decoding consumer skips it: moved events were
 * already counted when they arrived.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "replication/message.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "stream_events.h"

PG_FUNCTION_INFO_V1(stream_move_rows);

bool		se_maintenance_in_progress = false;

#define MOVE_MESSAGE_PREFIX "stream_events"

Datum
stream_move_rows(PG_FUNCTION_ARGS)
{
	Oid			source = PG_GETARG_OID(0);
	Oid			target = PG_GETARG_OID(1);
	TimestampTz lower = PG_GETARG_TIMESTAMPTZ(2);
	TimestampTz upper = PG_GETARG_TIMESTAMPTZ(3);
	Oid			argtypes[2] = {TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		args[2] = {TimestampTzGetDatum(lower), TimestampTzGetDatum(upper)};
	char	   *sql;
	uint64		moved = 0;

	if (!pg_class_ownercheck(source, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, get_rel_name(source));
	if (!pg_class_ownercheck(target, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, get_rel_name(target));

	sql = psprintf("WITH moved AS (DELETE FROM %s WHERE occurred_at >= $1 AND occurred_at < $2 "
				   "RETURNING *) INSERT INTO %s SELECT * FROM moved",
				   DatumGetCString(DirectFunctionCall1(regclassout, ObjectIdGetDatum(source))),
				   DatumGetCString(DirectFunctionCall1(regclassout, ObjectIdGetDatum(target))));

	if (XLogLogicalInfoActive())
		LogLogicalMessage(MOVE_MESSAGE_PREFIX, "move", 4, true);

	SPI_connect();
	se_maintenance_in_progress = true;
	PG_TRY();
	{
		if (SPI_execute_with_args(sql, 2, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not move events from %s", get_rel_name(source));
		moved = SPI_processed;
	}
	PG_FINALLY();
	{
		se_maintenance_in_progress = false;
	}
	PG_END_TRY();
	SPI_finish();

	PG_RETURN_INT64((int64) moved);
}
