/*-------------------------------------------------------------------------
 * uri.c
 *	  URI references for the JSON Schema validator: RFC 3986 parsing,
 *	  resolution of a reference against a base (section 5.2), and the
 *	  percent-decoding of fragments used for JSON pointers and anchors.
 *
 * The validator identifies schema resources by absolute URI without a
 * fragment; everything here works on palloc'd C strings.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "jsonschema/internal.h"

typedef struct UriParts
{
	const char *scheme;
	int			scheme_len;
	const char *authority;
	int			authority_len;
	bool		has_authority;
	const char *path;
	int			path_len;
	const char *query;
	int			query_len;
	bool		has_query;
	const char *fragment;
	int			fragment_len;
	bool		has_fragment;
} UriParts;

static void
uri_split(const char *s, UriParts *p)
{
	const char *c = s;
	const char *end;

	memset(p, 0, sizeof(UriParts));

	/* scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":" */
	if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z'))
	{
		const char *q = c + 1;

		while ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
			   (*q >= '0' && *q <= '9') || *q == '+' || *q == '-' || *q == '.')
			q++;
		if (*q == ':')
		{
			p->scheme = c;
			p->scheme_len = q - c;
			c = q + 1;
		}
	}

	if (c[0] == '/' && c[1] == '/')
	{
		c += 2;
		end = c;
		while (*end && *end != '/' && *end != '?' && *end != '#')
			end++;
		p->has_authority = true;
		p->authority = c;
		p->authority_len = end - c;
		c = end;
	}

	end = c;
	while (*end && *end != '?' && *end != '#')
		end++;
	p->path = c;
	p->path_len = end - c;
	c = end;

	if (*c == '?')
	{
		c++;
		end = c;
		while (*end && *end != '#')
			end++;
		p->has_query = true;
		p->query = c;
		p->query_len = end - c;
		c = end;
	}

	if (*c == '#')
	{
		c++;
		p->has_fragment = true;
		p->fragment = c;
		p->fragment_len = strlen(c);
	}
}

/* RFC 3986 5.2.4 */
static char *
remove_dot_segments(const char *path, int len)
{
	char	   *in = pnstrdup(path, len);
	char	   *out = palloc(len + 1);
	int			olen = 0;
	char	   *c = in;

	while (*c)
	{
		if (strncmp(c, "../", 3) == 0)
			c += 3;
		else if (strncmp(c, "./", 2) == 0)
			c += 2;
		else if (strncmp(c, "/./", 3) == 0)
			c += 2;
		else if (strcmp(c, "/.") == 0)
		{
			c[1] = '\0';
		}
		else if (strncmp(c, "/../", 4) == 0 || strcmp(c, "/..") == 0)
		{
			if (c[3] == '\0')
			{
				c += 2;
				*c = '/';
			}
			else
				c += 3;
			while (olen > 0 && out[olen - 1] != '/')
				olen--;
			if (olen > 0)
				olen--;
		}
		else if (strcmp(c, ".") == 0 || strcmp(c, "..") == 0)
			break;
		else
		{
			/* move the first segment, including its leading "/" if any */
			if (*c == '/')
				out[olen++] = *c++;
			while (*c && *c != '/')
				out[olen++] = *c++;
		}
	}
	out[olen] = '\0';
	pfree(in);
	return out;
}

static void
append_part(StringInfo buf, const char *s, int len)
{
	appendBinaryStringInfo(buf, s, len);
}

/*
 * Resolves reference against base (RFC 3986 5.2.2).  An empty base leaves
 * a relative reference relative (schemas without any $id).
 */
char *
jsuri_resolve(const char *base, const char *ref)
{
	UriParts	b,
				r;
	StringInfoData buf;
	char	   *path;

	uri_split(ref, &r);
	if (base == NULL || base[0] == '\0' || r.scheme)
	{
		/* already absolute, or nothing to resolve against: normalise */
		initStringInfo(&buf);
		if (r.scheme)
		{
			append_part(&buf, r.scheme, r.scheme_len);
			appendStringInfoChar(&buf, ':');
		}
		if (r.has_authority)
		{
			appendStringInfoString(&buf, "//");
			append_part(&buf, r.authority, r.authority_len);
		}
		if (r.scheme)
			path = remove_dot_segments(r.path, r.path_len);
		else
			path = pnstrdup(r.path, r.path_len);
		appendStringInfoString(&buf, path);
		if (r.has_query)
		{
			appendStringInfoChar(&buf, '?');
			append_part(&buf, r.query, r.query_len);
		}
		if (r.has_fragment)
		{
			appendStringInfoChar(&buf, '#');
			append_part(&buf, r.fragment, r.fragment_len);
		}
		return buf.data;
	}

	uri_split(base, &b);
	initStringInfo(&buf);
	if (b.scheme)
	{
		append_part(&buf, b.scheme, b.scheme_len);
		appendStringInfoChar(&buf, ':');
	}

	if (r.has_authority)
	{
		appendStringInfoString(&buf, "//");
		append_part(&buf, r.authority, r.authority_len);
		appendStringInfoString(&buf, remove_dot_segments(r.path, r.path_len));
		if (r.has_query)
		{
			appendStringInfoChar(&buf, '?');
			append_part(&buf, r.query, r.query_len);
		}
	}
	else
	{
		if (b.has_authority)
		{
			appendStringInfoString(&buf, "//");
			append_part(&buf, b.authority, b.authority_len);
		}
		if (r.path_len == 0)
		{
			append_part(&buf, b.path, b.path_len);
			if (r.has_query)
			{
				appendStringInfoChar(&buf, '?');
				append_part(&buf, r.query, r.query_len);
			}
			else if (b.has_query)
			{
				appendStringInfoChar(&buf, '?');
				append_part(&buf, b.query, b.query_len);
			}
		}
		else
		{
			if (r.path[0] == '/')
				path = remove_dot_segments(r.path, r.path_len);
			else
			{
				/* merge (5.2.3) */
				StringInfoData m;
				int			last = -1;
				int			i;

				initStringInfo(&m);
				if (b.has_authority && b.path_len == 0)
					appendStringInfoChar(&m, '/');
				else
				{
					for (i = 0; i < b.path_len; i++)
						if (b.path[i] == '/')
							last = i;
					if (last >= 0)
						append_part(&m, b.path, last + 1);
				}
				append_part(&m, r.path, r.path_len);
				path = remove_dot_segments(m.data, m.len);
			}
			appendStringInfoString(&buf, path);
			if (r.has_query)
			{
				appendStringInfoChar(&buf, '?');
				append_part(&buf, r.query, r.query_len);
			}
		}
	}
	if (r.has_fragment)
	{
		appendStringInfoChar(&buf, '#');
		append_part(&buf, r.fragment, r.fragment_len);
	}
	return buf.data;
}

/*
 * Splits uri at '#': returns the part before it (palloc'd) and sets
 * *fragment to the raw fragment (NULL if there is none).
 */
char *
jsuri_split_fragment(const char *uri, const char **fragment)
{
	const char *hash = strchr(uri, '#');

	if (hash == NULL)
	{
		*fragment = NULL;
		return pstrdup(uri);
	}
	*fragment = hash + 1;
	return pnstrdup(uri, hash - uri);
}

/* True if s has a scheme (an absolute URI, possibly with a fragment). */
bool
jsuri_is_absolute(const char *s)
{
	UriParts	p;

	uri_split(s, &p);
	return p.scheme != NULL;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes s; a malformed escape is kept as it is. */
char *
jsuri_percent_decode(const char *s)
{
	char	   *out = palloc(strlen(s) + 1);
	char	   *o = out;

	while (*s)
	{
		if (s[0] == '%' && hexval(s[1]) >= 0 && hexval(s[2]) >= 0)
		{
			*o++ = (char) (hexval(s[1]) * 16 + hexval(s[2]));
			s += 3;
		}
		else
			*o++ = *s++;
	}
	*o = '\0';
	return out;
}
