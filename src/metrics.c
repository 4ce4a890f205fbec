/*
 * Prometheus exposition of what SHOW POOLS, SHOW STATS and the global
 * counters report. Every family has HELP and TYPE lines; label values are
 * escaped as the format requires (backslash, double quote, newline);
 * counters end in _total, times are in seconds.
 */
#include "metrics.h"
#include "http.h"
#include "pgmoat.h"
#include "pool.h"
#include "build_config.h"

#include <string.h>

/* Append a label value with \\, \" and \n escaped. */
static void metrics_label_value(struct evbuffer *out, const char *v)
{
	for (const char *p = v; *p; p++) {
		if (*p == '\\')
			evbuffer_add(out, "\\\\", 2);
		else if (*p == '"')
			evbuffer_add(out, "\\\"", 2);
		else if (*p == '\n')
			evbuffer_add(out, "\\n", 2);
		else
			evbuffer_add(out, p, 1);
	}
}

static void metrics_family(struct evbuffer *out, const char *name, const char *type,
			   const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{database="..",user=".."[,state=".."]} value */
static void metrics_pool_sample(struct evbuffer *out, const char *name, const Pool *p,
				const char *state, double value)
{
	evbuffer_add_printf(out, "%s{database=\"", name);
	metrics_label_value(out, p->db->name);
	evbuffer_add(out, "\",user=\"", 8);
	metrics_label_value(out, p->user->name);
	if (state)
		evbuffer_add_printf(out, "\",state=\"%s", state);
	evbuffer_add_printf(out, "\"} %.17g\n", value);
}

typedef enum { POOL_CLIENTS, POOL_SERVERS } PoolCountKind;

typedef struct StateCount {
	const char *state;
	size_t list_offset;	/* the pool's list of that state */
} StateCount;

static const StateCount client_states[] = {
	{ "active", offsetof(Pool, active_clients) },
	{ "waiting", offsetof(Pool, waiting_clients) },
	{ "waiting_login", offsetof(Pool, waiting_login_clients) },
};

static const StateCount server_states[] = {
	{ "active", offsetof(Pool, active_servers) },
	{ "idle", offsetof(Pool, idle_servers) },
	{ "used", offsetof(Pool, used_servers) },
	{ "tested", offsetof(Pool, tested_servers) },
	{ "login", offsetof(Pool, login_servers) },
};

static void metrics_pool_states(struct evbuffer *out, const char *name, const StateCount *st,
				size_t n)
{
	List *item;
	list_for_each(item, &moat->pools) {
		const Pool *p = container_of(item, Pool, head);
		for (size_t i = 0; i < n; i++) {
			const List *l = (const List *)((const char *)p + st[i].list_offset);
			metrics_pool_sample(out, name, p, st[i].state, (double)list_count(l));
		}
	}
}

typedef struct PoolCounter {
	const char *name;
	const char *help;
	size_t offset;		/* in StatCounters */
	double scale;		/* usec -> seconds, or 1 */
} PoolCounter;

static const PoolCounter pool_counters[] = {
	{ "pgmoat_pool_transactions_total", "Transactions completed (SHOW STATS total_xact_count).",
	  offsetof(StatCounters, xact_count), 1 },
	{ "pgmoat_pool_queries_total", "Queries completed (SHOW STATS total_query_count).",
	  offsetof(StatCounters, query_count), 1 },
	{ "pgmoat_pool_received_bytes_total", "Bytes received from clients.",
	  offsetof(StatCounters, bytes_received), 1 },
	{ "pgmoat_pool_sent_bytes_total", "Bytes sent to clients.",
	  offsetof(StatCounters, bytes_sent), 1 },
	{ "pgmoat_pool_transaction_seconds_total", "Time spent in transactions.",
	  offsetof(StatCounters, xact_time), 1e-6 },
	{ "pgmoat_pool_query_seconds_total", "Time spent in queries.",
	  offsetof(StatCounters, query_time), 1e-6 },
	{ "pgmoat_pool_wait_seconds_total", "Time clients waited for a server.",
	  offsetof(StatCounters, wait_time), 1e-6 },
	{ "pgmoat_pool_server_assignments_total", "Times a server was assigned to a client.",
	  offsetof(StatCounters, server_assignment_count), 1 },
};

static void metrics_pool_counters(struct evbuffer *out)
{
	for (size_t i = 0; i < ARRAY_SIZE(pool_counters); i++) {
		const PoolCounter *pc = &pool_counters[i];
		metrics_family(out, pc->name, "counter", pc->help);
		List *item;
		list_for_each(item, &moat->pools) {
			const Pool *p = container_of(item, Pool, head);
			uint64_t v = *(const uint64_t *)((const char *)&p->stats.total + pc->offset);
			metrics_pool_sample(out, pc->name, p, NULL, (double)v * pc->scale);
		}
	}
}

static void metrics_pool_maxwait(struct evbuffer *out)
{
	usec_t now = util_now_mono();
	metrics_family(out, "pgmoat_pool_maxwait_seconds", "gauge",
		       "How long the oldest waiting client has waited (SHOW POOLS maxwait).");
	List *item;
	list_for_each(item, &moat->pools) {
		const Pool *p = container_of(item, Pool, head);
		usec_t w;
		pool_max_wait(p, now, &w);
		metrics_pool_sample(out, "pgmoat_pool_maxwait_seconds", p, NULL,
				    w > 0 ? (double)w / 1e6 : 0);
	}
}

static void metrics_global(struct evbuffer *out, const char *name, const char *type,
			   const char *help, double value)
{
	metrics_family(out, name, type, help);
	evbuffer_add_printf(out, "%s %.17g\n", name, value);
}

static void metrics_process(struct evbuffer *out)
{
	metrics_family(out, "pgmoat_build_info", "gauge", "pgmoat version; the value is 1.");
	evbuffer_add(out, "pgmoat_build_info{version=\"", 27);
	metrics_label_value(out, PACKAGE_VERSION);
	evbuffer_add_printf(out, "\",libevent=\"%s\"} 1\n", event_get_version());
	metrics_global(out, "pgmoat_uptime_seconds", "gauge", "Seconds since pgmoat started.",
		       (double)(util_now_wall() - moat->start_time) / 1e6);
	metrics_global(out, "pgmoat_ready", "gauge", "1 when /readyz answers 200.",
		       moat->state == MOAT_RUNNING ? 1 : 0);
	metrics_global(out, "pgmoat_draining", "gauge", "1 while the SIGTERM drain runs.",
		       moat->state == MOAT_DRAINING ? 1 : 0);
	metrics_global(out, "pgmoat_clients_connected", "gauge",
		       "Client connections open, logging in included.", moat->client_count);
	const GlobalStats *g = &moat->stats;
	metrics_global(out, "pgmoat_clients_accepted_total", "counter",
		       "Client connections accepted.", (double)g->clients_accepted);
	metrics_global(out, "pgmoat_clients_refused_total", "counter",
		       "Clients refused by max_client_conn.", (double)g->clients_refused);
	metrics_global(out, "pgmoat_login_failures_total", "counter",
		       "Client authentication failures.", (double)g->login_failures);
	metrics_global(out, "pgmoat_server_connect_failures_total", "counter",
		       "Failed server connections or logins.", (double)g->server_connect_failures);
	metrics_global(out, "pgmoat_policy_denials_total", "counter",
		       "Statements and connections denied by a policy.", (double)g->policy_denials);
	metrics_global(out, "pgmoat_drain_closed_clients_total", "counter",
		       "Clients closed at a transaction boundary by the drain.",
		       (double)g->drain_closed_clients);
}

void metrics_render(struct evbuffer *out)
{
	metrics_process(out);
	metrics_family(out, "pgmoat_pool_clients", "gauge",
		       "Client connections per pool by state (SHOW POOLS cl_*).");
	metrics_pool_states(out, "pgmoat_pool_clients", client_states, ARRAY_SIZE(client_states));
	metrics_family(out, "pgmoat_pool_servers", "gauge",
		       "Server connections per pool by state (SHOW POOLS sv_*).");
	metrics_pool_states(out, "pgmoat_pool_servers", server_states, ARRAY_SIZE(server_states));
	metrics_pool_maxwait(out);
	metrics_pool_counters(out);
}

static void metrics_handler(struct evhttp_request *req, void *arg)
{
	struct evbuffer *b = evbuffer_new();
	if (!b) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	metrics_render(b);
	http_reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", b);
	evbuffer_free(b);
}

void metrics_register_routes(void)
{
	http_route_add("/metrics", EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, metrics_handler, NULL);
}
