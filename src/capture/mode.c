/*-------------------------------------------------------------------------
 * mode.c
 *	  stream._capture_mode(): which way captured changes travel in this
 *	  server, the consumer's mode (consumer_uses_queue, core/guc.h), for
 *	  the capture's SQL (its signature) and tests.  Its own function rather
 *	  than stream.consumer_mode() so that the capture's SQL depends on
 *	  nothing but C.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include "capture/capture.h"
#include "core/guc.h"

PG_FUNCTION_INFO_V1(stream_capture_mode);

/* stream._capture_mode(): 'logical' or 'queue' */
Datum
stream_capture_mode(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(consumer_uses_queue() ? "queue" : "logical"));
}
