/*-------------------------------------------------------------------------
 * jsonb.c
 *	  Allocation-free reading of jsonb for the JSON Schema validator:
 *	  iteration over the members of a container, JSON equality (numbers
 *	  compare by value, 1 = 1.0), a hash consistent with that equality, the
 *	  uniqueItems check (hash, sort, compare neighbours: never quadratic) and
 *	  string length in code points.
 *
 * The iterator reads JEntry headers directly (the layout documented in
 * utils/jsonb.h) instead of JsonbIterator, which pallocs per level.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"

#include "jsonschema/internal.h"

/* The top-level value of a jsonb datum (a raw scalar is unwrapped). */
void
js_root_value(Jsonb *jb, JsonbValue *v)
{
	if (JB_ROOT_IS_SCALAR(jb))
	{
		JsIter		it;

		js_iter_init(&it, &jb->root);
		js_iter_next(&it, NULL, v);
	}
	else
	{
		v->type = jbvBinary;
		v->val.binary.data = &jb->root;
		v->val.binary.len = VARSIZE(jb) - VARHDRSZ;
	}
}

void
js_iter_init(JsIter *it, JsonbContainer *c)
{
	it->container = c;
	it->count = JsonContainerSize(c);
	it->index = 0;
	it->is_object = JsonContainerIsObject(c);
	it->key_offset = 0;
	if (it->is_object)
	{
		it->base = (char *) &c->children[it->count * 2];
		it->value_offset = getJsonbOffset(c, it->count);
	}
	else
	{
		it->base = (char *) &c->children[it->count];
		it->value_offset = 0;
	}
}

/* Looks a key up in an object container (binary search, no palloc). */
bool
js_get_key(JsonbContainer *c, const char *key, int len, JsonbValue *value)
{
	return getKeyJsonValueFromContainer(c, key, len, value) != NULL;
}

int
js_type_of(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return JST_NULL;
		case jbvBool:
			return JST_BOOLEAN;
		case jbvNumeric:
			return JST_NUMBER;
		case jbvString:
			return JST_STRING;
		case jbvBinary:
			return JsonContainerIsObject(v->val.binary.data) ? JST_OBJECT : JST_ARRAY;
		default:
			elog(ERROR, "unexpected jsonb value type %d", (int) v->type);
	}
	return 0;
}

const char *
js_type_name(int type)
{
	switch (type)
	{
		case JST_NULL:
			return "null";
		case JST_BOOLEAN:
			return "boolean";
		case JST_OBJECT:
			return "object";
		case JST_ARRAY:
			return "array";
		case JST_NUMBER:
			return "number";
		case JST_STRING:
			return "string";
		case JST_INTEGER:
			return "integer";
	}
	return "unknown";
}

int
js_numeric_cmp(Numeric a, Numeric b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp,
											 NumericGetDatum(a),
											 NumericGetDatum(b)));
}

/* digits after the decimal point needed to write n exactly (1.50 -> 1) */
int
js_numeric_min_scale(Numeric n)
{
	return DatumGetInt32(DirectFunctionCall1(numeric_min_scale, NumericGetDatum(n)));
}

/* 1.0 is an integer too: the minimum scale that represents it is 0 */
bool
js_numeric_is_integral(Numeric n)
{
	return js_numeric_min_scale(n) == 0;
}

bool
js_numeric_is_zero(Numeric n)
{
	static Numeric zero = NULL;

	if (zero == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		zero = int64_to_numeric(0);
		MemoryContextSwitchTo(old);
	}
	return js_numeric_cmp(n, zero) == 0;
}

/* JSON equality: same type and value, numbers by value, deep. */
bool
js_equal(const JsonbValue *a, const JsonbValue *b)
{
	if (a->type != b->type)
		return false;

	switch (a->type)
	{
		case jbvNull:
			return true;
		case jbvBool:
			return a->val.boolean == b->val.boolean;
		case jbvString:
			return a->val.string.len == b->val.string.len &&
				memcmp(a->val.string.val, b->val.string.val,
					   a->val.string.len) == 0;
		case jbvNumeric:
			return js_numeric_cmp(a->val.numeric, b->val.numeric) == 0;
		case jbvBinary:
			{
				JsonbContainer *ca = a->val.binary.data;
				JsonbContainer *cb = b->val.binary.data;
				JsIter		ia,
							ib;
				JsonbValue	ka,
							kb,
							va,
							vb;

				if (JsonContainerIsObject(ca) != JsonContainerIsObject(cb) ||
					JsonContainerSize(ca) != JsonContainerSize(cb))
					return false;
				check_stack_depth();
				CHECK_FOR_INTERRUPTS();
				js_iter_init(&ia, ca);
				js_iter_init(&ib, cb);
				while (js_iter_next(&ia, &ka, &va))
				{
					js_iter_next(&ib, &kb, &vb);
					/* object keys are stored sorted, so pairs line up */
					if (ia.is_object && !js_equal(&ka, &kb))
						return false;
					if (!js_equal(&va, &vb))
						return false;
				}
				return true;
			}
		default:
			elog(ERROR, "unexpected jsonb value type %d", (int) a->type);
	}
	return false;
}

/* A hash consistent with js_equal (hash_numeric ignores trailing zeros). */
uint32
js_hash(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return 0x9e3779b9;
		case jbvBool:
			return v->val.boolean ? 0x85ebca6b : 0xc2b2ae35;
		case jbvString:
			return hash_bytes((const unsigned char *) v->val.string.val,
							  v->val.string.len);
		case jbvNumeric:
			return DatumGetUInt32(DirectFunctionCall1(hash_numeric,
													  NumericGetDatum(v->val.numeric)));
		case jbvBinary:
			{
				JsIter		it;
				JsonbValue	k,
							e;
				uint32		h = JsonContainerIsObject(v->val.binary.data) ? 0x27d4eb2f : 0x165667b1;

				check_stack_depth();
				CHECK_FOR_INTERRUPTS();
				js_iter_init(&it, v->val.binary.data);
				while (js_iter_next(&it, &k, &e))
				{
					if (it.is_object)
						h = hash_combine(h, js_hash(&k));
					h = hash_combine(h, js_hash(&e));
				}
				return h;
			}
		default:
			elog(ERROR, "unexpected jsonb value type %d", (int) v->type);
	}
	return 0;
}

typedef struct HashedElem
{
	uint32		hash;
	int			index;
	JsonbValue	value;
} HashedElem;

static int
hashed_elem_cmp(const void *a, const void *b)
{
	const HashedElem *x = a;
	const HashedElem *y = b;

	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	return x->index - y->index;
}

/*
 * True if the elements of array c are pairwise distinct.  Elements are
 * hashed and sorted by hash; only neighbours with equal hashes are
 * compared, so the cost is O(n log n).  On a duplicate, *dup_i < *dup_j
 * are the indexes of the first pair found.
 */
bool
js_array_unique(JsonbContainer *c, int *dup_i, int *dup_j)
{
	int			n = JsonContainerSize(c);
	HashedElem *elems;
	JsIter		it;
	int			i;

	if (n < 2)
		return true;
	if (n <= 8)
	{
		/* a few items: comparing every pair is cheaper than hashing */
		JsonbValue	small[8];
		int			j;

		js_iter_init(&it, c);
		for (i = 0; i < n; i++)
			js_iter_next(&it, NULL, &small[i]);
		for (i = 0; i < n; i++)
			for (j = i + 1; j < n; j++)
				if (js_equal(&small[i], &small[j]))
				{
					*dup_i = i;
					*dup_j = j;
					return false;
				}
		return true;
	}

	elems = palloc(sizeof(HashedElem) * n);
	js_iter_init(&it, c);
	for (i = 0; i < n; i++)
	{
		js_iter_next(&it, NULL, &elems[i].value);
		elems[i].hash = js_hash(&elems[i].value);
		elems[i].index = i;
		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	qsort(elems, n, sizeof(HashedElem), hashed_elem_cmp);

	for (i = 0; i < n - 1; i++)
	{
		int			j;

		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
		for (j = i + 1; j < n && elems[j].hash == elems[i].hash; j++)
		{
			if (js_equal(&elems[i].value, &elems[j].value))
			{
				*dup_i = Min(elems[i].index, elems[j].index);
				*dup_j = Max(elems[i].index, elems[j].index);
				pfree(elems);
				return false;
			}
		}
	}
	pfree(elems);
	return true;
}

/* Length of a string in code points (JSON Schema's minLength/maxLength). */
int64
js_string_length(const char *s, int len)
{
	/* JSON text is UTF-8: so is SQL_ASCII's, for this purpose */
	if (GetDatabaseEncoding() == PG_UTF8 || GetDatabaseEncoding() == PG_SQL_ASCII)
	{
		int64		n = 0;
		int			i;

		/* count the bytes that do not continue a sequence */
		for (i = 0; i < len; i++)
			n += ((unsigned char) s[i] & 0xC0) != 0x80;
		return n;
	}
	return pg_mbstrlen_with_len(s, len);
}
