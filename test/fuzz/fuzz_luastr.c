/*
 * luastr.c (the policy sandbox's find/match/gmatch/gsub) against LuaJIT's own
 * string library, on patterns and subjects from the fuzzer: both must give
 * the same results, or both raise (test/common/luastr_diff.h). A row value a
 * policy matches is untrusted; so, for this target, is the pattern.
 * Input: init byte, then subject \0 pattern \0 replacement.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "luastr.h"
#include "../test/common/luastr_diff.h"

#define MAX_PART 256
#define BUDGET_CHECKS 64	/* x 1024 matcher steps per input */

static unsigned budget_checks;

void luastr_check_budget(lua_State *L)
{
	if (++budget_checks > BUDGET_CHECKS)
		luaL_error(L, "budget spent");
}

static lua_State *diff_state(void)
{
	static lua_State *L;
	if (!L) {
		L = luaL_newstate();
		if (!L || luastr_diff_open(L) != 0)
			abort();
	}
	return L;
}

/* Pushes the next \0-terminated part (or the rest), at most MAX_PART bytes of it. */
static void push_part(lua_State *L, const uint8_t **data, size_t *size)
{
	const uint8_t *nul = memchr(*data, 0, *size);
	size_t len = nul ? (size_t)(nul - *data) : *size;
	lua_pushlstring(L, (const char *)*data, len > MAX_PART ? MAX_PART : len);
	size_t used = nul ? len + 1 : len;
	*data += used;
	*size -= used;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	lua_State *L = diff_state();
	int base = lua_gettop(L);
	int init = (int)(int8_t)data[0];
	data++;
	size--;
	lua_pushvalue(L, base);
	push_part(L, &data, &size);	/* subject */
	push_part(L, &data, &size);	/* pattern */
	lua_pushinteger(L, init);
	push_part(L, &data, &size);	/* replacement */
	budget_checks = 0;
	if (lua_pcall(L, 4, 3, 0) != 0)
		abort();	/* the harness itself failed */
	if (!lua_isnil(L, -3)) {
		fprintf(stderr, "%s differs: LuaJIT %s, luastr %s\n", lua_tostring(L, -3), lua_tostring(L, -2),
			lua_tostring(L, -1));
		abort();
	}
	lua_settop(L, base);
	lua_gc(L, LUA_GCSTEP, 0);
	return 0;
}
