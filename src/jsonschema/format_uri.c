/*-------------------------------------------------------------------------
 * format_uri.c
 *	  The "format" checks of the URI family, called by jsformat_check
 *	  (format.c): uri, uri-reference, iri and iri-reference (RFC 3986 and
 *	  RFC 3987 syntax: scheme, authority with an IPv6 literal checked by
 *	  format.c, path, query, fragment; percent-encodings well formed) and
 *	  uri-template (RFC 6570 literals and expressions).  Syntax only: no
 *	  scheme is known, nothing is resolved or normalised (that is uri.c's,
 *	  for $id and $ref).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "jsonschema/format.h"

/* RFC 3986 character classes; iri additionally allows any non-ASCII */
#define UNRESERVED_PUNCT "-._~"
#define SUB_DELIMS "!$&'()*+,;="

static bool
uri_char_ok(const char *s, int len, int *i, const char *extra, bool iri)
{
	unsigned char c = s[*i];

	if (c == '%')
	{
		if (*i + 2 >= len || !IS_HEX(s[*i + 1]) || !IS_HEX(s[*i + 2]))
			return false;
		*i += 3;
		return true;
	}
	if (IS_ALPHA(c) || IS_DIGIT(c) || (c && strchr(UNRESERVED_PUNCT, c)) ||
		(c && strchr(SUB_DELIMS, c)) || (c && strchr(extra, c)) ||
		(iri && c >= 0x80))
	{
		(*i)++;
		return true;
	}
	return false;
}

/* Checks a URI (need_scheme) or a URI reference, RFC 3986/3987 syntax. */
bool
jsformat_check_uri(const char *s, int len, bool need_scheme, bool iri)
{
	int			i = 0;
	int			start;
	bool		has_scheme = false;

	/* scheme */
	if (len > 0 && IS_ALPHA(s[0]))
	{
		int			j = 1;

		while (j < len && (IS_ALPHA(s[j]) || IS_DIGIT(s[j]) || s[j] == '+' ||
						   s[j] == '-' || s[j] == '.'))
			j++;
		if (j < len && s[j] == ':')
		{
			has_scheme = true;
			i = j + 1;
		}
	}
	if (need_scheme && !has_scheme)
		return false;
	if (!has_scheme)
	{
		/* relative-ref: a first path segment must not contain ':' */
		int			j;

		for (j = 0; j < len && s[j] != '/' && s[j] != '?' && s[j] != '#'; j++)
			if (s[j] == ':')
				return false;
	}

	/* authority */
	if (i + 1 < len && s[i] == '/' && s[i + 1] == '/')
	{
		int			end;
		int			at = -1;
		int			hstart;

		i += 2;
		for (end = i; end < len && s[end] != '/' && s[end] != '?' && s[end] != '#'; end++)
			if (s[end] == '@')
				at = end;
		if (at >= 0)
		{
			while (i < at)
				if (!uri_char_ok(s, at, &i, ":", iri))
					return false;
			i = at + 1;
		}
		hstart = i;
		if (i < end && s[i] == '[')
		{
			int			close = i;

			while (close < end && s[close] != ']')
				close++;
			if (close >= end || !jsformat_check_ipv6(s + i + 1, close - i - 1))
				return false;
			i = close + 1;
		}
		else
		{
			while (i < end && s[i] != ':')
				if (!uri_char_ok(s, end, &i, "", iri))
					return false;
		}
		(void) hstart;
		if (i < end && s[i] == ':')
		{
			i++;
			while (i < end)
				if (!IS_DIGIT(s[i++]))
					return false;
		}
		if (i != end)
			return false;
	}

	/* path */
	start = i;
	while (i < len && s[i] != '?' && s[i] != '#')
		if (!uri_char_ok(s, len, &i, ":@/", iri))
			return false;
	(void) start;
	if (i < len && s[i] == '?')
	{
		i++;
		while (i < len && s[i] != '#')
			if (!uri_char_ok(s, len, &i, ":@/?", iri))
				return false;
	}
	if (i < len && s[i] == '#')
	{
		i++;
		while (i < len)
			if (!uri_char_ok(s, len, &i, ":@/?", iri))
				return false;
	}
	return true;
}

/* RFC 6570: literals and {expressions} of variable lists */
bool
jsformat_check_uri_template(const char *s, int len)
{
	int			i = 0;

	while (i < len)
	{
		unsigned char c = s[i];

		if (c == '{')
		{
			bool		need_var = true;

			i++;
			if (i < len && strchr("+#./;?&=,!@|", s[i]))
				i++;
			while (i < len && s[i] != '}')
			{
				int			vstart = i;

				while (i < len && (IS_ALPHA(s[i]) || IS_DIGIT(s[i]) || s[i] == '_' ||
								   s[i] == '.' || s[i] == '%'))
				{
					if (s[i] == '%' && (i + 2 >= len || !IS_HEX(s[i + 1]) || !IS_HEX(s[i + 2])))
						return false;
					i += s[i] == '%' ? 3 : 1;
				}
				if (i == vstart)
					return false;
				need_var = false;
				if (i < len && s[i] == '*')
					i++;
				else if (i < len && s[i] == ':')
				{
					int			dstart = ++i;

					while (i < len && IS_DIGIT(s[i]) && i - dstart < 4)
						i++;
					if (i == dstart || s[dstart] == '0')
						return false;
				}
				if (i < len && s[i] == ',')
				{
					i++;
					need_var = true;
				}
				else if (i < len && s[i] != '}')
					return false;
			}
			if (i >= len || need_var)
				return false;
			i++;
		}
		else if (c == '%')
		{
			if (i + 2 >= len || !IS_HEX(s[i + 1]) || !IS_HEX(s[i + 2]))
				return false;
			i += 3;
		}
		else if (c <= 0x20 || strchr("\"'<>\\^`{|}", c))
			return false;
		else
			i++;
	}
	return true;
}
