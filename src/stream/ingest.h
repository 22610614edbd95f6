/*-------------------------------------------------------------------------
 * ingest.h
 *	  What the files of stream.ingest share: the row an element is mapped
 *	  to (ingest.c inserts it), the two mappings (envelope.c, segment.c)
 *	  and the field parsers both use (envelope.c).  Not for other modules:
 *	  the insert trigger sees stream.ingest only through IngestProgress
 *	  (stream_events.h).
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_STREAM_INGEST_H
#define STREAM_EVENTS_STREAM_INGEST_H

#include "postgres.h"

#include "utils/jsonb.h"

#define N_INGEST_COLS 8			/* every envelope column but received_at */

typedef struct IngestRow
{
	Datum		values[N_INGEST_COLS];
	bool		nulls[N_INGEST_COLS];
	const char *occurred_field; /* the key occurred_at came from, or NULL */
	bool		id_given;		/* event_id (or messageId) sent, not generated */
} IngestRow;

/* column order of ingest.c's INSERT */
enum
{
	C_EVENT_ID, C_EVENT_NAME, C_OCCURRED_AT, C_USER_ID, C_ANONYMOUS_ID,
	C_SESSION_ID, C_PROPERTIES, C_CONTEXT
};

/* envelope.c: the fields; errors name the element's index and the field */
extern void bad_field(int index, const char *field, const char *problem,
					  const char *hint) pg_attribute_noreturn();
extern const char *jbv_type_name(JsonbValue *v);
extern char *jbv_cstring(JsonbValue *v);
extern Datum identity_text(int index, const char *field, JsonbValue *v,
						   bool *isnull);
extern Datum timestamp_field(int index, const char *field, JsonbValue *v,
							 bool *isnull);
extern void set_object_column(IngestRow *row, int index, const char *key,
							  JsonbValue *v);

/* envelope.c: an element named like the envelope columns */
extern void map_envelope(int index, Jsonb *obj, IngestRow *row);

/* segment.c: a Segment / RudderStack message */
extern bool looks_like_segment(Jsonb *obj);
extern void map_segment(int index, Jsonb *obj, IngestRow *row);

#endif							/* STREAM_EVENTS_STREAM_INGEST_H */
