/*
 * Differential check of luastr.c against LuaJIT's own string library, shared
 * by test/unit/test_luastr.c and test/fuzz/fuzz_luastr.c.
 *
 * luastr_diff_open(L) leaves on the stack a Lua function
 *     check(s, p, init, repl) -> nil, or the name of the first call whose
 *                               results differ, and both results
 * that runs find (plain and not), match, gmatch and gsub (string, table and
 * function replacements) through both libraries and compares every returned
 * value. An error on both sides counts as agreement (the messages may
 * differ), except that "too complex" errors are skipped: the two recursion
 * limits are counted differently. luastr runs first: when it stops with
 * "budget spent" (the includer's luastr_check_budget), the rest of the case
 * is skipped, since LuaJIT's matcher would take as long, unbounded.
 */
#ifndef PGMOAT_TEST_LUASTR_DIFF_H
#define PGMOAT_TEST_LUASTR_DIFF_H

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

/* the includer has included luastr.h (its path differs between unit and fuzz builds) */

static const char luastr_diff_lua[] =
	"local R, B = ...\n"
	"local function pack(ok, ...) return { ok = ok, n = select('#', ...), ... } end\n"
	"local function show(r)\n"
	"  local t = {}\n"
	"  for i = 1, r.n do t[#t + 1] = tostring(r[i]) end\n"
	"  return (r.ok and 'ok ' or 'error ') .. table.concat(t, ', ')\n"
	"end\n"
	"local function complex(r) return not r.ok and tostring(r[1]):find('complex', 1, true) end\n"
	"local function same(a, b)\n"
	"  if complex(a) or complex(b) then return true end\n"
	"  if a.ok ~= b.ok then return false end\n"
	"  if not a.ok then return true end\n"
	"  if a.n ~= b.n then return false end\n"
	"  for i = 1, a.n do if a[i] ~= b[i] then return false end end\n"
	"  return true\n"
	"end\n"
	"local function all(lib, s, p)\n"
	"  local out, it = {}, lib.gmatch(s, p)\n"
	"  for _ = 1, 64 do\n"
	"    local r = pack(it())\n"
	"    if r[1] == nil then break end\n"
	"    for i = 1, r.n do out[#out + 1] = tostring(r[i]) end\n"
	"    out[#out + 1] = '|'\n"
	"  end\n"
	"  return table.concat(out, ',')\n"
	"end\n"
	"local function upper(...) return select('#', ...) > 0 and tostring((...)):upper() or nil end\n"
	"local map = setmetatable({}, { __index = function(_, k) return #tostring(k) % 2 == 0 and k .. k or false end })\n"
	"return function(s, p, init, repl)\n"
	"  local calls = {\n"
	"    { 'find', function(L) return L.find(s, p, init) end },\n"
	"    { 'find plain', function(L) return L.find(s, p, init, true) end },\n"
	"    { 'match', function(L) return L.match(s, p, init) end },\n"
	"    { 'gmatch', function(L) return all(L, s, p) end },\n"
	"    { 'gsub string', function(L) return L.gsub(s, p, repl) end },\n"
	"    { 'gsub max', function(L) return L.gsub(s, p, repl, 2) end },\n"
	"    { 'gsub table', function(L) return L.gsub(s, p, map) end },\n"
	"    { 'gsub function', function(L) return L.gsub(s, p, upper) end },\n"
	"  }\n"
	"  for _, c in ipairs(calls) do\n"
	"    local b = pack(pcall(c[2], B))\n"
	"    if not b.ok and tostring(b[1]):find('budget spent', 1, true) then return end\n"
	"    local a = pack(pcall(c[2], R))\n"
	"    if not same(a, b) then return c[1], show(a), show(b) end\n"
	"  end\n"
	"end\n";

/* Pushes the check function; returns 0, or -1 with the error on the stack. */
static int luastr_diff_open(lua_State *L)
{
	luaL_openlibs(L);
	if (luaL_loadbuffer(L, luastr_diff_lua, sizeof(luastr_diff_lua) - 1, "=luastr_diff") != 0)
		return -1;
	lua_getglobal(L, "string");
	lua_newtable(L);
	luaL_register(L, NULL, luastr_bounded);
	return lua_pcall(L, 2, 1, 0) == 0 ? 0 : -1;
}

#endif
