/*
 * The Lua policy engine (DESIGN.md "Contract: Lua policies").
 *
 * One PolicyEngine per event-loop thread: it owns one LuaJIT state (never
 * shared between threads), the policy scripts loaded into it in text mode,
 * their hooks resolved once into registry refs, and a cache of statement
 * classifications. Every entry point runs Lua under a wall-clock budget and a
 * memory cap; any error or overrun is a DENY (fail closed) carrying the policy
 * file:line, and an overrun recreates the Lua state from the same scripts so
 * the next call starts clean.
 *
 * Ownership: the engine copies the PolicyConfig it is given. PolicyDecision
 * strings are owned by the decision (policy_decision_free). A PolicySession
 * is owned by the caller and must be closed (policy_session_close) before
 * the engine that opened it is freed.
 */
#ifndef PGMOAT_POLICY_H
#define PGMOAT_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"
#include "mask.h"

#define POLICY_DEFAULT_TIME_BUDGET (50 * 1000)		/* usec */
#define POLICY_DEFAULT_MEMORY_LIMIT (64u * 1024 * 1024)	/* bytes */
#define POLICY_MAX_SCRIPT_SIZE (4 * 1024 * 1024)

typedef enum { POLICY_ENFORCE, POLICY_DRY_RUN } PolicyMode;

/* The YAML `policy:` block. */
typedef struct PolicyConfig {
	StrList scripts;	/* paths, resolved against the config file's directory, in order */
	PolicyMode mode;	/* dry_run: decisions are reported, ALLOW is enforced */
	usec_t time_budget;	/* Lua run time allowed per engine call */
	size_t memory_limit;	/* bytes the Lua state may allocate */
	char *hash_key_file;	/* key of the "hash" mask; NULL: none */
	char *lua_dir;		/* root of require()-able helper modules; NULL: only "moat" */
} PolicyConfig;

void policy_config_init(PolicyConfig *pc);	/* defaults, no scripts */
void policy_config_free(PolicyConfig *pc);	/* frees the contents, not pc */
void policy_config_copy(PolicyConfig *dst, const PolicyConfig *src);
const char *policy_mode_name(PolicyMode m);

/* Ordered from least to most strict: a whole Query gets the strictest verdict. */
typedef enum { POLICY_ALLOW, POLICY_REWRITE, POLICY_HOLD, POLICY_DENY } PolicyVerdict;
const char *policy_verdict_name(PolicyVerdict v);
/* "allow" -> POLICY_ALLOW ...; false for other names. */
bool policy_verdict_from_name(const char *name, PolicyVerdict *out) MUST_CHECK;

/* One policy's answer for one statement; only recorded when tracing (pgmoat try). */
typedef struct PolicyTrace {
	int stmt;		/* 0-based statement index in the Query string */
	char *policy;		/* script file name */
	PolicyVerdict verdict;
	char *message;		/* reason / rewritten SQL / error; may be NULL */
} PolicyTrace;

typedef struct PolicyDecision {
	PolicyVerdict verdict;	/* what the policies decided (log, audit, try) */
	PolicyVerdict enforced;	/* what the proxy does: verdict, or ALLOW in dry_run */
	char *message;		/* DENY: the client's error text; HOLD: the reason */
	char *rewritten_sql;	/* REWRITE (also HOLD after a rewrite): the SQL to send */
	char *policy;		/* file name of the deciding policy; NULL: none decided */
	char *where;		/* "file:line" when an error or overrun decided; else NULL */
	bool error;		/* decided by a failure (fail closed), not by a policy */
	PolicyTrace *trace;	/* per policy and statement, when the engine traces */
	int ntrace;
	/* (policy cost 5) when on_query's Lua time was recorded: the clock
	 * (histogram_now_ns) as it ended, for the caller's timing; else 0 */
	uint64_t lua_end_ns;
} PolicyDecision;

void policy_decision_free(PolicyDecision *d);	/* frees the contents, not d */

typedef struct PolicyEngine PolicyEngine;

/*
 * Compile pc->scripts (text only: bytecode is refused) into a new Lua state.
 * Either everything loads or NULL is returned with "file:line: message" in
 * err, so a reload that fails leaves the caller's old engine in force.
 */
PolicyEngine *policy_engine_new(const PolicyConfig *pc, char *err, size_t errlen);
void policy_engine_free(PolicyEngine *e);
bool policy_engine_has_on_query(const PolicyEngine *e);
bool policy_engine_has_on_row(const PolicyEngine *e);
bool policy_engine_has_masks(const PolicyEngine *e);	/* P.masks, on_columns or on_row */
int policy_engine_script_count(const PolicyEngine *e);
/* Masking on the wire: the P.masks keys ("table.column", "schema.table.column", "*.column"). */
const StrList *policy_engine_mask_keys(const PolicyEngine *e);
/* Names the current set of mask keys (new whenever they may change); 0: no keys loaded. */
uint64_t policy_engine_mask_keys_gen(const PolicyEngine *e);
/* Record a PolicyTrace per policy call in every decision (pgmoat try). */
void policy_engine_set_trace(PolicyEngine *e, bool on);
/* Record the time each on_query call spends in Lua into h (caller-owned, outlives e); NULL: stop. */
struct Histogram;
void policy_engine_time_lua(PolicyEngine *e, struct Histogram *h);

/* Counters for tests and SHOW POLICIES. */
typedef struct PolicyStats {
	uint64_t calls;		/* hook invocations */
	uint64_t errors;	/* calls that failed (error or overrun) */
	uint64_t overruns;	/* time or memory budget exceeded */
	uint64_t recreated;	/* Lua state rebuilt after an overrun */
	uint64_t lazy_fields;	/* q fields materialized from the parse (kind, tables, ...) */
	size_t memory;		/* bytes currently allocated by the Lua state */
} PolicyStats;
void policy_engine_stats(const PolicyEngine *e, PolicyStats *out);

/* SHOW POLICIES: script i's path, and its hooks as "on_connect,on_query" ("" when none). */
const char *policy_engine_script_path(const PolicyEngine *e, int i);
void policy_engine_script_hooks(const PolicyEngine *e, int i, char *buf, size_t len);

/* The engine's cached classification of sql (a hit right after policy_on_query); release it. */
struct SqlInfo;
struct SqlInfo *policy_engine_classify(PolicyEngine *e, const char *sql, size_t len);
void policy_engine_release(PolicyEngine *e, struct SqlInfo *info);

/*
 * One client session as policies see it (the `s` argument). The caller fills
 * the identity fields (strings it owns, which must outlive the session) and
 * calls policy_session_open; the engine keeps the Lua side (s, s.vars) in its
 * state. If the state is recreated after an overrun, s.vars starts empty.
 */
typedef struct PolicySession {
	uint64_t id;
	const char *user;
	const char *database;
	const char *application_name;	/* may be NULL */
	const char *client_addr;	/* may be NULL */
	bool tls;
	const char *claims_json;	/* JWT claims as a JSON object; NULL: none */
	const char *role;		/* server role chosen by a claim; may be NULL */

	/* engine private */
	int ref;		/* registry ref of the Lua `s` table */
	int cols_ref;		/* registry ref of the last on_columns `cols` (custom masks) */
	uint64_t generation;	/* state generation the refs belong to; 0: none yet */
} PolicySession;

/* Run every on_connect; a deny refuses the session. The session is open afterwards either way. */
void policy_session_open(PolicyEngine *e, PolicySession *s, PolicyDecision *out);
/* Run every on_disconnect (errors are logged only) and drop the Lua side. */
void policy_session_close(PolicyEngine *e, PolicySession *s);

/*
 * Judge one simple Query string (every statement in it) or one Parse.
 * protocol is "simple" or "extended"; stmt_name is the prepared statement's
 * name (NULL or "" for unnamed). out is filled in every case (never fails):
 * errors and overruns are a DENY with error=true.
 */
void policy_on_query(PolicyEngine *e, PolicySession *s, const char *sql, size_t len,
		     const char *protocol, const char *stmt_name, bool in_transaction,
		     PolicyDecision *out);
/* The same for sql already classified: info from policy_engine_classify(e, sql, len). */
void policy_on_query_parsed(PolicyEngine *e, PolicySession *s, struct SqlInfo *info,
			    const char *sql, size_t len, const char *protocol,
			    const char *stmt_name, bool in_transaction, PolicyDecision *out);

/*
 * Choose the masks of a result: P.masks by each column's source
 * (table_names[i] "schema.table" or "table", column_names[i]; NULL when the
 * value is computed), then every on_columns hook. Sets plan->cols[i].mask and
 * plan->any. False (with a reason in err) on a policy error or an unknown mask
 * name: the caller must not forward the result (fail closed).
 */
bool policy_on_columns(PolicyEngine *e, PolicySession *s, MaskPlan *plan,
		       const char **table_names, const char **column_names, char *err,
		       size_t errlen) MUST_CHECK;

/*
 * A MaskCustomFn for mask_rewrite_data_row: runs the Lua function mask of
 * column col. arg is a PolicyRowContext set up by the caller for the plan the
 * last policy_on_columns call filled. *out is malloc'd (NULL = SQL NULL).
 */
typedef struct PolicyRowContext {
	PolicyEngine *engine;
	PolicySession *session;
} PolicyRowContext;
bool policy_mask_custom(void *arg, int col, const uint8_t *in, int32_t in_len, uint8_t **out,
			int32_t *out_len);

/*
 * One DataRow for the on_row hooks, after the masks: vals[i] (NULL: SQL NULL)
 * with lens[i]; the hooks see row[i] as a string or nil and may assign it.
 * policy_on_row fills changed[i], out[i] (malloc'd, NUL-terminated; NULL: SQL
 * NULL) and out_len[i] for the columns they replaced; the caller allocates
 * the arrays (zeroed) and frees out[i]. Replacing a binary-format column is an
 * error. False (with a reason) on any error: the row must not be forwarded.
 * Uses the cols table of the session's last policy_on_columns.
 */
typedef struct PolicyRow {
	int n;
	const uint8_t **vals;
	const int32_t *lens;
	const bool *binary;
	uint8_t **out;
	int32_t *out_len;
	bool *changed;
} PolicyRow;
bool policy_on_row(PolicyEngine *e, PolicySession *s, PolicyRow *row, char *err,
		   size_t errlen) MUST_CHECK;

#endif
