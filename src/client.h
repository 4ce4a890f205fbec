/*
 * Client connections: startup, authentication, and the client half of the
 * data path. All teardown goes through client_disconnect().
 */
#ifndef PGMOAT_CLIENT_H
#define PGMOAT_CLIENT_H

#include "pgmoat.h"
#include "pktbuf.h"

/* Take ownership of an accepted socket. */
void client_accept(Worker *w, int fd, const struct sockaddr *sa, socklen_t salen, bool is_unix);

/* Move between state lists; the only way a client's state changes. */
void client_set_state(Client *c, ClientState st);

/*
 * The one teardown funnel. With sqlstate/fmt, the client first gets an
 * ErrorResponse (severity FATAL) and the socket closes once it is written.
 */
void client_disconnect(Client *c, const char *sqlstate, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* Queue bytes for the client. False when the builder failed (nothing queued). */
bool client_send_pktbuf(Client *c, PktBuf *pb) MUST_CHECK;
/* The address the client connected to (or the PROXY header says it did). */
const PeerAddr *client_local_addr(Client *c);
/* Send a non-fatal ErrorResponse followed by ReadyForQuery. */
void client_send_error_ready(Client *c, const char *sqlstate, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* The pool has a server for this waiting client: link and forward. */
void client_on_server_assigned(Client *c, Server *s);
/* The pool's welcome params are ready: finish the login of a CL_WAITING_LOGIN client. */
void client_finish_login(Client *c);
/* Server bytes were drained to this client's socket: resume reading the server. */
void client_resume_reading(Client *c);

/* auth_query answered: ok false when the lookup failed; secret NULL when no such user. */
void client_auth_query_done(Client *c, bool ok, const char *secret);

Client *client_find_by_cancel_key(Worker *w, uint32_t pid, uint32_t key);

/* Release the memory of a CL_FREE client whose socket is closed (deferred free). */
void client_free(Client *c);
/* Free the thread's spare Client memory (kept from freed clients for new ones). */
void client_release_thread_cache(void);

#endif
