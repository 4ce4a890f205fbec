/*
 * approvals.store: postgres -- replicas share their approval queues through
 * PostgreSQL's LISTEN/NOTIFY (libpq, non-blocking, on the worker's loop), so
 * a reviewer on any replica sees and decides what any other holds.
 *
 * Each replica stays the only authority over its own held clients: it
 * announces each hold ("held") and its end ("gone"); a replica asked to
 * decide an approval it does not hold forwards the decision ("decide") to
 * the holder, which applies it if the statement still waits. A replica that
 * (re)connects asks the others to announce again ("sync"). Nothing is
 * stored in tables: a held statement cannot outlive its client's connection,
 * so there is nothing to recover after a restart (decisions are audited).
 *
 * If the store is unreachable, each replica keeps working alone (its own
 * console still decides its own holds) and reconnects in the background.
 */
#ifndef PGMOAT_APPROVALS_PG_H
#define PGMOAT_APPROVALS_PG_H

#include "approvals.h"

#define APPROVALS_PG_CHANNEL "pgmoat_approvals"

/* Start, restart (conninfo changed) or stop the store for cfg. */
void approvals_pg_configure(Worker *w, const Config *cfg);
void approvals_pg_stop(void);
bool approvals_pg_active(void);
const char *approvals_pg_replica(void);	/* this replica's name: host:port */

void approvals_pg_announce(const ApprovalInfo *ai);	/* a local hold */
void approvals_pg_gone(uint64_t id);			/* a local hold ended */
/* Forward a decision to the replica holding id; false: no replica is known to hold it. */
bool approvals_pg_forward(uint64_t id, bool approve, const char *reviewer, const char *reason);

/* The other replicas' waiting approvals, appended to *list (xrealloc'd); borrowed strings. */
void approvals_pg_remote(ApprovalInfo **list, int *count);
bool approvals_pg_knows(uint64_t id);

/* Called by the store (approvals.c implements them). */
void approvals_decide_remote(uint64_t id, bool approve, const char *reviewer, const char *reason);
void approvals_announce_all(void);

#endif
