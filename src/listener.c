/*
 * Listening sockets: every listen_addr entry on listen_port, and the unix
 * socket unix_socket_dir/.s.PGSQL.<port> that libpq clients find by default.
 */
#include "listener.h"
#include "client.h"
#include "sockopt.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/listener.h>
#include <sys/stat.h>
#include <sys/un.h>

struct Listener {
	struct Listener *next;
	struct evconnlistener *evl;
	bool is_unix;
	char *unix_path;	/* removed on close */
	char *addr;		/* for logs and reload comparison */
	int port;
	SockoptInherit inherit;	/* conn7: TCP options its connections inherit */
};

static Listener *listeners;

static void listener_accept_cb(struct evconnlistener *evl, evutil_socket_t fd,
			       struct sockaddr *sa, int salen, void *arg)
{
	Listener *l = arg;
	if (moat->state == MOAT_DRAINING) {
		evutil_closesocket(fd);
		return;
	}
	/* evconnlistener accepts with SOCK_NONBLOCK already. */
	if (!l->is_unix && !sockopt_accepted(fd, moat->cfg, &l->inherit))
		log_warning("could not set the TCP options of client socket %d: %s", fd, strerror(errno));
	util_clock_scope_begin();	/* (one clock read for the accept and the login it may complete) */
	client_accept(moat->worker, fd, sa, (socklen_t)salen, l->is_unix);
	util_clock_scope_end();
}

static void listener_error_cb(struct evconnlistener *evl, void *arg)
{
	int err = EVUTIL_SOCKET_ERROR();
	log_warning("accept failed: %s", evutil_socket_error_to_string(err));
}

static void listener_add(Worker *w, int fd, bool is_unix, const char *addr, int port,
			 const char *path, const SockoptInherit *inherit)
{
	Listener *l = xcalloc(1, sizeof(*l));
	if (inherit)
		l->inherit = *inherit;
	l->is_unix = is_unix;
	l->addr = xstrdup(addr);
	l->port = port;
	l->unix_path = path ? xstrdup(path) : NULL;
	l->evl = evconnlistener_new(w->base, listener_accept_cb, l, LEV_OPT_CLOSE_ON_FREE, -1, fd);
	if (!l->evl) {
		close(fd);
		free(l->addr);
		free(l->unix_path);
		free(l);
		return;
	}
	evconnlistener_set_error_cb(l->evl, listener_error_cb);
	l->next = listeners;
	listeners = l;
	log_info("listening on %s%s%d", is_unix ? path : addr, is_unix ? "" : ":",
		 is_unix ? 0 : port);
}

static int listener_bind_tcp(const char *host, int port, const Config *cfg, SockoptInherit *inherit)
{
	struct evutil_addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
					 .ai_flags = EVUTIL_AI_PASSIVE };
	struct evutil_addrinfo *res = NULL;
	char portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", port);
	const char *node = strcmp(host, "*") == 0 ? NULL : host;
	if (evutil_getaddrinfo(node, portstr, &hints, &res) != 0 || !res) {
		log_error("could not resolve listen_addr %s", host);
		return -1;
	}
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int on = 1;
	if (fd >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
		if (!sockopt_listener(fd, cfg) || !sockopt_listener_inherit(fd, cfg, inherit) ||
		    bind(fd, res->ai_addr, res->ai_addrlen) != 0 ||
		    listen(fd, cfg->listen_backlog) != 0) {
			log_error("could not listen on %s:%d: %s", host, port, strerror(errno));
			close(fd);
			fd = -1;
		}
	}
	evutil_freeaddrinfo(res);
	return fd;
}

static int listener_bind_unix(const char *path, int mode, int backlog)
{
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(un.sun_path)) {
		log_error("unix socket path too long: %s", path);
		return -1;
	}
	strcpy(un.sun_path, path);
	unlink(path);	/* a stale socket from a previous run */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&un, sizeof(un)) != 0 || listen(fd, backlog) != 0) {
		log_error("could not listen on %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	chmod(path, (mode_t)mode);
	return fd;
}

bool listener_start(Worker *w, const Config *cfg)
{
	StrList addrs = { 0 };
	if (cfg->listen_addr)
		strlist_parse_csv(&addrs, cfg->listen_addr);
	for (int i = 0; i < addrs.count; i++) {
		SockoptInherit inherit;
		int fd = listener_bind_tcp(addrs.items[i], cfg->listen_port, cfg, &inherit);
		if (fd >= 0)
			listener_add(w, fd, false, addrs.items[i], cfg->listen_port, NULL, &inherit);
	}
	strlist_free(&addrs);
	if (cfg->unix_socket_dir && *cfg->unix_socket_dir) {
		char *path = xasprintf("%s/.s.PGSQL.%d", cfg->unix_socket_dir, cfg->listen_port);
		int fd = listener_bind_unix(path, cfg->unix_socket_mode, cfg->listen_backlog);
		if (fd >= 0)
			listener_add(w, fd, true, path, cfg->listen_port, path, NULL);
		free(path);
	}
	return listeners != NULL;
}

void listener_pause(bool pause)
{
	for (Listener *l = listeners; l; l = l->next) {
		if (pause)
			evconnlistener_disable(l->evl);
		else
			evconnlistener_enable(l->evl);
	}
}

void listener_each(ListenerVisit fn, void *arg)
{
	for (Listener *l = listeners; l; l = l->next)
		fn(evconnlistener_get_fd(l->evl), l->is_unix ? "unix" : l->addr, l->port, arg);
}

void listener_close_all(void)
{
	while (listeners) {
		Listener *l = listeners;
		listeners = l->next;
		evconnlistener_free(l->evl);
		if (l->unix_path)
			unlink(l->unix_path);
		free(l->unix_path);
		free(l->addr);
		free(l);
	}
}

static bool listen_settings_equal(const Config *a, const Config *b)
{
#define SAME(f) ((a->f == NULL && b->f == NULL) || (a->f && b->f && strcmp(a->f, b->f) == 0))
	return SAME(listen_addr) && SAME(unix_socket_dir) && a->listen_port == b->listen_port;
#undef SAME
}

void listener_reload(Worker *w, const Config *old_cfg, const Config *cfg)
{
	if (listen_settings_equal(old_cfg, cfg))
		return;
	listener_close_all();
	if (!listener_start(w, cfg))
		log_error("after reload nothing is listening: check listen_addr and listen_port");
}
