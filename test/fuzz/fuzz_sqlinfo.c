/*
 * libFuzzer target for statement classification. The input is a simple-Query
 * string. Whatever it is, sqlinfo_parse must return (never crash, never hang
 * on a deep tree), a failure must carry a reason and no statements, a success
 * must describe every statement completely, and the cache must agree with a
 * direct parse (also when it answers from another statement of the same shape:
 * the cache lives across inputs, so the fuzzer feeds it shapes it has seen).
 */
#include "sqlinfo.h"
#include "sqlshape.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_info(SqlInfo *info)
{
	if (!info)
		abort();
	if (!info->ok) {
		if (!info->error || info->nstmts != 0)
			abort();
		return;
	}
	if (info->error || info->nstmts < 0)
		abort();
	for (int i = 0; i < info->nstmts; i++) {
		SqlStatement *st = &info->stmts[i];
		/* through the accessors: a result sharing its shape's parse makes these on demand */
		if (!st->sql || !st->kind || !sqlinfo_stmt_normalized(st))
			abort();
		if (strlen(sqlinfo_stmt_fingerprint(st)) != 16)
			abort();
		/* only UPDATE and DELETE can have a WHERE worth reporting */
		if (st->has_where && strcmp(st->kind, "update") != 0 && strcmp(st->kind, "delete") != 0)
			abort();
		/* an UPDATE/DELETE without WHERE is a write without WHERE */
		if ((strcmp(st->kind, "update") == 0 || strcmp(st->kind, "delete") == 0) &&
		    (!st->writes || (!st->has_where && !st->dml_without_where)))
			abort();
		for (int t = 0; t < st->tables.count; t++)
			if (!st->tables.items[t] || !st->tables.items[t][0])
				abort();
	}
}

/* The memo's shape of a text is the scanner's, byte for byte (or both have none). */
static void check_shape(ShapeMemo *memo, const char *sql, size_t len)
{
	SqlShape a, b;
	bool sa = sqlshape_of(sql, len, &a);
	bool sb = sqlshape_of_memo(memo, sql, len, &b);
	if (sa != sb || (sa && (a.key_len != b.key_len || memcmp(a.key, b.key, a.key_len) != 0 ||
				a.stmt_end != b.stmt_end)))
		abort();
	sqlshape_free(&a);
	sqlshape_free(&b);
}

/* The input, then the input with every digit changed: the memo's own path. */
static void check_shapes(const uint8_t *data, size_t size)
{
	static ShapeMemo *memo;
	if (!memo)
		memo = sqlshape_memo_new();
	check_shape(memo, (const char *)data, size);
	char *other = malloc(size + 1);
	if (!other)
		return;
	for (size_t i = 0; i < size; i++)
		other[i] = data[i] >= '0' && data[i] <= '9' ? (char)('0' + (data[i] - '0' + 7) % 10)
							    : (char)data[i];
	check_shape(memo, other, size);
	free(other);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static SqlInfoCache *cache;
	check_shapes(data, size);
	if (!cache)
		cache = sqlinfo_cache_new(64);

	SqlInfo *direct = sqlinfo_parse((const char *)data, size);
	check_info(direct);
	SqlInfo *cached = sqlinfo_cache_get(cache, (const char *)data, size);
	check_info(cached);
	if (cached->ok != direct->ok || cached->nstmts != direct->nstmts)
		abort();
	for (int i = 0; i < direct->nstmts; i++)
		if (strcmp(direct->stmts[i].kind, cached->stmts[i].kind) != 0 ||
		    direct->stmts[i].writes != cached->stmts[i].writes ||
		    direct->stmts[i].tables.count != cached->stmts[i].tables.count ||
		    direct->stmts[i].has_where != cached->stmts[i].has_where ||
		    direct->stmts[i].has_limit != cached->stmts[i].has_limit ||
		    direct->stmts[i].dml_without_where != cached->stmts[i].dml_without_where ||
		    direct->stmts[i].functions.count != cached->stmts[i].functions.count ||
		    strcmp(direct->stmts[i].sql, cached->stmts[i].sql) != 0 ||
		    strcmp(sqlinfo_stmt_normalized(&direct->stmts[i]),
			   sqlinfo_stmt_normalized(&cached->stmts[i])) != 0)
			abort();
	sqlinfo_release(cache, cached);
	sqlinfo_free(direct);
	return 0;
}
