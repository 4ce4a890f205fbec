/*
 * Statement classification: every verdict must come from the parse tree, so
 * comments, case, quoting, dollar quotes and Unicode escapes change nothing,
 * and what cannot be parsed safely comes back ok=false.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/sqlinfo.h"
#include "src/sqlshape.h"

static SqlInfo *parse(const char *sql)
{
	SqlInfo *info = sqlinfo_parse(sql, strlen(sql));
	cr_assert_not_null(info);
	return info;
}

/* Parses sql, which must be exactly one classifiable statement. */
static SqlInfo *parse_one(const char *sql)
{
	SqlInfo *info = parse(sql);
	cr_assert(info->ok, "%s: %s", sql, info->error ? info->error : "");
	cr_assert_eq(info->nstmts, 1, "%s: %d statements", sql, info->nstmts);
	return info;
}

static bool has_table(const SqlStatement *st, const char *name)
{
	return strlist_contains(&st->tables, name);
}

static void assert_tables(const SqlStatement *st, const char *const *want, int n)
{
	cr_assert_eq(st->tables.count, n, "%s: %d tables", st->sql, st->tables.count);
	for (int i = 0; i < n; i++)
		cr_assert(has_table(st, want[i]), "%s: missing table %s", st->sql, want[i]);
}

/* "SELECT 1+1+...+1" of exactly len bytes. */
static char *deep_sum(size_t len)
{
	char *s = malloc(len + 1);
	cr_assert_not_null(s);
	memcpy(s, "SELECT 1", 8);
	size_t p = 8;
	while (p + 2 <= len) {
		memcpy(s + p, "+1", 2);
		p += 2;
	}
	while (p < len)
		s[p++] = ' ';
	s[p] = '\0';
	return s;
}

Test(sqlinfo, kind_is_drop_when_block_comment_precedes)
{
	SqlInfo *info = parse_one("/* x */ DROP TABLE t");
	cr_assert_str_eq(info->stmts[0].kind, "drop");
	cr_assert(info->stmts[0].writes);
	cr_assert(has_table(&info->stmts[0], "t"));
	sqlinfo_free(info);
}

Test(sqlinfo, kind_is_delete_when_line_comment_precedes)
{
	SqlInfo *info = parse_one("-- x\nDELETE FROM t");
	cr_assert_str_eq(info->stmts[0].kind, "delete");
	cr_assert(info->stmts[0].writes);
	cr_assert_not(info->stmts[0].has_where);
	sqlinfo_free(info);
}

Test(sqlinfo, kind_and_names_fold_when_keywords_mixed_case)
{
	SqlInfo *info = parse_one("dElEtE fRoM PuBlIc.UsErS wHeRe Id = 1");
	cr_assert_str_eq(info->stmts[0].kind, "delete");
	cr_assert(info->stmts[0].has_where);
	const char *want[] = { "public.users" };
	assert_tables(&info->stmts[0], want, 1);
	sqlinfo_free(info);
}

Test(sqlinfo, quoted_identifier_keeps_case_when_quoted)
{
	SqlInfo *info = parse_one("SELECT * FROM \"Secret\" JOIN SECRET USING (id)");
	const char *want[] = { "Secret", "secret" };
	assert_tables(&info->stmts[0], want, 2);
	sqlinfo_free(info);
}

Test(sqlinfo, dollar_quote_hides_nothing_when_it_contains_drop)
{
	SqlInfo *info = parse_one("SELECT $$; DROP TABLE x$$, $tag$'; DROP TABLE y; --$tag$");
	cr_assert_str_eq(info->stmts[0].kind, "select");
	cr_assert_not(info->stmts[0].writes);
	cr_assert_eq(info->stmts[0].tables.count, 0);
	sqlinfo_free(info);
}

Test(sqlinfo, unicode_escape_resolves_when_identifier_is_escaped)
{
	SqlInfo *info = parse_one("SELECT * FROM U&\"s\\0065cr\\+000065t\"");
	const char *want[] = { "secret" };
	assert_tables(&info->stmts[0], want, 1);
	sqlinfo_free(info);

	info = parse_one("DELETE FROM U&\"!0074\" UESCAPE '!'");
	cr_assert_str_eq(info->stmts[0].kind, "delete");
	cr_assert(has_table(&info->stmts[0], "t"));
	sqlinfo_free(info);
}

Test(sqlinfo, string_semicolon_is_one_statement_when_quoted)
{
	SqlInfo *info = parse_one("SELECT 'a; DROP TABLE t', E'b\\'; DROP TABLE u; --'");
	cr_assert_str_eq(info->stmts[0].kind, "select");
	cr_assert_eq(info->stmts[0].tables.count, 0);
	sqlinfo_free(info);
}

Test(sqlinfo, splits_statements_when_drop_follows_select)
{
	SqlInfo *info = parse("SELECT 1; DROP TABLE t");
	cr_assert(info->ok);
	cr_assert_eq(info->nstmts, 2);
	cr_assert_str_eq(info->stmts[0].sql, "SELECT 1");
	cr_assert_str_eq(info->stmts[0].kind, "select");
	cr_assert_not(info->stmts[0].writes);
	cr_assert_str_eq(info->stmts[1].sql, "DROP TABLE t");
	cr_assert_str_eq(info->stmts[1].kind, "drop");
	cr_assert(info->stmts[1].writes);
	const char *want[] = { "t" };
	assert_tables(&info->stmts[1], want, 1);
	sqlinfo_free(info);
}

Test(sqlinfo, splits_statements_when_comment_separates_them)
{
	SqlInfo *info = parse("SELECT 1 /* ; */; -- ;\nTRUNCATE a, s.b;");
	cr_assert(info->ok);
	cr_assert_eq(info->nstmts, 2);
	cr_assert_str_eq(info->stmts[1].kind, "truncate");
	const char *want[] = { "a", "s.b" };
	assert_tables(&info->stmts[1], want, 2);
	sqlinfo_free(info);
}

Test(sqlinfo, writes_when_cte_deletes)
{
	SqlInfo *info = parse_one("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d");
	const SqlStatement *st = &info->stmts[0];
	cr_assert_str_eq(st->kind, "select");
	cr_assert(st->writes);
	cr_assert(st->dml_without_where);
	const char *want[] = { "t" };
	assert_tables(st, want, 1);
	sqlinfo_free(info);
}

Test(sqlinfo, writes_when_nested_subquery_cte_updates)
{
	SqlInfo *info = parse_one("SELECT * FROM (WITH u AS (UPDATE acct SET b = 0 WHERE id = 1 "
				  "RETURNING id) SELECT * FROM u) s");
	cr_assert(info->stmts[0].writes);
	cr_assert_not(info->stmts[0].dml_without_where);
	cr_assert(has_table(&info->stmts[0], "acct"));
	cr_assert_not(has_table(&info->stmts[0], "u"));
	sqlinfo_free(info);
}

Test(sqlinfo, writes_when_explain_analyze_deletes)
{
	SqlInfo *info = parse_one("EXPLAIN ANALYZE DELETE FROM t");
	cr_assert_str_eq(info->stmts[0].kind, "explain");
	cr_assert(info->stmts[0].writes);
	cr_assert(info->stmts[0].dml_without_where);
	cr_assert(has_table(&info->stmts[0], "t"));
	sqlinfo_free(info);

	info = parse_one("EXPLAIN (COSTS off, ANALYZE) UPDATE t SET a = 1");
	cr_assert(info->stmts[0].writes);
	sqlinfo_free(info);

	info = parse_one("EXPLAIN (ANALYZE false, ANALYZE on) DELETE FROM t");
	cr_assert(info->stmts[0].writes);
	sqlinfo_free(info);
}

Test(sqlinfo, does_not_write_when_explain_only_plans)
{
	const char *sqls[] = { "EXPLAIN DELETE FROM t", "EXPLAIN (ANALYZE off) DELETE FROM t",
			       "EXPLAIN (ANALYZE 0) DELETE FROM t", "EXPLAIN ANALYZE SELECT * FROM t" };
	for (size_t i = 0; i < sizeof(sqls) / sizeof(sqls[0]); i++) {
		SqlInfo *info = parse_one(sqls[i]);
		cr_assert_str_eq(info->stmts[0].kind, "explain");
		cr_assert_not(info->stmts[0].writes, "%s", sqls[i]);
		cr_assert(has_table(&info->stmts[0], "t"), "%s", sqls[i]);
		sqlinfo_free(info);
	}
}

Test(sqlinfo, writes_when_select_into)
{
	SqlInfo *info = parse_one("SELECT * INTO copy_of FROM secret");
	cr_assert_str_eq(info->stmts[0].kind, "select");
	cr_assert(info->stmts[0].writes);
	const char *want[] = { "copy_of", "secret" };
	assert_tables(&info->stmts[0], want, 2);
	sqlinfo_free(info);
}

Test(sqlinfo, writes_when_create_table_as)
{
	SqlInfo *info = parse_one("CREATE TABLE x AS SELECT * FROM s.y");
	cr_assert_str_eq(info->stmts[0].kind, "create");
	cr_assert(info->stmts[0].writes);
	const char *want[] = { "x", "s.y" };
	assert_tables(&info->stmts[0], want, 2);
	sqlinfo_free(info);
}

Test(sqlinfo, has_no_where_when_delete_is_unbounded)
{
	SqlInfo *info = parse_one("DELETE FROM t USING u");
	cr_assert_not(info->stmts[0].has_where);
	cr_assert(info->stmts[0].dml_without_where);
	const char *want[] = { "t", "u" };
	assert_tables(&info->stmts[0], want, 2);
	sqlinfo_free(info);

	info = parse_one("UPDATE t SET a = 1 FROM u WHERE t.id = u.id");
	cr_assert(info->stmts[0].has_where);
	cr_assert_not(info->stmts[0].dml_without_where);
	sqlinfo_free(info);
}

Test(sqlinfo, has_where_when_update_where_current_of)
{
	SqlInfo *info = parse_one("UPDATE t SET a = 1 WHERE CURRENT OF c");
	cr_assert_str_eq(info->stmts[0].kind, "update");
	cr_assert(info->stmts[0].has_where);
	cr_assert(info->stmts[0].writes);
	sqlinfo_free(info);
}

Test(sqlinfo, lists_tables_when_nested_in_subqueries_joins_and_ctes)
{
	SqlInfo *info = parse_one(
		"WITH c AS (SELECT * FROM cte_src) "
		"SELECT * FROM a JOIN b ON a.id = b.id LEFT JOIN LATERAL (SELECT * FROM lat) l ON true "
		"WHERE a.x IN (SELECT y FROM sub WHERE EXISTS (SELECT 1 FROM deep.er)) "
		"UNION SELECT * FROM c, un");
	const char *want[] = { "cte_src", "a", "b", "lat", "sub", "deep.er", "un" };
	assert_tables(&info->stmts[0], want, 7);
	sqlinfo_free(info);
}

Test(sqlinfo, lists_tables_once_when_repeated)
{
	SqlInfo *info = parse_one("SELECT * FROM t, t t2, public.t WHERE id IN (SELECT id FROM t)");
	const char *want[] = { "t", "public.t" };
	assert_tables(&info->stmts[0], want, 2);
	sqlinfo_free(info);
}

Test(sqlinfo, keeps_schema_when_qualified)
{
	SqlInfo *info = parse_one("INSERT INTO audit.log SELECT * FROM mydb.public.events");
	cr_assert_str_eq(info->stmts[0].kind, "insert");
	cr_assert(info->stmts[0].writes);
	const char *want[] = { "audit.log", "mydb.public.events" };
	assert_tables(&info->stmts[0], want, 2);
	sqlinfo_free(info);
}

Test(sqlinfo, omits_cte_alias_when_defined_in_enclosing_with)
{
	SqlInfo *info = parse_one("WITH secret AS (SELECT 1 AS a) SELECT * FROM secret, public.secret");
	const char *want[] = { "public.secret" };
	assert_tables(&info->stmts[0], want, 1);
	sqlinfo_free(info);
}

Test(sqlinfo, lists_name_when_cte_is_not_in_scope)
{
	/* without RECURSIVE a CTE sees only the ones before it, and a subquery's
	 * own WITH is not visible outside it */
	SqlInfo *info = parse_one("WITH a AS (SELECT * FROM b), b AS (SELECT * FROM a) "
				  "SELECT * FROM (WITH z AS (SELECT 1) SELECT * FROM z) s, z");
	const char *want[] = { "b", "z" };
	assert_tables(&info->stmts[0], want, 2);
	sqlinfo_free(info);

	info = parse_one("WITH RECURSIVE r AS (SELECT 1 UNION ALL SELECT * FROM r) SELECT * FROM r");
	cr_assert_eq(info->stmts[0].tables.count, 0);
	sqlinfo_free(info);
}

Test(sqlinfo, lists_dml_target_when_it_shares_a_cte_name)
{
	SqlInfo *info = parse_one("WITH t AS (SELECT 1) DELETE FROM t WHERE true");
	const char *want[] = { "t" };
	assert_tables(&info->stmts[0], want, 1);
	sqlinfo_free(info);
}

Test(sqlinfo, lists_relations_when_named_as_strings)
{
	SqlInfo *info = parse_one("DROP TABLE IF EXISTS s.a, b CASCADE");
	const char *want[] = { "s.a", "b" };
	assert_tables(&info->stmts[0], want, 2);
	sqlinfo_free(info);

	info = parse_one("COMMENT ON COLUMN s.t.c IS 'x'");
	cr_assert(has_table(&info->stmts[0], "s.t"));
	sqlinfo_free(info);

	info = parse_one("CREATE TABLE child (id int REFERENCES parent (id), LIKE tmpl)");
	const char *want2[] = { "child", "parent", "tmpl" };
	assert_tables(&info->stmts[0], want2, 3);
	sqlinfo_free(info);
}

Test(sqlinfo, rejects_input_when_400kb_expression_nests_deeply)
{
	char *sql = deep_sum(400 * 1024);
	SqlInfo *info = sqlinfo_parse(sql, strlen(sql));
	cr_assert_not(info->ok);
	cr_assert_eq(info->nstmts, 0);
	cr_assert_not_null(strstr(info->error, "nested too deeply"), "%s", info->error);
	sqlinfo_free(info);
	free(sql);
}

Test(sqlinfo, rejects_input_when_nesting_passes_limit)
{
	/* each A_Expr level is two levels of the tree's JSON form */
	char *shallow = deep_sum(8 + 2 * 400);
	char *deep = deep_sum(8 + 2 * 600);
	SqlInfo *ok = sqlinfo_parse(shallow, strlen(shallow));
	SqlInfo *bad = sqlinfo_parse(deep, strlen(deep));
	cr_assert(ok->ok, "%s", ok->error ? ok->error : "");
	cr_assert_not(bad->ok);
	sqlinfo_free(ok);
	sqlinfo_free(bad);
	free(shallow);
	free(deep);

	char parens[30000];
	size_t n = 0;
	n += (size_t)sprintf(parens, "SELECT ");
	for (int i = 0; i < 12000; i++)
		parens[n++] = '(';
	parens[n] = '\0';
	SqlInfo *p = sqlinfo_parse(parens, n);
	cr_assert_not(p->ok);
	sqlinfo_free(p);
}

Test(sqlinfo, rejects_input_when_over_size_cap)
{
	size_t len = 2 * 1024 * 1024;
	char *sql = malloc(len + 1);
	memset(sql, ' ', len);
	memcpy(sql, "SELECT 1", 8);
	sql[len] = '\0';
	SqlInfo *info = sqlinfo_parse(sql, len);
	cr_assert_not(info->ok);
	cr_assert_not_null(strstr(info->error, "too large"), "%s", info->error);
	sqlinfo_free(info);
	free(sql);
}

Test(sqlinfo, rejects_input_when_syntax_is_wrong)
{
	SqlInfo *info = parse("SELECT * FORM t");
	cr_assert_not(info->ok);
	cr_assert_eq(info->nstmts, 0);
	cr_assert_not_null(strstr(info->error, "syntax error"), "%s", info->error);
	sqlinfo_free(info);

	/* a bad statement after a good one rejects the whole Query */
	info = parse("SELECT 1; DR/**/OP TABLE t");
	cr_assert_not(info->ok);
	cr_assert_eq(info->nstmts, 0);
	sqlinfo_free(info);
}

Test(sqlinfo, rejects_input_when_it_contains_nul)
{
	const char sql[] = "SELECT 1\0; DROP TABLE t";
	SqlInfo *info = sqlinfo_parse(sql, sizeof(sql) - 1);
	cr_assert_not(info->ok);
	sqlinfo_free(info);
}

Test(sqlinfo, rejects_input_when_utf8_is_invalid)
{
	SqlInfo *info = parse("SELECT * FROM \"a\xff\"");
	cr_assert_not(info->ok);
	sqlinfo_free(info);
}

Test(sqlinfo, fingerprint_matches_when_only_literals_differ)
{
	SqlInfo *a = parse_one("SELECT 1");
	SqlInfo *b = parse_one("select  2");
	SqlInfo *c = parse_one("SELECT 1 FROM t");
	cr_assert_eq(strlen(a->stmts[0].fingerprint), 16);
	cr_assert_str_eq(a->stmts[0].fingerprint, b->stmts[0].fingerprint);
	cr_assert_str_neq(a->stmts[0].fingerprint, c->stmts[0].fingerprint);
	sqlinfo_free(a);
	sqlinfo_free(b);
	sqlinfo_free(c);
}

Test(sqlinfo, normalized_has_no_literal_when_query_has_constants)
{
	SqlInfo *info = parse_one("SELECT * FROM users WHERE email = 'bob@example.com' AND id = 42");
	const char *n = info->stmts[0].normalized;
	cr_assert_null(strstr(n, "bob@example.com"), "%s", n);
	cr_assert_null(strstr(n, "42"), "%s", n);
	cr_assert_not_null(strstr(n, "$1"), "%s", n);
	cr_assert_not_null(strstr(n, "$2"), "%s", n);
	sqlinfo_free(info);
}

Test(sqlinfo, has_no_statements_when_empty)
{
	SqlInfo *info = parse("");
	cr_assert(info->ok);
	cr_assert_eq(info->nstmts, 0);
	sqlinfo_free(info);

	info = parse(" ; -- nothing\n ;");
	cr_assert(info->ok);
	cr_assert_eq(info->nstmts, 0);
	sqlinfo_free(info);
}

Test(sqlinfo, marks_transaction_control_when_begin_commit_rollback)
{
	SqlInfo *info = parse("BEGIN; SAVEPOINT s; ROLLBACK TO s; RELEASE s; COMMIT; ROLLBACK; "
			      "START TRANSACTION READ ONLY; END; SELECT 1");
	cr_assert(info->ok);
	const char *kinds[] = { "begin", "savepoint", "rollback_to", "release", "commit",
				"rollback", "begin", "commit", "select" };
	cr_assert_eq(info->nstmts, 9);
	for (int i = 0; i < 9; i++) {
		cr_assert_str_eq(info->stmts[i].kind, kinds[i], "statement %d", i);
		cr_assert_eq(info->stmts[i].is_transaction_control, i < 8);
		cr_assert_not(info->stmts[i].writes);
	}
	sqlinfo_free(info);
}

Test(sqlinfo, kind_follows_node_when_statement_is_utility)
{
	static const struct {
		const char *sql, *kind;
		bool writes;
	} cases[] = {
		{ "GRANT SELECT ON t TO bob", "grant", true },
		{ "REVOKE SELECT ON t FROM bob", "revoke", true },
		{ "GRANT admin TO bob", "grant", true },
		{ "SET search_path = evil", "set", false },
		{ "RESET ALL", "set", false },
		{ "SHOW search_path", "show", false },
		{ "COPY t FROM STDIN", "copy", true },
		{ "COPY t TO STDOUT", "copy", false },
		{ "COPY t TO '/tmp/x'", "copy", true },
		{ "COPY (DELETE FROM t RETURNING *) TO STDOUT", "copy", true },
		{ "ALTER TABLE t ADD COLUMN c int", "alter", true },
		{ "ALTER ROLE bob SUPERUSER", "alter", true },
		{ "CREATE INDEX ON t (a)", "create", true },
		{ "CREATE VIEW v AS SELECT * FROM t", "create", true },
		{ "CREATE ROLE eve", "create", true },
		{ "DROP ROLE eve", "drop", true },
		{ "TRUNCATE t", "truncate", true },
		{ "CALL p()", "call", true },
		{ "DO $$BEGIN DELETE FROM t; END$$", "do", true },
		{ "PREPARE p AS DELETE FROM t", "prepare", true },
		{ "PREPARE q AS SELECT * FROM t", "prepare", false },
		{ "EXECUTE q", "execute", false },
		{ "DEALLOCATE q", "deallocate", false },
		{ "LISTEN ch", "listen", false },
		{ "NOTIFY ch, 'x'", "notify", false },
		{ "UNLISTEN *", "unlisten", false },
		{ "VACUUM t", "vacuum", true },
		{ "ANALYZE t", "analyze", true },
		{ "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", "merge", true },
		{ "DECLARE c CURSOR FOR SELECT * FROM t", "declare", false },
		{ "FETCH 10 FROM c", "fetch", false },
		{ "CLOSE c", "close", false },
		{ "LOCK TABLE t", "lock", true },
		{ "SELECT * FROM t FOR UPDATE", "select", true },
		{ "SELECT 1;", "select", false },
		{ "DISCARD ALL", "discard", false },
		{ "LOAD 'x'", "load", true },
		{ "REFRESH MATERIALIZED VIEW mv", "refresh", true },
		{ "ALTER TABLE t RENAME TO u", "alter", true },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		SqlInfo *info = parse_one(cases[i].sql);
		cr_assert_str_eq(info->stmts[0].kind, cases[i].kind, "%s", cases[i].sql);
		cr_assert_eq(info->stmts[0].writes, cases[i].writes, "%s", cases[i].sql);
		cr_assert_not(info->stmts[0].is_transaction_control, "%s", cases[i].sql);
		sqlinfo_free(info);
	}
}

Test(sqlinfo, lists_functions_when_select_calls_them)
{
	SqlInfo *info = parse_one("SELECT f(1), pg_catalog.pg_read_file('x'), count(*) FROM t "
				  "WHERE g(a) IN (SELECT h())");
	const SqlStatement *st = &info->stmts[0];
	cr_assert_not(st->writes);
	cr_assert(strlist_contains(&st->functions, "f"));
	cr_assert(strlist_contains(&st->functions, "pg_catalog.pg_read_file"));
	cr_assert(strlist_contains(&st->functions, "count"));
	cr_assert(strlist_contains(&st->functions, "g"));
	cr_assert(strlist_contains(&st->functions, "h"));
	cr_assert_eq(st->functions.count, 5);
	sqlinfo_free(info);
}

Test(sqlinfo, returns_same_result_when_cached)
{
	/* SHOW has no shape (sqlshape.h): one cache entry per text */
	SqlInfoCache *cache = sqlinfo_cache_new(2);
	SqlInfo *a = sqlinfo_cache_get(cache, "SHOW aa1", 8);
	SqlInfo *b = sqlinfo_cache_get(cache, "SHOW aa1", 8);
	cr_assert(a->ok);
	cr_assert_eq(a, b);
	cr_assert_eq(a->refcount, 4);	/* the cache's, its last-text slot's and ours */
	sqlinfo_release(cache, a);
	sqlinfo_release(cache, b);
	cr_assert_eq(a->refcount, 2);

	/* a different text, even by one space, is another entry */
	SqlInfo *c = sqlinfo_cache_get(cache, "SHOW  aa1", 9);
	cr_assert_neq(c, a);
	sqlinfo_release(cache, c);
	sqlinfo_cache_free(cache);
}

Test(sqlinfo, evicts_least_recent_when_full)
{
	SqlInfoCache *cache = sqlinfo_cache_new(2);
	SqlInfo *a = sqlinfo_cache_get(cache, "SHOW aa1", 8);
	SqlInfo *b = sqlinfo_cache_get(cache, "SHOW aa2", 8);
	SqlInfo *a2 = sqlinfo_cache_get(cache, "SHOW aa1", 8);	/* a is now most recent */
	cr_assert_eq(a2, a);
	sqlinfo_release(cache, a2);
	SqlInfo *c = sqlinfo_cache_get(cache, "SHOW aa3", 8);	/* evicts b, not a */
	cr_assert_eq(b->refcount, 1);	/* only ours is left: b survives its eviction */
	cr_assert_str_eq(b->stmts[0].sql, "SHOW aa2");
	cr_assert_eq(a->refcount, 2);
	SqlInfo *b2 = sqlinfo_cache_get(cache, "SHOW aa2", 8);	/* reparsed; evicts a */
	cr_assert_neq(b2, b);
	cr_assert_str_eq(b2->stmts[0].sql, "SHOW aa2");
	cr_assert_eq(a->refcount, 1);
	sqlinfo_release(cache, a);
	sqlinfo_release(cache, b);
	sqlinfo_release(cache, b2);
	sqlinfo_release(cache, c);
	sqlinfo_cache_free(cache);
}

/* Statements that differ only in literals share one parse, but each keeps its own text. */
Test(sqlinfo, shares_a_parse_between_statements_of_one_shape)
{
	SqlInfoCache *cache = sqlinfo_cache_new(8);
	const char *t1 = "SELECT abalance FROM pgbench_accounts WHERE aid = 17;";
	const char *t2 = "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;";
	SqlInfo *a = sqlinfo_cache_get(cache, t1, strlen(t1));
	SqlInfo *b = sqlinfo_cache_get(cache, t2, strlen(t2));
	cr_assert(a->ok && b->ok);
	cr_assert_neq(a, b);
	cr_assert_eq(b->refcount, 2);	/* a clone: ours and the last-statement memo's */
	SqlInfo *b2 = sqlinfo_cache_get(cache, t2, strlen(t2));
	cr_assert_eq(b2, b);	/* asked again at once (policy, guard, ...): the same clone */
	sqlinfo_release(cache, b2);
	cr_assert_str_eq(b->stmts[0].sql, "SELECT abalance FROM pgbench_accounts WHERE aid = 4242");
	cr_assert_str_eq(b->stmts[0].kind, "select");
	cr_assert_eq(b->stmts[0].tables.count, 1);
	cr_assert_str_eq(b->stmts[0].tables.items[0], "pgbench_accounts");
	cr_assert_str_eq(sqlinfo_stmt_normalized(&b->stmts[0]),
			 "SELECT abalance FROM pgbench_accounts WHERE aid = $1");
	cr_assert_str_eq(sqlinfo_stmt_fingerprint(&b->stmts[0]), sqlinfo_stmt_fingerprint(&a->stmts[0]));
	sqlinfo_release(cache, a);
	sqlinfo_release(cache, b);
	sqlinfo_cache_free(cache);
}

static bool same_parse(SqlInfoCache *cache, const char *x, const char *y)
{
	SqlInfo *a = sqlinfo_cache_get(cache, x, strlen(x));
	SqlInfo *b = sqlinfo_cache_get(cache, y, strlen(y));
	/* a clone of a's parse makes its fingerprint only on demand; a parse of its own has one */
	bool same = a->ok && b->ok && b != a && b->nstmts == 1 && b->stmts[0].fingerprint == NULL;
	sqlinfo_release(cache, a);
	sqlinfo_release(cache, b);
	return same;
}

/* Where a literal's value matters to classification, statements never share a parse. */
Test(sqlinfo, no_shared_parse_where_a_value_matters)
{
	SqlInfoCache *cache = sqlinfo_cache_new(64);
	cr_assert(same_parse(cache, "SELECT * FROM t WHERE a = 'x'", "SELECT * FROM t WHERE a = 'y'"));
	/* ordinals are positions, not values */
	cr_assert(!same_parse(cache, "SELECT a, b FROM t ORDER BY 1", "SELECT a, b FROM t ORDER BY 2"));
	cr_assert(!same_parse(cache, "SELECT a, b FROM t GROUP BY a, 1", "SELECT a, b FROM t GROUP BY a, 2"));
	cr_assert(same_parse(cache, "SELECT a FROM t ORDER BY 1 LIMIT 5", "SELECT a FROM t ORDER BY 1 LIMIT 6"));
	/* LIMIT ALL and NULL are keywords, not literals */
	SqlInfo *lim = sqlinfo_cache_get(cache, "SELECT a FROM t LIMIT 5", 23);
	SqlInfo *all = sqlinfo_cache_get(cache, "SELECT a FROM t LIMIT ALL", 25);
	cr_assert(lim->stmts[0].has_limit);
	cr_assert(!all->stmts[0].has_limit);
	sqlinfo_release(cache, lim);
	sqlinfo_release(cache, all);
	/* kinds whose classification reads values are parsed as themselves */
	cr_assert(!same_parse(cache, "EXPLAIN (ANALYZE 'false') DELETE FROM t",
			      "EXPLAIN (ANALYZE 'true') DELETE FROM t"));
	cr_assert(!same_parse(cache, "SET standard_conforming_strings = 'on'",
			      "SET standard_conforming_strings = 'off'"));
	cr_assert(!same_parse(cache, "SELECT 1; SELECT 2", "SELECT 1; SELECT 3"));
	cr_assert(!same_parse(cache, "COPY t TO STDOUT", "COPY t TO STDOUT"));
	/* everything but a literal's value is part of the shape: comments, spacing, names */
	cr_assert(same_parse(cache, "SELECT 1 -- one", "SELECT 2 -- one"));
	cr_assert(!same_parse(cache, "SELECT 1 -- one", "SELECT 2 /* two */"));
	cr_assert(!same_parse(cache, "SELECT * FROM \"Secret\" WHERE a = 1",
			      "SELECT * FROM \"Public\" WHERE a = 1"));
	/* the scanner reports a U&"..." identifier as one byte long: its name still counts */
	cr_assert(!same_parse(cache, "SELECT * FROM U&\"secret\" WHERE a = 1",
			      "SELECT * FROM U&\"public\" WHERE a = 2"));
	/* UESCAPE's literal decides how the name reads: no shape (review finding) */
	cr_assert(!same_parse(cache, "SELECT * FROM U&\"x0073ecrets\" UESCAPE '!'",
			      "SELECT * FROM U&\"x0073ecrets\" UESCAPE 'x'"));
	/* text a full parse refuses (invalid UTF-8 in a literal) is never classified by a shape */
	cr_assert(same_parse(cache, "SELECT 'alias WE' T", "SELECT 'other' T"));
	SqlInfo *bad = sqlinfo_cache_get(cache, "SELECT 'ali\327s' T", 16);
	cr_assert(!bad->ok);
	sqlinfo_release(cache, bad);
	/* a literal and the ? operator are not the same shape */
	cr_assert(!same_parse(cache, "SELECT j 'x' k FROM t", "SELECT j ? k FROM t"));
	/* a text with a NUL byte never passes for a shape key */
	SqlInfo *nul = sqlinfo_cache_get(cache, "\0SELECT \0", 9);
	cr_assert(!nul->ok);
	sqlinfo_release(cache, nul);
	SqlInfo *u = sqlinfo_cache_get(cache, "SELECT * FROM U&\"d\\0061ta\" WHERE a = 3", 38);
	cr_assert(u->ok);
	cr_assert_str_eq(u->stmts[0].tables.items[0], "data");
	sqlinfo_release(cache, u);
	sqlinfo_cache_free(cache);
}

Test(sqlinfo, caches_failures_when_input_is_rejected)
{
	SqlInfoCache *cache = sqlinfo_cache_new(8);
	SqlInfo *a = sqlinfo_cache_get(cache, "SELEC 1", 7);
	SqlInfo *b = sqlinfo_cache_get(cache, "SELEC 1", 7);
	cr_assert_not(a->ok);
	cr_assert_eq(a, b);
	sqlinfo_release(cache, a);
	sqlinfo_release(cache, b);
	sqlinfo_cache_free(cache);
}

Test(sqlinfo, skips_cache_when_text_is_large)
{
	SqlInfoCache *cache = sqlinfo_cache_new(8);
	size_t len = SQLINFO_CACHE_MAX_KEY + 100;
	char *sql = malloc(len + 1);
	memset(sql, ' ', len);
	memcpy(sql, "SELECT 1", 8);
	sql[len] = '\0';
	SqlInfo *a = sqlinfo_cache_get(cache, sql, len);
	SqlInfo *b = sqlinfo_cache_get(cache, sql, len);
	cr_assert(a->ok);
	cr_assert_neq(a, b);
	cr_assert_eq(a->refcount, 1);
	sqlinfo_release(cache, a);
	sqlinfo_release(cache, b);
	sqlinfo_cache_free(cache);
	free(sql);
}

Test(sqlinfo, keeps_pthread_keys_when_parsing_many_times)
{
	/* libpg_query takes a pthread key per thread that calls it: parsing on a
	 * fresh thread each time would exhaust PTHREAD_KEYS_MAX (1024) */
	for (int i = 0; i < 1500; i++) {
		SqlInfo *info = sqlinfo_parse("SELECT 1", 8);
		cr_assert(info->ok);
		sqlinfo_free(info);
	}
	pthread_key_t key;
	cr_assert_eq(pthread_key_create(&key, NULL), 0);
	pthread_key_delete(key);
}

static void *parse_many(void *arg)
{
	const char *sql = arg;
	for (int i = 0; i < 100; i++) {
		SqlInfo *info = sqlinfo_parse(sql, strlen(sql));
		if (!info->ok || info->nstmts != 1 || !strlist_contains(&info->stmts[0].tables, "t")) {
			sqlinfo_free(info);
			return (void *)1;
		}
		sqlinfo_free(info);
	}
	return NULL;
}

Test(sqlinfo, classifies_correctly_when_threads_parse_at_once)
{
	pthread_t tids[4];
	const char *sqls[] = { "SELECT * FROM t", "DELETE FROM t", "WITH c AS (SELECT 1) SELECT * FROM t, c",
			       "UPDATE t SET a = 1" };
	for (int i = 0; i < 4; i++)
		cr_assert_eq(pthread_create(&tids[i], NULL, parse_many, (void *)sqls[i]), 0);
	for (int i = 0; i < 4; i++) {
		void *rc;
		pthread_join(tids[i], &rc);
		cr_assert_null(rc, "thread %d", i);
	}
}

Test(sqlinfo, has_limit_only_for_a_bounding_top_level_limit)
{
	const char *cases[][2] = {
		{ "select * from t limit 10", "1" },
		{ "select * from t fetch first 5 rows only", "1" },
		{ "select * from t", "0" },
		{ "select * from t limit all", "0" },
		{ "select * from (select * from t limit 1) s", "0" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		SqlInfo *info = sqlinfo_parse(cases[i][0], strlen(cases[i][0]));
		cr_assert(info->ok, "%s", cases[i][0]);
		cr_assert_eq(info->stmts[0].has_limit, cases[i][1][0] == '1', "%s", cases[i][0]);
		sqlinfo_free(info);
	}
}

/* A shared parse carries the column flow too: masking judges the clone as the original. */
Test(sqlinfo, shared_parse_keeps_the_column_flow)
{
	SqlInfoCache *cache = sqlinfo_cache_new(8);
	const char *t1 = "SELECT lower(email), name FROM people WHERE id = 1";
	const char *t2 = "SELECT lower(email), name FROM people WHERE id = 2";
	SqlInfo *a = sqlinfo_cache_get(cache, t1, strlen(t1));
	SqlInfo *b = sqlinfo_cache_get(cache, t2, strlen(t2));
	cr_assert(a->ok && b->ok);
	cr_assert_eq(b->refcount, 2);
	cr_assert_gt(a->stmts[0].exposed.count, 0);
	cr_assert_eq(b->stmts[0].exposed.count, a->stmts[0].exposed.count);
	for (int i = 0; i < a->stmts[0].exposed.count; i++)
		cr_assert_str_eq(b->stmts[0].exposed.items[i], a->stmts[0].exposed.items[i]);
	cr_assert_eq(b->stmts[0].bare.count, a->stmts[0].bare.count);
	cr_assert_eq(b->shared, a);	/* shared, not copied */
	cr_assert_str_eq(b->stmts[0].sql, t2);	/* but the text is its own */
	/* b keeps what it shares alive after the cache and every other holder let go */
	int n = b->stmts[0].exposed.count;
	sqlinfo_release(cache, a);
	sqlinfo_cache_free(cache);
	cr_assert_eq(a->refcount, 1);
	cr_assert_eq(b->stmts[0].exposed.count, n);
	cr_assert_str_eq(b->stmts[0].tables.items[0], "people");
	cr_assert_str_eq(b->stmts[0].kind, "select");
	sqlinfo_release(NULL, b);
}

/* Transaction pooling: what a statement leaves on the session after its transaction. */
static void assert_session_state(const char *sql, const char *want, const char *setting)
{
	SqlInfo *info = parse_one(sql);
	const SqlStatement *st = &info->stmts[0];
	if (!want)
		cr_assert_null(st->session_state, "%s: unexpected %s", sql, st->session_state);
	else
		cr_assert(st->session_state && strcmp(st->session_state, want) == 0, "%s: got %s", sql,
			  st->session_state ? st->session_state : "(none)");
	if (setting)
		cr_assert(st->setting && strcmp(st->setting, setting) == 0, "%s: setting %s", sql,
			  st->setting ? st->setting : "(none)");
	sqlinfo_free(info);
}

Test(sqlinfo, session_state_of_statements_that_outlive_their_transaction)
{
	assert_session_state("SET work_mem = '8MB'", "SET", "work_mem");
	assert_session_state("set   Search_Path TO x", "SET", "search_path");
	assert_session_state("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", "SET", NULL);
	assert_session_state("SET ROLE bob", "SET", "role");
	assert_session_state("PREPARE p AS SELECT 1", "PREPARE", NULL);
	assert_session_state("LISTEN chan", "LISTEN", NULL);
	assert_session_state("select pg_advisory_lock(1)", "session advisory lock", NULL);
	assert_session_state("select pg_catalog.pg_try_advisory_lock_shared(1, 2)",
			     "session advisory lock", NULL);
	assert_session_state("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "WITH HOLD cursor", NULL);
	assert_session_state("CREATE TEMP TABLE t (a int)", "temporary table", NULL);
	assert_session_state("CREATE TEMPORARY VIEW v AS SELECT 1", "temporary table", NULL);
	assert_session_state("SELECT 1 INTO TEMP t2", "temporary table", NULL);
	assert_session_state("CREATE TEMP TABLE t3 AS SELECT 1", "temporary table", NULL);
	assert_session_state("select set_config('a.b', 'c', false)", "set_config(..., false)", NULL);
	assert_session_state("select set_config('a.b', 'c', $1)", "set_config(..., false)", NULL);
	assert_session_state("select 1 from (select set_config('a.b','c',false)) s",
			     "set_config(..., false)", NULL);
}

Test(sqlinfo, no_session_state_for_transaction_scoped_statements)
{
	assert_session_state("SET LOCAL work_mem = '8MB'", NULL, NULL);
	assert_session_state("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", NULL, NULL);
	assert_session_state("RESET work_mem", NULL, NULL);
	assert_session_state("SET work_mem TO DEFAULT", NULL, NULL);
	assert_session_state("select set_config('a.b', 'c', true)", NULL, NULL);
	assert_session_state("select pg_advisory_xact_lock(1)", NULL, NULL);
	assert_session_state("CREATE TEMP TABLE t (a int) ON COMMIT DROP", NULL, NULL);
	assert_session_state("DECLARE c CURSOR FOR SELECT 1", NULL, NULL);
	assert_session_state("UPDATE t SET a = 1 WHERE b = 'LISTEN prepare temp'", NULL, NULL);
	assert_session_state("CREATE TABLE not_temp (a int)", NULL, NULL);
}

Test(sqlinfo, deallocate_targets)
{
	SqlInfo *info = parse("DEALLOCATE s1; DEALLOCATE ALL; DISCARD ALL; DISCARD PLANS");
	cr_assert(info->ok);
	cr_assert_eq(info->nstmts, 4);
	cr_assert_str_eq(info->stmts[0].deallocate_name, "s1");
	cr_assert(!info->stmts[0].deallocates_all);
	cr_assert_null(info->stmts[1].deallocate_name);
	cr_assert(info->stmts[1].deallocates_all);
	cr_assert(info->stmts[2].deallocates_all);
	cr_assert(!info->stmts[3].deallocates_all);
	sqlinfo_free(info);
}

Test(sqlinfo, shallow_parse_classifies_without_fingerprint)
{
	SqlInfo *info = sqlinfo_parse_shallow("SET work_mem = 1; select pg_advisory_lock(1)", 44);
	cr_assert(info->ok);
	cr_assert_eq(info->nstmts, 2);
	cr_assert_str_eq(info->stmts[0].session_state, "SET");
	cr_assert_str_eq(info->stmts[1].session_state, "session advisory lock");
	cr_assert_null(info->stmts[0].fingerprint);
	cr_assert_null(info->stmts[0].normalized);
	sqlinfo_free(info);
}

/* The deepest trees SQLINFO_INLINE_MAX bytes can express, parsed on a 512 KB stack. */
static void *parse_deep_inline(void *arg)
{
	const char *const shapes[][3] = {
		{ "select ", "1+", "1" },
		{ "select ", "(", "1" },
		{ "select ", "-", "1" },
		{ "select ", "not ", "true" },
		{ "select ", "(select ", "1" },
		{ "select ", "array[", "1" },
		{ "select ", "f(", "1" },
	};
	char sql[SQLINFO_INLINE_MAX + 1];
	for (size_t i = 0; i < ARRAY_SIZE(shapes); i++) {
		size_t n = 0;
		n += (size_t)snprintf(sql, sizeof(sql), "%s", shapes[i][0]);
		size_t unit = strlen(shapes[i][1]), tail = strlen(shapes[i][2]);
		while (n + unit + tail < SQLINFO_INLINE_MAX) {
			memcpy(sql + n, shapes[i][1], unit);
			n += unit;
		}
		memcpy(sql + n, shapes[i][2], tail);
		n += tail;
		sql[n] = '\0';
		SqlInfo *info = sqlinfo_parse_shallow(sql, n);	/* unbalanced ones fail: fine */
		sqlinfo_free(info);
	}
	return NULL;
}

Test(sqlinfo, shallow_inline_parse_fits_a_small_stack)
{
	pthread_attr_t attr;
	pthread_t t;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 512 * 1024);
	cr_assert_eq(pthread_create(&t, &attr, parse_deep_inline, NULL), 0);
	pthread_join(t, NULL);
	pthread_attr_destroy(&attr);
}

/* The memo's shapes are the scanner's, for a text and for the same text with other digits. */
static void shape_agrees(ShapeMemo *memo, const char *sql)
{
	SqlShape a, b;
	bool sa = sqlshape_of(sql, strlen(sql), &a);
	bool sb = sqlshape_of_memo(memo, sql, strlen(sql), &b);
	cr_assert_eq(sa, sb, "%s", sql);
	if (sa) {
		cr_assert_eq(a.key_len, b.key_len, "%s", sql);
		cr_assert(memcmp(a.key, b.key, a.key_len) == 0, "%s", sql);
		cr_assert_eq(a.stmt_end, b.stmt_end, "%s", sql);
	}
	sqlshape_free(&a);
	sqlshape_free(&b);
}

Test(sqlshape, memo_agrees_with_the_scanner)
{
	static const char *const pairs[][2] = {
		{ "SELECT abalance FROM pgbench_accounts WHERE aid = 123;",
		  "SELECT abalance FROM pgbench_accounts WHERE aid = 4567890;" },
		{ "SELECT * FROM t1 WHERE id = 5 ORDER BY 2", "SELECT * FROM t1 WHERE id = 77 ORDER BY 2" },
		{ "SELECT * FROM t WHERE id = 5 ORDER BY 2", "SELECT * FROM t WHERE id = 5 ORDER BY 3" },
		{ "SELECT * FROM t WHERE x = 1.5", "SELECT * FROM t WHERE x = 2.5" },
		{ "SELECT * FROM t WHERE x = 15", "SELECT * FROM t WHERE x = 1.5" },
		{ "SELECT * FROM t WHERE x = 15", "SELECT * FROM t WHERE x = 1e5" },
		{ "SELECT * FROM t WHERE x = 15", "SELECT * FROM t WHERE x = 1 OR 1=1" },
		{ "SELECT * FROM t WHERE x = 15", "SELECT * FROM t WHERE x = 15; DROP TABLE t" },
		{ "SELECT * FROM t WHERE x = 15 -- 1", "SELECT * FROM t WHERE x = 16 -- 2" },
		{ "SELECT * FROM t WHERE s = 'a1' AND x = 3", "SELECT * FROM t WHERE s = 'a2' AND x = 4" },
		{ "SELECT * FROM t WHERE s = 'ab' AND x = 3", "SELECT * FROM t WHERE s = 'ab' AND x = 4" },
		{ "SELECT * FROM t LIMIT 10", "SELECT * FROM t LIMIT 99999999999999999999" },
		{ "SELECT * FROM t WHERE x = -5", "SELECT * FROM t WHERE x = -6" },
		{ "SELECT * FROM t WHERE x = $1 AND y = 2", "SELECT * FROM t WHERE x = $1 AND y = 3" },
		{ "SELECT * FROM t WHERE x = 0x1F", "SELECT * FROM t WHERE x = 0x2F" },
		{ "SELECT * FROM t WHERE x = 1_000", "SELECT * FROM t WHERE x = 2_000" },
		{ "SELECT * FROM t WHERE x = 5abc", "SELECT * FROM t WHERE x = 6abc" },
		{ "INSERT INTO t VALUES (1, 'x', 2.0)", "INSERT INTO t VALUES (22, 'x', 2.0)" },
		{ "SELECT U&'\\0041' FROM t WHERE x = 1", "SELECT U&'\\0041' FROM t WHERE x = 2" },
		{ "SELECT E'\\n' FROM t WHERE x = 1", "SELECT E'\\n' FROM t WHERE x = 2" },
		{ "SELECT $$a1$$, 1 FROM t", "SELECT $$a1$$, 2 FROM t" },
		{ "SET x = 1", "SET x = 2" },
		{ "SELECT 1", "SELECT 2" },
	};
	ShapeMemo *memo = sqlshape_memo_new();
	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		shape_agrees(memo, pairs[i][0]);
		shape_agrees(memo, pairs[i][1]);
		shape_agrees(memo, pairs[i][0]);
	}
	sqlshape_memo_free(memo);
}

Test(sqlshape, memo_answers_a_digit_variant_with_the_first_ones_key)
{
	ShapeMemo *memo = sqlshape_memo_new();
	SqlShape a, b;
	const char *x = "SELECT abalance FROM pgbench_accounts WHERE aid = 1;";
	const char *y = "SELECT abalance FROM pgbench_accounts WHERE aid = 123456;";
	cr_assert(sqlshape_of_memo(memo, x, strlen(x), &a));
	cr_assert(sqlshape_of_memo(memo, y, strlen(y), &b));
	cr_assert_eq(a.key_len, b.key_len);
	cr_assert(memcmp(a.key, b.key, a.key_len) == 0);
	cr_assert_eq(b.stmt_end, strlen(y) - 1, "without the final ';'");
	sqlshape_free(&a);
	sqlshape_free(&b);
	sqlshape_memo_free(memo);
}

/* policy cost 2: a memo with a hasher gives each shape its key's hash, scanned or remembered. */
static uint64_t test_key_hash(const void *arg, const char *key, size_t len)
{
	uint64_t h = (uint64_t)(uintptr_t)arg;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)key[i]) * 1099511628211ULL;
	return h;
}

Test(sqlshape, memo_hashes_each_key_with_its_owners_hasher)
{
	ShapeMemo *memo = sqlshape_memo_new();
	SqlShape a, b, c;
	const char *x = "SELECT abalance FROM pgbench_accounts WHERE aid = 1;";
	const char *y = "SELECT abalance FROM pgbench_accounts WHERE aid = 123456;";
	cr_assert(sqlshape_of_memo(memo, x, strlen(x), &a));
	cr_assert_not(a.has_hash, "no hasher: no hash");
	sqlshape_free(&a);
	sqlshape_memo_set_hasher(memo, test_key_hash, (const void *)(uintptr_t)7);
	cr_assert(sqlshape_of_memo(memo, x, strlen(x), &a));	/* scanned again */
	cr_assert(sqlshape_of_memo(memo, y, strlen(y), &b));	/* from the memo */
	cr_assert(sqlshape_of_memo(memo, y, strlen(y), &c));
	cr_assert(a.has_hash && b.has_hash && c.has_hash);
	cr_assert_eq(a.key_hash, test_key_hash((const void *)(uintptr_t)7, a.key, a.key_len));
	cr_assert_eq(b.key_hash, a.key_hash);
	cr_assert_eq(c.key_hash, a.key_hash);
	sqlshape_free(&a);
	sqlshape_free(&b);
	sqlshape_free(&c);
	sqlshape_memo_free(memo);
}

/* policy cost 2: the memo's shape is tried before the text; an evicted shape falls back to a parse. */
Test(sqlinfo, shape_from_the_memo_first_and_after_its_eviction)
{
	SqlInfoCache *cache = sqlinfo_cache_new(2);
	const char *t1 = "SELECT abalance FROM pgbench_accounts WHERE aid = 17;";
	const char *t2 = "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;";
	SqlInfo *a = sqlinfo_cache_get(cache, t1, strlen(t1));	/* parsed: text and shape entries */
	SqlInfo *b = sqlinfo_cache_get(cache, t2, strlen(t2));	/* the shape's, a clone */
	SqlInfo *a2 = sqlinfo_cache_get(cache, t1, strlen(t1));	/* the shape's again, for t1 */
	cr_assert(a->ok && b->ok && a2->ok);
	cr_assert_neq(a2, a);
	cr_assert_eq(a2->stmts[0].tables.count, 1);
	cr_assert_str_eq(a2->stmts[0].sql, "SELECT abalance FROM pgbench_accounts WHERE aid = 17");
	cr_assert_str_eq(sqlinfo_stmt_fingerprint(&a2->stmts[0]), sqlinfo_stmt_fingerprint(&a->stmts[0]));
	sqlinfo_release(cache, a2);
	/* two other texts push both entries out; the memo still knows the shape */
	SqlInfo *x = sqlinfo_cache_get(cache, "SHOW aa1", 8);
	SqlInfo *y = sqlinfo_cache_get(cache, "SHOW aa2", 8);
	sqlinfo_release(cache, x);
	sqlinfo_release(cache, y);
	const char *t3 = "SELECT abalance FROM pgbench_accounts WHERE aid = 99;";
	SqlInfo *c = sqlinfo_cache_get(cache, t3, strlen(t3));
	cr_assert(c->ok);
	cr_assert_str_eq(c->stmts[0].kind, "select");
	cr_assert_str_eq(c->stmts[0].sql, "SELECT abalance FROM pgbench_accounts WHERE aid = 99");
	cr_assert_not_null(c->stmts[0].fingerprint, "parsed as itself: the shape was evicted");
	SqlInfo *d = sqlinfo_cache_get(cache, t2, strlen(t2));	/* the new shape entry serves */
	cr_assert(d->ok);
	cr_assert_neq(d, c);
	cr_assert_null(d->stmts[0].fingerprint, "a clone makes its fingerprint on demand");
	cr_assert_str_eq(d->stmts[0].sql, "SELECT abalance FROM pgbench_accounts WHERE aid = 4242");
	sqlinfo_release(cache, d);
	sqlinfo_release(cache, c);
	sqlinfo_release(cache, a);
	sqlinfo_release(cache, b);
	sqlinfo_cache_free(cache);
}

/* policy cost 4: a remembered shape lends the memo's key; a scanned one owns its own. */
Test(sqlshape, memo_lends_its_key_and_a_scan_owns_its_own)
{
	ShapeMemo *memo = sqlshape_memo_new();
	SqlShape a, b;
	const char *x = "SELECT abalance FROM pgbench_accounts WHERE aid = 1;";
	const char *y = "SELECT abalance FROM pgbench_accounts WHERE aid = 123456;";
	cr_assert(sqlshape_of_memo(memo, x, strlen(x), &a));
	cr_assert(a.owned && a.owned == a.key, "scanned: the key is its own");
	cr_assert(sqlshape_of_memo(memo, y, strlen(y), &b));
	cr_assert_null(b.owned, "remembered: the key is the memo's");
	cr_assert(b.key != a.key, "the memo keeps a copy, not the scan's own key");
	cr_assert(memcmp(a.key, b.key, a.key_len) == 0);
	sqlshape_free(&a);	/* the memo's key outlives the scan's */
	cr_assert(memcmp(b.key, "\0SELECT abalance", 16) == 0);
	sqlshape_free(&b);
	cr_assert_null(b.key);
	sqlshape_memo_free(memo);
}

/* policy cost 4: a clone is one block (result, statement, text) and outlives the cache's entries. */
Test(sqlinfo, a_clone_is_one_block_and_outlives_its_template_entry)
{
	SqlInfoCache *cache = sqlinfo_cache_new(1);
	const char *t1 = "  SELECT abalance FROM pgbench_accounts WHERE aid = 17 ; ";
	const char *t2 = "  SELECT abalance FROM pgbench_accounts WHERE aid = 4242 ; ";
	SqlInfo *a = sqlinfo_cache_get(cache, t1, strlen(t1));
	SqlInfo *b = sqlinfo_cache_get(cache, t2, strlen(t2));
	cr_assert(b->one_block && b->shared && !a->one_block);
	const char *end_of_info = (const char *)(b + 1);
	cr_assert((const char *)b->stmts >= end_of_info &&
		  (const char *)b->stmts < end_of_info + 16, "the statement follows the result");
	cr_assert(b->stmts[0].sql >= (const char *)(b->stmts + 1) &&
		  b->stmts[0].sql < (const char *)(b->stmts + 1) + 16, "the text follows the statement");
	cr_assert_str_eq(b->stmts[0].sql, "SELECT abalance FROM pgbench_accounts WHERE aid = 4242");
	sqlinfo_release(cache, a);
	SqlInfo *other = sqlinfo_cache_get(cache, "SHOW aa1", 8);	/* evicts the template's entry */
	sqlinfo_release(cache, other);
	cr_assert_str_eq(b->stmts[0].tables.items[0], "pgbench_accounts");
	cr_assert_str_eq(sqlinfo_stmt_normalized(&b->stmts[0]),
			 "SELECT abalance FROM pgbench_accounts WHERE aid = $1");
	sqlinfo_release(cache, b);
	sqlinfo_cache_free(cache);
}

/* policy cost 4: the last hit is tried first, and a text it does not fit still finds its own. */
Test(sqlshape, memo_tries_the_last_hit_first_and_still_tells_shapes_apart)
{
	ShapeMemo *memo = sqlshape_memo_new();
	static const char *const texts[] = {
		"SELECT a FROM t WHERE id = 1", "SELECT b FROM t WHERE id = 1",
		"SELECT a FROM t WHERE id = 22", "SELECT b FROM t WHERE id = 333",
		"SELECT a FROM t WHERE id = 4444", "SELECT a FROM t WHERE id = 'x'",
		"SELECT a FROM t WHERE id = 5", "SELECT a FROM t WHERE id = 5 ", "SELECT b FROM t WHERE id = 6",
	};
	for (int round = 0; round < 2; round++)
		for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
			shape_agrees(memo, texts[i]);
	sqlshape_memo_free(memo);
}
