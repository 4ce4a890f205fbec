#include "msgio.h"

#include <stdlib.h>

FrameResult msgio_peek_header(struct evbuffer *in, uint32_t max_len, MsgHeader *h)
{
	uint8_t hdr[PROTO_HEADER_LEN];
	if (evbuffer_copyout(in, hdr, sizeof(hdr)) < (ev_ssize_t)sizeof(hdr))
		return FRAME_NEED_MORE;
	return proto_frame_header(hdr, sizeof(hdr), max_len, h);
}

uint8_t *msgio_take(struct evbuffer *in, const MsgHeader *h)
{
	size_t total = proto_msg_total(h);
	if (evbuffer_get_length(in) < total)
		return NULL;
	uint8_t *msg = xmalloc(total);
	if (evbuffer_remove(in, msg, total) != (int)total) {
		free(msg);
		return NULL;
	}
	return msg;
}

size_t msgio_move(struct evbuffer *in, struct evbuffer *out, size_t n)
{
	size_t avail = evbuffer_get_length(in);
	if (n > avail)
		n = avail;
	if (n == 0)
		return 0;
	int moved = out ? evbuffer_remove_buffer(in, out, n) : (evbuffer_drain(in, n) == 0 ? (int)n : -1);
	return moved > 0 ? (size_t)moved : 0;
}

#include <errno.h>

static void flusher_write_one(OutFlush *of)
{
	struct bufferevent *bev = of->bev;
	struct evbuffer *out = bufferevent_get_output(bev);
	if (evbuffer_get_length(out) == 0)
		return;
	/* bufferevents freeze the front of their output; unfreeze just for this write, as
	 * libevent's own write callback does. */
	evbuffer_unfreeze(out, 1);
	int n = evbuffer_write(out, bufferevent_getfd(bev));
	evbuffer_freeze(out, 1);
	if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		bufferevent_enable(bev, EV_WRITE);	/* the bufferevent reports the error */
		return;
	}
	if (evbuffer_get_length(out) > 0) {
		bufferevent_enable(bev, EV_WRITE);
		return;
	}
	bufferevent_data_cb write_cb = NULL;
	void *arg = NULL;
	bufferevent_getcb(bev, NULL, &write_cb, NULL, &arg);
	if (n > 0 && write_cb)
		write_cb(bev, arg);	/* may free the connection: of is not touched after */
}

static void flusher_run(evutil_socket_t fd, short what, void *arg)
{
	Flusher *f = arg;
	List *item;
	while ((item = list_first(&f->dirty)) != NULL) {
		OutFlush *of = container_of(item, OutFlush, link);
		list_del(&of->link);
		of->queued = false;
		flusher_write_one(of);
	}
}

bool msgio_flusher_init(Flusher *f, struct event_base *base)
{
	list_init(&f->dirty);
	f->ev = event_new(base, -1, 0, flusher_run, f);
	return f->ev != NULL;
}

void msgio_flusher_free(Flusher *f)
{
	if (f->ev)
		event_free(f->ev);
	f->ev = NULL;
}

static void output_changed_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	OutFlush *of = arg;
	if (info->n_added == 0 || of->queued)
		return;
	of->queued = true;
	list_append(&of->owner->dirty, &of->link);
	event_active(of->owner->ev, EV_WRITE, 0);
}

void msgio_output_attach(OutFlush *of, Flusher *f, struct bufferevent *bev)
{
	of->bev = bev;
	of->owner = f;
	of->queued = false;
	list_init(&of->link);
	bufferevent_disable(bev, EV_WRITE);
	evbuffer_add_cb(bufferevent_get_output(bev), output_changed_cb, of);
}

void msgio_output_detach(OutFlush *of)
{
	if (of->queued)
		list_del(&of->link);
	of->queued = false;
	of->bev = NULL;
}

void msgio_output_drained(struct bufferevent *bev)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_disable(bev, EV_WRITE);
}
