/*
 * TCP options of accepted sockets (sockopt.c): what a connection inherits
 * from its listener, what sockopt_accepted() sets, and that the defaults'
 * early return (conn8) sets nothing it should have.
 */
#include "src/sockopt.h"
#include "src/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <criterion/criterion.h>

static int get_int(int fd, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);
	cr_assert_eq(getsockopt(fd, level, name, &v, &len), 0);
	return v;
}

/* A loopback listener with cfg's inherited options, and one accepted connection: fds[0] accepted, fds[1] client. */
static int listen_and_accept(const Config *cfg, SockoptInherit *inh, int fds[2])
{
	int l = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(l, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	cr_assert(sockopt_listener_inherit(l, cfg, inh));
	cr_assert_eq(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(getsockname(l, (struct sockaddr *)&a, &alen), 0);
	cr_assert_eq(listen(l, 4), 0);
	fds[1] = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_eq(connect(fds[1], (struct sockaddr *)&a, sizeof(a)), 0);
	fds[0] = accept(l, NULL, NULL);
	cr_assert_geq(fds[0], 0);
	return l;
}

Test(sockopt, defaults_leave_the_system_values_and_keep_the_inherited_ones)
{
	Config cfg;
	memset(&cfg, 0, sizeof(cfg));
	SockoptInherit inh;
	int fds[2];
	int l = listen_and_accept(&cfg, &inh, fds);
	int idle = get_int(fds[0], IPPROTO_TCP, TCP_KEEPIDLE);
	cr_assert(sockopt_accepted(fds[0], &cfg, &inh));
	cr_assert_eq(get_int(fds[0], IPPROTO_TCP, TCP_NODELAY), 1);
	cr_assert_eq(get_int(fds[0], SOL_SOCKET, SO_KEEPALIVE), 0);
	cr_assert_eq(get_int(fds[0], IPPROTO_TCP, TCP_USER_TIMEOUT), 0);
	cr_assert_eq(get_int(fds[0], IPPROTO_TCP, TCP_KEEPIDLE), idle);
	close(fds[0]);
	close(fds[1]);
	close(l);
}

Test(sockopt, each_configured_option_is_set_on_an_accepted_socket)
{
	Config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.tcp_keepalive = true;
	cfg.tcp_keepidle = 33;
	cfg.tcp_keepintvl = 7;
	cfg.tcp_keepcnt = 4;
	cfg.tcp_user_timeout = 7000;
	cfg.tcp_socket_buffer = 65536;
	SockoptInherit inh;
	int fds[2];
	int l = listen_and_accept(&cfg, &inh, fds);
	cr_assert(sockopt_accepted(fds[0], &cfg, &inh));
	cr_assert_eq(get_int(fds[0], IPPROTO_TCP, TCP_NODELAY), 1);
	cr_assert_eq(get_int(fds[0], SOL_SOCKET, SO_KEEPALIVE), 1);
	cr_assert_eq(get_int(fds[0], IPPROTO_TCP, TCP_KEEPIDLE), 33);
	cr_assert_eq(get_int(fds[0], IPPROTO_TCP, TCP_KEEPINTVL), 7);
	cr_assert_eq(get_int(fds[0], IPPROTO_TCP, TCP_KEEPCNT), 4);
	cr_assert_eq(get_int(fds[0], IPPROTO_TCP, TCP_USER_TIMEOUT), 7000);
	cr_assert_geq(get_int(fds[0], SOL_SOCKET, SO_RCVBUF), 65536);	/* (Linux doubles it) */
	cr_assert_geq(get_int(fds[0], SOL_SOCKET, SO_SNDBUF), 65536);
	close(fds[0]);
	close(fds[1]);
	close(l);
}

Test(sockopt, one_option_alone_is_set_too)
{
	/* the early return must not swallow a single non-default */
	Config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.tcp_user_timeout = 1234;
	SockoptInherit inh;
	int fds[2];
	int l = listen_and_accept(&cfg, &inh, fds);
	cr_assert(sockopt_accepted(fds[0], &cfg, &inh));
	cr_assert_eq(get_int(fds[0], IPPROTO_TCP, TCP_USER_TIMEOUT), 1234);
	close(fds[0]);
	close(fds[1]);
	close(l);
}
