/*
 * The Lua policy engine: loading, sandbox, budgets, and the hooks.
 *
 * Safety model (doc/policies.md has the user-facing version):
 * - Scripts are loaded as text only and run in a per-script environment built
 *   from an allow-list; unknown globals raise on read and on write.
 * - The JIT is off for the policy state, so a count hook stops every loop. It
 *   is installed only once a call is past its deadline, by the watchdog (a
 *   thread that signals the thread running an overdue call; see "watchdog"),
 *   and then raises on every instruction. pcall/xpcall are wrapped so they
 *   re-raise budget and memory errors instead of swallowing them.
 * - The allocator given to lua_newstate (GC64 LuaJIT accepts one) refuses to
 *   grow past memory_limit (the small blocks it keeps for reuse are not counted).
 * - string.find/match/gmatch/gsub are replaced by a matcher (policy_pat.c
 *   semantics, Lua 5.1 patterns) that counts its steps and checks the same
 *   deadline, because C pattern matching never reaches the hook; string.rep
 *   is capped.
 * - Every entry point runs inside a protected call (lua_cpcall, or lua_pcall of
 *   a C function made with the state), so an allocation failure while
 *   building arguments is an error, never a panic. Any failure is a DENY with
 *   file:line; an overrun (time or memory) recreates the state.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <luajit.h>
#include <jansson.h>
#include <openssl/sha.h>

#include "policy.h"
#include "histogram.h"
#include "sqlinfo.h"
#include "log.h"
#include "luastr.h"

#define HOOK_TICK 1000			/* VM instructions between clock checks */
#define WATCHDOG_MIN_PERIOD 1000	/* usec between the watchdog's looks, at least... */
#define WATCHDOG_MAX_PERIOD 10000	/* ... and at most (else a quarter of the least time_budget) */
#define JSON_MAX_DEPTH 32
#define SQLINFO_CACHE_SIZE 1024
#define WHERE_LEN 128
#define COLS_CACHE_MAX_COLS 4096	/* columns in on_columns templates, over all kept */
#define COLS_CACHE_COL_SHARE 8192	/* ... and at most one per this many bytes of memory_limit */
/* The allocator's free lists (engine_alloc): blocks of up to POOL_CLASSES * POOL_GRAIN bytes. */
#define POOL_GRAIN 16
#define POOL_CLASSES 16
#if defined(__SANITIZE_ADDRESS__)
#define POOL_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_UNDER_ASAN 1		/* (clang's spelling) */
#endif
#endif
#ifdef POOL_UNDER_ASAN
#define POOL_KEEP_BYTES 0		/* let ASan see every free */
#else
#define POOL_KEEP_BYTES (1024 * 1024)	/* held in all: a collection frees in bursts */
#endif
#define GC_PAUSE_DEFAULT 200		/* Lua's: a cycle starts when the heap doubles */
#define GC_PAUSE_SMALL 400		/* ... and ours while the heap is small (engine_tune_gc) */

/* q's fields (see QField below) and the kinds kept interned (q_push_kind) */
#define QF_COUNT 14
#define Q_KINDS_KEPT 8

enum { HOOK_CONNECT, HOOK_QUERY, HOOK_COLUMNS, HOOK_ROW, HOOK_DISCONNECT, HOOK_COUNT };
static const char *const hook_names[HOOK_COUNT] = {
	"on_connect", "on_query", "on_columns", "on_row", "on_disconnect",
};

typedef struct Script {
	char *path;		/* as configured (resolved) */
	char *name;		/* file name: chunk name, PolicyDecision.policy */
	int hooks[HOOK_COUNT];	/* registry refs, LUA_NOREF when not defined */
} Script;

struct PolicyEngine {
	PolicyConfig cfg;	/* own copy: the state is recreated from it */
	lua_State *L;		/* NULL after a failed recreation: every call denies */
	uint64_t generation;	/* bumped per state, so sessions notice a new one */
	Script *scripts;
	int nscripts;
	bool any_hook[HOOK_COUNT];
	bool any_masks;		/* some P.masks entry exists */
	bool allow_unparsed;	/* some policy set P.allow_unparsed = true */
	int masks_ref;		/* merged P.masks: key -> name or function */
	int decision_mt_ref;	/* metatable marking moat.* decisions */
	SqlInfoCache *cache;
	uint8_t hash_key[32];
	size_t hash_key_len;
	bool trace;
	/* Masking on the wire: the P.masks keys, for the statement-time guard. */
	StrList mask_keys;

	/* per call (in_call and deadline also read by the watchdog: __atomic) */
	bool in_call;		/* between engine_enter and engine_leave: the hook counts */
	usec_t deadline;
	bool overrun;		/* time budget exceeded: the hook keeps raising */
	bool mem_failed;	/* the allocator refused: treated like an overrun */
	char where[WHERE_LEN];	/* file:line of the first failure in this call */

	size_t mem_used;
	PolicyStats stats;

	/* policy timing (SHOW POLICY_STATS): on_query's time in Lua; NULL: not recorded */
	struct Histogram *lua_time;

	/* on_columns' column tables, built once per column set (columns_template) */
	int cols_cache_ref;	/* key -> template; LUA_NOREF until first use in this state */
	int cols_cache_cols;	/* columns held there (bounded by COLS_CACHE_MAX_COLS) */
	char *cols_key;		/* columns_key's buffer, reused */
	size_t cols_key_cap;
	/* (policy cost) the last column set's key and template: most results repeat it */
	char *cols_last_key;
	size_t cols_last_cap, cols_last_len;
	int cols_last_ref;	/* its template; LUA_NOREF: none in this state */
	int cols_fn_ref;	/* columns_run as a Lua function, made once per state */

	/* (policy cost) names this set of mask_keys for memos of the guard's verdict
	 * (maskguard_check_memo): unique across engines and states; 0 while none */
	uint64_t mask_keys_gen;
	int gc_pause;		/* the state's LUA_GCSETPAUSE (engine_leave) */
	/* (policy cost) small blocks the state freed, by size class (engine_alloc) */
	struct PoolBlock *pool[POOL_CLASSES];
	size_t pool_bytes;	/* held there, at most POOL_KEEP_BYTES */

	/* C functions made once per state (registry refs), so that a call allocates
	 * no closure (lua_cpcall makes one per call): on_query's, and the message handler. */
	int query_run_ref;
	int msgh_ref;

	/* (policy cost 2) q's field names as the state interned them: a key is one of
	 * them exactly when it is the same string object (every Lua string is
	 * interned), so q's __index compares pointers, not bytes. Anchored by
	 * q_names_ref; q's metatable by q_mt_ref (no hashed registry read per q). */
	const char *q_names[QF_COUNT];
	int q_names_ref;
	int q_mt_ref;
	/* ... and the last few kinds pushed (sqlinfo's static strings), as Lua strings */
	const char *kind_ptr[Q_KINDS_KEPT];
	int kind_ref[Q_KINDS_KEPT];
	int kind_next;		/* the slot the next new kind replaces */

	/* (policy cost 5) the argument of the C function engine_cpcall runs: read
	 * from here, not passed as a light userdata (GC64 LuaJIT interns each one
	 * pushed, and lua_touserdata resolves it back) */
	void *call_arg;
	/* (policy cost 5) the watchdog (see there): the thread in the call, and
	 * whether its signal installed the count hook in this call */
	pthread_t call_thread;
	volatile sig_atomic_t wd_armed;
	bool wd_registered;
	uint64_t call_seq;	/* counts calls (engine_call_begin), for the watchdog */
	uint64_t wd_overdue_seq;	/* the watchdog's: the call it last found overdue */
	/* (idle watchdog) the watchdog's: call_seq at its last look; unchanged
	 * and no call in flight means this engine was idle since */
	uint64_t wd_seen_seq;
};

/* ------------------------------------------------------------- config */

void policy_config_init(PolicyConfig *pc)
{
	memset(pc, 0, sizeof(*pc));
	pc->mode = POLICY_ENFORCE;
	pc->time_budget = POLICY_DEFAULT_TIME_BUDGET;
	pc->memory_limit = POLICY_DEFAULT_MEMORY_LIMIT;
}

void policy_config_free(PolicyConfig *pc)
{
	strlist_free(&pc->scripts);
	free(pc->hash_key_file);
	free(pc->lua_dir);
	pc->hash_key_file = NULL;
	pc->lua_dir = NULL;
}

void policy_config_copy(PolicyConfig *dst, const PolicyConfig *src)
{
	*dst = *src;
	memset(&dst->scripts, 0, sizeof(dst->scripts));
	for (int i = 0; i < src->scripts.count; i++)
		strlist_add(&dst->scripts, src->scripts.items[i]);
	dst->hash_key_file = src->hash_key_file ? xstrdup(src->hash_key_file) : NULL;
	dst->lua_dir = src->lua_dir ? xstrdup(src->lua_dir) : NULL;
}

const char *policy_mode_name(PolicyMode m)
{
	return m == POLICY_DRY_RUN ? "dry_run" : "enforce";
}

static const char *const verdict_names[] = { "allow", "rewrite", "hold", "deny" };

const char *policy_verdict_name(PolicyVerdict v)
{
	return (unsigned)v < ARRAY_SIZE(verdict_names) ? verdict_names[v] : "?";
}

bool policy_verdict_from_name(const char *name, PolicyVerdict *out)
{
	for (size_t i = 0; i < ARRAY_SIZE(verdict_names); i++) {
		if (strcmp(name, verdict_names[i]) == 0) {
			*out = (PolicyVerdict)i;
			return true;
		}
	}
	return false;
}

void policy_decision_free(PolicyDecision *d)
{
	free(d->message);
	free(d->rewritten_sql);
	free(d->policy);
	free(d->where);
	for (int i = 0; i < d->ntrace; i++) {
		free(d->trace[i].policy);
		free(d->trace[i].message);
	}
	free(d->trace);
	memset(d, 0, sizeof(*d));
}

static void decision_init(PolicyDecision *d)
{
	memset(d, 0, sizeof(*d));
	d->verdict = POLICY_ALLOW;
	d->enforced = POLICY_ALLOW;
}

static void set_str(char **dst, const char *s)
{
	free(*dst);
	*dst = s ? xstrdup(s) : NULL;
}

static void decision_trace(PolicyEngine *e, PolicyDecision *d, int stmt, const char *policy,
			   PolicyVerdict v, const char *msg)
{
	if (!e->trace)
		return;
	d->trace = xrealloc(d->trace, sizeof(*d->trace) * (size_t)(d->ntrace + 1));
	PolicyTrace *t = &d->trace[d->ntrace++];
	t->stmt = stmt;
	t->policy = xstrdup(policy);
	t->verdict = v;
	t->message = msg ? xstrdup(msg) : NULL;
}

/* dry_run reports the verdict and lets everything through. */
static void decision_finish(const PolicyEngine *e, PolicyDecision *d)
{
	d->enforced = e->cfg.mode == POLICY_DRY_RUN ? POLICY_ALLOW : d->verdict;
}

/* ------------------------------------------------- allocator and budget */

static PolicyEngine *engine_of(lua_State *L)
{
	void *ud = NULL;
	(void)lua_getallocf(L, &ud);
	return ud;
}

/*
 * Every call makes and drops a few small objects (q, the cols tables): a freed
 * small block waits in its size class's list for the next, a pop instead of
 * malloc and free. A small block is malloc'd at its class's full size, and
 * keeps at least the size of the class of what it holds, so any block can
 * still go to realloc or free. Held blocks are not counted in mem_used.
 */
typedef struct PoolBlock {
	struct PoolBlock *next;
} PoolBlock;

static bool pool_small(size_t size)
{
	return size <= POOL_CLASSES * POOL_GRAIN;
}

static int pool_class(size_t size)
{
	return (int)((size - 1) / POOL_GRAIN);
}

static void *pool_get(PolicyEngine *e, size_t size)
{
	int k = pool_class(size);
	PoolBlock *b = e->pool[k];
	if (!b)
		return malloc((size_t)(k + 1) * POOL_GRAIN);
	e->pool[k] = b->next;
	e->pool_bytes -= (size_t)(k + 1) * POOL_GRAIN;
	return b;
}

static void pool_put(PolicyEngine *e, void *ptr, size_t size)
{
	int k = pool_class(size);
	size_t bytes = (size_t)(k + 1) * POOL_GRAIN;
	if (e->pool_bytes + bytes > POOL_KEEP_BYTES) {
		free(ptr);
		return;
	}
	PoolBlock *b = ptr;
	b->next = e->pool[k];
	e->pool[k] = b;
	e->pool_bytes += bytes;
}

static void pool_drain(PolicyEngine *e)
{
	for (int k = 0; k < POOL_CLASSES; k++) {
		while (e->pool[k]) {
			PoolBlock *b = e->pool[k];
			e->pool[k] = b->next;
			free(b);
		}
	}
	e->pool_bytes = 0;
}

/* ptr (old bytes; NULL: a new block) resized to nsize > 0 bytes. */
static void *pool_realloc(PolicyEngine *e, void *ptr, size_t old, size_t nsize)
{
	if (!ptr)
		return pool_small(nsize) ? pool_get(e, nsize) : malloc(nsize);
	if (!pool_small(nsize))
		return realloc(ptr, nsize);
	if (!pool_small(old))
		return realloc(ptr, (size_t)(pool_class(nsize) + 1) * POOL_GRAIN);
	if (pool_class(nsize) <= pool_class(old))
		return ptr;	/* it fits: shrinking never fails */
	void *p = pool_get(e, nsize);
	if (p) {
		memcpy(p, ptr, old);
		pool_put(e, ptr, old);
	}
	return p;
}

/* Growth past the limit fails; shrinking and freeing never do (Lua relies on it). */
static void *engine_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	PolicyEngine *e = ud;
	if (nsize == 0) {
		if (ptr) {
			e->mem_used -= osize;
			if (pool_small(osize))
				pool_put(e, ptr, osize);
			else
				free(ptr);
		}
		return NULL;
	}
	size_t old = ptr ? osize : 0;
	if (nsize > old && e->mem_used - old + nsize > e->cfg.memory_limit) {
		e->mem_failed = true;
		return NULL;
	}
	void *p = pool_realloc(e, ptr, old, nsize);
	if (!p) {
		e->mem_failed = true;
		return NULL;
	}
	e->mem_used = e->mem_used - old + nsize;
	return p;
}

static bool engine_past_budget(PolicyEngine *e)
{
	return e->overrun || e->mem_failed;
}

static void engine_note_where(PolicyEngine *e, const lua_Debug *ar)
{
	if (e->where[0] || ar->currentline <= 0)
		return;
	snprintf(e->where, sizeof(e->where), "%s:%d", ar->short_src, ar->currentline);
}

/* Find the innermost policy (Lua) frame for file:line. */
static void engine_find_where(lua_State *L, PolicyEngine *e)
{
	lua_Debug ar;
	for (int level = 0; level < 64 && !e->where[0]; level++) {
		if (!lua_getstack(L, level, &ar))
			break;
		if (lua_getinfo(L, "Sl", &ar) && ar.source[0] == '@')
			engine_note_where(e, &ar);
	}
}

static int engine_raise_budget(lua_State *L, PolicyEngine *e)
{
	engine_find_where(L, e);
	if (e->mem_failed)
		return luaL_error(L, "memory limit of %d bytes exceeded", (int)e->cfg.memory_limit);
	return luaL_error(L, "time budget of %d ms exceeded", (int)(e->cfg.time_budget / 1000));
}

/* Once the budget is gone, every later tick raises again (pcall cannot absorb it). */
static void engine_hook(lua_State *L, lua_Debug *ar)
{
	PolicyEngine *e = engine_of(L);
	if (!e->in_call)
		return;	/* the hook stays installed between calls (see engine_enter) */
	if (!e->overrun && util_now_mono() < e->deadline)
		return;
	if (!e->overrun) {
		e->overrun = true;
		if (lua_getinfo(L, "Sl", ar) && ar->source[0] == '@')
			engine_note_where(e, ar);
		lua_sethook(L, engine_hook, LUA_MASKCOUNT, 1);
	}
	engine_raise_budget(L, e);
}

/* For C code that loops without reaching the hook (luastr.c's matcher). */
void luastr_check_budget(lua_State *L)
{
	PolicyEngine *e = engine_of(L);
	if (!e->overrun && util_now_mono() >= e->deadline) {
		e->overrun = true;
		lua_sethook(L, engine_hook, LUA_MASKCOUNT, 1);
	}
	if (engine_past_budget(e))
		engine_raise_budget(L, e);
}

/* ------------------------------------------------------------ watchdog */

/*
 * The time budget without a count hook on every instruction (which made the
 * interpreter dispatch each one through LuaJIT's hook check: about 400
 * instructions per transaction under the example policies). A thread looks at
 * every engine each few milliseconds and signals the thread running a call
 * past its deadline; the handler, in that thread, installs the count hook (as
 * LuaJIT's own luajit.c does on SIGINT), which checks the clock again after
 * HOOK_TICK instructions and raises. A pause is not a loop: the watchdog
 * signals only a call it finds overdue at two looks, and the hook raises only
 * once the call has run on: a short call whose thread (or the whole process,
 * under a CPU quota or a stop) was paused across its deadline ends first, and
 * is not failed for a pause it did not cause. The signal repeats at every
 * later look while the call runs on, so a hook change lost to an interrupted
 * read-modify-write of LuaJIT's hook mask is made again. Without the thread
 * (it could not start) each state keeps the count hook of old, checking the
 * clock every HOOK_TICK instructions.
 *
 * Idle, the thread sleeps: after a look that finds no call running and none
 * begun since the look before, it sets wd.sleeping and waits on wd.wake
 * until a call begins. A call pays no system call for this while the thread
 * is awake: engine_call_begin stores in_call and then reads wd.sleeping (both
 * sequentially consistent), and the thread stores wd.sleeping and then reads
 * every in_call; of two such pairs at least one sees the other's store, so
 * either the thread sees the call and stays awake, or the call sees the flag
 * and wakes it (wd_wake, under wd.lock, which the thread holds from setting
 * the flag until it waits: the wake cannot come between). Under a steady
 * load every look finds a call begun since the last, and the thread never
 * sleeps; at a trickle, a call that finds it asleep wakes it once.
 */
static struct {
	pthread_mutex_t lock;
	PolicyEngine **engines;	/* registered: the watchdog may look at them */
	int n, cap;
	pid_t pid;		/* the process whose thread runs; a fork's child starts its own */
	bool failed;		/* the thread could not start: count hooks instead */
	int signo;
	/* (idle watchdog) the thread waits on wake, with sleeping set, while no call runs */
	pthread_cond_t wake;
	int sleeping;		/* read by every call (__atomic); written under lock */
} wd = { .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER };

static pthread_once_t wd_once = PTHREAD_ONCE_INIT;
static __thread PolicyEngine *volatile wd_running;	/* this thread's engine, while in a call */

static void wd_signal_handler(int sig)
{
	(void)sig;
	int saved = errno;
	PolicyEngine *e = wd_running;
	if (e && e->L && e->in_call && util_now_mono() >= e->deadline) {
		e->wd_armed = 1;
		/* (the hook raises after HOOK_TICK more instructions, not at the next:
		 * a call that ends sooner was paused, not looping) */
		lua_sethook(e->L, engine_hook, LUA_MASKCOUNT, HOOK_TICK);
	}
	errno = saved;
}

/* One engine at one look (wd.lock held); true: it ran a call since the last look. */
static bool wd_look_at(PolicyEngine *e, usec_t now)
{
	bool in_call = __atomic_load_n(&e->in_call, __ATOMIC_ACQUIRE);
	uint64_t seq = __atomic_load_n(&e->call_seq, __ATOMIC_RELAXED);	/* (in flight: its call's) */
	bool busy = in_call || seq != e->wd_seen_seq;

	e->wd_seen_seq = seq;
	if (!in_call || now < __atomic_load_n(&e->deadline, __ATOMIC_RELAXED))
		return busy;
	if (e->wd_overdue_seq == seq)
		pthread_kill(__atomic_load_n(&e->call_thread, __ATOMIC_RELAXED), wd.signo);
	e->wd_overdue_seq = seq;
	return true;
}

/* A look at every engine (wd.lock held): the time to the next look; 0: all idle. */
static usec_t wd_look_locked(void)
{
	usec_t period = WATCHDOG_MAX_PERIOD;
	usec_t now = util_now_mono();
	bool busy = false;

	for (int i = 0; i < wd.n; i++) {
		PolicyEngine *e = wd.engines[i];
		if ((usec_t)e->cfg.time_budget / 4 < period)
			period = (usec_t)e->cfg.time_budget / 4;
		busy |= wd_look_at(e, now);
	}
	if (!busy)
		return 0;
	return period < WATCHDOG_MIN_PERIOD ? WATCHDOG_MIN_PERIOD : period;
}

static bool wd_any_in_call_locked(void)
{
	for (int i = 0; i < wd.n; i++) {
		if (__atomic_load_n(&wd.engines[i]->in_call, __ATOMIC_SEQ_CST))
			return true;
	}
	return false;
}

/* Nothing to watch (wd.lock held): wait until a call begins (see above for the order). */
static void wd_sleep_locked(void)
{
	__atomic_store_n(&wd.sleeping, 1, __ATOMIC_SEQ_CST);
	if (!wd_any_in_call_locked()) {
		while (__atomic_load_n(&wd.sleeping, __ATOMIC_RELAXED))
			pthread_cond_wait(&wd.wake, &wd.lock);
	}
	__atomic_store_n(&wd.sleeping, 0, __ATOMIC_RELAXED);
}

/* A call begins and found the thread asleep (or about to be). */
static void wd_wake(void)
{
	pthread_mutex_lock(&wd.lock);
	if (wd.sleeping) {
		__atomic_store_n(&wd.sleeping, 0, __ATOMIC_RELAXED);
		pthread_cond_signal(&wd.wake);
	}
	pthread_mutex_unlock(&wd.lock);
}

static void *wd_main(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&wd.lock);
		usec_t period = wd_look_locked();
		if (period == 0)
			wd_sleep_locked();
		pthread_mutex_unlock(&wd.lock);
		if (period == 0)
			continue;	/* a call began: look at it at once */
		struct timespec ts = { (time_t)(period / 1000000), (long)(period % 1000000) * 1000 };
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static void wd_atfork_prepare(void)
{
	pthread_mutex_lock(&wd.lock);
}

static void wd_atfork_parent(void)
{
	pthread_mutex_unlock(&wd.lock);
}

static void wd_atfork_child(void)
{
	/* (the thread did not come along: wd.pid tells; the child's starts awake) */
	pthread_mutex_init(&wd.lock, NULL);
	pthread_cond_init(&wd.wake, NULL);
	wd.sleeping = 0;
}

static void wd_init(void)
{
	wd.signo = SIGRTMIN + 4;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = wd_signal_handler;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(wd.signo, &sa, NULL) != 0 ||
	    pthread_atfork(wd_atfork_prepare, wd_atfork_parent, wd_atfork_child) != 0)
		wd.failed = true;
}

/* The thread for this process, started once; false: none (count hooks instead). */
static bool wd_start_locked(void)
{
	if (wd.failed)
		return false;
	pid_t pid = getpid();
	if (wd.pid == pid)
		return true;
	pthread_t t;
	pthread_attr_t attr;
	if (pthread_attr_init(&attr) != 0)
		return false;
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	/* the signal goes to the threads in calls, never to this one */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&t, &attr, wd_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		log_warning("policy: cannot start the time budget's watchdog (%s): count hooks "
			    "check the clock instead", strerror(rc));
		return false;
	}
	pthread_setname_np(t, "pgmoat-watchdog");	/* (top -H, ps -L; the tests find it by it) */
	wd.pid = pid;
	return true;
}

/* Let the watchdog see e; false: it cannot (e's states keep a count hook). */
static bool wd_register(PolicyEngine *e)
{
	pthread_once(&wd_once, wd_init);
	pthread_mutex_lock(&wd.lock);
	bool ok = wd_start_locked();
	if (ok) {
		if (wd.n == wd.cap) {
			wd.cap = wd.cap ? wd.cap * 2 : 8;
			wd.engines = xrealloc(wd.engines, sizeof(*wd.engines) * (size_t)wd.cap);
		}
		wd.engines[wd.n++] = e;
	}
	pthread_mutex_unlock(&wd.lock);
	return ok;
}

static void wd_unregister(PolicyEngine *e)
{
	if (!e->wd_registered)
		return;
	pthread_mutex_lock(&wd.lock);
	for (int i = 0; i < wd.n; i++) {
		if (wd.engines[i] == e) {
			wd.engines[i] = wd.engines[--wd.n];
			break;
		}
	}
	pthread_mutex_unlock(&wd.lock);
	e->wd_registered = false;
}

/* A call (or a state's loading) starts: the watchdog may now signal this thread. */
static void engine_call_begin(PolicyEngine *e, usec_t deadline)
{
	__atomic_store_n(&e->deadline, deadline, __ATOMIC_RELAXED);
	__atomic_store_n(&e->call_thread, pthread_self(), __ATOMIC_RELAXED);
	__atomic_store_n(&e->call_seq, e->call_seq + 1, __ATOMIC_RELAXED);
	/* after the fields above, and before the look at wd.sleeping (see "watchdog") */
	__atomic_store_n(&e->in_call, true, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&wd.sleeping, __ATOMIC_SEQ_CST) && e->wd_registered)
		wd_wake();
	wd_running = e;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
}

/* ... and ends: a count hook the watchdog installed comes off (if the state stays). */
static void engine_call_end(PolicyEngine *e)
{
	wd_running = NULL;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	__atomic_store_n(&e->in_call, false, __ATOMIC_RELAXED);
	if (e->wd_armed) {
		e->wd_armed = 0;
		if (e->L && !engine_past_budget(e))
			lua_sethook(e->L, NULL, 0, 0);
	}
}

/* Message handler: remember where a policy failed before the stack unwinds. */
static int engine_msgh(lua_State *L)
{
	PolicyEngine *e = engine_of(L);
	engine_find_where(L, e);
	if (!lua_isstring(L, 1)) {
		const char *t = luaL_typename(L, 1);
		lua_pushfstring(L, "error object is a %s value", t);
	}
	return 1;
}

/* ------------------------------------------------------------- sandbox */

static int sb_pcall_finish(lua_State *L, int status, int base)
{
	if (status != 0 && engine_past_budget(engine_of(L)))
		return lua_error(L);	/* re-raise: budget errors are not the policy's to catch */
	lua_pushboolean(L, status == 0);
	lua_insert(L, base);
	return lua_gettop(L) - base + 1;
}

static int sb_pcall(lua_State *L)
{
	luaL_checkany(L, 1);
	int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
	return sb_pcall_finish(L, status, 1);
}

/*
 * The handler runs after the stack has unwound, not at the error point: an
 * error raised by the budget hook leaves hooks disabled until the unwind, so
 * a handler run in place could loop forever unseen.
 */
static int sb_xpcall(lua_State *L)
{
	luaL_checkany(L, 2);
	int nargs = lua_gettop(L) - 2;
	lua_pushvalue(L, 1);
	lua_remove(L, 1);
	lua_insert(L, 2);	/* handler, f, args... */
	int status = lua_pcall(L, nargs, LUA_MULTRET, 0);
	if (status == 0 || engine_past_budget(engine_of(L)))
		return sb_pcall_finish(L, status, 2);
	lua_settop(L, 2);	/* handler, error */
	lua_pushvalue(L, 1);
	lua_insert(L, 2);
	status = lua_pcall(L, 1, 1, 0);
	if (status != 0 && engine_past_budget(engine_of(L)))
		return lua_error(L);
	lua_pushboolean(L, 0);
	lua_insert(L, -2);
	return 2;
}

static int sb_collectgarbage(lua_State *L)
{
	const char *opt = luaL_optstring(L, 1, "count");
	if (strcmp(opt, "count") != 0)
		return luaL_error(L, "collectgarbage: only \"count\" is allowed in policies");
	lua_pushnumber(L, (lua_Number)lua_gc(L, LUA_GCCOUNT, 0) +
			  (lua_Number)lua_gc(L, LUA_GCCOUNTB, 0) / 1024.0);
	return 1;
}

/* print goes to the log, one line, bounded. */
static int sb_print(lua_State *L)
{
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	int n = lua_gettop(L);
	lua_getglobal(L, "tostring");
	for (int i = 1; i <= n; i++) {
		lua_pushvalue(L, -1);
		lua_pushvalue(L, i);
		lua_call(L, 1, 1);
		if (!lua_isstring(L, -1))
			return luaL_error(L, "'tostring' must return a string to 'print'");
		if (i > 1)
			luaL_addchar(&b, '\t');
		luaL_addvalue(&b);
	}
	luaL_pushresult(&b);
	lua_Debug ar;
	char where[WHERE_LEN] = "policy";
	if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar))
		snprintf(where, sizeof(where), "%s:%d", ar.short_src, ar.currentline);
	log_info("%s: %.1000s", where, lua_tostring(L, -1));
	return 0;
}

static int sb_unknown_global(lua_State *L)
{
	return luaL_error(L, "unknown global '%s' (declare it local)", luaL_optstring(L, 2, "?"));
}

static int sb_readonly(lua_State *L)
{
	return luaL_error(L, "cannot assign '%s': read-only table", luaL_optstring(L, 2, "?"));
}

/* ---------------------------------------------------------- JSON claims */

/*
 * The claims object, parsed by jansson with duplicate keys refused (two
 * parsers must never disagree on which value a claim has) and converted to
 * Lua tables: null is nil, depth limited. Conversion can raise (memory cap),
 * so the jansson tree is owned by a userdata whose __gc frees it.
 */
static int claims_guard_gc(lua_State *L)
{
	json_t **root = lua_touserdata(L, 1);
	if (*root)
		json_decref(*root);
	*root = NULL;
	return 0;
}

static void claims_push_value(lua_State *L, const json_t *v, int depth)
{
	if (depth > JSON_MAX_DEPTH)
		luaL_error(L, "invalid claims JSON: nested too deep");
	luaL_checkstack(L, 4, "claims");
	const char *key;
	json_t *item;
	size_t i;
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		lua_createtable(L, 0, (int)json_object_size(v));
		json_object_foreach((json_t *)v, key, item) {
			claims_push_value(L, item, depth + 1);
			lua_setfield(L, -2, key);
		}
		return;
	case JSON_ARRAY:
		lua_createtable(L, (int)json_array_size(v), 0);
		json_array_foreach(v, i, item) {
			claims_push_value(L, item, depth + 1);
			lua_rawseti(L, -2, (int)i + 1);
		}
		return;
	case JSON_STRING:
		lua_pushlstring(L, json_string_value(v), json_string_length(v));
		return;
	case JSON_INTEGER:
		lua_pushnumber(L, (lua_Number)json_integer_value(v));
		return;
	case JSON_REAL:
		lua_pushnumber(L, json_real_value(v));
		return;
	case JSON_TRUE:
	case JSON_FALSE:
		lua_pushboolean(L, json_is_true(v));
		return;
	case JSON_NULL:
		lua_pushnil(L);
		return;
	}
}

/* Push the claims object decoded from text, or raise. */
static void json_push_claims(lua_State *L, const char *text)
{
	json_error_t jerr;
	json_t **root = lua_newuserdata(L, sizeof(json_t *));
	*root = NULL;
	lua_createtable(L, 0, 1);
	lua_pushcfunction(L, claims_guard_gc);
	lua_setfield(L, -2, "__gc");
	lua_setmetatable(L, -2);
	*root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	if (!*root)
		luaL_error(L, "invalid claims JSON: %s", jerr.text);
	if (!json_is_object(*root))
		luaL_error(L, "invalid claims JSON: claims must be an object");
	claims_push_value(L, *root, 1);
	json_decref(*root);
	*root = NULL;
	lua_remove(L, -2);	/* the guard */
}

/* ---------------------------------------------------------------- moat */

static void *decision_mt_key(void)
{
	static char key;
	return &key;
}

static int moat_decision(lua_State *L, const char *verdict, const char *msg)
{
	lua_createtable(L, 0, 2);
	lua_pushstring(L, verdict);
	lua_setfield(L, -2, "verdict");
	if (msg) {
		lua_pushstring(L, msg);
		lua_setfield(L, -2, "message");
	}
	lua_pushlightuserdata(L, decision_mt_key());
	lua_rawget(L, LUA_REGISTRYINDEX);
	lua_setmetatable(L, -2);
	return 1;
}

static int moat_allow(lua_State *L)
{
	return moat_decision(L, "allow", NULL);
}

static int moat_deny(lua_State *L)
{
	return moat_decision(L, "deny", luaL_optstring(L, 1, NULL));
}

static int moat_rewrite(lua_State *L)
{
	return moat_decision(L, "rewrite", luaL_checkstring(L, 1));
}

static int moat_hold(lua_State *L)
{
	return moat_decision(L, "hold", luaL_optstring(L, 1, NULL));
}

/* A read-only view of the table on top (replaces it). */
static void push_readonly_proxy(lua_State *L)
{
	lua_newtable(L);		/* proxy */
	lua_createtable(L, 0, 3);	/* mt */
	lua_pushvalue(L, -3);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, sb_readonly);
	lua_setfield(L, -2, "__newindex");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_setmetatable(L, -2);
	lua_remove(L, -2);
}

static void *moat_key(void)
{
	static char key;
	return &key;
}

static void *loaded_key(void)
{
	static char key;
	return &key;
}

static void *env_template_key(void)
{
	static char key;
	return &key;
}

static void moat_register(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "allow", moat_allow }, { "deny", moat_deny },
		{ "rewrite", moat_rewrite }, { "hold", moat_hold }, { NULL, NULL },
	};
	lua_createtable(L, 0, 2);	/* decision metatable, hidden from policies */
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_pushlightuserdata(L, decision_mt_key());
	lua_insert(L, -2);
	lua_rawset(L, LUA_REGISTRYINDEX);

	lua_newtable(L);
	for (const luaL_Reg *r = fns; r->name; r++) {
		lua_pushcfunction(L, r->func);
		lua_setfield(L, -2, r->name);
	}
	lua_pushliteral(L, "1");
	lua_setfield(L, -2, "version");
	push_readonly_proxy(L);
	lua_pushlightuserdata(L, moat_key());
	lua_insert(L, -2);
	lua_rawset(L, LUA_REGISTRYINDEX);
}

/* ------------------------------------------------------------ loading */

static char *read_script(const char *path, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "%s: cannot open policy: %s", path, strerror(errno));
		return NULL;
	}
	size_t cap = 4096, n = 0;
	char *buf = xmalloc(cap);
	size_t got;
	while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n > POLICY_MAX_SCRIPT_SIZE)
			break;
		if (n == cap) {
			cap *= 2;
			buf = xrealloc(buf, cap);
		}
	}
	bool bad = ferror(f) || n > POLICY_MAX_SCRIPT_SIZE;
	fclose(f);
	if (bad) {
		snprintf(err, errlen, "%s: cannot read policy (I/O error or over %d bytes)", path,
			 POLICY_MAX_SCRIPT_SIZE);
		free(buf);
		return NULL;
	}
	*len = n;
	return buf;
}

/* Push a fresh locked environment: copies of the allow-listed globals. */
static void sandbox_push_env(lua_State *L)
{
	lua_newtable(L);
	lua_pushlightuserdata(L, env_template_key());
	lua_rawget(L, LUA_REGISTRYINDEX);
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		if (lua_istable(L, -1)) {	/* a library: a per-script shallow copy */
			lua_newtable(L);
			lua_pushnil(L);
			while (lua_next(L, -3)) {
				lua_pushvalue(L, -2);
				lua_insert(L, -2);
				lua_rawset(L, -4);
			}
			lua_remove(L, -2);
		}
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, -5);
	}
	lua_pop(L, 1);
	lua_createtable(L, 0, 3);
	lua_pushcfunction(L, sb_unknown_global);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, sb_unknown_global);
	lua_setfield(L, -2, "__newindex");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_setmetatable(L, -2);
}

/* Load text at path as a chunk named chunkname with a fresh sandbox env; raises on error. */
static void sandbox_load(lua_State *L, const char *path, const char *chunkname)
{
	char err[512];
	size_t len = 0;
	char *text = read_script(path, &len, err, sizeof(err));
	if (!text) {
		lua_pushstring(L, err);
		lua_error(L);
	}
	if (len > 0 && text[0] == '\033') {
		free(text);
		luaL_error(L, "%s: precompiled bytecode is not accepted, only Lua source", chunkname);
	}
	lua_pushfstring(L, "@%s", chunkname);
	int status = luaL_loadbufferx(L, text, len, lua_tostring(L, -1), "t");
	free(text);
	if (status != 0)
		lua_error(L);
	lua_remove(L, -2);
	sandbox_push_env(L);
	lua_setfenv(L, -2);
}

static bool module_name_ok(const char *name)
{
	if (!*name || *name == '.')
		return false;
	for (const char *p = name; *p; p++) {
		if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '.'))
			return false;
		if (*p == '.' && (p[1] == '.' || p[1] == '\0'))
			return false;
	}
	return true;
}

/* require "moat", or a helper module under policy.lua_dir, loaded like a policy. */
static int sb_require(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	if (strcmp(name, "moat") == 0) {
		lua_pushlightuserdata(L, moat_key());
		lua_rawget(L, LUA_REGISTRYINDEX);
		return 1;
	}
	PolicyEngine *e = engine_of(L);
	if (!e->cfg.lua_dir || !module_name_ok(name))
		return luaL_error(L, "module '%s' is not available to policies", name);
	lua_pushlightuserdata(L, loaded_key());
	lua_rawget(L, LUA_REGISTRYINDEX);
	lua_getfield(L, -1, name);
	if (lua_toboolean(L, -1)) {
		if (lua_islightuserdata(L, -1))
			return luaL_error(L, "module '%s' requires itself", name);
		return 1;
	}
	lua_pop(L, 1);
	lua_pushlightuserdata(L, loaded_key());	/* "loading" marker */
	lua_setfield(L, -2, name);
	char *rel = xstrdup(name);
	for (char *p = rel; *p; p++)
		if (*p == '.')
			*p = '/';
	lua_pushfstring(L, "%s/%s.lua", e->cfg.lua_dir, rel);
	lua_pushfstring(L, "%s.lua", rel);
	free(rel);
	sandbox_load(L, lua_tostring(L, -2), lua_tostring(L, -1));
	lua_call(L, 0, 1);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_pushboolean(L, 1);
	}
	lua_pushvalue(L, -1);
	lua_setfield(L, -5, name);
	return 1;
}

/* Patch the real string library so method calls ("x"):rep() are bounded too. */
static void sandbox_patch_string(lua_State *L)
{
	lua_getglobal(L, "string");
	for (const luaL_Reg *r = luastr_bounded; r->name; r++) {
		lua_pushcfunction(L, r->func);
		lua_setfield(L, -2, r->name);
	}
	lua_pushnil(L);
	lua_setfield(L, -2, "dump");
	lua_pop(L, 1);
	/* Hide the string metatable so one policy cannot change methods for all. */
	lua_pushliteral(L, "");
	lua_getmetatable(L, -1);
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 2);
}

static void sandbox_copy_fields(lua_State *L, const char *lib, const char *const *names)
{
	lua_getglobal(L, lib);
	lua_newtable(L);
	for (int i = 0; names[i]; i++) {
		lua_getfield(L, -2, names[i]);
		lua_setfield(L, -2, names[i]);
	}
	lua_setfield(L, -3, lib);
	lua_pop(L, 1);
}

/* The allow-list: everything a policy can name. */
static void sandbox_build_template(lua_State *L)
{
	static const char *const base[] = {
		"assert", "error", "ipairs", "next", "pairs", "select", "tonumber", "tostring",
		"type", "unpack", "rawequal", "rawget", "rawset", "setmetatable", "getmetatable",
		NULL,
	};
	static const char *const libs[] = { "string", "table", "math", "bit", NULL };
	static const char *const os_ok[] = { "time", "clock", "date", "difftime", NULL };
	lua_newtable(L);
	for (int i = 0; base[i]; i++) {
		lua_getglobal(L, base[i]);
		lua_setfield(L, -2, base[i]);
	}
	for (int i = 0; libs[i]; i++) {
		lua_getglobal(L, libs[i]);
		lua_setfield(L, -2, libs[i]);
	}
	sandbox_copy_fields(L, "os", os_ok);
	static const luaL_Reg wrapped[] = {
		{ "pcall", sb_pcall }, { "xpcall", sb_xpcall },
		{ "collectgarbage", sb_collectgarbage }, { "print", sb_print },
		{ "require", sb_require }, { NULL, NULL },
	};
	for (const luaL_Reg *r = wrapped; r->name; r++) {
		lua_pushcfunction(L, r->func);
		lua_setfield(L, -2, r->name);
	}
	lua_pushlightuserdata(L, env_template_key());
	lua_insert(L, -2);
	lua_rawset(L, LUA_REGISTRYINDEX);
}

static void q_register(lua_State *L);

static int state_open_libs(lua_State *L)
{
	static const luaL_Reg libs[] = {
		{ "", luaopen_base }, { LUA_TABLIBNAME, luaopen_table },
		{ LUA_STRLIBNAME, luaopen_string }, { LUA_MATHLIBNAME, luaopen_math },
		{ LUA_BITLIBNAME, luaopen_bit }, { LUA_OSLIBNAME, luaopen_os },
		{ NULL, NULL },	/* never luaopen_jit: it turns the JIT back on */
	};
	for (const luaL_Reg *r = libs; r->func; r++) {
		lua_pushcfunction(L, r->func);
		lua_pushstring(L, r->name);
		lua_call(L, 1, 0);
	}
	sandbox_patch_string(L);
	sandbox_build_template(L);
	moat_register(L);
	q_register(L);
	lua_newtable(L);
	lua_pushlightuserdata(L, loaded_key());
	lua_insert(L, -2);
	lua_rawset(L, LUA_REGISTRYINDEX);
	/* Again after the libraries: compiled loops never reach the count hook. */
	if (!luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF))
		return luaL_error(L, "cannot turn the JIT off");
	return 0;
}

static bool masks_key_ok(const char *k)
{
	int dots = 0;
	for (const char *p = k; *p; p++)
		if (*p == '.')
			dots++;
	if (dots < 1 || dots > 2 || k[0] == '.' || k[strlen(k) - 1] == '.' || strstr(k, ".."))
		return false;
	return k[0] != '*' || (dots == 1 && k[1] == '.');
}

/* Merge P.masks (at -1) into the engine's table (at masks_idx); first policy wins. */
static void script_collect_masks(lua_State *L, PolicyEngine *e, const Script *sc, int masks_idx)
{
	if (lua_isnil(L, -1))
		return;
	if (!lua_istable(L, -1))
		luaL_error(L, "%s: P.masks must be a table", sc->name);
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
		if (!key || !masks_key_ok(key))
			luaL_error(L, "%s: P.masks key '%s' must be \"table.column\", "
				   "\"schema.table.column\" or \"*.column\"", sc->name,
				   key ? key : luaL_typename(L, -2));
		if (lua_type(L, -1) == LUA_TSTRING) {
			MaskKind k = mask_kind_from_name(lua_tostring(L, -1));
			if (k == MASK_NONE || k == MASK_CUSTOM)
				luaL_error(L, "%s: P.masks['%s']: unknown mask '%s'", sc->name, key,
					   lua_tostring(L, -1));
		} else if (!lua_isfunction(L, -1)) {
			luaL_error(L, "%s: P.masks['%s'] must be a mask name or a function", sc->name,
				   key);
		}
		lua_pushvalue(L, -2);
		lua_rawget(L, masks_idx);
		bool taken = !lua_isnil(L, -1);
		lua_pop(L, 1);
		if (!taken) {
			lua_pushvalue(L, -2);
			lua_pushvalue(L, -2);
			lua_rawset(L, masks_idx);
			e->any_masks = true;
			strlist_add(&e->mask_keys, key);
		}
		lua_pop(L, 1);
	}
}

/* Run one script (protected by the caller) and resolve its hooks. */
static void script_load(lua_State *L, PolicyEngine *e, Script *sc, int masks_idx)
{
	sandbox_load(L, sc->path, sc->name);
	lua_call(L, 0, 1);
	if (!lua_istable(L, -1))
		luaL_error(L, "%s: a policy must return a table of hooks (got %s)", sc->name,
			   luaL_typename(L, -1));
	for (int h = 0; h < HOOK_COUNT; h++) {
		lua_getfield(L, -1, hook_names[h]);
		if (lua_isnil(L, -1)) {
			lua_pop(L, 1);
			continue;
		}
		if (!lua_isfunction(L, -1))
			luaL_error(L, "%s: P.%s must be a function", sc->name, hook_names[h]);
		sc->hooks[h] = luaL_ref(L, LUA_REGISTRYINDEX);
		e->any_hook[h] = true;
	}
	lua_getfield(L, -1, "masks");
	script_collect_masks(L, e, sc, masks_idx);
	lua_pop(L, 1);
	lua_getfield(L, -1, "allow_unparsed");
	if (lua_toboolean(L, -1))
		e->allow_unparsed = true;
	lua_pop(L, 2);
}

static int query_run(lua_State *L);
static void q_intern_names(lua_State *L, PolicyEngine *e);

static int state_load_scripts(lua_State *L)
{
	PolicyEngine *e = lua_touserdata(L, 1);
	lua_settop(L, 0);
	lua_pushcfunction(L, state_open_libs);
	lua_call(L, 0, 0);
	q_intern_names(L, e);
	lua_pushcfunction(L, query_run);
	e->query_run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushcfunction(L, engine_msgh);
	e->msgh_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_newtable(L);	/* merged masks at 1 */
	for (int i = 0; i < e->nscripts; i++)
		script_load(L, e, &e->scripts[i], 1);
	e->masks_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

static void engine_reset_scripts(PolicyEngine *e)
{
	for (int i = 0; i < e->nscripts; i++)
		for (int h = 0; h < HOOK_COUNT; h++)
			e->scripts[i].hooks[h] = LUA_NOREF;
	memset(e->any_hook, 0, sizeof(e->any_hook));
	e->any_masks = false;
	e->allow_unparsed = false;
	e->masks_ref = LUA_NOREF;
	e->cols_cache_ref = LUA_NOREF;
	e->cols_last_ref = LUA_NOREF;
	e->cols_cache_cols = 0;
	e->cols_fn_ref = LUA_NOREF;
	e->query_run_ref = LUA_NOREF;
	e->msgh_ref = LUA_NOREF;
	memset(e->q_names, 0, sizeof(e->q_names));
	e->q_names_ref = LUA_NOREF;
	e->q_mt_ref = LUA_NOREF;
	memset(e->kind_ptr, 0, sizeof(e->kind_ptr));
	for (int i = 0; i < Q_KINDS_KEPT; i++)
		e->kind_ref[i] = LUA_NOREF;
	e->kind_next = 0;
	strlist_free(&e->mask_keys);
	e->mask_keys_gen = 0;
}

static void engine_close_state(PolicyEngine *e)
{
	if (e->L)
		lua_close(e->L);
	pool_drain(e);
	e->L = NULL;
}

/* Build a new Lua state from e->cfg; on failure e->L stays NULL and err says why. */
static bool engine_open_state(PolicyEngine *e, char *err, size_t errlen)
{
	engine_close_state(e);
	engine_reset_scripts(e);
	e->mem_failed = false;
	e->overrun = false;
	e->where[0] = '\0';
	lua_State *L = lua_newstate(engine_alloc, e);
	if (!L) {
		snprintf(err, errlen, "cannot create a Lua state (memory_limit %zu bytes)",
			 e->cfg.memory_limit);
		return false;
	}
	/* JIT-compiled loops never reach the count hook: interpret everything. */
	luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
	e->gc_pause = GC_PAUSE_DEFAULT;
	e->L = L;
	/* Without the watchdog: installed once for the state's life; it acts only while in_call is set. */
	if (!e->wd_registered)
		lua_sethook(L, engine_hook, LUA_MASKCOUNT, HOOK_TICK);
	engine_call_begin(e, util_now_mono() + e->cfg.time_budget);
	int status = lua_cpcall(L, state_load_scripts, e);
	engine_call_end(e);
	if (status != 0) {
		const char *msg = lua_tostring(L, -1);
		if (e->where[0] && msg && !strstr(msg, e->where))
			snprintf(err, errlen, "%s: %s", e->where, msg);
		else
			snprintf(err, errlen, "%s", msg ? msg : "out of memory");
		engine_close_state(e);
		return false;
	}
	lua_settop(L, 0);
	e->generation++;
	/* a state reloads the scripts from disk: its keys may differ from the last state's */
	static uint64_t mask_keys_gens;	/* (atomic: whichever thread builds an engine) */
	e->mask_keys_gen = __atomic_add_fetch(&mask_keys_gens, 1, __ATOMIC_RELAXED);
	return true;
}

static bool engine_load_hash_key(PolicyEngine *e, char *err, size_t errlen)
{
	if (!e->cfg.hash_key_file)
		return true;
	char *key = util_read_file(e->cfg.hash_key_file, 4096, true);
	if (!key || !*key) {
		snprintf(err, errlen, "%s: cannot read policy.hash_key_file: %s",
			 e->cfg.hash_key_file, key ? "empty" : strerror(errno));
		util_free_secret(key);
		return false;
	}
	size_t n = strlen(key);
	if (n > sizeof(e->hash_key)) {
		SHA256((const unsigned char *)key, n, e->hash_key);
		n = sizeof(e->hash_key);
	} else {
		memcpy(e->hash_key, key, n);
	}
	e->hash_key_len = n;
	util_free_secret(key);
	return true;
}

static const char *path_basename(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

PolicyEngine *policy_engine_new(const PolicyConfig *pc, char *err, size_t errlen)
{
	PolicyEngine *e = xcalloc(1, sizeof(*e));
	policy_config_copy(&e->cfg, pc);
	if (e->cfg.time_budget <= 0)
		e->cfg.time_budget = POLICY_DEFAULT_TIME_BUDGET;
	if (e->cfg.memory_limit == 0)
		e->cfg.memory_limit = POLICY_DEFAULT_MEMORY_LIMIT;
	e->nscripts = pc->scripts.count;
	e->scripts = xcalloc((size_t)e->nscripts + 1, sizeof(*e->scripts));
	for (int i = 0; i < e->nscripts; i++) {
		e->scripts[i].path = xstrdup(pc->scripts.items[i]);
		e->scripts[i].name = xstrdup(path_basename(pc->scripts.items[i]));
	}
	e->cache = sqlinfo_cache_new(SQLINFO_CACHE_SIZE);
	e->wd_registered = wd_register(e);
	if (!engine_load_hash_key(e, err, errlen) || !engine_open_state(e, err, errlen)) {
		policy_engine_free(e);
		return NULL;
	}
	return e;
}

void policy_engine_free(PolicyEngine *e)
{
	if (!e)
		return;
	wd_unregister(e);
	engine_close_state(e);
	for (int i = 0; i < e->nscripts; i++) {
		free(e->scripts[i].path);
		free(e->scripts[i].name);
	}
	free(e->scripts);
	if (e->cache)
		sqlinfo_cache_free(e->cache);
	util_wipe(e->hash_key, sizeof(e->hash_key));
	policy_config_free(&e->cfg);
	strlist_free(&e->mask_keys);
	free(e->cols_key);
	free(e->cols_last_key);
	free(e);
}

bool policy_engine_has_on_query(const PolicyEngine *e)
{
	return e->any_hook[HOOK_QUERY];
}

bool policy_engine_has_on_row(const PolicyEngine *e)
{
	return e->any_hook[HOOK_ROW];
}

bool policy_engine_has_masks(const PolicyEngine *e)
{
	return e->any_masks || e->any_hook[HOOK_COLUMNS] || e->any_hook[HOOK_ROW];
}

const StrList *policy_engine_mask_keys(const PolicyEngine *e)
{
	return &e->mask_keys;
}

uint64_t policy_engine_mask_keys_gen(const PolicyEngine *e)
{
	return e->mask_keys_gen;
}

int policy_engine_script_count(const PolicyEngine *e)
{
	return e->nscripts;
}

const char *policy_engine_script_path(const PolicyEngine *e, int i)
{
	return i >= 0 && i < e->nscripts ? e->scripts[i].path : NULL;
}

void policy_engine_script_hooks(const PolicyEngine *e, int i, char *buf, size_t len)
{
	size_t used = 0;
	if (len == 0)
		return;
	buf[0] = '\0';
	for (int h = 0; i >= 0 && i < e->nscripts && h < HOOK_COUNT; h++) {
		if (e->scripts[i].hooks[h] == LUA_NOREF)
			continue;
		int n = snprintf(buf + used, len - used, "%s%s", used ? "," : "", hook_names[h]);
		if (n < 0 || (size_t)n >= len - used)
			return;
		used += (size_t)n;
	}
}

void policy_engine_set_trace(PolicyEngine *e, bool on)
{
	e->trace = on;
}

void policy_engine_time_lua(PolicyEngine *e, struct Histogram *h)
{
	e->lua_time = h;
}

void policy_engine_stats(const PolicyEngine *e, PolicyStats *out)
{
	*out = e->stats;
	out->memory = e->mem_used;
}

/* ------------------------------------------------------ calling hooks */

/*
 * Start a call: a deadline, a clean failure state, the watchdog watching (or,
 * without it, the hook armed). The hook is armed by in_call, not by
 * lua_sethook: LuaJIT rewrites its dispatch table on every lua_sethook that
 * turns the count hook on or off, twice per call.
 */
static bool engine_enter_at(PolicyEngine *e, usec_t now)
{
	if (!e->L) {
		char err[512];
		if (!engine_open_state(e, err, sizeof(err))) {
			log_error("policy: cannot recreate the Lua state: %s", err);
			return false;
		}
		e->stats.recreated++;
	}
	e->overrun = false;
	e->mem_failed = false;
	e->where[0] = '\0';
	engine_call_begin(e, now + e->cfg.time_budget);
	return true;
}

static bool engine_enter(PolicyEngine *e)
{
	return engine_enter_at(e, util_now_mono());
}

/*
 * lua_cpcall(L, fn, ud) for a C function made with the state (fn_ref), without
 * lua_cpcall's closure per call; fn takes ud from engine_call_arg(). Nothing
 * here allocates: the registry read fits the stack every C call starts with.
 */
static int engine_cpcall(PolicyEngine *e, int fn_ref, void *ud)
{
	e->call_arg = ud;
	lua_rawgeti(e->L, LUA_REGISTRYINDEX, fn_ref);
	int status = lua_pcall(e->L, 0, 0, 0);
	e->call_arg = NULL;
	return status;
}

/* In a function engine_cpcall runs: its ud. */
static void *engine_call_arg(lua_State *L)
{
	return engine_of(L)->call_arg;
}

/*
 * Every call leaves garbage (q, the cols tables), and each collection cycle
 * marks the whole live heap: a cycle started at GC_PAUSE_SMALL% of the live
 * heap rather than Lua's 200% marks half as often. Only while the heap is
 * small next to memory_limit, so a cycle still starts well before the limit.
 */
static void engine_tune_gc(PolicyEngine *e, size_t used)
{
	int pause = used < e->cfg.memory_limit / (2 * GC_PAUSE_SMALL / 100) ? GC_PAUSE_SMALL
									     : GC_PAUSE_DEFAULT;
	if (pause == e->gc_pause)
		return;
	lua_gc(e->L, LUA_GCSETPAUSE, pause);
	e->gc_pause = pause;
}

/* End a call; after an overrun the state is rebuilt so nothing half-done survives. */
static void engine_leave(PolicyEngine *e)
{
	lua_State *L = e->L;
	engine_call_end(e);
	lua_settop(L, 0);
	if (!engine_past_budget(e)) {
		size_t used = e->mem_used;	/* (engine_alloc's count: what LUA_GCCOUNT reports) */
		if (used > e->cfg.memory_limit / 2)
			lua_gc(L, LUA_GCCOLLECT, 0);
		engine_tune_gc(e, used);
		return;
	}
	e->stats.overruns++;
	char err[512];
	if (engine_open_state(e, err, sizeof(err)))
		e->stats.recreated++;
	else
		log_error("policy: cannot recreate the Lua state: %s", err);
}

/* A failed call: DENY, fail closed, with file:line for the log. */
static void decision_fail(PolicyEngine *e, PolicyDecision *d, const char *policy, const char *msg)
{
	e->stats.errors++;
	d->verdict = POLICY_DENY;
	d->error = true;
	set_str(&d->policy, policy);
	set_str(&d->where, e->where[0] ? e->where : policy);
	free(d->message);
	d->message = xasprintf("statement denied: policy %s failed", policy ? policy : "engine");
	log_warning("policy %s failed at %s: %s", policy ? policy : "engine",
		    e->where[0] ? e->where : "?", msg ? msg : "unknown error");
}

/*
 * Call the function at the top with nargs arguments below it (msgh at index 1).
 * Returns true with one result on the stack, or false with the error message.
 */
static bool hook_call(lua_State *L, PolicyEngine *e, int nargs)
{
	e->stats.calls++;
	return lua_pcall(L, nargs, 1, 1) == 0;
}

typedef struct HookResult {
	PolicyVerdict verdict;
	const char *message;	/* points into the Lua stack: valid until popped */
	bool valid;
} HookResult;

/* Interpret the value at the top: nothing means allow; anything else must be a moat decision. */
static HookResult hook_result(lua_State *L)
{
	HookResult r = { POLICY_ALLOW, NULL, true };
	if (lua_isnil(L, -1))
		return r;
	bool marked = false;
	if (lua_istable(L, -1) && lua_getmetatable(L, -1)) {
		lua_pushlightuserdata(L, decision_mt_key());
		lua_rawget(L, LUA_REGISTRYINDEX);
		marked = lua_rawequal(L, -1, -2);
		lua_pop(L, 2);
	}
	if (!marked) {
		r.valid = false;
		return r;
	}
	lua_getfield(L, -1, "verdict");
	r.valid = lua_isstring(L, -1) && policy_verdict_from_name(lua_tostring(L, -1), &r.verdict);
	lua_pop(L, 1);
	lua_getfield(L, -1, "message");
	r.message = lua_tostring(L, -1);
	lua_insert(L, -2);	/* keep the message string alive under the decision */
	return r;
}

static void hook_where(lua_State *L, PolicyEngine *e, const Script *sc, int ref)
{
	lua_Debug ar;
	lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
	if (lua_getinfo(L, ">S", &ar) && !e->where[0])
		snprintf(e->where, sizeof(e->where), "%s:%d", sc->name, ar.linedefined);
}

/* ------------------------------------------------------------ sessions */

static void session_push_fields(lua_State *L, const PolicySession *s)
{
	lua_createtable(L, 0, 10);
	lua_pushnumber(L, (lua_Number)s->id);
	lua_setfield(L, -2, "id");
	lua_pushstring(L, s->user);
	lua_setfield(L, -2, "user");
	lua_pushstring(L, s->database);
	lua_setfield(L, -2, "database");
	lua_pushstring(L, s->application_name);
	lua_setfield(L, -2, "application_name");
	lua_pushstring(L, s->client_addr);
	lua_setfield(L, -2, "client_addr");
	lua_pushboolean(L, s->tls);
	lua_setfield(L, -2, "tls");
	lua_pushstring(L, s->role);
	lua_setfield(L, -2, "role");
	if (s->claims_json) {
		json_push_claims(L, s->claims_json);
		lua_setfield(L, -2, "claims");
	}
	lua_newtable(L);
	lua_setfield(L, -2, "vars");
}

/* Push the session's `s` (a read-only view; s.vars is the policy's to write). */
static void session_push(lua_State *L, PolicyEngine *e, PolicySession *s)
{
	if (s->generation == e->generation) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
		return;
	}
	session_push_fields(L, s);
	push_readonly_proxy(L);
	lua_pushvalue(L, -1);
	s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	s->cols_ref = LUA_NOREF;
	s->generation = e->generation;
}

typedef struct SessionCall {
	PolicyEngine *e;
	PolicySession *s;
	PolicyDecision *out;
	int hook;
	bool failed;
	const char *fail_policy;
} SessionCall;

static int session_run(lua_State *L)
{
	SessionCall *c = lua_touserdata(L, 1);
	PolicyEngine *e = c->e;
	lua_settop(L, 0);
	lua_pushcfunction(L, engine_msgh);
	session_push(L, e, c->s);
	for (int i = 0; i < e->nscripts; i++) {
		Script *sc = &e->scripts[i];
		if (sc->hooks[c->hook] == LUA_NOREF)
			continue;
		lua_settop(L, 2);
		lua_rawgeti(L, LUA_REGISTRYINDEX, sc->hooks[c->hook]);
		lua_pushvalue(L, 2);
		if (!hook_call(L, e, 1)) {
			c->failed = true;
			c->fail_policy = sc->name;
			return lua_error(L);
		}
		if (c->hook == HOOK_DISCONNECT)
			continue;
		HookResult r = hook_result(L);
		if (!r.valid || r.verdict == POLICY_REWRITE || r.verdict == POLICY_HOLD) {
			hook_where(L, e, sc, sc->hooks[c->hook]);
			c->failed = true;
			c->fail_policy = sc->name;
			return luaL_error(L, "%s: on_connect must return nothing, moat.allow() or "
					  "moat.deny(msg)", sc->name);
		}
		decision_trace(e, c->out, 0, sc->name, r.verdict, r.message);
		if (r.verdict == POLICY_DENY) {
			c->out->verdict = POLICY_DENY;
			set_str(&c->out->policy, sc->name);
			set_str(&c->out->message, r.message ? r.message : "connection denied by policy");
			return 0;
		}
	}
	return 0;
}

static void session_call(PolicyEngine *e, PolicySession *s, int hook, PolicyDecision *out)
{
	if (!engine_enter(e)) {
		decision_fail(e, out, NULL, "policy engine unavailable");
		return;
	}
	SessionCall c = { e, s, out, hook, false, NULL };
	if (lua_cpcall(e->L, session_run, &c) != 0)
		decision_fail(e, out, c.fail_policy, lua_tostring(e->L, -1));
	engine_leave(e);
}

void policy_session_open(PolicyEngine *e, PolicySession *s, PolicyDecision *out)
{
	decision_init(out);
	s->generation = 0;
	s->ref = LUA_NOREF;
	s->cols_ref = LUA_NOREF;
	session_call(e, s, HOOK_CONNECT, out);
	decision_finish(e, out);
}

void policy_session_close(PolicyEngine *e, PolicySession *s)
{
	if (e->any_hook[HOOK_DISCONNECT]) {
		PolicyDecision d;
		decision_init(&d);
		session_call(e, s, HOOK_DISCONNECT, &d);
		policy_decision_free(&d);
	}
	if (e->L && s->generation == e->generation) {
		luaL_unref(e->L, LUA_REGISTRYINDEX, s->ref);
		luaL_unref(e->L, LUA_REGISTRYINDEX, s->cols_ref);
	}
	s->generation = 0;
	s->ref = LUA_NOREF;
	s->cols_ref = LUA_NOREF;
}

/* ------------------------------------------------------------- queries */

/*
 * q is a userdata with one shared, hidden metatable (made with the state), so
 * judging a statement builds nothing but this block: no table, closure or
 * metatable per statement, and no field converted that no policy reads. The
 * plain fields are copied in (a q kept past its call still has them); each
 * parse-derived field is converted on its first read. Scalars are copied from
 * the parse up front; a table or string made from the parse is kept in the
 * userdata's environment table, so it is the same value on every read, and a
 * kept q still has it. Once the statement is over, a parse field not read
 * during the call is nil.
 */
typedef enum QField {
	QF_SQL, QF_PROTOCOL, QF_NAME, QF_IN_TRANSACTION,
	/* parse-derived: */
	QF_KIND, QF_TABLES, QF_HAS_WHERE, QF_WRITES, QF_IS_TRANSACTION_CONTROL,
	QF_DML_WITHOUT_WHERE, QF_HAS_LIMIT, QF_FUNCTIONS, QF_FINGERPRINT, QF_NORMALIZED,
	QF_NONE,
} QField;

_Static_assert(QF_NONE == QF_COUNT, "QF_COUNT counts q's fields");

static const struct {
	const char *name;
	size_t len;
} q_fields[QF_NONE] = {
#define QF_NAME_LEN(s) { s, sizeof(s) - 1 }
	QF_NAME_LEN("sql"), QF_NAME_LEN("protocol"), QF_NAME_LEN("name"),
	QF_NAME_LEN("in_transaction"), QF_NAME_LEN("kind"), QF_NAME_LEN("tables"),
	QF_NAME_LEN("has_where"), QF_NAME_LEN("writes"), QF_NAME_LEN("is_transaction_control"),
	QF_NAME_LEN("dml_without_where"), QF_NAME_LEN("has_limit"), QF_NAME_LEN("functions"),
	QF_NAME_LEN("fingerprint"), QF_NAME_LEN("normalized"),
#undef QF_NAME_LEN
};

typedef struct QView {
	SqlStatement *st;	/* while the statement is judged; NULL after, or for unparsed text */
	bool live;		/* the statement is being judged */
	bool unparsed;		/* text that could not be classified (P.allow_unparsed) */
	bool in_transaction;
	bool has_env;		/* the environment table is q's own cache */
	uint32_t read;		/* parse fields read while live (bit per QField) */
	/* scalars of the parse, copied when q is made */
	const char *kind;	/* a static string (sqlinfo.c's kinds) */
	bool has_where, writes, is_transaction_control, dml_without_where, has_limit;
	size_t sql_len, protocol_len, name_len;
	bool has_name;
	char text[];		/* sql, protocol, name: each NUL-terminated */
} QView;

static QField q_field_of(lua_State *L, const PolicyEngine *e, int idx)
{
	/* (one API call: a number key becomes a string here, never one of the names) */
	const char *k = lua_tolstring(L, idx, NULL);
	if (!k)
		return QF_NONE;
	for (int f = 0; f < QF_NONE; f++)
		if (e->q_names[f] == k)
			return (QField)f;
	return QF_NONE;
}

static void *q_mt_key(void);

/* With the state (protected): intern q's field names and keep them, and q's metatable. */
static void q_intern_names(lua_State *L, PolicyEngine *e)
{
	lua_createtable(L, QF_NONE, 0);
	for (int f = 0; f < QF_NONE; f++) {
		lua_pushlstring(L, q_fields[f].name, q_fields[f].len);
		e->q_names[f] = lua_tostring(L, -1);	/* (GC objects never move) */
		lua_rawseti(L, -2, f + 1);
	}
	e->q_names_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushlightuserdata(L, q_mt_key());
	lua_rawget(L, LUA_REGISTRYINDEX);
	e->q_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Push a kind (one of sqlinfo's static strings): interned once per state for the last few. */
static void q_push_kind(lua_State *L, PolicyEngine *e, const char *kind)
{
	for (int i = 0; i < Q_KINDS_KEPT; i++) {
		if (e->kind_ptr[i] == kind) {
			lua_rawgeti(L, LUA_REGISTRYINDEX, e->kind_ref[i]);
			return;
		}
	}
	int slot = e->kind_next;
	e->kind_next = (slot + 1) % Q_KINDS_KEPT;
	luaL_unref(L, LUA_REGISTRYINDEX, e->kind_ref[slot]);
	e->kind_ptr[slot] = NULL;
	lua_pushstring(L, kind);
	lua_pushvalue(L, -1);
	e->kind_ref[slot] = luaL_ref(L, LUA_REGISTRYINDEX);	/* (in a protected call) */
	e->kind_ptr[slot] = kind;
}

static void q_push_strlist(lua_State *L, const StrList *l)
{
	lua_createtable(L, l ? l->count : 0, 0);
	for (int i = 0; l && i < l->count; i++) {
		lua_pushstring(L, l->items[i]);
		lua_rawseti(L, -2, i + 1);
	}
}

/* Convert a table or string field of the live statement and keep it in q's cache. */
static void q_convert_kept(lua_State *L, QView *q, QField f)
{
	if (!q->has_env) {
		lua_createtable(L, 0, 2);
		lua_setfenv(L, 1);
		q->has_env = true;
	}
	lua_getfenv(L, 1);
	switch (f) {
	case QF_TABLES:
		q_push_strlist(L, q->st ? &q->st->tables : NULL);
		break;
	case QF_FUNCTIONS:
		q_push_strlist(L, &q->st->functions);
		break;
	case QF_FINGERPRINT:	/* a parse of its own (sqlinfo_stmt_*): paid only if read */
		lua_pushstring(L, sqlinfo_stmt_fingerprint(q->st));
		break;
	default:
		lua_pushstring(L, sqlinfo_stmt_normalized(q->st));
		break;
	}
	lua_pushvalue(L, -1);
	lua_rawseti(L, -3, (int)f);
}

/* Push a parse field; false when it has no value (nil). */
static bool q_push_parse_field(lua_State *L, PolicyEngine *e, QView *q, QField f)
{
	bool kept = f == QF_TABLES || f == QF_FUNCTIONS || f == QF_FINGERPRINT ||
		    f == QF_NORMALIZED;
	if (!q->live || q->read & (1u << f)) {
		if (!(q->read & (1u << f)))
			return false;	/* the statement is over: only fields read during it */
		if (kept) {
			lua_getfenv(L, 1);
			lua_rawgeti(L, -1, (int)f);
			return true;
		}
	} else {
		/* unparsed text has a kind, (empty) tables and has_where, nothing else */
		if (q->unparsed && f != QF_KIND && f != QF_TABLES && f != QF_HAS_WHERE)
			return false;
		q->read |= 1u << f;
		e->stats.lazy_fields++;
		if (kept) {
			q_convert_kept(L, q, f);
			return true;
		}
	}
	switch (f) {
	case QF_KIND:
		q_push_kind(L, e, q->kind);
		break;
	case QF_HAS_WHERE:
		lua_pushboolean(L, q->has_where);
		break;
	case QF_WRITES:
		lua_pushboolean(L, q->writes);
		break;
	case QF_IS_TRANSACTION_CONTROL:
		lua_pushboolean(L, q->is_transaction_control);
		break;
	case QF_DML_WITHOUT_WHERE:
		lua_pushboolean(L, q->dml_without_where);
		break;
	default:
		lua_pushboolean(L, q->has_limit);
		break;
	}
	return true;
}

/* __index of q. */
static int q_index(lua_State *L)
{
	QView *q = lua_touserdata(L, 1);
	PolicyEngine *e = engine_of(L);
	QField f = q ? q_field_of(L, e, 2) : QF_NONE;
	switch (f) {
	case QF_NONE:
		return 0;
	case QF_SQL:
		lua_pushlstring(L, q->text, q->sql_len);
		return 1;
	case QF_PROTOCOL:
		lua_pushlstring(L, q->text + q->sql_len + 1, q->protocol_len);
		return 1;
	case QF_NAME:
		if (!q->has_name)
			return 0;
		lua_pushlstring(L, q->text + q->sql_len + 1 + q->protocol_len + 1, q->name_len);
		return 1;
	case QF_IN_TRANSACTION:
		lua_pushboolean(L, q->in_transaction);
		return 1;
	default:
		return q_push_parse_field(L, e, q, f) ? 1 : 0;
	}
}

static void *q_mt_key(void)
{
	static char key;
	return &key;
}

/* The metatable every q shares, hidden from policies (at state load, protected). */
static void q_register(lua_State *L)
{
	lua_pushlightuserdata(L, q_mt_key());
	lua_createtable(L, 0, 3);
	lua_pushcfunction(L, q_index);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, sb_readonly);
	lua_setfield(L, -2, "__newindex");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_rawset(L, LUA_REGISTRYINDEX);
}

typedef struct QueryCall {
	PolicyEngine *e;
	PolicySession *s;
	PolicyDecision *out;
	const char *protocol;
	const char *stmt_name;
	bool in_transaction;
	SqlInfo *info;
	SqlInfo **extra;	/* parses of rewrites, released after the call */
	int nextra;
	char **final_sql;	/* per statement: the rewrite (owned) or NULL */
	bool any_rewrite;
	const char *fail_policy;
	const char *raw_sql;	/* the whole text, when it could not be split (opted in) */
} QueryCall;

/* Push q for (sql, st); st is NULL for text that could not be classified. */
static QView *q_push(lua_State *L, const QueryCall *c, const char *sql, const SqlStatement *st)
{
	const char *protocol = c->protocol ? c->protocol : "";
	bool has_name = c->stmt_name && *c->stmt_name;
	size_t sql_len = strlen(sql), protocol_len = strlen(protocol);
	size_t name_len = has_name ? strlen(c->stmt_name) : 0;
	QView *q = lua_newuserdata(L, sizeof(*q) + sql_len + protocol_len + name_len + 3);
	memset(q, 0, sizeof(*q));
	q->st = (SqlStatement *)st;	/* fingerprint and normalized are filled in on demand */
	q->live = true;
	q->unparsed = st == NULL;
	q->in_transaction = c->in_transaction;
	q->kind = st && st->kind ? st->kind : "unknown";
	if (st) {
		q->has_where = st->has_where;
		q->writes = st->writes;
		q->is_transaction_control = st->is_transaction_control;
		q->dml_without_where = st->dml_without_where;
		q->has_limit = st->has_limit;
	}
	q->sql_len = sql_len;
	q->protocol_len = protocol_len;
	q->name_len = name_len;
	q->has_name = has_name;
	memcpy(q->text, sql, sql_len + 1);
	memcpy(q->text + sql_len + 1, protocol, protocol_len + 1);
	if (has_name)
		memcpy(q->text + sql_len + 1 + protocol_len + 1, c->stmt_name, name_len + 1);
	lua_rawgeti(L, LUA_REGISTRYINDEX, c->e->q_mt_ref);
	lua_setmetatable(L, -2);
	return q;
}

/* The statement is done: a q the policy kept must not reach freed parse data. */
static void q_invalidate(QView *q)
{
	q->live = false;
	q->st = NULL;
}

/* Parse a rewrite; it must be exactly one statement we can classify. */
static const SqlStatement *query_parse_rewrite(QueryCall *c, const char *sql)
{
	SqlInfo *info = sqlinfo_cache_get(c->e->cache, sql, strlen(sql));
	c->extra[c->nextra++] = info;
	if (!info->ok || info->nstmts != 1)
		return NULL;
	return &info->stmts[0];
}

typedef struct StmtState {
	int index;
	const char *sql;
	const SqlStatement *st;
	PolicyVerdict verdict;	/* ALLOW, REWRITE, HOLD or DENY for this statement */
	const char *policy;
	char *message;		/* owned */
} StmtState;

/* Run every on_query for one statement, chaining rewrites; stops at deny or hold. */
static void query_run_stmt(lua_State *L, QueryCall *c, StmtState *ss)
{
	PolicyEngine *e = c->e;
	int base = lua_gettop(L);
	QView *q = q_push(L, c, ss->sql, ss->st);	/* at base+1 */
	for (int i = 0; i < e->nscripts; i++) {
		Script *sc = &e->scripts[i];
		if (sc->hooks[HOOK_QUERY] == LUA_NOREF)
			continue;
		lua_settop(L, base + 1);
		lua_rawgeti(L, LUA_REGISTRYINDEX, sc->hooks[HOOK_QUERY]);
		lua_pushvalue(L, 2);
		lua_pushvalue(L, base + 1);
		if (!hook_call(L, e, 2)) {
			c->fail_policy = sc->name;
			q_invalidate(q);	/* a q the failed policy kept outlives the parse */
			lua_error(L);
		}
		HookResult r = hook_result(L);
		if (!r.valid) {
			hook_where(L, e, sc, sc->hooks[HOOK_QUERY]);
			c->fail_policy = sc->name;
			q_invalidate(q);
			luaL_error(L, "%s: on_query must return nothing or a moat decision", sc->name);
		}
		decision_trace(e, c->out, ss->index, sc->name, r.verdict, r.message);
		if (r.verdict == POLICY_ALLOW)
			continue;
		ss->policy = sc->name;
		if (r.verdict == POLICY_REWRITE) {
			char *sql = xstrdup(r.message);
			free(c->final_sql[ss->index]);
			c->final_sql[ss->index] = sql;
			c->any_rewrite = true;
			ss->verdict = POLICY_REWRITE;
			q_invalidate(q);
			ss->sql = sql;
			ss->st = query_parse_rewrite(c, sql);
			if (!ss->st) {
				ss->verdict = POLICY_DENY;
				free(ss->message);
				ss->message = xasprintf("rewrite by %s is not one statement pgmoat can "
							"classify", sc->name);
				break;
			}
			lua_settop(L, base);
			q = q_push(L, c, ss->sql, ss->st);
			continue;
		}
		ss->verdict = r.verdict;
		free(ss->message);
		ss->message = xstrdup(r.message ? r.message
					: r.verdict == POLICY_DENY ? "statement denied by policy"
								   : "statement held for approval");
		break;
	}
	q_invalidate(q);
	lua_settop(L, base);
}

/* Strictest wins across statements: the first deny, else the first hold, else any rewrite. */
static void query_merge(QueryCall *c, const StmtState *ss)
{
	PolicyDecision *d = c->out;
	if (ss->verdict <= d->verdict)
		return;	/* equal: the first one's reason stands */
	d->verdict = ss->verdict;
	set_str(&d->policy, ss->policy);
	set_str(&d->message, ss->verdict == POLICY_REWRITE ? NULL : ss->message);
}

static int query_run(lua_State *L)
{
	QueryCall *c = engine_call_arg(L);
	lua_settop(L, 0);
	lua_rawgeti(L, LUA_REGISTRYINDEX, c->e->msgh_ref);
	session_push(L, c->e, c->s);
	int n = c->info->ok ? c->info->nstmts : 1;
	for (int i = 0; i < n && c->out->verdict != POLICY_DENY; i++) {
		StmtState ss = { i, c->raw_sql, NULL, POLICY_ALLOW, NULL, NULL };
		if (c->info->ok) {
			ss.sql = c->info->stmts[i].sql;
			ss.st = &c->info->stmts[i];
		}
		query_run_stmt(L, c, &ss);
		query_merge(c, &ss);
		free(ss.message);
	}
	return 0;
}

/* Glue the statements back together, rewritten ones replaced. */
static char *query_join(const QueryCall *c)
{
	if (!c->info->ok)
		return xstrdup(c->final_sql[0]);
	size_t total = 1;
	int n = c->info->nstmts;
	for (int i = 0; i < n; i++)
		total += strlen(c->final_sql[i] ? c->final_sql[i] : c->info->stmts[i].sql) + 3;
	char *out = xmalloc(total);
	size_t pos = 0;
	for (int i = 0; i < n; i++) {
		const char *s = c->final_sql[i] ? c->final_sql[i] : c->info->stmts[i].sql;
		size_t l = strlen(s);
		memcpy(out + pos, s, l);
		pos += l;
		if (i + 1 < n) {
			/* a newline first: the statement may end in a -- comment */
			memcpy(out + pos, "\n;\n", 3);
			pos += 3;
		}
	}
	out[pos] = '\0';
	return out;
}

static void query_deny_unparsed(PolicyDecision *out, const SqlInfo *info)
{
	out->verdict = POLICY_DENY;
	free(out->message);
	out->message = xasprintf("statement denied: it cannot be classified (%s)",
				 info->error ? info->error : "parse error");
}

void policy_on_query(PolicyEngine *e, PolicySession *s, const char *sql, size_t len,
		     const char *protocol, const char *stmt_name, bool in_transaction,
		     PolicyDecision *out)
{
	SqlInfo *info = sqlinfo_cache_get(e->cache, sql, len);
	policy_on_query_parsed(e, s, info, sql, len, protocol, stmt_name, in_transaction, out);
	sqlinfo_release(e->cache, info);
}

void policy_on_query_parsed(PolicyEngine *e, PolicySession *s, SqlInfo *info, const char *sql,
			    size_t len, const char *protocol, const char *stmt_name,
			    bool in_transaction, PolicyDecision *out)
{
	decision_init(out);
	if (!info->ok && !e->allow_unparsed) {
		query_deny_unparsed(out, info);
		decision_finish(e, out);
		return;
	}
	int n = info->ok ? info->nstmts : 1;
	if (!e->any_hook[HOOK_QUERY] || n == 0) {
		decision_finish(e, out);
		return;
	}
	char *raw = info->ok ? NULL : xstrndup(sql, len);
	QueryCall c = { e, s, out, protocol, stmt_name, in_transaction, info, NULL, 0, NULL, false,
			NULL, raw };
	/* inline for the usual one statement under a few policies */
	SqlInfo *extra_inline[8];
	char *final_inline[4] = { NULL };
	size_t nextra_max = (size_t)(n * e->nscripts + 1);
	c.extra = nextra_max <= ARRAY_SIZE(extra_inline) ? extra_inline
							 : xcalloc(nextra_max, sizeof(*c.extra));
	c.final_sql = (size_t)n <= ARRAY_SIZE(final_inline) ? final_inline
							    : xcalloc((size_t)n, sizeof(*c.final_sql));
	/* one clock read for the deadline and the timing (both CLOCK_MONOTONIC) */
	uint64_t t0 = histogram_now_ns();
	if (!engine_enter_at(e, (usec_t)(t0 / 1000))) {
		decision_fail(e, out, NULL, "policy engine unavailable");
	} else {
		if (engine_cpcall(e, e->query_run_ref, &c) != 0)
			decision_fail(e, out, c.fail_policy, lua_tostring(e->L, -1));
		if (e->lua_time) {
			out->lua_end_ns = histogram_now_ns();
			histogram_record(e->lua_time, out->lua_end_ns - t0);
		}
		engine_leave(e);
	}
	if (!out->error && out->verdict != POLICY_DENY && c.any_rewrite)
		out->rewritten_sql = query_join(&c);
	for (int i = 0; i < c.nextra; i++)
		sqlinfo_release(e->cache, c.extra[i]);
	for (int i = 0; i < n; i++)
		free(c.final_sql[i]);
	if (c.final_sql != final_inline)
		free(c.final_sql);
	if (c.extra != extra_inline)
		free(c.extra);
	free(raw);
	decision_finish(e, out);
}

/* ------------------------------------------------------------- columns */

typedef struct ColumnsCall {
	PolicyEngine *e;
	PolicySession *s;
	MaskPlan *plan;
	const char **table_names;
	const char **column_names;
	MaskKind *declared;	/* from P.masks: on_columns may change these, never clear them */
	const char *fail_policy;
} ColumnsCall;

/* In columns_run (a closure made once per state): the string "mask", not interned per call. */
#define COLS_MASK_KEY lua_upvalueindex(1)

/* Push the P.masks entry for (table, column), or nil: "schema.table.column", "table.column", "*.column". */
static void columns_lookup_mask(lua_State *L, int masks_idx, const char *table, const char *column)
{
	const char *dot = strchr(table, '.');
	const char *rel = dot ? dot + 1 : table;
	lua_pushfstring(L, "%s.%s", table, column);
	lua_rawget(L, masks_idx);
	if (!lua_isnil(L, -1) || !dot)
		goto star;
	lua_pop(L, 1);
	lua_pushfstring(L, "%s.%s", rel, column);
	lua_rawget(L, masks_idx);
star:
	if (!lua_isnil(L, -1))
		return;
	lua_pop(L, 1);
	lua_pushfstring(L, "*.%s", column);
	lua_rawget(L, masks_idx);
}

static MaskKind columns_kind_of(lua_State *L, int idx)
{
	if (lua_isfunction(L, idx))
		return MASK_CUSTOM;
	if (lua_type(L, idx) != LUA_TSTRING)
		return MASK_NONE;
	return mask_kind_from_name(lua_tostring(L, idx));
}

/* Append s to b as a Lua string literal: every byte outside [A-Za-z0-9_ .] as \ddd. */
static void template_add_literal(luaL_Buffer *b, const char *s, size_t len)
{
	luaL_addchar(b, '"');
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    ch == '_' || ch == ' ' || ch == '.') {
			luaL_addchar(b, (char)ch);
		} else {
			char esc[5];
			snprintf(esc, sizeof(esc), "\\%03u", ch);
			luaL_addlstring(b, esc, 4);
		}
	}
	luaL_addchar(b, '"');
}

static void template_add_field(luaL_Buffer *b, const char *k, const char *v)
{
	if (!v)
		return;
	luaL_addstring(b, k);
	luaL_addchar(b, '=');
	template_add_literal(b, v, strlen(v));
	luaL_addchar(b, ',');
}

/*
 * The columns' template (at the top): a Lua function that returns a fresh cols
 * table and the P.masks mask kinds (one byte per column). It is compiled from
 * source where each column is a table constructor of constants (name, table,
 * column, type_oid, format and the P.masks mask; absent fields left out), so
 * a call copies each column's prebuilt table in one step (LuaJIT's TDUP)
 * instead of setting its fields one by one. A mask that is a function is
 * read from F, the table the chunk is given. Strings go in as escaped literals.
 */
static void columns_build_template(lua_State *L, const ColumnsCall *c, int masks_idx)
{
	MaskPlan *plan = c->plan;
	int n = plan->ncols;
	/* first the masks: F (functions, by column) and each column's kind */
	lua_createtable(L, 0, 0);
	int fns = lua_gettop(L);
	char *kinds = lua_newuserdata(L, (size_t)n + 1);
	const char **named = lua_newuserdata(L, sizeof(char *) * ((size_t)n + 1));
	for (int i = 0; i < n; i++) {
		const char *table = c->table_names ? c->table_names[i] : NULL;
		const char *column = c->column_names ? c->column_names[i] : NULL;
		kinds[i] = MASK_NONE;
		named[i] = NULL;
		if (!table || !column)
			continue;
		columns_lookup_mask(L, masks_idx, table, column);
		kinds[i] = (char)columns_kind_of(L, -1);
		if (lua_type(L, -1) == LUA_TSTRING) {
			named[i] = lua_tostring(L, -1);	/* (held by P.masks) */
			lua_pop(L, 1);
		} else if (!lua_isnil(L, -1)) {
			lua_rawseti(L, fns, i + 1);
		} else {
			lua_pop(L, 1);
		}
	}
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	luaL_addstring(&b, "local F = ...\nreturn function() return {\n");
	for (int i = 0; i < n; i++) {
		const MaskColumn *mc = &plan->cols[i];
		const char *table = c->table_names ? c->table_names[i] : NULL;
		const char *column = c->column_names ? c->column_names[i] : NULL;
		char num[48];
		luaL_addchar(&b, '{');
		template_add_field(&b, "name", mc->name);
		template_add_field(&b, "table", table);
		template_add_field(&b, "column", column);
		snprintf(num, sizeof(num), "type_oid=%u,", (unsigned)mc->type_oid);
		luaL_addstring(&b, num);
		template_add_field(&b, "format", mc->format == 1 ? "binary" : "text");
		if (named[i]) {
			template_add_field(&b, "mask", named[i]);
		} else if (kinds[i] != MASK_NONE) {
			snprintf(num, sizeof(num), "mask=F[%d],", i + 1);
			luaL_addstring(&b, num);
		}
		luaL_addstring(&b, "},\n");
	}
	luaL_addstring(&b, "}, ");
	template_add_literal(&b, kinds, (size_t)n);
	luaL_addstring(&b, " end\n");
	luaL_pushresult(&b);
	size_t len;
	const char *src = lua_tolstring(L, -1, &len);
	if (luaL_loadbuffer(L, src, len, "=on_columns template") != 0)
		lua_error(L);
	lua_pushvalue(L, fns);
	lua_call(L, 1, 1);
	lua_replace(L, fns);
	lua_settop(L, fns);
}

/*
 * Everything a template is made of, as one string (in e->cols_key; returns its
 * length): per column its name, then 's' table, column or 'n' (no source),
 * then type OID and format. Each part is NUL-terminated or of fixed width, so
 * different inputs never give the same key.
 */
static size_t columns_key(PolicyEngine *e, const ColumnsCall *c)
{
	size_t cap = 1;
	for (int i = 0; i < c->plan->ncols; i++) {
		const char *table = c->table_names ? c->table_names[i] : NULL;
		const char *column = c->column_names ? c->column_names[i] : NULL;
		cap += strlen(c->plan->cols[i].name) + 3 + sizeof(uint32_t) +
		       (table && column ? strlen(table) + strlen(column) + 2 : 0);
	}
	if (cap > e->cols_key_cap) {
		e->cols_key = xrealloc(e->cols_key, cap);
		e->cols_key_cap = cap;
	}
	char *buf = e->cols_key;
	char *p = buf;
	for (int i = 0; i < c->plan->ncols; i++) {
		const MaskColumn *mc = &c->plan->cols[i];
		const char *table = c->table_names ? c->table_names[i] : NULL;
		const char *column = c->column_names ? c->column_names[i] : NULL;
		p = stpcpy(p, mc->name) + 1;
		if (table && column) {
			*p++ = 's';
			p = stpcpy(p, table) + 1;
			p = stpcpy(p, column) + 1;
		} else {
			*p++ = 'n';
		}
		memcpy(p, &mc->type_oid, sizeof(mc->type_oid));
		p += sizeof(mc->type_oid);
		*p++ = mc->format == 1 ? 'b' : 't';
	}
	return (size_t)(p - buf);
}

/* The template at the top is the one for e->cols_key (len bytes): remember it as the last. */
static void columns_remember_last(lua_State *L, PolicyEngine *e, size_t len)
{
	lua_pushvalue(L, -1);
	if (e->cols_last_ref == LUA_NOREF)
		e->cols_last_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	else
		lua_rawseti(L, LUA_REGISTRYINDEX, e->cols_last_ref);
	/* the key buffers change places: the next key is built in the old one */
	util_swap_buffers(&e->cols_key, &e->cols_key_cap, &e->cols_last_key, &e->cols_last_cap);
	e->cols_last_len = len;
}

/*
 * Push the template for c's columns: built once per column set and state
 * (P.masks cannot change within a state) and kept in a table of the state's
 * own, dropped whole when it holds too many columns (a template column takes
 * 300-400 bytes of the state's memory: the cache stays under 1/20 of it).
 * The last one is also kept by its key in C: a repeat interns no string.
 */
static void columns_template(lua_State *L, PolicyEngine *e, const ColumnsCall *c)
{
	size_t len = columns_key(e, c);
	if (e->cols_last_ref != LUA_NOREF && len == e->cols_last_len &&
	    memcmp(e->cols_key, e->cols_last_key, len) == 0) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, e->cols_last_ref);
		return;
	}
	if (e->cols_cache_ref == LUA_NOREF) {
		lua_newtable(L);
		e->cols_cache_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		e->cols_cache_cols = 0;
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->cols_cache_ref);
	int cache_idx = lua_gettop(L);
	lua_pushlstring(L, e->cols_key, len);
	lua_pushvalue(L, -1);
	lua_rawget(L, cache_idx);
	if (lua_isfunction(L, -1)) {
		lua_replace(L, cache_idx);
		lua_settop(L, cache_idx);
		columns_remember_last(L, e, len);
		return;
	}
	lua_pop(L, 1);
	size_t max_cols = e->cfg.memory_limit / COLS_CACHE_COL_SHARE;
	if (max_cols > COLS_CACHE_MAX_COLS)
		max_cols = COLS_CACHE_MAX_COLS;
	if ((size_t)e->cols_cache_cols + (size_t)c->plan->ncols > max_cols) {
		lua_newtable(L);
		lua_replace(L, cache_idx);
		lua_pushvalue(L, cache_idx);
		lua_rawseti(L, LUA_REGISTRYINDEX, e->cols_cache_ref);
		e->cols_cache_cols = 0;
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->masks_ref);	/* (only a new template reads P.masks) */
	int masks_idx = lua_gettop(L);
	columns_build_template(L, c, masks_idx);
	lua_remove(L, masks_idx);
	lua_pushvalue(L, -1);
	lua_insert(L, -3);	/* template, key, template */
	lua_rawset(L, cache_idx);
	e->cols_cache_cols += c->plan->ncols;
	lua_replace(L, cache_idx);
	columns_remember_last(L, e, len);
}

/* The hooks' cols: a fresh table of fresh column tables, from the template (a hook may change them). */
static void columns_push(lua_State *L, PolicyEngine *e, ColumnsCall *c)
{
	MaskPlan *plan = c->plan;
	columns_template(L, e, c);
	lua_call(L, 0, 2);	/* cols, kinds */
	size_t n;
	const char *kinds = lua_tolstring(L, -1, &n);
	if (!kinds || n != (size_t)plan->ncols)
		luaL_error(L, "on_columns template does not match its columns");
	for (int i = 0; i < plan->ncols; i++)
		c->declared[i] = (MaskKind)kinds[i];
	lua_pop(L, 1);
}

/* Read cols[i].mask back into the plan; a declared mask survives a hook that drops it. */
static void columns_read_back(lua_State *L, ColumnsCall *c, int cols_idx)
{
	MaskPlan *plan = c->plan;
	plan->any = false;
	lua_pushvalue(L, COLS_MASK_KEY);	/* the same string for every column */
	int key = lua_gettop(L);
	for (int i = 0; i < plan->ncols; i++) {
		lua_rawgeti(L, cols_idx, i + 1);
		if (!lua_istable(L, -1))
			luaL_error(L, "cols[%d] is no longer a column table", i + 1);
		lua_pushvalue(L, key);
		lua_gettable(L, -2);	/* (as lua_getfield: a metatable's __index counts) */
		MaskKind k = columns_kind_of(L, -1);
		bool named = lua_type(L, -1) == LUA_TSTRING;
		if (named && k == MASK_NONE && strcmp(lua_tostring(L, -1), "none") != 0)
			luaL_error(L, "cols[%d].mask: unknown mask '%s'", i + 1, lua_tostring(L, -1));
		if (!named && !lua_isnil(L, -1) && k == MASK_NONE)
			luaL_error(L, "cols[%d].mask must be a mask name or a function", i + 1);
		if (k == MASK_NONE && c->declared[i] != MASK_NONE)
			luaL_error(L, "cols[%d].mask: a mask from P.masks cannot be removed", i + 1);
		plan->cols[i].mask = k;
		if (k != MASK_NONE)
			plan->any = true;
		lua_pop(L, 2);
	}
	lua_pop(L, 1);
}


/*
 * Inside a protected call: every script's `hook`, in order, with the values at
 * stack slots args[0..nargs) (the slots above the highest are scratch). An
 * error names the script in *fail_policy and propagates.
 */
static void hooks_call_each(lua_State *L, PolicyEngine *e, int hook, const int *args, int nargs,
			    const char **fail_policy)
{
	int top = lua_gettop(L);
	for (int i = 0; i < e->nscripts; i++) {
		Script *sc = &e->scripts[i];
		if (sc->hooks[hook] == LUA_NOREF)
			continue;
		lua_settop(L, top);
		lua_rawgeti(L, LUA_REGISTRYINDEX, sc->hooks[hook]);
		for (int a = 0; a < nargs; a++)
			lua_pushvalue(L, args[a]);
		if (!hook_call(L, e, nargs)) {
			*fail_policy = sc->name;
			lua_error(L);
		}
	}
}

static bool columns_any_hash(const MaskPlan *plan)
{
	for (int i = 0; i < plan->ncols; i++)
		if (plan->cols[i].mask == MASK_HASH)
			return true;
	return false;
}

static bool columns_any_custom(const MaskPlan *plan)
{
	for (int i = 0; i < plan->ncols; i++)
		if (plan->cols[i].mask == MASK_CUSTOM)
			return true;
	return false;
}

static int columns_run(lua_State *L)
{
	ColumnsCall *c = engine_call_arg(L);
	PolicyEngine *e = c->e;
	lua_settop(L, 0);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->msgh_ref);	/* 1 */
	session_push(L, e, c->s);			/* 2 */
	columns_push(L, e, c);				/* 3 */
	static const int args[] = { 2, 3 };	/* on_columns(s, cols) */
	hooks_call_each(L, e, HOOK_COLUMNS, args, 2, &c->fail_policy);
	lua_settop(L, 3);
	columns_read_back(L, c, 3);
	/* kept for on_row and Lua masks only (mask_run, row_run) */
	if (c->s->cols_ref != LUA_NOREF)
		luaL_unref(L, LUA_REGISTRYINDEX, c->s->cols_ref);
	c->s->cols_ref = LUA_NOREF;
	if (e->any_hook[HOOK_ROW] || columns_any_custom(c->plan))
		c->s->cols_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

/* Make the function on_columns calls, once per state (protected: it allocates). */
static int columns_fns_make(lua_State *L)
{
	PolicyEngine *e = lua_touserdata(L, 1);
	lua_pushliteral(L, "mask");
	lua_pushcclosure(L, columns_run, 1);	/* COLS_MASK_KEY */
	e->cols_fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

bool policy_on_columns(PolicyEngine *e, PolicySession *s, MaskPlan *plan,
		       const char **table_names, const char **column_names, char *err,
		       size_t errlen)
{
	if (!e->any_masks && !e->any_hook[HOOK_COLUMNS] && !e->any_hook[HOOK_ROW])
		return true;	/* (on_row needs the cols table columns_run keeps) */
	if (!engine_enter(e)) {
		snprintf(err, errlen, "policy engine unavailable");
		return false;
	}
	MaskKind declared_on_stack[32];
	MaskKind *declared = plan->ncols <= 32 ? declared_on_stack
					       : xcalloc((size_t)plan->ncols, sizeof(MaskKind));
	ColumnsCall c = { e, s, plan, table_names, column_names, declared, NULL };
	bool ok = e->cols_fn_ref != LUA_NOREF || lua_cpcall(e->L, columns_fns_make, e) == 0;
	if (ok)
		ok = engine_cpcall(e, e->cols_fn_ref, &c) == 0;
	if (!ok) {
		const char *msg = lua_tostring(e->L, -1);
		snprintf(err, errlen, "%s: %s", e->where[0] ? e->where : "policy",
			 msg ? msg : "error");
		e->stats.errors++;
		log_warning("policy %s failed in on_columns at %s: %s",
			    c.fail_policy ? c.fail_policy : "engine", e->where[0] ? e->where : "?",
			    msg ? msg : "error");
	}
	if (declared != declared_on_stack)
		free(declared);
	engine_leave(e);
	/* keyed only when "hash" is used: making the HMAC context costs more than the rest */
	if (ok && e->hash_key_len > 0 && columns_any_hash(plan) &&
	    !mask_plan_set_hash_key(plan, e->hash_key, e->hash_key_len)) {
		snprintf(err, errlen, "cannot key the hash mask");
		ok = false;
	}
	if (ok && !mask_plan_finish(plan)) {
		/* a masked binary column, or "hash" without policy.hash_key_file */
		snprintf(err, errlen, "the result cannot be masked (binary format or no hash key)");
		ok = false;
	}
	return ok;
}

typedef struct MaskCall {
	PolicyEngine *e;
	PolicySession *s;
	int col;
	const uint8_t *in;
	int32_t in_len;
	uint8_t *out;
	int32_t out_len;
} MaskCall;

static int mask_run(lua_State *L)
{
	MaskCall *c = lua_touserdata(L, 1);
	lua_settop(L, 0);
	lua_pushcfunction(L, engine_msgh);
	if (c->s->generation != c->e->generation || c->s->cols_ref == LUA_NOREF)
		return luaL_error(L, "no column plan for this session (state recreated?)");
	lua_rawgeti(L, LUA_REGISTRYINDEX, c->s->cols_ref);
	lua_rawgeti(L, -1, c->col + 1);
	if (!lua_istable(L, -1))
		return luaL_error(L, "no column %d in the plan", c->col + 1);
	lua_getfield(L, -1, "mask");
	if (!lua_isfunction(L, -1))
		return luaL_error(L, "column %d has no Lua mask", c->col + 1);
	if (c->in)
		lua_pushlstring(L, (const char *)c->in, (size_t)c->in_len);
	else
		lua_pushnil(L);
	lua_pushvalue(L, 3);
	if (!hook_call(L, c->e, 2))
		return lua_error(L);
	if (lua_isnil(L, -1))
		return 0;
	if (!lua_isstring(L, -1))
		return luaL_error(L, "a mask function must return a string or nil");
	size_t len;
	const char *v = lua_tolstring(L, -1, &len);
	if (len > INT32_MAX - 1)
		return luaL_error(L, "masked value too large");
	c->out = xmalloc(len + 1);
	memcpy(c->out, v, len);
	c->out[len] = 0;
	c->out_len = (int32_t)len;
	return 0;
}

bool policy_mask_custom(void *arg, int col, const uint8_t *in, int32_t in_len, uint8_t **out,
			int32_t *out_len)
{
	PolicyRowContext *ctx = arg;
	PolicyEngine *e = ctx->engine;
	*out = NULL;
	*out_len = -1;
	if (!engine_enter(e))
		return false;
	MaskCall c = { e, ctx->session, col, in, in_len, NULL, -1 };
	bool ok = lua_cpcall(e->L, mask_run, &c) == 0;
	if (!ok) {
		e->stats.errors++;
		log_warning("policy mask function failed at %s: %s", e->where[0] ? e->where : "?",
			    lua_tostring(e->L, -1));
		free(c.out);
	} else {
		*out = c.out;
		*out_len = c.out ? c.out_len : -1;
	}
	engine_leave(e);
	return ok;
}

/* ------------------------------------------------------------- rows */

typedef struct RowCall {
	PolicyEngine *e;
	PolicySession *s;
	PolicyRow *row;
	const char *fail_policy;
} RowCall;

static void row_push(lua_State *L, const PolicyRow *row)
{
	lua_createtable(L, row->n, 0);
	for (int i = 0; i < row->n; i++) {
		if (!row->vals[i])
			continue;	/* SQL NULL: nil */
		lua_pushlstring(L, (const char *)row->vals[i], (size_t)row->lens[i]);
		lua_rawseti(L, -2, i + 1);
	}
}

/* Take row[i] back; a replaced value is copied out (binary-format columns cannot be). */
static void row_read_back(lua_State *L, PolicyRow *row, int row_idx)
{
	for (int i = 0; i < row->n; i++) {
		lua_rawgeti(L, row_idx, i + 1);
		size_t len = 0;
		const char *v = NULL;
		if (lua_type(L, -1) == LUA_TSTRING)
			v = lua_tolstring(L, -1, &len);
		else if (!lua_isnil(L, -1))
			luaL_error(L, "row[%d] must be a string or nil", i + 1);
		bool same = v ? row->vals[i] && (size_t)row->lens[i] == len &&
				memcmp(row->vals[i], v, len) == 0
			      : !row->vals[i];
		if (!same) {
			if (row->binary[i])
				luaL_error(L, "row[%d] is in binary format: on_row cannot replace it", i + 1);
			if (len > INT32_MAX - 1)
				luaL_error(L, "row[%d] is too large", i + 1);
			row->changed[i] = true;
			row->out_len[i] = v ? (int32_t)len : -1;
			if (v) {
				row->out[i] = xmalloc(len + 1);
				memcpy(row->out[i], v, len);
				row->out[i][len] = 0;
			}
		}
		lua_pop(L, 1);
	}
}

static int row_run(lua_State *L)
{
	RowCall *c = lua_touserdata(L, 1);
	PolicyEngine *e = c->e;
	lua_settop(L, 0);
	lua_pushcfunction(L, engine_msgh);			/* 1 */
	if (c->s->generation != e->generation || c->s->cols_ref == LUA_NOREF)
		return luaL_error(L, "no column plan for this session (state recreated?)");
	session_push(L, e, c->s);				/* 2 */
	lua_rawgeti(L, LUA_REGISTRYINDEX, c->s->cols_ref);	/* 3 */
	row_push(L, c->row);					/* 4 */
	static const int args[] = { 2, 4, 3 };	/* on_row(s, row, cols) */
	hooks_call_each(L, e, HOOK_ROW, args, 3, &c->fail_policy);
	lua_settop(L, 4);
	row_read_back(L, c->row, 4);
	return 0;
}

static void row_out_free(PolicyRow *row)
{
	for (int i = 0; i < row->n; i++) {
		free(row->out[i]);
		row->out[i] = NULL;
		row->changed[i] = false;
	}
}

bool policy_on_row(PolicyEngine *e, PolicySession *s, PolicyRow *row, char *err, size_t errlen)
{
	if (!e->any_hook[HOOK_ROW])
		return true;
	if (!engine_enter(e)) {
		snprintf(err, errlen, "policy engine unavailable");
		return false;
	}
	RowCall c = { e, s, row, NULL };
	bool ok = lua_cpcall(e->L, row_run, &c) == 0;
	if (!ok) {
		const char *msg = lua_tostring(e->L, -1);
		snprintf(err, errlen, "%s: %s", e->where[0] ? e->where : "policy", msg ? msg : "error");
		e->stats.errors++;
		log_warning("policy %s failed in on_row at %s: %s",
			    c.fail_policy ? c.fail_policy : "engine", e->where[0] ? e->where : "?",
			    msg ? msg : "error");
		row_out_free(row);
	}
	engine_leave(e);
	return ok;
}

SqlInfo *policy_engine_classify(PolicyEngine *e, const char *sql, size_t len)
{
	return sqlinfo_cache_get(e->cache, sql, len);
}

void policy_engine_release(PolicyEngine *e, SqlInfo *info)
{
	sqlinfo_release(e->cache, info);
}
