/*
 * pg_hba.conf parser and matcher (see hba.h for what is supported).
 *
 * A line is split into fields at white space; a field is a comma-separated
 * list of items ("a, b" continues the list, as in PostgreSQL); an item in
 * double quotes is a literal name, never a keyword. '#' starts a comment
 * outside quotes. Any line we cannot honour fully fails the whole load.
 */
#include "hba.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define HBA_MAX_FILE (4 * 1024 * 1024)
#define HBA_MAX_FIELDS 16	/* type db user addr mask method + options */
#define HBA_MAX_ITEMS 1024	/* names in one list */
#define HBA_MAX_ITEM 255	/* one name or address */

typedef struct Item {
	char text[HBA_MAX_ITEM + 1];
	bool quoted;
} Item;

typedef struct Field {
	Item *items;		/* owned */
	int count;
} Field;

typedef struct Line {
	Field fields[HBA_MAX_FIELDS];
	int count;
} Line;

/* Where parsing is, and the first error. */
typedef struct Parser {
	const char *file;
	int line;
	char *err;
	size_t errlen;
	bool failed;
} Parser;

static void hba_fail(Parser *ps, const char *fmt, ...) PRINTF_LIKE(2, 3);

static void hba_fail(Parser *ps, const char *fmt, ...)
{
	char msg[300];
	va_list ap;

	if (ps->failed)
		return;
	ps->failed = true;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ps->err && ps->errlen)
		snprintf(ps->err, ps->errlen, "%s:%d: %s", ps->file, ps->line, msg);
}

const char *hba_method_name(HbaMethod m)
{
	switch (m) {
	case HBA_TRUST: return "trust";
	case HBA_REJECT: return "reject";
	case HBA_MD5: return "md5";
	case HBA_SCRAM: return "scram-sha-256";
	case HBA_PASSWORD: return "password";
	case HBA_CERT: return "cert";
	}
	return "unknown";
}

/* ------------------------------------------------------------ tokenizer */

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\f' || ch == '\v';
}

static void skip_blanks(const char **pp)
{
	while (is_blank(**pp))
		(*pp)++;
}

static bool item_push_char(Parser *ps, Item *it, size_t *len, char ch)
{
	if (*len >= HBA_MAX_ITEM) {
		hba_fail(ps, "name too long (max %d bytes)", HBA_MAX_ITEM);
		return false;
	}
	it->text[(*len)++] = ch;
	it->text[*len] = '\0';
	return true;
}

/* One item at *pp: "quoted" or a bare word ending at blank, ',', '#' or end of line. */
static bool read_item(Parser *ps, const char **pp, Item *it)
{
	const char *p = *pp;
	size_t len = 0;

	memset(it, 0, sizeof(*it));
	if (*p == '"') {
		it->quoted = true;
		for (p++; *p != '"'; p++) {
			if (*p == '\0') {
				hba_fail(ps, "unterminated quoted name");
				return false;
			}
			if (!item_push_char(ps, it, &len, *p))
				return false;
		}
		p++;
	} else {
		for (; *p && !is_blank(*p) && *p != ',' && *p != '#' && *p != '"'; p++)
			if (!item_push_char(ps, it, &len, *p))
				return false;
	}
	if (len == 0 && !it->quoted) {
		hba_fail(ps, "empty item in a list");
		return false;
	}
	*pp = p;
	return true;
}

static void field_free(Field *f)
{
	free(f->items);
	f->items = NULL;
	f->count = 0;
}

static void line_free(Line *ln)
{
	for (int i = 0; i < ln->count; i++)
		field_free(&ln->fields[i]);
	ln->count = 0;
}

/* A field: item [, item]... followed by a blank, a comment or the end. */
static bool read_field(Parser *ps, const char **pp, Field *f)
{
	const char *p = *pp;

	for (;;) {
		if (f->count >= HBA_MAX_ITEMS) {
			hba_fail(ps, "too many names in one list (max %d)", HBA_MAX_ITEMS);
			return false;
		}
		f->items = xrealloc(f->items, sizeof(Item) * (size_t)(f->count + 1));
		if (!read_item(ps, &p, &f->items[f->count]))
			return false;
		f->count++;
		if (*p != ',')
			break;
		p++;
		skip_blanks(&p);
	}
	if (*p && !is_blank(*p) && *p != '#') {
		hba_fail(ps, "unexpected character '%c'", *p);
		return false;
	}
	*pp = p;
	return true;
}

/* Split one line (NUL-terminated, no newline) into fields. */
static bool read_line(Parser *ps, const char *p, Line *ln)
{
	for (;;) {
		skip_blanks(&p);
		if (*p == '\0' || *p == '#')
			return true;
		if (ln->count >= HBA_MAX_FIELDS) {
			hba_fail(ps, "too many fields");
			return false;
		}
		if (!read_field(ps, &p, &ln->fields[ln->count++]))
			return false;
	}
}

/* ------------------------------------------------------------- rule fields */

static bool item_is(const Item *it, const char *keyword)
{
	return !it->quoted && strcmp(it->text, keyword) == 0;
}

static const Item *field_single(Parser *ps, const Field *f, const char *what)
{
	if (f->count != 1) {
		hba_fail(ps, "%s must be a single value, not a list", what);
		return NULL;
	}
	return &f->items[0];
}

static bool parse_conn_type(Parser *ps, const Field *f, HbaConnType *out)
{
	static const struct { const char *name; HbaConnType type; } types[] = {
		{ "local", HBA_LOCAL }, { "host", HBA_HOST },
		{ "hostssl", HBA_HOSTSSL }, { "hostnossl", HBA_HOSTNOSSL },
	};
	const Item *it = field_single(ps, f, "connection type");

	if (!it)
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(types); i++) {
		if (item_is(it, types[i].name)) {
			*out = types[i].type;
			return true;
		}
	}
	hba_fail(ps, "unsupported connection type \"%s\"", it->text);
	return false;
}

/* A bare item that names an unsupported PostgreSQL feature. */
static bool item_unsupported(Parser *ps, const Item *it, const char *what)
{
	if (it->quoted)
		return false;
	if (it->text[0] == '@' || it->text[0] == '+' || it->text[0] == '/' ||
	    strcmp(it->text, "samerole") == 0 || strcmp(it->text, "samegroup") == 0) {
		hba_fail(ps, "unsupported %s \"%s\" (@file, +group, samerole and regular "
			 "expressions are not supported)", what, it->text);
		return true;
	}
	return false;
}

static bool parse_databases(Parser *ps, const Field *f, HbaRule *r)
{
	for (int i = 0; i < f->count; i++) {
		const Item *it = &f->items[i];
		if (item_unsupported(ps, it, "database"))
			return false;
		if (item_is(it, "all"))
			r->db_all = true;
		else if (item_is(it, "sameuser"))
			r->db_sameuser = true;
		else if (item_is(it, "replication"))
			r->db_replication = true;
		else
			strlist_add(&r->dbs, it->text);
	}
	return true;
}

static bool parse_users(Parser *ps, const Field *f, HbaRule *r)
{
	for (int i = 0; i < f->count; i++) {
		const Item *it = &f->items[i];
		if (item_unsupported(ps, it, "user"))
			return false;
		if (item_is(it, "all"))
			r->user_all = true;
		else
			strlist_add(&r->users, it->text);
	}
	return true;
}

/* Numeric IPv4 or IPv6 address into out (16 bytes), family in *family. */
static bool parse_ip(const char *s, int *family, uint8_t *out)
{
	memset(out, 0, 16);
	if (inet_pton(AF_INET, s, out) == 1) {
		*family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, s, out) == 1) {
		*family = AF_INET6;
		return true;
	}
	return false;
}

static int family_bytes(int family)
{
	return family == AF_INET ? 4 : 16;
}

static void mask_from_bits(uint8_t *mask, int bits)
{
	memset(mask, 0, 16);
	for (int i = 0; i < bits; i++)
		mask[i / 8] |= (uint8_t)(0x80 >> (i % 8));
}

/* "a.b.c.d/n": the prefix length, digits only, within the family's width. */
static bool parse_prefix_len(const char *s, int family, int *bits)
{
	int max = family_bytes(family) * 8, v = 0;

	if (!*s || strlen(s) > 3)
		return false;
	for (; *s; s++) {
		if (!isdigit((unsigned char)*s))
			return false;
		v = v * 10 + (*s - '0');
	}
	if (v > max)
		return false;
	*bits = v;
	return true;
}

static void rule_apply_mask(HbaRule *r)
{
	for (int i = 0; i < 16; i++)
		r->addr[i] &= r->mask[i];
}

/*
 * The address field (and, without a '/', the mask field after it). Returns
 * the index of the method field, or -1 on an error.
 */
static int parse_address(Parser *ps, const Line *ln, HbaRule *r)
{
	const Item *it = field_single(ps, &ln->fields[3], "address");
	char text[HBA_MAX_ITEM + 1];
	char *slash;
	int bits;

	if (!it)
		return -1;
	if (item_is(it, "all")) {
		r->addr_all = true;
		return 4;
	}
	if (item_is(it, "samehost") || item_is(it, "samenet")) {
		hba_fail(ps, "unsupported address \"%s\"", it->text);
		return -1;
	}
	snprintf(text, sizeof(text), "%s", it->text);
	slash = strchr(text, '/');
	if (slash)
		*slash = '\0';
	if (!parse_ip(text, &r->family, r->addr)) {
		hba_fail(ps, "invalid address \"%s\" (host names are not supported)", it->text);
		return -1;
	}
	if (slash) {
		if (!parse_prefix_len(slash + 1, r->family, &bits)) {
			hba_fail(ps, "invalid CIDR mask in address \"%s\"", it->text);
			return -1;
		}
		mask_from_bits(r->mask, bits);
		rule_apply_mask(r);
		return 4;
	}
	const Item *m = field_single(ps, &ln->fields[4], "netmask");
	int mfamily;
	if (!m)
		return -1;
	if (!parse_ip(m->text, &mfamily, r->mask) || mfamily != r->family) {
		hba_fail(ps, "invalid IP mask \"%s\"", m->text);
		return -1;
	}
	rule_apply_mask(r);
	return 5;
}

static bool parse_method(Parser *ps, const Field *f, HbaRule *r)
{
	static const struct { const char *name; HbaMethod m; } methods[] = {
		{ "trust", HBA_TRUST }, { "reject", HBA_REJECT }, { "md5", HBA_MD5 },
		{ "scram-sha-256", HBA_SCRAM }, { "password", HBA_PASSWORD }, { "cert", HBA_CERT },
	};
	const Item *it = field_single(ps, f, "authentication method");

	if (!it)
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(methods); i++) {
		if (item_is(it, methods[i].name)) {
			r->method = methods[i].m;
			return true;
		}
	}
	hba_fail(ps, "unsupported authentication method \"%s\"", it->text);
	return false;
}

static void rule_free(HbaRule *r)
{
	strlist_free(&r->dbs);
	strlist_free(&r->users);
	free(r);
}

/* A rule from a non-empty line, or NULL after hba_fail(). */
static HbaRule *rule_from_line(Parser *ps, const Line *ln)
{
	HbaRule *r = xcalloc(1, sizeof(*r));
	int method_at;

	r->line = ps->line;
	if (!parse_conn_type(ps, &ln->fields[0], &r->type))
		goto fail;
	if (ln->count < (r->type == HBA_LOCAL ? 4 : 5)) {
		hba_fail(ps, "missing fields (expected type, database, user%s, method)",
			 r->type == HBA_LOCAL ? "" : ", address");
		goto fail;
	}
	if (!parse_databases(ps, &ln->fields[1], r) || !parse_users(ps, &ln->fields[2], r))
		goto fail;
	if (r->type == HBA_LOCAL) {
		r->addr_all = true;
		method_at = 3;
	} else {
		method_at = parse_address(ps, ln, r);
		if (method_at < 0)
			goto fail;
	}
	if (method_at >= ln->count) {
		hba_fail(ps, "end-of-line before authentication method");
		goto fail;
	}
	if (!parse_method(ps, &ln->fields[method_at], r))
		goto fail;
	if (ln->count > method_at + 1) {
		hba_fail(ps, "authentication options are not supported (\"%s\")",
			 ln->fields[method_at + 1].items[0].text);
		goto fail;
	}
	return r;
fail:
	rule_free(r);
	return NULL;
}

/* ------------------------------------------------------------------ file */

void hba_free(Hba *hba)
{
	if (!hba)
		return;
	while (hba->rules) {
		HbaRule *next = hba->rules->next;
		rule_free(hba->rules);
		hba->rules = next;
	}
	free(hba);
}

Hba *hba_parse(const char *text, const char *name_for_errors, char *err, size_t errlen)
{
	Parser ps = { .file = name_for_errors ? name_for_errors : "hba", .err = err, .errlen = errlen };
	Hba *hba = xcalloc(1, sizeof(*hba));
	HbaRule **tail = &hba->rules;
	const char *p = text;

	while (*p && !ps.failed) {
		const char *eol = strchr(p, '\n');
		size_t n = eol ? (size_t)(eol - p) : strlen(p);
		char *copy = xstrndup(p, n);
		Line ln = { .count = 0 };

		ps.line++;
		if (read_line(&ps, copy, &ln) && ln.count > 0) {
			HbaRule *r = rule_from_line(&ps, &ln);
			if (r) {
				*tail = r;
				tail = &r->next;
				hba->count++;
			}
		}
		line_free(&ln);
		free(copy);
		p += n;
		if (*p == '\n')
			p++;
	}
	if (ps.failed) {
		hba_free(hba);
		return NULL;
	}
	return hba;
}

Hba *hba_load(const char *path, char *err, size_t errlen)
{
	char *text = util_read_file(path, HBA_MAX_FILE, false);
	Hba *hba;

	if (!text) {
		if (err && errlen)
			snprintf(err, errlen, "%s: cannot read auth_hba_file: %s", path, strerror(errno));
		return NULL;
	}
	hba = hba_parse(text, path, err, errlen);
	free(text);
	return hba;
}

/* ----------------------------------------------------------------- match */

static bool match_type(const HbaRule *r, const HbaConn *c)
{
	switch (r->type) {
	case HBA_LOCAL: return c->is_unix;
	case HBA_HOST: return !c->is_unix;
	case HBA_HOSTSSL: return !c->is_unix && c->tls;
	case HBA_HOSTNOSSL: return !c->is_unix && !c->tls;
	}
	return false;
}

static bool match_database(const HbaRule *r, const HbaConn *c)
{
	if (r->db_all)
		return true;
	if (r->db_sameuser && strcmp(c->database, c->user) == 0)
		return true;
	return strlist_contains(&r->dbs, c->database);
}

static bool match_user(const HbaRule *r, const HbaConn *c)
{
	return r->user_all || strlist_contains(&r->users, c->user);
}

/* An IPv4-mapped IPv6 client (::ffff:a.b.c.d) is matched as IPv4. */
static bool match_address(const HbaRule *r, const HbaConn *c)
{
	uint8_t a[16];
	int family;

	if (r->addr_all || c->is_unix)
		return true;
	if (!c->addr || !parse_ip(c->addr, &family, a))
		return false;
	if (family == AF_INET6 && r->family == AF_INET &&
	    memcmp(a, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
		memmove(a, a + 12, 4);
		memset(a + 4, 0, 12);
		family = AF_INET;
	}
	if (family != r->family)
		return false;
	for (int i = 0; i < family_bytes(family); i++)
		if ((a[i] & r->mask[i]) != r->addr[i])
			return false;
	return true;
}

const HbaRule *hba_match(const Hba *hba, const HbaConn *conn)
{
	if (!hba || !conn->database || !conn->user)
		return NULL;
	for (const HbaRule *r = hba->rules; r; r = r->next)
		if (match_type(r, conn) && match_database(r, conn) && match_user(r, conn) &&
		    match_address(r, conn))
			return r;
	return NULL;
}
