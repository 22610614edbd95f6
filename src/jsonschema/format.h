/*-------------------------------------------------------------------------
 * format.h
 *	  What the files of the "format" checks share (format.c, format_uri.c):
 *	  the ASCII character classes they test and the checks one calls in the
 *	  other.  The validator itself uses jsformat_lookup/jsformat_check
 *	  (internal.h).
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_JSONSCHEMA_FORMAT_H
#define STREAM_JSONSCHEMA_FORMAT_H

#include "postgres.h"

/* ASCII only, whatever the locale (ctype's isalpha is not) */
#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_ALPHA(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define IS_HEX(c) (IS_DIGIT(c) || ((c) >= 'a' && (c) <= 'f') || ((c) >= 'A' && (c) <= 'F'))

/* format.c: the RFC 4291 text form, also a URI's "[...]" host */
extern bool jsformat_check_ipv6(const char *s, int len);

/* format_uri.c */
extern bool jsformat_check_uri(const char *s, int len, bool need_scheme,
							   bool iri);
extern bool jsformat_check_uri_template(const char *s, int len);

#endif							/* STREAM_JSONSCHEMA_FORMAT_H */
