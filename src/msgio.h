/*
 * Reading framed messages out of a libevent input buffer. The caller owns
 * what msgio_take() returns. Headers are peeked, never consumed, so a
 * message is only removed once it is wholly there (or deliberately streamed).
 */
#ifndef PGMOAT_MSGIO_H
#define PGMOAT_MSGIO_H

#include <event2/buffer.h>
#include "proto.h"

/*
 * Buffer bounds shared by both sides of a link: a connection stops reading
 * while its partner's output holds more than MSGIO_OUT_HIGH (backpressure),
 * resumes when that drains below MSGIO_OUT_LOW, and stops reading its own
 * socket while MSGIO_READ_HIGH bytes are unprocessed.
 */
#define MSGIO_OUT_HIGH (512 * 1024)
#define MSGIO_OUT_LOW (64 * 1024)
#define MSGIO_READ_HIGH (256 * 1024)

/* FRAME_NEED_MORE below 5 bytes; FRAME_BAD on an impossible length. */
FrameResult msgio_peek_header(struct evbuffer *in, uint32_t max_len, MsgHeader *h);

/*
 * pertx8: the same, and chunk gets the input's first contiguous chunk, which
 * holds the header (iov_len 0 on FRAME_NEED_MORE): valid until the input
 * changes, for msgio_extend_run_in and for reading the message where it lies.
 */
FrameResult msgio_peek_header_chunk(struct evbuffer *in, uint32_t max_len, MsgHeader *h,
				    struct evbuffer_iovec *chunk);

/* Remove a whole message (header included) into a new buffer; NULL if not all there. */
uint8_t *msgio_take(struct evbuffer *in, const MsgHeader *h);

/* Body of a message taken with msgio_take. */
static inline const uint8_t *msgio_body(const uint8_t *msg) { return msg + PROTO_HEADER_LEN; }
static inline size_t msgio_body_len(const MsgHeader *h) { return h->len - 4; }

/*
 * From offset from (the end of a message the caller will move), the end of
 * the run of following messages that lie whole in the input's first
 * contiguous chunk and that passes(arg, h) accepts, in order (it may note
 * each one it accepts: the run ends at its first refusal). A reply's
 * pass-through messages then move with one evbuffer call, not one each.
 * first (may be NULL) gets that chunk, for the caller to read the run where
 * it lies (iov_len 0 when the input is empty).
 */
size_t msgio_extend_run(struct evbuffer *in, size_t from, uint32_t max_len,
			bool (*passes)(void *arg, const MsgHeader *h), void *arg,
			struct evbuffer_iovec *first);

/* msgio_extend_run over the input's first chunk, known already (msgio_peek_header_chunk). */
size_t msgio_extend_run_in(const struct evbuffer_iovec *chunk, size_t from, uint32_t max_len,
			   bool (*passes)(void *arg, const MsgHeader *h), void *arg);

/* Move up to n bytes from in to out without copying where possible; returns bytes moved. */
size_t msgio_move(struct evbuffer *in, struct evbuffer *out, size_t n);

struct OutFlush;
/*
 * pertx8: msgio_move() into of's output (msgio_out). When the n bytes are all
 * that in holds (in_len, the caller's count) and lie contiguous at at (its first chunk; NULL: unknown), and
 * of is a plain socket with nothing waiting before them, they are sent from
 * where they lie and drained: no buffer chain moved, marked and written later.
 * What the socket does not take moves to the output as usual. Only for the
 * last writer of a callback to that output (a run that empties its input):
 * else one write would become two.
 */
size_t msgio_move_out(struct evbuffer *in, size_t in_len, const uint8_t *at, size_t n, struct OutFlush *of);
/*
 * pertx8: add len bytes to of's output (msgio_out); with last (nothing else
 * goes to of in this callback), sent at once where msgio_move_out would send.
 * What could not be queued (no memory) is lost, as with evbuffer_add.
 */
void msgio_add_out(struct OutFlush *of, const void *data, size_t len, bool last);



/*
 * Direct output flushing. bufferevents arm EPOLLOUT for every write and
 * disarm it once drained: two epoll_ctl calls per message. Instead, outputs
 * keep EV_WRITE disabled; a writer marks the connection dirty (msgio_out), and one
 * deferred event per loop pass writes every dirty output straight to its
 * socket. Only a socket that would block gets EV_WRITE (the bufferevent then
 * finishes the job and reports errors as usual). After a direct write that
 * drains the output to its low watermark, the bufferevent's write callback is
 * invoked, so callers see the same contract as with plain bufferevents.
 */
#include "list.h"
#include <event2/bufferevent.h>
#include <event2/event.h>

typedef struct Flusher {
	List dirty;		/* OutFlush entries with unsent output */
	List all;		/* every attached OutFlush (checked in assertion builds) */
	struct event *ev;	/* deferred: runs once per loop pass */
	int batch_depth;	/* inside msgio_flusher_begin/end: the end writes, not ev */
	bool check_always;	/* assertion builds: run (and check) at every end, dirty or not */
} Flusher;

struct ssl_st;

typedef struct OutFlush {
	/*
	 * Where the connection's output goes: writers take it with msgio_out(),
	 * which marks the connection for the flusher (an evbuffer callback would
	 * cost more than the write). A socket has a buffer of its own; only
	 * what would block is handed over to the bufferevent's output, which
	 * writes it when the socket can take it. With TLS that is the
	 * bufferevent_openssl's output, which must see a blocked SSL_write's
	 * bytes again unchanged: they are handed over as they were tried (one
	 * contiguous chain at the front). The bufferevent's output is not
	 * written through otherwise: its callbacks add and delete the write
	 * event (two epoll_ctl) for every message. Read it directly only to look.
	 */
	struct evbuffer *buf;
	struct evbuffer *own;	/* the buffer we own (buf while attached) */
	List link;		/* in flusher->dirty while queued */
	List member;		/* in flusher->all while attached */
	struct bufferevent *bev;
	Flusher *owner;
	bool queued;
	bool writing;		/* pertx8: flusher_hand_over enabled bev's EV_WRITE (asked per write otherwise) */
	struct ssl_st *ssl;	/* TLS: SSL_write instead of send(); bev is its bufferevent_openssl */

	/*
	 * conn6: a bare plain socket (msgio_output_attach_fd), no bufferevent:
	 * a connect-per-transaction client would pay for setting one up and
	 * tearing it down although its writes nearly never block. A write that
	 * would block adds wev (made then), which writes the rest when the
	 * socket can take it and reports as a bufferevent would: write_cb at
	 * the low watermark, event_cb on an error or after timeout_sec.
	 */
	bool bare;
	int fd;			/* bare, or plain attached: the socket (pertx8: asked once) */
	struct event *wev;	/* EV_WRITE|EV_PERSIST, made at the first blocked write */
	bool wev_added;
	size_t low;		/* write_cb once a blocked output drains to this */
	int timeout_sec;	/* 0: a blocked write waits without limit */
	bufferevent_data_cb write_cb;
	bufferevent_event_cb event_cb;
	void *arg;
} OutFlush;

bool msgio_flusher_init(Flusher *f, struct event_base *base) MUST_CHECK;
/*
 * Write every dirty output now. Read callbacks call it last, so a response
 * leaves in the same callback that produced it (latency), while everything one
 * callback produced for a socket still goes out in one write.
 */
void msgio_flusher_run(Flusher *f);
/*
 * The data path's read callbacks wrap their work in begin/end: what they
 * queue is written at the end (msgio_flusher_run), and the deferred event is
 * not scheduled for it, so a reply costs no extra pass through the loop.
 */
static inline void msgio_flusher_begin(Flusher *f)
{
	f->batch_depth++;
}

static inline void msgio_flusher_end(Flusher *f)
{
	/* (pertx8: inline, and no call when nothing was queued; assertion builds always check) */
	if (--f->batch_depth == 0 && (f->check_always || !list_empty(&f->dirty)))
		msgio_flusher_run(f);
}
void msgio_flusher_free(Flusher *f);
/*
 * Take over the output side of bev; call msgio_output_detach before freeing
 * bev. With ssl (tls.c): one SSL_write per record's worth of output; a write
 * that would block is finished by the bufferevent_openssl, as for plaintext.
 * Output queued before (while a handshake ran) goes first. False: no memory.
 */
bool msgio_output_attach(OutFlush *of, Flusher *f, struct bufferevent *bev, struct ssl_st *ssl) MUST_CHECK;
/*
 * The same for a bare plain socket fd (see OutFlush.bare), on an OutFlush
 * not attached yet: write_cb and event_cb get a NULL bufferevent. False: no
 * memory.
 */
bool msgio_output_attach_fd(OutFlush *of, Flusher *f, int fd, size_t low, bufferevent_data_cb write_cb,
			    bufferevent_event_cb event_cb, void *arg) MUST_CHECK;
/*
 * Bare socket that closes once its output is out: from now on write_cb runs
 * when the output is empty, event_cb on an error or when a blocked write
 * waits longer than timeout_sec.
 */
void msgio_output_finish(OutFlush *of, int timeout_sec, bufferevent_data_cb write_cb,
			 bufferevent_event_cb event_cb);
/* The buffer to write to: the connection is flushed at the end of this callback. */
struct evbuffer *msgio_out(OutFlush *of);
/*
 * conn7: write data to a bare socket now if nothing waits before it, else (or
 * what the socket did not take) queue it as msgio_out() does. For a login's
 * last answer, which nothing follows in its callback: no buffer chain made,
 * filled and drained for it. False: no memory.
 */
bool msgio_output_send_now(OutFlush *of, const void *data, size_t len) MUST_CHECK;
/* Stop flushing; what was queued on a plain socket stays in of->buf. */
void msgio_output_detach(OutFlush *of);
/* Detach and free the buffer: the connection is closing. */
void msgio_output_free(OutFlush *of);
size_t msgio_output_pending_bev(const OutFlush *of);
/* Bytes not yet written, wherever they wait (pertx8: inline: asked per message forwarded). */
static inline size_t msgio_output_pending(const OutFlush *of)
{
	size_t n = of->buf ? evbuffer_get_length(of->buf) : 0;
	if (of->own && of->bev)
		n += msgio_output_pending_bev(of);
	return n;
}
/* Give what waits in our own buffer to bev, to write as the bufferevent does (closing). */
void msgio_output_hand_over(OutFlush *of, struct bufferevent *bev);
/* From a write callback: stop the bufferevent's EV_WRITE once everything is out (bare: nothing to do). */
void msgio_output_drained(OutFlush *of);

/*
 * Direct input. libevent's bufferevent reads ask the kernel how much is
 * readable (ioctl FIONREAD) before every read: one more system call per
 * message. A connection instead reads with its own persistent event into its
 * own input buffer (the bufferevent never reads), stops above a high
 * watermark, and reports data, EOF and errors through the connection's usual
 * bufferevent callbacks.
 * Callbacks may free the connection: nothing touches the reader after them.
 */
typedef struct InReader {
	/* What was read and not yet consumed: ours, not the bufferevent's input,
	 * whose end libevent keeps frozen (two calls around every read). */
	struct evbuffer *buf;
	struct event *ev;	/* EV_READ|EV_PERSIST on the socket */
	int fd;			/* ev's (pertx8: not asked of it per read) */
	struct bufferevent *bev;	/* whose input buffer is filled */
	size_t high;		/* stop reading at this much unprocessed input; 0: no limit */
	bool enabled;		/* the connection wants input */
	bool added;		/* ev is in the event loop */
	bool kicked;		/* run the read callback even if nothing new arrives */
	bool suspended;		/* SUSPEND: no reading whatever enabled says (suspend.c) */
	bufferevent_data_cb read_cb;
	bufferevent_event_cb event_cb;
	void *arg;
	struct ssl_st *ssl;	/* TLS: SSL_read instead of recv() */
	bool tls_more;		/* the last SSL_read stopped at the room, not the socket: read on */
	bool bulk;		/* the last read was large: read into the input's own space */
	bool reserved;		/* some read did: an empty chunk may be left in buf */
} InReader;

/* Read bev's socket into r->buf (made at the first init, kept across a TLS switch). */
bool msgio_reader_init(InReader *r, struct bufferevent *bev, size_t high, bufferevent_data_cb read_cb,
		       bufferevent_event_cb event_cb, void *arg) MUST_CHECK;
/* The same for a bare socket (no bufferevent: the callbacks get NULL for it). */
bool msgio_reader_init_fd(InReader *r, struct event_base *base, int fd, size_t high,
			  bufferevent_data_cb read_cb, bufferevent_event_cb event_cb, void *arg) MUST_CHECK;
/* Stop reading (a TLS switch: the buffer stays). */
void msgio_reader_stop(InReader *r);
/* Stop reading and free the buffer: the connection is closing. */
void msgio_reader_free(InReader *r);
/* Free the thread's spare buffers and events (kept from closed connections for new ones): before its event base. */
void msgio_release_thread_cache(void);
/*
 * Read through ssl (tls.c). Bytes OpenSSL already holds (a record read
 * ahead, or the rest of one larger than the room left below the watermark)
 * get no socket event: the reader re-runs itself while SSL_has_pending(),
 * so a message split across records at any offset never stalls.
 */
void msgio_reader_use_tls(InReader *r, struct ssl_st *ssl);
void msgio_reader_enable(InReader *r, bool on);
void msgio_reader_set_high(InReader *r, size_t high);
/* SUSPEND/RESUME: overrides enabled while on. */
void msgio_reader_suspend(InReader *r, bool on);
void msgio_reader_resume(InReader *r);
/* After input was consumed: resume reading if it had stopped at the watermark. */
static inline void msgio_reader_consumed(InReader *r)
{
	if (r->ev && r->enabled && !r->added)
		msgio_reader_resume(r);
}
/* Run the read callback from the event loop soon (same pass), even with no new bytes. */
void msgio_reader_kick(InReader *r);
/*
 * Try a read now, as if the socket were readable: a client that just
 * connected has usually sent its first packet already, so waiting for the
 * next epoll round would only add a wake-up (pgbouncer reads at accept too).
 * The callbacks run from here and may free the connection: call it last.
 */
void msgio_reader_try_now(InReader *r);

#endif
