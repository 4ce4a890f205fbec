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
#include "proto_ext.h"

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

static void ext_parse(Client *c, const uint8_t *body, size_t len)
{
	AdminExt *x = ext_of(c);
	ParseBody m;
	ExtStatement **pp;

	if (!proto_parse_parse(body, len, &m)) {
		client_disconnect(c, "08P01", "invalid Parse message");
		return;
	}
	if (m.nparams > 0) {
		ext_error(c, "0A000", "admin console commands take no parameters");
		return;
	}
	pp = statement_find(x, m.name);
	if (*pp && m.name[0]) {
		ext_error(c, "42P05", "prepared statement \"%s\" already exists", m.name);
		return;
	}
	if (*pp) {	/* the unnamed statement is replaced */
		free((*pp)->sql);
		(*pp)->sql = xstrdup(m.query);
	} else if (statement_count(x) >= ADMIN_EXT_MAX_OBJECTS) {
		ext_error(c, "54000", "too many prepared statements on the admin console");
		return;
	} else {
		ExtStatement *st = xcalloc(1, sizeof(*st));
		st->name = xstrdup(m.name);
		st->sql = xstrdup(m.query);
		*pp = st;
	}
	ext_send_simple(c, '1');
}

static void ext_bind(Client *c, const uint8_t *body, size_t len)
{
	AdminExt *x = ext_of(c);
	BindBody m;
	ExtStatement *st;
	ExtPortal **pp, *p;

	if (!proto_parse_bind(body, len, &m)) {
		client_disconnect(c, "08P01", "invalid Bind message");
		return;
	}
	st = *statement_find(x, m.statement);
	if (!st) {
		ext_error(c, "26000", "prepared statement \"%s\" does not exist", m.statement);
		return;
	}
	if (m.nparams > 0) {
		ext_error(c, "08P01", "bind message supplies %d parameters, but prepared statement "
			  "\"%s\" requires 0", m.nparams, m.statement);
		return;
	}
	if (m.binary_results) {
		ext_error(c, "0A000", "the admin console sends text results only");
		return;
	}
	pp = portal_find(x, m.portal);
	if (*pp && m.portal[0]) {
		ext_error(c, "42P03", "cursor \"%s\" already exists", m.portal);
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
	p = xcalloc(1, sizeof(*p));
	p->name = xstrdup(m.portal);
	p->sql = xstrdup(st->sql);
	pktbuf_init(&p->result);
	p->next = x->portals;
	x->portals = p;
	ext_send_simple(c, '2');
}

/* ParameterDescription (none) and the columns of a prepared statement. */
static bool ext_describe_statement(Client *c, const char *name, PktBuf *out)
{
	ExtStatement *st = *statement_find(ext_of(c), name);
	PktBuf answer;

	if (!st) {
		ext_error(c, "26000", "prepared statement \"%s\" does not exist", name);
		return false;
	}
	pktbuf_start(out, 't');
	pktbuf_put_int16(out, 0);
	pktbuf_finish(out);
	pktbuf_init(&answer);
	if (admin_is_read_only(st->sql))
		admin_run_captured(c, st->sql, &answer);
	ext_put_row_description(out, &answer);
	pktbuf_free(&answer);
	return true;
}

static bool ext_describe_portal(Client *c, const char *name, PktBuf *out)
{
	ExtPortal *p = *portal_find(ext_of(c), name);

	if (!p) {
		ext_error(c, "34000", "portal \"%s\" does not exist", name);
		return false;
	}
	if (admin_is_read_only(p->sql))
		portal_run(c, p);
	ext_put_row_description(out, &p->result);
	return true;
}

static void ext_describe(Client *c, const uint8_t *body, size_t len)
{
	TargetBody m;
	PktBuf out;
	bool ok;

	if (!proto_parse_target(body, len, &m)) {
		client_disconnect(c, "08P01", "invalid Describe message");
		return;
	}
	pktbuf_init(&out);
	ok = m.kind == 'S' ? ext_describe_statement(c, m.name, &out)
			   : ext_describe_portal(c, m.name, &out);
	if (ok && c->state != CL_FREE)
		ext_send(c, &out);
	else
		pktbuf_free(&out);
}

static void ext_execute(Client *c, const uint8_t *body, size_t len)
{
	ExecuteBody m;
	ExtPortal *p;
	PktBuf out;
	bool failed;

	if (!proto_parse_execute(body, len, &m)) {
		client_disconnect(c, "08P01", "invalid Execute message");
		return;
	}
	p = *portal_find(ext_of(c), m.portal);
	if (!p) {
		ext_error(c, "34000", "portal \"%s\" does not exist", m.portal);
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

static void ext_close(Client *c, const uint8_t *body, size_t len)
{
	AdminExt *x = ext_of(c);
	TargetBody m;

	if (!proto_parse_target(body, len, &m)) {
		client_disconnect(c, "08P01", "invalid Close message");
		return;
	}
	if (m.kind == 'S') {
		ExtStatement **pp = statement_find(x, m.name);
		if (*pp) {
			ExtStatement *st = *pp;
			*pp = st->next;
			statement_free(st);
		}
	} else {
		ExtPortal **pp = portal_find(x, m.name);
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
	if (type == 'S') {
		ext_sync(c);
		return;
	}
	if (ext_of(c)->failed || type == 'H')
		return;	/* skipped until Sync; Flush: everything is sent at once anyway */
	switch (type) {
	case 'P': ext_parse(c, body, len); break;
	case 'B': ext_bind(c, body, len); break;
	case 'D': ext_describe(c, body, len); break;
	case 'E': ext_execute(c, body, len); break;
	case 'C': ext_close(c, body, len); break;
	default: client_disconnect(c, "08P01", "unexpected message on the admin console");
	}
}
