/*-------------------------------------------------------------------------
 * mode.c
 *	  Which way captured changes travel in this server (capture.h):
 *	  logical decoding or the ingest queue.  A stub of the consumer's mode
 *	  until the driver's setting (stream_events.consumer) is defined by
 *	  core/guc.c: read by name, so this file needs no change when it is.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "capture/capture.h"

PG_FUNCTION_INFO_V1(stream_capture_mode);

bool
consumer_mode_is_queue(void)
{
	const char *mode = GetConfigOption("stream_events.consumer", true, false);

	if (mode != NULL && strcmp(mode, "queue") == 0)
		return true;
	if (mode != NULL && strcmp(mode, "logical") == 0)
		return false;
	return wal_level < WAL_LEVEL_LOGICAL;
}

/* stream._capture_mode(): 'logical' or 'queue' */
Datum
stream_capture_mode(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(consumer_mode_is_queue() ? "queue" : "logical"));
}
