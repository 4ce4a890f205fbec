/*
 * pgbouncer auth_file parser.
 *
 * Every line is `"user" "secret" [anything]`; a doubled quote inside a
 * field is a literal quote. Blank lines and lines starting with ';' or '#'
 * are skipped. Unlike pgbouncer, which stops reading at the first broken
 * line, a malformed line is an error: a half-read user list would silently
 * lock users out.
 */
#include "userlist.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* pgbouncer's MAX_USERNAME and MAX_PASSWORD, minus the terminating NUL. */
#define USERLIST_MAX_NAME 127
#define USERLIST_MAX_SECRET 2047
#define USERLIST_MAX_FILE (64 * 1024 * 1024)

static void userlist_set_err(char *err, size_t errlen, const char *file, int line,
			     const char *fmt, ...) PRINTF_LIKE(5, 6);

static void userlist_set_err(char *err, size_t errlen, const char *file, int line,
			     const char *fmt, ...)
{
	if (!err || errlen == 0)
		return;
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		snprintf(err, errlen, "%s:%d: %s", file, line, msg);
	else
		snprintf(err, errlen, "%s: %s", file, msg);
}

static bool is_hex_string(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]))
			return false;
	return true;
}

/* Non-empty run of base64 characters (with '=' padding) ending at `end`. */
static bool is_base64_span(const char *s, const char *end)
{
	if (s >= end)
		return false;
	for (const char *p = s; p < end; p++) {
		unsigned char c = (unsigned char)*p;
		if (!isalnum(c) && c != '+' && c != '/' && c != '=')
			return false;
	}
	return true;
}

/* SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, as PostgreSQL stores it. */
static bool is_scram_secret(const char *s)
{
	static const char prefix[] = "SCRAM-SHA-256$";
	if (strncmp(s, prefix, sizeof(prefix) - 1) != 0)
		return false;
	const char *p = s + sizeof(prefix) - 1;
	const char *colon1 = strchr(p, ':');
	if (!colon1 || colon1 == p)
		return false;
	for (const char *d = p; d < colon1; d++)
		if (!isdigit((unsigned char)*d))
			return false;
	const char *dollar = strchr(colon1 + 1, '$');
	if (!dollar || !is_base64_span(colon1 + 1, dollar))
		return false;
	const char *colon2 = strchr(dollar + 1, ':');
	if (!colon2 || !is_base64_span(dollar + 1, colon2))
		return false;
	return is_base64_span(colon2 + 1, colon2 + 1 + strlen(colon2 + 1));
}

/*
 * Like PostgreSQL, anything that does not parse as a hash is a plain
 * password, even when it looks almost like one.
 */
SecretKind userlist_secret_kind(const char *secret)
{
	if (!secret)
		return SECRET_PLAIN;
	size_t n = strlen(secret);
	if (n == 35 && strncmp(secret, "md5", 3) == 0 && is_hex_string(secret + 3, 32))
		return SECRET_MD5;
	if (is_scram_secret(secret))
		return SECRET_SCRAM;
	return SECRET_PLAIN;
}

static void userlist_entry_free(UserlistEntry *e)
{
	free(e->name);
	util_free_secret(e->secret);
	free(e);
}

void userlist_free(Userlist *ul)
{
	if (!ul)
		return;
	UserlistEntry *e = ul->entries;
	while (e) {
		UserlistEntry *next = e->next;
		userlist_entry_free(e);
		e = next;
	}
	free(ul);
}

const UserlistEntry *userlist_find(const Userlist *ul, const char *user)
{
	if (!ul || !user)
		return NULL;
	for (const UserlistEntry *e = ul->entries; e; e = e->next)
		if (strcmp(e->name, user) == 0)
			return e;
	return NULL;
}

/* A later line for the same user replaces the earlier secret, as in pgbouncer. */
static void userlist_put(Userlist *ul, char *name, char *secret)
{
	UserlistEntry **tail = &ul->entries;
	for (UserlistEntry *e = ul->entries; e; tail = &e->next, e = e->next) {
		if (strcmp(e->name, name) == 0) {
			free(name);
			util_free_secret(e->secret);
			e->secret = secret;
			e->kind = userlist_secret_kind(secret);
			return;
		}
	}
	UserlistEntry *e = xcalloc(1, sizeof(*e));
	e->name = name;
	e->secret = secret;
	e->kind = userlist_secret_kind(secret);
	*tail = e;
	ul->count++;
}

/*
 * Read one quoted field starting at *pos (which must point at '"') and ending
 * before `end`. On success *out is a new string and *pos is past the closing
 * quote. Returns an error message or NULL.
 */
static const char *userlist_read_field(const char **pos, const char *end, size_t max_len,
				       char **out)
{
	const char *p = *pos;
	if (p >= end || *p != '"')
		return "expected a double-quoted field";
	p++;
	char *buf = xmalloc((size_t)(end - p) + 1);
	size_t n = 0;
	const char *msg = NULL;
	for (;;) {
		if (p >= end) {
			msg = "unterminated quoted field";
			break;
		}
		if (*p == '"') {
			if (end - p > 1 && p[1] == '"') {
				buf[n++] = '"';
				p += 2;
				continue;
			}
			p++;
			break;
		}
		buf[n++] = *p++;
	}
	if (!msg && n > max_len)
		msg = "field too long";
	if (msg) {
		util_wipe(buf, n);
		free(buf);
		return msg;
	}
	buf[n] = '\0';
	*out = buf;
	*pos = p;
	return NULL;
}

static const char *skip_blanks(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
		p++;
	return p;
}

/* Parse one line [p, end). Returns an error message or NULL; blank lines add nothing. */
static const char *userlist_parse_line(Userlist *ul, const char *p, const char *end)
{
	p = skip_blanks(p, end);
	if (p >= end || *p == ';' || *p == '#')
		return NULL;
	char *name = NULL, *secret = NULL;
	const char *msg = userlist_read_field(&p, end, USERLIST_MAX_NAME, &name);
	if (msg)
		return msg;
	if (name[0] == '\0') {
		free(name);
		return "empty user name";
	}
	p = skip_blanks(p, end);
	if (p >= end)
		msg = "missing secret";
	else
		msg = userlist_read_field(&p, end, USERLIST_MAX_SECRET, &secret);
	if (msg) {
		free(name);
		return msg;
	}
	userlist_put(ul, name, secret);
	return NULL;
}

Userlist *userlist_parse(const char *text, const char *name_for_errors, char *err, size_t errlen)
{
	const char *file = name_for_errors ? name_for_errors : "auth_file";
	Userlist *ul = xcalloc(1, sizeof(*ul));
	const char *p = text ? text : "";
	int line = 0;
	while (*p) {
		const char *nl = strchr(p, '\n');
		const char *end = nl ? nl : p + strlen(p);
		line++;
		const char *msg = userlist_parse_line(ul, p, end);
		if (msg) {
			userlist_set_err(err, errlen, file, line, "%s", msg);
			userlist_free(ul);
			return NULL;
		}
		p = nl ? nl + 1 : end;
	}
	return ul;
}

Userlist *userlist_load(const char *path, char *err, size_t errlen)
{
	char *text = util_read_file(path, USERLIST_MAX_FILE, false);
	if (!text) {
		userlist_set_err(err, errlen, path, 0, "cannot read auth_file: %s", strerror(errno));
		return NULL;
	}
	Userlist *ul = userlist_parse(text, path, err, errlen);
	util_free_secret(text);
	return ul;
}
