/*-------------------------------------------------------------------------
 * immediate.c
 *	  on_event activations with delivery => 'immediate': a deferred
 *	  constraint trigger on the stream (stream_events_activations, created
 *	  and dropped by stream._activation_sync_trigger) evaluates them at the
 *	  producer's commit, in its transaction, so the outbox row and the
 *	  NOTIFY commit with the event.  Lowest latency; the price is NOTIFY's
 *	  cluster-wide commit lock in every producer transaction that fires
 *	  (docs/activations.md, bench/activation.sh).  Deferred, so that the
 *	  lock act_fire_row takes (the one NOTIFY takes at commit) is held from
 *	  the outbox insert to the commit only: outbox ids commit in id order.
 *
 * The compiled activations are cached per backend by the trigger's OID:
 * the trigger is dropped and created again whenever the stream's set of
 * immediate activations changes, so a new OID means new definitions.
 *
 * Identities (owner.h): this runs in the producer's session, with the
 * producer's rights, which may be a superuser's.  The activation's
 * condition, key and payload are analysed and evaluated as the activation's
 * owner (restricted, its search_path); the definitions are read, and the
 * outbox row and NOTIFY written, as the extension's owner, since producers
 * can neither read other roles' definitions nor write the outbox.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/tupconvert.h"
#include "catalog/partition.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "utils/resowner.h"
#include "access/xact.h"
#include "catalog/namespace.h"

#include "activation/activation.h"
#include "core/owner.h"
#include "stream_events.h"

PG_FUNCTION_INFO_V1(stream_activation_fire);
PG_FUNCTION_INFO_V1(stream_activation_sync_trigger);

#define IMMEDIATE_TRIGGER "stream_events_activations"

typedef struct ImmediateEntry
{
	Oid			tgoid;			/* hash key */
	Oid			stream;
	List	   *acts;			/* ActRuntime */
	TupleDesc	stream_desc;
	TupleTableSlot *stream_slot;
	TupleDesc	part_desc;
	TupleTableSlot *part_slot;	/* the row as the trigger gets it */
	TupleConversionMap *map;	/* partition row -> stream row, or NULL */
	bool		has_dead_letters;	/* the catalog has stream.dead_letters (0.2.0) */
} ImmediateEntry;

static HTAB *immediate_cache = NULL;
static MemoryContext immediate_cxt = NULL;

static void
load_entry(ImmediateEntry *entry, Relation rel)
{
	MemoryContext old = MemoryContextSwitchTo(immediate_cxt);
	Relation	streamrel;
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1];
	uint64		n;
	SPITupleTable *tuptable;
	OwnerScope	scope = {0};

	entry->stream = rel->rd_rel->relispartition
		? get_partition_parent(RelationGetRelid(rel), true) : RelationGetRelid(rel);
	streamrel = RelationIdGetRelation(entry->stream);
	entry->stream_desc = CreateTupleDescCopy(RelationGetDescr(streamrel));
	RelationClose(streamrel);
	entry->stream_slot = MakeSingleTupleTableSlot(entry->stream_desc, &TTSOpsVirtual);
	entry->part_desc = CreateTupleDescCopy(RelationGetDescr(rel));
	entry->part_slot = MakeSingleTupleTableSlot(entry->part_desc, &TTSOpsHeapTuple);
	entry->map = convert_tuples_by_name(entry->part_desc, entry->stream_desc);
	entry->acts = NIL;

	args[0] = ObjectIdGetDatum(entry->stream);

	/*
	 * As the extension's owner: the catalog shows a producer only its own
	 * definitions.  notify through to_jsonb: also before the column exists.
	 */
	owner_enter(&scope, owner_of_extension(), NULL);
	PG_TRY();
	{
		if (SPI_execute_with_args("SELECT act_id, name, owner::oid, condition, key, payload, channel, "
								  "cooldown, search_path, "
								  "coalesce(pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'notify', 'full') "
								  "OPERATOR(pg_catalog.=) 'id', " ACT_TREES_SQL ", "
								  "coalesce(pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'on_error', 'stop') "
								  "OPERATOR(pg_catalog.=) 'skip' "
								  "FROM stream.activation_defs d "
								  "WHERE stream OPERATOR(pg_catalog.=) $1 AND kind OPERATOR(pg_catalog.=) 'event' "
								  "AND delivery OPERATOR(pg_catalog.=) 'immediate' "
								  "ORDER BY act_id", 1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read stream.activation_defs");
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
	n = SPI_processed;
	tuptable = SPI_tuptable;
	MemoryContextSwitchTo(immediate_cxt);	/* SPI switched to its own */
	entry->has_dead_letters =
		OidIsValid(get_relname_relid("dead_letters", get_namespace_oid("stream", false)));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = tuptable->vals[i];
		TupleDesc	desc = tuptable->tupdesc;
		bool		isnull;
		Datum		d;
		ActRuntime *act;
		ActTrees	trees;

		act = act_compile(DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull)),
						  SPI_getvalue(tup, desc, 2), ACT_EVENT, entry->stream,
						  DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull)),
						  SPI_getvalue(tup, desc, 4), NULL, SPI_getvalue(tup, desc, 5),
						  SPI_getvalue(tup, desc, 6), SPI_getvalue(tup, desc, 7),
						  SPI_getvalue(tup, desc, 9), act_stored_trees(tup, desc, 11, &trees));
		d = SPI_getbinval(tup, desc, 8, &isnull);
		act->has_cooldown = !isnull;
		if (!isnull)
			act->cooldown = datumCopy(d, false, sizeof(Interval));
		act->notify_id = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull));
		act->def.skip_errors = entry->has_dead_letters &&
			DatumGetBool(SPI_getbinval(tup, desc, 15, &isnull));
		entry->acts = lappend(entry->acts, act);
	}
	MemoryContextSwitchTo(old);
}

/*
 * The outbox row and its NOTIFY, written as the extension's owner
 * (restricted, a search_path user objects cannot shadow): producers may not
 * write the outbox themselves; the statement is fixed, the user's
 * expressions ran before, as their owner.
 */
static void
fire_as_extension_owner(ActRuntime *act, ActEval *ev, Datum event_id,
						TimestampTz occurred_at, TimestampTz received_at)
{
	OwnerScope	scope = {0};

	owner_enter(&scope, owner_of_extension(), NULL);
	PG_TRY();
	{
		(void) act_fire_row(act->def.name, act->channel, ev->keynull ? NULL : ev->key,
							ev->payload, event_id, occurred_at, received_at,
							act->has_cooldown, act->cooldown, act->notify_id);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
}

/* CONTEXT of an error in an activation's expressions: which one */
static void
activation_error_context(void *arg)
{
	errcontext("activation %s (delivery => 'immediate')", ((ActRuntime *) arg)->def.name);
}

/*
 * act_evaluate for an activation that skips poison events (on_error =>
 * 'skip'): in a subtransaction, which assigns no transaction ID (it only
 * reads), so that an event's own error (consumer_error_is_events) rolls
 * back the evaluation alone.  Returns that error (the caller writes the
 * dead letter); other errors are thrown: they fail the producer's
 * statement, as with on_error => 'stop'.
 */
typedef struct GuardedEval
{
	ActRuntime *act;
	TupleTableSlot *row;
	ActEval    *ev;
} GuardedEval;

static void
guarded_eval(void *arg)
{
	GuardedEval *g = arg;

	act_evaluate(g->act, g->row, g->ev);
}

static ErrorData *
evaluate_guarded(ActRuntime *act, TupleTableSlot *row, ActEval *ev)
{
	GuardedEval g = {act, row, ev};

	return consumer_guarded(guarded_eval, &g, false, CurrentMemoryContext);
}

/*
 * The event a skipping immediate activation could not evaluate, as a dead
 * letter of that activation, written with the event (the producer's
 * transaction) as the extension's owner: producers may not write the
 * table themselves.
 */
static void
dead_letter_as_extension_owner(ActRuntime *act, TupleTableSlot *row, ErrorData *edata)
{
	OwnerScope	scope = {0};
	Datum		event_id;
	TimestampTz occurred_at,
				received_at;

	act_event_envelope(row, &event_id, &occurred_at, &received_at);
	owner_enter(&scope, owner_of_extension(), NULL);
	PG_TRY();
	{
		consumer_insert_dead_letter(&act->def, "activation", event_id, InvalidXLogRecPtr, edata);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
}

/*
 * stream._activation_fire(): deferred AFTER INSERT FOR EACH ROW on a stream
 * (cloned to its partitions).  Duplicates and quarantined events never reach it:
 * the stream's BEFORE trigger keeps them out of the table.
 */
Datum
stream_activation_fire(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	ImmediateEntry *entry;
	bool		found;
	TupleTableSlot *row;
	ListCell   *lc;
	bool		connected = false;
	volatile bool pushed = false;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("stream._activation_fire() must run as an AFTER INSERT FOR EACH ROW trigger")));

	if (immediate_cache == NULL)
	{
		HASHCTL		ctl;

		immediate_cxt = AllocSetContextCreate(TopMemoryContext, "stream_events immediate activations",
											  ALLOCSET_DEFAULT_SIZES);
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(ImmediateEntry);
		ctl.hcxt = immediate_cxt;
		immediate_cache = hash_create("stream_events immediate activations", 16, &ctl,
									  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	entry = hash_search(immediate_cache, &trigdata->tg_trigger->tgoid, HASH_ENTER, &found);
	if (!found)
	{
		entry->acts = NIL;
		PG_TRY();
		{
			SPI_connect();
			connected = true;
			load_entry(entry, trigdata->tg_relation);
		}
		PG_CATCH();
		{
			hash_search(immediate_cache, &trigdata->tg_trigger->tgoid, HASH_REMOVE, NULL);
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	if (entry->acts == NIL)
	{
		if (connected)
			SPI_finish();
		return PointerGetDatum(NULL);
	}

	row = ExecStoreHeapTuple(trigdata->tg_trigtuple, entry->part_slot, false);
	if (entry->map)
		row = execute_attr_map_slot(entry->map->attrMap, row, entry->stream_slot);

	/* deferred triggers at commit run with one; SET CONSTRAINTS too */
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed = true;
	}
	foreach(lc, entry->acts)
	{
		ActRuntime *act = lfirst(lc);
		ActEval		ev;
		ErrorContextCallback errcallback;
		Datum		event_id;
		TimestampTz occurred_at,
					received_at;

		/* checked at every firing: a REVOKE does not reset this cache */
		if (!act_owner_may_read(act))
			continue;
		/* the user's expressions, as the activation's owner */
		errcallback.callback = activation_error_context;
		errcallback.arg = act;
		errcallback.previous = error_context_stack;
		error_context_stack = &errcallback;
		if (act->def.skip_errors)
		{
			ErrorData  *e = evaluate_guarded(act, row, &ev);

			if (e)
			{
				error_context_stack = errcallback.previous;
				if (!connected)
				{
					SPI_connect();
					connected = true;
				}
				dead_letter_as_extension_owner(act, row, e);
				FreeErrorData(e);
				continue;
			}
		}
		else
			act_evaluate(act, row, &ev);
		error_context_stack = errcallback.previous;
		if (!ev.starts)
			continue;
		act_event_envelope(row, &event_id, &occurred_at, &received_at);
		if (!connected)
		{
			SPI_connect();
			connected = true;
		}
		fire_as_extension_owner(act, &ev, event_id, occurred_at, received_at);
	}
	if (pushed)
		PopActiveSnapshot();
	if (connected)
		SPI_finish();
	ExecClearTuple(entry->part_slot);
	if (entry->map)
		ExecClearTuple(entry->stream_slot);
	return PointerGetDatum(NULL);
}

/*
 * stream._activation_sync_trigger(stream): drops the stream's immediate
 * trigger and, while it has immediate activations, creates it again (a
 * new OID, so every backend recompiles).  Runs as the caller, who needs
 * the TRIGGER privilege on the stream.
 */
Datum
stream_activation_sync_trigger(PG_FUNCTION_ARGS)
{
	Oid			stream = PG_GETARG_OID(0);
	char	   *relname = get_rel_name(stream);
	char	   *qname;
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(stream)};
	bool		wanted;

	if (relname == NULL)
		PG_RETURN_VOID();		/* the stream is gone, and its trigger with it */
	qname = quote_qualified_identifier(get_namespace_name(get_rel_namespace(stream)), relname);
	SPI_connect();
	if (SPI_execute_with_args("SELECT 1 FROM stream.activation_defs WHERE stream = $1 "
							  "AND kind = 'event' AND delivery = 'immediate'",
							  1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read stream.activation_defs");
	wanted = SPI_processed > 0;
	if (SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = $1 "
							  "AND tgname = '" IMMEDIATE_TRIGGER "'",
							  1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_trigger");
	if (SPI_processed > 0 &&
		SPI_execute(psprintf("DROP TRIGGER " IMMEDIATE_TRIGGER " ON %s", qname),
					false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not drop the immediate trigger of %s", qname);
	if (wanted &&
		SPI_execute(psprintf("CREATE CONSTRAINT TRIGGER " IMMEDIATE_TRIGGER " AFTER INSERT ON %s "
							 "DEFERRABLE INITIALLY DEFERRED "
							 "FOR EACH ROW EXECUTE FUNCTION stream._activation_fire()", qname),
					false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not create the immediate trigger of %s", qname);
	SPI_finish();
	PG_RETURN_VOID();
}
