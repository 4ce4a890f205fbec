/*
 * Masking on the wire (see maskwire.h): plans from RowDescriptions, rewritten
 * DataRows, pgmoat's own Describe before each Execute, scrubbed errors.
 */
#include "maskwire.h"
#include "catalog.h"
#include "client.h"
#include "enforce.h"
#include "errscrub.h"
#include "mask.h"
#include "maskguard.h"
#include "pktbuf.h"
#include "proto.h"
#include "server.h"

#include <stdlib.h>
#include <string.h>

#define MASKWIRE_SQLSTATE "42501"

/* What the server will answer, in order: one entry per Query, Sync and Describe sent. */
enum { Q_QUERY = 1, Q_SYNC, Q_DESC, Q_DESC_OURS };

typedef struct QEntry {
	uint8_t kind;
	StrList hints;		/* Q_QUERY: a set operation's positions to mask (maskguard.h) */
} QEntry;

struct MaskWire {
	QEntry *queue;
	int qlen;
	int qcap;		/* (policy cost) entries allocated: kept across batches */
	MaskPlan plan;
	MaskPlanKept kept;	/* (policy cost 4) the last plan's parse, for the same description */
	bool have_plan;		/* a RowDescription (or NoData) for the rows to come */
	bool plan_parsed;	/* perf-mask: plan holds the RowDescription being planned */
	bool rows_hook;		/* some policy defines on_row: every row goes through Lua */
	bool swallow;		/* a result was refused: drop output up to ReadyForQuery */
	bool waiting;		/* paused for the catalog, with pending set */
	bool retried;		/* the catalog was asked again once for this description */
	uint8_t *pending;	/* the RowDescription waiting for the catalog (whole message) */
	size_t pending_len;
	bool pending_ours;	/* ... answering pgmoat's own Describe: never forwarded */
	StrList pending_hints;	/* ... and the set-operation hints that came with it */
	/* perf-mask: the portal the last message sent to this server described */
	bool has_described;	/* false: the last message was not a Describe of a portal */
	char *described;	/* (policy cost 2) a buffer kept across messages */
	size_t described_cap;
};

/* Set-operation hints (maskguard.h) by statement or portal name. */
typedef struct NamedHints {
	char *name;
	StrList hints;
} NamedHints;

typedef struct NameMap {
	NamedHints *items;
	int n;
} NameMap;

/* Per client: the client's names, whichever server runs them. */
struct MaskClient {
	StrList query_hints;	/* a stashed Query's, until it is sent */
	StrList desc_hints;	/* the Describe going out now */
	bool desc_is_portal;	/* perf-mask: ... names a portal (not a statement): */
	char *desc_portal;	/* ... this one (a buffer kept across messages) */
	size_t desc_portal_cap;
	NameMap stmts;
	NameMap portals;
};

static void maskwire_catalog_done(Server *s, bool ok);
static void maskwire_views_done(Pool *pool);

void maskwire_note_sensitive(Client *c)
{
	c->mask_scrub = true;
}

static Catalog *maskwire_catalog(Pool *pool)
{
	if (!pool->mask_catalog)
		pool->mask_catalog = catalog_new(pool, maskwire_catalog_done, maskwire_views_done);
	return pool->mask_catalog;
}

void maskwire_note_schema_change(Client *c)
{
	c->mask_schema_changed = true;
	if (c->pool && c->pool->mask_catalog)
		catalog_invalidate(c->pool->mask_catalog);
}

void maskwire_policies_changed(void)
{
	List *item;
	list_for_each(item, &moat->pools) {
		Pool *p = container_of(item, Pool, head);
		if (p->mask_catalog)
			catalog_invalidate(p->mask_catalog);
	}
}

/* ---- login: the guard needs the names of views over protected columns ---- */

bool maskwire_login_wait(Client *c)
{
	if (!maskwire_active(c->worker) || c->is_admin || !c->pool)
		return false;
	Catalog *cat = maskwire_catalog(c->pool);
	CatalogViews state;
	catalog_tainted_views(cat, &state);
	if (state != CATALOG_VIEWS_NONE)
		return false;
	catalog_refresh_views(cat);
	catalog_tainted_views(cat, &state);
	return state == CATALOG_VIEWS_NONE;
}

/* A lookup ended: clients that waited for the view names can log in now. */
static void maskwire_views_done(Pool *pool)
{
	if (!pool->welcome_ready)
		return;	/* server_login_done() finishes them */
	List *item, *tmp;
	list_for_each_safe(item, &pool->waiting_login_clients, tmp)
		client_finish_login(container_of(item, Client, head));
}

const StrList *maskwire_tainted_views(Client *c, bool *unavailable)
{
	CatalogViews state;
	const StrList *names = catalog_tainted_views(maskwire_catalog(c->pool), &state);
	*unavailable = state != CATALOG_VIEWS_OK;
	return names;
}

static struct MaskWire *maskwire_get(Server *s)
{
	if (!s->mask)
		s->mask = xcalloc(1, sizeof(*s->mask));
	return s->mask;
}

static void plan_clear(struct MaskWire *mw)
{
	mask_plan_free_keep(&mw->plan, &mw->kept);
	mw->have_plan = false;
	mw->plan_parsed = false;
	mw->rows_hook = false;
}

void maskwire_forget(Server *s)
{
	struct MaskWire *mw = s->mask;
	if (!mw)
		return;
	if (mw->waiting && s->pool->mask_catalog)
		catalog_forget_waiter(s->pool->mask_catalog, s);
	plan_clear(mw);
	mask_plan_kept_free(&mw->kept);
	free(mw->pending);
	strlist_free(&mw->pending_hints);
	free(mw->described);
	for (int i = 0; i < mw->qlen; i++)
		strlist_free(&mw->queue[i].hints);
	free(mw->queue);
	free(mw);
	s->mask = NULL;
}

bool maskwire_waiting(const Server *s)
{
	return s->mask && s->mask->waiting;
}

/* ---- the answer queue ------------------------------------------------ */

static void queue_push(struct MaskWire *mw, uint8_t what)
{
	if (mw->qlen == mw->qcap) {
		mw->qcap = mw->qcap ? mw->qcap * 2 : 4;
		mw->queue = xrealloc(mw->queue, sizeof(QEntry) * (size_t)mw->qcap);
	}
	memset(&mw->queue[mw->qlen], 0, sizeof(QEntry));
	mw->queue[mw->qlen++].kind = what;
}

static uint8_t queue_head(const struct MaskWire *mw)
{
	return mw->qlen ? mw->queue[0].kind : 0;
}

static void queue_remove(struct MaskWire *mw, int i)
{
	strlist_free(&mw->queue[i].hints);
	memmove(mw->queue + i, mw->queue + i + 1, sizeof(QEntry) * (size_t)(mw->qlen - i - 1));
	mw->qlen--;
}

static void queue_pop(struct MaskWire *mw)
{
	if (mw->qlen > 0)
		queue_remove(mw, 0);
}

/* What a RowDescription or NoData answers: a Describe (ours or the client's), or a Query. */
enum { ANSWERS_QUERY, ANSWERS_CLIENT_DESCRIBE, ANSWERS_OUR_DESCRIBE };

static int queue_take_describe(struct MaskWire *mw)
{
	uint8_t h = queue_head(mw);
	if (h != Q_DESC && h != Q_DESC_OURS)
		return ANSWERS_QUERY;	/* a simple Query's result */
	queue_pop(mw);
	return h == Q_DESC_OURS ? ANSWERS_OUR_DESCRIBE : ANSWERS_CLIENT_DESCRIBE;
}

/* After an error the server skips to Sync: the Describes before it get no answer. */
static void queue_on_error(struct MaskWire *mw)
{
	while (queue_head(mw) == Q_DESC || queue_head(mw) == Q_DESC_OURS)
		queue_pop(mw);
}

/*
 * A server in copy-in mode ignores Syncs (server_enter_copy_in stops waiting
 * for them): keep no more batch ends than ReadyForQuery messages still due.
 */
static void queue_drop_ignored_syncs(struct MaskWire *mw, int due)
{
	int ends = 0;
	for (int i = 0; i < mw->qlen; i++)
		if (mw->queue[i].kind == Q_SYNC || mw->queue[i].kind == Q_QUERY)
			ends++;
	for (int i = 0; i < mw->qlen && ends > (due > 0 ? due : 0);) {
		if (mw->queue[i].kind == Q_SYNC) {
			queue_remove(mw, i);
			ends--;
		} else {
			i++;
		}
	}
}

/* The Describe going out names a portal: the server's name buffer takes it, the client's the old one. */
static void name_buffers_swap(struct MaskWire *mw, struct MaskClient *mc)
{
	util_swap_buffers(&mw->described, &mw->described_cap, &mc->desc_portal, &mc->desc_portal_cap);
	mc->desc_is_portal = false;
	mw->has_described = true;
}

void maskwire_track(Server *s, uint8_t type)
{
	if (!maskwire_active(s->worker))
		return;
	struct MaskWire *mw = maskwire_get(s);
	struct MaskClient *mc = s->link ? s->link->mask : NULL;
	mw->has_described = false;
	switch (type) {
	case 'Q':
	case 'F':	/* denied: it travels as a Query */
		queue_push(mw, Q_QUERY);
		if (type == 'Q' && mc) {
			/* judged before this server was assigned (stashed) */
			mw->queue[mw->qlen - 1].hints = mc->query_hints;
			memset(&mc->query_hints, 0, sizeof(StrList));
		}
		break;
	case 'D':
		queue_push(mw, Q_DESC);
		if (mc) {
			mw->queue[mw->qlen - 1].hints = mc->desc_hints;
			memset(&mc->desc_hints, 0, sizeof(StrList));
			if (mc->desc_is_portal)
				name_buffers_swap(mw, mc);
		}
		break;
	case 'S':
		if (!s->copy_in)
			queue_push(mw, Q_SYNC);
		break;
	default:
		break;
	}
}

static void strlist_replace(StrList *dst, const StrList *src)
{
	strlist_free(dst);
	for (int i = 0; i < src->count; i++)
		strlist_add(dst, src->items[i]);
}

static struct MaskClient *mask_client(Client *c)
{
	if (!c->mask)
		c->mask = xcalloc(1, sizeof(*c->mask));
	return c->mask;
}

static NamedHints *namemap_find(NameMap *m, const char *name)
{
	for (int i = 0; i < m->n; i++)
		if (strcmp(m->items[i].name, name) == 0)
			return &m->items[i];
	return NULL;
}

/* name -> a copy of hints; no hints: the name is forgotten. */
static void namemap_set(NameMap *m, const char *name, const StrList *hints)
{
	NamedHints *nh = namemap_find(m, name);
	if (nh && (!hints || hints->count == 0)) {
		free(nh->name);
		strlist_free(&nh->hints);
		*nh = m->items[--m->n];
		return;
	}
	if (!hints || hints->count == 0)
		return;
	if (!nh) {
		m->items = xrealloc(m->items, sizeof(NamedHints) * (size_t)(m->n + 1));
		nh = &m->items[m->n++];
		nh->name = xstrdup(name);
		memset(&nh->hints, 0, sizeof(nh->hints));
	}
	strlist_replace(&nh->hints, hints);
}

static void namemap_free(NameMap *m)
{
	for (int i = 0; i < m->n; i++) {
		free(m->items[i].name);
		strlist_free(&m->items[i].hints);
	}
	free(m->items);
	memset(m, 0, sizeof(*m));
}

void maskwire_client_free(Client *c)
{
	struct MaskClient *mc = c->mask;
	if (!mc)
		return;
	strlist_free(&mc->query_hints);
	strlist_free(&mc->desc_hints);
	free(mc->desc_portal);
	namemap_free(&mc->stmts);
	namemap_free(&mc->portals);
	free(mc);
	c->mask = NULL;
}

void maskwire_set_query_hints(Client *c, Server *s, const StrList *hints)
{
	struct MaskWire *mw = s ? s->mask : NULL;
	for (int i = mw ? mw->qlen - 1 : -1; i >= 0; i--) {
		if (mw->queue[i].kind == Q_QUERY) {
			/* its Query was tracked as it went out, just before this verdict */
			strlist_replace(&mw->queue[i].hints, hints);
			return;
		}
	}
	strlist_replace(&mask_client(c)->query_hints, hints);
}

void maskwire_set_parse_hints(Client *c, const char *name, const StrList *hints)
{
	if (hints->count > 0 || (c->mask && namemap_find(&c->mask->stmts, name)))
		namemap_set(&mask_client(c)->stmts, name, hints);
}

static const StrList *hints_of(NameMap *m, const char *name)
{
	NamedHints *nh = namemap_find(m, name);
	return nh ? &nh->hints : NULL;
}

bool maskwire_note_names(Client *c, uint8_t type, const uint8_t *body, size_t have, size_t len)
{
	PktReader r;
	const char *a, *b;
	uint8_t kind;
	struct MaskClient *mc = mask_client(c);
	proto_reader_init(&r, body, have);
	if (type == 'B') {
		if (have == len && mc->stmts.n == 0 && mc->portals.n == 0)
			return true;	/* no hints to give or forget (and no names cut short) */
		if (!proto_read_cstring(&r, &a) || !proto_read_cstring(&r, &b))
			return have == len;	/* malformed: the server refuses it */
		namemap_set(&mc->portals, a, hints_of(&mc->stmts, b));
		return true;
	}
	strlist_free(&mc->desc_hints);
	mc->desc_is_portal = false;
	if (!proto_read_uint8(&r, &kind) || !proto_read_cstring(&r, &a))
		return have == len;
	if (kind == 'P') {
		size_t n = strlen(a) + 1;
		if (n > mc->desc_portal_cap) {
			mc->desc_portal = xrealloc(mc->desc_portal, n);
			mc->desc_portal_cap = n;
		}
		memcpy(mc->desc_portal, a, n);
		mc->desc_is_portal = true;
	}
	const StrList *h = hints_of(kind == 'S' ? &mc->stmts : &mc->portals, a);
	if (h)
		strlist_replace(&mc->desc_hints, h);
	return true;
}

/*
 * The client's own Describe of this portal went to the server just before:
 * its answer (the same one ours would get, from the same portal at the same
 * point) is already the plan when the rows come, so ours would be redundant.
 */
static bool portal_just_described(const struct MaskWire *mw, const char *portal)
{
	return mw && mw->has_described && strcmp(mw->described, portal) == 0;
}

bool maskwire_execute_passes(const Server *s, const uint8_t *body, size_t len)
{
	PktReader r;
	const char *portal;
	proto_reader_init(&r, body, len);
	return proto_read_cstring(&r, &portal) && portal_just_described(s->mask, portal);
}

void maskwire_before_execute(Server *s, const uint8_t *msg, size_t total, struct evbuffer *out)
{
	PktReader r;
	const char *portal;
	if (!maskwire_active(s->worker))
		return;
	proto_reader_init(&r, msg + PROTO_HEADER_LEN, total - PROTO_HEADER_LEN);
	if (!proto_read_cstring(&r, &portal))
		return;	/* the server will refuse the Execute itself */
	if (portal_just_described(s->mask, portal))
		return;
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_start(&pb, 'D');
	pktbuf_put_uint8(&pb, 'P');
	pktbuf_put_cstring(&pb, portal);
	pktbuf_finish(&pb);
	if (pktbuf_ok(&pb)) {
		evbuffer_add(out, pb.data, pb.len);
		struct MaskWire *mw = maskwire_get(s);
		queue_push(mw, Q_DESC_OURS);
		const StrList *h = s->link && s->link->mask ? hints_of(&s->link->mask->portals, portal)
							    : NULL;
		if (h)
			strlist_replace(&mw->queue[mw->qlen - 1].hints, h);
	}
	pktbuf_free(&pb);
}

void maskwire_on_ready(Server *s)
{
	struct MaskWire *mw = s->mask;
	if (!mw)
		return;
	queue_on_error(mw);
	if (queue_head(mw) == Q_SYNC || queue_head(mw) == Q_QUERY)
		queue_pop(mw);
	queue_drop_ignored_syncs(mw, s->pending_requests - 1);
	mw->has_described = false;
	mw->swallow = false;
	plan_clear(mw);
	Client *c = s->link;
	if (c && c->mask_schema_changed && s->pending_requests <= 1) {
		c->mask_schema_changed = false;
		if (s->pool->mask_catalog)
			catalog_invalidate(s->pool->mask_catalog);
	}
}

/* ---- refusing a result ----------------------------------------------- */

static void maskwire_fail(Server *s, const char *reason)
{
	struct MaskWire *mw = s->mask;
	Client *c = s->link;
	plan_clear(mw);
	if (mw->swallow)
		return;
	mw->swallow = true;
	if (!c || !client_has_socket(c))
		return;
	slog_warning(c, "result refused by masking: %s", reason);
	PktBuf pb;
	pktbuf_init(&pb);
	char *msg = xasprintf("result cannot be masked: %s", reason);
	pktbuf_error(&pb, "ERROR", MASKWIRE_SQLSTATE, msg);
	free(msg);
	if (pktbuf_ok(&pb))
		evbuffer_add(msgio_out(&c->out), pb.data, pb.len);
	pktbuf_free(&pb);
}

/* ---- plans ------------------------------------------------------------ */

/* Does the relation hold a column the keys protect? (A whole-row reference to it leaks.) */
static bool rel_has_protected(const CatalogRel *rel)
{
	const StrList *keys = policy_engine_mask_keys(moat->worker->policy);
	for (int i = 0; i < rel->ncols; i++)
		if (rel->cols[i] && maskguard_column_protected(keys, rel->schema, rel->name, rel->cols[i]))
			return true;
	return false;
}

typedef enum { NAMES_OK, NAMES_STALE, NAMES_REFUSED } NamesResult;

/* Source names of every column (the catalog's); a reason when the result must be refused. */
static NamesResult plan_names(Catalog *cat, const MaskPlan *plan, const char **tables,
			      const char **cols, char *why, size_t whylen)
{
	for (int i = 0; i < plan->ncols; i++) {
		const MaskColumn *mc = &plan->cols[i];
		if (mc->table_oid == 0)
			continue;	/* computed: the statement guard saw its inputs */
		const CatalogRel *rel = catalog_get(cat, mc->table_oid);
		if (!rel)
			return NAMES_STALE;
		if (rel->taint) {
			snprintf(why, whylen, "\"%s.%s\" is a view over the protected column %s",
				 rel->schema, rel->name, rel->taint);
			return NAMES_REFUSED;
		}
		if (mc->attnum == 0 && rel_has_protected(rel)) {
			snprintf(why, whylen, "a whole row of \"%s.%s\"", rel->schema, rel->name);
			return NAMES_REFUSED;
		}
		if (mc->attnum < 0)
			continue;	/* a system column */
		if (mc->attnum > rel->ncols || !rel->cols[mc->attnum - 1])
			return NAMES_STALE;
		tables[i] = rel->qualified;
		cols[i] = rel->cols[mc->attnum - 1];
	}
	return NAMES_OK;
}

static bool plan_start(Server *s, const uint8_t *msg, size_t total, bool ours, StrList *hints);

/*
 * A set operation's columns carry no source: its hints ("k\ttable\tcolumn")
 * name the protected column each position may hold. False: they do not fit.
 */
static bool plan_apply_hints(const MaskPlan *plan, const StrList *hints, const char **tables,
			     char **owned_tables, char **owned)
{
	for (int i = 0; hints && i < hints->count; i++) {
		char *copy = xstrdup(hints->items[i]);
		char *t1 = strchr(copy, '\t');
		char *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
		long k = t2 ? strtol(copy, NULL, 10) : -1;
		if (k < 0 || k >= plan->ncols) {
			free(copy);
			return false;
		}
		*t1 = *t2 = '\0';
		if (plan->cols[k].table_oid == 0 && !tables[k]) {
			tables[k] = owned_tables[k] = xstrdup(t1 + 1);
			owned[k] = xstrdup(t2 + 1);
		}
		free(copy);
	}
	return true;
}

/* A RowDescription into mw->plan (once per description, whoever asks first); false: malformed. */
static bool plan_parse(Server *s, const uint8_t *msg, size_t total)
{
	struct MaskWire *mw = s->mask;
	if (mw->plan_parsed)
		return true;
	plan_clear(mw);
	if (!mask_plan_from_row_description_kept(&mw->plan, &mw->kept, msg + PROTO_HEADER_LEN,
						 total - PROTO_HEADER_LEN)) {
		server_disconnect(s, "invalid RowDescription from server");
		return false;
	}
	mw->plan_parsed = true;
	return true;
}

/* The catalog knows every source: choose the masks, then forward the description. */
#define PLAN_NAMES_ON_STACK 16

static bool plan_finish(Server *s, const uint8_t *msg, size_t total, bool ours, StrList *hints)
{
	struct MaskWire *mw = s->mask;
	Client *c = s->link;
	Catalog *cat = maskwire_catalog(s->pool);
	char why[256];
	why[0] = '\0';
	if (!plan_parse(s, msg, total))
		return false;
	int n = mw->plan.ncols;
	/* names: the catalog's (borrowed) or a hint's (owned); on the stack for most results */
	void *names_on_stack[4 * (PLAN_NAMES_ON_STACK + 1)];
	void **names = names_on_stack;
	if (n <= PLAN_NAMES_ON_STACK)
		memset(names_on_stack, 0, 4 * ((size_t)n + 1) * sizeof(void *));
	else
		names = xcalloc(4 * ((size_t)n + 1), sizeof(void *));
	const char **tables = (const char **)names;
	const char **cols = (const char **)names + (n + 1);
	char **owned_tables = (char **)names + 2 * (n + 1);
	char **owned = (char **)names + 3 * (n + 1);
	NamesResult nr = plan_names(cat, &mw->plan, tables, cols, why, sizeof(why));
	bool ok = false;
	if (nr == NAMES_STALE && !mw->retried) {
		/* a relation or column newer than the cache: look again, once */
		mw->retried = true;
		catalog_invalidate(cat);
		if (names != names_on_stack)
			free(names);
		plan_clear(mw);
		return plan_start(s, msg, total, ours, hints);
	}
	if (nr == NAMES_OK && !plan_apply_hints(&mw->plan, hints, tables, owned_tables, owned)) {
		nr = NAMES_REFUSED;
		snprintf(why, sizeof(why), "a set operation's result does not match its statement");
	}
	for (int i = 0; i < n; i++)
		if (owned[i])
			cols[i] = owned[i];
	if (nr == NAMES_STALE)
		snprintf(why, sizeof(why), "a column's source is not in the catalog");
	else if (nr == NAMES_OK && !c)
		snprintf(why, sizeof(why), "the client is gone");
	else if (nr == NAMES_OK)
		ok = policy_on_columns(s->worker->policy, &c->psession, &mw->plan, tables, cols, why,
				       sizeof(why));
	for (int i = 0; i < n; i++) {
		free(owned_tables[i]);
		free(owned[i]);
	}
	if (names != names_on_stack)
		free(names);
	mw->retried = false;
	if (!ok) {
		maskwire_fail(s, why);
		return true;
	}
	mw->have_plan = true;
	mw->rows_hook = policy_engine_has_on_row(s->worker->policy);
	if (!ours && c && client_has_socket(c))
		evbuffer_add(msgio_out(&c->out), msg, total);
	return true;
}

#define PLAN_OIDS_ON_STACK 32

static bool plan_start(Server *s, const uint8_t *msg, size_t total, bool ours, StrList *hints)
{
	struct MaskWire *mw = s->mask;
	mw->plan_parsed = false;	/* a new description (or the same, looked up again) */
	if (!plan_parse(s, msg, total))
		return false;
	int n = mw->plan.ncols;
	uint32_t stack_oids[PLAN_OIDS_ON_STACK];
	uint32_t *oids = n <= PLAN_OIDS_ON_STACK ? stack_oids : xcalloc((size_t)n, sizeof(uint32_t));
	for (int i = 0; i < n; i++)
		oids[i] = mw->plan.cols[i].table_oid;
	CatalogStatus st = catalog_resolve(maskwire_catalog(s->pool), oids, n, s);
	if (oids != stack_oids)
		free(oids);
	if (st == CATALOG_READY)
		return plan_finish(s, msg, total, ours, hints);
	if (st == CATALOG_FAIL) {
		maskwire_fail(s, "the catalog lookup failed");
		return true;
	}
	mw->pending = xmalloc(total);
	memcpy(mw->pending, msg, total);
	mw->pending_len = total;
	mw->pending_ours = ours;
	if (hints && hints != &mw->pending_hints) {
		strlist_free(&mw->pending_hints);
		mw->pending_hints = *hints;
		memset(hints, 0, sizeof(*hints));
	}
	mw->waiting = true;
	return true;
}

static void maskwire_catalog_done(Server *s, bool ok)
{
	struct MaskWire *mw = s->mask;
	if (!mw || !mw->waiting)
		return;
	mw->waiting = false;
	uint8_t *msg = mw->pending;
	mw->pending = NULL;
	bool alive = true;
	StrList hints = mw->pending_hints;
	memset(&mw->pending_hints, 0, sizeof(hints));
	if (ok)
		alive = plan_finish(s, msg, mw->pending_len, mw->pending_ours, &hints);
	else
		maskwire_fail(s, "the catalog lookup failed or timed out");
	strlist_free(&hints);	/* (empty if a retry parked them again) */
	free(msg);
	if (alive && !maskwire_waiting(s))
		server_resume_reading(s);
}

/* ---- rows, errors, notices ------------------------------------------- */

/* The on_row hooks over one (already masked) DataRow body; the result goes to pb. */
static bool maskwire_row_hook(Server *s, const uint8_t *body, size_t len, PktBuf *pb,
			      char *why, size_t whylen)
{
	const MaskPlan *plan = &s->mask->plan;
	int n = plan->ncols;
	PktReader r;
	int16_t count;
	bool ok = false;
	const uint8_t **vals = xcalloc((size_t)n + 1, sizeof(*vals));
	int32_t *lens = xcalloc((size_t)n + 1, sizeof(*lens));
	bool *binary = xcalloc((size_t)n + 1, sizeof(*binary));
	uint8_t **out = xcalloc((size_t)n + 1, sizeof(*out));
	int32_t *out_len = xcalloc((size_t)n + 1, sizeof(*out_len));
	bool *changed = xcalloc((size_t)n + 1, sizeof(*changed));
	PolicyRow row = { n, vals, lens, binary, out, out_len, changed };
	snprintf(why, whylen, "a malformed row");
	proto_reader_init(&r, body, len);
	if (!proto_read_int16(&r, &count) || count != n)
		goto out;
	for (int i = 0; i < n; i++) {
		binary[i] = plan->cols[i].format != 0;
		if (!proto_read_int32(&r, &lens[i]) || lens[i] < -1 ||
		    (lens[i] >= 0 && !proto_read_bytes(&r, (size_t)lens[i], &vals[i])))
			goto out;
	}
	if (proto_reader_left(&r) != 0)
		goto out;
	if (!policy_on_row(s->worker->policy, &s->link->psession, &row, why, whylen))
		goto out;
	pktbuf_start(pb, 'D');
	pktbuf_put_int16(pb, (int16_t)n);
	for (int i = 0; i < n; i++) {
		int32_t l = changed[i] ? out_len[i] : lens[i];
		const uint8_t *v = changed[i] ? out[i] : vals[i];
		pktbuf_put_int32(pb, l);
		if (l > 0)
			pktbuf_put_bytes(pb, v, (size_t)l);
	}
	pktbuf_finish(pb);
	ok = pktbuf_ok(pb);
	if (!ok)
		snprintf(why, whylen, "the row is too large");
out:
	for (int i = 0; i < n; i++)
		free(out[i]);
	free(vals);
	free(lens);
	free(binary);
	free(out);
	free(out_len);
	free(changed);
	return ok;
}

static bool maskwire_row(Server *s, const uint8_t *body, size_t len, struct evbuffer *out)
{
	struct MaskWire *mw = s->mask;
	Client *c = s->link;
	char why[256] = "a row could not be masked";
	if (!mw->have_plan) {
		maskwire_fail(s, "a row came without a row description");
		return true;
	}
	PolicyRowContext ctx = { s->worker->policy, &c->psession };
	PktBuf masked, hooked;
	pktbuf_init(&masked);
	pktbuf_init(&hooked);
	bool ok = true;
	if (mw->plan.any) {
		ok = mask_rewrite_data_row(&mw->plan, body, len, &masked, policy_mask_custom, &ctx);
		body = masked.data + PROTO_HEADER_LEN;
		len = masked.len - PROTO_HEADER_LEN;
	}
	if (ok && mw->rows_hook)
		ok = maskwire_row_hook(s, body, len, &hooked, why, sizeof(why));
	if (!ok)
		maskwire_fail(s, why);
	else if (mw->rows_hook)
		evbuffer_add(out, hooked.data, hooked.len);
	else
		evbuffer_add(out, masked.data, masked.len);
	pktbuf_free(&masked);
	pktbuf_free(&hooked);
	return true;
}

static bool maskwire_error(Server *s, const MsgHeader *h, const uint8_t *msg, struct evbuffer *out)
{
	const uint8_t *body = msg + PROTO_HEADER_LEN;
	size_t len = msgio_body_len(h);
	Client *c = s->link;
	PktBuf pb;
	pktbuf_init(&pb);
	bool ok = true;
	if (h->type == 'E' && enforce_rewrite_error(s, body, len, &pb) && pktbuf_ok(&pb)) {
		evbuffer_add(out, pb.data, pb.len);
	} else if (c->mask_scrub) {
		pktbuf_reset(&pb);
		if (errscrub_build(h->type, body, len, &pb))
			evbuffer_add(out, pb.data, pb.len);
		else
			ok = false;
	} else {
		evbuffer_add(out, msg, proto_msg_total(h));
	}
	pktbuf_free(&pb);
	if (!ok)
		server_disconnect(s, "invalid error or notice message from server");
	return ok;
}

bool maskwire_inspects(const Server *s, uint8_t type)
{
	const struct MaskWire *mw = s->mask;
	if (!mw)
		return false;
	if (mw->swallow || mw->waiting)
		return true;
	switch (type) {
	case 'T':
	case 'n':
	case 'E':
		return true;
	case 'N':
		return s->link && s->link->mask_scrub;
	case 'D':
		return !mw->have_plan || mw->plan.any || mw->rows_hook;
	default:
		return false;
	}
}

void maskwire_passed(Server *s, uint8_t type)
{
	if (s->mask && (type == 'C' || type == 's' || type == 'I'))
		plan_clear(s->mask);
}

bool maskwire_handle(Server *s, const MsgHeader *h, const uint8_t *msg, struct evbuffer *out)
{
	struct MaskWire *mw = s->mask;
	size_t total = proto_msg_total(h);
	bool ours;
	switch (h->type) {
	case 'T': {
		StrList hints = { 0 };
		if (queue_head(mw) == Q_QUERY || queue_head(mw) == Q_DESC ||
		    queue_head(mw) == Q_DESC_OURS) {
			/* a set operation's hints serve its (only) result description */
			hints = mw->queue[0].hints;
			memset(&mw->queue[0].hints, 0, sizeof(hints));
		}
		int answers = queue_take_describe(mw);
		bool alive = mw->swallow ||
			     plan_start(s, msg, total, answers == ANSWERS_OUR_DESCRIBE, &hints);
		strlist_free(&hints);
		return alive;
	}
	case 'n':
		ours = queue_take_describe(mw) == ANSWERS_OUR_DESCRIBE;
		plan_clear(mw);
		if (!mw->swallow && !ours)
			evbuffer_add(out, msg, total);
		return true;
	case 'D':
		if (mw->swallow)
			return true;
		return maskwire_row(s, msg + PROTO_HEADER_LEN, msgio_body_len(h), out);
	case 'E':
		queue_on_error(mw);
		plan_clear(mw);
		if (mw->swallow)
			return true;
		return maskwire_error(s, h, msg, out);
	case 'N':
		if (mw->swallow)
			return true;
		return maskwire_error(s, h, msg, out);
	case 'C':
	case 's':
	case 'I':
		plan_clear(mw);
		/* fall through */
	default:
		if (!mw->swallow)
			evbuffer_add(out, msg, total);
		return true;
	}
}
