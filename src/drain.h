/*
 * The SIGTERM drain (ops, issue 3.6). Readiness turns false and the
 * listeners close at once (a Kubernetes Service stops routing here, new
 * connections are refused); each client is closed with FATAL 57P01 at its
 * next transaction boundary (an idle one right away); the process exits when
 * the last client is gone, or when shutdown_timeout passes.
 */
#ifndef PGMOAT_DRAIN_H
#define PGMOAT_DRAIN_H

#include "pgmoat.h"

/* Start draining (idempotent): close listeners, arm the deadline. */
void drain_start(void);

/* True while draining: /readyz answers 503. */
bool drain_active(void);

/*
 * A transaction boundary of c was reached (its server sent ReadyForQuery
 * 'I' with nothing in flight, or it is about to ask for a server). While
 * draining, c is closed with 57P01 and true is returned: the caller must not
 * touch c's link any more. Otherwise false and nothing happens.
 */
bool drain_close_at_boundary(Client *c) MUST_CHECK;

/* Janitor tick while draining: close what is idle, stop when done or late. */
void drain_tick(Worker *w, usec_t now);

#endif
