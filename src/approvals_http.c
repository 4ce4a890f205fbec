/*
 * The approvals HTTP API and the reviewer page: request handling on the
 * event loop. The wire format is approvals_api.c, the page approvals_page.c.
 */
#include "approvals_http.h"
#include "approvals.h"
#include "approvals_api.h"
#include "approvals_page.h"
#include "http.h"
#include "pgmoat.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <event2/keyvalq_struct.h>

#define JSON_TYPE "application/json"
#define PEER_MAX 80

/* An answer of the API: JSON text (owned here; NULL: out of memory, 500). */
static void api_reply(struct evhttp_request *req, int code, const char *reason, char *json)
{
	struct evbuffer *b = json ? evbuffer_new() : NULL;

	evhttp_add_header(evhttp_request_get_output_headers(req), "X-Content-Type-Options", "nosniff");
	if (!b || evbuffer_add_printf(b, "%s\n", json) < 0) {
		http_reply_text(req, 500, "Internal Server Error", "out of memory");
	} else {
		http_reply(req, code, reason, JSON_TYPE, b);
	}
	if (b)
		evbuffer_free(b);
	free(json);
}

static void api_error(struct evhttp_request *req, int code, const char *reason, const char *message)
{
	api_reply(req, code, reason, approvals_api_error_json(message));
}

/* Who asks: true with the reviewer's name, or false once the refusal is sent. */
static bool api_authorized(struct evhttp_request *req, char reviewer[HTTP_REVIEWER_MAX])
{
	char peer[PEER_MAX];

	switch (http_authenticate(req, reviewer)) {
	case HTTP_AUTH_OK:
		return true;
	case HTTP_AUTH_UNCONFIGURED:
		api_error(req, 503, "Service Unavailable",
			  "the approvals API is disabled: admin.token_file is not set, "
			  "unreadable or holds no token");
		return false;
	case HTTP_AUTH_DENIED:
		break;
	}
	http_peer_name(req, peer, sizeof(peer));
	log_warning("HTTP %s from %s: missing or wrong bearer token",
		    evhttp_request_get_uri(req), peer);
	http_reply_unauthorized(req);
	return false;
}

static void api_list(struct evhttp_request *req, void *arg)
{
	char reviewer[HTTP_REVIEWER_MAX];
	int n;

	if (!api_authorized(req, reviewer))
		return;
	ApprovalInfo *list = approvals_list(&n);
	char *json = approvals_api_list_json(list, n);
	free(list);
	api_reply(req, 200, "OK", json);
}

/* The request body, NUL-terminated in a malloc'd copy; NULL when larger than max. */
static char *request_body(struct evhttp_request *req, size_t max, size_t *len)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	*len = evbuffer_get_length(in);
	if (*len > max)
		return NULL;
	char *body = xmalloc(*len + 1);
	if (evbuffer_copyout(in, body, *len) != (ev_ssize_t)*len) {
		free(body);
		return NULL;
	}
	body[*len] = '\0';
	return body;
}

/* Apply the decision, log who took it from where, and answer. */
static void api_apply(struct evhttp_request *req, uint64_t id, ApprovalsApiAction action,
		      const char *reviewer, const char *reason)
{
	const char *verb = action == APPROVALS_API_APPROVE ? "APPROVE" : "DENY";
	char peer[PEER_MAX];
	ApprovalResult r = action == APPROVALS_API_APPROVE ? approvals_approve(id, reviewer)
							   : approvals_deny(id, reviewer, reason ? reason : "");

	http_peer_name(req, peer, sizeof(peer));
	if (r == APPROVAL_NOT_FOUND) {
		log_info("HTTP %s %" PRIu64 " by reviewer %s from %s: no such approval", verb, id,
			 reviewer, peer);
		char *msg = xasprintf("no such approval: %" PRIu64
				      " (already decided, timed out, or its client left)", id);
		api_error(req, 404, "Not Found", msg);
		free(msg);
		return;
	}
	log_info("HTTP %s %" PRIu64 " by reviewer %s from %s%s%s%s", verb, id, reviewer, peer,
		 reason ? ": " : "", reason ? reason : "",
		 r == APPROVAL_FORWARDED ? " (forwarded to the replica holding it)" : "");
	api_reply(req, 200, "OK", approvals_api_outcome_json(id, action, reviewer, reason,
							     r == APPROVAL_FORWARDED));
}

static void api_decide(struct evhttp_request *req, void *arg)
{
	char reviewer[HTTP_REVIEWER_MAX], err[256];
	uint64_t id = 0;
	ApprovalsApiAction action = APPROVALS_API_APPROVE;
	char *reason = NULL;
	size_t len;

	if (!api_authorized(req, reviewer))
		return;
	switch (approvals_api_parse_path(evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req)),
					 &id, &action)) {
	case APPROVALS_PATH_UNKNOWN:
		api_error(req, 404, "Not Found", "not found: use /api/approvals/ID/approve or .../deny");
		return;
	case APPROVALS_PATH_BAD_ID:
		api_error(req, 400, "Bad Request", "the approval id must be a positive number");
		return;
	case APPROVALS_PATH_OK:
		break;
	}
	char *body = request_body(req, APPROVALS_API_MAX_BODY, &len);
	if (!body) {
		snprintf(err, sizeof(err), "the body is limited to %d bytes", APPROVALS_API_MAX_BODY);
		api_error(req, 413, "Payload Too Large", err);
		return;
	}
	if (!approvals_api_parse_body(body, len, action, &reason, err, sizeof(err)))
		api_error(req, 400, "Bad Request", err);
	else
		api_apply(req, id, action, reviewer, reason);
	free(body);
	free(reason);
}

/* The page itself holds no data: it is served without a token and asks for one. */
static void page(struct evhttp_request *req, void *arg)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *b = evbuffer_new();
	char csp[APPROVALS_PAGE_CSP_MAX];

	if (!b || !approvals_page_render(b, csp, sizeof(csp))) {
		http_reply_text(req, 500, "Internal Server Error", "cannot render the page");
	} else {
		evhttp_add_header(h, "Content-Security-Policy", csp);
		evhttp_add_header(h, "X-Frame-Options", "DENY");
		evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
		evhttp_add_header(h, "Referrer-Policy", "no-referrer");
		evhttp_add_header(h, "Cross-Origin-Opener-Policy", "same-origin");
		http_reply(req, 200, "OK", "text/html; charset=utf-8", b);
	}
	if (b)
		evbuffer_free(b);
}

void approvals_http_register_routes(void)
{
	http_route_add("/api/approvals", EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, api_list, NULL);
	http_route_add(APPROVALS_API_PREFIX "*", EVHTTP_REQ_POST, api_decide, NULL);
	http_route_add("/approvals", EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, page, NULL);
	if (!moat->cfg->admin_token_file || !*moat->cfg->admin_token_file)
		log_info("approvals API disabled (503): no admin.token_file");
}
