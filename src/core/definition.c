/*-------------------------------------------------------------------------
 * definition.c
 *	  What every kind of definition (continuous aggregate, activation)
 *	  shares about the SQL it runs: the EXECUTE check of the functions it
 *	  calls, for the role it runs as, and the names of the relations it
 *	  uses.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"

#include "core/definition.h"

/*
 * EXECUTE on every function a definition calls, for the role it runs as.
 * PostgreSQL checks it only when an expression is initialised for
 * execution; a definition is refused when created instead, with the same
 * 42501, rather than failing in the worker.
 */
static bool
execute_checker(Oid func_id, void *context)
{
	Oid			roleid = *(Oid *) context;

	if (pg_proc_aclcheck(func_id, roleid, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", get_func_name(func_id)),
				 errdetail("The worker runs the definition as its owner, role %s.",
						   GetUserNameFromId(roleid, false)),
				 errhint("Ask the function's owner for GRANT EXECUTE ON FUNCTION %s TO %s.",
						 format_procedure(func_id),
						 quote_identifier(GetUserNameFromId(roleid, false)))));
	return false;
}

static bool
execute_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, execute_walker, context, 0);
	(void) check_functions_in_node(node, execute_checker, context);
	return expression_tree_walker(node, execute_walker, context);
}

void
definition_check_execute(Node *node, Oid roleid)
{
	(void) execute_walker(node, &roleid);
}

/*
 * The schema-qualified, quoted name of a relation a definition uses, or an
 * error when it was dropped since the definition was loaded (a stream or
 * state table dropped while the worker runs): never a NULL name.
 */
char *
definition_relation_name(Oid relid)
{
	char	   *name = get_rel_name(relid);
	char	   *nsp = name ? get_namespace_name(get_rel_namespace(relid)) : NULL;

	if (name == NULL || nsp == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u no longer exists", relid),
				 errdetail("It was dropped while a definition that uses it was loaded.")));
	return quote_qualified_identifier(nsp, name);
}
