/*
 * auth_query lookups over libpq, non-blocking, on the worker's event loop.
 *
 * An AuthConn is one libpq connection as auth_user to one database, with a
 * FIFO of lookups. Each lookup belongs to a waiting client (CL_LOGIN); the
 * client points at its lookup so that a client leaving early unhooks it.
 * Every operation (connect, one query) has a deadline of
 * server_connect_timeout; past it, or on any libpq error, the connection is
 * closed and every queued client is told the lookup failed.
 */
#include "auth_query.h"
#include "client.h"
#include "pool.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* When server_connect_timeout is 0 (no limit), lookups still must end. */
#define AUTH_QUERY_DEFAULT_TIMEOUT (15 * USEC_PER_SEC)

typedef struct AuthLookup {
	List head;		/* in its AuthConn's queue, or detached while in flight */
	Client *client;		/* NULL once the client left (answer dropped) */
	char *user_name;	/* owned: the $1 of the query */
} AuthLookup;

typedef struct AuthConn {
	List head;		/* in auth_conns */
	char *db_name;		/* pgmoat database (connect target) */
	char *auth_user;
	PGconn *pg;		/* NULL: not connected */
	bool connected;		/* PQconnectPoll finished */
	struct event *io_ev;	/* on PQsocket(pg); re-made when the socket changes */
	int io_fd;
	short io_what;
	struct event *timer_ev;	/* deadline of the operation in progress */
	List queue;		/* AuthLookup, FIFO */
	AuthLookup *current;	/* query in flight */
	PGresult *answer;	/* first result of the query in flight */
	bool stale;		/* opened under an older config: re-open when idle */
} AuthConn;

/* All lookup connections; they serve logins of any pool, like the admin console's objects. */
static List auth_conns = { &auth_conns, &auth_conns };

static void auth_conn_kick(AuthConn *ac);
static void auth_conn_io_cb(evutil_socket_t fd, short what, void *arg);

const char *auth_query_user_for(const Database *db)
{
	if (db && db->cfg && db->cfg->auth_user)
		return db->cfg->auth_user;
	return moat->cfg->auth_user;
}

/* ------------------------------------------------------------ requests */

static void request_free(AuthLookup *rq)
{
	free(rq->user_name);
	free(rq);
}

/* Hand the answer to the client (if still there) and forget the request. */
static void request_finish(AuthLookup *rq, bool ok, const char *secret)
{
	Client *c = rq->client;

	if (c)
		c->auth_query_req = NULL;
	request_free(rq);
	if (c)
		client_auth_query_done(c, ok, secret);
}

void auth_query_cancel(Client *c)
{
	AuthLookup *rq = c->auth_query_req;

	if (!rq)
		return;
	c->auth_query_req = NULL;
	rq->client = NULL;
	if (!list_empty(&rq->head)) {	/* still queued: nobody will answer it */
		list_del(&rq->head);
		request_free(rq);
	}
}

/* ----------------------------------------------------------- connection */

static void auth_conn_watch(AuthConn *ac, short what)
{
	int fd = PQsocket(ac->pg);

	if (ac->io_ev && (fd != ac->io_fd || what != ac->io_what)) {
		event_free(ac->io_ev);
		ac->io_ev = NULL;
	}
	if (!ac->io_ev && fd >= 0) {
		ac->io_ev = event_new(moat->worker->base, fd, what | EV_PERSIST, auth_conn_io_cb, ac);
		ac->io_fd = fd;
		ac->io_what = what;
		if (ac->io_ev)
			event_add(ac->io_ev, NULL);
	}
}

static void auth_conn_arm_timer(AuthConn *ac)
{
	usec_t t = moat->cfg->server_connect_timeout > 0 ? moat->cfg->server_connect_timeout
							  : AUTH_QUERY_DEFAULT_TIMEOUT;
	struct timeval tv = { .tv_sec = t / USEC_PER_SEC, .tv_usec = t % USEC_PER_SEC };

	event_add(ac->timer_ev, &tv);
}

static void auth_conn_close(AuthConn *ac)
{
	if (ac->io_ev)
		event_free(ac->io_ev);
	ac->io_ev = NULL;
	ac->io_fd = -1;
	event_del(ac->timer_ev);
	PQclear(ac->answer);
	ac->answer = NULL;
	if (ac->pg)
		PQfinish(ac->pg);
	ac->pg = NULL;
	ac->connected = false;
	ac->stale = false;
}

/* The connection failed: every client waiting on it gets a failed lookup. */
static void auth_conn_fail(AuthConn *ac, const char *why)
{
	List *item, *tmp;

	log_warning("auth_query as %s in %s failed: %s", ac->auth_user, ac->db_name, why);
	auth_conn_close(ac);
	if (ac->current) {
		AuthLookup *rq = ac->current;
		ac->current = NULL;
		request_finish(rq, false, NULL);
	}
	list_for_each_safe(item, &ac->queue, tmp) {
		AuthLookup *rq = container_of(item, AuthLookup, head);
		list_del(&rq->head);
		request_finish(rq, false, NULL);
	}
}

/* libpq's message without its trailing newline, for logs. */
static const char *auth_conn_error(AuthConn *ac, char *buf, size_t len)
{
	const char *msg = ac->pg ? PQerrorMessage(ac->pg) : "out of memory";

	snprintf(buf, len, "%s", msg);
	buf[strcspn(buf, "\n")] = '\0';
	return buf;
}

/* auth_user's password: the entry's own when it forces that user, else auth_file. */
static bool auth_conn_password(const AuthConn *ac, const DbConfig *d, const char **out)
{
	const Userlist *ul = moat->cfg->userlist;
	const UserlistEntry *ue = ul ? userlist_find(ul, ac->auth_user) : NULL;

	*out = NULL;
	if (d->user && d->password && strcmp(d->user, ac->auth_user) == 0)
		*out = d->password;
	else if (ue)
		*out = ue->secret;
	/* libpq needs the password itself: a stored hash cannot log in through it */
	return !*out || userlist_secret_kind(*out) == SECRET_PLAIN;
}

static void auth_conn_start(AuthConn *ac)
{
	Database *db = pool_find_database(ac->db_name);
	const DbConfig *d = db ? db->cfg : NULL;
	char port[16], buf[256];
	const char *password;
	const char *keys[10], *vals[10];
	int n = 0;

	if (!d) {
		auth_conn_fail(ac, "the database is gone");
		return;
	}
	if (!auth_conn_password(ac, d, &password)) {
		auth_conn_fail(ac, "auth_user's secret in auth_file must be a plain password");
		return;
	}
	snprintf(port, sizeof(port), "%d", d->port > 0 ? d->port : 5432);
	keys[n] = "host", vals[n++] = d->host ? d->host : "";
	keys[n] = "port", vals[n++] = port;
	keys[n] = "dbname", vals[n++] = d->dbname ? d->dbname : d->name;
	keys[n] = "user", vals[n++] = ac->auth_user;
	keys[n] = "password", vals[n++] = password;
	keys[n] = "application_name", vals[n++] = "pgmoat auth_query";
	/* pinned, overriding PGOPTIONS: pg_catalog first, pg_temp last */
	keys[n] = "options", vals[n++] = "-c search_path=pg_catalog,pg_temp";
	keys[n] = "sslmode", vals[n++] = "disable";
	keys[n] = NULL, vals[n] = NULL;
	ac->pg = PQconnectStartParams(keys, vals, 0);
	if (!ac->pg || PQstatus(ac->pg) == CONNECTION_BAD || PQsetnonblocking(ac->pg, 1) != 0) {
		auth_conn_fail(ac, auth_conn_error(ac, buf, sizeof(buf)));
		return;
	}
	auth_conn_arm_timer(ac);
	auth_conn_watch(ac, EV_WRITE);
}

static void auth_conn_continue_connect(AuthConn *ac)
{
	char buf[256];

	switch (PQconnectPoll(ac->pg)) {
	case PGRES_POLLING_READING:
		auth_conn_watch(ac, EV_READ);
		return;
	case PGRES_POLLING_WRITING:
		auth_conn_watch(ac, EV_WRITE);
		return;
	case PGRES_POLLING_OK:
		ac->connected = true;
		event_del(ac->timer_ev);
		auth_conn_watch(ac, EV_READ);	/* notice a server that goes away while idle */
		auth_conn_kick(ac);
		return;
	default:
		auth_conn_fail(ac, auth_conn_error(ac, buf, sizeof(buf)));
	}
}

/* ---------------------------------------------------------------- query */

static void auth_conn_send(AuthConn *ac)
{
	AuthLookup *rq = container_of(list_first(&ac->queue), AuthLookup, head);
	const char *param = rq->user_name;
	char buf[256];
	int flushed;

	list_del(&rq->head);
	ac->current = rq;
	/* $1 travels as a parameter: the user name is never spliced into SQL */
	if (!PQsendQueryParams(ac->pg, moat->cfg->auth_query, 1, NULL, &param, NULL, NULL, 0)) {
		auth_conn_fail(ac, auth_conn_error(ac, buf, sizeof(buf)));
		return;
	}
	auth_conn_arm_timer(ac);
	flushed = PQflush(ac->pg);
	if (flushed < 0)
		auth_conn_fail(ac, auth_conn_error(ac, buf, sizeof(buf)));
	else
		auth_conn_watch(ac, flushed ? EV_READ | EV_WRITE : EV_READ);
}

/* One row: (name, secret). No row or a NULL secret: no such user (not an error). */
static bool auth_answer_secret(const PGresult *res, const char **secret, char *err, size_t errlen)
{
	*secret = NULL;
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		snprintf(err, errlen, "%s", PQresultErrorMessage(res));
		err[strcspn(err, "\n")] = '\0';
		return false;
	}
	if (PQnfields(res) != 2) {
		snprintf(err, errlen, "auth_query must return 2 columns, not %d", PQnfields(res));
		return false;
	}
	if (PQntuples(res) > 1) {
		snprintf(err, errlen, "auth_query returned %d rows for one user", PQntuples(res));
		return false;
	}
	if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 1))
		*secret = PQgetvalue(res, 0, 1);
	return true;
}

/* The query in flight ended: answer its client, go on with the queue. */
static void auth_conn_query_done(AuthConn *ac)
{
	AuthLookup *rq = ac->current;
	const char *secret = NULL;
	char err[256] = "";
	bool ok = ac->answer && auth_answer_secret(ac->answer, &secret, err, sizeof(err));

	event_del(ac->timer_ev);
	ac->current = NULL;
	if (!ok)
		log_warning("auth_query for user \"%s\" failed: %s", rq->user_name,
			    err[0] ? err : "no result");
	request_finish(rq, ok, secret);
	PQclear(ac->answer);
	ac->answer = NULL;
	auth_conn_kick(ac);
}

static void auth_conn_read(AuthConn *ac)
{
	char buf[256];
	PGresult *res;

	if (!PQconsumeInput(ac->pg)) {
		if (ac->current || !list_empty(&ac->queue))
			auth_conn_fail(ac, auth_conn_error(ac, buf, sizeof(buf)));
		else
			auth_conn_close(ac);	/* an idle connection closed by the server */
		return;
	}
	while (ac->current && !PQisBusy(ac->pg)) {
		res = PQgetResult(ac->pg);
		if (!res) {
			auth_conn_query_done(ac);
			return;
		}
		if (!ac->answer)
			ac->answer = res;
		else
			PQclear(res);
	}
}

static void auth_conn_io_cb(evutil_socket_t fd, short what, void *arg)
{
	AuthConn *ac = arg;
	char buf[256];

	(void)fd;
	if (!ac->connected) {
		auth_conn_continue_connect(ac);
		return;
	}
	if (what & EV_WRITE) {
		int flushed = PQflush(ac->pg);
		if (flushed < 0) {
			auth_conn_fail(ac, auth_conn_error(ac, buf, sizeof(buf)));
			return;
		}
		if (flushed == 0)
			auth_conn_watch(ac, EV_READ);
	}
	if (what & EV_READ)
		auth_conn_read(ac);
}

static void auth_conn_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	auth_conn_fail(arg, "timed out (server_connect_timeout)");
}

/* Connect, or send the next queued query when idle. */
static void auth_conn_kick(AuthConn *ac)
{
	if (ac->current)
		return;
	if (ac->pg && (ac->stale || PQstatus(ac->pg) == CONNECTION_BAD))
		auth_conn_close(ac);
	if (list_empty(&ac->queue))
		return;
	if (!ac->pg)
		auth_conn_start(ac);
	else if (ac->connected)
		auth_conn_send(ac);
}

static AuthConn *auth_conn_get(const char *db_name, const char *auth_user)
{
	List *item;
	AuthConn *ac;

	list_for_each(item, &auth_conns) {
		ac = container_of(item, AuthConn, head);
		if (strcmp(ac->db_name, db_name) == 0 && strcmp(ac->auth_user, auth_user) == 0)
			return ac;
	}
	ac = xcalloc(1, sizeof(*ac));
	ac->db_name = xstrdup(db_name);
	ac->auth_user = xstrdup(auth_user);
	ac->io_fd = -1;
	ac->timer_ev = evtimer_new(moat->worker->base, auth_conn_timeout_cb, ac);
	if (!ac->timer_ev)
		abort();	/* libevent out of memory: as xmalloc */
	list_init(&ac->queue);
	list_append(&auth_conns, &ac->head);
	return ac;
}

void auth_query_start(Client *c, Database *db, const char *auth_user)
{
	AuthConn *ac = auth_conn_get(db->name, auth_user);
	AuthLookup *rq = xcalloc(1, sizeof(*rq));

	rq->client = c;
	rq->user_name = xstrdup(c->user_name);
	c->auth_query_req = rq;
	list_append(&ac->queue, &rq->head);
	auth_conn_kick(ac);
}

void auth_query_reload(void)
{
	List *item;

	list_for_each(item, &auth_conns) {
		AuthConn *ac = container_of(item, AuthConn, head);
		if (!ac->pg)
			continue;
		ac->stale = true;
		auth_conn_kick(ac);	/* closes it now unless a query is in flight */
	}
}

/* At exit: the client, if any, forgets the request; then it is freed. */
static void auth_query_cancel_request(AuthLookup *rq)
{
	if (rq->client)
		rq->client->auth_query_req = NULL;
	request_free(rq);
}

void auth_query_cleanup(void)
{
	List *item, *tmp;

	list_for_each_safe(item, &auth_conns, tmp) {
		AuthConn *ac = container_of(item, AuthConn, head);
		List *ri, *rt;
		auth_conn_close(ac);
		if (ac->current)
			auth_query_cancel_request(ac->current);
		list_for_each_safe(ri, &ac->queue, rt)
			auth_query_cancel_request(container_of(ri, AuthLookup, head));
		event_free(ac->timer_ev);
		list_del(&ac->head);
		free(ac->db_name);
		free(ac->auth_user);
		free(ac);
	}
}
