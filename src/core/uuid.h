/*-------------------------------------------------------------------------
 * uuid.h
 *	  UUID generation: version 7 (time-ordered) and version 5 (name-based).
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_UUID_H
#define STREAM_UUID_H

#include "utils/uuid.h"

extern void uuid_v7_generate(pg_uuid_t *uuid);
extern void uuid_v5_from_name(const pg_uuid_t *namespace, const char *name,
							  size_t len, pg_uuid_t *result);

#endif
