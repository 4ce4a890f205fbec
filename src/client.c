/*
 * Client connections: the first packet (SSLRequest, CancelRequest, Startup),
 * authentication against the auth_file, the welcome, and forwarding of the
 * client's messages to its server.
 *
 * Input is not processed while the client waits for a server (CL_WAITING),
 * and reading stops (reading_paused) while its server's output buffer is
 * full; whoever removes the obstacle calls client_resume_reading().
 */
#include "client.h"
#include "server.h"
#include "pool.h"
#include "admin.h"
#include "admin_ext.h"
#include "approvals.h"
#include "cancel.h"
#include "enforce.h"
#include "drain.h"
#include "proxyproto.h"
#include "audit.h"
#include "maskwire.h"
#include "prepared.h"
#include "sessionstate.h"
#include "sqlinfo.h"
#include "proto.h"
#include "msgio.h"
#include "auth_md5.h"
#include "auth_scram.h"
#include "auth_query.h"
#include "auth_jwt.h"
#include "tls.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/un.h>

#define AUTH_MSG_MAX (JWT_MAX_TOKEN + 1024)	/* password (a JWT: up to 16 KB) and SASL messages */
#define ADMIN_QUERY_MAX 65536
#define FLUSH_TIMEOUT_SEC 5		/* an error that nobody reads does not keep the socket */
#define JUDGE_MSG_MAX (SQLINFO_MAX_SQL + 65536)	/* larger statements are denied unread */

static void client_process_input(Client *c);
static void client_move_run(Client *c, Server *s, size_t total, const struct evbuffer_iovec *chunk);

const char *client_state_name(ClientState s)
{
	static const char *names[] = { "free", "login", "waiting_login", "waiting", "active" };
	return names[s];
}

static List *client_state_list(Client *c, ClientState st)
{
	Worker *w = c->worker;
	switch (st) {
	case CL_FREE:
		return &w->free_clients;
	case CL_LOGIN:
		return &w->login_clients;
	case CL_WAITING_LOGIN:
		return &c->pool->waiting_login_clients;
	case CL_WAITING:
		return &c->pool->waiting_clients;
	case CL_ACTIVE:
		return &c->pool->active_clients;
	}
	return NULL;
}

void client_set_state(Client *c, ClientState st)
{
	list_del(&c->head);
	c->state = st;
	list_append(client_state_list(c, st), &c->head);
}

/*
 * Dotted decimal, as inet_ntop() writes it: glibc's goes through sprintf(),
 * a few thousand instructions twice per connection (peer and local address).
 */
static void format_ipv4(char *out, const struct in_addr *addr)
{
	const uint8_t *b = (const uint8_t *)&addr->s_addr;
	char *p = out;
	for (int i = 0; i < 4; i++) {
		unsigned v = b[i];
		if (v >= 100)
			*p++ = (char)('0' + v / 100);
		if (v >= 10)
			*p++ = (char)('0' + v / 10 % 10);
		*p++ = (char)('0' + v % 10);
		*p++ = i < 3 ? '.' : '\0';
	}
}

static void peer_from_sockaddr(PeerAddr *p, const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		format_ipv4(p->host, &in->sin_addr);	/* at most 16 bytes: host has 64 */
		p->port = ntohs(in->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, p->host, sizeof(p->host));
		p->port = ntohs(in6->sin6_port);
	} else {
		snprintf(p->host, sizeof(p->host), "unix");
		p->port = 0;
		p->is_unix = true;
	}
}

/* Only the admin console shows it: a system call per connection saved until then. */
const PeerAddr *client_local_addr(Client *c)
{
	int fd = c->fd;
	if (!c->local_known && fd >= 0) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
			peer_from_sockaddr(&c->local, (struct sockaddr *)&ss);
		c->local_known = true;
	}
	return &c->local;
}

static const uint8_t auth_ok_msg[] = { 'R', 0, 0, 0, 8, 0, 0, 0, 0 };

/*
 * uncounted: leading bytes of pb left out of the pool's bytes_sent
 * (AuthenticationOk); now: pb ends what this callback writes to the client
 * (msgio_output_send_now).
 */
static bool client_send_counted(Client *c, PktBuf *pb, size_t uncounted, bool now)
{
	if (!pktbuf_ok(pb) || !client_has_socket(c) || !c->out.buf)
		return false;
	if (c->auth_ok_due) {
		c->auth_ok_due = false;
		if (evbuffer_add(msgio_out(&c->out), auth_ok_msg, sizeof(auth_ok_msg)) != 0)
			return false;
	}
	bool ok = now ? msgio_output_send_now(&c->out, pb->data, pb->len)
		      : evbuffer_add(msgio_out(&c->out), pb->data, pb->len) == 0;
	if (!ok)
		return false;
	if (c->pool && !c->is_admin)	/* pgbouncer counts no console traffic */
		c->pool->stats.total.bytes_sent += pb->len - uncounted;
	return true;
}

bool client_send_pktbuf(Client *c, PktBuf *pb)
{
	return client_send_counted(c, pb, 0, false);
}

static void client_free_later(Client *c)
{
	Worker *w = c->worker;
	if (w->free_armed)
		return;	/* (a -C run closes several clients per loop pass: one activation) */
	w->free_armed = true;
	event_active(w->free_ev, EV_WRITE, 0);
}

static void client_close_socket(Client *c)
{
	msgio_output_free(&c->out);
	msgio_reader_free(&c->in);
	if (c->bev) {
		tls_close_notify(c->ssl);
		bufferevent_free(c->bev);	/* closes fd */
		c->bev = NULL;
		c->ssl = NULL;	/* freed with its bufferevent */
	} else if (c->fd >= 0) {
		evutil_closesocket(c->fd);
	}
	c->fd = -1;
	client_free_later(c);
}

/* Give back the server: reusable if the client left it between transactions. */
static void client_unlink_server(Client *c)
{
	Server *s = c->link;
	if (!s)
		return;
	bool clean = s->ready && s->tx_status == 'I' && !s->unsynced && !s->in_copy &&
		     s->pending_requests == 0 && c->fwd_remaining == 0;
	if (!clean) {
		s->link = NULL;
		c->link = NULL;
		server_disconnect(s, "client disconnected while the server was busy or in a transaction");
		return;
	}
	pool_release_server(s);
}

static void client_log_disconnect(Client *c, const char *reason)
{
	if (c->state == CL_LOGIN && !c->seen_startup)
		return;
	if (moat->cfg->log_disconnections)
		slog_info(c, "closing because: %s (age=%llds)", reason,
			  (long long)((util_now_wall() - c->connect_time) / USEC_PER_SEC));
}

static void client_flush_event_cb(struct bufferevent *bev, short what, void *arg)
{
	client_close_socket(arg);
}

static void client_flush_write_cb(struct bufferevent *bev, void *arg)
{
	Client *c = arg;
	if (msgio_output_pending(&c->out) == 0)
		client_close_socket(c);
}

/* Keep the socket only until the final ErrorResponse is written. */
static void client_close_after_flush(Client *c)
{
	c->close_after_flush = true;
	msgio_reader_enable(&c->in, false);
	if (!c->bev) {
		msgio_output_finish(&c->out, FLUSH_TIMEOUT_SEC, client_flush_write_cb, client_flush_event_cb);
		if (client_has_socket(c) && msgio_output_pending(&c->out) == 0)	/* (finish may have closed it) */
			client_close_socket(c);
		return;
	}
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	bufferevent_setcb(c->bev, NULL, client_flush_write_cb, client_flush_event_cb, c);
	struct timeval tv = { FLUSH_TIMEOUT_SEC, 0 };
	bufferevent_set_timeouts(c->bev, NULL, &tv);
	msgio_output_hand_over(&c->out, c->bev);	/* the bufferevent writes what is left */
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		client_close_socket(c);
	else
		bufferevent_enable(c->bev, EV_WRITE);
}

void client_disconnect(Client *c, const char *sqlstate, const char *fmt, ...)
{
	if (c->state == CL_FREE)
		return;
	char buf[512];
	const char *msg = "client close request";	/* (not copied: a Terminate's is the common case) */
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(buf, sizeof(buf), fmt, ap);
		va_end(ap);
		msg = buf;
	}
	client_log_disconnect(c, msg);
	auth_query_cancel(c);
	approvals_forget(c);
	enforce_session_close(c);
	audit_session_end(c, msg);
	maskwire_client_free(c);
	free(c->stash);
	c->stash = NULL;
	c->stash_in_input = false;
	if (c->session_pinned && c->link)
		c->link->close_needed = true;	/* its session state must not reach another client */
	client_unlink_server(c);
	prepared_client_free(c);
	if (c->counted) {
		moat->client_count--;
		c->counted = false;
	}
	if (c->pool)
		c->pool->user->client_count--;
	Pool *pool = c->pool;
	client_set_state(c, CL_FREE);
	scram_server_free(&c->scram);
	bool sent = false;
	if (sqlstate && client_has_socket(c)) {
		PktBuf pb;
		pktbuf_init(&pb);
		pktbuf_error(&pb, "FATAL", sqlstate, msg);
		sent = client_send_pktbuf(c, &pb);
		pktbuf_free(&pb);
	}
	if (sent)
		client_close_after_flush(c);
	else
		client_close_socket(c);
	if (pool)
		pool_schedule_maintain(pool);
}

void client_send_error_ready(Client *c, const char *sqlstate, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_error(&pb, "ERROR", sqlstate, msg);
	pktbuf_ready(&pb, c->tx_status ? c->tx_status : 'I');
	if (!client_send_pktbuf(c, &pb))
		client_disconnect(c, NULL, "could not queue an error for the client");
	pktbuf_free(&pb);
}

/* ---- login ---------------------------------------------------------- */

/* Allowed besides the tracked parameters (varcache). */
static bool startup_param_identity(const char *name)
{
	return strcmp(name, "user") == 0 || strcmp(name, "database") == 0;
}

static bool startup_param_ignored(const char *name)
{
	const StrList *l = &moat->cfg->ignore_startup_parameters;
	for (int i = 0; i < l->count; i++)
		if (strcasecmp(l->items[i], name) == 0)
			return true;
	return false;
}

/* False (client disconnected) on a parameter we cannot honour. */
static bool client_apply_startup_params(Client *c, const StartupPacket *sp)
{
	if (sp->has_replication && !startup_param_ignored("replication")) {
		client_disconnect(c, "08P01", "unsupported startup parameter: replication");
		return false;
	}
	for (int i = 0; i < sp->nparams; i++) {
		const StartupParam *p = &sp->params[i];
		if (p->value == sp->user || p->value == sp->database)
			continue;	/* (the parser found them: no names to compare; an empty
					 * database is not sp->database, and is compared below) */
		int id = varcache_lookup(p->name);	/* once: every parameter of every login */
		if (id >= 0) {
			varcache_set_id(&c->vars, (VarId)id, p->value);	/* (names are unique: nothing to compare) */
		} else if (!startup_param_identity(p->name) && !startup_param_ignored(p->name)) {
			client_disconnect(c, "08P01", "unsupported startup parameter: %s", p->name);
			return false;
		}
	}
	/*
	 * One block for both (client_free frees user_name): in the Client itself
	 * when they fit, as they nearly always do (conn8: no allocation per login).
	 */
	size_t ulen = strlen(sp->user) + 1, dlen = strlen(sp->database) + 1;
	c->user_name = ulen + dlen <= sizeof(c->names) ? c->names : xmalloc(ulen + dlen);
	memcpy(c->user_name, sp->user, ulen);
	c->db_name = c->user_name + ulen;
	memcpy(c->db_name, sp->database, dlen);
	return true;
}

static bool client_send_auth_request(Client *c, void (*build)(PktBuf *))
{
	PktBuf pb;
	pktbuf_init(&pb);
	build(&pb);
	bool ok = client_send_pktbuf(c, &pb);
	pktbuf_free(&pb);
	return ok;
}

static void build_sasl_request(PktBuf *pb) { pktbuf_auth_sasl(pb, "SCRAM-SHA-256"); }

/* The client's secret: what auth_query found, else its auth_file line. */
static const UserlistEntry *client_userlist_entry(const Client *c)
{
	const Userlist *ul = moat->cfg->userlist;
	if (c->queried)
		return c->queried;
	return ul ? userlist_find(ul, c->user_name) : NULL;
}

/* pgbouncer's wording: the SASL path and the password path fail differently. */
static void client_auth_failed(Client *c)
{
	moat->stats.login_failures++;
	bool sasl = c->auth_phase == AUTH_PHASE_SASL_INIT || c->auth_phase == AUTH_PHASE_SASL_CONT;
	slog_info(c, "authentication failed for user \"%s\"", c->user_name);
	client_disconnect(c, "28P01", sasl ? "SASL authentication failed"
					  : "password authentication failed");
}

static void client_start_scram(Client *c, const UserlistEntry *ue)
{
	/* Unknown users (and md5 secrets SCRAM cannot check) get a per-user fake salt, so
	 * the exchange does not tell them apart from real users. */
	bool ok = ue && ue->kind != SECRET_MD5 ? scram_server_init(&c->scram, ue->secret)
					       : scram_server_init_mock(&c->scram, c->user_name);
	if (!ok) {
		client_disconnect(c, "08P01", "could not start SCRAM authentication");
		return;
	}
	c->auth_phase = AUTH_PHASE_SASL_INIT;
	if (!client_send_auth_request(c, build_sasl_request))
		client_disconnect(c, NULL, "could not send the authentication request");
}

static void client_start_md5(Client *c)
{
	if (!util_random_bytes(c->md5_salt, sizeof(c->md5_salt))) {
		client_disconnect(c, "08P01", "could not generate a salt");
		return;
	}
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_auth_md5(&pb, c->md5_salt);
	c->auth_phase = AUTH_PHASE_PASSWORD;
	if (!client_send_pktbuf(c, &pb))
		client_disconnect(c, NULL, "could not send the authentication request");
	pktbuf_free(&pb);
}

static void client_auth_ok(Client *c);
static bool client_uses_tls(const Client *c);

/* jwt: the token comes as a cleartext password, so it needs TLS (or allow_insecure). */
static void client_request_jwt(Client *c)
{
	if (!client_uses_tls(c) && !c->remote.is_unix && !moat->cfg->jwt.allow_insecure) {
		moat->stats.login_failures++;
		client_disconnect(c, "28000", "JWT authentication needs a TLS connection");
		return;
	}
	c->auth_phase = AUTH_PHASE_PASSWORD;
	if (!client_send_auth_request(c, pktbuf_auth_cleartext))
		client_disconnect(c, NULL, "could not send the authentication request");
}

/* auth_type=cert (pgbouncer): the verified client certificate's CommonName is the user. */
static void client_auth_cert(Client *c)
{
	char cn[256];
	if (!tls_peer_common_name(c->ssl, cn, sizeof(cn))) {
		moat->stats.login_failures++;
		client_disconnect(c, "28000", "TLS client certificate required (auth_type=cert)");
		return;
	}
	if (strcmp(cn, c->user_name) != 0) {
		moat->stats.login_failures++;
		slog_info(c, "certificate CN \"%s\" does not match user \"%s\"", cn, c->user_name);
		client_disconnect(c, "28000", "TLS certificate name mismatch");
		return;
	}
	client_auth_ok(c);
}

/* Ask for the password (or trust) by c->auth_method, with the secret known by now. */
static void client_request_password(Client *c)
{
	const UserlistEntry *ue;
	switch (c->auth_method) {
	case AUTH_TRUST:
	case AUTH_ANY:
		client_auth_ok(c);	/* (no userlist lookup: nothing to check) */
		return;
	case AUTH_PLAIN:
		c->auth_phase = AUTH_PHASE_PASSWORD;
		if (!client_send_auth_request(c, pktbuf_auth_cleartext))
			client_disconnect(c, NULL, "could not send the authentication request");
		return;
	case AUTH_MD5:
		ue = client_userlist_entry(c);
		if (ue && ue->kind == SECRET_SCRAM)
			client_start_scram(c, ue);
		else
			client_start_md5(c);
		return;
	case AUTH_SCRAM:
		client_start_scram(c, client_userlist_entry(c));
		return;
	case AUTH_JWT:
		client_request_jwt(c);
		return;
	case AUTH_CERT:
		client_auth_cert(c);
		return;
	case AUTH_HBA:
		break;
	}
	client_disconnect(c, "28000", "auth method %s needs TLS, which this connection does not use",
			  config_auth_type_name(c->auth_method));
}

/* hostssl/hostnossl lines of auth_hba_file match on this. */
static bool client_uses_tls(const Client *c)
{
	return c->ssl != NULL;
}

static AuthType auth_type_of_hba_method(HbaMethod m)
{
	switch (m) {
	case HBA_TRUST: return AUTH_TRUST;
	case HBA_MD5: return AUTH_MD5;
	case HBA_SCRAM: return AUTH_SCRAM;
	case HBA_PASSWORD: return AUTH_PLAIN;
	case HBA_CERT:
	case HBA_REJECT: break;
	}
	return AUTH_CERT;
}

/* auth_type = hba: the first matching auth_hba_file line picks the method. False: refused. */
static bool client_choose_hba_method(Client *c)
{
	HbaConn conn = { .is_unix = c->remote.is_unix, .tls = client_uses_tls(c),
			 .addr = c->remote.host, .database = c->db_name, .user = c->user_name };
	const HbaRule *r = hba_match(moat->cfg->hba, &conn);
	const char *host = c->remote.is_unix ? "[local]" : c->remote.host;
	const char *enc = conn.tls ? "SSL encryption" : "no encryption";

	if (!r) {
		moat->stats.login_failures++;
		client_disconnect(c, "28000", "no pg_hba.conf entry for host \"%s\", user \"%s\", "
				  "database \"%s\", %s", host, c->user_name, c->db_name, enc);
		return false;
	}
	if (r->method == HBA_REJECT) {
		moat->stats.login_failures++;
		client_disconnect(c, "28000", "pg_hba.conf rejects connection for host \"%s\", "
				  "user \"%s\", database \"%s\", %s", host, c->user_name, c->db_name, enc);
		return false;
	}
	slog_debug(c, "auth_hba_file line %d: %s", r->line, hba_method_name(r->method));
	c->auth_method = auth_type_of_hba_method(r->method);
	return true;
}

static bool auth_method_needs_secret(AuthType t)
{
	return t == AUTH_PLAIN || t == AUTH_MD5 || t == AUTH_SCRAM;
}

static void client_start_auth(Client *c)
{
	c->auth_method = moat->cfg->auth_type;
	if (c->auth_method == AUTH_HBA && !client_choose_hba_method(c))
		return;
	/* pgbouncer: auth_file first; a user it lacks is looked up with auth_query */
	if (auth_method_needs_secret(c->auth_method) && !admin_is_console_db(c->db_name) &&
	    !client_userlist_entry(c)) {
		Database *db = c->login_db ? c->login_db : pool_find_database(c->db_name);
		const char *auth_user = auth_query_user_for(db);
		if (db && auth_user) {
			auth_query_start(c, db, auth_user);
			return;
		}
	}
	client_request_password(c);
}

void client_auth_query_done(Client *c, bool ok, const char *secret)
{
	if (!ok) {
		client_disconnect(c, "08P01", "authentication query failed");
		return;
	}
	if (secret) {
		c->queried = xcalloc(1, sizeof(*c->queried));
		c->queried->name = xstrdup(c->user_name);
		c->queried->secret = xstrdup(secret);
		c->queried->kind = userlist_secret_kind(secret);
	}
	/* no row: the exchange still runs (SCRAM with a mock salt), and fails */
	client_request_password(c);
}

static bool check_plain_password(const UserlistEntry *ue, const char *user, const char *pw)
{
	if (!ue)
		return false;
	if (ue->kind == SECRET_PLAIN) {
		size_t a = strlen(ue->secret), b = strlen(pw);
		return a == b && util_secure_equal(ue->secret, pw, a);
	}
	if (ue->kind == SECRET_MD5) {
		char stored[MD5_PASSWD_LEN + 1];
		auth_md5_stored(pw, user, stored);
		return strlen(ue->secret) == MD5_PASSWD_LEN &&
		       util_secure_equal(stored, ue->secret, MD5_PASSWD_LEN);
	}
	return scram_verify_plain(ue->secret, pw);
}

/* jwt: the role the token's role_claim names; NULL: refused (why says so). */
static const char *client_jwt_role(Client *c, const json_t *claims, const char **why)
{
	const JwtConfig *jc = &moat->cfg->jwt;
	if (!jc->role_claim || admin_is_console_db(c->db_name))
		return NULL;
	const char *role = jwt_claim_string(claims, jc->role_claim);
	Database *db = pool_find_database(c->db_name);
	if (!role)
		*why = "the role claim is missing or not a string";
	else if (!db || !config_find_role(db->cfg, role))
		*why = "the role claim names no role of this database";
	return *why ? NULL : role;
}

/* jwt: verify the token, match the user name, pick the role; details only in the log. */
static void client_check_jwt(Client *c, const char *token)
{
	const JwtConfig *jc = &moat->cfg->jwt;
	char why[256] = "";
	const char *role_why = NULL;
	json_t *claims = jwt_verify(jc, token, strlen(token), time(NULL), why, sizeof(why));
	const char *user = claims ? jwt_claim_string(claims, jwt_user_claim(jc)) : NULL;
	if (claims && (!user || strcmp(user, c->user_name) != 0))
		snprintf(why, sizeof(why), "claim '%s' does not equal the user name",
			 jwt_user_claim(jc));
	const char *role = why[0] ? NULL : client_jwt_role(c, claims, &role_why);
	if (why[0] || role_why) {
		moat->stats.login_failures++;
		slog_info(c, "JWT authentication failed for user \"%s\": %s", c->user_name,
			  why[0] ? why : role_why);
		if (why[0])
			client_disconnect(c, "28P01", "JWT authentication failed");
		else
			client_disconnect(c, "28000", "JWT authentication failed: the token names no "
					  "role of database \"%s\"", c->db_name);
	} else {
		c->jwt_claims = json_dumps(claims, JSON_COMPACT);
		c->jwt_role = role ? xstrdup(role) : NULL;
		slog_debug(c, "JWT accepted: %s=%s role=%s", jwt_user_claim(jc), user,
			   role ? role : "-");
		client_auth_ok(c);
	}
	json_decref(claims);
}

static void client_handle_password(Client *c, const uint8_t *body, size_t len)
{
	PktReader r;
	const char *pw;
	proto_reader_init(&r, body, len);
	if (!proto_read_cstring(&r, &pw) || proto_reader_left(&r) != 0) {
		client_disconnect(c, "08P01", "invalid password packet");
		return;
	}
	if (c->auth_method == AUTH_JWT) {
		client_check_jwt(c, pw);
		return;
	}
	const UserlistEntry *ue = client_userlist_entry(c);
	bool ok = c->auth_method == AUTH_PLAIN
		  ? check_plain_password(ue, c->user_name, pw)
		  : ue && auth_md5_check(ue->secret, c->user_name, c->md5_salt, pw);
	if (ok)
		client_auth_ok(c);
	else
		client_auth_failed(c);
}

static void client_handle_sasl_init(Client *c, const uint8_t *body, size_t len)
{
	const char *mech;
	const uint8_t *data;
	size_t dlen;
	char *out = NULL, err[256] = "";
	size_t out_len = 0;
	if (!proto_parse_sasl_initial(body, len, &mech, &data, &dlen) ||
	    strcmp(mech, "SCRAM-SHA-256") != 0) {
		client_disconnect(c, "08P01", "invalid SASL initial response");
		return;
	}
	if (!scram_server_first(&c->scram, data, dlen, &out, &out_len, err, sizeof(err))) {
		client_disconnect(c, "08P01", "SCRAM: %s", err);
		return;
	}
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_auth_sasl_continue(&pb, out, out_len);
	c->auth_phase = AUTH_PHASE_SASL_CONT;
	if (!client_send_pktbuf(c, &pb))
		client_disconnect(c, NULL, "could not send SASLContinue");
	pktbuf_free(&pb);
	free(out);
}

static void client_handle_sasl_final(Client *c, const uint8_t *body, size_t len)
{
	char *out = NULL, err[256] = "";
	size_t out_len = 0;
	if (!scram_server_final(&c->scram, body, len, &out, &out_len, err, sizeof(err))) {
		slog_debug(c, "SCRAM failed: %s", err);
		free(out);
		client_auth_failed(c);
		return;
	}
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_auth_sasl_final(&pb, out, out_len);
	bool ok = client_send_pktbuf(c, &pb);
	pktbuf_free(&pb);
	free(out);
	if (ok)
		client_auth_ok(c);
	else
		client_disconnect(c, NULL, "could not send SASLFinal");
}

static void client_handle_auth_message(Client *c, const uint8_t *body, size_t len)
{
	switch (c->auth_phase) {
	case AUTH_PHASE_PASSWORD:
		client_handle_password(c, body, len);
		return;
	case AUTH_PHASE_SASL_INIT:
		client_handle_sasl_init(c, body, len);
		return;
	case AUTH_PHASE_SASL_CONT:
		client_handle_sasl_final(c, body, len);
		return;
	default:
		client_disconnect(c, "08P01", "unexpected password message");
	}
}

#define WELCOME_ON_STACK 1024	/* PostgreSQL's welcome is 300-500 bytes: no heap on login */

void client_finish_login(Client *c)
{
	Pool *pool = c->pool;
	if (maskwire_login_wait(c)) {
		/* masking: the statement guard needs the catalog first */
		if (c->state != CL_WAITING_LOGIN) {
			client_set_state(c, CL_WAITING_LOGIN);
			c->wait_start = util_now_mono();
		}
		return;
	}
	uint8_t welcome[WELCOME_ON_STACK];
	PktBuf pb;
	pktbuf_init_on(&pb, welcome, sizeof(welcome));
	/* (AuthenticationOk is not counted, as before: sent before the client had a pool) */
	size_t uncounted = c->auth_ok_due ? WELCOME_AUTH_OK_LEN : 0;
	welcome_build(pool, &c->vars, c->auth_ok_due, c->cancel_pid, c->cancel_key, &pb);
	c->auth_ok_due = false;
	c->tx_status = 'I';
	client_set_state(c, CL_ACTIVE);
	prepared_client_init(c);
	bool ok = client_send_counted(c, &pb, uncounted, true);
	pktbuf_free(&pb);
	if (!ok) {
		client_disconnect(c, NULL, "could not send the welcome");
		return;
	}
	slog_debug(c, "login ok");
	c->request_time = util_now_cached();
	client_resume_reading(c);
}

static bool client_admin_allowed(Client *c)
{
	const Config *cfg = moat->cfg;
	bool admin = strlist_contains(&cfg->admin_users, c->user_name);
	bool stats = strlist_contains(&cfg->stats_users, c->user_name);
	c->admin_can_write = admin;
	return admin || stats;
}

static void client_login_console(Client *c)
{
	if (!client_admin_allowed(c)) {
		client_disconnect(c, "28000", "not allowed");
		return;
	}
	c->is_admin = true;
	c->pool = admin_pool();
	c->pool->user->client_count++;
	c->tx_status = 'I';
	client_set_state(c, CL_ACTIVE);
	admin_send_welcome(c);
	c->request_time = util_now_mono();
}

/*
 * AuthenticationOk goes out with the welcome (client_finish_login, or the
 * console's through client_send_pktbuf) or ahead of the error that ends the
 * login, whichever comes first, as pgbouncer sends it: one write to the
 * output, not two. Until the login completes, a client is written nothing
 * but through client_send_pktbuf.
 */
static void client_auth_ok(Client *c)
{
	c->auth_phase = AUTH_PHASE_DONE;
	c->auth_ok_due = true;
	if (admin_is_console_db(c->db_name)) {
		client_login_console(c);
		return;
	}
	Database *db = c->login_db ? c->login_db : pool_find_database(c->db_name);
	if (!db) {
		client_disconnect(c, "3D000", "no such database: %s", c->db_name);
		return;
	}
	const DbRole *role = c->jwt_role ? config_find_role(db->cfg, c->jwt_role) : NULL;
	if (c->jwt_role && !role) {
		client_disconnect(c, "28000", "role %s is gone from database %s", c->jwt_role, c->db_name);
		return;
	}
	const char *pool_user = role ? role->user : db->cfg->user ? db->cfg->user : c->user_name;
	Pool *pool = pool_get_for_login(db, pool_user, c->jwt_role);
	c->pool = pool;
	pool->user->client_count++;
	if (c->scram.recovered.valid && !db->cfg->user)
		pool->scram_keys = c->scram.recovered;
	if (c->queried && !db->cfg->user) {
		util_free_secret(pool->queried_secret);
		pool->queried_secret = xstrdup(c->queried->secret);
	}
	if (!audit_session_start(c)) {
		client_disconnect(c, "53400", "the audit log cannot keep up (audit.required): "
				  "new sessions refused");
		return;
	}
	if (!enforce_session_open(c))
		return;
	if (pool->welcome_ready) {
		client_finish_login(c);
		return;
	}
	client_set_state(c, CL_WAITING_LOGIN);
	c->wait_start = util_now_mono();
	pool_schedule_maintain(pool);
}

/* Checks every client can fail before we ask for a password. */
static bool client_precheck_login(Client *c)
{
	if (moat->state == MOAT_DRAINING) {
		client_disconnect(c, "57P01", "pgmoat is shutting down: no new connections");
		return false;
	}
	if (moat->client_count > moat->cfg->max_client_conn) {
		moat->stats.clients_refused++;
		client_disconnect(c, "53300", "no more connections allowed (max_client_conn)");
		return false;
	}
	if (admin_is_console_db(c->db_name))
		return true;
	Database *db = pool_find_database(c->db_name);
	if (!db) {
		client_disconnect(c, "3D000", "no such database: %s", c->db_name);
		return false;
	}
	if (db->disabled) {
		client_disconnect(c, "08P01", "database does not allow connections: %s", c->db_name);
		return false;
	}
	c->login_db = db;
	return true;
}

/* After client_apply_startup_params took what it needs of the StartupMessage. */
static void client_handle_startup(Client *c)
{
	if (moat->cfg->log_connections) {
		char tls[128];
		tls_describe(c->ssl, tls, sizeof(tls));
		slog_info(c, "login attempt: db=%s user=%s tls=%s", c->db_name, c->user_name,
			  c->ssl ? tls : "no");
	}
	/* pgbouncer: require and stronger apply to TCP; a unix socket is local already. */
	if (!c->ssl && !c->remote.is_unix && tls_client_mode() >= TLS_REQUIRE) {
		client_disconnect(c, "08P01", "SSL required");
		return;
	}
	if (client_precheck_login(c)) {
		client_start_auth(c);
		/*
		 * Valid only until this callback returns: a database dropped by a
		 * reload is freed by the janitor, so a login that continues later
		 * (a password, auth_query) looks it up again.
		 */
		c->login_db = NULL;	/* (c's memory outlives a disconnect until the loop frees it) */
	}
}

static void client_read_cb(struct bufferevent *bev, void *arg);
static void client_write_cb(struct bufferevent *bev, void *arg);
static void client_event_cb(struct bufferevent *bev, short what, void *arg);

/* Point the direct reader and flusher (and a TLS c->bev's callbacks) at the connection. */
static bool client_attach_io(Client *c)
{
	Worker *w = c->worker;
	if (!c->bev) {
		if (!msgio_output_attach_fd(&c->out, &w->flusher, c->fd, MSGIO_OUT_LOW, client_write_cb,
					    client_event_cb, c) ||
		    !msgio_reader_init_fd(&c->in, w->base, c->fd, MSGIO_READ_HIGH, client_read_cb,
					  client_event_cb, c))
			return false;
		/* (a new reader is not suspended: one event update, not two) */
		if (moat->state == MOAT_SUSPENDED)
			msgio_reader_suspend(&c->in, true);	/* accepted just before SUSPEND */
		msgio_reader_enable(&c->in, true);
		return true;
	}
	bufferevent_setcb(c->bev, NULL, client_write_cb, client_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_WRITE, MSGIO_OUT_LOW, 0);
	if (!msgio_output_attach(&c->out, &w->flusher, c->bev, c->ssl) ||
	    !msgio_reader_init(&c->in, c->bev, MSGIO_READ_HIGH, client_read_cb, client_event_cb, c))
		return false;
	if (c->ssl)
		msgio_reader_use_tls(&c->in, c->ssl);
	if (moat->state == MOAT_SUSPENDED)
		msgio_reader_suspend(&c->in, true);	/* accepted just before SUSPEND */
	msgio_reader_enable(&c->in, true);
	return true;
}

static void client_tls_event_cb(struct bufferevent *bev, short what, void *arg)
{
	Client *c = arg;
	if (what & BEV_EVENT_CONNECTED) {
		c->ssl = tls_get_ssl(bev);
		if (!client_attach_io(c))
			client_disconnect(c, NULL, "could not create the read event");
		return;
	}
	char why[256];
	tls_error_describe(bev, why, sizeof(why));
	slog_info(c, "TLS handshake failed: %s", why);
	client_disconnect(c, NULL, "TLS handshake failed: %s", why);
}

/*
 * Answer 'S' and hand the socket to OpenSSL. The 'S' goes straight to the
 * socket (nothing else is queued before the first packet's answer), so the
 * handshake follows it on the wire; from here on every byte is TLS.
 */
static void client_start_tls(Client *c)
{
	SSL *ssl = tls_client_ssl_new();
	bool ok = ssl && msgio_output_pending(&c->out) == 0 &&
		  send(c->fd, "S", 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1;
	if (!ok) {
		SSL_free(ssl);
		client_disconnect(c, NULL, "could not start TLS");
		return;
	}
	msgio_output_detach(&c->out);
	msgio_reader_stop(&c->in);
	c->bev = tls_wrap_fd(c->worker->base, c->fd, ssl, true);
	if (!c->bev) {
		c->fd = -1;	/* closed by tls_wrap_fd */
		client_disconnect(c, NULL, "could not start TLS");
		return;
	}
	bufferevent_setcb(c->bev, NULL, NULL, client_tls_event_cb, c);
}

/*
 * Bytes a client sent behind SSLRequest/GSSENCRequest, before our answer,
 * would be taken as if they came through the encryption the client asked
 * for (CVE-2021-23214): a protocol error. So is an SSLRequest inside TLS.
 */
static void client_answer_encryption_request(Client *c, bool ssl_request)
{
	if (evbuffer_get_length(c->in.buf) > 0) {
		client_disconnect(c, "08P01", "protocol error: data sent behind an encryption request");
		return;
	}
	if (c->ssl) {
		client_disconnect(c, "08P01", "protocol error: encryption request inside TLS");
		return;
	}
	if (ssl_request && tls_client_accepts() && !c->remote.is_unix) {
		client_start_tls(c);
		return;
	}
	if (evbuffer_add(msgio_out(&c->out), "N", 1) != 0)
		client_disconnect(c, NULL, "could not answer the encryption request");
}

/*
 * The first packet at pkt (len bytes, complete): its parameters applied.
 * False: the client was disconnected (the input is gone).
 */
static bool client_take_first_packet(Client *c, const uint8_t *pkt, uint32_t len, StartupPacket *sp,
				     bool *parsed, char *err, size_t errlen)
{
	err[0] = '\0';
	*parsed = proto_parse_startup(pkt, len, sp, err, errlen);
	if (*parsed && sp->kind == STARTUP_NORMAL) {
		c->seen_startup = true;
		if (!client_apply_startup_params(c, sp))
			return false;
	}
	return true;
}

/* The answer to the first packet, once it left the input. True when more input may be processed. */
static bool client_answer_first_packet(Client *c, const StartupPacket *sp, bool parsed, const char *err)
{
	if (!parsed) {
		client_disconnect(c, "08P01", "%s", err);
	} else if (sp->kind == STARTUP_SSL || sp->kind == STARTUP_GSSENC) {
		client_answer_encryption_request(c, sp->kind == STARTUP_SSL);
	} else if (sp->kind == STARTUP_CANCEL) {
		cancel_forward(c->worker, sp->cancel_pid, sp->cancel_key);
		client_disconnect(c, NULL, "cancel request forwarded");
	} else {
		client_handle_startup(c);
	}
	return c->state == CL_LOGIN;
}

/* The first packet(s) of a connection. True when more input may be processed. */
static bool client_read_first_packet(Client *c)
{
	struct evbuffer *in = c->in.buf;
	uint8_t lenbuf[4];
	uint32_t len;
	if (evbuffer_copyout(in, lenbuf, 4) < 4)
		return false;
	if (proto_startup_length(lenbuf, 4, &len) != FRAME_OK) {
		client_disconnect(c, "08P01", "invalid startup packet length");
		return false;
	}
	if (evbuffer_get_length(in) < len)
		return false;
	/* parsed where it lies (nearly always in the input's first chunk): no copy */
	const uint8_t *pkt = evbuffer_pullup(in, len);
	if (!pkt) {
		client_disconnect(c, NULL, "out of memory reading the startup packet");
		return false;
	}
	StartupPacket sp;
	char err[256];
	bool parsed;
	if (!client_take_first_packet(c, pkt, len, &sp, &parsed, err, sizeof(err)))
		return false;
	/*
	 * sp points into the packet: nothing uses it past here. It goes before
	 * the answer: the login may complete, and read on, from inside it.
	 */
	evbuffer_drain(in, len);
	return client_answer_first_packet(c, &sp, parsed, err);
}

/* Typed messages during authentication. */
static bool client_read_auth_message(Client *c)
{
	struct evbuffer *in = c->in.buf;
	MsgHeader h;
	FrameResult fr = msgio_peek_header(in, AUTH_MSG_MAX, &h);
	if (fr == FRAME_NEED_MORE)
		return false;
	if (fr == FRAME_BAD || h.type != 'p') {
		/* Judge the type before waiting for a body: a second StartupMessage lands here. */
		client_disconnect(c, "08P01", "expected a password message during authentication");
		return false;
	}
	uint8_t *msg = msgio_take(in, &h);
	if (!msg)
		return false;
	client_handle_auth_message(c, msgio_body(msg), msgio_body_len(&h));
	util_wipe(msg, proto_msg_total(&h));
	free(msg);
	return c->state == CL_LOGIN;
}

/*
 * The PROXY header of a trusted balancer: the address it names becomes the
 * client's (SHOW CLIENTS, logs, hba, policies). True when more input may be
 * processed.
 */
static bool client_read_proxy_header(Client *c)
{
	struct evbuffer *in = c->in.buf;
	size_t want = evbuffer_get_length(in);
	if (want > PROXYPROTO_V2_HDR + PROXYPROTO_V2_MAX_LEN)
		want = PROXYPROTO_V2_HDR + PROXYPROTO_V2_MAX_LEN;
	ProxyMode mode = PROXYPROTO_OFF;
	if (!proxyproto_mode_parse(moat->cfg->proxy_protocol, &mode))
		mode = PROXYPROTO_OFF;
	ProxyHeader h;
	const char *err = NULL;
	ProxyResult r = proxyproto_parse(evbuffer_pullup(in, (ev_ssize_t)want), want, mode, &h, &err);
	if (r == PROXYPROTO_NEED_MORE)
		return false;
	if (r == PROXYPROTO_BAD) {
		client_disconnect(c, "08P01", "%s", err);
		return false;
	}
	evbuffer_drain(in, h.consumed);
	c->proxy_pending = false;
	c->login_deadline = moat->cfg->client_login_timeout > 0
				    ? c->request_time + moat->cfg->client_login_timeout : 0;
	if (h.local)
		return true;
	snprintf(c->remote.host, sizeof(c->remote.host), "%s", h.src_host);
	c->remote.port = h.src_port;
	c->remote.is_unix = h.family == AF_UNIX;
	snprintf(c->local.host, sizeof(c->local.host), "%s", h.dst_host);
	c->local.port = h.dst_port;
	c->local_known = true;
	return true;
}

static bool client_read_login(Client *c)
{
	if (c->proxy_pending)
		return client_read_proxy_header(c);
	if (!c->seen_startup)
		return client_read_first_packet(c);
	if (c->auth_phase == AUTH_PHASE_DONE)
		return false;	/* waiting for the pool: nothing else is valid yet */
	return client_read_auth_message(c);
}

/* ---- after login ---------------------------------------------------- */

static inline bool client_msg_type_valid(uint8_t t)
{
	static const bool valid[256] = {	/* (one load per message, not a switch) */
		['Q'] = true, ['P'] = true, ['B'] = true, ['E'] = true, ['D'] = true, ['S'] = true,
		['C'] = true, ['H'] = true, ['F'] = true, ['d'] = true, ['c'] = true, ['f'] = true,
	};
	return valid[t];
}

/* Backpressure: the server's output is full. */
static void client_pause_reading(Client *c)
{
	if (!c->reading_paused) {
		c->reading_paused = true;
		msgio_reader_enable(&c->in, false);
	}
}

void client_resume_reading(Client *c)
{
	if (c->state == CL_FREE || !client_has_socket(c))
		return;
	if (c->reading_paused) {
		c->reading_paused = false;
		msgio_reader_enable(&c->in, true);
	}
	client_process_input(c);
}

static void client_read_admin(Client *c)
{
	struct evbuffer *in = c->in.buf;
	for (;;) {
		MsgHeader h;
		FrameResult fr = msgio_peek_header(in, ADMIN_QUERY_MAX, &h);
		if (fr == FRAME_NEED_MORE)
			return;
		if (fr == FRAME_BAD || (h.type != 'Q' && h.type != 'X' && !admin_ext_is_message(h.type))) {
			client_disconnect(c, "08P01", "unexpected message on the admin console");
			return;
		}
		uint8_t *msg = msgio_take(in, &h);
		if (!msg)
			return;
		c->request_time = util_now_mono();
		if (h.type == 'X') {
			free(msg);
			client_disconnect(c, NULL, NULL);
			return;
		}
		size_t blen = msgio_body_len(&h);
		if (h.type != 'Q') {
			admin_ext_handle(c, h.type, msgio_body(msg), blen);
			free(msg);
			if (c->state == CL_FREE)
				return;
			continue;
		}
		const char *sql = (const char *)msgio_body(msg);
		if (blen == 0 || memchr(sql, '\0', blen) != sql + blen - 1) {
			free(msg);
			client_disconnect(c, "08P01", "invalid query message");
			return;
		}
		admin_handle_query(c, sql);
		free(msg);
		if (c->state == CL_FREE)
			return;
	}
}

/*
 * Bookkeeping for one message about to go to the server. Inline wherever a
 * message is forwarded: every message of every run comes here.
 */
static inline __attribute__((always_inline)) void client_account_message(Client *c, Server *s,
									  uint8_t type, size_t total)
{
	usec_t now = util_now_cached();
	c->request_time = now;
	c->pool->stats.total.bytes_received += total;
	switch (type) {
	case 'Q':
	case 'F':
		s->pending_requests++;
		s->syncs_since_execute = 0;
		s->ready = false;
		c->query_start = now;
		break;
	case 'S':
		if (s->copy_in)
			break;	/* ignored by a server in copy-in: no ReadyForQuery comes for it */
		s->pending_requests++;
		s->syncs_since_execute++;
		s->ready = false;
		s->unsynced = false;
		break;
	case 'E':
		s->syncs_since_execute = 0;
		/* fall through */
	case 'P':
	case 'B':
	case 'D':
	case 'C':
	case 'H':
		if (!s->unsynced)
			c->query_start = now;
		s->unsynced = true;
		s->ready = false;
		break;
	case 'c':
	case 'f':
		s->copy_in = false;
		break;
	default:
		break;
	}
	if (c->tx_status == 'I' && !c->xact_start)
		c->xact_start = now;
	if (maskwire_active(c->worker))
		maskwire_track(s, type);
}

/* Let the socket fill up to one whole message that policies must read. */
static void client_read_whole(Client *c, size_t total, bool on)
{
	if (on == c->read_wm_raised)
		return;
	c->read_wm_raised = on;
	msgio_reader_set_high(&c->in, on ? total + MSGIO_READ_HIGH : MSGIO_READ_HIGH);
}

/*
 * The whole message h heads, taken out of the input (owned by the caller);
 * NULL while its bytes are not all here, with the read watermark raised so
 * that they can come.
 */
static uint8_t *client_take_whole(Client *c, const MsgHeader *h)
{
	size_t total = proto_msg_total(h);
	uint8_t *msg = msgio_take(c->in.buf, h);
	client_read_whole(c, total, msg == NULL);
	return msg;
}

/*
 * The same, left where it lies at the head of the input (valid until the input
 * changes); chunk (may be NULL): the input's first chunk, if known.
 */
static const uint8_t *client_peek_whole(Client *c, const MsgHeader *h, const struct evbuffer_iovec *chunk)
{
	size_t total = proto_msg_total(h);
	const uint8_t *msg = chunk && chunk->iov_len >= total ? chunk->iov_base
			     : evbuffer_pullup(c->in.buf, (ev_ssize_t)total);
	client_read_whole(c, total, msg == NULL);
	return msg;
}

/*
 * One whole message on its way to s, after policies: the session-state check
 * (Query, Parse) may refuse it, and prepared statements may rewrite it.
 */
static void client_send_whole(Client *c, Server *s, const uint8_t *msg, size_t len)
{
	PktBuf pb;
	pktbuf_init(&pb);
	if ((msg[0] == 'Q' || msg[0] == 'P') && !sessionstate_check(c, s, msg, len, &pb)) {
		msg = pb.data;
		len = pb.len;
	}
	if (prepared_on(c))
		prepared_send(c, s, msg, len);
	else
		evbuffer_add(msgio_out(&s->out), msg, len);
	pktbuf_free(&pb);
}

/*
 * pb goes to s in place of the message of total bytes at the head of the
 * input (a denial marker for a message refused unread), whose bytes are
 * discarded as they arrive.
 */
static void client_send_instead_of_unread(Client *c, Server *s, const PktBuf *pb, size_t total)
{
	if (prepared_on(c))
		prepared_send(c, s, pb->data, pb->len);
	else
		evbuffer_add(msgio_out(&s->out), pb->data, pb->len);
	c->fwd_remaining = total;
	c->fwd_discard = true;
}

/*
 * A Query or Parse too large to be read whole, with the session-state check
 * on: it cannot be checked, so it goes only as warn or pin allow; refused,
 * the server gets the denial marker instead and the message's bytes are
 * discarded as they arrive.
 */
static void client_forward_unread(Client *c, Server *s, const MsgHeader *h)
{
	size_t total = proto_msg_total(h);
	PktBuf pb;
	pktbuf_init(&pb);
	bool send = sessionstate_check_unread(c, s, h->type, &pb);
	client_account_message(c, s, h->type, total);
	if (send) {
		if (prepared_on(c))
			prepared_track(s, h->type);
		client_move_run(c, s, total, NULL);
	} else {
		client_send_instead_of_unread(c, s, &pb, total);
	}
	pktbuf_free(&pb);
}

/* Must this message be read whole before it goes (session-state check, prepared statements)? */
static bool client_wants_whole(const Client *c, const MsgHeader *h)
{
	if (proto_msg_total(h) > JUDGE_MSG_MAX)
		return false;	/* streamed unread, and unchecked */
	if (prepared_on(c) && prepared_wants_whole(h->type))
		return true;
	return (h->type == 'Q' || h->type == 'P') && sessionstate_active(c);
}

/*
 * A Query, Parse or FunctionCall under policies: judged whole, then the
 * original, a rewrite or the denial marker goes to the server. False when the
 * message is not all here yet.
 */
static bool client_forward_judged(Client *c, Server *s, const MsgHeader *h)
{
	size_t total = proto_msg_total(h);
	if (total > JUDGE_MSG_MAX) {
		PktBuf pb;
		pktbuf_init(&pb);
		enforce_deny_oversized(c, s, h->type, &pb);
		client_account_message(c, s, h->type, total);
		client_send_instead_of_unread(c, s, &pb, total);
		pktbuf_free(&pb);
		return true;
	}
	if (enforce_ready(c, s, h->type) == ENFORCE_WAIT) {
		c->judge_waiting = true;	/* server_after_ready() resumes us */
		return false;
	}
	uint8_t *msg = client_take_whole(c, h);
	if (!msg)
		return false;
	Judged j;
	enforce_judge(c, s, msg, total, &j);
	if (j.held) {
		free(msg);	/* approvals.c kept a copy; c->held stops the loop */
		return true;
	}
	client_account_message(c, s, h->type, total);
	c->judged_stateless = j.stateless;
	client_send_whole(c, s, j.send, j.len);
	if (j.owned)
		free(j.send);
	free(msg);
	return true;
}

/*
 * The whole message of total bytes at the head of the input (msg, where it
 * lies), after policies: the session-state check may refuse it, prepared
 * statements may rewrite it; otherwise it moves on, not copied out first,
 * and the messages behind it that need no step go with it (the Bind,
 * Describe, Execute and Sync behind a Parse).
 * False when c is gone.
 */
static bool client_send_head(Client *c, Server *s, const uint8_t *msg, size_t total,
			     const struct evbuffer_iovec *chunk)
{
	struct evbuffer *in = c->in.buf;
	/*
	 * The run behind msg is read in the input's first chunk: the real one,
	 * not just msg's bytes (the messages behind would not be found in it).
	 */
	struct evbuffer_iovec head;
	if (!chunk && evbuffer_peek(in, 1, NULL, &head, 1) == 1 && head.iov_base == msg)
		chunk = &head;
	if (prepared_on(c)) {
		PktBuf pb;
		pktbuf_init(&pb);
		bool checked = (msg[0] != 'Q' && msg[0] != 'P') || sessionstate_check(c, s, msg, total, &pb);
		if (checked && prepared_passes(msg, total)) {
			/* unchanged (unnamed, a portal, a plain Query): it moves with what is behind it */
			pktbuf_free(&pb);
			prepared_track(s, msg[0]);
			client_move_run(c, s, total, chunk);
			return true;
		}
		/* (what it sends is copied: the input is drained after, unless c is gone) */
		if (checked)
			prepared_send(c, s, msg, total);
		else
			prepared_send(c, s, pb.data, pb.len);
		pktbuf_free(&pb);
		if (c->state == CL_FREE || !client_has_socket(c))
			return false;
		evbuffer_drain(in, total);
		return true;
	}
	PktBuf pb;
	pktbuf_init(&pb);
	if ((msg[0] == 'Q' || msg[0] == 'P') && !sessionstate_check(c, s, msg, total, &pb)) {
		evbuffer_drain(in, total);
		evbuffer_add(msgio_out(&s->out), pb.data, pb.len);
	} else {
		client_move_run(c, s, total, chunk);	/* with the plain messages behind it */
	}
	if (pb.data)	/* (only a refusal wrote one) */
		pktbuf_free(&pb);
	return true;
}

static inline const void *chunk_base(const struct evbuffer_iovec *chunk)
{
	return chunk ? chunk->iov_base : NULL;
}

/*
 * A message read whole for the checks above, with no policies to judge it:
 * this runs for every Query and Parse in transaction pooling. False: wait for
 * bytes.
 */
static bool client_forward_whole(Client *c, Server *s, const MsgHeader *h,
				 const struct evbuffer_iovec *chunk)
{
	const uint8_t *msg = client_peek_whole(c, h, chunk);
	if (!msg)
		return false;
	client_account_message(c, s, h->type, proto_msg_total(h));
	return client_send_head(c, s, msg, proto_msg_total(h), msg == chunk_base(chunk) ? chunk : NULL);
}

/*
 * Masking: which statement a Bind makes a portal of, which one a Describe
 * asks about. Only the names at the front of the message are read; it is
 * forwarded as usual. False: wait for more bytes, or the client is gone.
 */
static bool client_note_portal_names(Client *c, const MsgHeader *h)
{
	struct evbuffer *in = c->in.buf;
	size_t total = proto_msg_total(h);
	size_t peek = total < MASKWIRE_NAMES_PEEK ? total : MASKWIRE_NAMES_PEEK;
	if (evbuffer_get_length(in) < peek) {
		client_read_whole(c, peek, true);
		return false;
	}
	client_read_whole(c, peek, false);
	uint8_t buf[MASKWIRE_NAMES_PEEK];
	if (evbuffer_copyout(in, buf, peek) != (ev_ssize_t)peek) {
		client_disconnect(c, "08P01", "could not read a message");
		return false;
	}
	if (!maskwire_note_names(c, h->type, buf + PROTO_HEADER_LEN, peek - PROTO_HEADER_LEN,
				 total - PROTO_HEADER_LEN)) {
		client_disconnect(c, "08P01", "statement or portal names over %d bytes are not "
				  "supported while columns are masked", MASKWIRE_NAMES_PEEK / 2);
		return false;
	}
	return true;
}

/* Masking: an Execute goes whole, after pgmoat's own Describe of its portal. */
static bool client_forward_execute(Client *c, Server *s, const MsgHeader *h)
{
	struct evbuffer *out = msgio_out(&s->out);
	size_t total = proto_msg_total(h);
	uint8_t *msg = client_take_whole(c, h);
	if (!msg)
		return false;
	maskwire_before_execute(s, msg, total, out);
	client_account_message(c, s, h->type, total);
	evbuffer_add(out, msg, total);
	free(msg);
	return true;
}

/*
 * A client with no server, outside a transaction: judge first. A denial is
 * answered here (it never waits for a pooled connection); an allowed message
 * is kept and sent first once a server is assigned: where it lies, at the
 * head of the input (nothing reads a client's input until it has a server),
 * or, rewritten, as a copy of its own. False: wait for bytes, or c is gone.
 */
static bool client_judge_unlinked(Client *c, const MsgHeader *h)
{
	struct evbuffer *in = c->in.buf;
	size_t total = proto_msg_total(h);
	const uint8_t *msg = client_peek_whole(c, h, NULL);
	if (!msg)
		return false;
	c->request_time = util_now_mono();
	Judged j;
	enforce_judge(c, NULL, msg, total, &j);
	if (c->state == CL_FREE || !client_has_socket(c)) {
		if (j.owned)
			free(j.send);
		return false;
	}
	c->stash_type = h->type;
	c->stash_may_change_lexing = j.may_change_lexing;
	c->stash_stateless = j.stateless;
	if (j.held) {
		evbuffer_drain(in, total);	/* approvals.c kept a copy; c->held stops the loop */
	} else if (j.answer) {
		evbuffer_add(msgio_out(&c->out), j.send, j.len);
		c->discard_until_sync = j.discard_until_sync;
		free(j.send);
		evbuffer_drain(in, total);
	} else if (j.owned) {
		evbuffer_drain(in, total);
		c->stash = j.send;
		c->stash_len = j.len;
	} else {
		c->stash_in_input = true;
		c->stash_len = total;
	}
	return true;
}

static bool client_has_stash(const Client *c)
{
	return c->stash || c->stash_in_input;
}

/* The server for a stashed message has come: it goes before anything else. */
static void client_send_stash(Client *c, Server *s)
{
	client_account_message(c, s, c->stash_type, c->stash_len);
	if (c->stash_may_change_lexing)
		s->lexing_may_change = true;
	c->judged_stateless = c->stash_stateless;
	if (c->stash_in_input) {
		c->stash_in_input = false;
		const uint8_t *msg = evbuffer_pullup(c->in.buf,
						     (ev_ssize_t)c->stash_len);
		if (!msg || msg[0] != c->stash_type) {
			client_disconnect(c, "08P01", "the message judged is no longer in the input");
			return;
		}
		(void)client_send_head(c, s, msg, c->stash_len, NULL);
		return;
	}
	client_send_whole(c, s, c->stash, c->stash_len);
	free(c->stash);
	c->stash = NULL;
}

/* After a locally denied Parse: drop messages up to Sync, then answer it. */
static void client_discard_message(Client *c, const MsgHeader *h)
{
	c->fwd_remaining = proto_msg_total(h);
	c->fwd_discard = true;
	if (h->type != 'S')
		return;
	c->discard_until_sync = false;
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_ready(&pb, 'I');
	if (!client_send_pktbuf(c, &pb))
		client_disconnect(c, NULL, "could not answer Sync");
	pktbuf_free(&pb);
}

/* Show audit the part of a message it reads; false: wait until those bytes are here. */
static bool client_audit_message(Client *c, const MsgHeader *h)
{
	size_t total = proto_msg_total(h);
	size_t need = audit_bytes_needed(c, h->type, total);
	if (need == 0)
		return true;
	uint8_t *head = evbuffer_pullup(c->in.buf, (ev_ssize_t)need);
	if (!head) {
		client_read_whole(c, need, true);
		return false;
	}
	client_read_whole(c, need, false);
	audit_client_message(c, head, need, total);
	return true;
}

/*
 * A run of messages being taken through to the server, and where the one
 * asked about starts in the input. Messages read where they lie (prepared
 * statements, masking) are read in the input's first contiguous chunk, where
 * msgio_extend_run finds the messages it offers; it is peeked once per run.
 */
typedef struct TakeThrough {
	Client *c;
	size_t at;		/* where the message asked about starts in the input */
	const uint8_t *chunk;	/* the input's first chunk, once peeked (unchanged meanwhile) */
	size_t chunk_len;
} TakeThrough;

/* The message asked about, whole in the first chunk; NULL when it is not. */
static const uint8_t *take_through_peek(TakeThrough *t, size_t total)
{
	if (!t->chunk) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(t->c->in.buf, 1, NULL, &v, 1) < 1)
			return NULL;
		t->chunk = v.iov_base;
		t->chunk_len = v.iov_len;
	}
	if (t->at > t->chunk_len || total > t->chunk_len - t->at)
		return NULL;
	return t->chunk + t->at;
}

/*
 * Prepared statements: does the message asked about pass unchanged (a
 * Describe of a portal, a Bind of the unnamed statement)? A message not all
 * in the first chunk is not read here (the step that reads it whole decides).
 */
static bool client_prepared_passes(TakeThrough *t, const MsgHeader *h)
{
	size_t total = proto_msg_total(h);
	const uint8_t *msg = take_through_peek(t, total);
	return msg && prepared_passes(msg, total);
}

/*
 * Masking: may this Bind, Describe or Execute join the run? Yes when it lies
 * whole in the chunk and maskwire has noted its names (Bind, Describe: the
 * same peek as client_note_portal_names, which refuses what this refuses),
 * or, for an Execute, when it needs no Describe of pgmoat's before it.
 */
static bool client_mask_passes(TakeThrough *t, const MsgHeader *h)
{
	size_t total = proto_msg_total(h);
	const uint8_t *msg = take_through_peek(t, total);
	if (!msg)
		return false;
	const uint8_t *body = msg + PROTO_HEADER_LEN;
	size_t len = total - PROTO_HEADER_LEN;
	if (h->type == 'E')
		return maskwire_execute_passes(t->c->link, body, len);
	size_t have = total < MASKWIRE_NAMES_PEEK ? len : MASKWIRE_NAMES_PEEK - PROTO_HEADER_LEN;
	return maskwire_note_names(t->c, h->type, body, have, len);
}

/*
 * A message that goes to the server as it is, with nothing to read first:
 * not a statement (policies, audit.required), and no audit, session-state or
 * prepared-statement step but noting the reply it expects. True: it is
 * accounted, and joins the run that moves now. client_forward asks this
 * first of every message, and msgio_extend_run of the ones behind it (the
 * Bind/Describe/Execute/Sync behind a Parse): one definition of what needs no
 * step. A message the prepared-statement layer or masking reads where it lies
 * and lets pass needs none: a Describe of a portal, say.
 */
static bool client_take_through_cb(void *arg, const MsgHeader *h)
{
	TakeThrough *through = arg;
	Client *c = through->c;
	Server *s = c->link;
	size_t total = proto_msg_total(h);
	uint8_t t = h->type;
	if (!client_msg_type_valid(t) || enforce_judges(t) ||
	    (c->audit && audit_bytes_needed(c, t, total) > 0))
		return false;
	if (prepared_on(c)) {
		/*
		 * (Query and Parse are judged or checked whole: refused above.) A
		 * Bind at the head of the input is left to prepared_forward_bind,
		 * which reads its names once.
		 */
		bool reads = t == 'B' || t == 'D' || t == 'C';	/* (what prepared_wants_whole names but P, Q) */
		if (reads && ((t == 'B' && through->at == 0) || !client_prepared_passes(through, h)))
			return false;
		prepared_track(s, t);
	} else if (maskwire_active(c->worker) && (t == 'B' || t == 'D' || t == 'E') &&
		   !client_mask_passes(through, h)) {
		/*
		 * (client_wants_whole() is not asked: outside prepared statements
		 * it wants only a Query or a Parse, refused above.)
		 */
		return false;	/* (masking last: passing, it noted the names) */
	}
	client_account_message(c, s, t, total);
	through->at += total;
	return true;
}

/* Nothing but a message's type decides whether it needs a step. */
static bool client_take_bare(const Client *c)
{
	return !c->audit && !prepared_on(c) && !maskwire_active(c->worker);
}

/* client_take_through_cb() of a bare client, apart: nothing for it to save or ask */
static bool client_take_bare_cb(void *arg, const MsgHeader *h)
{
	TakeThrough *through = arg;
	if (!client_msg_type_valid(h->type) || enforce_judges(h->type))
		return false;
	size_t total = proto_msg_total(h);
	client_account_message(through->c, through->c->link, h->type, total);
	through->at += total;
	return true;
}

/*
 * client_take_through_cb() of a client with prepared statements and no audit,
 * apart (masking is not asked there either): the type, the prepared-statement
 * step and the accounting, for the Describe/Execute/Sync behind every Bind.
 */
static bool client_take_prepared_cb(void *arg, const MsgHeader *h)
{
	TakeThrough *through = arg;
	uint8_t t = h->type;
	if (!client_msg_type_valid(t) || enforce_judges(t))
		return false;
	if ((t == 'B' || t == 'D' || t == 'C') &&
	    ((t == 'B' && through->at == 0) || !client_prepared_passes(through, h)))
		return false;	/* (as client_take_through_cb: read by the prepared step) */
	Server *s = through->c->link;
	size_t total = proto_msg_total(h);
	prepared_track(s, t);
	client_account_message(through->c, s, t, total);
	through->at += total;
	return true;
}

typedef bool TakeCb(void *arg, const MsgHeader *h);

static TakeCb *client_take_cb(const Client *c)
{
	if (client_take_bare(c))
		return client_take_bare_cb;
	return !c->audit && prepared_on(c) ? client_take_prepared_cb : client_take_through_cb;
}

/*
 * Move the accounted message of total bytes at the head of the input, and the
 * plain messages behind it, to s in one go; a message not all here yet streams.
 */
static void client_move_run(Client *c, Server *s, size_t total, const struct evbuffer_iovec *chunk)
{
	struct evbuffer *in = c->in.buf;
	size_t in_len = evbuffer_get_length(in);
	struct evbuffer_iovec first = chunk ? *chunk : (struct evbuffer_iovec){ NULL, 0 };
	if (in_len > total) {	/* (nothing behind a simple Query) */
		TakeThrough through = { c, total, first.iov_base, first.iov_len };
		if (first.iov_len > total)	/* (the chunk is known past the head) */
			total = msgio_extend_run_in(&first, total, (uint32_t)moat->cfg->max_packet_size,
						    client_take_cb(c), &through);
		else
			total = msgio_extend_run(in, total, (uint32_t)moat->cfg->max_packet_size,
						 client_take_cb(c), &through, &first);
	}
	/* (a run that empties the input may go straight to the server's socket) */
	const uint8_t *at = first.iov_base && total <= first.iov_len ? first.iov_base : NULL;
	size_t moved = msgio_move_out(in, in_len, at, total, &s->out);
	c->fwd_remaining = total - moved;
	c->fwd_discard = false;
}

/*
 * A Bind of total bytes whose first bytes head stands for: the head, the rest
 * and the plain messages behind it go to s as one piece when they lie in the
 * input's first chunk (one write, and one chunk for the flusher to send);
 * else the head goes, and the rest moves or streams.
 */
static void client_move_rewritten_run(Client *c, Server *s, const PreparedBindHead *head,
				      size_t total)
{
	struct evbuffer *in = c->in.buf;
	TakeThrough through = { c, total, head->chunk, head->chunk_len };	/* (input unchanged since) */
	struct evbuffer_iovec first = { (void *)head->chunk, head->chunk_len };
	size_t end = head->chunk
		     ? msgio_extend_run_in(&first, total, (uint32_t)moat->cfg->max_packet_size,
					   client_take_cb(c), &through)
		     : msgio_extend_run(in, total, (uint32_t)moat->cfg->max_packet_size,
					client_take_cb(c), &through, &first);
	uint8_t piece[2048];
	size_t rest = end - head->replaces;
	if (!through.chunk && first.iov_len > 0) {
		through.chunk = first.iov_base;
		through.chunk_len = first.iov_len;
	}
	if (head->len + rest <= sizeof(piece) && through.chunk && through.chunk_len >= end) {
		memcpy(piece, head->data, head->len);
		memcpy(piece + head->len, through.chunk + head->replaces, rest);
		evbuffer_drain(in, end);
		/* (a run that empties the input may go straight to the server's socket) */
		msgio_add_out(&s->out, piece, head->len + rest, evbuffer_get_length(in) == 0);
		c->fwd_remaining = 0;
	} else {
		struct evbuffer *out = msgio_out(&s->out);
		evbuffer_add(out, head->data, head->len);
		evbuffer_drain(in, head->replaces);
		c->fwd_remaining = rest - msgio_move(in, out, rest);
	}
	c->fwd_discard = false;
}

/*
 * Prepared statements: a Bind, its statement name rewritten (or refused, or
 * passed unchanged). False: wait for bytes. (Its buffers stay out of
 * client_forward's frame.)
 */
static NOINLINE bool client_forward_bind(Client *c, Server *s, const MsgHeader *h,
					 const struct evbuffer_iovec *chunk)
{
	size_t total = proto_msg_total(h);
	PreparedBindHead head;
	PreparedBind pbr = prepared_forward_bind(c, s, h, chunk, &head);
	if (pbr == PREPARED_BIND_WAIT)
		return false;
	client_account_message(c, s, h->type, total);
	if (pbr == PREPARED_BIND_REWRITTEN)
		client_move_rewritten_run(c, s, &head, total);
	else if (pbr == PREPARED_BIND_PASS)
		client_move_run(c, s, total, NULL);
	return true;	/* (DONE: refused, dropped as it streams) */
}

/* Forward as many whole (or streaming) messages as the server's buffer takes. */
static void client_forward(Client *c)
{
	struct evbuffer *in = c->in.buf;
	if (client_has_stash(c) && c->link)
		client_send_stash(c, c->link);
	/* A held client reads nothing more until the reviewer's ruling (approvals.c). */
	while (c->state == CL_ACTIVE && !c->held && evbuffer_get_length(in) > 0) {
		Server *s = c->link;
		if (s && msgio_output_pending(&s->out) > MSGIO_OUT_HIGH) {
			client_pause_reading(c);
			return;
		}
		if (c->fwd_remaining > 0) {
			struct evbuffer *out = c->fwd_discard ? NULL : msgio_out(&s->out);
			c->fwd_remaining -= msgio_move(in, out, c->fwd_remaining);
			if (c->fwd_remaining == 0 && s)
				server_release_if_done(s);	/* its ReadyForQuery came first */
			continue;
		}
		MsgHeader h;
		struct evbuffer_iovec chunk;	/* the input's first chunk, while nothing changes it */
		FrameResult fr = msgio_peek_header_chunk(in, (uint32_t)moat->cfg->max_packet_size, &h, &chunk);
		if (fr == FRAME_NEED_MORE)
			return;
		if (fr == FRAME_BAD) {
			client_disconnect(c, "08P01", "invalid packet length");
			return;
		}
		if (h.type == 'X') {
			client_disconnect(c, NULL, NULL);
			return;
		}
		if (!client_msg_type_valid(h.type)) {
			client_disconnect(c, "08P01", "unsupported pkt type: %d", h.type);
			return;
		}
		if (c->discard_until_sync && !s) {
			client_discard_message(c, &h);
			continue;
		}
		if (enforce_judges(h.type) && c->audit && !audit_admits(c)) {
			/* audit.required: a statement that could not be recorded never runs. */
			client_disconnect(c, "53400", "the audit log cannot keep up (audit.required): "
				"statement refused");
			return;
		}
		/* (An oversized message is denied through a server, unread.) */
		if (!s && !client_has_stash(c) && c->tx_status == 'I' && enforce_active(c->worker) &&
		    enforce_judges(h.type) && proto_msg_total(&h) <= JUDGE_MSG_MAX) {
			if (!client_judge_unlinked(c, &h))
				return;
			if (!client_has_stash(c))
				continue;	/* answered here, or held */
		}
		if (!s) {
			if (drain_close_at_boundary(c))
				return;
			/*
			 * Assigned at once, the client carries on here, in this loop; queued,
			 * it carries on from client_on_server_assigned(), and its input waits
			 * (CL_WAITING is not processed) while the socket stays readable,
			 * bounded by the read watermark, so an EOF is still seen.
			 */
			c->requesting_server = true;
			pool_request_server(c);
			c->requesting_server = false;
			if (c->state != CL_ACTIVE || !c->link)
				return;
			if (client_has_stash(c)) {
				client_send_stash(c, c->link);	/* it was judged first: it goes first */
				continue;
			}
			/*
			 * The message read above is still at the head: carry on with it
			 * (what the top of the loop checks again cannot have changed but
			 * the server, whose output an assignment leaves near empty).
			 */
			s = c->link;
		}
		size_t total = proto_msg_total(&h);
		TakeThrough through = { c, 0, NULL, 0 };
		if (client_take_cb(c)(&through, &h)) {
			client_move_run(c, s, total, &chunk);	/* the common case: nothing to read */
			continue;
		}
		if (enforce_active(c->worker) && enforce_judges(h.type)) {
			if (!client_forward_judged(c, s, &h))
				return;
			continue;
		}
		if (!client_audit_message(c, &h))
			return;
		if ((h.type == 'B' || h.type == 'D') && maskwire_active(c->worker)) {
			if (!client_note_portal_names(c, &h))
				return;
		}
		if (h.type == 'E' && maskwire_active(c->worker)) {
			if (!client_forward_execute(c, s, &h))
				return;
			continue;
		}
		/* (audit and masking may have pulled the input up: the chunk moved) */
		const struct evbuffer_iovec *known = c->audit || maskwire_active(c->worker) ? NULL : &chunk;
		if (client_wants_whole(c, &h)) {
			if (!client_forward_whole(c, s, &h, known))
				return;
			continue;
		}
		if ((h.type == 'Q' || h.type == 'P') && total > JUDGE_MSG_MAX && sessionstate_active(c)) {
			client_forward_unread(c, s, &h);
			continue;
		}
		if (prepared_on(c) && h.type == 'B') {
			if (!client_forward_bind(c, s, &h, known))
				return;
			continue;
		} else if (prepared_on(c)) {
			prepared_track(s, h.type);
		}
		client_account_message(c, s, h.type, total);
		client_move_run(c, s, total, NULL);
	}
}

static void client_process_input(Client *c)
{
	if (!client_has_socket(c) || c->reading_paused)
		return;
	switch (c->state) {
	case CL_LOGIN:
		while (c->state == CL_LOGIN && client_read_login(c))
			;
		break;
	case CL_ACTIVE:
		if (c->is_admin)
			client_read_admin(c);
		else
			client_forward(c);
		break;
	default:
		break;
	}
	if (c->state != CL_FREE && client_has_socket(c))
		msgio_reader_consumed(&c->in);
}

void client_on_server_assigned(Client *c, Server *s)
{
	Pool *pool = c->pool;
	usec_t now = util_now_cached();
	pool->stats.total.wait_time += (uint64_t)(now - c->wait_start);
	pool->stats.total.server_assignment_count++;
	c->link = s;
	s->link = c;
	s->fresh = false;
	if (c->state != CL_ACTIVE)	/* (assigned at once, it never left the active list) */
		client_set_state(c, CL_ACTIVE);
	server_set_state(s, SV_ACTIVE);
	prepared_link(c, s);
	s->request_time = now;
	/* (values are interned: the same pointers everywhere, the usual case, mean nothing to SET) */
	bool same = memcmp(c->vars.values, s->vars.values, sizeof(c->vars.values)) == 0;
	char *sync = same ? NULL : varcache_sync_sql(&c->vars, &s->vars);
	if (sync) {
		bool ok = server_send_internal_query(s, sync);
		free(sync);
		if (!ok) {
			client_disconnect(c, "08P01", "could not synchronise session parameters");
			return;
		}
	}
	/*
	 * Carry on from the event loop, not from here: assignment happens inside
	 * release and disconnect paths, and processing input here would nest one
	 * client's teardown inside another's without bound. A client that asked
	 * from its own forwarding loop carries on there (no extra loop pass).
	 */
	if (c->requesting_server && !c->reading_paused)
		return;
	if (c->reading_paused) {
		c->reading_paused = false;
		msgio_reader_enable(&c->in, true);
	}
	msgio_reader_kick(&c->in);
}

Client *client_find_by_cancel_key(Worker *w, uint32_t pid, uint32_t key)
{
	List *item;
	list_for_each(item, &w->all_clients) {
		Client *c = container_of(item, Client, all_head);
		if (c->state != CL_FREE && c->cancel_pid == pid &&
		    util_secure_equal(&c->cancel_key, &key, sizeof(key)))
			return c;
	}
	return NULL;
}

/* ---- libevent callbacks --------------------------------------------- */

static void client_read_cb(struct bufferevent *bev, void *arg)
{
	Client *c = arg;
	Worker *w = c->worker;
	util_clock_scope_begin();
	msgio_flusher_begin(&w->flusher);
	client_process_input(c);
	msgio_flusher_end(&w->flusher);	/* c may be gone after this */
	util_clock_scope_end();
}

static void client_write_cb(struct bufferevent *bev, void *arg)
{
	Client *c = arg;
	msgio_output_drained(&c->out);
	if (c->link && c->link->reading_paused)
		server_resume_reading(c->link);
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	Client *c = arg;
	if (what & BEV_EVENT_EOF)
		client_disconnect(c, NULL, "client unexpected eof");
	else if (what & BEV_EVENT_ERROR)
		client_disconnect(c, NULL, "client socket error");
	else if (what & BEV_EVENT_TIMEOUT)
		client_disconnect(c, NULL, "client socket timeout");
}

/* A trusted balancer must send its PROXY header first, within proxy_protocol_timeout. */
static void client_expect_proxy_header(Client *c, const struct sockaddr *sa)
{
	const Config *cfg = moat->cfg;
	ProxyMode mode;
	if (cfg->proxy_protocol_trusted.count == 0 ||	/* (the default: no parse per connection) */
	    !proxyproto_mode_parse(cfg->proxy_protocol, &mode) || mode == PROXYPROTO_OFF ||
	    !proxyproto_trusted(&cfg->proxy_protocol_trusted, sa))
		return;
	c->proxy_pending = true;
	usec_t deadline = c->request_time + cfg->proxy_protocol_timeout;
	if (cfg->proxy_protocol_timeout > 0 && (!c->login_deadline || deadline < c->login_deadline))
		c->login_deadline = deadline;
}

/*
 * Memory of freed clients, per thread, for the next accepted ones: a Client
 * is over a kilobyte, beyond glibc's per-thread cache, so a connection per
 * transaction would pay a binned malloc and free for it. Under ASan none is
 * kept, so that a use after free stays one it reports.
 */
#define SPARE_CLIENTS_MAX 64

static __thread struct {
	Client *c[SPARE_CLIENTS_MAX];
	int n;
} spare_clients;

static Client *client_alloc(void)
{
	if (spare_clients.n == 0)
		return xcalloc(1, sizeof(Client));
	Client *c = spare_clients.c[--spare_clients.n];
	memset(c, 0, sizeof(*c));
	return c;
}

static void client_release_memory(Client *c)
{
#if defined(__SANITIZE_ADDRESS__)
	free(c);
#else
	if (spare_clients.n < SPARE_CLIENTS_MAX)
		spare_clients.c[spare_clients.n++] = c;
	else
		free(c);
#endif
}

void client_release_thread_cache(void)
{
	while (spare_clients.n > 0)
		free(spare_clients.c[--spare_clients.n]);
}

/*
 * conn7: a connection's cancel key from a per-thread batch of random bytes:
 * one getrandom() per 32 connections, not one each. A key is as
 * unpredictable as before; its bytes are wiped from the batch once taken.
 */
#define CANCEL_KEYS_BATCH 32

static bool client_new_cancel_key(uint32_t key[2])
{
	static __thread struct {
		uint32_t v[2 * CANCEL_KEYS_BATCH];
		int left;	/* keys not taken yet */
	} keys;
	if (keys.left == 0) {
		if (!util_random_bytes(keys.v, sizeof(keys.v)))
			return false;
		keys.left = CANCEL_KEYS_BATCH;
	}
	keys.left--;
	uint32_t *k = &keys.v[2 * keys.left];
	key[0] = k[0];
	key[1] = k[1];
	k[0] = k[1] = 0;	/* (a static: the stores stay) */
	return true;
}

/*
 * conn8: the first read of a plain connection goes to the stack. libpq sends
 * its StartupMessage with the connection, so it is nearly always there
 * whole when the connection is accepted: parsed in place, only what follows
 * it (if anything) enters the input, before the answer, which may read on.
 * A packet in pieces, or larger than the buffer, takes the usual way.
 */
#define FIRST_READ_MAX 1024

static void client_take_first_read(Client *c, const uint8_t *buf, size_t n)
{
	uint32_t len;
	if (proto_startup_length(buf, n, &len) == FRAME_OK && len <= n) {
		StartupPacket sp;
		char err[256];
		bool parsed;
		if (!client_take_first_packet(c, buf, len, &sp, &parsed, err, sizeof(err)))
			return;
		if (n > len && evbuffer_add(c->in.buf, buf + len, n - len) != 0) {
			client_disconnect(c, NULL, "out of memory reading the startup packet");
			return;
		}
		if (!client_answer_first_packet(c, &sp, parsed, err))
			return;
	} else if (evbuffer_add(c->in.buf, buf, n) != 0) {
		client_disconnect(c, NULL, "out of memory reading the startup packet");
		return;
	}
	client_process_input(c);
}

static void client_read_at_accept(Client *c)
{
	if (c->proxy_pending || moat->state == MOAT_SUSPENDED) {
		msgio_reader_try_now(&c->in);	/* (not reading while suspended) */
		return;
	}
	uint8_t buf[FIRST_READ_MAX];
	ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;	/* the reader's event waits for it */
	if (n <= 0) {
		client_event_cb(NULL, BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR), c);
		return;
	}
	Worker *w = c->worker;
	util_clock_scope_begin();
	msgio_flusher_begin(&w->flusher);
	client_take_first_read(c, buf, (size_t)n);
	msgio_flusher_end(&w->flusher);	/* c may be gone after this */
	util_clock_scope_end();
}

void client_accept(Worker *w, int fd, const struct sockaddr *sa, socklen_t salen, bool is_unix)
{
	Client *c = client_alloc();
	c->fd = fd;
	c->worker = w;
	c->id = ++w->next_id;
	peer_from_sockaddr(&c->remote, sa);
	c->remote.is_unix = is_unix;
	if (is_unix)
		snprintf(c->remote.host, sizeof(c->remote.host), "unix");
	c->connect_time = util_now_wall();
	c->request_time = util_now_cached();
	if (moat->cfg->client_login_timeout > 0)
		c->login_deadline = c->request_time + moat->cfg->client_login_timeout;
	client_expect_proxy_header(c, sa);
	list_init(&c->head);
	list_append(&w->all_clients, &c->all_head);
	client_set_state(c, CL_LOGIN);
	c->counted = true;
	moat->client_count++;
	moat->stats.clients_accepted++;
	uint32_t key[2] = { 0, 0 };
	bool keyed = client_new_cancel_key(key);
	c->cancel_pid = key[0];
	c->cancel_key = key[1];
	if (!keyed) {
		evutil_closesocket(fd);
		c->fd = -1;
		client_set_state(c, CL_FREE);
		client_free_later(c);
		return;
	}
	if (!client_attach_io(c)) {
		client_disconnect(c, NULL, "could not create the read event");
		return;
	}
	client_read_at_accept(c);
}

/* Called from the worker's deferred-free event: the client's callbacks are done. */
void client_free(Client *c)
{
	list_del(&c->head);
	list_del(&c->all_head);
	varcache_free(&c->vars);
	if (c->user_name != c->names)
		free(c->user_name);	/* db_name with it (client_apply_startup_params) */
	free(c->jwt_claims);
	free(c->jwt_role);
	admin_ext_free(c);
	if (c->queried) {
		free(c->queried->name);
		util_free_secret(c->queried->secret);
		free(c->queried);
	}
	client_release_memory(c);
}
