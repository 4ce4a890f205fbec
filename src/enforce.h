/*
 * Policies on the wire: the worker's policy engine, each client's policy
 * session, and the verdict on every Query, Parse and FunctionCall.
 *
 * A denied message is not answered by pgmoat itself: it is replaced by a
 * reference to a prepared statement that cannot exist (a per-process marker
 * name), so PostgreSQL fails it at exactly that point of the stream, with
 * exactly its own consequences: a transaction block is aborted, and in the
 * extended protocol everything up to Sync is discarded. On the way back the
 * server's error for the marker is replaced by the policy's 42501 error.
 * Client and server therefore always agree on the transaction state.
 */
#ifndef PGMOAT_ENFORCE_H
#define PGMOAT_ENFORCE_H

#include "pgmoat.h"
#include "policy.h"
#include "proto.h"

/*
 * Build the engine for cfg (NULL when it has no policy scripts). False with
 * "file:line: message" in err when a policy does not compile, or uses what
 * the wire cannot enforce yet (masks): pgmoat then refuses to run with it.
 */
bool enforce_engine_build(const Config *cfg, PolicyEngine **out, char *err, size_t errlen) MUST_CHECK;

/* Install an engine (owned from now on) in the worker; sessions move to it. */
void enforce_install(Worker *w, PolicyEngine *e);
void enforce_shutdown(Worker *w);
static inline bool enforce_active(const Worker *w) { return w->policy != NULL; }

/* After authentication: open the client's policy session; false = denied (client closed). */
bool enforce_session_open(Client *c) MUST_CHECK;
void enforce_session_close(Client *c);

/* Does this client message carry SQL (or a function call) that policies judge? */
static inline bool enforce_judges(uint8_t type) { return type == 'Q' || type == 'P' || type == 'F'; }

typedef enum { ENFORCE_NOW, ENFORCE_WAIT } EnforceReady;
/*
 * May a message of this type be judged now? WAIT: an earlier statement still
 * in flight may change how the server lexes SQL; judge once it has settled.
 */
EnforceReady enforce_ready(Client *c, Server *s, uint8_t type);
/* A ReadyForQuery came: with nothing in flight, the reported settings are current. */
void enforce_settled(Server *s);

typedef struct Judged {
	uint8_t *send;		/* what to send: the original message, a rewrite, the marker, or
				 * (answer set) the client's answer */
	size_t len;
	bool owned;		/* send was allocated here: free it after use */
	bool answer;		/* denied with no server: send goes to the client itself */
	bool discard_until_sync;	/* ... and a Parse was denied: drop up to Sync, then answer */
	bool may_change_lexing;	/* allowed text that may change how the server lexes SQL */
	bool held;		/* held for approval (approvals.c keeps it): send nothing */
	/* (policy cost 4) an allowed Query or Parse whose text (send's) the judge
	 * classified: no statement leaves session state. The session-state check
	 * would parse it again to learn the same (Client.judged_stateless). */
	bool stateless;
} Judged;

/*
 * Judge one whole client message (header included), before it is accounted
 * on s. With a server (s), a denial travels as the marker; with none (the
 * client holds no server and is outside a transaction), pgmoat answers the
 * client itself, so a denial never waits for a pooled connection. A held
 * message (held set) is kept by approvals.c: nothing goes anywhere yet.
 */
void enforce_judge(Client *c, Server *s, const uint8_t *msg, size_t total, Judged *out);

/*
 * Masking's statement guard (maskguard.c) applied to a decision that lets sql
 * through (allow or rewrite; sql is what would be sent): a denial replaces the
 * decision (DENY enforced even in dry_run, policy "(masking)"). views: names of
 * views over protected columns (NULL: none known). Returns whether sql touches
 * a protected table. No-op without P.masks keys. Also used by pgmoat try.
 * hints (may be NULL) gets a set operation's positions to mask (maskguard.h).
 */
bool enforce_mask_guard(PolicyEngine *e, const char *sql, const StrList *views, bool views_unknown,
			PolicyDecision *d, StrList *hints);

/* A message too large to judge (not accounted yet): the denial marker replaces it. */
void enforce_deny_oversized(Client *c, Server *s, uint8_t type, PktBuf *pb);

/*
 * Fail one message in-stream with (sqlstate, message), policies or not: the
 * marker goes to s in its place (type 'Q' for a Query, 'P' for any extended
 * message). Used by the transaction pooling checks (sessionstate.c,
 * prepared.c). False when the marker could not be built.
 */
bool enforce_refuse(Server *s, uint8_t type, const char *sqlstate, const char *message,
		    PktBuf *pb) MUST_CHECK;

/* Server side: is this ErrorResponse our marker's? Then pb gets the policy's error instead. */
bool enforce_rewrite_error(Server *s, const uint8_t *body, size_t len, PktBuf *pb);
/* A ReadyForQuery arrived: denials of finished batches are forgotten. */
void enforce_batch_done(Server *s);
/* The server is gone or released: forget its pending denials. */
void enforce_forget(Server *s);

#endif
