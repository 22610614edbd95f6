/*-------------------------------------------------------------------------
 * failure.c
 *	  The consumer's failure boundary per definition.  An error in a round
 *	  is blamed on the definition being compiled, folded or applied
 *	  (current_def, or one a sink blamed with consumer_blame):
 *	  - an event's own error (a data exception raised while the event's
 *	    expressions were evaluated) in a definition with on_error => 'skip'
 *	    makes that definition careful: from the next round on its events
 *	    are folded one by one in a subtransaction, and those that fail
 *	    become dead letters (stream.dead_letters), written in the apply
 *	    transaction that moves its applied LSN past them (exactly once);
 *	  - any other error of a definition parks it: it is not loaded, its
 *	    applied LSN still holds the slot, and it replays from there once
 *	    stream.resume sets its status right;
 *	  - errors that pass by themselves (serialisation, resources,
 *	    shutdown, ...) and errors that are nobody's are retried in 2 s.
 *	  The others go on in every case.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "executor/tuptable.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

#include "consumer/internal.h"
#include "core/origin.h"
#include "core/owner.h"
#include "stream_events.h"

ConsumerDef *current_def = NULL;
bool		eval_phase = false;
XLogRecPtr	eval_lsn = InvalidXLogRecPtr;
bool		eval_has_event = false;
pg_uuid_t	eval_event;
bool		retry_pending = false;

/* a definition blamed outside fold (consumer_blame) */
static const ConsumerSink *blame_sink = NULL;
static int32 blame_id = 0;
static XLogRecPtr blame_lsn = InvalidXLogRecPtr;
static char blame_name[NAMEDATALEN * 2];

/*
 * Definitions parked after an error of their own: not loaded, so the
 * others go on; their applied LSN still holds the slot, so a parked
 * definition replays from it once it runs again.  Kept by this worker
 * only: it runs again when its status is set right (stream.resume,
 * stream.rebuild_aggregate) or the worker restarts.
 */
typedef struct ParkedDef
{
	const ConsumerSink *sink;
	int32		id;
	XLogRecPtr	applied_lsn;	/* invalid: was backfilling */
} ParkedDef;

List	   *parked = NIL;		/* ParkedDef, in consumer_cxt */

/*
 * Careful definitions (see the file's comment): until they have applied
 * past the event that failed (until), their events are folded one by one
 * in a subtransaction.
 */
typedef struct CarefulDef
{
	const ConsumerSink *sink;
	int32		id;
	XLogRecPtr	until;			/* invalid: a backfill */
} CarefulDef;

static List *careful = NIL;		/* CarefulDef, in consumer_cxt */

/* what round_failed concluded, for failure_record */
static char *failed_what = NULL;
static ConsumerDef failed_def;	/* sink and id of the parked one */
static bool failed_parked = false;
static bool failed_skip = false;
static char *last_warning = NULL;

void
consumer_evaluating(bool on)
{
	eval_phase = on;
}

void
consumer_blame(const ConsumerSink *sink, int32 id, const char *name, XLogRecPtr applied_lsn)
{
	blame_sink = sink;
	blame_id = id;
	blame_lsn = applied_lsn;
	strlcpy(blame_name, name ? name : "?", sizeof(blame_name));
}

void
consumer_unblame(void)
{
	blame_sink = NULL;
	blame_id = 0;
}

void
failure_forget_blame(void)
{
	current_def = NULL;
	consumer_unblame();
	eval_phase = false;
	eval_lsn = InvalidXLogRecPtr;
}

/* ---------- poison events ---------- */

/*
 * Errors that are an event's own: data exceptions (a cast of a bad
 * value, division by zero, overflow), cardinality, integrity, errors
 * raised by functions (RAISE, routine exceptions).  Others (an undefined
 * or dropped function, privileges, internal errors) are the definition's:
 * every event would fail the same way, so it is parked instead.
 */
bool
consumer_error_is_events(ErrorData *edata)
{
	int			class = ERRCODE_TO_CATEGORY(edata->sqlerrcode);

	return class == ERRCODE_TO_CATEGORY(ERRCODE_DATA_EXCEPTION) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_CARDINALITY_VIOLATION) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_SQL_ROUTINE_EXCEPTION) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_RAISE_EXCEPTION);
}

/* errors that pass by themselves: retried, nobody is parked */
bool
error_is_transient(ErrorData *edata)
{
	int			class = ERRCODE_TO_CATEGORY(edata->sqlerrcode);

	return class == ERRCODE_TO_CATEGORY(ERRCODE_T_R_SERIALIZATION_FAILURE) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_INSUFFICIENT_RESOURCES) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_OPERATOR_INTERVENTION) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_SYSTEM_ERROR) ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_CONNECTION_EXCEPTION);
}

/* the event's id, for messages and dead letters (before it is evaluated) */
void
note_event(TupleTableSlot *row)
{
	bool		isnull;
	Datum		v = slot_getattr(row, ENV_EVENT_ID + 1, &isnull);

	eval_has_event = !isnull;
	if (!isnull)
		memcpy(&eval_event, DatumGetUUIDP(v), sizeof(pg_uuid_t));
}

/*
 * Runs fn(arg) in a subtransaction (the safe way to go on after an error
 * in executor code).  Returns NULL, or an event's own error
 * (consumer_error_is_events; copied into errcxt) after rolling the
 * subtransaction back; other errors, and with only_evaluation those
 * raised outside the evaluation of the event's expressions
 * (consumer_evaluating: a transition function, an upsert), are thrown
 * again.
 */
ErrorData *
consumer_guarded(void (*fn) (void *arg), void *arg, bool only_evaluation,
				 MemoryContext errcxt)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		bool		events = !only_evaluation || eval_phase;

		MemoryContextSwitchTo(errcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (!events || !consumer_error_is_events(edata))
			ReThrowError(edata);	/* blamed as any error (round_failed) */
		eval_phase = false;
		consumer_unblame();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}

typedef struct GuardedFold
{
	ConsumerDef *def;
	ConsumerEvent *ev;
} GuardedFold;

static void
guarded_fold(void *arg)
{
	GuardedFold *g = arg;

	batch_units += g->def->sink->fold(g->def, g->ev);
}

/* the event into the definition, its own error returned (in dead_cxt) */
ErrorData *
fold_guarded(ConsumerDef *def, ConsumerEvent *ev)
{
	GuardedFold g = {def, ev};

	return consumer_guarded(guarded_fold, &g, true, dead_context());
}

/*
 * One event into one definition, in its owner's scope (the caller's):
 * careful definitions in a subtransaction, their failures queued as dead
 * letters.
 */
void
fold_one(ConsumerDef *def, ConsumerEvent *ev)
{
	if (def->careful)
	{
		ErrorData  *e = fold_guarded(def, ev);

		if (e)
			queue_dead_letter(def, ev->lsn, e);
	}
	else
		batch_units += def->sink->fold(def, ev);
}

/* fold_one in the definition's own owner scope (backfill) */
void
fold_def(ConsumerDef *def, ConsumerEvent *ev)
{
	OwnerScope	scope = {0};
	ConsumerDef *prev = current_def;

	current_def = def;
	owner_enter(&scope, def->owner, def->search_path);
	PG_TRY();
	{
		note_event(ev->row);
		fold_one(def, ev);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	current_def = prev;
}


/* ---------- careful definitions ---------- */

static CarefulDef *
careful_find(const ConsumerSink *sink, int32 id)
{
	ListCell   *lc;

	foreach(lc, careful)
	{
		CarefulDef *c = lfirst(lc);

		if (c->sink == sink && c->id == id)
			return c;
	}
	return NULL;
}

bool
careful_is(const ConsumerSink *sink, int32 id)
{
	return careful_find(sink, id) != NULL;
}

/*
 * A resumed definition replays from its applied LSN; decoding sees the
 * catalog as it was at each event's commit (a function replaced since is
 * not seen by earlier events), so the event it stopped on would stop it
 * again: until it has replayed what was committed before the resume, it is
 * careful and events that fail become dead letters, which
 * stream.retry_dead_letters applies with today's definitions.
 */
static void
careful_add(const ConsumerSink *sink, int32 id, XLogRecPtr until)
{
	MemoryContext old = MemoryContextSwitchTo(consumer_cxt);
	CarefulDef *c = careful_find(sink, id);

	if (c == NULL)
	{
		c = palloc0(sizeof(CarefulDef));
		c->sink = sink;
		c->id = id;
		careful = lappend(careful, c);
	}
	c->until = Max(c->until, until);
	MemoryContextSwitchTo(old);
}

void
careful_forget(const ConsumerSink *sink, int32 id)
{
	ListCell   *lc;

	foreach(lc, careful)
	{
		CarefulDef *c = lfirst(lc);

		if (c->sink == sink && c->id == id)
			careful = foreach_delete_current(careful, lc);
	}
}

/* careful definitions that have applied past the event that failed */
void
careful_prune(void)
{
	ListCell   *lc;

	foreach(lc, careful)
	{
		CarefulDef *c = lfirst(lc);
		ConsumerDef *def = def_find(c->sink, c->id);

		if (def && !def->backfill && def->applied_lsn > c->until)
		{
			def->careful = false;
			careful = foreach_delete_current(careful, lc);
		}
	}
}

/* ---------- parked definitions ---------- */

/*
 * Whether a definition is parked: it stays so while its catalog row says
 * 'error'; set right (stream.resume, stream.rebuild_aggregate), it runs
 * again, carefully until it has replayed what was committed before.
 */
bool
def_is_parked(const ConsumerSink *sink, int32 id, bool in_error)
{
	ListCell   *lc;

	foreach(lc, parked)
	{
		ParkedDef  *p = lfirst(lc);

		if (p->sink != sink || p->id != id)
			continue;
		if (in_error)
			return true;
		parked = foreach_delete_current(parked, lc);
		careful_add(sink, id, GetXLogInsertRecPtr());
		return false;
	}
	return false;
}

/*
 * Forgets the parked and careful definitions of a sink that no longer
 * exist (dropped): their applied LSN must not hold the slot.
 */
void
parked_prune(const ConsumerSink *sink, List *states)
{
	ListCell   *lc;
	ListCell   *lc2;

	foreach(lc, parked)
	{
		ParkedDef  *p = lfirst(lc);
		bool		found = false;

		if (p->sink != sink)
			continue;
		foreach(lc2, states)
			if (((ConsumerDefState *) lfirst(lc2))->id == p->id)
				found = true;
		if (!found)
			parked = foreach_delete_current(parked, lc);
	}
	foreach(lc, careful)
	{
		CarefulDef *c = lfirst(lc);
		bool		found = false;

		if (c->sink != sink)
			continue;
		foreach(lc2, states)
			if (((ConsumerDefState *) lfirst(lc2))->id == c->id)
				found = true;
		if (!found)
			careful = foreach_delete_current(careful, lc);
	}
}

/*
 * Parks a definition whose backfill process ended on an error of its own
 * (backfill.c, which said it in the definition's row): it has no applied
 * LSN, so it holds nothing in the slot; set right, it backfills again.
 */
void
park_backfill(const ConsumerSink *sink, int32 id)
{
	MemoryContext old;
	ParkedDef  *p;
	ListCell   *lc;

	foreach(lc, parked)
	{
		p = lfirst(lc);
		if (p->sink == sink && p->id == id)
			return;				/* this worker parked it already */
	}
	old = MemoryContextSwitchTo(consumer_cxt);
	p = palloc0(sizeof(ParkedDef));
	p->sink = sink;
	p->id = id;
	p->applied_lsn = InvalidXLogRecPtr;
	parked = lappend(parked, p);
	MemoryContextSwitchTo(old);
}

/* the slot keeps what the parked definitions have not applied */
XLogRecPtr
parked_confirm(XLogRecPtr confirm)
{
	ListCell   *lc;

	foreach(lc, parked)
	{
		ParkedDef  *p = lfirst(lc);

		if (!XLogRecPtrIsInvalid(p->applied_lsn) &&
			!XLogRecPtrIsInvalid(confirm) && p->applied_lsn < confirm)
			confirm = p->applied_lsn;
	}
	return confirm;
}

/* for the slot-size warning's DETAIL: "" or " Parked: ..." */
char *
parked_describe(void)
{
	StringInfoData held;
	ListCell   *lc;

	initStringInfo(&held);
	foreach(lc, parked)
	{
		ParkedDef  *p = lfirst(lc);

		appendStringInfo(&held, "%s%s %d (applied up to %X/%X)",
						 held.len > 0 ? ", " : " Parked: ",
						 p->sink->dead_kind, p->id, LSN_FORMAT_ARGS(p->applied_lsn));
	}
	return held.data;
}

/* ---------- after an error ---------- */

/*
 * After an error: an event's error in a definition that skips them makes
 * it careful (*retry_at_once: decoded again at once); another error of a
 * definition parks it; errors that pass by themselves and errors that are
 * nobody's are retried later.  Before the definitions are freed.
 */
void
round_failed(ErrorData *edata, bool *retry_at_once)
{
	ConsumerDef *def = current_def;
	MemoryContext old = MemoryContextSwitchTo(consumer_cxt);

	*retry_at_once = false;
	failed_skip = false;
	failed_what = NULL;
	failed_parked = false;
	if (!eval_phase)
		eval_has_event = false; /* the error is not an event's */

	if (def && eval_phase && consumer_error_is_events(edata) && def->skip_errors && !def->careful)
	{
		CarefulDef *c = palloc0(sizeof(CarefulDef));

		c->sink = def->sink;
		c->id = def->id;
		c->until = def->backfill ? InvalidXLogRecPtr : eval_lsn;
		careful = lappend(careful, c);
		*retry_at_once = true;
		failed_skip = true;
		ereport(DEBUG1,
				(errmsg("stream_events: an event failed in %s %s (%s); decoded again, it is skipped for it",
						def->sink->what, def->name, edata->message)));
	}
	else if (!error_is_transient(edata) && (def || blame_sink))
	{
		ParkedDef  *p = palloc0(sizeof(ParkedDef));

		if (def)
		{
			p->sink = def->sink;
			p->id = def->id;
			p->applied_lsn = def->backfill ? InvalidXLogRecPtr : def->applied_lsn;
			failed_what = psprintf("%s %s", def->sink->what, def->name);
		}
		else
		{
			p->sink = blame_sink;
			p->id = blame_id;
			p->applied_lsn = blame_lsn;
			failed_what = psprintf("%s %s", blame_sink->what, blame_name);
		}
		parked = lappend(parked, p);
		failed_def.sink = p->sink;
		failed_def.id = p->id;
		failed_parked = true;
	}
	else if (def || blame_sink)
	{
		/* transient: the catalog row of that definition says so */
		failed_def.sink = def ? def->sink : blame_sink;
		failed_def.id = def ? def->id : blame_id;
	}
	else
		failed_def.sink = NULL;
	MemoryContextSwitchTo(old);
}

/* what the status views say: the error, its SQLSTATE, the event */
char *
describe_error(ErrorData *edata, const char *raw)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "%s (SQLSTATE %s", raw, unpack_sql_state(edata->sqlerrcode));
	if (eval_has_event && !XLogRecPtrIsInvalid(eval_lsn))
		appendStringInfo(&buf, ", event_id %s, commit %X/%X",
						 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&eval_event))),
						 LSN_FORMAT_ARGS(eval_lsn));
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

/*
 * Runs fn(arg) in a transaction of its own, with SPI and a snapshot, its
 * writes tagged as the worker's own (origin.h), when the extension still
 * exists; an error is reported, not thrown, and rolled back: writing down
 * a failure must not fail the worker.  Returns fn's result; false without
 * the extension, on_error after an error.
 */
bool
consumer_tagged_transaction(bool (*fn) (void *arg), void *arg, bool on_error)
{
	OriginTag	tag = {0};
	volatile bool result = on_error;

	PG_TRY();
	{
		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (OidIsValid(get_extension_oid("stream_events", true)))
		{
			origin_tag_begin(&tag);
			result = fn(arg);
			origin_tag_end(&tag);
		}
		else
			result = false;
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		origin_tag_end(&tag);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		result = on_error;
	}
	PG_END_TRY();
	return result;
}

static const char *failed_msg = NULL;

/* failure_record's write: the status of the definitions it concerns */
static bool
record_status(void *arg)
{
	if (failed_parked)
		failed_def.sink->set_error(failed_def.id, failed_msg);
	else if (failed_def.sink == NULL)
	{
		for (int s = 0; s < consumer_nsinks; s++)
			consumer_sinks[s]->set_error(0, failed_msg);
	}
	else
		failed_def.sink->set_error(failed_def.id, failed_msg);
	return true;
}

/*
 * Reports the error of a round (after round_failed): a WARNING naming the
 * definition parked for it, and its catalog row's status; an error that
 * is nobody's own is written into every definition's row that can say it
 * (set_error with id 0) and warned about once until a round succeeds.
 */
void
failure_record(ErrorData *edata)
{
	const char *raw = edata->message ? edata->message : "unknown error";
	char	   *msg;

	if (failed_skip)
		return;					/* decoded again at once, carefully */
	msg = failed_what ? describe_error(edata, raw) : pstrdup(raw);
	if (failed_what != NULL)
		ereport(WARNING,
				(errmsg("stream_events parked %s after its error: %s", failed_what, msg),
				 edata->detail ? errdetail("%s", edata->detail) : 0,
				 errhint("The other definitions go on. Fix the cause, then SELECT stream.resume(name): it replays from its applied LSN; the worker also retries it when it restarts.")));
	else if (last_warning == NULL || strcmp(last_warning, msg) != 0)
	{
		ereport(WARNING,
				(errmsg("stream_events could not maintain continuous aggregates: %s", msg),
				 edata->detail ? errdetail("%s", edata->detail) : 0,
				 edata->hint ? errhint("%s", edata->hint) : 0));
		last_warning = MemoryContextStrdup(consumer_cxt, msg);
	}
	failed_msg = msg;
	(void) consumer_tagged_transaction(record_status, NULL, false);
}

/* a round succeeded: the next error is warned about again */
void
failure_round_ok(void)
{
	last_warning = NULL;
}
