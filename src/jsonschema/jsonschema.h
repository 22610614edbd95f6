/*-------------------------------------------------------------------------
 * jsonschema.h
 *	  Public contract of the JSON Schema (draft 2020-12) validator.
 *
 * A schema is compiled once into an internal tree (resolved $refs are
 * pointers, regular expressions are compiled with PCRE2) and then validates
 * jsonb instances directly, without a text round trip.  docs/jsonschema.md
 * describes the design, the dialect and the limits.
 *
 * Lifetime rules:
 * - jsonschema_compile() returns a schema owned by the caller, allocated in
 *	 a memory context that is a child of CurrentMemoryContext; it lives until
 *	 that context goes away or jsonschema_free() is called.
 * - jsonschema_cached() returns a schema owned by the per-backend cache.  The
 *	 pointer stays valid until the next call of jsonschema_cached() (which
 *	 may evict or recompile entries); callers look it up again per use, which
 *	 costs one hash of the schema bytes.
 *
 * Every function ereports (ERROR) on an invalid or unsupported schema, with
 * DETAIL naming the schema location as a JSON pointer.
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_JSONSCHEMA_H
#define STREAM_JSONSCHEMA_H

#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/jsonb.h"

typedef struct JsonSchema JsonSchema;

/* One validation error, as returned by jsonschema_errors(). */
typedef struct JsonSchemaError
{
	char	   *instance_path;	/* JSON pointer into the instance, "" = root */
	char	   *schema_path;	/* keyword location, e.g. /properties/a/minimum */
	char	   *message;		/* e.g. "must be >= 0" */
} JsonSchemaError;

/* settings: stream_events.format_assertion, max_schema_cache */
#include "core/guc.h"

/* Compiles a schema; base_uri may be NULL (a schema without $id). */
extern JsonSchema *jsonschema_compile(Jsonb *schema, const char *base_uri);

/* The same, asserting "format" or not regardless of the GUC. */
extern JsonSchema *jsonschema_compile_opts(Jsonb *schema, const char *base_uri,
										   bool format_assertion);

/* Frees a schema returned by jsonschema_compile(). */
extern void jsonschema_free(JsonSchema *schema);

/* Compiled form of schema from the per-backend cache, compiling on a miss. */
extern JsonSchema *jsonschema_cached(Jsonb *schema);

/* True if instance is valid; stops at the first error. */
extern bool jsonschema_validate(JsonSchema *schema, Jsonb *instance);

/*
 * Every error (up to max_errors; 0 means no limit) as a List of
 * JsonSchemaError *, in CurrentMemoryContext.  NIL means valid.
 */
extern List *jsonschema_errors(JsonSchema *schema, Jsonb *instance,
							   int max_errors);

/*
 * Raises the first meta-schema violation of schema (validated against the
 * meta-schema its $schema names, 2020-12 by default), then compiles it.
 */
extern void jsonschema_check(Jsonb *schema);

#endif							/* STREAM_JSONSCHEMA_H */
