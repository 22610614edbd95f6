/*-------------------------------------------------------------------------
 * regex.c
 *	  Regular expressions of JSON Schema (pattern, patternProperties and the
 *	  "regex" format): ECMA-262 syntax translated to PCRE2 and run with JIT
 *	  when available, under match and depth limits.
 *
 * Dialect (see docs/jsonschema.md): PCRE2 in UTF mode without UCP, so \d,
 * \w and \b are ASCII as in ECMA-262; \s and \S are rewritten to the
 * ECMA-262 set of white space and line terminators; "." is rewritten to
 * exclude exactly the ECMA-262 line terminators; $ matches only at the very
 * end; \uXXXX and \u{X...} escapes are accepted; [] and [^] mean the empty
 * and the any-character class.
 *
 * Compiled code is allocated through PCRE2 general contexts backed by
 * palloc in the schema's memory context; the owning JsonSchema keeps a list
 * of its regexes and frees them (which releases JIT memory) when its
 * context goes away.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "jsonschema/internal.h"

/* limits on one match: backtracking steps and nested backtracking depth */
#define JSREGEX_MATCH_LIMIT		10000000
#define JSREGEX_DEPTH_LIMIT		100000
#define JSREGEX_JIT_STACK_MAX	(4 * 1024 * 1024)

struct JsRegex
{
	pcre2_code *code;
	pcre2_match_data *match_data;
	char	   *source;
};

static pcre2_match_context *match_context = NULL;

/*
 * JSON text is UTF-8.  In a UTF8 database strings are valid UTF-8 already;
 * SQL_ASCII is taken as UTF-8 too but checked; other encodings convert.
 */
static uint32
prepare_utf8(const char **s, int *len)
{
	int			enc = GetDatabaseEncoding();

	if (enc == PG_UTF8)
		return PCRE2_NO_UTF_CHECK;
	if (enc == PG_SQL_ASCII)
		return 0;
	*s = pg_server_to_any(*s, *len, PG_UTF8);
	*len = strlen(*s);
	return PCRE2_NO_UTF_CHECK;
}
static pcre2_jit_stack *jit_stack = NULL;

/*
 * ECMA-262 WhiteSpace and LineTerminator, for \s.  Written with \u escapes:
 * with PCRE2_ALT_BSUX, \x takes exactly two hex digits, as in ECMA-262.
 */
#define ECMA_SPACE_SET \
	"\\t\\n\\u000B\\f\\r \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029" \
	"\\u202F\\u205F\\u3000\\uFEFF"

static void *
regex_palloc(PCRE2_SIZE size, void *data)
{
	return MemoryContextAllocExtended((MemoryContext) data, size,
									  MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
}

static void
regex_pfree(void *ptr, void *data)
{
	if (ptr)
		pfree(ptr);
}

static void
ensure_match_context(void)
{
	if (match_context != NULL)
		return;
	/* allocated once per backend with malloc, never freed */
	match_context = pcre2_match_context_create(NULL);
	if (match_context == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	pcre2_set_match_limit(match_context, JSREGEX_MATCH_LIMIT);
	pcre2_set_depth_limit(match_context, JSREGEX_DEPTH_LIMIT);
	jit_stack = pcre2_jit_stack_create(32 * 1024, JSREGEX_JIT_STACK_MAX, NULL);
	if (jit_stack)
		pcre2_jit_stack_assign(match_context, NULL, jit_stack);
}

/* ECMA-262 accepts long General_Category names; PCRE2 10.42 only short ones */
static const struct
{
	const char *name;
	const char *pcre;
}			gc_names[] =
{
	{"Letter", "L"}, {"Cased_Letter", "L&"}, {"Uppercase_Letter", "Lu"},
	{"Lowercase_Letter", "Ll"}, {"Titlecase_Letter", "Lt"},
	{"Modifier_Letter", "Lm"}, {"Other_Letter", "Lo"}, {"Mark", "M"},
	{"Combining_Mark", "M"}, {"Nonspacing_Mark", "Mn"}, {"Spacing_Mark", "Mc"},
	{"Enclosing_Mark", "Me"}, {"Number", "N"}, {"Decimal_Number", "Nd"},
	{"digit", "Nd"}, {"Letter_Number", "Nl"}, {"Other_Number", "No"},
	{"Punctuation", "P"}, {"punct", "P"}, {"Connector_Punctuation", "Pc"},
	{"Dash_Punctuation", "Pd"}, {"Open_Punctuation", "Ps"},
	{"Close_Punctuation", "Pe"}, {"Initial_Punctuation", "Pi"},
	{"Final_Punctuation", "Pf"}, {"Other_Punctuation", "Po"}, {"Symbol", "S"},
	{"Math_Symbol", "Sm"}, {"Currency_Symbol", "Sc"}, {"Modifier_Symbol", "Sk"},
	{"Other_Symbol", "So"}, {"Separator", "Z"}, {"Space_Separator", "Zs"},
	{"Line_Separator", "Zl"}, {"Paragraph_Separator", "Zp"}, {"Other", "C"},
	{"Control", "Cc"}, {"cntrl", "Cc"}, {"Format", "Cf"}, {"Surrogate", "Cs"},
	{"Private_Use", "Co"}, {"Unassigned", "Cn"},
};

/* Appends \p{name} (or \P) in PCRE2 terms; name is len bytes, no braces. */
static void
append_property(StringInfo buf, char p, const char *name, int len)
{
	const char *eq = memchr(name, '=', len);
	const char *value = name;
	int			vlen = len;
	int			i;

	appendStringInfo(buf, "\\%c{", p);
	if (eq)
	{
		int			klen = eq - name;

		value = eq + 1;
		vlen = len - klen - 1;
		if ((klen == 6 && strncmp(name, "Script", 6) == 0) ||
			(klen == 2 && strncmp(name, "sc", 2) == 0))
		{
			appendStringInfoString(buf, "sc:");
			appendBinaryStringInfo(buf, value, vlen);
			appendStringInfoChar(buf, '}');
			return;
		}
		if ((klen == 17 && strncmp(name, "Script_Extensions", 17) == 0) ||
			(klen == 3 && strncmp(name, "scx", 3) == 0))
		{
			appendStringInfoString(buf, "scx:");
			appendBinaryStringInfo(buf, value, vlen);
			appendStringInfoChar(buf, '}');
			return;
		}
		/* General_Category=X and gc=X name a category like X alone */
	}
	for (i = 0; i < lengthof(gc_names); i++)
	{
		if (strlen(gc_names[i].name) == vlen &&
			strncmp(gc_names[i].name, value, vlen) == 0)
		{
			appendStringInfoString(buf, gc_names[i].pcre);
			appendStringInfoChar(buf, '}');
			return;
		}
	}
	appendBinaryStringInfo(buf, value, vlen);
	appendStringInfoChar(buf, '}');
}

/*
 * Rewrites an ECMA-262 pattern into PCRE2 syntax (see the file header).
 * Escapes other than the ones rewritten are passed through.
 */
static char *
translate_ecma(const char *p, int len)
{
	StringInfoData buf;
	bool		in_class = false;
	int			i = 0;

	initStringInfo(&buf);
	while (i < len)
	{
		char		c = p[i];

		if (c == '\\' && i + 1 < len)
		{
			char		e = p[i + 1];

			if (e == 's')
			{
				if (in_class)
					appendStringInfoString(&buf, ECMA_SPACE_SET);
				else
					appendStringInfoString(&buf, "[" ECMA_SPACE_SET "]");
			}
			else if (e == 'S' && !in_class)
				appendStringInfoString(&buf, "[^" ECMA_SPACE_SET "]");
			else if ((e == 'p' || e == 'P') && i + 2 < len && p[i + 2] == '{' &&
					 memchr(p + i + 3, '}', len - i - 3) != NULL)
			{
				const char *close = memchr(p + i + 3, '}', len - i - 3);

				append_property(&buf, e, p + i + 3, close - (p + i + 3));
				i = close - p + 1;
				continue;
			}
			else
			{
				/* copy the escape and, for multi-byte chars, the whole char */
				int			clen = pg_utf_mblen((const unsigned char *) p + i + 1);

				appendBinaryStringInfo(&buf, p + i, 1 + Min(clen, len - i - 1));
				i += Min(clen, len - i - 1) - 1;
			}
			i += 2;
			continue;
		}
		if (in_class)
		{
			if (c == ']')
				in_class = false;
			if (c == '[')
				appendStringInfoChar(&buf, '\\');	/* no POSIX [:classes:] */
			appendStringInfoChar(&buf, c);
			i++;
			continue;
		}
		if (c == '[')
		{
			in_class = true;
			appendStringInfoChar(&buf, c);
			i++;
			/* a leading ^ and then a ] that would close nothing in PCRE2 */
			if (i < len && p[i] == '^')
			{
				appendStringInfoChar(&buf, '^');
				i++;
			}
			if (i < len && p[i] == ']')
			{
				/* ECMA: [] is empty, [^] is anything; PCRE2 agrees with
				 * ALLOW_EMPTY_CLASS */
				appendStringInfoChar(&buf, ']');
				in_class = false;
				i++;
			}
			continue;
		}
		if (c == '.')
		{
			appendStringInfoString(&buf, "[^\\n\\r\\u2028\\u2029]");
			i++;
			continue;
		}
		appendStringInfoChar(&buf, c);
		i++;
	}
	return buf.data;
}

static pcre2_code *
compile_pattern(const char *pattern, int len, pcre2_compile_context *ccontext,
				char **error)
{
	char	   *translated;
	int			errcode;
	PCRE2_SIZE	erroffset;
	pcre2_code *code;
	uint32		utf_check = prepare_utf8(&pattern, &len);

	translated = translate_ecma(pattern, len);
	code = pcre2_compile((PCRE2_SPTR) translated, strlen(translated),
						 PCRE2_UTF | PCRE2_DOLLAR_ENDONLY | PCRE2_ALT_BSUX |
						 PCRE2_ALLOW_EMPTY_CLASS | PCRE2_NEVER_BACKSLASH_C |
						 utf_check,
						 &errcode, &erroffset, ccontext);
	if (code == NULL && error)
	{
		PCRE2_UCHAR msg[256];

		pcre2_get_error_message(errcode, msg, sizeof(msg));
		*error = psprintf("%s", (char *) msg);
	}
	pfree(translated);
	return code;
}

static pcre2_compile_context *
make_compile_context(pcre2_general_context *gcontext)
{
	pcre2_compile_context *cc = pcre2_compile_context_create(gcontext);

	if (cc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	pcre2_set_compile_extra_options(cc, PCRE2_EXTRA_ALT_BSUX);
	return cc;
}

/*
 * Compiles pattern (UTF-8, len bytes) for owner.  Returns NULL and sets
 * *error when the pattern is not a valid regular expression.
 */
JsRegex *
jsregex_compile(JsonSchema *owner, const char *pattern, int len, char **error)
{
	pcre2_general_context *gcontext;
	pcre2_compile_context *ccontext;
	pcre2_code *code;
	JsRegex    *re;
	MemoryContext cxt = owner->cxt;

	gcontext = pcre2_general_context_create(regex_palloc, regex_pfree, cxt);
	if (gcontext == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	ccontext = make_compile_context(gcontext);
	code = compile_pattern(pattern, len, ccontext, error);
	pcre2_compile_context_free(ccontext);
	if (code == NULL)
	{
		pcre2_general_context_free(gcontext);
		return NULL;
	}

	re = MemoryContextAllocZero(cxt, sizeof(JsRegex));
	re->code = code;
	re->source = MemoryContextStrdup(cxt, pnstrdup(pattern, len));
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		owner->regexes = lappend(owner->regexes, re);
		MemoryContextSwitchTo(old);
	}

	/* JIT is an optimisation: without it PCRE2 interprets */
	(void) pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
	re->match_data = pcre2_match_data_create_from_pattern(code, gcontext);
	pcre2_general_context_free(gcontext);
	if (re->match_data == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	return re;
}

/* True if pattern compiles (the "regex" format). */
bool
jsregex_is_valid(const char *pattern, int len)
{
	pcre2_general_context *gcontext;
	pcre2_compile_context *ccontext;
	pcre2_code *code;

	gcontext = pcre2_general_context_create(regex_palloc, regex_pfree,
											CurrentMemoryContext);
	if (gcontext == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	ccontext = make_compile_context(gcontext);
	code = compile_pattern(pattern, len, ccontext, NULL);
	pcre2_compile_context_free(ccontext);
	pcre2_general_context_free(gcontext);
	if (code == NULL)
		return false;
	pcre2_code_free(code);
	return true;
}

/* Unanchored search, as ECMA-262's RegExp.prototype.test. */
bool
jsregex_match(JsRegex *re, const char *subject, int len)
{
	int			rc;
	uint32		options = prepare_utf8(&subject, &len);

	ensure_match_context();
	rc = pcre2_match(re->code, (PCRE2_SPTR) subject, len, 0, options,
					 re->match_data, match_context);
	if (rc >= 0)
		return true;
	if (rc == PCRE2_ERROR_NOMATCH)
		return false;
	if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
		rc == PCRE2_ERROR_HEAPLIMIT || rc == PCRE2_ERROR_JIT_STACKLIMIT)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("regular expression \"%s\" exceeded its match limit",
						re->source),
				 errdetail("The pattern backtracks too much on a string of %d bytes.",
						   len),
				 errhint("Simplify the pattern, for example by avoiding nested quantifiers.")));
	{
		PCRE2_UCHAR msg[256];

		pcre2_get_error_message(rc, msg, sizeof(msg));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_REGULAR_EXPRESSION),
				 errmsg("regular expression \"%s\" failed: %s", re->source,
						(char *) msg)));
	}
	return false;
}

void
jsregex_free(JsRegex *re)
{
	if (re->match_data)
		pcre2_match_data_free(re->match_data);
	if (re->code)
		pcre2_code_free(re->code);
	re->match_data = NULL;
	re->code = NULL;
}

const char *
jsregex_source(JsRegex *re)
{
	return re->source;
}
