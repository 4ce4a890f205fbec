/*
 * Statement classification from libpg_query's parse tree.
 *
 * Why JSON (pg_query_parse + jansson) and not the protobuf tree: the walk is
 * generic (find every RangeVar, every FuncCall, every WITH scope wherever it
 * sits), which JSON gives with no per-node code and no protobuf-c reflection;
 * jansson refuses nesting deeper than JSON_PARSER_MAX_DEPTH by itself; and
 * libpg_query's protobuf output is quadratic on deep trees (53 s for a 400 KB
 * `1+1+...` where the JSON takes 0.7 s).
 *
 * Why a worker thread: libpg_query's output functions recurse once per tree
 * level with no stack check, so a 400 KB `SELECT 1+1+...+1` overflows an 8 MB
 * stack and kills the process (SIGSEGV). Every parse therefore runs on a
 * thread of its own with SQLINFO_PARSER_STACK of (virtual) stack, enough for
 * the deepest tree SQLINFO_MAX_SQL bytes can express; the tree is then
 * rejected past SQLINFO_MAX_DEPTH before anything else recurses over it
 * (fingerprinting and normalizing reparse the statement, so they only run on
 * statements already known to be shallow).
 */
#include "sqlinfo.h"
#include "colflow.h"
#include "list.h"
#include "sqlshape.h"

#include <errno.h>
#include <jansson.h>
#include <pg_query.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

/* 1 MB of `1+1+...` is a 500,000-level tree; libpg_query needs about 60 MB
 * of stack to print it and more to normalize it: 256 MB is address space,
 * only the pages touched are ever committed, and they go when the thread does. */
#define SQLINFO_PARSER_STACK ((size_t)256 * 1024 * 1024)

/* ---------------------------------------------------------------- */
/* Results */

static SqlInfo *sqlinfo_new(void)
{
	SqlInfo *info = xcalloc(1, sizeof(*info));
	info->refcount = 1;
	return info;
}

static void sqlinfo_free_stmts(SqlInfo *info)
{
	for (int i = 0; i < info->nstmts; i++) {
		SqlStatement *st = &info->stmts[i];
		if (!info->one_block)
			free(st->sql);
		free(st->fingerprint);
		free(st->normalized);
		if (info->shared)
			continue;	/* the rest is the shared result's */
		strlist_free(&st->tables);
		strlist_free(&st->functions);
		colflow_free(st);
		free(st->setting);
		free(st->deallocate_name);
	}
	if (!info->one_block)
		free(info->stmts);
	info->stmts = NULL;
	info->nstmts = 0;
	if (info->shared && --info->shared->refcount <= 0)
		sqlinfo_free(info->shared);
	info->shared = NULL;
}

/* A failed result carries no statements at all: callers cannot half-use it. */
static SqlInfo *sqlinfo_fail(SqlInfo *info, char *error)
{
	sqlinfo_free_stmts(info);
	free(info->error);
	info->ok = false;
	info->error = error;
	return info;
}

void sqlinfo_free(SqlInfo *info)
{
	if (!info)
		return;
	sqlinfo_free_stmts(info);
	free(info->error);
	free(info);
}

/* ---------------------------------------------------------------- */
/* Kinds */

typedef enum WritesRule {
	WRITES_NO,	/* cannot modify data or schema by itself */
	WRITES_YES,	/* modifies data or schema, or cannot be judged (CALL, DO) */
	WRITES_INNER,	/* depends on the statement's own parts: see stmt_effects */
} WritesRule;

typedef struct KindRule {
	const char *node;	/* parse tree node name */
	const char *kind;	/* NULL: decided from the node's fields (kind_special) */
	WritesRule writes;
} KindRule;

static const KindRule kind_rules[] = {
	{ "SelectStmt", "select", WRITES_INNER },
	{ "InsertStmt", "insert", WRITES_INNER },
	{ "UpdateStmt", "update", WRITES_INNER },
	{ "DeleteStmt", "delete", WRITES_INNER },
	{ "MergeStmt", "merge", WRITES_INNER },
	{ "ExplainStmt", "explain", WRITES_INNER },
	{ "PrepareStmt", "prepare", WRITES_INNER },
	{ "DeclareCursorStmt", "declare", WRITES_INNER },
	{ "CopyStmt", "copy", WRITES_INNER },
	{ "CreateTableAsStmt", "create", WRITES_YES },
	{ "TruncateStmt", "truncate", WRITES_YES },
	{ "DropStmt", "drop", WRITES_YES },
	{ "IndexStmt", "create", WRITES_YES },
	{ "ViewStmt", "create", WRITES_YES },
	{ "DefineStmt", "create", WRITES_YES },
	{ "CompositeTypeStmt", "create", WRITES_YES },
	{ "RuleStmt", "create", WRITES_YES },
	{ "ImportForeignSchemaStmt", "create", WRITES_YES },
	{ "RenameStmt", "alter", WRITES_YES },
	{ "ReassignOwnedStmt", "alter", WRITES_YES },
	{ "CommentStmt", "comment", WRITES_YES },
	{ "SecLabelStmt", "security_label", WRITES_YES },
	{ "GrantStmt", NULL, WRITES_YES },
	{ "GrantRoleStmt", NULL, WRITES_YES },
	{ "TransactionStmt", NULL, WRITES_NO },
	{ "VariableSetStmt", "set", WRITES_NO },
	{ "ConstraintsSetStmt", "set", WRITES_NO },
	{ "VariableShowStmt", "show", WRITES_NO },
	{ "CallStmt", "call", WRITES_YES },
	{ "DoStmt", "do", WRITES_YES },
	{ "ExecuteStmt", "execute", WRITES_NO },
	{ "DeallocateStmt", "deallocate", WRITES_NO },
	{ "ListenStmt", "listen", WRITES_NO },
	{ "UnlistenStmt", "unlisten", WRITES_NO },
	{ "NotifyStmt", "notify", WRITES_NO },
	{ "VacuumStmt", NULL, WRITES_YES },
	{ "ClusterStmt", "cluster", WRITES_YES },
	{ "ReindexStmt", "reindex", WRITES_YES },
	{ "RefreshMatViewStmt", "refresh", WRITES_YES },
	{ "FetchStmt", NULL, WRITES_NO },
	{ "ClosePortalStmt", "close", WRITES_NO },
	{ "DiscardStmt", "discard", WRITES_NO },
	{ "LockStmt", "lock", WRITES_YES },	/* as a read-only transaction sees it */
	{ "CheckPointStmt", "checkpoint", WRITES_NO },
	{ "LoadStmt", "load", WRITES_YES },
};

/* The families with many node types (CreateFooStmt, AlterBarStmt, ...). */
static const KindRule kind_prefixes[] = {
	{ "Create", "create", WRITES_YES },
	{ "Alter", "alter", WRITES_YES },
	{ "Drop", "drop", WRITES_YES },
};

/* Anything unrecognised is assumed to write: policies should deny "unknown". */
static const KindRule kind_unknown = { "", "unknown", WRITES_YES };

static const KindRule *kind_rule_find(const char *node)
{
	for (size_t i = 0; i < ARRAY_SIZE(kind_rules); i++)
		if (strcmp(kind_rules[i].node, node) == 0)
			return &kind_rules[i];
	for (size_t i = 0; i < ARRAY_SIZE(kind_prefixes); i++) {
		const char *p = kind_prefixes[i].node;
		size_t n = strlen(node);
		if (strncmp(node, p, strlen(p)) == 0 && n > 4 && strcmp(node + n - 4, "Stmt") == 0)
			return &kind_prefixes[i];
	}
	return &kind_unknown;
}

static const char *json_str(const json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

static bool json_flag(const json_t *obj, const char *key)
{
	return json_is_true(json_object_get(obj, key));
}

static const char *kind_transaction(const json_t *body)
{
	static const struct {
		const char *node_kind, *kind;
	} map[] = {
		{ "TRANS_STMT_BEGIN", "begin" },
		{ "TRANS_STMT_START", "begin" },
		{ "TRANS_STMT_COMMIT", "commit" },
		{ "TRANS_STMT_ROLLBACK", "rollback" },
		{ "TRANS_STMT_SAVEPOINT", "savepoint" },
		{ "TRANS_STMT_RELEASE", "release" },
		{ "TRANS_STMT_ROLLBACK_TO", "rollback_to" },
		{ "TRANS_STMT_PREPARE", "prepare_transaction" },
		{ "TRANS_STMT_COMMIT_PREPARED", "commit_prepared" },
		{ "TRANS_STMT_ROLLBACK_PREPARED", "rollback_prepared" },
	};
	const char *k = json_str(body, "kind");
	for (size_t i = 0; k && i < ARRAY_SIZE(map); i++)
		if (strcmp(map[i].node_kind, k) == 0)
			return map[i].kind;
	return "unknown";
}

/* Kinds that depend on a field of the node rather than on its type. */
static const char *kind_special(const char *node, const json_t *body)
{
	if (strcmp(node, "TransactionStmt") == 0)
		return kind_transaction(body);
	if (strcmp(node, "GrantStmt") == 0 || strcmp(node, "GrantRoleStmt") == 0)
		return json_flag(body, "is_grant") ? "grant" : "revoke";
	if (strcmp(node, "VacuumStmt") == 0)
		return json_flag(body, "is_vacuumcmd") ? "vacuum" : "analyze";
	if (strcmp(node, "FetchStmt") == 0)
		return json_flag(body, "ismove") ? "move" : "fetch";
	return "unknown";
}

/* ---------------------------------------------------------------- */
/* Writes */

typedef struct Effects {
	bool writes;
	bool dml_without_where;
} Effects;

static bool is_dml_node(const char *node)
{
	return strcmp(node, "InsertStmt") == 0 || strcmp(node, "UpdateStmt") == 0 ||
	       strcmp(node, "DeleteStmt") == 0 || strcmp(node, "MergeStmt") == 0;
}

static void effects_of_dml(const char *node, const json_t *body, Effects *e)
{
	e->writes = true;
	if ((strcmp(node, "UpdateStmt") == 0 || strcmp(node, "DeleteStmt") == 0) &&
	    !json_object_get(body, "whereClause"))
		e->dml_without_where = true;
}

/*
 * Every data-modifying statement nested anywhere below (writable CTEs, at any
 * level), SELECT ... INTO and row locks. The tree was already depth-checked by the
 * classifying walk, so this recursion is bounded by SQLINFO_MAX_DEPTH.
 */
static void effects_scan(const char *key, const json_t *v, Effects *e)
{
	/* SELECT INTO creates a table; FOR UPDATE/SHARE locks rows, which a
	 * read-only transaction refuses too */
	if (key && (strcmp(key, "intoClause") == 0 || strcmp(key, "lockingClause") == 0))
		e->writes = true;
	if (json_is_array(v)) {
		size_t i;
		const json_t *item;
		json_array_foreach(v, i, item)
			effects_scan(NULL, item, e);
		return;
	}
	if (!json_is_object(v))
		return;
	if (key && is_dml_node(key))
		effects_of_dml(key, v, e);
	const char *k;
	const json_t *child;
	json_object_foreach((json_t *)v, k, child)
		effects_scan(k, child, e);
}

/* parse_bool's false spellings; anything else (or no value) means on. */
static bool option_is_false(const json_t *arg)
{
	static const char *const falses[] = { "f", "fa", "fal", "fals", "false", "n", "no",
					      "of", "off", "0" };
	if (!arg)
		return false;
	const json_t *i = json_object_get(arg, "Integer");
	if (i)
		return !json_object_get(i, "ival");	/* ival 0 is left out of the JSON */
	const char *s = json_str(json_object_get(arg, "String"), "sval");
	for (size_t n = 0; s && n < ARRAY_SIZE(falses); n++)
		if (strcasecmp(s, falses[n]) == 0)
			return true;
	return false;
}

/* Any ANALYZE option not plainly false counts: the server would run it or fail. */
static bool explain_is_analyze(const json_t *body)
{
	size_t i;
	const json_t *opt;
	json_array_foreach(json_object_get(body, "options"), i, opt) {
		const json_t *d = json_object_get(opt, "DefElem");
		const char *name = json_str(d, "defname");
		if (name && strcmp(name, "analyze") == 0 && !option_is_false(json_object_get(d, "arg")))
			return true;
	}
	return false;
}

static void stmt_effects(const json_t *wrapped, Effects *e);

static void stmt_effects_inner(const char *node, const json_t *body, Effects *e)
{
	if (strcmp(node, "SelectStmt") == 0 || is_dml_node(node)) {
		effects_scan(node, body, e);
	} else if (strcmp(node, "ExplainStmt") == 0) {
		/* plain EXPLAIN only plans: the inner statement does not run */
		if (explain_is_analyze(body))
			stmt_effects(json_object_get(body, "query"), e);
	} else if (strcmp(node, "PrepareStmt") == 0 || strcmp(node, "DeclareCursorStmt") == 0) {
		stmt_effects(json_object_get(body, "query"), e);
	} else if (strcmp(node, "CopyStmt") == 0) {
		/* COPY FROM loads rows; COPY TO a file or program writes on the server */
		if (json_flag(body, "is_from") || json_flag(body, "is_program") ||
		    json_object_get(body, "filename"))
			e->writes = true;
		stmt_effects(json_object_get(body, "query"), e);
	}
}

/* What running the statement does now. wrapped is {"NodeName": {...}} or NULL. */
static void stmt_effects(const json_t *wrapped, Effects *e)
{
	const char *node;
	const json_t *body;
	json_object_foreach((json_t *)wrapped, node, body) {
		const KindRule *rule = kind_rule_find(node);
		if (rule->writes == WRITES_YES)
			e->writes = true;
		else if (rule->writes == WRITES_INNER)
			stmt_effects_inner(node, body, e);
	}
}

/* ---------------------------------------------------------------- */
/* Relations and functions */

/* The CTE names visible at a point of the tree, innermost first. */
typedef struct CteScope {
	const json_t *ctes;	/* the WITH list: [{"CommonTableExpr": {...}}, ...] */
	size_t visible;		/* how many of them, from the start, are in scope */
	const struct CteScope *parent;
} CteScope;

typedef struct Walk {
	StrList *tables;
	StrList *functions;
	json_t *seen_tables;	/* set of names already listed: dedup in O(1) */
	json_t *seen_functions;
	const char **session_state;	/* set when a call leaves session state (see walk_func_call) */
	char *error;		/* first failure: the walk stops */
} Walk;

static bool cte_scope_has(const CteScope *scope, const char *name)
{
	for (; scope; scope = scope->parent)
		for (size_t i = 0; i < scope->visible; i++) {
			const json_t *cte = json_object_get(json_array_get(scope->ctes, i), "CommonTableExpr");
			const char *cn = json_str(cte, "ctename");
			if (cn && strcmp(cn, name) == 0)
				return true;
		}
	return false;
}

static void walk_add(StrList *list, json_t *seen, const char *name)
{
	if (json_object_get(seen, name))
		return;
	json_object_set_new(seen, name, json_true());
	strlist_add(list, name);
}

static char *join_parts(const char *const *parts, int n)
{
	size_t len = 1;
	for (int i = 0; i < n; i++)
		len += strlen(parts[i]) + 1;
	char *s = xmalloc(len), *p = s;
	for (int i = 0; i < n; i++) {
		size_t l = strlen(parts[i]);
		if (i)
			*p++ = '.';
		memcpy(p, parts[i], l);
		p += l;
	}
	*p = '\0';
	return s;
}

/*
 * A RangeVar is recognised by shape, since typed fields (DeleteStmt.relation,
 * IntoClause.rel, Constraint.pktable, ...) are not wrapped in {"RangeVar":...}:
 * relname and relpersistence belong to no other node. Only a wrapped RangeVar
 * (a FROM/USING/JOIN item) can name a CTE; DML targets never do.
 */
static bool walk_range_var(Walk *w, const char *key, const json_t *obj, const CteScope *scope)
{
	const char *rel = json_str(obj, "relname");
	if (!rel || !json_str(obj, "relpersistence"))
		return false;
	const char *parts[3];
	int n = 0;
	if (json_str(obj, "catalogname"))
		parts[n++] = json_str(obj, "catalogname");
	if (json_str(obj, "schemaname"))
		parts[n++] = json_str(obj, "schemaname");
	parts[n++] = rel;
	if (n == 1 && key && strcmp(key, "RangeVar") == 0 && cte_scope_has(scope, rel))
		return true;
	char *name = join_parts(parts, n);
	walk_add(w->tables, w->seen_tables, name);
	free(name);
	return true;
}

/* A name given as a list of String nodes: [{"String":{"sval":"s"}}, ...]. */
static char *name_from_list(const json_t *items, int drop_last)
{
	const char *parts[4];
	int n = (int)json_array_size(items) - drop_last;
	if (n < 1 || n > (int)ARRAY_SIZE(parts))
		return NULL;
	for (int i = 0; i < n; i++) {
		parts[i] = json_str(json_object_get(json_array_get(items, (size_t)i), "String"), "sval");
		if (!parts[i])
			return NULL;
	}
	return join_parts(parts, n);
}

/* The last part of a function name: "pg_catalog.set_config" -> "set_config". */
static const char *func_base_name(const char *name)
{
	const char *dot = strrchr(name, '.');
	return dot ? dot + 1 : name;
}

/* A literal true (A_Const boolval true); anything else may be false at run time. */
static bool arg_is_true(const json_t *arg)
{
	const json_t *b = json_object_get(json_object_get(arg, "A_Const"), "boolval");
	return json_is_true(json_object_get(b, "boolval"));
}

/* Calls whose effect outlives the transaction: session advisory locks, set_config(, , false). */
static const char *func_session_state(const char *name, const json_t *body)
{
	static const char *const locks[] = { "pg_advisory_lock", "pg_advisory_lock_shared",
					     "pg_try_advisory_lock", "pg_try_advisory_lock_shared" };
	const char *base = func_base_name(name);
	for (size_t i = 0; i < ARRAY_SIZE(locks); i++)
		if (strcasecmp(base, locks[i]) == 0)
			return "session advisory lock";
	if (strcasecmp(base, "set_config") == 0 &&
	    !arg_is_true(json_array_get(json_object_get(body, "args"), 2)))
		return "set_config(..., false)";
	return NULL;
}

static void walk_func_call(Walk *w, const json_t *body)
{
	char *name = name_from_list(json_object_get(body, "funcname"), 0);
	if (name) {
		walk_add(w->functions, w->seen_functions, name);
		const char *state = func_session_state(name, body);
		if (state && !*w->session_state)
			*w->session_state = state;
	}
	free(name);
}

static bool objtype_is_relation(const char *t)
{
	static const char *const rel_types[] = { "OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW",
						 "OBJECT_FOREIGN_TABLE", "OBJECT_SEQUENCE", "OBJECT_INDEX",
						 "OBJECT_COLUMN" };
	for (size_t i = 0; t && i < ARRAY_SIZE(rel_types); i++)
		if (strcmp(rel_types[i], t) == 0)
			return true;
	return false;
}

static void walk_add_name_list(Walk *w, const json_t *object, const char *objtype)
{
	const json_t *items = json_object_get(json_object_get(object, "List"), "items");
	int drop_last = strcmp(objtype, "OBJECT_COLUMN") == 0 ? 1 : 0;
	char *name = name_from_list(items, drop_last);
	if (name)
		walk_add(w->tables, w->seen_tables, name);
	free(name);
}

/* DROP TABLE, COMMENT ON TABLE/COLUMN, SECURITY LABEL name relations as
 * lists of strings, not RangeVars. */
static void walk_object_names(Walk *w, const char *node, const json_t *body)
{
	if (strcmp(node, "DropStmt") == 0) {
		const char *t = json_str(body, "removeType");
		size_t i;
		const json_t *obj;
		if (!objtype_is_relation(t))
			return;
		json_array_foreach(json_object_get(body, "objects"), i, obj)
			walk_add_name_list(w, obj, t);
	} else if (strcmp(node, "CommentStmt") == 0 || strcmp(node, "SecLabelStmt") == 0) {
		const char *t = json_str(body, "objtype");
		if (objtype_is_relation(t))
			walk_add_name_list(w, json_object_get(body, "object"), t);
	}
}

static void walk_value(Walk *w, const char *key, const json_t *v, const CteScope *scope, int depth);

/*
 * WITH: CTE i sees CTEs 0..i-1 (all of them under RECURSIVE); the rest of the
 * statement sees all of them.
 */
static void walk_with(Walk *w, const json_t *obj, const json_t *with, const CteScope *scope,
		      int depth)
{
	const json_t *ctes = json_object_get(with, "ctes");
	size_t n = json_array_size(ctes);
	bool recursive = json_flag(with, "recursive");
	for (size_t i = 0; i < n && !w->error; i++) {
		CteScope inner = { ctes, recursive ? n : i, scope };
		walk_value(w, NULL, json_array_get(ctes, i), &inner, depth + 3);
	}
	CteScope outer = { ctes, n, scope };
	const char *k;
	const json_t *child;
	json_object_foreach((json_t *)obj, k, child) {
		if (strcmp(k, "withClause") != 0)
			walk_value(w, k, child, &outer, depth + 1);
	}
}

static void walk_object(Walk *w, const char *key, const json_t *obj, const CteScope *scope,
			int depth)
{
	if (walk_range_var(w, key, obj, scope))
		return;
	if (key && strcmp(key, "FuncCall") == 0)
		walk_func_call(w, obj);
	if (key)
		walk_object_names(w, key, obj);
	const json_t *with = json_object_get(obj, "withClause");
	if (json_is_object(with)) {
		walk_with(w, obj, with, scope, depth);
		return;
	}
	const char *k;
	const json_t *child;
	json_object_foreach((json_t *)obj, k, child)
		walk_value(w, k, child, scope, depth + 1);
}

static void walk_value(Walk *w, const char *key, const json_t *v, const CteScope *scope, int depth)
{
	if (w->error)
		return;
	if (!json_is_object(v) && !json_is_array(v))
		return;
	if (depth > SQLINFO_MAX_DEPTH) {
		w->error = xasprintf("statement nested too deeply (over %d levels)", SQLINFO_MAX_DEPTH);
		return;
	}
	if (json_is_object(v)) {
		walk_object(w, key, v, scope, depth);
		return;
	}
	size_t i;
	const json_t *item;
	json_array_foreach(v, i, item)
		walk_value(w, key, item, scope, depth + 1);
}

/* ---------------------------------------------------------------- */
/* One statement */

static char *pg_error_text(const PgQueryError *err, const char *what)
{
	if (err->cursorpos > 0)
		return xasprintf("%s: %s (at position %d)", what, err->message, err->cursorpos);
	return xasprintf("%s: %s", what, err->message);
}

/* Fingerprint and normalized text of one statement's own text. */
static char *stmt_fingerprint(SqlStatement *st)
{
	char *error = NULL;
	PgQueryFingerprintResult fp = pg_query_fingerprint(st->sql);
	if (fp.error)
		error = pg_error_text(fp.error, "cannot fingerprint");
	else
		st->fingerprint = xstrdup(fp.fingerprint_str);
	pg_query_free_fingerprint_result(fp);
	if (error)
		return error;
	PgQueryNormalizeResult nr = pg_query_normalize(st->sql);
	if (nr.error)
		error = pg_error_text(nr.error, "cannot normalize");
	else
		st->normalized = xstrdup(nr.normalized_query);
	pg_query_free_normalize_result(nr);
	return error;
}

/* The statement's own text: [location, location+len) of the whole string,
 * len 0 meaning "to the end", without surrounding whitespace. */
static char *stmt_text(const char *sql, size_t sql_len, const json_t *raw, char **error)
{
	json_int_t loc = json_integer_value(json_object_get(raw, "stmt_location"));
	json_int_t len = json_integer_value(json_object_get(raw, "stmt_len"));
	if (loc < 0 || len < 0 || (size_t)loc > sql_len || (size_t)len > sql_len - (size_t)loc) {
		*error = xstrdup("parser returned a statement outside the query text");
		return NULL;
	}
	const char *p = sql + loc;
	const char *end = len ? p + len : sql + sql_len;
	while (p < end && strchr(" \t\n\r\f\v", *p))
		p++;
	while (end > p && strchr(" \t\n\r\f\v", end[-1]))
		end--;
	return xstrndup(p, (size_t)(end - p));
}

/* LIMIT n or FETCH FIRST n; LIMIT ALL (a NULL constant) bounds nothing. */
static bool select_has_limit(const json_t *select)
{
	const json_t *count = json_object_get(select, "limitCount");
	if (!count)
		return false;
	const json_t *konst = json_object_get(count, "A_Const");
	return !(konst && json_is_true(json_object_get(konst, "isnull")));
}

/* ---------------------------------------------------------------- */
/* Session state (what a transaction-pooled server must not keep) */

#define CURSOR_OPT_HOLD 0x0020	/* PostgreSQL's parsenodes.h */

/* A relation created temporary, unless it goes at commit (ON COMMIT DROP). */
static bool creates_temp(const json_t *rel, const char *oncommit)
{
	const char *p = json_str(rel, "relpersistence");
	return p && strcmp(p, "t") == 0 && !(oncommit && strcmp(oncommit, "ONCOMMIT_DROP") == 0);
}

static bool stmt_creates_temp(const char *node, const json_t *body)
{
	if (strcmp(node, "CreateStmt") == 0)
		return creates_temp(json_object_get(body, "relation"), json_str(body, "oncommit"));
	if (strcmp(node, "CreateTableAsStmt") == 0 || strcmp(node, "SelectStmt") == 0) {
		const json_t *into = json_object_get(body, strcmp(node, "SelectStmt") == 0
							 ? "intoClause" : "into");
		return creates_temp(json_object_get(into, "rel"), json_str(into, "onCommit"));
	}
	if (strcmp(node, "ViewStmt") == 0)
		return creates_temp(json_object_get(body, "view"), NULL);
	if (strcmp(node, "CreateSeqStmt") == 0)
		return creates_temp(json_object_get(body, "sequence"), NULL);
	return false;
}

/* SET without LOCAL, except SET TRANSACTION (which ends with the transaction). */
static bool stmt_sets_session(const json_t *body)
{
	const char *kind = json_str(body, "kind");
	const char *name = json_str(body, "name");
	if (json_flag(body, "is_local") || !kind)
		return false;
	if (strcmp(kind, "VAR_SET_MULTI") == 0)
		return !name || strcmp(name, "TRANSACTION") != 0;
	return strcmp(kind, "VAR_SET_VALUE") == 0 || strcmp(kind, "VAR_SET_CURRENT") == 0;
}

static void stmt_session_state(SqlStatement *st, const char *node, const json_t *body)
{
	const char *state = NULL;
	if (strcmp(node, "VariableSetStmt") == 0 && stmt_sets_session(body)) {
		state = "SET";
		const char *name = json_str(body, "name");
		st->setting = name ? xstrdup(name) : NULL;
	} else if (strcmp(node, "PrepareStmt") == 0) {
		state = "PREPARE";
	} else if (strcmp(node, "ListenStmt") == 0) {
		state = "LISTEN";
	} else if (strcmp(node, "DeclareCursorStmt") == 0 &&
		   (json_integer_value(json_object_get(body, "options")) & CURSOR_OPT_HOLD)) {
		state = "WITH HOLD cursor";
	} else if (stmt_creates_temp(node, body)) {
		state = "temporary table";
	} else if (strcmp(node, "DeallocateStmt") == 0) {
		const char *name = json_str(body, "name");
		st->deallocate_name = name ? xstrdup(name) : NULL;
		st->deallocates_all = !name;
	} else if (strcmp(node, "DiscardStmt") == 0) {
		const char *target = json_str(body, "target");
		st->deallocates_all = target && strcmp(target, "DISCARD_ALL") == 0;
	}
	if (state)
		st->session_state = state;	/* the statement itself outranks a call inside it */
}

static char *stmt_classify(SqlStatement *st, const json_t *wrapped)
{
	const char *node = NULL;
	const json_t *body = NULL;
	const char *k;
	const json_t *v;
	json_object_foreach((json_t *)wrapped, k, v) {
		node = k;
		body = v;
	}
	if (!node || !json_is_object(body) || json_object_size(wrapped) != 1)
		return xstrdup("parser returned an unexpected statement shape");

	Walk w = { &st->tables, &st->functions, json_object(), json_object(), &st->session_state, NULL };
	/* depth counts JSON levels from the root: {"stmts": [{"stmt": HERE}]} */
	walk_value(&w, NULL, wrapped, NULL, 4);
	json_decref(w.seen_tables);
	json_decref(w.seen_functions);
	if (w.error)
		return w.error;

	const KindRule *rule = kind_rule_find(node);
	st->kind = rule->kind ? rule->kind : kind_special(node, body);
	st->is_transaction_control = strcmp(node, "TransactionStmt") == 0;
	if (strcmp(node, "UpdateStmt") == 0 || strcmp(node, "DeleteStmt") == 0)
		st->has_where = json_object_get(body, "whereClause") != NULL;
	if (strcmp(node, "SelectStmt") == 0)
		st->has_limit = select_has_limit(body);
	colflow_scan(st, node, body);
	Effects e = { false, false };
	stmt_effects(wrapped, &e);
	st->writes = e.writes;
	st->dml_without_where = e.dml_without_where;
	stmt_session_state(st, node, body);
	return NULL;
}

/* ---------------------------------------------------------------- */
/* The whole query string (runs on the parser thread) */

static char *parse_tree_load(const char *tree, json_t **root)
{
	json_error_t jerr;
	*root = json_loads(tree, 0, &jerr);
	if (*root)
		return NULL;
	if (json_error_code(&jerr) == json_error_stack_overflow)
		return xasprintf("statement nested too deeply (over %d levels)", SQLINFO_MAX_DEPTH);
	return xasprintf("cannot read the parse tree: %s", jerr.text);
}

static char *parse_stmts(SqlInfo *info, const char *sql, size_t len, const json_t *stmts, bool full)
{
	size_t n = json_array_size(stmts);
	char *error = NULL;
	info->stmts = xcalloc(n ? n : 1, sizeof(SqlStatement));
	for (size_t i = 0; i < n && !error; i++) {
		const json_t *raw = json_array_get(stmts, i);
		SqlStatement *st = &info->stmts[i];
		info->nstmts = (int)i + 1;
		st->sql = stmt_text(sql, len, raw, &error);
		if (!error)
			error = stmt_classify(st, json_object_get(raw, "stmt"));
	}
	/* only once every tree is known to be shallow: these reparse and recurse */
	for (size_t i = 0; full && i < n && !error; i++)
		error = stmt_fingerprint(&info->stmts[i]);
	return error;
}

static SqlInfo *sqlinfo_parse_unguarded(const char *sql, size_t len, bool full)
{
	SqlInfo *info = sqlinfo_new();
	char *error = NULL;
	json_t *root = NULL;
	PgQueryParseResult pr = pg_query_parse(sql);
	if (pr.error)
		error = pg_error_text(pr.error, "syntax error");
	else
		error = parse_tree_load(pr.parse_tree, &root);
	pg_query_free_parse_result(pr);
	if (!error) {
		const json_t *stmts = json_object_get(root, "stmts");
		if (json_is_array(stmts))
			error = parse_stmts(info, sql, len, stmts, full);
		else
			error = xstrdup("parser returned no statement list");
	}
	json_decref(root);
	if (error)
		return sqlinfo_fail(info, error);
	info->ok = true;
	return info;
}

typedef struct ParseJob {
	const char *sql;	/* NUL-terminated copy of the input */
	size_t len;
	bool full;		/* with fingerprint and normalized text */
	SqlInfo *result;	/* set by the worker */
} ParseJob;

/*
 * One long-lived parser thread per calling thread. Not a thread per parse:
 * libpg_query takes a pthread key for every thread that calls it and never
 * gives it back, so after ~1000 short-lived threads PTHREAD_KEYS_MAX is
 * exhausted for the whole process (OpenSSL then crashes in RAND_bytes).
 * The caller blocks while its worker parses, as if it parsed itself.
 */
typedef struct ParserWorker {
	pthread_t tid;
	pthread_mutex_t mu;
	pthread_cond_t cv;	/* job posted, job done, or quit */
	ParseJob *job;		/* posted by the caller, cleared by the worker when done */
	bool quit;
} ParserWorker;

static pthread_once_t worker_once = PTHREAD_ONCE_INIT;
static pthread_key_t worker_key;	/* the calling thread's ParserWorker */
static int worker_key_error;

/* After a big input, give back the stack pages the parse touched: they stay
 * committed otherwise. Everything below our own frame (minus a margin) is
 * unused while the worker sits in its loop. */
static void parser_worker_trim_stack(void)
{
	pthread_attr_t attr;
	void *lo;
	size_t size;
	char here;
	if (pthread_getattr_np(pthread_self(), &attr) != 0)
		return;
	if (pthread_attr_getstack(&attr, &lo, &size) == 0) {
		uintptr_t page = 4096;
		uintptr_t start = ((uintptr_t)lo + page - 1) & ~(page - 1);
		uintptr_t end = ((uintptr_t)&here - 1024 * 1024) & ~(page - 1);
		if (end > start)
			(void)madvise((void *)start, end - start, MADV_DONTNEED);
	}
	pthread_attr_destroy(&attr);
}

static void *parser_worker_main(void *arg)
{
	ParserWorker *w = arg;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->job && !w->quit)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->quit)
			break;
		ParseJob *job = w->job;
		pthread_mutex_unlock(&w->mu);
		job->result = sqlinfo_parse_unguarded(job->sql, job->len, job->full);
		if (job->len > SQLINFO_CACHE_MAX_KEY)
			parser_worker_trim_stack();
		pthread_mutex_lock(&w->mu);
		w->job = NULL;
		pthread_cond_broadcast(&w->cv);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* Key destructor: the calling thread is exiting, so is its worker. */
static void parser_worker_stop(void *arg)
{
	ParserWorker *w = arg;
	pthread_mutex_lock(&w->mu);
	w->quit = true;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->tid, NULL);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w);
}

/* A forked child has no worker thread: start a new one on first use. */
static void parser_worker_forget(void)
{
	pthread_setspecific(worker_key, NULL);
}

static void parser_worker_init_once(void)
{
	worker_key_error = pthread_key_create(&worker_key, parser_worker_stop);
	if (worker_key_error == 0)
		worker_key_error = pthread_atfork(NULL, NULL, parser_worker_forget);
}

/* 0 or an errno value. */
static int parser_worker_start(ParserWorker **out)
{
	pthread_attr_t attr;
	int rc = pthread_attr_init(&attr);
	if (rc != 0)
		return rc;
	ParserWorker *w = xcalloc(1, sizeof(*w));
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	rc = pthread_attr_setstacksize(&attr, SQLINFO_PARSER_STACK);
	if (rc == 0)
		rc = pthread_create(&w->tid, &attr, parser_worker_main, w);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		pthread_cond_destroy(&w->cv);
		pthread_mutex_destroy(&w->mu);
		free(w);
		return rc;
	}
	rc = pthread_setspecific(worker_key, w);
	if (rc != 0) {
		parser_worker_stop(w);
		return rc;
	}
	*out = w;
	return 0;
}

/* 0 or an errno value: run job on this thread's parser worker. */
static int parser_worker_run(ParseJob *job)
{
	pthread_once(&worker_once, parser_worker_init_once);
	if (worker_key_error != 0)
		return worker_key_error;
	ParserWorker *w = pthread_getspecific(worker_key);
	if (!w) {
		int rc = parser_worker_start(&w);
		if (rc != 0)
			return rc;
	}
	pthread_mutex_lock(&w->mu);
	w->job = job;
	pthread_cond_broadcast(&w->cv);
	while (w->job)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
	return job->result ? 0 : EINVAL;
}

static SqlInfo *sqlinfo_parse_job(const char *sql, size_t len, bool full)
{
	if (!sql)
		len = 0;
	if (len > SQLINFO_MAX_SQL)
		return sqlinfo_fail(sqlinfo_new(),
				    xasprintf("statement too large (%zu bytes, limit %d)", len, SQLINFO_MAX_SQL));
	/* the server reads a Query up to its NUL: text past one would not be judged */
	if (len && memchr(sql, '\0', len))
		return sqlinfo_fail(sqlinfo_new(), xstrdup("statement contains a NUL byte"));
	char *copy = xstrndup(len ? sql : "", len);
	ParseJob job = { copy, len, full, NULL };
	SqlInfo *info;
	int rc = parser_worker_run(&job);
	if (rc == 0)
		info = job.result;
	else
		info = sqlinfo_fail(sqlinfo_new(), xasprintf("cannot run the parser thread: %s", strerror(rc)));
	free(copy);
	return info;
}

SqlInfo *sqlinfo_parse(const char *sql, size_t len)
{
	return sqlinfo_parse_job(sql, len, true);
}

SqlInfo *sqlinfo_parse_shallow(const char *sql, size_t len)
{
	/*
	 * A short text cannot nest deeply: parsed here, it skips two thread
	 * switches, which cost more than the parse itself (the stack it needs is
	 * bounded by the length; see test_sqlinfo's small-stack test).
	 */
	if (sql && len <= SQLINFO_INLINE_MAX && !memchr(sql, '\0', len)) {
		char *copy = xstrndup(sql, len);
		SqlInfo *info = sqlinfo_parse_unguarded(copy, len, false);
		free(copy);
		return info;
	}
	return sqlinfo_parse_job(sql, len, false);
}

/* ---------------------------------------------------------------- */
/* Cache */

typedef struct CacheEntry {
	List lru;			/* in SqlInfoCache.lru, most recent last */
	struct CacheEntry *next;	/* hash chain */
	uint64_t hash;
	char *key;
	size_t key_len;
	size_t bytes;			/* what this entry holds, for the byte budget */
	SqlInfo *info;			/* one reference held by the cache */
} CacheEntry;

struct SqlInfoCache {
	CacheEntry **buckets;
	size_t nbuckets;		/* power of two */
	int count;
	int capacity;
	size_t bytes;
	List lru;
	uint64_t k0, k1;		/* SipHash key: chains cannot be flooded */
	/* The last statement asked for: the policy, the masking guard and the
	 * lexing check each ask for the same text in turn, and it is looked up
	 * once. last_text is a buffer kept between statements (last_cap bytes). */
	char *last_text;
	size_t last_len, last_cap;
	SqlInfo *last_info;		/* one reference held here */
	ShapeMemo *shapes;		/* statements scanned, for shapes without a scan */
};

static inline uint64_t rotl64(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

#define SIP_ROUND(v0, v1, v2, v3)                                                        \
	do {                                                                             \
		v0 += v1; v1 = rotl64(v1, 13); v1 ^= v0; v0 = rotl64(v0, 32);          \
		v2 += v3; v3 = rotl64(v3, 16); v3 ^= v2;                                \
		v0 += v3; v3 = rotl64(v3, 21); v3 ^= v0;                                \
		v2 += v1; v1 = rotl64(v1, 17); v1 ^= v2; v2 = rotl64(v2, 32);          \
	} while (0)

static uint64_t load_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* SipHash-2-4 (Aumasson and Bernstein). */
static uint64_t siphash24(uint64_t k0, uint64_t k1, const uint8_t *in, size_t len)
{
	uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
	uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
	size_t full = len - len % 8;
	for (size_t i = 0; i < full; i += 8) {
		uint64_t m = load_le64(in + i);
		v3 ^= m;
		SIP_ROUND(v0, v1, v2, v3);
		SIP_ROUND(v0, v1, v2, v3);
		v0 ^= m;
	}
	uint64_t b = (uint64_t)len << 56;
	for (size_t i = 0; i < len % 8; i++)
		b |= (uint64_t)in[full + i] << (8 * i);
	v3 ^= b;
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	v0 ^= b;
	v2 ^= 0xff;
	for (int i = 0; i < 4; i++)
		SIP_ROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t sqlinfo_siphash(uint64_t k0, uint64_t k1, const void *in, size_t len)
{
	return siphash24(k0, k1, in, len);
}

/* The shape memo's hasher: shape keys hash as texts do, with the cache's key. */
static uint64_t cache_shape_hash(const void *arg, const char *key, size_t len)
{
	const SqlInfoCache *c = arg;
	return siphash24(c->k0, c->k1, (const uint8_t *)key, len);
}

SqlInfoCache *sqlinfo_cache_new(int capacity)
{
	SqlInfoCache *c = xcalloc(1, sizeof(*c));
	c->shapes = sqlshape_memo_new();
	uint64_t key[2];
	c->capacity = capacity > 0 ? capacity : 1;
	c->nbuckets = 16;
	while (c->nbuckets < (size_t)c->capacity)
		c->nbuckets *= 2;
	c->buckets = xcalloc(c->nbuckets, sizeof(CacheEntry *));
	list_init(&c->lru);
	if (!util_random_bytes(key, sizeof(key))) {
		/* a fixed key only weakens flood resistance; chains stay bounded by capacity */
		key[0] = (uint64_t)util_now_mono();
		key[1] = (uint64_t)(uintptr_t)c;
	}
	c->k0 = key[0];
	c->k1 = key[1];
	sqlshape_memo_set_hasher(c->shapes, cache_shape_hash, c);
	return c;
}

static void cache_unlink(SqlInfoCache *c, CacheEntry *e)
{
	CacheEntry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
	while (*pp != e)
		pp = &(*pp)->next;
	*pp = e->next;
	list_del(&e->lru);
	c->count--;
	c->bytes -= e->bytes;
	sqlinfo_release(c, e->info);
	free(e->key);
	free(e);
}

void sqlinfo_cache_free(SqlInfoCache *cache)
{
	List *item, *tmp;
	if (!cache)
		return;
	list_for_each_safe(item, &cache->lru, tmp)
		cache_unlink(cache, container_of(item, CacheEntry, lru));
	sqlinfo_release(cache, cache->last_info);
	free(cache->last_text);
	free(cache->buckets);
	sqlshape_memo_free(cache->shapes);
	free(cache);
}

static size_t sqlinfo_bytes(const SqlInfo *info)
{
	size_t n = sizeof(*info) + (info->error ? strlen(info->error) : 0);
	for (int i = 0; i < info->nstmts; i++) {
		const SqlStatement *st = &info->stmts[i];
		n += sizeof(*st) + strlen(st->sql) + (st->fingerprint ? strlen(st->fingerprint) : 0) +
		     (st->normalized ? strlen(st->normalized) : 0);
		n += (st->setting ? strlen(st->setting) : 0) +
		     (st->deallocate_name ? strlen(st->deallocate_name) : 0);
		for (int t = 0; t < st->tables.count; t++)
			n += strlen(st->tables.items[t]) + sizeof(char *);
		for (int f = 0; f < st->functions.count; f++)
			n += strlen(st->functions.items[f]) + sizeof(char *);
	}
	return n;
}

static CacheEntry *cache_lookup(SqlInfoCache *c, uint64_t hash, const char *sql, size_t len)
{
	for (CacheEntry *e = c->buckets[hash & (c->nbuckets - 1)]; e; e = e->next)
		if (e->hash == hash && e->key_len == len && memcmp(e->key, sql, len) == 0)
			return e;
	return NULL;
}

static void cache_insert(SqlInfoCache *c, uint64_t hash, const char *sql, size_t len, SqlInfo *info)
{
	CacheEntry *e = xcalloc(1, sizeof(*e));
	e->hash = hash;
	e->key = xmalloc(len ? len : 1);
	memcpy(e->key, sql, len);
	e->key_len = len;
	e->bytes = sizeof(*e) + len + sqlinfo_bytes(info);
	e->info = info;
	info->refcount++;
	size_t b = hash & (c->nbuckets - 1);
	e->next = c->buckets[b];
	c->buckets[b] = e;
	list_append(&c->lru, &e->lru);
	c->count++;
	c->bytes += e->bytes;
	/* never evicts the entry just added: lists are appended at the tail */
	while (c->count > 1 && (c->count > c->capacity || c->bytes > SQLINFO_CACHE_MAX_BYTES))
		cache_unlink(c, container_of(list_first(&c->lru), CacheEntry, lru));
}

/* (policy cost 4) a clone's one allocation (sqlinfo_clone_for_text) */
typedef struct CloneBlock {
	SqlInfo info;		/* first: freeing the info frees the block */
	SqlStatement stmt;
	char text[];
} CloneBlock;

/*
 * The classification of a statement of the same shape as tmpl (sqlshape.h),
 * for the text sql[0, stmt_end). Everything but the text is tmpl's, shared
 * (info->shared), not copied; the fingerprint and normalized text are the new
 * text's own, made on demand (sqlinfo_stmt_fingerprint/normalized):
 * libpg_query keeps some literals in them, and one statement's values must
 * never show up as another's.
 */
static SqlInfo *sqlinfo_clone_for_text(SqlInfo *tmpl, const char *sql, size_t stmt_end)
{
	if (tmpl->shared)
		tmpl = tmpl->shared;	/* never a chain */
	const SqlStatement *from = &tmpl->stmts[0];
	const char *p = sql, *end = sql + stmt_end;
	while (p < end && strchr(" \t\n\r\f\v", *p))
		p++;
	while (end > p && strchr(" \t\n\r\f\v", end[-1]))
		end--;
	size_t text_len = (size_t)(end - p);
	/* (policy cost 4) one allocation: the result, its statement, then its text */
	CloneBlock *b = xmalloc(sizeof(*b) + text_len + 1);
	SqlInfo *info = &b->info;
	memset(info, 0, sizeof(*info));
	info->refcount = 1;
	info->one_block = true;
	info->ok = true;
	info->nstmts = 1;
	info->stmts = &b->stmt;
	info->shared = tmpl;
	tmpl->refcount++;
	SqlStatement *st = &info->stmts[0];
	*st = *from;
	memcpy(b->text, p, text_len);
	b->text[text_len] = '\0';
	st->sql = b->text;
	st->fingerprint = NULL;
	st->normalized = NULL;
	return info;
}

const char *sqlinfo_stmt_fingerprint(SqlStatement *st)
{
	if (!st->fingerprint) {
		PgQueryFingerprintResult fp = pg_query_fingerprint(st->sql);
		st->fingerprint = xstrdup(fp.error ? "" : fp.fingerprint_str);
		pg_query_free_fingerprint_result(fp);
	}
	return st->fingerprint;
}

const char *sqlinfo_stmt_normalized(SqlStatement *st)
{
	if (!st->normalized) {
		PgQueryNormalizeResult nr = pg_query_normalize(st->sql);
		/* never the raw text: it may hold the values normalizing is meant to hide */
		st->normalized = xstrdup(nr.error ? "(statement that could not be normalized)"
						  : nr.normalized_query);
		pg_query_free_normalize_result(nr);
	}
	return st->normalized;
}

static CacheEntry *cache_touch(SqlInfoCache *cache, CacheEntry *e)
{
	list_del(&e->lru);
	list_append(&cache->lru, &e->lru);
	return e;
}

static void cache_remember(SqlInfoCache *cache, const char *sql, size_t len, SqlInfo *info)
{
	info->refcount++;
	sqlinfo_release(cache, cache->last_info);
	cache->last_info = NULL;
	if (!cache->last_text || len > cache->last_cap) {
		free(cache->last_text);
		cache->last_cap = len > 256 ? len : 256;
		cache->last_text = xmalloc(cache->last_cap);
	}
	memcpy(cache->last_text, sql, len);
	cache->last_len = len;
	cache->last_info = info;
}

static uint64_t shape_hash(const SqlInfoCache *cache, const SqlShape *shape)
{
	return shape->has_hash ? shape->key_hash
			       : siphash24(cache->k0, cache->k1, (const uint8_t *)shape->key,
					   shape->key_len);
}

/* The classification of sql by its shape's parse (a clone for its text), or NULL. */
static SqlInfo *cache_get_by_shape(SqlInfoCache *cache, const char *sql, const SqlShape *shape)
{
	CacheEntry *e = cache_lookup(cache, shape_hash(cache, shape), shape->key, shape->key_len);
	if (!e || !e->info->ok || e->info->nstmts != 1)
		return NULL;
	return sqlinfo_clone_for_text(cache_touch(cache, e)->info, sql, shape->stmt_end);
}

SqlInfo *sqlinfo_cache_get(SqlInfoCache *cache, const char *sql, size_t len)
{
	if (!sql) {
		sql = "";
		len = 0;
	}
	/* a NUL byte is refused by the parse, and would let a text pass for a shape key */
	if (len > SQLINFO_CACHE_MAX_KEY || (len && memchr(sql, '\0', len)))
		return sqlinfo_parse(sql, len);
	if (cache->last_info && cache->last_len == len && memcmp(cache->last_text, sql, len) == 0) {
		cache->last_info->refcount++;
		return cache->last_info;
	}
	/*
	 * The same text but for its integer literals' digits as one the shape memo
	 * knows: classified by its shape's parse without hashing its own text.
	 * Else the text itself, then its shape (the scanner's), then a parse.
	 */
	SqlShape shape;
	ShapeProbe probe;
	bool shaped = sqlshape_memo_get(cache->shapes, sql, len, &probe, &shape);
	SqlInfo *found = shaped ? cache_get_by_shape(cache, sql, &shape) : NULL;
	uint64_t hash = 0;
	if (!found) {
		hash = siphash24(cache->k0, cache->k1, (const uint8_t *)sql, len);
		CacheEntry *e = cache_lookup(cache, hash, sql, len);
		if (e) {
			found = cache_touch(cache, e)->info;
			found->refcount++;
		}
	}
	if (!found && !shaped) {
		shaped = sqlshape_memo_scan(cache->shapes, sql, len, &probe, &shape);
		found = shaped ? cache_get_by_shape(cache, sql, &shape) : NULL;
	}
	if (found) {
		if (shaped)
			sqlshape_free(&shape);
		cache_remember(cache, sql, len, found);
		return found;
	}
	SqlInfo *info = sqlinfo_parse(sql, len);
	cache_insert(cache, hash, sql, len, info);
	if (shaped && info->ok && info->nstmts == 1)
		cache_insert(cache, shape_hash(cache, &shape), shape.key, shape.key_len, info);
	if (shaped)
		sqlshape_free(&shape);
	cache_remember(cache, sql, len, info);
	return info;
}

void sqlinfo_release(SqlInfoCache *cache, SqlInfo *info)
{
	(void)cache;
	if (info && --info->refcount <= 0)
		sqlinfo_free(info);
}
