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

bool sockopt_connection(int fd, const Config *cfg)
{
	bool ok = set_int_if(fd, IPPROTO_TCP, TCP_NODELAY, 1);
	if (cfg->tcp_keepalive) {
		ok &= set_int_if(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
		ok &= set_int_if(fd, IPPROTO_TCP, TCP_KEEPIDLE, cfg->tcp_keepidle);
		ok &= set_int_if(fd, IPPROTO_TCP, TCP_KEEPINTVL, cfg->tcp_keepintvl);
		ok &= set_int_if(fd, IPPROTO_TCP, TCP_KEEPCNT, cfg->tcp_keepcnt);
	}
	ok &= set_int_if(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, cfg->tcp_user_timeout);
	ok &= set_int_if(fd, SOL_SOCKET, SO_SNDBUF, cfg->tcp_socket_buffer);
	ok &= set_int_if(fd, SOL_SOCKET, SO_RCVBUF, cfg->tcp_socket_buffer);
	return ok;
}
