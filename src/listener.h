/* Listening sockets (TCP and unix), accept loop and max_client_conn. */
#ifndef PGMOAT_LISTENER_H
#define PGMOAT_LISTENER_H

#include "pgmoat.h"

typedef struct Listener Listener;

/* Bind everything the config asks for; false (logged) when nothing could be bound. */
bool listener_start(Worker *w, const Config *cfg) MUST_CHECK;
void listener_pause(bool pause);	/* stop/resume accepting (SUSPEND, drain) */
void listener_close_all(void);
/* SHOW FDS: each listening socket with its address ("unix" for the socket file). */
typedef void (*ListenerVisit)(int fd, const char *addr, int port, void *arg);
void listener_each(ListenerVisit fn, void *arg);
/* Rebind when listen_addr/listen_port changed on reload. */
void listener_reload(Worker *w, const Config *old_cfg, const Config *cfg);

#endif
