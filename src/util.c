#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>
#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

static void out_of_memory(size_t n)
{
	fprintf(stderr, "pgmoat: out of memory allocating %zu bytes\n", n);
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		out_of_memory(n);
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		out_of_memory(n * size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		out_of_memory(n);
	return q;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	va_start(ap, fmt);
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		out_of_memory(0);
	return s;
}

static usec_t clock_usec(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (usec_t)ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

usec_t util_now_mono(void) { return clock_usec(CLOCK_MONOTONIC); }
usec_t util_now_wall(void) { return clock_usec(CLOCK_REALTIME); }

static __thread int clock_scope_depth;
__thread usec_t util_clock_scope_now;	/* nonzero only inside a scope, once read */

void util_clock_scope_begin(void)
{
	if (clock_scope_depth++ == 0)
		util_clock_scope_now = 0;
}

void util_clock_scope_end(void)
{
	if (--clock_scope_depth == 0)
		util_clock_scope_now = 0;
}

usec_t util_now_cached_read(void)
{
	usec_t now = util_now_mono();
	if (clock_scope_depth > 0)
		util_clock_scope_now = now;
	return now;
}

/*
 * The kernel's CSPRNG (getrandom(2), as pgbouncer): a cancel key per
 * connection through OpenSSL's DRBG cost a few microseconds of locks and
 * provider calls. OpenSSL remains the fallback.
 */
bool util_random_bytes(void *buf, size_t len)
{
	uint8_t *p = buf;
	size_t done = 0;
	while (done < len) {
		ssize_t n = getrandom(p + done, len - done, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return RAND_bytes(p + done, (int)(len - done)) == 1;
		done += (size_t)n;
	}
	return true;
}

bool util_secure_equal(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

void util_wipe(void *p, size_t len)
{
	OPENSSL_cleanse(p, len);
}

void util_free_secret(char *s)
{
	if (!s)
		return;
	util_wipe(s, strlen(s));
	free(s);
}

void util_hex(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

void strlist_free(StrList *l)
{
	for (int i = 0; i < l->count; i++)
		free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->count = 0;
}

void strlist_copy(StrList *dst, const StrList *src)
{
	memset(dst, 0, sizeof(*dst));
	for (int i = 0; i < src->count; i++)
		strlist_add(dst, src->items[i]);
}

void strlist_add(StrList *l, const char *s)
{
	l->items = xrealloc(l->items, sizeof(char *) * (size_t)(l->count + 2));
	l->items[l->count++] = xstrdup(s);
	l->items[l->count] = NULL;
}

bool strlist_contains(const StrList *l, const char *s)
{
	for (int i = 0; i < l->count; i++)
		if (strcmp(l->items[i], s) == 0)
			return true;
	return false;
}

void strlist_parse_csv(StrList *l, const char *csv)
{
	const char *p = csv;
	while (p && *p) {
		const char *comma = strchr(p, ',');
		const char *end = comma ? comma : p + strlen(p);
		const char *a = p, *b = end;
		while (a < b && isspace((unsigned char)*a))
			a++;
		while (b > a && isspace((unsigned char)b[-1]))
			b--;
		if (b > a) {
			char *item = xstrndup(a, (size_t)(b - a));
			strlist_add(l, item);
			free(item);
		}
		p = comma ? comma + 1 : NULL;
	}
}

char *strlist_join(const StrList *l)
{
	size_t n = 1;
	for (int i = 0; i < l->count; i++)
		n += strlen(l->items[i]) + 2;
	char *s = xmalloc(n);
	s[0] = '\0';
	for (int i = 0; i < l->count; i++) {
		if (i)
			strcat(s, ",");
		strcat(s, l->items[i]);
	}
	return s;
}

char *util_read_file(const char *path, size_t max_len, bool strip)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 4096, len = 0;
	char *buf = xmalloc(cap);
	size_t n;
	while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (len > max_len) {
			fclose(f);
			util_wipe(buf, len);
			free(buf);
			errno = EFBIG;
			return NULL;
		}
		if (cap - len - 1 == 0) {
			cap *= 2;
			buf = xrealloc(buf, cap);
		}
	}
	bool failed = ferror(f);
	fclose(f);
	if (failed) {
		free(buf);
		errno = EIO;
		return NULL;
	}
	buf[len] = '\0';
	while (strip && len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		buf[--len] = '\0';
	return buf;
}
