/*-------------------------------------------------------------------------
 * resolve.c
 *	  Pass 1 of the JSON Schema compiler: documents, schema resources and
 *	  $ref resolution.
 *
 * The scan walks every subschema of a document reachable through schema
 * keywords and records, for each location (document + JSON pointer), its
 * schema resource; it registers resources ($id) and anchors ($anchor,
 * $dynamicAnchor) by absolute URI and sets each resource's vocabularies
 * from its $schema.  References are resolved through that index (RFC 3986
 * against the resource's base URI, then a JSON pointer or an anchor).
 * Documents named by a $ref or $schema that are not part of the schema
 * are loaded on demand from the built-in meta-schemas (jsonschema_meta.c)
 * or from the registry (stream.schemas) and scanned in turn.
 *
 * Dialects: only 2020-12 is implemented; another draft would add its own
 * subschema keyword table and vocabulary mapping here.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "jsonschema/internal.h"

typedef struct StrMapEntry
{
	char	   *key;
	JsLoc	   *loc;
} StrMapEntry;

static void scan_schema(JsCompiler *c, JsDocument *doc, JsonbValue *v,
						const char *pointer, JsResource *res, int depth);

/* ---------- errors ---------- */

void
jsonschema_report_error(const char *location, int sqlstate, const char *hint,
						const char *fmt,...)
{
	char	   *msg;
	va_list		args;
	StringInfoData buf;

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
	msg = buf.data;
	if (strlen(location) > 200)
		location = psprintf("%.*s...", pg_mbcliplen(location, strlen(location), 200), location);
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg_internal("%s", msg),
			 location[0] ? errdetail("at schema location \"%s\"", location) :
			 errdetail("at the schema root"),
			 errhint("%s", hint ? hint :
					 "Each keyword takes the kind of value the draft 2020-12 meta-schema gives it.")));
}


/* location of keyword kw of the schema at loc, for messages */
char *
js_kw_path(JsLoc *loc, const char *kw)
{
	/* locations in the schema itself are plain pointers; others name their document */
	if (loc->doc->id != 0)
		return psprintf("%s#%s/%s", loc->doc->uri, loc->pointer, kw);
	return psprintf("%s/%s", loc->pointer, kw);
}

/* ---------- string maps ---------- */

static uint32
strmap_hash(const void *key, Size keysize)
{
	const char *s = *(char *const *) key;

	return hash_bytes((const unsigned char *) s, strlen(s));
}

static int
strmap_match(const void *a, const void *b, Size keysize)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

static HTAB *
strmap_create(const char *name, MemoryContext cxt)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(char *);
	ctl.entrysize = sizeof(StrMapEntry);
	ctl.hash = strmap_hash;
	ctl.match = strmap_match;
	ctl.hcxt = cxt;
	return hash_create(name, 64, &ctl,
					   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
}

static JsLoc *
strmap_get(HTAB *map, const char *key)
{
	StrMapEntry *e = hash_search(map, &key, HASH_FIND, NULL);

	return e ? e->loc : NULL;
}

/* Adds key -> loc; returns false if key is already there. */
static bool
strmap_put(JsCompiler *c, HTAB *map, const char *key, JsLoc *loc)
{
	char	   *k = pstrdup(key);	/* the compiler's temporary context */
	bool		found;
	StrMapEntry *e = hash_search(map, &k, HASH_ENTER, &found);

	if (found)
		return false;
	e->key = k;
	e->loc = loc;
	return true;
}

static char *
loc_key(JsDocument *doc, const char *pointer)
{
	return psprintf("%d:%s", doc->id, pointer);
}

/* ---------- JSON helpers ---------- */

bool
js_get_member(JsonbValue *obj, const char *key, JsonbValue *out)
{
	return js_get_key(obj->val.binary.data, key, strlen(key), out);
}

char *
js_cstring(JsonbValue *v)
{
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* Escapes a property name as a JSON pointer token (~ -> ~0, / -> ~1). */
char *
js_pointer_token(const char *s, int len)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	for (i = 0; i < len; i++)
	{
		if (s[i] == '~')
			appendStringInfoString(&buf, "~0");
		else if (s[i] == '/')
			appendStringInfoString(&buf, "~1");
		else
			appendStringInfoChar(&buf, s[i]);
	}
	return buf.data;
}

bool
js_is_schema_value(JsonbValue *v)
{
	return v->type == jbvBool ||
		(v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data));
}

/* ---------- documents and resources ---------- */

static JsResource *
new_resource(JsCompiler *c, JsDocument *doc, const char *uri, uint32 vocab)
{
	JsResource *res = MemoryContextAllocZero(c->cxt, sizeof(JsResource));

	res->uri = MemoryContextStrdup(c->cxt, uri);
	res->doc = doc;
	res->vocab = vocab;
	c->resources = lappend(c->resources, res);
	return res;
}

static JsDocument *
new_document(JsCompiler *c, Jsonb *jb, const char *uri, bool from_registry)
{
	JsDocument *doc = MemoryContextAllocZero(c->cxt, sizeof(JsDocument));
	MemoryContext old = MemoryContextSwitchTo(c->cxt);

	doc->id = c->ndocs++;
	doc->uri = pstrdup(uri ? uri : "");
	doc->jb = (Jsonb *) palloc(VARSIZE(jb));
	memcpy(doc->jb, jb, VARSIZE(jb));
	doc->from_registry = from_registry;
	c->schema->documents = lappend(c->schema->documents, doc);
	if (from_registry)
		c->schema->uses_registry = true;
	MemoryContextSwitchTo(old);
	return doc;
}

/* Parses a built-in meta-schema once per backend. */
static Jsonb *
builtin_document(const char *uri)
{
	static HTAB *parsed = NULL;
	const char *text = jsonschema_builtin_text(uri);
	typedef struct
	{
		char		uri[128];
		Jsonb	   *jb;
	}			BuiltinEntry;
	BuiltinEntry *e;
	bool		found;
	char		key[128];

	if (text == NULL || strlen(uri) >= sizeof(key))
		return NULL;
	if (parsed == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(key);
		ctl.entrysize = sizeof(BuiltinEntry);
		parsed = hash_create("json schema meta-schemas", 16, &ctl,
							 HASH_ELEM | HASH_STRINGS);
	}
	memset(key, 0, sizeof(key));
	strlcpy(key, uri, sizeof(key));
	e = hash_search(parsed, key, HASH_ENTER, &found);
	if (!found)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		e->jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
		MemoryContextSwitchTo(old);
	}
	return e->jb;
}

/*
 * Loads the document named by uri (absolute, no fragment) from the built-in
 * meta-schemas or the registry, scans it and returns its root location;
 * NULL if there is no such document.
 */
static JsLoc *
load_document(JsCompiler *c, const char *uri)
{
	Jsonb	   *jb;
	bool		from_registry = false;
	JsDocument *doc;
	JsonbValue	root;

	if (!jsuri_is_absolute(uri))
		return NULL;
	jb = builtin_document(uri);
	if (jb == NULL)
	{
		jb = jsonschema_registry_fetch(uri);
		from_registry = true;
	}
	if (jb == NULL)
		return NULL;
	doc = new_document(c, jb, uri, from_registry);
	js_root_value(doc->jb, &root);
	scan_schema(c, doc, &root, "", NULL, 0);
	return strmap_get(c->uris, uri);
}

/* root location of the resource or document named by uri (no fragment) */
static JsLoc *
find_resource(JsCompiler *c, const char *uri)
{
	JsLoc	   *loc = strmap_get(c->uris, uri);

	if (loc == NULL)
		loc = load_document(c, uri);
	return loc;
}

/* ---------- dialects and vocabularies ---------- */

static const struct
{
	const char *uri;
	uint32		bit;
}			vocabularies_2020_12[] =
{
	{"https://json-schema.org/draft/2020-12/vocab/core", JSV_CORE},
	{"https://json-schema.org/draft/2020-12/vocab/applicator", JSV_APPLICATOR},
	{"https://json-schema.org/draft/2020-12/vocab/unevaluated", JSV_UNEVALUATED},
	{"https://json-schema.org/draft/2020-12/vocab/validation", JSV_VALIDATION},
	{"https://json-schema.org/draft/2020-12/vocab/meta-data", JSV_METADATA},
	{"https://json-schema.org/draft/2020-12/vocab/format-annotation", JSV_FORMAT_ANNOTATION},
	{"https://json-schema.org/draft/2020-12/vocab/format-assertion", JSV_FORMAT_ASSERTION},
	{"https://json-schema.org/draft/2020-12/vocab/content", JSV_CONTENT},
};

static const char *const other_dialects[] = {
	"https://json-schema.org/draft/2019-09/schema",
	"http://json-schema.org/draft-07/schema",
	"http://json-schema.org/draft-06/schema",
	"http://json-schema.org/draft-04/schema",
	"http://json-schema.org/draft-03/schema",
};

/*
 * The vocabularies a schema resource gets from its "$schema" (uri):
 * 2020-12 itself, or a meta-schema whose $vocabulary lists them.
 */
static uint32
dialect_vocabularies(JsCompiler *c, const char *uri, const char *where,
					 int depth)
{
	const char *fragment;
	char	   *base = jsuri_split_fragment(uri, &fragment);
	JsLoc	   *meta;
	JsonbValue	vocab;
	int			i;

	if (fragment && fragment[0] != '\0')
		BAD_SCHEMA(where, NULL, "$schema \"%s\" must not have a fragment", uri);
	if (strcmp(base, JS_META_2020_12) == 0)
		return JSV_DEFAULT_2020_12;
	for (i = 0; i < lengthof(other_dialects); i++)
		if (strcmp(base, other_dialects[i]) == 0)
			BAD_SCHEMA(where,
					   "Declare \"$schema\": \"" JS_META_2020_12 "\"; only draft 2020-12 is supported for now.",
					   "JSON Schema dialect \"%s\" is not supported", uri);
	if (!jsuri_is_absolute(base))
		BAD_SCHEMA(where, NULL, "$schema \"%s\" is not an absolute URI", uri);
	if (depth > 8)
		BAD_SCHEMA(where, NULL, "meta-schema chain of \"%s\" is too long", uri);

	meta = find_resource(c, base);
	if (meta == NULL)
		BAD_SCHEMA(where,
				   "Register the meta-schema with stream.register_schema(), or use \"" JS_META_2020_12 "\".",
				   "unknown $schema \"%s\"", uri);
	if (meta->value.type != jbvBinary)
		return JSV_DEFAULT_2020_12;

	if (js_get_member(&meta->value, "$vocabulary", &vocab) && vocab.type == jbvBinary &&
		JsonContainerIsObject(vocab.val.binary.data))
	{
		JsIter		it;
		JsonbValue	k,
					v;
		uint32		bits = JSV_CORE;

		js_iter_init(&it, vocab.val.binary.data);
		while (js_iter_next(&it, &k, &v))
		{
			bool		known = false;

			for (i = 0; i < lengthof(vocabularies_2020_12); i++)
			{
				if (strlen(vocabularies_2020_12[i].uri) == k.val.string.len &&
					memcmp(vocabularies_2020_12[i].uri, k.val.string.val, k.val.string.len) == 0)
				{
					bits |= vocabularies_2020_12[i].bit;
					known = true;
				}
			}
			if (!known && v.type == jbvBool && v.val.boolean)
				BAD_SCHEMA(where,
						   "Only the vocabularies of draft 2020-12 are supported; an optional vocabulary may be marked false.",
						   "meta-schema \"%s\" requires the unsupported vocabulary \"%s\"",
						   uri, js_cstring(&k));
		}
		return bits;
	}
	/* no $vocabulary: the meta-schema's own dialect decides */
	{
		JsonbValue	s;

		if (js_get_member(&meta->value, "$schema", &s) && s.type == jbvString)
		{
			char	   *next = js_cstring(&s);

			if (strcmp(next, base) != 0)
				return dialect_vocabularies(c, next, where, depth + 1);
		}
	}
	return JSV_DEFAULT_2020_12;
}

/* ---------- pass 1: scan ---------- */

/* keywords whose value is a schema, an array of schemas, or an object of them */
typedef enum
{
	SUB_SCHEMA,
	SUB_ARRAY,
	SUB_OBJECT
} SubKind;

static const struct
{
	const char *name;
	SubKind		kind;
	uint32		vocab;
}			subschema_keywords[] =
{
	{"$defs", SUB_OBJECT, JSV_CORE},
	{"allOf", SUB_ARRAY, JSV_APPLICATOR},
	{"anyOf", SUB_ARRAY, JSV_APPLICATOR},
	{"oneOf", SUB_ARRAY, JSV_APPLICATOR},
	{"not", SUB_SCHEMA, JSV_APPLICATOR},
	{"if", SUB_SCHEMA, JSV_APPLICATOR},
	{"then", SUB_SCHEMA, JSV_APPLICATOR},
	{"else", SUB_SCHEMA, JSV_APPLICATOR},
	{"dependentSchemas", SUB_OBJECT, JSV_APPLICATOR},
	{"prefixItems", SUB_ARRAY, JSV_APPLICATOR},
	{"items", SUB_SCHEMA, JSV_APPLICATOR},
	{"contains", SUB_SCHEMA, JSV_APPLICATOR},
	{"properties", SUB_OBJECT, JSV_APPLICATOR},
	{"patternProperties", SUB_OBJECT, JSV_APPLICATOR},
	{"additionalProperties", SUB_SCHEMA, JSV_APPLICATOR},
	{"propertyNames", SUB_SCHEMA, JSV_APPLICATOR},
	{"unevaluatedItems", SUB_SCHEMA, JSV_UNEVALUATED},
	{"unevaluatedProperties", SUB_SCHEMA, JSV_UNEVALUATED},
	{"contentSchema", SUB_SCHEMA, JSV_CONTENT},
};

static bool
valid_anchor_name(const char *s)
{
	if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
		return false;
	for (s++; *s; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
			  (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
			return false;
	return true;
}

static void
register_anchor(JsCompiler *c, JsLoc *loc, const char *kw, JsonbValue *v,
				bool dynamic)
{
	char	   *name;
	char	   *uri;
	JsLoc	   *prev;

	if (v->type != jbvString)
		BAD_SCHEMA(js_kw_path(loc, kw), NULL, "%s must be a string", kw);
	name = js_cstring(v);
	if (!valid_anchor_name(name))
		BAD_SCHEMA(js_kw_path(loc, kw),
				   "An anchor starts with a letter or \"_\" and continues with letters, digits, \"-\", \"_\" or \".\".",
				   "invalid %s \"%s\"", kw, name);
	uri = psprintf("%s#%s", loc->resource->uri, name);
	prev = strmap_get(c->uris, uri);
	if (prev != NULL && prev != loc)
		BAD_SCHEMA(js_kw_path(loc, kw), NULL,
				   "duplicate anchor \"%s\" in schema resource \"%s\"",
				   name, loc->resource->uri);
	strmap_put(c, c->uris, uri, loc);
	if (dynamic)
	{
		JsDynAnchor *a = MemoryContextAllocZero(c->cxt, sizeof(JsDynAnchor));

		a->name = MemoryContextStrdup(c->cxt, name);
		a->pointer = MemoryContextStrdup(c->cxt, loc->pointer);
		a->next = loc->resource->dynamic_anchors;
		loc->resource->dynamic_anchors = a;
	}
}

static void
scan_child(JsCompiler *c, JsDocument *doc, JsLoc *loc, const char *suffix,
		   JsonbValue *v, const char *kw)
{
	char	   *pointer = psprintf("%s/%s", loc->pointer, suffix);

	if (!js_is_schema_value(v))
		BAD_SCHEMA(js_kw_path(loc, suffix), NULL,
				   "the value of \"%s\" must be a schema (an object or a boolean)", kw);
	scan_schema(c, doc, v, pointer, loc->resource, loc->depth + 1);
}

/*
 * Records the location of schema v and everything under it.  res is the
 * enclosing resource, NULL at the root of a document.
 */
static void
scan_schema(JsCompiler *c, JsDocument *doc, JsonbValue *v, const char *pointer,
			JsResource *res, int depth)
{
	char	   *key = loc_key(doc, pointer);
	JsLoc	   *loc;
	JsonbValue	m;
	int			i;
	bool		is_root = (res == NULL);
	JsResource *enclosing = res;

	check_stack_depth();
	CHECK_FOR_INTERRUPTS();

	if (strmap_get(c->locations, key) != NULL)
		return;
	if (depth > JS_MAX_SCHEMA_DEPTH)
		BAD_SCHEMA(pointer,
				   "Schemas may nest subschemas " CppAsString2(JS_MAX_SCHEMA_DEPTH) " levels deep; use $defs and $ref for recursive structures.",
				   "schema is nested too deeply");
	loc = palloc0(sizeof(JsLoc));
	loc->depth = depth;
	loc->doc = doc;
	loc->pointer = pstrdup(pointer);
	loc->value = *v;
	strmap_put(c, c->locations, key, loc);

	if (is_root)
	{
		res = new_resource(c, doc, doc->uri, JSV_DEFAULT_2020_12);
		if (doc->uri[0] != '\0' || strmap_get(c->uris, "") == NULL)
			strmap_put(c, c->uris, doc->uri, loc);
	}
	loc->resource = res;

	if (v->type == jbvBool)
		return;
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		BAD_SCHEMA(pointer, "A schema is a JSON object or a boolean.",
				   "schema must be an object or a boolean, not %s",
				   js_type_name(js_type_of(v)));

	if (js_get_member(v, "$id", &m))
	{
		char	   *id;
		char	   *uri;
		const char *fragment;
		char	   *base;

		if (m.type != jbvString)
			BAD_SCHEMA(js_kw_path(loc, "$id"), NULL, "$id must be a string");
		id = js_cstring(&m);
		uri = jsuri_resolve(res->uri, id);
		base = jsuri_split_fragment(uri, &fragment);
		if (fragment && fragment[0] != '\0')
			BAD_SCHEMA(js_kw_path(loc, "$id"),
					   "Use \"$anchor\" to name a subschema.",
					   "$id \"%s\" must not contain a fragment", id);
		if (!is_root || strcmp(base, res->uri) != 0)
		{
			JsLoc	   *prev = strmap_get(c->uris, base);

			if (prev != NULL && prev != loc)
				BAD_SCHEMA(js_kw_path(loc, "$id"), NULL,
						   "duplicate $id \"%s\"", base);
			res = new_resource(c, doc, base, res->vocab);
			strmap_put(c, c->uris, base, loc);
			loc->resource = res;
		}
	}
	if (js_get_member(v, "$schema", &m))
	{
		if (m.type != jbvString)
			BAD_SCHEMA(js_kw_path(loc, "$schema"), NULL, "$schema must be a string");
		if (!is_root && res == enclosing)
			BAD_SCHEMA(js_kw_path(loc, "$schema"),
					   "Give the subschema an \"$id\" to make it a schema resource.",
					   "$schema is only allowed at the root of a schema resource");
		res->vocab = dialect_vocabularies(c, js_cstring(&m),
										  js_kw_path(loc, "$schema"), 0);
	}
	if (js_get_member(v, "$anchor", &m))
		register_anchor(c, loc, "$anchor", &m, false);
	if (js_get_member(v, "$dynamicAnchor", &m))
		register_anchor(c, loc, "$dynamicAnchor", &m, true);

	for (i = 0; i < lengthof(subschema_keywords); i++)
	{
		const char *kw = subschema_keywords[i].name;

		if (!(res->vocab & subschema_keywords[i].vocab) || !js_get_member(v, kw, &m))
			continue;
		if (subschema_keywords[i].kind == SUB_SCHEMA)
		{
			/* "items" as an array is draft 2019-09: compile reports it */
			if (strcmp(kw, "items") == 0 && m.type == jbvBinary &&
				JsonContainerIsArray(m.val.binary.data))
				continue;
			scan_child(c, doc, loc, kw, &m, kw);
		}
		else
		{
			JsIter		it;
			JsonbValue	k,
						e;
			int			n = 0;
			bool		want_object = subschema_keywords[i].kind == SUB_OBJECT;

			if (m.type != jbvBinary ||
				JsonContainerIsObject(m.val.binary.data) != want_object ||
				JsonContainerIsScalar(m.val.binary.data))
				BAD_SCHEMA(js_kw_path(loc, kw), NULL,
						   want_object ? "the value of \"%s\" must be an object of schemas" :
						   "the value of \"%s\" must be an array of schemas", kw);
			js_iter_init(&it, m.val.binary.data);
			while (js_iter_next(&it, &k, &e))
			{
				char	   *suffix;

				if (want_object)
					suffix = psprintf("%s/%s", kw,
									  js_pointer_token(k.val.string.val, k.val.string.len));
				else
					suffix = psprintf("%s/%d", kw, n);
				n++;
				scan_child(c, doc, loc, suffix, &e, kw);
			}
		}
	}
}

/* ---------- $ref resolution ---------- */

/* Walks an (unescaped by token) JSON pointer from a location's value. */
static bool
walk_pointer(JsonbValue *from, const char *pointer, JsonbValue *out)
{
	JsonbValue	cur = *from;
	const char *p = pointer;

	while (*p == '/')
	{
		StringInfoData tok;

		p++;
		initStringInfo(&tok);
		while (*p && *p != '/')
		{
			if (p[0] == '~' && p[1] == '0')
			{
				appendStringInfoChar(&tok, '~');
				p += 2;
			}
			else if (p[0] == '~' && p[1] == '1')
			{
				appendStringInfoChar(&tok, '/');
				p += 2;
			}
			else
				appendStringInfoChar(&tok, *p++);
		}
		if (cur.type != jbvBinary)
			return false;
		if (JsonContainerIsObject(cur.val.binary.data))
		{
			JsonbValue	next;

			if (!js_get_key(cur.val.binary.data, tok.data, tok.len, &next))
				return false;
			cur = next;
		}
		else
		{
			char	   *end;
			long		idx;
			JsIter		it;
			JsonbValue	e;
			long		i;

			if (tok.len == 0 || (tok.len > 1 && tok.data[0] == '0'))
				return false;
			idx = strtol(tok.data, &end, 10);
			if (*end != '\0' || idx < 0 || idx >= JsonContainerSize(cur.val.binary.data))
				return false;
			js_iter_init(&it, cur.val.binary.data);
			for (i = 0; i <= idx; i++)
				js_iter_next(&it, NULL, &e);
			cur = e;
		}
	}
	if (*p != '\0')
		return false;
	*out = cur;
	return true;
}

/* Resolves a $ref/$dynamicRef value found at loc; ERROR if it cannot. */
JsLoc *
jsresolve_ref(JsCompiler *c, JsLoc *loc, const char *kw, const char *ref)
{
	char	   *abs = jsuri_resolve(loc->resource->uri, ref);
	const char *fragment;
	char	   *base = jsuri_split_fragment(abs, &fragment);
	JsLoc	   *root;
	JsLoc	   *target = NULL;

	root = find_resource(c, base);
	if (root != NULL)
	{
		char	   *frag = fragment ? jsuri_percent_decode(fragment) : NULL;

		if (frag == NULL || frag[0] == '\0')
			target = root;
		else if (frag[0] == '/')
		{
			char	   *pointer = psprintf("%s%s", root->pointer, frag);

			target = strmap_get(c->locations, loc_key(root->doc, pointer));
			if (target == NULL)
			{
				JsonbValue	v;

				if (walk_pointer(&root->value, frag, &v) && js_is_schema_value(&v))
				{
					scan_schema(c, root->doc, &v, pointer, root->resource, 0);
					target = strmap_get(c->locations, loc_key(root->doc, pointer));
				}
			}
		}
		else
			target = strmap_get(c->uris, psprintf("%s#%s", base, frag));
	}
	if (target == NULL)
		BAD_SCHEMA(js_kw_path(loc, kw),
				   "Register the referenced schema with stream.register_schema(uri, schema), or fix the reference.",
				   "could not resolve %s \"%s\"", kw, ref);
	return target;
}


/* ---------- entry points for the compiler ---------- */

void
jsresolve_init(JsCompiler *c, JsonSchema *schema)
{
	memset(c, 0, sizeof(JsCompiler));
	c->schema = schema;
	c->cxt = schema->cxt;
	c->locations = strmap_create("json schema locations", CurrentMemoryContext);
	c->uris = strmap_create("json schema uris", CurrentMemoryContext);
}

/* The scanned location at pointer in doc, or NULL. */
JsLoc *
jsresolve_location(JsCompiler *c, JsDocument *doc, const char *pointer)
{
	return strmap_get(c->locations, loc_key(doc, pointer));
}

/* Adds the schema being compiled as document 0 and scans it. */
JsLoc *
jsresolve_root(JsCompiler *c, Jsonb *jb, const char *base_uri)
{
	JsDocument *doc;
	JsonbValue	root;

	if (base_uri && base_uri[0] != '\0' && !jsuri_is_absolute(base_uri))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("base URI \"%s\" is not an absolute URI", base_uri)));
	doc = new_document(c, jb, base_uri, false);
	js_root_value(doc->jb, &root);
	scan_schema(c, doc, &root, "", NULL, 0);
	return jsresolve_location(c, doc, "");
}
