/*-------------------------------------------------------------------------
 * plans.h
 *	  The extension's own fixed statements, prepared once per process
 *	  (plans.c): the worker runs some of them every round, where parsing
 *	  and planning them each time was most of an idle round's cost.
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_CORE_PLANS_H
#define STREAM_EVENTS_CORE_PLANS_H

#include "postgres.h"

#include "executor/spi.h"

/* a plan of sql kept for the process (SPI_keepplan); an error if it fails */
extern SPIPlanPtr plan_keep(const char *sql, int nargs, Oid *argtypes);

/*
 * SPI_execute_plan of *plan, prepared from sql on first use (SPI
 * connected); the statement must be fixed text with schema-qualified names
 */
extern int	plan_execute(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
						 Datum *args, const char *nulls, bool read_only, long count);

/* frees the kept plans *plans[0..n-1] that exist and forgets them */
extern void plan_forget(SPIPlanPtr *const *plans, int n);

#endif							/* STREAM_EVENTS_CORE_PLANS_H */
