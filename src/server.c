/*
 * Server connections: connect, log in with credentials pgmoat holds (the
 * client never sees them), then forward the server's messages to the linked
 * client. Replies to our own queries (parameter sync, reset, check,
 * connect_query) are swallowed: internal_queries counts them in flight.
 *
 * A server that breaks the protocol is dropped; its client gets an error and
 * everyone else carries on.
 */
#include "server.h"
#include "approvals.h"
#include "client.h"
#include "pool.h"
#include "enforce.h"
#include "drain.h"
#include "audit.h"
#include "maskwire.h"
#include "prepared.h"
#include "proto.h"
#include "msgio.h"
#include "auth_md5.h"
#include "auth_scram.h"
#include "tls.h"
#include "sockopt.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/stat.h>
#include <sys/un.h>

#define SERVER_LOGIN_MSG_MAX 65536	/* auth, ParameterStatus, errors during login */
#define SERVER_INSPECT_MAX 65536	/* messages we must parse: ParameterStatus, errors of ours */
#define SERVER_INSPECT_SMALL 256	/* inspected messages up to this size are read onto the stack */

static void server_process_input(Server *s);

const char *server_state_name(ServerState st)
{
	static const char *names[] = { "free", "login", "idle", "active", "used", "tested" };
	return names[st];
}

static List *server_state_list(Server *s, ServerState st)
{
	Pool *p = s->pool;
	switch (st) {
	case SV_FREE:
		return &s->worker->free_servers;
	case SV_LOGIN:
		return &p->login_servers;
	case SV_IDLE:
		return &p->idle_servers;
	case SV_ACTIVE:
		return &p->active_servers;
	case SV_USED:
		return &p->used_servers;
	case SV_TESTED:
		return &p->tested_servers;
	}
	return NULL;
}

void server_set_state(Server *s, ServerState st)
{
	list_del(&s->head);
	s->state = st;
	List *l = server_state_list(s, st);
	if (st == SV_IDLE) {
		/* LIFO: the most recently used connection is the warmest. */
		s->idle_since = util_now_cached();
		s->head.next = l->next;
		s->head.prev = l;
		l->next->prev = &s->head;
		l->next = &s->head;
	} else {
		list_append(l, &s->head);
	}
}

bool server_send_pktbuf(Server *s, PktBuf *pb)
{
	if (!pktbuf_ok(pb) || !s->bev || !s->out.buf)
		return false;
	return evbuffer_add(msgio_out(&s->out), pb->data, pb->len) == 0;
}

bool server_send_internal_query(Server *s, const char *sql)
{
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_query(&pb, sql);
	bool ok = server_send_pktbuf(s, &pb);
	pktbuf_free(&pb);
	if (ok) {
		s->internal_queries++;
		s->ready = false;
	}
	return ok;
}

static void server_free_later(Server *s)
{
	event_active(s->worker->free_ev, EV_WRITE, 0);
}

/* Polite goodbye; best effort, never blocks. */
static void server_send_terminate(Server *s)
{
	static const uint8_t terminate[5] = { 'X', 0, 0, 0, 4 };
	int fd = bufferevent_getfd(s->bev);
	if (fd >= 0 && s->state != SV_LOGIN && msgio_output_pending(&s->out) == 0) {
		ssize_t n = s->ssl ? SSL_write(s->ssl, terminate, sizeof(terminate))
				   : send(fd, terminate, sizeof(terminate), MSG_DONTWAIT | MSG_NOSIGNAL);
		(void)n;
	}
}

/* Clients that wait on a pool with no server left cannot be served now. */
static void server_fail_waiting_clients(Pool *pool, const char *sqlstate, const char *msg)
{
	if (pool_count_servers(pool) > 0)
		return;
	List *lists[] = { &pool->waiting_login_clients, &pool->waiting_clients };
	for (size_t i = 0; i < ARRAY_SIZE(lists); i++) {
		List *item, *tmp;
		list_for_each_safe(item, lists[i], tmp)
			client_disconnect(container_of(item, Client, head), sqlstate, "%s", msg);
	}
}

static void server_release_counts(Server *s)
{
	s->pool->db->connection_count--;
	s->pool->user->connection_count--;
}

void server_disconnect(Server *s, const char *fmt, ...)
{
	if (s->state == SV_FREE)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	Pool *pool = s->pool;
	bool was_login = s->state == SV_LOGIN;
	if (moat->cfg->log_disconnections || was_login)
		svlog_info(s, "closing because: %s (age=%llds)", msg,
			   (long long)((util_now_wall() - s->connect_time) / USEC_PER_SEC));
	Client *c = s->link;
	if (c) {
		s->link = NULL;
		c->link = NULL;
		client_disconnect(c, "08006", "server conn crashed?");
	}
	if (s->bev)
		server_send_terminate(s);
	msgio_output_free(&s->out);
	msgio_reader_free(&s->in);
	if (s->bev) {
		tls_close_notify(s->ssl);
		bufferevent_free(s->bev);
		s->bev = NULL;
		s->ssl = NULL;	/* freed with its bufferevent */
	}
	server_release_counts(s);
	enforce_forget(s);
	maskwire_forget(s);
	prepared_server_free(s);
	server_set_state(s, SV_FREE);
	scram_client_free(&s->scram);
	server_free_later(s);
	if (was_login) {
		pool->last_connect_failed = util_now_mono();
		moat->stats.server_connect_failures++;
		server_fail_waiting_clients(pool, "08P01", pool->last_login_error
				? pool->last_login_error : "pgbouncer cannot connect to server");
	}
	pool_schedule_maintain(pool);
}

/* ---- login ---------------------------------------------------------- */

/* The secret we log in with: the [databases] password, else the auth_file entry. */
const char *server_pool_secret(const Pool *pool)
{
	const DbConfig *d = pool->db->cfg;
	if (pool->jwt_role) {	/* jwt: the role's own secret, as configured now */
		const DbRole *r = config_find_role(d, pool->jwt_role);
		return r ? r->password : NULL;
	}
	if (d->user && d->password)
		return d->password;
	if (d->password && !d->user)
		return d->password;
	const Userlist *ul = moat->cfg->userlist;
	const UserlistEntry *ue = ul ? userlist_find(ul, pool->server_user) : NULL;
	if (!ue && !d->user)
		return pool->queried_secret;	/* the client logged in through auth_query */
	return ue ? ue->secret : NULL;
}

static const char *server_secret(const Server *s)
{
	return server_pool_secret(s->pool);
}

static void server_login_failed(Server *s, const char *sqlstate, const char *fmt, ...) PRINTF_LIKE(3, 4);

static void server_login_failed(Server *s, const char *sqlstate, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	free(s->pool->last_login_error);
	s->pool->last_login_error = xstrdup(msg);
	if (moat->cfg->log_pooler_errors)
		svlog_warning(s, "server login failed: %s", msg);
	server_disconnect(s, "login failed: %s", msg);
}

static bool server_send_startup(Server *s)
{
	const DbConfig *d = s->pool->db->cfg;
	const char *params[32];
	int n = 0;
	params[n++] = "user";
	params[n++] = s->pool->server_user;
	params[n++] = "database";
	params[n++] = d->dbname;
	if (d->client_encoding) {
		params[n++] = "client_encoding";
		params[n++] = d->client_encoding;
	}
	if (d->datestyle) {
		params[n++] = "DateStyle";
		params[n++] = d->datestyle;
	}
	if (d->timezone) {
		params[n++] = "TimeZone";
		params[n++] = d->timezone;
	}
	if (d->application_name) {
		params[n++] = "application_name";
		params[n++] = d->application_name;
	}
	params[n] = NULL;
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_startup(&pb, params);
	bool ok = server_send_pktbuf(s, &pb);
	pktbuf_free(&pb);
	return ok;
}

static bool server_auth_cleartext(Server *s, const char *secret)
{
	if (!secret || userlist_secret_kind(secret) != SECRET_PLAIN)
		return false;
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_password(&pb, secret);
	bool ok = server_send_pktbuf(s, &pb);
	pktbuf_free(&pb);
	return ok;
}

static bool server_auth_md5(Server *s, const char *secret, const AuthRequest *ar)
{
	if (!secret || ar->data_len != 4 || userlist_secret_kind(secret) == SECRET_SCRAM)
		return false;
	char resp[MD5_PASSWD_LEN + 1];
	auth_md5_response(secret, s->pool->server_user, ar->data, resp);
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_password(&pb, resp);
	bool ok = server_send_pktbuf(s, &pb);
	pktbuf_free(&pb);
	return ok;
}

static bool sasl_offers_scram(const AuthRequest *ar)
{
	PktReader r;
	proto_reader_init(&r, ar->data, ar->data_len);
	const char *mech;
	while (proto_read_cstring(&r, &mech) && *mech) {
		if (strcmp(mech, "SCRAM-SHA-256") == 0)
			return true;
	}
	return false;
}

static bool server_auth_sasl_start(Server *s, const AuthRequest *ar)
{
	if (!sasl_offers_scram(ar))
		return false;
	char *out = NULL;
	size_t out_len = 0;
	if (!scram_client_first(&s->scram, &out, &out_len))
		return false;
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_sasl_initial(&pb, "SCRAM-SHA-256", out, out_len);
	bool ok = server_send_pktbuf(s, &pb);
	pktbuf_free(&pb);
	free(out);
	return ok;
}

static bool server_auth_sasl_continue(Server *s, const char *secret, const AuthRequest *ar,
				      char *err, size_t errlen)
{
	const char *password = NULL;
	const ScramKeys *keys = NULL;
	if (secret && userlist_secret_kind(secret) == SECRET_PLAIN)
		password = secret;
	else if (s->pool->scram_keys.valid)
		keys = &s->pool->scram_keys;
	else {
		snprintf(err, errlen, "no password usable for SCRAM (a plain password, or a client "
			 "SCRAM login with the same verifier, is needed)");
		return false;
	}
	char *out = NULL;
	size_t out_len = 0;
	if (!scram_client_final(&s->scram, ar->data, ar->data_len, password, keys, &out, &out_len,
				err, errlen))
		return false;
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_sasl_response(&pb, out, out_len);
	bool ok = server_send_pktbuf(s, &pb);
	pktbuf_free(&pb);
	free(out);
	return ok;
}

static void server_handle_auth(Server *s, const uint8_t *body, size_t len)
{
	AuthRequest ar;
	char err[256] = "";
	if (!proto_parse_auth_request(body, len, &ar)) {
		server_login_failed(s, "08P01", "invalid authentication request from server");
		return;
	}
	const char *secret = server_secret(s);
	bool ok;
	switch (ar.code) {
	case 0:
		return;
	case 3:
		ok = server_auth_cleartext(s, secret);
		break;
	case 5:
		ok = server_auth_md5(s, secret, &ar);
		break;
	case 10:
		ok = server_auth_sasl_start(s, &ar);
		break;
	case 11:
		ok = server_auth_sasl_continue(s, secret, &ar, err, sizeof(err));
		break;
	case 12:
		ok = scram_client_verify(&s->scram, ar.data, ar.data_len, err, sizeof(err));
		break;
	default:
		snprintf(err, sizeof(err), "unsupported authentication method %d", ar.code);
		ok = false;
	}
	if (!ok)
		server_login_failed(s, "08P01", "server authentication failed%s%s", *err ? ": " : "",
				    err);
}

static void server_note_param(Server *s, const char *name, const char *value)
{
	varcache_set(&s->vars, name, value);
	if (s->welcome_pending)
		pool_welcome_add(s->pool, name, value);
}

static void server_login_done(Server *s)
{
	Pool *pool = s->pool;
	pool->last_connect_failed = 0;
	free(pool->last_login_error);
	pool->last_login_error = NULL;
	s->ready = true;
	s->fresh = true;
	s->welcome_pending = false;
	if (moat->cfg->log_connections)
		svlog_info(s, "new server connection");
	server_set_state(s, SV_IDLE);
	if (!pool->welcome_ready) {
		pool->welcome_ready = true;
		List *item, *tmp;
		list_for_each_safe(item, &pool->waiting_login_clients, tmp)
			client_finish_login(container_of(item, Client, head));
	}
	pool_schedule_maintain(pool);
}

static void server_login_ready(Server *s)
{
	const char *cq = s->pool->db->cfg->connect_query;
	if (cq && *cq && s->internal_queries == 0 && !s->internal_failed) {
		if (!server_send_internal_query(s, cq))
			server_disconnect(s, "could not send connect_query");
		return;
	}
	if (s->internal_failed) {
		server_login_failed(s, "08P01", "connect_query failed");
		return;
	}
	server_login_done(s);
}

static void server_login_error(Server *s, const uint8_t *body, size_t len)
{
	ErrorFields ef;
	if (!proto_parse_error(body, len, &ef)) {
		server_login_failed(s, "08P01", "invalid error message from server");
		return;
	}
	server_login_failed(s, ef.sqlstate ? ef.sqlstate : "08P01", "%s",
			    ef.message ? ef.message : "server refused the connection");
}

/* One whole message during login. */
static void server_handle_login_message(Server *s, uint8_t type, const uint8_t *body, size_t len)
{
	const char *name, *value;
	switch (type) {
	case 'R':
		server_handle_auth(s, body, len);
		return;
	case 'S':
		if (proto_parse_param_status(body, len, &name, &value))
			server_note_param(s, name, value);
		else
			server_login_failed(s, "08P01", "invalid ParameterStatus from server");
		return;
	case 'K':
		if (!proto_parse_backend_key(body, len, &s->backend_pid, &s->backend_key))
			server_login_failed(s, "08P01", "invalid BackendKeyData from server");
		return;
	case 'E':
		if (s->internal_queries > 0) {
			s->internal_failed = true;
			return;
		}
		server_login_error(s, body, len);
		return;
	case 'Z':
		if (s->internal_queries > 0)
			s->internal_queries--;
		if (s->internal_queries == 0)
			server_login_ready(s);
		return;
	case 'N':
	case 'v':
	case 'C':
	case 'T':
	case 'D':
	case 'I':
		return;
	default:
		server_login_failed(s, "08P01", "unexpected message '%c' from server during login", type);
	}
}

/* ---- after login ---------------------------------------------------- */

void server_resume_reading(Server *s)
{
	if (s->state == SV_FREE || !s->bev)
		return;
	if (s->reading_paused) {
		s->reading_paused = false;
		msgio_reader_enable(&s->in, true);
	}
	server_process_input(s);
}

static void server_pause_reading(Server *s)
{
	if (!s->reading_paused) {
		s->reading_paused = true;
		msgio_reader_enable(&s->in, false);
	}
}

static void server_internal_done(Server *s)
{
	if (s->internal_failed) {
		server_disconnect(s, "an internal query (reset, check or parameter sync) failed");
		return;
	}
	if (s->state == SV_TESTED) {
		s->ready = s->pending_requests == 0;
		server_set_state(s, SV_IDLE);
		pool_schedule_maintain(s->pool);
	}
}

/* A reply to one of our own queries: parse what matters, drop the rest. */
static void server_swallow(Server *s, const MsgHeader *h, const uint8_t *body)
{
	const char *name, *value;
	switch (h->type) {
	case 'E':
		s->internal_failed = true;
		svlog_warning(s, "internal query failed");
		return;
	case 'S':
		if (proto_parse_param_status(body, msgio_body_len(h), &name, &value))
			varcache_set(&s->vars, name, value);
		return;
	case 'Z':
		s->internal_queries--;
		s->ready = s->internal_queries == 0 && s->pending_requests == 0 && !s->unsynced;
		if (s->internal_queries == 0)
			server_internal_done(s);
		return;
	default:
		return;
	}
}

static void server_account_ready(Server *s, Client *c, char status, usec_t now)
{
	PoolStats *st = &s->pool->stats;
	st->total.query_count++;
	if (c->query_start) {
		st->total.query_time += (uint64_t)(now - c->query_start);
		c->query_start = 0;
	}
	if (status == 'I' && c->xact_start) {
		st->total.xact_count++;
		st->total.xact_time += (uint64_t)(now - c->xact_start);
		c->xact_start = 0;
	}
}

/* ReadyForQuery reached the client: maybe the transaction is over and the server goes back. */
static void server_after_ready(Server *s, char status)
{
	Client *c = s->link;
	s->tx_status = status;
	s->in_copy = false;
	s->copy_in = false;
	if (s->denials)
		enforce_batch_done(s);
	usec_t now = util_now_cached();
	s->request_time = now;
	if (s->pending_requests > 0)
		s->pending_requests--;
	s->ready = s->pending_requests == 0 && !s->unsynced && s->internal_queries == 0;
	if (s->lexing_may_change)
		enforce_settled(s);
	if (!c)
		return;
	c->tx_status = status;
	server_account_ready(s, c, status, now);
	if (c->judge_waiting && !s->lexing_may_change) {
		c->judge_waiting = false;
		if (s->tx_status != 'I' || pool_effective_mode(s->pool) == POOL_SESSION ||
		    c->session_pinned) {
			client_resume_reading(c);	/* the server stays ours: carry on */
			return;
		}
	}
	server_release_if_done(s);
}

void server_release_if_done(Server *s)
{
	Client *c = s->link;
	if (!c || !s->ready || c->fwd_remaining > 0 || s->tx_status != 'I')
		return;
	if (drain_close_at_boundary(c))
		return;	/* the disconnect gave the clean server back */
	if (pool_effective_mode(s->pool) == POOL_SESSION || c->session_pinned)
		return;
	pool_release_server(s);
	if (c->state == CL_ACTIVE && client_has_socket(c) &&
	    evbuffer_get_length(c->in.buf) > 0)
		client_resume_reading(c);
}

/*
 * The message types a server may send, and (pertx8: one load per message, not
 * a switch) those of them a plain run passes unread: not S and Z, which are
 * read, nor G, H and W, which start a copy.
 */
#define SERVER_TYPES_PASSING \
	['E'] = true, ['A'] = true, ['N'] = true, ['T'] = true, ['D'] = true, ['C'] = true, \
	['I'] = true, ['1'] = true, ['2'] = true, ['3'] = true, ['n'] = true, ['s'] = true, \
	['t'] = true, ['d'] = true, ['c'] = true, ['v'] = true, ['V'] = true
static const bool server_types_valid[256] = {
	SERVER_TYPES_PASSING, ['S'] = true, ['Z'] = true, ['G'] = true, ['H'] = true, ['W'] = true
};
static const bool server_types_plain[256] = { SERVER_TYPES_PASSING };

static inline bool server_msg_type_valid(uint8_t t)
{
	return server_types_valid[t];
}

/* A message that arrived while no client is linked (idle, or ours). */
static bool server_handle_unlinked(Server *s, const MsgHeader *h, const uint8_t *body)
{
	if (s->internal_queries > 0) {
		server_swallow(s, h, body);
		return true;
	}
	const char *name, *value;
	if (h->type == 'S' && proto_parse_param_status(body, msgio_body_len(h), &name, &value)) {
		varcache_set(&s->vars, name, value);
		return true;
	}
	if (h->type == 'N' || h->type == 'A')
		return true;	/* nobody to tell: notices and notifications on an idle server */
	ErrorFields ef;
	if (h->type == 'E' && proto_parse_error(body, msgio_body_len(h), &ef))
		server_disconnect(s, "server error while idle: %s", ef.message ? ef.message : "?");
	else
		server_disconnect(s, "unexpected message '%c' from an idle server", h->type);
	return false;
}

/* Messages we parse whole on the way through. */
static bool server_msg_needs_inspection(const Server *s, uint8_t type)
{
	/* (the field tests first: per message, audit and masking are mostly off) */
	return s->internal_queries > 0 || !s->link || type == 'Z' || type == 'S' ||
	       (type == 'E' && s->denials) || (s->link->audit && audit_reads_reply(s->link, type)) ||
	       (s->mask && maskwire_inspects(s, type));
}

/* Handle one whole inspected message; false when the server is gone. */
static bool server_handle_inspected(Server *s, const MsgHeader *h, uint8_t *msg)
{
	const uint8_t *body = msgio_body(msg);
	if (s->internal_queries > 0 || !s->link)
		return server_handle_unlinked(s, h, body);
	Client *c = s->link;
	if (prepared_on(c))
		(void)prepared_response(s, h->type);	/* never one of ours: E, S and Z pass */
	struct evbuffer *out = msgio_out(&c->out);
	size_t total = proto_msg_total(h);
	if (s->mask && h->type != 'Z' && h->type != 'S')
		return maskwire_handle(s, h, msg, out);
	if (h->type == 'E') {
		PktBuf pb;
		pktbuf_init(&pb);
		if (enforce_rewrite_error(s, body, msgio_body_len(h), &pb) && pktbuf_ok(&pb)) {
			evbuffer_add(out, pb.data, pb.len);
		} else {
			audit_server_reply(c, h->type, body, msgio_body_len(h));
			evbuffer_add(out, msg, total);
		}
		pktbuf_free(&pb);
		return true;
	}
	if (h->type != 'S' && h->type != 'Z') {
		/* CommandComplete, EmptyQueryResponse, PortalSuspended: recorded, then passed on. */
		audit_server_reply(c, h->type, body, msgio_body_len(h));
		evbuffer_add(out, msg, total);
		s->pool->stats.total.bytes_sent += total;
		return true;
	}
	if (h->type == 'S') {
		const char *name, *value;
		if (!proto_parse_param_status(body, msgio_body_len(h), &name, &value)) {
			server_disconnect(s, "invalid ParameterStatus from server");
			return false;
		}
		varcache_set(&s->vars, name, value);
		varcache_set(&c->vars, name, value);
		evbuffer_add(out, msg, total);
		s->pool->stats.total.bytes_sent += total;
		return true;
	}
	if (msgio_body_len(h) != 1) {
		server_disconnect(s, "invalid ReadyForQuery from server");
		return false;
	}
	if (body[0] != 'I' && pool_effective_mode(s->pool) == POOL_STATEMENT) {
		/* The statement that opened the transaction gets the error, not a later one. */
		client_disconnect(c, "08P01", "transaction blocks not allowed in statement pooling mode");
		return false;
	}
	audit_server_reply(c, h->type, body, msgio_body_len(h));
	maskwire_on_ready(s);
	evbuffer_add(out, msg, total);
	s->pool->stats.total.bytes_sent += total;
	server_after_ready(s, (char)body[0]);
	return s->state != SV_FREE;
}

/*
 * PostgreSQL ignores Sync and Flush in copy-in mode. Syncs the client sent
 * after the Execute that started this COPY (libpq sends one at once, before
 * CopyInResponse arrives) will never get a ReadyForQuery: stop waiting for them.
 */
static void server_enter_copy_in(Server *s)
{
	int ignored = s->syncs_since_execute;
	if (ignored > s->pending_requests)
		ignored = s->pending_requests;
	s->pending_requests -= ignored;
	s->syncs_since_execute = 0;
	if (s->link)
		audit_copy_in_ignored_syncs(s->link, ignored);
	s->copy_in = true;
}

/*
 * A message that goes to the client untouched, with nothing to note: the
 * messages of a reply that may move together (msgio_extend_run).
 */
static bool server_passes_through(const Server *s, uint8_t type)
{
	return server_msg_type_valid(type) && !server_msg_needs_inspection(s, type) &&
	       type != 'G' && type != 'H' && type != 'W';
}

/*
 * May a ReadyForQuery end a run, its status read in place? Not where audit or
 * masking read it, a check query runs, or statement pooling must refuse a
 * transaction before the client sees it.
 */
static bool server_ready_may_pass(const Server *s, const MsgHeader *h)
{
	return h->len == 5 && s->link && s->internal_queries == 0 &&
	       !(s->link->audit && audit_reads_reply(s->link, 'Z')) &&
	       !(s->mask && maskwire_inspects(s, 'Z')) &&
	       pool_effective_mode(s->pool) != POOL_STATEMENT;
}

/*
 * A run being extended: ended once prepared statements owe a local answer,
 * or by a ReadyForQuery (ready), after which the server may be released.
 */
typedef struct PassRun {
	Server *s;
	bool ended;
	bool ready;
	bool plain;	/* linked, no check query, denials, audit or masking: see server_run_plain() */
} PassRun;

/*
 * Nothing of this server's reads a reply but ReadyForQuery and
 * ParameterStatus. Fixed for a run: asked once, not for every message of it.
 */
static bool server_run_plain(const Server *s)
{
	return s->link && s->internal_queries == 0 && !s->denials && !s->link->audit && !s->mask;
}

/* server_passes_through() of a plain server's message, without its checks */
static inline bool server_plain_passes(uint8_t t)
{
	return server_types_plain[t];
}

/*
 * A bare run's callbacks, apart from server_passes_through_cb(): with nothing
 * else to ask, they save no registers (one is called for every message).
 */
static bool server_passes_bare_cb(void *arg, const MsgHeader *h)
{
	PassRun *run = arg;
	if (run->ended)
		return false;
	if (h->type != 'Z')
		return server_plain_passes(h->type);
	if (h->len != 5)
		return false;	/* (read whole, and refused there) */
	run->ready = run->ended = true;
	return true;
}

static bool server_passes_prepared_cb(void *arg, const MsgHeader *h)
{
	PassRun *run = arg;
	if (run->ended)
		return false;
	bool ready = h->type == 'Z';
	if (ready ? h->len != 5 : !server_plain_passes(h->type))
		return false;
	if (!prepared_pass(run->s, h->type, &run->ended))
		return false;
	run->ready = ready;
	run->ended |= ready;
	return true;
}

static bool server_passes_through_cb(void *arg, const MsgHeader *h)
{
	PassRun *run = arg;
	Server *s = run->s;
	bool ready = h->type == 'Z';
	if (run->ended)
		return false;
	if (run->plain) {
		if (ready ? h->len != 5 || pool_effective_mode(s->pool) == POOL_STATEMENT
			  : !server_plain_passes(h->type))
			return false;
	} else if (!(ready ? server_ready_may_pass(s, h) : server_passes_through(s, h->type))) {
		return false;
	}
	if (prepared_on(s->link) && !prepared_pass(s, h->type, &run->ended))
		return false;
	if (s->mask)
		maskwire_passed(s, h->type);
	run->ready = ready;
	run->ended |= ready;
	return true;
}

typedef bool PassCb(void *arg, const MsgHeader *h);

/* The callback for a run, chosen once: the bare ones when nothing but the type decides. */
static PassCb *server_run_cb(Server *s, const PassRun *run)
{
	if (!run->plain || pool_effective_mode(s->pool) == POOL_STATEMENT)
		return server_passes_through_cb;
	return prepared_on(s->link) ? server_passes_prepared_cb : server_passes_bare_cb;
}

/* After a run that ended with a ReadyForQuery went to the client (whole: all of it). */
static bool server_ready_passed(Server *s, uint8_t status, bool whole)
{
	if (!whole) {
		server_disconnect(s, "could not pass ReadyForQuery on to the client");
		return false;
	}
	if (s->mask)
		maskwire_on_ready(s);
	server_after_ready(s, (char)status);
	return s->state != SV_FREE;
}

/* in_len: what in holds (the caller just asked) */
static bool server_forward_one(Server *s, struct evbuffer *in, size_t in_len)
{
	MsgHeader h;
	struct evbuffer_iovec first;	/* the input's first chunk: the run is read there */
	FrameResult fr = msgio_peek_header_chunk(in, (uint32_t)moat->cfg->max_packet_size, &h, &first);
	if (fr == FRAME_NEED_MORE)
		return false;
	if (fr == FRAME_BAD || !server_msg_type_valid(h.type)) {
		server_disconnect(s, "protocol violation from server (message type %d)", h.type);
		return false;
	}
	bool plain = server_run_plain(s);
	if (plain ? h.type == 'Z' || h.type == 'S' : server_msg_needs_inspection(s, h.type)) {
		/* (rows and descriptions being masked may be as large as any message) */
		bool masking = s->mask && s->link && (h.type == 'D' || h.type == 'T');
		if (h.len > SERVER_INSPECT_MAX && !masking) {
			if (s->internal_queries > 0 && h.type != 'Z' && h.type != 'E') {
				s->fwd_discard = true;	/* a big row from our check query */
				s->fwd_remaining = proto_msg_total(&h);
				return true;
			}
			server_disconnect(s, "oversized '%c' message from server", h.type);
			return false;
		}
		/* ReadyForQuery and its like: no heap round trip for a few bytes */
		uint8_t small[SERVER_INSPECT_SMALL];
		size_t total = proto_msg_total(&h);
		uint8_t *msg = total <= sizeof(small) ? small : NULL;
		if (msg && in_len >= total)
			evbuffer_remove(in, msg, total);
		else
			msg = msgio_take(in, &h);
		if (!msg)
			return false;
		bool alive = server_handle_inspected(s, &h, msg);
		if (msg != small)
			free(msg);
		return alive;
	}
	Client *c = s->link;
	size_t total = proto_msg_total(&h);
	PassRun run = { s, false, false, plain };
	if (prepared_on(c)) {
		if (prepared_response(s, h.type)) {
			s->fwd_remaining = total;	/* a reply to our own injected request */
			s->fwd_discard = true;
			return true;
		}
		run.ended = prepared_emit_due(s);
	}
	if (h.type == 'G' || h.type == 'H' || h.type == 'W')
		s->in_copy = true;
	if (s->mask)
		maskwire_passed(s, h.type);
	if (h.type == 'G')
		server_enter_copy_in(s);
	else if (plain ? server_plain_passes(h.type) : server_passes_through(s, h.type))
		total = msgio_extend_run_in(&first, total, (uint32_t)moat->cfg->max_packet_size,
					    server_run_cb(s, &run), &run);
	uint8_t status = 0;
	if (run.ready)	/* (its ReadyForQuery ended the run, in the first chunk) */
		status = total <= first.iov_len ? ((const uint8_t *)first.iov_base)[total - 1]
						: evbuffer_pullup(in, (ev_ssize_t)total)[total - 1];
	/* (a run that empties the input may go straight to the client's socket) */
	const uint8_t *at = total <= first.iov_len ? first.iov_base : NULL;
	size_t moved = msgio_move_out(in, in_len, at, total, &c->out);
	s->pool->stats.total.bytes_sent += moved;
	s->fwd_remaining = total - moved;
	s->fwd_discard = false;
	return !run.ready || server_ready_passed(s, status, moved == total);
}

static void server_forward(Server *s)
{
	struct evbuffer *in = s->in.buf;
	size_t in_len;
	while (s->state != SV_FREE && s->state != SV_LOGIN && (in_len = evbuffer_get_length(in)) > 0 &&
	       !maskwire_waiting(s)) {
		Client *c = s->link;
		if (c && msgio_output_pending(&c->out) > MSGIO_OUT_HIGH) {
			server_pause_reading(s);
			return;
		}
		if (s->fwd_remaining > 0) {
			struct evbuffer *out = s->fwd_discard || !c ? NULL : msgio_out(&c->out);
			size_t moved = msgio_move(in, out, s->fwd_remaining);
			s->fwd_remaining -= moved;
			if (out)
				s->pool->stats.total.bytes_sent += moved;
			if (s->fwd_remaining == 0 && c && c->held)
				approvals_flush_notice(c);
		} else if (!server_forward_one(s, in, in_len)) {
			return;
		}
		if (s->fwd_remaining == 0 && s->link && prepared_on(s->link))
			prepared_emit(s);	/* local answers due after this message */
	}
}

static void server_read_login(Server *s)
{
	struct evbuffer *in = s->in.buf;
	while (s->state == SV_LOGIN) {
		MsgHeader h;
		FrameResult fr = msgio_peek_header(in, SERVER_LOGIN_MSG_MAX, &h);
		if (fr == FRAME_NEED_MORE)
			return;
		if (fr == FRAME_BAD) {
			server_login_failed(s, "08P01", "invalid message length from server during login");
			return;
		}
		uint8_t *msg = msgio_take(in, &h);
		if (!msg)
			return;
		server_handle_login_message(s, h.type, msgio_body(msg), msgio_body_len(&h));
		util_wipe(msg, proto_msg_total(&h));
		free(msg);
	}
	if (s->state != SV_FREE)
		server_forward(s);
}

static void server_read_cb(struct bufferevent *bev, void *arg);
static void server_write_cb(struct bufferevent *bev, void *arg);
static void server_event_cb(struct bufferevent *bev, short what, void *arg);

/* Point s->bev's callbacks and the direct reader and flusher at the connection. */
static bool server_attach_io(Server *s)
{
	bufferevent_setcb(s->bev, NULL, server_write_cb, server_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_WRITE, MSGIO_OUT_LOW, 0);
	if (!msgio_output_attach(&s->out, &s->worker->flusher, s->bev, s->ssl) ||
	    !msgio_reader_init(&s->in, s->bev, MSGIO_READ_HIGH, server_read_cb, server_event_cb, s))
		return false;
	if (s->ssl)
		msgio_reader_use_tls(&s->in, s->ssl);
	msgio_reader_enable(&s->in, !s->reading_paused);
	msgio_reader_suspend(&s->in, moat->state == MOAT_SUSPENDED);	/* SUSPEND: no reading */
	return true;
}

/* The first bytes we send: SSLRequest when TLS is wanted over TCP, else the startup packet. */
static bool server_send_first_packet(Server *s)
{
	if (s->remote.is_unix || tls_server_mode(s->pool->db->cfg) == TLS_DISABLE)
		return server_send_startup(s);
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_put_uint32(&pb, 8);
	pktbuf_put_uint32(&pb, PROTO_SSL_CODE);
	bool ok = server_send_pktbuf(s, &pb);
	pktbuf_free(&pb);
	s->tls_requested = ok;
	return ok;
}

static void server_tls_event_cb(struct bufferevent *bev, short what, void *arg)
{
	Server *s = arg;
	if (what & BEV_EVENT_CONNECTED) {
		s->ssl = tls_get_ssl(bev);
		if (!server_attach_io(s))
			server_disconnect(s, "could not create the read event");
		else if (!server_send_startup(s))
			server_disconnect(s, "could not send the startup packet");
		return;
	}
	char why[256];
	tls_error_describe(bev, why, sizeof(why));
	server_login_failed(s, "08006", "TLS handshake with the server failed: %s", why);
}

static void server_start_tls(Server *s)
{
	SSL *ssl = tls_server_ssl_new(s->pool->db->cfg, s->pool->db->cfg->host);
	if (!ssl) {
		server_login_failed(s, "08006", "could not set up TLS to the server");
		return;
	}
	msgio_output_detach(&s->out);
	msgio_reader_stop(&s->in);
	s->bev = tls_wrap_socket(s->bev, ssl, false);
	if (!s->bev) {
		server_login_failed(s, "08006", "could not start TLS to the server");
		return;
	}
	bufferevent_setcb(s->bev, NULL, NULL, server_tls_event_cb, s);
}

/*
 * The server's one-byte answer to our SSLRequest. Anything behind it came
 * before the handshake and would pass for encrypted data (CVE-2021-23222):
 * a protocol error.
 */
static void server_read_tls_answer(Server *s)
{
	struct evbuffer *in = s->in.buf;
	uint8_t answer;
	if (evbuffer_copyout(in, &answer, 1) < 1)
		return;
	TlsMode mode = tls_server_mode(s->pool->db->cfg);
	if (answer != 'S' && answer != 'N') {
		server_login_failed(s, "08P01", "invalid answer to SSLRequest from server");
		return;
	}
	if (evbuffer_get_length(in) > 1) {
		server_login_failed(s, "08P01", "protocol error: server sent data behind its answer to SSLRequest");
		return;
	}
	evbuffer_drain(in, 1);
	s->tls_requested = false;
	if (answer == 'S') {
		server_start_tls(s);
	} else if (mode >= TLS_REQUIRE) {
		server_login_failed(s, "08P01", "server does not accept TLS (sslmode %s)",
				    tls_mode_name(mode));
	} else if (!server_send_startup(s)) {
		server_disconnect(s, "could not send the startup packet");
	}
}

static void server_process_input(Server *s)
{
	if (!s->bev || s->reading_paused)
		return;
	if (s->state == SV_LOGIN && s->tls_requested)
		server_read_tls_answer(s);
	else if (s->state == SV_LOGIN)
		server_read_login(s);
	else if (s->state != SV_FREE)
		server_forward(s);
	if (s->state != SV_FREE && s->bev)
		msgio_reader_consumed(&s->in);
}

/* ---- libevent callbacks --------------------------------------------- */

static void server_read_cb(struct bufferevent *bev, void *arg)
{
	Server *s = arg;
	Worker *w = s->worker;
	util_clock_scope_begin();
	msgio_flusher_begin(&w->flusher);
	server_process_input(s);
	msgio_flusher_end(&w->flusher);	/* s may be gone after this */
	util_clock_scope_end();
}

static void server_write_cb(struct bufferevent *bev, void *arg)
{
	Server *s = arg;
	msgio_output_drained(&s->out);
	if (s->link && s->link->reading_paused)
		client_resume_reading(s->link);
}

static void server_tune_socket(Server *s)
{
	int fd = bufferevent_getfd(s->bev);
	if (s->remote.is_unix || fd < 0)
		return;
	if (!sockopt_connection(fd, moat->cfg))
		svlog_warning(s, "could not set the TCP options of its socket: %s", strerror(errno));
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &in->sin_addr, s->local.host, sizeof(s->local.host));
		s->local.port = ntohs(in->sin_port);
	}
}

static void server_event_cb(struct bufferevent *bev, short what, void *arg)
{
	Server *s = arg;
	if (what & BEV_EVENT_CONNECTED) {
		server_tune_socket(s);
		bufferevent_set_timeouts(s->bev, NULL, NULL);
		if (!msgio_reader_init(&s->in, s->bev, MSGIO_READ_HIGH, server_read_cb,
				       server_event_cb, s)) {
			server_disconnect(s, "could not create the read event");
			return;
		}
		msgio_reader_enable(&s->in, !s->reading_paused);
		msgio_reader_suspend(&s->in, moat->state == MOAT_SUSPENDED);	/* SUSPEND: no reading */
		if (!server_send_first_packet(s))
			server_disconnect(s, "could not send the startup packet");
		return;
	}
	if (s->state == SV_LOGIN && !(what & BEV_EVENT_EOF)) {
		int err = EVUTIL_SOCKET_ERROR();
		server_login_failed(s, "08006", "could not connect to server: %s",
				    (what & BEV_EVENT_TIMEOUT) ? "server_connect_timeout"
							       : evutil_socket_error_to_string(err));
		return;
	}
	server_disconnect(s, "%s", (what & BEV_EVENT_EOF) ? "server closed the connection"
				  : "server socket error");
}

static const char *default_unix_dir(void)
{
	struct stat st;
	return stat("/var/run/postgresql", &st) == 0 ? "/var/run/postgresql" : "/tmp";
}

/* Fill s->addr from the database entry; a blocking lookup only for host names. */
static bool server_resolve(Server *s, char *err, size_t errlen)
{
	const DbConfig *d = s->pool->db->cfg;
	int port = d->port > 0 ? d->port : 5432;
	if (!d->host || d->host[0] == '/') {
		struct sockaddr_un *un = (struct sockaddr_un *)&s->addr;
		un->sun_family = AF_UNIX;
		int n = snprintf(un->sun_path, sizeof(un->sun_path), "%s/.s.PGSQL.%d",
				 d->host ? d->host : default_unix_dir(), port);
		if (n < 0 || (size_t)n >= sizeof(un->sun_path)) {
			snprintf(err, errlen, "unix socket path too long");
			return false;
		}
		s->addrlen = sizeof(*un);
		s->remote.is_unix = true;
		snprintf(s->remote.host, sizeof(s->remote.host), "unix");
		s->remote.port = port;
		return true;
	}
	struct evutil_addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct evutil_addrinfo *res = NULL;
	char portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", port);
	int rc = evutil_getaddrinfo(d->host, portstr, &hints, &res);
	if (rc != 0 || !res) {
		snprintf(err, errlen, "could not resolve %s: %s", d->host, evutil_gai_strerror(rc));
		return false;
	}
	memcpy(&s->addr, res->ai_addr, res->ai_addrlen);
	s->addrlen = (socklen_t)res->ai_addrlen;
	evutil_freeaddrinfo(res);
	snprintf(s->remote.host, sizeof(s->remote.host), "%s", d->host);
	s->remote.port = port;
	return true;
}

static bool server_start_connect(Server *s)
{
	s->bev = bufferevent_socket_new(s->worker->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!s->bev)
		return false;
	/* Reading starts once connected, through s->in (see server_event_cb). */
	bufferevent_setcb(s->bev, NULL, server_write_cb, server_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_WRITE, MSGIO_OUT_LOW, 0);
	if (moat->cfg->server_connect_timeout > 0) {
		struct timeval tv = { (time_t)(moat->cfg->server_connect_timeout / USEC_PER_SEC),
				      (suseconds_t)(moat->cfg->server_connect_timeout % USEC_PER_SEC) };
		bufferevent_set_timeouts(s->bev, &tv, &tv);
	}
	if (!msgio_output_attach(&s->out, &s->worker->flusher, s->bev, NULL))
		return false;
	return bufferevent_socket_connect(s->bev, (struct sockaddr *)&s->addr, (int)s->addrlen) == 0;
}

Server *server_connect(Pool *pool)
{
	Worker *w = moat->worker;
	Server *s = xcalloc(1, sizeof(*s));
	s->worker = w;
	s->pool = pool;
	s->id = ++w->next_id;
	s->connect_time = util_now_wall();
	s->connect_mono = util_now_mono();
	s->request_time = s->connect_mono;
	s->login_deadline = s->connect_mono + moat->cfg->server_connect_timeout;
	s->welcome_pending = !pool->welcome_ready;
	s->tx_status = 'I';
	list_init(&s->head);
	list_append(&w->all_servers, &s->all_head);
	pool->db->connection_count++;
	pool->user->connection_count++;
	server_set_state(s, SV_LOGIN);
	char err[256] = "";
	if (!server_resolve(s, err, sizeof(err))) {
		server_login_failed(s, "08006", "%s", err);
		return NULL;
	}
	if (!server_start_connect(s)) {
		server_login_failed(s, "08006", "could not connect to server: %s", strerror(errno));
		return NULL;
	}
	svlog_debug(s, "connecting");
	return s;
}

void server_free(Server *s)
{
	list_del(&s->head);
	list_del(&s->all_head);
	varcache_free(&s->vars);
	free(s);
}
