/*
 * Statement shapes from libpg_query's scanner (see sqlshape.h for why and
 * for which statements). The key is the statement's text, every byte of it,
 * except the literals' values.
 */
#include "sqlshape.h"
#include "util.h"

#include <jansson.h>
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longer statements are parsed as themselves: scanning them costs more than a
 * shape can save, and they rarely repeat with other values anyway. */
#define SQLSHAPE_MAX_SQL (16 * 1024)

static bool token_is_literal(PgQuery__Token t)
{
	return t == PG_QUERY__TOKEN__ICONST || t == PG_QUERY__TOKEN__FCONST ||
	       t == PG_QUERY__TOKEN__SCONST || t == PG_QUERY__TOKEN__USCONST ||
	       t == PG_QUERY__TOKEN__BCONST || t == PG_QUERY__TOKEN__XCONST;
}

static bool token_is_comment(PgQuery__Token t)
{
	return t == PG_QUERY__TOKEN__SQL_COMMENT || t == PG_QUERY__TOKEN__C_COMMENT;
}

static bool token_leads_shape(PgQuery__Token t)
{
	return t == PG_QUERY__TOKEN__SELECT || t == PG_QUERY__TOKEN__INSERT ||
	       t == PG_QUERY__TOKEN__UPDATE || t == PG_QUERY__TOKEN__DELETE_P ||
	       t == PG_QUERY__TOKEN__WITH || t == PG_QUERY__TOKEN__VALUES ||
	       t == PG_QUERY__TOKEN__TABLE;
}

/* Keywords that may follow an item of an ORDER BY / GROUP BY list inside it. */
static bool token_continues_by_list(PgQuery__Token t)
{
	return t == PG_QUERY__TOKEN__ASC || t == PG_QUERY__TOKEN__DESC ||
	       t == PG_QUERY__TOKEN__NULLS_P || t == PG_QUERY__TOKEN__FIRST_P ||
	       t == PG_QUERY__TOKEN__LAST_P || t == PG_QUERY__TOKEN__USING;
}

/*
 * Tracks ORDER BY / GROUP BY lists: an integer there is an ordinal (a column
 * position, not a value), so it stays in the key.
 */
typedef struct ByList {
	bool open;
	PgQuery__Token prev;
} ByList;

static bool by_list_keeps(ByList *b, const PgQuery__ScanToken *tok)
{
	bool ordinal = b->open && tok->token == PG_QUERY__TOKEN__ICONST &&
		       (b->prev == PG_QUERY__TOKEN__BY || b->prev == PG_QUERY__TOKEN__ASCII_44);
	if (tok->token == PG_QUERY__TOKEN__BY)
		b->open = true;
	else if (tok->keyword_kind != PG_QUERY__KEYWORD_KIND__NO_KEYWORD &&
		 !token_continues_by_list(tok->token))
		b->open = false;
	else if (tok->token == PG_QUERY__TOKEN__ASCII_59)
		b->open = false;
	b->prev = tok->token;
	return ordinal;
}

/*
 * The literals a key leaves out, for the memo below: where each lies in the
 * text, and whether it is an integer written in decimal digits only.
 */
#define MEMO_MAX_LITS 32

typedef struct ShapeLit {
	uint32_t start, end;
	bool digits;
} ShapeLit;

typedef struct ShapeLits {
	ShapeLit lit[MEMO_MAX_LITS];
	int n;			/* -1: more than MEMO_MAX_LITS */
} ShapeLits;

static bool all_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return n > 0;
}

static void lits_note(ShapeLits *lits, const char *sql, size_t start, size_t end, bool iconst)
{
	if (!lits || lits->n < 0)
		return;
	if (lits->n == MEMO_MAX_LITS) {
		lits->n = -1;
		return;
	}
	lits->lit[lits->n++] = (ShapeLit){ (uint32_t)start, (uint32_t)end,
					   iconst && all_digits(sql + start, end - start) };
}

/* The key never outgrows len + 2 bytes (see shape_build): one allocation, no growth. */
static void key_append(char *key, size_t *len, const char *s, size_t n)
{
	memcpy(key + *len, s, n);
	*len += n;
	key[*len] = '\0';
}

/*
 * The key of a scanned statement; false when it has no shape. The key is the
 * text itself with each literal's bytes replaced by a NUL byte: the scanner's token
 * ends are not always where the token ends (a U&"..." identifier is reported
 * as its first byte only), so nothing but a literal's own reported span is
 * ever left out, and never past the next token's start.
 */
static bool shape_build(const char *sql, size_t len, const PgQuery__ScanResult *scan, SqlShape *out,
			ShapeLits *lits)
{
	/* a leading NUL, then the text with each literal (at least one byte) made one
	 * NUL byte, then the terminator: at most len + 2 bytes */
	char *key = xmalloc(len + 2);
	size_t klen = 0;
	size_t copied = 0;		/* sql[0, copied) is in the key */
	size_t stmt_end = len;
	bool seen_semicolon = false, first = true;
	ByList by = { false, PG_QUERY__TOKEN__NUL };

	key_append(key, &klen, "\0", 1);
	for (size_t i = 0; i < scan->n_tokens; i++) {
		const PgQuery__ScanToken *tok = scan->tokens[i];
		size_t next = i + 1 < scan->n_tokens ? (size_t)scan->tokens[i + 1]->start : len;
		if (tok->start < 0 || tok->end < tok->start || (size_t)tok->start < copied ||
		    next > len || (size_t)tok->start > next)
			goto no_shape;
		if (token_is_comment(tok->token))
			continue;
		/* UESCAPE's literal decides how the identifier or string before it reads */
		if (tok->token == PG_QUERY__TOKEN__UESCAPE)
			goto no_shape;
		if (seen_semicolon || (first && !token_leads_shape(tok->token)))
			goto no_shape;	/* a second statement, or a kind that reads its literals */
		first = false;
		if (tok->token == PG_QUERY__TOKEN__ASCII_59) {
			seen_semicolon = true;
			stmt_end = (size_t)tok->start;
			continue;
		}
		bool keep = by_list_keeps(&by, tok) || !token_is_literal(tok->token);
		if (keep)
			continue;
		size_t end = (size_t)tok->end < next ? (size_t)tok->end : next;
		if (end <= (size_t)tok->start)
			goto no_shape;	/* an empty literal span: the bound above needs a byte */
		key_append(key, &klen, sql + copied, (size_t)tok->start - copied);
		/* a byte no SQL text holds: '?' would also stand for the operator */
		key_append(key, &klen, "\0", 1);
		copied = end;
		lits_note(lits, sql, (size_t)tok->start, end, tok->token == PG_QUERY__TOKEN__ICONST);
	}
	if (first)
		goto no_shape;	/* nothing but comments */
	key_append(key, &klen, sql + copied, len - copied);
	out->key = key;
	out->owned = key;
	out->key_len = klen;
	out->stmt_end = stmt_end;
	return true;

no_shape:
	free(key);
	return false;
}

/*
 * A full parse reads libpg_query's tree with jansson, which refuses invalid
 * UTF-8 (the statement is then unclassifiable): judge the text by the same
 * decoder, so a shape never classifies what a parse of its own would refuse.
 */
static bool text_is_utf8(const char *sql, size_t len)
{
	bool ascii = true;
	for (size_t i = 0; i < len && ascii; i++)
		ascii = (unsigned char)sql[i] < 0x80;
	if (ascii)
		return true;	/* every ASCII byte string is UTF-8: no decoder needed */
	json_t *s = json_stringn(sql, len);
	bool ok = s != NULL;
	json_decref(s);
	return ok;
}

/*
 * The unpacked scan lives only while its key is built: protobuf-c allocates it
 * from this arena (a buffer on the caller's stack, then heap blocks), and it
 * is dropped whole, instead of one malloc and one free per token.
 */
#define ARENA_STACK 8192
#define ARENA_BLOCK 16384

typedef struct ArenaBlock {
	struct ArenaBlock *next;
	max_align_t data[];
} ArenaBlock;

typedef struct Arena {
	char *pos, *end;
	ArenaBlock *blocks;	/* heap blocks, freed by arena_free */
} Arena;

static void *arena_alloc(void *data, size_t size)
{
	Arena *a = data;
	size_t need = (size + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);
	if (need < size || need > SIZE_MAX - sizeof(ArenaBlock) - ARENA_BLOCK)
		return NULL;
	if ((size_t)(a->end - a->pos) < need) {
		size_t bytes = need > ARENA_BLOCK ? need : ARENA_BLOCK;
		ArenaBlock *b = xmalloc(sizeof(*b) + bytes);
		b->next = a->blocks;
		a->blocks = b;
		a->pos = (char *)b->data;
		a->end = a->pos + bytes;
	}
	void *p = a->pos;
	a->pos += need;
	return p;
}

static void arena_release(void *data, void *p)
{
	(void)data;
	(void)p;	/* everything goes at once, in arena_free */
}

static void arena_free(Arena *a)
{
	while (a->blocks) {
		ArenaBlock *b = a->blocks;
		a->blocks = b->next;
		free(b);
	}
}

static bool shape_scan(const char *sql, size_t len, SqlShape *out, ShapeLits *lits)
{
	memset(out, 0, sizeof(*out));
	if (len == 0 || len > SQLSHAPE_MAX_SQL || memchr(sql, '\0', len) || !text_is_utf8(sql, len))
		return false;
	char *copy = xstrndup(sql, len);
	PgQueryScanResult sr = pg_query_scan(copy);
	max_align_t stack[ARENA_STACK / sizeof(max_align_t)];
	Arena arena = { (char *)stack, (char *)stack + sizeof(stack), NULL };
	ProtobufCAllocator alloc = { arena_alloc, arena_release, &arena };
	PgQuery__ScanResult *scan = NULL;
	bool ok = false;
	if (!sr.error)
		scan = pg_query__scan_result__unpack(&alloc, sr.pbuf.len, (const uint8_t *)sr.pbuf.data);
	if (scan)
		ok = shape_build(copy, len, scan, out, lits);
	arena_free(&arena);
	pg_query_free_scan_result(sr);
	free(copy);
	return ok;
}

bool sqlshape_of(const char *sql, size_t len, SqlShape *out)
{
	return shape_scan(sql, len, out, NULL);
}

/*
 * The memo: statements the scanner has seen, kept with where their literals
 * lie. A statement that differs from one of them only in the digits of its
 * integer literals has the same tokens in the same order (the text before
 * each literal is byte for byte the same, so the scanner is in the same state
 * when it reaches it; a run of digits followed by the same byte it was
 * followed by, which did not continue the integer there, ends the same way),
 * hence the same key: no scan is needed. Any other literal must be byte for
 * byte the same. Anything else, and a miss, goes to the scanner.
 */
#define MEMO_SLOTS 64		/* a power of two */
#define MEMO_PROBE 4
#define MEMO_MAX_TEXT 4096

typedef struct ShapeTemplate {
	uint64_t prefix_hash;
	char *text;		/* the statement it was made from */
	size_t len;
	ShapeLits lits;
	char *key;
	size_t key_len;
	size_t stmt_end;
	uint64_t key_hash;	/* (policy cost 2) by the memo's hasher, if any */
} ShapeTemplate;

static void template_free(ShapeTemplate *t);

struct ShapeMemo {
	ShapeTemplate *slot[MEMO_SLOTS];
	unsigned victim;
	/* (policy cost 4) the slot of the last hit, tried before any hashing: a
	 * client repeats one statement with other ids (whatever template the slot
	 * holds by then, a match is a right answer) */
	unsigned last;
	ShapeKeyHash hash;	/* NULL: shapes come without key_hash */
	const void *hash_arg;
};

void sqlshape_memo_set_hasher(ShapeMemo *m, ShapeKeyHash hash, const void *arg)
{
	m->hash = hash;
	m->hash_arg = arg;
	for (int i = 0; i < MEMO_SLOTS; i++) {
		template_free(m->slot[i]);	/* (hashed by no one, or by another) */
		m->slot[i] = NULL;
	}
}

ShapeMemo *sqlshape_memo_new(void)
{
	return xcalloc(1, sizeof(ShapeMemo));
}

static void template_free(ShapeTemplate *t)
{
	if (!t)
		return;
	free(t->text);
	free(t->key);
	free(t);
}

void sqlshape_memo_free(ShapeMemo *m)
{
	if (!m)
		return;
	for (int i = 0; i < MEMO_SLOTS; i++)
		template_free(m->slot[i]);
	free(m);
}

/* Where prefix_hash stops: a digit or a quote. */
static const bool prefix_stop[256] = {
	['0'] = true, ['1'] = true, ['2'] = true, ['3'] = true, ['4'] = true,
	['5'] = true, ['6'] = true, ['7'] = true, ['8'] = true, ['9'] = true, ['\''] = true,
};

/*
 * A hash of the text up to its first digit or quote (where literals usually
 * start), so that digit variants land in the same slots. Eight bytes a step:
 * it only picks memo slots (template_matches decides), so it need not resist
 * anything; a collision costs a probe.
 */
static uint64_t prefix_hash(const char *sql, size_t len)
{
	size_t n = 0;
	while (n < len && !prefix_stop[(uint8_t)sql[n]])
		n++;
	uint64_t h = 14695981039346656037ULL ^ n;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t w;
		memcpy(&w, sql + i, sizeof(w));
		h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
		h ^= h >> 29;
	}
	for (; i < n; i++)
		h = (h ^ (uint8_t)sql[i]) * 1099511628211ULL;
	return h;
}

/* Does sql differ from t's text only in the digits of its integer literals? */
static bool template_matches(const ShapeTemplate *t, const char *sql, size_t len, size_t *stmt_end)
{
	size_t o = 0, n = 0;	/* positions in t->text and in sql */
	for (int i = 0; i < t->lits.n; i++) {
		const ShapeLit *l = &t->lits.lit[i];
		size_t fixed = l->start - o;
		if (len - n < fixed || memcmp(sql + n, t->text + o, fixed) != 0)
			return false;
		n += fixed;
		if (l->digits) {
			size_t d = 0;
			while (n + d < len && sql[n + d] >= '0' && sql[n + d] <= '9')
				d++;
			if (d == 0)
				return false;
			n += d;
		} else {
			size_t w = l->end - l->start;
			if (len - n < w || memcmp(sql + n, t->text + l->start, w) != 0)
				return false;
			n += w;
		}
		o = l->end;
	}
	size_t tail = t->len - o;
	if (len - n != tail || memcmp(sql + n, t->text + o, tail) != 0)
		return false;
	*stmt_end = t->stmt_end - o + n;	/* the ';' lies in the tail, if anywhere */
	return true;
}

static void memo_answer(const ShapeMemo *m, const ShapeTemplate *t, size_t stmt_end, SqlShape *out)
{
	out->key = t->key;	/* lent: no copy per statement */
	out->owned = NULL;
	out->key_len = t->key_len;
	out->stmt_end = stmt_end;
	out->has_hash = m->hash != NULL;
	out->key_hash = t->key_hash;
}

static bool memo_lookup(ShapeMemo *m, uint64_t h, const char *sql, size_t len, SqlShape *out)
{
	for (unsigned i = 0; i < MEMO_PROBE; i++) {
		unsigned at = (h + i) & (MEMO_SLOTS - 1);
		const ShapeTemplate *t = m->slot[at];
		size_t stmt_end;
		if (!t || t->prefix_hash != h || !template_matches(t, sql, len, &stmt_end))
			continue;
		memo_answer(m, t, stmt_end, out);
		m->last = at;
		return true;
	}
	return false;
}

static bool memo_lookup_last(ShapeMemo *m, const char *sql, size_t len, SqlShape *out)
{
	const ShapeTemplate *t = m->slot[m->last];
	size_t stmt_end;
	if (!t || !template_matches(t, sql, len, &stmt_end))
		return false;
	memo_answer(m, t, stmt_end, out);
	return true;
}

static void memo_store(ShapeMemo *m, uint64_t h, const char *sql, size_t len, const SqlShape *shape,
		       const ShapeLits *lits)
{
	unsigned at = (h + (m->victim++ % MEMO_PROBE)) & (MEMO_SLOTS - 1);
	for (unsigned i = 0; i < MEMO_PROBE; i++) {
		if (!m->slot[(h + i) & (MEMO_SLOTS - 1)]) {
			at = (h + i) & (MEMO_SLOTS - 1);
			break;
		}
	}
	ShapeTemplate *t = xcalloc(1, sizeof(*t));
	t->prefix_hash = h;
	t->text = xstrndup(sql, len);
	t->len = len;
	t->lits = *lits;
	t->key = xmalloc(shape->key_len + 1);
	memcpy(t->key, shape->key, shape->key_len + 1);
	t->key_len = shape->key_len;
	t->stmt_end = shape->stmt_end;
	t->key_hash = shape->key_hash;
	template_free(m->slot[at]);
	m->slot[at] = t;
}

bool sqlshape_memo_get(ShapeMemo *m, const char *sql, size_t len, ShapeProbe *probe,
		       SqlShape *out)
{
	memset(out, 0, sizeof(*out));
	probe->memo = len > 0 && len <= MEMO_MAX_TEXT && len <= SQLSHAPE_MAX_SQL;
	probe->prefix_hash = 0;
	if (!probe->memo)
		return false;
	if (memo_lookup_last(m, sql, len, out))
		return true;	/* (probe's hash is for a scan: none follows a hit) */
	probe->prefix_hash = prefix_hash(sql, len);
	return memo_lookup(m, probe->prefix_hash, sql, len, out);
}

bool sqlshape_memo_scan(ShapeMemo *m, const char *sql, size_t len, const ShapeProbe *probe,
			SqlShape *out)
{
	memset(out, 0, sizeof(*out));
	if (len == 0 || len > SQLSHAPE_MAX_SQL)
		return false;
	ShapeLits lits = { .n = 0 };
	if (!shape_scan(sql, len, out, &lits))
		return false;
	if (m->hash) {
		out->key_hash = m->hash(m->hash_arg, out->key, out->key_len);
		out->has_hash = true;
	}
	if (probe->memo && lits.n >= 0)
		memo_store(m, probe->prefix_hash, sql, len, out, &lits);
	return true;
}

bool sqlshape_of_memo(ShapeMemo *m, const char *sql, size_t len, SqlShape *out)
{
	ShapeProbe probe;
	return sqlshape_memo_get(m, sql, len, &probe, out) ||
	       sqlshape_memo_scan(m, sql, len, &probe, out);
}

void sqlshape_free(SqlShape *shape)
{
	free(shape->owned);
	shape->owned = NULL;
	shape->key = NULL;
	shape->key_len = 0;
}
