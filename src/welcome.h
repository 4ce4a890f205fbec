/*
 * The welcome a client gets once logged in: the pool's ParameterStatus set,
 * with the client's own values for the tracked parameters it set at startup.
 */
#ifndef PGMOAT_WELCOME_H
#define PGMOAT_WELCOME_H

#include <stddef.h>
#include <stdint.h>
#include "varcache.h"
#include "pktbuf.h"

struct Pool;

/*
 * What a pool keeps so that a login does not rebuild the same bytes: the
 * messages no client can change, the server's values of the tracked
 * parameters, and the tracked messages last built with the values they were
 * built for. Rebuilt at the first login after the pool's welcome changed.
 */
typedef struct WelcomeCache {
	int *var;		/* per welcome entry: its VarId, or -1; NULL until built */
	PktBuf fixed;		/* ParameterStatus for untracked parameters (server_version ...) */
	VarCache server;	/* the tracked parameters as the server reported them */
	PktBuf tracked;		/* ParameterStatus for the tracked ones, as last built... */
	VarCache tracked_for;	/* ...for a client holding these values */
	bool have_tracked;
} WelcomeCache;

/*
 * Fill the client's unset tracked parameters from the pool's and append the
 * welcome's ParameterStatus messages to pb.
 */
void welcome_build(struct Pool *pool, VarCache *client_vars, PktBuf *pb);
/* The pool's welcome changed (a server reported a new value): drop what was built. */
void welcome_reset(WelcomeCache *wc);

#endif
