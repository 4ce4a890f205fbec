/*
 * Protected-column analysis of a classified statement (see maskguard.h).
 */
#include "maskguard.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Built-in functions that run SQL given as text: its columns are invisible to the parser. */
static const char *const sql_text_functions[] = {
	"query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "cursor_to_xml",
	"cursor_to_xmlschema", "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
	"schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema", "database_to_xml",
	"database_to_xmlschema", "database_to_xml_and_xmlschema", NULL,
};

static const char *last_part(const char *name)
{
	const char *dot = strrchr(name, '.');
	return dot ? dot + 1 : name;
}

static bool function_runs_sql_text(const char *fn)
{
	const char *base = last_part(fn);
	if (strncmp(base, "dblink", 6) == 0)
		return true;
	for (int i = 0; sql_text_functions[i]; i++)
		if (strcmp(base, sql_text_functions[i]) == 0)
			return true;
	return false;
}

/* One P.masks key split: schema (may be NULL), table ("*" for any), column. */
typedef struct MaskKey {
	const char *schema;
	const char *table;
	const char *column;
} MaskKey;

/* Split key, whose copy (strlen(key) + 1 bytes) the parts then point into. */
static bool key_split(const char *key, char *copy, MaskKey *k)
{
	strcpy(copy, key);
	char *c1 = strchr(copy, '.');
	char *c2 = c1 ? strchr(c1 + 1, '.') : NULL;
	memset(k, 0, sizeof(*k));
	if (!c1)
		return false;
	*c1 = '\0';
	if (c2) {
		*c2 = '\0';
		k->schema = copy;
		k->table = c1 + 1;
		k->column = c2 + 1;
	} else {
		k->table = copy;
		k->column = c1 + 1;
	}
	return true;
}

/*
 * Every key split, for one check: all of their text in one buffer. Judging a
 * statement then allocates nothing for the keys when they fit the inline space.
 */
#define MASK_KEYS_INLINE 16
#define MASK_KEYS_TEXT 1024

typedef struct MaskKeys {
	MaskKey *keys;
	int n;
	char *text;
	MaskKey keys_inline[MASK_KEYS_INLINE];
	char text_inline[MASK_KEYS_TEXT];
} MaskKeys;

static void mask_keys_split(const StrList *list, MaskKeys *mk)
{
	size_t bytes = 0;
	for (int i = 0; i < list->count; i++)
		bytes += strlen(list->items[i]) + 1;
	mk->keys = list->count <= MASK_KEYS_INLINE ? mk->keys_inline
						    : xcalloc((size_t)list->count, sizeof(MaskKey));
	mk->text = bytes <= MASK_KEYS_TEXT ? mk->text_inline : xmalloc(bytes);
	mk->n = 0;
	char *pos = mk->text;
	for (int i = 0; i < list->count; i++) {
		if (key_split(list->items[i], pos, &mk->keys[mk->n]))
			mk->n++;
		pos += strlen(list->items[i]) + 1;
	}
}

static void mask_keys_free(MaskKeys *mk)
{
	if (mk->keys != mk->keys_inline)
		free(mk->keys);
	if (mk->text != mk->text_inline)
		free(mk->text);
}

/* Does the relation named in the statement (as written) match the key's table? */
static bool key_matches_relation(const MaskKey *k, const char *written)
{
	const char *rel = last_part(written);
	if (strcmp(k->table, rel) != 0)
		return false;
	if (!k->schema || rel == written)
		return true;	/* unqualified: search_path may resolve it to the key's schema */
	size_t slen = (size_t)(rel - 1 - written);
	const char *schema = memrchr(written, '.', slen) ? (const char *)memrchr(written, '.', slen) + 1
							   : written;
	return strlen(k->schema) == (size_t)(rel - 1 - schema) &&
	       strncmp(schema, k->schema, strlen(k->schema)) == 0;
}

static void add_unique(StrList *l, const char *s)
{
	if (!strlist_contains(l, s))
		strlist_add(l, s);
}

/*
 * A set of names borrowed from the keys and the statement, which outlive the
 * check: no copies, and no allocation until it outgrows its inline space.
 */
#define NAMESET_INLINE 16

typedef struct NameSet {
	const char **items;
	int count, cap;
	const char *items_inline[NAMESET_INLINE];
} NameSet;

static void names_init(NameSet *s)
{
	s->items = s->items_inline;
	s->count = 0;
	s->cap = NAMESET_INLINE;
}

static bool names_contains(const NameSet *s, const char *name)
{
	for (int i = 0; i < s->count; i++)
		if (strcmp(s->items[i], name) == 0)
			return true;
	return false;
}

/* Add name unless present; true when it was added. */
static bool names_add(NameSet *s, const char *name)
{
	if (names_contains(s, name))
		return false;
	if (s->count == s->cap) {
		const char **grown = xmalloc(sizeof(*grown) * (size_t)s->cap * 2);
		memcpy(grown, s->items, sizeof(*grown) * (size_t)s->count);
		if (s->items != s->items_inline)
			free(s->items);
		s->items = grown;
		s->cap *= 2;
	}
	s->items[s->count++] = name;
	return true;
}

static void names_free(NameSet *s)
{
	if (s->items != s->items_inline)
		free(s->items);
	names_init(s);
}

/* Names that carry a protected value in this statement: columns, then relations. */
typedef struct Taint {
	NameSet cols;	/* column names, aliases, whole-row names */
	NameSet rels;	/* relations (and their aliases) holding a protected column */
	bool any_table;	/* a "*.column" key: any relation may hold one */
} Taint;

static void taint_from_keys(const MaskKey *keys, int nkeys, const SqlStatement *st, Taint *t)
{
	for (int i = 0; i < nkeys; i++) {
		const MaskKey *k = &keys[i];
		if (strcmp(k->table, "*") == 0) {
			names_add(&t->cols, k->column);
			t->any_table = true;
			continue;
		}
		for (int j = 0; j < st->tables.count; j++) {
			if (!key_matches_relation(k, st->tables.items[j]))
				continue;
			names_add(&t->cols, k->column);
			names_add(&t->rels, last_part(st->tables.items[j]));
		}
	}
}

/* Aliases of tainted relations, whole-row names, and renames, to a fixpoint. */
static void taint_spread(const SqlStatement *st, Taint *t)
{
	if (t->any_table)
		for (int j = 0; j < st->tables.count; j++)
			names_add(&t->rels, last_part(st->tables.items[j]));
	for (int i = 0; i + 1 < st->rel_aliases.count; i += 2)
		if (t->any_table || names_contains(&t->rels, st->rel_aliases.items[i + 1]))
			names_add(&t->rels, st->rel_aliases.items[i]);
	for (int i = 0; i < t->rels.count; i++)
		names_add(&t->cols, t->rels.items[i]);
	for (int i = 0; i < st->pos_aliases.count; i++)
		names_add(&t->cols, st->pos_aliases.items[i]);
	bool grew = true;
	while (grew) {
		grew = false;
		for (int i = 0; i + 1 < st->renames.count; i += 2)
			if (names_contains(&t->cols, st->renames.items[i + 1]) &&
			    names_add(&t->cols, st->renames.items[i]))
				grew = true;
	}
}

/* A view that reads a protected column, named by the statement (any schema if unqualified)? */
static const char *statement_tainted_view(const StrList *views, const SqlStatement *st)
{
	/* views holds "schema.view" and "view": unqualified names match in any schema */
	for (int j = 0; views && j < st->tables.count; j++)
		if (strlist_contains(views, st->tables.items[j]))
			return st->tables.items[j];
	return NULL;
}

/* The P.masks key for a protected name in this statement, or NULL. */
static const MaskKey *key_for_name(const MaskKey *keys, int nkeys, const SqlStatement *st,
				   const char *name)
{
	for (int i = 0; i < nkeys; i++) {
		if (strcmp(keys[i].column, name) != 0)
			continue;
		if (strcmp(keys[i].table, "*") == 0)
			return &keys[i];
		for (int j = 0; j < st->tables.count; j++)
			if (key_matches_relation(&keys[i], st->tables.items[j]))
				return &keys[i];
	}
	return NULL;
}

/* A set operation's protected plain references become per-position masks. */
static char *setop_hints(const MaskKey *keys, int nkeys, const SqlStatement *st,
			 const Taint *t, StrList *hints)
{
	if (st->setop_star)
		return xstrdup("a set operation selecting * over a protected table cannot be masked: "
			       "list its columns");
	for (int i = 0; i < st->setop_refs.count; i++) {
		const char *ref = st->setop_refs.items[i];
		const char *tab = strchr(ref, '\t');
		if (!tab || !names_contains(&t->cols, tab + 1))
			continue;
		const MaskKey *k = key_for_name(keys, nkeys, st, tab + 1);
		if (!k)
			return xasprintf("a set operation returns \"%s\", which carries a protected "
					 "value under another name", tab + 1);
		size_t plen = (size_t)(tab - ref) + 1;	/* "k\t" */
		char *hint = xasprintf("%.*s%s%s%s\t%s", (int)plen, ref, k->schema ? k->schema : "",
				       k->schema ? "." : "", k->table, k->column);
		for (int j = 0; j < hints->count; j++) {
			if (strncmp(hints->items[j], ref, plen) == 0 && strcmp(hints->items[j], hint) != 0) {
				free(hint);
				return xasprintf("column %.*s of a set operation mixes differently "
						 "protected columns", (int)plen - 1, ref);
			}
		}
		add_unique(hints, hint);
		free(hint);
	}
	return NULL;
}

/* ALTER ... RENAME / SET SCHEMA that would take a protected column out of its key's reach. */
static char *guard_rename(const MaskKey *keys, int nkeys, const SqlStatement *st)
{
	for (int i = 0; i < nkeys; i++) {
		const MaskKey *k = &keys[i];
		bool star = strcmp(k->table, "*") == 0;
		bool named = false;
		for (int j = 0; j < st->tables.count && !named; j++)
			named = key_matches_relation(k, st->tables.items[j]);
		if (st->moves_relation && named)
			return xasprintf("renaming or moving \"%s\" would take its protected column "
					 "\"%s\" out of its mask", k->table, k->column);
		if ((named || star) && strlist_contains(&st->renamed_cols, k->column))
			return xasprintf("renaming the protected column \"%s\" would take it out of "
					 "its mask", k->column);
		if (st->renamed_schema && k->schema && strcmp(k->schema, st->renamed_schema) == 0)
			return xasprintf("renaming schema \"%s\" would take its protected columns out "
					 "of their masks", k->schema);
	}
	return NULL;
}

/* The checks that depend on the catalog's views: never memoized. */
static char *guard_views(const StrList *views, bool views_unknown, const SqlStatement *st,
			 bool *sensitive)
{
	const char *view = statement_tainted_view(views, st);
	if (view) {
		*sensitive = true;
		return xasprintf("\"%s\" is a view over a protected column: its columns cannot be "
				 "masked", view);
	}
	if (views_unknown && st->exposed.count > 0) {
		*sensitive = true;
		return xstrdup("the catalog needed to trace protected columns is unavailable "
			       "(masking, fail closed)");
	}
	return NULL;
}

static char *guard_statement(const MaskKey *keys, int nkeys, const StrList *views,
			     bool views_unknown, const SqlStatement *st, bool *sensitive,
			     StrList *hints)
{
	char *viewed = guard_views(views, views_unknown, st, sensitive);
	if (viewed)
		return viewed;
	for (int i = 0; i < st->functions.count; i++)
		if (function_runs_sql_text(st->functions.items[i]))
			return xasprintf("%s() runs SQL text that protected columns cannot be "
					 "traced through (masking)", st->functions.items[i]);
	if (st->opaque_code)
		return xasprintf("%s statements run code that protected columns cannot be "
				 "traced through (masking)", st->kind);
	char *renamed = guard_rename(keys, nkeys, st);
	if (renamed)
		return renamed;
	Taint t;
	names_init(&t.cols);
	names_init(&t.rels);
	t.any_table = false;
	char *why = NULL;
	taint_from_keys(keys, nkeys, st, &t);
	if (t.cols.count == 0)
		goto out;
	*sensitive = true;
	taint_spread(st, &t);
	for (int i = 0; i < st->exposed.count && !why; i++) {
		const char *n = st->exposed.items[i];
		if (strcmp(n, "*") == 0 || names_contains(&t.cols, n))
			why = xasprintf("protected column data (\"%s\") cannot leave through %s: "
					"only plain column references are masked", n,
					st->copy_out ? "COPY TO" : "an expression, function, cast, "
					"aggregate, set operation or write");
	}
	for (int i = 0; i < st->bare.count && !why; i++)
		if (names_contains(&t.rels, st->bare.items[i]))
			why = xasprintf("a whole-row reference to \"%s\" would bypass masking",
					st->bare.items[i]);
	if (!why && st->setop_top)
		why = setop_hints(keys, nkeys, st, &t, hints);
out:
	names_free(&t.cols);
	names_free(&t.rels);
	return why;
}

void maskguard_check(const StrList *keys, const StrList *views, bool views_unknown,
		     const SqlInfo *info, MaskGuardResult *out)
{
	memset(out, 0, sizeof(*out));
	if (!keys || keys->count == 0 || !info->ok)
		return;
	MaskKeys mk;
	mask_keys_split(keys, &mk);
	for (int i = 0; i < info->nstmts && !out->reason; i++)
		out->reason = guard_statement(mk.keys, mk.n, views, views_unknown, &info->stmts[i],
					      &out->sensitive, &out->hints);
	if (!out->reason && out->hints.count > 0 && info->nstmts > 1)
		out->reason = xstrdup("a set operation over protected columns must be the only "
				      "statement of its Query to be masked");
	out->deny = out->reason != NULL;
	mask_keys_free(&mk);
}

/*
 * A memo holds only a verdict that allowed every statement without hints, so
 * on a hit the view checks alone can deny, statement by statement, as
 * guard_statement's first checks would; the rest of every statement passed.
 */
void maskguard_check_memo(const StrList *keys, uint64_t keys_gen, const StrList *views,
			  bool views_unknown, SqlInfo *info, MaskGuardResult *out)
{
	SqlInfo *memo = info->shared ? info->shared : info;
	bool memoizable = keys_gen != 0 && keys && keys->count > 0 && info->ok;
	if (!memoizable || memo->guard_keys_gen != keys_gen) {
		maskguard_check(keys, views, views_unknown, info, out);
		if (memoizable && !out->reason && out->hints.count == 0) {
			memo->guard_keys_gen = keys_gen;
			memo->guard_sensitive = out->sensitive;
		}
		return;
	}
	memset(out, 0, sizeof(*out));
	for (int i = 0; i < info->nstmts && !out->reason; i++)
		out->reason = guard_views(views, views_unknown, &info->stmts[i], &out->sensitive);
	if (!out->reason)
		out->sensitive = memo->guard_sensitive;
	out->deny = out->reason != NULL;
}

void maskguard_result_free(MaskGuardResult *r)
{
	free(r->reason);
	r->reason = NULL;
	strlist_free(&r->hints);
}

bool maskguard_column_protected(const StrList *keys, const char *schema, const char *table,
				const char *column)
{
	char *qualified = xasprintf("%s.%s", schema, table);
	bool hit = false;
	for (int i = 0; keys && i < keys->count && !hit; i++) {
		MaskKey k;
		char *copy = xmalloc(strlen(keys->items[i]) + 1);
		if (key_split(keys->items[i], copy, &k))
			hit = strcmp(k.column, column) == 0 &&
			      (strcmp(k.table, "*") == 0 ||
			       (k.schema ? key_matches_relation(&k, qualified)
					 : strcmp(k.table, table) == 0));
		free(copy);
	}
	free(qualified);
	return hit;
}
