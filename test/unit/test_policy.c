/*
 * The Lua policy engine: loading, decisions, sandbox and budgets. Every
 * safety test runs the attack for real and checks that the engine stopped it
 * (and how fast), so a regression in the hook, the allocator or the sandbox
 * makes a test fail rather than hang: criterion's per-test timeout is the
 * backstop.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "src/config.h"
#include "src/mask.h"
#include "src/maskguard.h"
#include "src/policy.h"
#include "src/util.h"

static char tmpdir[64];

static void setup_dir(void)
{
	strcpy(tmpdir, "/tmp/pgmoat-policy-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown_dir(void)
{
	char *cmd = xasprintf("rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		cr_log_warn("cleanup failed: %s", cmd);
	free(cmd);
}

TestSuite(policy, .init = setup_dir, .fini = teardown_dir, .timeout = 30);

static char *write_file(const char *name, const char *text, size_t len)
{
	char *path = xasprintf("%s/%s", tmpdir, name);
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(text, 1, len, f), len);
	fclose(f);
	return path;
}

static char *write_script(const char *name, const char *text)
{
	return write_file(name, text, strlen(text));
}

/* Engine over scripts given as name, text pairs (NULL-terminated). */
static PolicyEngine *engine_from(PolicyConfig *pc, char *err, size_t errlen, va_list ap)
{
	const char *name;
	while ((name = va_arg(ap, const char *))) {
		const char *text = va_arg(ap, const char *);
		char *path = write_script(name, text);
		strlist_add(&pc->scripts, path);
		free(path);
	}
	return policy_engine_new(pc, err, errlen);
}

static PolicyEngine *engine_cfg(usec_t budget, size_t mem, PolicyMode mode, ...)
{
	PolicyConfig pc;
	policy_config_init(&pc);
	if (budget)
		pc.time_budget = budget;
	if (mem)
		pc.memory_limit = mem;
	pc.mode = mode;
	char err[512] = "";
	va_list ap;
	va_start(ap, mode);
	PolicyEngine *e = engine_from(&pc, err, sizeof(err), ap);
	va_end(ap);
	policy_config_free(&pc);
	cr_assert_not_null(e, "engine failed to load: %s", err);
	return e;
}

#define engine(...) engine_cfg(0, 0, POLICY_ENFORCE, __VA_ARGS__, NULL)

/* Load and expect failure; returns the error text (static). */
static const char *engine_error(const char *name, const char *text)
{
	static char err[512];
	PolicyConfig pc;
	policy_config_init(&pc);
	char *path = write_script(name, text);
	strlist_add(&pc.scripts, path);
	free(path);
	err[0] = '\0';
	PolicyEngine *e = policy_engine_new(&pc, err, sizeof(err));
	policy_config_free(&pc);
	cr_assert_null(e, "engine loaded but should not have");
	return err;
}

static PolicySession session_new(void)
{
	PolicySession s = { .id = 7, .user = "alice", .database = "app",
			    .application_name = "psql", .client_addr = "127.0.0.1" };
	return s;
}

/* A session whose on_connect ran (its decision is not the test's subject). */
static PolicySession session_opened(PolicyEngine *e)
{
	PolicySession s = session_new();
	PolicyDecision d;
	policy_session_open(e, &s, &d);
	policy_decision_free(&d);
	return s;
}

static PolicyVerdict run_query(PolicyEngine *e, PolicySession *s, const char *sql,
			       PolicyDecision *d)
{
	policy_on_query(e, s, sql, strlen(sql), "simple", NULL, false, d);
	return d->verdict;
}

/*
 * Two queries in one session, each expected to get its verdict (the second
 * sees what the first left in s.vars), the first decided by a failure or
 * not as error1 says; frees the engine too.
 */
static void query2_then_free(PolicyEngine *e, const char *first, PolicyVerdict want1, bool error1,
			     const char *second, PolicyVerdict want2)
{
	PolicySession s = session_opened(e);
	PolicyDecision d;
	cr_assert_eq(run_query(e, &s, first, &d), want1, "%s: %s", first, d.where ? d.where : "");
	cr_assert_eq(d.error, error1, "%s: decided by a failure?", first);
	policy_decision_free(&d);
	cr_assert_eq(run_query(e, &s, second, &d), want2, "%s: %s", second, d.where ? d.where : "");
	policy_decision_free(&d);
	policy_session_close(e, &s);
	policy_engine_free(e);
}

/* One query in a fresh session; returns the verdict and frees everything but d. */
static PolicyVerdict query1(PolicyEngine *e, const char *sql, PolicyDecision *d)
{
	PolicySession s = session_new();
	PolicyDecision od;
	policy_session_open(e, &s, &od);
	policy_decision_free(&od);
	run_query(e, &s, sql, d);
	policy_session_close(e, &s);
	return d->verdict;
}

/* ------------------------------------------------------------ loading */

Test(policy, load_reports_file_and_line_when_syntax_error)
{
	const char *err = engine_error("broken.lua", "local P = {}\n\nfunction P.on_query(s, q)\n  if then\nend\nreturn P\n");
	cr_assert(strstr(err, "broken.lua:4:") != NULL, "got: %s", err);
}

Test(policy, load_reports_file_and_line_when_top_level_errors)
{
	const char *err = engine_error("boom.lua", "local P = {}\nlocal x = nil\nlocal y = x.field\nreturn P\n");
	cr_assert(strstr(err, "boom.lua:3:") != NULL, "got: %s", err);
}

Test(policy, load_refuses_bytecode_when_chunk_starts_with_escape)
{
	static const char bc[] = "\033LJ\002\000garbage";
	PolicyConfig pc;
	policy_config_init(&pc);
	char *path = write_file("bc.lua", bc, sizeof(bc) - 1);
	strlist_add(&pc.scripts, path);
	free(path);
	char err[512] = "";
	PolicyEngine *e = policy_engine_new(&pc, err, sizeof(err));
	policy_config_free(&pc);
	cr_assert_null(e);
	cr_assert(strstr(err, "bytecode") != NULL, "got: %s", err);
}

Test(policy, load_fails_when_policy_returns_no_table)
{
	const char *err = engine_error("nothing.lua", "local x = 1\n");
	cr_assert(strstr(err, "nothing.lua") && strstr(err, "table"), "got: %s", err);
}

Test(policy, load_fails_when_hook_is_not_a_function)
{
	const char *err = engine_error("hook.lua", "return { on_query = 42 }\n");
	cr_assert(strstr(err, "on_query") != NULL, "got: %s", err);
}

Test(policy, load_fails_when_mask_name_unknown)
{
	const char *err = engine_error("m.lua", "return { masks = { ['people.email'] = 'scramble' } }\n");
	cr_assert(strstr(err, "scramble") != NULL, "got: %s", err);
}

Test(policy, load_fails_when_mask_key_malformed)
{
	const char *err = engine_error("m.lua", "return { masks = { ['email'] = 'redact' } }\n");
	cr_assert(strstr(err, "email") != NULL, "got: %s", err);
}

Test(policy, load_fails_when_script_missing)
{
	PolicyConfig pc;
	policy_config_init(&pc);
	strlist_add(&pc.scripts, "/nonexistent/p.lua");
	char err[512] = "";
	cr_assert_null(policy_engine_new(&pc, err, sizeof(err)));
	policy_config_free(&pc);
	cr_assert(strstr(err, "/nonexistent/p.lua") != NULL, "got: %s", err);
}

Test(policy, load_fails_when_top_level_loops_forever)
{
	PolicyConfig pc;
	policy_config_init(&pc);
	pc.time_budget = 20000;
	char *path = write_script("loop.lua", "while true do end\nreturn {}\n");
	strlist_add(&pc.scripts, path);
	free(path);
	char err[512] = "";
	cr_assert_null(policy_engine_new(&pc, err, sizeof(err)));
	policy_config_free(&pc);
	cr_assert(strstr(err, "loop.lua:1") && strstr(err, "time budget"), "got: %s", err);
}

/* ----------------------------------------------------------- decisions */

#define HEADER "local moat = require 'moat'\nlocal P = {}\n"

Test(policy, query_allows_when_hook_returns_nothing)
{
	PolicyEngine *e = engine("a.lua", HEADER "function P.on_query(s, q) end\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 1", &d), POLICY_ALLOW);
	cr_assert_eq(d.enforced, POLICY_ALLOW);
	cr_assert_not(d.error);
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, query_denies_with_policy_message)
{
	PolicyEngine *e = engine("deny.lua", HEADER "function P.on_query(s, q) return moat.deny('no ' .. q.sql) end\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 1", &d), POLICY_DENY);
	cr_assert_eq(d.enforced, POLICY_DENY);
	cr_assert_str_eq(d.message, "no select 1");
	cr_assert_str_eq(d.policy, "deny.lua");
	cr_assert_not(d.error);
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, query_holds_with_reason)
{
	PolicyEngine *e = engine("hold.lua", HEADER "function P.on_query(s, q) return moat.hold('needs a reviewer') end\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, "drop table t", &d), POLICY_HOLD);
	cr_assert_str_eq(d.message, "needs a reviewer");
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, query_rewrite_gives_new_sql)
{
	PolicyEngine *e = engine("rw.lua", HEADER "function P.on_query(s, q) if q.sql == 'select 1' then return moat.rewrite('select 2') end end\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 1", &d), POLICY_REWRITE);
	cr_assert_str_eq(d.rewritten_sql, "select 2");
	cr_assert_str_eq(d.policy, "rw.lua");
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, rewrites_chain_when_later_policy_sees_the_rewrite)
{
	PolicyEngine *e = engine(
		"one.lua", HEADER "function P.on_query(s, q) if q.sql == 'select 1' then return moat.rewrite('select 2') end end\nreturn P\n",
		"two.lua", HEADER "function P.on_query(s, q) if q.sql == 'select 2' then return moat.rewrite('select 3') end return moat.deny('saw ' .. q.sql) end\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 1", &d), POLICY_REWRITE, "%s", d.message ? d.message : "");
	cr_assert_str_eq(d.rewritten_sql, "select 3");
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, first_deny_wins_when_later_policy_would_fail)
{
	PolicyEngine *e = engine(
		"first.lua", HEADER "function P.on_query(s, q) return moat.deny('first') end\nreturn P\n",
		"second.lua", HEADER "function P.on_query(s, q) error('must not run') end\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 1", &d), POLICY_DENY);
	cr_assert_not(d.error);
	cr_assert_str_eq(d.policy, "first.lua");
	cr_assert_str_eq(d.message, "first");
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, strictest_wins_when_statements_disagree)
{
	PolicyEngine *e = engine("mix.lua", HEADER
		"function P.on_query(s, q)\n"
		"  if q.kind == 'drop' then return moat.hold('drop') end\n"
		"  if q.kind == 'delete' then return moat.deny('delete') end\n"
		"end\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, "drop table a; select 1", &d), POLICY_HOLD);
	cr_assert_str_eq(d.message, "drop");
	policy_decision_free(&d);
	cr_assert_eq(query1(e, "drop table a; delete from b; select 1", &d), POLICY_DENY);
	cr_assert_str_eq(d.message, "delete");
	policy_decision_free(&d);
	cr_assert_eq(query1(e, "select 1; select 2", &d), POLICY_ALLOW);
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, whole_query_denied_when_one_statement_is)
{
	PolicyEngine *e = engine("d.lua", HEADER "function P.on_query(s, q) if q.kind == 'drop' then return moat.deny('x') end end\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 1; drop table t; select 2", &d), POLICY_DENY);
	cr_assert_null(d.rewritten_sql);
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, rewrite_of_one_statement_keeps_the_others)
{
	PolicyEngine *e = engine("rw.lua", HEADER "function P.on_query(s, q) if q.sql == 'select 2' then return moat.rewrite('select 20') end end\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 1; select 2", &d), POLICY_REWRITE);
	cr_assert(strstr(d.rewritten_sql, "select 1") && strstr(d.rewritten_sql, "select 20"),
		  "got %s", d.rewritten_sql);
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, rewrite_denied_when_it_is_not_one_statement)
{
	PolicyEngine *e = engine("rw.lua", HEADER "function P.on_query(s, q) return moat.rewrite('select 1; drop table t') end\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 1", &d), POLICY_DENY);
	cr_assert_null(d.rewritten_sql);
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, unparsed_statement_denied_unless_a_policy_opts_in)
{
	const char *bad = "selec garbage ((( SYNTAX_ERROR";
	PolicyEngine *e = engine("p.lua", HEADER "function P.on_query(s, q) end\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, bad, &d), POLICY_DENY);
	cr_assert(strstr(d.message, "classified") != NULL, "%s", d.message);
	policy_decision_free(&d);
	policy_engine_free(e);

	e = engine("p.lua", HEADER "P.allow_unparsed = true\nfunction P.on_query(s, q) if q.kind ~= 'unknown' then return moat.deny('kind') end end\nreturn P\n");
	cr_assert_eq(query1(e, bad, &d), POLICY_ALLOW);
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, error_in_hook_denies_with_file_and_line)
{
	PolicyEngine *e = engine("err.lua", HEADER "function P.on_query(s, q)\n  local t = nil\n  return t.x\nend\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 1", &d), POLICY_DENY);
	cr_assert(d.error);
	cr_assert_str_eq(d.where, "err.lua:5");
	cr_assert_str_eq(d.policy, "err.lua");
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, bad_return_value_denies)
{
	PolicyEngine *e = engine("ret.lua", HEADER "function P.on_query(s, q) return { verdict = 'allow' } end\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 1", &d), POLICY_DENY);
	cr_assert(d.error);
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, dry_run_reports_verdict_but_enforces_allow)
{
	PolicyEngine *e = engine_cfg(0, 0, POLICY_DRY_RUN, "deny.lua",
				     HEADER "function P.on_query(s, q) return moat.deny('no') end\nreturn P\n", NULL);
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 1", &d), POLICY_DENY);
	cr_assert_eq(d.enforced, POLICY_ALLOW);
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, q_carries_statement_fields)
{
	PolicyEngine *e = engine("q.lua", HEADER
		"function P.on_query(s, q)\n"
		"  assert(q.sql == 'delete from people where id = 1', q.sql)\n"
		"  assert(q.kind == 'delete', q.kind)\n"
		"  assert(q.has_where == true)\n"
		"  assert(type(q.tables) == 'table' and q.tables[1] == 'people', tostring(q.tables[1]))\n"
		"  assert(q.protocol == 'extended')\n"
		"  assert(q.name == 'st1')\n"
		"  assert(q.in_transaction == true)\n"
		"  assert(type(q.fingerprint) == 'string')\n"
		"  assert(not pcall(function() q.kind = 'select' end), 'q is read-only')\n"
		"end\nreturn P\n");
	PolicySession s = session_opened(e);
	PolicyDecision d;
	const char *sql = "delete from people where id = 1";
	policy_on_query(e, &s, sql, strlen(sql), "extended", "st1", true, &d);
	cr_assert_eq(d.verdict, POLICY_ALLOW, "%s", d.where ? d.where : "");
	policy_decision_free(&d);
	policy_session_close(e, &s);
	policy_engine_free(e);
}

Test(policy, parse_fields_not_materialized_when_only_sql_read)
{
	PolicyEngine *e = engine("lazy.lua", HEADER "function P.on_query(s, q) if #q.sql > 1000 then return moat.deny('long') end end\nreturn P\n");
	PolicyDecision d;
	PolicyStats st;
	cr_assert_eq(query1(e, "select 1", &d), POLICY_ALLOW);
	policy_decision_free(&d);
	policy_engine_stats(e, &st);
	cr_assert_eq(st.lazy_fields, 0);
	policy_engine_free(e);

	e = engine("eager.lua", HEADER "function P.on_query(s, q) if q.kind == 'drop' then return moat.deny('x') end end\nreturn P\n");
	cr_assert_eq(query1(e, "select 1", &d), POLICY_ALLOW);
	policy_decision_free(&d);
	policy_engine_stats(e, &st);
	cr_assert_eq(st.lazy_fields, 1);
	policy_engine_free(e);
}

Test(policy, q_kept_after_its_call_has_no_parse_fields)
{
	PolicyEngine *e = engine("keep.lua", HEADER
		"function P.on_query(s, q)\n"
		"  if s.vars.old then assert(s.vars.old.kind == nil and s.vars.old.sql == 'select 1') end\n"
		"  s.vars.old = q\n"
		"end\nreturn P\n");
	query2_then_free(e, "select 1", POLICY_ALLOW, false, "select 2", POLICY_ALLOW);
}

Test(policy, q_kept_keeps_the_fields_read_during_its_call)
{
	PolicyEngine *e = engine("keep2.lua", HEADER
		"function P.on_query(s, q)\n"
		"  local old = s.vars.old\n"
		"  if old then\n"
		"    assert(old.sql == 'delete from t where id = 1' and old.protocol == 'simple')\n"
		"    assert(old.kind == 'delete' and old.has_where == true)\n"
		"    assert(old.tables == s.vars.tables and old.tables[1] == 't')\n"
		"    assert(old.writes == nil and old.functions == nil and old.fingerprint == nil)\n"
		"    return\n"
		"  end\n"
		"  assert(q.kind == 'delete' and q.has_where == true and q.kind == 'delete')\n"
		"  assert(q.tables == q.tables and q.tables[1] == 't' and #q.tables == 1)\n"
		"  s.vars.tables = q.tables\n"
		"  s.vars.old = q\n"
		"end\nreturn P\n");
	query2_then_free(e, "delete from t where id = 1", POLICY_ALLOW, false, "select 2",
			 POLICY_ALLOW);
}

/* A policy that keeps q and then fails: the q it kept must not reach the freed parse. */
Test(policy, q_kept_by_a_failing_policy_has_no_parse_fields)
{
	PolicyEngine *e = engine("keepfail.lua", HEADER
		"function P.on_query(s, q)\n"
		"  if s.vars.old then\n"
		"    local o = s.vars.old\n"
		"    assert(o.kind == nil and o.tables == nil and o.functions == nil)\n"
		"    assert(o.fingerprint == nil and o.normalized == nil and o.writes == nil)\n"
		"    assert(o.sql == 'select a from t where b = 1')\n"
		"    return\n"
		"  end\n"
		"  s.vars.old = q\n"
		"  error('boom')\n"
		"end\nreturn P\n");
	query2_then_free(e, "select a from t where b = 1", POLICY_DENY, true, "select 3",
			 POLICY_ALLOW);
}

Test(policy, q_fields_of_unparsed_text)
{
	PolicyEngine *e = engine("unp.lua", HEADER "P.allow_unparsed = true\n"
		"function P.on_query(s, q)\n"
		"  assert(q.kind == 'unknown' and q.has_where == false)\n"
		"  assert(type(q.tables) == 'table' and #q.tables == 0 and q.tables == q.tables)\n"
		"  assert(q.writes == nil and q.functions == nil and q.fingerprint == nil)\n"
		"  assert(q.normalized == nil and q.name == nil and q.in_transaction == false)\n"
		"  assert(q.sql == 'selec garbage (((' and q.protocol == 'simple')\n"
		"  assert(q.no_such_field == nil and q[1] == nil and getmetatable(q) == false)\n"
		"end\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, "selec garbage (((", &d), POLICY_ALLOW, "%s", d.where ? d.where : "");
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, q_fields_read_one_by_one)
{
	PolicyEngine *e = engine("each.lua", HEADER
		"function P.on_query(s, q)\n"
		"  assert(q.writes == false and q.is_transaction_control == false)\n"
		"  assert(q.has_limit == true and q.dml_without_where == false)\n"
		"  assert(q.functions[1] == 'lower' and #q.functions == 1)\n"
		"  assert(type(q.normalized) == 'string' and q.normalized:find('%$1'))\n"
		"  assert(type(q.fingerprint) == 'string' and #q.fingerprint > 0)\n"
		"  assert(q.fingerprint == q.fingerprint)\n"
		"end\nreturn P\n");
	PolicyDecision d;
	PolicyStats st;
	cr_assert_eq(query1(e, "select lower(a) from t limit 5", &d), POLICY_ALLOW, "%s",
		     d.where ? d.where : "");
	policy_decision_free(&d);
	policy_engine_stats(e, &st);
	cr_assert_eq(st.lazy_fields, 7);	/* each field converted once */
	policy_engine_free(e);
}

Test(policy, session_fields_claims_and_vars)
{
	PolicyEngine *e = engine("s.lua", HEADER
		"function P.on_query(s, q)\n"
		"  assert(s.user == 'alice' and s.database == 'app' and s.id == 7)\n"
		"  assert(s.application_name == 'psql' and s.client_addr == '127.0.0.1')\n"
		"  assert(s.tls == true and s.role == 'reader')\n"
		"  assert(s.claims.sub == 'ci-42' and s.claims.groups[2] == 'b' and s.claims.n == 3)\n"
		"  assert(s.claims.nested.deep == true and s.claims.u == '\\xc3\\xa9')\n"
		"  assert(not pcall(function() s.user = 'admin' end), 's is read-only')\n"
		"  s.vars.n = (s.vars.n or 0) + 1\n"
		"  if s.vars.n > 2 then return moat.deny('quota') end\n"
		"end\nreturn P\n");
	PolicySession s = session_new();
	s.tls = true;
	s.role = "reader";
	s.claims_json = "{\"sub\":\"ci-42\",\"groups\":[\"a\",\"b\"],\"n\":3,"
			"\"nested\":{\"deep\":true},\"u\":\"\\u00e9\",\"gone\":null}";
	PolicyDecision d;
	policy_session_open(e, &s, &d);
	cr_assert_eq(d.verdict, POLICY_ALLOW);
	policy_decision_free(&d);
	cr_assert_eq(run_query(e, &s, "select 1", &d), POLICY_ALLOW, "%s", d.where ? d.where : "");
	policy_decision_free(&d);
	cr_assert_eq(run_query(e, &s, "select 1", &d), POLICY_ALLOW);
	policy_decision_free(&d);
	cr_assert_eq(run_query(e, &s, "select 1", &d), POLICY_DENY);
	cr_assert_str_eq(d.message, "quota");
	policy_decision_free(&d);
	policy_session_close(e, &s);
	policy_engine_free(e);
}

Test(policy, session_refused_when_claims_have_duplicate_keys)
{
	PolicyEngine *e = engine("c.lua", HEADER "function P.on_connect(s) end\nreturn P\n");
	PolicySession s = session_new();
	s.claims_json = "{\"role\":\"reader\",\"role\":\"admin\"}";
	PolicyDecision d;
	policy_session_open(e, &s, &d);
	cr_assert_eq(d.verdict, POLICY_DENY);
	cr_assert(d.error);
	policy_decision_free(&d);
	policy_session_close(e, &s);
	policy_engine_free(e);
}

Test(policy, on_connect_can_deny_and_on_disconnect_runs)
{
	PolicyEngine *e = engine("conn.lua", HEADER
		"local closed = 0\n"
		"function P.on_connect(s) if s.user == 'mallory' then return moat.deny('not you') end end\n"
		"function P.on_disconnect(s) closed = closed + 1 end\n"
		"function P.on_query(s, q) if closed ~= 1 then return moat.deny('closed=' .. closed) end end\n"
		"return P\n");
	PolicySession s = session_new();
	s.user = "mallory";
	PolicyDecision d;
	policy_session_open(e, &s, &d);
	cr_assert_eq(d.verdict, POLICY_DENY);
	cr_assert_str_eq(d.message, "not you");
	policy_decision_free(&d);
	policy_session_close(e, &s);
	cr_assert_eq(query1(e, "select 1", &d), POLICY_ALLOW, "%s", d.message ? d.message : "");
	policy_decision_free(&d);
	policy_engine_free(e);
}

/* ------------------------------------------------------------- sandbox */

/* The expression must be unreachable: an error or nil means the sandbox held. */
static void assert_forbidden(const char *expr)
{
	char *text = xasprintf(HEADER
		"function P.on_query(s, q)\n"
		"  local ok, v = pcall(function() return %s end)\n"
		"  if ok and v ~= nil then return moat.deny('escaped: ' .. tostring(v)) end\n"
		"end\nreturn P\n", expr);
	PolicyEngine *e = engine("escape.lua", text);
	free(text);
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 1", &d), POLICY_ALLOW, "%s reachable: %s", expr,
		     d.message ? d.message : "");
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, sandbox_blocks_every_forbidden_global)
{
	static const char *const forbidden[] = {
		"io", "io.open", "os.execute", "os.exit", "os.getenv", "os.remove", "ffi",
		"jit", "debug", "package", "load", "loadstring", "dofile", "loadfile",
		"string.dump", "('').dump", "setfenv", "getfenv", "newproxy", "module", "_G",
		"coroutine", "gcinfo", "require('ffi')", "require('io')", "require('jit')",
		"require('debug')", "require('os')", "collectgarbage('collect')",
		"collectgarbage('stop')", "getmetatable('').__index", "rawget(string, 'dump')",
		NULL,
	};
	for (int i = 0; forbidden[i]; i++)
		assert_forbidden(forbidden[i]);
}

Test(policy, sandbox_allows_the_safe_library)
{
	PolicyEngine *e = engine("ok.lua", HEADER
		"function P.on_query(s, q)\n"
		"  assert(string.upper('a') == 'A' and ('x'):rep(3) == 'xxx')\n"
		"  assert(table.concat({1, 2}, ',') == '1,2' and math.max(1, 2) == 2)\n"
		"  assert(bit.band(3, 1) == 1 and type(os.time()) == 'number')\n"
		"  assert(type(os.clock()) == 'number' and type(os.date('%Y')) == 'string')\n"
		"  assert(collectgarbage('count') > 0 and select('#', 1, 2) == 2)\n"
		"end\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 1", &d), POLICY_ALLOW, "%s", d.where ? d.where : "");
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, globals_locked_when_reading_or_writing_unknown_names)
{
	PolicyEngine *e = engine("g.lua", HEADER "function P.on_query(s, q) counter = 1 end\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 1", &d), POLICY_DENY);
	cr_assert(d.error);
	cr_assert_str_eq(d.where, "g.lua:3");
	policy_decision_free(&d);
	policy_engine_free(e);
	const char *err = engine_error("typo.lua", HEADER "local x = tostrin(1)\nreturn P\n");
	cr_assert(strstr(err, "typo.lua:3") && strstr(err, "tostrin"), "got: %s", err);
}

Test(policy, require_refused_outside_lua_dir)
{
	const char *err = engine_error("r.lua", "local x = require 'socket'\nreturn {}\n");
	cr_assert(strstr(err, "socket") != NULL, "got: %s", err);
	err = engine_error("r2.lua", "local x = require '../etc/passwd'\nreturn {}\n");
	cr_assert(strstr(err, "not available") != NULL, "got: %s", err);
}

Test(policy, require_loads_helper_from_lua_dir)
{
	char *dir = xasprintf("%s/lua", tmpdir);
	cr_assert_eq(mkdir(dir, 0700), 0);
	char *helper = xasprintf("%s/lua/helper.lua", tmpdir);
	FILE *f = fopen(helper, "w");
	fputs("local M = {}\nfunction M.twice(x) return x * 2 end\nreturn M\n", f);
	fclose(f);
	PolicyConfig pc;
	policy_config_init(&pc);
	pc.lua_dir = dir;
	char *path = write_script("use.lua", HEADER "local h = require 'helper'\nfunction P.on_query(s, q) if h.twice(2) ~= 4 then return moat.deny('x') end end\nreturn P\n");
	strlist_add(&pc.scripts, path);
	char err[512] = "";
	PolicyEngine *e = policy_engine_new(&pc, err, sizeof(err));
	cr_assert_not_null(e, "%s", err);
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 1", &d), POLICY_ALLOW);
	policy_decision_free(&d);
	policy_engine_free(e);
	policy_config_free(&pc);	/* frees dir */
	free(path);
	free(helper);
}

/* ----------------------------------------------------- budgets, overruns */

static usec_t timed_deny(PolicyEngine *e, const char *what)
{
	PolicyDecision d;
	usec_t t0 = util_now_mono();
	cr_assert_eq(query1(e, "select 1", &d), POLICY_DENY, "%s was not stopped", what);
	usec_t took = util_now_mono() - t0;
	cr_assert(d.error, "%s: not marked as an error", what);
	cr_assert_not_null(d.where);
	policy_decision_free(&d);
	return took;
}

/* After an overrun the state is recreated and serves the next call normally. */
static void assert_recovers(PolicyEngine *e)
{
	PolicyStats st;
	policy_engine_stats(e, &st);
	cr_assert_geq(st.overruns, 1);
	cr_assert_geq(st.recreated, 1);
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 42", &d), POLICY_ALLOW, "no recovery: %s",
		     d.message ? d.message : "");
	policy_decision_free(&d);
}

#define LOOP_POLICY(body) HEADER "function P.on_query(s, q)\n  if q.sql == 'select 42' then return end\n  " body "\nend\nreturn P\n"

/*
 * A state recreated after an overrun reads its scripts again, so its P.masks
 * may differ: the guard's memo on a cached parse must not answer for the new
 * keys (policy_engine_mask_keys_gen).
 */
#define MEMO_POLICY(masks) HEADER "P.masks = { " masks " }\n" \
	"function P.on_query(s, q)\n  if q.sql == 'select 1' then while true do end end\nend\n" \
	"return P\n"

static bool guard_denies(PolicyEngine *e, const char *sql)
{
	SqlInfo *info = policy_engine_classify(e, sql, strlen(sql));
	MaskGuardResult r;
	maskguard_check_memo(policy_engine_mask_keys(e), policy_engine_mask_keys_gen(e), NULL,
			     false, info, &r);
	policy_engine_release(e, info);
	bool deny = r.deny;
	maskguard_result_free(&r);
	return deny;
}

Test(policy, mask_guard_memo_follows_a_recreated_state)
{
	PolicyEngine *e = engine_cfg(20000, 0, POLICY_ENFORCE, "memo.lua",
				     MEMO_POLICY("['people.email'] = 'redact'"), NULL);
	uint64_t gen = policy_engine_mask_keys_gen(e);
	cr_assert_neq(gen, 0);
	const char *sql = "SELECT lower(ssn) FROM people";
	cr_assert(!guard_denies(e, sql), "ssn is not protected yet");
	cr_assert(!guard_denies(e, sql), "(memoized)");
	free(write_script("memo.lua", MEMO_POLICY("['*.ssn'] = 'redact'")));
	timed_deny(e, "the spin");	/* the overrun recreates the state from the new file */
	cr_assert(strlist_contains(policy_engine_mask_keys(e), "*.ssn"), "the new keys loaded");
	cr_assert_neq(policy_engine_mask_keys_gen(e), gen);
	cr_expect(guard_denies(e, sql), "a memo from the old keys let a protected value through");
	policy_engine_free(e);
}

Test(policy, budget_stops_while_true)
{
	PolicyEngine *e = engine_cfg(20000, 0, POLICY_ENFORCE, "spin.lua", LOOP_POLICY("while true do end"), NULL);
	usec_t took = timed_deny(e, "while true");
	cr_assert_lt(took, 1000000, "took %lld us", (long long)took);
	assert_recovers(e);
	policy_engine_free(e);
}

/* The watchdog signals the thread running the call, whichever it is. */
static void *spin_in_thread(void *arg)
{
	PolicyEngine *e = arg;
	PolicyDecision d;
	usec_t t0 = util_now_mono();
	bool denied = query1(e, "select 1", &d) == POLICY_DENY && d.error;
	usec_t took = util_now_mono() - t0;
	policy_decision_free(&d);
	return (void *)(intptr_t)(denied && took < 1000000);
}

Test(policy, budget_stops_loop_in_another_thread)
{
	PolicyEngine *e = engine_cfg(20000, 0, POLICY_ENFORCE, "spin.lua", LOOP_POLICY("while true do end"), NULL);
	pthread_t t;
	void *ok = NULL;
	cr_assert_eq(pthread_create(&t, NULL, spin_in_thread, e), 0);
	cr_assert_eq(pthread_join(t, &ok), 0);
	cr_assert(ok, "the loop in the other thread was not stopped within 1 s");
	assert_recovers(e);
	policy_engine_free(e);
}

/* A fork's child (the daemon forks) gets a watchdog of its own. */
Test(policy, budget_stops_loop_in_forked_child)
{
	PolicyEngine *parent = engine_cfg(20000, 0, POLICY_ENFORCE, "ok.lua", HEADER "return P\n", NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		PolicyEngine *e = engine_cfg(20000, 0, POLICY_ENFORCE, "spin.lua",
					     LOOP_POLICY("while true do end"), NULL);
		_exit(spin_in_thread(e) ? 0 : 1);
	}
	int status = 0;
	usec_t t0 = util_now_mono();
	while (waitpid(pid, &status, WNOHANG) == 0 && util_now_mono() - t0 < 5000000)
		usleep(10000);
	if (util_now_mono() - t0 >= 5000000) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		cr_assert_fail("the child's loop was never stopped");
	}
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child's loop was not stopped");
	policy_engine_free(parent);
}

/*
 * Idle, the watchdog sleeps, so that a sidecar with policies loaded but no
 * traffic stays quiet: over an idle second its thread does not run (before,
 * it looked every quarter of time_budget: 200 wake-ups here). The first call
 * after wakes it, and a runaway one is still stopped within its budget.
 */
#define IDLE_USEC 1000000

/* The watchdog's thread id (it is named), or -1. */
static pid_t watchdog_tid(void)
{
	pid_t tid = -1;
	char path[300], comm[32];
	for (int i = 0; i < 100 && tid < 0; i++) {	/* (it may still be starting) */
		DIR *d = opendir("/proc/self/task");
		cr_assert_not_null(d);
		struct dirent *de;
		while (tid < 0 && (de = readdir(d))) {
			snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
			FILE *f = de->d_name[0] != '.' ? fopen(path, "r") : NULL;
			if (f && fgets(comm, sizeof(comm), f) && strcmp(comm, "pgmoat-watchdog\n") == 0)
				tid = atoi(de->d_name);
			if (f)
				fclose(f);
		}
		closedir(d);
		if (tid < 0)
			usleep(10000);
	}
	return tid;
}

/* How often the thread has given up the CPU (it waited) or been made to: its runs. */
static long task_switches(pid_t tid)
{
	char path[64], line[128];
	long n = 0, total = 0;
	snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "cannot read %s", path);
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "voluntary_ctxt_switches: %ld", &n) == 1 ||
		    sscanf(line, "nonvoluntary_ctxt_switches: %ld", &n) == 1)
			total += n;
	}
	fclose(f);
	return total;
}

Test(policy, watchdog_sleeps_while_idle_and_stops_a_loop_after)
{
	PolicyEngine *e = engine_cfg(20000, 0, POLICY_ENFORCE, "spin.lua", LOOP_POLICY("while true do end"), NULL);
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 42", &d), POLICY_ALLOW);
	policy_decision_free(&d);
	pid_t tid = watchdog_tid();
	cr_assert_gt(tid, 0, "no thread named pgmoat-watchdog");
	usleep(100000);	/* (two looks find no call: it sleeps) */
	long before = task_switches(tid);
	usleep(IDLE_USEC);
	long idle = task_switches(tid) - before;
	cr_expect_leq(idle, 2, "the idle watchdog ran %ld times in %d ms", idle, IDLE_USEC / 1000);
	usec_t took = timed_deny(e, "a loop after an idle period");
	cr_assert_lt(took, 1000000, "took %lld us", (long long)took);
	cr_assert_gt(task_switches(tid) - before, idle, "the call did not wake the watchdog");
	assert_recovers(e);
	policy_engine_free(e);
}

/*
 * Calls one by one, after gaps from none to past the watchdog's falling
 * asleep: whichever side sees the other first, each loop is stopped.
 */
Test(policy, watchdog_wakes_for_every_call_of_a_trickle)
{
	PolicyEngine *e = engine_cfg(20000, 0, POLICY_ENFORCE, "spin.lua", LOOP_POLICY("while true do end"), NULL);
	for (int i = 0; i < 12; i++) {
		usleep((useconds_t)(i * 2500));
		usec_t took = timed_deny(e, "a loop of a trickle");
		cr_assert_lt(took, 1000000, "call %d took %lld us", i, (long long)took);
	}
	assert_recovers(e);
	policy_engine_free(e);
}

/* A second overrun in the same engine, and a normal call after each. */
Test(policy, budget_stops_loops_again_after_recovery)
{
	PolicyEngine *e = engine_cfg(20000, 0, POLICY_ENFORCE, "spin.lua", LOOP_POLICY("while true do end"), NULL);
	for (int i = 0; i < 3; i++) {
		cr_assert_lt(timed_deny(e, "while true"), 1000000);
		assert_recovers(e);
	}
	policy_engine_free(e);
}

/*
 * A process paused across a short call's deadline (a CPU quota, a stop) does
 * not fail that call: the watchdog signals only a call it finds overdue at two
 * looks. The child runs short calls with a 5 ms budget while it is stopped for
 * 20 ms, 30 times; with a signal at the first look most stops inside a call
 * failed it.
 */
#define PAUSES 50
#define PAUSE_USEC 20000

static int short_calls_failed(PolicyEngine *e, usec_t run_for)
{
	int failed = 0;
	usec_t t0 = util_now_mono();
	while (util_now_mono() - t0 < run_for) {
		PolicyDecision d;
		if (query1(e, "select 1", &d) != POLICY_ALLOW) {
			failed++;
			fprintf(stderr, "short call failed: %s\n", d.message ? d.message : "?");
		}
		policy_decision_free(&d);
	}
	return failed;
}

Test(policy, budget_spares_short_calls_of_a_paused_process)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		PolicyEngine *e = engine_cfg(5000, 0, POLICY_ENFORCE, "short.lua",
					     HEADER "function P.on_query(s, q) end\nreturn P\n", NULL);
		int failed = e ? short_calls_failed(e, PAUSES * (PAUSE_USEC + 10000) + 500000) : 255;
		_exit(failed > 250 ? 250 : failed);
	}
	usleep(200000);	/* (the child loads its engine) */
	for (int i = 0; i < PAUSES; i++) {
		kill(pid, SIGSTOP);
		usleep(PAUSE_USEC);
		kill(pid, SIGCONT);
		usleep(10000);
	}
	int status = 0;
	usec_t t0 = util_now_mono();
	while (waitpid(pid, &status, WNOHANG) == 0 && util_now_mono() - t0 < 10000000)
		usleep(10000);
	if (util_now_mono() - t0 >= 10000000) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		cr_assert_fail("the child did not finish");
	}
	cr_assert(WIFEXITED(status), "the child died");
	cr_expect_leq(WEXITSTATUS(status), 1, "%d short calls failed over %d pauses", WEXITSTATUS(status),
		      PAUSES);
}

Test(policy, budget_stops_loop_inside_pcall)
{
	PolicyEngine *e = engine_cfg(20000, 0, POLICY_ENFORCE, "spin.lua",
		LOOP_POLICY("while true do pcall(function() while true do end end) end"), NULL);
	cr_assert_lt(timed_deny(e, "pcall loop"), 1000000);
	assert_recovers(e);
	policy_engine_free(e);
}

Test(policy, budget_stops_loop_inside_xpcall_handler)
{
	PolicyEngine *e = engine_cfg(20000, 0, POLICY_ENFORCE, "spin.lua",
		LOOP_POLICY("while true do xpcall(function() while true do end end, function() while true do end end) end"), NULL);
	cr_assert_lt(timed_deny(e, "xpcall loop"), 1000000);
	assert_recovers(e);
	policy_engine_free(e);
}

Test(policy, budget_stops_tail_call_loop)
{
	PolicyEngine *e = engine_cfg(20000, 0, POLICY_ENFORCE, "spin.lua",
		LOOP_POLICY("local function f(n) return f(n + 1) end return f(1)"), NULL);
	cr_assert_lt(timed_deny(e, "tail calls"), 1000000);
	assert_recovers(e);
	policy_engine_free(e);
}

Test(policy, deep_recursion_denied)
{
	PolicyEngine *e = engine("deep.lua", LOOP_POLICY("local function f(n) return 1 + f(n + 1) end return f(1)"));
	timed_deny(e, "deep recursion");
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 42", &d), POLICY_ALLOW);
	policy_decision_free(&d);
	policy_engine_free(e);
}

Test(policy, string_rep_bomb_refused)
{
	PolicyEngine *e = engine("rep.lua", LOOP_POLICY("local s = ('x'):rep(2^31) return moat.allow()"));
	cr_assert_lt(timed_deny(e, "string.rep"), 1000000);
	policy_engine_free(e);
	e = engine("rep2.lua", LOOP_POLICY("local s = string.rep('abc', 1e6, ',') return moat.allow()"));
	timed_deny(e, "string.rep with separator");
	policy_engine_free(e);
}

Test(policy, memory_cap_stops_table_bomb)
{
	PolicyEngine *e = engine_cfg(2 * USEC_PER_SEC, 16 * 1024 * 1024, POLICY_ENFORCE, "bomb.lua",
		LOOP_POLICY("local t = {} for i = 1, 1e9 do t[i] = {i} end"), NULL);
	timed_deny(e, "table bomb");
	PolicyStats st;
	policy_engine_stats(e, &st);
	cr_assert_leq(st.memory, 16 * 1024 * 1024);
	assert_recovers(e);
	policy_engine_free(e);
}

Test(policy, memory_cap_not_absorbed_by_pcall)
{
	PolicyEngine *e = engine_cfg(2 * USEC_PER_SEC, 16 * 1024 * 1024, POLICY_ENFORCE, "bomb.lua",
		LOOP_POLICY("local keep = {} while true do pcall(function() local s = 'x' for i = 1, 40 do s = s .. s .. i end keep[#keep + 1] = s end) end"), NULL);
	timed_deny(e, "string bomb in pcall");
	assert_recovers(e);
	policy_engine_free(e);
}

Test(policy, backtracking_pattern_stopped_by_budget)
{
	PolicyEngine *e = engine_cfg(50000, 0, POLICY_ENFORCE, "re.lua",
		LOOP_POLICY("local r = string.find(('a'):rep(200), ('a*'):rep(30) .. 'b') return moat.allow()"), NULL);
	usec_t took = timed_deny(e, "backtracking find");
	cr_assert_lt(took, 1000000, "took %lld us", (long long)took);
	assert_recovers(e);
	policy_engine_free(e);
	e = engine_cfg(50000, 0, POLICY_ENFORCE, "re2.lua",
		LOOP_POLICY("local r = (('a'):rep(200)):gsub(('a-'):rep(20) .. 'b', 'x') return moat.allow()"), NULL);
	cr_assert_lt(timed_deny(e, "backtracking gsub"), 1000000);
	policy_engine_free(e);
}

Test(policy, other_sessions_unaffected_by_an_overrun)
{
	PolicyEngine *e = engine_cfg(20000, 0, POLICY_ENFORCE, "spin.lua",
		LOOP_POLICY("if q.sql == 'spin' then while true do end end"), NULL);
	PolicySession a = session_new(), b = session_new();
	b.id = 8;
	PolicyDecision d;
	policy_session_open(e, &a, &d);
	policy_decision_free(&d);
	policy_session_open(e, &b, &d);
	policy_decision_free(&d);
	cr_assert_eq(run_query(e, &a, "spin", &d), POLICY_DENY);
	policy_decision_free(&d);
	cr_assert_eq(run_query(e, &b, "select 1", &d), POLICY_ALLOW);
	policy_decision_free(&d);
	cr_assert_eq(run_query(e, &a, "select 1", &d), POLICY_ALLOW);
	policy_decision_free(&d);
	policy_session_close(e, &a);
	policy_session_close(e, &b);
	policy_engine_free(e);
}

/* ------------------------------------------------------------ patterns */

Test(policy, bounded_patterns_match_like_lua)
{
	PolicyEngine *e = engine("pat.lua", HEADER
		"local function eq(a, b) assert(a == b, tostring(a) .. ' ~= ' .. tostring(b)) end\n"
		"function P.on_query(s, q)\n"
		"  eq(string.find('hello world', 'o w'), 5)\n"
		"  eq(select(2, string.find('hello world', 'o w')), 7)\n"
		"  eq(string.find('a.b', '.', 1, true), 2)\n"
		"  eq(string.find('a.b', '%.'), 2)\n"
		"  eq(string.find('abc', 'x'), nil)\n"
		"  eq(string.match('key = value', '(%w+)%s*=%s*(%w+)'), 'key')\n"
		"  eq(select(2, string.match('key = value', '(%w+)%s*=%s*(%w+)')), 'value')\n"
		"  eq(string.match('  trim  ', '^%s*(.-)%s*$'), 'trim')\n"
		"  eq(string.match('x(a(b)c)y', '%b()'), '(a(b)c)')\n"
		"  eq(string.match('THE (quick) fox', '%f[%a]%a+'), 'THE')\n"
		"  eq(string.match('abcabc', '(abc)%1'), 'abc')\n"
		"  eq(string.match('hello', '()ll()'), 3)\n"
		"  eq(string.match('2024-01-02', '^(%d+)-(%d+)-(%d+)$'), '2024')\n"
		"  eq(string.match('a]b', '[]]'), ']')\n"
		"  eq(string.match('x-y', '[%-]'), '-')\n"
		"  eq(string.match('aaa', 'a-'), '')\n"
		"  eq(string.match('aaa', 'a+'), 'aaa')\n"
		"  eq(string.match('ab', 'a?b'), 'ab')\n"
		"  eq(string.match('b', 'a?b'), 'b')\n"
		"  eq(string.match('Hi9', '[^%d]+'), 'Hi')\n"
		"  eq(string.gsub('hello world', 'o', '0'), 'hell0 w0rld')\n"
		"  eq(select(2, string.gsub('hello world', 'o', '0')), 2)\n"
		"  eq(string.gsub('hello', '(l)(l)', '%2%1%%'), 'hell%o')\n"
		"  eq(string.gsub('abc', '%w', '%0%0'), 'aabbcc')\n"
		"  eq(string.gsub('$name is $age', '%$(%w+)', { name = 'bob', age = 3 }), 'bob is 3')\n"
		"  eq(string.gsub('abc', '.', function(c) return c:upper() end), 'ABC')\n"
		"  eq(string.gsub('abc', '', '-'), '-a-b-c-')\n"
		"  eq(string.gsub('aaa', 'a', 'b', 2), 'bba')\n"
		"  eq(string.gsub('aaa', '^a', 'b'), 'baa')\n"
		"  local words = {}\n"
		"  for w in string.gmatch('one two  three', '%a+') do words[#words + 1] = w end\n"
		"  eq(table.concat(words, ','), 'one,two,three')\n"
		"  local kv = {}\n"
		"  for k, v in string.gmatch('a=1, b=2', '(%w+)=(%w+)') do kv[k] = v end\n"
		"  eq(kv.b, '2')\n"
		"  assert(not pcall(string.find, 'a', '[a'), 'malformed set')\n"
		"  assert(not pcall(string.find, 'a', '%'), 'trailing %')\n"
		"  assert(not pcall(string.find, 'a', '(a'), 'unfinished capture')\n"
		"  assert(not pcall(string.find, 'a', '%1'), 'bad back reference')\n"
		"end\nreturn P\n");
	PolicyDecision d;
	cr_assert_eq(query1(e, "select 1", &d), POLICY_ALLOW, "pattern mismatch at %s",
		     d.where ? d.where : "?");
	policy_decision_free(&d);
	policy_engine_free(e);
}

/* --------------------------------------------------------------- masks */

static void plan_init(MaskPlan *plan, int n, const char *const *names)
{
	memset(plan, 0, sizeof(*plan));
	plan->ncols = n;
	plan->cols = xcalloc((size_t)n, sizeof(MaskColumn));
	for (int i = 0; i < n; i++) {
		plan->cols[i].name = (char *)names[i];	/* (literals: mask_plan_free frees only cols) */
		plan->cols[i].type_oid = 25;
	}
}

Test(policy, masks_follow_p_masks_and_on_columns)
{
	PolicyEngine *e = engine("pii.lua", HEADER
		"P.masks = { ['people.email'] = 'email', ['*.ssn'] = 'redact',\n"
		"            ['billing.cards.number'] = 'partial' }\n"
		"function P.on_columns(s, cols)\n"
		"  for _, c in ipairs(cols) do\n"
		"    if c.name == 'secret' then c.mask = function(v, col) return v and ('<' .. #v .. '>') end end\n"
		"  end\n"
		"end\nreturn P\n");
	cr_assert(policy_engine_has_masks(e));
	static const char *const names[] = { "id", "mail", "ssn", "number", "secret" };
	const char *tables[] = { "public.people", "public.people", "hr.staff", "billing.cards", NULL };
	const char *columns[] = { "id", "email", "ssn", "number", NULL };
	MaskPlan plan;
	plan_init(&plan, 5, names);
	PolicySession s = session_opened(e);
	char err[256] = "";
	cr_assert(policy_on_columns(e, &s, &plan, tables, columns, err, sizeof(err)), "%s", err);
	cr_assert_eq(plan.cols[0].mask, MASK_NONE);
	cr_assert_eq(plan.cols[1].mask, MASK_EMAIL);
	cr_assert_eq(plan.cols[2].mask, MASK_REDACT);
	cr_assert_eq(plan.cols[3].mask, MASK_PARTIAL);
	cr_assert_eq(plan.cols[4].mask, MASK_CUSTOM);
	cr_assert(plan.any);

	PolicyRowContext ctx = { e, &s };
	uint8_t *out = NULL;
	int32_t out_len = 0;
	cr_assert(policy_mask_custom(&ctx, 4, (const uint8_t *)"hunter2", 7, &out, &out_len));
	cr_assert_eq(out_len, 3);
	cr_assert(memcmp(out, "<7>", 3) == 0);
	free(out);
	cr_assert(policy_mask_custom(&ctx, 4, NULL, -1, &out, &out_len));
	cr_assert_null(out);
	cr_assert_eq(out_len, -1);
	cr_assert_not(policy_mask_custom(&ctx, 0, (const uint8_t *)"1", 1, &out, &out_len),
		      "a column without a Lua mask must fail closed");
	mask_plan_free(&plan);
	policy_session_close(e, &s);
	policy_engine_free(e);
}

/* One on_columns call over (table, column) pairs; returns the mask of each column. */
static void columns_call(PolicyEngine *e, PolicySession *s, int n, const char *const *names,
			 const char **tables, const char **columns, MaskKind *out)
{
	MaskPlan plan;
	plan_init(&plan, n, names);
	char err[256] = "";
	cr_assert(policy_on_columns(e, s, &plan, tables, columns, err, sizeof(err)), "%s", err);
	for (int i = 0; i < n; i++)
		out[i] = plan.cols[i].mask;
	mask_plan_free(&plan);
}

/* perf-mask: the column tables come from a cached template; every call must get fresh ones. */
Test(policy, on_columns_gets_fresh_tables_each_call)
{
	PolicyEngine *e = engine("fresh.lua", HEADER
		"P.masks = { ['people.email'] = 'email' }\n"
		"function P.on_columns(s, cols)\n"
		"  if s.vars.last and s.vars.last[1].touched ~= true then error('kept table changed') end\n"
		"  for _, c in ipairs(cols) do\n"
		"    if c.touched then error('a column table was reused') end\n"
		"    if c.name ~= 'e' then error('name is ' .. tostring(c.name)) end\n"
		"    if c.column == 'email' and c.table == 'public.people' and c.mask ~= 'email' then\n"
		"      error('declared mask missing') end\n"
		"    c.touched = true\n"
		"    c.name = 'changed'\n"
		"    if c.table == 'public.other' then c.mask = 'redact' end\n"
		"  end\n"
		"  s.vars.last = cols\n"
		"end\nreturn P\n");
	PolicySession s = session_opened(e);
	static const char *const names[] = { "e" };
	const char *people[] = { "public.people" }, *other[] = { "public.other" };
	const char *email[] = { "email" };
	MaskKind k;
	for (int round = 0; round < 3; round++) {
		columns_call(e, &s, 1, names, people, email, &k);
		cr_assert_eq(k, MASK_EMAIL, "round %d", round);
		/* the same set again: the last template (kept by key), fresh tables still */
		columns_call(e, &s, 1, names, people, email, &k);
		cr_assert_eq(k, MASK_EMAIL, "round %d, repeated", round);
		/* same column name and type, another table: another template */
		columns_call(e, &s, 1, names, other, email, &k);
		cr_assert_eq(k, MASK_REDACT, "round %d", round);
	}
	policy_session_close(e, &s);
	policy_engine_free(e);
}

/* The calls ran without a Lua error; then the session and the engine go. */
static void close_without_errors(PolicyEngine *e, PolicySession *s)
{
	PolicyStats st;
	policy_engine_stats(e, &st);
	cr_assert_eq(st.errors, 0);
	policy_session_close(e, s);
	policy_engine_free(e);
}

/* policy cost 2: templates are compiled from source; names of any bytes come through exactly. */
Test(policy, on_columns_template_keeps_any_name_exactly)
{
	PolicyEngine *e = engine("odd.lua", HEADER
		"local fn = function(v) return v end\n"
		"P.masks = { ['people.email'] = 'email', ['people.x'] = fn }\n"
		"function P.on_columns(s, cols)\n"
		"  local want = s.vars.want\n"
		"  for i, c in ipairs(cols) do\n"
		"    if c.name ~= want[i] then error('name ' .. i .. ' is ' .. tostring(c.name)) end\n"
		"    if c.column ~= want[i] or c.table ~= 'public.people' then error('source ' .. i) end\n"
		"    if c.type_oid ~= 25 or c.format ~= 'text' then error('type ' .. i) end\n"
		"    if want[i] == 'email' and c.mask ~= 'email' then error('email mask') end\n"
		"    if want[i] == 'x' and c.mask ~= fn then error('function mask') end\n"
		"    if want[i] ~= 'x' and want[i] ~= 'email' and c.mask ~= nil then error('mask ' .. i) end\n"
		"  end\n"
		"end\n"
		"function P.on_connect(s)\n"
		"  local all = {}\n"
		"  for b = 1, 255 do all[#all + 1] = string.char(b) end\n"
		"  s.vars.want = { 'a\"b', 'back\\\\slash', 'new\\nline', ']]--[[', table.concat(all),\n"
		"                  'email', 'x', '\\0010', 'end' }\n"
		"end\nreturn P\n");
	PolicySession s = session_new();
	PolicyDecision d;
	policy_session_open(e, &s, &d);
	cr_assert_eq(d.verdict, POLICY_ALLOW);
	policy_decision_free(&d);
	char all[256];
	for (int b = 1; b < 256; b++)
		all[b - 1] = (char)b;
	all[255] = '\0';
	enum { N = 9 };
	const char *names[N] = { "a\"b", "back\\slash", "new\nline", "]]--[[", all, "email", "x",
				 "\0010", "end" };
	const char *tables[N], *columns[N];
	for (int i = 0; i < N; i++) {
		tables[i] = "public.people";
		columns[i] = names[i];
	}
	MaskKind k[N];
	for (int round = 0; round < 2; round++) {
		columns_call(e, &s, N, names, tables, columns, k);
		for (int i = 0; i < N; i++)
			cr_assert_eq(k[i], i == 5 ? MASK_EMAIL : i == 6 ? MASK_CUSTOM : MASK_NONE,
				     "round %d column %d", round, i);
	}
	close_without_errors(e, &s);
}

/* policy cost 2: as many columns as a PostgreSQL result can have, with many function masks. */
Test(policy, on_columns_template_of_the_widest_result)
{
	PolicyEngine *e = engine("wide.lua", HEADER
		"P.masks = { ['*.ssn'] = 'redact' }\n"
		"for i = 1, 300 do P.masks['t.f' .. i] = function(v) return v end end\n"
		"function P.on_columns(s, cols)\n"
		"  if #cols ~= 1664 or cols[1664].name ~= 'c1664' then error('cols') end\n"
		"end\nreturn P\n");
	PolicySession s = session_opened(e);
	enum { N = 1664 };
	static char nbuf[N][16], cbuf[N][16];
	static const char *names[N], *tables[N], *columns[N];
	static MaskKind k[N];
	for (int i = 0; i < N; i++) {
		snprintf(nbuf[i], sizeof(nbuf[i]), "c%d", i + 1);
		snprintf(cbuf[i], sizeof(cbuf[i]), i % 100 == 0 ? "ssn" : "f%d", i / 5 + 1);
		names[i] = nbuf[i];
		tables[i] = "public.t";
		columns[i] = cbuf[i];
	}
	columns_call(e, &s, N, names, tables, columns, k);
	for (int i = 0; i < N; i++) {
		MaskKind want = i % 100 == 0 ? MASK_REDACT : i / 5 + 1 <= 300 ? MASK_CUSTOM : MASK_NONE;
		cr_assert_eq(k[i], want, "column %d", i);
	}
	policy_session_close(e, &s);
	policy_engine_free(e);
}

/* perf-mask: more column sets than the template cache keeps: masks stay right after it is dropped. */
Test(policy, on_columns_template_cache_overflow)
{
	PolicyEngine *e = engine("many.lua", HEADER
		"P.masks = { ['*.ssn'] = 'redact' }\n"
		"function P.on_columns(s, cols) end\nreturn P\n");
	PolicySession s = session_opened(e);
	enum { NCOLS = 40, SETS = 150 };	/* 6000 columns in all */
	const char *names[NCOLS], *tables[NCOLS], *columns[NCOLS];
	char tbuf[NCOLS][32];
	MaskKind kinds[NCOLS];
	for (int pass = 0; pass < 2; pass++) {
		for (int set = 0; set < SETS; set++) {
			for (int i = 0; i < NCOLS; i++) {
				snprintf(tbuf[i], sizeof(tbuf[i]), "public.t%d", set);
				names[i] = i == set % NCOLS ? "ssn" : "x";
				tables[i] = tbuf[i];
				columns[i] = i == set % NCOLS ? "ssn" : "x";
			}
			columns_call(e, &s, NCOLS, names, tables, columns, kinds);
			for (int i = 0; i < NCOLS; i++)
				cr_assert_eq(kinds[i], i == set % NCOLS ? MASK_REDACT : MASK_NONE,
					     "pass %d set %d column %d", pass, set, i);
		}
	}
	policy_session_close(e, &s);
	policy_engine_free(e);
}

/* perf-mask: the hash mask is keyed only for plans that use it; it still works, and fails closed without a key. */
Test(policy, on_columns_keys_the_hash_mask_when_used)
{
	static const char *const src = HEADER
		"P.masks = { ['t.h'] = 'hash', ['t.r'] = 'redact' }\nreturn P\n";
	PolicyConfig pc;
	policy_config_init(&pc);
	char *key = write_script("key.txt", "a secret hash key\n");
	pc.hash_key_file = xstrdup(key);
	char *path = write_script("hash.lua", src);
	strlist_add(&pc.scripts, path);
	char err[256] = "";
	PolicyEngine *e = policy_engine_new(&pc, err, sizeof(err));
	cr_assert_not_null(e, "%s", err);
	PolicySession s = session_opened(e);
	PolicyDecision d;
	static const char *const names[] = { "h", "r" };
	const char *tables[] = { "public.t", "public.t" };
	const char *columns[] = { "h", "r" };
	MaskPlan plan;
	plan_init(&plan, 2, names);
	cr_assert(policy_on_columns(e, &s, &plan, tables, columns, err, sizeof(err)), "%s", err);
	cr_assert_eq(plan.cols[0].mask, MASK_HASH);
	uint8_t *out = NULL;
	int32_t out_len = 0;
	cr_assert(mask_apply_value(&plan, MASK_HASH, (const uint8_t *)"v", 1, &out, &out_len));
	cr_assert_eq(out_len, MASK_HASH_HEX_LEN);
	free(out);
	mask_plan_free(&plan);
	/* no hash column: no key needed */
	plan_init(&plan, 1, names + 1);
	cr_assert(policy_on_columns(e, &s, &plan, tables + 1, columns + 1, err, sizeof(err)), "%s", err);
	cr_assert_eq(plan.cols[0].mask, MASK_REDACT);
	mask_plan_free(&plan);
	policy_session_close(e, &s);
	policy_engine_free(e);

	/* the same policy without a key: a result with the hash column is refused */
	free(pc.hash_key_file);
	pc.hash_key_file = NULL;
	e = policy_engine_new(&pc, err, sizeof(err));
	cr_assert_not_null(e, "%s", err);
	s = session_new();
	policy_session_open(e, &s, &d);
	policy_decision_free(&d);
	plan_init(&plan, 2, names);
	cr_assert_not(policy_on_columns(e, &s, &plan, tables, columns, err, sizeof(err)));
	mask_plan_free(&plan);
	policy_session_close(e, &s);
	policy_engine_free(e);
	policy_config_free(&pc);
	free(path);
	free(key);
}

/* perf-mask: under the smallest memory_limit the template cache stays small enough to never fail a call. */
Test(policy, on_columns_template_cache_fits_a_small_state)
{
	PolicyEngine *e = engine_cfg(0, 1024 * 1024, POLICY_ENFORCE, "small.lua", HEADER
		"P.masks = { ['*.ssn'] = 'redact' }\n"
		"function P.on_columns(s, cols) end\nreturn P\n", NULL);
	PolicySession s = session_opened(e);
	enum { NCOLS = 60 };
	const char *names[NCOLS], *tables[NCOLS], *columns[NCOLS];
	char tbuf[64], cbuf[NCOLS][64];
	MaskKind kinds[NCOLS];
	for (int set = 0; set < 400; set++) {
		snprintf(tbuf, sizeof(tbuf), "public.a_rather_long_table_name_%d", set);
		for (int i = 0; i < NCOLS; i++) {
			snprintf(cbuf[i], sizeof(cbuf[i]), i == 7 ? "ssn" : "a_long_column_name_%d", i);
			names[i] = columns[i] = cbuf[i];
			tables[i] = tbuf;
		}
		columns_call(e, &s, NCOLS, names, tables, columns, kinds);
		cr_assert_eq(kinds[7], MASK_REDACT, "set %d", set);
	}
	close_without_errors(e, &s);
}

Test(policy, on_columns_cannot_remove_a_declared_mask)
{
	PolicyEngine *e = engine("sneaky.lua", HEADER
		"P.masks = { ['people.email'] = 'email' }\n"
		"function P.on_columns(s, cols) for _, c in ipairs(cols) do c.mask = nil end end\n"
		"return P\n");
	static const char *const names[] = { "email" };
	const char *tables[] = { "people" };
	const char *columns[] = { "email" };
	MaskPlan plan;
	plan_init(&plan, 1, names);
	PolicySession s = session_opened(e);
	char err[256] = "";
	cr_assert_not(policy_on_columns(e, &s, &plan, tables, columns, err, sizeof(err)));
	cr_assert(strstr(err, "cannot be removed") != NULL, "%s", err);
	mask_plan_free(&plan);
	policy_session_close(e, &s);
	policy_engine_free(e);
}

Test(policy, mask_function_overrun_fails_closed)
{
	PolicyEngine *e = engine_cfg(20000, 0, POLICY_ENFORCE, "m.lua", HEADER
		"P.masks = { ['t.c'] = function(v) while true do end end }\nreturn P\n", NULL);
	static const char *const names[] = { "c" };
	const char *tables[] = { "t" };
	const char *columns[] = { "c" };
	MaskPlan plan;
	plan_init(&plan, 1, names);
	PolicySession s = session_opened(e);
	char err[256] = "";
	cr_assert(policy_on_columns(e, &s, &plan, tables, columns, err, sizeof(err)), "%s", err);
	cr_assert_eq(plan.cols[0].mask, MASK_CUSTOM);
	PolicyRowContext ctx = { e, &s };
	uint8_t *out = NULL;
	int32_t out_len = 0;
	cr_assert_not(policy_mask_custom(&ctx, 0, (const uint8_t *)"x", 1, &out, &out_len));
	cr_assert_null(out);
	mask_plan_free(&plan);
	policy_session_close(e, &s);
	policy_engine_free(e);
}

/* -------------------------------------------------------------- config */

Test(policy, yaml_policy_block_fills_policy_config)
{
	char *p = write_script("pgmoat.yaml",
		"listen: { host: 127.0.0.1, port: 6432 }\n"
		"policy:\n"
		"  scripts: [policies/a.lua, /abs/b.lua]\n"
		"  mode: dry_run\n"
		"  time_budget: 20ms\n"
		"  memory_limit: 32MB\n"
		"  hash_key_file: key.txt\n");
	char err[512] = "";
	Config *cfg = config_load(p, err, sizeof(err));
	cr_assert_not_null(cfg, "%s", err);
	cr_assert_eq(cfg->policy.scripts.count, 2);
	char *want = xasprintf("%s/policies/a.lua", tmpdir);
	cr_assert_str_eq(cfg->policy.scripts.items[0], want);
	cr_assert_str_eq(cfg->policy.scripts.items[1], "/abs/b.lua");
	cr_assert_eq(cfg->policy.mode, POLICY_DRY_RUN);
	cr_assert_eq(cfg->policy.time_budget, 20000);
	cr_assert_eq(cfg->policy.memory_limit, 32u * 1024 * 1024);
	free(want);
	config_free(cfg);
	free(p);
}

Test(policy, yaml_policy_unknown_key_is_an_error_with_line)
{
	char *p = write_script("pgmoat.yaml",
		"listen: { host: 127.0.0.1, port: 6432 }\n"
		"policy:\n"
		"  scripts: [a.lua]\n"
		"  time_budgett: 20ms\n");
	char err[512] = "";
	cr_assert_null(config_load(p, err, sizeof(err)));
	cr_assert(strstr(err, "pgmoat.yaml:4") && strstr(err, "time_budgett"), "got: %s", err);
	free(p);
	p = write_script("pgmoat2.yaml", "listen: { host: 127.0.0.1 }\npolicy: { mode: strict }\n");
	cr_assert_null(config_load(p, err, sizeof(err)));
	cr_assert(strstr(err, "pgmoat2.yaml:2") && strstr(err, "mode"), "got: %s", err);
	free(p);
}

Test(policy, on_row_loads_and_replaces_values)
{
	PolicyEngine *e = engine("row.lua",
		"return { on_row = function(s, row, cols)\n"
		"  if cols[1].column == 'secret' then row[1] = 'x' .. #(row[1] or '') end\n"
		"  row[2] = nil\n"
		"end }\n");
	cr_assert(policy_engine_has_on_row(e));
	PolicySession s = session_new();
	PolicyDecision d = { 0 };
	policy_session_open(e, &s, &d);
	policy_decision_free(&d);
	MaskPlan plan;
	/* RowDescription: two text columns, "a" and "b" */
	static const uint8_t rd[] = { 0, 2,
		'a', 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
		'b', 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0 };
	cr_assert(mask_plan_from_row_description(&plan, rd, sizeof(rd)));
	const char *tables[] = { "public.t", "public.t" };
	const char *columns[] = { "secret", "other" };
	char err[256] = "";
	cr_assert(policy_on_columns(e, &s, &plan, tables, columns, err, sizeof(err)), "%s", err);
	const uint8_t *vals[2] = { (const uint8_t *)"hello", (const uint8_t *)"keep" };
	int32_t lens[2] = { 5, 4 };
	bool binary[2] = { false, false };
	uint8_t *out[2] = { NULL, NULL };
	int32_t out_len[2] = { 0, 0 };
	bool changed[2] = { false, false };
	PolicyRow row = { 2, vals, lens, binary, out, out_len, changed };
	cr_assert(policy_on_row(e, &s, &row, err, sizeof(err)), "%s", err);
	cr_assert(changed[0] && out_len[0] == 2 && memcmp(out[0], "x5", 2) == 0);
	cr_assert(changed[1] && out[1] == NULL && out_len[1] == -1);
	free(out[0]);
	/* a binary column cannot be replaced */
	binary[1] = true;
	memset(changed, 0, sizeof(changed));
	out[0] = out[1] = NULL;
	cr_assert_not(policy_on_row(e, &s, &row, err, sizeof(err)));
	cr_assert(strstr(err, "binary"), "got: %s", err);
	cr_assert(out[0] == NULL && out[1] == NULL, "nothing left allocated after a failure");
	mask_plan_free(&plan);
	policy_session_close(e, &s);
	policy_engine_free(e);
}

Test(policy, session_refused_when_claims_are_malformed_too_deep_or_not_an_object)
{
	char deep[256] = "";
	for (int i = 0; i < 40; i++)
		strcat(deep, "[");
	for (int i = 0; i < 40; i++)
		strcat(deep, "]");
	char deep_obj[300];
	snprintf(deep_obj, sizeof(deep_obj), "{\"a\":%s}", deep);
	const char *bad[] = { "{\"sub\":", "[1,2]", "\"x\"", "{\"s\":\"\\ud800\"}", deep_obj };
	PolicyEngine *e = engine("c.lua", HEADER "function P.on_connect(s) end\nreturn P\n");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		PolicySession s = session_new();
		s.claims_json = bad[i];
		PolicyDecision d;
		policy_session_open(e, &s, &d);
		cr_assert_eq(d.verdict, POLICY_DENY, "claims %s", bad[i]);
		cr_assert(d.error, "claims %s", bad[i]);
		policy_decision_free(&d);
		policy_session_close(e, &s);
	}
	/* Nesting within the limit still works. */
	PolicySession ok = session_new();
	ok.claims_json = "{\"a\":[[[{\"b\":null,\"c\":1.5}]]]}";
	PolicyDecision d;
	policy_session_open(e, &ok, &d);
	cr_assert_eq(d.verdict, POLICY_ALLOW);
	policy_decision_free(&d);
	policy_session_close(e, &ok);
	policy_engine_free(e);
}
