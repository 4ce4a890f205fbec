#include "prepared.h"
#include "client.h"
#include "enforce.h"
#include "pool.h"
#include "pktbuf.h"
#include "proto.h"
#include "sessionstate.h"
#include "sqlinfo.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct PsRegistry PsRegistry;
typedef struct PsServer PsServer;

/* ---- a small hash map: byte-string key -> pointer ------------------ */

typedef struct MapEntry {
	struct MapEntry *next;
	uint64_t hash;
	uint8_t *key;
	size_t key_len;
	void *value;
} MapEntry;

typedef struct PsMap {
	MapEntry **buckets;
	size_t nbuckets;	/* power of two */
	size_t count;
	uint64_t k0, k1;	/* SipHash key: clients choose the keys */
	MapEntry *last;		/* the entry found last: a client binds the same name over and over */
} PsMap;

static PsMap *map_new(void)
{
	PsMap *m = xcalloc(1, sizeof(*m));
	uint64_t key[2] = { (uint64_t)util_now_mono(), (uint64_t)(uintptr_t)m };
	if (!util_random_bytes(key, sizeof(key)))
		key[0] ^= (uint64_t)util_now_wall();	/* weaker flood resistance only */
	m->k0 = key[0];
	m->k1 = key[1];
	m->nbuckets = 16;
	m->buckets = xcalloc(m->nbuckets, sizeof(MapEntry *));
	return m;
}

static MapEntry **map_slot(PsMap *m, const void *key, size_t len, uint64_t *hash)
{
	*hash = sqlinfo_siphash(m->k0, m->k1, key, len);
	MapEntry **pp = &m->buckets[*hash & (m->nbuckets - 1)];
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == *hash && (*pp)->key_len == len && memcmp((*pp)->key, key, len) == 0)
			break;
	return pp;
}

static void *map_get(PsMap *m, const void *key, size_t len)
{
	if (!m)
		return NULL;
	MapEntry *e = m->last;
	if (!e || e->key_len != len || memcmp(e->key, key, len) != 0) {
		uint64_t hash;
		e = *map_slot(m, key, len, &hash);
		if (e)
			m->last = e;
	}
	return e ? e->value : NULL;
}

static void map_grow(PsMap *m)
{
	size_t n = m->nbuckets * 2;
	MapEntry **b = xcalloc(n, sizeof(MapEntry *));
	for (size_t i = 0; i < m->nbuckets; i++) {
		MapEntry *e = m->buckets[i], *next;
		for (; e; e = next) {
			next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = n;
}

/* Insert a key known to be absent; returns the entry's own copy of the key. */
static const uint8_t *map_put(PsMap *m, const void *key, size_t len, void *value)
{
	uint64_t hash;
	MapEntry **pp = map_slot(m, key, len, &hash);
	MapEntry *e = xcalloc(1, sizeof(*e));
	e->hash = hash;
	e->key = xmalloc(len ? len : 1);
	memcpy(e->key, key, len);
	e->key_len = len;
	e->value = value;
	*pp = e;
	if (++m->count > m->nbuckets)
		map_grow(m);
	return e->key;
}

static void *map_remove(PsMap *m, const void *key, size_t len)
{
	uint64_t hash;
	if (!m)
		return NULL;
	MapEntry **pp = map_slot(m, key, len, &hash);
	MapEntry *e = *pp;
	if (!e)
		return NULL;
	void *value = e->value;
	*pp = e->next;
	m->count--;
	if (m->last == e)
		m->last = NULL;
	free(e->key);
	free(e);
	return value;
}

/* Remove every entry, handing each value to drop. */
static void map_clear(PsMap *m, void (*drop)(void *value, void *arg), void *arg)
{
	for (size_t i = 0; m && i < m->nbuckets; i++) {
		MapEntry *e = m->buckets[i], *next;
		for (; e; e = next) {
			next = e->next;
			drop(e->value, arg);
			free(e->key);
			free(e);
		}
		m->buckets[i] = NULL;
	}
	if (m) {
		m->count = 0;
		m->last = NULL;
	}
}

static void map_free(PsMap *m, void (*drop)(void *value, void *arg), void *arg)
{
	if (!m)
		return;
	map_clear(m, drop, arg);
	free(m->buckets);
	free(m);
}

/* ---- statement definitions (per worker, shared by clients and servers) */

/*
 * A definition: the Parse body after the name (query, parameter count and
 * types), and the settings that decide how the server lexes it. The same text
 * under other settings is another definition: PostgreSQL parses a statement
 * once, under the settings of that moment, and a re-prepare on another
 * connection must not read it differently (nor differently from how the
 * policies judged it).
 */
typedef struct PsStmt {
	const uint8_t *key;	/* the registry entry's key: lexing, NUL, def */
	size_t key_len;
	const char *lexing;	/* "standard_conforming_strings/client_encoding" */
	const uint8_t *def;
	size_t def_len;
	int refs;		/* client names, server entries, replies in flight */
	char name[PREPARED_SERVER_NAME_MAX];	/* on servers: pgmoat_ps_<n> */
} PsStmt;

struct PsRegistry {
	PsMap *defs;		/* def -> PsStmt */
	uint64_t next_id;
};

/* How the client's session lexes SQL now (what a server synced to it will use). */
static char *client_lexing(const Client *c)
{
	const char *scs = c->vars.values[VAR_STANDARD_CONFORMING_STRINGS];
	const char *enc = c->vars.values[VAR_CLIENT_ENCODING];
	return xasprintf("%s/%s", scs ? scs : "", enc ? enc : "");
}

static PsStmt *stmt_get(Client *c, const uint8_t *def, size_t len)
{
	Worker *w = c->worker;
	if (!w->ps_registry) {
		w->ps_registry = xcalloc(1, sizeof(PsRegistry));
		w->ps_registry->defs = map_new();
	}
	PsRegistry *r = w->ps_registry;
	char *lexing = client_lexing(c);
	size_t lex_len = strlen(lexing) + 1;
	size_t key_len = lex_len + len;
	uint8_t *key = xmalloc(key_len);
	memcpy(key, lexing, lex_len);
	memcpy(key + lex_len, def, len);
	PsStmt *st = map_get(r->defs, key, key_len);
	if (!st) {
		st = xcalloc(1, sizeof(*st));
		snprintf(st->name, sizeof(st->name), PREPARED_PREFIX "%llu",
			 (unsigned long long)++r->next_id);
		st->key = map_put(r->defs, key, key_len, st);
		st->key_len = key_len;
		st->lexing = (const char *)st->key;
		st->def = st->key + lex_len;
		st->def_len = len;
	}
	free(key);
	free(lexing);
	st->refs++;
	return st;
}

static PsStmt *stmt_ref(PsStmt *st)
{
	if (st)
		st->refs++;
	return st;
}

static void stmt_unref(Worker *w, PsStmt *st)
{
	if (!st || --st->refs > 0)
		return;
	map_remove(w->ps_registry->defs, st->key, st->key_len);
	free(st);
}

static void drop_stmt_ref(void *value, void *arg)
{
	stmt_unref(arg, value);
}

/* ---- per server: the statements it holds, and the replies it owes ---- */

typedef enum {
	PEND_FORWARD,		/* the client asked: its replies go to the client */
	PEND_SWALLOW,		/* ours (injected Parse/Close): its reply is dropped */
	PEND_FAKE,		/* answered locally (kind '1' or '3') once every earlier reply is out */
} PendAction;

typedef struct Pending {
	uint8_t kind;		/* the request: 'P','B','D','E','C','S','Q','F'; FAKE: the reply */
	uint8_t action;		/* PendAction */
	bool added;		/* this Parse put stmt in the server's set: undo when it fails */
	bool forgets;		/* a Query with DEALLOCATE/DISCARD: forget stmt (NULL: all) when it runs */
	PsStmt *stmt;		/* referenced */
	char *client_name;	/* the client name this Parse registered: undo when it fails */
} Pending;

typedef struct PsSlot {
	PsStmt *stmt;		/* referenced */
	uint64_t last_use;
} PsSlot;

struct PsServer {
	PsSlot *slots;
	int count, cap;
	uint64_t clock;		/* LRU ticks */
	Pending *q;		/* ring of replies owed, oldest at head */
	size_t head, len, qcap;	/* qcap: 0 or a power of two */
	bool skipping;		/* an error happened and no Sync is queued: the server skips */
	bool desync_logged;
};

static PsServer *ps_of(Server *s)
{
	if (!s->ps)
		s->ps = xcalloc(1, sizeof(PsServer));
	return s->ps;
}

static int set_find(const PsServer *ps, const PsStmt *st)
{
	for (int i = 0; i < ps->count; i++)
		if (ps->slots[i].stmt == st)
			return i;
	return -1;
}

static void set_remove_at(Worker *w, PsServer *ps, int i)
{
	stmt_unref(w, ps->slots[i].stmt);
	ps->slots[i] = ps->slots[--ps->count];
}

static void set_remove(Worker *w, PsServer *ps, const PsStmt *st)
{
	int i = set_find(ps, st);
	if (i >= 0)
		set_remove_at(w, ps, i);
}

static void set_clear(Worker *w, PsServer *ps)
{
	while (ps->count > 0)
		set_remove_at(w, ps, ps->count - 1);
}

static void set_add(PsServer *ps, PsStmt *st)
{
	if (ps->count == ps->cap) {
		ps->cap = ps->cap ? ps->cap * 2 : 16;
		ps->slots = xrealloc(ps->slots, (size_t)ps->cap * sizeof(PsSlot));
	}
	ps->slots[ps->count].stmt = stmt_ref(st);
	ps->slots[ps->count].last_use = ++ps->clock;
	ps->count++;
}

static int set_limit(void)
{
	int max = moat->cfg->max_prepared_statements;
	return max > 0 ? max : 1;	/* lowered to 0 by a reload: tracked clients still need one */
}

static Pending *q_at(PsServer *ps, size_t i)
{
	return &ps->q[(ps->head + i) & (ps->qcap - 1)];
}

static void q_push_raw(PsServer *ps, const Pending *p)
{
	if (ps->len == ps->qcap) {
		size_t ncap = ps->qcap ? ps->qcap * 2 : 16;
		Pending *nq = xcalloc(ncap, sizeof(Pending));
		for (size_t i = 0; i < ps->len; i++)
			nq[i] = *q_at(ps, i);
		free(ps->q);
		ps->q = nq;
		ps->qcap = ncap;
		ps->head = 0;
	}
	ps->len++;
	*q_at(ps, ps->len - 1) = *p;
}

static void pending_release(Worker *w, Pending *p)
{
	if (p->stmt)	/* (most replies owed name nothing: no calls for them) */
		stmt_unref(w, p->stmt);
	if (p->client_name)
		free(p->client_name);
	memset(p, 0, sizeof(*p));
}

/* The request failed or was skipped: undo what sending it assumed. */
static void pending_fail(Server *s, Pending *p)
{
	Worker *w = s->worker;
	if (p->added)
		set_remove(w, s->ps, p->stmt);
	Client *c = s->link;
	if (p->client_name && c && map_get(c->ps_names, p->client_name, strlen(p->client_name)) == p->stmt)
		stmt_unref(w, map_remove(c->ps_names, p->client_name, strlen(p->client_name)));
	pending_release(w, p);
}

static void q_pop(Server *s, bool failed)
{
	PsServer *ps = s->ps;
	Pending *p = q_at(ps, 0);
	if (failed)
		pending_fail(s, p);
	else if (p->stmt || p->client_name)	/* (the slot is overwritten when reused) */
		pending_release(s->worker, p);
	ps->head = (ps->head + 1) & (ps->qcap - 1);
	ps->len--;
}

static void q_clear(Server *s, bool failed)
{
	while (s->ps && s->ps->len > 0)
		q_pop(s, failed);
}

static void pending_push(Server *s, Pending *p)
{
	PsServer *ps = ps_of(s);
	if (p->kind == 'S' && p->action == PEND_FORWARD)
		ps->skipping = false;
	else if (ps->skipping) {
		pending_fail(s, p);	/* the server skips it, as it skips everything until Sync */
		return;
	}
	q_push_raw(ps, p);
}

/* Note the reply of one request sent as is. */
void prepared_track(Server *s, uint8_t kind)
{
	switch (kind) {
	case 'P': case 'B': case 'D': case 'E': case 'C': case 'S': case 'Q': case 'F':
		break;
	default:
		return;	/* Flush and copy data have no reply of their own */
	}
	PsServer *ps = s->ps;
	if (ps && !ps->skipping && ps->len < ps->qcap) {
		/* the common case, without a Pending built and copied */
		Pending *p = q_at(ps, ps->len++);
		memset(p, 0, sizeof(*p));
		p->kind = kind;
		p->action = PEND_FORWARD;
		return;
	}
	Pending p = { .kind = kind, .action = PEND_FORWARD };
	pending_push(s, &p);
}

/* ---- client side ------------------------------------------------------ */

void prepared_client_init(Client *c)
{
	c->ps_enabled = !c->is_admin && moat->cfg->max_prepared_statements > 0 &&
			pool_effective_mode(c->pool) != POOL_SESSION;
}

void prepared_client_free(Client *c)
{
	map_free(c->ps_names, drop_stmt_ref, c->worker);
	c->ps_names = NULL;
}

void prepared_server_free(Server *s)
{
	PsServer *ps = s->ps;
	if (!ps)
		return;
	q_clear(s, false);
	set_clear(s->worker, ps);
	free(ps->slots);
	free(ps->q);
	free(ps);
	s->ps = NULL;
}

/* Shutdown: clients and servers are gone, so nothing refers to what is left. */
static void drop_stmt_unreferenced(void *value, void *arg)
{
	free(value);
}

void prepared_shutdown(Worker *w)
{
	if (!w->ps_registry)
		return;
	map_free(w->ps_registry->defs, drop_stmt_unreferenced, NULL);
	free(w->ps_registry);
	w->ps_registry = NULL;
}

void prepared_link(Client *c, Server *s)
{
	if (s->ps) {
		q_clear(s, false);
		s->ps->skipping = false;
	}
}

void prepared_server_reset(Server *s)
{
	if (s->ps)
		set_clear(s->worker, s->ps);
}

bool prepared_wants_whole(uint8_t type)
{
	return type == 'P' || type == 'D' || type == 'C' || type == 'Q';
}

/* DEALLOCATE or DISCARD at p, any case? (p is a 'd' or 'D') */
static bool forgets_at(const char *p)
{
	char second = (char)(p[1] | 0x20);
	return (second == 'e' && strncasecmp(p, "deallocate", 10) == 0) ||
	       (second == 'i' && strncasecmp(p, "discard", 7) == 0);
}

/*
 * May this Query's text hold a DEALLOCATE or DISCARD (parsed then)? A cheap
 * look before the parse, as strcasestr would answer it: every simple Query of
 * a tracked client passes here (strcasestr cost more than the rest of the
 * Query's way through).
 */
static bool query_may_forget(const uint8_t *msg, size_t len)
{
	const char *sql = (const char *)msg + PROTO_HEADER_LEN;
	size_t sql_len = len - PROTO_HEADER_LEN;
	if (sql_len == 0 || sql[sql_len - 1] != '\0')
		return false;	/* malformed: the server's business */
	for (const char *p = strpbrk(sql, "dD"); p; p = strpbrk(p + 1, "dD"))
		if (forgets_at(p))
			return true;
	return false;
}

/* A statement name this layer tracks (others pass unchanged). */
static bool name_trackable(const char *name)
{
	return *name && strlen(name) <= PREPARED_NAME_MAX;
}

bool prepared_passes(const uint8_t *msg, size_t len)
{
	PktReader r;
	const char *portal, *name;
	uint8_t what;
	proto_reader_init(&r, msg + PROTO_HEADER_LEN, len - PROTO_HEADER_LEN);
	switch (msg[0]) {
	case 'B':
		return !(proto_read_cstring(&r, &portal) && proto_read_cstring(&r, &name) &&
			 name_trackable(name));
	case 'D':
	case 'C':
		return !(proto_read_uint8(&r, &what) && what == 'S' && proto_read_cstring(&r, &name) &&
			 name_trackable(name));
	case 'P':
		return !(proto_read_cstring(&r, &name) && name_trackable(name));
	case 'Q':
		return !query_may_forget(msg, len);
	default:
		return true;
	}
}

static void send_bytes(Server *s, const void *p, size_t len)
{
	evbuffer_add(msgio_out(&s->out), p, len);
}

static void send_pktbuf(Server *s, PktBuf *pb)
{
	if (pktbuf_ok(pb))
		send_bytes(s, pb->data, pb->len);
}

static bool name_is_ours(const char *name)
{
	return strncmp(name, PREPARED_PREFIX, strlen(PREPARED_PREFIX)) == 0;
}

/* Fail this extended message in-stream (the server skips to Sync), with our error. */
static void refuse(Client *c, Server *s, const char *sqlstate, const char *message)
{
	PktBuf pb;
	pktbuf_init(&pb);
	if (!enforce_refuse(s, 'P', sqlstate, message, &pb)) {
		pktbuf_free(&pb);
		client_disconnect(c, "08P01", "could not refuse a prepared statement request");
		return;
	}
	send_pktbuf(s, &pb);
	pktbuf_free(&pb);
	prepared_track(s, 'B');	/* the marker is a Bind */
}

/* Make room in the server's set: close its least recently used statements. */
static void make_room(Server *s)
{
	PsServer *ps = ps_of(s);
	while (ps->count >= set_limit()) {
		int oldest = 0;
		for (int i = 1; i < ps->count; i++)
			if (ps->slots[i].last_use < ps->slots[oldest].last_use)
				oldest = i;
		PktBuf pb;
		pktbuf_init(&pb);
		pktbuf_start(&pb, 'C');
		pktbuf_put_uint8(&pb, 'S');
		pktbuf_put_cstring(&pb, ps->slots[oldest].stmt->name);
		pktbuf_finish(&pb);
		send_pktbuf(s, &pb);
		pktbuf_free(&pb);
		Pending p = { .kind = 'C', .action = PEND_SWALLOW };
		pending_push(s, &p);
		set_remove_at(s->worker, ps, oldest);
	}
}

/*
 * Send Parse of st under its server name, preceded by a Close of that name:
 * the server may still hold it where our set says it does not (a DISCARD we
 * counted as done, an eviction skipped after an error), and closing a name
 * that does not exist is no error. swallow: the replies are ours.
 */
static void send_parse(Server *s, PsStmt *st, bool swallow, char *client_name)
{
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_start(&pb, 'C');
	pktbuf_put_uint8(&pb, 'S');
	pktbuf_put_cstring(&pb, st->name);
	pktbuf_finish(&pb);
	pktbuf_start(&pb, 'P');
	pktbuf_put_cstring(&pb, st->name);
	pktbuf_put_bytes(&pb, st->def, st->def_len);
	pktbuf_finish(&pb);
	send_pktbuf(s, &pb);
	pktbuf_free(&pb);
	Pending close = { .kind = 'C', .action = PEND_SWALLOW };
	pending_push(s, &close);
	set_add(s->ps, st);
	Pending parse = { .kind = 'P', .action = swallow ? PEND_SWALLOW : PEND_FORWARD, .added = true,
			  .stmt = stmt_ref(st), .client_name = client_name };
	pending_push(s, &parse);
}

/* The server must hold st before a request names it. */
static void ensure_on_server(Server *s, PsStmt *st)
{
	PsServer *ps = ps_of(s);
	int i = set_find(ps, st);
	if (i >= 0) {
		ps->slots[i].last_use = ++ps->clock;
		return;
	}
	make_room(s);
	send_parse(s, st, true, NULL);
}

static void push_fake(Server *s, uint8_t reply, PsStmt *st, char *client_name)
{
	Pending p = { .kind = reply, .action = PEND_FAKE, .stmt = stmt_ref(st),
		      .client_name = client_name };
	pending_push(s, &p);
	prepared_emit(s);
}

static PsStmt *client_lookup(Client *c, const char *name)
{
	return map_get(c->ps_names, name, strlen(name));
}

static void client_register(Client *c, const char *name, PsStmt *st)
{
	if (!c->ps_names)
		c->ps_names = map_new();
	map_put(c->ps_names, name, strlen(name), st);
}

static void client_forget(Client *c, const char *name)
{
	stmt_unref(c->worker, map_remove(c->ps_names, name, strlen(name)));
}

static void send_parse_msg(Client *c, Server *s, const uint8_t *msg, size_t len)
{
	PktReader r;
	const char *name;
	proto_reader_init(&r, msg + PROTO_HEADER_LEN, len - PROTO_HEADER_LEN);
	if (!proto_read_cstring(&r, &name) || !name_trackable(name)) {
		send_bytes(s, msg, len);	/* unnamed, overlong or malformed: the server's business */
		prepared_track(s, 'P');
		return;
	}
	if (name_is_ours(name)) {
		refuse(c, s, "42P14", "prepared statement names starting with \"" PREPARED_PREFIX
		       "\" are reserved by pgmoat");
		return;
	}
	if (client_lookup(c, name)) {
		char *m = xasprintf("prepared statement \"%s\" already exists", name);
		refuse(c, s, "42P05", m);
		free(m);
		return;
	}
	PsStmt *st = stmt_get(c, r.pos, proto_reader_left(&r));
	client_register(c, name, st);	/* the client's reference */
	PsServer *ps = ps_of(s);
	int i = set_find(ps, st);
	if (i >= 0) {
		ps->slots[i].last_use = ++ps->clock;
		push_fake(s, '1', st, xstrdup(name));
		return;
	}
	make_room(s);
	send_parse(s, st, false, xstrdup(name));
}

/* A rewritten Describe: type, length, kind, a short name (built on the stack). */
#define SMALL_REQUEST_MAX (PROTO_HEADER_LEN + 2 + 2 * 64)

/*
 * Bind head: 'B', length, portal, statement name; the rest follows unchanged.
 * out has room for PROTO_HEADER_LEN + both names with their NULs; returns the
 * bytes written.
 */
/* portal_len counts its NUL; old_name_len does not */
static size_t bind_head_build(uint8_t *out, uint32_t wire_len, const char *portal,
			      size_t portal_len, const char *stmt_name, size_t old_name_len)
{
	size_t name_len = strlen(stmt_name) + 1;
	uint32_t new_len = htonl((uint32_t)(wire_len - old_name_len + name_len - 1));
	out[0] = 'B';
	memcpy(out + 1, &new_len, 4);
	memcpy(out + PROTO_HEADER_LEN, portal, portal_len);
	memcpy(out + PROTO_HEADER_LEN + portal_len, stmt_name, name_len);
	return PROTO_HEADER_LEN + portal_len + name_len;
}

static bool lexing_unchanged(const Client *c, const PsStmt *st)
{
	char *now = client_lexing(c);
	bool same = strcmp(now, st->lexing) == 0;
	free(now);
	return same;
}

/*
 * The statement a Bind or Describe names, ready on the server; NULL: pass
 * the message unchanged. *refused: it named one of ours and was refused.
 */
static PsStmt *resolve(Client *c, Server *s, const char *name, bool *refused)
{
	*refused = false;
	if (!name_trackable(name))
		return NULL;
	PsStmt *st = client_lookup(c, name);
	if (!st && name_is_ours(name)) {
		refuse(c, s, "26000", "prepared statement names starting with \"" PREPARED_PREFIX
		       "\" are reserved by pgmoat");
		*refused = true;
		return NULL;
	}
	if (st && set_find(ps_of(s), st) < 0 && !lexing_unchanged(c, st)) {
		char *m = xasprintf("prepared statement \"%s\" was prepared under other "
				    "standard_conforming_strings/client_encoding settings (%s): pgmoat "
				    "cannot prepare it again on another server connection; prepare it "
				    "again", name, st->lexing);
		refuse(c, s, "55000", m);
		free(m);
		*refused = true;
		return NULL;
	}
	if (st)
		ensure_on_server(s, st);
	return st;
}

static void send_bind_msg(Client *c, Server *s, const uint8_t *msg, size_t len)
{
	PktReader r;
	const char *portal, *name;
	proto_reader_init(&r, msg + PROTO_HEADER_LEN, len - PROTO_HEADER_LEN);
	bool refused = false;
	PsStmt *st = proto_read_cstring(&r, &portal) && proto_read_cstring(&r, &name)
		     ? resolve(c, s, name, &refused) : NULL;
	if (refused)
		return;
	if (!st) {
		send_bytes(s, msg, len);
		prepared_track(s, 'B');
		return;
	}
	/* (a whole message's portal name may be longer than a streamed one's) */
	uint8_t *head = xmalloc(PROTO_HEADER_LEN + strlen(portal) + 1 + sizeof(st->name));
	send_bytes(s, head, bind_head_build(head, (uint32_t)(len - 1), portal, strlen(portal) + 1,
					    st->name, strlen(name)));
	free(head);
	send_bytes(s, r.pos, proto_reader_left(&r));
	prepared_track(s, 'B');
}

PreparedBind prepared_forward_bind(Client *c, Server *s, const MsgHeader *h,
				   const struct evbuffer_iovec *chunk, PreparedBindHead *head)
{
	struct evbuffer *in = c->in.buf;
	size_t total = proto_msg_total(h);
	size_t peek = PROTO_HEADER_LEN + 2 * (PREPARED_NAME_MAX + 1);
	if (peek > total)
		peek = total;
	/* in place when the first chunk holds the names (nearly always), else copied */
	uint8_t copy[PROTO_HEADER_LEN + 2 * (PREPARED_NAME_MAX + 1)];
	const uint8_t *msg = copy;
	struct evbuffer_iovec v = { NULL, 0 };
	head->chunk = NULL;
	head->chunk_len = 0;
	if (chunk)
		v = *chunk;
	else if (evbuffer_peek(in, 1, NULL, &v, 1) != 1)
		v.iov_len = 0;
	if (v.iov_len >= peek) {
		msg = head->chunk = v.iov_base;
		head->chunk_len = v.iov_len;
	} else if (evbuffer_get_length(in) < peek ||
		 evbuffer_copyout(in, copy, peek) != (ev_ssize_t)peek)
		return PREPARED_BIND_WAIT;
	PktReader r;
	const char *portal, *name;
	bool refused = false;
	proto_reader_init(&r, msg + PROTO_HEADER_LEN, peek - PROTO_HEADER_LEN);
	PsStmt *st = proto_read_cstring(&r, &portal) && proto_read_cstring(&r, &name)
		     ? resolve(c, s, name, &refused) : NULL;
	if (!st && refused) {
		c->fwd_remaining = total;	/* the marker went instead: drop the Bind */
		c->fwd_discard = true;
		return PREPARED_BIND_DONE;
	}
	prepared_track(s, 'B');
	if (!st)
		return PREPARED_BIND_PASS;
	head->replaces = (size_t)(r.pos - msg);
	/* (the reader's positions give both lengths: portal, then name, each with its NUL) */
	head->len = bind_head_build(head->data, h->len, portal, (size_t)(name - portal), st->name,
				    (size_t)((const char *)r.pos - name) - 1);
	return PREPARED_BIND_REWRITTEN;
}

static void send_describe_msg(Client *c, Server *s, const uint8_t *msg, size_t len)
{
	PktReader r;
	uint8_t what;
	const char *name;
	bool refused = false;
	proto_reader_init(&r, msg + PROTO_HEADER_LEN, len - PROTO_HEADER_LEN);
	PsStmt *st = proto_read_uint8(&r, &what) && what == 'S' && proto_read_cstring(&r, &name)
		     ? resolve(c, s, name, &refused) : NULL;
	if (refused)
		return;
	if (!st) {
		send_bytes(s, msg, len);
		prepared_track(s, 'D');
		return;
	}
	uint8_t describe[SMALL_REQUEST_MAX];
	PktBuf pb;
	pktbuf_init_on(&pb, describe, sizeof(describe));
	pktbuf_start(&pb, 'D');
	pktbuf_put_uint8(&pb, 'S');
	pktbuf_put_cstring(&pb, st->name);
	pktbuf_finish(&pb);
	send_pktbuf(s, &pb);
	pktbuf_free(&pb);
	prepared_track(s, 'D');
}

/* Close of a client name: forgotten here, answered here (others may share the statement). */
static void send_close_msg(Client *c, Server *s, const uint8_t *msg, size_t len)
{
	PktReader r;
	uint8_t what;
	const char *name;
	proto_reader_init(&r, msg + PROTO_HEADER_LEN, len - PROTO_HEADER_LEN);
	bool stmt = proto_read_uint8(&r, &what) && what == 'S' && proto_read_cstring(&r, &name) &&
		    name_trackable(name);
	if (stmt && (client_lookup(c, name) || name_is_ours(name))) {
		if (client_lookup(c, name))
			client_forget(c, name);
		push_fake(s, '3', NULL, NULL);
		return;
	}
	send_bytes(s, msg, len);
	prepared_track(s, 'C');
}

/* DEALLOCATE/DISCARD by simple Query: the client's names go; the server's set follows what runs. */
static void send_query_msg(Client *c, Server *s, const uint8_t *msg, size_t len)
{
	const char *sql = (const char *)msg + PROTO_HEADER_LEN;
	size_t sql_len = len - PROTO_HEADER_LEN;
	if (!query_may_forget(msg, len)) {
		send_bytes(s, msg, len);
		prepared_track(s, 'Q');
		return;
	}
	SqlInfo *info = sessionstate_classify(c->worker, sql, sql_len - 1);
	Pending p = { .kind = 'Q', .action = PEND_FORWARD };
	char *rewritten = NULL;
	for (int i = 0; info->ok && i < info->nstmts; i++) {
		const SqlStatement *st = &info->stmts[i];
		bool dealloc = strcmp(st->kind, "deallocate") == 0;
		if (!dealloc && strcmp(st->kind, "discard") != 0)
			continue;
		p.forgets = true;	/* the server may lose statements: forget what it holds */
		PsStmt *mine = dealloc && st->deallocate_name ? client_lookup(c, st->deallocate_name) : NULL;
		if (mine && info->nstmts == 1) {
			/* PostgreSQL's own answer (tag, errors, transaction state) for our statement */
			ensure_on_server(s, mine);
			p.stmt = stmt_ref(mine);
			rewritten = xasprintf("DEALLOCATE %s", mine->name);
			client_forget(c, st->deallocate_name);
		} else if (st->deallocates_all) {
			map_clear(c->ps_names, drop_stmt_ref, c->worker);
		}
	}
	sessionstate_release(c->worker, info);
	if (rewritten) {
		PktBuf pb;
		pktbuf_init(&pb);
		pktbuf_query(&pb, rewritten);
		send_pktbuf(s, &pb);
		pktbuf_free(&pb);
		free(rewritten);
	} else {
		send_bytes(s, msg, len);
	}
	pending_push(s, &p);
}

void prepared_send(Client *c, Server *s, const uint8_t *msg, size_t len)
{
	switch (msg[0]) {
	case 'P':
		send_parse_msg(c, s, msg, len);
		return;
	case 'B':
		send_bind_msg(c, s, msg, len);
		return;
	case 'D':
		send_describe_msg(c, s, msg, len);
		return;
	case 'C':
		send_close_msg(c, s, msg, len);
		return;
	case 'Q':
		send_query_msg(c, s, msg, len);
		return;
	default:
		send_bytes(s, msg, len);
		prepared_track(s, msg[0]);
	}
}

/* ---- server side ------------------------------------------------------ */

void prepared_emit(Server *s)
{
	PsServer *ps = s->ps;
	Client *c = s->link;
	if (!ps || !c || s->fwd_remaining > 0)
		return;
	while (ps->len > 0 && q_at(ps, 0)->action == PEND_FAKE) {
		uint8_t reply[5] = { q_at(ps, 0)->kind, 0, 0, 0, 4 };
		evbuffer_add(msgio_out(&c->out), reply, sizeof(reply));
		s->pool->stats.total.bytes_sent += sizeof(reply);
		q_pop(s, false);
	}
}

bool prepared_emit_due(const Server *s)
{
	return s->ps && s->ps->len > 0 && q_at(s->ps, 0)->action == PEND_FAKE;
}

static bool is_extended(uint8_t kind)
{
	return kind == 'P' || kind == 'B' || kind == 'D' || kind == 'E' || kind == 'C';
}

/* An error ended the head request: it and everything up to the next Sync are skipped. */
static void fail_until_sync(Server *s)
{
	PsServer *ps = s->ps;
	q_pop(s, true);
	while (ps->len > 0 && !(q_at(ps, 0)->kind == 'S' && q_at(ps, 0)->action == PEND_FORWARD))
		q_pop(s, true);
	ps->skipping = ps->len == 0;
}

static void desync(Server *s, uint8_t type)
{
	PsServer *ps = s->ps;
	if (!ps->desync_logged)
		svlog_warning(s, "prepared statements: reply '%c' does not match the request '%c' it "
			      "should answer; forgetting the replies owed", type, q_at(ps, 0)->kind);
	ps->desync_logged = true;
	q_clear(s, false);
	set_clear(s->worker, ps);
}

/* The request each reply that completes one completes (a table: asked for every reply). */
static const uint8_t completed_kind[256] = {
	['1'] = 'P', ['2'] = 'B', ['3'] = 'C', ['T'] = 'D', ['n'] = 'D',
	['C'] = 'E', ['I'] = 'E', ['s'] = 'E',
};

/* Does this reply complete the head request? */
static inline bool completes(uint8_t kind, uint8_t type)
{
	return completed_kind[type] != 0 && completed_kind[type] == kind;
}

bool prepared_response(Server *s, uint8_t type)
{
	PsServer *ps = s->ps;
	if (!ps || ps->len == 0)
		return false;
	if (q_at(ps, 0)->action == PEND_FAKE) {
		prepared_emit(s);
		if (ps->len == 0)
			return false;
	}
	Pending *head = q_at(ps, 0);
	switch (type) {
	case 'E':
		if (is_extended(head->kind))
			fail_until_sync(s);
		return false;
	case 'Z':
		while (ps->len > 0) {
			uint8_t k = q_at(ps, 0)->kind;
			bool ends = (k == 'S' || k == 'Q' || k == 'F') && q_at(ps, 0)->action == PEND_FORWARD;
			q_pop(s, !ends);
			if (ends)
				break;
		}
		return false;
	case 'G':
		/* COPY FROM STDIN: the server ignores the Syncs sent behind the Execute */
		for (size_t i = 1; head->kind == 'E' && i < ps->len && q_at(ps, i)->kind == 'S';) {
			Pending gone = *q_at(ps, i);
			for (size_t j = i; j + 1 < ps->len; j++)
				*q_at(ps, j) = *q_at(ps, j + 1);
			ps->len--;
			pending_release(s->worker, &gone);
		}
		return false;
	case 'C':
		if (head->kind == 'Q' && head->forgets) {
			if (head->stmt)
				set_remove(s->worker, ps, head->stmt);
			else
				set_clear(s->worker, ps);
			return false;
		}
		break;
	case '1':
	case '2':
	case '3':
	case 'T':
	case 'n':
	case 'I':
	case 's':
		break;
	default:
		return false;	/* rows, notices, parameter descriptions, copy data: no request ends */
	}
	if (!completes(head->kind, type)) {
		if (type == 'C' || type == 'T' || type == 'I')
			return false;	/* part of a simple Query's or an Execute's output */
		desync(s, type);
		return false;
	}
	bool swallow = head->action == PEND_SWALLOW;
	q_pop(s, false);
	return swallow;
}

bool prepared_pass(Server *s, uint8_t type, bool *last)
{
	PsServer *ps = s->ps;
	*last = false;
	if (!ps || ps->len == 0)
		return true;	/* nothing owed: nothing to note */
	const Pending *head = q_at(ps, 0);
	if (head->action == PEND_FAKE ||
	    (head->action == PEND_SWALLOW && completes(head->kind, type)))
		return false;
	if (type == 'D' || type == 'N' || type == 'S' || type == 'A')
		return true;	/* a row or an aside: no request ends, the head stays as it is */
	if (head->action == PEND_FORWARD &&
	    (completes(head->kind, type) || (type == 'Z' && head->kind == 'S'))) {
		/* the usual reply to the usual request: as prepared_response, without its cases */
		if (head->stmt || head->client_name) {
			q_pop(s, false);
		} else {	/* (q_pop's case of a request that named nothing, in line) */
			ps->head = (ps->head + 1) & (ps->qcap - 1);
			ps->len--;
		}
		*last = ps->len > 0 && q_at(ps, 0)->action == PEND_FAKE;	/* prepared_emit_due() */
		return true;
	}
	(void)prepared_response(s, type);	/* (not ours: it passes) */
	*last = prepared_emit_due(s);
	return true;
}
