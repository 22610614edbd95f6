/*-------------------------------------------------------------------------
 * definition.h
 *	  Checks and names shared by every kind of definition (definition.c).
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_EVENTS_CORE_DEFINITION_H
#define STREAM_EVENTS_CORE_DEFINITION_H

#include "postgres.h"

#include "nodes/nodes.h"

/* 42501 unless roleid may EXECUTE every function the expression calls */
extern void definition_check_execute(Node *node, Oid roleid);

/* the quoted, qualified name of a relation; an error once it is dropped */
extern char *definition_relation_name(Oid relid);

#endif							/* STREAM_EVENTS_CORE_DEFINITION_H */
