/*
 * Reading framed messages out of a libevent input buffer. The caller owns
 * what msgio_take() returns. Headers are peeked, never consumed, so a
 * message is only removed once it is wholly there (or deliberately streamed).
 */
#ifndef PGMOAT_MSGIO_H
#define PGMOAT_MSGIO_H

#include <event2/buffer.h>
#include "proto.h"

/* FRAME_NEED_MORE below 5 bytes; FRAME_BAD on an impossible length. */
FrameResult msgio_peek_header(struct evbuffer *in, uint32_t max_len, MsgHeader *h);

/* Remove a whole message (header included) into a new buffer; NULL if not all there. */
uint8_t *msgio_take(struct evbuffer *in, const MsgHeader *h);

/* Body of a message taken with msgio_take. */
static inline const uint8_t *msgio_body(const uint8_t *msg) { return msg + PROTO_HEADER_LEN; }
static inline size_t msgio_body_len(const MsgHeader *h) { return h->len - 4; }

/* Move up to n bytes from in to out without copying where possible; returns bytes moved. */
size_t msgio_move(struct evbuffer *in, struct evbuffer *out, size_t n);

#endif
