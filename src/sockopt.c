#include "sockopt.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#define DEFER_ACCEPT_SEC 45	/* what pgbouncer sets for tcp_defer_accept = 1 */

/* setsockopt of an int when value is not 0 (the system's default stays); false on failure. */
static bool set_int_if(int fd, int level, int name, int value)
{
	return value == 0 || setsockopt(fd, level, name, &value, sizeof(value)) == 0;
}

bool sockopt_listener(int fd, const Config *cfg)
{
	return set_int_if(fd, SOL_SOCKET, SO_REUSEPORT, cfg->so_reuseport ? 1 : 0) &&
	       set_int_if(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, cfg->tcp_defer_accept ? DEFER_ACCEPT_SEC : 0);
}

/* What sockopt_connection() sets besides TCP_NODELAY and SO_KEEPALIVE. */
static bool set_rest(int fd, const Config *cfg)
{
	/* (the defaults: nothing to set, every connection) */
	if ((cfg->tcp_keepalive ? cfg->tcp_keepidle | cfg->tcp_keepintvl | cfg->tcp_keepcnt : 0) == 0 &&
	    (cfg->tcp_user_timeout | cfg->tcp_socket_buffer) == 0)
		return true;
	bool ok = true;
	if (cfg->tcp_keepalive) {
		ok &= set_int_if(fd, IPPROTO_TCP, TCP_KEEPIDLE, cfg->tcp_keepidle);
		ok &= set_int_if(fd, IPPROTO_TCP, TCP_KEEPINTVL, cfg->tcp_keepintvl);
		ok &= set_int_if(fd, IPPROTO_TCP, TCP_KEEPCNT, cfg->tcp_keepcnt);
	}
	ok &= set_int_if(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, cfg->tcp_user_timeout);
	ok &= set_int_if(fd, SOL_SOCKET, SO_SNDBUF, cfg->tcp_socket_buffer);
	ok &= set_int_if(fd, SOL_SOCKET, SO_RCVBUF, cfg->tcp_socket_buffer);
	return ok;
}

bool sockopt_connection(int fd, const Config *cfg)
{
	bool ok = set_int_if(fd, IPPROTO_TCP, TCP_NODELAY, 1);
	if (cfg->tcp_keepalive)
		ok &= set_int_if(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
	return set_rest(fd, cfg) && ok;
}

bool sockopt_listener_inherit(int fd, const Config *cfg, SockoptInherit *inh)
{
	inh->keepalive = cfg->tcp_keepalive;
	inh->checked = inh->works = false;
	return set_int_if(fd, IPPROTO_TCP, TCP_NODELAY, 1) &&
	       set_int_if(fd, SOL_SOCKET, SO_KEEPALIVE, inh->keepalive ? 1 : 0);
}

bool sockopt_accepted(int fd, const Config *cfg, SockoptInherit *inh)
{
	if (!inh->checked) {
		int v = 0;
		socklen_t len = sizeof(v);
		inh->checked = true;
		inh->works = getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0 && v != 0;
	}
	bool ok = inh->works || set_int_if(fd, IPPROTO_TCP, TCP_NODELAY, 1);
	/* tcp_keepalive changed by a reload: the listener's is not the one to keep */
	if (!inh->works || cfg->tcp_keepalive != inh->keepalive) {
		int on = cfg->tcp_keepalive ? 1 : 0;
		ok &= setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) == 0;
	}
	return set_rest(fd, cfg) && ok;
}
