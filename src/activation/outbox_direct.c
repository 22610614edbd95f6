/*-------------------------------------------------------------------------
 * outbox_direct.c
 *	  Outbox rows written without SQL (outbox_write_direct): the row's
 *	  values, the other columns' defaults as INSERT evaluates them, the
 *	  heap tuple and its index entries, and the NOTIFY with the row's JSON
 *	  built here as row_to_json writes it.  What it needs of the outbox
 *	  table (OutboxLayout) is worked out once per process and again after
 *	  a relcache invalidation.  An outbox this file does not know (triggers,
 *	  rules, CHECK constraints, columns of other types) is left to the
 *	  INSERT of outbox.c.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/uuid.h"

#include "activation/outbox.h"

/* the outbox columns a firing fills; the others take their defaults */
enum
{
	OB_ID, OB_ACTIVATION, OB_KEY, OB_PAYLOAD, OB_EVENT_ID, OB_OCCURRED_AT,
	OB_RECEIVED_AT, OB_CHANNEL, OB_DUE_AT, OB_LATE, OB_NCOLS
};
static const struct
{
	const char *name;
	Oid			type;
}			outbox_cols[OB_NCOLS] = {
	{"id", INT8OID}, {"activation", TEXTOID}, {"key", TEXTOID},
	{"payload", JSONBOID}, {"event_id", UUIDOID}, {"occurred_at", TIMESTAMPTZOID},
	{"received_at", TIMESTAMPTZOID}, {"channel", TEXTOID},
	{"due_at", TIMESTAMPTZOID}, {"late", BOOLOID}
};

/* a column type outbox_row_json writes as row_to_json does */
static bool
outbox_json_type(Oid type)
{
	switch (type)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case BOOLOID:
		case TEXTOID:
		case JSONBOID:
		case UUIDOID:
		case TIMESTAMPTZOID:
			return true;
		default:
			return false;
	}
}

/*
 * An outbox row as row_to_json(row) writes it (json.c's composite_to_json,
 * without line feeds): the same text whichever way the row was written.
 * Only the types outbox_json_type accepts.
 */
static void
outbox_row_json(StringInfo buf, TupleDesc desc, Datum *values, bool *isnull)
{
	bool		first = true;

	appendStringInfoChar(buf, '{');
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		if (!first)
			appendStringInfoChar(buf, ',');
		first = false;
		escape_json(buf, NameStr(att->attname));
		appendStringInfoChar(buf, ':');
		if (isnull[i])
		{
			appendStringInfoString(buf, "null");
			continue;
		}
		switch (att->atttypid)
		{
			case INT2OID:
				appendStringInfo(buf, "%d", (int) DatumGetInt16(values[i]));
				break;
			case INT4OID:
				appendStringInfo(buf, "%d", DatumGetInt32(values[i]));
				break;
			case INT8OID:
				appendStringInfo(buf, INT64_FORMAT, DatumGetInt64(values[i]));
				break;
			case BOOLOID:
				appendStringInfoString(buf, DatumGetBool(values[i]) ? "true" : "false");
				break;
			case TEXTOID:
				escape_json(buf, TextDatumGetCString(values[i]));
				break;
			case JSONBOID:
				{
					Jsonb	   *jb = DatumGetJsonbP(values[i]);

					(void) JsonbToCString(buf, &jb->root, VARSIZE(jb));
				}
				break;
			case UUIDOID:
				escape_json(buf, DatumGetCString(DirectFunctionCall1(uuid_out, values[i])));
				break;
			case TIMESTAMPTZOID:
				{
					char		ts[MAXDATELEN + 1];

					JsonEncodeDateTime(ts, values[i], TIMESTAMPTZOID, NULL);
					appendStringInfo(buf, "\"%s\"", ts);
				}
				break;
			default:
				elog(ERROR, "stream.activations: no JSON for type %u", att->atttypid);
		}
	}
	appendStringInfoChar(buf, '}');
}

/*
 * What outbox_write_direct needs to know of the outbox, worked out once
 * per process and again after a relcache invalidation of the table (ALTER
 * TABLE, a trigger or a default added, the extension dropped): the
 * immediate path calls it for every event.
 */
typedef struct OutboxLayout
{
	bool		valid;
	Oid			relid;			/* InvalidOid: no outbox */
	bool		direct;			/* outbox_write_direct may write it */
	int			natts;
	int			col[OB_NCOLS];	/* attribute index of each filled column */
	Expr	  **defaults;		/* per attribute, planned; NULL: none or filled */
	MemoryContext cxt;
} OutboxLayout;
static OutboxLayout layout = {0};

static void
layout_invalidate(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || !OidIsValid(layout.relid) || relid == layout.relid)
		layout.valid = false;
}

/* fills layout from the outbox rel (opened) */
static void
layout_build(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	MemoryContext old;

	MemoryContextReset(layout.cxt);
	layout.relid = RelationGetRelid(rel);
	layout.natts = desc->natts;
	layout.direct = false;
	layout.defaults = NULL;
	for (int c = 0; c < OB_NCOLS; c++)
		layout.col[c] = -1;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		if (!outbox_json_type(att->atttypid) || att->attgenerated)
			return;
		for (int c = 0; c < OB_NCOLS; c++)
			if (strcmp(NameStr(att->attname), outbox_cols[c].name) == 0)
			{
				if (att->atttypid != outbox_cols[c].type)
					return;
				layout.col[c] = i;
			}
	}
	for (int c = 0; c < OB_NCOLS; c++)
		if (layout.col[c] < 0)
			return;
	if (rel->trigdesc != NULL || rel->rd_rules != NULL ||
		(desc->constr != NULL && desc->constr->num_check > 0))
		return;

	/* the defaults of the columns a firing does not fill, as INSERT has them */
	old = MemoryContextSwitchTo(layout.cxt);
	layout.defaults = palloc0(sizeof(Expr *) * desc->natts);
	for (int i = 0; i < desc->natts; i++)
	{
		Node	   *expr;

		if (TupleDescAttr(desc, i)->attisdropped)
			continue;
		expr = build_column_default(rel, i + 1);
		if (expr != NULL)
			layout.defaults[i] = expression_planner((Expr *) expr);
	}
	for (int c = OB_ID + 1; c < OB_NCOLS; c++)
		layout.defaults[layout.col[c]] = NULL;
	MemoryContextSwitchTo(old);
	layout.direct = true;
}

/*
 * The batch written without SQL: each row's values, the other columns'
 * defaults (the id from its sequence, fired_at), the heap tuple and its
 * index entries, then the NOTIFY with the row's JSON.  What an INSERT
 * would do besides (triggers, rules, CHECK constraints, columns of other
 * types) the outbox has none of; if it has, returns false and writes
 * nothing.  Row-level security is not in the way: the INSERT runs as a
 * role that bypasses it too.
 */
bool
outbox_write_direct(FireRow *rows, int nrows)
{
	Relation	rel = NULL;
	TupleDesc	desc;
	int		   *col = layout.col;
	ExprState **defaults;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	ExprContext *econtext;
	CommandId	cid;
	MemoryContext row_cxt;
	MemoryContext old;
	StringInfoData json;

	if (layout.cxt == NULL)
	{
		layout.cxt = AllocSetContextCreate(CacheMemoryContext, "stream_events outbox layout",
										   ALLOCSET_SMALL_SIZES);
		CacheRegisterRelcacheCallback(layout_invalidate, (Datum) 0);
	}
	if (layout.valid && OidIsValid(layout.relid))
		rel = try_table_open(layout.relid, RowExclusiveLock);
	if (rel == NULL || !layout.valid)
	{
		Oid			nsp = get_namespace_oid("stream", true);
		Oid			relid = OidIsValid(nsp) ? get_relname_relid("activations", nsp) : InvalidOid;

		if (rel != NULL)
			table_close(rel, NoLock);
		rel = OidIsValid(relid) ? try_table_open(relid, RowExclusiveLock) : NULL;
		if (rel == NULL)
			return false;
		/* valid first: an invalidation while it is built makes it stale */
		layout.valid = true;
		layout_build(rel);
	}
	desc = RelationGetDescr(rel);
	if (!layout.direct || layout.natts != desc->natts)
	{
		table_close(rel, NoLock);
		return false;
	}

	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	slot = table_slot_create(rel, NULL);
	econtext = GetPerTupleExprContext(estate);
	cid = GetCurrentCommandId(true);

	old = MemoryContextSwitchTo(estate->es_query_cxt);
	defaults = palloc0(sizeof(ExprState *) * desc->natts);
	for (int i = 0; i < desc->natts; i++)
		if (layout.defaults[i] != NULL)
			defaults[i] = ExecInitExpr(layout.defaults[i], NULL);
	MemoryContextSwitchTo(old);

	row_cxt = AllocSetContextCreate(CurrentMemoryContext, "stream_events outbox row",
									ALLOCSET_DEFAULT_SIZES);
	for (int n = 0; n < nrows; n++)
	{
		FireRow    *r = &rows[n];
		Datum	   *values = slot->tts_values;
		bool	   *isnull = slot->tts_isnull;
		int64		id;

		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(row_cxt);
		ExecClearTuple(slot);
		for (int i = 0; i < desc->natts; i++)
		{
			isnull[i] = true;
			if (defaults[i] != NULL)
				values[i] = ExecEvalExpr(defaults[i], econtext, &isnull[i]);
		}
		values[col[OB_ACTIVATION]] = CStringGetTextDatum(r->activation);
		isnull[col[OB_ACTIVATION]] = false;
		if (r->key)
		{
			values[col[OB_KEY]] = CStringGetTextDatum(r->key);
			isnull[col[OB_KEY]] = false;
		}
		values[col[OB_PAYLOAD]] = r->payload ?
			DirectFunctionCall1(jsonb_in, CStringGetDatum(r->payload)) : r->payload_jsonb;
		isnull[col[OB_PAYLOAD]] = false;
		values[col[OB_EVENT_ID]] = r->event_id;
		isnull[col[OB_EVENT_ID]] = r->event_id == (Datum) 0;
		values[col[OB_OCCURRED_AT]] = TimestampTzGetDatum(r->occurred_at);
		isnull[col[OB_OCCURRED_AT]] = r->occurred_at == 0;
		values[col[OB_RECEIVED_AT]] = TimestampTzGetDatum(r->received_at);
		isnull[col[OB_RECEIVED_AT]] = r->received_at == 0;
		values[col[OB_CHANNEL]] = CStringGetTextDatum(r->channel);
		isnull[col[OB_CHANNEL]] = false;
		values[col[OB_DUE_AT]] = TimestampTzGetDatum(r->due_at);
		isnull[col[OB_DUE_AT]] = r->due_at == 0;
		values[col[OB_LATE]] = BoolGetDatum(fire_row_late(r));
		isnull[col[OB_LATE]] = false;
		for (int i = 0; i < desc->natts; i++)
			if (isnull[i] && TupleDescAttr(desc, i)->attnotnull)
				ereport(ERROR,
						(errcode(ERRCODE_NOT_NULL_VIOLATION),
						 errmsg("null value in column \"%s\" of relation \"%s\" violates not-null constraint",
								NameStr(TupleDescAttr(desc, i)->attname),
								RelationGetRelationName(rel))));
		if (isnull[col[OB_ID]])
			elog(ERROR, "stream.activations: a row without an id");
		id = DatumGetInt64(values[col[OB_ID]]);
		ExecStoreVirtualTuple(slot);

		table_tuple_insert(rel, slot, cid, 0, NULL);
		list_free(ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL));

		if (r->notify_id)
			act_notify_row(r->channel, id, NULL, true);
		else
		{
			initStringInfo(&json);
			outbox_row_json(&json, desc, values, isnull);
			act_notify_row(r->channel, id, json.data, false);
		}
		r->id = id;
		if (r->act)
			r->act->fired++;
		MemoryContextSwitchTo(old);
		ResetExprContext(econtext);
		MemoryContextReset(row_cxt);
	}
	MemoryContextDelete(row_cxt);
	ExecDropSingleTupleTableSlot(slot);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	/* what runs next in this transaction (a cooldown's look back) sees them */
	CommandCounterIncrement();
	return true;
}
