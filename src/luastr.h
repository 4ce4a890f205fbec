#ifndef PGMOAT_LUASTR_H
#define PGMOAT_LUASTR_H

#include <lua.h>
#include <lauxlib.h>

#define LUASTR_REP_MAX (1024 * 1024)	/* bytes string.rep may produce */

/* rep, find, match, gmatch, gsub; NULL-terminated, for the string table. */
extern const luaL_Reg luastr_bounded[];

/*
 * Provided by the embedder: called every so many matching steps; raises a
 * Lua error once the running call has spent its time budget.
 */
void luastr_check_budget(lua_State *L);

#endif
