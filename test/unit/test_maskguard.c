/*
 * The statement-time half of masking: a protected column may leave only as a
 * plain result column; every other path is denied. Pure C over the parse tree
 * (colflow.c) and the P.masks keys (maskguard.c), no server.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "src/maskguard.h"

static StrList keys;
static StrList views;

static void setup(void)
{
	memset(&keys, 0, sizeof(keys));
	memset(&views, 0, sizeof(views));
	strlist_add(&keys, "people.email");
	strlist_add(&keys, "hr.staff.salary");
	strlist_add(&keys, "*.ssn");
	strlist_add(&views, "public.people_v");
	strlist_add(&views, "people_v");
}

static void teardown(void)
{
	strlist_free(&keys);
	strlist_free(&views);
}

static MaskGuardResult judge_with(const char *sql, bool views_unknown)
{
	SqlInfo *info = sqlinfo_parse(sql, strlen(sql));
	cr_assert(info->ok, "%s: %s", sql, info->error ? info->error : "");
	MaskGuardResult r;
	maskguard_check(&keys, &views, views_unknown, info, &r);
	sqlinfo_free(info);
	return r;
}

static void expect(const char *sql, bool deny)
{
	MaskGuardResult r = judge_with(sql, false);
	cr_expect_eq(r.deny, deny, "%s: expected %s (%s)", sql, deny ? "deny" : "allow",
		     r.reason ? r.reason : "no reason");
	if (deny)
		cr_expect(r.reason && *r.reason, "%s: a denial says why", sql);
	maskguard_result_free(&r);
}

TestSuite(maskguard, .init = setup, .fini = teardown);

Test(maskguard, plain_references_pass)
{
	static const char *const ok[] = {
		"SELECT email FROM people",
		"SELECT * FROM people",
		"SELECT p.* FROM people p",
		"SELECT email AS e FROM people p WHERE lower(email) = 'x'",
		"SELECT e FROM (SELECT email AS e FROM people) s",
		"WITH x AS (SELECT email FROM people) SELECT email FROM x",
		"SELECT email FROM people ORDER BY lower(email) LIMIT 3",
		"SELECT email, count(*) FROM people GROUP BY email HAVING count(*) > 1",
		"SELECT email FROM people WHERE id IN (SELECT id FROM people WHERE email LIKE 'a%')",
		"INSERT INTO people (id, email) VALUES (1, 'a@b') RETURNING email",
		"UPDATE people SET name = 'x' WHERE email = 'a@b' RETURNING email",
		"DELETE FROM people WHERE email = 'a@b' RETURNING email",
		"DECLARE c CURSOR FOR SELECT email FROM people",
		"PREPARE p AS SELECT email FROM people WHERE id = $1",
		"SELECT count(*) FROM people",
		"SELECT lower(name) FROM orders",
		"SELECT o.ssn FROM orders o",
		"COPY orders (id, total) TO STDOUT",
		"COPY people FROM STDIN",
		"SELECT salary FROM hr.staff",
		"ALTER TABLE people RENAME COLUMN name TO full_name",
		"ALTER TABLE orders RENAME TO orders2",
		"ALTER TABLE people ADD COLUMN z int",
		"ALTER SCHEMA sales RENAME TO sales2",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		expect(ok[i], false);
}

Test(maskguard, every_other_path_denied)
{
	static const char *const bad[] = {
		"SELECT lower(email) FROM people",
		"SELECT email::text FROM people",
		"SELECT email || '' FROM people",
		"SELECT string_agg(email, ',') FROM people",
		"SELECT row_to_json(p) FROM people p",
		"SELECT json_agg(people) FROM people",
		"SELECT to_jsonb(p.*) FROM people p",
		"SELECT p FROM people p",
		"SELECT (SELECT email FROM people LIMIT 1)",
		"SELECT lower(e) FROM (SELECT email AS e FROM people) s",
		"SELECT lower(e2) FROM (SELECT e AS e2 FROM (SELECT email AS e FROM people) a) b",
		"SELECT upper(a) FROM (SELECT email FROM people) s(a)",
		"WITH x(a) AS (SELECT email FROM people) SELECT upper(a) FROM x",
		"SELECT x FROM people p, LATERAL (SELECT lower(p.email) AS x) s",
		"SELECT * FROM people p, jsonb_each(to_jsonb(p)) j",
		"SELECT * FROM people UNION SELECT * FROM orders",
		"SELECT lower(email) FROM people UNION SELECT name FROM orders",
		"SELECT e FROM (SELECT email AS e FROM people) s UNION SELECT name FROM orders",
		"SELECT x FROM (SELECT email FROM people UNION SELECT name FROM orders) s(x)",
		"PREPARE p AS SELECT email FROM people UNION SELECT name FROM orders",
		"SELECT 1; SELECT email FROM people UNION SELECT name FROM orders",
		"SELECT email FROM people UNION SELECT ssn FROM orders",
		"ALTER TABLE people RENAME COLUMN email TO e2",
		"ALTER TABLE orders RENAME COLUMN ssn TO s",
		"ALTER TABLE people RENAME TO people2",
		"ALTER TABLE hr.staff SET SCHEMA public",
		"ALTER SCHEMA hr RENAME TO hr2",
		"ALTER TABLE people ALTER COLUMN email TYPE int USING email::int",
		"ALTER TABLE people ADD COLUMN z int GENERATED ALWAYS AS (length(email)) STORED",
		"VALUES ((SELECT email FROM people LIMIT 1))",
		"COPY people TO STDOUT",
		"COPY (SELECT email FROM people) TO STDOUT",
		"COPY orders TO STDOUT",
		"INSERT INTO orders SELECT email FROM people",
		"UPDATE orders SET note = (SELECT email FROM people LIMIT 1)",
		"CREATE TABLE t AS SELECT email FROM people",
		"SELECT email INTO t FROM people",
		"CREATE VIEW v AS SELECT email FROM people",
		"SELECT lower(ssn) FROM orders",
		"SELECT row_to_json(o) FROM orders o",
		"SELECT salary + 1 FROM hr.staff",
		"SELECT salary + 1 FROM staff",
		"SELECT query_to_xml('select email from people', true, false, '')",
		"SELECT dblink('x', 'select 1')",
		"DO $$ BEGIN PERFORM 1; END $$",
		"CREATE FUNCTION f() RETURNS text LANGUAGE sql AS 'select email from people'",
		"SELECT * FROM people_v",
		"SELECT 1 FROM public.people_v",
		"EXPLAIN ANALYZE CREATE TABLE t AS SELECT email FROM people",
		"SELECT 1; SELECT lower(email) FROM people",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect(bad[i], true);
}

Test(maskguard, other_schema_of_a_qualified_key_passes)
{
	expect("SELECT salary + 1 FROM payroll.staff", false);
	expect("SELECT email || '' FROM other.customers", false);
}

Test(maskguard, sensitive_only_when_a_protected_table_is_named)
{
	MaskGuardResult r = judge_with("SELECT email FROM people", false);
	cr_expect(r.sensitive && !r.deny);
	maskguard_result_free(&r);
	strlist_free(&keys);
	strlist_add(&keys, "people.email");
	r = judge_with("SELECT note FROM orders", false);
	cr_expect(!r.sensitive && !r.deny);
	maskguard_result_free(&r);
}

Test(maskguard, unknown_views_fail_closed_for_computed_values)
{
	MaskGuardResult r = judge_with("SELECT lower(mail) FROM some_view", true);
	cr_expect(r.deny);
	maskguard_result_free(&r);
	r = judge_with("SELECT mail FROM some_view", true);
	cr_expect(!r.deny, "plain references are checked again at RowDescription time");
	maskguard_result_free(&r);
}

Test(maskguard, no_keys_no_verdict)
{
	StrList none = { 0 };
	SqlInfo *info = sqlinfo_parse("SELECT lower(email) FROM people", 31);
	MaskGuardResult r;
	maskguard_check(&none, NULL, true, info, &r);
	cr_expect(!r.deny && !r.sensitive);
	sqlinfo_free(info);
}

Test(maskguard, column_protected_by_catalog_names)
{
	cr_expect(maskguard_column_protected(&keys, "public", "people", "email"));
	cr_expect(maskguard_column_protected(&keys, "other", "people", "email"));
	cr_expect(maskguard_column_protected(&keys, "hr", "staff", "salary"));
	cr_expect(!maskguard_column_protected(&keys, "public", "staff", "salary"));
	cr_expect(maskguard_column_protected(&keys, "x", "anything", "ssn"));
	cr_expect(!maskguard_column_protected(&keys, "public", "people", "name"));
}

Test(maskguard, set_operation_masked_by_position)
{
	MaskGuardResult r = judge_with("SELECT id, email FROM people UNION ALL "
				       "SELECT id, name FROM orders UNION SELECT ssn, 'x' FROM orders", false);
	cr_assert(!r.deny, "%s", r.reason ? r.reason : "");
	cr_expect_eq(r.hints.count, 2);
	cr_expect(strlist_contains(&r.hints, "1\tpeople\temail"));
	cr_expect(strlist_contains(&r.hints, "0\t*\tssn"));
	maskguard_result_free(&r);
	r = judge_with("SELECT salary FROM hr.staff EXCEPT SELECT 0", false);
	cr_expect(!r.deny && r.hints.count == 1 && strcmp(r.hints.items[0], "0\thr.staff\tsalary") == 0);
	maskguard_result_free(&r);
	r = judge_with("SELECT id FROM people UNION SELECT id FROM orders", false);
	cr_expect(!r.deny && r.hints.count == 0);
	maskguard_result_free(&r);
}

/* ---- the memo (maskguard_check_memo) ---------------------------------- */

/* One judging through the memo, on a cached parse (shared by statements of one shape). */
static MaskGuardResult judge_memo(SqlInfoCache *cache, const StrList *k, uint64_t gen,
				  const StrList *v, bool views_unknown, const char *sql)
{
	SqlInfo *info = sqlinfo_cache_get(cache, sql, strlen(sql));
	cr_assert(info->ok, "%s: %s", sql, info->error ? info->error : "");
	MaskGuardResult r;
	maskguard_check_memo(k, gen, v, views_unknown, info, &r);
	sqlinfo_release(cache, info);
	return r;
}

/* Does judging sql through the memo deny it? (The result is freed.) */
static bool memo_denies(SqlInfoCache *cache, const StrList *k, uint64_t gen, const StrList *v,
			bool views_unknown, const char *sql)
{
	MaskGuardResult r = judge_memo(cache, k, gen, v, views_unknown, sql);
	bool deny = r.deny;
	maskguard_result_free(&r);
	return deny;
}

/* Every statement, judged twice through the memo, gets the verdict of the plain check. */
Test(maskguard, memo_agrees_with_the_check)
{
	static const char *const sqls[] = {
		"SELECT email FROM people WHERE id = 1",
		"SELECT email FROM people WHERE id = 2",	/* same shape: the memo's hit */
		"SELECT lower(email) FROM people",
		"SELECT name FROM orders",
		"SELECT lower(name) FROM orders",
		"SELECT p FROM people p",
		"SELECT email FROM people_v",
		"SELECT id, email FROM people UNION SELECT id, name FROM orders",
		"SELECT 1; SELECT ssn FROM t",
		"SELECT ssn || '' FROM t",
		NULL,
	};
	SqlInfoCache *cache = sqlinfo_cache_new(64);
	for (int round = 0; round < 2; round++) {
		for (int i = 0; sqls[i]; i++) {
			for (int unknown = 0; unknown < 2; unknown++) {
				MaskGuardResult plain = judge_with(sqls[i], unknown);
				MaskGuardResult memo = judge_memo(cache, &keys, 1, &views, unknown,
								  sqls[i]);
				cr_expect_eq(memo.deny, plain.deny, "%s (round %d, unknown %d)",
					     sqls[i], round, unknown);
				cr_expect_eq(memo.sensitive, plain.sensitive, "%s", sqls[i]);
				cr_expect_eq(memo.hints.count, plain.hints.count, "%s", sqls[i]);
				cr_expect_str_eq(memo.reason ? memo.reason : "",
						 plain.reason ? plain.reason : "", "%s", sqls[i]);
				maskguard_result_free(&plain);
				maskguard_result_free(&memo);
			}
		}
	}
	sqlinfo_cache_free(cache);
}

/* A verdict memoized under one set of keys never answers for another. */
Test(maskguard, memo_follows_the_keys)
{
	SqlInfoCache *cache = sqlinfo_cache_new(16);
	StrList email = { 0 };
	strlist_add(&email, "people.email");
	const char *sql = "SELECT lower(ssn) FROM people";
	cr_assert(!memo_denies(cache, &email, 7, NULL, false, sql), "ssn is not protected yet");
	SqlInfo *info = sqlinfo_cache_get(cache, sql, strlen(sql));
	cr_assert_eq(info->guard_keys_gen, 7, "the allowed verdict was memoized");
	sqlinfo_release(cache, info);
	/* new keys protect ssn: a new generation must not reuse the verdict */
	cr_expect(memo_denies(cache, &keys, 8, NULL, false, sql),
		  "a stale memo let a protected value through");
	cr_expect(memo_denies(cache, &keys, 8, NULL, false, sql),
		  "a denial is never memoized as an allow");
	strlist_free(&email);
	sqlinfo_cache_free(cache);
}

/* The views are checked on every call: a view that becomes tainted denies at once. */
Test(maskguard, memo_checks_the_views_every_time)
{
	SqlInfoCache *cache = sqlinfo_cache_new(16);
	StrList none = { 0 };
	const char *sql = "SELECT lower(mail) FROM late_v";
	cr_assert(!memo_denies(cache, &keys, 3, &none, false, sql));
	cr_expect(memo_denies(cache, &keys, 3, &none, true, sql),
		  "catalog unavailable: fail closed despite the memo");
	StrList tainted = { 0 };
	strlist_add(&tainted, "late_v");
	MaskGuardResult r = judge_memo(cache, &keys, 3, &tainted, false, sql);
	cr_expect(r.deny && r.sensitive, "a newly tainted view is denied despite the memo");
	cr_expect(r.reason && strstr(r.reason, "late_v"));
	maskguard_result_free(&r);
	cr_expect(!memo_denies(cache, &keys, 3, &none, false, sql));
	strlist_free(&tainted);
	sqlinfo_cache_free(cache);
}
