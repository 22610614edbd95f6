/*-------------------------------------------------------------------------
 * event.c
 *	  What a captured change becomes, the same in both modes: the event's
 *	  name (<table>.insert|update|delete), properties (the captured columns
 *	  of the new row, or the old key of a deleted row, as JSON: the values
 *	  as row_to_json makes them), context (source, operation, key, changed
 *	  columns, position) and user_id (a column's value as text), and its
 *	  deterministic event_id (a version 5 UUID of the capture and the
 *	  change's position, so a change written twice is one event for the
 *	  stream's dedup).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "capture/capture.h"
#include "core/uuid.h"

/* the namespace of captured events' ids (a fixed, random UUID) */
static const pg_uuid_t capture_namespace = {{0x8c, 0x3e, 0x51, 0x0f, 0x2d, 0x6a, 0x4b, 0x17,
0x9a, 0x41, 0xc2, 0x7e, 0x05, 0xd3, 0x68, 0xb9}};

PG_FUNCTION_INFO_V1(stream_capture_event_id);

void
capture_event_id(int32 capture_id, const char *position, pg_uuid_t *result)
{
	char	   *name = psprintf("capture/%d/%s", capture_id, position);

	uuid_v5_from_name(&capture_namespace, name, strlen(name), result);
	pfree(name);
}

/* a text[] datum as a List of C strings (NULL: NIL) */
static List *
text_array_list(Datum d, bool isnull)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *l = NIL;

	if (isnull)
		return NIL;
	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			l = lappend(l, TextDatumGetCString(elems[i]));
	return l;
}

CaptureSpec *
capture_spec_from_row(HeapTuple tup, TupleDesc desc, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	CaptureSpec *spec = palloc0(sizeof(CaptureSpec));
	bool		isnull;
	Datum		d;

	spec->capture_id = DatumGetInt32(heap_getattr(tup, 1, desc, &isnull));
	spec->source = DatumGetObjectId(heap_getattr(tup, 2, desc, &isnull));
	spec->stream = DatumGetObjectId(heap_getattr(tup, 3, desc, &isnull));
	spec->owner = DatumGetObjectId(heap_getattr(tup, 4, desc, &isnull));
	spec->event_prefix = TextDatumGetCString(heap_getattr(tup, 5, desc, &isnull));
	spec->source_name = TextDatumGetCString(heap_getattr(tup, 6, desc, &isnull));
	d = heap_getattr(tup, 7, desc, &isnull);
	spec->columns = text_array_list(d, isnull);
	d = heap_getattr(tup, 8, desc, &isnull);
	spec->key_columns = text_array_list(d, isnull);
	d = heap_getattr(tup, 9, desc, &isnull);
	spec->user_id_column = isnull ? NULL : TextDatumGetCString(d);
	MemoryContextSwitchTo(old);
	return spec;
}

/* the attribute named name in desc, 0 if there is none (dropped since) */
static AttrNumber
attno_of(TupleDesc desc, const char *name)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	return 0;
}

/* a blessed record type of the given columns of desc */
static TupleDesc
blessed_desc(TupleDesc desc, AttrNumber *attnos, int n)
{
	TupleDesc	rec = CreateTemplateTupleDesc(n);

	for (int i = 0; i < n; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, attnos[i] - 1);

		TupleDescInitEntry(rec, i + 1, NameStr(att->attname), att->atttypid,
						   att->atttypmod, 0);
	}
	return BlessTupleDesc(rec);
}

static bool
same_row_type(TupleDesc a, TupleDesc b)
{
	if (a->natts != b->natts)
		return false;
	for (int i = 0; i < a->natts; i++)
	{
		Form_pg_attribute x = TupleDescAttr(a, i);
		Form_pg_attribute y = TupleDescAttr(b, i);

		if (x->atttypid != y->atttypid || x->attisdropped != y->attisdropped ||
			strcmp(NameStr(x->attname), NameStr(y->attname)) != 0)
			return false;
	}
	return true;
}

/*
 * Columns the spec names that the row type no longer has are left out
 * (a capture must not stop a table's writes or its own for a dropped
 * column; the event simply lacks it).
 */
CaptureShape *
capture_shape(CaptureSpec *spec, CaptureShape *shape, TupleDesc desc, MemoryContext cxt)
{
	MemoryContext old;
	ListCell   *lc;

	/* the same relcache descriptor as last time: nothing changed */
	if (shape != NULL && shape->seen_desc == desc)
		return shape;
	if (shape != NULL && same_row_type(shape->source_desc, desc))
	{
		shape->seen_desc = desc;
		return shape;
	}
	old = MemoryContextSwitchTo(cxt);
	shape = palloc0(sizeof(CaptureShape));
	shape->source_desc = CreateTupleDescCopy(desc);
	shape->seen_desc = desc;
	shape->props = palloc(sizeof(AttrNumber) * Max(desc->natts, 1));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		if (spec->columns != NIL)
		{
			bool		wanted = false;

			foreach(lc, spec->columns)
				if (strcmp(lfirst(lc), NameStr(att->attname)) == 0)
					wanted = true;
			if (!wanted)
				continue;
		}
		shape->props[shape->nprops++] = att->attnum;
	}
	shape->key = palloc(sizeof(AttrNumber) * Max(list_length(spec->key_columns), 1));
	foreach(lc, spec->key_columns)
	{
		AttrNumber	a = attno_of(desc, lfirst(lc));

		if (a > 0)
			shape->key[shape->nkey++] = a;
	}
	shape->user_attno = spec->user_id_column ? attno_of(desc, spec->user_id_column) : 0;
	shape->props_desc = blessed_desc(desc, shape->props, shape->nprops);
	shape->key_desc = blessed_desc(desc, shape->key, shape->nkey);
	MemoryContextSwitchTo(old);
	return shape;
}

/* the columns attnos of a row, as a JSON object (row_to_json's values) */
static text *
columns_json(TupleDesc rec, AttrNumber *attnos, int n, Datum *values, bool *nulls)
{
	Datum	   *v = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *isnull = palloc(sizeof(bool) * Max(n, 1));
	HeapTuple	tup;

	for (int i = 0; i < n; i++)
	{
		v[i] = values[attnos[i] - 1];
		isnull[i] = nulls[attnos[i] - 1];
	}
	tup = heap_form_tuple(rec, v, isnull);
	return DatumGetTextPP(DirectFunctionCall1(row_to_json, HeapTupleGetDatum(tup)));
}

Jsonb *
capture_jsonb(text *json)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text_to_cstring(json))));
}

static void
append_json_names(StringInfo buf, const char *key, List *names)
{
	ListCell   *lc;

	appendStringInfo(buf, ", \"%s\": [", key);
	foreach(lc, names)
	{
		if (lc != list_head(names))
			appendStringInfoString(buf, ", ");
		escape_json(buf, lfirst(lc));
	}
	appendStringInfoChar(buf, ']');
}

void
capture_build_event(CaptureSpec *spec, CaptureShape *shape, CaptureChange *change,
					CapturedEvent *ev)
{
	TupleDesc	desc = shape->source_desc;
	int			natts = desc->natts;
	Datum	   *values;
	bool	   *nulls;
	Datum	   *keyv;
	bool	   *keyn;
	List	   *changed = NIL;
	List	   *unlogged = NIL;
	const char *opname;
	StringInfoData buf;
	text	   *key;

	opname = change->op == CAPTURE_INSERT ? "insert" :
		change->op == CAPTURE_UPDATE ? "update" : "delete";
	ev->event_name = cstring_to_text(psprintf("%s.%s", spec->event_prefix, opname));

	/*
	 * The row the properties come from: the new one; its values the WAL did
	 * not carry (unchanged TOAST) from the old row when it is complete,
	 * else left out and named in context.unlogged.
	 */
	if (change->op == CAPTURE_DELETE)
	{
		values = change->old_values;
		nulls = change->old_nulls;
	}
	else
	{
		values = palloc(sizeof(Datum) * natts);
		nulls = palloc(sizeof(bool) * natts);
		memcpy(values, change->new_values, sizeof(Datum) * natts);
		memcpy(nulls, change->new_nulls, sizeof(bool) * natts);
		if (change->unchanged)
		{
			for (int i = 0; i < natts; i++)
			{
				if (!change->unchanged[i])
					continue;
				if (change->old_values && change->old_is_full && !change->old_nulls[i])
					values[i] = change->old_values[i];
				else
				{
					nulls[i] = true;
					unlogged = lappend(unlogged, NameStr(TupleDescAttr(desc, i)->attname));
				}
			}
		}
	}

	/* the key: of the old row when the WAL gave one (a delete, a key change) */
	keyv = change->old_values ? change->old_values : values;
	keyn = change->old_values ? change->old_nulls : nulls;
	key = columns_json(shape->key_desc, shape->key, shape->nkey, keyv, keyn);

	if (change->op == CAPTURE_DELETE)
		ev->properties = key;
	else
		ev->properties = columns_json(shape->props_desc, shape->props, shape->nprops,
									  values, nulls);

	/* changed columns: only when the old row is known in full */
	if (change->op == CAPTURE_UPDATE && change->old_values && change->old_is_full)
	{
		for (int j = 0; j < shape->nprops; j++)
		{
			int			i = shape->props[j] - 1;
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (change->unchanged && change->unchanged[i])
				continue;
			if (change->old_nulls[i] != nulls[i] ||
				(!nulls[i] && !datumIsEqual(change->old_values[i], values[i],
											att->attbyval, att->attlen)))
				changed = lappend(changed, NameStr(att->attname));
		}
	}

	ev->user_id = NULL;
	if (shape->user_attno > 0 && !nulls[shape->user_attno - 1])
	{
		Form_pg_attribute att = TupleDescAttr(desc, shape->user_attno - 1);
		Oid			outfn;
		bool		varlena;

		getTypeOutputInfo(att->atttypid, &outfn, &varlena);
		ev->user_id = cstring_to_text(OidOutputFunctionCall(outfn, values[shape->user_attno - 1]));
	}

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"source\": ");
	escape_json(&buf, spec->source_name);
	appendStringInfo(&buf, ", \"operation\": \"%s\", \"key\": ", opname);
	appendBinaryStringInfo(&buf, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
	if (change->op == CAPTURE_UPDATE && change->old_values && change->old_is_full)
		append_json_names(&buf, "changed", changed);
	if (unlogged != NIL)
		append_json_names(&buf, "unlogged", unlogged);
	appendStringInfoString(&buf, ", \"position\": ");
	escape_json(&buf, change->position);
	appendStringInfoChar(&buf, '}');
	ev->context = cstring_to_text_with_len(buf.data, buf.len);
	capture_event_id(spec->capture_id, change->position, &ev->event_id);
}

/*
 * stream._capture_event_id(capture_id, position): the id the capture gives
 * the change at position (context.position), for checks and tests.
 */
Datum
stream_capture_event_id(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *result = palloc(sizeof(pg_uuid_t));

	capture_event_id(PG_GETARG_INT32(0), text_to_cstring(PG_GETARG_TEXT_PP(1)), result);
	PG_RETURN_UUID_P(result);
}
