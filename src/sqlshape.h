/*
 * A statement's shape: its text with every literal's value left out, the
 * literals found by libpg_query's own scanner. Statements that differ only in their
 * literals parse into trees that differ only in those constants, so for the
 * kinds of statement whose classification never reads a constant's value
 * (sqlinfo.c's kind, tables, functions, has_where, has_limit, writes ...)
 * one parse serves every statement of the shape. That is the common case of
 * clients that put values into the text: psql scripts, psycopg2, ORMs,
 * pgbench -M simple.
 *
 * Only these statements have a shape: exactly one statement, led by SELECT,
 * INSERT, UPDATE, DELETE, WITH, VALUES or TABLE, and no UESCAPE clause (its
 * literal changes the name before it). Everything else (SET and its
 * values, EXPLAIN and its options, COPY and its target, DDL ...) is parsed as
 * its own text. Ordinals keep their value (ORDER BY 2 is not ORDER BY 1), and
 * so does every literal the scanner cannot tell apart from one.
 */
#ifndef PGMOAT_SQLSHAPE_H
#define PGMOAT_SQLSHAPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct SqlShape {
	const char *key;	/* starts with a NUL byte, so it never equals SQL text (which
				 * cannot contain one) in a cache shared with texts */
	size_t key_len;
	/* (policy cost 4) key when it is the shape's own (sqlshape_free frees it); NULL
	 * when key is the memo's, valid until the memo's next scan, hasher or free */
	char *owned;
	size_t stmt_end;	/* the statement's text is sql[0, stmt_end): without the
				 * final ';', as the parser's stmt_len reports it */
	/* (policy cost 2) the key's hash by the memo's hasher; has_hash false without one */
	bool has_hash;
	uint64_t key_hash;
} SqlShape;

/* True with *out filled (free with sqlshape_free) when sql has a shape. */
bool sqlshape_of(const char *sql, size_t len, SqlShape *out);
void sqlshape_free(SqlShape *shape);

/*
 * The same answer, without libpg_query's scanner for a statement that differs
 * from one the memo has seen only in the digits of its integer literals
 * (pgbench's, an ORM's ids): the common case, and the scan is most of a
 * shape's cost. A memo belongs to one thread (a worker's statement cache).
 * A shape the memo remembered lends its key (SqlShape.owned NULL): use it
 * before the memo's next scan; sqlshape_free is still right for it.
 */
typedef struct ShapeMemo ShapeMemo;
ShapeMemo *sqlshape_memo_new(void);
void sqlshape_memo_free(ShapeMemo *m);
bool sqlshape_of_memo(ShapeMemo *m, const char *sql, size_t len, SqlShape *out);
/*
 * sqlshape_of_memo in two steps, for a caller that tries the memo's answer
 * before anything else: _get answers from the memo only (never scans), and
 * after its miss _scan does the rest, with what _get left in *probe.
 */
typedef struct ShapeProbe {
	bool memo;		/* the text may be in the memo (not too long) */
	uint64_t prefix_hash;
} ShapeProbe;
bool sqlshape_memo_get(ShapeMemo *m, const char *sql, size_t len, ShapeProbe *probe,
		       SqlShape *out);
bool sqlshape_memo_scan(ShapeMemo *m, const char *sql, size_t len, const ShapeProbe *probe,
			SqlShape *out);
/*
 * The memo's owner hashes keys (sqlinfo.c's cache, with its secret key): each
 * shape the memo gives out then carries key_hash, computed once per template,
 * not once per statement.
 */
typedef uint64_t (*ShapeKeyHash)(const void *arg, const char *key, size_t len);
void sqlshape_memo_set_hasher(ShapeMemo *m, ShapeKeyHash hash, const void *arg);

#endif
