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
	pktbuf_init(&wc->fixed);
	wc->var = xmalloc(sizeof(int) * (size_t)(welcome->count + 1));
	for (int i = 0; i < welcome->count; i++) {
		wc->var[i] = varcache_lookup(welcome->names[i]);
		if (wc->var[i] < 0)
			pktbuf_param_status(&wc->fixed, welcome->names[i], welcome->values[i]);
		else
			varcache_set_id(&wc->server, (VarId)wc->var[i], welcome->values[i]);
	}
}

/* The tracked parameters' messages for a client holding vars. */
static void welcome_build_tracked(WelcomeCache *wc, const ParamList *welcome, const VarCache *vars)
{
	if (wc->have_tracked)
		pktbuf_reset(&wc->tracked);
	else
		pktbuf_init(&wc->tracked);
	for (int i = 0; i < welcome->count; i++) {
		int id = wc->var[i];
		if (id >= 0)
			pktbuf_param_status(&wc->tracked, welcome->names[i], vars->values[id]);
	}
	varcache_copy(&wc->tracked_for, vars);
	wc->have_tracked = true;
}

void welcome_build(Pool *pool, VarCache *client_vars, PktBuf *pb)
{
	WelcomeCache *wc = &pool->welcome_cache;
	if (!wc->var)
		welcome_build_fixed(wc, &pool->welcome);
	varcache_fill_unset(client_vars, &wc->server);
	if (!wc->have_tracked || !varcache_same(&wc->tracked_for, client_vars))
		welcome_build_tracked(wc, &pool->welcome, client_vars);
	if (!pktbuf_ok(&wc->fixed) || !pktbuf_ok(&wc->tracked)) {
		pb->failed = true;	/* the login is refused */
		return;
	}
	pktbuf_put_bytes(pb, wc->fixed.data, wc->fixed.len);
	pktbuf_put_bytes(pb, wc->tracked.data, wc->tracked.len);
}

void welcome_reset(WelcomeCache *wc)
{
	if (wc->var)
		pktbuf_free(&wc->fixed);
	if (wc->have_tracked)
		pktbuf_free(&wc->tracked);
	free(wc->var);
	varcache_free(&wc->server);
	varcache_free(&wc->tracked_for);
	memset(wc, 0, sizeof(*wc));
}
