/*-------------------------------------------------------------------------
 * compile.c
 *	  Pass 2 of the JSON Schema compiler: one JsNode per scanned location,
 *	  keyword by keyword, and the checks on the finished graph.  The core,
 *	  applicator and unevaluated keywords are compiled here; the validation
 *	  vocabulary's in jsonschema_assert.c.
 *
 * Keyword values are checked as they are compiled: a malformed value, a
 * keyword of an older draft (dependencies, additionalItems, items as an
 * array, $recursiveRef) or an asserted format this validator does not
 * implement is an ERROR naming the schema location.  Keywords that belong
 * to no active vocabulary are annotations and are ignored, as the
 * specification requires.  After compiling, dynamic anchors are bound to
 * their nodes and in-place $ref cycles (which could never terminate) are
 * rejected.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"

#include "jsonschema/internal.h"

static JsNode *compile_loc(JsCompiler *c, JsLoc *loc);

static JsNode *
compile_child(JsCompiler *c, JsLoc *loc, const char *suffix)
{
	JsLoc	   *child = jsresolve_location(c, loc->doc,
										   psprintf("%s/%s", loc->pointer, suffix));

	if (child == NULL)
		elog(ERROR, "json schema location %s/%s was not scanned", loc->pointer, suffix);
	return compile_loc(c, child);
}

static JsNode **
compile_child_array(JsCompiler *c, JsLoc *loc, const char *kw, JsonbValue *v,
					int *n)
{
	int			count = JsonContainerSize(v->val.binary.data);
	JsNode	  **arr;
	int			i;

	if (count == 0)
		BAD_SCHEMA(js_kw_path(loc, kw), NULL, "%s must be a non-empty array", kw);
	arr = MemoryContextAlloc(c->cxt, sizeof(JsNode *) * count);
	for (i = 0; i < count; i++)
		arr[i] = compile_child(c, loc, psprintf("%s/%d", kw, i));
	*n = count;
	return arr;
}

/* object of schemas -> JsProperty[] in jsonb key order */
static JsProperty *
compile_child_object(JsCompiler *c, JsLoc *loc, const char *kw, JsonbValue *v,
					 int *n)
{
	int			count = JsonContainerSize(v->val.binary.data);
	JsProperty *props = MemoryContextAllocZero(c->cxt, sizeof(JsProperty) * Max(count, 1));
	JsIter		it;
	JsonbValue	k,
				e;
	int			i = 0;

	memset(&k, 0, sizeof(k));	/* set by js_iter_next: objects have keys */
	js_iter_init(&it, v->val.binary.data);
	while (js_iter_next(&it, &k, &e))
	{
		props[i].key.str = k.val.string.val;
		props[i].key.len = k.val.string.len;
		props[i].schema = compile_child(c, loc,
										psprintf("%s/%s", kw,
												 js_pointer_token(k.val.string.val, k.val.string.len)));
		i++;
	}
	*n = count;
	return props;
}

JsObjectKeywords *
js_object_kw(JsCompiler *c, JsNode *node)
{
	if (node->obj == NULL)
	{
		node->obj = MemoryContextAllocZero(c->cxt, sizeof(JsObjectKeywords));
		node->obj->min_properties = node->obj->max_properties = JS_NO_LIMIT;
	}
	return node->obj;
}

JsArrayKeywords *
js_array_kw(JsCompiler *c, JsNode *node)
{
	if (node->arr == NULL)
	{
		node->arr = MemoryContextAllocZero(c->cxt, sizeof(JsArrayKeywords));
		node->arr->min_items = node->arr->max_items = JS_NO_LIMIT;
		node->arr->min_contains = 1;
		node->arr->max_contains = JS_NO_LIMIT;
		node->kw |= JSK_ARRAY;
	}
	return node->arr;
}

JsRegex *
js_compile_regex(JsCompiler *c, JsLoc *loc, const char *where_kw, JsonbValue *v)
{
	char	   *error = NULL;
	JsRegex    *re;

	if (v->type != jbvString)
		BAD_SCHEMA(js_kw_path(loc, where_kw), NULL, "pattern must be a string");
	re = jsregex_compile(c->schema, v->val.string.val, v->val.string.len, &error);
	if (re == NULL)
		jsonschema_report_error(js_kw_path(loc, where_kw), ERRCODE_INVALID_REGULAR_EXPRESSION,
								"Patterns use ECMA-262 regular expression syntax.",
								"invalid regular expression \"%s\": %s",
								js_cstring(v), error);
	return re;
}


/* ---------- keywords ---------- */

static void
kw_ignore(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v)
{
}

static void
kw_string_annotation(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw,
					 JsonbValue *v)
{
	if (v->type != jbvString)
		BAD_SCHEMA(js_kw_path(loc, kw), NULL, "%s must be a string", kw);
}

static void
kw_defs(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v)
{
	int			n;

	/* compiled for their errors; reached through $ref */
	(void) compile_child_object(c, loc, kw, v, &n);
}

static void
kw_ref(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v)
{
	JsLoc	   *target;
	char	   *ref;

	if (v->type != jbvString)
		BAD_SCHEMA(js_kw_path(loc, kw), NULL, "%s must be a string", kw);
	ref = js_cstring(v);
	target = jsresolve_ref(c, loc, kw, ref);
	if (kw[1] == 'r')
	{
		node->ref = compile_loc(c, target);
		node->kw |= JSK_REF;
	}
	else
	{
		const char *fragment = strchr(ref, '#');
		JsonbValue	anchor;

		node->dynref = compile_loc(c, target);
		node->kw |= JSK_DYNREF;
		/* dynamic only if the target itself has a matching $dynamicAnchor */
		if (fragment && fragment[1] != '\0' && fragment[1] != '/' &&
			target->value.type == jbvBinary &&
			js_get_member(&target->value, "$dynamicAnchor", &anchor) &&
			anchor.type == jbvString &&
			strlen(fragment + 1) == anchor.val.string.len &&
			memcmp(fragment + 1, anchor.val.string.val, anchor.val.string.len) == 0)
			node->dynref_anchor = MemoryContextStrdup(c->cxt, fragment + 1);
	}
}

static void
kw_applicator_array(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw,
					JsonbValue *v)
{
	if (strcmp(kw, "allOf") == 0)
	{
		node->all_of = compile_child_array(c, loc, kw, v, &node->nall_of);
		node->kw |= JSK_ALLOF;
	}
	else if (strcmp(kw, "anyOf") == 0)
	{
		node->any_of = compile_child_array(c, loc, kw, v, &node->nany_of);
		node->kw |= JSK_ANYOF;
	}
	else if (strcmp(kw, "oneOf") == 0)
	{
		node->one_of = compile_child_array(c, loc, kw, v, &node->none_of);
		node->kw |= JSK_ONEOF;
	}
	else
	{
		JsArrayKeywords *arr = js_array_kw(c, node);

		arr->prefix_items = compile_child_array(c, loc, kw, v, &arr->nprefix_items);
	}
}

static void
kw_applicator(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw,
			  JsonbValue *v)
{
	JsNode	   *child;

	if (strcmp(kw, "items") == 0 && v->type == jbvBinary &&
		JsonContainerIsArray(v->val.binary.data))
		BAD_SCHEMA(js_kw_path(loc, kw),
				   "In draft 2020-12 an array of schemas is \"prefixItems\", and \"items\" applies to the rest.",
				   "items must be a schema, not an array");
	child = compile_child(c, loc, kw);

	if (strcmp(kw, "not") == 0)
	{
		node->not_schema = child;
		node->kw |= JSK_NOT;
	}
	else if (strcmp(kw, "if") == 0)
	{
		node->if_schema = child;
		node->kw |= JSK_IF;
	}
	else if (strcmp(kw, "then") == 0)
		node->then_schema = child;
	else if (strcmp(kw, "else") == 0)
		node->else_schema = child;
	else if (strcmp(kw, "items") == 0)
		js_array_kw(c, node)->items = child;
	else if (strcmp(kw, "contains") == 0)
		js_array_kw(c, node)->contains = child;
	else if (strcmp(kw, "additionalProperties") == 0)
	{
		js_object_kw(c, node)->additional_properties = child;
		node->kw |= JSK_OBJECT_APPLY;
	}
	else if (strcmp(kw, "propertyNames") == 0)
	{
		js_object_kw(c, node)->property_names = child;
		node->kw |= JSK_OBJECT_APPLY;
	}
	else if (strcmp(kw, "unevaluatedProperties") == 0)
	{
		node->unevaluated_properties = child;
		node->kw |= JSK_UNEVAL_PROPS;
	}
	else if (strcmp(kw, "unevaluatedItems") == 0)
	{
		node->unevaluated_items = child;
		node->kw |= JSK_UNEVAL_ITEMS;
	}
	/* contentSchema: compiled for its errors, never applied */
}

static void
kw_properties(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw,
			  JsonbValue *v)
{
	JsObjectKeywords *obj = js_object_kw(c, node);

	if (strcmp(kw, "properties") == 0)
		obj->properties = compile_child_object(c, loc, kw, v, &obj->nproperties);
	else if (strcmp(kw, "dependentSchemas") == 0)
		obj->dependent_schemas = compile_child_object(c, loc, kw, v,
													  &obj->ndependent_schemas);
	else
	{
		/* patternProperties */
		int			n = JsonContainerSize(v->val.binary.data);
		JsIter		it;
		JsonbValue	k,
					e;
		int			i = 0;

		obj->pattern_properties = MemoryContextAllocZero(c->cxt,
														 sizeof(JsPatternProperty) * Max(n, 1));
		js_iter_init(&it, v->val.binary.data);
		while (js_iter_next(&it, &k, &e))
		{
			char	   *token = js_pointer_token(k.val.string.val, k.val.string.len);

			obj->pattern_properties[i].re =
				js_compile_regex(c, loc, psprintf("%s/%s", kw, token), &k);
			obj->pattern_properties[i].schema =
				compile_child(c, loc, psprintf("%s/%s", kw, token));
			i++;
		}
		obj->npattern_properties = n;
	}
	node->kw |= JSK_OBJECT_APPLY;
}

static void
kw_legacy(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v)
{
	const char *hint = NULL;

	if (strcmp(kw, "dependencies") == 0)
		hint = "Use \"dependentRequired\" for arrays of names and \"dependentSchemas\" for schemas.";
	else if (strcmp(kw, "additionalItems") == 0)
		hint = "Use \"prefixItems\" for the leading items and \"items\" for the rest.";
	else if (strcmp(kw, "$recursiveRef") == 0)
		hint = "Use \"$dynamicRef\".";
	else
		hint = "Use \"$dynamicAnchor\".";
	BAD_SCHEMA(js_kw_path(loc, kw), hint,
			   "keyword \"%s\" is not part of JSON Schema draft 2020-12", kw);
}

static const struct
{
	const char *name;
	uint32		vocab;
	KeywordCompiler fn;
}			keywords_2020_12[] =
{
	/* core */
	{"$id", JSV_CORE, kw_ignore},	/* handled by the scan */
	{"$schema", JSV_CORE, kw_ignore},
	{"$anchor", JSV_CORE, kw_ignore},
	{"$dynamicAnchor", JSV_CORE, kw_ignore},
	{"$vocabulary", JSV_CORE, kw_ignore},
	{"$comment", JSV_CORE, kw_string_annotation},
	{"$defs", JSV_CORE, kw_defs},
	{"$ref", JSV_CORE, kw_ref},
	{"$dynamicRef", JSV_CORE, kw_ref},
	/* applicator */
	{"allOf", JSV_APPLICATOR, kw_applicator_array},
	{"anyOf", JSV_APPLICATOR, kw_applicator_array},
	{"oneOf", JSV_APPLICATOR, kw_applicator_array},
	{"prefixItems", JSV_APPLICATOR, kw_applicator_array},
	{"not", JSV_APPLICATOR, kw_applicator},
	{"if", JSV_APPLICATOR, kw_applicator},
	{"then", JSV_APPLICATOR, kw_applicator},
	{"else", JSV_APPLICATOR, kw_applicator},
	{"items", JSV_APPLICATOR, kw_applicator},
	{"contains", JSV_APPLICATOR, kw_applicator},
	{"additionalProperties", JSV_APPLICATOR, kw_applicator},
	{"propertyNames", JSV_APPLICATOR, kw_applicator},
	{"properties", JSV_APPLICATOR, kw_properties},
	{"patternProperties", JSV_APPLICATOR, kw_properties},
	{"dependentSchemas", JSV_APPLICATOR, kw_properties},
	/* unevaluated */
	{"unevaluatedItems", JSV_UNEVALUATED, kw_applicator},
	{"unevaluatedProperties", JSV_UNEVALUATED, kw_applicator},
	/* validation */
	{"type", JSV_VALIDATION, jskw_type},
	{"enum", JSV_VALIDATION, jskw_enum},
	{"const", JSV_VALIDATION, jskw_const},
	{"multipleOf", JSV_VALIDATION, jskw_number},
	{"maximum", JSV_VALIDATION, jskw_number},
	{"exclusiveMaximum", JSV_VALIDATION, jskw_number},
	{"minimum", JSV_VALIDATION, jskw_number},
	{"exclusiveMinimum", JSV_VALIDATION, jskw_number},
	{"maxLength", JSV_VALIDATION, jskw_count},
	{"minLength", JSV_VALIDATION, jskw_count},
	{"pattern", JSV_VALIDATION, jskw_pattern},
	{"maxItems", JSV_VALIDATION, jskw_count},
	{"minItems", JSV_VALIDATION, jskw_count},
	{"uniqueItems", JSV_VALIDATION, jskw_unique_items},
	{"maxContains", JSV_VALIDATION, jskw_count},
	{"minContains", JSV_VALIDATION, jskw_count},
	{"maxProperties", JSV_VALIDATION, jskw_count},
	{"minProperties", JSV_VALIDATION, jskw_count},
	{"required", JSV_VALIDATION, jskw_required},
	{"dependentRequired", JSV_VALIDATION, jskw_dependent_required},
	/* format */
	{"format", JSV_FORMAT_ANNOTATION | JSV_FORMAT_ASSERTION, jskw_format},
	/* content: annotations only in 2020-12 */
	{"contentEncoding", JSV_CONTENT, kw_string_annotation},
	{"contentMediaType", JSV_CONTENT, kw_string_annotation},
	{"contentSchema", JSV_CONTENT, kw_applicator},
	/* keywords of earlier drafts that would silently change meaning */
	{"dependencies", 0, kw_legacy},
	{"additionalItems", 0, kw_legacy},
	{"$recursiveRef", 0, kw_legacy},
	{"$recursiveAnchor", 0, kw_legacy},
};

static void
compile_keywords(JsCompiler *c, JsNode *node, JsLoc *loc)
{
	uint32		vocab = loc->resource->vocab;
	JsIter		it;
	JsonbValue	k,
				v;

	js_iter_init(&it, loc->value.val.binary.data);
	while (js_iter_next(&it, &k, &v))
	{
		int			i;

		for (i = 0; i < lengthof(keywords_2020_12); i++)
		{
			const char *name = keywords_2020_12[i].name;

			if (strlen(name) != k.val.string.len ||
				memcmp(name, k.val.string.val, k.val.string.len) != 0)
				continue;
			if (keywords_2020_12[i].vocab == 0 || (keywords_2020_12[i].vocab & vocab))
				keywords_2020_12[i].fn(c, node, loc, name, &v);
			break;
		}
		/* anything else is an annotation (meta-data or unknown keyword) */
	}

	if (node->obj)
	{
		JsObjectKeywords *obj = node->obj;

		obj->iterate = obj->npattern_properties > 0 ||
			obj->additional_properties != NULL || obj->property_names != NULL;
	}
	if (node->arr && node->arr->contains == NULL)
	{
		/* minContains/maxContains without contains have no effect */
		node->arr->min_contains = 1;
		node->arr->max_contains = JS_NO_LIMIT;
	}
}

static JsNode *
compile_loc(JsCompiler *c, JsLoc *loc)
{
	JsNode	   *node;

	if (loc->node)
		return loc->node;
	check_stack_depth();
	CHECK_FOR_INTERRUPTS();

	node = MemoryContextAllocZero(c->cxt, sizeof(JsNode));
	loc->node = node;
	node->resource = loc->resource;
	node->path = loc->doc->id != 0 ?
		MemoryContextStrdup(c->cxt, psprintf("%s#%s", loc->doc->uri, loc->pointer)) :
		MemoryContextStrdup(c->cxt, loc->pointer);
	c->nodes = lappend(c->nodes, node);

	if (loc->value.type == jbvBool)
	{
		node->is_bool = true;
		node->bool_value = loc->value.val.boolean;
		return node;
	}
	compile_keywords(c, node, loc);
	return node;
}

/* ---------- checks on the compiled graph ---------- */

#define VISIT_NONE		0
#define VISIT_ACTIVE	1
#define VISIT_DONE		2

static void check_in_place_cycle(JsNode *node);

static void
check_edge(JsNode *from, JsNode *to)
{
	if (to == NULL)
		return;
	if (to->visit == VISIT_ACTIVE)
		jsonschema_report_error(from->path, ERRCODE_INVALID_PARAMETER_VALUE,
								"A reference cycle must pass through a keyword that descends into the instance, such as \"properties\" or \"items\".",
								"$ref cycle: the schema at \"%s\" applies itself to the same value without end",
								to->path);
	check_in_place_cycle(to);
}

/*
 * $ref, allOf, anyOf, oneOf, not, if/then/else and dependentSchemas apply
 * to the same instance: a cycle through them alone would never end.
 */
static void
check_in_place_cycle(JsNode *node)
{
	int			i;

	if (node->visit != VISIT_NONE)
		return;
	check_stack_depth();
	node->visit = VISIT_ACTIVE;
	check_edge(node, node->ref);
	for (i = 0; i < node->nall_of; i++)
		check_edge(node, node->all_of[i]);
	for (i = 0; i < node->nany_of; i++)
		check_edge(node, node->any_of[i]);
	for (i = 0; i < node->none_of; i++)
		check_edge(node, node->one_of[i]);
	check_edge(node, node->not_schema);
	check_edge(node, node->if_schema);
	check_edge(node, node->then_schema);
	check_edge(node, node->else_schema);
	if (node->obj)
		for (i = 0; i < node->obj->ndependent_schemas; i++)
			check_edge(node, node->obj->dependent_schemas[i].schema);
	node->visit = VISIT_DONE;
}

/* Binds every resource's dynamic anchors to compiled nodes. */
static void
bind_dynamic_anchors(JsCompiler *c)
{
	int			i;

	/* compiling an anchor may load documents and add resources */
	for (i = 0; i < list_length(c->resources); i++)
	{
		JsResource *res = list_nth(c->resources, i);
		JsDynAnchor *a;

		for (a = res->dynamic_anchors; a; a = a->next)
			a->node = compile_loc(c, jsresolve_location(c, res->doc, a->pointer));
	}
}

static void
free_regexes(void *arg)
{
	JsonSchema *schema = arg;
	ListCell   *lc;

	foreach(lc, schema->regexes)
		jsregex_free(lfirst(lc));
	schema->regexes = NIL;
}

JsonSchema *
jsonschema_compile_internal(Jsonb *jb, const char *base_uri, MemoryContext parent,
							bool format_assertion)
{
	MemoryContext cxt;
	MemoryContext tmp;
	MemoryContext old;
	JsonSchema *schema;
	MemoryContextCallback *cb;

	cxt = AllocSetContextCreate(parent, "json schema", ALLOCSET_SMALL_SIZES);
	schema = MemoryContextAllocZero(cxt, sizeof(JsonSchema));
	schema->cxt = cxt;
	schema->format_assertion = format_assertion;
	cb = MemoryContextAllocZero(cxt, sizeof(MemoryContextCallback));
	cb->func = free_regexes;
	cb->arg = schema;
	MemoryContextRegisterResetCallback(cxt, cb);

	tmp = AllocSetContextCreate(CurrentMemoryContext, "json schema compiler",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(tmp);
	PG_TRY();
	{
		JsCompiler	c;
		JsLoc	   *root;
		ListCell   *lc;

		jsresolve_init(&c, schema);
		root = jsresolve_root(&c, jb, base_uri);
		schema->root = compile_loc(&c, root);
		bind_dynamic_anchors(&c);
		foreach(lc, c.nodes)
			check_in_place_cycle(lfirst(lc));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		MemoryContextDelete(tmp);
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(tmp);
	return schema;
}
