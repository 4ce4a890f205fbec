/*
 * pgbouncer.ini's TCP settings, applied where pgbouncer applies them: to the
 * listening sockets, and to every client and server TCP connection.
 */
#ifndef PGMOAT_SOCKOPT_H
#define PGMOAT_SOCKOPT_H

#include <stdbool.h>
#include "config.h"

/*
 * Before bind(): SO_REUSEPORT (so_reuseport) and TCP_DEFER_ACCEPT
 * (tcp_defer_accept: a connection is accepted once its first packet is
 * there, one wake-up instead of two). False: errno says why.
 */
bool sockopt_listener(int fd, const Config *cfg) MUST_CHECK;
/*
 * TCP_NODELAY, SO_KEEPALIVE and its timers (tcp_keepalive, tcp_keepidle,
 * tcp_keepintvl, tcp_keepcnt), TCP_USER_TIMEOUT (tcp_user_timeout) and the
 * buffer sizes (tcp_socket_buffer). Zero leaves the system's default.
 * False: errno says which failed (the others are still set).
 */
bool sockopt_connection(int fd, const Config *cfg) MUST_CHECK;

/*
 * conn7: Linux copies a listening socket's options to the sockets it
 * accepts. A TCP listener carries TCP_NODELAY and SO_KEEPALIVE (as
 * tcp_keepalive says at bind time); a connection it accepts is then spared
 * those two system calls once the first one was seen to inherit them.
 */
typedef struct SockoptInherit {
	bool keepalive;		/* SO_KEEPALIVE the listener carries */
	bool checked;		/* the first accepted socket was looked at */
	bool works;		/* ... and carried TCP_NODELAY */
} SockoptInherit;

/* On a TCP listener, before listen(). False: errno says why. */
bool sockopt_listener_inherit(int fd, const Config *cfg, SockoptInherit *inh) MUST_CHECK;
/* sockopt_connection() for a socket accepted from inh's listener, minus what it inherited. */
bool sockopt_accepted(int fd, const Config *cfg, SockoptInherit *inh) MUST_CHECK;
#endif
