/*-------------------------------------------------------------------------
 * aggregate.h
 *	  Declarations shared by the continuous-aggregate modules:
 *	  definition.c (defining query analysis), lifecycle.c (the SQL
 *	  helpers around a definition: creation checks, waking the worker, dump
 *	  and restore), state.c (partial transition states), window.c
 *	  (tumble/hop) and the sink the worker's consumer folds events into
 *	  (runtime.h).  See docs/aggregates.md.
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_AGGREGATE_H
#define STREAM_EVENTS_AGGREGATE_H

#include "postgres.h"
#include "fmgr.h"
#include "nodes/execnodes.h"
#include "nodes/parsenodes.h"
#include "nodes/primnodes.h"

/* ---------- state.c: one aggregate function's partial-state calls ---------- */

typedef struct AggFuncInfo
{
	Oid			aggfnoid;
	Oid			transtype;
	int16		transtypeLen;
	bool		transtypeByVal;
	bool		internal;		/* transtype is internal: stored serialised */
	int			numInputs;		/* aggregated arguments */
	Oid			inputTypes[FUNC_MAX_ARGS];
	Oid			inputcollid;
	Oid			resulttype;
	char		finalmodify;
	int			numFinalArgs;
	bool		has_transfn;
	bool		has_finalfn;
	FmgrInfo	transfn;
	FmgrInfo	combinefn;
	FmgrInfo	serialfn;
	FmgrInfo	deserialfn;
	FmgrInfo	finalfn;
	Datum		initValue;
	bool		initValueIsNull;
	/* the minimal AggState that makes AggCheckCallContext() true */
	AggState   *aggstate;
	ExprContext *aggecontext;
	FunctionCallInfo transfcinfo;	/* args[1..numInputs] filled by caller */
} AggFuncInfo;

/* a transition value of one group */
typedef struct AggTransValue
{
	Datum		value;
	bool		isnull;
	bool		noTransValue;	/* strict transfn, null initcond, no input yet */
} AggTransValue;

extern AggFuncInfo *aggfunc_create(Oid aggfnoid, Oid *inputTypes, int numInputs,
								   Oid inputcollid, bool with_transfn,
								   MemoryContext mcxt);
extern void aggfunc_init_trans(AggFuncInfo *info, AggTransValue *tv,
							   MemoryContext aggcontext);
extern void aggfunc_advance(AggFuncInfo *info, AggTransValue *tv,
							MemoryContext aggcontext);
extern Datum aggfunc_serialize(AggFuncInfo *info, AggTransValue *tv,
							   MemoryContext aggcontext, bool *isnull);
extern void aggfunc_deserialize(AggFuncInfo *info, Datum stored, bool isnull,
								AggTransValue *tv, MemoryContext aggcontext);
extern void aggfunc_combine(AggFuncInfo *info, AggTransValue *into,
							AggTransValue *other, MemoryContext aggcontext);
extern Datum aggfunc_finalize(AggFuncInfo *info, AggTransValue *tv,
							  MemoryContext aggcontext, bool *isnull);

/* ---------- window.c ---------- */
extern void window_check_interval(Interval *iv, const char *what);

#define HOP_MAX_WINDOWS 10000
extern int	hop_windows(TimestampTz ts, Interval *width, Interval *slide,
						TimestampTz origin, TimestampTz *starts, int max);

/* ---------- definition.c: the shape of a defining query ---------- */

typedef struct AggShapeColumn
{
	char	   *name;
	bool		is_key;
	bool		visible;		/* in the select list (keys may be hidden) */
	Expr	   *expr;			/* key expression, or the Aggref */
	Oid			type;			/* key type, or the aggregate's result type */
	int32		typmod;
	Oid			collation;
	/* aggregates only */
	Oid			aggfnoid;
	Oid			transtype;		/* resolved; INTERNALOID when serialised */
	Oid			statetype;		/* column type in the state table */
} AggShapeColumn;

typedef struct AggShape
{
	Oid			stream;			/* the stream (partitioned table) */
	Index		stream_rti;
	Index		hop_rti;		/* 0 without a hopping window */
	FuncExpr   *hop;			/* stream.hop(...) call, Vars of the stream */
	Node	   *where;			/* WHERE clause, or NULL */
	List	   *columns;		/* of AggShapeColumn */
	int			nkeys;
	int			naggs;
} AggShape;

extern Query *aggregate_parse_query(const char *sql);
extern AggShape *aggregate_shape(Query *query, Oid owner);
extern Oid	aggregate_hop_oid(void);

/* lifecycle.c: aggregates restored from another database (dump and restore) */
extern bool aggregates_adopt_restored(void);

/* sink.c: the consumer's sink of continuous aggregates (consumer/sink.h) */
extern void aggregate_init(void);


#endif							/* STREAM_EVENTS_AGGREGATE_H */
