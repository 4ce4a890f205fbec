/* Process setup: daemonize, pidfile, privilege drop, signals. */
#ifndef PGMOAT_DAEMON_H
#define PGMOAT_DAEMON_H

#include "pgmoat.h"

bool daemon_write_pidfile(const char *path) MUST_CHECK;
void daemon_remove_pidfile(const char *path);
bool daemon_go_background(void) MUST_CHECK;
bool daemon_drop_privileges(const char *user) MUST_CHECK;

/* Reload configuration (SIGHUP, RELOAD): keeps the old one when the new one is bad. */
bool moat_reload(char *err, size_t errlen) MUST_CHECK;
/* Begin shutdown: immediate (SHUTDOWN, SIGTERM twice) or after transactions finish. */
void moat_shutdown(bool immediate);

#endif
