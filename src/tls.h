/*
 * TLS on both sides of the proxy (OpenSSL through libevent's
 * bufferevent_openssl).
 *
 * The handshake is run by a bufferevent_openssl that takes over the socket
 * of the plaintext bufferevent once the SSLRequest exchange is done. After
 * the handshake the connection's data path stays in msgio (SSL_read and
 * SSL_write on the same SSL); the bufferevent only finishes writes that
 * would block, exactly as the socket bufferevent does for plaintext.
 *
 * Contexts (SSL_CTX) are process-wide, built from a Config: one to accept
 * clients, one to connect to servers, and one per database with its own
 * YAML `tls:`. A RELOAD builds a whole new set from the files (so a
 * certificate whose content changed at the same path is picked up) and
 * swaps it in only if every context built; connections keep the context
 * they were made with (each SSL holds a reference).
 */
#ifndef PGMOAT_TLS_H
#define PGMOAT_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <event2/bufferevent.h>
#include "config.h"

struct ssl_st;

/* pgbouncer's sslmode names, weakest first. */
typedef enum {
	TLS_DISABLE,
	TLS_ALLOW,
	TLS_PREFER,
	TLS_REQUIRE,
	TLS_VERIFY_CA,
	TLS_VERIFY_FULL,
} TlsMode;

/* NULL or "" is disable; false on an unknown name. */
bool tls_mode_parse(const char *s, TlsMode *out) MUST_CHECK;
const char *tls_mode_name(TlsMode m);

/*
 * client_tls_protocols / server_tls_protocols: "secure" (TLS 1.2 and 1.3),
 * "all", "legacy", "default", or a list of tlsv1.0 tlsv1.1 tlsv1.2 tlsv1.3
 * (comma, colon or space separated; a leading '!' removes one). The result
 * is the OpenSSL version range covering the chosen set.
 */
bool tls_parse_protocols(const char *s, int *min_version, int *max_version, char *err,
			 size_t errlen) MUST_CHECK;
/* pgbouncer's cipher set names (fast, normal, secure, default, all, ...) to an OpenSSL list. */
const char *tls_cipher_list(const char *name);

/* The contexts of one configuration. */
typedef struct TlsContexts TlsContexts;

/* Build every context cfg asks for, reading the files now. NULL and err on failure. */
TlsContexts *tls_contexts_build(const Config *cfg, char *err, size_t errlen);
void tls_contexts_free(TlsContexts *t);
/* Make t the set new connections use (the old set is freed; live connections keep theirs). */
void tls_contexts_install(TlsContexts *t);
void tls_shutdown(void);

/* Client side: the configured mode; whether an SSLRequest is answered 'S'. */
TlsMode tls_client_mode(void);
bool tls_client_accepts(void);
/* A new SSL for an accepted client; NULL when TLS is not configured. */
struct ssl_st *tls_client_ssl_new(void);

/* Server side: the mode for this database (its `tls:` or server_tls_sslmode). */
TlsMode tls_server_mode(const DbConfig *db);
/* A new SSL to connect to db at host (SNI and, for verify-full, the name checked). */
struct ssl_st *tls_server_ssl_new(const DbConfig *db, const char *host);

/*
 * Hand the socket of a plaintext bufferevent to a new TLS bufferevent that
 * runs the handshake (BEV_EVENT_CONNECTED when done). The plaintext one is
 * freed without closing the socket; the result owns socket and ssl. On
 * failure both are freed, the socket closed, and NULL returned.
 */
struct bufferevent *tls_wrap_socket(struct bufferevent *plain, struct ssl_st *ssl, bool accept);
/* The same for a socket that has no bufferevent yet (a client's bare socket). */
struct bufferevent *tls_wrap_fd(struct event_base *base, int fd, struct ssl_st *ssl, bool accept);

/*
 * auth_type=cert: the CommonName of the client's certificate, when the
 * certificate was verified (client_tls_sslmode verify-ca or verify-full).
 */
bool tls_peer_common_name(struct ssl_st *ssl, char *buf, size_t len) MUST_CHECK;

/* Best effort, never blocks: tell the peer we close (close_notify). NULL is a no-op. */
void tls_close_notify(struct ssl_st *ssl);

/*
 * SSL_get_error for the data path's SSL_read/SSL_write (ret n), without
 * needing the thread's error queue empty before the call: a read or write
 * that would block is told by the SSL's state and its BIO's retry flags
 * alone. Only a failure looks at the queue, which it leaves empty.
 */
int tls_io_result(struct ssl_st *ssl, int n);

/* The SSL of a bufferevent made by tls_wrap_socket, or NULL. */
struct ssl_st *tls_get_ssl(struct bufferevent *bev);

/* Why the handshake or the connection failed, for logs and errors. */
void tls_error_describe(struct bufferevent *bev, char *buf, size_t len);

/* SHOW CLIENTS/SERVERS `tls`: "TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519"; "" for none. */
void tls_describe(struct ssl_st *ssl, char *buf, size_t len);

#endif
