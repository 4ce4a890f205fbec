/*
 * pgmoat: the policy sandbox's string.rep, find, match, gmatch and gsub.
 *
 * Lua 5.1's semantics, bounded: rep refuses results over LUASTR_REP_MAX
 * bytes, and the pattern functions count their steps and ask the embedder
 * (luastr_check_budget) every PAT_TICK_MASK+1 of them, so that a
 * backtracking pattern over a row value stops at the call's deadline
 * instead of running for minutes.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "luastr.h"

#define PAT_MAXCAPTURES 32
#define PAT_MAXDEPTH 200		/* matcher recursion (C stack) */
#define PAT_TICK_MASK 1023u		/* matcher steps between budget checks */

static int str_rep(lua_State *L)
{
	size_t l, lsep = 0;
	const char *s = luaL_checklstring(L, 1, &l);
	lua_Number nn = luaL_checknumber(L, 2);
	const char *sep = luaL_optlstring(L, 3, "", &lsep);
	if (nn <= 0 || (l == 0 && lsep == 0)) {
		lua_pushliteral(L, "");
		return 1;
	}
	double total = (double)l * nn + (double)lsep * (nn - 1);
	if (total > LUASTR_REP_MAX)
		return luaL_error(L, "string.rep: result of %.0f bytes is over the %d byte cap", total,
				  LUASTR_REP_MAX);
	size_t n = (size_t)nn;
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			luaL_addlstring(&b, sep, lsep);
		luaL_addlstring(&b, s, l);
	}
	luaL_pushresult(&b);
	return 1;
}


/*
 * Lua 5.1 patterns, written for the sandbox: the same syntax (classes, sets,
 * * + - ?, anchors, captures, %b, %f, back references), but every step is
 * counted and the clock checked every PAT_TICK_MASK+1 steps, so a
 * backtracking pattern stops at the call's deadline instead of running for
 * minutes. Recursion is bounded by PAT_MAXDEPTH.
 */
#define CAP_UNFINISHED (-1)
#define CAP_POSITION (-2)

typedef struct PatState {
	const char *src_init;
	const char *src_end;
	const char *p_end;
	lua_State *L;
	int level;
	int depth;
	unsigned steps;
	struct {
		const char *init;
		ptrdiff_t len;
	} capture[PAT_MAXCAPTURES];
} PatState;

static void pat_tick(PatState *ms)
{
	if ((++ms->steps & PAT_TICK_MASK) == 0)
		luastr_check_budget(ms->L);
}

static void pat_init(PatState *ms, lua_State *L, const char *s, size_t ls, const char *p,
		     size_t lp)
{
	ms->src_init = s;
	ms->src_end = s + ls;
	ms->p_end = p + lp;
	ms->L = L;
	ms->level = 0;
	ms->depth = 0;
	ms->steps = 0;
}

static bool pat_class(int c, int cl)
{
	bool res;
	switch (tolower(cl)) {
	case 'a': res = isalpha(c); break;
	case 'c': res = iscntrl(c); break;
	case 'd': res = isdigit(c); break;
	case 'g': res = isgraph(c); break;	/* LuaJIT 2.1 has Lua 5.2's %g */
	case 'l': res = islower(c); break;
	case 'p': res = ispunct(c); break;
	case 's': res = isspace(c); break;
	case 'u': res = isupper(c); break;
	case 'w': res = isalnum(c); break;
	case 'x': res = isxdigit(c); break;
	case 'z': res = (c == 0); break;
	default: return cl == c;
	}
	return isupper(cl) ? !res : res;
}

/* p points at a single-character class; returns the position after it. */
static const char *pat_class_end(PatState *ms, const char *p)
{
	char c = *p++;
	if (c == '%') {
		if (p >= ms->p_end)
			luaL_error(ms->L, "malformed pattern (ends with '%%')");
		return p + 1;
	}
	if (c != '[')
		return p;
	if (p < ms->p_end && *p == '^')
		p++;
	for (;;) {	/* the first character of a set may be ']' */
		if (p >= ms->p_end)
			luaL_error(ms->L, "malformed pattern (missing ']')");
		c = *p++;
		if (c == '%') {
			if (p >= ms->p_end)
				luaL_error(ms->L, "malformed pattern (missing ']')");
			p++;
		}
		if (p >= ms->p_end)
			luaL_error(ms->L, "malformed pattern (missing ']')");
		if (*p == ']')
			return p + 1;
	}
}

/* p at '[', ec at the closing ']'. */
static bool pat_bracket(int c, const char *p, const char *ec)
{
	bool sig = true;
	if (p[1] == '^') {
		sig = false;
		p++;
	}
	while (++p < ec) {
		if (*p == '%') {
			p++;
			if (pat_class(c, (unsigned char)*p))
				return sig;
		} else if (p + 2 < ec && p[1] == '-') {
			p += 2;
			if ((unsigned char)p[-2] <= c && c <= (unsigned char)*p)
				return sig;
		} else if ((unsigned char)*p == c) {
			return sig;
		}
	}
	return !sig;
}

static bool pat_single(int c, const char *p, const char *ep)
{
	switch (*p) {
	case '.': return true;
	case '%': return pat_class(c, (unsigned char)p[1]);
	case '[': return pat_bracket(c, p, ep - 1);
	default: return (unsigned char)*p == c;
	}
}

static const char *pat_match(PatState *ms, const char *s, const char *p);

static const char *pat_max_expand(PatState *ms, const char *s, const char *p, const char *ep)
{
	ptrdiff_t i = 0;
	while (s + i < ms->src_end && pat_single((unsigned char)s[i], p, ep)) {
		pat_tick(ms);
		i++;
	}
	for (; i >= 0; i--) {
		pat_tick(ms);
		const char *res = pat_match(ms, s + i, ep + 1);
		if (res)
			return res;
	}
	return NULL;
}

static const char *pat_min_expand(PatState *ms, const char *s, const char *p, const char *ep)
{
	for (;;) {
		pat_tick(ms);
		const char *res = pat_match(ms, s, ep + 1);
		if (res)
			return res;
		if (s < ms->src_end && pat_single((unsigned char)*s, p, ep))
			s++;
		else
			return NULL;
	}
}

static const char *pat_start_capture(PatState *ms, const char *s, const char *p, ptrdiff_t what)
{
	if (ms->level >= PAT_MAXCAPTURES)
		luaL_error(ms->L, "too many captures");
	ms->capture[ms->level].init = s;
	ms->capture[ms->level].len = what;
	ms->level++;
	const char *res = pat_match(ms, s, p);
	if (!res)
		ms->level--;
	return res;
}

static const char *pat_end_capture(PatState *ms, const char *s, const char *p)
{
	int l = ms->level - 1;
	while (l >= 0 && ms->capture[l].len != CAP_UNFINISHED)
		l--;
	if (l < 0)
		luaL_error(ms->L, "invalid pattern capture");
	ms->capture[l].len = s - ms->capture[l].init;
	const char *res = pat_match(ms, s, p);
	if (!res)
		ms->capture[l].len = CAP_UNFINISHED;
	return res;
}

static const char *pat_balance(PatState *ms, const char *s, const char *p)
{
	if (p + 1 >= ms->p_end)
		luaL_error(ms->L, "missing arguments to '%%b'");
	if (s >= ms->src_end || *s != *p)
		return NULL;
	char b = p[0], e = p[1];
	int cont = 1;
	while (++s < ms->src_end) {
		pat_tick(ms);
		if (*s == e) {
			if (--cont == 0)
				return s + 1;
		} else if (*s == b) {
			cont++;
		}
	}
	return NULL;
}

static const char *pat_backref(PatState *ms, const char *s, int l)
{
	l -= '1';
	if (l < 0 || l >= ms->level || ms->capture[l].len == CAP_UNFINISHED)
		luaL_error(ms->L, "invalid capture index");
	if (ms->capture[l].len == CAP_POSITION)
		return NULL;	/* as LuaJIT: a position never matches text */
	size_t len = (size_t)ms->capture[l].len;
	if ((size_t)(ms->src_end - s) >= len && memcmp(ms->capture[l].init, s, len) == 0)
		return s + len;
	return NULL;
}

static const char *pat_frontier(PatState *ms, const char *s, const char **pp)
{
	const char *p = *pp;
	if (p >= ms->p_end || *p != '[')
		luaL_error(ms->L, "missing '[' after '%%f' in pattern");
	const char *ep = pat_class_end(ms, p);
	int prev = (s == ms->src_init) ? 0 : (unsigned char)s[-1];
	int cur = (s < ms->src_end) ? (unsigned char)*s : 0;
	*pp = ep;
	if (!pat_bracket(prev, p, ep - 1) && pat_bracket(cur, p, ep - 1))
		return s;
	return NULL;
}

static const char *pat_match(PatState *ms, const char *s, const char *p)
{
	if (++ms->depth > PAT_MAXDEPTH)
		luaL_error(ms->L, "pattern too complex");
	for (;;) {
		pat_tick(ms);
		if (p == ms->p_end)
			break;
		if (*p == '(') {
			if (p + 1 < ms->p_end && p[1] == ')')
				s = pat_start_capture(ms, s, p + 2, CAP_POSITION);
			else
				s = pat_start_capture(ms, s, p + 1, CAP_UNFINISHED);
			break;
		}
		if (*p == ')') {
			s = pat_end_capture(ms, s, p + 1);
			break;
		}
		if (*p == '$' && p + 1 == ms->p_end) {
			s = (s == ms->src_end) ? s : NULL;
			break;
		}
		if (*p == '%' && p + 1 < ms->p_end) {
			if (p[1] == 'b') {
				s = pat_balance(ms, s, p + 2);
				if (!s)
					break;
				p += 4;
				continue;
			}
			if (p[1] == 'f') {
				p += 2;
				s = pat_frontier(ms, s, &p);
				if (!s)
					break;
				continue;
			}
			if (isdigit((unsigned char)p[1])) {
				s = pat_backref(ms, s, (unsigned char)p[1]);
				if (!s)
					break;
				p += 2;
				continue;
			}
		}
		const char *ep = pat_class_end(ms, p);
		bool m = s < ms->src_end && pat_single((unsigned char)*s, p, ep);
		if (ep < ms->p_end) {
			if (*ep == '?') {
				const char *res = m ? pat_match(ms, s + 1, ep + 1) : NULL;
				if (res) {
					s = res;
					break;
				}
				p = ep + 1;
				continue;
			}
			if (*ep == '*') {
				s = pat_max_expand(ms, s, p, ep);
				break;
			}
			if (*ep == '+') {
				s = m ? pat_max_expand(ms, s + 1, p, ep) : NULL;
				break;
			}
			if (*ep == '-') {
				s = pat_min_expand(ms, s, p, ep);
				break;
			}
		}
		if (!m) {
			s = NULL;
			break;
		}
		s++;
		p = ep;
	}
	ms->depth--;
	return s;
}

static void pat_push_capture(PatState *ms, int i, const char *s, const char *e)
{
	if (i >= ms->level) {
		if (i != 0)
			luaL_error(ms->L, "invalid capture index");
		lua_pushlstring(ms->L, s, (size_t)(e - s));
		return;
	}
	ptrdiff_t l = ms->capture[i].len;
	if (l == CAP_UNFINISHED)
		luaL_error(ms->L, "unfinished capture");
	if (l == CAP_POSITION)
		lua_pushinteger(ms->L, ms->capture[i].init - ms->src_init + 1);
	else
		lua_pushlstring(ms->L, ms->capture[i].init, (size_t)l);
}

static int pat_push_captures(PatState *ms, const char *s, const char *e)
{
	int n = (ms->level == 0 && s) ? 1 : ms->level;
	luaL_checkstack(ms->L, n, "too many captures");
	for (int i = 0; i < n; i++)
		pat_push_capture(ms, i, s, e);
	return n;
}

static bool pat_has_specials(const char *p, size_t lp)
{
	for (size_t i = 0; i < lp; i++)
		if (strchr("^$*+?.([%-", p[i]) && p[i] != '\0')
			return true;
	return false;
}

static ptrdiff_t pat_posrelat(ptrdiff_t pos, size_t len)
{
	return pos >= 0 ? pos : (ptrdiff_t)len + pos + 1;
}

static int str_find_aux(lua_State *L, bool find)
{
	size_t ls, lp;
	const char *s = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	ptrdiff_t init = pat_posrelat(luaL_optinteger(L, 3, 1), ls) - 1;
	/* Lua 5.1 (and so LuaJIT) clamps a start past the end to the end. */
	if (init < 0)
		init = 0;
	else if ((size_t)init > ls)
		init = (ptrdiff_t)ls;
	if (find && (lua_toboolean(L, 4) || !pat_has_specials(p, lp))) {
		const char *hit = lp == 0 ? s + init : memmem(s + init, ls - (size_t)init, p, lp);
		if (!hit) {
			lua_pushnil(L);
			return 1;
		}
		lua_pushinteger(L, hit - s + 1);
		lua_pushinteger(L, hit - s + (ptrdiff_t)lp);
		return 2;
	}
	PatState ms;
	bool anchor = lp > 0 && *p == '^';
	if (anchor) {
		p++;
		lp--;
	}
	pat_init(&ms, L, s, ls, p, lp);
	const char *s1 = s + init;
	do {
		ms.level = 0;
		ms.depth = 0;
		const char *e = pat_match(&ms, s1, p);
		if (e) {
			if (!find)
				return pat_push_captures(&ms, s1, e);
			lua_pushinteger(L, s1 - s + 1);
			lua_pushinteger(L, e - s);
			return pat_push_captures(&ms, NULL, NULL) + 2;
		}
	} while (s1++ < ms.src_end && !anchor);
	lua_pushnil(L);
	return 1;
}

static int str_find(lua_State *L)
{
	return str_find_aux(L, true);
}

static int str_match(lua_State *L)
{
	return str_find_aux(L, false);
}

static int str_gmatch_next(lua_State *L)
{
	size_t ls, lp;
	const char *s = lua_tolstring(L, lua_upvalueindex(1), &ls);
	const char *p = lua_tolstring(L, lua_upvalueindex(2), &lp);
	PatState ms;
	pat_init(&ms, L, s, ls, p, lp);
	for (const char *src = s + lua_tointeger(L, lua_upvalueindex(3)); src <= ms.src_end; src++) {
		ms.level = 0;
		ms.depth = 0;
		const char *e = pat_match(&ms, src, p);
		if (e) {
			ptrdiff_t next = e - s;
			if (e == src)
				next++;	/* empty match: move on */
			lua_pushinteger(L, next);
			lua_replace(L, lua_upvalueindex(3));
			return pat_push_captures(&ms, src, e);
		}
	}
	return 0;
}

static int str_gmatch(lua_State *L)
{
	luaL_checkstring(L, 1);
	luaL_checkstring(L, 2);
	lua_settop(L, 2);
	lua_pushinteger(L, 0);
	lua_pushcclosure(L, str_gmatch_next, 3);
	return 1;
}

static void gsub_add_s(PatState *ms, luaL_Buffer *b, const char *s, const char *e)
{
	size_t l;
	const char *news = lua_tolstring(ms->L, 3, &l);
	/* i may reach l: a lone '%' at the end adds the terminating NUL, as in LuaJIT */
	for (size_t i = 0; i < l; i++) {
		if (news[i] != '%') {
			luaL_addchar(b, news[i]);
			continue;
		}
		i++;
		if (!isdigit((unsigned char)news[i])) {
			luaL_addchar(b, news[i]);
		} else if (news[i] == '0') {
			luaL_addlstring(b, s, (size_t)(e - s));
		} else {
			pat_push_capture(ms, news[i] - '1', s, e);
			luaL_addvalue(b);
		}
	}
}

static void gsub_add_value(PatState *ms, luaL_Buffer *b, const char *s, const char *e)
{
	lua_State *L = ms->L;
	switch (lua_type(L, 3)) {
	case LUA_TNUMBER:
	case LUA_TSTRING:
		gsub_add_s(ms, b, s, e);
		return;
	case LUA_TFUNCTION: {
		lua_pushvalue(L, 3);
		int n = pat_push_captures(ms, s, e);
		lua_call(L, n, 1);
		break;
	}
	default:	/* table */
		pat_push_capture(ms, 0, s, e);
		lua_gettable(L, 3);
		break;
	}
	if (!lua_toboolean(L, -1)) {
		lua_pop(L, 1);
		lua_pushlstring(L, s, (size_t)(e - s));
	} else if (!lua_isstring(L, -1)) {
		luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
	}
	luaL_addvalue(b);
}

static int str_gsub(lua_State *L)
{
	size_t srcl, lp;
	const char *src = luaL_checklstring(L, 1, &srcl);
	const char *p = luaL_checklstring(L, 2, &lp);
	int tr = lua_type(L, 3);
	lua_Integer max_s = luaL_optinteger(L, 4, (lua_Integer)srcl + 1);
	luaL_argcheck(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION ||
				 tr == LUA_TTABLE, 3, "string/function/table expected");
	bool anchor = lp > 0 && *p == '^';
	if (anchor) {
		p++;
		lp--;
	}
	PatState ms;
	pat_init(&ms, L, src, srcl, p, lp);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	lua_Integer n = 0;
	while (n < max_s) {
		ms.level = 0;
		ms.depth = 0;
		const char *e = pat_match(&ms, src, p);
		if (e) {
			n++;
			gsub_add_value(&ms, &b, src, e);
		}
		if (e && e > src)
			src = e;
		else if (src < ms.src_end)
			luaL_addchar(&b, *src++);
		else
			break;
		if (anchor)
			break;
		pat_tick(&ms);
	}
	luaL_addlstring(&b, src, (size_t)(ms.src_end - src));
	luaL_pushresult(&b);
	lua_pushinteger(L, n);
	return 2;
}

const luaL_Reg luastr_bounded[] = {
	{ "rep", str_rep }, { "find", str_find }, { "match", str_match },
	{ "gmatch", str_gmatch }, { "gsub", str_gsub }, { NULL, NULL },
};
