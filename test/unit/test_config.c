/* Configuration: pgbouncer.ini, native YAML, the key table and durations. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "src/config.h"
#include "src/log.h"

/* ------------------------------------------------------------ fixtures */

static char tmpdir[64];
static char *written[32];
static int nwritten;
static char errbuf[1024];

static void tmp_setup(void)
{
	strcpy(tmpdir, "/tmp/pgmoat-cfg-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
	nwritten = 0;
	errbuf[0] = '\0';
}

static void tmp_teardown(void)
{
	/* Reverse order so that subdirectories are empty before rmdir. */
	for (int i = nwritten - 1; i >= 0; i--) {
		if (unlink(written[i]) != 0)
			rmdir(written[i]);
		free(written[i]);
	}
	rmdir(tmpdir);
}

static char *tmp_path(const char *name)
{
	char *p = NULL;
	cr_assert(asprintf(&p, "%s/%s", tmpdir, name) > 0);
	return p;
}

static void track(char *path)
{
	cr_assert(nwritten < (int)(sizeof(written) / sizeof(written[0])));
	written[nwritten++] = path;
}

static void tmp_mkdir(const char *name)
{
	char *p = tmp_path(name);
	cr_assert_eq(mkdir(p, 0700), 0);
	track(p);
}

/* Write a file under the temp dir; returns its path (freed at teardown). */
static const char *tmp_write(const char *name, const char *text)
{
	char *p = tmp_path(name);
	FILE *f = fopen(p, "w");
	cr_assert_not_null(f, "cannot write %s", p);
	fputs(text, f);
	fclose(f);
	track(p);
	return p;
}

static Config *load_ok(const char *path)
{
	Config *cfg = config_load(path, errbuf, sizeof(errbuf));
	cr_assert_not_null(cfg, "unexpected config error: %s", errbuf);
	return cfg;
}

/* Load must fail with exactly "<path>:<line>: <msg>" (line 0: "<path>: <msg>"). */
static void expect_load_error(const char *path, int line, const char *fmt, ...)
{
	Config *cfg = config_load(path, errbuf, sizeof(errbuf));
	cr_assert_null(cfg, "config %s loaded but should fail", path);
	char msg[512], want[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		snprintf(want, sizeof(want), "%s:%d: %s", path, line, msg);
	else
		snprintf(want, sizeof(want), "%s: %s", path, msg);
	cr_assert_str_eq(errbuf, want);
}

/* SHOW CONFIG row for key, or fails the test. Caller frees view->value. */
static ConfigKeyView view_of(const Config *cfg, const char *key)
{
	ConfigKeyView v;
	for (int i = 0; i < config_key_count(); i++) {
		config_key_view(cfg, i, &v);
		if (strcmp(v.key, key) == 0)
			return v;
		free(v.value);
	}
	cr_assert_fail("no SHOW CONFIG row for %s", key);
	return v;
}

static void expect_view(const Config *cfg, const char *key, const char *value, const char *def)
{
	ConfigKeyView v = view_of(cfg, key);
	cr_expect_str_eq(v.value, value, "%s value", key);
	cr_expect_str_eq(v.default_value, def, "%s default", key);
	free(v.value);
}

#define MINIMAL_INI "[pgbouncer]\nlisten_addr = 127.0.0.1\n"

TestSuite(config, .init = tmp_setup, .fini = tmp_teardown);

/* ------------------------------------------------------------ key table */

/* Captured from `SHOW CONFIG` of the Debian pgbouncer 1.18.0. */
static const char *const pgbouncer_118_keys[] = {
	"admin_users", "application_name_add_host", "auth_file", "auth_hba_file", "auth_query",
	"auth_type", "auth_user", "autodb_idle_timeout", "client_idle_timeout",
	"client_login_timeout", "client_tls_ca_file", "client_tls_cert_file", "client_tls_ciphers",
	"client_tls_dheparams", "client_tls_ecdhcurve", "client_tls_key_file",
	"client_tls_protocols", "client_tls_sslmode", "conffile", "default_pool_size",
	"disable_pqexec", "dns_max_ttl", "dns_nxdomain_ttl", "dns_zone_check_period",
	"idle_transaction_timeout", "ignore_startup_parameters", "job_name", "listen_addr",
	"listen_backlog", "listen_port", "log_connections", "log_disconnections",
	"log_pooler_errors", "log_stats", "logfile", "max_client_conn", "max_db_connections",
	"max_packet_size", "max_user_connections", "min_pool_size", "pidfile", "pkt_buf",
	"pool_mode", "query_timeout", "query_wait_timeout", "reserve_pool_size",
	"reserve_pool_timeout", "resolv_conf", "sbuf_loopcnt", "server_check_delay",
	"server_check_query", "server_connect_timeout", "server_fast_close", "server_idle_timeout",
	"server_lifetime", "server_login_retry", "server_reset_query", "server_reset_query_always",
	"server_round_robin", "server_tls_ca_file", "server_tls_cert_file", "server_tls_ciphers",
	"server_tls_key_file", "server_tls_protocols", "server_tls_sslmode", "so_reuseport",
	"stats_period", "stats_users", "suspend_timeout", "syslog", "syslog_facility",
	"syslog_ident", "tcp_defer_accept", "tcp_keepalive", "tcp_keepcnt", "tcp_keepidle",
	"tcp_keepintvl", "tcp_socket_buffer", "tcp_user_timeout", "unix_socket_dir",
	"unix_socket_group", "unix_socket_mode", "user", "verbose",
};

static const char *const pgbouncer_118_fixed[] = {
	"disable_pqexec", "job_name", "listen_addr", "listen_backlog", "listen_port", "pidfile",
	"pkt_buf", "resolv_conf", "so_reuseport", "unix_socket_dir", "unix_socket_group",
	"unix_socket_mode", "user",
};

static bool is_fixed(const char *key)
{
	for (size_t i = 0; i < sizeof(pgbouncer_118_fixed) / sizeof(pgbouncer_118_fixed[0]); i++)
		if (strcmp(pgbouncer_118_fixed[i], key) == 0)
			return true;
	return false;
}

Test(config, lists_keys_in_pgbouncer_order_when_showing_config)
{
	Config *cfg = load_ok(tmp_write("p.ini", MINIMAL_INI));
	int n = (int)(sizeof(pgbouncer_118_keys) / sizeof(pgbouncer_118_keys[0]));
	cr_assert_eq(config_key_count(), n);
	for (int i = 0; i < n; i++) {
		ConfigKeyView v;
		config_key_view(cfg, i, &v);
		cr_expect_str_eq(v.key, pgbouncer_118_keys[i], "row %d", i);
		cr_expect_eq(v.changeable, !is_fixed(v.key), "changeable flag of %s", v.key);
		free(v.value);
	}
	config_free(cfg);
}

Test(config, matches_pgbouncer_defaults_when_ini_is_minimal)
{
	const char *path = tmp_write("p.ini", MINIMAL_INI);
	Config *cfg = load_ok(path);
	cr_expect_eq(cfg->listen_port, 6432);
	cr_expect_str_eq(cfg->unix_socket_dir, "/tmp");
	cr_expect_eq(cfg->unix_socket_mode, 0777);
	cr_expect_eq(cfg->default_pool_size, 20);
	cr_expect_eq(cfg->max_client_conn, 100);
	cr_expect_eq(cfg->pool_mode, POOL_SESSION);
	cr_expect_eq(cfg->auth_type, AUTH_MD5);
	cr_expect_str_eq(cfg->server_reset_query, "DISCARD ALL");
	cr_expect_str_eq(cfg->server_check_query, "select 1");
	cr_expect_eq(cfg->server_check_delay, 30 * USEC_PER_SEC);
	cr_expect_eq(cfg->server_lifetime, 3600 * USEC_PER_SEC);
	cr_expect_eq(cfg->server_idle_timeout, 600 * USEC_PER_SEC);
	cr_expect_eq(cfg->server_connect_timeout, 15 * USEC_PER_SEC);
	cr_expect_eq(cfg->server_login_retry, 15 * USEC_PER_SEC);
	cr_expect_eq(cfg->client_login_timeout, 60 * USEC_PER_SEC);
	cr_expect_eq(cfg->query_wait_timeout, 120 * USEC_PER_SEC);
	cr_expect_eq(cfg->reserve_pool_timeout, 5 * USEC_PER_SEC);
	cr_expect_eq(cfg->autodb_idle_timeout, 3600 * USEC_PER_SEC);
	cr_expect_eq(cfg->suspend_timeout, 10 * USEC_PER_SEC);
	cr_expect_eq(cfg->query_timeout, 0);
	cr_expect_eq(cfg->ignore_startup_parameters.count, 0);
	cr_expect(cfg->log_connections && cfg->log_disconnections && cfg->log_pooler_errors);
	cr_expect(cfg->log_stats && cfg->tcp_keepalive && cfg->tcp_defer_accept);
	cr_expect(!cfg->server_reset_query_always && !cfg->syslog);
	cr_expect_eq(cfg->stats_period, 60 * USEC_PER_SEC);
	cr_expect_eq(cfg->pkt_buf, 4096);
	cr_expect_eq(cfg->max_packet_size, 2147483647);
	cr_expect_eq(cfg->listen_backlog, 128);
	cr_expect_eq(cfg->sbuf_loopcnt, 5);
	cr_expect_eq(cfg->workers, 1);
	cr_expect_null(cfg->auth_file);
	cr_expect_null(cfg->userlist);
	cr_expect_null(cfg->databases);

	expect_view(cfg, "reserve_pool_timeout", "5", "5");
	expect_view(cfg, "query_wait_timeout", "120", "120");
	expect_view(cfg, "unix_socket_mode", "511", "0777");
	expect_view(cfg, "listen_addr", "127.0.0.1", "");
	expect_view(cfg, "verbose", "0", "");
	expect_view(cfg, "auth_type", "md5", "md5");
	expect_view(cfg, "pool_mode", "session", "session");
	expect_view(cfg, "conffile", path, "");
	expect_view(cfg, "job_name", "pgbouncer", "pgbouncer");
	expect_view(cfg, "client_tls_sslmode", "disable", "disable");
	expect_view(cfg, "auth_query",
		    "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END "
		    "FROM pg_catalog.pg_authid WHERE rolname=$1 AND rolcanlogin",
		    "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END "
		    "FROM pg_catalog.pg_authid WHERE rolname=$1 AND rolcanlogin");
	config_free(cfg);
}

Test(config, sets_every_key_type_when_ini_has_values)
{
	Config *cfg = load_ok(tmp_write("p.ini",
		"; a comment\n"
		"# another\n"
		"[pgbouncer]\n"
		"listen_addr = 127.0.0.1, ::1\n"
		"listen_port=7000\n"
		"unix_socket_dir =\n"
		"unix_socket_mode = 0700\n"
		"max_client_conn = 0x10\n"
		"server_reset_query_always = yes\n"
		"tcp_keepalive = off\n"
		"log_stats = 0\n"
		"syslog = TRUE\n"
		"server_check_query = select 2 ; not a comment\n"
		"reserve_pool_timeout = 0.5\n"
		"query_wait_timeout = 1500ms\n"
		"server_lifetime = 10min\n"
		"client_idle_timeout = 0.3\n"
		"pool_mode = Transaction\n"
		"auth_type = scram-sha-256\n"
		"admin_users = alice,  bob ,carol\n"
		"ignore_startup_parameters = extra_float_digits, search_path\n"
		"client_tls_sslmode = prefer\n"
		"client_tls_cert_file = server.crt\n"
		"client_tls_key_file = server.key\n"
		"verbose = 2\n"
		"max_prepared_statements = 10\n"));
	cr_expect_str_eq(cfg->listen_addr, "127.0.0.1, ::1");
	cr_expect_eq(cfg->listen_port, 7000);
	cr_expect_null(cfg->unix_socket_dir);
	cr_expect_eq(cfg->unix_socket_mode, 0700);
	cr_expect_eq(cfg->max_client_conn, 16);
	cr_expect(cfg->server_reset_query_always);
	cr_expect(!cfg->tcp_keepalive);
	cr_expect(!cfg->log_stats);
	cr_expect(cfg->syslog);
	cr_expect_str_eq(cfg->server_check_query, "select 2 ; not a comment");
	cr_expect_eq(cfg->reserve_pool_timeout, 500000);
	cr_expect_eq(cfg->query_wait_timeout, 1500000);
	cr_expect_eq(cfg->server_lifetime, 600 * USEC_PER_SEC);
	cr_expect_eq(cfg->client_idle_timeout, 300000);
	cr_expect_eq(cfg->pool_mode, POOL_TRANSACTION);
	cr_expect_eq(cfg->auth_type, AUTH_SCRAM);
	cr_assert_eq(cfg->admin_users.count, 3);
	cr_expect_str_eq(cfg->admin_users.items[1], "bob");
	cr_expect(strlist_contains(&cfg->ignore_startup_parameters, "search_path"));
	cr_expect_str_eq(cfg->client_tls_sslmode, "prefer");
	cr_expect_eq(cfg->verbose, 2);
	cr_expect_eq(cfg->max_prepared_statements, 10);

	expect_view(cfg, "reserve_pool_timeout", "0.5", "5");
	expect_view(cfg, "query_wait_timeout", "1.5", "120");
	expect_view(cfg, "server_lifetime", "600", "3600");
	expect_view(cfg, "unix_socket_dir", "", "/tmp");
	expect_view(cfg, "unix_socket_mode", "448", "0777");
	expect_view(cfg, "server_reset_query_always", "1", "0");
	expect_view(cfg, "pool_mode", "transaction", "session");
	expect_view(cfg, "auth_type", "scram-sha-256", "md5");
	expect_view(cfg, "admin_users", "alice, bob, carol", "");
	config_free(cfg);
}

Test(config, warns_and_continues_when_ini_key_is_unknown)
{
	char *logpath = tmp_path("log.txt");
	track(logpath);
	cr_assert(log_open_file(logpath));
	const char *path = tmp_write("p.ini", "[pgbouncer]\nlisten_addr = 127.0.0.1\nbogus_key = 1\n"
					      "listen_port = 7001\n");
	Config *cfg = load_ok(path);
	cr_assert(log_open_file(NULL));
	cr_expect_eq(cfg->listen_port, 7001);
	config_free(cfg);

	FILE *f = fopen(logpath, "r");
	cr_assert_not_null(f);
	char buf[4096] = "";
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	char want[512];
	snprintf(want, sizeof(want), "%s:3: unknown key 'bogus_key'", path);
	cr_expect(strstr(buf, want) != NULL, "log lacks '%s': %s", want, buf);
}

Test(config, fails_with_file_line_when_ini_value_is_bad)
{
	const char *p1 = tmp_write("a.ini", "[pgbouncer]\nlisten_addr = 127.0.0.1\npool_mode = bogus\n");
	expect_load_error(p1, 3, "invalid value for key 'pool_mode': bogus");
	const char *p2 = tmp_write("b.ini", "[pgbouncer]\n\nlisten_port = abc\n");
	expect_load_error(p2, 3, "invalid value for key 'listen_port': abc");
	const char *p3 = tmp_write("c.ini", "[pgbouncer]\nlisten_port = 70000\n");
	expect_load_error(p3, 2, "invalid value for key 'listen_port': 70000");
	const char *p4 = tmp_write("d.ini", "[pgbouncer]\nreserve_pool_timeout = 10x\n");
	expect_load_error(p4, 2, "invalid value for key 'reserve_pool_timeout': 10x");
	const char *p5 = tmp_write("e.ini", "[pgbouncer]\nlog_stats = maybe\n");
	expect_load_error(p5, 2, "invalid value for key 'log_stats': maybe");
	const char *p6 = tmp_write("f.ini", "[pgbouncer]\ndefault_pool_size = -1\n");
	expect_load_error(p6, 2, "invalid value for key 'default_pool_size': -1");
	const char *p7 = tmp_write("g.ini", "[pgbouncer]\nauth_type = pam\n");
	expect_load_error(p7, 2, "invalid value for key 'auth_type': pam");
	const char *p8 = tmp_write("h.ini", "[pgbouncer]\nlisten_addr\n");
	expect_load_error(p8, 2, "syntax error: expected key = value");
	const char *p9 = tmp_write("i.ini", "listen_addr = x\n");
	expect_load_error(p9, 1, "key 'listen_addr' outside of any section");
	const char *p10 = tmp_write("j.ini", "[pgbouncer\n");
	expect_load_error(p10, 1, "syntax error: unterminated section header");
}

Test(config, fails_when_nothing_to_listen_on)
{
	const char *path = tmp_write("p.ini", "[pgbouncer]\nunix_socket_dir =\n");
	expect_load_error(path, 0, "neither listen_addr nor unix_socket_dir is set: nothing to listen on");
}

Test(config, refuses_client_tls_without_certificate)
{
	const char *path = tmp_write("p.ini", MINIMAL_INI "client_tls_sslmode = require\n");
	expect_load_error(path, 0, "client_tls_sslmode = require needs client_tls_cert_file and "
			  "client_tls_key_file");
	const char *bad = tmp_write("q.ini", MINIMAL_INI "client_tls_sslmode = sometimes\n");
	expect_load_error(bad, 3, "invalid value for key 'client_tls_sslmode': sometimes");
}

Test(config, fails_when_config_file_is_missing)
{
	char *path = tmp_path("missing.ini");
	expect_load_error(path, 0, "cannot read config file: No such file or directory");
	free(path);
}

/* ------------------------------------------------------------- include */

Test(config, reads_include_relative_to_including_file)
{
	tmp_mkdir("conf.d");
	tmp_write("conf.d/pool.ini", "pool_mode = statement\n%include ../dbs.ini\n");
	tmp_write("dbs.ini", "[databases]\napp = host=127.0.0.1 dbname=appdb\n");
	const char *path = tmp_write("main.ini", "[pgbouncer]\nlisten_addr = 127.0.0.1\n"
						 "%include conf.d/pool.ini\n"
						 "[pgbouncer]\ndefault_pool_size = 7\n");
	Config *cfg = load_ok(path);
	cr_expect_eq(cfg->pool_mode, POOL_STATEMENT);
	cr_expect_eq(cfg->default_pool_size, 7);
	const DbConfig *db = config_find_db(cfg, "app");
	cr_assert_not_null(db);
	cr_expect_str_eq(db->dbname, "appdb");
	cr_expect_eq(db->src_line, 2);
	cr_expect(strstr(db->src_file, "dbs.ini") != NULL);
	config_free(cfg);
}

Test(config, fails_when_include_loops)
{
	tmp_write("b.ini", "%include a.ini\n");
	const char *a = tmp_write("a.ini", "[pgbouncer]\nlisten_addr = 127.0.0.1\n%include b.ini\n");
	Config *cfg = config_load(a, errbuf, sizeof(errbuf));
	cr_assert_null(cfg);
	cr_expect(strstr(errbuf, "%include nested more than 10 deep") != NULL, "%s", errbuf);
}

Test(config, fails_with_file_line_when_include_is_missing)
{
	const char *path = tmp_write("main.ini", "[pgbouncer]\n%include nope.ini\n");
	char *missing = tmp_path("nope.ini");
	expect_load_error(path, 2, "cannot read %%include file '%s': No such file or directory",
			  missing);
	free(missing);
}

/* ----------------------------------------------------------- databases */

Test(config, parses_connstrings_with_quoting_and_fallback)
{
	const char *path = tmp_write("p.ini",
		MINIMAL_INI
		"[databases]\n"
		"app = host=db.local port=6543 dbname=appdb user=app_rw password='it''s \\'q\\' x' "
		"pool_size=5 min_pool_size=1 reserve_pool=2 max_db_connections=9 pool_mode=transaction\n"
		"spaced = dbname = 'my db'  application_name='a b' connect_query='select ''x'''\n"
		"sock = host=/var/run/postgresql auth_user=lookup client_encoding=UTF8 "
		"datestyle=ISO timezone=UTC\n"
		"* = host=127.0.0.1\n");
	Config *cfg = load_ok(path);
	const DbConfig *app = config_find_db(cfg, "app");
	cr_assert_not_null(app);
	cr_expect_str_eq(app->host, "db.local");
	cr_expect_eq(app->port, 6543);
	cr_expect_str_eq(app->dbname, "appdb");
	cr_expect_str_eq(app->user, "app_rw");
	cr_expect_str_eq(app->password, "it's 'q' x");
	cr_expect_eq(app->pool_size, 5);
	cr_expect_eq(app->min_pool_size, 1);
	cr_expect_eq(app->reserve_pool, 2);
	cr_expect_eq(app->max_db_connections, 9);
	cr_expect_eq(app->pool_mode, POOL_TRANSACTION);
	cr_expect_str_eq(app->src_file, path);
	cr_expect_eq(app->src_line, 4);

	const DbConfig *sp = config_find_db(cfg, "spaced");
	cr_assert_not_null(sp);
	cr_expect_str_eq(sp->dbname, "my db");
	cr_expect_str_eq(sp->application_name, "a b");
	cr_expect_str_eq(sp->connect_query, "select 'x'");
	cr_expect_null(sp->host);
	cr_expect_eq(sp->port, 5432);
	cr_expect_eq(sp->pool_size, -1);
	cr_expect_eq(sp->pool_mode, -1);

	const DbConfig *sock = config_find_db(cfg, "sock");
	cr_expect_str_eq(sock->host, "/var/run/postgresql");
	cr_expect_str_eq(sock->auth_user, "lookup");
	cr_expect_str_eq(sock->client_encoding, "UTF8");
	cr_expect_str_eq(sock->datestyle, "ISO");
	cr_expect_str_eq(sock->timezone, "UTC");

	const DbConfig *other = config_find_db(cfg, "whatever");
	cr_assert_not_null(other);
	cr_expect_str_eq(other->name, "*");
	cr_expect_null(other->dbname);
	cr_expect_str_eq(other->host, "127.0.0.1");
	config_free(cfg);
}

Test(config, returns_null_for_unknown_db_when_no_fallback)
{
	Config *cfg = load_ok(tmp_write("p.ini", MINIMAL_INI "[databases]\napp = dbname=x\n"));
	cr_expect_null(config_find_db(cfg, "other"));
	cr_expect_not_null(config_find_db(cfg, "app"));
	config_free(cfg);
}

Test(config, keeps_last_definition_when_database_is_repeated)
{
	Config *cfg = load_ok(tmp_write("p.ini", MINIMAL_INI "[databases]\n"
					"a = dbname=one\nb = dbname=two\na = dbname=three\n"));
	cr_assert_str_eq(cfg->databases->name, "a");
	cr_expect_str_eq(cfg->databases->dbname, "three");
	cr_expect_eq(cfg->databases->src_line, 6);
	cr_assert_str_eq(cfg->databases->next->name, "b");
	cr_expect_null(cfg->databases->next->next);
	config_free(cfg);
}

Test(config, fails_with_file_line_when_connstring_is_bad)
{
	const char *p1 = tmp_write("a.ini", MINIMAL_INI "[databases]\napp = host=x bogus=1\n");
	expect_load_error(p1, 4, "database 'app': unknown parameter 'bogus'");
	const char *p2 = tmp_write("b.ini", MINIMAL_INI "[databases]\napp = port=abc\n");
	expect_load_error(p2, 4, "database 'app': invalid value for 'port': abc");
	const char *p3 = tmp_write("c.ini", MINIMAL_INI "[databases]\napp = password='secret\n");
	expect_load_error(p3, 4, "database 'app': unterminated quoted value");
	const char *p4 = tmp_write("d.ini", MINIMAL_INI "[databases]\napp = host\n");
	expect_load_error(p4, 4, "database 'app': syntax error: expected key=value");
	const char *p5 = tmp_write("e.ini", MINIMAL_INI "[databases]\napp = pool_mode=sometimes\n");
	expect_load_error(p5, 4, "database 'app': invalid value for 'pool_mode': sometimes");
	const char *p6 = tmp_write("f.ini", MINIMAL_INI "[databases]\napp = pool_size=-2\n");
	expect_load_error(p6, 4, "database 'app': invalid value for 'pool_size': -2");
}

Test(config, never_shows_a_password_in_show_config)
{
	Config *cfg = load_ok(tmp_write("p.ini", MINIMAL_INI "auth_user = lookup\n[databases]\n"
					"app = user=u password=TopSecret123\n"));
	cr_assert_str_eq(cfg->databases->password, "TopSecret123");
	for (int i = 0; i < config_key_count(); i++) {
		ConfigKeyView v;
		config_key_view(cfg, i, &v);
		cr_expect(strstr(v.value, "TopSecret123") == NULL, "%s shows the password", v.key);
		free(v.value);
	}
	config_free(cfg);
}

Test(config, parses_users_section)
{
	Config *cfg = load_ok(tmp_write("p.ini", MINIMAL_INI "[users]\n"
					"alice = pool_mode=session max_user_connections=5\n"
					"bob = pool_mode=statement\n"));
	const UserConfig *a = config_find_user(cfg, "alice");
	cr_assert_not_null(a);
	cr_expect_eq(a->pool_mode, POOL_SESSION);
	cr_expect_eq(a->max_user_connections, 5);
	const UserConfig *b = config_find_user(cfg, "bob");
	cr_expect_eq(b->pool_mode, POOL_STATEMENT);
	cr_expect_eq(b->max_user_connections, -1);
	cr_expect_null(config_find_user(cfg, "carol"));
	config_free(cfg);

	const char *bad = tmp_write("q.ini", MINIMAL_INI "[users]\nalice = pool_size=3\n");
	expect_load_error(bad, 4, "user 'alice': unknown parameter 'pool_size'");
}

/* ----------------------------------------------------------- auth_file */

Test(config, loads_auth_file_relative_to_config_dir)
{
	tmp_write("userlist.txt", "\"alice\" \"md5" "0123456789abcdef0123456789abcdef\"\n");
	Config *cfg = load_ok(tmp_write("p.ini", MINIMAL_INI "auth_file = userlist.txt\n"));
	cr_assert_not_null(cfg->userlist);
	const UserlistEntry *e = userlist_find(cfg->userlist, "alice");
	cr_assert_not_null(e);
	cr_expect_eq(e->kind, SECRET_MD5);
	expect_view(cfg, "auth_file", "userlist.txt", "");
	config_free(cfg);
}

Test(config, fails_naming_auth_file_when_unreadable_or_malformed)
{
	const char *path = tmp_write("p.ini", MINIMAL_INI "auth_file = nope.txt\n");
	char *missing = tmp_path("nope.txt");
	expect_load_error(path, 0, "%s: cannot read auth_file: No such file or directory", missing);
	free(missing);

	const char *ul = tmp_write("bad.txt", "\"a\" \"b\"\n\"c\n");
	const char *p2 = tmp_write("q.ini", MINIMAL_INI "auth_file = bad.txt\n");
	expect_load_error(p2, 0, "%s:2: unterminated quoted field", ul);
}

/* ---------------------------------------------------------------- yaml */

static const char design_yaml[] =
	"# the DESIGN.md layout\n"
	"listen:   { host: 127.0.0.1, port: 6433,\n"
	"            tls: { mode: disable, cert: server.crt, key: server.key, ca: ca.crt } }\n"
	"workers:  1\n"
	"pidfile: /tmp/pgmoat-test.pid\n"
	"logfile: pgmoat.log\n"
	"admin:    { users: [admin, root], stats_users: [stats], http: 127.0.0.1:8432, token_file: admin.token }\n"
	"pooling:  { pool_mode: transaction, default_pool_size: 20, max_client_conn: 10000,\n"
	"            server_idle_timeout: 10m, query_wait_timeout: 30s, reserve_pool_timeout: 500ms,\n"
	"            server_lifetime: 1h, client_login_timeout: 45, log_connections: false,\n"
	"            ignore_startup_parameters: [extra_float_digits, search_path] }\n"
	"databases:\n"
	"  app:    { host: 127.0.0.1, port: 5432, dbname: app,\n"
	"            user: app_rw, password_file: app.pass,\n"
	"            pool_mode: transaction, pool_size: 20,\n"
	"            tls: { mode: prefer, ca: ca.crt },\n"
	"            roles: { reader: { user: app_ro, password_file: ro.pass },\n"
	"                     writer: { user: app_rw, password_file: rw.pass } } }\n"
	"  other:\n"
	"    dbname: otherdb\n"
	"    password: inline\n"
	"    max_db_connections: 4\n"
	"  \"*\": { host: /var/run/postgresql }\n"
	"users:\n"
	"  alice: { pool_mode: session, max_user_connections: 3 }\n"
	"auth:\n"
	"  type: scram-sha-256\n"
	"  file: userlist.txt\n"
	"  jwt:\n"
	"    keys: [ { kid: ci-1, alg: RS256, file: ci-1.pem } ]\n"
	"    jwks_file: jwks.json\n"
	"    issuer: https://token.example\n"
	"    audience: pgmoat\n"
	"    leeway: 30s\n"
	"    max_ttl: 1h\n"
	"    role_claim: db_role\n"
	"    allow_insecure: false\n"
	"policy:   { scripts: [policies/guardrails.lua, policies/pii.lua], mode: enforce,\n"
	"            time_budget: 50ms, memory_limit: 64MB, hash_key_file: hash.key }\n"
	"audit:    { sink: file, path: audit.jsonl, sql: normalized, required: false }\n"
	"approvals: { timeout: 10m, store: memory, webhook: 'http://127.0.0.1:9/hook' }\n";

/* jwt: a fresh RSA public key in PEM, for auth.jwt.keys */
static char *rsa_public_pem(void)
{
	EVP_PKEY *k = EVP_RSA_gen(2048);
	BIO *b = BIO_new(BIO_s_mem());
	char *data;
	cr_assert(k && b && PEM_write_bio_PUBKEY(b, k));
	long n = BIO_get_mem_data(b, &data);
	char *out = strndup(data, (size_t)n);
	BIO_free(b);
	EVP_PKEY_free(k);
	return out;
}

Test(config, loads_design_example_when_yaml)
{
	char *pem = rsa_public_pem();
	tmp_write("ci-1.pem", pem);
	free(pem);
	tmp_write("jwks.json", "{\"keys\": []}");
	tmp_write("ro.pass", "ro-secret\n");
	tmp_write("rw.pass", "rw-secret\n");
	tmp_write("app.pass", "s3cret\n");
	tmp_write("userlist.txt", "\"alice\" \"pw\"\n");
	Config *cfg = load_ok(tmp_write("pgmoat.yaml", design_yaml));
	cr_expect_str_eq(cfg->listen_addr, "127.0.0.1");
	cr_expect_eq(cfg->listen_port, 6433);
	cr_expect_str_eq(cfg->client_tls_sslmode, "disable");
	cr_expect_str_eq(cfg->client_tls_cert_file, "server.crt");
	cr_expect_eq(cfg->workers, 1);
	cr_expect_str_eq(cfg->pidfile, "/tmp/pgmoat-test.pid");
	cr_expect_str_eq(cfg->logfile, "pgmoat.log");
	cr_expect_eq(cfg->admin_users.count, 2);
	cr_expect(strlist_contains(&cfg->admin_users, "root"));
	cr_expect(strlist_contains(&cfg->stats_users, "stats"));
	cr_expect_eq(cfg->pool_mode, POOL_TRANSACTION);
	cr_expect_eq(cfg->max_client_conn, 10000);
	cr_expect_eq(cfg->server_idle_timeout, 600 * USEC_PER_SEC);
	cr_expect_eq(cfg->query_wait_timeout, 30 * USEC_PER_SEC);
	cr_expect_eq(cfg->reserve_pool_timeout, 500000);
	cr_expect_eq(cfg->server_lifetime, 3600 * USEC_PER_SEC);
	cr_expect_eq(cfg->client_login_timeout, 45 * USEC_PER_SEC);
	cr_expect(!cfg->log_connections);
	cr_expect_eq(cfg->ignore_startup_parameters.count, 2);
	cr_expect_eq(cfg->auth_type, AUTH_SCRAM);
	cr_assert_not_null(cfg->userlist);
	cr_expect_not_null(userlist_find(cfg->userlist, "alice"));

	const DbConfig *app = config_find_db(cfg, "app");
	cr_assert_not_null(app);
	cr_expect_str_eq(app->password, "s3cret");
	cr_expect_str_eq(app->user, "app_rw");
	cr_expect_eq(app->pool_size, 20);
	cr_expect_eq(app->pool_mode, POOL_TRANSACTION);
	cr_expect_eq(app->src_line, 13);
	const DbConfig *other = config_find_db(cfg, "other");
	cr_expect_str_eq(other->password, "inline");
	cr_expect_eq(other->max_db_connections, 4);
	cr_expect_str_eq(config_find_db(cfg, "nope")->host, "/var/run/postgresql");
	const UserConfig *alice = config_find_user(cfg, "alice");
	cr_assert_not_null(alice);
	cr_expect_eq(alice->max_user_connections, 3);
	/* jwt */
	const DbRole *reader = config_find_role(app, "reader");
	cr_assert_not_null(reader);
	cr_expect_str_eq(reader->user, "app_ro");
	cr_expect_str_eq(reader->password, "ro-secret");
	cr_expect_str_eq(config_find_role(app, "writer")->password, "rw-secret");
	cr_expect_null(config_find_role(app, "admin"));
	cr_expect(cfg->jwt.configured);
	cr_expect_eq(cfg->jwt.nkeys, 1);
	cr_expect_str_eq(cfg->jwt.keys[0].kid, "ci-1");
	cr_expect_str_eq(cfg->jwt.issuer, "https://token.example");
	cr_expect(strlist_contains(&cfg->jwt.audience, "pgmoat"));
	cr_expect_eq(cfg->jwt.leeway, 30 * USEC_PER_SEC);
	cr_expect_eq(cfg->jwt.max_ttl, 3600 * USEC_PER_SEC);
	cr_expect_str_eq(cfg->jwt.role_claim, "db_role");
	cr_expect(!cfg->jwt.allow_insecure);
	config_free(cfg);
}

/* jwt: the error names file:line (0: no line) and says at least want. */
static void expect_jwt_error(const char *path, int line, const char *want)
{
	Config *cfg = config_load(path, errbuf, sizeof(errbuf));
	cr_assert_null(cfg, "config %s loaded but should fail", path);
	char *prefix = line > 0 ? xasprintf("%s:%d: ", path, line) : xasprintf("%s: ", path);
	cr_expect(strncmp(errbuf, prefix, strlen(prefix)) == 0, "'%s' does not start with '%s'",
		  errbuf, prefix);
	cr_expect(strstr(errbuf, want), "'%s' lacks '%s'", errbuf, want);
	free(prefix);
}

Test(config, jwt_settings_are_checked_when_yaml)
{
	const char *p1 = tmp_write("j1.yaml", "auth:\n  type: jwt\n");
	expect_jwt_error(p1, 0, "auth type jwt needs auth.jwt");
	const char *p2 = tmp_write("j2.yaml", "auth:\n  type: jwt\n  jwt:\n"
					      "    keys: [ { kid: a, alg: RS256, file: missing.pem } ]\n");
	expect_jwt_error(p2, 4, "cannot read key file");
	const char *p3 = tmp_write("j3.yaml", "auth:\n  jwt:\n    leeway: soon\n");
	expect_jwt_error(p3, 3, "invalid value for key 'auth.jwt.leeway'");
	const char *p4 = tmp_write("j4.yaml", "auth:\n  jwt:\n    keyz: []\n");
	expect_jwt_error(p4, 3, "unknown key 'keyz' in 'auth.jwt'");
	const char *p5 = tmp_write("j5.yaml", "databases:\n  app:\n    roles:\n"
					      "      reader: { password: x }\n");
	expect_jwt_error(p5, 4, "needs a user");
	const char *p6 = tmp_write("j6.yaml", "databases:\n  app:\n    roles:\n"
					      "      reader: { user: r, pasword: x }\n");
	expect_jwt_error(p6, 4, "unknown key 'pasword' in 'databases.app.roles.reader'");
}

Test(config, loads_defaults_when_yaml_is_empty)
{
	Config *cfg = load_ok(tmp_write("empty.yml", "# nothing\n"));
	cr_expect_eq(cfg->listen_port, 6432);
	cr_expect_str_eq(cfg->unix_socket_dir, "/tmp");
	config_free(cfg);
}

Test(config, fails_with_line_when_yaml_key_is_unknown)
{
	const char *p1 = tmp_write("a.yaml", "listen: { port: 7000 }\npooling:\n  pool_mode: session\n"
					     "  bogus: 1\n");
	expect_load_error(p1, 4, "unknown key 'bogus' in 'pooling'");
	const char *p2 = tmp_write("b.yaml", "workers: 1\nlisen: {}\n");
	expect_load_error(p2, 2, "unknown key 'lisen' in 'top level'");
	const char *p3 = tmp_write("c.yaml", "databases:\n  app:\n    dbname: x\n    hots: y\n");
	expect_load_error(p3, 4, "unknown key 'hots' in 'databases.app'");
	const char *p4 = tmp_write("d.yaml", "listen:\n  host: 127.0.0.1\n  tls: { mode: disable, crt: x }\n");
	expect_load_error(p4, 3, "unknown key 'crt' in 'listen.tls'");
	const char *p5 = tmp_write("e.yaml", "admin:\n  userz: [a]\n");
	expect_load_error(p5, 2, "unknown key 'userz' in 'admin'");
}

Test(config, fails_with_line_when_yaml_type_is_wrong)
{
	const char *p1 = tmp_write("a.yaml", "pooling:\n  pool_mode: [a, b]\n");
	expect_load_error(p1, 2, "'pooling.pool_mode' must be a single value");
	const char *p2 = tmp_write("b.yaml", "listen: 6432\n");
	expect_load_error(p2, 1, "'listen' must be a mapping");
	const char *p3 = tmp_write("c.yaml", "pooling:\n  max_client_conn: lots\n");
	expect_load_error(p3, 2, "invalid value for key 'max_client_conn': lots");
	const char *p4 = tmp_write("d.yaml", "databases:\n  app: { port: abc }\n");
	expect_load_error(p4, 2, "invalid value for key 'databases.app.port': abc");
	const char *p5 = tmp_write("e.yaml", "workers: 0\n");
	expect_load_error(p5, 1, "invalid value for key 'workers': 0");
	const char *p6 = tmp_write("f.yaml", "- a\n- b\n");
	expect_load_error(p6, 1, "'top level' must be a mapping");
}

Test(config, fails_with_line_when_yaml_syntax_is_broken)
{
	const char *p = tmp_write("a.yaml", "pooling:\n  pool_mode: session\n listen: [\n");
	Config *cfg = config_load(p, errbuf, sizeof(errbuf));
	cr_assert_null(cfg);
	char want[256];
	snprintf(want, sizeof(want), "%s:3: YAML syntax error", p);
	cr_expect(strncmp(errbuf, want, strlen(want)) == 0, "got: %s", errbuf);
}

Test(config, reads_password_from_env_or_file)
{
	tmp_write("pw.txt", "from-file\n");
	setenv("PGMOAT_TEST_DB_PW", "from-env", 1);
	Config *cfg = load_ok(tmp_write("a.yaml", "databases:\n"
				      "  f: { password_file: pw.txt }\n"
				      "  e: { password_env: PGMOAT_TEST_DB_PW }\n"));
	cr_expect_str_eq(config_find_db(cfg, "f")->password, "from-file");
	cr_expect_str_eq(config_find_db(cfg, "e")->password, "from-env");
	config_free(cfg);
}

Test(config, fails_when_password_source_is_bad)
{
	const char *p1 = tmp_write("a.yaml", "databases:\n  app:\n    password: x\n    password_env: HOME\n");
	expect_load_error(p1, 4,
			  "database 'app': only one of password, password_file, password_env may be set");
	unsetenv("PGMOAT_TEST_UNSET_PW");
	const char *p2 = tmp_write("b.yaml", "databases:\n  app: { password_env: PGMOAT_TEST_UNSET_PW }\n");
	expect_load_error(p2, 2,
			  "database 'app': environment variable 'PGMOAT_TEST_UNSET_PW' (password_env) is not set");
	const char *p3 = tmp_write("c.yaml", "databases:\n  app:\n    password_file: none.pass\n");
	char *missing = tmp_path("none.pass");
	expect_load_error(p3, 3, "database 'app': cannot read password_file '%s': No such file or directory",
			  missing);
	free(missing);
}

Test(config, fails_when_yaml_auth_type_is_unknown)
{
	const char *p = tmp_write("a.yaml", "auth:\n  type: kerberos\n");
	expect_load_error(p, 2, "invalid value for key 'auth_type': kerberos");
}

Test(config, approvals_timeout_defaults_to_10m_and_parses)
{
	Config *cfg = load_ok(tmp_write("d.yaml", "workers: 1\n"));
	cr_expect_eq(cfg->approvals_timeout, 600 * USEC_PER_SEC);
	config_free(cfg);
	cfg = load_ok(tmp_write("t.yaml", "approvals: { timeout: 90s, store: memory }\n"));
	cr_expect_eq(cfg->approvals_timeout, 90 * USEC_PER_SEC);
	cr_expect_eq(cfg->approvals_store, APPROVALS_STORE_MEMORY);
	config_free(cfg);
	tmp_write("ap.key", "0123456789abcdef0123\n");
	cfg = load_ok(tmp_write("p.yaml", "approvals: { store: postgres, conninfo: 'dbname=x',\n"
				  "  key_file: ap.key }\n"));
	cr_expect_eq(cfg->approvals_store, APPROVALS_STORE_POSTGRES);
	cr_expect_str_eq(cfg->approvals_conninfo, "dbname=x");
	cr_expect_str_eq(cfg->approvals_key, "0123456789abcdef0123");
	config_free(cfg);
}

Test(config, approvals_rejects_bad_store_bad_timeout_and_unknown_keys)
{
	expect_load_error(tmp_write("s.yaml", "approvals:\n  store: postgres\n"), 2,
			  "'approvals.store: postgres' needs 'approvals.conninfo' and "
			  "'approvals.key_file'");
	expect_load_error(tmp_write("f.yaml", "approvals:\n  store: files\n"), 2,
			  "invalid value for key 'approvals.store': files (memory or postgres)");
	expect_load_error(tmp_write("b.yaml", "approvals:\n  timeout: 0\n"), 2,
			  "invalid value for key 'approvals.timeout': 0");
	expect_load_error(tmp_write("u.yaml", "approvals:\n  colour: red\n"), 2,
			  "unknown key 'colour' in 'approvals'");
}

/* ----------------------------------------------------------- durations */

static usec_t dur(const char *s)
{
	usec_t v = -1;
	cr_assert(config_parse_duration(s, &v), "rejected '%s'", s);
	return v;
}

Test(config, parses_durations_with_units)
{
	cr_expect_eq(dur("30"), 30 * USEC_PER_SEC);
	cr_expect_eq(dur("30s"), 30 * USEC_PER_SEC);
	cr_expect_eq(dur("500ms"), 500000);
	cr_expect_eq(dur("250us"), 250);
	cr_expect_eq(dur("10m"), 600 * USEC_PER_SEC);
	cr_expect_eq(dur("10min"), 600 * USEC_PER_SEC);
	cr_expect_eq(dur("1h"), 3600 * USEC_PER_SEC);
	cr_expect_eq(dur("2d"), 2 * 86400 * USEC_PER_SEC);
	cr_expect_eq(dur("1.5"), 1500000);
	cr_expect_eq(dur("0.3"), 300000);
	cr_expect_eq(dur(".5"), 500000);
	cr_expect_eq(dur("1.5h"), 5400 * USEC_PER_SEC);
	cr_expect_eq(dur("0.1234567"), 123456);
	cr_expect_eq(dur(" 7 "), 7 * USEC_PER_SEC);
	cr_expect_eq(dur("0"), 0);
	cr_expect_eq(dur("9223372036854775807us"), INT64_MAX);
}

Test(config, rejects_malformed_or_overflowing_durations)
{
	static const char *const bad[] = {
		"", " ", "10x", "-1s", "-1", "+1", "1e3", "s", ".", "5 s", "1.2.3", "nan", "inf",
		"0x10", "10sec", "9223372036854775808us", "99999999999999999999", "9999999999999d",
		"106751991167301d", "1ms5",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		usec_t v = 42;
		cr_expect(!config_parse_duration(bad[i], &v), "accepted '%s'", bad[i]);
		cr_expect_eq(v, 42, "'%s' changed the output", bad[i]);
	}
	usec_t v;
	cr_expect(!config_parse_duration(NULL, &v));
}

/* ---------------------------------------------------- ops (issue 3.6) */

Test(config, loads_ops_keys_when_yaml)
{
	Config *cfg = load_ok(tmp_write("ops.yaml",
		"listen: { host: 127.0.0.1, port: 6432, proxy_protocol: any,\n"
		"          proxy_trusted: [10.0.0.0/8, '::1', unix], proxy_timeout: 2s }\n"
		"admin: { http: '127.0.0.1:8432', token_file: /run/secrets/token }\n"
		"log_format: json\n"
		"shutdown_timeout: 45s\n"));
	cr_expect_str_eq(cfg->http_listen, "127.0.0.1:8432");
	cr_expect_str_eq(cfg->admin_token_file, "/run/secrets/token");
	cr_expect_str_eq(cfg->log_format, "json");
	cr_expect_eq(cfg->shutdown_timeout, 45 * USEC_PER_SEC);
	cr_expect_str_eq(cfg->proxy_protocol, "any");
	cr_expect_eq(cfg->proxy_protocol_trusted.count, 3);
	cr_expect_eq(cfg->proxy_protocol_timeout, 2 * USEC_PER_SEC);
	config_free(cfg);
}

Test(config, defaults_ops_keys_and_hides_them_from_show_config)
{
	Config *cfg = load_ok(tmp_write("ops.ini", "[pgbouncer]\nlisten_addr = 127.0.0.1\n"));
	cr_expect_eq(cfg->shutdown_timeout, 30 * USEC_PER_SEC);
	cr_expect_str_eq(cfg->log_format, "plain");
	cr_expect_str_eq(cfg->proxy_protocol, "off");
	cr_expect_null(cfg->http_listen);
	ConfigKeyView v;
	for (int i = 0; i < config_key_count(); i++) {
		config_key_view(cfg, i, &v);
		cr_expect(strcmp(v.key, "shutdown_timeout") != 0 && strcmp(v.key, "http_listen") != 0);
		free(v.value);
	}
	config_free(cfg);
}

Test(config, refuses_bad_ops_values)
{
	expect_load_error(tmp_write("o1.ini", "[pgbouncer]\nlisten_addr = *\nlog_format = xml\n"), 0,
			  "log_format must be plain or json, not xml");
	expect_load_error(tmp_write("o2.ini", "[pgbouncer]\nlisten_addr = *\nhttp_listen = 8432\n"), 0,
			  "http_listen must be host:port, not 8432");
	expect_load_error(tmp_write("o3.ini", "[pgbouncer]\nlisten_addr = *\nproxy_protocol = v3\n"), 0,
			  "proxy_protocol must be off, v1, v2 or any, not v3");
	expect_load_error(tmp_write("o4.ini", "[pgbouncer]\nlisten_addr = *\nproxy_protocol = v1\n"), 0,
			  "proxy_protocol = v1 needs proxy_protocol_trusted");
	expect_load_error(tmp_write("o5.ini", "[pgbouncer]\nlisten_addr = *\nproxy_protocol = v2\n"
					      "proxy_protocol_trusted = lb.example\n"), 0,
			  "proxy_protocol_trusted: not an address or CIDR: lb.example");
	char host[64];
	int port;
	cr_expect(config_parse_host_port("[::1]:8432", host, sizeof(host), &port));
	cr_expect_str_eq(host, "::1");
	cr_expect_eq(port, 8432);
	cr_expect_not(config_parse_host_port("127.0.0.1:0", host, sizeof(host), &port));
	cr_expect_not(config_parse_host_port(":80", host, sizeof(host), &port));
}

/* ---- audit (feature "audit"): the YAML `audit:` block ---- */

#define AUDIT_YAML_BASE "listen: { host: 127.0.0.1, port: 6432 }\n"

Test(config, parses_the_yaml_audit_block)
{
	const char *p = tmp_write("a.yaml", AUDIT_YAML_BASE
				  "audit: { sink: file, path: logs/audit.jsonl, sql: full, required: true,\n"
				  "         queue_size: 128, fsync: yes, claims: [team, job] }\n");
	Config *cfg = load_ok(p);
	cr_expect_eq(cfg->audit.sink, AUDIT_SINK_FILE);
	char *want = tmp_path("logs/audit.jsonl");
	cr_expect_str_eq(cfg->audit.path, want);
	free(want);
	cr_expect(cfg->audit.sql_full && cfg->audit.required && cfg->audit.fsync);
	cr_expect_eq(cfg->audit.queue_size, 128);
	cr_expect_eq(cfg->audit.claims.count, 2);
	cr_expect_str_eq(cfg->audit.claims.items[1], "job");
	config_free(cfg);
}

Test(config, has_no_audit_without_an_audit_block)
{
	Config *cfg = load_ok(tmp_write("a.yaml", AUDIT_YAML_BASE));
	cr_expect_eq(cfg->audit.sink, AUDIT_SINK_NONE);
	cr_expect(!cfg->audit.sql_full && !cfg->audit.required);
	cr_expect_eq(cfg->audit.queue_size, AUDIT_DEFAULT_QUEUE_SIZE);
	config_free(cfg);
}

Test(config, refuses_bad_audit_settings_with_their_line)
{
	const char *p = tmp_write("b1.yaml", AUDIT_YAML_BASE "audit:\n  sink: postgres\n");
	expect_load_error(p, 3, "'audit.sink': sink postgres is not available in this build (use file or stdout)");
	p = tmp_write("b2.yaml", AUDIT_YAML_BASE "audit:\n  sink: file\n  path: a\n  sql: some\n");
	expect_load_error(p, 5, "invalid value for key 'audit.sql': some");
	p = tmp_write("b3.yaml", AUDIT_YAML_BASE "audit:\n  sink: stdout\n  colour: red\n");
	expect_load_error(p, 4, "unknown key 'colour' in 'audit'");
	p = tmp_write("b4.yaml", AUDIT_YAML_BASE "audit:\n  sink: file\n");
	expect_load_error(p, 0, "audit.sink is file but audit.path is not set");
	p = tmp_write("b5.yaml", AUDIT_YAML_BASE "audit:\n  sink: stdout\n  queue_size: 3\n");
	expect_load_error(p, 4, "invalid value for key 'audit.queue_size': 3");
}
