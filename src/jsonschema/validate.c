/*-------------------------------------------------------------------------
 * validate.c
 *	  Validates a jsonb instance against a compiled JSON Schema (the JsNode
 *	  graph of jsonschema_internal.h).
 *
 * One walk serves both entry points: jsonschema_validate() stops at the
 * first failure; jsonschema_errors() goes on and records every failure
 * with its instance path and keyword location.  Inside anyOf, oneOf, not,
 * if and contains, failures are expected and are not recorded (the
 * keyword itself reports), so those branches run in the fast mode.
 *
 * unevaluatedProperties/unevaluatedItems need the members that adjacent
 * keywords evaluated ("annotations"): a JsAnnot per instance location is
 * passed down in-place applicators only when some enclosing schema has an
 * unevaluated* keyword; otherwise nothing is tracked.  Annotations of a
 * failed branch are dropped, as the specification says.
 *
 * $dynamicRef uses the dynamic scope: the stack of schema resources
 * entered on the way to the current schema.
 *
 * Transient allocations (numeric arithmetic, uniqueItems) go to a scratch
 * context that is reset after each call.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "jsonschema/internal.h"

typedef struct JsAnnot
{
	int			n;				/* members of the instance */
	bool		all;			/* every member evaluated */
	int			prefix;			/* items [0, prefix) evaluated */
	uint8	   *bits;			/* evaluated members by index, or NULL */
} JsAnnot;


static bool validate(JsValidator *cx, JsNode *node, JsonbValue *v, JsAnnot *ann);


bool
js_fail(JsValidator *cx, JsNode *node, const char *kw, const char *fmt,...)
{
	MemoryContext old;
	JsonSchemaError *err;
	StringInfoData buf;
	va_list		args;
	int			i;

	if (FAST(cx))
		return false;

	old = MemoryContextSwitchTo(cx->result_cxt);
	err = palloc(sizeof(JsonSchemaError));
	initStringInfo(&buf);
	for (i = 0; i < cx->npath; i++)
	{
		appendStringInfoChar(&buf, '/');
		if (cx->path[i].key)
		{
			int			j;

			for (j = 0; j < cx->path[i].len; j++)
			{
				char		ch = cx->path[i].key[j];

				if (ch == '~')
					appendStringInfoString(&buf, "~0");
				else if (ch == '/')
					appendStringInfoString(&buf, "~1");
				else
					appendStringInfoChar(&buf, ch);
			}
		}
		else
			appendStringInfo(&buf, "%d", cx->path[i].index);
	}
	err->instance_path = buf.data;
	err->schema_path = kw ? psprintf("%s/%s", node->path, kw) : pstrdup(node->path);
	initStringInfo(&buf);
	for (;;)
	{
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	err->message = buf.data;
	cx->errors = lappend(cx->errors, err);
	MemoryContextSwitchTo(old);

	if (cx->max_errors > 0 && ++cx->nerrors >= cx->max_errors)
		cx->stop = true;
	return !cx->stop;
}

/* ---------- instance path and dynamic scope ---------- */

static inline void
push_key(JsValidator *cx, const char *key, int len)
{
	if (!cx->collect)
		return;
	if (cx->npath >= cx->path_cap)
	{
		JsPathSeg  *bigger = palloc(sizeof(JsPathSeg) * cx->path_cap * 2);

		memcpy(bigger, cx->path, sizeof(JsPathSeg) * cx->npath);
		cx->path = bigger;
		cx->path_cap *= 2;
	}
	cx->path[cx->npath].key = key;
	cx->path[cx->npath].len = len;
	cx->npath++;
}

static inline void
push_index(JsValidator *cx, int index)
{
	if (!cx->collect)
		return;
	push_key(cx, NULL, 0);
	cx->path[cx->npath - 1].index = index;
}

static inline void
pop_path(JsValidator *cx)
{
	if (cx->collect)
		cx->npath--;
}

/* ---------- annotations ---------- */

static inline void
annot_init(JsAnnot *a, int n)
{
	a->n = n;
	a->all = false;
	a->prefix = 0;
	a->bits = NULL;
}

static inline void
annot_mark(JsAnnot *a, int i)
{
	if (a->bits == NULL)
		a->bits = palloc0((a->n + 7) / 8);
	a->bits[i >> 3] |= 1 << (i & 7);
}

static inline bool
annot_has(JsAnnot *a, int i)
{
	return a->all || i < a->prefix ||
		(a->bits != NULL && (a->bits[i >> 3] & (1 << (i & 7))) != 0);
}

static void
annot_merge(JsAnnot *dst, JsAnnot *src)
{
	if (src->all)
		dst->all = true;
	dst->prefix = Max(dst->prefix, src->prefix);
	if (src->bits)
	{
		int			i;

		if (dst->bits == NULL)
			dst->bits = palloc0((dst->n + 7) / 8);
		for (i = 0; i < (dst->n + 7) / 8; i++)
			dst->bits[i] |= src->bits[i];
	}
}

/* properties, patternProperties, additionalProperties, propertyNames */
static bool
validate_object_members(JsValidator *cx, JsNode *node, JsonbContainer *c,
						JsAnnot *ann)
{
	JsObjectKeywords *obj = node->obj;
	bool		valid = true;
	JsIter		it;
	JsonbValue	k,
				v;
	int			i;
	int			next_prop = 0;

	if (obj == NULL)
		return true;

	if (!obj->iterate && ann == NULL)
	{
		/* only "properties": look each one up */
		for (i = 0; i < obj->nproperties; i++)
		{
			JsProperty *p = &obj->properties[i];

			if (!js_get_key(c, p->key.str, p->key.len, &v))
				continue;
			push_key(cx, p->key.str, p->key.len);
			if (!validate(cx, p->schema, &v, NULL))
			{
				valid = false;
				if (FAST(cx) || cx->stop)
				{
					pop_path(cx);
					return false;
				}
			}
			pop_path(cx);
		}
		return valid;
	}

	js_iter_init(&it, c);
	for (i = 0; js_iter_next(&it, &k, &v); i++)
	{
		bool		evaluated = false;
		bool		ok = true;
		JsProperty *p = NULL;
		int			j;

		/* keys and properties are both in jsonb key order: merge them */
		while (next_prop < obj->nproperties)
		{
			int			cmp = js_key_cmp(obj->properties[next_prop].key.str,
										 obj->properties[next_prop].key.len,
										 k.val.string.val, k.val.string.len);

			if (cmp > 0)
				break;
			if (cmp == 0)
				p = &obj->properties[next_prop];
			next_prop++;
			if (p)
				break;
		}

		push_key(cx, k.val.string.val, k.val.string.len);
		if (obj->property_names)
		{
			cx->quiet++;
			ok = validate(cx, obj->property_names, &k, NULL);
			cx->quiet--;
			if (!ok && !js_fail(cx, node, "propertyNames",
							 "property name \"%s\" does not match the propertyNames schema",
							 js_cstring(&k)))
				goto failed;
			valid &= ok;
		}
		if (p)
		{
			evaluated = true;
			if (!validate(cx, p->schema, &v, NULL))
			{
				valid = false;
				if (FAST(cx) || cx->stop)
					goto failed;
			}
		}
		for (j = 0; j < obj->npattern_properties; j++)
		{
			JsPatternProperty *pp = &obj->pattern_properties[j];

			if (!jsregex_match(pp->re, k.val.string.val, k.val.string.len))
				continue;
			evaluated = true;
			if (!validate(cx, pp->schema, &v, NULL))
			{
				valid = false;
				if (FAST(cx) || cx->stop)
					goto failed;
			}
		}
		if (!evaluated && obj->additional_properties)
		{
			JsNode	   *ap = obj->additional_properties;

			evaluated = true;
			if (ap->is_bool && !ap->bool_value)
			{
				valid = false;
				if (!js_fail(cx, ap, NULL, "additional property is not allowed"))
					goto failed;
			}
			else if (!validate(cx, ap, &v, NULL))
			{
				valid = false;
				if (FAST(cx) || cx->stop)
					goto failed;
			}
		}
		pop_path(cx);
		if (ann && evaluated)
			annot_mark(ann, i);
		continue;
failed:
		pop_path(cx);
		return false;
	}
	return valid;
}

static bool
validate_dependent_schemas(JsValidator *cx, JsNode *node, JsonbValue *v,
						   JsAnnot *ann)
{
	JsObjectKeywords *obj = node->obj;
	bool		valid = true;
	int			i;

	for (i = 0; i < obj->ndependent_schemas; i++)
	{
		JsonbValue	tmp;

		if (!js_get_key(v->val.binary.data, obj->dependent_schemas[i].key.str,
						obj->dependent_schemas[i].key.len, &tmp))
			continue;
		if (!validate(cx, obj->dependent_schemas[i].schema, v, ann))
		{
			valid = false;
			if (FAST(cx) || cx->stop)
				return false;
		}
	}
	return valid;
}

/* ---------- arrays ---------- */

static bool
validate_array(JsValidator *cx, JsNode *node, JsonbContainer *c, JsAnnot *ann)
{
	JsArrayKeywords *arr = node->arr;
	int			n = JsonContainerSize(c);
	bool		valid = true;
	JsIter		it;
	JsonbValue	e;
	int			i;

	if (!js_assert_array(cx, node, c))
	{
		valid = false;
		if (FAST(cx) || cx->stop)
			return false;
	}

	if (arr->nprefix_items > 0 || arr->items)
	{
		js_iter_init(&it, c);
		for (i = 0; js_iter_next(&it, NULL, &e); i++)
		{
			JsNode	   *s = i < arr->nprefix_items ? arr->prefix_items[i] : arr->items;
			bool		ok;

			if (s == NULL)
				break;
			push_index(cx, i);
			ok = validate(cx, s, &e, NULL);
			pop_path(cx);
			if (!ok)
			{
				valid = false;
				if (FAST(cx) || cx->stop)
					return false;
			}
		}
		if (ann)
		{
			ann->prefix = Max(ann->prefix, Min(n, arr->nprefix_items));
			if (arr->items)
				ann->all = true;
		}
	}

	if (arr->contains)
	{
		int64		matches = 0;
		bool		need_all = ann != NULL || arr->max_contains != JS_NO_LIMIT;

		js_iter_init(&it, c);
		cx->quiet++;
		for (i = 0; js_iter_next(&it, NULL, &e); i++)
		{
			if (validate(cx, arr->contains, &e, NULL))
			{
				matches++;
				if (ann)
					annot_mark(ann, i);
				if (!need_all && matches >= arr->min_contains)
					break;
			}
		}
		cx->quiet--;
		if (matches < arr->min_contains)
		{
			valid = false;
			if (!js_fail(cx, node, arr->min_contains == 1 ? "contains" : "minContains",
					  "must contain at least " INT64_FORMAT " matching item%s",
					  arr->min_contains, arr->min_contains == 1 ? "" : "s"))
				return false;
		}
		if (arr->max_contains != JS_NO_LIMIT && matches > arr->max_contains)
		{
			valid = false;
			if (!js_fail(cx, node, "maxContains",
					  "must contain at most " INT64_FORMAT " matching item%s",
					  arr->max_contains, arr->max_contains == 1 ? "" : "s"))
				return false;
		}
	}
	return valid;
}

/* ---------- in-place applicators ---------- */

static JsNode *
dynamic_target(JsValidator *cx, JsNode *node)
{
	int			i;

	if (node->dynref_anchor == NULL)
		return node->dynref;
	/* the outermost resource in the dynamic scope with that anchor wins */
	for (i = 0; i < cx->nscope; i++)
	{
		JsDynAnchor *a;

		for (a = cx->scope[i]->dynamic_anchors; a; a = a->next)
			if (strcmp(a->name, node->dynref_anchor) == 0)
				return a->node;
	}
	return node->dynref;
}

static bool
validate_in_place(JsValidator *cx, JsNode *node, JsonbValue *v, JsAnnot *ann)
{
	bool		valid = true;
	int			i;

#define CHILD(expr) \
	do { \
		if (!(expr)) \
		{ \
			valid = false; \
			if (FAST(cx) || cx->stop) \
				return false; \
		} \
	} while (0)

	if (node->kw & JSK_REF)
		CHILD(validate(cx, node->ref, v, ann));
	if (node->kw & JSK_DYNREF)
		CHILD(validate(cx, dynamic_target(cx, node), v, ann));
	for (i = 0; i < node->nall_of; i++)
		CHILD(validate(cx, node->all_of[i], v, ann));

	if (node->kw & JSK_ANYOF)
	{
		int			matched = 0;

		cx->quiet++;
		for (i = 0; i < node->nany_of; i++)
		{
			JsAnnot		branch;

			if (ann)
				annot_init(&branch, ann->n);
			if (validate(cx, node->any_of[i], v, ann ? &branch : NULL))
			{
				matched++;
				if (!ann)
					break;
				annot_merge(ann, &branch);
			}
		}
		cx->quiet--;
		if (matched == 0)
			CHILD(js_fail(cx, node, "anyOf", "must match at least one schema in anyOf"));
	}
	if (node->kw & JSK_ONEOF)
	{
		int			matched = 0;
		JsAnnot		branch,
					first;

		cx->quiet++;
		for (i = 0; i < node->none_of && matched < 2; i++)
		{
			if (ann)
				annot_init(&branch, ann->n);
			if (validate(cx, node->one_of[i], v, ann ? &branch : NULL))
			{
				if (matched++ == 0 && ann)
					first = branch;
			}
		}
		cx->quiet--;
		if (matched == 1 && ann)
			annot_merge(ann, &first);
		if (matched != 1)
			CHILD(js_fail(cx, node, "oneOf", "must match exactly one schema in oneOf (matched %s)",
					   matched == 0 ? "none" : "more than one"));
	}
	if (node->kw & JSK_NOT)
	{
		bool		ok;

		cx->quiet++;
		ok = validate(cx, node->not_schema, v, NULL);
		cx->quiet--;
		if (ok)
			CHILD(js_fail(cx, node, "not", "must not be valid against the schema in not"));
	}
	if (node->kw & JSK_IF)
	{
		JsAnnot		cond;
		bool		ok;

		if (ann)
			annot_init(&cond, ann->n);
		cx->quiet++;
		ok = validate(cx, node->if_schema, v, ann ? &cond : NULL);
		cx->quiet--;
		if (ok)
		{
			if (ann)
				annot_merge(ann, &cond);
			if (node->then_schema)
				CHILD(validate(cx, node->then_schema, v, ann));
		}
		else if (node->else_schema)
			CHILD(validate(cx, node->else_schema, v, ann));
	}
	if (node->obj && node->obj->ndependent_schemas > 0 && v->type == jbvBinary &&
		JsonContainerIsObject(v->val.binary.data))
		CHILD(validate_dependent_schemas(cx, node, v, ann));
#undef CHILD
	return valid;
}

/* ---------- unevaluated ---------- */

static bool
validate_unevaluated(JsValidator *cx, JsNode *node, JsNode *uneval,
					 const char *kw, JsonbContainer *c, JsAnnot *local)
{
	bool		valid = true;
	JsIter		it;
	JsonbValue	k,
				v;
	int			i;

	js_iter_init(&it, c);
	for (i = 0; js_iter_next(&it, &k, &v); i++)
	{
		bool		ok;

		if (annot_has(local, i))
			continue;
		if (it.is_object)
			push_key(cx, k.val.string.val, k.val.string.len);
		else
			push_index(cx, i);
		if (uneval->is_bool && !uneval->bool_value)
		{
			(void) js_fail(cx, node, kw, it.is_object ? "unevaluated property is not allowed" :
						"unevaluated item is not allowed");
			ok = false;
		}
		else
			ok = validate(cx, uneval, &v, NULL);
		pop_path(cx);
		if (!ok)
		{
			valid = false;
			if (FAST(cx) || cx->stop)
				return false;
		}
	}
	return valid;
}

/* ---------- one schema ---------- */

static bool
validate_body(JsValidator *cx, JsNode *node, JsonbValue *v, JsAnnot *ann)
{
	bool		valid = true;
	int			type = js_type_of(v);
	JsAnnot		local;
	JsAnnot    *here = NULL;
	JsNode	   *uneval = NULL;

#define CHECK(expr) \
	do { \
		if (!(expr)) \
		{ \
			valid = false; \
			if (FAST(cx) || cx->stop) \
				return false; \
		} \
	} while (0)

	if (node->kw & (JSK_TYPE | JSK_CONST | JSK_ENUM))
		CHECK(js_assert_generic(cx, node, v, type));

	switch (type)
	{
		case JST_STRING:
			if (node->kw & JSK_STRING)
				CHECK(js_assert_string(cx, node, v));
			break;
		case JST_NUMBER:
			if (node->kw & JSK_NUMBER)
				CHECK(js_assert_number(cx, node, v->val.numeric));
			break;
		case JST_OBJECT:
			if (node->kw & JSK_UNEVAL_PROPS)
			{
				uneval = node->unevaluated_properties;
				annot_init(&local, JsonContainerSize(v->val.binary.data));
				here = &local;
			}
			else
				here = ann;
			if (node->kw & JSK_OBJECT_CHECKS)
				CHECK(js_assert_object(cx, node, v->val.binary.data));
			if ((node->kw & JSK_OBJECT_APPLY) || (here && node->obj))
				CHECK(validate_object_members(cx, node, v->val.binary.data, here));
			break;
		case JST_ARRAY:
			if (node->kw & JSK_UNEVAL_ITEMS)
			{
				uneval = node->unevaluated_items;
				annot_init(&local, JsonContainerSize(v->val.binary.data));
				here = &local;
			}
			else
				here = ann;
			if (node->kw & JSK_ARRAY)
				CHECK(validate_array(cx, node, v->val.binary.data, here));
			break;
	}

	if (node->kw & (JSK_REF | JSK_DYNREF | JSK_ALLOF | JSK_ANYOF | JSK_ONEOF |
					JSK_NOT | JSK_IF | JSK_OBJECT_APPLY))
		CHECK(validate_in_place(cx, node, v, here));

	if (uneval)
	{
		CHECK(validate_unevaluated(cx, node, uneval,
								   type == JST_OBJECT ? "unevaluatedProperties" : "unevaluatedItems",
								   v->val.binary.data, &local));
		if (ann)
		{
			annot_merge(ann, &local);
			ann->all = true;
		}
	}
#undef CHECK
	return valid;
}

static bool
validate(JsValidator *cx, JsNode *node, JsonbValue *v, JsAnnot *ann)
{
	bool		pushed = false;
	bool		valid;

	if (node->is_bool)
	{
		if (node->bool_value)
			return true;
		(void) js_fail(cx, node, NULL, "not allowed by a false schema");
		return false;
	}

	check_stack_depth();
	CHECK_FOR_INTERRUPTS();

	if (cx->nscope == 0 || cx->scope[cx->nscope - 1] != node->resource)
	{
		if (cx->nscope >= cx->scope_cap)
		{
			JsResource **bigger = palloc(sizeof(JsResource *) * cx->scope_cap * 2);

			memcpy(bigger, cx->scope, sizeof(JsResource *) * cx->nscope);
			cx->scope = bigger;
			cx->scope_cap *= 2;
		}
		cx->scope[cx->nscope++] = node->resource;
		pushed = true;
	}
	valid = validate_body(cx, node, v, ann);
	if (pushed)
		cx->nscope--;
	return valid;
}

/* ---------- entry point ---------- */

static MemoryContext scratch_cxt = NULL;

/*
 * Validates instance; with errors != NULL, collects up to max_errors (0:
 * all) JsonSchemaError into *errors, allocated in the caller's context.
 * Validation calls no user code, so calls never nest: the scratch context
 * is reset before (after an error) and after each call.
 */
bool
jsonschema_validate_internal(JsonSchema *schema, Jsonb *instance,
							 List **errors, int max_errors)
{
	JsValidator cx;
	JsonbValue	root;
	MemoryContext old;
	bool		valid;

	if (scratch_cxt == NULL)
		scratch_cxt = AllocSetContextCreate(TopMemoryContext,
											"json schema validation",
											ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(scratch_cxt);
	memset(&cx, 0, sizeof(cx));
	cx.schema = schema;
	cx.collect = errors != NULL;
	cx.max_errors = max_errors;
	cx.result_cxt = CurrentMemoryContext;
	cx.path = cx.path_stack;
	cx.path_cap = lengthof(cx.path_stack);
	cx.scope = cx.scope_stack;
	cx.scope_cap = lengthof(cx.scope_stack);

	js_root_value(instance, &root);
	old = MemoryContextSwitchTo(scratch_cxt);
	valid = validate(&cx, schema->root, &root, NULL);
	MemoryContextSwitchTo(old);
	MemoryContextReset(scratch_cxt);
	if (errors)
		*errors = cx.errors;
	return valid;
}
