/*
 * HTTP endpoints on the worker's event loop (evhttp).
 *
 *   GET /healthz  200 while the process runs its event loop
 *   GET /readyz   200 when accepting new clients; 503 while draining,
 *                 paused (PAUSE / SIGUSR1) or suspended
 *   GET /metrics  Prometheus text exposition (metrics.c)
 *
 * evhttp bounds header and body sizes and times out idle connections; the
 * number of open connections is bounded here (see http_claim()): the
 * listener is disabled while HTTP_MAX_CONNECTIONS are open.
 */
#include "http.h"
#include "approvals_http.h"
#include "metrics.h"
#include "pgmoat.h"

#include <stdlib.h>
#include <string.h>
#include <event2/bufferevent.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#define HTTP_TOKEN_MAX 4096

typedef struct HttpRoute {
	struct HttpRoute *next;
	char *path;
	bool prefix;		/* registered with a trailing star: match everything below */
	uint16_t methods;
	HttpHandler fn;
	void *arg;
} HttpRoute;

static struct evhttp *http_server;
static struct evhttp_bound_socket *http_socket;
static HttpRoute *http_routes;
static void http_claim(struct evhttp_request *req);

/* ---- replies ------------------------------------------------------------- */

void http_reply(struct evhttp_request *req, int code, const char *reason,
		const char *content_type, struct evbuffer *body)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Type", content_type ? content_type : "text/plain; charset=utf-8");
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_add_header(h, "Connection", "close");	/* one request per connection: see http_claim() */
	/* evhttp sends Content-Length but no body for HEAD. */
	evhttp_send_reply(req, code, reason, body);
}

void http_reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
	struct evbuffer *b = evbuffer_new();
	if (!b) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	evbuffer_add_printf(b, "%s\n", text);
	http_reply(req, code, reason, NULL, b);
	evbuffer_free(b);
}

void http_reply_unauthorized(struct evhttp_request *req)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
			  "Bearer realm=\"pgmoat\"");
	http_reply_text(req, 401, "Unauthorized", "unauthorized");
}

HttpAuth http_authenticate(struct evhttp_request *req, char reviewer[HTTP_REVIEWER_MAX])
{
	const char *path = moat->cfg->admin_token_file;
	const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	int tokens = 0, bad = 0;

	reviewer[0] = '\0';
	if (!path || !*path)
		return HTTP_AUTH_UNCONFIGURED;
	char *text = util_read_file(path, HTTP_TOKEN_MAX, false);
	if (!text) {
		log_warning("cannot read admin.token_file %s", path);
		return HTTP_AUTH_UNCONFIGURED;
	}
	bool ok = http_token_lookup(text, auth, reviewer, &tokens, &bad);
	util_free_secret(text);
	/* Once per change, not at every request of a polling reviewer page. */
	static int bad_warned;
	if (bad > 0 && bad != bad_warned)
		log_warning("admin.token_file %s: %d malformed line(s) ignored", path, bad);
	bad_warned = bad;
	if (tokens == 0)
		return HTTP_AUTH_UNCONFIGURED;
	return ok ? HTTP_AUTH_OK : HTTP_AUTH_DENIED;
}

bool http_check_bearer(struct evhttp_request *req)
{
	char reviewer[HTTP_REVIEWER_MAX];
	return http_authenticate(req, reviewer) == HTTP_AUTH_OK;
}

void http_peer_name(struct evhttp_request *req, char *buf, size_t len)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	char *addr = NULL;
	ev_uint16_t port = 0;

	if (evcon)
		evhttp_connection_get_peer(evcon, &addr, &port);
	snprintf(buf, len, "%s:%u", addr ? addr : "?", (unsigned)port);
}

/* ---- routing ------------------------------------------------------------- */

void http_route_add(const char *path, uint16_t methods, HttpHandler fn, void *arg)
{
	size_t n = strlen(path);
	bool prefix = n >= 2 && strcmp(path + n - 2, "/*") == 0;
	char *p = prefix ? xstrndup(path, n - 1) : xstrdup(path);	/* keeps the '/' */
	for (HttpRoute *r = http_routes; r; r = r->next) {
		if (r->prefix == prefix && strcmp(r->path, p) == 0) {
			free(p);
			r->methods = methods;
			r->fn = fn;
			r->arg = arg;
			return;
		}
	}
	HttpRoute *r = xcalloc(1, sizeof(*r));
	r->path = p;
	r->prefix = prefix;
	r->methods = methods;
	r->fn = fn;
	r->arg = arg;
	r->next = http_routes;
	http_routes = r;
}

static const HttpRoute *http_route_find(const char *path)
{
	const HttpRoute *best = NULL;
	for (const HttpRoute *r = http_routes; r; r = r->next) {
		if (!r->prefix && strcmp(r->path, path) == 0)
			return r;
		if (r->prefix && strncmp(r->path, path, strlen(r->path)) == 0 &&
		    (!best || strlen(r->path) > strlen(best->path)))
			best = r;
	}
	return best;
}

static void http_allow_header(struct evhttp_request *req, uint16_t methods)
{
	static const struct {
		uint16_t bit;
		const char *name;
	} names[] = { { EVHTTP_REQ_GET, "GET" }, { EVHTTP_REQ_HEAD, "HEAD" },
		      { EVHTTP_REQ_POST, "POST" }, { EVHTTP_REQ_PUT, "PUT" },
		      { EVHTTP_REQ_DELETE, "DELETE" } };
	char allow[64] = "";
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		if (methods & names[i].bit) {
			if (allow[0])
				strcat(allow, ", ");
			strcat(allow, names[i].name);
		}
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
}

static void http_dispatch(struct evhttp_request *req, void *arg)
{
	http_claim(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	if (!path || !*path) {
		http_reply_text(req, 400, "Bad Request", "bad request");
		return;
	}
	const HttpRoute *r = http_route_find(path);
	if (!r) {
		http_reply_text(req, 404, "Not Found", "not found");
		return;
	}
	if (!(evhttp_request_get_command(req) & r->methods)) {
		http_allow_header(req, r->methods);
		http_reply_text(req, 405, "Method Not Allowed", "method not allowed");
		return;
	}
	r->fn(req, r->arg);
}

/* ---- built-in routes ------------------------------------------------------ */

static void http_healthz(struct evhttp_request *req, void *arg)
{
	http_reply_text(req, 200, "OK", "ok");
}

/* Why we are not ready, or NULL when ready. */
static const char *http_not_ready_reason(void)
{
	switch (moat->state) {
	case MOAT_DRAINING:
		return "draining";
	case MOAT_PAUSED:
		return "paused";
	case MOAT_SUSPENDED:
		return "suspended";
	case MOAT_RUNNING:
		return NULL;
	}
	return "unknown state";
}

static void http_readyz(struct evhttp_request *req, void *arg)
{
	const char *why = http_not_ready_reason();
	if (why)
		http_reply_text(req, 503, "Service Unavailable", why);
	else
		http_reply_text(req, 200, "OK", "ready");
}

/* ---- connection bound ----------------------------------------------------- */

/*
 * evhttp (libevent 2.1) tells us neither when it accepts nor when it closes a
 * connection that never sent a request. So: every reply closes its
 * connection ("Connection: close"), a connection is "pending" from accept to
 * its first request, and "claimed" from then until its close callback. A
 * pending one that has not asked within the timeout was closed by evhttp;
 * pending ones are kept as accept times, oldest first, and expire then.
 */
static usec_t http_pending[HTTP_MAX_CONNECTIONS];	/* accept times, a ring */
static int http_pending_head, http_pending_count;
static int http_claimed;
static bool http_accept_off;
static struct event *http_tick_ev;

static void http_listener_enable(bool on)
{
	struct evconnlistener *l = http_socket ? evhttp_bound_socket_get_listener(http_socket) : NULL;
	if (!l || on == !http_accept_off)
		return;
	http_accept_off = !on;
	if (on)
		evconnlistener_enable(l);
	else
		evconnlistener_disable(l);
}

static void http_bound_update(void)
{
	http_listener_enable(http_pending_count + http_claimed < HTTP_MAX_CONNECTIONS);
}

static void http_pending_pop(void)
{
	if (http_pending_count == 0)
		return;
	http_pending_head = (http_pending_head + 1) % HTTP_MAX_CONNECTIONS;
	http_pending_count--;
}

static void http_pending_expire(usec_t now)
{
	usec_t limit = (usec_t)(HTTP_TIMEOUT_SEC + 1) * USEC_PER_SEC;
	while (http_pending_count > 0 && now - http_pending[http_pending_head] > limit)
		http_pending_pop();
}

static void http_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	http_pending_expire(util_now_mono());
	http_bound_update();
}

static void http_conn_closed(struct evhttp_connection *evcon, void *arg)
{
	if (http_claimed > 0)
		http_claimed--;
	http_bound_update();
}

/* The connection's first (and only) request arrived. */
static void http_claim(struct evhttp_request *req)
{
	http_pending_pop();
	http_claimed++;
	evhttp_connection_set_closecb(evhttp_request_get_connection(req), http_conn_closed, NULL);
}

static struct bufferevent *http_new_bev(struct event_base *base, void *arg)
{
	if (http_pending_count == HTTP_MAX_CONNECTIONS)
		http_pending_pop();	/* cannot happen while the listener is off; stay bounded */
	int tail = (http_pending_head + http_pending_count) % HTTP_MAX_CONNECTIONS;
	http_pending[tail] = util_now_mono();
	http_pending_count++;
	http_bound_update();
	return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
}

/* ---- start/stop ----------------------------------------------------------- */

bool http_start(struct event_base *base, const Config *cfg)
{
	if (!cfg->http_listen)
		return true;
	char host[256];
	int port;
	if (!config_parse_host_port(cfg->http_listen, host, sizeof(host), &port)) {
		log_error("http_listen must be host:port: %s", cfg->http_listen);
		return false;
	}
	http_server = evhttp_new(base);
	if (!http_server)
		return false;
	evhttp_set_max_headers_size(http_server, HTTP_MAX_HEADERS_SIZE);
	evhttp_set_max_body_size(http_server, HTTP_MAX_BODY_SIZE);
	evhttp_set_timeout(http_server, HTTP_TIMEOUT_SEC);
	evhttp_set_allowed_methods(http_server, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
							 EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
							 EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
	evhttp_set_bevcb(http_server, http_new_bev, NULL);
	evhttp_set_gencb(http_server, http_dispatch, NULL);
	http_socket = evhttp_bind_socket_with_handle(http_server, host, (ev_uint16_t)port);
	struct timeval tick = { 1, 0 };
	http_tick_ev = event_new(base, -1, EV_PERSIST, http_tick_cb, NULL);
	if (!http_socket || !http_tick_ev || event_add(http_tick_ev, &tick) != 0) {
		log_error("could not listen for HTTP on %s", cfg->http_listen);
		http_stop();
		return false;
	}
	http_route_add("/healthz", EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, http_healthz, NULL);
	http_route_add("/readyz", EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, http_readyz, NULL);
	metrics_register_routes();
	approvals_http_register_routes();
	log_info("HTTP endpoints on %s (/healthz, /readyz, /metrics, /api/approvals, /approvals)",
		 cfg->http_listen);
	return true;
}

void http_stop(void)
{
	http_socket = NULL;	/* connections closing below must not re-enable it */
	if (http_tick_ev)
		event_free(http_tick_ev);
	http_tick_ev = NULL;
	if (http_server)
		evhttp_free(http_server);
	http_server = NULL;
	while (http_routes) {
		HttpRoute *r = http_routes;
		http_routes = r->next;
		free(r->path);
		free(r);
	}
}
