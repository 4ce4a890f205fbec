/* Small helpers shared by every module: allocation, strings, time. */
#ifndef PGMOAT_UTIL_H
#define PGMOAT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MUST_CHECK __attribute__((warn_unused_result))
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#define NOINLINE __attribute__((noinline))	/* keep one path's large frame out of a hot loop */
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

typedef int64_t usec_t;
#define USEC_PER_SEC ((usec_t)1000000)

/* Allocation that aborts on out-of-memory: the daemon cannot serve without it. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* Monotonic clock for timeouts; wall clock for logs and stats. */
usec_t util_now_mono(void);
/*
 * The monotonic clock read once per event callback, as pgbouncer's
 * get_cached_time(): the data path's read callbacks open a scope, and every
 * util_now_cached() inside it returns the instant of its first call (a few
 * reads per transaction otherwise). Outside a scope it reads the clock.
 * Deadlines and budgets that must see time pass use util_now_mono().
 */
void util_clock_scope_begin(void);
void util_clock_scope_end(void);
usec_t util_now_cached_read(void);	/* the first read of a scope, or outside any */

/* The scope's instant once read (0 until then and outside every scope). */
extern __thread usec_t util_clock_scope_now;

/* Inline: called about ten times per transaction, mostly after the first read. */
static inline usec_t util_now_cached(void)
{
	usec_t now = util_clock_scope_now;
	return now != 0 ? now : util_now_cached_read();
}
usec_t util_now_wall(void);

/* Fill buf with cryptographically random bytes (OpenSSL RAND_bytes). */
bool util_random_bytes(void *buf, size_t len) MUST_CHECK;

/* Two growable buffers change places (one is refilled while the other is kept). */
static inline void util_swap_buffers(char **a, size_t *a_cap, char **b, size_t *b_cap)
{
	char *p = *a;
	size_t cap = *a_cap;
	*a = *b;
	*a_cap = *b_cap;
	*b = p;
	*b_cap = cap;
}

/* Constant-time comparison for secrets. */
bool util_secure_equal(const void *a, const void *b, size_t len);

/* Overwrite a secret before freeing it. */
void util_wipe(void *p, size_t len);
void util_free_secret(char *s);

/* Lowercase hex of len bytes into out (2*len+1 bytes). */
void util_hex(const uint8_t *in, size_t len, char *out);

/* A NULL-terminated array of owned strings. */
typedef struct StrList {
	char **items;
	int count;
} StrList;

void strlist_free(StrList *l);
/* dst (overwritten, not freed first) gets its own copy of src's items. */
void strlist_copy(StrList *dst, const StrList *src);
void strlist_add(StrList *l, const char *s);
bool strlist_contains(const StrList *l, const char *s);
/* Parse "a, b ,c" into l (empty items dropped). */
void strlist_parse_csv(StrList *l, const char *csv);
/* Join with ", " into a new string. */
char *strlist_join(const StrList *l);

/* Read a whole small file (secrets, keys); NULL with errno on failure. Trailing newline stripped when strip is true. */
char *util_read_file(const char *path, size_t max_len, bool strip);

#endif
