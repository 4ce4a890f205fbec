/*
 * luastr.c against LuaJIT's own string library (test/common/luastr_diff.h):
 * hand-picked cases for every pattern feature and error, then seeded random
 * patterns; and the two bounds, string.rep's size and the matcher's budget.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <criterion/criterion.h>

#include "src/luastr.h"
#include "test/common/luastr_diff.h"

#define RANDOM_CASES 20000

static bool budget_spent;
static unsigned budget_checks;

void luastr_check_budget(lua_State *L)
{
	budget_checks++;
	if (budget_spent)
		luaL_error(L, "budget spent");
}

static lua_State *diff_state(void)
{
	lua_State *L = luaL_newstate();
	cr_assert_not_null(L);
	cr_assert_eq(luastr_diff_open(L), 0, "%s", lua_tostring(L, -1));
	return L;
}

/* Runs the check function (left on the stack by diff_state) on one case. */
static void expect_same(lua_State *L, const char *s, const char *p, int init, const char *repl)
{
	lua_pushvalue(L, -1);
	lua_pushstring(L, s);
	lua_pushstring(L, p);
	lua_pushinteger(L, init);
	lua_pushstring(L, repl);
	cr_assert_eq(lua_pcall(L, 4, 3, 0), 0, "%s", lua_tostring(L, -1));
	cr_expect(lua_isnil(L, -3), "s=\"%s\" p=\"%s\" init=%d repl=\"%s\": %s differs: LuaJIT %s, luastr %s",
		  s, p, init, repl, lua_tostring(L, -3), lua_tostring(L, -2), lua_tostring(L, -1));
	lua_pop(L, 3);
}

Test(luastr, agrees_with_luajit_on_every_feature)
{
	static const struct { const char *s, *p, *repl; int init; } cases[] = {
		{ "hello world", "o w", "%0%0", 1 },
		{ "hello world", "l+", "<%0>", 1 },
		{ "hello world", "l+", "x", -3 },
		{ "hello world", "l+", "x", 40 },
		{ "hello world", "l+", "x", -40 },
		{ "a.b", ".", "%%", 1 },
		{ "a.b", "%.", "", 1 },
		{ "key = value", "(%w+)%s*=%s*(%w+)", "%2=%1", 1 },
		{ "  trim  ", "^%s*(.-)%s*$", "[%1]", 1 },
		{ "x(a(b)c)y", "%b()", "B", 1 },
		{ "x(a(b)c", "%b()", "B", 1 },
		{ "THE (quick) fox", "%f[%a]%a+", "W", 1 },
		{ "THE (quick) fox", "%f[%A]", "|", 1 },
		{ "abcabc", "(abc)%1", "%1", 1 },
		{ "hello", "()ll()", "%1-%2", 1 },
		{ "2024-01-02", "^(%d+)-(%d+)-(%d+)$", "%3/%2/%1", 1 },
		{ "a]b", "[]]", "R", 1 },
		{ "x-y", "[%-]", "M", 1 },
		{ "x-y", "[a-z]", "L", 1 },
		{ "x-y", "[^a-z]", "N", 1 },
		{ "aaa", "a-", "-", 1 },
		{ "aaa", "a-b", "-", 1 },
		{ "aaab", "a-b", "-", 1 },
		{ "aaa", "a?", "?", 1 },
		{ "", "", "e", 1 },
		{ "", "x*", "e", 1 },
		{ "abc", "", "-", 1 },
		{ "abc", "$", "$", 1 },
		{ "a$c", "a$c", "$", 1 },
		{ "^abc", "^^", "c", 1 },
		{ "abc^", "c^", "c", 1 },
		{ "tab\there", "%c", "C", 1 },
		{ "MiXeD 42!", "%u%l", "ul", 1 },
		{ "MiXeD 42!", "%p", "P", 1 },
		{ "MiXeD 42!", "%g+", "G", 1 },
		{ "MiXeD 42!", "%x+", "X", 1 },
		{ "MiXeD 42!", "[%d%s]+", "_", 1 },
		{ "nul", "%z", "Z", 1 },
		{ "card 4111-1111-1111-1111", "%d%d%d%d%-", "****-", 1 },
		{ "user@example.com", "^[^@]+", "***", 1 },
		/* malformed patterns: both sides must raise */
		{ "abc", "%", "x", 1 },
		{ "abc", "[a", "x", 1 },
		{ "abc", "[a%", "x", 1 },
		{ "abc", "(a", "x", 1 },
		{ "abc", "a)", "x", 1 },
		{ "abc", "%b", "x", 1 },
		{ "abc", "%ba", "x", 1 },
		{ "abc", "%f", "x", 1 },
		{ "abc", "(a)%2", "x", 1 },
		{ "abc", "%1", "x", 1 },
		{ "abc", "(a)", "%2", 1 },
		{ "abc", "(a)", "%", 1 },
		{ "abc", "((((((((((((((((((((((((((((((((((a))))))))))))))))))))))))))))))))))", "x", 1 },
	};
	lua_State *L = diff_state();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_same(L, cases[i].s, cases[i].p, cases[i].init, cases[i].repl);
	lua_close(L);
}

static uint32_t next_random(uint32_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 17;
	*state ^= *state << 5;
	return *state;
}

static void random_string(uint32_t *state, const char *const *atoms, size_t natoms, size_t max_atoms,
			  char *out, size_t outsz)
{
	size_t n = next_random(state) % (max_atoms + 1);
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		const char *a = atoms[next_random(state) % natoms];
		if (strlen(out) + strlen(a) + 1 > outsz)
			break;
		strcat(out, a);
	}
}

Test(luastr, agrees_with_luajit_on_random_patterns)
{
	static const char *const pattern_atoms[] = {
		"a", "b", ".", "%a", "%d", "%s", "[ab]", "[^a]", "[a-c]", "a*", "b+", ".-", "a?", "%w*", "%g",
		"(", ")", "()", "%1", "^", "$", "%b()", "%f[%w]", "[%a-]", "%", "]", "x",
	};
	static const char *const subject_atoms[] = { "a", "b", "aa", "(", ")", "1", " ", "-", "x", "ab" };
	static const char *const repl_atoms[] = { "r", "%0", "%1", "%%", "-" };
	uint32_t state = 0x9e3779b9u;
	lua_State *L = diff_state();
	for (int i = 0; i < RANDOM_CASES; i++) {
		char p[64], s[64], repl[16];
		random_string(&state, pattern_atoms, sizeof(pattern_atoms) / sizeof(pattern_atoms[0]), 6, p,
			      sizeof(p));
		random_string(&state, subject_atoms, sizeof(subject_atoms) / sizeof(subject_atoms[0]), 10, s,
			      sizeof(s));
		random_string(&state, repl_atoms, sizeof(repl_atoms) / sizeof(repl_atoms[0]), 2, repl,
			      sizeof(repl));
		int init = (int)(next_random(&state) % 15) - 4;
		expect_same(L, s, p, init, repl);
	}
	lua_close(L);
}

/* Leaves the bounded library's table on the stack of a fresh state. */
static lua_State *bounded_state(void)
{
	lua_State *L = luaL_newstate();
	cr_assert_not_null(L);
	luaL_openlibs(L);
	lua_newtable(L);
	luaL_register(L, NULL, luastr_bounded);
	lua_setglobal(L, "B");
	return L;
}

static const char *run(lua_State *L, const char *chunk)
{
	if (luaL_dostring(L, chunk) != 0)
		return lua_tostring(L, -1);
	return NULL;
}

Test(luastr, backtracking_asks_the_budget_and_stops_when_it_is_spent)
{
	lua_State *L = bounded_state();
	const char *backtrack = "return B.find(('a'):rep(24), ('a*'):rep(8) .. 'b')";
	budget_spent = false;
	budget_checks = 0;
	cr_assert_null(run(L, backtrack));
	cr_expect(lua_isnil(L, -1), "no match expected");
	cr_expect_gt(budget_checks, 100, "the matcher asked the budget %u times", budget_checks);

	budget_spent = true;
	const char *err = run(L, backtrack);
	cr_assert_not_null(err);
	cr_expect(strstr(err, "budget spent") != NULL, "%s", err);
	err = run(L, "return B.gsub(('a'):rep(24), ('a-'):rep(8) .. 'b', 'x')");
	cr_expect(err && strstr(err, "budget spent"), "gsub: %s", err ? err : "no error");
	budget_spent = false;

	/* a short match never reaches a check */
	budget_checks = 0;
	cr_assert_null(run(L, "return B.match('key=value', '(%w+)=(%w+)')"));
	cr_expect_eq(budget_checks, 0);
	lua_close(L);
}

Test(luastr, rep_is_capped_and_otherwise_like_luajit)
{
	lua_State *L = bounded_state();
	cr_assert_null(run(L, "assert(B.rep('ab', 3, ',') == string.rep('ab', 3, ','))\n"
			      "assert(B.rep('ab', 0) == '' and B.rep('', 5) == '' and B.rep('x', -1) == '')\n"
			      "assert(#B.rep('x', 1024 * 1024) == 1024 * 1024)"));
	const char *err = run(L, "return B.rep('x', 1024 * 1024 + 1)");
	cr_assert_not_null(err);
	cr_expect(strstr(err, "cap") != NULL, "%s", err);
	err = run(L, "return B.rep('ab', 1e15, ',')");
	cr_expect(err && strstr(err, "cap"), "%s", err ? err : "no error");
	lua_close(L);
}
