/*
 * Approvals: statements a policy held (moat.hold) wait here for a reviewer.
 *
 * A held client stops processing its input: the held message (a Query, or a
 * Parse with the rest of its batch still unread behind it) is kept here, and
 * the client gets a NoticeResponse naming the approval id. Outside a
 * transaction block in transaction pooling it holds no server while it waits.
 *
 * A ruling (APPROVE, DENY, the approvals.timeout, a CancelRequest) puts the
 * message back at the front of the client's input together with the ruling,
 * and the client carries on: the message is judged again through the normal
 * path, where enforce.c applies the ruling (approved: a new hold of the same
 * message becomes an allow; denied: the denial machinery answers it, so both
 * sides agree on the transaction state). A client that leaves while held is
 * forgotten: its message is freed and never runs.
 *
 * The queue is process-wide (one worker for now; the admin console and the
 * HTTP API run on that worker's thread).
 */
#ifndef PGMOAT_APPROVALS_H
#define PGMOAT_APPROVALS_H

#include "pgmoat.h"
#include "policy.h"

#define APPROVALS_DEFAULT_TIMEOUT (10 * 60 * USEC_PER_SEC)

typedef struct Approval Approval;

/* The reviewer's decision for a client's held message, consumed when it is judged again. */
typedef struct ApprovalRuling {
	uint8_t *msg;		/* the held message, whole (owned) */
	size_t len;
	bool approved;
	char sqlstate[6];	/* denied: 42501, or 57014 when canceled */
	char *message;		/* denied: the client's error text (owned) */
	char *reviewer;		/* for the statement log (owned) */
	uint64_t id;		/* the approval it settles */
} ApprovalRuling;

/* One row of SHOW APPROVALS / GET /api/approvals; strings borrowed until the loop runs again. */
typedef struct ApprovalInfo {
	uint64_t id;
	const char *replica;	/* NULL: held here; else the replica holding it (store: postgres) */
	uint64_t client_id;
	const char *user;
	const char *database;
	const char *statement;	/* normalized (literals removed) */
	const char *reason;
	const char *policy;
	const char *protocol;	/* "simple" | "extended" */
	uint64_t server_id;	/* the server it keeps while waiting (in a transaction); 0: none */
	usec_t held_at;		/* wall clock */
	usec_t waited;		/* usec so far */
	usec_t timeout_at;	/* wall clock */
} ApprovalInfo;

typedef enum {
	APPROVAL_OK,		/* decided here */
	APPROVAL_FORWARDED,	/* held by another replica: the decision was sent to it */
	APPROVAL_NOT_FOUND,
} ApprovalResult;

/*
 * Hold c's message (msg, total bytes, header included) per decision d: keep
 * a copy, tell the client, start the timeout. c must not process input until
 * a ruling comes (client_forward checks c->held).
 */
void approvals_hold(Client *c, Server *s, const uint8_t *msg, size_t total,
		    const PolicyDecision *d);

/* The reviewer API (admin console, HTTP): reviewer names who decided, for logs and audit. */
ApprovalInfo *approvals_list(int *count);	/* free() the array, not the strings */
ApprovalResult approvals_approve(uint64_t id, const char *reviewer);
ApprovalResult approvals_deny(uint64_t id, const char *reviewer, const char *reason);

/* A CancelRequest for a held client: denied as a canceled query (57014). */
void approvals_cancel(Client *c);
/* c is closing: forget its approval and ruling; the held message never runs. */
void approvals_forget(Client *c);

/* The ruling for msg, if c has one: ownership passes to the caller (approvals_ruling_free). */
ApprovalRuling *approvals_take_ruling(Client *c, const uint8_t *msg, size_t total);
void approvals_ruling_free(ApprovalRuling *r);

/* The server finished streaming a message to c: a deferred hold notice may go now. */
void approvals_flush_notice(Client *c);


/*
 * The approval event (DESIGN.md "Contract: audit record"): one per ruling.
 * decision: "approved", "rejected", "timeout", "canceled" or "abandoned"
 * (the client left). The audit writer hooks in here.
 */
typedef struct ApprovalEvent {
	uint64_t id;
	struct Client *client;	/* the holder, still connected */
	uint64_t client_id;
	const char *user;
	const char *database;
	const char *statement;
	const char *reviewer;	/* NULL for timeout, cancel, abandon */
	const char *decision;
	const char *reason;	/* deny reason; may be NULL */
	int64_t waited_ms;
} ApprovalEvent;
void approvals_emit_event(const ApprovalEvent *ev);

#endif
