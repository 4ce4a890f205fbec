/*
 * Column flow over libpg_query's JSON parse tree (see colflow.h).
 *
 * The walk carries a context: OUTPUT (a result the client gets, where a
 * plain reference is masked by its RowDescription source), COMPUTED (the
 * value is transformed, stored elsewhere or otherwise beyond masking) and
 * PREDICATE (the value only decides which rows: WHERE, ON, ORDER BY, ...).
 * Any node the walk does not know keeps its parent's context, except that an
 * expression met in OUTPUT is COMPUTED: unknown shapes fail towards denial.
 */
#include "colflow.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

typedef enum { CF_OUTPUT, CF_COMPUTED, CF_PREDICATE } FlowCtx;

static void flow_value(SqlStatement *st, const char *key, const json_t *v, FlowCtx ctx);

static const char *jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static const char *string_node(const json_t *item)
{
	return jstr(json_object_get(item, "String"), "sval");
}

/* A value keeps flowing, but an expression in OUTPUT is computed. */
static FlowCtx flow_computed(FlowCtx ctx)
{
	return ctx == CF_PREDICATE ? CF_PREDICATE : CF_COMPUTED;
}

static bool flow_key_is_predicate(const char *k)
{
	static const char *const keys[] = { "whereClause", "havingClause", "sortClause",
					    "groupClause", "quals", "limitCount", "limitOffset",
					    "windowClause", "distinctClause", "lockingClause",
					    "usingClause", NULL };
	for (int i = 0; keys[i]; i++)
		if (strcmp(k, keys[i]) == 0)
			return true;
	return false;
}

static void flow_names(StrList *l, const json_t *items)
{
	size_t i;
	const json_t *it;
	json_array_foreach(items, i, it) {
		const char *s = string_node(it);
		if (s)
			strlist_add(l, s);
	}
}

/* A column reference whose value leaves in a form no mask can follow. */
static void flow_column_ref(SqlStatement *st, const json_t *body)
{
	const json_t *fields = json_object_get(body, "fields");
	size_t n = json_array_size(fields);
	if (n == 0)
		return;
	const json_t *last = json_array_get(fields, n - 1);
	const char *name = string_node(last);
	if (name) {
		strlist_add(&st->exposed, name);
		return;
	}
	/* t.* (or *) inside an expression: the whole row of t */
	const char *rel = n >= 2 ? string_node(json_array_get(fields, n - 2)) : NULL;
	strlist_add(&st->exposed, rel ? rel : "*");
}

/* A result's target list: plain references are masked by their source. */
static void flow_targets(SqlStatement *st, const json_t *list, FlowCtx ctx)
{
	size_t i;
	const json_t *it;
	json_array_foreach(list, i, it) {
		const json_t *rt = json_object_get(it, "ResTarget");
		const json_t *val = json_object_get(rt, "val");
		const json_t *cref = json_object_get(val, "ColumnRef");
		if (!cref || ctx != CF_OUTPUT) {
			flow_value(st, "val", val, flow_computed(ctx));
			continue;
		}
		const json_t *fields = json_object_get(cref, "fields");
		size_t n = json_array_size(fields);
		const char *last = n ? string_node(json_array_get(fields, n - 1)) : NULL;
		if (last && n == 1)
			strlist_add(&st->bare, last);
		if (last && jstr(rt, "name")) {
			strlist_add(&st->renames, jstr(rt, "name"));
			strlist_add(&st->renames, last);
		}
	}
}

static void flow_alias(SqlStatement *st, const json_t *alias, const char *relname)
{
	const char *name = jstr(alias, "aliasname");
	flow_names(&st->pos_aliases, json_object_get(alias, "colnames"));
	if (!name)
		return;
	if (relname) {
		strlist_add(&st->rel_aliases, name);
		strlist_add(&st->rel_aliases, relname);
	} else {
		/* a subquery's or function's alias names its whole row */
		strlist_add(&st->pos_aliases, name);
	}
}

static void flow_with(SqlStatement *st, const json_t *with, FlowCtx ctx)
{
	size_t i;
	const json_t *it;
	json_array_foreach(json_object_get(with, "ctes"), i, it) {
		const json_t *cte = json_object_get(it, "CommonTableExpr");
		flow_names(&st->pos_aliases, json_object_get(cte, "aliascolnames"));
		flow_value(st, "ctequery", json_object_get(cte, "ctequery"), ctx);
	}
}

static void flow_select(SqlStatement *st, const json_t *body, FlowCtx ctx)
{
	const char *op = jstr(body, "op");
	if (json_object_get(body, "intoClause"))
		ctx = flow_computed(ctx);	/* SELECT INTO stores what it reads */
	flow_with(st, json_object_get(body, "withClause"), ctx);
	if (op && strcmp(op, "SETOP_NONE") != 0) {
		/* UNION/INTERSECT/EXCEPT results carry no column source */
		flow_select(st, json_object_get(body, "larg"), flow_computed(ctx));
		flow_select(st, json_object_get(body, "rarg"), flow_computed(ctx));
	}
	const char *k;
	const json_t *child;
	json_object_foreach((json_t *)body, k, child) {
		if (strcmp(k, "targetList") == 0)
			flow_targets(st, child, ctx);
		else if (strcmp(k, "valuesLists") == 0)
			flow_value(st, k, child, flow_computed(ctx));
		else if (flow_key_is_predicate(k))
			flow_value(st, k, child, CF_PREDICATE);
		else if (strcmp(k, "fromClause") == 0)
			flow_value(st, k, child, ctx);
	}
}

/*
 * A statement that is itself a set operation: its result columns carry no
 * source in RowDescription, so plain references in its branches are recorded
 * by result position (maskguard.c turns them into masks by position).
 */
static void flow_setop(SqlStatement *st, const json_t *body)
{
	const char *op = jstr(body, "op");
	flow_with(st, json_object_get(body, "withClause"), CF_OUTPUT);
	if (op && strcmp(op, "SETOP_NONE") != 0) {
		flow_setop(st, json_object_get(body, "larg"));
		flow_setop(st, json_object_get(body, "rarg"));
	}
	const char *k;
	const json_t *child;
	json_object_foreach((json_t *)body, k, child) {
		if (strcmp(k, "valuesLists") == 0)
			flow_value(st, k, child, CF_COMPUTED);
		else if (flow_key_is_predicate(k))
			flow_value(st, k, child, CF_PREDICATE);
		else if (strcmp(k, "fromClause") == 0)
			flow_value(st, k, child, CF_OUTPUT);
	}
	size_t i;
	const json_t *it;
	json_array_foreach(json_object_get(body, "targetList"), i, it) {
		const json_t *val = json_object_get(json_object_get(it, "ResTarget"), "val");
		const json_t *fields = json_object_get(json_object_get(val, "ColumnRef"), "fields");
		size_t n = json_array_size(fields);
		const char *last = n ? string_node(json_array_get(fields, n - 1)) : NULL;
		if (!fields) {
			flow_value(st, "val", val, CF_COMPUTED);
		} else if (!last) {
			st->setop_star = true;
		} else {
			char *ref = xasprintf("%zu\t%s", i, last);
			strlist_add(&st->setop_refs, ref);
			free(ref);
		}
	}
}

static void flow_returning(SqlStatement *st, const json_t *body)
{
	flow_targets(st, json_object_get(body, "returningList"), CF_OUTPUT);
}

/* INSERT/UPDATE/DELETE/MERGE: what they read is stored; RETURNING is a result. */
static void flow_dml(SqlStatement *st, const char *node, const json_t *body)
{
	flow_with(st, json_object_get(body, "withClause"), CF_COMPUTED);
	const json_t *rel = json_object_get(body, "relation");
	if (json_object_get(rel, "alias"))
		flow_alias(st, json_object_get(rel, "alias"), jstr(rel, "relname"));
	const char *k;
	const json_t *child;
	json_object_foreach((json_t *)body, k, child) {
		if (strcmp(k, "returningList") == 0 || strcmp(k, "withClause") == 0 ||
		    strcmp(k, "relation") == 0)
			continue;
		bool pred = strcmp(node, "MergeStmt") != 0 && flow_key_is_predicate(k);
		flow_value(st, k, child, pred ? CF_PREDICATE : CF_COMPUTED);
	}
	flow_returning(st, body);
}

static void flow_copy(SqlStatement *st, const json_t *body)
{
	st->copy_out = !json_is_true(json_object_get(body, "is_from"));
	if (!st->copy_out)
		return;
	const json_t *rel = json_object_get(body, "relation");
	const json_t *attlist = json_object_get(body, "attlist");
	if (rel && json_array_size(attlist) == 0 && jstr(rel, "relname"))
		strlist_add(&st->exposed, jstr(rel, "relname"));
	flow_names(&st->exposed, attlist);
	flow_value(st, "query", json_object_get(body, "query"), CF_COMPUTED);
}

/* Renames and moves: a protected column or table under a new name escapes its key. */
static void flow_rename(SqlStatement *st, const char *node, const json_t *body)
{
	const char *type = jstr(body, strcmp(node, "RenameStmt") == 0 ? "renameType" : "objectType");
	if (!type)
		return;
	if (strcmp(node, "RenameStmt") == 0 && strcmp(type, "OBJECT_COLUMN") == 0) {
		if (jstr(body, "subname"))
			strlist_add(&st->renamed_cols, jstr(body, "subname"));
	} else if (strcmp(node, "RenameStmt") == 0 && strcmp(type, "OBJECT_SCHEMA") == 0) {
		free(st->renamed_schema);
		st->renamed_schema = jstr(body, "subname") ? xstrdup(jstr(body, "subname")) : NULL;
	} else if (json_object_get(body, "relation")) {
		st->moves_relation = true;
	}
}

static bool node_is_opaque_code(const char *node)
{
	static const char *const nodes[] = { "DoStmt", "CallStmt", "CreateFunctionStmt",
					     "RuleStmt", "CreateTrigStmt", "CreateEventTrigStmt",
					     NULL };
	for (int i = 0; nodes[i]; i++)
		if (strcmp(node, nodes[i]) == 0)
			return true;
	return false;
}

/* One wrapped node {"Name": body}; false when it is not one the flow knows. */
static bool flow_node(SqlStatement *st, const char *node, const json_t *body, FlowCtx ctx)
{
	if (strcmp(node, "SelectStmt") == 0) {
		flow_select(st, body, ctx);
	} else if (strcmp(node, "ColumnRef") == 0) {
		if (ctx != CF_PREDICATE)
			flow_column_ref(st, body);
	} else if (strcmp(node, "RangeVar") == 0) {
		if (json_object_get(body, "alias"))
			flow_alias(st, json_object_get(body, "alias"), jstr(body, "relname"));
	} else if (strcmp(node, "RangeSubselect") == 0) {
		flow_alias(st, json_object_get(body, "alias"), NULL);
		flow_value(st, "subquery", json_object_get(body, "subquery"), ctx);
	} else if (strcmp(node, "RangeFunction") == 0 || strcmp(node, "RangeTableFunc") == 0) {
		flow_alias(st, json_object_get(body, "alias"), NULL);
		flow_value(st, "functions", json_object_get(body, "functions"), flow_computed(ctx));
		flow_value(st, "docexpr", json_object_get(body, "docexpr"), flow_computed(ctx));
	} else if (strcmp(node, "JoinExpr") == 0) {
		flow_value(st, "larg", json_object_get(body, "larg"), ctx);
		flow_value(st, "rarg", json_object_get(body, "rarg"), ctx);
		flow_value(st, "quals", json_object_get(body, "quals"), CF_PREDICATE);
		if (json_object_get(body, "alias"))
			flow_alias(st, json_object_get(body, "alias"), NULL);
	} else if (strcmp(node, "InsertStmt") == 0 || strcmp(node, "UpdateStmt") == 0 ||
		   strcmp(node, "DeleteStmt") == 0 || strcmp(node, "MergeStmt") == 0) {
		flow_dml(st, node, body);
	} else if (strcmp(node, "RenameStmt") == 0 || strcmp(node, "AlterObjectSchemaStmt") == 0) {
		flow_rename(st, node, body);
	} else if (strcmp(node, "CopyStmt") == 0) {
		flow_copy(st, body);
	} else if (strcmp(node, "ViewStmt") == 0 || strcmp(node, "CreateTableAsStmt") == 0) {
		flow_value(st, "query", json_object_get(body, "query"), CF_COMPUTED);
	} else if (strcmp(node, "DeclareCursorStmt") == 0 || strcmp(node, "PrepareStmt") == 0 ||
		   strcmp(node, "ExplainStmt") == 0) {
		flow_value(st, "query", json_object_get(body, "query"), ctx);
	} else {
		return false;
	}
	return true;
}

static void flow_value(SqlStatement *st, const char *key, const json_t *v, FlowCtx ctx)
{
	if (json_is_array(v)) {
		size_t i;
		const json_t *it;
		json_array_foreach(v, i, it)
			flow_value(st, key, it, ctx);
		return;
	}
	if (!json_is_object(v))
		return;
	const char *k;
	const json_t *child;
	if (json_object_size(v) == 1) {
		json_object_foreach((json_t *)v, k, child) {
			if (k[0] >= 'A' && k[0] <= 'Z' && json_is_object(child)) {
				if (node_is_opaque_code(k))
					st->opaque_code = true;
				if (flow_node(st, k, child, ctx))
					return;
				/* an unknown expression node in a result is computed */
				if (ctx == CF_OUTPUT && !strstr(k, "Stmt"))
					ctx = CF_COMPUTED;
			}
		}
	}
	json_object_foreach((json_t *)v, k, child)
		flow_value(st, k, child, flow_key_is_predicate(k) ? CF_PREDICATE : ctx);
}

void colflow_scan(SqlStatement *st, const char *node, const json_t *body)
{
	const char *op = jstr(body, "op");
	if (strcmp(node, "SelectStmt") == 0 && op && strcmp(op, "SETOP_NONE") != 0 &&
	    !json_object_get(body, "intoClause")) {
		st->setop_top = true;
		flow_setop(st, body);
		return;
	}
	json_t *wrapped = json_object();
	json_object_set((json_t *)wrapped, node, (json_t *)body);
	flow_value(st, NULL, wrapped, CF_OUTPUT);
	json_decref(wrapped);
}

void colflow_free(SqlStatement *st)
{
	strlist_free(&st->exposed);
	strlist_free(&st->bare);
	strlist_free(&st->renames);
	strlist_free(&st->rel_aliases);
	strlist_free(&st->pos_aliases);
	strlist_free(&st->setop_refs);
	strlist_free(&st->renamed_cols);
	free(st->renamed_schema);
	st->renamed_schema = NULL;
}
