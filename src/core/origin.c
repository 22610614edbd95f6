/*-------------------------------------------------------------------------
 * origin.c
 *	  The private replication origin that marks the extension's own writes
 *	  (origin.h).  Records are tagged through replorigin_session_origin,
 *	  without replorigin_session_setup: so any number of backends can tag
 *	  at once, and the tag must be gone before commit (a commit with a
 *	  session origin but no set-up session would try to advance it).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "replication/origin.h"

#include "core/origin.h"

static bool callback_registered = false;
static RepOriginId tagging_with = InvalidRepOriginId;
static RepOriginId tagging_saved = InvalidRepOriginId;

RepOriginId
se_origin_id(bool create)
{
	RepOriginId id = replorigin_by_name(SE_ORIGIN_NAME, true);

	if (id == InvalidRepOriginId && create)
		id = replorigin_create(SE_ORIGIN_NAME);
	return id;
}

/* Never let the tag reach a commit record, whatever path was taken. */
static void
origin_xact_callback(XactEvent event, void *arg)
{
	if (tagging_with == InvalidRepOriginId)
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			if (replorigin_session_origin == tagging_with)
				replorigin_session_origin = tagging_saved;
			tagging_with = InvalidRepOriginId;
			break;
		default:
			break;
	}
}

void
origin_tag_begin(OriginTag *tag)
{
	RepOriginId id = se_origin_id(true);

	if (!callback_registered)
	{
		RegisterXactCallback(origin_xact_callback, NULL);
		callback_registered = true;
	}
	tag->saved = replorigin_session_origin;
	tag->active = true;
	/* a nested tag, or a session with an origin of its own: leave it be */
	if (replorigin_session_origin == id)
		return;
	if (tagging_with == InvalidRepOriginId)
		tagging_saved = replorigin_session_origin;
	tagging_with = id;
	replorigin_session_origin = id;
}

void
origin_tag_end(OriginTag *tag)
{
	if (!tag->active)
		return;
	tag->active = false;
	replorigin_session_origin = tag->saved;
	if (tag->saved != tagging_with)
		tagging_with = InvalidRepOriginId;
}
