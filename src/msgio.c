#include "msgio.h"
#include "build_config.h"
#include "log.h"
#include "tls.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <string.h>
#include <openssl/ssl.h>

FrameResult msgio_peek_header(struct evbuffer *in, uint32_t max_len, MsgHeader *h)
{
	/* in place: the first chunk nearly always holds the header (else it is made to) */
	const uint8_t *hdr = evbuffer_pullup(in, PROTO_HEADER_LEN);
	if (!hdr)
		return FRAME_NEED_MORE;
	return proto_frame_header(hdr, PROTO_HEADER_LEN, max_len, h);
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

FrameResult msgio_peek_header_chunk(struct evbuffer *in, uint32_t max_len, MsgHeader *h,
				    struct evbuffer_iovec *chunk)
{
	const uint8_t *hdr = evbuffer_pullup(in, PROTO_HEADER_LEN);
	chunk->iov_base = (void *)hdr;
	chunk->iov_len = hdr ? evbuffer_get_contiguous_space(in) : 0;
	if (!hdr)
		return FRAME_NEED_MORE;
	return proto_frame_header(hdr, PROTO_HEADER_LEN, max_len, h);
}

size_t msgio_extend_run_in(const struct evbuffer_iovec *chunk, size_t from, uint32_t max_len,
			   bool (*passes)(void *arg, const MsgHeader *h), void *arg)
{
	const uint8_t *p = chunk->iov_base;
	size_t len = chunk->iov_len;
	size_t end = from;
	while (end + PROTO_HEADER_LEN <= len) {
		MsgHeader h;
		if (proto_frame_header(p + end, len - end, max_len, &h) != FRAME_OK)
			break;
		size_t total = proto_msg_total(&h);
		if (total > len - end || !passes(arg, &h))
			break;
		end += total;
	}
	return end;
}

size_t msgio_extend_run(struct evbuffer *in, size_t from, uint32_t max_len,
			bool (*passes)(void *arg, const MsgHeader *h), void *arg,
			struct evbuffer_iovec *first)
{
	struct evbuffer_iovec v;	/* the first chunk, whole: peek for one byte */
	if (evbuffer_peek(in, 1, NULL, &v, 1) < 1) {
		v.iov_base = NULL;
		v.iov_len = 0;
	}
	if (first)
		*first = v;
	return msgio_extend_run_in(&v, from, max_len, passes, arg);
}

size_t msgio_move(struct evbuffer *in, struct evbuffer *out, size_t n)
{
	if (out) {	/* (evbuffer_remove_buffer moves at most what in holds, and says how much) */
		int moved = evbuffer_remove_buffer(in, out, n);
		return moved > 0 ? (size_t)moved : 0;
	}
	size_t avail = evbuffer_get_length(in);
	if (n > avail)
		n = avail;
	if (n == 0)
		return 0;
	return evbuffer_drain(in, n) == 0 ? n : 0;
}

/* The socket of a plain output, asked of its bufferevent once it has one (after the connect). */
static int output_fd(OutFlush *of)
{
	if (of->fd < 0 && of->bev)
		of->fd = bufferevent_getfd(of->bev);
	return of->fd;
}

/* Nothing waits for of's socket: no queued bytes, no write that blocked. */
static bool output_idle_plain(const OutFlush *of)
{
	if (!of->own || of->ssl || of->queued)
		return false;
	if (of->bare)
		return !of->wev_added;
	return of->bev && !of->writing;
}

/*
 * Send n bytes at p to an idle plain output's socket now: what it took (0 when
 * blocked, or on an error that the flusher's own send meets again and reports).
 */
static size_t output_send_idle(OutFlush *of, const void *p, size_t n)
{
#ifdef PGMOAT_CASSERT
	if (evbuffer_get_length(of->buf) != 0) {
		log_fatal("an idle output holds %zu bytes", evbuffer_get_length(of->buf));
		abort();
	}
#endif
	ssize_t sent = send(output_fd(of), p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
	return sent > 0 ? (size_t)sent : 0;
}

size_t msgio_move_out(struct evbuffer *in, size_t in_len, const uint8_t *at, size_t n, OutFlush *of)
{
	if (at && n > 0 && n == in_len && output_idle_plain(of)) {
#ifdef PGMOAT_CASSERT
		if (evbuffer_get_length(in) != in_len) {
			log_fatal("msgio_move_out: the input holds %zu bytes, not %zu", evbuffer_get_length(in), in_len);
			abort();
		}
#endif
		size_t sent = output_send_idle(of, at, n);
		if (sent > 0)
			evbuffer_drain(in, sent);	/* (our own input: never frozen, so it cannot fail) */
		if (sent == n)
			return n;
		return sent + msgio_move(in, msgio_out(of), n - sent);
	}
	return msgio_move(in, msgio_out(of), n);
}

void msgio_add_out(OutFlush *of, const void *data, size_t len, bool last)
{
	if (last && len > 0 && output_idle_plain(of)) {
		size_t sent = output_send_idle(of, data, len);
		if (sent == len)
			return;
		data = (const uint8_t *)data + sent;
		len -= sent;
	}
	evbuffer_add(msgio_out(of), data, len);
}

/*
 * Empty evbuffers of closed connections, per thread, for the next ones: a
 * connection-per-transaction client would otherwise build and tear down two
 * for its one query (evmem.c recycles their memory, not libevent's set-up).
 * Only our own buffers come here: no callbacks, never frozen, and no large
 * chunk kept (a read that reserved space and got nothing leaves one: such a
 * buffer is freed, not kept). Under ASan none are kept, so that a write
 * through a stale pointer stays a use-after-free it reports.
 */
#define SPARE_BUFFERS_MAX 256

static __thread struct {
	struct evbuffer *b[SPARE_BUFFERS_MAX];
	int n;
} spare_buffers;

static struct evbuffer *buffer_take(void)
{
	if (spare_buffers.n == 0)
		return evbuffer_new();
	struct evbuffer *b = spare_buffers.b[--spare_buffers.n];
#ifdef PGMOAT_CASSERT
	if (evbuffer_get_length(b) != 0) {
		log_fatal("a spare buffer holds %zu bytes: written after its connection closed",
			  evbuffer_get_length(b));
		abort();
	}
#endif
	return b;
}

/* keep: the buffer holds no reserved chunk (see above) */
static void buffer_give(struct evbuffer *b, bool keep)
{
#if defined(__SANITIZE_ADDRESS__)
	keep = false;
#endif
	size_t left = evbuffer_get_length(b);	/* (nearly always 0: no drain to call) */
	if (keep && spare_buffers.n < SPARE_BUFFERS_MAX && (left == 0 || evbuffer_drain(b, left) == 0))
		spare_buffers.b[spare_buffers.n++] = b;
	else
		evbuffer_free(b);
}

/*
 * conn7: the same for the memory of readers' events (deleted, so neither
 * pending nor active): event_assign() on it costs less than event_new(),
 * and no free.
 */
#define SPARE_EVENTS_MAX 256

static __thread struct {
	struct event *e[SPARE_EVENTS_MAX];
	int n;
} spare_events;

static struct event *reader_event_take(struct event_base *base, int fd, event_callback_fn cb, void *arg)
{
	if (spare_events.n == 0)
		return event_new(base, fd, EV_READ | EV_PERSIST, cb, arg);
	struct event *ev = spare_events.e[--spare_events.n];
	if (event_assign(ev, base, fd, EV_READ | EV_PERSIST, cb, arg) != 0) {
		event_free(ev);
		return NULL;
	}
	return ev;
}

static void reader_event_give(struct event *ev)
{
#if defined(__SANITIZE_ADDRESS__)
	event_free(ev);
#else
	if (spare_events.n < SPARE_EVENTS_MAX) {
		event_del(ev);
		spare_events.e[spare_events.n++] = ev;
	} else {
		event_free(ev);
	}
#endif
}

void msgio_release_thread_cache(void)
{
	while (spare_buffers.n > 0)
		evbuffer_free(spare_buffers.b[--spare_buffers.n]);
	while (spare_events.n > 0)
		event_free(spare_events.e[--spare_events.n]);
}

#define SEND_IOV_MAX 16
#define SEND_GATHER_MAX 4096

/*
 * send()/sendmsg() rather than evbuffer_write()'s writev(): the socket path
 * without the VFS layer, as pgbouncer does. Returns bytes sent or -1 (errno).
 */
static int flusher_send(struct evbuffer *out, int fd)
{
	struct evbuffer_iovec vec[SEND_IOV_MAX];
	int nvec = evbuffer_peek(out, -1, NULL, vec, SEND_IOV_MAX);
	if (nvec > SEND_IOV_MAX)
		nvec = SEND_IOV_MAX;
	ssize_t n;
	size_t len = evbuffer_get_length(out);
	if (nvec == 1) {
		n = send(fd, vec[0].iov_base, vec[0].iov_len, MSG_DONTWAIT | MSG_NOSIGNAL);
	} else if (len <= SEND_GATHER_MAX) {
		/* a few small pieces (one reply's messages): gathering them here costs less
		 * than sendmsg()'s iovec import in the kernel */
		uint8_t gather[SEND_GATHER_MAX];
		evbuffer_copyout(out, gather, len);
		n = send(fd, gather, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	} else {
		struct iovec iov[SEND_IOV_MAX];
		for (int i = 0; i < nvec; i++) {
			iov[i].iov_base = vec[i].iov_base;
			iov[i].iov_len = vec[i].iov_len;
		}
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)nvec };
		n = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	if (n > 0)
		evbuffer_drain(out, (size_t)n);
	return (int)n;
}

static void flusher_after_write(OutFlush *of, int n);

#define TLS_RECORD_MAX 16384	/* one SSL_write: at most one full record */

/*
 * Encrypt and send what the output holds, a record at a time. The bytes of
 * a write that would block stay at the front of the output, contiguous
 * (pulled up: one chain, which the hand-over moves whole), so the
 * bufferevent_openssl can retry it as OpenSSL requires.
 * Returns bytes sent, or -1 with errno (EAGAIN when blocked).
 */
static int flusher_send_tls(struct evbuffer *out, SSL *ssl)
{
	size_t sent = 0, len;
	while ((len = evbuffer_get_length(out)) > 0) {
		if (len > TLS_RECORD_MAX)
			len = TLS_RECORD_MAX;
		unsigned char *p = evbuffer_pullup(out, (ev_ssize_t)len);
		int n = p ? SSL_write(ssl, p, (int)len) : -1;
		if (n > 0) {
			evbuffer_drain(out, (size_t)n);
			sent += (size_t)n;
			continue;
		}
		int e = p ? tls_io_result(ssl, n) : SSL_ERROR_SSL;
		errno = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN : EIO;
		return sent > 0 ? (int)sent : -1;
	}
	return (int)sent;
}

static bool write_would_block(int e)
{
	return e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
}

static void bare_stop_waiting(OutFlush *of)
{
	if (of->wev_added)
		event_del(of->wev);
	of->wev_added = false;
}

/* A bare socket became writable (or its blocked write timed out). Callbacks may free of. */
static void bare_write_cb(evutil_socket_t fd, short what, void *arg)
{
	OutFlush *of = arg;
	if (what & EV_TIMEOUT) {
		bare_stop_waiting(of);
		of->event_cb(NULL, BEV_EVENT_WRITING | BEV_EVENT_TIMEOUT, of->arg);
		return;
	}
	int n = evbuffer_get_length(of->buf) > 0 ? flusher_send(of->buf, of->fd) : 0;
	if (n < 0 && !write_would_block(errno)) {
		bare_stop_waiting(of);
		of->event_cb(NULL, BEV_EVENT_WRITING | BEV_EVENT_ERROR, of->arg);
		return;
	}
	size_t left = evbuffer_get_length(of->buf);
	if (left == 0)
		bare_stop_waiting(of);
	if (n > 0 && left <= of->low && of->write_cb)
		of->write_cb(NULL, of->arg);
}

/* A bare socket's write would block: write the rest once it can take it. */
static void bare_wait_writable(OutFlush *of)
{
	if (!of->wev)
		of->wev = event_new(event_get_base(of->owner->ev), of->fd, EV_WRITE | EV_PERSIST, bare_write_cb, of);
	struct timeval tv = { of->timeout_sec, 0 };
	if (!of->wev || event_add(of->wev, of->timeout_sec > 0 ? &tv : NULL) != 0) {
		of->event_cb(NULL, BEV_EVENT_WRITING | BEV_EVENT_ERROR, of->arg);	/* may free of */
		return;
	}
	of->wev_added = true;
}

/* What the bufferevent must finish: behind what it already holds, if anything. */
static void flusher_hand_over(OutFlush *of)
{
	if (of->bare) {
		bare_wait_writable(of);	/* an error is reported from there too */
		return;
	}
	msgio_output_hand_over(of, of->bev);
	bufferevent_enable(of->bev, EV_WRITE);
	of->writing = true;
}

static bool output_write_blocked(const OutFlush *of)
{
	if (of->bare)
		return of->wev_added;
	/* (a closing TLS client's bufferevent is enabled where the flag does not see it) */
	return of->ssl ? (bufferevent_get_enabled(of->bev) & EV_WRITE) != 0 : of->writing;
}

static void flusher_write_one(OutFlush *of)
{
	if (output_write_blocked(of)) {
		/* a blocked write is pending: it finishes that, and what came since */
		if (!of->bare)
			msgio_output_hand_over(of, of->bev);
		return;
	}
	int n;
	if (of->ssl) {
		n = flusher_send_tls(of->buf, of->ssl);
	} else {
		if (evbuffer_get_length(of->buf) == 0)
			return;
		n = flusher_send(of->buf, output_fd(of));
	}
	flusher_after_write(of, n);
}

/* After a direct write of n bytes (or -1, errno): hand leftovers to the bufferevent. */
static void flusher_after_write(OutFlush *of, int n)
{
	struct bufferevent *bev = of->bev;
	if (n < 0 && !write_would_block(errno)) {
		flusher_hand_over(of);	/* the bufferevent (or the bare write event) reports the error */
		return;
	}
	if (evbuffer_get_length(of->buf) > 0) {
		flusher_hand_over(of);
		return;
	}
	bufferevent_data_cb write_cb = of->write_cb;
	void *arg = of->arg;
	if (!of->bare)
		bufferevent_getcb(bev, NULL, &write_cb, NULL, &arg);
	if (n > 0 && write_cb)
		write_cb(bev, arg);	/* may free the connection: of is not touched after */
}

static void flusher_run(evutil_socket_t fd, short what, void *arg)
{
	msgio_flusher_run(arg);
}

/*
 * Tests run with assertions: a writer that did not take its buffer through
 * msgio_out() left bytes that no flush will send. Abort where it shows.
 */
static void flusher_check_nothing_left(Flusher *f)
{
#ifdef PGMOAT_CASSERT
	List *item;
	list_for_each(item, &f->all) {
		OutFlush *of = container_of(item, OutFlush, member);
		if (evbuffer_get_length(of->buf) > 0 && !of->queued && !output_write_blocked(of)) {
			log_fatal("output of %zu bytes left unflushed: its writer skipped msgio_out()",
				  evbuffer_get_length(of->buf));
			abort();
		}
	}
#else
	(void)f;
#endif
}

void msgio_flusher_run(Flusher *f)
{
	List *item;
	while ((item = list_first(&f->dirty)) != NULL) {
		OutFlush *of = container_of(item, OutFlush, link);
		list_del(&of->link);
		of->queued = false;
		flusher_write_one(of);
	}
	flusher_check_nothing_left(f);
}

bool msgio_flusher_init(Flusher *f, struct event_base *base)
{
	f->batch_depth = 0;
#ifdef PGMOAT_CASSERT
	f->check_always = true;
#else
	f->check_always = false;
#endif
	list_init(&f->dirty);
	list_init(&f->all);
	f->ev = event_new(base, -1, 0, flusher_run, f);
	return f->ev != NULL;
}

void msgio_flusher_free(Flusher *f)
{
	if (f->ev)
		event_free(f->ev);
	f->ev = NULL;
}

static void output_mark_dirty(OutFlush *of)
{
	if (of->queued)
		return;
	of->queued = true;
	list_append(&of->owner->dirty, &of->link);
	if (of->owner->batch_depth == 0)
		event_active(of->owner->ev, EV_WRITE, 0);
}

struct evbuffer *msgio_out(OutFlush *of)
{
	if (of->bev || of->bare)
		output_mark_dirty(of);	/* detached (a handshake runs): attaching marks it */
	return of->buf;
}

bool msgio_output_send_now(OutFlush *of, const void *data, size_t len)
{
	if (of->bare && !of->queued && !of->wev_added && evbuffer_get_length(of->buf) == 0) {
		ssize_t n = send(of->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n == (ssize_t)len)
			return true;
		if (n > 0) {
			data = (const uint8_t *)data + n;
			len -= (size_t)n;
		}
		/* the rest (or all of it, after an error) goes the usual way: the flusher
		 * writes it or reports the error */
	}
	return evbuffer_add(msgio_out(of), data, len) == 0;
}

bool msgio_output_attach(OutFlush *of, Flusher *f, struct bufferevent *bev, SSL *ssl)
{
	if (!of->bev)
		list_init(&of->member);	/* (a zeroed OutFlush has no list pointers yet) */
	of->bev = bev;
	of->owner = f;
	of->queued = false;
	of->ssl = ssl;
	of->fd = bufferevent_getfd(bev);	/* -1 before a connect: see output_fd() */
	list_init(&of->link);
	bufferevent_disable(bev, EV_WRITE);
	of->writing = false;
	/* what was queued while a TLS handshake ran goes out first, encrypted */
	if (!of->own)
		of->own = buffer_take();
	of->buf = of->own;
	if (!of->buf)
		return false;
	if (list_empty(&of->member))
		list_append(&f->all, &of->member);
	if (evbuffer_get_length(of->buf) > 0)
		output_mark_dirty(of);	/* queued before the attach */
	return true;
}

bool msgio_output_attach_fd(OutFlush *of, Flusher *f, int fd, size_t low, bufferevent_data_cb write_cb,
			    bufferevent_event_cb event_cb, void *arg)
{
	if (!of->own)
		of->own = buffer_take();
	of->buf = of->own;
	if (!of->buf)
		return false;
	of->bev = NULL;
	of->ssl = NULL;
	of->owner = f;
	of->queued = false;
	list_init(&of->link);
	of->bare = true;
	of->fd = fd;
	of->wev = NULL;
	of->wev_added = false;
	of->low = low;
	of->timeout_sec = 0;
	of->write_cb = write_cb;
	of->event_cb = event_cb;
	of->arg = arg;
	list_init(&of->member);
	list_append(&f->all, &of->member);
	if (evbuffer_get_length(of->buf) > 0)
		output_mark_dirty(of);
	return true;
}

void msgio_output_finish(OutFlush *of, int timeout_sec, bufferevent_data_cb write_cb,
			 bufferevent_event_cb event_cb)
{
	of->low = 0;
	of->timeout_sec = timeout_sec;
	of->write_cb = write_cb;
	of->event_cb = event_cb;
	if (of->wev_added)
		bare_wait_writable(of);	/* the timeout applies from now */
	else if (evbuffer_get_length(of->buf) > 0)
		output_mark_dirty(of);
}

void msgio_output_detach(OutFlush *of)
{
	if (of->queued)
		list_del(&of->link);
	of->queued = false;
	if (of->bev || of->bare)
		list_del(&of->member);
	if (of->wev)
		event_free(of->wev);
	of->wev = NULL;
	of->wev_added = false;
	of->bare = false;
	of->buf = of->own;	/* a bufferevent's output goes with it */
	of->bev = NULL;
	of->ssl = NULL;
}

void msgio_output_free(OutFlush *of)
{
	msgio_output_detach(of);
	if (of->own)
		buffer_give(of->own, true);
	of->own = NULL;
	of->buf = NULL;
}

size_t msgio_output_pending_bev(const OutFlush *of)
{
	return evbuffer_get_length(bufferevent_get_output(of->bev));
}

void msgio_output_hand_over(OutFlush *of, struct bufferevent *bev)
{
	if (of->own)
		evbuffer_add_buffer(bufferevent_get_output(bev), of->own);
}

void msgio_output_drained(OutFlush *of)
{
	/* after every direct write: only a write the bufferevent finished left EV_WRITE on */
	struct bufferevent *bev = of->bev;
	if (bev && of->writing && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
		bufferevent_disable(bev, EV_WRITE);
		of->writing = false;
	}
}


#define READ_CHUNK 16384	/* per read: larger reservations churn the heap */

/*
 * What a small read lands in before it is added to the input. One for both
 * kinds of reads: static TLS comes out of every thread's stack, and a
 * thread made with a small one has no room for two.
 */
static __thread uint8_t read_scratch[READ_CHUNK];

/* have: what r->buf holds, or SIZE_MAX: not known, ask the buffer (if it matters) */
static void reader_update_have(InReader *r, size_t have)
{
	bool want = r->enabled && !r->suspended &&
		    (r->high == 0 || (have != SIZE_MAX ? have : evbuffer_get_length(r->buf)) < r->high);
	if (want && !r->added) {
		event_add(r->ev, NULL);
		r->added = true;
	} else if (!want && r->added) {
		event_del(r->ev);
		r->added = false;
	}
	if (want && r->tls_more)
		event_active(r->ev, EV_READ, 0);	/* OpenSSL holds bytes no socket event announces */
}

static void reader_update(InReader *r)
{
	reader_update_have(r, SIZE_MAX);
}

/*
 * SSL_read into up to room bytes of the input: into its own free space
 * while a stream comes (bulk), else into a scratch buffer whose bytes are
 * added after (a small chain, recycled, instead of a READ_CHUNK one: as
 * reader_recv_copy). Stops when OpenSSL holds nothing more (the socket's
 * next event brings more), or when the room is full (OpenSSL may still
 * hold data: tls_more).
 */
static ssize_t reader_fill_tls(InReader *r, struct evbuffer *in, size_t room, bool *got_data)
{
	struct evbuffer_iovec vec[1];
	bool in_place = r->bulk;
	if (in_place && evbuffer_reserve_space(in, (ev_ssize_t)room, vec, 1) != 1)
		return -1;
	uint8_t *dst = in_place ? vec[0].iov_base : read_scratch;
	size_t cap = in_place && vec[0].iov_len < room ? vec[0].iov_len : room;
	size_t done = 0;
	ssize_t rc = 1;
	r->reserved |= in_place;
	r->tls_more = false;
	while (done < cap) {
		int n = SSL_read(r->ssl, dst + done, (int)(cap - done));
		if (n > 0) {
			done += (size_t)n;
			if (!SSL_has_pending(r->ssl))
				break;	/* the socket's next event brings more: no read just for EAGAIN */
			continue;
		}
		int e = tls_io_result(r->ssl, n);
		if (e == SSL_ERROR_ZERO_RETURN)
			rc = 0;
		else if (e != SSL_ERROR_WANT_READ)
			rc = -1;	/* renegotiation is off: WANT_WRITE here is a failure too */
		break;
	}
	r->tls_more = done == cap;
	r->bulk = done >= READ_CHUNK / 2;
	if (in_place) {
		vec[0].iov_len = done;
		evbuffer_commit_space(in, vec, 1);
	} else if (done > 0 && evbuffer_add(in, read_scratch, done) != 0) {
		return -1;
	}
	*got_data = done > 0;
	/* Data first; an EOF or error behind it is seen on the next read. */
	return done > 0 ? (ssize_t)done : rc;
}

/*
 * recv() straight into the input's own free space: for bulk transfers, where
 * a read fills what it was given. Reserving space in an empty evbuffer
 * allocates a READ_CHUNK chain, freed again once the message has moved on.
 */
static ssize_t reader_recv_in_place(int fd, struct evbuffer *in, size_t room)
{
	struct evbuffer_iovec vec[2];
	int nvec = evbuffer_reserve_space(in, (ev_ssize_t)room, vec, 2);
	if (nvec <= 0)
		return -1;
	struct iovec iov[2];
	for (int i = 0; i < nvec; i++) {
		iov[i].iov_base = vec[i].iov_base;
		iov[i].iov_len = vec[i].iov_len;
	}
	/* recv() takes the socket path directly; readv() goes through the VFS layer. */
	ssize_t n = nvec == 1 ? recv(fd, iov[0].iov_base, iov[0].iov_len, 0) : readv(fd, iov, nvec);
	size_t left = n > 0 ? (size_t)n : 0;
	for (int i = 0; i < nvec; i++) {
		size_t take = left < vec[i].iov_len ? left : vec[i].iov_len;
		vec[i].iov_len = take;
		left -= take;
	}
	int saved = errno;
	evbuffer_commit_space(in, vec, nvec);
	errno = saved;
	return n;
}

/*
 * recv() into a scratch buffer, then add what came: a query or a reply of a
 * few hundred bytes then takes a small chain, which the allocator recycles
 * (evmem.c), instead of a READ_CHUNK one.
 */
static ssize_t reader_recv_copy(int fd, struct evbuffer *in, size_t room)
{
	ssize_t n = recv(fd, read_scratch, room < sizeof(read_scratch) ? room : sizeof(read_scratch), 0);
	if (n > 0 && evbuffer_add(in, read_scratch, (size_t)n) != 0)
		return -1;
	return n;
}

/*
 * Read once; <0 error, 0 EOF, >0 bytes (or 1 with nothing new on EAGAIN).
 * *have_after: what the input holds then (pertx8: reader_update need not ask).
 */
static ssize_t reader_fill(InReader *r, bool *got_data, size_t *have_after)
{
	struct evbuffer *in = r->buf;
	size_t room = READ_CHUNK;
	size_t have = evbuffer_get_length(in);
	*got_data = false;
	*have_after = have;
	if (r->high && have >= r->high)
		return 1;	/* full: wait until the connection consumed some */
	if (r->high && have < r->high && r->high - have < room)
		room = r->high - have;
	if (r->ssl) {
		*have_after = SIZE_MAX;	/* (TLS: not counted here) */
		return reader_fill_tls(r, in, room, got_data);
	}
	int fd = r->fd;
	r->reserved |= r->bulk;
	ssize_t n = r->bulk ? reader_recv_in_place(fd, in, room) : reader_recv_copy(fd, in, room);
	/* a read that filled its room announces a stream: read in place until it ebbs */
	r->bulk = n >= (ssize_t)(READ_CHUNK / 2);
	*got_data = n > 0;
	if (n > 0)
		*have_after = have + (size_t)n;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return 1;
	return n;
}

static void reader_cb(evutil_socket_t fd, short what, void *arg)
{
	InReader *r = arg;
	bool got = false;
	size_t have = SIZE_MAX;
	ssize_t n = (what & EV_READ) && r->enabled && !r->suspended ? reader_fill(r, &got, &have) : 1;
	bool kicked = r->kicked;
	r->kicked = false;
	reader_update_have(r, have);	/* before the callbacks: they may free r */
	if (n == 0)
		r->event_cb(r->bev, BEV_EVENT_READING | BEV_EVENT_EOF, r->arg);
	else if (n < 0)
		r->event_cb(r->bev, BEV_EVENT_READING | BEV_EVENT_ERROR, r->arg);
	else if (got || kicked)
		r->read_cb(r->bev, r->arg);
}

bool msgio_reader_init_fd(InReader *r, struct event_base *base, int fd, size_t high,
			  bufferevent_data_cb read_cb, bufferevent_event_cb event_cb, void *arg)
{
	struct evbuffer *buf = r->buf ? r->buf : buffer_take();	/* kept across a TLS switch */
	memset(r, 0, sizeof(*r));
	r->buf = buf;
	if (!buf)
		return false;
	r->high = high;
	r->read_cb = read_cb;
	r->event_cb = event_cb;
	r->arg = arg;
	r->fd = fd;
	r->ev = reader_event_take(base, fd, reader_cb, r);
	return r->ev != NULL;
}

bool msgio_reader_init(InReader *r, struct bufferevent *bev, size_t high, bufferevent_data_cb read_cb,
		       bufferevent_event_cb event_cb, void *arg)
{
	if (!msgio_reader_init_fd(r, bufferevent_get_base(bev), bufferevent_getfd(bev), high, read_cb,
				  event_cb, arg))
		return false;
	/* a TLS bufferevent may have read application data behind its handshake */
	evbuffer_add_buffer(r->buf, bufferevent_get_input(bev));
	r->bev = bev;
	bufferevent_disable(bev, EV_READ);	/* the bufferevent never reads itself */
	return true;
}

void msgio_reader_stop(InReader *r)
{
	if (r->ev)
		reader_event_give(r->ev);
	r->ev = NULL;
	r->added = false;
}

void msgio_reader_free(InReader *r)
{
	msgio_reader_stop(r);
	if (r->buf)
		buffer_give(r->buf, !r->reserved);	/* (a reserved chunk may be left) */
	r->buf = NULL;
}

void msgio_reader_use_tls(InReader *r, SSL *ssl)
{
	r->ssl = ssl;
	r->tls_more = true;	/* the handshake may have read application data ahead */
	reader_update(r);
}

void msgio_reader_enable(InReader *r, bool on)
{
	if (!r->ev)
		return;
	r->enabled = on;
	reader_update(r);
}

void msgio_reader_suspend(InReader *r, bool on)
{
	if (!r->ev)
		return;
	r->suspended = on;
	reader_update(r);
}

void msgio_reader_set_high(InReader *r, size_t high)
{
	if (!r->ev)
		return;
	r->high = high;
	reader_update(r);
}

void msgio_reader_resume(InReader *r)
{
	reader_update(r);
}

void msgio_reader_try_now(InReader *r)
{
	if (r->ev && r->enabled && !r->suspended)
		reader_cb(event_get_fd(r->ev), EV_READ, r);	/* may free r */
}

void msgio_reader_kick(InReader *r)
{
	if (!r->ev)
		return;
	r->kicked = true;
	event_active(r->ev, EV_TIMEOUT, 0);
}
