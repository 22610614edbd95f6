/*-------------------------------------------------------------------------
 * stats.c
 *	  Per-stream ingest counters: events accepted, duplicates dropped, last
 *	  received_at and occurred_at.
 *
 * The insert trigger counts into backend-local entries, kept per
 * subtransaction level; they reach the shared-memory hash only when the
 * transaction commits (rolled-back work is never counted), so the hot path
 * takes no lock.  The counters live as long as the server, like the
 * cumulative statistics of pg_stat_*; stream.stats reads them.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "stream_events.h"
#include "worker/worker.h"

PG_FUNCTION_INFO_V1(stream_stream_counters);
PG_FUNCTION_INFO_V1(stream_reset_stats);

/* event names longer than this share the counters of their prefix */
#define STATS_NAME_LEN 64

typedef struct StatsKey
{
	Oid			dboid;
	Oid			relid;
	char		event_name[STATS_NAME_LEN]; /* "" = the whole stream */
} StatsKey;

/* Counters, the same for a stream and for one event name of it. */
typedef struct Counters
{
	uint64		accepted;
	uint64		duplicates;
	TimestampTz last_received_at;
	TimestampTz last_occurred_at;
	uint64		checked;		/* checked against a contract or rule */
	uint64		passed;
	uint64		failed;			/* failed and stored anyway (warn) */
	uint64		quarantined;
	uint64		rejected;
	uint64		unplanned;		/* no contract for the name, allowed */
} Counters;

typedef struct StatsEntry
{
	StatsKey	key;
	slock_t		mutex;			/* protects the counters */
	Counters	c;
	TimestampTz since;
} StatsEntry;

typedef struct StatsShared
{
	LWLock	   *lock;
} StatsShared;

static StatsShared *stats_shared = NULL;
static HTAB *stats_hash = NULL;

/* Backend-local counts not yet committed. */
typedef struct PendingCount
{
	Oid			relid;
	int			nest_level;
	char		event_name[STATS_NAME_LEN];
	Counters	c;
} PendingCount;

#define MAX_PENDING 256
static PendingCount pending[MAX_PENDING];
static int	n_pending = 0;

/* Totals of this backend, for stream.ingest's per-call figures. */
uint64		stats_backend_duplicates = 0;
uint64		stats_backend_accepted = 0;
uint64		stats_backend_quarantined = 0;

static Size
stats_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(StatsShared)),
					hash_estimate_size(se_max_streams, sizeof(StatsEntry)));
}

void
stats_shmem_request(void)
{
	RequestAddinShmemSpace(stats_shmem_size());
	RequestNamedLWLockTranche("stream_events stats", 1);
}

void
stats_shmem_startup(void)
{
	bool		found;
	HASHCTL		ctl;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats_shared = ShmemInitStruct("stream_events stats", sizeof(StatsShared), &found);
	if (!found)
	{
		stats_shared->lock = &(GetNamedLWLockTranche("stream_events stats"))->lock;
	}
	ctl.keysize = sizeof(StatsKey);
	ctl.entrysize = sizeof(StatsEntry);
	stats_hash = ShmemInitHash("stream_events stats hash", se_max_streams,
							   se_max_streams, &ctl, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);
}

static void
copy_name(char *dst, text *name)
{
	int			len = name ? Min(VARSIZE_ANY_EXHDR(name), STATS_NAME_LEN - 1) : 0;

	if (len > 0)
		memcpy(dst, VARDATA_ANY(name), len);
	dst[len] = '\0';
}

static PendingCount *
pending_entry(Oid relid, text *name)
{
	int			level = GetCurrentTransactionNestLevel();
	char		key[STATS_NAME_LEN];

	copy_name(key, name);
	/* the most recent entries are almost always the ones */
	for (int i = n_pending - 1; i >= 0; i--)
	{
		if (pending[i].relid == relid && pending[i].nest_level == level &&
			strcmp(pending[i].event_name, key) == 0)
			return &pending[i];
	}
	if (n_pending == MAX_PENDING)
		return NULL;			/* uncounted; bounded memory matters more */
	memset(&pending[n_pending], 0, sizeof(PendingCount));
	pending[n_pending].relid = relid;
	pending[n_pending].nest_level = level;
	strcpy(pending[n_pending].event_name, key);
	return &pending[n_pending++];
}

/* Adds counters b into a. */
static void
counters_add(Counters *a, const Counters *b)
{
	if (b->accepted > 0 &&
		(a->accepted == 0 || b->last_occurred_at > a->last_occurred_at))
		a->last_occurred_at = b->last_occurred_at;
	if (b->last_received_at > a->last_received_at)
		a->last_received_at = b->last_received_at;
	a->accepted += b->accepted;
	a->duplicates += b->duplicates;
	a->checked += b->checked;
	a->passed += b->passed;
	a->failed += b->failed;
	a->quarantined += b->quarantined;
	a->rejected += b->rejected;
	a->unplanned += b->unplanned;
}

void
stats_count_event(Oid stream_relid, TimestampTz occurred_at, TimestampTz received_at)
{
	PendingCount *p = pending_entry(stream_relid, NULL);

	stats_backend_accepted++;
	if (p == NULL)
		return;
	p->c.accepted++;
	if (received_at > p->c.last_received_at)
		p->c.last_received_at = received_at;
	if (p->c.accepted == 1 || occurred_at > p->c.last_occurred_at)
		p->c.last_occurred_at = occurred_at;
}

void
stats_count_duplicate(Oid stream_relid)
{
	PendingCount *p = pending_entry(stream_relid, NULL);

	stats_backend_duplicates++;
	if (p != NULL)
		p->c.duplicates++;
}

static void
count_check_into(Counters *c, CheckResult result, char policy)
{
	if (result == CHECK_UNPLANNED && policy == 'a')
	{
		c->unplanned++;
		return;
	}
	c->checked++;
	if (result == CHECK_PASSED)
		c->passed++;
	else if (policy == 'q')
		c->quarantined++;
	else
		c->failed++;
}

/* An event checked against the stream's rules and contracts (committed with it). */
void
stats_count_check(Oid stream_relid, text *event_name, CheckResult result, char policy)
{
	PendingCount *total = pending_entry(stream_relid, NULL);
	PendingCount *named;

	if (total)
		count_check_into(&total->c, result, policy);
	named = pending_entry(stream_relid, event_name);
	if (named)
		count_check_into(&named->c, result, policy);
	if (policy == 'q' && result != CHECK_PASSED)
		stats_backend_quarantined++;
}

static void shared_add(Oid relid, const char *name, const Counters *c);

/*
 * A rejected event: its statement fails, so this count goes to shared
 * memory at once instead of waiting for a commit that will not come.
 */
void
stats_count_rejected(Oid stream_relid, text *event_name)
{
	Counters	c;
	char		key[STATS_NAME_LEN];

	if (stats_hash == NULL)
		return;
	memset(&c, 0, sizeof(c));
	c.checked = 1;
	c.rejected = 1;
	copy_name(key, event_name);
	shared_add(stream_relid, "", &c);
	shared_add(stream_relid, key, &c);
}

/*
 * Adds counters to the shared entry of (relid, name).  As in
 * pg_stat_statements, the hash lock is taken shared to find an entry (the
 * entry's spinlock protects its counters), and exclusively only to create
 * one, so committing producers do not queue behind each other.
 */
static void
shared_add(Oid relid, const char *name, const Counters *c)
{
	StatsKey	key;
	bool		found;
	StatsEntry *e;

	memset(&key, 0, sizeof(key));
	key.dboid = MyDatabaseId;
	key.relid = relid;
	strlcpy(key.event_name, name, STATS_NAME_LEN);

	LWLockAcquire(stats_shared->lock, LW_SHARED);
	e = hash_search(stats_hash, &key, HASH_FIND, NULL);
	if (e == NULL)
	{
		LWLockRelease(stats_shared->lock);
		LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
		e = hash_search(stats_hash, &key, HASH_ENTER_NULL, &found);
		if (e == NULL)
		{
			LWLockRelease(stats_shared->lock);
			return;				/* full: stream_events.max_streams too low */
		}
		if (!found)
		{
			memset(&e->c, 0, sizeof(Counters));
			e->since = GetCurrentTimestamp();
			SpinLockInit(&e->mutex);
		}
	}
	SpinLockAcquire(&e->mutex);
	counters_add(&e->c, c);
	SpinLockRelease(&e->mutex);
	LWLockRelease(stats_shared->lock);
}

static void
stats_flush(void)
{
	if (stats_hash == NULL || n_pending == 0)
	{
		n_pending = 0;
		return;
	}
	for (int i = 0; i < n_pending; i++)
		shared_add(pending[i].relid, pending[i].event_name, &pending[i].c);
	n_pending = 0;
}

static void
stats_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			/* events committed: the worker fires their activations now */
			if (n_pending > 0)
				worker_wake_consumer_at_commit();
			stats_flush();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			n_pending = 0;
			break;
		default:
			break;
	}
}

static void
stats_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	int			kept = 0;

	if (event != SUBXACT_EVENT_COMMIT_SUB && event != SUBXACT_EVENT_ABORT_SUB)
		return;
	for (int i = 0; i < n_pending; i++)
	{
		PendingCount *parent = NULL;

		if (pending[i].nest_level < level)
		{
			pending[kept++] = pending[i];
			continue;
		}
		if (event == SUBXACT_EVENT_ABORT_SUB)
			continue;			/* rolled back: not counted */
		/* committed: merge into the parent level */
		for (int j = 0; j < kept; j++)
			if (pending[j].relid == pending[i].relid &&
				pending[j].nest_level == level - 1 &&
				strcmp(pending[j].event_name, pending[i].event_name) == 0)
				parent = &pending[j];
		if (parent == NULL)
		{
			pending[kept] = pending[i];
			pending[kept].nest_level = level - 1;
			kept++;
		}
		else
			counters_add(&parent->c, &pending[i].c);
	}
	n_pending = kept;
}

void
stats_init(void)
{
	RegisterXactCallback(stats_xact_callback, NULL);
	RegisterSubXactCallback(stats_subxact_callback, NULL);
}

/*
 * True if the current role owns the relation or may SELECT from it: the
 * counters of other streams are not shown (their names and volumes are
 * the stream owner's business, as pg_stat_statements hides other users'
 * queries).
 */
static bool
counters_visible(Oid relid)
{
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		return false;
	return pg_class_ownercheck(relid, GetUserId()) ||
		pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) == ACLCHECK_OK;
}

static int
counters_oid_cmp(const void *a, const void *b)
{
	Oid			x = *(const Oid *) a;
	Oid			y = *(const Oid *) b;

	return (x > y) - (x < y);
}

Datum
stream_stream_counters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	StatsEntry *e;
	Oid		   *visible;
	int			nvisible = 0;
	int			cap = 16;

	InitMaterializedSRF(fcinfo, 0);
	if (stats_hash == NULL)
		return (Datum) 0;		/* not preloaded: no shared counters */

	/*
	 * The relations of this database's entries, checked without the lock
	 * held (privilege checks read catalogs).
	 */
	visible = palloc(cap * sizeof(Oid));
	LWLockAcquire(stats_shared->lock, LW_SHARED);
	hash_seq_init(&status, stats_hash);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		if (e->key.dboid != MyDatabaseId)
			continue;
		if (nvisible == cap)
		{
			cap *= 2;
			visible = repalloc(visible, cap * sizeof(Oid));
		}
		visible[nvisible++] = e->key.relid;
	}
	LWLockRelease(stats_shared->lock);
	qsort(visible, nvisible, sizeof(Oid), counters_oid_cmp);
	{
		int			kept = 0;

		for (int i = 0; i < nvisible; i++)
			if ((i == 0 || visible[i] != visible[i - 1]) && counters_visible(visible[i]))
				visible[kept++] = visible[i];
		nvisible = kept;
	}

	LWLockAcquire(stats_shared->lock, LW_SHARED);
	hash_seq_init(&status, stats_hash);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		Datum		values[13];
		bool		nulls[13] = {0};
		Counters	c;

		if (e->key.dboid != MyDatabaseId ||
			bsearch(&e->key.relid, visible, nvisible, sizeof(Oid), counters_oid_cmp) == NULL)
			continue;
		SpinLockAcquire(&e->mutex);
		c = e->c;
		SpinLockRelease(&e->mutex);
		values[0] = ObjectIdGetDatum(e->key.relid);
		values[1] = CStringGetTextDatum(e->key.event_name);
		nulls[1] = (e->key.event_name[0] == '\0');
		values[2] = Int64GetDatum((int64) c.accepted);
		values[3] = Int64GetDatum((int64) c.duplicates);
		values[4] = TimestampTzGetDatum(c.last_received_at);
		nulls[4] = (c.last_received_at == 0);
		values[5] = TimestampTzGetDatum(c.last_occurred_at);
		nulls[5] = (c.accepted == 0);
		values[6] = TimestampTzGetDatum(e->since);
		values[7] = Int64GetDatum((int64) c.checked);
		values[8] = Int64GetDatum((int64) c.passed);
		values[9] = Int64GetDatum((int64) c.failed);
		values[10] = Int64GetDatum((int64) c.quarantined);
		values[11] = Int64GetDatum((int64) c.rejected);
		values[12] = Int64GetDatum((int64) c.unplanned);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(stats_shared->lock);
	return (Datum) 0;
}

Datum
stream_reset_stats(PG_FUNCTION_ARGS)
{
	HASH_SEQ_STATUS status;
	StatsEntry *e;
	Oid			relid = PG_ARGISNULL(0) ? InvalidOid : PG_GETARG_OID(0);

	if (stats_hash == NULL)
		PG_RETURN_VOID();
	LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
	hash_seq_init(&status, stats_hash);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		if (e->key.dboid == MyDatabaseId &&
			(relid == InvalidOid || e->key.relid == relid))
			hash_search(stats_hash, &e->key, HASH_REMOVE, NULL);
	}
	LWLockRelease(stats_shared->lock);
	PG_RETURN_VOID();
}
