/*
 * The welcome after login. Every client of a pool gets nearly the same
 * bytes: they are built once per pool and copied, and rebuilt only for a
 * client whose tracked parameters differ from the last one's (values are
 * interned, so comparing them is comparing pointers).
 */
#include "welcome.h"
#include "pgmoat.h"
#include "pktbuf.h"

#include <stdlib.h>
#include <string.h>

static void welcome_build_fixed(WelcomeCache *wc, const ParamList *welcome)
{
	PktBuf fixed;
	pktbuf_init(&fixed);
	wc->var = xmalloc(sizeof(int) * (size_t)(welcome->count + 1));
	for (int i = 0; i < welcome->count; i++) {
		wc->var[i] = varcache_lookup(welcome->names[i]);
		if (wc->var[i] < 0)
			pktbuf_param_status(&fixed, welcome->names[i], welcome->values[i]);
		else
			varcache_set_id(&wc->server, (VarId)wc->var[i], welcome->values[i]);
	}
	wc->fixed_len = pktbuf_ok(&fixed) ? fixed.len : 0;
	wc->fixed = xmalloc(wc->fixed_len + 1);
	if (wc->fixed_len)
		memcpy(wc->fixed, fixed.data, wc->fixed_len);
	pktbuf_free(&fixed);
}

/* The tracked parameters' messages for a client holding vars; false when out of memory. */
static bool welcome_build_tracked(WelcomeCache *wc, const ParamList *welcome, const VarCache *vars)
{
	PktBuf tracked;
	pktbuf_init(&tracked);
	for (int i = 0; i < welcome->count; i++) {
		int id = wc->var[i];
		if (id >= 0)
			pktbuf_param_status(&tracked, welcome->names[i], vars->values[id]);
	}
	bool ok = pktbuf_ok(&tracked);
	if (ok) {
		free(wc->tracked);
		wc->tracked = xmalloc(tracked.len + 1);
		memcpy(wc->tracked, tracked.data, tracked.len);
		wc->tracked_len = tracked.len;
		varcache_copy(&wc->tracked_for, vars);
	}
	pktbuf_free(&tracked);
	return ok;
}

void welcome_build(Pool *pool, VarCache *client_vars, PktBuf *pb)
{
	WelcomeCache *wc = &pool->welcome_cache;
	if (!wc->fixed)
		welcome_build_fixed(wc, &pool->welcome);
	varcache_fill_unset(client_vars, &wc->server);
	pktbuf_put_bytes(pb, wc->fixed, wc->fixed_len);
	if ((!wc->tracked || !varcache_same(&wc->tracked_for, client_vars)) &&
	    !welcome_build_tracked(wc, &pool->welcome, client_vars)) {
		pb->failed = true;	/* the login is refused */
		return;
	}
	pktbuf_put_bytes(pb, wc->tracked, wc->tracked_len);
}

void welcome_reset(WelcomeCache *wc)
{
	free(wc->fixed);
	free(wc->var);
	free(wc->tracked);
	varcache_free(&wc->server);
	varcache_free(&wc->tracked_for);
	memset(wc, 0, sizeof(*wc));
}
