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
