/*-------------------------------------------------------------------------
 * jsonschema_internal.h
 *	  Internal form of a compiled JSON Schema, shared by the files of the
 *	  validator (jsonschema*.c).  Nothing outside them includes this; the
 *	  contract for other modules is jsonschema.h.
 *
 * A compiled schema is a graph of JsNode (one per schema object or boolean
 * schema, shared by every $ref that reaches it), allocated in the schema's
 * own memory context together with the jsonb documents it was compiled
 * from (keyword values such as const, enum and property names point into
 * them).
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_JSONSCHEMA_INTERNAL_H
#define STREAM_JSONSCHEMA_INTERNAL_H

#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "jsonschema/jsonschema.h"

/* instance types, as a bitmask ("integer" is a subset of "number") */
#define JST_NULL		0x01
#define JST_BOOLEAN		0x02
#define JST_OBJECT		0x04
#define JST_ARRAY		0x08
#define JST_NUMBER		0x10
#define JST_STRING		0x20
#define JST_INTEGER		0x40

/* vocabularies of draft 2020-12 */
#define JSV_CORE				0x01
#define JSV_APPLICATOR			0x02
#define JSV_UNEVALUATED			0x04
#define JSV_VALIDATION			0x08
#define JSV_METADATA			0x10
#define JSV_FORMAT_ANNOTATION	0x20
#define JSV_FORMAT_ASSERTION	0x40
#define JSV_CONTENT				0x80
#define JSV_DEFAULT_2020_12 \
	(JSV_CORE | JSV_APPLICATOR | JSV_UNEVALUATED | JSV_VALIDATION | \
	 JSV_METADATA | JSV_FORMAT_ANNOTATION | JSV_CONTENT)

#define JS_META_2020_12 "https://json-schema.org/draft/2020-12/schema"

typedef struct JsNode JsNode;
typedef struct JsRegex JsRegex;

/* A jsonb document the schema was compiled from (root or referenced). */
typedef struct JsDocument
{
	int			id;
	char	   *uri;			/* retrieval URI, "" for the root schema */
	Jsonb	   *jb;				/* private copy */
	bool		from_registry;	/* loaded from stream.schemas */
} JsDocument;

typedef struct JsDynAnchor
{
	char	   *name;
	char	   *pointer;		/* location within the resource's document */
	JsNode	   *node;
	struct JsDynAnchor *next;
} JsDynAnchor;

/* A schema resource: a document root or a subschema with $id. */
typedef struct JsResource
{
	char	   *uri;			/* absolute base URI, no fragment */
	JsDocument *doc;
	uint32		vocab;			/* JSV_* active in this resource */
	JsDynAnchor *dynamic_anchors;
} JsResource;

/* a property name (points into a document), for required & co. */
typedef struct JsKey
{
	const char *str;
	int			len;
} JsKey;

typedef struct JsProperty
{
	JsKey		key;
	JsNode	   *schema;
} JsProperty;

typedef struct JsPatternProperty
{
	JsRegex    *re;
	JsNode	   *schema;
} JsPatternProperty;

typedef struct JsDependentRequired
{
	JsKey		key;
	JsKey	   *required;
	int			nrequired;
} JsDependentRequired;

/* enum, with lookup structures per type so that huge enums stay cheap */
typedef struct JsEnum
{
	int			nvalues;
	JsKey	   *strings;		/* sorted in jsonb key order */
	int			nstrings;
	Numeric    *numbers;		/* sorted by value */
	int			nnumbers;
	JsonbValue *containers;		/* compared one by one */
	int			ncontainers;
	bool		has_null;
	bool		has_true;
	bool		has_false;
} JsEnum;

/* JsNode.kw flags: which keywords are present */
#define JSK_TYPE			0x00000001
#define JSK_ENUM			0x00000002
#define JSK_CONST			0x00000004
#define JSK_STRING			0x00000008	/* minLength/maxLength/pattern/format */
#define JSK_NUMBER			0x00000010	/* minimum & co., multipleOf */
#define JSK_OBJECT_CHECKS	0x00000020	/* required, min/maxProperties,
										 * dependentRequired */
#define JSK_OBJECT_APPLY	0x00000040	/* properties, patternProperties,
										 * additionalProperties, propertyNames,
										 * dependentSchemas */
#define JSK_ARRAY			0x00000080	/* min/maxItems, uniqueItems,
										 * prefixItems, items, contains */
#define JSK_REF				0x00000100
#define JSK_DYNREF			0x00000200
#define JSK_ALLOF			0x00000400
#define JSK_ANYOF			0x00000800
#define JSK_ONEOF			0x00001000
#define JSK_NOT				0x00002000
#define JSK_IF				0x00004000
#define JSK_UNEVAL_PROPS	0x00008000
#define JSK_UNEVAL_ITEMS	0x00010000

#define JS_NO_LIMIT		(-1)

typedef struct JsStringKeywords
{
	int64		min_length;		/* JS_NO_LIMIT if absent */
	int64		max_length;
	JsRegex    *pattern;
	int			format;			/* JSF_* or -1 */
	bool		format_assert;
} JsStringKeywords;

typedef struct JsNumberKeywords
{
	Numeric		minimum;		/* NULL if absent */
	Numeric		maximum;
	Numeric		exclusive_minimum;
	Numeric		exclusive_maximum;
	Numeric		multiple_of;
	int			multiple_of_scale;	/* k if multiple_of is 10^-k, else -1 */
} JsNumberKeywords;

typedef struct JsObjectKeywords
{
	JsKey	   *required;		/* as written */
	JsKey	   *required_sorted;	/* in jsonb key order */
	int			nrequired;
	int64		min_properties;
	int64		max_properties;
	JsDependentRequired *dependent_required;
	int			ndependent_required;
	JsProperty *properties;		/* sorted in jsonb key order */
	int			nproperties;
	JsPatternProperty *pattern_properties;
	int			npattern_properties;
	JsNode	   *additional_properties;
	JsNode	   *property_names;
	JsProperty *dependent_schemas;
	int			ndependent_schemas;
	bool		iterate;		/* must walk every member */
} JsObjectKeywords;

typedef struct JsArrayKeywords
{
	int64		min_items;
	int64		max_items;
	bool		unique_items;
	JsNode	  **prefix_items;
	int			nprefix_items;
	JsNode	   *items;
	JsNode	   *contains;
	int64		min_contains;	/* 1 unless given */
	int64		max_contains;
} JsArrayKeywords;

struct JsNode
{
	uint32		kw;				/* JSK_* */
	bool		is_bool;		/* a boolean schema */
	bool		bool_value;
	uint8		types;			/* JST_* of "type" */
	uint8		visit;			/* scratch for the compiler's cycle check */
	JsResource *resource;
	const char *path;			/* location for error reports */

	JsEnum	   *enum_values;
	JsonbValue	const_value;

	JsStringKeywords *str;
	JsNumberKeywords *num;
	JsObjectKeywords *obj;
	JsArrayKeywords *arr;

	JsNode	   *ref;
	JsNode	   *dynref;			/* static target of $dynamicRef */
	const char *dynref_anchor;	/* set if it may resolve dynamically */
	JsNode	  **all_of;
	int			nall_of;
	JsNode	  **any_of;
	int			nany_of;
	JsNode	  **one_of;
	int			none_of;
	JsNode	   *not_schema;
	JsNode	   *if_schema;
	JsNode	   *then_schema;	/* may be NULL with if present */
	JsNode	   *else_schema;
	JsNode	   *unevaluated_properties;
	JsNode	   *unevaluated_items;
};

struct JsonSchema
{
	MemoryContext cxt;
	JsNode	   *root;
	List	   *documents;		/* JsDocument * */
	List	   *regexes;		/* JsRegex *, freed with the context */
	bool		uses_registry;
	bool		format_assertion;	/* GUC value it was compiled with */
};

/* compiler state (jsonschema_resolve.c, jsonschema_compile.c) */
typedef struct JsLoc
{
	JsDocument *doc;
	char	   *pointer;		/* escaped JSON pointer within doc */
	JsonbValue	value;			/* the schema there */
	JsResource *resource;		/* the resource it belongs to */
	JsNode	   *node;			/* compiled form, once compiled */
	int			depth;			/* nesting below the document root */
} JsLoc;

/* deepest nesting of subschemas in one document */
#define JS_MAX_SCHEMA_DEPTH 2000

typedef struct JsCompiler
{
	JsonSchema *schema;
	MemoryContext cxt;			/* the schema's context */
	HTAB	   *locations;		/* "docid:pointer" -> JsLoc */
	HTAB	   *uris;			/* absolute URI [#anchor] -> JsLoc */
	List	   *resources;		/* JsResource * */
	List	   *nodes;			/* every JsNode compiled */
	int			ndocs;
} JsCompiler;

#define BAD_SCHEMA(where, hint, ...) \
	jsonschema_report_error((where), ERRCODE_INVALID_PARAMETER_VALUE, (hint), __VA_ARGS__)

/* jsonschema_resolve.c */
extern void jsonschema_report_error(const char *location, int sqlstate,
									const char *hint, const char *fmt,...)
			pg_attribute_printf(4, 5) pg_attribute_noreturn();
extern void jsresolve_init(JsCompiler *c, JsonSchema *schema);
extern JsLoc *jsresolve_root(JsCompiler *c, Jsonb *jb, const char *base_uri);
extern JsLoc *jsresolve_location(JsCompiler *c, JsDocument *doc,
								 const char *pointer);
extern JsLoc *jsresolve_ref(JsCompiler *c, JsLoc *loc, const char *kw,
							const char *ref);
extern char *js_kw_path(JsLoc *loc, const char *kw);
extern bool js_get_member(JsonbValue *obj, const char *key, JsonbValue *out);
extern char *js_cstring(JsonbValue *v);
extern char *js_pointer_token(const char *s, int len);
extern bool js_is_schema_value(JsonbValue *v);

/* jsonschema_compile.c */
extern JsonSchema *jsonschema_compile_internal(Jsonb *schema,
											   const char *base_uri,
											   MemoryContext parent,
											   bool format_assertion);
extern JsObjectKeywords *js_object_kw(JsCompiler *c, JsNode *node);
extern JsArrayKeywords *js_array_kw(JsCompiler *c, JsNode *node);
extern JsRegex *js_compile_regex(JsCompiler *c, JsLoc *loc, const char *where_kw,
								 JsonbValue *v);

/* validator state (jsonschema_validate.c, jsonschema_assert.c) */
typedef struct JsPathSeg
{
	const char *key;			/* object member, or NULL for an index */
	int			len;
	int			index;
} JsPathSeg;

typedef struct JsValidator
{
	JsonSchema *schema;
	bool		collect;		/* recording errors (jsonschema_errors) */
	int			quiet;			/* >0: in a branch whose errors are expected */
	List	   *errors;
	int			nerrors;
	int			max_errors;
	bool		stop;			/* max_errors reached */
	MemoryContext result_cxt;	/* where errors are allocated */
	JsPathSeg  *path;
	int			npath;
	int			path_cap;
	JsResource **scope;
	int			nscope;
	int			scope_cap;
	JsPathSeg	path_stack[32];	/* until deeper than this */
	JsResource *scope_stack[32];
} JsValidator;

#define FAST(cx) (!(cx)->collect || (cx)->quiet > 0)

/*
 * Records a failure of keyword kw of node (kw NULL: the schema itself).
 * In fast mode this returns false at once, so callers write
 * "if (!js_fail(...)) return false" and go on otherwise.
 */
extern bool js_fail(JsValidator *cx, JsNode *node, const char *kw,
					const char *fmt,...) pg_attribute_printf(4, 5);


/* jsonschema_validate.c */
extern bool jsonschema_validate_internal(JsonSchema *schema, Jsonb *instance,
										 List **errors, int max_errors);

/* jsonschema_assert.c: the validation vocabulary */
typedef void (*KeywordCompiler) (JsCompiler *c, JsNode *node, JsLoc *loc,
								 const char *kw, JsonbValue *v);
extern void jskw_type(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v);
extern void jskw_enum(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v);
extern void jskw_const(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v);
extern void jskw_number(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v);
extern void jskw_count(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v);
extern void jskw_pattern(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v);
extern void jskw_unique_items(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v);
extern void jskw_required(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v);
extern void jskw_dependent_required(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v);
extern void jskw_format(JsCompiler *c, JsNode *node, JsLoc *loc, const char *kw, JsonbValue *v);
extern bool js_assert_generic(JsValidator *cx, JsNode *node, JsonbValue *v, int type);
extern bool js_assert_string(JsValidator *cx, JsNode *node, JsonbValue *v);
extern bool js_assert_number(JsValidator *cx, JsNode *node, Numeric n);
extern bool js_assert_object(JsValidator *cx, JsNode *node, JsonbContainer *c);
extern bool js_assert_array(JsValidator *cx, JsNode *node, JsonbContainer *c);

/* jsonschema_jsonb.c: allocation-free access to jsonb containers */
typedef struct JsIter
{
	JsonbContainer *container;
	int			count;			/* elements or pairs */
	int			index;
	char	   *base;
	uint32		key_offset;
	uint32		value_offset;
	bool		is_object;
} JsIter;

extern void js_root_value(Jsonb *jb, JsonbValue *v);
extern void js_iter_init(JsIter *it, JsonbContainer *c);
extern bool js_get_key(JsonbContainer *c, const char *key, int len,
					   JsonbValue *value);
extern int	js_type_of(const JsonbValue *v);
extern bool js_equal(const JsonbValue *a, const JsonbValue *b);
extern uint32 js_hash(const JsonbValue *v);
extern int	js_numeric_cmp(Numeric a, Numeric b);
extern int	js_numeric_min_scale(Numeric n);
extern bool js_numeric_is_integral(Numeric n);
extern bool js_numeric_is_zero(Numeric n);
extern bool js_array_unique(JsonbContainer *c, int *dup_i, int *dup_j);
extern int64 js_string_length(const char *s, int len);
extern const char *js_type_name(int type);

/* hot paths of the iterator, inline */
/* Fills *v from the JEntry at index, whose data starts at base + offset. */
static inline void
js_fill_value(JsonbContainer *c, int index, char *base, uint32 offset,
		   uint32 len, JsonbValue *v)
{
	JEntry		entry = c->children[index];

	if (JBE_ISNULL(entry))
		v->type = jbvNull;
	else if (JBE_ISSTRING(entry))
	{
		v->type = jbvString;
		v->val.string.val = base + offset;
		v->val.string.len = len;
	}
	else if (JBE_ISNUMERIC(entry))
	{
		v->type = jbvNumeric;
		v->val.numeric = (Numeric) (base + INTALIGN(offset));
	}
	else if (JBE_ISBOOL_TRUE(entry))
	{
		v->type = jbvBool;
		v->val.boolean = true;
	}
	else if (JBE_ISBOOL_FALSE(entry))
	{
		v->type = jbvBool;
		v->val.boolean = false;
	}
	else
	{
		v->type = jbvBinary;
		v->val.binary.data = (JsonbContainer *) (base + INTALIGN(offset));
		v->val.binary.len = len - (INTALIGN(offset) - offset);
	}
}

static inline uint32
js_entry_length(JsonbContainer *c, int index, uint32 offset)
{
	JEntry		entry = c->children[index];

	if (JBE_HAS_OFF(entry))
		return JBE_OFFLENFLD(entry) - offset;
	return JBE_OFFLENFLD(entry);
}

/* Next element (key is left alone for arrays); false at the end. */
static inline bool
js_iter_next(JsIter *it, JsonbValue *key, JsonbValue *value)
{
	JsonbContainer *c = it->container;
	uint32		len;

	if (it->index >= it->count)
		return false;

	if (it->is_object)
	{
		int			vi = it->index + it->count;

		len = js_entry_length(c, it->index, it->key_offset);
		if (key)
		{
			/* object keys are always strings */
			key->type = jbvString;
			key->val.string.val = it->base + it->key_offset;
			key->val.string.len = len;
		}
		it->key_offset += len;
		len = js_entry_length(c, vi, it->value_offset);
		js_fill_value(c, vi, it->base, it->value_offset, len, value);
		it->value_offset += len;
	}
	else
	{
		len = js_entry_length(c, it->index, it->value_offset);
		js_fill_value(c, it->index, it->base, it->value_offset, len, value);
		it->value_offset += len;
	}
	it->index++;
	return true;
}

/* The order of keys in a jsonb object: shorter first, then bytewise. */
static inline int
js_key_cmp(const char *a, int alen, const char *b, int blen)
{
	if (alen != blen)
		return alen < blen ? -1 : 1;
	return memcmp(a, b, alen);
}


/* jsonschema_regex.c */
extern JsRegex *jsregex_compile(JsonSchema *owner, const char *pattern,
								int len, char **error);
extern bool jsregex_match(JsRegex *re, const char *subject, int len);
extern void jsregex_free(JsRegex *re);
extern const char *jsregex_source(JsRegex *re);
extern bool jsregex_is_valid(const char *pattern, int len);

/* jsonschema_format.c */
#define JSF_UNKNOWN (-1)
extern int	jsformat_lookup(const char *name, int len);
extern bool jsformat_check(int format, const char *s, int len);
extern const char *jsformat_name(int format);

/* jsonschema_uri.c */
extern char *jsuri_resolve(const char *base, const char *ref);
extern char *jsuri_split_fragment(const char *uri, const char **fragment);
extern bool jsuri_is_absolute(const char *s);
extern char *jsuri_percent_decode(const char *s);

/* jsonschema_meta.c: the built-in 2020-12 meta-schemas */
extern const char *jsonschema_builtin_text(const char *uri);

/* jsonschema.c: the registry */
extern Jsonb *jsonschema_registry_fetch(const char *uri);
extern void jsonschema_registry_changed(void);
extern uint64 jsonschema_cache_epoch(void);

#endif							/* STREAM_JSONSCHEMA_INTERNAL_H */
