/*
 * The admin console over the extended query protocol, so that drivers that
 * always use it (psycopg 3, JDBC, node-postgres with parameters-less
 * queries) can run SHOW and the other console commands.
 *
 * Parse stores the command text; Bind makes a portal of it (no parameters,
 * text results only); Describe answers ParameterDescription (none) and the
 * command's RowDescription, or NoData; Execute runs the command and sends
 * its rows and CommandComplete; Sync ends with ReadyForQuery. The command
 * itself runs through admin_run_captured(), exactly as a simple Query does.
 *
 * A Describe runs only SHOW/SELECT (read-only) commands to learn their
 * columns; other commands run at Execute, once. After an error, messages up
 * to Sync are skipped, as a server does. Execute's row limit is ignored: a
 * console result is always sent whole.
 */
#include "admin_ext.h"
#include "admin.h"
#include "client.h"
#include "proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per connection; more is a client bug, not a need. */
#define ADMIN_EXT_MAX_OBJECTS 64

typedef struct ExtStatement {
	struct ExtStatement *next;
	char *name;		/* "" is the unnamed statement */
	char *sql;
} ExtStatement;

typedef struct ExtPortal {
	struct ExtPortal *next;
	char *name;
	char *sql;
	bool ran;		/* result holds the command's whole answer */
	PktBuf result;
} ExtPortal;

struct AdminExt {
	ExtStatement *statements;
	ExtPortal *portals;
	bool failed;		/* an error was sent: skip to Sync */
};

/* ------------------------------------------------------------- objects */

static AdminExt *ext_of(Client *c)
{
	if (!c->admin_ext)
		c->admin_ext = xcalloc(1, sizeof(AdminExt));
	return c->admin_ext;
}

static void statement_free(ExtStatement *st)
{
	free(st->name);
	free(st->sql);
	free(st);
}

static void portal_free(ExtPortal *p)
{
	free(p->name);
	free(p->sql);
	pktbuf_free(&p->result);
	free(p);
}

static ExtStatement **statement_find(AdminExt *x, const char *name)
{
	ExtStatement **pp = &x->statements;
	while (*pp && strcmp((*pp)->name, name) != 0)
		pp = &(*pp)->next;
	return pp;
}

static ExtPortal **portal_find(AdminExt *x, const char *name)
{
	ExtPortal **pp = &x->portals;
	while (*pp && strcmp((*pp)->name, name) != 0)
		pp = &(*pp)->next;
	return pp;
}

static int statement_count(const AdminExt *x)
{
	int n = 0;
	for (const ExtStatement *st = x->statements; st; st = st->next)
		n++;
	return n;
}

static int portal_count(const AdminExt *x)
{
	int n = 0;
	for (const ExtPortal *p = x->portals; p; p = p->next)
		n++;
	return n;
}

static void portals_free_all(AdminExt *x)
{
	while (x->portals) {
		ExtPortal *next = x->portals->next;
		portal_free(x->portals);
		x->portals = next;
	}
}

void admin_ext_free(Client *c)
{
	AdminExt *x = c->admin_ext;

	if (!x)
		return;
	while (x->statements) {
		ExtStatement *next = x->statements->next;
		statement_free(x->statements);
		x->statements = next;
	}
	portals_free_all(x);
	free(x);
	c->admin_ext = NULL;
}

/* ------------------------------------------------------------- answers */

static void ext_send(Client *c, PktBuf *pb)
{
	if (!client_send_pktbuf(c, pb))
		client_disconnect(c, "54000", "admin result too large");
	pktbuf_free(pb);
}

static void ext_send_simple(Client *c, uint8_t type)
{
	PktBuf pb;

	pktbuf_init(&pb);
	pktbuf_start(&pb, type);
	pktbuf_finish(&pb);
	ext_send(c, &pb);
}

static void ext_error(Client *c, const char *sqlstate, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* An ErrorResponse; everything up to the next Sync is skipped. */
static void ext_error(Client *c, const char *sqlstate, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	PktBuf pb;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	slog_debug(c, "admin extended protocol: %s", msg);
	pktbuf_init(&pb);
	pktbuf_error(&pb, "ERROR", sqlstate, msg);
	ext_send(c, &pb);
	ext_of(c)->failed = true;
}

/*
 * Walk the messages of a captured answer. Copies to out those whose type is
 * not in skip; reports whether an ErrorResponse was among them. With only
 * set, copies just the messages of that type.
 */
static bool ext_copy_messages(const PktBuf *answer, PktBuf *out, const char *skip, char only)
{
	PktReader r;
	bool had_error = false;

	proto_reader_init(&r, answer->data, answer->len);
	while (proto_reader_left(&r) > 0) {
		uint8_t type;
		uint32_t len;
		const uint8_t *body;
		if (!proto_read_uint8(&r, &type) || !proto_read_uint32(&r, &len) || len < 4 ||
		    !proto_read_bytes(&r, len - 4, &body))
			break;	/* our own builder wrote it: cannot happen, and nothing is sent */
		if (type == 'E')
			had_error = true;
		if (only ? type != (uint8_t)only : strchr(skip, type) != NULL)
			continue;
		pktbuf_start(out, type);
		pktbuf_put_bytes(out, body, len - 4);
		pktbuf_finish(out);
	}
	return had_error;
}

/* RowDescription of a captured answer, or NoData when it has none. */
static void ext_put_row_description(PktBuf *out, const PktBuf *answer)
{
	size_t before = out->len;

	ext_copy_messages(answer, out, "", 'T');
	if (out->len == before) {
		pktbuf_start(out, 'n');
		pktbuf_finish(out);
	}
}

static void portal_run(Client *c, ExtPortal *p)
{
	if (p->ran)
		return;
	p->ran = true;
	admin_run_captured(c, p->sql, &p->result);
}

/* ------------------------------------------------------------ messages */

static void ext_parse(Client *c, PktReader *r)
{
	AdminExt *x = ext_of(c);
	const char *name, *sql;
	int16_t nparams;
	ExtStatement **pp;

	if (!proto_read_cstring(r, &name) || !proto_read_cstring(r, &sql) ||
	    !proto_read_int16(r, &nparams) || nparams < 0 ||
	    proto_reader_left(r) != (size_t)nparams * 4) {
		client_disconnect(c, "08P01", "invalid Parse message");
		return;
	}
	if (nparams > 0) {
		ext_error(c, "0A000", "admin console commands take no parameters");
		return;
	}
	pp = statement_find(x, name);
	if (*pp && name[0]) {
		ext_error(c, "42P05", "prepared statement \"%s\" already exists", name);
		return;
	}
	if (*pp) {	/* the unnamed statement is replaced */
		free((*pp)->sql);
		(*pp)->sql = xstrdup(sql);
	} else if (statement_count(x) >= ADMIN_EXT_MAX_OBJECTS) {
		ext_error(c, "54000", "too many prepared statements on the admin console");
		return;
	} else {
		ExtStatement *st = xcalloc(1, sizeof(*st));
		st->name = xstrdup(name);
		st->sql = xstrdup(sql);
		*pp = st;
	}
	ext_send_simple(c, '1');
}

/* Bind's format and parameter lists: only text results, no parameters. */
static bool ext_read_bind_lists(Client *c, PktReader *r, int *nparams, bool *binary)
{
	int16_t n, v;
	int32_t len;
	const uint8_t *data;

	*binary = false;
	if (!proto_read_int16(r, &n) || n < 0)
		return false;
	for (int i = 0; i < n; i++)
		if (!proto_read_int16(r, &v))
			return false;
	if (!proto_read_int16(r, &n) || n < 0)
		return false;
	*nparams = n;
	for (int i = 0; i < n; i++) {
		if (!proto_read_int32(r, &len) || len < -1)
			return false;
		if (len > 0 && !proto_read_bytes(r, (size_t)len, &data))
			return false;
	}
	if (!proto_read_int16(r, &n) || n < 0)
		return false;
	for (int i = 0; i < n; i++) {
		if (!proto_read_int16(r, &v))
			return false;
		*binary |= v != 0;
	}
	return proto_reader_left(r) == 0;
}

static void ext_bind(Client *c, PktReader *r)
{
	AdminExt *x = ext_of(c);
	const char *portal, *stmt;
	int nparams;
	bool binary;
	ExtStatement *st;
	ExtPortal **pp;

	if (!proto_read_cstring(r, &portal) || !proto_read_cstring(r, &stmt) ||
	    !ext_read_bind_lists(c, r, &nparams, &binary)) {
		client_disconnect(c, "08P01", "invalid Bind message");
		return;
	}
	st = *statement_find(x, stmt);
	if (!st) {
		ext_error(c, "26000", "prepared statement \"%s\" does not exist", stmt);
		return;
	}
	if (nparams > 0) {
		ext_error(c, "08P01", "bind message supplies %d parameters, but prepared statement "
			  "\"%s\" requires 0", nparams, stmt);
		return;
	}
	if (binary) {
		ext_error(c, "0A000", "the admin console sends text results only");
		return;
	}
	pp = portal_find(x, portal);
	if (*pp && portal[0]) {
		ext_error(c, "42P03", "cursor \"%s\" already exists", portal);
		return;
	}
	if (*pp) {	/* the unnamed portal is replaced */
		ExtPortal *old = *pp;
		*pp = old->next;
		portal_free(old);
	} else if (portal_count(x) >= ADMIN_EXT_MAX_OBJECTS) {
		ext_error(c, "54000", "too many portals on the admin console");
		return;
	}
	ExtPortal *p = xcalloc(1, sizeof(*p));
	p->name = xstrdup(portal);
	p->sql = xstrdup(st->sql);
	pktbuf_init(&p->result);
	p->next = x->portals;
	x->portals = p;
	ext_send_simple(c, '2');
}

static void ext_describe(Client *c, PktReader *r)
{
	AdminExt *x = ext_of(c);
	uint8_t kind;
	const char *name;
	PktBuf out;

	if (!proto_read_uint8(r, &kind) || !proto_read_cstring(r, &name) ||
	    proto_reader_left(r) != 0 || (kind != 'S' && kind != 'P')) {
		client_disconnect(c, "08P01", "invalid Describe message");
		return;
	}
	pktbuf_init(&out);
	if (kind == 'S') {
		ExtStatement *st = *statement_find(x, name);
		if (!st) {
			pktbuf_free(&out);
			ext_error(c, "26000", "prepared statement \"%s\" does not exist", name);
			return;
		}
		pktbuf_start(&out, 't');
		pktbuf_put_int16(&out, 0);
		pktbuf_finish(&out);
		PktBuf answer;
		pktbuf_init(&answer);
		if (admin_is_read_only(st->sql))
			admin_run_captured(c, st->sql, &answer);
		ext_put_row_description(&out, &answer);
		pktbuf_free(&answer);
	} else {
		ExtPortal *p = *portal_find(x, name);
		if (!p) {
			pktbuf_free(&out);
			ext_error(c, "34000", "portal \"%s\" does not exist", name);
			return;
		}
		if (admin_is_read_only(p->sql))
			portal_run(c, p);
		ext_put_row_description(&out, &p->result);
	}
	if (c->state != CL_FREE)
		ext_send(c, &out);
	else
		pktbuf_free(&out);
}

static void ext_execute(Client *c, PktReader *r)
{
	AdminExt *x = ext_of(c);
	const char *name;
	int32_t max_rows;
	ExtPortal *p;
	PktBuf out;
	bool failed;

	if (!proto_read_cstring(r, &name) || !proto_read_int32(r, &max_rows) ||
	    proto_reader_left(r) != 0) {
		client_disconnect(c, "08P01", "invalid Execute message");
		return;
	}
	p = *portal_find(x, name);
	if (!p) {
		ext_error(c, "34000", "portal \"%s\" does not exist", name);
		return;
	}
	portal_run(c, p);
	if (c->state == CL_FREE)	/* SHUTDOWN, or the answer could not be built */
		return;
	pktbuf_init(&out);
	failed = ext_copy_messages(&p->result, &out, "TZ", 0);
	ext_send(c, &out);
	if (failed)
		ext_of(c)->failed = true;
}

static void ext_close(Client *c, PktReader *r)
{
	AdminExt *x = ext_of(c);
	uint8_t kind;
	const char *name;

	if (!proto_read_uint8(r, &kind) || !proto_read_cstring(r, &name) ||
	    proto_reader_left(r) != 0 || (kind != 'S' && kind != 'P')) {
		client_disconnect(c, "08P01", "invalid Close message");
		return;
	}
	if (kind == 'S') {
		ExtStatement **pp = statement_find(x, name);
		if (*pp) {
			ExtStatement *st = *pp;
			*pp = st->next;
			statement_free(st);
		}
	} else {
		ExtPortal **pp = portal_find(x, name);
		if (*pp) {
			ExtPortal *p = *pp;
			*pp = p->next;
			portal_free(p);
		}
	}
	ext_send_simple(c, '3');
}

/* End of the implicit transaction: portals go, the error state clears. */
static void ext_sync(Client *c)
{
	AdminExt *x = ext_of(c);
	PktBuf pb;

	x->failed = false;
	portals_free_all(x);
	pktbuf_init(&pb);
	pktbuf_ready(&pb, 'I');
	ext_send(c, &pb);
}

bool admin_ext_is_message(uint8_t type)
{
	return type == 'P' || type == 'B' || type == 'D' || type == 'E' || type == 'S' ||
	       type == 'H' || type == 'C';
}

void admin_ext_handle(Client *c, uint8_t type, const uint8_t *body, size_t len)
{
	PktReader r;

	proto_reader_init(&r, body, len);
	if (type == 'S') {
		ext_sync(c);
		return;
	}
	if (ext_of(c)->failed || type == 'H')
		return;	/* skipped until Sync; Flush: everything is sent at once anyway */
	switch (type) {
	case 'P': ext_parse(c, &r); break;
	case 'B': ext_bind(c, &r); break;
	case 'D': ext_describe(c, &r); break;
	case 'E': ext_execute(c, &r); break;
	case 'C': ext_close(c, &r); break;
	default: client_disconnect(c, "08P01", "unexpected message on the admin console");
	}
}
