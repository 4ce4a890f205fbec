/*
 * SUSPEND and RESUME (pgbouncer's meaning, minus the socket handover of an
 * online restart, which pgmoat does not have): stop accepting, stop reading
 * every client and server socket except the admin console's, and let what
 * is already queued for sending drain out. RESUME undoes it.
 */
#ifndef PGMOAT_SUSPEND_H
#define PGMOAT_SUSPEND_H

#include "pgmoat.h"

/* Enter (true) or leave (false) MOAT_SUSPENDED. */
void suspend_set(bool on);
/* Every suspended socket has written out all it had queued. */
bool suspend_buffers_flushed(void);
/* suspend_timeout passed: close the connections that could not flush. */
void suspend_drop_unflushed(void);

#endif
