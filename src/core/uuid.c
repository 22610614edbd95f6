/*-------------------------------------------------------------------------
 * uuid.c
 *	  stream.uuid_v7(): time-ordered UUIDs (RFC 9562, version 7), and the
 *	  name-based version 5 UUIDs that stream.ingest derives from Segment
 *	  messageIds that are not UUIDs.
 *
 * Layout of a v7 UUID: 48 bits of Unix time in milliseconds, 4 bits of
 * version (0111), 12 bits "rand_a" used here as a sub-millisecond counter
 * (RFC 9562 section 6.2, method 1), 2 bits of variant (10) and 62 random
 * bits.  Within a backend the values are strictly increasing: when the clock
 * has not moved (or went back) the counter is incremented, and when it
 * overflows the timestamp is advanced by one millisecond.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/time.h>

#include "common/cryptohash.h"
#include "common/sha1.h"
#include "fmgr.h"
#include "port/pg_bswap.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "core/uuid.h"

PG_FUNCTION_INFO_V1(stream_uuid_v7);
PG_FUNCTION_INFO_V1(stream_uuid_v7_time);

static uint64 last_ms = 0;
static uint16 last_counter = 0;

void
uuid_v7_generate(pg_uuid_t *uuid)
{
	struct timeval tv;
	uint64		ms;
	uint16		counter;

	gettimeofday(&tv, NULL);
	ms = (uint64) tv.tv_sec * 1000 + tv.tv_usec / 1000;

	if (!pg_strong_random(uuid->data, UUID_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values for a UUID")));

	if (ms > last_ms)
	{
		/* new millisecond: start the counter at a random value below 2^11 */
		counter = ((uuid->data[6] << 8) | uuid->data[7]) & 0x07FF;
	}
	else
	{
		ms = last_ms;
		counter = last_counter + 1;
		if (counter > 0x0FFF)
		{
			ms++;
			counter = 0;
		}
	}
	last_ms = ms;
	last_counter = counter;

	uuid->data[0] = (uint8) (ms >> 40);
	uuid->data[1] = (uint8) (ms >> 32);
	uuid->data[2] = (uint8) (ms >> 24);
	uuid->data[3] = (uint8) (ms >> 16);
	uuid->data[4] = (uint8) (ms >> 8);
	uuid->data[5] = (uint8) ms;
	uuid->data[6] = 0x70 | (uint8) (counter >> 8);
	uuid->data[7] = (uint8) counter;
	uuid->data[8] = (uuid->data[8] & 0x3F) | 0x80;
}

Datum
stream_uuid_v7(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *uuid = palloc(UUID_LEN);

	uuid_v7_generate(uuid);
	PG_RETURN_UUID_P(uuid);
}

Datum
stream_uuid_v7_time(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *uuid = PG_GETARG_UUID_P(0);
	uint64		ms = 0;
	TimestampTz ts;

	if ((uuid->data[6] >> 4) != 7)
		PG_RETURN_NULL();
	for (int i = 0; i < 6; i++)
		ms = (ms << 8) | uuid->data[i];
	ts = (TimestampTz) (ms * 1000) -
		((TimestampTz) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
	PG_RETURN_TIMESTAMPTZ(ts);
}

/*
 * Name-based UUID (RFC 9562 version 5, SHA-1) of a name in a namespace.
 */
void
uuid_v5_from_name(const pg_uuid_t *namespace, const char *name, size_t len,
				  pg_uuid_t *result)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA1);
	uint8		digest[SHA1_DIGEST_LENGTH];

	if (ctx == NULL ||
		pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, namespace->data, UUID_LEN) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) name, len) < 0 ||
		pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
	{
		pg_cryptohash_free(ctx);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute a name-based UUID")));
	}
	pg_cryptohash_free(ctx);

	memcpy(result->data, digest, UUID_LEN);
	result->data[6] = (result->data[6] & 0x0F) | 0x50;
	result->data[8] = (result->data[8] & 0x3F) | 0x80;
}
