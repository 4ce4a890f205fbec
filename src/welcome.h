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
 * parameters, and the whole welcome last built with the values it was built
 * for. Rebuilt at the first login after the pool's welcome changed.
 */
typedef struct WelcomeCache {
	int *var;		/* per welcome entry: its VarId, or -1; NULL until built */
	PktBuf fixed;		/* ParameterStatus for untracked parameters (server_version ...) */
	VarCache server;	/* the tracked parameters as the server reported them */
	PktBuf whole;		/* the whole welcome (welcome_build), as last built... */
	VarCache whole_for;	/* ...for a client holding these values */
	bool have_whole;
} WelcomeCache;

/* Sizes of the messages around the ParameterStatus set. */
#define WELCOME_AUTH_OK_LEN 9
#define WELCOME_KEY_LEN 13
#define WELCOME_READY_LEN 6

/*
 * Fill the client's unset tracked parameters from the pool's and append the
 * welcome to pb: AuthenticationOk (if auth_ok), the ParameterStatus set,
 * BackendKeyData with pid and key, ReadyForQuery 'I'.
 */
void welcome_build(struct Pool *pool, VarCache *client_vars, bool auth_ok, uint32_t pid, uint32_t key,
		   PktBuf *pb);
/* The pool's welcome changed (a server reported a new value): drop what was built. */
void welcome_reset(WelcomeCache *wc);

#endif
