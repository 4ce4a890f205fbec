/*
 * Statement classification with the real PostgreSQL parser (libpg_query),
 * never regexes. One call splits a simple-Query string into its statements and
 * describes each: what kind it is, every relation it names anywhere, whether
 * it writes, and its fingerprint and normalized text (literals removed).
 *
 * Inputs the parser cannot take safely (over SQLINFO_MAX_SQL bytes, nested
 * deeper than SQLINFO_MAX_DEPTH, syntax errors) come back with ok=false and a
 * reason: the caller denies them unless a policy opts in. Results are cached
 * per statement text (sqlinfo_cache_*), so repeated statements cost a lookup.
 * Ownership: a SqlInfo belongs to the caller (sqlinfo_free) unless it came
 * from the cache, where sqlinfo_release drops the reference.
 *
 * What the fields cannot say: writes=false means no write is visible in the
 * statement's own tree. Functions (SELECT f()), operators and casts backed by
 * functions, triggers, rules, views and EXECUTE of a prepared statement can
 * all write; policies must allow-list `functions` and treat "execute",
 * "call", "do" and "unknown" deliberately. tables lists names as written
 * (after case folding): "t" and "public.t" may be one table, and a name's
 * meaning depends on search_path.
 *
 * Threads: sqlinfo_parse may be called from any thread; each calling thread
 * gets one long-lived parser thread with a large stack (libpg_query recurses
 * without limit), so call it from long-lived threads. A cache and the results
 * it hands out belong to one thread.
 */
#ifndef PGMOAT_SQLINFO_H
#define PGMOAT_SQLINFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"

#define SQLINFO_MAX_SQL (1024 * 1024)
#define SQLINFO_MAX_DEPTH 1000	/* nesting of the parse tree (its JSON form) */
/* Additions: statements longer than this are parsed but never cached, and the
 * cache evicts once its entries hold more than SQLINFO_CACHE_MAX_BYTES. */
#define SQLINFO_CACHE_MAX_KEY (16 * 1024)
#define SQLINFO_CACHE_MAX_BYTES (32 * 1024 * 1024)

/* Statements of one shape share a parse (SqlInfo.shared): a new field is shared by
 * them too, unless it depends on the text; then it must be made per statement
 * like fingerprint (see sqlinfo.c's sqlinfo_clone_for_text). */
typedef struct SqlStatement {
	char *sql;		/* this statement's own text */
	const char *kind;	/* "select", "insert", "update", "delete", "drop", "truncate",
				 * "alter", "create", "copy", "grant", "revoke", "set", "begin",
				 * "commit", "rollback", "explain", "call", "do", "prepare",
				 * "execute", "deallocate", "listen", "notify", "vacuum", ...,
				 * "unknown"; also "merge", "savepoint", "release",
				 * "rollback_to", "show", "declare", "fetch", "lock", ... */
	StrList tables;		/* every relation named anywhere: CTEs, subqueries, joins, DML
				 * targets; "schema.table" when qualified */
	bool has_where;		/* UPDATE/DELETE: a WHERE clause (or WHERE CURRENT OF) exists */
	bool writes;		/* modifies data or schema, including writes hidden in EXPLAIN
				 * ANALYZE, writable CTEs, SELECT INTO, CTAS; also row and table
				 * locks, COPY TO a server file, CALL, DO and unknown kinds */
	bool is_transaction_control; /* BEGIN/COMMIT/ROLLBACK/SAVEPOINT ... */
	char *fingerprint;	/* libpg_query fingerprint, hex: read with sqlinfo_stmt_fingerprint() */
	char *normalized;	/* literals replaced by $n: read with sqlinfo_stmt_normalized() */
	/* Additions (after the agreed interface): */
	StrList functions;	/* every function called by name anywhere ("schema.name" when
				 * qualified, including the grammar's own pg_catalog.* calls):
				 * writes=false says nothing about what a function does */
	bool dml_without_where;	/* some UPDATE/DELETE that runs has no WHERE: top level, in a
				 * writable CTE, under EXPLAIN ANALYZE, in PREPARE */
	bool has_limit;		/* (policy engine addition) a top-level SELECT with LIMIT or
				 * FETCH FIRST: lets a policy bound only unbounded reads */
	/* Masking addition (colflow.c): where column values go. */
	StrList exposed;	/* last name of every column reference whose value leaves inside
				 * an expression, a set operation, a COPY or a write; for t.* the
				 * relation name t; "*" for a bare * used so */
	StrList bare;		/* single-name references output as is (a column, or a whole row) */
	StrList renames;	/* pairs (alias, source name) of plain references renamed by AS */
	StrList rel_aliases;	/* pairs (alias, relation name) from FROM items */
	StrList pos_aliases;	/* column aliases given by position: AS s(a, b), WITH x(a, b) */
	bool setop_top;		/* the statement is itself a set operation (UNION, ...) */
	StrList setop_refs;	/* its branches' plain references by result position: "k\tname" */
	bool setop_star;	/* ... and some branch selects * (positions unknown) */
	StrList renamed_cols;	/* columns renamed by ALTER TABLE ... RENAME COLUMN */
	bool moves_relation;	/* renames a relation or moves it to another schema */
	char *renamed_schema;	/* ALTER SCHEMA s RENAME: s */
	bool copy_out;		/* COPY ... TO (STDOUT or a file) */
	bool opaque_code;	/* DO, CALL, CREATE FUNCTION/PROCEDURE/RULE/TRIGGER: code pgmoat
				 * cannot follow */
	/* (transaction pooling addition: prepared statements, session state) */
	const char *session_state;	/* what the statement leaves on the session after its
				 * transaction: "SET", "PREPARE", "LISTEN", "session advisory
				 * lock", "WITH HOLD cursor", "temporary table",
				 * "set_config(..., false)"; NULL for none */
	char *setting;		/* SET (not LOCAL): the parameter's name as the parser gives it */
	char *deallocate_name;	/* DEALLOCATE name; NULL with kind "deallocate" means ALL */
	bool deallocates_all;	/* DEALLOCATE ALL or DISCARD ALL: every prepared statement goes */
} SqlStatement;

typedef struct SqlInfo {
	bool ok;		/* false: could not be classified; see error */
	char *error;		/* syntax error or the limit that was hit */
	int nstmts;
	SqlStatement *stmts;
	int refcount;		/* cache bookkeeping */
	/* (perf) A result made from another of the same shape (sqlshape.h) owns only
	 * each statement's sql, fingerprint and normalized text; everything else
	 * points into this one, which it holds a reference to. */
	struct SqlInfo *shared;
	/* (policy cost) Memos of what the policy path derives from the parse alone,
	 * kept on the shared result (shared, else this one) by the code that reads
	 * them; zero: nothing memoized. */
	uint64_t guard_keys_gen;	/* maskguard_check_memo: its verdict holds for the
					 * P.masks keys of this generation ... */
	bool guard_sensitive;		/* ... which allowed every statement without hints */
	uint8_t enforce_flags;		/* enforce.c: ENFORCE_FLAG_* */
	/* (policy cost 4) a shape's clone: its one statement and that statement's sql
	 * live in the result's own allocation (freed with it, never on their own) */
	bool one_block;
} SqlInfo;

/* Parse and classify; never returns NULL (ok=false with error on failure). */
SqlInfo *sqlinfo_parse(const char *sql, size_t len);
/*
 * The same without fingerprint and normalized text (both NULL): for the
 * pooler's own checks of kinds and session state. Texts up to
 * SQLINFO_INLINE_MAX bytes are parsed on the calling thread (their deepest
 * tree needs under 512 KB of stack, even under ASan), longer ones on the
 * parser thread.
 * Never put such a result in a cache.
 */
#define SQLINFO_INLINE_MAX 2048
SqlInfo *sqlinfo_parse_shallow(const char *sql, size_t len);
void sqlinfo_free(SqlInfo *info);

/* A bounded LRU of parse results keyed by the exact text. */
typedef struct SqlInfoCache SqlInfoCache;
SqlInfoCache *sqlinfo_cache_new(int capacity);
void sqlinfo_cache_free(SqlInfoCache *cache);
/* Returns a referenced result (parsing on a miss); sqlinfo_release when done. */
SqlInfo *sqlinfo_cache_get(SqlInfoCache *cache, const char *sql, size_t len);
void sqlinfo_release(SqlInfoCache *cache, SqlInfo *info);

/*
 * A statement's fingerprint and normalized text. Read them through these:
 * a result from the cache may share a parse with statements of the same shape
 * (sqlshape.h) and then makes its own on first use. Never NULL.
 */
const char *sqlinfo_stmt_fingerprint(SqlStatement *st);
const char *sqlinfo_stmt_normalized(SqlStatement *st);
/* SipHash-2-4 of len bytes under the key (k0, k1): for hash tables fed by clients. */
uint64_t sqlinfo_siphash(uint64_t k0, uint64_t k1, const void *in, size_t len);

#endif
