/*
 * Statement-time half of masking (issue 4 point 4): may a statement run when
 * some columns are protected (P.masks)? A protected column may reach the
 * client only as a plain result column, which the proxy masks in flight by its
 * RowDescription source; every other way out (an expression, a function, a
 * cast, an aggregate, a whole-row reference, a set operation, a COPY TO, a
 * write that copies it elsewhere, code pgmoat cannot read) is denied here.
 *
 * Matching is by name, conservatively: a "table.column" key protects the
 * column in every statement that names that table (in any schema, as
 * search_path may resolve it), "*.column" in every statement; names bound to
 * a protected value in the statement (aliases, subquery names, column alias
 * lists) are protected too.
 *
 * A statement that is itself a set operation (UNION, INTERSECT, EXCEPT) is
 * the one exception to "plain references only by source": PostgreSQL reports
 * no source for its columns, so a plain protected reference in a branch comes
 * back as a hint to mask that result position; it must be the only statement
 * of its Query.
 */
#ifndef PGMOAT_MASKGUARD_H
#define PGMOAT_MASKGUARD_H

#include "sqlinfo.h"

typedef struct MaskGuardResult {
	bool deny;
	bool sensitive;		/* touches a protected table: errors are scrubbed */
	char *reason;		/* DENY: the client's message (owned) */
	StrList hints;		/* a set operation's result positions to mask, as
				 * "k\ttable\tcolumn" (the P.masks key's table, which may be
				 * "schema.table" or "*"): its columns carry no source */
} MaskGuardResult;

/*
 * keys: the P.masks keys. views: names ("schema.view" and "view") of views that
 * read a protected column: a statement naming one is denied (their columns
 * cannot be mapped to the protected ones). views_unknown: those names could not
 * be loaded: then only statements whose values all leave as plain references
 * pass. info must be ok (the caller denies unparsed text).
 */
void maskguard_check(const StrList *keys, const StrList *views, bool views_unknown,
		     const SqlInfo *info, MaskGuardResult *out);
/*
 * The same, memoized on the parse (info->shared, else info): the verdict's part
 * that depends on the parse and the keys alone is kept when it allowed every
 * statement without hints, for keys_gen (policy_engine_mask_keys_gen: new
 * whenever the keys may change; 0: no memo). The view checks run every time.
 */
void maskguard_check_memo(const StrList *keys, uint64_t keys_gen, const StrList *views,
			  bool views_unknown, SqlInfo *info, MaskGuardResult *out);
void maskguard_result_free(MaskGuardResult *r);

/* Is schema.table.column protected by one of the keys? (Catalog names, exact.) */
bool maskguard_column_protected(const StrList *keys, const char *schema, const char *table,
				const char *column);

#endif
