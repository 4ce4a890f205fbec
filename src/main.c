/*
 * pgmoat: command line, start-up and the event loop.
 *
 *   pgmoat [-d] [-v|-q] [-u USER] CONFIG
 *   pgmoat --check CONFIG
 *   pgmoat --version
 */
#include "pgmoat.h"
#include "evmem.h"
#include "admin.h"
#include "auth_query.h"
#include "client.h"
#include "daemon.h"
#include "janitor.h"
#include "listener.h"
#include "pool.h"
#include "server.h"
#include "policy.h"
#include "try.h"
#include "approvals_pg.h"
#include "enforce.h"
#include "http.h"
#include "audit.h"
#include "sqlinfo.h"
#include "prepared.h"
#include "tls.h"
#include "build_config.h"

#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/opensslv.h>

Moat *moat;

typedef struct Options {
	bool daemon;
	bool check;
	int verbosity;		/* +1 per -v, -1 per -q */
	const char *user;
	const char *config;
} Options;

static void usage(FILE *out)
{
	fprintf(out,
		"usage: pgmoat [-d] [-v|-q] [-u USER] CONFIG\n"
		"       pgmoat --check CONFIG\n"
		"       pgmoat --version\n"
		"       pgmoat try CONFIG [--user U] [--db D] [--claims JSON] SQL...\n"
		"       pgmoat try CONFIG --cases FILE\n"
		"       pgmoat replay AUDIT.jsonl [--session ID] [--policy CONFIG]\n"
		"       pgmoat audit verify AUDIT.jsonl\n"
		"\n"
		"CONFIG is a pgmoat.yaml or an unmodified pgbouncer.ini.\n"
		"  -d, --daemon    run in the background (writes pidfile)\n"
		"  -v, --verbose   more logging (repeatable)\n"
		"  -q, --quiet     less logging\n"
		"  -u, --user=USER switch to USER after binding\n"
		"  --check         load the config, report problems, exit 0/1\n"
		"  -V, --version   print the version\n");
}

static void print_version(void)
{
	printf("pgmoat %s\nlibevent %s\n%s\n", PACKAGE_VERSION, event_get_version(),
	       OPENSSL_VERSION_TEXT);
}

/* Returns -1 to continue, otherwise the exit code. */
static int parse_options(int argc, char **argv, Options *o)
{
	static const struct option longopts[] = {
		{ "daemon", no_argument, NULL, 'd' }, { "verbose", no_argument, NULL, 'v' },
		{ "quiet", no_argument, NULL, 'q' },  { "user", required_argument, NULL, 'u' },
		{ "version", no_argument, NULL, 'V' }, { "check", no_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },   { NULL, 0, NULL, 0 },
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "dvqu:Vh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'd': o->daemon = true; break;
		case 'v': o->verbosity++; break;
		case 'q': o->verbosity--; break;
		case 'u': o->user = optarg; break;
		case 'C': o->check = true; break;
		case 'V': print_version(); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 1;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 1;
	}
	o->config = argv[optind];
	return -1;
}

/* Policies compile as they would at start-up; errors name file:line. */
static bool check_policies(const Config *cfg, char *err, size_t errlen)
{
	PolicyEngine *e = NULL;
	if (!enforce_engine_build(cfg, &e, err, errlen))
		return false;
	if (e)
		policy_engine_free(e);
	return true;
}

static int run_check(const char *path)
{
	char err[1024] = "";
	Config *cfg = config_load(path, err, sizeof(err));
	if (!cfg) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (!check_policies(cfg, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		config_free(cfg);
		return 1;
	}
	TlsContexts *tls = tls_contexts_build(cfg, err, sizeof(err));
	if (!tls) {
		fprintf(stderr, "%s\n", err);
		config_free(cfg);
		return 1;
	}
	tls_contexts_free(tls);
	int ndb = 0;
	for (const DbConfig *d = cfg->databases; d; d = d->next)
		ndb++;
	printf("%s: OK (%d database%s, %d auth_file user%s, %d polic%s, pool_mode=%s, "
	       "auth_type=%s)\n", path, ndb, ndb == 1 ? "" : "s",
	       cfg->userlist ? cfg->userlist->count : 0,
	       cfg->userlist && cfg->userlist->count == 1 ? "" : "s", cfg->policy.scripts.count,
	       cfg->policy.scripts.count == 1 ? "y" : "ies", config_pool_mode_name(cfg->pool_mode),
	       config_auth_type_name(cfg->auth_type));
	config_free(cfg);
	return 0;
}

static void free_deferred_cb(evutil_socket_t fd, short what, void *arg)
{
	Worker *w = arg;
	List *item, *tmp;
	w->free_armed = false;
	list_for_each_safe(item, &w->free_clients, tmp) {
		Client *c = container_of(item, Client, head);
		if (!client_has_socket(c))
			client_free(c);
	}
	list_for_each_safe(item, &w->free_servers, tmp)
		server_free(container_of(item, Server, head));
}

static Worker *worker_create(void)
{
	Worker *w = xcalloc(1, sizeof(*w));
	/*
	 * Changes to epoll interest are batched and applied once per loop pass:
	 * an event added and deleted in the same pass (bufferevent_openssl does
	 * that for every write a TLS connection queues) costs no system call.
	 * Safe because no socket here is dup()ed.
	 */
	struct event_config *ec = event_config_new();
	if (ec)
		event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	w->base = ec ? event_base_new_with_config(ec) : NULL;
	if (ec)
		event_config_free(ec);
	if (!w->base) {
		free(w);
		return NULL;
	}
	list_init(&w->all_clients);
	list_init(&w->all_servers);
	list_init(&w->login_clients);
	list_init(&w->free_clients);
	list_init(&w->free_servers);
	w->free_ev = event_new(w->base, -1, 0, free_deferred_cb, w);
	if (!w->free_ev || !msgio_flusher_init(&w->flusher, w->base) || !pool_maintain_setup(w)) {
		if (w->free_ev)
			event_free(w->free_ev);
		event_base_free(w->base);
		free(w);
		return NULL;
	}
	return w;
}

/* Close everything still open so leak checkers see a clean exit. */
static void worker_destroy(Worker *w)
{
	List *item, *tmp;
	list_for_each_safe(item, &w->all_servers, tmp) {
		Server *s = container_of(item, Server, all_head);
		if (s->state != SV_FREE)
			server_disconnect(s, "shutdown");
	}
	list_for_each_safe(item, &w->all_clients, tmp) {
		Client *c = container_of(item, Client, all_head);
		if (c->state != CL_FREE)
			client_disconnect(c, NULL, "shutdown");
		msgio_output_free(&c->out);
		msgio_reader_free(&c->in);
		if (c->bev) {
			bufferevent_free(c->bev);	/* closes fd */
			c->bev = NULL;
		} else if (client_has_socket(c)) {
			evutil_closesocket(c->fd);
		}
		c->fd = -1;
	}
	enforce_shutdown(w);
	approvals_pg_stop();
	if (w->audit_sql)
		sqlinfo_cache_free(w->audit_sql);
	prepared_shutdown(w);
	free(w->ss_clean_sql);
	free_deferred_cb(-1, 0, w);
	msgio_release_thread_cache();	/* (its spare events belong to w->base) */
	msgio_flusher_free(&w->flusher);
	pool_maintain_teardown(w);
	event_free(w->free_ev);
	event_base_free(w->base);
	free(w);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	char err[1024];
	switch (sig) {
	case SIGHUP:
		log_info("got SIGHUP, reloading");
		if (!moat_reload(err, sizeof(err)))
			log_error("the old configuration stays in force");
		break;
	case SIGTERM:
		/*
		 * Kubernetes sends SIGTERM after a preStop hook that may have started
		 * the drain already: a repeated SIGTERM must not cut the drain short.
		 */
		if (moat->state == MOAT_DRAINING) {
			log_info("got SIGTERM, already draining (a second SIGINT stops at once)");
			break;
		}
		log_info("got SIGTERM");
		moat_shutdown(false);
		break;
	case SIGINT:
		log_info("got SIGINT");
		moat_shutdown(false);
		break;
	case SIGUSR1:
		log_info("got SIGUSR1, pausing");
		pool_pause_all(true);
		break;
	case SIGUSR2:
		log_info("got SIGUSR2, resuming");
		pool_pause_all(false);
		break;
	}
}

static struct event *signal_events[5];

static void signals_setup(Worker *w)
{
	static const int sigs[] = { SIGHUP, SIGTERM, SIGINT, SIGUSR1, SIGUSR2 };
	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < ARRAY_SIZE(sigs); i++) {
		signal_events[i] = evsignal_new(w->base, sigs[i], signal_cb, NULL);
		event_add(signal_events[i], NULL);
	}
}

static void signals_teardown(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(signal_events); i++)
		if (signal_events[i])
			event_free(signal_events[i]);
}

static bool moat_start(Moat *m, const Options *o)
{
	log_verbosity = LOG_INFO + m->cfg->verbose + o->verbosity;
	log_set_json(m->cfg->log_format && strcmp(m->cfg->log_format, "json") == 0);
	if (!log_open_file(m->cfg->logfile)) {
		log_fatal("could not open logfile %s", m->cfg->logfile);
		return false;
	}
	if (o->daemon && !daemon_go_background()) {
		log_fatal("could not go to the background");
		return false;
	}
	m->worker = worker_create();
	if (!m->worker) {
		log_fatal("could not create the event loop");
		return false;
	}
	admin_setup();
	char err[1024] = "";
	PolicyEngine *engine = NULL;
	if (!enforce_engine_build(m->cfg, &engine, err, sizeof(err))) {
		log_fatal("%s", err);
		return false;
	}
	enforce_install(m->worker, engine);
	/* Before any port answers: a SIGHUP sent as soon as one does must reload, not kill. */
	signals_setup(m->worker);
	/* HTTP first: once the PostgreSQL port answers, the probes do too. */
	if (!http_start(m->worker->base, m->cfg)) {
		log_fatal("could not start the HTTP listener on %s", m->cfg->http_listen);
		return false;
	}
	if (!audit_start(&m->cfg->audit, err, sizeof(err))) {
		log_fatal("%s", err);
		return false;
	}
	TlsContexts *tls = tls_contexts_build(m->cfg, err, sizeof(err));
	if (!tls) {
		log_fatal("%s", err);
		return false;
	}
	tls_contexts_install(tls);
	if (!listener_start(m->worker, m->cfg)) {
		log_fatal("nothing to listen on: set listen_addr/listen_port or unix_socket_dir");
		return false;
	}
	if (!daemon_drop_privileges(o->user ? o->user : m->cfg->user))
		return false;
	if (!daemon_write_pidfile(m->cfg->pidfile))
		return false;
	janitor_start(m->worker);
	approvals_pg_configure(m->worker, m->cfg);
	log_info("pgmoat %s started, pid %d", PACKAGE_VERSION, (int)getpid());
	return true;
}

static void moat_stop(Moat *m)
{
	janitor_stop();
	signals_teardown();
	listener_close_all();
	http_stop();
	if (m->worker)
		worker_destroy(m->worker);
	audit_stop();	/* after the last session_end: the queue is drained to the sink */
	admin_cleanup();
	auth_query_cleanup();
	pool_free_all();
	tls_shutdown();
	daemon_remove_pidfile(m->cfg->pidfile);
	log_info("pgmoat stopped");
	config_free(m->cfg);
	free(m->config_path);
	free(m);
}

int main(int argc, char **argv)
{
	evmem_install();
	if (argc > 1 && strcmp(argv[1], "try") == 0)
		return try_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "audit") == 0)
		return audit_cli_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "replay") == 0)
		return audit_cli_replay(argc - 1, argv + 1);
	Options o = { 0 };
	int rc = parse_options(argc, argv, &o);
	if (rc >= 0)
		return rc;
	if (o.check)
		return run_check(o.config);
	char err[1024] = "";
	Config *cfg = config_load(o.config, err, sizeof(err));
	if (!cfg) {
		fprintf(stderr, "pgmoat: %s\n", err);
		return 1;
	}
	/*
	 * Connection buffers are allocated and freed per message; without these
	 * glibc would shrink and regrow the heap (brk) on most transactions.
	 */
	mallopt(M_TRIM_THRESHOLD, 32 * 1024 * 1024);
	mallopt(M_TOP_PAD, 1024 * 1024);
	moat = xcalloc(1, sizeof(*moat));
	moat->cfg = cfg;
	moat->cfg_epoch = 1;
	moat->config_path = xstrdup(o.config);
	moat->start_time = util_now_wall();
	list_init(&moat->databases);
	list_init(&moat->users);
	list_init(&moat->pools);
	rc = 1;
	if (moat_start(moat, &o)) {
		event_base_dispatch(moat->worker->base);
		rc = 0;
	}
	moat_stop(moat);
	msgio_release_thread_cache();
	client_release_thread_cache();
	evmem_release_thread_cache();
	return rc;
}
