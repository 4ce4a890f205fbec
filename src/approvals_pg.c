#include "approvals_pg.h"
#include "approvals_msg.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PG_RETRY_USEC (2 * USEC_PER_SEC)
#define PG_QUEUE_MAX 1024		/* payloads waiting to be sent; beyond: dropped, logged */
#define PG_TEXT_MAX 3000		/* bytes of a statement in a payload (NOTIFY: < 8000) */
#define PG_FIELD_MAX 400		/* other strings */
#define PG_PAYLOAD_MAX 7900		/* PostgreSQL refuses NOTIFY payloads of 8000 bytes */
#define REMOTE_GRACE_USEC (30 * USEC_PER_SEC)	/* a lost "gone": forget after timeout + this */

typedef enum { PG_DOWN, PG_CONNECTING, PG_READY } PgState;

/* Another replica's waiting approval, as it announced it. */
typedef struct Remote {
	List head;
	ApprovalInfo info;	/* strings below are owned */
	char *replica, *user, *database, *statement, *reason, *policy, *protocol;
	usec_t expires;		/* mono: timeout_at plus a grace period */
} Remote;

typedef struct Payload {
	List head;
	char *text;
} Payload;

typedef struct PgStore {
	Worker *worker;
	char *conninfo;		/* owned; may hold a password */
	char *key;		/* approvals.key_file: every message is signed with it (owned) */
	char replica[96];
	PGconn *conn;
	PgState state;
	bool busy;		/* a command is in flight */
	struct event *io;	/* read (persistent) or connect polling */
	struct event *wr;	/* write readiness while libpq's output is not flushed */
	struct event *retry;
	List queue;		/* Payload, oldest first */
	int queued;
	List remote;		/* Remote */
} PgStore;

static PgStore *store;

static void pg_io_cb(evutil_socket_t fd, short what, void *arg);
static void pg_connect_cb(evutil_socket_t fd, short what, void *arg);

bool approvals_pg_active(void)
{
	return store != NULL;
}

const char *approvals_pg_replica(void)
{
	return store ? store->replica : "";
}

/* ---- connection --------------------------------------------------------- */

static void pg_drop_events(PgStore *st)
{
	if (st->io)
		event_free(st->io);
	if (st->wr)
		event_free(st->wr);
	st->io = st->wr = NULL;
}

static void pg_schedule_retry(PgStore *st)
{
	struct timeval tv = { PG_RETRY_USEC / USEC_PER_SEC, 0 };
	evtimer_add(st->retry, &tv);
}

static void pg_fail(PgStore *st, const char *what)
{
	log_warning("approvals store: %s: %s; retrying", what,
		    st->conn ? PQerrorMessage(st->conn) : "no connection");
	pg_drop_events(st);
	if (st->conn)
		PQfinish(st->conn);
	st->conn = NULL;
	st->state = PG_DOWN;
	st->busy = false;
	pg_schedule_retry(st);
}

static bool pg_watch(PgStore *st, short what, event_callback_fn cb)
{
	pg_drop_events(st);
	st->io = event_new(st->worker->base, PQsocket(st->conn), what, cb, st);
	return st->io && event_add(st->io, NULL) == 0;
}

static void pg_start_connect(PgStore *st)
{
	/* conninfo is expanded as dbname; it may set its own application_name. */
	const char *const keys[] = { "dbname", "fallback_application_name", NULL };
	const char *const vals[] = { st->conninfo, "pgmoat approvals", NULL };
	st->conn = PQconnectStartParams(keys, vals, 1);
	if (!st->conn || PQstatus(st->conn) == CONNECTION_BAD) {
		pg_fail(st, "could not start connecting");
		return;
	}
	st->state = PG_CONNECTING;
	if (!pg_watch(st, EV_WRITE, pg_connect_cb))
		pg_fail(st, "could not watch the connection");
}

static void pg_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	pg_start_connect(arg);
}

static void pg_send_next(PgStore *st);
static void pg_flush(PgStore *st);
static char *pg_sign(const PgStore *st, json_t *j);

/* Connected: LISTEN first, then ask the others to announce their holds. */
static void pg_ready(PgStore *st)
{
	if (PQsetnonblocking(st->conn, 1) != 0 || !pg_watch(st, EV_READ | EV_PERSIST, pg_io_cb)) {
		pg_fail(st, "could not switch to non-blocking mode");
		return;
	}
	st->wr = event_new(st->worker->base, PQsocket(st->conn), EV_WRITE, pg_io_cb, st);
	st->state = PG_READY;
	log_info("approvals store: connected; replica %s listens on %s", st->replica,
		 APPROVALS_PG_CHANNEL);
	if (!PQsendQuery(st->conn, "LISTEN " APPROVALS_PG_CHANNEL)) {
		pg_fail(st, "LISTEN failed");
		return;
	}
	st->busy = true;
	pg_flush(st);
	if (st->state != PG_READY)
		return;
	json_t *j = json_pack("{s:s,s:s}", "op", "sync", "replica", st->replica);
	char *text = pg_sign(st, j);
	json_decref(j);
	if (text) {
		Payload *p = xcalloc(1, sizeof(*p));
		p->text = text;
		list_append(&st->queue, &p->head);
		st->queued++;
	}
	approvals_announce_all();
	pg_send_next(st);
}

static void pg_connect_cb(evutil_socket_t fd, short what, void *arg)
{
	PgStore *st = arg;
	(void)fd;
	(void)what;
	switch (PQconnectPoll(st->conn)) {
	case PGRES_POLLING_READING:
		if (!pg_watch(st, EV_READ, pg_connect_cb))
			pg_fail(st, "could not watch the connection");
		return;
	case PGRES_POLLING_WRITING:
		if (!pg_watch(st, EV_WRITE, pg_connect_cb))
			pg_fail(st, "could not watch the connection");
		return;
	case PGRES_POLLING_OK:
		pg_ready(st);
		return;
	default:
		pg_fail(st, "could not connect");
	}
}

/* ---- sending ------------------------------------------------------------- */

static void pg_flush(PgStore *st)
{
	int r = PQflush(st->conn);
	if (r < 0)
		pg_fail(st, "send failed");
	else if (r > 0 && st->wr)
		event_add(st->wr, NULL);
}

static void pg_send_next(PgStore *st)
{
	if (st->state != PG_READY || st->busy || list_empty(&st->queue))
		return;
	Payload *p = container_of(st->queue.next, Payload, head);
	const char *params[2] = { APPROVALS_PG_CHANNEL, p->text };
	if (!PQsendQueryParams(st->conn, "SELECT pg_notify($1, $2)", 2, NULL, params, NULL, NULL, 0)) {
		pg_fail(st, "NOTIFY failed");
		return;
	}
	list_del(&p->head);
	st->queued--;
	free(p->text);
	free(p);
	st->busy = true;
	pg_flush(st);
}

static char *pg_sign(const PgStore *st, json_t *j)
{
	return j ? approvals_msg_sign(st->key, j, util_now_wall()) : NULL;
}

static void pg_enqueue_text(char *text)
{
	if (!store || !text) {
		free(text);
		return;
	}
	if (store->queued >= PG_QUEUE_MAX) {
		log_warning("approvals store: %d messages waiting; dropping one", store->queued);
		free(text);
		return;
	}
	Payload *p = xcalloc(1, sizeof(*p));
	p->text = text;
	list_append(&store->queue, &p->head);
	store->queued++;
	pg_send_next(store);
}

static void pg_enqueue(json_t *j)
{
	char *text = store ? pg_sign(store, j) : NULL;
	json_decref(j);
	pg_enqueue_text(text);
}

/* A copy of s cut to at most max bytes on a UTF-8 character boundary (jansson needs UTF-8). */
static char *pg_cut(const char *s, size_t max)
{
	size_t n = s ? strlen(s) : 0;
	if (n > max) {
		n = max;
		while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
			n--;
	}
	char *out = xmalloc(n + 1);
	memcpy(out, s ? s : "", n);
	out[n] = '\0';
	return out;
}

/* A "held" message cutting the texts to limit bytes; NULL if it does not fit a NOTIFY. */
static char *pg_held_message(const ApprovalInfo *ai, size_t limit)
{
	char *stmt = pg_cut(ai->statement, limit), *reason = pg_cut(ai->reason, limit / 8);
	char *policy = pg_cut(ai->policy, limit / 8), *user = pg_cut(ai->user, limit / 8);
	char *db = pg_cut(ai->database, limit / 8);
	json_t *j = json_pack("{s:s,s:s,s:I,s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:I}", "op", "held",
			      "replica", store->replica, "id", (json_int_t)ai->id, "client",
			      (json_int_t)ai->client_id, "user", user, "database", db, "statement",
			      stmt, "reason", reason, "policy", policy, "protocol", ai->protocol,
			      "held_at", (json_int_t)ai->held_at, "timeout_at",
			      (json_int_t)ai->timeout_at);
	char *text = pg_sign(store, j);
	json_decref(j);
	free(stmt);
	free(reason);
	free(policy);
	free(user);
	free(db);
	if (text && strlen(text) >= PG_PAYLOAD_MAX) {
		free(text);
		return NULL;
	}
	return text;
}

void approvals_pg_announce(const ApprovalInfo *ai)
{
	if (!store)
		return;
	/* JSON escapes can grow text up to 6 times: shrink until it fits. */
	char *text = NULL;
	for (size_t limit = PG_TEXT_MAX; !text && limit >= 64; limit /= 2)
		text = pg_held_message(ai, limit);
	if (!text)
		log_warning("approvals store: approval %llu could not be announced",
			    (unsigned long long)ai->id);
	pg_enqueue_text(text);
}

void approvals_pg_gone(uint64_t id)
{
	if (store)
		pg_enqueue(json_pack("{s:s,s:s,s:I}", "op", "gone", "replica", store->replica, "id",
				     (json_int_t)id));
}

/* ---- the other replicas --------------------------------------------------- */

static void remote_free(Remote *r)
{
	list_del(&r->head);
	free(r->replica);
	free(r->user);
	free(r->database);
	free(r->statement);
	free(r->reason);
	free(r->policy);
	free(r->protocol);
	free(r);
}

static Remote *remote_find(uint64_t id)
{
	usec_t now = util_now_mono();
	List *item, *tmp;
	list_for_each_safe(item, &store->remote, tmp) {
		Remote *r = container_of(item, Remote, head);
		if (r->expires < now) {
			remote_free(r);	/* its "gone" was lost (the holder died?) */
			continue;
		}
		if (r->info.id == id)
			return r;
	}
	return NULL;
}

bool approvals_pg_knows(uint64_t id)
{
	return store && remote_find(id) != NULL;
}

static void remote_add(json_t *o)
{
	uint64_t id = approvals_msg_id(o, "id");
	if (!id)
		return;
	Remote *old = remote_find(id);
	if (old)
		remote_free(old);
	Remote *r = xcalloc(1, sizeof(*r));
	r->replica = xstrdup(approvals_msg_str(o, "replica"));
	r->user = xstrdup(approvals_msg_str(o, "user"));
	r->database = xstrdup(approvals_msg_str(o, "database"));
	r->statement = xstrdup(approvals_msg_str(o, "statement"));
	r->reason = xstrdup(approvals_msg_str(o, "reason"));
	r->policy = xstrdup(approvals_msg_str(o, "policy"));
	r->protocol = xstrdup(approvals_msg_str(o, "protocol"));
	ApprovalInfo *ai = &r->info;
	ai->id = id;
	ai->client_id = approvals_msg_id(o, "client");
	ai->replica = r->replica;
	ai->user = r->user;
	ai->database = r->database;
	ai->statement = r->statement;
	ai->reason = r->reason;
	ai->policy = r->policy;
	ai->protocol = r->protocol;
	ai->held_at = (usec_t)approvals_msg_id(o, "held_at");
	ai->timeout_at = (usec_t)approvals_msg_id(o, "timeout_at");
	usec_t left = ai->timeout_at - util_now_wall();
	r->expires = util_now_mono() + (left > 0 ? left : 0) + REMOTE_GRACE_USEC;
	list_append(&store->remote, &r->head);
}

void approvals_pg_remote(ApprovalInfo **list, int *count)
{
	if (!store)
		return;
	remote_find(0);	/* drops expired entries */
	usec_t now = util_now_wall();
	List *item;
	list_for_each(item, &store->remote) {
		Remote *r = container_of(item, Remote, head);
		*list = xrealloc(*list, (size_t)(*count + 1) * sizeof(**list));
		(*list)[*count] = r->info;
		(*list)[*count].waited = now - r->info.held_at;
		(*count)++;
	}
}

bool approvals_pg_forward(uint64_t id, bool approve, const char *reviewer, const char *reason)
{
	Remote *r = store ? remote_find(id) : NULL;
	if (!r)
		return false;
	char *who = xasprintf("%s@%s", reviewer, store->replica);
	char *why = pg_cut(reason, PG_FIELD_MAX);
	log_info("approvals store: %s of approval %llu (held by %s) forwarded by %s",
		 approve ? "approval" : "denial", (unsigned long long)id, r->replica, who);
	pg_enqueue(json_pack("{s:s,s:s,s:s,s:I,s:b,s:s,s:s}", "op", "decide", "replica",
			     store->replica, "to", r->replica, "id", (json_int_t)id, "approve",
			     approve, "reviewer", who, "reason", why));
	free(who);
	free(why);
	return true;
}

/* One notification from any replica (our own come back too: ignored). */
static void pg_dispatch(const char *payload)
{
	const char *why = NULL;
	json_t *o = approvals_msg_verify(store->key, payload, strlen(payload), util_now_wall(), &why);
	if (!o) {
		log_warning("approvals store: ignoring a message: %s", why);
		return;
	}
	const char *op = approvals_msg_str(o, "op");
	bool own = strcmp(approvals_msg_str(o, "replica"), store->replica) == 0;
	if (strcmp(op, "held") == 0 && !own) {
		remote_add(o);
	} else if (strcmp(op, "gone") == 0 && !own) {
		Remote *r = remote_find(approvals_msg_id(o, "id"));
		if (r)
			remote_free(r);
	} else if (strcmp(op, "sync") == 0 && !own) {
		approvals_announce_all();
	} else if (strcmp(op, "decide") == 0 && strcmp(approvals_msg_str(o, "to"), store->replica) == 0) {
		json_t *approve = json_object_get(o, "approve");
		approvals_decide_remote(approvals_msg_id(o, "id"), json_is_true(approve), approvals_msg_str(o, "reviewer"),
					approvals_msg_str(o, "reason"));
	}
	json_decref(o);
}

static void pg_io_cb(evutil_socket_t fd, short what, void *arg)
{
	PgStore *st = arg;
	(void)fd;
	if (what & EV_WRITE) {
		pg_flush(st);
		if (st->state != PG_READY)
			return;
	}
	if (!PQconsumeInput(st->conn) || PQstatus(st->conn) == CONNECTION_BAD) {
		pg_fail(st, "connection lost");
		return;
	}
	while (st->busy && !PQisBusy(st->conn)) {
		PGresult *res = PQgetResult(st->conn);
		if (!res) {
			st->busy = false;
			break;
		}
		ExecStatusType status = PQresultStatus(res);
		if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
			log_warning("approvals store: %s", PQresultErrorMessage(res));
		PQclear(res);
	}
	PGnotify *n;
	while ((n = PQnotifies(st->conn)) != NULL) {
		pg_dispatch(n->extra);
		PQfreemem(n);
	}
	pg_send_next(st);
}

/* ---- lifetime -------------------------------------------------------------- */

void approvals_pg_stop(void)
{
	PgStore *st = store;
	if (!st)
		return;
	store = NULL;
	pg_drop_events(st);
	if (st->retry)
		event_free(st->retry);
	if (st->conn)
		PQfinish(st->conn);
	while (!list_empty(&st->queue)) {
		Payload *p = container_of(st->queue.next, Payload, head);
		list_del(&p->head);
		free(p->text);
		free(p);
	}
	while (!list_empty(&st->remote))
		remote_free(container_of(st->remote.next, Remote, head));
	util_free_secret(st->conninfo);
	util_free_secret(st->key);
	free(st);
}

void approvals_pg_configure(Worker *w, const Config *cfg)
{
	bool want = cfg->approvals_store == APPROVALS_STORE_POSTGRES && cfg->approvals_conninfo &&
		    cfg->approvals_key;
	if (store && want && strcmp(store->conninfo, cfg->approvals_conninfo) == 0 &&
	    strcmp(store->key, cfg->approvals_key) == 0)
		return;
	approvals_pg_stop();
	if (!want)
		return;
	PgStore *st = xcalloc(1, sizeof(*st));
	st->worker = w;
	st->conninfo = xstrdup(cfg->approvals_conninfo);
	st->key = xstrdup(cfg->approvals_key);
	char host[64] = "localhost";
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	snprintf(st->replica, sizeof(st->replica), "%s:%d", host, cfg->listen_port);
	list_init(&st->queue);
	list_init(&st->remote);
	st->retry = evtimer_new(w->base, pg_retry_cb, st);
	store = st;
	pg_start_connect(st);
}
