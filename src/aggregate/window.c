/*-------------------------------------------------------------------------
 * window.c
 *	  Event-time windows of continuous aggregates: stream.tumble(), a
 *	  date_bin with a default origin, and stream.hop(), the set of hopping
 *	  windows that hold a timestamp.  The worker calls hop_windows()
 *	  directly, so the view and its defining query agree by construction.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "access/tupdesc.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/tuplestore.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/timestamp.h"

#include "aggregate/aggregate.h"

PG_FUNCTION_INFO_V1(stream_tumble);
PG_FUNCTION_INFO_V1(stream_hop);

static int64
interval_usecs(Interval *iv, const char *what)
{
	int64		usecs;

	if (iv->month != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("window %s %s contains months or years", what,
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)))),
				 errdetail("Window widths and slides are fixed durations; a day counts as 24 hours."),
				 errhint("Use days, hours, minutes or seconds, e.g. '30 days'.")));
	if (pg_mul_s64_overflow(iv->day, USECS_PER_DAY, &usecs) ||
		pg_add_s64_overflow(usecs, iv->time, &usecs))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("window %s is out of range", what)));
	if (usecs <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("window %s must be positive", what),
				 errhint("Pass an interval such as '1 minute'.")));
	return usecs;
}

/* Raises what tumble/hop would raise for this width or slide. */
void
window_check_interval(Interval *iv, const char *what)
{
	(void) interval_usecs(iv, what);
}

/* stream.tumble(ts, width, origin): the window start, as date_bin() */
Datum
stream_tumble(PG_FUNCTION_ARGS)
{
	TimestampTz ts = PG_GETARG_TIMESTAMPTZ(0);
	Interval   *width = PG_GETARG_INTERVAL_P(1);
	TimestampTz origin = PG_GETARG_TIMESTAMPTZ(2);

	(void) interval_usecs(width, "width");
	return DirectFunctionCall3(timestamptz_bin, IntervalPGetDatum(width),
							   TimestampTzGetDatum(ts), TimestampTzGetDatum(origin));
}

/*
 * Starts of the windows [start, start + width), start = origin + k * slide,
 * that hold ts, latest first.  Returns how many were written to starts.
 */
int
hop_windows(TimestampTz ts, Interval *width, Interval *slide, TimestampTz origin,
			TimestampTz *starts, int max)
{
	int64		width_us = interval_usecs(width, "width");
	int64		slide_us = interval_usecs(slide, "slide");
	TimestampTz last;
	int			n = 0;

	if (width_us / slide_us >= max)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("hopping window width is more than %d slides", max - 1),
				 errhint("Use a larger slide or a smaller width.")));
	last = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_bin,
												   IntervalPGetDatum(slide),
												   TimestampTzGetDatum(ts),
												   TimestampTzGetDatum(origin)));
	for (TimestampTz start = last; start > ts - width_us; start -= slide_us)
	{
		if (!IS_VALID_TIMESTAMP(start))
			break;
		starts[n++] = start;
	}
	return n;
}

/* stream.hop(ts, width, slide, origin) RETURNS SETOF timestamptz */
Datum
stream_hop(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz starts[HOP_MAX_WINDOWS];
	int			n;

	TupleDesc	tupdesc;
	Tuplestorestate *store;
	MemoryContext old;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	n = hop_windows(PG_GETARG_TIMESTAMPTZ(0), PG_GETARG_INTERVAL_P(1),
					PG_GETARG_INTERVAL_P(2), PG_GETARG_TIMESTAMPTZ(3),
					starts, HOP_MAX_WINDOWS);
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	tupdesc = CreateTemplateTupleDesc(1);
	TupleDescInitEntry(tupdesc, (AttrNumber) 1, "hop", TIMESTAMPTZOID, -1, 0);
	store = tuplestore_begin_heap(false, false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = store;
	rsinfo->setDesc = tupdesc;
	MemoryContextSwitchTo(old);
	for (int i = n - 1; i >= 0; i--)
	{
		Datum		value = TimestampTzGetDatum(starts[i]);
		bool		isnull = false;

		tuplestore_putvalues(store, tupdesc, &value, &isnull);
	}
	return (Datum) 0;
}
