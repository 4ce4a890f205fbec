/*
 * libFuzzer target for prepared-statement tracking (src/prepared.c): client
 * messages (well-formed from a small vocabulary of names and texts, or raw
 * bytes of any type) and server replies in any order, against one client
 * linked to one server.
 *
 * Input: a sequence of ops (every part optional; a short input just ends):
 *   0 n t   Parse of name n%5 ("" is one of them) with text t%4
 *   1 n     Bind of name n%6 (5: a reserved pgmoat_ps_ name), via the
 *           streaming path (prepared_forward_bind) or whole (odd n)
 *   2 n     Describe statement n     3 n   Close statement n
 *   4 q     simple Query q%5 (DEALLOCATE/DISCARD variants, plain SELECT)
 *   5 k     Sync, Execute, Flush or FunctionCall
 *   6 r     a server reply of type "123TnCIsZEGNtDSAV"[r%17]
 *   7 t u16 len bytes   a raw client message of type t
 *   8 m     max_prepared_statements = m%4 + 1 for what follows
 *
 * Invariants (abort() on violation): pgmoat's own answers to the client are
 * only whole ParseComplete/CloseComplete messages; every byte sent to the
 * server is a sequence of well-framed messages; nothing leaks (LeakSanitizer:
 * every reference to a statement definition is given back).
 */
#include "prepared.h"
#include "client.h"
#include "enforce.h"
#include "pool.h"
#include "pktbuf.h"
#include "proto.h"
#include "sessionstate.h"
#include "sqlinfo.h"

#include <event2/bufferevent.h>
#include <stdio.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- what prepared.c needs from the rest of the daemon ---------------- */

Moat *moat;

void client_disconnect(Client *c, const char *sqlstate, const char *fmt, ...)
{
	c->state = CL_FREE;
}

bool enforce_refuse(Server *s, uint8_t type, const char *sqlstate, const char *message, PktBuf *pb)
{
	pktbuf_start(pb, 'B');
	pktbuf_put_cstring(pb, "");
	pktbuf_put_cstring(pb, "pgmoat_denied_fuzz");
	pktbuf_put_int16(pb, 0);
	pktbuf_put_int16(pb, 0);
	pktbuf_put_int16(pb, 0);
	pktbuf_finish(pb);
	return pktbuf_ok(pb);
}

PoolMode pool_mode_refresh(Pool *pool)
{
	pool->mode = POOL_TRANSACTION;
	pool->mode_epoch = moat->cfg_epoch;
	return pool->mode;
}

SqlInfo *sessionstate_classify(Worker *w, const char *sql, size_t len)
{
	return sqlinfo_parse(sql, len);
}

void sessionstate_release(Worker *w, SqlInfo *info)
{
	sqlinfo_free(info);
}

/* No flusher here: the harness reads the outputs itself. */
struct evbuffer *msgio_out(OutFlush *of)
{
	return of->buf;
}

/* ---- harness ----------------------------------------------------------- */

static const char *const names[] = { "", "a", "b", "c", "dd", PREPARED_PREFIX "1" };
static const char *const texts[] = { "select 1", "select $1::int", "select 2", "selec broken" };
static const char *const queries[] = { "DEALLOCATE a", "DEALLOCATE ALL", "DISCARD ALL",
				       "select 'deallocate'", "DEALLOCATE b; select 1" };
static const char replies[] = "123TnCIsZEGNtDSAV";

/* As client.c: what passes unchanged is moved and noted, the rest takes its step. */
static void send_msg(Client *c, Server *s, PktBuf *pb)
{
	if (pktbuf_ok(pb) && prepared_passes(pb->data, pb->len)) {
		evbuffer_add(msgio_out(&s->out), pb->data, pb->len);
		prepared_track(s, pb->data[0]);
	} else if (pktbuf_ok(pb)) {
		prepared_send(c, s, pb->data, pb->len);
	}
	pktbuf_reset(pb);
}

static void bind_streaming(Client *c, Server *s, PktBuf *pb)
{
	struct evbuffer *in = c->in.buf;
	struct evbuffer *out = s->out.buf;
	evbuffer_add(in, pb->data, pb->len);
	MsgHeader h;
	if (proto_frame_header(pb->data, pb->len, UINT32_MAX, &h) != FRAME_OK)
		abort();
	PreparedBindHead head;
	PreparedBind r = prepared_forward_bind(c, s, &h, NULL, &head);
	size_t total = proto_msg_total(&h);
	switch (r) {
	case PREPARED_BIND_WAIT:
		abort();	/* the whole message is there */
	case PREPARED_BIND_PASS:
		evbuffer_remove_buffer(in, out, total);
		break;
	case PREPARED_BIND_REWRITTEN:
		if (head.replaces > total || head.len > sizeof(head.data))
			abort();
		evbuffer_add(out, head.data, head.len);
		evbuffer_drain(in, head.replaces);
		evbuffer_remove_buffer(in, out, total - head.replaces);
		break;
	case PREPARED_BIND_DONE:
		if (!c->fwd_discard || c->fwd_remaining != total)
			abort();
		evbuffer_drain(in, total);
		break;
	}
	c->fwd_remaining = 0;
	c->fwd_discard = false;
	pktbuf_reset(pb);
}

static void build_named(PktBuf *pb, uint8_t type, uint8_t kind, const char *name)
{
	pktbuf_start(pb, type);
	pktbuf_put_uint8(pb, kind);
	pktbuf_put_cstring(pb, name);
	pktbuf_finish(pb);
}

static void check_client_output(Client *c)
{
	struct evbuffer *out = c->out.buf;
	uint8_t m[5];
	while (evbuffer_remove(out, m, 5) == 5)
		if ((m[0] != '1' && m[0] != '3') || m[1] || m[2] || m[3] || m[4] != 4)
			abort();
	if (evbuffer_get_length(out) != 0)
		abort();
}

static void check_server_output(Server *s)
{
	struct evbuffer *out = s->out.buf;
	for (;;) {
		uint8_t hdr[5];
		if (evbuffer_copyout(out, hdr, 5) < 5)
			break;
		MsgHeader h;
		if (proto_frame_header(hdr, 5, UINT32_MAX, &h) != FRAME_OK ||
		    evbuffer_get_length(out) < proto_msg_total(&h)) {
			size_t n = evbuffer_get_length(out);
			unsigned char *p = evbuffer_pullup(out, -1);
			for (size_t i = 0; i < n; i++)
				fprintf(stderr, "%02x%c", p[i], (p[i] >= 32 && p[i] < 127) ? p[i] : '.');
			fprintf(stderr, "\n");
			abort();
		}
		evbuffer_drain(out, proto_msg_total(&h));
	}
	if (evbuffer_get_length(out) != 0) {
		fprintf(stderr, "left %zu\n", evbuffer_get_length(out));
		abort();
	}
}

static void run_op(Client *c, Server *s, PktReader *r, PktBuf *pb)
{
	uint8_t op, a;
	if (!proto_read_uint8(r, &op) || !proto_read_uint8(r, &a))
		return;
	switch (op % 9) {
	case 0: {
		uint8_t t = 0;
		(void)proto_read_uint8(r, &t);
		pktbuf_start(pb, 'P');
		pktbuf_put_cstring(pb, names[a % 5]);
		pktbuf_put_cstring(pb, texts[t % 4]);
		pktbuf_put_int16(pb, (int16_t)(t & 1));
		if (t & 1)
			pktbuf_put_uint32(pb, 23);
		pktbuf_finish(pb);
		send_msg(c, s, pb);
		break;
	}
	case 1:
		pktbuf_start(pb, 'B');
		pktbuf_put_cstring(pb, "");
		pktbuf_put_cstring(pb, names[a % 6]);
		pktbuf_put_int16(pb, 0);
		pktbuf_put_int16(pb, 0);
		pktbuf_put_int16(pb, 0);
		pktbuf_finish(pb);
		if (a & 0x80)
			send_msg(c, s, pb);
		else
			bind_streaming(c, s, pb);
		break;
	case 2:
		build_named(pb, 'D', (a & 0x80) ? 'P' : 'S', names[a % 6]);
		send_msg(c, s, pb);
		break;
	case 3:
		build_named(pb, 'C', (a & 0x80) ? 'P' : 'S', names[a % 6]);
		send_msg(c, s, pb);
		break;
	case 4:
		pktbuf_query(pb, queries[a % 5]);
		send_msg(c, s, pb);
		break;
	case 5:
		pktbuf_start(pb, "SEHF"[a % 4]);
		pktbuf_finish(pb);
		send_msg(c, s, pb);
		break;
	case 6:
		(void)prepared_response(s, (uint8_t)replies[a % 17]);
		prepared_emit(s);
		break;
	case 7: {
		uint16_t len = 0;
		const uint8_t *body = NULL;
		(void)proto_read_uint16(r, &len);
		if (len > proto_reader_left(r))
			len = (uint16_t)proto_reader_left(r);
		if (!proto_read_bytes(r, len, &body))
			break;
		pktbuf_start(pb, a);
		pktbuf_put_bytes(pb, body, len);
		pktbuf_finish(pb);
		send_msg(c, s, pb);
		break;
	}
	case 8:
		moat->cfg->max_prepared_statements = a % 4 + 1;
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct event_base *base;
	static struct bufferevent *bevs[2];	/* the loop never runs: we are the sockets */
	static struct evbuffer *bufs[4];	/* client in, out; server in, out */
	static Config cfg;
	static Moat m;
	if (!base) {
		int fds[2];
		base = event_base_new();
		m.cfg = &cfg;
		moat = &m;
		if (!base || socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
			abort();
		for (int i = 0; i < 2; i++) {
			bevs[i] = bufferevent_socket_new(base, fds[i], BEV_OPT_CLOSE_ON_FREE);
			if (!bevs[i])
				abort();
			bufferevent_disable(bevs[i], EV_READ | EV_WRITE);
		}
		for (int i = 0; i < 4; i++)
			if (!(bufs[i] = evbuffer_new()))
				abort();
		log_verbosity = LOG_ERROR;	/* desync warnings are expected for random replies */
	}
	cfg.max_prepared_statements = 3;
	Worker w = { .base = base };
	Database db = { 0 };
	Pool pool = { .db = &db, .mode_epoch = m.cfg_epoch + 1 };	/* pool_mode_refresh() sets it */
	Client c = { .worker = &w, .pool = &pool, .state = CL_ACTIVE };
	Server s = { .worker = &w, .pool = &pool, .state = SV_ACTIVE };
	c.bev = bevs[0];
	s.bev = bevs[1];
	c.in.buf = bufs[0];
	c.out.buf = bufs[1];
	s.in.buf = bufs[2];
	s.out.buf = bufs[3];
	for (int i = 0; i < 4; i++)
		evbuffer_drain(bufs[i], SIZE_MAX);
	prepared_client_init(&c);
	if (!prepared_on(&c))
		abort();
	c.link = &s;
	s.link = &c;
	prepared_link(&c, &s);

	PktReader r;
	PktBuf pb;
	pktbuf_init(&pb);
	proto_reader_init(&r, data, size);
	while (proto_reader_left(&r) > 0 && c.state != CL_FREE) {
		run_op(&c, &s, &r, &pb);
		check_client_output(&c);
		check_server_output(&s);
	}
	pktbuf_free(&pb);
	s.link = NULL;
	prepared_client_free(&c);
	prepared_server_free(&s);
	prepared_shutdown(&w);
	return 0;
}
