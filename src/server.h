/*
 * Server connections: connect, authenticate with credentials pgmoat holds,
 * and the server half of the data path. All teardown goes through
 * server_disconnect().
 */
#ifndef PGMOAT_SERVER_H
#define PGMOAT_SERVER_H

#include "pgmoat.h"
#include "pktbuf.h"

/* Open a new server connection for the pool (state SV_LOGIN). */
Server *server_connect(Pool *pool);
void server_set_state(Server *s, ServerState st);
void server_disconnect(Server *s, const char *fmt, ...) PRINTF_LIKE(2, 3);
bool server_send_pktbuf(Server *s, PktBuf *pb) MUST_CHECK;
/* Run an internal query whose replies are swallowed (reset, check, SET sync). */
bool server_send_internal_query(Server *s, const char *sql) MUST_CHECK;
/* Client-side output drained: resume reading this server. */
void server_resume_reading(Server *s);
/* Transaction (or statement) over and nothing in flight: give the server back. */
void server_release_if_done(Server *s);
/* Release the memory of a SV_FREE server (deferred free). */
void server_free(Server *s);
/* The secret servers of this pool log in with (NULL: none); also the masking catalog's. */
const char *server_pool_secret(const Pool *pool);

#endif
