/*
 * CancelRequest routing. Clients know only our random per-client key; we look
 * the client up and, if it is linked to a server right now, open a fresh
 * connection to that server and send the backend's own key.
 *
 * Until PostgreSQL has processed the cancel (it closes the cancel connection),
 * the server is not handed to another client: otherwise a cancel that was
 * meant for this client's query could land on the next client's.
 */
#include "cancel.h"
#include "approvals.h"
#include "client.h"
#include "pool.h"
#include "pktbuf.h"

#include <stdlib.h>

#define CANCEL_TIMEOUT_SEC 5

typedef struct CancelReq {
	Worker *worker;
	uint64_t server_id;	/* looked up again at the end: the server may be gone */
} CancelReq;

static Server *cancel_find_server(Worker *w, uint64_t id)
{
	List *item;
	list_for_each(item, &w->all_servers) {
		Server *s = container_of(item, Server, all_head);
		if (s->id == id && s->state != SV_FREE)
			return s;
	}
	return NULL;
}

static void cancel_finish(struct bufferevent *bev, CancelReq *req)
{
	bufferevent_free(bev);
	Server *s = cancel_find_server(req->worker, req->server_id);
	if (s && s->cancels_in_flight > 0) {
		s->cancels_in_flight--;
		pool_schedule_maintain(s->pool);
	}
	free(req);
}

/* PostgreSQL closes the connection once the cancel is delivered. */
static void cancel_event_cb(struct bufferevent *bev, short what, void *arg)
{
	if (what & BEV_EVENT_CONNECTED)
		return;
	cancel_finish(bev, arg);
}

static void cancel_read_cb(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	evbuffer_drain(in, evbuffer_get_length(in));
}

void cancel_forward(Worker *w, uint32_t pid, uint32_t key)
{
	Client *c = client_find_by_cancel_key(w, pid, key);
	if (c && c->held) {
		approvals_cancel(c);	/* its statement has not reached any server */
		return;
	}
	if (!c || !c->link || c->link->state != SV_ACTIVE) {
		log_debug("cancel request ignored: no client with that key has a running query");
		return;
	}
	Server *s = c->link;
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_cancel_request(&pb, s->backend_pid, s->backend_key);
	struct bufferevent *bev = bufferevent_socket_new(w->base, -1, BEV_OPT_CLOSE_ON_FREE);
	CancelReq *req = xcalloc(1, sizeof(*req));
	req->worker = w;
	req->server_id = s->id;
	bool ok = bev && pktbuf_ok(&pb) && bufferevent_write(bev, pb.data, pb.len) == 0;
	pktbuf_free(&pb);
	if (ok) {
		struct timeval tv = { CANCEL_TIMEOUT_SEC, 0 };
		bufferevent_set_timeouts(bev, &tv, &tv);
		bufferevent_setcb(bev, cancel_read_cb, NULL, cancel_event_cb, req);
		bufferevent_enable(bev, EV_READ | EV_WRITE);
		ok = bufferevent_socket_connect(bev, (struct sockaddr *)&s->addr, (int)s->addrlen) == 0;
	}
	if (!ok) {
		if (bev)
			bufferevent_free(bev);
		free(req);
		slog_warning(c, "could not forward a cancel request");
		return;
	}
	s->cancels_in_flight++;
	slog_info(c, "forwarding cancel request to S-%llu", (unsigned long long)s->id);
}
