#include "tls.h"
#include "log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* A database with its own `tls:` gets its own context, shared by equal settings. */
typedef struct DbTls {
	char *key;		/* mode, ca, cert and key joined: what makes two entries equal */
	TlsMode mode;
	SSL_CTX *ctx;		/* NULL for disable */
	struct DbTls *next;
} DbTls;

struct TlsContexts {
	TlsMode client_mode;
	SSL_CTX *client_ctx;	/* accepts clients; NULL when client TLS is disabled */
	TlsMode server_mode;
	SSL_CTX *server_ctx;	/* connects to servers; NULL when disabled */
	DbTls *dbs;
};

/* Process-wide like the configuration it is built from; replaced whole on reload. */
static TlsContexts *current;

static const char *const mode_names[] = { "disable", "allow", "prefer", "require", "verify-ca",
					  "verify-full" };

bool tls_mode_parse(const char *s, TlsMode *out)
{
	if (!s || !*s) {
		*out = TLS_DISABLE;
		return true;
	}
	for (size_t i = 0; i < ARRAY_SIZE(mode_names); i++) {
		if (strcasecmp(s, mode_names[i]) == 0) {
			*out = (TlsMode)i;
			return true;
		}
	}
	return false;
}

const char *tls_mode_name(TlsMode m)
{
	return (size_t)m < ARRAY_SIZE(mode_names) ? mode_names[m] : "?";
}

/* ---- protocols and ciphers ------------------------------------------- */

enum { P_TLS10 = 1, P_TLS11 = 2, P_TLS12 = 4, P_TLS13 = 8, P_ALL = 15, P_SECURE = 12 };

static int protocol_bits(const char *tok)
{
	static const struct {
		const char *name;
		int bits;
	} names[] = {
		{ "tlsv1", P_TLS10 },	{ "tlsv1.0", P_TLS10 }, { "tlsv1.1", P_TLS11 },
		{ "tlsv1.2", P_TLS12 }, { "tlsv1.3", P_TLS13 }, { "all", P_ALL },
		{ "legacy", P_ALL },	{ "secure", P_SECURE }, { "default", P_SECURE },
	};
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (strcasecmp(tok, names[i].name) == 0)
			return names[i].bits;
	return 0;
}

bool tls_parse_protocols(const char *s, int *min_version, int *max_version, char *err,
			 size_t errlen)
{
	static const int versions[] = { TLS1_VERSION, TLS1_1_VERSION, TLS1_2_VERSION, TLS1_3_VERSION };
	int set = 0;
	char tok[32];
	const char *p = s && *s ? s : "secure";
	while (*p) {
		size_t n = strcspn(p, ", :\t");
		if (n > 0) {
			bool negate = *p == '!' || *p == '-';
			size_t skip = negate || *p == '+' ? 1 : 0;
			if (n - skip >= sizeof(tok) || n == skip) {
				snprintf(err, errlen, "invalid TLS protocol list: %s", s);
				return false;
			}
			memcpy(tok, p + skip, n - skip);
			tok[n - skip] = '\0';
			int bits = protocol_bits(tok);
			if (!bits) {
				snprintf(err, errlen, "unknown TLS protocol '%s' in '%s'", tok, s);
				return false;
			}
			set = negate ? set & ~bits : set | bits;
		}
		p += n;
		if (*p)
			p++;
	}
	if (!set) {
		snprintf(err, errlen, "no TLS protocol left in '%s'", s);
		return false;
	}
	int lo = 0, hi = 3;
	while (!(set & (1 << lo)))
		lo++;
	while (!(set & (1 << hi)))
		hi--;
	*min_version = versions[lo];
	*max_version = versions[hi];
	return true;
}

const char *tls_cipher_list(const char *name)
{
	static const struct {
		const char *name;
		const char *list;
	} sets[] = {
		{ "fast", "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL" },
		{ "secure", "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL" },
		{ "default", "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL" },
		{ "normal", "HIGH:!aNULL" },
		{ "compat", "HIGH:!aNULL" },
		{ "legacy", "ALL:!aNULL:!eNULL" },
		{ "insecure", "ALL:!aNULL:!eNULL" },
		{ "all", "ALL:!aNULL:!eNULL" },
	};
	if (!name || !*name)
		return sets[0].list;
	for (size_t i = 0; i < ARRAY_SIZE(sets); i++)
		if (strcasecmp(name, sets[i].name) == 0)
			return sets[i].list;
	return name;
}

/* ---- contexts --------------------------------------------------------- */

/* The first error queued is the cause ("No such file or directory"); later ones are context. */
static void ssl_errors(char *buf, size_t len)
{
	unsigned long first = ERR_get_error();
	if (first) {
		const char *reason = ERR_reason_error_string(first);
		if (reason)
			snprintf(buf, len, "%s", reason);
		else
			ERR_error_string_n(first, buf, len);
	} else {
		snprintf(buf, len, "unknown TLS error");
	}
	ERR_clear_error();
}

typedef struct CtxSpec {
	const char *what;	/* for errors: "client_tls", "database 'x' tls" */
	bool accept;		/* pgmoat is the TLS server (client side) */
	TlsMode mode;
	const char *ca, *cert, *key, *protocols, *ciphers;
} CtxSpec;

static bool ctx_load_files(SSL_CTX *ctx, const CtxSpec *sp, char *err, size_t errlen)
{
	char ssl_err[256];
	bool have_cert = sp->cert && *sp->cert, have_key = sp->key && *sp->key;
	if (have_cert != have_key) {
		snprintf(err, errlen, "%s: a certificate needs its key and a key its certificate", sp->what);
		return false;
	}
	if (have_cert && SSL_CTX_use_certificate_chain_file(ctx, sp->cert) != 1) {
		ssl_errors(ssl_err, sizeof(ssl_err));
		snprintf(err, errlen, "%s: cannot load certificate %s: %s", sp->what, sp->cert, ssl_err);
		return false;
	}
	if (have_key && (SSL_CTX_use_PrivateKey_file(ctx, sp->key, SSL_FILETYPE_PEM) != 1 ||
			 SSL_CTX_check_private_key(ctx) != 1)) {
		ssl_errors(ssl_err, sizeof(ssl_err));
		snprintf(err, errlen, "%s: cannot load key %s: %s", sp->what, sp->key, ssl_err);
		return false;
	}
	bool verify = sp->mode >= TLS_VERIFY_CA;
	if (sp->ca && *sp->ca) {
		if (SSL_CTX_load_verify_locations(ctx, sp->ca, NULL) != 1) {
			ssl_errors(ssl_err, sizeof(ssl_err));
			snprintf(err, errlen, "%s: cannot load CA file %s: %s", sp->what, sp->ca, ssl_err);
			return false;
		}
	} else if (verify && sp->accept) {
		snprintf(err, errlen, "%s: sslmode %s needs a CA file to verify client certificates",
			 sp->what, tls_mode_name(sp->mode));
		return false;
	} else if (verify) {
		SSL_CTX_set_default_verify_paths(ctx);
	}
	if (sp->accept && !have_cert) {
		snprintf(err, errlen, "%s: sslmode %s needs a certificate and key file", sp->what,
			 tls_mode_name(sp->mode));
		return false;
	}
	return true;
}

static SSL_CTX *ctx_build(const CtxSpec *sp, char *err, size_t errlen)
{
	if (sp->mode == TLS_DISABLE)
		return NULL;
	ERR_clear_error();	/* ssl_errors() names the first queued: it must be this build's */
	char ssl_err[256];
	int min_v, max_v;
	if (!tls_parse_protocols(sp->protocols, &min_v, &max_v, ssl_err, sizeof(ssl_err))) {
		snprintf(err, errlen, "%s: %s", sp->what, ssl_err);
		return NULL;
	}
	SSL_CTX *ctx = SSL_CTX_new(sp->accept ? TLS_server_method() : TLS_client_method());
	if (!ctx) {
		ssl_errors(ssl_err, sizeof(ssl_err));
		snprintf(err, errlen, "%s: %s", sp->what, ssl_err);
		return NULL;
	}
	/* No renegotiation, no resumption state to keep; an EOF without close_notify is an EOF. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION |
				 SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	/* Fewer reads per record; what it buffers is drained by msgio (SSL_has_pending). */
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	bool ok = SSL_CTX_set_min_proto_version(ctx, min_v) == 1 &&
		  SSL_CTX_set_max_proto_version(ctx, max_v) == 1;
	if (!ok)
		snprintf(err, errlen, "%s: protocol range not supported", sp->what);
	if (ok && SSL_CTX_set_cipher_list(ctx, tls_cipher_list(sp->ciphers)) != 1) {
		ssl_errors(ssl_err, sizeof(ssl_err));
		snprintf(err, errlen, "%s: invalid cipher list '%s': %s", sp->what,
			 sp->ciphers ? sp->ciphers : "", ssl_err);
		ok = false;
	}
	ok = ok && ctx_load_files(ctx, sp, err, errlen);
	if (ok && sp->mode >= TLS_VERIFY_CA)
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (sp->accept ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
				   NULL);
	else if (ok)
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	if (!ok) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static char *db_tls_key(const DbConfig *d)
{
	return xasprintf("%s\n%s\n%s\n%s", d->tls_sslmode ? d->tls_sslmode : "",
			 d->tls_ca_file ? d->tls_ca_file : "", d->tls_cert_file ? d->tls_cert_file : "",
			 d->tls_key_file ? d->tls_key_file : "");
}

static bool db_has_tls(const DbConfig *d)
{
	return d->tls_sslmode || d->tls_ca_file || d->tls_cert_file || d->tls_key_file;
}

static DbTls *db_tls_find(const TlsContexts *t, const DbConfig *d)
{
	char *key = db_tls_key(d);
	DbTls *found = NULL;
	for (DbTls *e = t->dbs; e && !found; e = e->next)
		if (strcmp(e->key, key) == 0)
			found = e;
	free(key);
	return found;
}

/* A database's own `tls:`: unset fields come from the server_tls_* keys. */
static bool db_tls_build(TlsContexts *t, const Config *cfg, const DbConfig *d, char *err,
			 size_t errlen)
{
	if (!db_has_tls(d) || db_tls_find(t, d))
		return true;
	char what[128];
	snprintf(what, sizeof(what), "database '%s' tls", d->name);
	CtxSpec sp = { .what = what, .accept = false, .protocols = cfg->server_tls_protocols,
		       .ciphers = cfg->server_tls_ciphers,
		       .ca = d->tls_ca_file ? d->tls_ca_file : cfg->server_tls_ca_file,
		       .cert = d->tls_cert_file ? d->tls_cert_file : cfg->server_tls_cert_file,
		       .key = d->tls_key_file ? d->tls_key_file : cfg->server_tls_key_file };
	const char *mode = d->tls_sslmode ? d->tls_sslmode : cfg->server_tls_sslmode;
	if (!tls_mode_parse(mode, &sp.mode)) {
		snprintf(err, errlen, "%s: unknown mode '%s'", what, mode);
		return false;
	}
	SSL_CTX *ctx = ctx_build(&sp, err, errlen);
	if (!ctx && sp.mode != TLS_DISABLE)
		return false;
	DbTls *e = xcalloc(1, sizeof(*e));
	e->key = db_tls_key(d);
	e->mode = sp.mode;
	e->ctx = ctx;
	e->next = t->dbs;
	t->dbs = e;
	return true;
}

TlsContexts *tls_contexts_build(const Config *cfg, char *err, size_t errlen)
{
	TlsContexts *t = xcalloc(1, sizeof(*t));
	CtxSpec client = { "client_tls", true, TLS_DISABLE, cfg->client_tls_ca_file,
			   cfg->client_tls_cert_file, cfg->client_tls_key_file,
			   cfg->client_tls_protocols, cfg->client_tls_ciphers };
	CtxSpec server = { "server_tls", false, TLS_DISABLE, cfg->server_tls_ca_file,
			   cfg->server_tls_cert_file, cfg->server_tls_key_file,
			   cfg->server_tls_protocols, cfg->server_tls_ciphers };
	bool ok = true;
	if (!tls_mode_parse(cfg->client_tls_sslmode, &client.mode) ||
	    !tls_mode_parse(cfg->server_tls_sslmode, &server.mode)) {
		snprintf(err, errlen, "unknown TLS sslmode");
		ok = false;
	}
	t->client_mode = client.mode;
	t->server_mode = server.mode;
	if (ok && client.mode != TLS_DISABLE)
		ok = (t->client_ctx = ctx_build(&client, err, errlen)) != NULL;
	if (ok && server.mode != TLS_DISABLE)
		ok = (t->server_ctx = ctx_build(&server, err, errlen)) != NULL;
	for (const DbConfig *d = cfg->databases; ok && d; d = d->next)
		ok = db_tls_build(t, cfg, d, err, errlen);
	if (!ok) {
		tls_contexts_free(t);
		return NULL;
	}
	return t;
}

void tls_contexts_free(TlsContexts *t)
{
	if (!t)
		return;
	SSL_CTX_free(t->client_ctx);
	SSL_CTX_free(t->server_ctx);
	DbTls *e = t->dbs;
	while (e) {
		DbTls *next = e->next;
		SSL_CTX_free(e->ctx);
		free(e->key);
		free(e);
		e = next;
	}
	free(t);
}

void tls_contexts_install(TlsContexts *t)
{
	tls_contexts_free(current);
	current = t;
}

void tls_shutdown(void)
{
	tls_contexts_install(NULL);
}

/* ---- client side ------------------------------------------------------ */

TlsMode tls_client_mode(void)
{
	return current ? current->client_mode : TLS_DISABLE;
}

bool tls_client_accepts(void)
{
	return current && current->client_ctx;
}

SSL *tls_client_ssl_new(void)
{
	return tls_client_accepts() ? SSL_new(current->client_ctx) : NULL;
}

/* ---- server side ------------------------------------------------------ */

static const DbTls *db_entry(const DbConfig *db)
{
	return current && db && db_has_tls(db) ? db_tls_find(current, db) : NULL;
}

TlsMode tls_server_mode(const DbConfig *db)
{
	const DbTls *e = db_entry(db);
	if (e)
		return e->mode;
	return current ? current->server_mode : TLS_DISABLE;
}

SSL *tls_server_ssl_new(const DbConfig *db, const char *host)
{
	const DbTls *e = db_entry(db);
	SSL_CTX *ctx = e ? e->ctx : current ? current->server_ctx : NULL;
	TlsMode mode = tls_server_mode(db);
	if (!ctx)
		return NULL;
	SSL *ssl = SSL_new(ctx);
	if (!ssl || !host)
		return ssl;
	unsigned char addr[sizeof(struct in6_addr)];
	bool is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
	bool ok = true;
	/* SNI carries names only (RFC 6066), as libpq does. */
	if (!is_ip)
		ok = SSL_set_tlsext_host_name(ssl, host) == 1;
	if (ok && mode == TLS_VERIFY_FULL) {
		X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
		ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, host) == 1 : SSL_set1_host(ssl, host) == 1;
	}
	if (!ok) {
		SSL_free(ssl);
		return NULL;
	}
	return ssl;
}

/* ---- connections ------------------------------------------------------ */

struct bufferevent *tls_wrap_socket(struct bufferevent *plain, SSL *ssl, bool accept)
{
	struct event_base *base = bufferevent_get_base(plain);
	evutil_socket_t fd = bufferevent_getfd(plain);
	/* Detach the socket so freeing the plaintext bufferevent leaves it open. */
	bufferevent_setfd(plain, -1);
	bufferevent_free(plain);
	return tls_wrap_fd(base, fd, ssl, accept);
}

struct bufferevent *tls_wrap_fd(struct event_base *base, int fd, SSL *ssl, bool accept)
{
	struct bufferevent *bev = bufferevent_openssl_socket_new(
		base, fd, ssl, accept ? BUFFEREVENT_SSL_ACCEPTING : BUFFEREVENT_SSL_CONNECTING,
		BEV_OPT_CLOSE_ON_FREE);
	if (!bev) {
		SSL_free(ssl);
		evutil_closesocket(fd);
		return NULL;
	}
	/* Peers (psql among them) often close without close_notify: an EOF, not an error. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

bool tls_peer_common_name(SSL *ssl, char *buf, size_t len)
{
	if (!ssl || tls_client_mode() < TLS_VERIFY_CA || SSL_get_verify_result(ssl) != X509_V_OK)
		return false;
	X509 *cert = SSL_get0_peer_certificate(ssl);
	if (!cert)
		return false;
	int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, (int)len);
	/* A CN with an embedded NUL or cut short names nobody. */
	return n > 0 && (size_t)n < len && strlen(buf) == (size_t)n;
}

void tls_close_notify(SSL *ssl)
{
	if (!ssl || !SSL_is_init_finished(ssl))
		return;
	(void)SSL_shutdown(ssl);
	ERR_clear_error();
}

/*
 * SSL_get_error() reads the error queue first, so OpenSSL asks for
 * ERR_clear_error() before every I/O call: 16 slots cleared, ~840
 * instructions, four times a transaction. What SSL_get_error() decides
 * after the queue (want read/write and the BIO's retry flag) does not need
 * it, and a stale entry cannot turn a would-block into a failure here.
 */
int tls_io_result(SSL *ssl, int n)
{
	if (n > 0)
		return SSL_ERROR_NONE;
	if (SSL_want_read(ssl) && BIO_should_read(SSL_get_rbio(ssl)))
		return SSL_ERROR_WANT_READ;
	if (SSL_want_write(ssl) && BIO_should_write(SSL_get_wbio(ssl)))
		return SSL_ERROR_WANT_WRITE;
	int e = SSL_get_error(ssl, n);
	ERR_clear_error();	/* nobody reads it: bufferevent_openssl keeps its own */
	return e;
}

SSL *tls_get_ssl(struct bufferevent *bev)
{
	return bev ? bufferevent_openssl_get_ssl(bev) : NULL;
}

void tls_error_describe(struct bufferevent *bev, char *buf, size_t len)
{
	unsigned long first = bev ? bufferevent_get_openssl_error(bev) : 0;
	while (bev && bufferevent_get_openssl_error(bev))
		;	/* drained: the first is the cause */
	SSL *ssl = tls_get_ssl(bev);
	long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
	const char *reason = first ? ERR_reason_error_string(first) : NULL;
	if (vr != X509_V_OK)
		snprintf(buf, len, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
	else if (reason)
		snprintf(buf, len, "%s", reason);
	else if (first)
		ERR_error_string_n(first, buf, len);
	else
		snprintf(buf, len, "connection closed during the TLS handshake");
}

void tls_describe(SSL *ssl, char *buf, size_t len)
{
	if (!ssl || len == 0) {
		if (len)
			buf[0] = '\0';
		return;
	}
	int n = snprintf(buf, len, "%s/%s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
	int group = SSL_get_negotiated_group(ssl);
	const char *gname = group > 0 ? OBJ_nid2sn(group) : NULL;
	if (gname && n > 0 && (size_t)n < len)
		snprintf(buf + n, len - (size_t)n, "/ECDH=%s", gname);
}
