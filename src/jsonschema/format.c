/*-------------------------------------------------------------------------
 * format.c
 *	  The "format" checks of JSON Schema 2020-12, used when format is
 *	  asserted (stream_events.format_assertion = on, or a meta-schema that
 *	  requires the format-assertion vocabulary): the names, and
 *	  jsformat_check, which dispatches to the checks here and to the URI
 *	  family's in format_uri.c.
 *
 * Supported: date-time, date, time, duration (RFC 3339 and its appendix A),
 * email (RFC 5321 mailbox), hostname (RFC 1123, with IDNA A-label checks),
 * ipv4, ipv6 (RFC 4291 text form), uri, uri-reference, iri, iri-reference
 * (RFC 3986/3987), uri-template (RFC 6570), uuid (RFC 4122), regex
 * (ECMA-262 as this validator understands it), json-pointer (RFC 6901) and
 * relative-json-pointer.  idn-email and idn-hostname are not supported:
 * asserting them is an error at compile time.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "jsonschema/format.h"
#include "jsonschema/internal.h"

typedef enum JsFormat
{
	JSF_DATE_TIME,
	JSF_DATE,
	JSF_TIME,
	JSF_DURATION,
	JSF_EMAIL,
	JSF_HOSTNAME,
	JSF_IPV4,
	JSF_IPV6,
	JSF_URI,
	JSF_URI_REFERENCE,
	JSF_IRI,
	JSF_IRI_REFERENCE,
	JSF_URI_TEMPLATE,
	JSF_UUID,
	JSF_REGEX,
	JSF_JSON_POINTER,
	JSF_RELATIVE_JSON_POINTER,
	JSF_COUNT
} JsFormat;

static const char *const format_names[JSF_COUNT] = {
	"date-time", "date", "time", "duration", "email", "hostname", "ipv4",
	"ipv6", "uri", "uri-reference", "iri", "iri-reference", "uri-template",
	"uuid", "regex", "json-pointer", "relative-json-pointer"
};

int
jsformat_lookup(const char *name, int len)
{
	int			i;

	for (i = 0; i < JSF_COUNT; i++)
		if (strlen(format_names[i]) == len && memcmp(format_names[i], name, len) == 0)
			return i;
	return JSF_UNKNOWN;
}

const char *
jsformat_name(int format)
{
	return (format >= 0 && format < JSF_COUNT) ? format_names[format] : "unknown";
}

/* n ASCII digits at s[*i]; advances *i */
static bool
digits(const char *s, int len, int *i, int n, int *value)
{
	int			v = 0;
	int			k;

	if (*i + n > len)
		return false;
	for (k = 0; k < n; k++)
	{
		char		c = s[*i + k];

		if (!IS_DIGIT(c))
			return false;
		v = v * 10 + (c - '0');
	}
	*i += n;
	*value = v;
	return true;
}

static bool
is_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static bool
parse_full_date(const char *s, int len, int *i)
{
	static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int			y,
				m,
				d;

	if (!digits(s, len, i, 4, &y) || *i >= len || s[(*i)++] != '-' ||
		!digits(s, len, i, 2, &m) || *i >= len || s[(*i)++] != '-' ||
		!digits(s, len, i, 2, &d))
		return false;
	if (m < 1 || m > 12 || d < 1)
		return false;
	return d <= mdays[m - 1] + (m == 2 && is_leap(y) ? 1 : 0);
}

/* full-time of RFC 3339: partial-time time-offset; leap seconds at 23:59 UTC */
static bool
parse_full_time(const char *s, int len, int *i)
{
	int			h,
				m,
				sec,
				oh = 0,
				om = 0,
				sign = 0;

	if (!digits(s, len, i, 2, &h) || *i >= len || s[(*i)++] != ':' ||
		!digits(s, len, i, 2, &m) || *i >= len || s[(*i)++] != ':' ||
		!digits(s, len, i, 2, &sec))
		return false;
	if (h > 23 || m > 59 || sec > 60)
		return false;
	if (*i < len && s[*i] == '.')
	{
		(*i)++;
		if (*i >= len || !IS_DIGIT(s[*i]))
			return false;
		while (*i < len && IS_DIGIT(s[*i]))
			(*i)++;
	}
	if (*i >= len)
		return false;
	if (s[*i] == 'Z' || s[*i] == 'z')
		(*i)++;
	else if (s[*i] == '+' || s[*i] == '-')
	{
		sign = s[*i] == '+' ? 1 : -1;
		(*i)++;
		if (!digits(s, len, i, 2, &oh) || *i >= len || s[(*i)++] != ':' ||
			!digits(s, len, i, 2, &om))
			return false;
		if (oh > 23 || om > 59)
			return false;
	}
	else
		return false;
	if (sec == 60)
	{
		/* a leap second is only ever 23:59:60 in UTC */
		int			utc = (h * 60 + m - sign * (oh * 60 + om)) % 1440;

		if (utc < 0)
			utc += 1440;
		if (utc != 23 * 60 + 59)
			return false;
	}
	return true;
}

static bool
check_date_time(const char *s, int len)
{
	int			i = 0;

	if (!parse_full_date(s, len, &i))
		return false;
	if (i >= len || (s[i] != 'T' && s[i] != 't'))
		return false;
	i++;
	return parse_full_time(s, len, &i) && i == len;
}

static bool
check_date(const char *s, int len)
{
	int			i = 0;

	return parse_full_date(s, len, &i) && i == len;
}

static bool
check_time(const char *s, int len)
{
	int			i = 0;

	return parse_full_time(s, len, &i) && i == len;
}

/*
 * RFC 3339 appendix A: "P" then years, months, days in this order without
 * gaps ("P1Y2D" is not a duration), an optional "T" part with hours,
 * minutes, seconds likewise, or weeks alone.
 */
static bool
check_duration(const char *s, int len)
{
	static const char date_units[] = "YMD";
	static const char time_units[] = "HMS";
	int			i = 1;
	int			last = -1;
	bool		any = false;

	if (len < 2 || s[0] != 'P')
		return false;

	/* weeks */
	{
		int			j = 1;

		while (j < len && IS_DIGIT(s[j]))
			j++;
		if (j > 1 && j == len - 1 && s[j] == 'W')
			return true;
	}

	while (i < len && s[i] != 'T')
	{
		int			start = i;
		const char *u;

		while (i < len && IS_DIGIT(s[i]))
			i++;
		if (i == start || i >= len)
			return false;
		u = strchr(date_units, s[i]);
		if (u == NULL || s[i] == '\0')
			return false;
		if (last >= 0 && (u - date_units) != last + 1)
			return false;
		last = u - date_units;
		any = true;
		i++;
	}
	if (i < len)
	{
		bool		any_time = false;

		i++;					/* T */
		last = -1;
		while (i < len)
		{
			int			start = i;
			const char *u;

			while (i < len && IS_DIGIT(s[i]))
				i++;
			if (i == start || i >= len)
				return false;
			u = strchr(time_units, s[i]);
			if (u == NULL || s[i] == '\0')
				return false;
			if (last >= 0 && (u - time_units) != last + 1)
				return false;
			last = u - time_units;
			any_time = true;
			i++;
		}
		if (!any_time)
			return false;
		any = true;
	}
	return any;
}

static bool
check_ipv4(const char *s, int len)
{
	int			i = 0;
	int			part;

	for (part = 0; part < 4; part++)
	{
		int			start = i;
		int			v = 0;

		while (i < len && IS_DIGIT(s[i]) && i - start < 3)
			v = v * 10 + (s[i++] - '0');
		if (i == start || v > 255 || (s[start] == '0' && i - start > 1))
			return false;
		if (part < 3)
		{
			if (i >= len || s[i] != '.')
				return false;
			i++;
		}
	}
	return i == len;
}

bool
jsformat_check_ipv6(const char *s, int len)
{
	int			groups = 0;
	bool		compressed = false;
	int			i = 0;

	if (len < 2)
		return false;
	if (s[0] == ':')
	{
		if (s[1] != ':')
			return false;
		compressed = true;
		i = 2;
		if (i == len)
			return true;
	}
	while (i < len)
	{
		int			start = i;
		int			j;

		/* an embedded IPv4 address ends the string */
		for (j = i; j < len && s[j] != ':'; j++)
			;
		if (j == len && memchr(s + i, '.', len - i))
		{
			if (!check_ipv4(s + i, len - i))
				return false;
			groups += 2;
			i = len;
			break;
		}
		while (i < len && IS_HEX(s[i]) && i - start < 4)
			i++;
		if (i == start)
			return false;
		groups++;
		if (i == len)
			break;
		if (s[i] != ':')
			return false;
		i++;
		if (i < len && s[i] == ':')
		{
			if (compressed)
				return false;
			compressed = true;
			i++;
			if (i == len)
				break;
		}
		else if (i == len)
			return false;		/* trailing single colon */
	}
	return compressed ? groups <= 7 : groups == 8;
}

/* RFC 3492 decoding, only to tell whether an A-label is well formed */
static bool
punycode_valid(const char *s, int len)
{
	const int	base = 36,
				tmin = 1,
				tmax = 26,
				skew = 38,
				damp = 700;
	int64		n = 128,
				i = 0,
				bias = 72;
	int			b = 0,
				j,
				in,
				out;

	for (j = 0; j < len; j++)
		if (s[j] == '-')
			b = j;
	for (j = 0; j < b; j++)
		if ((unsigned char) s[j] >= 0x80)
			return false;
	out = b;
	for (in = b > 0 ? b + 1 : 0; in < len; out++)
	{
		int64		oldi = i,
					w = 1,
					k;

		for (k = base;; k += base)
		{
			char		c;
			int			digit;
			int64		t;

			if (in >= len)
				return false;
			c = s[in++];
			if (IS_DIGIT(c))
				digit = c - '0' + 26;
			else if (c >= 'a' && c <= 'z')
				digit = c - 'a';
			else if (c >= 'A' && c <= 'Z')
				digit = c - 'A';
			else
				return false;
			i += digit * w;
			if (i > 0x10FFFF * 64)
				return false;
			t = k <= bias ? tmin : (k >= bias + tmax ? tmax : k - bias);
			if (digit < t)
				break;
			w *= base - t;
		}
		{
			int64		delta = oldi == 0 ? (i - oldi) / damp : (i - oldi) / 2;
			int64		kk = 0;

			delta += delta / (out + 1);
			while (delta > ((base - tmin) * tmax) / 2)
			{
				delta /= base - tmin;
				kk += base;
			}
			bias = kk + (base - tmin + 1) * delta / (delta + skew);
		}
		n += i / (out + 1);
		i %= (out + 1);
		if (n > 0x10FFFF || (n >= 0xD800 && n <= 0xDFFF))
			return false;
		i++;
	}
	return true;
}

static bool
check_hostname(const char *s, int len)
{
	int			i = 0;

	if (len > 0 && s[len - 1] == '.')
		len--;					/* a fully qualified name may end with a dot */
	if (len == 0 || len > 253)
		return false;
	while (i <= len)
	{
		int			start = i;
		int			llen;

		while (i < len && s[i] != '.')
		{
			char		c = s[i];

			if (!IS_ALPHA(c) && !IS_DIGIT(c) && c != '-')
				return false;
			i++;
		}
		llen = i - start;
		if (llen == 0 || llen > 63 || s[start] == '-' || s[i - 1] == '-')
			return false;
		/* "--" in positions 3-4 is reserved for A-labels (RFC 5891) */
		if (llen >= 4 && s[start + 2] == '-' && s[start + 3] == '-')
		{
			if (pg_strncasecmp(s + start, "xn", 2) != 0 ||
				!punycode_valid(s + start + 4, llen - 4))
				return false;
		}
		i++;
	}
	return true;
}

#define ATEXT_SPECIALS "!#$%&'*+-/=?^_`{|}~"

static bool
check_email(const char *s, int len)
{
	int			at = -1;
	int			i;

	if (len > 0 && s[0] == '"')
	{
		/* quoted-string local part */
		for (i = 1; i < len && s[i] != '"'; i++)
		{
			if (s[i] == '\\')
				i++;
			else if ((unsigned char) s[i] < 32 || (unsigned char) s[i] >= 127)
				return false;
		}
		if (i >= len - 1 || s[i + 1] != '@')
			return false;
		at = i + 1;
	}
	else
	{
		for (i = 0; i < len; i++)
			if (s[i] == '@')
				at = i;
		if (at <= 0)
			return false;
		for (i = 0; i < at; i++)
		{
			char		c = s[i];

			if (c == '.')
			{
				if (i == 0 || i == at - 1 || s[i - 1] == '.')
					return false;
			}
			else if (!IS_ALPHA(c) && !IS_DIGIT(c) && !strchr(ATEXT_SPECIALS, c))
				return false;
		}
	}
	if (at + 1 >= len)
		return false;
	s += at + 1;
	len -= at + 1;
	if (s[0] == '[')
	{
		if (s[len - 1] != ']')
			return false;
		if (len > 6 && strncmp(s + 1, "IPv6:", 5) == 0)
			return jsformat_check_ipv6(s + 6, len - 7);
		return check_ipv4(s + 1, len - 2);
	}
	return check_hostname(s, len);
}

static bool
check_uuid(const char *s, int len)
{
	int			i;

	if (len != 36)
		return false;
	for (i = 0; i < 36; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (s[i] != '-')
				return false;
		}
		else if (!IS_HEX(s[i]))
			return false;
	}
	return true;
}

static bool
check_json_pointer(const char *s, int len)
{
	int			i;

	if (len > 0 && s[0] != '/')
		return false;
	for (i = 0; i < len; i++)
		if (s[i] == '~' && (i + 1 >= len || (s[i + 1] != '0' && s[i + 1] != '1')))
			return false;
	return true;
}

static bool
check_relative_json_pointer(const char *s, int len)
{
	int			i = 0;

	while (i < len && IS_DIGIT(s[i]))
		i++;
	if (i == 0 || (s[0] == '0' && i > 1))
		return false;
	if (i < len && s[i] == '#')
		return i + 1 == len;
	return check_json_pointer(s + i, len - i);
}

bool
jsformat_check(int format, const char *s, int len)
{
	switch ((JsFormat) format)
	{
		case JSF_DATE_TIME:
			return check_date_time(s, len);
		case JSF_DATE:
			return check_date(s, len);
		case JSF_TIME:
			return check_time(s, len);
		case JSF_DURATION:
			return check_duration(s, len);
		case JSF_EMAIL:
			return check_email(s, len);
		case JSF_HOSTNAME:
			return check_hostname(s, len);
		case JSF_IPV4:
			return check_ipv4(s, len);
		case JSF_IPV6:
			return jsformat_check_ipv6(s, len);
		case JSF_URI:
			return jsformat_check_uri(s, len, true, false);
		case JSF_URI_REFERENCE:
			return jsformat_check_uri(s, len, false, false);
		case JSF_IRI:
			return jsformat_check_uri(s, len, true, true);
		case JSF_IRI_REFERENCE:
			return jsformat_check_uri(s, len, false, true);
		case JSF_URI_TEMPLATE:
			return jsformat_check_uri_template(s, len);
		case JSF_UUID:
			return check_uuid(s, len);
		case JSF_REGEX:
			return jsregex_is_valid(s, len);
		case JSF_JSON_POINTER:
			return check_json_pointer(s, len);
		case JSF_RELATIVE_JSON_POINTER:
			return check_relative_json_pointer(s, len);
		case JSF_COUNT:
			break;
	}
	return true;
}
