/* Process-level concerns: daemonizing, the pidfile, privileges, reload and shutdown. */
#include "daemon.h"
#include "auth_query.h"
#include "listener.h"
#include "pool.h"
#include "approvals_pg.h"
#include "enforce.h"
#include "drain.h"
#include "audit.h"
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool daemon_write_pidfile(const char *path)
{
	if (!path || !*path)
		return true;
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f) {
		log_error("could not write pidfile %s: %s", tmp, strerror(errno));
		return false;
	}
	fprintf(f, "%d\n", (int)getpid());
	if (fclose(f) != 0 || rename(tmp, path) != 0) {
		log_error("could not write pidfile %s: %s", path, strerror(errno));
		unlink(tmp);
		return false;
	}
	return true;
}

void daemon_remove_pidfile(const char *path)
{
	if (path && *path)
		unlink(path);
}

bool daemon_go_background(void)
{
	pid_t pid = fork();
	if (pid < 0)
		return false;
	if (pid > 0)
		_exit(0);
	if (setsid() < 0)
		return false;
	pid = fork();	/* never reacquire a controlling terminal */
	if (pid < 0)
		return false;
	if (pid > 0)
		_exit(0);
	log_forget_pid();
	int fd = open("/dev/null", O_RDWR);
	if (fd < 0)
		return false;
	dup2(fd, STDIN_FILENO);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	if (fd > STDERR_FILENO)
		close(fd);
	return true;
}

bool daemon_drop_privileges(const char *user)
{
	if (!user || !*user)
		return true;
	struct passwd *pw = getpwnam(user);
	if (!pw) {
		log_error("unknown user: %s", user);
		return false;
	}
	if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
	    setuid(pw->pw_uid) != 0) {
		log_error("could not switch to user %s: %s", user, strerror(errno));
		return false;
	}
	return true;
}

static void moat_apply_logging(const Config *cfg)
{
	log_set_json(cfg->log_format && strcmp(cfg->log_format, "json") == 0);
	if (!log_open_file(cfg->logfile))
		log_error("could not open logfile %s: %s", cfg->logfile, strerror(errno));
}

bool moat_reload(char *err, size_t errlen)
{
	Config *fresh = config_load(moat->config_path, err, errlen);
	PolicyEngine *engine = NULL;
	/* Certificates are read again: new content at the same path is picked up. */
	TlsContexts *tls = fresh ? tls_contexts_build(fresh, err, errlen) : NULL;
	if (fresh && (!tls || !enforce_engine_build(fresh, &engine, err, errlen))) {
		config_free(fresh);
		fresh = NULL;
	}
	if (!fresh) {
		tls_contexts_free(tls);
		log_error("reload failed, keeping the old configuration: %s", err);
		return false;
	}
	tls_contexts_install(tls);
	enforce_install(moat->worker, engine);
	audit_reload(&fresh->audit);
	Config *old = moat->cfg;
	moat->cfg = fresh;
	moat->cfg_epoch++;
	moat_apply_logging(fresh);
	if (moat->state != MOAT_DRAINING)	/* a drain keeps its listeners closed */
		listener_reload(moat->worker, old, fresh);
	pool_apply_config(fresh);
	moat->cfg_epoch++;	/* (databases' settings changed too) */
	auth_query_reload();
	approvals_pg_configure(moat->worker, fresh);
	config_free(old);
	pool_maintain_all();
	log_info("configuration reloaded from %s", moat->config_path);
	return true;
}

void moat_shutdown(bool immediate)
{
	if (immediate || moat->state == MOAT_DRAINING) {
		log_info("shutting down now");
		moat->shutdown_immediate = true;
		event_base_loopbreak(moat->worker->base);
		return;
	}
	drain_start();
}
