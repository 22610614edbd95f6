/*-------------------------------------------------------------------------
 * assert.c
 *	  The validation vocabulary of JSON Schema 2020-12 (type, enum, const,
 *	  numeric bounds and multipleOf, string length and pattern, format,
 *	  array size and uniqueItems, object size, required and
 *	  dependentRequired): compiling each keyword's value into its JsNode,
 *	  and checking an instance location against it.
 *
 * The applicators that descend into the instance (properties, items, ...)
 * are in jsonschema_compile.c and jsonschema_validate.c; everything here
 * looks at one value only.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"

#include "jsonschema/internal.h"

/* ---------- compiling keyword values ---------- */

static Numeric
get_number(JsLoc *loc, const char *kw, JsonbValue *v)
{
	if (v->type != jbvNumeric)
		BAD_SCHEMA(js_kw_path(loc, kw), NULL, "%s must be a number", kw);
	return v->val.numeric;
}

static int64
get_count(JsLoc *loc, const char *kw, JsonbValue *v)
{
	static Numeric max = NULL;
	Numeric		n;

	if (v->type != jbvNumeric || !js_numeric_is_integral(v->val.numeric) ||
		numeric_is_nan(v->val.numeric) ||
		DatumGetBool(DirectFunctionCall2(numeric_lt, NumericGetDatum(v->val.numeric),
										 DirectFunctionCall1(int4_numeric, Int32GetDatum(0)))))
		BAD_SCHEMA(js_kw_path(loc, kw), NULL, "%s must be a non-negative integer", kw);
	n = v->val.numeric;
	if (max == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		max = int64_to_numeric(PG_INT64_MAX);
		MemoryContextSwitchTo(old);
	}
	if (js_numeric_cmp(n, max) >= 0)
		return PG_INT64_MAX;
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(n)));
}

/* array of distinct strings (required, dependentRequired) */
static JsKey *
compile_string_array(JsCompiler *c, JsLoc *loc, const char *kw, JsonbValue *v,
					 int *n)
{
	JsIter		it;
	JsonbValue	e;
	JsKey	   *keys;
	int			count,
				i = 0;

	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data) ||
		JsonContainerIsScalar(v->val.binary.data))
		BAD_SCHEMA(js_kw_path(loc, kw), NULL, "%s must be an array of strings", kw);
	count = JsonContainerSize(v->val.binary.data);
	keys = MemoryContextAlloc(c->cxt, sizeof(JsKey) * Max(count, 1));
	js_iter_init(&it, v->val.binary.data);
	while (js_iter_next(&it, NULL, &e))
	{
		if (e.type != jbvString)
			BAD_SCHEMA(js_kw_path(loc, kw), NULL, "%s must be an array of strings", kw);
		keys[i].str = e.val.string.val;
		keys[i].len = e.val.string.len;
		i++;
	}
	{
		int			dup_i,
					dup_j;

		if (!js_array_unique(v->val.binary.data, &dup_i, &dup_j))
			BAD_SCHEMA(js_kw_path(loc, kw), NULL, "%s must not contain duplicates (\"%s\")",
					   kw, pnstrdup(keys[dup_i].str, keys[dup_i].len));
	}
	*n = count;
	return keys;
}

static void
compile_type(JsNode *node, JsLoc *loc, JsonbValue *v)
{
	static const char *const names[] = {"null", "boolean", "object", "array", "number", "string", "integer"};
	JsIter		it;
	JsonbValue	e;
	bool		single = v->type == jbvString;

	if (!single && (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data) ||
					JsonContainerIsScalar(v->val.binary.data)))
		BAD_SCHEMA(js_kw_path(loc, "type"), NULL, "type must be a string or an array of strings");
	if (!single)
		js_iter_init(&it, v->val.binary.data);
	for (;;)
	{
		int			i;
		bool		found = false;

		if (single)
			e = *v;
		else if (!js_iter_next(&it, NULL, &e))
			break;
		if (e.type != jbvString)
			BAD_SCHEMA(js_kw_path(loc, "type"), NULL, "type must be a string or an array of strings");
		for (i = 0; i < lengthof(names); i++)
		{
			if (strlen(names[i]) == e.val.string.len &&
				memcmp(names[i], e.val.string.val, e.val.string.len) == 0)
			{
				if (node->types & (1 << i))
					BAD_SCHEMA(js_kw_path(loc, "type"), NULL, "type must not list \"%s\" twice", names[i]);
				node->types |= 1 << i;
				found = true;
			}
		}
		if (!found)
			BAD_SCHEMA(js_kw_path(loc, "type"),
					   "The types are null, boolean, object, array, number, string and integer.",
					   "unknown type \"%s\"", js_cstring(&e));
		if (single)
			break;
	}
	node->kw |= JSK_TYPE;
}

static int
key_qsort_cmp(const void *a, const void *b)
{
	const JsKey *x = a;
	const JsKey *y = b;

	return js_key_cmp(x->str, x->len, y->str, y->len);
}

static int
numeric_qsort_cmp(const void *a, const void *b)
{
	return js_numeric_cmp(*(Numeric const *) a, *(Numeric const *) b);
}

static void
compile_enum(JsCompiler *c, JsNode *node, JsLoc *loc, JsonbValue *v)
{
	JsEnum	   *en;
	int			n;
	JsIter		it;
	JsonbValue	e;

	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data) ||
		JsonContainerIsScalar(v->val.binary.data))
		BAD_SCHEMA(js_kw_path(loc, "enum"), NULL, "enum must be an array");
	n = JsonContainerSize(v->val.binary.data);
	en = MemoryContextAllocZero(c->cxt, sizeof(JsEnum));
	en->nvalues = n;
	en->strings = MemoryContextAlloc(c->cxt, sizeof(JsKey) * Max(n, 1));
	en->numbers = MemoryContextAlloc(c->cxt, sizeof(Numeric) * Max(n, 1));
	en->containers = MemoryContextAlloc(c->cxt, sizeof(JsonbValue) * Max(n, 1));
	js_iter_init(&it, v->val.binary.data);
	while (js_iter_next(&it, NULL, &e))
	{
		switch (e.type)
		{
			case jbvNull:
				en->has_null = true;
				break;
			case jbvBool:
				if (e.val.boolean)
					en->has_true = true;
				else
					en->has_false = true;
				break;
			case jbvString:
				en->strings[en->nstrings].str = e.val.string.val;
				en->strings[en->nstrings++].len = e.val.string.len;
				break;
			case jbvNumeric:
				en->numbers[en->nnumbers++] = e.val.numeric;
				break;
			default:
				en->containers[en->ncontainers++] = e;
				break;
		}
		if ((it.index & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	qsort(en->strings, en->nstrings, sizeof(JsKey), key_qsort_cmp);
	qsort(en->numbers, en->nnumbers, sizeof(Numeric), numeric_qsort_cmp);
	node->enum_values = en;
	node->kw |= JSK_ENUM;
}

static JsStringKeywords *
string_kw(JsCompiler *c, JsNode *node)
{
	if (node->str == NULL)
	{
		node->str = MemoryContextAllocZero(c->cxt, sizeof(JsStringKeywords));
		node->str->min_length = node->str->max_length = JS_NO_LIMIT;
		node->str->format = JSF_UNKNOWN;
		node->kw |= JSK_STRING;
	}
	return node->str;
}

static JsNumberKeywords *
number_kw(JsCompiler *c, JsNode *node)
{
	if (node->num == NULL)
	{
		node->num = MemoryContextAllocZero(c->cxt, sizeof(JsNumberKeywords));
		node->kw |= JSK_NUMBER;
	}
	return node->num;
}

void
jskw_type(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v)
{
	compile_type(node, loc, v);
}

void
jskw_enum(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v)
{
	compile_enum(c, node, loc, v);
}

void
jskw_const(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v)
{
	node->const_value = *v;
	node->kw |= JSK_CONST;
}

/* k if n is 10^-k (1, 0.1, 0.01, ...), else -1 */
static int
decimal_unit_scale(Numeric n)
{
	char	   *s = numeric_normalize(n);
	int			k = 0;

	if (strcmp(s, "1") == 0)
		return 0;
	if (strncmp(s, "0.", 2) != 0)
		return -1;
	for (s += 2; *s == '0'; s++)
		k++;
	return strcmp(s, "1") == 0 ? k + 1 : -1;
}

void
jskw_number(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v)
{
	JsNumberKeywords *num = number_kw(c, node);
	Numeric		n = get_number(loc, kw, v);

	if (strcmp(kw, "minimum") == 0)
		num->minimum = n;
	else if (strcmp(kw, "maximum") == 0)
		num->maximum = n;
	else if (strcmp(kw, "exclusiveMinimum") == 0)
		num->exclusive_minimum = n;
	else if (strcmp(kw, "exclusiveMaximum") == 0)
		num->exclusive_maximum = n;
	else
	{
		if (DatumGetBool(DirectFunctionCall2(numeric_le, NumericGetDatum(n),
											 DirectFunctionCall1(int4_numeric, Int32GetDatum(0)))))
			BAD_SCHEMA(js_kw_path(loc, kw), NULL, "multipleOf must be greater than 0");
		num->multiple_of = n;
		num->multiple_of_scale = decimal_unit_scale(n);
	}
}

void
jskw_count(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v)
{
	int64		n = get_count(loc, kw, v);

	if (strcmp(kw, "minLength") == 0)
		string_kw(c, node)->min_length = n;
	else if (strcmp(kw, "maxLength") == 0)
		string_kw(c, node)->max_length = n;
	else if (strcmp(kw, "minItems") == 0)
		js_array_kw(c, node)->min_items = n;
	else if (strcmp(kw, "maxItems") == 0)
		js_array_kw(c, node)->max_items = n;
	else if (strcmp(kw, "minContains") == 0)
		js_array_kw(c, node)->min_contains = n;
	else if (strcmp(kw, "maxContains") == 0)
		js_array_kw(c, node)->max_contains = n;
	else if (strcmp(kw, "minProperties") == 0)
	{
		js_object_kw(c, node)->min_properties = n;
		node->kw |= JSK_OBJECT_CHECKS;
	}
	else
	{
		js_object_kw(c, node)->max_properties = n;
		node->kw |= JSK_OBJECT_CHECKS;
	}
}

void
jskw_pattern(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v)
{
	string_kw(c, node)->pattern = js_compile_regex(c, loc, kw, v);
}

void
jskw_unique_items(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw,
				JsonbValue *v)
{
	if (v->type != jbvBool)
		BAD_SCHEMA(js_kw_path(loc, kw), NULL, "uniqueItems must be a boolean");
	if (v->val.boolean)
		js_array_kw(c, node)->unique_items = true;
}

void
jskw_required(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v)
{
	JsObjectKeywords *obj = js_object_kw(c, node);

	obj->required = compile_string_array(c, loc, kw, v, &obj->nrequired);
	obj->required_sorted = MemoryContextAlloc(c->cxt, sizeof(JsKey) * Max(obj->nrequired, 1));
	memcpy(obj->required_sorted, obj->required, sizeof(JsKey) * obj->nrequired);
	qsort(obj->required_sorted, obj->nrequired, sizeof(JsKey), key_qsort_cmp);
	node->kw |= JSK_OBJECT_CHECKS;
}

void
jskw_dependent_required(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw,
					  JsonbValue *v)
{
	JsObjectKeywords *obj = js_object_kw(c, node);
	int			n;
	JsIter		it;
	JsonbValue	k,
				e;
	int			i = 0;

	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		BAD_SCHEMA(js_kw_path(loc, kw), NULL, "dependentRequired must be an object");
	n = JsonContainerSize(v->val.binary.data);
	obj->dependent_required = MemoryContextAllocZero(c->cxt,
													 sizeof(JsDependentRequired) * Max(n, 1));
	js_iter_init(&it, v->val.binary.data);
	while (js_iter_next(&it, &k, &e))
	{
		JsDependentRequired *d = &obj->dependent_required[i++];

		d->key.str = k.val.string.val;
		d->key.len = k.val.string.len;
		d->required = compile_string_array(c, loc,
										   psprintf("%s/%s", kw,
													js_pointer_token(k.val.string.val, k.val.string.len)),
										   &e, &d->nrequired);
	}
	obj->ndependent_required = n;
	node->kw |= JSK_OBJECT_CHECKS;
}

void
jskw_format(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v)
{
	uint32		vocab = loc->resource->vocab;
	bool		assert = (vocab & JSV_FORMAT_ASSERTION) != 0 ||
		((vocab & JSV_FORMAT_ANNOTATION) && c->schema->format_assertion);
	int			format;

	if (v->type != jbvString)
		BAD_SCHEMA(js_kw_path(loc, kw), NULL, "format must be a string");
	if (!assert)
		return;					/* an annotation only */
	format = jsformat_lookup(v->val.string.val, v->val.string.len);
	if (format == JSF_UNKNOWN)
		BAD_SCHEMA(js_kw_path(loc, kw),
				   "Supported formats: date-time, date, time, duration, email, hostname, ipv4, ipv6, uri, uri-reference, iri, iri-reference, uri-template, uuid, regex, json-pointer, relative-json-pointer; with stream_events.format_assertion off, format is only an annotation.",
				   "format \"%s\" is not supported for assertion", js_cstring(v));
	string_kw(c, node)->format = format;
	node->str->format_assert = true;
}


/* ---------- checking instances ---------- */

/* A number for a message: as numeric_out, or scientific when very long. */
static char *
numeric_text(Numeric n)
{
	char	   *plain = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(n)));
	char	   *sci;
	char	   *e;
	char	   *end;

	if (strlen(plain) <= 40)
		return plain;
	sci = numeric_out_sci(n, 20);
	e = strchr(sci, 'e');
	if (e == NULL)
		return sci;
	/* drop trailing zeros of the mantissa: 1.000e+400 -> 1e+400 */
	end = e;
	while (end > sci && end[-1] == '0')
		end--;
	if (end > sci && end[-1] == '.')
		end--;
	return psprintf("%.*s%s", (int) (end - sci), sci, e);
}

static char *
types_text(uint8 types)
{
	StringInfoData buf;
	int			bit;

	initStringInfo(&buf);
	for (bit = 1; bit <= JST_INTEGER; bit <<= 1)
	{
		if (!(types & bit))
			continue;
		if (buf.len > 0)
			appendStringInfoString(&buf, " or ");
		appendStringInfoString(&buf, js_type_name(bit));
	}
	return buf.data;
}

static bool
enum_contains(JsEnum *en, JsonbValue *v)
{
	int			lo,
				hi,
				i;

	switch (v->type)
	{
		case jbvNull:
			return en->has_null;
		case jbvBool:
			return v->val.boolean ? en->has_true : en->has_false;
		case jbvString:
			lo = 0;
			hi = en->nstrings - 1;
			while (lo <= hi)
			{
				int			mid = (lo + hi) / 2;
				int			cmp = js_key_cmp(en->strings[mid].str, en->strings[mid].len,
											 v->val.string.val, v->val.string.len);

				if (cmp == 0)
					return true;
				if (cmp < 0)
					lo = mid + 1;
				else
					hi = mid - 1;
			}
			return false;
		case jbvNumeric:
			lo = 0;
			hi = en->nnumbers - 1;
			while (lo <= hi)
			{
				int			mid = (lo + hi) / 2;
				int			cmp = js_numeric_cmp(en->numbers[mid], v->val.numeric);

				if (cmp == 0)
					return true;
				if (cmp < 0)
					lo = mid + 1;
				else
					hi = mid - 1;
			}
			return false;
		default:
			for (i = 0; i < en->ncontainers; i++)
			{
				if (js_equal(&en->containers[i], v))
					return true;
				if ((i & 1023) == 1023)
					CHECK_FOR_INTERRUPTS();
			}
			return false;
	}
}

bool
js_assert_string(JsValidator *cx, JsNode *node, JsonbValue *v)
{
	JsStringKeywords *str = node->str;
	bool		valid = true;

	if (str->min_length != JS_NO_LIMIT || str->max_length != JS_NO_LIMIT)
	{
		int64		len = js_string_length(v->val.string.val, v->val.string.len);

		if (str->min_length != JS_NO_LIMIT && len < str->min_length)
		{
			valid = false;
			if (!js_fail(cx, node, "minLength", "must have at least " INT64_FORMAT " characters",
					  str->min_length))
				return false;
		}
		if (str->max_length != JS_NO_LIMIT && len > str->max_length)
		{
			valid = false;
			if (!js_fail(cx, node, "maxLength", "must have at most " INT64_FORMAT " characters",
					  str->max_length))
				return false;
		}
	}
	if (str->pattern && !jsregex_match(str->pattern, v->val.string.val, v->val.string.len))
	{
		valid = false;
		if (!js_fail(cx, node, "pattern", "must match pattern \"%s\"",
				  jsregex_source(str->pattern)))
			return false;
	}
	if (str->format_assert && !jsformat_check(str->format, v->val.string.val, v->val.string.len))
	{
		valid = false;
		if (!js_fail(cx, node, "format", "must be a valid %s", jsformat_name(str->format)))
			return false;
	}
	return valid;
}

bool
js_assert_number(JsValidator *cx, JsNode *node, Numeric n)
{
	JsNumberKeywords *num = node->num;
	bool		valid = true;

	if (num->minimum && js_numeric_cmp(n, num->minimum) < 0)
	{
		valid = false;
		if (!js_fail(cx, node, "minimum", "must be >= %s", numeric_text(num->minimum)))
			return false;
	}
	if (num->maximum && js_numeric_cmp(n, num->maximum) > 0)
	{
		valid = false;
		if (!js_fail(cx, node, "maximum", "must be <= %s", numeric_text(num->maximum)))
			return false;
	}
	if (num->exclusive_minimum && js_numeric_cmp(n, num->exclusive_minimum) <= 0)
	{
		valid = false;
		if (!js_fail(cx, node, "exclusiveMinimum", "must be > %s",
				  numeric_text(num->exclusive_minimum)))
			return false;
	}
	if (num->exclusive_maximum && js_numeric_cmp(n, num->exclusive_maximum) >= 0)
	{
		valid = false;
		if (!js_fail(cx, node, "exclusiveMaximum", "must be < %s",
				  numeric_text(num->exclusive_maximum)))
			return false;
	}
	if (num->multiple_of)
	{
		bool		error = false;
		bool		ok;

		/* exact decimal arithmetic: 19.99 is a multiple of 0.01 */
		if (num->multiple_of_scale >= 0)
			ok = js_numeric_min_scale(n) <= num->multiple_of_scale;
		else
			ok = js_numeric_is_zero(numeric_mod_opt_error(n, num->multiple_of, &error)) && !error;
		if (!ok)
		{
			valid = false;
			if (!js_fail(cx, node, "multipleOf", "must be a multiple of %s",
					  numeric_text(num->multiple_of)))
				return false;
		}
	}
	return valid;
}

/*
 * True if every required name is a key of c.  Both lists are in jsonb key
 * order, so one merge walk does it, without a lookup per name.
 */
static bool
all_required_present(JsObjectKeywords *obj, JsonbContainer *c)
{
	JsIter		it;
	JsonbValue	k,
				v;
	int			r = 0;

	if (obj->nrequired > JsonContainerSize(c))
		return false;
	if (obj->nrequired <= 2)
	{
		for (r = 0; r < obj->nrequired; r++)
			if (!js_get_key(c, obj->required[r].str, obj->required[r].len, &v))
				return false;
		return true;
	}
	js_iter_init(&it, c);
	while (r < obj->nrequired && js_iter_next(&it, &k, &v))
	{
		int			cmp = js_key_cmp(obj->required_sorted[r].str, obj->required_sorted[r].len,
									 k.val.string.val, k.val.string.len);

		if (cmp < 0)
			return false;		/* passed the place where it would be */
		if (cmp == 0)
			r++;
	}
	return r == obj->nrequired;
}

bool
js_assert_object(JsValidator *cx, JsNode *node, JsonbContainer *c)
{
	JsObjectKeywords *obj = node->obj;
	int			n = JsonContainerSize(c);
	bool		valid = true;
	JsonbValue	tmp;
	int			i,
				j;

	if (obj->nrequired > 0 && !all_required_present(obj, c))
	{
		/* find the missing ones, in the order the schema lists them */
		for (i = 0; i < obj->nrequired; i++)
		{
			if (!js_get_key(c, obj->required[i].str, obj->required[i].len, &tmp))
			{
				valid = false;
				if (!js_fail(cx, node, "required", "must have required property \"%s\"",
						  pnstrdup(obj->required[i].str, obj->required[i].len)))
					return false;
			}
		}
	}
	if (obj->min_properties != JS_NO_LIMIT && n < obj->min_properties)
	{
		valid = false;
		if (!js_fail(cx, node, "minProperties", "must have at least " INT64_FORMAT " properties",
				  obj->min_properties))
			return false;
	}
	if (obj->max_properties != JS_NO_LIMIT && n > obj->max_properties)
	{
		valid = false;
		if (!js_fail(cx, node, "maxProperties", "must have at most " INT64_FORMAT " properties",
				  obj->max_properties))
			return false;
	}
	for (i = 0; i < obj->ndependent_required; i++)
	{
		JsDependentRequired *d = &obj->dependent_required[i];

		if (!js_get_key(c, d->key.str, d->key.len, &tmp))
			continue;
		for (j = 0; j < d->nrequired; j++)
		{
			if (!js_get_key(c, d->required[j].str, d->required[j].len, &tmp))
			{
				valid = false;
				if (!js_fail(cx, node, "dependentRequired",
						  "must have property \"%s\" when property \"%s\" is present",
						  pnstrdup(d->required[j].str, d->required[j].len),
						  pnstrdup(d->key.str, d->key.len)))
					return false;
			}
		}
	}
	return valid;
}


/* type, const and enum, which apply to a value of any type */
bool
js_assert_generic(JsValidator *cx, JsNode *node, JsonbValue *v, int type)
{
	bool		valid = true;

	if (node->kw & JSK_TYPE)
	{
		bool		ok = (node->types & type) != 0 ||
			(type == JST_NUMBER && (node->types & JST_INTEGER) &&
			 js_numeric_is_integral(v->val.numeric));

		if (!ok)
		{
			valid = false;
			if (!js_fail(cx, node, "type", "must be of type %s, not %s",
					  types_text(node->types), js_type_name(type)))
				return false;
		}
	}
	if ((node->kw & JSK_CONST) && !js_equal(&node->const_value, v))
	{
		valid = false;
		if (!js_fail(cx, node, "const", "must be equal to the constant"))
			return false;
	}
	if ((node->kw & JSK_ENUM) && !enum_contains(node->enum_values, v))
	{
		valid = false;
		if (!js_fail(cx, node, "enum", "must be one of the allowed values"))
			return false;
	}
	return valid;
}

/* minItems, maxItems, uniqueItems */
bool
js_assert_array(JsValidator *cx, JsNode *node, JsonbContainer *c)
{
	JsArrayKeywords *arr = node->arr;
	int			n = JsonContainerSize(c);
	bool		valid = true;

	if (arr->min_items != JS_NO_LIMIT && n < arr->min_items)
	{
		valid = false;
		if (!js_fail(cx, node, "minItems", "must have at least " INT64_FORMAT " items",
				  arr->min_items))
			return false;
	}
	if (arr->max_items != JS_NO_LIMIT && n > arr->max_items)
	{
		valid = false;
		if (!js_fail(cx, node, "maxItems", "must have at most " INT64_FORMAT " items",
				  arr->max_items))
			return false;
	}
	if (arr->unique_items)
	{
		int			dup_i,
					dup_j;

		if (!js_array_unique(c, &dup_i, &dup_j))
		{
			valid = false;
			if (!js_fail(cx, node, "uniqueItems",
					  "must not have duplicate items (items %d and %d are equal)",
					  dup_i, dup_j))
				return false;
		}
	}
	return valid;
}
