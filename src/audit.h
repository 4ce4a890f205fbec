/*
 * The audit trail (DESIGN.md "Contract: audit record", doc/audit.md).
 *
 * The event loop builds records (jansson objects) and only enqueues them; a
 * writer thread seals them into the hash chain (audit_record.h) and writes
 * each batch with write(2) (plus fdatasync with `fsync: true`). The queue is
 * bounded by audit.queue_size: past it, records are dropped and counted
 * (required: false), or new statements are refused (required: true) while the
 * records of statements already running are still kept.
 *
 * Statements are followed from the client's message to the server's answer:
 * each client keeps a FIFO of its statements in flight (simple Query
 * statements and extended-protocol Executes) with a marker per batch end
 * (Query, Sync, FunctionCall: each gets one ReadyForQuery). CommandComplete,
 * EmptyQueryResponse and PortalSuspended complete the oldest statement,
 * ErrorResponse fails it, ReadyForQuery ends the batch (what is left was
 * skipped by the server). A statement's record is enqueued before its
 * completion is passed on to the client.
 *
 * Threads: every function here but the writer runs on the event loop.
 */
#ifndef PGMOAT_AUDIT_H
#define PGMOAT_AUDIT_H

#include "pgmoat.h"
#include "audit_record.h"

typedef struct AuditSession AuditSession;

/* Start the writer for ac (nothing when the sink is none). False: cannot open the sink. */
bool audit_start(const AuditConfig *ac, char *err, size_t errlen) MUST_CHECK;
/* SIGHUP/RELOAD: adopt ac; the file is reopened either way (logrotate). */
void audit_reload(const AuditConfig *ac);
/* Drain the queue to the sink, stop the writer. */
void audit_stop(void);
bool audit_enabled(void);

/* Counters for tests and logs. */
typedef struct AuditStats {
	uint64_t enqueued;
	uint64_t written;
	uint64_t dropped;	/* queue full with required: false */
	uint64_t refused;	/* statements refused with required: true */
	int queued;
} AuditStats;
void audit_stats(AuditStats *out);

/* ---- sessions (client.c) ---- */

/*
 * After authentication, before policies' on_connect: session_start. False
 * with required: true while records cannot be kept: the caller refuses the
 * session (its records would pile up with nothing to show for them).
 */
bool audit_session_start(Client *c) MUST_CHECK;
/* The client is going: statements still in flight are recorded as unknown, then session_end. */
void audit_session_end(Client *c, const char *reason);

/*
 * May this client start a new statement? False with required: true while
 * records cannot be kept (queue full, sink failing); the caller refuses it.
 */
bool audit_admits(Client *c);

/* ---- statements ---- */

/*
 * enforce.c: a Query or Parse was judged (d). local: it was answered by
 * pgmoat and never reaches the server. A denied statement is recorded now.
 */
void audit_judged(Client *c, uint8_t type, const char *stmt_name, const char *sql,
		  const PolicyDecision *d, bool local);
/* enforce.c: a message too large to judge was denied unread. */
void audit_denied_unread(Client *c, uint8_t type, const char *reason);

/*
 * client.c: how many leading bytes of this unjudged message audit must see
 * before it is forwarded (0: none). Messages policies judge (Query, Parse,
 * FunctionCall under policies) reach audit through audit_judged instead.
 */
size_t audit_bytes_needed(const Client *c, uint8_t type, size_t total);
/* client.c: the message (its first `avail` of `total` bytes) goes to the server now. */
void audit_client_message(Client *c, const uint8_t *msg, size_t avail, size_t total);

/* server.c: does audit read this server message type (C, I, s, E, Z)? */
bool audit_reads_reply(const Client *c, uint8_t type);
/* server.c: a reply for c, before it is passed on to the client. */
void audit_server_reply(Client *c, uint8_t type, const uint8_t *body, size_t len);
/* server.c: the server entered COPY IN; n Syncs sent after it will get no ReadyForQuery. */
void audit_copy_in_ignored_syncs(Client *c, int n);

/*
 * The "hold" feature, once held statements wait instead of being denied: the
 * Query or Parse judged HOLD (d) was approved (it is sent to the server now:
 * its record waits for the answer, decision "approved") or rejected (recorded
 * now, decision "rejected", sqlstate 42501). Until then audit_judged records
 * HOLD as a denial; when holds go live, enforce_judge must not pass HOLD
 * verdicts to audit_judged, only to this function once decided.
 */
void audit_released(Client *c, uint8_t type, const char *stmt_name, const char *sql,
		    const PolicyDecision *d, bool approved);

/*
 * The "hold" feature: a reviewer decided on a held statement. decision is
 * "approved" or "rejected"; c may be NULL when the client has gone (the
 * session field is then session_id). waited_ms: how long the statement waited.
 */
void audit_approval(const char *approval_id, Client *c, const char *session_id,
		    const char *reviewer, const char *decision, int64_t waited_ms);

/* ---- command line (audit_cli.c) ---- */

/* pgmoat audit verify FILE; argv[0] is "audit". */
int audit_cli_main(int argc, char **argv);
/* pgmoat replay FILE [--session ID] [--policy CONFIG]; argv[0] is "replay". */
int audit_cli_replay(int argc, char **argv);

#endif
