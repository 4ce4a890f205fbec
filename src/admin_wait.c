/*
 * Console commands answered later: PAUSE answers once no server of the
 * paused databases is linked, tested or logging in; WAIT_CLOSE once no
 * server still has to close; SUSPEND once every buffer is flushed (or
 * suspend_timeout passed). Such clients wait on a list that a short timer
 * re-checks; the queries they pipeline meanwhile are queued and answered
 * after, in order.
 */
#include "admin_int.h"
#include "admin.h"
#include "pool.h"
#include "suspend.h"

#include <stdlib.h>
#include <string.h>

/* How often waiting PAUSE / WAIT_CLOSE commands re-check their condition. */
#define ADMIN_WAIT_POLL_USEC 50000

static const char *const admin_wait_tags[] = { "PAUSE", "WAIT_CLOSE", "SUSPEND" };
typedef enum { WAIT_PENDING, WAIT_DONE, WAIT_CANCELLED } WaitOutcome;

/* An admin client whose PAUSE or WAIT_CLOSE is answered when its condition holds. */
typedef struct AdminWait {
	List head;		/* in admin_waits */
	uint64_t client_id;	/* looked up each time: the client may be gone */
	AdminWaitKind kind;
	char *db;		/* owned; NULL: every database */
	usec_t deadline;	/* SUSPEND: suspend_timeout (monotonic); 0: none */
	StrList queued;		/* queries the client sent meanwhile, answered after, in order */
} AdminWait;

static List admin_waits = { &admin_waits, &admin_waits };
static struct event *admin_wait_ev;

static bool pool_matches(const Pool *p, const char *db)
{
	return !p->db->is_admin && (!db || strcmp(p->db->name, db) == 0);
}

/* PAUSE is done when no server is linked, being tested or logging in (pgbouncer's rule). */
static bool admin_pause_reached(const char *db)
{
	List *item;

	list_for_each(item, &moat->pools) {
		const Pool *p = container_of(item, Pool, head);
		if (!pool_matches(p, db))
			continue;
		if (!list_empty(&p->active_servers) || !list_empty(&p->tested_servers) ||
		    !list_empty(&p->login_servers))
			return false;
	}
	return true;
}

static bool list_has_close_needed(const List *servers)
{
	const List *item;

	for (item = servers->next; item != servers; item = item->next) {
		if (container_of(item, Server, head)->close_needed)
			return true;
	}
	return false;
}

/* WAIT_CLOSE is done when no server still carries close_needed. */
static bool admin_close_reached(const char *db)
{
	List *item;

	list_for_each(item, &moat->pools) {
		const Pool *p = container_of(item, Pool, head);
		if (!pool_matches(p, db))
			continue;
		if (list_has_close_needed(&p->active_servers) || list_has_close_needed(&p->idle_servers) ||
		    list_has_close_needed(&p->used_servers) || list_has_close_needed(&p->tested_servers) ||
		    list_has_close_needed(&p->login_servers))
			return false;
	}
	return true;
}

static bool admin_pause_in_force(const char *db)
{
	const Database *d;
	List *item;

	if (!db)
		return moat->state == MOAT_PAUSED;
	list_for_each(item, &moat->databases) {
		d = container_of(item, Database, head);
		if (strcmp(d->name, db) == 0)
			return d->paused;
	}
	return false;
}

/* SUSPEND is done when every buffer is flushed, or, past suspend_timeout, by force. */
static WaitOutcome admin_suspend_check(const AdminWait *w)
{
	if (moat->state != MOAT_SUSPENDED)
		return WAIT_CANCELLED;
	if (suspend_buffers_flushed())
		return WAIT_DONE;
	if (w->deadline && util_now_mono() >= w->deadline) {
		suspend_drop_unflushed();
		return WAIT_DONE;
	}
	return WAIT_PENDING;
}

static WaitOutcome admin_wait_check(const AdminWait *w)
{
	if (w->kind == ADMIN_WAIT_SUSPEND)
		return admin_suspend_check(w);
	if (w->kind == ADMIN_WAIT_CLOSE)
		return admin_close_reached(w->db) ? WAIT_DONE : WAIT_PENDING;
	if (!admin_pause_in_force(w->db))
		return WAIT_CANCELLED;	/* someone resumed before the servers were released */
	return admin_pause_reached(w->db) ? WAIT_DONE : WAIT_PENDING;
}

static AdminWait *admin_wait_of(const Client *c)
{
	List *item;

	list_for_each(item, &admin_waits) {
		AdminWait *w = container_of(item, AdminWait, head);
		if (w->client_id == c->id)
			return w;
	}
	return NULL;
}

static void admin_wait_free(AdminWait *w)
{
	list_del(&w->head);
	free(w->db);
	strlist_free(&w->queued);
	free(w);
}

static void admin_wait_poll(evutil_socket_t fd, short what, void *arg);

static void admin_wait_timer_update(void)
{
	struct timeval tv = { 0, ADMIN_WAIT_POLL_USEC };

	if (list_empty(&admin_waits)) {
		if (admin_wait_ev)
			event_del(admin_wait_ev);
		return;
	}
	if (!admin_wait_ev)
		admin_wait_ev = event_new(moat->worker->base, -1, EV_PERSIST, admin_wait_poll, NULL);
	if (admin_wait_ev && !event_pending(admin_wait_ev, EV_TIMEOUT, NULL))
		event_add(admin_wait_ev, &tv);
}

static void admin_wait_add(Client *c, AdminWaitKind kind, const char *db)
{
	AdminWait *w = xcalloc(1, sizeof(*w));

	w->client_id = c->id;
	w->kind = kind;
	w->db = db ? xstrdup(db) : NULL;
	if (kind == ADMIN_WAIT_SUSPEND && moat->cfg->suspend_timeout > 0)
		w->deadline = util_now_mono() + moat->cfg->suspend_timeout;
	list_append(&admin_waits, &w->head);
	admin_wait_timer_update();
}

/* Answer the waiting command, then the queries queued behind it. */
static void admin_wait_finish(Client *c, AdminWait *w, WaitOutcome outcome)
{
	StrList queued = w->queued;
	const char *tag = admin_wait_tags[w->kind];

	w->queued.items = NULL;
	w->queued.count = 0;
	admin_wait_free(w);
	if (outcome == WAIT_DONE)
		admin_ready(c, tag);
	else
		admin_error(c, "%s cancelled: the pooler was resumed", tag);
	for (int i = 0; i < queued.count && c->state != CL_FREE; i++)
		admin_handle_query(c, queued.items[i]);
	strlist_free(&queued);
}

static void admin_wait_poll(evutil_socket_t fd, short what, void *arg)
{
	List *item, *tmp;

	(void)fd;
	(void)what;
	(void)arg;
	list_for_each_safe(item, &admin_waits, tmp) {
		AdminWait *w = container_of(item, AdminWait, head);
		Client *c = admin_find_client(w->client_id);
		WaitOutcome outcome;

		if (!c) {
			admin_wait_free(w);
			continue;
		}
		outcome = admin_wait_check(w);
		if (outcome != WAIT_PENDING)
			admin_wait_finish(c, w, outcome);
	}
	admin_wait_timer_update();
}

/* Extended protocol: a command that would wait is undone and refused. */
static void admin_refuse_wait(Client *c, AdminWaitKind kind, const char *db)
{
	if (kind == ADMIN_WAIT_SUSPEND)
		suspend_set(false);
	else if (kind == ADMIN_WAIT_PAUSE && !db)
		pool_pause_all(false);
	else if (kind == ADMIN_WAIT_PAUSE && !pool_pause_db(db, false))
		log_warning("PAUSE: database %s vanished", db);
	admin_error_code(c, "0A000", "%s has to wait: use the simple query protocol for it",
			 admin_wait_tags[kind]);
}

void admin_wait_or_answer(Client *c, AdminWaitKind kind, const char *db)
{
	bool reached = kind == ADMIN_WAIT_PAUSE ? admin_pause_reached(db)
		       : kind == ADMIN_WAIT_CLOSE ? admin_close_reached(db)
		       : suspend_buffers_flushed();

	if (reached)
		admin_ready(c, admin_wait_tags[kind]);
	else if (admin_capturing())	/* an answer that comes later has no place in a Parse/Execute flow */
		admin_refuse_wait(c, kind, db);
	else
		admin_wait_add(c, kind, db);
}

bool admin_wait_queue(Client *c, const char *sql)
{
	AdminWait *w = admin_wait_of(c);

	if (w)
		strlist_add(&w->queued, sql);
	return w != NULL;
}

bool admin_wait_pending(const Client *c)
{
	return admin_wait_of(c) != NULL;
}

void admin_wait_cleanup(void)
{
	List *item, *tmp;

	list_for_each_safe(item, &admin_waits, tmp)
		admin_wait_free(container_of(item, AdminWait, head));
	if (admin_wait_ev) {
		event_free(admin_wait_ev);
		admin_wait_ev = NULL;
	}
}
