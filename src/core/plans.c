/*-------------------------------------------------------------------------
 * plans.c
 *	  Plans of the extension's own fixed statements, kept for the life of
 *	  the process.  The plan cache re-plans them when what they read
 *	  changes (the catalog tables altered by an upgrade, dropped and
 *	  created again with the extension), from the same text.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "core/plans.h"

SPIPlanPtr
plan_keep(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

int
plan_execute(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
			 Datum *args, const char *nulls, bool read_only, long count)
{
	if (*plan == NULL)
		*plan = plan_keep(sql, nargs, argtypes);
	return SPI_execute_plan(*plan, args, nulls, read_only, count);
}

void
plan_forget(SPIPlanPtr *const *plans, int n)
{
	for (int i = 0; i < n; i++)
	{
		if (*plans[i])
			SPI_freeplan(*plans[i]);
		*plans[i] = NULL;
	}
}
