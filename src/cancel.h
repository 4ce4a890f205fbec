/* CancelRequest routing: from our random per-client key to the right backend. */
#ifndef PGMOAT_CANCEL_H
#define PGMOAT_CANCEL_H

#include "pgmoat.h"

/* The request connection is closed by the caller; this forwards the cancel if it matches. */
void cancel_forward(Worker *w, uint32_t pid, uint32_t key);

#endif
