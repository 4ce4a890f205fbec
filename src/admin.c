/*
 * The admin console: database "pgbouncer" (or "pgmoat") speaking pgbouncer
 * 1.18's console language, so that psql habits, monitoring exporters and
 * runbooks written for pgbouncer keep working.
 *
 * Grammar (pgbouncer's, case-insensitive, one statement per query):
 *     WORD [WORD] [;]                  SHOW POOLS, PAUSE app, RELOAD, ...
 *     SET WORD (=|TO) (WORD|'string') [;]
 * where WORD is [0-9A-Za-z_]+ or a "double-quoted" name.
 *
 * Answers are built as whole result sets in one PktBuf and queued at once.
 * PAUSE and WAIT_CLOSE answer only when the servers are released or closed:
 * those clients wait on a list that a short timer re-checks.
 */
#include "admin.h"
#include "approvals.h"
#include "tls.h"
#include "client.h"
#include "pool.h"
#include "daemon.h"
#include "pktbuf.h"
#include "stats.h"
#include "suspend.h"
#include "listener.h"

#include "build_config.h"	/* autoconf's: PACKAGE_VERSION */

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#ifndef PACKAGE_VERSION
#error "PACKAGE_VERSION must come from autoconf's config.h"
#endif

/*
 * pgbouncer 1.18 answers every console error with SQLSTATE 08P01; tools that
 * match on it keep working. Our own additions use precise codes.
 */
#define ADMIN_SQLSTATE "08P01"
/* The pgbouncer release whose console we reproduce. */
#define ADMIN_COMPAT_VERSION "1.18.0"
/* pgbouncer's limits for the parts of a command. */
#define ADMIN_CMD_MAX 16
#define ADMIN_ARG_MAX 64
#define ADMIN_VAL_MAX 256
/* How often waiting PAUSE / WAIT_CLOSE commands re-check their condition. */
#define ADMIN_WAIT_POLL_USEC 50000

static Database *console_db;
static Pool *console_pool;

bool admin_is_console_db(const char *dbname)
{
	/* every login asks twice: the first letter settles it for nearly every database */
	return dbname && dbname[0] == 'p' && (strcmp(dbname, "pgbouncer") == 0 || strcmp(dbname, "pgmoat") == 0);
}

Database *admin_database(void)
{
	return console_db;
}

Pool *admin_pool(void)
{
	return console_pool;
}

/* ---------------------------------------------------------------- answers */

/*
 * While admin_run_captured() runs a command for the extended protocol, its
 * answer (the same messages a simple Query gets) is collected here instead
 * of being sent; admin_ext.c then sends the parts each message asks for.
 */
static PktBuf *capture;

static void admin_send(Client *c, PktBuf *pb)
{
	if (capture) {
		if (pktbuf_ok(pb)) {
			pktbuf_put_bytes(capture, pb->data, pb->len);
		} else {
			pktbuf_error(capture, "ERROR", "54000", "admin result too large");
			pktbuf_ready(capture, 'I');
		}
		pktbuf_free(pb);
		return;
	}
	if (!client_send_pktbuf(c, pb)) {
		/* only an oversized result gets here: the builder refused it */
		client_send_error_ready(c, "54000", "admin result too large");
	}
	pktbuf_free(pb);
}

static void admin_ready(Client *c, const char *tag)
{
	PktBuf pb;

	pktbuf_init(&pb);
	pktbuf_command_complete(&pb, tag);
	pktbuf_ready(&pb, 'I');
	admin_send(c, &pb);
}

static void admin_error_code(Client *c, const char *sqlstate, const char *fmt, ...) PRINTF_LIKE(3, 4);
static void admin_error_code(Client *c, const char *sqlstate, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	slog_warning(c, "admin: %s", msg);
	if (capture) {
		pktbuf_error(capture, "ERROR", sqlstate, msg);
		pktbuf_ready(capture, 'I');
		return;
	}
	client_send_error_ready(c, sqlstate, "%s", msg);
}

#define admin_error(c, ...) admin_error_code((c), ADMIN_SQLSTATE, __VA_ARGS__)

/* ------------------------------------------------------------ result sets */

typedef struct AdminColumn {
	const char *name;
	ColType type;
} AdminColumn;

#define ROW_MAX_COLS 32
#define ROW_CELL 64

/* One row being filled: numbers are formatted into cells, strings are borrowed. */
typedef struct Row {
	int n;
	bool overflow;
	const char *vals[ROW_MAX_COLS];
	char cells[ROW_MAX_COLS][ROW_CELL];
} Row;

typedef struct ResultSet {
	PktBuf pb;
	int ncols;
} ResultSet;

static void admin_row_reset(Row *r)
{
	r->n = 0;
	r->overflow = false;
}

/* s is borrowed until the row is written; NULL is SQL NULL. */
static void admin_row_str(Row *r, const char *s)
{
	if (r->n >= ROW_MAX_COLS) {
		r->overflow = true;
		return;
	}
	r->vals[r->n++] = s;
}

static void admin_row_fmt(Row *r, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void admin_row_fmt(Row *r, const char *fmt, ...)
{
	va_list ap;

	if (r->n >= ROW_MAX_COLS) {
		r->overflow = true;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(r->cells[r->n], ROW_CELL, fmt, ap);
	va_end(ap);
	r->vals[r->n] = r->cells[r->n];
	r->n++;
}

static void admin_row_int(Row *r, int64_t v)
{
	admin_row_fmt(r, "%" PRId64, v);
}

static void admin_row_u64(Row *r, uint64_t v)
{
	admin_row_fmt(r, "%" PRIu64, v);
}

static void admin_rs_begin(ResultSet *rs, const AdminColumn *cols, int ncols)
{
	const char *names[ROW_MAX_COLS];
	ColType types[ROW_MAX_COLS];

	pktbuf_init(&rs->pb);
	rs->ncols = ncols;
	if (ncols > ROW_MAX_COLS) {
		rs->pb.failed = true;
		return;
	}
	for (int i = 0; i < ncols; i++) {
		names[i] = cols[i].name;
		types[i] = cols[i].type;
	}
	pktbuf_row_description(&rs->pb, ncols, names, types);
}

static void admin_rs_row(ResultSet *rs, const Row *r)
{
	if (r->overflow || r->n != rs->ncols) {
		log_error("admin: row with %d values for %d columns", r->n, rs->ncols);
		rs->pb.failed = true;
		return;
	}
	pktbuf_data_row(&rs->pb, r->n, r->vals);
}

/* CommandComplete + ReadyForQuery, queue, free. */
static void admin_rs_send(Client *c, ResultSet *rs, const char *tag)
{
	pktbuf_command_complete(&rs->pb, tag);
	pktbuf_ready(&rs->pb, 'I');
	admin_send(c, &rs->pb);
}

#define RS_BEGIN(rs, cols) admin_rs_begin((rs), (cols), (int)ARRAY_SIZE(cols))

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


/* Like pgbouncer's "%Y-%m-%d %H:%M:%S %Z" in local time. */
static void admin_format_time(char *buf, size_t len, usec_t wall_usec)
{
	time_t t = (time_t)(wall_usec / USEC_PER_SEC);
	struct tm tm;

	if (wall_usec <= 0 || !localtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%d %H:%M:%S %Z", &tm) == 0)
		snprintf(buf, len, "%s", "");
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

static void admin_show_clients(Client *c)
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

static void admin_show_servers(Client *c)
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

static void admin_show_sockets(Client *c)
{
	admin_send_sockets(c, SOCK_DEBUG);
}

static void admin_show_active_sockets(Client *c)
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

static void admin_show_pools(Client *c)
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

static void admin_show_stats(Client *c)
{
	admin_send_stats(c, STATS_ALL);
}

static void admin_show_stats_totals(Client *c)
{
	admin_send_stats(c, STATS_TOTALS);
}

static void admin_show_stats_averages(Client *c)
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

static void admin_show_totals(Client *c)
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

static void admin_show_databases(Client *c)
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

static void admin_show_users(Client *c)
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

static void admin_show_lists(Client *c)
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

static void admin_show_mem(Client *c)
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

static void admin_show_config(Client *c)
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

static void admin_show_version(Client *c)
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

/*
 * SHOW POLICY_STATS (pgmoat only, no pgbouncer column contract): what policy
 * evaluation costs per statement, from each worker's latency histograms.
 * on_query covers classifying the statement and every policy's on_query;
 * on_query_lua only the time inside Lua (its errors are on_query's).
 */
static const AdminColumn policy_stats_cols[] = {
	{ "hook", COLTYPE_TEXT }, { "calls", COLTYPE_NUMERIC }, { "errors", COLTYPE_NUMERIC },
	{ "avg_us", COLTYPE_NUMERIC }, { "p50_us", COLTYPE_NUMERIC }, { "p90_us", COLTYPE_NUMERIC },
	{ "p99_us", COLTYPE_NUMERIC }, { "max_us", COLTYPE_NUMERIC },
};

static void row_ns_as_us(Row *r, uint64_t ns)
{
	admin_row_fmt(r, "%" PRIu64 ".%03" PRIu64, ns / 1000, ns % 1000);
}

/* errors NULL: not counted for this row (SQL NULL). */
static void policy_stats_row(ResultSet *rs, const char *hook, const Histogram *w_hist,
			     const uint64_t *errors)
{
	Histogram h;
	Row r;

	histogram_init(&h);
	histogram_merge(&h, w_hist);	/* every worker's, once there are more */
	admin_row_reset(&r);
	admin_row_str(&r, hook);
	admin_row_u64(&r, h.count);
	if (errors)
		admin_row_u64(&r, *errors);
	else
		admin_row_str(&r, NULL);
	row_ns_as_us(&r, histogram_mean(&h));
	row_ns_as_us(&r, histogram_percentile(&h, 50));
	row_ns_as_us(&r, histogram_percentile(&h, 90));
	row_ns_as_us(&r, histogram_percentile(&h, 99));
	row_ns_as_us(&r, h.max);
	admin_rs_row(rs, &r);
}

static void admin_show_policy_stats(Client *c)
{
	ResultSet rs;
	const Worker *w = moat->worker;

	RS_BEGIN(&rs, policy_stats_cols);
	policy_stats_row(&rs, "on_query", &w->on_query_ns, &w->on_query_errors);
	policy_stats_row(&rs, "on_query_lua", &w->on_query_lua_ns, NULL);
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

static void admin_show_fds(Client *c)
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
static void admin_show_state(Client *c)
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
static void admin_show_dns_hosts(Client *c)
{
	ResultSet rs;

	RS_BEGIN(&rs, dns_hosts_cols);
	admin_rs_send(c, &rs, "SHOW");
}

static void admin_show_dns_zones(Client *c)
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

static void admin_show_help(Client *c)
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

static int admin_fake_param(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(admin_fake_params); i++) {
		if (strcasecmp(name, admin_fake_params[i].name) == 0)
			return (int)i;
	}
	return -1;
}

static void admin_show_fake(Client *c, int idx)
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

/* --------------------------------------------------------- PAUSE waiters */

typedef enum { ADMIN_WAIT_PAUSE, ADMIN_WAIT_CLOSE, ADMIN_WAIT_SUSPEND } AdminWaitKind;

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

static Client *admin_find_client(uint64_t id)
{
	List *item;

	list_for_each(item, &moat->worker->all_clients) {
		Client *c = container_of(item, Client, all_head);
		if (c->id == id)
			return c->state == CL_FREE ? NULL : c;
	}
	return NULL;
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

/* Answer now when the condition already holds, else later. */
static void admin_wait_or_answer(Client *c, AdminWaitKind kind, const char *db)
{
	bool reached = kind == ADMIN_WAIT_PAUSE ? admin_pause_reached(db)
		       : kind == ADMIN_WAIT_CLOSE ? admin_close_reached(db)
		       : suspend_buffers_flushed();

	if (reached)
		admin_ready(c, admin_wait_tags[kind]);
	else if (capture)	/* an answer that comes later has no place in a Parse/Execute flow */
		admin_refuse_wait(c, kind, db);
	else
		admin_wait_add(c, kind, db);
}

void admin_cleanup(void)
{
	List *item, *tmp;

	list_for_each_safe(item, &admin_waits, tmp)
		admin_wait_free(container_of(item, AdminWait, head));
	if (admin_wait_ev) {
		event_free(admin_wait_ev);
		admin_wait_ev = NULL;
	}
	console_db = NULL;
	console_pool = NULL;
}

/* --------------------------------------------------------------- commands */

/*
 * A database RESUME and ENABLE may name: in use, or listed by name in
 * [databases]. Unlike PAUSE they do not create one from "*" (pgbouncer).
 */
static Database *admin_lookup_db(const char *name)
{
	const DbConfig *dc = config_find_db(moat->cfg, name);
	List *item;

	list_for_each(item, &moat->databases) {
		Database *db = container_of(item, Database, head);
		if (!db->dead && strcmp(db->name, name) == 0)
			return db;
	}
	if (dc && strcmp(dc->name, name) == 0)
		return pool_find_database(name);
	return NULL;
}

static void admin_cmd_pause(Client *c, const char *arg)
{
	if (moat->state != MOAT_RUNNING) {
		admin_error(c, "already suspended/paused");
		return;
	}
	if (!*arg) {
		log_info("PAUSE command issued");
		pool_pause_all(true);
		admin_wait_or_answer(c, ADMIN_WAIT_PAUSE, NULL);
		return;
	}
	log_info("PAUSE '%s' command issued", arg);
	if (admin_is_console_db(arg)) {
		admin_error(c, "cannot pause admin db: %s", arg);
	} else if (!pool_find_database(arg) || !pool_pause_db(arg, true)) {
		admin_error(c, "no such database: %s", arg);
	} else {
		admin_wait_or_answer(c, ADMIN_WAIT_PAUSE, arg);
	}
}

static void admin_cmd_resume(Client *c, const char *arg)
{
	Database *db;

	if (!*arg) {
		log_info("RESUME command issued");
		if (moat->state == MOAT_DRAINING)
			admin_error(c, "pooler is shutting down");
		else if (moat->state == MOAT_RUNNING)
			admin_error(c, "pooler is not paused/suspended");
		else {
			if (moat->state == MOAT_SUSPENDED)
				suspend_set(false);
			pool_pause_all(false);
			admin_ready(c, "RESUME");
		}
		return;
	}
	log_info("RESUME '%s' command issued", arg);
	db = admin_lookup_db(arg);
	if (!db)
		admin_error(c, "no such database: %s", arg);
	else if (!db->paused)
		admin_error(c, "database %s is not paused", arg);
	else if (!pool_pause_db(arg, false))
		admin_error(c, "no such database: %s", arg);
	else
		admin_ready(c, "RESUME");
}

static void admin_cmd_disable(Client *c, const char *arg)
{
	log_info("DISABLE '%s' command issued", arg);
	if (admin_is_console_db(arg))
		admin_error(c, "cannot disable admin db: %s", arg);
	else if (!pool_find_database(arg) || !pool_disable_db(arg, true))
		admin_error(c, "no such database: %s", arg);
	else
		admin_ready(c, "DISABLE");
}

static void admin_cmd_enable(Client *c, const char *arg)
{
	log_info("ENABLE '%s' command issued", arg);
	if (admin_is_console_db(arg))
		admin_error(c, "cannot enable admin db: %s", arg);
	else if (!admin_lookup_db(arg) || !pool_disable_db(arg, false))
		admin_error(c, "no such database: %s", arg);
	else
		admin_ready(c, "ENABLE");
}

static void admin_cmd_reconnect(Client *c, const char *arg)
{
	if (!*arg) {
		log_info("RECONNECT command issued");
		pool_reconnect_db(NULL);
		admin_ready(c, "RECONNECT");
		return;
	}
	log_info("RECONNECT '%s' command issued", arg);
	if (admin_is_console_db(arg)) {
		admin_error(c, "cannot reconnect admin db: %s", arg);
	} else if (!pool_find_database(arg)) {
		admin_error(c, "no such database: %s", arg);
	} else {
		pool_reconnect_db(arg);
		admin_ready(c, "RECONNECT");
	}
}

/* KILL db: drop its clients and servers and leave it paused (RESUME db reopens it). */
static void admin_cmd_kill(Client *c, const char *arg)
{
	if (moat->state != MOAT_RUNNING) {
		admin_error(c, "already suspended/paused");
		return;
	}
	log_info("KILL '%s' command issued", arg);
	if (admin_is_console_db(arg)) {
		admin_error(c, "cannot kill admin db: %s", arg);
	} else if (!pool_find_database(arg)) {
		admin_error(c, "no such database: %s", arg);
	} else {
		/* pgbouncer leaves a killed database paused, even one without pools */
		if (!pool_pause_db(arg, true))
			log_warning("KILL: database %s vanished", arg);
		pool_kill_db(arg);
		admin_ready(c, "KILL");
	}
}

/* KILL_CLIENT's argument: the id of the logs (C-<id>), or the ptr of SHOW CLIENTS. */
static Client *admin_find_client_by_arg(const char *arg)
{
	char text[ADMIN_ARG_MAX + 2];
	List *item;
	char *end;
	unsigned long long id;

	if (strncasecmp(arg, "0x", 2) != 0) {
		id = strtoull(arg, &end, 10);
		return *arg && !*end ? admin_find_client(id) : NULL;
	}
	list_for_each(item, &moat->worker->all_clients) {
		Client *c = container_of(item, Client, all_head);
		snprintf(text, sizeof(text), "%p", (void *)c);
		if (strcasecmp(text, arg) == 0)
			return c->state == CL_FREE ? NULL : c;
	}
	return NULL;
}

/* KILL_CLIENT id (pgbouncer 1.23): drop one client connection now. */
static void admin_cmd_kill_client(Client *c, const char *arg)
{
	Client *victim;

	if (!*arg) {
		admin_error(c, "a client id is required");
		return;
	}
	log_info("KILL_CLIENT '%s' command issued", arg);
	victim = admin_find_client_by_arg(arg);
	if (!victim)
		admin_error(c, "no such client: %s", arg);
	else if (victim == c)
		admin_error(c, "cannot kill your own connection");
	else {
		client_disconnect(victim, "57P01", "terminating connection due to administrator "
				  "command (KILL_CLIENT)");
		admin_ready(c, "KILL_CLIENT");
	}
}

static void admin_cmd_wait_close(Client *c, const char *arg)
{
	if (!*arg) {
		log_info("WAIT_CLOSE command issued");
		admin_wait_or_answer(c, ADMIN_WAIT_CLOSE, NULL);
		return;
	}
	log_info("WAIT_CLOSE '%s' command issued", arg);
	if (admin_is_console_db(arg))
		admin_error(c, "cannot wait in admin db: %s", arg);
	else if (!pool_find_database(arg))
		admin_error(c, "no such database: %s", arg);
	else
		admin_wait_or_answer(c, ADMIN_WAIT_CLOSE, arg);
}

static void admin_cmd_reload(Client *c, const char *arg)
{
	char err[512] = "";

	(void)arg;
	log_info("RELOAD command issued");
	if (moat_reload(err, sizeof(err)))
		admin_ready(c, "RELOAD");
	else
		admin_error_code(c, "F0000", "RELOAD failed: %s", err[0] ? err : "see the log");
}

/* As in pgbouncer: no answer, the connection ends with the process. */
static void admin_cmd_shutdown(Client *c, const char *arg)
{
	(void)arg;
	slog_info(c, "SHUTDOWN command issued");
	moat_shutdown(true);
}

/*
 * SUSPEND: stop accepting and reading (admin consoles excepted), answer once
 * every buffer is flushed or suspend_timeout dropped the ones that were not.
 * pgbouncer does this to hand its sockets to a new process; pgmoat has no
 * such handover, so SUSPEND is a freeze that RESUME lifts.
 */
static void admin_cmd_suspend(Client *c, const char *arg)
{
	(void)arg;
	if (moat->state != MOAT_RUNNING) {
		admin_error(c, "already suspended/paused");
		return;
	}
	log_info("SUSPEND command issued");
	suspend_set(true);
	admin_wait_or_answer(c, ADMIN_WAIT_SUSPEND, NULL);
}

/* ------------------------------------------- approvals and policies (hold) */

static const AdminColumn approval_cols[] = {
	{ "id", COLTYPE_INT8 }, { "client", COLTYPE_TEXT }, { "user", COLTYPE_TEXT },
	{ "database", COLTYPE_TEXT }, { "statement", COLTYPE_TEXT }, { "reason", COLTYPE_TEXT },
	{ "policy", COLTYPE_TEXT }, { "protocol", COLTYPE_TEXT }, { "server", COLTYPE_TEXT },
	{ "held_at", COLTYPE_TEXT }, { "wait", COLTYPE_INT4 }, { "wait_us", COLTYPE_INT4 },
	{ "timeout_at", COLTYPE_TEXT }, { "replica", COLTYPE_TEXT },
};

static void approval_row(ResultSet *rs, const ApprovalInfo *ai)
{
	char held[64], until[64];
	Row r;

	admin_format_time(held, sizeof(held), ai->held_at);
	admin_format_time(until, sizeof(until), ai->timeout_at);
	admin_row_reset(&r);
	admin_row_u64(&r, ai->id);
	admin_row_fmt(&r, "C-%" PRIu64, ai->client_id);
	admin_row_str(&r, ai->user);
	admin_row_str(&r, ai->database);
	admin_row_str(&r, ai->statement);
	admin_row_str(&r, ai->reason);
	admin_row_str(&r, ai->policy);
	admin_row_str(&r, ai->protocol);
	if (ai->server_id)
		admin_row_fmt(&r, "S-%" PRIu64, ai->server_id);
	else
		admin_row_str(&r, NULL);
	admin_row_str(&r, held);
	admin_row_int(&r, ai->waited / USEC_PER_SEC);
	admin_row_int(&r, ai->waited % USEC_PER_SEC);
	admin_row_str(&r, until);
	admin_row_str(&r, ai->replica);
	admin_rs_row(rs, &r);
}

static void admin_show_approvals(Client *c)
{
	int n;
	ApprovalInfo *list = approvals_list(&n);
	ResultSet rs;

	RS_BEGIN(&rs, approval_cols);
	for (int i = 0; i < n; i++)
		approval_row(&rs, &list[i]);
	free(list);
	admin_rs_send(c, &rs, "SHOW");
}

static const AdminColumn policy_cols[] = {
	{ "position", COLTYPE_INT4 }, { "file", COLTYPE_TEXT }, { "hooks", COLTYPE_TEXT },
	{ "mode", COLTYPE_TEXT },
};

static void admin_show_policies(Client *c)
{
	const PolicyEngine *e = c->worker->policy;
	int n = e ? policy_engine_script_count(e) : 0;
	ResultSet rs;

	RS_BEGIN(&rs, policy_cols);
	for (int i = 0; i < n; i++) {
		char hooks[128];
		Row r;

		policy_engine_script_hooks(e, i, hooks, sizeof(hooks));
		admin_row_reset(&r);
		admin_row_int(&r, i + 1);
		admin_row_str(&r, policy_engine_script_path(e, i));
		admin_row_str(&r, hooks);
		admin_row_str(&r, policy_mode_name(moat->cfg->policy.mode));
		admin_rs_row(&rs, &r);
	}
	admin_rs_send(c, &rs, "SHOW");
}

/* An approval id: a positive decimal number. */
static bool admin_parse_approval_id(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return false;
	v = strtoull(s, &end, 10);
	if (*end || v == 0)
		return false;
	*out = v;
	return true;
}

/* Who decided, for the logs and the audit record: the console user. */
static const char *admin_reviewer(const Client *c)
{
	return c->user_name ? c->user_name : "(console)";
}

/* The answer to APPROVE/DENY; a decision sent to another replica says so in a notice. */
static void admin_decided(Client *c, ApprovalResult r, const char *tag, uint64_t id)
{
	PktBuf pb;

	if (r == APPROVAL_NOT_FOUND) {
		admin_error_code(c, "42704", "no such approval: %" PRIu64
				 " (already decided, timed out, or its client left)", id);
		return;
	}
	slog_info(c, "%s %" PRIu64 "%s", tag, id, r == APPROVAL_FORWARDED ? " (forwarded)" : "");
	pktbuf_init(&pb);
	if (r == APPROVAL_FORWARDED)
		pktbuf_notice(&pb, "00000", "held by another replica: the decision was sent to it, "
			      "which applies it if the statement still waits");
	pktbuf_command_complete(&pb, tag);
	pktbuf_ready(&pb, 'I');
	admin_send(c, &pb);
}

static void admin_cmd_approve(Client *c, const char *arg)
{
	uint64_t id;

	if (!admin_parse_approval_id(arg, &id)) {
		admin_error_code(c, "22023", "APPROVE needs an approval id (SHOW APPROVALS)");
		return;
	}
	admin_decided(c, approvals_approve(id, admin_reviewer(c)), "APPROVE", id);
}

static void admin_deny(Client *c, const char *idtext, const char *reason)
{
	uint64_t id;

	if (!c->admin_can_write) {
		admin_error(c, "admin access needed");
		return;
	}
	if (!admin_parse_approval_id(idtext, &id)) {
		admin_error_code(c, "22023", "DENY needs an approval id (SHOW APPROVALS)");
		return;
	}
	admin_decided(c, approvals_deny(id, admin_reviewer(c), reason), "DENY", id);
}

static void admin_cmd_deny(Client *c, const char *arg)
{
	admin_deny(c, arg, "");
}

typedef struct AdminShow {
	const char *name;
	void (*fn)(Client *c);
	bool needs_write;	/* SHOW FDS exposes cancel keys: admin_users only */
} AdminShow;

static const AdminShow admin_shows[] = {
	{ "active_sockets", admin_show_active_sockets, false },
	{ "approvals", admin_show_approvals, false },
	{ "clients", admin_show_clients, false },
	{ "config", admin_show_config, false },
	{ "databases", admin_show_databases, false },
	{ "dns_hosts", admin_show_dns_hosts, false },
	{ "dns_zones", admin_show_dns_zones, false },
	{ "fds", admin_show_fds, true },
	{ "help", admin_show_help, false },
	{ "lists", admin_show_lists, false },
	{ "mem", admin_show_mem, false },
	{ "policies", admin_show_policies, false },
	{ "policy_stats", admin_show_policy_stats, false },
	{ "pools", admin_show_pools, false },
	{ "servers", admin_show_servers, false },
	{ "sockets", admin_show_sockets, false },
	{ "state", admin_show_state, false },
	{ "stats", admin_show_stats, false },
	{ "stats_averages", admin_show_stats_averages, false },
	{ "stats_totals", admin_show_stats_totals, false },
	{ "totals", admin_show_totals, false },
	{ "users", admin_show_users, false },
	{ "version", admin_show_version, false },
};

/* Set while a query is handled, for "invalid command '...'". */
static const char *current_query;

static void admin_syntax_error(Client *c)
{
	admin_error(c, "invalid command '%.900s', use SHOW HELP;", current_query ? current_query : "");
}

static void admin_cmd_show(Client *c, const char *arg)
{
	int fake = admin_fake_param(arg);

	if (fake >= 0) {
		admin_show_fake(c, fake);
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(admin_shows); i++) {
		if (strcasecmp(arg, admin_shows[i].name) != 0)
			continue;
		if (admin_shows[i].needs_write && !c->admin_can_write)
			admin_error(c, "admin access needed");
		else
			admin_shows[i].fn(c);
		return;
	}
	admin_syntax_error(c);
}

typedef enum {
	ARG_NONE,		/* an argument is a syntax error */
	ARG_OPTIONAL,
	ARG_DB_REQUIRED,	/* "a database is required" without one */
} ArgRule;

typedef struct AdminCommand {
	const char *name;
	void (*fn)(Client *c, const char *arg);
	bool needs_write;	/* admin_users only; stats_users get "admin access needed" */
	ArgRule arg;
} AdminCommand;

static const AdminCommand admin_commands[] = {
	{ "approve", admin_cmd_approve, true, ARG_OPTIONAL },
	{ "deny", admin_cmd_deny, true, ARG_OPTIONAL },
	{ "disable", admin_cmd_disable, true, ARG_DB_REQUIRED },
	{ "enable", admin_cmd_enable, true, ARG_DB_REQUIRED },
	{ "kill", admin_cmd_kill, true, ARG_DB_REQUIRED },
	{ "kill_client", admin_cmd_kill_client, true, ARG_OPTIONAL },
	{ "pause", admin_cmd_pause, true, ARG_OPTIONAL },
	{ "reconnect", admin_cmd_reconnect, true, ARG_OPTIONAL },
	{ "reload", admin_cmd_reload, true, ARG_NONE },
	{ "resume", admin_cmd_resume, true, ARG_OPTIONAL },
	{ "select", admin_cmd_show, false, ARG_OPTIONAL },
	{ "show", admin_cmd_show, false, ARG_OPTIONAL },
	{ "shutdown", admin_cmd_shutdown, true, ARG_NONE },
	{ "suspend", admin_cmd_suspend, true, ARG_NONE },
	{ "wait_close", admin_cmd_wait_close, true, ARG_OPTIONAL },
};

static void admin_exec(Client *c, const char *cmd, const char *arg)
{
	for (size_t i = 0; i < ARRAY_SIZE(admin_commands); i++) {
		const AdminCommand *ac = &admin_commands[i];
		if (strcasecmp(cmd, ac->name) != 0)
			continue;
		if (ac->arg == ARG_NONE && *arg)
			admin_syntax_error(c);
		else if (ac->needs_write && !c->admin_can_write)
			admin_error(c, "admin access needed");
		else if (ac->arg == ARG_DB_REQUIRED && !*arg)
			admin_error(c, "a database is required");
		else
			ac->fn(c, arg);
		return;
	}
	admin_syntax_error(c);
}

/* ------------------------------------------------------------------- SET */

typedef enum { SET_INT, SET_DURATION, SET_BOOL, SET_VERBOSE, SET_POOL_MODE, SET_STRING } SetKind;

/* The settings SET may change at run time: plain Config fields the pooler reads on use. */
typedef struct AdminSetting {
	const char *key;
	SetKind kind;
	size_t offset;
} AdminSetting;

#define SETTING(field, kind) { #field, kind, offsetof(Config, field) }
static const AdminSetting admin_settings[] = {
	SETTING(default_pool_size, SET_INT),
	SETTING(min_pool_size, SET_INT),
	SETTING(reserve_pool_size, SET_INT),
	SETTING(max_client_conn, SET_INT),
	SETTING(max_db_connections, SET_INT),
	SETTING(max_user_connections, SET_INT),
	SETTING(reserve_pool_timeout, SET_DURATION),
	SETTING(server_lifetime, SET_DURATION),
	SETTING(server_idle_timeout, SET_DURATION),
	SETTING(server_connect_timeout, SET_DURATION),
	SETTING(server_login_retry, SET_DURATION),
	SETTING(server_check_delay, SET_DURATION),
	SETTING(client_login_timeout, SET_DURATION),
	SETTING(autodb_idle_timeout, SET_DURATION),
	SETTING(query_timeout, SET_DURATION),
	SETTING(query_wait_timeout, SET_DURATION),
	SETTING(client_idle_timeout, SET_DURATION),
	SETTING(idle_transaction_timeout, SET_DURATION),
	SETTING(log_connections, SET_BOOL),
	SETTING(log_disconnections, SET_BOOL),
	SETTING(log_pooler_errors, SET_BOOL),
	SETTING(log_stats, SET_BOOL),
	SETTING(server_reset_query_always, SET_BOOL),
	SETTING(application_name_add_host, SET_BOOL),
	SETTING(verbose, SET_VERBOSE),
	SETTING(pool_mode, SET_POOL_MODE),
	SETTING(server_reset_query, SET_STRING),
	SETTING(server_check_query, SET_STRING),
};
#undef SETTING

static bool admin_parse_int(const char *s, int *out)
{
	char *end;
	long v;

	if (!*s)
		return false;
	v = strtol(s, &end, 10);
	if (*end || v < 0 || v > INT32_MAX)
		return false;
	*out = (int)v;
	return true;
}

static bool admin_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "1", "on", "yes", "true" };
	static const char *const no[] = { "0", "off", "no", "false" };

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
			*out = strcasecmp(s, yes[i]) == 0;
			return true;
		}
	}
	return false;
}

static bool admin_parse_pool_mode(const char *s, PoolMode *out)
{
	const PoolMode modes[] = { POOL_SESSION, POOL_TRANSACTION, POOL_STATEMENT };

	for (size_t i = 0; i < ARRAY_SIZE(modes); i++) {
		if (strcasecmp(s, config_pool_mode_name(modes[i])) == 0) {
			*out = modes[i];
			return true;
		}
	}
	return false;
}

/* Parse val for the setting and store it in cfg; false leaves cfg untouched. */
static bool admin_setting_apply(Config *cfg, const AdminSetting *st, const char *val)
{
	void *field = (char *)cfg + st->offset;
	int i;
	bool b;
	usec_t d;
	PoolMode m;

	switch (st->kind) {
	case SET_INT:
		if (!admin_parse_int(val, &i))
			return false;
		*(int *)field = i;
		return true;
	case SET_DURATION:
		if (!config_parse_duration(val, &d) || d < 0)
			return false;
		*(usec_t *)field = d;
		return true;
	case SET_BOOL:
		if (!admin_parse_bool(val, &b))
			return false;
		*(bool *)field = b;
		return true;
	case SET_VERBOSE:
		if (!admin_parse_int(val, &i))
			return false;
		*(int *)field = i;
		log_verbosity = i >= LOG_NOISE - LOG_INFO ? LOG_NOISE : LOG_INFO + i;
		return true;
	case SET_POOL_MODE:
		if (!admin_parse_pool_mode(val, &m))
			return false;
		*(PoolMode *)field = m;
		return true;
	case SET_STRING:
		free(*(char **)field);
		*(char **)field = xstrdup(val);
		return true;
	}
	return false;
}

/* Is key a configuration key at all (SHOW CONFIG lists it)? */
static bool admin_is_config_key(const char *key)
{
	int n = config_key_count();
	bool found = false;

	for (int i = 0; i < n && !found; i++) {
		ConfigKeyView v;
		config_key_view(moat->cfg, i, &v);
		found = strcasecmp(v.key, key) == 0;
		free(v.value);
	}
	return found;
}

static void admin_set(Client *c, const char *key, const char *val)
{
	char tag[ADMIN_ARG_MAX + ADMIN_VAL_MAX + 8];

	if (admin_fake_param(key) >= 0) {
		PktBuf pb;
		pktbuf_init(&pb);
		pktbuf_notice(&pb, "00000", "SET ignored");
		pktbuf_command_complete(&pb, "SET");
		pktbuf_ready(&pb, 'I');
		admin_send(c, &pb);
		return;
	}
	if (!c->admin_can_write) {
		admin_error(c, "admin access needed");
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(admin_settings); i++) {
		if (strcasecmp(key, admin_settings[i].key) != 0)
			continue;
		if (!admin_setting_apply(moat->cfg, &admin_settings[i], val)) {
			admin_error(c, "SET failed");
			return;
		}
		moat->cfg_epoch++;
		slog_info(c, "SET %s=%s", admin_settings[i].key, val);
		snprintf(tag, sizeof(tag), "SET %s=%s", key, val);
		admin_ready(c, tag);
		pool_maintain_all();	/* a bigger pool or a new mode may serve waiters now */
		return;
	}
	if (admin_is_config_key(key))
		admin_error(c, "SET failed: %s cannot be changed online; edit the config file and RELOAD",
			    key);
	else
		admin_error(c, "SET failed");
}

/* ---------------------------------------------------------------- parsing */

typedef enum { PARSE_OK, PARSE_NO_MATCH, PARSE_TOO_LONG } ParseResult;

static bool parse_is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static bool parse_is_word_char(char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

/* Skip blanks; true when there was at least one. */
static bool parse_space(const char **p)
{
	const char *start = *p;

	while (parse_is_space(**p))
		(*p)++;
	return *p != start;
}

/* A quoted token: quote ... quote, the quote doubled inside stands for itself. */
static ParseResult parse_quoted(const char **p, char quote, char *out, size_t outsz)
{
	const char *s = *p + 1;
	size_t n = 0;

	for (;;) {
		if (*s == '\0')
			return PARSE_NO_MATCH;
		if (*s == quote && s[1] != quote)
			break;
		if (*s == quote)
			s++;
		if (n + 1 >= outsz)
			return PARSE_TOO_LONG;
		out[n++] = *s++;
	}
	out[n] = '\0';
	*p = s + 1;
	return PARSE_OK;
}

/* WORD: [0-9A-Za-z_]+ or "quoted". */
static ParseResult parse_word(const char **p, char *out, size_t outsz)
{
	size_t n = 0;

	if (**p == '"')
		return parse_quoted(p, '"', out, outsz);
	while (parse_is_word_char((*p)[n]))
		n++;
	if (n == 0)
		return PARSE_NO_MATCH;
	if (n >= outsz)
		return PARSE_TOO_LONG;
	memcpy(out, *p, n);
	out[n] = '\0';
	*p += n;
	return PARSE_OK;
}

/* Optional blanks, one optional ';' with blanks, then the end. */
static bool parse_end(const char *p)
{
	parse_space(&p);
	if (*p == ';') {
		p++;
		parse_space(&p);
	}
	return *p == '\0';
}

/* Case-insensitive keyword (what follows is checked by the caller's grammar). */
static bool parse_keyword(const char **p, const char *kw)
{
	size_t n = strlen(kw);

	if (strncasecmp(*p, kw, n) != 0)
		return false;
	*p += n;
	return true;
}

/* CMD [ARG] [;] */
static ParseResult parse_command(const char *sql, char *cmd, char *arg)
{
	const char *p = sql;
	ParseResult r;

	arg[0] = '\0';
	parse_space(&p);
	r = parse_word(&p, cmd, ADMIN_CMD_MAX);
	if (r != PARSE_OK)
		return r;
	if (parse_space(&p) && (parse_is_word_char(*p) || *p == '"')) {
		r = parse_word(&p, arg, ADMIN_ARG_MAX);
		if (r != PARSE_OK)
			return r;
	}
	return parse_end(p) ? PARSE_OK : PARSE_NO_MATCH;
}

/* SET KEY (=|TO) (WORD|'string') [;] */
static ParseResult parse_set(const char *sql, char *key, char *val)
{
	const char *p = sql;
	ParseResult r;

	parse_space(&p);
	if (!parse_keyword(&p, "set") || !parse_space(&p))
		return PARSE_NO_MATCH;
	r = parse_word(&p, key, ADMIN_ARG_MAX);
	if (r != PARSE_OK)
		return r;
	parse_space(&p);
	if (!parse_keyword(&p, "=") && !parse_keyword(&p, "to"))
		return PARSE_NO_MATCH;
	parse_space(&p);
	if (*p == '\'')
		r = parse_quoted(&p, '\'', val, ADMIN_VAL_MAX);
	else
		r = parse_word(&p, val, ADMIN_VAL_MAX);
	if (r != PARSE_OK)
		return r;
	if (!key[0])
		return PARSE_TOO_LONG;	/* pgbouncer: an empty key is a bad argument */
	return parse_end(p) ? PARSE_OK : PARSE_NO_MATCH;
}

/* DENY ID (WORD...|'string') [;]: the reason may be several words (pgmoat addition). */
static ParseResult parse_deny(const char *sql, char *id, char *reason)
{
	const char *p = sql;
	ParseResult r;
	size_t n;

	reason[0] = '\0';
	parse_space(&p);
	if (!parse_keyword(&p, "deny") || !parse_space(&p))
		return PARSE_NO_MATCH;
	r = parse_word(&p, id, ADMIN_ARG_MAX);
	if (r != PARSE_OK || !parse_space(&p))
		return r != PARSE_OK ? r : parse_end(p) ? PARSE_OK : PARSE_NO_MATCH;
	if (*p == '\'')
		return parse_quoted(&p, '\'', reason, ADMIN_VAL_MAX) == PARSE_OK && parse_end(p)
		       ? PARSE_OK : PARSE_NO_MATCH;
	n = strlen(p);
	while (n > 0 && (parse_is_space(p[n - 1]) || p[n - 1] == ';'))
		n--;
	if (n >= ADMIN_VAL_MAX)
		return PARSE_TOO_LONG;
	memcpy(reason, p, n);
	reason[n] = '\0';
	return PARSE_OK;
}

static void admin_dispatch(Client *c, const char *sql)
{
	char cmd[ADMIN_CMD_MAX], arg[ADMIN_ARG_MAX], val[ADMIN_VAL_MAX];
	ParseResult r = parse_deny(sql, arg, val);

	if (r == PARSE_OK) {
		admin_deny(c, arg, val);
		return;
	}
	if (r == PARSE_TOO_LONG) {
		admin_error(c, "bad arguments");
		return;
	}
	r = parse_command(sql, cmd, arg);
	if (r == PARSE_OK) {
		admin_exec(c, cmd, arg);
		return;
	}
	if (r == PARSE_NO_MATCH)
		r = parse_set(sql, arg, val);
	if (r == PARSE_OK)
		admin_set(c, arg, val);
	else if (r == PARSE_TOO_LONG)
		admin_error(c, "bad arguments");
	else
		admin_syntax_error(c);
}

static void admin_run(Client *c, const char *sql)
{
	slog_debug(c, "admin query: %s", sql);
	c->query_start = util_now_mono();	/* SHOW CLIENTS wait_us, as pgbouncer */
	if (c->pool) {
		/* pgbouncer counts console queries in SHOW STATS too */
		c->pool->stats.total.query_count++;
		c->pool->stats.total.xact_count++;
	}
	current_query = sql;
	admin_dispatch(c, sql);
	current_query = NULL;
}

void admin_handle_query(Client *c, const char *sql)
{
	AdminWait *w = admin_wait_of(c);

	if (w) {
		strlist_add(&w->queued, sql);	/* answered in order after the wait */
		return;
	}
	admin_run(c, sql);
}

void admin_run_captured(Client *c, const char *sql, PktBuf *out)
{
	if (admin_wait_of(c)) {
		pktbuf_error(out, "ERROR", "0A000", "a PAUSE or WAIT_CLOSE of this connection is "
			     "still waiting");
		pktbuf_ready(out, 'I');
		return;
	}
	capture = out;
	admin_run(c, sql);
	capture = NULL;
}

bool admin_is_read_only(const char *sql)
{
	char cmd[ADMIN_CMD_MAX], arg[ADMIN_ARG_MAX];

	return parse_command(sql, cmd, arg) == PARSE_OK &&
	       (strcasecmp(cmd, "show") == 0 || strcasecmp(cmd, "select") == 0);
}

/* ---------------------------------------------------------- setup, login */

/* What pgbouncer's console tells a new connection about itself. */
static const struct {
	const char *name;
	const char *value;
} admin_welcome_params[] = {
	{ "server_version", ADMIN_COMPAT_VERSION "/bouncer" },
	{ "client_encoding", "UTF8" },
	{ "server_encoding", "UTF8" },
	{ "DateStyle", "ISO" },
	{ "TimeZone", "GMT" },
	{ "standard_conforming_strings", "on" },
	{ "is_superuser", "on" },
};

void admin_send_welcome(Client *c)
{
	const char *app = c->vars.values[VAR_APPLICATION_NAME];
	PktBuf pb;

	pktbuf_init(&pb);
	for (size_t i = 0; i < ARRAY_SIZE(admin_welcome_params); i++)
		pktbuf_param_status(&pb, admin_welcome_params[i].name, admin_welcome_params[i].value);
	if (app)
		pktbuf_param_status(&pb, "application_name", app);
	pktbuf_backend_key(&pb, c->cancel_pid, c->cancel_key);
	pktbuf_ready(&pb, 'I');
	if (!client_send_pktbuf(c, &pb))
		client_disconnect(c, "53200", "could not build the admin welcome");
	pktbuf_free(&pb);
}

/* The console's database entry, shaped like pgbouncer's (SHOW DATABASES row). */
static DbConfig *admin_db_config(void)
{
	DbConfig *dc = xcalloc(1, sizeof(*dc));

	dc->name = xstrdup("pgbouncer");
	dc->dbname = xstrdup("pgbouncer");
	dc->user = xstrdup("pgbouncer");	/* force_user, as pgbouncer shows it */
	dc->port = moat->cfg ? moat->cfg->listen_port : 6432;
	dc->pool_size = 2;
	dc->min_pool_size = -1;
	dc->reserve_pool = -1;
	dc->max_db_connections = -1;
	dc->pool_mode = POOL_STATEMENT;
	return dc;
}

void admin_setup(void)
{
	Database *db;

	if (console_db)
		return;
	db = xcalloc(1, sizeof(*db));
	db->name = xstrdup("pgbouncer");
	db->cfg = admin_db_config();
	db->is_admin = true;
	list_append(&moat->databases, &db->head);
	console_db = db;
	console_pool = pool_get(db, pool_get_user("pgbouncer"));
}
