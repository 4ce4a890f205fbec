/*
 * Pools: matching waiting clients with servers, within the limits.
 *
 * A server moves IDLE -> ACTIVE when a client takes it and back when the
 * client's transaction (transaction mode), statement (statement mode) or
 * session (session mode) ends. A server that has sat idle longer than
 * server_check_delay moves to USED and is checked (TESTED) before reuse.
 */
#include "pool.h"
#include "catalog.h"
#include "client.h"
#include "server.h"
#include "prepared.h"
#include "admin.h"

#include <stdlib.h>
#include <string.h>

static DbConfig *dbconfig_copy(const DbConfig *src, const char *name)
{
	DbConfig *d = xcalloc(1, sizeof(*d));
	*d = *src;
	d->next = NULL;
	d->name = xstrdup(name);
#define DUP(f) d->f = src->f ? xstrdup(src->f) : NULL
	DUP(host);
	DUP(dbname);
	DUP(user);
	DUP(password);
	DUP(auth_user);
	DUP(client_encoding);
	DUP(datestyle);
	DUP(timezone);
	DUP(application_name);
	DUP(connect_query);
	DUP(src_file);
	DUP(tls_sslmode);
	DUP(tls_ca_file);
	DUP(tls_cert_file);
	DUP(tls_key_file);
#undef DUP
	d->roles = config_roles_copy(src->roles);	/* jwt */
	if (!d->dbname)
		d->dbname = xstrdup(name);
	return d;
}

static void dbconfig_free(DbConfig *d)
{
	if (!d)
		return;
	free(d->name);
	free(d->host);
	free(d->dbname);
	free(d->user);
	util_free_secret(d->password);
	free(d->auth_user);
	free(d->client_encoding);
	free(d->datestyle);
	free(d->timezone);
	free(d->application_name);
	free(d->connect_query);
	free(d->src_file);
	free(d->tls_sslmode);
	free(d->tls_ca_file);
	free(d->tls_cert_file);
	free(d->tls_key_file);
	config_roles_free(d->roles);	/* jwt */
	free(d);
}

static Database *database_lookup(const char *name)
{
	List *item;
	list_for_each(item, &moat->databases) {
		Database *db = container_of(item, Database, head);
		if (!db->dead && strcmp(db->name, name) == 0)
			return db;
	}
	return NULL;
}

static Database *database_create(const char *name, const DbConfig *cfg, bool autodb)
{
	Database *db = xcalloc(1, sizeof(*db));
	db->name = xstrdup(name);
	db->cfg = dbconfig_copy(cfg, name);
	db->is_autodb = autodb;
	list_append(&moat->databases, &db->head);
	return db;
}

Database *pool_find_database(const char *name)
{
	Database *db = database_lookup(name);
	if (db)
		return db;
	const DbConfig *cfg = config_find_db(moat->cfg, name);
	if (!cfg)
		return NULL;
	return database_create(name, cfg, strcmp(cfg->name, "*") == 0);
}

PoolUser *pool_get_user(const char *name)
{
	List *item;
	list_for_each(item, &moat->users) {
		PoolUser *u = container_of(item, PoolUser, head);
		if (strcmp(u->name, name) == 0)
			return u;
	}
	PoolUser *u = xcalloc(1, sizeof(*u));
	u->name = xstrdup(name);
	list_append(&moat->users, &u->head);
	return u;
}

/*
 * conn8: a login's pool. The database remembers the last plain pool a login
 * got, which nearly every next login of it wants: one name compared instead
 * of a walk over the users and another over the pools.
 */
Pool *pool_get_for_login(Database *db, const char *user, const char *role)
{
	Pool *p = db->login_pool;
	if (p && !role && !p->jwt_role && strcmp(p->user->name, user) == 0)
		return p;
	p = pool_get_for_role(db, pool_get_user(user), role);
	if (!role)
		db->login_pool = p;
	return p;
}

Pool *pool_get(Database *db, PoolUser *user)
{
	return pool_get_for_role(db, user, NULL);
}

/* jwt: a role pool never shares servers with another role's pool, nor with a plain one. */
static bool pool_role_is(const Pool *p, const char *role)
{
	return role ? p->jwt_role && strcmp(p->jwt_role, role) == 0 : !p->jwt_role;
}

Pool *pool_get_for_role(Database *db, PoolUser *user, const char *role)
{
	List *item;
	list_for_each(item, &moat->pools) {
		Pool *p = container_of(item, Pool, head);
		if (p->db == db && p->user == user && pool_role_is(p, role))
			return p;
	}
	Pool *p = xcalloc(1, sizeof(*p));
	p->db = db;
	p->user = user;
	p->jwt_role = role ? xstrdup(role) : NULL;
	p->server_user = xstrdup(user->name);
	list_init(&p->active_clients);
	list_init(&p->waiting_clients);
	list_init(&p->waiting_login_clients);
	list_init(&p->active_servers);
	list_init(&p->idle_servers);
	list_init(&p->used_servers);
	list_init(&p->tested_servers);
	list_init(&p->login_servers);
	list_append(&moat->pools, &p->head);
	return p;
}

static PoolMode pool_mode_from_config(const Pool *pool)
{
	const UserConfig *uc = config_find_user(moat->cfg, pool->user->name);
	if (uc && uc->pool_mode >= 0)
		return (PoolMode)uc->pool_mode;
	if (pool->db->cfg && pool->db->cfg->pool_mode >= 0)
		return (PoolMode)pool->db->cfg->pool_mode;
	return moat->cfg->pool_mode;
}

PoolMode pool_mode_refresh(Pool *pool)
{
	/* the lookup by user name only after a change */
	pool->mode = pool_mode_from_config(pool);
	pool->mode_epoch = moat->cfg_epoch;
	return pool->mode;
}

int pool_effective_size(const Pool *pool)
{
	if (pool->db->cfg && pool->db->cfg->pool_size >= 0)
		return pool->db->cfg->pool_size;
	return moat->cfg->default_pool_size;
}

static int pool_min_size(const Pool *pool)
{
	if (pool->db->cfg && pool->db->cfg->min_pool_size >= 0)
		return pool->db->cfg->min_pool_size;
	return moat->cfg->min_pool_size;
}

static int pool_reserve_size(const Pool *pool)
{
	if (pool->db->cfg && pool->db->cfg->reserve_pool >= 0)
		return pool->db->cfg->reserve_pool;
	return moat->cfg->reserve_pool_size;
}

static int db_max_connections(const Database *db)
{
	if (db->cfg && db->cfg->max_db_connections >= 0)
		return db->cfg->max_db_connections;
	return moat->cfg->max_db_connections;
}

static int user_max_connections(const PoolUser *u)
{
	const UserConfig *uc = config_find_user(moat->cfg, u->name);
	if (uc && uc->max_user_connections >= 0)
		return uc->max_user_connections;
	return moat->cfg->max_user_connections;
}

int pool_count_servers(const Pool *pool)
{
	return list_count(&pool->active_servers) + list_count(&pool->idle_servers) +
	       list_count(&pool->used_servers) + list_count(&pool->tested_servers) +
	       list_count(&pool->login_servers);
}

bool pool_paused(const Pool *pool)
{
	return moat->state == MOAT_PAUSED || moat->state == MOAT_SUSPENDED || pool->db->paused;
}

void pool_max_wait(const Pool *pool, usec_t now, usec_t *max_wait_us)
{
	*max_wait_us = 0;
	List *first = list_first((List *)&pool->waiting_clients);
	if (first) {
		Client *c = container_of(first, Client, head);
		*max_wait_us = now - c->wait_start;
	}
}

/* The oldest waiting client waited past reserve_pool_timeout: allow the reserve. */
static bool pool_reserve_allowed(const Pool *pool)
{
	List *first = list_first((List *)&pool->waiting_clients);
	if (!first)
		return false;
	Client *c = container_of(first, Client, head);
	return util_now_mono() - c->wait_start >= moat->cfg->reserve_pool_timeout;
}

static bool pool_login_retry_blocked(const Pool *pool)
{
	return pool->last_connect_failed &&
	       util_now_mono() - pool->last_connect_failed < moat->cfg->server_login_retry;
}

/* No client of the pool waits for a server (nor for its login to finish). */
static bool pool_nobody_waits(const Pool *pool)
{
	return list_empty(&pool->waiting_clients) && list_empty(&pool->waiting_login_clients);
}

/*
 * At max_db_connections / max_user_connections, a waiting client may take the
 * slot of an idle server in a sibling pool (same database, or same user), as
 * pgbouncer does; otherwise one idle pool could starve the others for good.
 */
static bool pool_evict_idle_server(Pool *pool, bool same_db)
{
	if (pool_nobody_waits(pool))
		return false;
	List *item;
	list_for_each(item, &moat->pools) {
		Pool *other = container_of(item, Pool, head);
		bool sibling = same_db ? other->db == pool->db : other->user == pool->user;
		if (other == pool || !sibling)
			continue;
		List *si = list_empty(&other->used_servers) ? other->idle_servers.prev
							    : other->used_servers.prev;
		if (si == &other->idle_servers)
			continue;
		server_disconnect(container_of(si, Server, head), "closing an idle server to make room (%s)",
				  same_db ? "max_db_connections" : "max_user_connections");
		return true;
	}
	return false;
}

/* May this pool open one more server connection now? */
static bool pool_may_connect(Pool *pool)
{
	int total = pool_count_servers(pool);
	int limit = pool_effective_size(pool);
	if (total >= limit) {
		if (total >= limit + pool_reserve_size(pool) || !pool_reserve_allowed(pool))
			return false;
		log_info("pool %s/%s: taking a connection from the reserve pool", pool->db->name,
			 pool->user->name);
	}
	int dbmax = db_max_connections(pool->db);
	if (dbmax > 0 && pool->db->connection_count >= dbmax &&
	    !pool_evict_idle_server(pool, true))
		return false;
	int usermax = user_max_connections(pool->user);
	if (usermax > 0 && pool->user->connection_count >= usermax &&
	    !pool_evict_idle_server(pool, false))
		return false;
	if (!list_empty(&pool->login_servers) && list_count(&pool->login_servers) >=
	    list_count(&pool->waiting_clients) + list_count(&pool->waiting_login_clients))
		return false;	/* enough connections already on their way */
	return !pool_login_retry_blocked(pool);
}

static int pool_demand(const Pool *pool)
{
	return list_count(&pool->waiting_clients) +
	       (list_empty(&pool->waiting_login_clients) ? 0 : 1);
}

static void pool_open_connections(Pool *pool)
{
	/* A failed connect re-enters pool_maintain(); one opener at a time. */
	static bool opening;
	if (opening || pool->db->is_admin || moat->state == MOAT_DRAINING)
		return;
	/* The common case on the data path: nobody waits and min_pool_size is met. */
	if (pool_nobody_waits(pool) && pool_min_size(pool) == 0)
		return;
	opening = true;
	int wanted = pool_demand(pool) - list_count(&pool->login_servers);
	int min = pool_min_size(pool);
	int have = pool_count_servers(pool);
	if (min > 0 && have < min && (have > 0 || pool->welcome_ready) && wanted < min - have)
		wanted = min - have;
	while (wanted-- > 0 && pool_may_connect(pool)) {
		if (!server_connect(pool))
			break;
	}
	opening = false;
}

/* Idle longer than server_check_delay (0: always) and not checked since its last use. */
bool pool_server_needs_check(const Server *s)
{
	const char *q = moat->cfg->server_check_query;
	return q && *q && !s->fresh &&
	       util_now_cached() - s->idle_since >= moat->cfg->server_check_delay;
}

static void pool_start_check(Server *s)
{
	server_set_state(s, SV_TESTED);
	s->fresh = true;
	if (!server_send_internal_query(s, moat->cfg->server_check_query))
		server_disconnect(s, "could not send server_check_query");
}

/* Hand the warmest idle server to the oldest waiting client. */
static bool pool_assign_one(Pool *pool)
{
	List *ci = list_first(&pool->waiting_clients);
	if (!ci)
		return false;
	List *si, *tmp;
	list_for_each_safe(si, &pool->idle_servers, tmp) {
		Server *s = container_of(si, Server, head);
		/* A cancel still on its way must not hit the next client's query. */
		if (s->cancels_in_flight > 0)
			continue;
		if (pool_server_needs_check(s)) {
			pool_start_check(s);
			continue;
		}
		client_on_server_assigned(container_of(ci, Client, head), s);
		return true;
	}
	return false;
}

/* Servers the janitor moved to USED are checked before reuse. */
static void pool_check_used_servers(Pool *pool)
{
	List *item, *tmp;
	if (list_empty(&pool->used_servers) || list_empty(&pool->waiting_clients))
		return;
	int need = list_count(&pool->waiting_clients) - list_count(&pool->idle_servers) -
		   list_count(&pool->tested_servers);
	list_for_each_safe(item, &pool->used_servers, tmp) {
		if (need-- <= 0)
			break;
		pool_start_check(container_of(item, Server, head));
	}
}

static void pool_maintain_once(Pool *pool)
{
	if (pool_paused(pool))
		return;
	pool_check_used_servers(pool);
	while (pool_assign_one(pool))
		;
	pool_open_connections(pool);
}

void pool_maintain(Pool *pool)
{
	if (pool->in_maintain) {
		pool->maintain_again = true;
		return;
	}
	pool->in_maintain = true;
	do {
		pool->maintain_again = false;
		pool_maintain_once(pool);
	} while (pool->maintain_again);
	pool->in_maintain = false;
}

/*
 * conn7: with nobody waiting and no min_pool_size, a pass has nothing to do
 * (pool_maintain_once: checks, assignments and connects all serve waiters),
 * and whoever starts waiting asks for one itself. A client that leaves after
 * its one transaction then schedules no pass.
 */
void pool_schedule_maintain(Pool *pool)
{
	if (pool_nobody_waits(pool) && pool_min_size(pool) == 0)
		return;
	pool->maintain_pending = true;
	event_active(moat->worker->maintain_ev, EV_TIMEOUT, 0);
}

static void pool_maintain_cb(evutil_socket_t fd, short what, void *arg)
{
	List *item, *tmp;
	list_for_each_safe(item, &moat->pools, tmp) {
		Pool *p = container_of(item, Pool, head);
		if (p->maintain_pending) {
			p->maintain_pending = false;
			pool_maintain(p);
		}
	}
}

bool pool_maintain_setup(Worker *w)
{
	w->maintain_ev = event_new(w->base, -1, 0, pool_maintain_cb, NULL);
	return w->maintain_ev != NULL;
}

void pool_maintain_teardown(Worker *w)
{
	if (w->maintain_ev)
		event_free(w->maintain_ev);
	w->maintain_ev = NULL;
}

void pool_maintain_all(void)
{
	List *item, *tmp;
	list_for_each_safe(item, &moat->pools, tmp)
		pool_maintain(container_of(item, Pool, head));
}

/*
 * The common case of a request: nobody waits before this client and the
 * warmest idle server is fit to go. It is what pool_maintain() would do, minus
 * the trip through the waiting list and the pool-wide pass.
 */
static bool pool_assign_at_once(Client *c)
{
	Pool *pool = c->pool;
	List *si = list_first(&pool->idle_servers);
	if (!si || !pool_nobody_waits(pool) ||
	    pool_paused(pool) || pool->in_maintain || pool_min_size(pool) > 0)
		return false;
	Server *s = container_of(si, Server, head);
	if (s->cancels_in_flight > 0 || pool_server_needs_check(s))
		return false;	/* pool_maintain() passes it over, or checks it first */
	client_on_server_assigned(c, s);
	return true;
}

void pool_request_server(Client *c)
{
	Pool *pool = c->pool;
	if (pool_login_retry_blocked(pool) && list_empty(&pool->idle_servers) &&
	    list_empty(&pool->used_servers) && list_empty(&pool->active_servers)) {
		client_disconnect(c, "08P01",
				  "server login has been failing, try again later (server_login_retry)");
		return;
	}
	c->wait_start = util_now_cached();
	if (pool_assign_at_once(c))
		return;
	client_set_state(c, CL_WAITING);
	pool_maintain(pool);
}

/* The server is clean after the client's transaction; run the reset if the mode wants one. */
static bool server_needs_reset(const Server *s, PoolMode mode)
{
	const char *q = moat->cfg->server_reset_query;
	if (!q || !*q)
		return false;
	return mode == POOL_SESSION || moat->cfg->server_reset_query_always;
}

/* pgbouncer: server_lifetime = 0 means a connection is used once, then closed. */
static bool server_expired(const Server *s)
{
	return util_now_cached() - s->connect_mono >= moat->cfg->server_lifetime;
}

void pool_release_server(Server *s)
{
	Client *c = s->link;
	Pool *pool = s->pool;
	if (c) {
		c->link = NULL;
		s->link = NULL;
	}
	if (s->close_needed || server_expired(s) || pool->db->dead) {
		server_disconnect(s, s->close_needed ? "close_needed" : "server_lifetime");
	} else if (!s->ready || s->tx_status != 'I' || s->unsynced || s->in_copy) {
		server_disconnect(s, "released while not idle: closing instead of reusing");
	} else if (server_needs_reset(s, pool_effective_mode(pool))) {
		server_set_state(s, SV_TESTED);
		prepared_server_reset(s);	/* DISCARD ALL: no statement survives */
		if (!server_send_internal_query(s, moat->cfg->server_reset_query))
			server_disconnect(s, "could not send server_reset_query");
	} else {
		server_set_state(s, SV_IDLE);
		/*
		 * Nobody waits: nothing for the pass to do that the janitor's
		 * (min_pool_size, surplus, timeouts) does not do anyway.
		 */
		if (pool_nobody_waits(pool))
			return;
	}
	pool_maintain(pool);
}

static Database *database_by_name_any(const char *name)
{
	return name ? database_lookup(name) : NULL;
}

void pool_pause_all(bool pause)
{
	moat->state = pause ? MOAT_PAUSED : MOAT_RUNNING;
	if (!pause)
		pool_maintain_all();
}

bool pool_pause_db(const char *name, bool pause)
{
	Database *db = database_by_name_any(name);
	if (!db)
		return false;
	db->paused = pause;
	if (!pause)
		pool_maintain_all();
	return true;
}

bool pool_disable_db(const char *name, bool disable)
{
	Database *db = database_by_name_any(name);
	if (!db)
		return false;
	db->disabled = disable;
	return true;
}

static void pool_for_each_server(Pool *pool, void (*fn)(Server *))
{
	List *lists[] = { &pool->active_servers, &pool->idle_servers, &pool->used_servers,
			  &pool->tested_servers, &pool->login_servers };
	for (size_t i = 0; i < ARRAY_SIZE(lists); i++) {
		List *item, *tmp;
		list_for_each_safe(item, lists[i], tmp)
			fn(container_of(item, Server, head));
	}
}

static void server_mark_close(Server *s)
{
	s->close_needed = true;
	if (s->state == SV_IDLE || s->state == SV_USED)
		server_disconnect(s, "RECONNECT");
}

static void server_kill(Server *s)
{
	s->close_needed = true;	/* never back into the pool, even if its client left it clean */
	if (s->link)
		client_disconnect(s->link, "08P01", "database removed or killed by admin");
	else
		server_disconnect(s, "KILL");
}

static void pool_kill_clients(Pool *pool)
{
	List *lists[] = { &pool->active_clients, &pool->waiting_clients,
			  &pool->waiting_login_clients };
	for (size_t i = 0; i < ARRAY_SIZE(lists); i++) {
		List *item, *tmp;
		list_for_each_safe(item, lists[i], tmp)
			client_disconnect(container_of(item, Client, head), "08P01",
					  "database removed or killed by admin");
	}
}

void pool_reconnect_db(const char *name)
{
	List *item, *tmp;
	list_for_each_safe(item, &moat->pools, tmp) {
		Pool *p = container_of(item, Pool, head);
		if (!name || strcmp(p->db->name, name) == 0)
			pool_for_each_server(p, server_mark_close);
	}
}

void pool_kill_db(const char *name)
{
	List *item, *tmp;
	list_for_each_safe(item, &moat->pools, tmp) {
		Pool *p = container_of(item, Pool, head);
		if (p->db->is_admin || (name && strcmp(p->db->name, name) != 0))
			continue;
		pool_for_each_server(p, server_kill);
		pool_kill_clients(p);
		if (name)
			p->db->paused = true;
	}
}

/* Fields whose change means existing server connections point at the wrong place. */
static bool dbconfig_target_changed(const DbConfig *a, const DbConfig *b)
{
#define DIFF(f) ((a->f == NULL) != (b->f == NULL) || (a->f && strcmp(a->f, b->f) != 0))
	return DIFF(host) || a->port != b->port || DIFF(dbname) || DIFF(user) ||
	       DIFF(password);
#undef DIFF
}

void pool_apply_config(Config *cfg)
{
	List *item;
	list_for_each(item, &moat->databases) {
		Database *db = container_of(item, Database, head);
		if (db->is_admin)
			continue;
		const DbConfig *fresh = config_find_db(cfg, db->name);
		if (!fresh) {
			db->dead = true;
			pool_reconnect_db(db->name);
			continue;
		}
		DbConfig *copy = dbconfig_copy(fresh, db->name);
		bool moved = dbconfig_target_changed(db->cfg, copy);
		dbconfig_free(db->cfg);
		db->cfg = copy;
		db->is_autodb = strcmp(fresh->name, "*") == 0;
		if (moved)
			pool_reconnect_db(db->name);
	}
}

static void paramlist_free(ParamList *pl)
{
	for (int i = 0; i < pl->count; i++) {
		free(pl->names[i]);
		free(pl->values[i]);
	}
	free(pl->names);
	free(pl->values);
	memset(pl, 0, sizeof(*pl));
}

static bool pool_is_empty(const Pool *p)
{
	return list_empty(&p->active_clients) && list_empty(&p->waiting_clients) &&
	       list_empty(&p->waiting_login_clients) && pool_count_servers(p) == 0;
}

static void pool_free(Pool *p)
{
	if (p->db->login_pool == p)
		p->db->login_pool = NULL;
	list_del(&p->head);
	paramlist_free(&p->welcome);
	welcome_reset(&p->welcome_cache);
	util_wipe(&p->scram_keys, sizeof(p->scram_keys));
	free(p->server_user);
	free(p->jwt_role);
	free(p->last_login_error);
	util_free_secret(p->queried_secret);
	catalog_free(p->mask_catalog);
	free(p);
}

static bool database_in_use(const Database *db)
{
	List *item;
	list_for_each(item, &moat->pools) {
		if (container_of(item, Pool, head)->db == db)
			return true;
	}
	return false;
}

void pool_collect_garbage(void)
{
	List *item, *tmp;
	list_for_each_safe(item, &moat->pools, tmp) {
		Pool *p = container_of(item, Pool, head);
		if (p->db->dead && pool_is_empty(p))
			pool_free(p);
	}
	list_for_each_safe(item, &moat->databases, tmp) {
		Database *db = container_of(item, Database, head);
		if (db->dead && !database_in_use(db)) {
			list_del(&db->head);
			dbconfig_free(db->cfg);
			free(db->name);
			free(db);
		}
	}
}

void pool_welcome_add(Pool *pool, const char *name, const char *value)
{
	ParamList *pl = &pool->welcome;
	welcome_reset(&pool->welcome_cache);
	for (int i = 0; i < pl->count; i++) {
		if (strcmp(pl->names[i], name) == 0) {
			free(pl->values[i]);
			pl->values[i] = xstrdup(value);
			return;
		}
	}
	pl->names = xrealloc(pl->names, sizeof(char *) * (size_t)(pl->count + 1));
	pl->values = xrealloc(pl->values, sizeof(char *) * (size_t)(pl->count + 1));
	pl->names[pl->count] = xstrdup(name);
	pl->values[pl->count] = xstrdup(value);
	pl->count++;
}

void pool_free_all(void)
{
	List *item, *tmp;
	list_for_each_safe(item, &moat->pools, tmp)
		pool_free(container_of(item, Pool, head));
	list_for_each_safe(item, &moat->databases, tmp) {
		Database *db = container_of(item, Database, head);
		list_del(&db->head);
		dbconfig_free(db->cfg);
		free(db->name);
		free(db);
	}
	list_for_each_safe(item, &moat->users, tmp) {
		PoolUser *u = container_of(item, PoolUser, head);
		list_del(&u->head);
		free(u->name);
		free(u);
	}
}
