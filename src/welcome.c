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

/*
 * The whole welcome for a client holding vars: AuthenticationOk, the fixed
 * and the tracked ParameterStatus, a BackendKeyData to fill in, and
 * ReadyForQuery: one copy per login, no message built (conn8).
 */
static void welcome_build_whole(WelcomeCache *wc, const ParamList *welcome, const VarCache *vars)
{
	if (wc->have_whole)
		pktbuf_reset(&wc->whole);
	else
		pktbuf_init(&wc->whole);
	pktbuf_auth_ok(&wc->whole);
	pktbuf_put_bytes(&wc->whole, wc->fixed.data, wc->fixed.len);
	for (int i = 0; i < welcome->count; i++) {
		int id = wc->var[i];
		if (id >= 0)
			pktbuf_param_status(&wc->whole, welcome->names[i], vars->values[id]);
	}
	pktbuf_backend_key(&wc->whole, 0, 0);
	pktbuf_ready(&wc->whole, 'I');
	varcache_copy(&wc->whole_for, vars);
	wc->have_whole = true;
}

void welcome_build(Pool *pool, VarCache *client_vars, bool auth_ok, uint32_t pid, uint32_t key, PktBuf *pb)
{
	WelcomeCache *wc = &pool->welcome_cache;
	if (!wc->var)
		welcome_build_fixed(wc, &pool->welcome);
	varcache_fill_unset(client_vars, &wc->server);
	if (!wc->have_whole || !varcache_same(&wc->whole_for, client_vars))
		welcome_build_whole(wc, &pool->welcome, client_vars);
	if (!pktbuf_ok(&wc->fixed) || !pktbuf_ok(&wc->whole)) {
		pb->failed = true;	/* the login is refused */
		return;
	}
	size_t skip = auth_ok ? 0 : WELCOME_AUTH_OK_LEN;
	pktbuf_put_bytes(pb, wc->whole.data + skip, wc->whole.len - skip);
	if (!pktbuf_ok(pb))
		return;
	uint8_t *k = pb->data + pb->len - WELCOME_READY_LEN - WELCOME_KEY_LEN;
	pktbuf_set_backend_key(k, pid, key);
}

void welcome_reset(WelcomeCache *wc)
{
	if (wc->var)
		pktbuf_free(&wc->fixed);
	if (wc->have_whole)
		pktbuf_free(&wc->whole);
	free(wc->var);
	varcache_free(&wc->server);
	varcache_free(&wc->whole_for);
	memset(wc, 0, sizeof(*wc));
}
