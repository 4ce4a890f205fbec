/*
 * CancelRequest routing. Clients know only our random per-client key; we look
 * the client up and, if it is linked to a server right now, open a fresh
 * connection to that server and send the backend's own key. A client whose
 * server has gone back to the pool cancels nothing, so a late cancel never
 * hits another client's query.
 */
#include "cancel.h"
#include "client.h"
#include "pktbuf.h"

#include <stdlib.h>

#define CANCEL_TIMEOUT_SEC 5

static void cancel_done_cb(struct bufferevent *bev, short what, void *arg)
{
	bufferevent_free(bev);
}

static void cancel_written_cb(struct bufferevent *bev, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_free(bev);
}

static void cancel_connected_cb(struct bufferevent *bev, short what, void *arg)
{
	if (!(what & BEV_EVENT_CONNECTED)) {
		bufferevent_free(bev);
		return;
	}
	bufferevent_setcb(bev, NULL, cancel_written_cb, cancel_done_cb, NULL);
	bufferevent_enable(bev, EV_WRITE);
}

void cancel_forward(Worker *w, uint32_t pid, uint32_t key)
{
	Client *c = client_find_by_cancel_key(w, pid, key);
	if (!c || !c->link || c->link->state != SV_ACTIVE) {
		log_debug("cancel request ignored: no client with that key has a running query");
		return;
	}
	Server *s = c->link;
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_cancel_request(&pb, s->backend_pid, s->backend_key);
	struct bufferevent *bev = bufferevent_socket_new(w->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!bev || !pktbuf_ok(&pb) || bufferevent_write(bev, pb.data, pb.len) != 0) {
		if (bev)
			bufferevent_free(bev);
		pktbuf_free(&pb);
		return;
	}
	pktbuf_free(&pb);
	struct timeval tv = { CANCEL_TIMEOUT_SEC, 0 };
	bufferevent_set_timeouts(bev, &tv, &tv);
	bufferevent_setcb(bev, NULL, NULL, cancel_connected_cb, NULL);
	if (bufferevent_socket_connect(bev, (struct sockaddr *)&s->addr, (int)s->addrlen) != 0) {
		bufferevent_free(bev);
		return;
	}
	slog_info(c, "forwarding cancel request to S-%llu", (unsigned long long)s->id);
}
