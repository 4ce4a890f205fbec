/*
 * Protocol-level prepared statements in transaction (and statement) pooling,
 * as pgbouncer 1.21's max_prepared_statements: a client's named Parse is
 * remembered (client name -> statement definition) and the statement is
 * prepared, under a pgmoat-owned name (pgmoat_ps_<n>), on whichever server
 * connection serves a Bind or Describe of it. Definitions (query text and
 * parameter types) are shared: clients preparing the same text use the same
 * server-side statement.
 *
 * On the way to the server: Parse of a definition the server already has is
 * answered with a ParseComplete of our own; a Bind/Describe of a statement the
 * server lacks is preceded by an injected Close+Parse whose replies are
 * swallowed; Close of a client name is answered locally (the server-side
 * statement may be shared); each server keeps at most max_prepared_statements
 * (LRU; the oldest is closed to make room). Unnamed statements, portals and
 * names the client never prepared pass unchanged.
 *
 * On the way back every reply is matched to the request it answers (a queue
 * per server, in send order), so local answers are placed exactly where the
 * server's would have been, even in pipelines; an error ends its request and
 * everything up to the next Sync, and a Parse that failed or was skipped is
 * forgotten (client name and server entry), as PostgreSQL forgets it.
 *
 * Policies (enforce.c) judge the Parse before this layer sees it: what is
 * registered is what was allowed (or the rewrite), and a denied Parse is not
 * registered at all, so later Binds cannot run unjudged text.
 */
#ifndef PGMOAT_PREPARED_H
#define PGMOAT_PREPARED_H

#include "pgmoat.h"

#define PREPARED_PREFIX "pgmoat_ps_"	/* server-side names; refused from clients */
#define PREPARED_NAME_MAX 256	/* longer client names pass through untracked */
#define PREPARED_SERVER_NAME_MAX 40	/* PREPARED_PREFIX and a 64-bit number, with NUL */

/* Decide at login whether this client's statements are tracked (pool mode, config). */
void prepared_client_init(Client *c);
void prepared_client_free(Client *c);
void prepared_server_free(Server *s);
void prepared_shutdown(Worker *w);

/* A server was just linked to c: its reply queue starts empty. */
void prepared_link(Client *c, Server *s);

/*
 * Is this link tracked? Not while policies mask results: masking injects its
 * own Describe before each Execute, which the statement layer's reply queue
 * does not account for, so the two never run on one link (doc/pooling.md).
 */
static inline bool prepared_on(const Client *c)
{
	return c->ps_enabled && !c->worker->masks_active;
}

/* Must the client message of this type be read whole before it is sent (Parse, Describe, Close, Query)? */
bool prepared_wants_whole(uint8_t type);

/*
 * May this whole client message (read in place) go unchanged, noted with
 * prepared_track: a Parse, Bind, Describe or Close of the unnamed statement
 * (or a portal), a Query without DEALLOCATE or DISCARD, anything else?
 * False: it takes its step (prepared_send, prepared_forward_bind).
 */
bool prepared_passes(const uint8_t *msg, size_t len);

/* Send one whole client message to s, rewritten as needed, and note the reply it expects. */
void prepared_send(Client *c, Server *s, const uint8_t *msg, size_t len);

/* A message streamed unchanged (any type but those above, or too large): note its reply. */
void prepared_track(Server *s, uint8_t type);

typedef enum {
	PREPARED_BIND_WAIT,		/* more bytes are needed */
	PREPARED_BIND_PASS,		/* stream it unchanged (noted here) */
	PREPARED_BIND_REWRITTEN,	/* head replaces its first bytes (noted here) */
	PREPARED_BIND_DONE,		/* refused: c->fwd_remaining/fwd_discard drop it */
} PreparedBind;

/* A Bind's rewritten head: portal and statement name (ours, short), which replace the first bytes. */
typedef struct PreparedBindHead {
	uint8_t data[PROTO_HEADER_LEN + 2 * (PREPARED_NAME_MAX + 1) + PREPARED_SERVER_NAME_MAX];
	size_t len;		/* bytes of data */
	size_t replaces;	/* bytes of the client's Bind it stands for */
	const uint8_t *chunk;	/* the input's first chunk, read in place (NULL: copied) */
	size_t chunk_len;
} PreparedBindHead;

/*
 * A Bind at the head of c's input: its statement name, rewritten from the
 * first bytes without reading the parameters (nothing is taken from the
 * input). The statement is made ready on s first (an injected Parse).
 * chunk (may be NULL): the input's first chunk, when the caller has it.
 */
PreparedBind prepared_forward_bind(Client *c, Server *s, const MsgHeader *h,
				   const struct evbuffer_iovec *chunk, PreparedBindHead *head);

/* A reply from s to its linked client: true when it is ours to swallow. */
bool prepared_response(Server *s, uint8_t type);
/* Between server messages: send the local answers that are due. */
void prepared_emit(Server *s);
/*
 * May a reply from s join a run of messages moved to the client together
 * (msgio_extend_run)? Not when a local answer is due before it or it is ours
 * to swallow; otherwise it is noted as prepared_response would, and *last is
 * set when a local answer is due right after it (the run must end there).
 */
bool prepared_pass(Server *s, uint8_t type, bool *last);
/* Is a local answer due before the next reply? */
bool prepared_emit_due(const Server *s);

/* server_reset_query (DISCARD ALL) was sent: the server has no statements left. */
void prepared_server_reset(Server *s);

#endif
