/*
 * msgio_extend_run (which messages of a reply move together), the direct
 * reader and the bare output, and evmem (the
 * recycled evbuffer chains and libevent objects), on plain evbuffers and
 * bufferevents over socket pairs.
 */
#include <criterion/criterion.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../src/evmem.h"
#include "../../src/msgio.h"

/* Append one message: type, length, and a body of n bytes of fill. */
static size_t add_msg(struct evbuffer *b, uint8_t type, size_t n, uint8_t fill)
{
	uint8_t hdr[5] = { type, (uint8_t)((n + 4) >> 24), (uint8_t)((n + 4) >> 16),
			   (uint8_t)((n + 4) >> 8), (uint8_t)(n + 4) };
	uint8_t body[256];
	cr_assert(n <= sizeof(body));
	memset(body, fill, n);
	evbuffer_add(b, hdr, sizeof(hdr));
	evbuffer_add(b, body, n);
	return sizeof(hdr) + n;
}

typedef struct Seen {
	char types[16];
	int n;
	char refuse;	/* the type the predicate refuses */
} Seen;

static bool note_type(void *arg, const MsgHeader *h)
{
	Seen *s = arg;
	if (h->type == s->refuse)
		return false;
	if (s->n < (int)sizeof(s->types) - 1)
		s->types[s->n++] = (char)h->type;
	return true;
}

Test(msgio, run_takes_following_messages_until_refused)
{
	struct evbuffer *b = evbuffer_new();
	size_t first = add_msg(b, 'T', 20, 1);
	size_t d = add_msg(b, 'D', 10, 2);
	size_t c = add_msg(b, 'C', 8, 3);
	add_msg(b, 'Z', 1, 'I');
	add_msg(b, 'D', 10, 4);
	Seen s = { .refuse = 'Z' };
	struct evbuffer_iovec chunk;
	size_t end = msgio_extend_run(b, first, 1 << 20, note_type, &s, &chunk);
	cr_assert_eq(end, first + d + c);
	cr_assert_str_eq(s.types, "DC", "the run stops at the first refusal, in order");
	cr_assert_eq(chunk.iov_len, evbuffer_get_length(b), "the first chunk is reported");
	cr_assert_eq(((const uint8_t *)chunk.iov_base)[end - 1], 3, "the run's last byte, in place");
	evbuffer_free(b);
}

Test(msgio, run_stops_at_a_message_not_all_here)
{
	struct evbuffer *b = evbuffer_new();
	size_t first = add_msg(b, 'T', 20, 1);
	uint8_t partial[7] = { 'D', 0, 0, 0, 50, 9, 9 };	/* says 50 bytes, has 2 */
	evbuffer_add(b, partial, sizeof(partial));
	Seen s = { .refuse = 0 };
	cr_assert_eq(msgio_extend_run(b, first, 1 << 20, note_type, &s, NULL), first);
	cr_assert_eq(s.n, 0);
	uint8_t half_header[3] = { 'C', 0, 0 };
	struct evbuffer *b2 = evbuffer_new();
	first = add_msg(b2, 'T', 20, 1);
	evbuffer_add(b2, half_header, sizeof(half_header));
	cr_assert_eq(msgio_extend_run(b2, first, 1 << 20, note_type, &s, NULL), first);
	evbuffer_free(b);
	evbuffer_free(b2);
}

Test(msgio, run_stops_at_an_impossible_length)
{
	struct evbuffer *b = evbuffer_new();
	size_t first = add_msg(b, 'T', 20, 1);
	uint8_t bad[5] = { 'D', 0, 0, 0, 3 };	/* a length below 4 */
	evbuffer_add(b, bad, sizeof(bad));
	Seen s = { .refuse = 0 };
	cr_assert_eq(msgio_extend_run(b, first, 1 << 20, note_type, &s, NULL), first);
	struct evbuffer *b2 = evbuffer_new();
	first = add_msg(b2, 'T', 20, 1);
	add_msg(b2, 'D', 200, 1);
	cr_assert_eq(msgio_extend_run(b2, first, 100, note_type, &s, NULL), first, "over max_len");
	cr_assert_eq(s.n, 0);
	evbuffer_free(b);
	evbuffer_free(b2);
}

Test(msgio, run_never_crosses_into_a_second_chunk)
{
	struct evbuffer *b = evbuffer_new();
	struct evbuffer *tail = evbuffer_new();
	size_t first = add_msg(b, 'T', 20, 1);
	add_msg(tail, 'D', 10, 2);
	evbuffer_add_buffer(b, tail);	/* the D lies in a chain of its own */
	struct evbuffer_iovec v[2];
	int chunks = evbuffer_peek(b, -1, NULL, v, 2);
	Seen s = { .refuse = 0 };
	size_t end = msgio_extend_run(b, first, 1 << 20, note_type, &s, NULL);
	cr_assert_eq(chunks, 2, "evbuffer_add_buffer links the tail's chain");
	cr_assert_eq(v[0].iov_len, first);
	cr_assert_eq(end, first, "a message in the next chunk is left for the next pass");
	cr_assert_eq(s.n, 0);
	evbuffer_free(b);
	evbuffer_free(tail);
}

Test(msgio, run_from_beyond_the_first_chunk_is_unchanged)
{
	struct evbuffer *b = evbuffer_new();
	add_msg(b, 'D', 10, 2);
	Seen s = { .refuse = 0 };
	/* a first message still streaming: its end lies beyond what is here */
	cr_assert_eq(msgio_extend_run(b, 100000, 1 << 20, note_type, &s, NULL), 100000);
	cr_assert_eq(s.n, 0);
	evbuffer_free(b);
	struct evbuffer *empty = evbuffer_new();
	struct evbuffer_iovec chunk = { empty, 99 };
	cr_assert_eq(msgio_extend_run(empty, 0, 1 << 20, note_type, &s, &chunk), 0);
	cr_assert_eq(chunk.iov_len, 0, "an empty input reports an empty chunk");
	evbuffer_free(empty);
}

/* evmem: chains drained and allocated again keep their contents apart. */
Test(evmem, recycled_chains_carry_no_stale_bytes)
{
	evmem_install();
	for (int round = 0; round < 200; round++) {
		struct evbuffer *in = evbuffer_new();
		struct evbuffer *out = evbuffer_new();
		struct evbuffer_iovec v[1];
		cr_assert_eq(evbuffer_reserve_space(in, 16384, v, 1), 1);
		memset(v[0].iov_base, 'a' + round % 26, 100);
		v[0].iov_len = 100;
		cr_assert_eq(evbuffer_commit_space(in, v, 1), 0);
		cr_assert_eq(evbuffer_remove_buffer(in, out, 100), 100);
		uint8_t got[100];
		cr_assert_eq(evbuffer_remove(out, got, sizeof(got)), 100);
		for (size_t i = 0; i < sizeof(got); i++)
			cr_assert_eq(got[i], 'a' + round % 26);
		cr_assert_eq(evbuffer_get_length(in), 0);
		cr_assert_eq(evbuffer_get_length(out), 0);
		evbuffer_free(in);
		evbuffer_free(out);
	}
	evmem_release_thread_cache();
}

Test(evmem, large_and_odd_sizes_pass_through)
{
	evmem_install();
	struct evbuffer *b = evbuffer_new();
	static uint8_t big[300000];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);
	cr_assert_eq(evbuffer_add(b, big, sizeof(big)), 0);
	uint8_t *flat = evbuffer_pullup(b, -1);
	cr_assert_not_null(flat);
	cr_assert_eq(memcmp(flat, big, sizeof(big)), 0);
	evbuffer_free(b);
	evmem_release_thread_cache();
}

/*
 * evmem: a connection's libevent objects (bufferevent, evbuffers, events,
 * callback entries), freed and made again, come back from the cache: each
 * round's connection must still carry exactly its own bytes.
 */
Test(evmem, recycled_connection_objects_work_as_new)
{
	evmem_install();
	struct event_base *base = event_base_new();
	cr_assert_not_null(base);
	for (int round = 0; round < 100; round++) {
		int sv[2];
		cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		struct bufferevent *a = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
		struct bufferevent *b = bufferevent_socket_new(base, sv[1], BEV_OPT_CLOSE_ON_FREE);
		struct event *ev = event_new(base, -1, 0, NULL, NULL);
		cr_assert(a && b && ev);
		bufferevent_enable(a, EV_WRITE);
		bufferevent_enable(b, EV_READ);
		char sent[32];
		int n = snprintf(sent, sizeof(sent), "round %d", round);
		cr_assert_eq(bufferevent_write(a, sent, (size_t)n), 0);
		for (int pass = 0; pass < 100 && evbuffer_get_length(bufferevent_get_input(b)) < (size_t)n;
		     pass++)
			event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		char got[32] = { 0 };
		cr_assert_eq(bufferevent_read(b, got, sizeof(got) - 1), (size_t)n);
		cr_assert_str_eq(got, sent);
		event_free(ev);
		bufferevent_free(a);
		bufferevent_free(b);
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);	/* finalizers */
	}
	event_base_free(base);
	evmem_release_thread_cache();
}

/*
 * The direct reader: small reads go through a scratch buffer, reads that
 * fill half the room go straight into the input. Either way every byte
 * arrives once, in order, and EOF is reported after the data.
 */
typedef struct ReadSide {
	struct evbuffer *in;
	uint64_t checked;	/* pattern bytes verified so far */
	int reads;
	bool eof;
	bool saw_bulk;
	InReader *r;
} ReadSide;

static uint8_t pattern_at(uint64_t i)
{
	return (uint8_t)((i * 7 + 3) % 251);
}

static void read_side_check(ReadSide *rs)
{
	uint8_t chunk[4096];
	int n;
	while ((n = evbuffer_remove(rs->in, chunk, sizeof(chunk))) > 0)
		for (int i = 0; i < n; i++, rs->checked++)
			cr_assert_eq(chunk[i], pattern_at(rs->checked), "byte %llu",
				     (unsigned long long)rs->checked);
}

static void read_side_cb(struct bufferevent *bev, void *arg)
{
	ReadSide *rs = arg;
	rs->reads++;
	rs->saw_bulk |= rs->r->bulk;
	read_side_check(rs);
}

static void read_side_event_cb(struct bufferevent *bev, short what, void *arg)
{
	ReadSide *rs = arg;
	cr_assert(what & BEV_EVENT_EOF, "only EOF is expected, got 0x%x", what);
	rs->eof = true;
}

Test(msgio, reader_keeps_every_byte_small_and_bulk)
{
	struct event_base *base = event_base_new();
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	struct bufferevent *bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	InReader r = { 0 };
	ReadSide rs = { .r = &r };
	cr_assert(msgio_reader_init(&r, bev, 0, read_side_cb, read_side_event_cb, &rs));
	rs.in = r.buf;
	msgio_reader_enable(&r, true);

	const uint64_t total = 4 << 20;
	uint64_t sent = 0;
	uint8_t out[65536];
	for (int pass = 0; pass < 200000 && rs.checked < total; pass++) {
		/* a few small writes first, then large ones */
		size_t want = sent < 64 ? 7 : sizeof(out);
		if (want > total - sent)
			want = (size_t)(total - sent);
		for (size_t i = 0; i < want; i++)
			out[i] = pattern_at(sent + i);
		ssize_t n = want ? send(sv[1], out, want, 0) : 0;
		if (n > 0)
			sent += (uint64_t)n;
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	}
	cr_assert_eq(rs.checked, total, "every byte arrived once, in order");
	cr_assert(rs.saw_bulk, "large reads went straight into the input");

	close(sv[1]);
	for (int pass = 0; pass < 100 && !rs.eof; pass++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	cr_assert(rs.eof);
	msgio_reader_free(&r);
	bufferevent_free(bev);
	event_base_free(base);
}

/*
 * A bare plain socket (conn6: no bufferevent): a write that would block
 * waits on an event of its own, made then, which finishes it and reports as
 * a bufferevent would: the write callback at the low watermark, the event
 * callback on an error or a timeout.
 */
typedef struct WriteSide {
	int writes;	/* write callbacks */
	short events;	/* what the event callback saw */
	int fd;		/* the peer, read back to check */
	uint64_t checked;
} WriteSide;

static void write_side_cb(struct bufferevent *bev, void *arg)
{
	cr_assert_null(bev, "a bare socket has no bufferevent to report");
	((WriteSide *)arg)->writes++;
}

static void write_side_event_cb(struct bufferevent *bev, short what, void *arg)
{
	cr_assert_null(bev);
	((WriteSide *)arg)->events |= what;
}

static void write_side_drain_peer(WriteSide *ws)
{
	uint8_t chunk[65536];
	ssize_t n;
	while ((n = recv(ws->fd, chunk, sizeof(chunk), MSG_DONTWAIT)) > 0)
		for (ssize_t i = 0; i < n; i++, ws->checked++)
			cr_assert_eq(chunk[i], pattern_at(ws->checked), "byte %llu",
				     (unsigned long long)ws->checked);
}

/* Queue total pattern bytes and flush: more than the socket takes, so the write blocks. */
static void bare_queue_blocked(OutFlush *of, Flusher *f, uint64_t total)
{
	uint8_t out[65536];
	for (uint64_t sent = 0; sent < total; sent += sizeof(out)) {
		for (size_t i = 0; i < sizeof(out); i++)
			out[i] = pattern_at(sent + i);
		cr_assert_eq(evbuffer_add(msgio_out(of), out, sizeof(out)), 0);
	}
	msgio_flusher_run(f);
	cr_assert(of->wev_added, "the socket could not take it all: waiting to write");
	cr_assert_gt(msgio_output_pending(of), 0);
}

/* A bare output on one end of a socket pair; ws reads and checks the other end. */
typedef struct BareRig {
	struct event_base *base;
	int sv[2];
	Flusher f;
	OutFlush of;
	WriteSide ws;
} BareRig;

static void bare_rig_open(BareRig *r)
{
	memset(r, 0, sizeof(*r));
	r->base = event_base_new();
	cr_assert_not_null(r->base);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, r->sv), 0);
	cr_assert(msgio_flusher_init(&r->f, r->base));
	r->ws.fd = r->sv[1];
	cr_assert(msgio_output_attach_fd(&r->of, &r->f, r->sv[0], 1024, write_side_cb, write_side_event_cb,
					 &r->ws));
}

/* (a test that closed its peer end sets sv[1] to -1) */
static void bare_rig_close(BareRig *r)
{
	msgio_output_free(&r->of);
	msgio_flusher_free(&r->f);
	close(r->sv[0]);
	if (r->sv[1] >= 0)
		close(r->sv[1]);
	event_base_free(r->base);
}

Test(msgio, bare_output_finishes_a_blocked_write)
{
	BareRig r;
	bare_rig_open(&r);
	const uint64_t total = 4 << 20;
	bare_queue_blocked(&r.of, &r.f, total);
	for (int pass = 0; pass < 100000 && r.ws.checked < total; pass++) {
		write_side_drain_peer(&r.ws);
		event_base_loop(r.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	}
	write_side_drain_peer(&r.ws);
	cr_assert_eq(r.ws.checked, total, "every byte arrived once, in order");
	cr_assert_geq(r.ws.writes, 1, "the write callback ran once the output drained");
	cr_assert_eq(r.ws.events, 0, "no error");
	cr_assert_not(r.of.wev_added, "drained: no longer waiting to write");
	bare_rig_close(&r);
}

Test(msgio, bare_output_closing_times_out_when_nobody_reads, .timeout = 30)
{
	BareRig r;
	bare_rig_open(&r);
	bare_queue_blocked(&r.of, &r.f, 4 << 20);
	msgio_output_finish(&r.of, 1, write_side_cb, write_side_event_cb);
	for (int pass = 0; pass < 50 && !r.ws.events; pass++)
		event_base_loop(r.base, EVLOOP_ONCE);	/* blocks up to the 1 s timeout */
	cr_assert_eq(r.ws.events, BEV_EVENT_WRITING | BEV_EVENT_TIMEOUT);
	cr_assert_eq(r.ws.writes, 0, "nothing was read: no write callback");
	bare_rig_close(&r);
}

Test(msgio, bare_output_reports_a_write_error)
{
	BareRig r;
	bare_rig_open(&r);
	close(r.sv[1]);	/* the peer is gone: the write fails (EPIPE, no signal) */
	r.sv[1] = -1;
	cr_assert_eq(evbuffer_add(msgio_out(&r.of), "hello", 5), 0);
	msgio_flusher_run(&r.f);
	for (int pass = 0; pass < 50 && !r.ws.events; pass++)
		event_base_loop(r.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	cr_assert_eq(r.ws.events, BEV_EVENT_WRITING | BEV_EVENT_ERROR);
	bare_rig_close(&r);
}
