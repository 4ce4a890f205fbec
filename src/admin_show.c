/*
 * The admin console's SHOW result sets, one builder per table, with
 * pgbouncer 1.18's column names and order (test_admin.py diffs them against
 * the installed pgbouncer) so that exporters and runbooks keep working.
 * Objects are listed in pgbouncer's order: pools by database and user,
 * databases and users by name.
 */
#include "admin_int.h"
#include "client.h"
#include "listener.h"
#include "pool.h"
#include "stats.h"
#include "tls.h"

#include "build_config.h"	/* autoconf's: PACKAGE_VERSION */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef PACKAGE_VERSION
#error "PACKAGE_VERSION must come from autoconf's config.h"
#endif

/* ------------------------------------------------------- object snapshots */

/* The objects of an intrusive list as an array, sorted (pgbouncer lists are ordered). */
static void **admin_list_sorted(List *head, size_t offset, int (*cmp)(const void *, const void *), int *count)
{
	int n = list_count(head);
	void **arr = xmalloc(sizeof(void *) * (size_t)(n > 0 ? n : 1));
	List *item;
	int i = 0;

	list_for_each(item, head)
		arr[i++] = (char *)item - offset;
	qsort(arr, (size_t)n, sizeof(void *), cmp);
	*count = n;
	return arr;
}

static int cmp_pool(const void *a, const void *b)
{
	const Pool *pa = *(Pool *const *)a;
	const Pool *pb = *(Pool *const *)b;
	int r = strcmp(pa->db->name, pb->db->name);

	return r ? r : strcmp(pa->user->name, pb->user->name);
}

static int cmp_cstring(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static Pool **admin_pools_sorted(int *n)
{
	return (Pool **)admin_list_sorted(&moat->pools, offsetof(Pool, head), cmp_pool, n);
}

/* A monotonic timestamp as wall-clock time, for display. */
static usec_t admin_mono_to_wall(usec_t mono)
{
	return util_now_wall() - (util_now_mono() - mono);
}

/* ------------------------------------------------- SHOW CLIENTS / SERVERS */

static const AdminColumn socket_cols[] = {
	{ "type", COLTYPE_TEXT }, { "user", COLTYPE_TEXT }, { "database", COLTYPE_TEXT },
	{ "state", COLTYPE_TEXT }, { "addr", COLTYPE_TEXT }, { "port", COLTYPE_INT4 },
	{ "local_addr", COLTYPE_TEXT }, { "local_port", COLTYPE_INT4 },
	{ "connect_time", COLTYPE_TEXT }, { "request_time", COLTYPE_TEXT },
	{ "wait", COLTYPE_INT4 }, { "wait_us", COLTYPE_INT4 }, { "close_needed", COLTYPE_INT4 },
	{ "ptr", COLTYPE_TEXT }, { "link", COLTYPE_TEXT }, { "remote_pid", COLTYPE_INT4 },
	{ "tls", COLTYPE_TEXT }, { "application_name", COLTYPE_TEXT },
	/* SHOW SOCKETS / ACTIVE_SOCKETS only */
	{ "recv_pos", COLTYPE_INT4 }, { "pkt_pos", COLTYPE_INT4 }, { "pkt_remain", COLTYPE_INT4 },
	{ "send_pos", COLTYPE_INT4 }, { "send_remain", COLTYPE_INT4 },
	{ "pkt_avail", COLTYPE_INT4 }, { "send_avail", COLTYPE_INT4 },
};
#define SOCKET_STD_COLS 18

typedef enum { SOCK_STD, SOCK_DEBUG, SOCK_DEBUG_ACTIVE } SockMode;

/* What a row of SHOW CLIENTS/SERVERS/SOCKETS says about one connection. */
typedef struct SockView {
	const char *type;
	const char *user;
	const char *db;
	const PeerAddr *remote;
	const PeerAddr *local;
	usec_t connect_wall;
	usec_t request_mono;
	usec_t wait_us;
	bool close_needed;
	const void *ptr;
	const void *link;
	uint32_t remote_pid;
	const char *app_name;
	size_t recv_len;	/* read, not yet processed */
	size_t send_len;	/* not yet written */
	size_t pkt_remain;
	struct ssl_st *ssl;	/* TLS: for the tls column */
} SockView;

static void sock_from_client(SockView *v, Client *c, usec_t now)
{
	v->type = "C";
	v->user = c->user_name ? c->user_name : "(nouser)";
	v->db = c->pool ? c->pool->db->name : "(nodb)";
	v->remote = &c->remote;
	v->local = client_local_addr(c);
	v->connect_wall = c->connect_time;
	v->request_mono = c->request_time;
	/* pgbouncer: time since the client's current (or last) query started */
	v->wait_us = c->query_start > 0 && now > c->query_start ? now - c->query_start : 0;
	v->close_needed = false;
	v->ptr = c;
	v->link = c->link;
	v->remote_pid = 0;
	v->app_name = c->vars.values[VAR_APPLICATION_NAME];
	v->recv_len = c->in.buf ? evbuffer_get_length(c->in.buf) : 0;
	v->send_len = msgio_output_pending(&c->out);
	v->pkt_remain = c->fwd_remaining;
	v->ssl = c->ssl;
}

static void sock_from_server(SockView *v, const Server *s, usec_t now)
{
	(void)now;
	v->type = "S";
	v->user = s->pool->server_user;
	v->db = s->pool->db->name;
	v->remote = &s->remote;
	v->local = &s->local;
	v->connect_wall = s->connect_time;
	v->request_mono = s->request_time;
	v->wait_us = 0;
	v->close_needed = s->close_needed;
	v->ptr = s;
	v->link = s->link;
	v->remote_pid = s->backend_pid;
	v->app_name = s->vars.values[VAR_APPLICATION_NAME];
	v->recv_len = s->in.buf ? evbuffer_get_length(s->in.buf) : 0;
	v->send_len = msgio_output_pending(&s->out);
	v->pkt_remain = s->fwd_remaining;
	v->ssl = s->ssl;
}

static void sock_debug_cells(Row *r, const SockView *v)
{
	size_t in = v->recv_len;

	admin_row_u64(r, in);			/* recv_pos: bytes read, not yet processed */
	admin_row_int(r, 0);			/* pkt_pos */
	admin_row_u64(r, v->pkt_remain);	/* pkt_remain: of a message still streaming */
	admin_row_int(r, 0);			/* send_pos */
	admin_row_int(r, 0);			/* send_remain */
	admin_row_u64(r, in);			/* pkt_avail */
	admin_row_u64(r, v->send_len);	/* send_avail */
}

static void sock_row(ResultSet *rs, const SockView *v, const char *state, SockMode mode)
{
	char connect_time[64], request_time[64], ptr[32], link[32];
	usec_t req = v->request_mono > 0 ? admin_mono_to_wall(v->request_mono) : v->connect_wall;
	Row r;

	if (mode == SOCK_DEBUG_ACTIVE && v->recv_len == 0 && v->send_len == 0)
		return;
	admin_format_time(connect_time, sizeof(connect_time), v->connect_wall);
	admin_format_time(request_time, sizeof(request_time), req);
	snprintf(ptr, sizeof(ptr), "%p", v->ptr);
	if (v->link)
		snprintf(link, sizeof(link), "%p", v->link);
	else
		link[0] = '\0';
	admin_row_reset(&r);
	admin_row_str(&r, v->type);
	admin_row_str(&r, v->user);
	admin_row_str(&r, v->db);
	admin_row_str(&r, state);
	admin_row_str(&r, v->remote->host);
	admin_row_int(&r, v->remote->port);
	admin_row_str(&r, v->local->host);
	admin_row_int(&r, v->local->port);
	admin_row_str(&r, connect_time);
	admin_row_str(&r, request_time);
	admin_row_int(&r, v->wait_us / USEC_PER_SEC);
	admin_row_int(&r, v->wait_us % USEC_PER_SEC);
	admin_row_int(&r, v->close_needed);
	admin_row_str(&r, ptr);
	admin_row_str(&r, link);
	admin_row_u64(&r, v->remote_pid);
	char tls[128];
	tls_describe(v->ssl, tls, sizeof(tls));
	admin_row_str(&r, tls);
	admin_row_str(&r, v->app_name ? v->app_name : "");
	if (mode != SOCK_STD)
		sock_debug_cells(&r, v);
	admin_rs_row(rs, &r);
}

static void show_client_list(ResultSet *rs, List *list, const char *state, SockMode mode)
{
	usec_t now = util_now_mono();
	List *item;
	SockView v;

	list_for_each(item, list) {
		sock_from_client(&v, container_of(item, Client, head), now);
		sock_row(rs, &v, state, mode);
	}
}

static void show_server_list(ResultSet *rs, List *list, const char *state, SockMode mode)
{
	usec_t now = util_now_mono();
	List *item;
	SockView v;

	list_for_each(item, list) {
		sock_from_server(&v, container_of(item, Server, head), now);
		sock_row(rs, &v, state, mode);
	}
}

void admin_show_clients(Client *c)
{
	ResultSet rs;
	int n;
	Pool **pools = admin_pools_sorted(&n);

	admin_rs_begin(&rs, socket_cols, SOCKET_STD_COLS);
	for (int i = 0; i < n; i++) {
		show_client_list(&rs, &pools[i]->active_clients, "active", SOCK_STD);
		show_client_list(&rs, &pools[i]->waiting_clients, "waiting", SOCK_STD);
		/* pgbouncer keeps clients waiting for their first server on its waiting list */
		show_client_list(&rs, &pools[i]->waiting_login_clients, "waiting", SOCK_STD);
	}
	free(pools);
	admin_rs_send(c, &rs, "SHOW");
}

void admin_show_servers(Client *c)
{
	ResultSet rs;
	int n;
	Pool **pools = admin_pools_sorted(&n);

	admin_rs_begin(&rs, socket_cols, SOCKET_STD_COLS);
	for (int i = 0; i < n; i++) {
		show_server_list(&rs, &pools[i]->active_servers, "active", SOCK_STD);
		show_server_list(&rs, &pools[i]->idle_servers, "idle", SOCK_STD);
		show_server_list(&rs, &pools[i]->used_servers, "used", SOCK_STD);
		show_server_list(&rs, &pools[i]->tested_servers, "tested", SOCK_STD);
		show_server_list(&rs, &pools[i]->login_servers, "new", SOCK_STD);
	}
	free(pools);
	admin_rs_send(c, &rs, "SHOW");
}

static void admin_send_sockets(Client *c, SockMode mode)
{
	ResultSet rs;
	int n;
	Pool **pools = admin_pools_sorted(&n);

	RS_BEGIN(&rs, socket_cols);
	for (int i = 0; i < n; i++) {
		Pool *p = pools[i];
		show_client_list(&rs, &p->active_clients, "cl_active", mode);
		show_client_list(&rs, &p->waiting_clients, "cl_waiting", mode);
		show_client_list(&rs, &p->waiting_login_clients, "cl_waiting", mode);
		show_server_list(&rs, &p->active_servers, "sv_active", mode);
		show_server_list(&rs, &p->idle_servers, "sv_idle", mode);
		show_server_list(&rs, &p->used_servers, "sv_used", mode);
		show_server_list(&rs, &p->tested_servers, "sv_tested", mode);
		show_server_list(&rs, &p->login_servers, "sv_login", mode);
	}
	free(pools);
	show_client_list(&rs, &moat->worker->login_clients, "cl_login", mode);
	admin_rs_send(c, &rs, "SHOW");
}

void admin_show_sockets(Client *c)
{
	admin_send_sockets(c, SOCK_DEBUG);
}

void admin_show_active_sockets(Client *c)
{
	admin_send_sockets(c, SOCK_DEBUG_ACTIVE);
}

/* ------------------------------------------------------------- SHOW POOLS */

static const AdminColumn pools_cols[] = {
	{ "database", COLTYPE_TEXT }, { "user", COLTYPE_TEXT },
	{ "cl_active", COLTYPE_INT4 }, { "cl_waiting", COLTYPE_INT4 },
	{ "cl_active_cancel_req", COLTYPE_INT4 }, { "cl_waiting_cancel_req", COLTYPE_INT4 },
	{ "sv_active", COLTYPE_INT4 }, { "sv_active_cancel", COLTYPE_INT4 },
	{ "sv_being_canceled", COLTYPE_INT4 }, { "sv_idle", COLTYPE_INT4 },
	{ "sv_used", COLTYPE_INT4 }, { "sv_tested", COLTYPE_INT4 }, { "sv_login", COLTYPE_INT4 },
	{ "maxwait", COLTYPE_INT4 }, { "maxwait_us", COLTYPE_INT4 }, { "pool_mode", COLTYPE_TEXT },
};

static void pool_row(Row *r, Pool *p, usec_t now)
{
	usec_t max_wait;

	pool_max_wait(p, now, &max_wait);
	if (max_wait < 0)
		max_wait = 0;
	admin_row_reset(r);
	admin_row_str(r, p->db->name);
	admin_row_str(r, p->user->name);
	admin_row_int(r, list_count(&p->active_clients));
	admin_row_int(r, list_count(&p->waiting_clients) + list_count(&p->waiting_login_clients));
	/* cancel requests are forwarded at once, never queued on a pool */
	admin_row_int(r, 0);
	admin_row_int(r, 0);
	admin_row_int(r, list_count(&p->active_servers));
	admin_row_int(r, 0);
	admin_row_int(r, 0);
	admin_row_int(r, list_count(&p->idle_servers));
	admin_row_int(r, list_count(&p->used_servers));
	admin_row_int(r, list_count(&p->tested_servers));
	admin_row_int(r, list_count(&p->login_servers));
	admin_row_int(r, max_wait / USEC_PER_SEC);
	admin_row_int(r, max_wait % USEC_PER_SEC);
	admin_row_str(r, config_pool_mode_name(pool_effective_mode(p)));
}

void admin_show_pools(Client *c)
{
	ResultSet rs;
	Row r;
	int n;
	Pool **pools = admin_pools_sorted(&n);
	usec_t now = util_now_mono();

	RS_BEGIN(&rs, pools_cols);
	for (int i = 0; i < n; i++) {
		pool_row(&r, pools[i], now);
		admin_rs_row(&rs, &r);
	}
	free(pools);
	admin_rs_send(c, &rs, "SHOW");
}

/* ------------------------------------------------------------- SHOW STATS */

static const AdminColumn stats_cols[] = {
	{ "database", COLTYPE_TEXT },
	{ "total_xact_count", COLTYPE_NUMERIC }, { "total_query_count", COLTYPE_NUMERIC },
	{ "total_received", COLTYPE_NUMERIC }, { "total_sent", COLTYPE_NUMERIC },
	{ "total_xact_time", COLTYPE_NUMERIC }, { "total_query_time", COLTYPE_NUMERIC },
	{ "total_wait_time", COLTYPE_NUMERIC },
	{ "avg_xact_count", COLTYPE_NUMERIC }, { "avg_query_count", COLTYPE_NUMERIC },
	{ "avg_recv", COLTYPE_NUMERIC }, { "avg_sent", COLTYPE_NUMERIC },
	{ "avg_xact_time", COLTYPE_NUMERIC }, { "avg_query_time", COLTYPE_NUMERIC },
	{ "avg_wait_time", COLTYPE_NUMERIC },
};

/* STATS_TOTALS and STATS_AVERAGES share their columns. */
static const AdminColumn stats_part_cols[] = {
	{ "database", COLTYPE_TEXT },
	{ "xact_count", COLTYPE_NUMERIC }, { "query_count", COLTYPE_NUMERIC },
	{ "bytes_received", COLTYPE_NUMERIC }, { "bytes_sent", COLTYPE_NUMERIC },
	{ "xact_time", COLTYPE_NUMERIC }, { "query_time", COLTYPE_NUMERIC },
	{ "wait_time", COLTYPE_NUMERIC },
};

/* One database's counters: pools summed, averages recomputed from the summed period. */
typedef struct DbStats {
	const char *name;
	StatCounters total;
	StatCounters avg;
} DbStats;

typedef enum { STATS_ALL, STATS_TOTALS, STATS_AVERAGES } StatsPart;

static void stats_cells(Row *r, const StatCounters *s)
{
	admin_row_u64(r, s->xact_count);
	admin_row_u64(r, s->query_count);
	admin_row_u64(r, s->bytes_received);
	admin_row_u64(r, s->bytes_sent);
	admin_row_u64(r, s->xact_time);
	admin_row_u64(r, s->query_time);
	admin_row_u64(r, s->wait_time);
}

static void stats_row(ResultSet *rs, const DbStats *d, StatsPart part)
{
	Row r;

	admin_row_reset(&r);
	admin_row_str(&r, d->name);
	if (part != STATS_AVERAGES)
		stats_cells(&r, &d->total);
	if (part != STATS_TOTALS)
		stats_cells(&r, &d->avg);
	admin_rs_row(rs, &r);
}

/* Sum pools [from, to) that share a database. */
static void db_stats_sum(DbStats *d, Pool **pools, int from, int to)
{
	StatCounters delta;
	uint64_t period = 0;

	memset(d, 0, sizeof(*d));
	memset(&delta, 0, sizeof(delta));
	d->name = pools[from]->db->name;
	for (int i = from; i < to; i++) {
		const PoolStats *ps = &pools[i]->stats;
		stats_add(&d->total, &ps->total);
		stats_add(&delta, &ps->period_delta);
		if (ps->period_usec > period)
			period = ps->period_usec;
	}
	stats_compute_avg(&d->avg, &delta, period);
}

static void admin_send_stats(Client *c, StatsPart part)
{
	ResultSet rs;
	DbStats d;
	int n, start = 0;
	Pool **pools = admin_pools_sorted(&n);

	if (part == STATS_ALL)
		RS_BEGIN(&rs, stats_cols);
	else
		RS_BEGIN(&rs, stats_part_cols);
	for (int i = 1; i <= n; i++) {
		if (i < n && pools[i]->db == pools[start]->db)
			continue;
		db_stats_sum(&d, pools, start, i);
		stats_row(&rs, &d, part);
		start = i;
	}
	free(pools);
	admin_rs_send(c, &rs, "SHOW");
}

void admin_show_stats(Client *c)
{
	admin_send_stats(c, STATS_ALL);
}

void admin_show_stats_totals(Client *c)
{
	admin_send_stats(c, STATS_TOTALS);
}

void admin_show_stats_averages(Client *c)
{
	admin_send_stats(c, STATS_AVERAGES);
}

static const AdminColumn name_value_num_cols[] = {
	{ "name", COLTYPE_TEXT }, { "value", COLTYPE_NUMERIC },
};

static void totals_row(ResultSet *rs, const char *prefix, const char *name, uint64_t v)
{
	char key[64];
	Row r;

	snprintf(key, sizeof(key), "%s_%s", prefix, name);
	admin_row_reset(&r);
	admin_row_str(&r, key);
	admin_row_u64(&r, v);
	admin_rs_row(rs, &r);
}

static void totals_rows(ResultSet *rs, const char *prefix, const StatCounters *s)
{
	totals_row(rs, prefix, "xact_count", s->xact_count);
	totals_row(rs, prefix, "query_count", s->query_count);
	totals_row(rs, prefix, "client_bytes", s->bytes_received);
	totals_row(rs, prefix, "server_bytes", s->bytes_sent);
	totals_row(rs, prefix, "xact_time", s->xact_time);
	totals_row(rs, prefix, "query_time", s->query_time);
	totals_row(rs, prefix, "wait_time", s->wait_time);
}

void admin_show_totals(Client *c)
{
	ResultSet rs;
	StatCounters total, delta, avg;
	uint64_t period = 0;
	List *item;

	memset(&total, 0, sizeof(total));
	memset(&delta, 0, sizeof(delta));
	list_for_each(item, &moat->pools) {
		const PoolStats *ps = &container_of(item, Pool, head)->stats;
		stats_add(&total, &ps->total);
		stats_add(&delta, &ps->period_delta);
		if (ps->period_usec > period)
			period = ps->period_usec;
	}
	stats_compute_avg(&avg, &delta, period);
	RS_BEGIN(&rs, name_value_num_cols);
	totals_rows(&rs, "total", &total);
	totals_rows(&rs, "avg", &avg);
	admin_rs_send(c, &rs, "SHOW");
}

/* --------------------------------------------------- SHOW DATABASES/USERS */

static const AdminColumn databases_cols[] = {
	{ "name", COLTYPE_TEXT }, { "host", COLTYPE_TEXT }, { "port", COLTYPE_INT4 },
	{ "database", COLTYPE_TEXT }, { "force_user", COLTYPE_TEXT },
	{ "pool_size", COLTYPE_INT4 }, { "min_pool_size", COLTYPE_INT4 },
	{ "reserve_pool", COLTYPE_INT4 }, { "pool_mode", COLTYPE_TEXT },
	{ "max_connections", COLTYPE_INT4 }, { "current_connections", COLTYPE_INT4 },
	{ "paused", COLTYPE_INT4 }, { "disabled", COLTYPE_INT4 },
};

/* A per-database setting, or the global one when the entry leaves it unset (-1). */
static int db_setting(int own, int global)
{
	return own >= 0 ? own : global;
}

/*
 * One SHOW DATABASES row: a runtime Database, or a [databases] entry no
 * client has used yet (pgbouncer registers every entry at load; we do it on
 * first use, so the console merges both).
 */
typedef struct DbView {
	const char *name;
	const DbConfig *cfg;
	const Database *db;	/* NULL: configured, not used yet */
} DbView;

static int cmp_db_view(const void *a, const void *b)
{
	return strcmp(((const DbView *)a)->name, ((const DbView *)b)->name);
}

static bool db_views_contain(const DbView *v, int n, const char *name)
{
	for (int i = 0; i < n; i++) {
		if (strcmp(v[i].name, name) == 0)
			return true;
	}
	return false;
}

/* Every database pgbouncer would list, sorted by name; the caller frees. */
static DbView *admin_db_views(int *count)
{
	int cap = list_count(&moat->databases);
	DbView *v;
	List *item;
	int n = 0;

	for (const DbConfig *dc = moat->cfg->databases; dc; dc = dc->next)
		cap++;
	v = xcalloc((size_t)(cap > 0 ? cap : 1), sizeof(*v));
	list_for_each(item, &moat->databases) {
		const Database *db = container_of(item, Database, head);
		if (!db->dead && db->cfg)
			v[n++] = (DbView){ db->name, db->cfg, db };
	}
	for (const DbConfig *dc = moat->cfg->databases; dc; dc = dc->next) {
		if (strcmp(dc->name, "*") != 0 && !db_views_contain(v, n, dc->name))
			v[n++] = (DbView){ dc->name, dc, NULL };
	}
	qsort(v, (size_t)n, sizeof(*v), cmp_db_view);
	*count = n;
	return v;
}

static void database_row(Row *r, const DbView *v)
{
	const DbConfig *dc = v->cfg;
	const Config *g = moat->cfg;
	bool is_admin = v->db && v->db->is_admin;

	admin_row_reset(r);
	admin_row_str(r, v->name);
	admin_row_str(r, dc->host);
	admin_row_int(r, is_admin ? g->listen_port : dc->port);
	admin_row_str(r, dc->dbname ? dc->dbname : v->name);
	admin_row_str(r, dc->user);
	admin_row_int(r, db_setting(dc->pool_size, g->default_pool_size));
	admin_row_int(r, db_setting(dc->min_pool_size, g->min_pool_size));
	admin_row_int(r, db_setting(dc->reserve_pool, g->reserve_pool_size));
	admin_row_str(r, dc->pool_mode >= 0 ? config_pool_mode_name((PoolMode)dc->pool_mode) : NULL);
	admin_row_int(r, db_setting(dc->max_db_connections, g->max_db_connections));
	admin_row_int(r, v->db ? v->db->connection_count : 0);
	admin_row_int(r, v->db ? v->db->paused : 0);
	admin_row_int(r, v->db ? v->db->disabled : 0);
}

void admin_show_databases(Client *c)
{
	ResultSet rs;
	Row r;
	int n;
	DbView *views = admin_db_views(&n);

	RS_BEGIN(&rs, databases_cols);
	for (int i = 0; i < n; i++) {
		database_row(&r, &views[i]);
		admin_rs_row(&rs, &r);
	}
	free(views);
	admin_rs_send(c, &rs, "SHOW");
}

static const AdminColumn users_cols[] = {
	{ "name", COLTYPE_TEXT }, { "pool_mode", COLTYPE_TEXT },
};

/* pgbouncer lists every auth_file user and every user seen: both, sorted, once each. */
static const char **admin_user_names(int *count)
{
	const Userlist *ul = moat->cfg->userlist;
	int cap = list_count(&moat->users) + (ul ? ul->count : 0);
	const char **names = xmalloc(sizeof(char *) * (size_t)(cap > 0 ? cap : 1));
	int n = 0, out = 0;
	List *item;

	list_for_each(item, &moat->users)
		names[n++] = container_of(item, PoolUser, head)->name;
	for (const UserlistEntry *e = ul ? ul->entries : NULL; e && n < cap; e = e->next)
		names[n++] = e->name;
	qsort(names, (size_t)n, sizeof(char *), cmp_cstring);
	for (int i = 0; i < n; i++) {
		if (out == 0 || strcmp(names[out - 1], names[i]) != 0)
			names[out++] = names[i];
	}
	*count = out;
	return names;
}

void admin_show_users(Client *c)
{
	ResultSet rs;
	Row r;
	int n;
	const char **names = admin_user_names(&n);

	RS_BEGIN(&rs, users_cols);
	for (int i = 0; i < n; i++) {
		const UserConfig *uc = config_find_user(moat->cfg, names[i]);
		admin_row_reset(&r);
		admin_row_str(&r, names[i]);
		admin_row_str(&r, uc && uc->pool_mode >= 0 ? config_pool_mode_name((PoolMode)uc->pool_mode) : NULL);
		admin_rs_row(&rs, &r);
	}
	free(names);
	admin_rs_send(c, &rs, "SHOW");
}

/* ------------------------------------------------- SHOW LISTS / MEM / ... */

static const AdminColumn lists_cols[] = {
	{ "list", COLTYPE_TEXT }, { "items", COLTYPE_INT4 },
};

static void list_row(ResultSet *rs, const char *name, int64_t items)
{
	Row r;

	admin_row_reset(&r);
	admin_row_str(&r, name);
	admin_row_int(&r, items);
	admin_rs_row(rs, &r);
}

void admin_show_lists(Client *c)
{
	const Worker *w = moat->worker;
	ResultSet rs;
	int users, dbs;

	RS_BEGIN(&rs, lists_cols);
	free(admin_db_views(&dbs));
	list_row(&rs, "databases", dbs);
	free(admin_user_names(&users));
	list_row(&rs, "users", users);
	list_row(&rs, "pools", list_count(&moat->pools));
	list_row(&rs, "free_clients", list_count(&w->free_clients));
	list_row(&rs, "used_clients", list_count(&w->all_clients));
	list_row(&rs, "login_clients", list_count(&w->login_clients));
	list_row(&rs, "free_servers", list_count(&w->free_servers));
	list_row(&rs, "used_servers", list_count(&w->all_servers));
	/* DNS is resolved synchronously at connect time: nothing cached */
	list_row(&rs, "dns_names", 0);
	list_row(&rs, "dns_zones", 0);
	list_row(&rs, "dns_queries", 0);
	list_row(&rs, "dns_pending", 0);
	admin_rs_send(c, &rs, "SHOW");
}

static const AdminColumn mem_cols[] = {
	{ "name", COLTYPE_TEXT }, { "size", COLTYPE_INT4 }, { "used", COLTYPE_INT4 },
	{ "free", COLTYPE_INT4 }, { "memtotal", COLTYPE_INT4 },
};

/* pgbouncer reports its slab caches; we report our object counts and struct sizes. */
static void mem_row(ResultSet *rs, const char *name, size_t size, int used, int free_count)
{
	Row r;

	admin_row_reset(&r);
	admin_row_str(&r, name);
	admin_row_u64(&r, size);
	admin_row_int(&r, used);
	admin_row_int(&r, free_count);
	admin_row_u64(&r, size * (size_t)(used + free_count));
	admin_rs_row(rs, &r);
}

void admin_show_mem(Client *c)
{
	const Worker *w = moat->worker;
	ResultSet rs;

	RS_BEGIN(&rs, mem_cols);
	mem_row(&rs, "user_cache", sizeof(PoolUser), list_count(&moat->users), 0);
	mem_row(&rs, "db_cache", sizeof(Database), list_count(&moat->databases), 0);
	mem_row(&rs, "pool_cache", sizeof(Pool), list_count(&moat->pools), 0);
	mem_row(&rs, "server_cache", sizeof(Server), list_count(&w->all_servers),
		list_count(&w->free_servers));
	mem_row(&rs, "client_cache", sizeof(Client), list_count(&w->all_clients),
		list_count(&w->free_clients));
	admin_rs_send(c, &rs, "SHOW");
}

static const AdminColumn config_cols[] = {
	{ "key", COLTYPE_TEXT }, { "value", COLTYPE_TEXT },
	{ "default", COLTYPE_TEXT }, { "changeable", COLTYPE_TEXT },
};

void admin_show_config(Client *c)
{
	int n = config_key_count();
	ResultSet rs;
	Row r;

	RS_BEGIN(&rs, config_cols);
	for (int i = 0; i < n; i++) {
		ConfigKeyView v;
		config_key_view(moat->cfg, i, &v);
		admin_row_reset(&r);
		admin_row_str(&r, v.key);
		admin_row_str(&r, v.value);
		admin_row_str(&r, v.default_value);
		admin_row_str(&r, v.changeable ? "yes" : "no");
		admin_rs_row(&rs, &r);
		free(v.value);
	}
	admin_rs_send(c, &rs, "SHOW");
}

static const AdminColumn version_cols[] = { { "version", COLTYPE_TEXT } };

void admin_show_version(Client *c)
{
	ResultSet rs;
	Row r;

	/* The pgbouncer prefix keeps exporters that parse it working. */
	RS_BEGIN(&rs, version_cols);
	admin_row_reset(&r);
	admin_row_str(&r, "PgBouncer " ADMIN_COMPAT_VERSION " (pgmoat " PACKAGE_VERSION ")");
	admin_rs_row(&rs, &r);
	admin_rs_send(c, &rs, "SHOW");
}

static const AdminColumn fds_cols[] = {
	{ "fd", COLTYPE_INT4 }, { "task", COLTYPE_TEXT }, { "user", COLTYPE_TEXT },
	{ "database", COLTYPE_TEXT }, { "addr", COLTYPE_TEXT }, { "port", COLTYPE_INT4 },
	{ "cancel", COLTYPE_INT8 }, { "link", COLTYPE_INT4 },
	{ "client_encoding", COLTYPE_TEXT }, { "std_strings", COLTYPE_TEXT },
	{ "datestyle", COLTYPE_TEXT }, { "timezone", COLTYPE_TEXT }, { "password", COLTYPE_TEXT },
	/* bytea in pgbouncer; ColType has no bytea and these are never filled */
	{ "scram_client_key", COLTYPE_BYTEA }, { "scram_server_key", COLTYPE_BYTEA },
};

/*
 * SHOW FDS lists what pgbouncer would hand to a new process in an online
 * restart: listeners ("pooler"), clients and servers with their cancel keys
 * and session parameters. pgmoat has no handover; the rows are for
 * inspection. password and the SCRAM keys stay NULL: secrets never leave
 * through the console.
 */
static void fds_listener_row(int fd, const char *addr, int port, void *arg)
{
	ResultSet *rs = arg;
	Row r;

	admin_row_reset(&r);
	admin_row_int(&r, fd);
	admin_row_str(&r, "pooler");
	admin_row_str(&r, NULL);
	admin_row_str(&r, NULL);
	admin_row_str(&r, addr);
	admin_row_int(&r, port);
	admin_row_str(&r, NULL);	/* cancel */
	admin_row_str(&r, NULL);	/* link */
	for (int i = 0; i < 7; i++)
		admin_row_str(&r, NULL);	/* encoding .. scram_server_key */
	admin_rs_row(rs, &r);
}

static int fds_bev_fd(struct bufferevent *bev)
{
	return bev ? (int)bufferevent_getfd(bev) : -1;
}

static void fds_conn_row(ResultSet *rs, const char *task, int fd, const char *user, const char *db,
			 const PeerAddr *remote, uint64_t cancel, int link, const VarCache *vars)
{
	Row r;

	admin_row_reset(&r);
	admin_row_int(&r, fd);
	admin_row_str(&r, task);
	admin_row_str(&r, user);
	admin_row_str(&r, db);
	admin_row_str(&r, remote->host);
	admin_row_int(&r, remote->port);
	admin_row_u64(&r, cancel);
	if (link >= 0)
		admin_row_int(&r, link);
	else
		admin_row_str(&r, NULL);
	admin_row_str(&r, vars->values[VAR_CLIENT_ENCODING]);
	admin_row_str(&r, vars->values[VAR_STANDARD_CONFORMING_STRINGS]);
	admin_row_str(&r, vars->values[VAR_DATESTYLE]);
	admin_row_str(&r, vars->values[VAR_TIMEZONE]);
	admin_row_str(&r, NULL);	/* password: never shown */
	admin_row_str(&r, NULL);	/* scram_client_key */
	admin_row_str(&r, NULL);	/* scram_server_key */
	admin_rs_row(rs, &r);
}

void admin_show_fds(Client *c)
{
	Worker *w = moat->worker;
	ResultSet rs;
	List *item;

	RS_BEGIN(&rs, fds_cols);
	listener_each(fds_listener_row, &rs);
	list_for_each(item, &w->all_clients) {
		const Client *cl = container_of(item, Client, all_head);
		if (cl->state == CL_FREE || cl->state == CL_LOGIN || !cl->pool)
			continue;
		fds_conn_row(&rs, "client", cl->fd, cl->user_name, cl->db_name,
			     &cl->remote, (uint64_t)cl->cancel_pid << 32 | cl->cancel_key,
			     cl->link ? fds_bev_fd(cl->link->bev) : -1, &cl->vars);
	}
	list_for_each(item, &w->all_servers) {
		const Server *s = container_of(item, Server, all_head);
		if (s->state == SV_FREE || s->state == SV_LOGIN)
			continue;
		fds_conn_row(&rs, "server", fds_bev_fd(s->bev), s->pool->server_user,
			     s->pool->db->cfg->dbname ? s->pool->db->cfg->dbname : s->pool->db->name,
			     &s->remote, (uint64_t)s->backend_pid << 32 | s->backend_key,
			     s->link ? s->link->fd : -1, &s->vars);
	}
	admin_rs_send(c, &rs, "SHOW");
}

static const AdminColumn key_value_cols[] = {
	{ "key", COLTYPE_TEXT }, { "value", COLTYPE_TEXT },
};

static void state_row(ResultSet *rs, const char *key, bool yes)
{
	Row r;

	admin_row_reset(&r);
	admin_row_str(&r, key);
	admin_row_str(&r, yes ? "yes" : "no");
	admin_rs_row(rs, &r);
}

/* From pgbouncer 1.21; harmless and useful before it. */
void admin_show_state(Client *c)
{
	ResultSet rs;

	RS_BEGIN(&rs, key_value_cols);
	state_row(&rs, "active", moat->state == MOAT_RUNNING);
	state_row(&rs, "paused", moat->state == MOAT_PAUSED);
	state_row(&rs, "suspended", moat->state == MOAT_SUSPENDED);
	admin_rs_send(c, &rs, "SHOW");
}

static const AdminColumn dns_hosts_cols[] = {
	{ "hostname", COLTYPE_TEXT }, { "ttl", COLTYPE_INT8 }, { "addrs", COLTYPE_TEXT },
};
static const AdminColumn dns_zones_cols[] = {
	{ "zonename", COLTYPE_TEXT }, { "serial", COLTYPE_INT8 }, { "count", COLTYPE_INT4 },
};

/* No DNS cache (see SHOW LISTS): the columns, no rows. */
void admin_show_dns_hosts(Client *c)
{
	ResultSet rs;

	RS_BEGIN(&rs, dns_hosts_cols);
	admin_rs_send(c, &rs, "SHOW");
}

void admin_show_dns_zones(Client *c)
{
	ResultSet rs;

	RS_BEGIN(&rs, dns_zones_cols);
	admin_rs_send(c, &rs, "SHOW");
}

static const char admin_help_text[] =
	"\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n"
	"\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n"
	"\tSHOW DNS_HOSTS|DNS_ZONES\n"
	"\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n"
	"\tSHOW APPROVALS|POLICIES\n"
	"\tAPPROVE <id>\n"
	"\tDENY <id> [<reason>]\n"
	"\tSET key = arg\n"
	"\tRELOAD\n"
	"\tPAUSE [<db>]\n"
	"\tRESUME [<db>]\n"
	"\tDISABLE <db>\n"
	"\tENABLE <db>\n"
	"\tRECONNECT [<db>]\n"
	"\tKILL <db>\n"
	"\tKILL_CLIENT <id>\n"
	"\tSUSPEND\n"
	"\tSHUTDOWN\n"
	"\tWAIT_CLOSE [<db>]";

void admin_show_help(Client *c)
{
	PktBuf pb;

	pktbuf_init(&pb);
	pktbuf_start(&pb, 'N');
	pktbuf_put_uint8(&pb, 'S');
	pktbuf_put_cstring(&pb, "NOTICE");
	pktbuf_put_uint8(&pb, 'C');
	pktbuf_put_cstring(&pb, "00000");
	pktbuf_put_uint8(&pb, 'M');
	pktbuf_put_cstring(&pb, "Console usage");
	pktbuf_put_uint8(&pb, 'D');
	pktbuf_put_cstring(&pb, admin_help_text);
	pktbuf_put_uint8(&pb, 0);
	pktbuf_finish(&pb);
	pktbuf_command_complete(&pb, "SHOW");
	pktbuf_ready(&pb, 'I');
	admin_send(c, &pb);
}

/*
 * Some drivers ask a fresh connection for these; pgbouncer fakes them, and
 * so do we (SHOW answers, SET is acknowledged and ignored).
 */
static const struct {
	const char *name;
	const char *value;
} admin_fake_params[] = {
	{ "client_encoding", "UTF-8" },
	{ "default_transaction_isolation", "read committed" },
	{ "standard_conforming_strings", "on" },
	{ "datestyle", "ISO" },
	{ "timezone", "GMT" },
	{ "extra_float_digits", "2" },
};

int admin_fake_param(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(admin_fake_params); i++) {
		if (strcasecmp(name, admin_fake_params[i].name) == 0)
			return (int)i;
	}
	return -1;
}

void admin_show_fake(Client *c, int idx)
{
	const AdminColumn col[] = { { admin_fake_params[idx].name, COLTYPE_TEXT } };
	ResultSet rs;
	Row r;

	RS_BEGIN(&rs, col);
	admin_row_reset(&r);
	admin_row_str(&r, admin_fake_params[idx].value);
	admin_rs_row(&rs, &r);
	admin_rs_send(c, &rs, "SHOW");
}

