/*
 * OID -> names lookups on a catalog connection of the pool's own (see
 * catalog.h). One connection per pool, opened on first need and kept; one
 * lookup in flight at a time, for every OID wanted so far; a waiter that
 * arrives during a lookup is served by the next one.
 */
#include "catalog.h"
#include "maskguard.h"
#include "server.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/*
 * Relations and their columns ('c' rows), then, for views, every base column
 * they read through any chain of views ('v' rows): a view's rewrite rule
 * depends on each column it reads (pg_depend, refobjsubid = attnum). Every
 * lookup also refreshes the names of all views that read a column named like
 * a protected one ('t' rows), for the statement-time guard.
 */
static const char catalog_sql[] =
	"WITH RECURSIVE want AS (SELECT unnest($1::oid[]) AS oid), "
	"deps(view, rel, att) AS ("
	" SELECT r.ev_class, d.refobjid, d.refobjsubid FROM pg_rewrite r"
	" JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid"
	" AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class"
	" WHERE r.ev_class IN (SELECT oid FROM want)"
	" UNION"
	" SELECT deps.view, d.refobjid, d.refobjsubid FROM deps"
	" JOIN pg_rewrite r ON r.ev_class = deps.rel"
	" JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid"
	" AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class) "
	"SELECT 'c', c.oid::text, n.nspname::text, c.relname::text, c.relkind::text,"
	" a.attnum::text, a.attname::text"
	" FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
	" LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
	" WHERE c.oid IN (SELECT oid FROM want) "
	"UNION ALL "
	"SELECT 'v', deps.view::text, n.nspname::text, c.relname::text, '', '', a.attname::text"
	" FROM deps JOIN pg_class c ON c.oid = deps.rel"
	" JOIN pg_namespace n ON n.oid = c.relnamespace"
	" JOIN pg_attribute a ON a.attrelid = deps.rel AND a.attnum = deps.att"
	" WHERE deps.att > 0 "
	"UNION ALL "
	"SELECT 't', vn.nspname::text || '.' || v.relname::text, n.nspname::text, c.relname::text,"
	" '', '', a.attname::text"
	" FROM (WITH RECURSIVE alldeps(view, rel, att) AS ("
	"  SELECT r.ev_class, d.refobjid, d.refobjsubid FROM pg_rewrite r"
	"  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid"
	"  AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class"
	"  UNION"
	"  SELECT alldeps.view, d.refobjid, d.refobjsubid FROM alldeps"
	"  JOIN pg_rewrite r ON r.ev_class = alldeps.rel"
	"  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid"
	"  AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class)"
	"  SELECT * FROM alldeps) ad"
	" JOIN pg_class v ON v.oid = ad.view JOIN pg_namespace vn ON vn.oid = v.relnamespace"
	" JOIN pg_class c ON c.oid = ad.rel JOIN pg_namespace n ON n.oid = c.relnamespace"
	" JOIN pg_attribute a ON a.attrelid = ad.rel AND a.attnum = ad.att"
	" WHERE ad.att > 0 AND a.attname = ANY($2::text[])";

#define CATALOG_MAX_COLS 1600	/* PostgreSQL's MaxHeapAttributeNumber */

typedef enum { CAT_CLOSED, CAT_CONNECTING, CAT_IDLE, CAT_BUSY } CatState;

typedef struct OidSet {
	uint32_t *oids;
	int n;
} OidSet;

struct Catalog {
	Pool *pool;
	CatalogDoneFn done;
	PGconn *conn;
	CatState state;
	struct event *io_ev;
	struct event *timer_ev;
	CatalogRel *rels;
	int nrels;
	OidSet queued;		/* wanted, not yet asked */
	OidSet asked;		/* in the lookup in flight */
	Server **waiters;	/* called back when the lookup in flight ends */
	int nwaiters;
	Server **next_waiters;	/* arrived during it: served by the next one */
	int nnext;
	/* views over protected columns, by name (every lookup refreshes them) */
	CatalogViewsFn views_done;
	StrList tainted;	/* "schema.view" and "view" */
	StrList tainted_next;	/* being collected by the lookup in flight */
	bool reused;		/* the connection served a lookup before (the server may have
				 * closed it since: idle_session_timeout, a restart) */
	bool retrying;		/* the lookup in flight is the retry on a fresh connection */
	bool views_loaded;
	bool views_failed;	/* the last lookup failed */
	usec_t views_fetched;
};

static void catalog_io_cb(evutil_socket_t fd, short what, void *arg);
static void catalog_timeout_cb(evutil_socket_t fd, short what, void *arg);
static bool catalog_send_query(Catalog *cat);
static bool catalog_connect(Catalog *cat);
static void catalog_finish(Catalog *cat, bool ok);

/* Start a lookup of the queued OIDs for the current waiters. */
static bool catalog_start(Catalog *cat)
{
	struct timeval tv = { CATALOG_TIMEOUT / USEC_PER_SEC, 0 };
	evtimer_add(cat->timer_ev, &tv);
	return cat->state == CAT_CLOSED ? catalog_connect(cat) : catalog_send_query(cat);
}

Catalog *catalog_new(Pool *pool, CatalogDoneFn done, CatalogViewsFn views_done)
{
	Catalog *cat = xcalloc(1, sizeof(*cat));
	cat->pool = pool;
	cat->done = done;
	cat->views_done = views_done;
	cat->timer_ev = evtimer_new(moat->worker->base, catalog_timeout_cb, cat);
	return cat;
}

static void rel_free(CatalogRel *r)
{
	free(r->schema);
	free(r->name);
	free(r->qualified);
	for (int i = 0; i < r->ncols; i++)
		free(r->cols[i]);
	free(r->cols);
	free(r->taint);
	memset(r, 0, sizeof(*r));
}

static void catalog_close(Catalog *cat)
{
	if (cat->io_ev) {
		event_free(cat->io_ev);
		cat->io_ev = NULL;
	}
	if (cat->conn)
		PQfinish(cat->conn);
	cat->conn = NULL;
	cat->state = CAT_CLOSED;
}

void catalog_invalidate(Catalog *cat)
{
	cat->views_fetched = 0;	/* stale, kept until the refresh lands */
	for (int i = 0; i < cat->nrels; i++)
		rel_free(&cat->rels[i]);
	free(cat->rels);
	cat->rels = NULL;
	cat->nrels = 0;
}

void catalog_free(Catalog *cat)
{
	if (!cat)
		return;
	catalog_close(cat);
	if (cat->timer_ev)
		event_free(cat->timer_ev);
	catalog_invalidate(cat);
	free(cat->queued.oids);
	free(cat->asked.oids);
	free(cat->waiters);
	free(cat->next_waiters);
	strlist_free(&cat->tainted);
	strlist_free(&cat->tainted_next);
	free(cat);
}

static CatalogRel *catalog_find(const Catalog *cat, uint32_t oid)
{
	for (int i = 0; i < cat->nrels; i++)
		if (cat->rels[i].oid == oid)
			return &cat->rels[i];
	return NULL;
}

const CatalogRel *catalog_get(const Catalog *cat, uint32_t oid)
{
	const CatalogRel *r = catalog_find(cat, oid);
	return r && r->relkind ? r : NULL;
}

static bool catalog_fresh(const Catalog *cat, uint32_t oid, usec_t now)
{
	const CatalogRel *r = catalog_find(cat, oid);
	return r && now - r->fetched < CATALOG_TTL;
}

static void oidset_add(OidSet *s, uint32_t oid)
{
	for (int i = 0; i < s->n; i++)
		if (s->oids[i] == oid)
			return;
	s->oids = xrealloc(s->oids, sizeof(uint32_t) * (size_t)(s->n + 1));
	s->oids[s->n++] = oid;
}

static void waiters_add(Server ***list, int *n, Server *s)
{
	for (int i = 0; i < *n; i++)
		if ((*list)[i] == s)
			return;
	*list = xrealloc(*list, sizeof(Server *) * (size_t)(*n + 1));
	(*list)[(*n)++] = s;
}

static void waiters_remove(Server **list, int *n, Server *s)
{
	for (int i = 0; i < *n; i++) {
		if (list[i] == s) {
			list[i] = list[--*n];
			return;
		}
	}
}

void catalog_forget_waiter(Catalog *cat, Server *s)
{
	waiters_remove(cat->waiters, &cat->nwaiters, s);
	waiters_remove(cat->next_waiters, &cat->nnext, s);
}

/* ---- connection ----------------------------------------------------- */

static bool catalog_wait_io(Catalog *cat, short what)
{
	int fd = PQsocket(cat->conn);
	if (fd < 0)
		return false;
	if (cat->io_ev)
		event_free(cat->io_ev);
	cat->io_ev = event_new(moat->worker->base, fd, what, catalog_io_cb, cat);
	return cat->io_ev && event_add(cat->io_ev, NULL) == 0;
}

static bool catalog_connect(Catalog *cat)
{
	const DbConfig *d = cat->pool->db->cfg;
	char port[16];
	snprintf(port, sizeof(port), "%d", d->port > 0 ? d->port : 5432);
	const char *secret = server_pool_secret(cat->pool);
	const char *keys[] = { "host", "port", "dbname", "user", "password", "application_name",
			       "sslmode", NULL };
	const char *host = d->host;
	struct stat st;
	if (!host)	/* as server.c: the Debian socket directory, else /tmp */
		host = stat("/var/run/postgresql", &st) == 0 ? "/var/run/postgresql" : "/tmp";
	const char *vals[] = { host, port, d->dbname ? d->dbname : d->name,
			       cat->pool->server_user,
			       secret && userlist_secret_kind(secret) == SECRET_PLAIN ? secret : NULL,
			       "pgmoat catalog", "prefer", NULL };
	/* libpq stops at the first NULL value: give empty strings instead */
	for (int i = 0; keys[i]; i++)
		if (!vals[i])
			vals[i] = "";
	cat->conn = PQconnectStartParams(keys, vals, 0);
	if (!cat->conn || PQstatus(cat->conn) == CONNECTION_BAD) {
		log_warning("masking catalog: cannot connect: %s",
			    cat->conn ? PQerrorMessage(cat->conn) : "out of memory");
		catalog_close(cat);
		return false;
	}
	cat->state = CAT_CONNECTING;
	cat->reused = false;
	return catalog_wait_io(cat, EV_WRITE);
}

/* ---- results -------------------------------------------------------- */

static CatalogRel *catalog_slot(Catalog *cat, uint32_t oid)
{
	CatalogRel *r = catalog_find(cat, oid);
	if (r) {
		rel_free(r);
	} else {
		cat->rels = xrealloc(cat->rels, sizeof(CatalogRel) * (size_t)(cat->nrels + 1));
		r = &cat->rels[cat->nrels++];
		memset(r, 0, sizeof(*r));
	}
	r->oid = oid;
	r->fetched = util_now_mono();
	return r;
}

static void rel_set_col(CatalogRel *r, long attnum, const char *name)
{
	if (attnum < 1 || attnum > CATALOG_MAX_COLS)
		return;
	if (attnum > r->ncols) {
		r->cols = xrealloc(r->cols, sizeof(char *) * (size_t)attnum);
		for (long i = r->ncols; i < attnum; i++)
			r->cols[i] = NULL;
		r->ncols = (int)attnum;
	}
	free(r->cols[attnum - 1]);
	r->cols[attnum - 1] = xstrdup(name);
}

static void rel_taint(CatalogRel *r, const char *schema, const char *table, const char *column)
{
	PolicyEngine *e = moat->worker->policy;
	if (r->taint || !e ||
	    !maskguard_column_protected(policy_engine_mask_keys(e), schema, table, column))
		return;
	r->taint = xasprintf("%s.%s.%s", schema, table, column);
}

/* A view reading a column named like a protected one: is that column protected? */
static void catalog_take_view(Catalog *cat, const PGresult *res, int i)
{
	PolicyEngine *e = moat->worker->policy;
	const char *view = PQgetvalue(res, i, 1);
	if (!e || !maskguard_column_protected(policy_engine_mask_keys(e), PQgetvalue(res, i, 2),
					      PQgetvalue(res, i, 3), PQgetvalue(res, i, 6)))
		return;
	if (!strlist_contains(&cat->tainted_next, view))
		strlist_add(&cat->tainted_next, view);
	const char *dot = strchr(view, '.');
	if (dot && !strlist_contains(&cat->tainted_next, dot + 1))
		strlist_add(&cat->tainted_next, dot + 1);
}

static void catalog_take_rows(Catalog *cat, const PGresult *res)
{
	for (int i = 0; i < cat->asked.n; i++)
		catalog_slot(cat, cat->asked.oids[i]);	/* absent OIDs stay known as absent */
	for (int i = 0; i < PQntuples(res); i++) {
		const char *tag = PQgetvalue(res, i, 0);
		if (tag[0] == 't') {
			catalog_take_view(cat, res, i);
			continue;
		}
		CatalogRel *r = catalog_find(cat, (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10));
		if (!r)
			continue;
		if (tag[0] == 'v') {
			rel_taint(r, PQgetvalue(res, i, 2), PQgetvalue(res, i, 3), PQgetvalue(res, i, 6));
			continue;
		}
		if (!r->name) {
			r->schema = xstrdup(PQgetvalue(res, i, 2));
			r->name = xstrdup(PQgetvalue(res, i, 3));
			r->qualified = xasprintf("%s.%s", r->schema, r->name);
			r->relkind = PQgetvalue(res, i, 4)[0];
		}
		if (!PQgetisnull(res, i, 5))
			rel_set_col(r, strtol(PQgetvalue(res, i, 5), NULL, 10), PQgetvalue(res, i, 6));
	}
}

/* ---- the lookup ----------------------------------------------------- */

/*
 * A lookup failed on a connection that had served before: the server may
 * have closed it while idle. Ask again once on a fresh one before failing
 * anybody. True when the retry is under way.
 */
static bool catalog_retry(Catalog *cat)
{
	if (!cat->reused || cat->retrying)
		return false;
	cat->retrying = true;
	for (int i = 0; i < cat->asked.n; i++)
		oidset_add(&cat->queued, cat->asked.oids[i]);
	free(cat->asked.oids);
	cat->asked.oids = NULL;
	cat->asked.n = 0;
	strlist_free(&cat->tainted_next);
	catalog_close(cat);
	struct timeval tv = { CATALOG_TIMEOUT / USEC_PER_SEC, 0 };
	evtimer_add(cat->timer_ev, &tv);
	if (catalog_connect(cat))
		return true;
	cat->retrying = false;
	return false;
}

static void catalog_finish(Catalog *cat, bool ok)
{
	if (!ok && catalog_retry(cat))
		return;
	cat->retrying = false;
	evtimer_del(cat->timer_ev);
	free(cat->asked.oids);
	cat->asked.oids = NULL;
	cat->asked.n = 0;
	if (!ok) {
		catalog_close(cat);
		cat->views_failed = true;
	} else {
		cat->state = CAT_IDLE;
		cat->reused = true;
		strlist_free(&cat->tainted);
		cat->tainted = cat->tainted_next;
		memset(&cat->tainted_next, 0, sizeof(cat->tainted_next));
		cat->views_loaded = true;
		cat->views_failed = false;
		cat->views_fetched = util_now_mono();
	}
	strlist_free(&cat->tainted_next);
	/* callbacks may start the next lookup: work on a detached list */
	Server **w = cat->waiters;
	int n = cat->nwaiters;
	cat->waiters = cat->next_waiters;
	cat->nwaiters = cat->nnext;
	cat->next_waiters = NULL;
	cat->nnext = 0;
	for (int i = 0; i < n; i++)
		cat->done(w[i], ok);
	free(w);
	if (cat->nwaiters > 0 && cat->state != CAT_BUSY && cat->state != CAT_CONNECTING &&
	    !catalog_start(cat))
		catalog_finish(cat, false);
	if (cat->views_done)
		cat->views_done(cat->pool);
}

/* {"a","b"}: the protected column names, as a text[] literal. */
static char *catalog_column_names(void)
{
	PolicyEngine *e = moat->worker->policy;
	const StrList *keys = e ? policy_engine_mask_keys(e) : NULL;
	size_t cap = 3;
	for (int i = 0; keys && i < keys->count; i++)
		cap += strlen(keys->items[i]) * 2 + 3;
	char *out = xmalloc(cap);
	char *p = out;
	*p++ = '{';
	for (int i = 0; keys && i < keys->count; i++) {
		const char *col = strrchr(keys->items[i], '.');
		col = col ? col + 1 : keys->items[i];
		if (p > out + 1)
			*p++ = ',';
		*p++ = '"';
		for (; *col; col++) {
			if (*col == '"' || *col == '\\')
				*p++ = '\\';
			*p++ = *col;
		}
		*p++ = '"';
	}
	*p++ = '}';
	*p = '\0';
	return out;
}

static bool catalog_send_query(Catalog *cat)
{
	char *arr = xstrdup("{");
	cat->asked = cat->queued;
	cat->queued.oids = NULL;
	cat->queued.n = 0;
	for (int i = 0; i < cat->asked.n; i++) {
		char *next = xasprintf("%s%s%u", arr, i ? "," : "", cat->asked.oids[i]);
		free(arr);
		arr = next;
	}
	char *param = xasprintf("%s}", arr);
	free(arr);
	char *names = catalog_column_names();
	const char *vals[2] = { param, names };
	bool ok = PQsendQueryParams(cat->conn, catalog_sql, 2, NULL, vals, NULL, NULL, 0) == 1;
	free(param);
	free(names);
	if (!ok) {
		log_warning("masking catalog: cannot send the lookup: %s", PQerrorMessage(cat->conn));
		return false;
	}
	cat->state = CAT_BUSY;
	int f = PQflush(cat->conn);
	return f >= 0 && catalog_wait_io(cat, f == 1 ? EV_READ | EV_WRITE : EV_READ);
}

static void catalog_read_results(Catalog *cat)
{
	if (!PQconsumeInput(cat->conn)) {
		log_warning("masking catalog: lookup failed: %s", PQerrorMessage(cat->conn));
		catalog_finish(cat, false);
		return;
	}
	if (PQflush(cat->conn) < 0) {
		catalog_finish(cat, false);
		return;
	}
	bool ok = true;
	while (!PQisBusy(cat->conn)) {
		PGresult *res = PQgetResult(cat->conn);
		if (!res) {
			catalog_finish(cat, ok);
			return;
		}
		if (PQresultStatus(res) == PGRES_TUPLES_OK) {
			catalog_take_rows(cat, res);
		} else {
			log_warning("masking catalog: lookup failed: %s", PQresultErrorMessage(res));
			ok = false;
		}
		PQclear(res);
	}
	if (!catalog_wait_io(cat, EV_READ))
		catalog_finish(cat, false);
}

static void catalog_poll_connect(Catalog *cat)
{
	switch (PQconnectPoll(cat->conn)) {
	case PGRES_POLLING_READING:
		if (!catalog_wait_io(cat, EV_READ))
			catalog_finish(cat, false);
		return;
	case PGRES_POLLING_WRITING:
		if (!catalog_wait_io(cat, EV_WRITE))
			catalog_finish(cat, false);
		return;
	case PGRES_POLLING_OK:
		if (PQsetnonblocking(cat->conn, 1) != 0 || !catalog_send_query(cat))
			catalog_finish(cat, false);
		return;
	default:
		log_warning("masking catalog: cannot connect: %s", PQerrorMessage(cat->conn));
		catalog_finish(cat, false);
	}
}

static void catalog_io_cb(evutil_socket_t fd, short what, void *arg)
{
	Catalog *cat = arg;
	if (cat->state == CAT_CONNECTING)
		catalog_poll_connect(cat);
	else if (cat->state == CAT_BUSY)
		catalog_read_results(cat);
	msgio_flusher_run(&moat->worker->flusher);
}

static void catalog_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	Catalog *cat = arg;
	log_warning("masking catalog: lookup timed out");
	catalog_finish(cat, false);
	msgio_flusher_run(&moat->worker->flusher);
}

CatalogStatus catalog_resolve(Catalog *cat, const uint32_t *oids, int n, Server *s)
{
	usec_t now = util_now_cached();	/* (a TTL of seconds: the callback's instant will do) */
	bool missing = false;
	for (int i = 0; i < n; i++) {
		if (oids[i] == 0 || catalog_fresh(cat, oids[i], now))
			continue;
		oidset_add(&cat->queued, oids[i]);
		missing = true;
	}
	if (!missing)
		return CATALOG_READY;
	if (cat->state == CAT_BUSY || cat->state == CAT_CONNECTING) {
		waiters_add(&cat->next_waiters, &cat->nnext, s);
		return CATALOG_WAIT;
	}
	waiters_add(&cat->waiters, &cat->nwaiters, s);
	if (catalog_start(cat))
		return CATALOG_WAIT;
	/* nobody else waits (nothing was in flight): fail s here, not through done */
	evtimer_del(cat->timer_ev);
	catalog_close(cat);
	cat->nwaiters = 0;
	free(cat->queued.oids);
	free(cat->asked.oids);
	memset(&cat->queued, 0, sizeof(cat->queued));
	memset(&cat->asked, 0, sizeof(cat->asked));
	return CATALOG_FAIL;
}

void catalog_refresh_views(Catalog *cat)
{
	if (cat->state == CAT_BUSY || cat->state == CAT_CONNECTING)
		return;	/* the lookup in flight refreshes them */
	if (!catalog_start(cat))
		catalog_finish(cat, false);
}

const StrList *catalog_tainted_views(Catalog *cat, CatalogViews *state)
{
	usec_t now = util_now_cached();	/* (a TTL of seconds: the callback's instant will do) */
	if (!cat->views_loaded)
		*state = cat->views_failed ? CATALOG_VIEWS_FAILED : CATALOG_VIEWS_NONE;
	else
		*state = CATALOG_VIEWS_OK;
	if (cat->views_loaded && now - cat->views_fetched >= CATALOG_TTL &&
	    cat->state != CAT_BUSY && cat->state != CAT_CONNECTING)
		catalog_refresh_views(cat);
	return &cat->tainted;
}
