/*
 * The HTTP listener (libevent evhttp, on the worker's event loop): health,
 * readiness and metrics, and a route table other features register into
 * (the approvals API will). Bounded: connection count, header and body
 * sizes, and an idle/read timeout.
 *
 * Handler contract: called on the event loop with a complete request whose
 * method the route allows; it must answer exactly once (http_reply() or
 * evhttp_send_*), and must not block.
 */
#ifndef PGMOAT_HTTP_H
#define PGMOAT_HTTP_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/buffer.h>
#include "config.h"
#include "http_token.h"

#define HTTP_MAX_CONNECTIONS 64
#define HTTP_MAX_HEADERS_SIZE 8192
#define HTTP_MAX_BODY_SIZE (64 * 1024)
#define HTTP_TIMEOUT_SEC 10

typedef void (*HttpHandler)(struct evhttp_request *req, void *arg);

/* Bind cfg->http_listen (nothing to do when unset) and register the built-in routes. */
bool http_start(struct event_base *base, const Config *cfg) MUST_CHECK;
void http_stop(void);

/*
 * Register a route: exact path ("/metrics"), or a prefix when it ends in
 * a slash and a star ("/api/approvals/" plus star matches
 * "/api/approvals/17/approve"; the longest prefix wins).
 * methods: EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | ... Other methods get 405.
 * A later registration of the same path replaces the earlier one.
 */
void http_route_add(const char *path, uint16_t methods, HttpHandler fn, void *arg);

/* Who a request authenticated as (http_authenticate). */
typedef enum {
	HTTP_AUTH_OK,		/* reviewer holds the name from the token file */
	HTTP_AUTH_DENIED,	/* no or a wrong token: 401 */
	HTTP_AUTH_UNCONFIGURED,	/* no admin.token_file, unreadable, or no usable token: 503 */
} HttpAuth;

/*
 * "Authorization: Bearer <token>" against the tokens in admin.token_file
 * (format in http_token.h; read at each call, so a rotated Secret takes
 * effect), compared in constant time. reviewer gets the token's name.
 */
HttpAuth http_authenticate(struct evhttp_request *req, char reviewer[HTTP_REVIEWER_MAX]) MUST_CHECK;
/* http_authenticate() == HTTP_AUTH_OK; the caller then answers http_reply_unauthorized(). */
bool http_check_bearer(struct evhttp_request *req) MUST_CHECK;
void http_reply_unauthorized(struct evhttp_request *req);

/* Answer with body (may be NULL) as content_type; HEAD gets headers only. */
void http_reply(struct evhttp_request *req, int code, const char *reason,
		const char *content_type, struct evbuffer *body);
void http_reply_text(struct evhttp_request *req, int code, const char *reason, const char *text);

/* The peer as "address:port" into buf, for logs. */
void http_peer_name(struct evhttp_request *req, char *buf, size_t len);

#endif
