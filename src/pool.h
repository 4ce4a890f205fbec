/*
 * Pools: one per (database, user). They own the client and server lists,
 * hand servers to waiting clients, open new connections within the limits
 * (pool_size, reserve_pool, max_db_connections, max_user_connections), and
 * take servers back when a client's transaction (or session) ends.
 */
#ifndef PGMOAT_POOL_H
#define PGMOAT_POOL_H

#include "pgmoat.h"

/* Runtime objects, created on demand. */
Database *pool_find_database(const char *name);	/* creates from "*" when configured */
PoolUser *pool_get_user(const char *name);
Pool *pool_get(Database *db, PoolUser *user);
Pool *pool_get_for_role(Database *db, PoolUser *user, const char *role);	/* jwt; NULL: no role */
/* The pool of a login as user (role: jwt, or NULL), remembered per database for the next login. */
Pool *pool_get_for_login(Database *db, const char *user, const char *role);

/* Cached per pool, computed again when the configuration changed (moat->cfg_epoch). */
PoolMode pool_mode_refresh(Pool *pool);
/* (inline: asked several times per transaction) */
static inline PoolMode pool_effective_mode(Pool *pool)
{
	return pool->mode_epoch == moat->cfg_epoch ? pool->mode : pool_mode_refresh(pool);
}
int pool_effective_size(const Pool *pool);

/* A client needs a server: assign one now or queue it (CL_WAITING). */
void pool_request_server(Client *c);
/* The client is done with its server (transaction or session over). */
void pool_release_server(Server *s);
/* Try to serve waiting clients and keep min_pool_size; called after any change. */
void pool_maintain(Pool *pool);
/*
 * The same, on the next pass of the event loop. Teardown paths use this, so
 * no disconnect can re-enter a walk over the pool's lists.
 */
void pool_schedule_maintain(Pool *pool);
bool pool_maintain_setup(Worker *w) MUST_CHECK;
void pool_maintain_teardown(Worker *w);
void pool_maintain_all(void);

/* Admin operations. */
void pool_pause_all(bool pause);
bool pool_pause_db(const char *name, bool pause) MUST_CHECK;
bool pool_paused(const Pool *pool);
void pool_reconnect_db(const char *name);	/* NULL: all */
void pool_kill_db(const char *name);		/* NULL: all */
bool pool_disable_db(const char *name, bool disable) MUST_CHECK;

/* Apply a freshly loaded config: refresh databases, drop removed ones. */
void pool_apply_config(Config *cfg);

/* Counters for SHOW/metrics. */
int pool_count_servers(const Pool *pool);
void pool_max_wait(const Pool *pool, usec_t now, usec_t *max_wait_us);

/* Idle past server_check_delay and not checked since it was last used. */
bool pool_server_needs_check(const Server *s);

/* Record one of the server's ParameterStatus values for the welcome of new clients. */
void pool_welcome_add(Pool *pool, const char *name, const char *value);
/* At exit: free every pool, database and user object. */
void pool_free_all(void);

/* Free pools whose clients and servers are all gone and whose database is dead. */
void pool_collect_garbage(void);

#endif
