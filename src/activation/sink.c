/*-------------------------------------------------------------------------
 * sink.c
 *	  Batched activations as a sink of the worker's consumer
 *	  (consumer/sink.h): their catalog rows read and compiled (compile.c),
 *	  each decoded event matched against on_event and on_absence
 *	  activations (queued, fire.c), the queue carried out with every
 *	  activation's applied LSN in the apply transaction; thresholds bound to
 *	  their aggregate as watches (aggregate/runtime.h), started from the
 *	  groups that already satisfy them; due absence timers.
 *	  docs/activations.md.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"

#include "activation/activation.h"
#include "core/definition.h"
#include "core/origin.h"
#include "core/owner.h"
#include "stream_events.h"

static List *acts = NIL;		/* ActRuntime, delivery 'batched' */
static bool have_absence = false;

/*
 * An activation stays parked while its status says error (before 0.2.0's
 * catalog, which has no status: until the worker restarts); stream.resume
 * sets it running.
 */
static List *
act_states(void)
{
	return consumer_read_states("SELECT act_id, coalesce(pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'status', 'error') "
								"OPERATOR(pg_catalog.=) 'error' FROM stream.activation_defs d");
}

static void
threshold_edge(AggWatch *w, const char *grp, const char *payload, bool holds)
{
	act_threshold_edge((ActRuntime *) w->arg, grp, payload, holds);
}

/* Runs a read-only query as owner (owner.h); SPI_OK_SELECT or an error. */
static void
select_as(Oid owner, const char *search_path, const char *sql, const char *what)
{
	OwnerScope	scope = {0};

	owner_enter(&scope, owner, search_path);
	PG_TRY();
	{
		if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not evaluate %s", what);
	}
	PG_FINALLY();
	{
		owner_exit(&scope);
	}
	PG_END_TRY();
}

/*
 * A new threshold starts from the groups that already satisfy its condition
 * (they fire only once they stopped and rose again): read as the
 * aggregate's owner, in the threshold's search_path, written as the worker
 * (tagged as its own, origin.h), with the threshold's applied_lsn, which
 * marks it initialised.  Not while the aggregate is backfilling: it calls
 * this when it is done.  In a transaction with SPI.
 */
static void
threshold_init(AggWatch *w, AggRuntime *rt)
{
	ActRuntime *act = (ActRuntime *) w->arg;
	char	   *state = definition_relation_name(rt->state_rel);
	char	   *sql;
	uint64		n;
	SPITupleTable *tuptable;
	XLogRecPtr	now_lsn = GetXLogInsertRecPtr();
	MemoryContext cxt = CurrentMemoryContext;
	OriginTag	tag = {0};

	/* an error in its condition is the threshold's own */
	consumer_blame(&activation_sink, act->def.id, act->def.name, InvalidXLogRecPtr);
	sql = psprintf("SELECT g FROM (SELECT pg_catalog.jsonb_build_array(%s)::pg_catalog.text AS g, "
				   "(SELECT coalesce((\n%s\n), false) FROM (SELECT %s) v) AS holds FROM %s) s "
				   "WHERE holds", rt->state_keys, act->condition, rt->view_select, state);
	select_as(rt->def.owner, act->def.search_path, sql, act->def.name);
	n = SPI_processed;
	tuptable = SPI_tuptable;
	origin_tag_begin(&tag);
	PG_TRY();
	{
		Oid			types[2] = {INT4OID, TEXTOID};
		Datum		args[2];

		args[0] = Int32GetDatum(act->def.id);
		for (uint64 i = 0; i < n; i++)
		{
			args[1] = CStringGetTextDatum(SPI_getvalue(tuptable->vals[i], tuptable->tupdesc, 1));
			if (SPI_execute_with_args("INSERT INTO stream.threshold_state (act_id, grp) VALUES ($1, $2) "
									  "ON CONFLICT DO NOTHING", 2, types, args, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not initialise threshold %s", act->def.name);
		}
		types[1] = LSNOID;
		args[1] = LSNGetDatum(now_lsn);
		if (SPI_execute_with_args("UPDATE stream.activation_defs SET applied_lsn = $2, applied_at = now() "
								  "WHERE act_id = $1", 2, types, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not initialise threshold %s", act->def.name);
	}
	PG_FINALLY();
	{
		origin_tag_end(&tag);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	consumer_unblame();
	act->def.applied_lsn = now_lsn;
	/* evaluated from now on, with the group's upsert */
	aggregate_add_watch(rt, w);
}

static List *
act_load(List *skip)
{
	ListCell   *lc;

	acts = act_load_batched(skip);
	foreach(lc, acts)
	{
		ActRuntime *act = lfirst(lc);

		act->def.rides = (act->kind == ACT_THRESHOLD);
		if (act->kind != ACT_THRESHOLD)
		{
			if (act->kind == ACT_ABSENCE)
				have_absence = true;
			/* event activations fire at once when producers wake us */
			worker_set_consumer_wake(true);
		}
	}
	return list_copy(acts);
}

/* thresholds are bound to their aggregate once both kinds are loaded */
static void
act_loaded(void)
{
	ListCell   *lc;
	ListCell   *lc2;

	foreach(lc, acts)
	{
		ActRuntime *act = lfirst(lc);

		if (act->kind != ACT_THRESHOLD)
			continue;
		act->watch.condition = act->condition;
		act->watch.payload = act->payload_text;
		act->watch.search_path = act->def.search_path;
		act->watch.edge = threshold_edge;
		act->watch.init = threshold_init;
		act->watch.arg = act;
		foreach(lc2, aggregate_runtimes())
		{
			AggRuntime *rt = lfirst(lc2);

			if (rt->view != act->view)
				continue;

			/*
			 * A threshold's condition runs as the aggregate's owner (in its
			 * upsert): only for a definer who holds that role's rights, as
			 * stream.on_threshold demands.
			 */
			if (!has_privs_of_role(act->def.owner, rt->def.owner))
			{
				ereport(WARNING,
						(errmsg("stream_events ignores threshold %s: its owner has no rights of the owner of continuous aggregate %s",
								act->def.name, rt->def.name)));
				continue;
			}
			if (!XLogRecPtrIsInvalid(act->def.applied_lsn))
				aggregate_add_watch(rt, &act->watch);
			else if (!rt->def.backfill)
				threshold_init(&act->watch, rt);
			else
				aggregate_add_pending_watch(rt, &act->watch);
		}
	}
}

static void
act_free(void)
{
	act_reset_batch(acts);
	acts = NIL;
	have_absence = false;
	worker_set_consumer_wake(false);
	act_free_plans();
}

static int
act_fold(ConsumerDef *def, ConsumerEvent *ev)
{
	int			n;

	consumer_evaluating(true);
	n = act_match_in_scope((ActRuntime *) def, ev->row);
	consumer_evaluating(false);
	return n;
}

static bool
act_pending(ConsumerDef *def)
{
	return act_queue_pending();
}

static void
act_spill(List *defs)
{
	act_spill_queue();
}

static void
act_lock(List *defs)
{
	act_lock_definitions(defs);
}

static void
act_apply(List *defs, XLogRecPtr upto, bool write_idle, TimestampTz now)
{
	ListCell   *lc;

	act_record_queued(defs, upto);
	act_apply_queue(acts);
	foreach(lc, defs)
	{
		ActRuntime *act = lfirst(lc);

		if (act->def.ndead > 0 && !act->gone)
			consumer_write_dead_letters(&act->def);
	}
	act_record_applied(defs, upto, write_idle, false);
}

static void
act_retried(List *defs)
{
	act_record_queued(defs, InvalidXLogRecPtr);
	act_apply_queue(acts);
	act_record_applied(defs, InvalidXLogRecPtr, false, true);
}

static void
act_committed(List *defs, XLogRecPtr upto, TimestampTz now)
{
	ListCell   *lc;

	foreach(lc, defs)
	{
		ActRuntime *act = lfirst(lc);

		/* only what act_record_applied wrote (a threshold not initialised stays so) */
		if (!act->recorded)
			continue;
		act->def.applied_lsn = Max(upto, act->def.applied_lsn);
		act->written = true;
		act->recorded = false;
	}
}

static void
act_reset(List *defs)
{
	act_reset_batch(defs);
}

/* errors that are nobody's are said in stream.aggregates only */
static void
act_set_error(int32 id, const char *msg)
{
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		args[2] = {CStringGetTextDatum(msg), Int32GetDatum(id)};

	if (id == 0 || !consumer_catalog_has_failures)
		return;
	SPI_execute_with_args("UPDATE stream.activation_defs SET status = 'error', last_error = $1 "
						  "WHERE act_id = $2", 2, argtypes, args, NULL, false, 0);
}

static void
act_sink_fire_timers(TimestampTz horizon)
{
	act_fire_due_timers(acts, horizon);
}

static bool
act_sink_timers_due(TimestampTz horizon)
{
	return have_absence && act_timers_due(horizon);
}

const ConsumerSink activation_sink = {
	.what = "activation",
	.dead_kind = "activation",

	/*
	 * An activation's notify mode and stored trees (set by an upgrade) show
	 * in its part, parked ones set right in status.
	 */
	.signature_sql = "SELECT 'a' || string_agg(act_id::text || ':' || coalesce(j ->> 'notify', '') || "
	"(j ->> 'condition_tree' IS NOT NULL)::text || coalesce(j ->> 'status', '') || "
	"coalesce(j ->> 'on_error', ''), ',' ORDER BY act_id) "
	"FROM stream.activation_defs d, LATERAL (SELECT pg_catalog.to_jsonb(d) AS j) x "
	"WHERE delivery = 'batched'",
	.states = act_states,
	.load = act_load,
	.loaded = act_loaded,
	.free = act_free,
	.fold = act_fold,
	.pending = act_pending,
	.spill = act_spill,
	.lock = act_lock,
	.apply = act_apply,
	.retried = act_retried,
	.committed = act_committed,
	.reset = act_reset,
	.set_error = act_set_error,
	.timers_due = act_sink_timers_due,
	.fire_timers = act_sink_fire_timers,
};

/* registers the sink; _PG_init, after the aggregates' (thresholds bind to them) */
void
activation_init(void)
{
	consumer_register_sink(&activation_sink);
}
