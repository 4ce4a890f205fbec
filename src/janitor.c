/*
 * Periodic maintenance, a few times a second: every timeout of pgbouncer
 * with pgbouncer's meaning, server lifetimes and checks, min_pool_size and
 * the reserve pool, the stats period, and the drain at shutdown.
 */
#include "janitor.h"
#include "client.h"
#include "server.h"
#include "pool.h"
#include "drain.h"

#define JANITOR_INTERVAL_USEC 200000

static usec_t last_stats_roll;

static bool expired(usec_t since, usec_t timeout, usec_t now)
{
	return timeout > 0 && since > 0 && now - since >= timeout;
}

static void janitor_check_active_client(Client *c, usec_t now)
{
	const Config *cfg = moat->cfg;
	Server *s = c->link;
	if (c->held)
		return;	/* waiting for a reviewer: approvals.timeout applies instead */
	if (!s) {
		if (expired(c->request_time, cfg->client_idle_timeout, now))
			client_disconnect(c, "08P01", "client_idle_timeout");
		return;
	}
	if (!s->ready) {
		if (expired(c->request_time, cfg->query_timeout, now))
			client_disconnect(c, "08P01", "query_timeout");
		return;
	}
	/* pgbouncer applies client_idle_timeout only to clients without a server. */
	if (s->tx_status != 'I' && expired(s->request_time, cfg->idle_transaction_timeout, now))
		client_disconnect(c, "08P01", "idle transaction timeout");
}

static void janitor_check_clients(Pool *pool, usec_t now)
{
	const Config *cfg = moat->cfg;
	List *item, *tmp;
	list_for_each_safe(item, &pool->waiting_clients, tmp) {
		Client *c = container_of(item, Client, head);
		if (expired(c->wait_start, cfg->query_wait_timeout, now))
			client_disconnect(c, "08P01", "query_wait_timeout");
	}
	list_for_each_safe(item, &pool->waiting_login_clients, tmp) {
		Client *c = container_of(item, Client, head);
		if (c->login_deadline && now >= c->login_deadline)
			client_disconnect(c, "08P01", "client_login_timeout");
	}
	if (pool->db->is_admin)
		return;
	list_for_each_safe(item, &pool->active_clients, tmp)
		janitor_check_active_client(container_of(item, Client, head), now);
}

/* After a reload lowered the pool size, close idle servers above it (coldest first). */
static void janitor_close_surplus(Pool *pool)
{
	int limit = pool_effective_size(pool);
	while (pool_count_servers(pool) > limit && !list_empty(&pool->idle_servers)) {
		Server *s = container_of(pool->idle_servers.prev, Server, head);
		server_disconnect(s, "pool size lowered");
	}
}

static void janitor_check_idle_servers(Pool *pool, usec_t now)
{
	const Config *cfg = moat->cfg;
	int min = pool->db->cfg && pool->db->cfg->min_pool_size >= 0 ? pool->db->cfg->min_pool_size
								      : cfg->min_pool_size;
	List *item, *tmp;
	list_for_each_safe(item, &pool->idle_servers, tmp) {
		Server *s = container_of(item, Server, head);
		if (expired(s->connect_mono, cfg->server_lifetime, now))
			server_disconnect(s, "server_lifetime");
		else if (expired(s->idle_since, cfg->server_idle_timeout, now) &&
			 pool_count_servers(pool) > min)
			server_disconnect(s, "server idle timeout");
		else if (pool_server_needs_check(s))
			server_set_state(s, SV_USED);
	}
	list_for_each_safe(item, &pool->used_servers, tmp) {
		Server *s = container_of(item, Server, head);
		if (expired(s->connect_mono, cfg->server_lifetime, now) ||
		    expired(s->idle_since, cfg->server_idle_timeout, now))
			server_disconnect(s, "server idle timeout or lifetime");
	}
	list_for_each_safe(item, &pool->login_servers, tmp) {
		Server *s = container_of(item, Server, head);
		if (cfg->server_connect_timeout > 0 && now >= s->login_deadline)
			server_disconnect(s, "server_connect_timeout");
	}
}

static void janitor_check_login_clients(Worker *w, usec_t now)
{
	List *item, *tmp;
	list_for_each_safe(item, &w->login_clients, tmp) {
		Client *c = container_of(item, Client, head);
		if (c->login_deadline && now >= c->login_deadline)
			client_disconnect(c, "08P01", "client_login_timeout");
	}
}

static void janitor_roll_stats(usec_t now)
{
	usec_t period = moat->cfg->stats_period > 0 ? moat->cfg->stats_period : 60 * USEC_PER_SEC;
	if (now - last_stats_roll < period)
		return;
	List *item;
	list_for_each(item, &moat->pools)
		stats_period_roll(&container_of(item, Pool, head)->stats, (uint64_t)(now - last_stats_roll));
	last_stats_roll = now;
}

void janitor_run(void)
{
	Worker *w = moat->worker;
	usec_t now = util_now_mono();
	if (moat->shutdown_immediate) {
		event_base_loopbreak(w->base);
		return;
	}
	janitor_check_login_clients(w, now);
	List *item, *tmp;
	list_for_each_safe(item, &moat->pools, tmp) {
		Pool *pool = container_of(item, Pool, head);
		janitor_check_clients(pool, now);
		janitor_check_idle_servers(pool, now);
		janitor_close_surplus(pool);
		pool_maintain(pool);
	}
	janitor_roll_stats(now);
	pool_collect_garbage();
	if (moat->state == MOAT_DRAINING)
		drain_tick(w, now);
}

static void janitor_cb(evutil_socket_t fd, short what, void *arg)
{
	janitor_run();
}

void janitor_start(Worker *w)
{
	struct timeval tv = { 0, JANITOR_INTERVAL_USEC };
	last_stats_roll = util_now_mono();
	moat->janitor_ev = event_new(w->base, -1, EV_PERSIST, janitor_cb, NULL);
	event_add(moat->janitor_ev, &tv);
}

void janitor_stop(void)
{
	if (moat->janitor_ev) {
		event_free(moat->janitor_ev);
		moat->janitor_ev = NULL;
	}
}
