/*
 * The admin console: database "pgbouncer" (or "pgmoat") speaking pgbouncer
 * 1.18's console language, so that psql habits, monitoring exporters and
 * runbooks written for pgbouncer keep working. This file reads a command,
 * decides who may run it and hands it to its file (admin_int.h lists them).
 * The grammar is in admin_parse.h.
 *
 * Answers are built as whole result sets in one PktBuf and queued at once
 * (admin_result.c). PAUSE, WAIT_CLOSE and SUSPEND answer only once their
 * condition holds (admin_wait.c).
 */
#include "admin.h"
#include "admin_int.h"
#include "client.h"
#include "pool.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static Database *console_db;
static Pool *console_pool;

bool admin_is_console_db(const char *dbname)
{
	/* every login asks twice: the first letter settles it for nearly every database */
	return dbname && dbname[0] == 'p' && (strcmp(dbname, "pgbouncer") == 0 || strcmp(dbname, "pgmoat") == 0);
}

Database *admin_database(void)
{
	return console_db;
}

Pool *admin_pool(void)
{
	return console_pool;
}

/* ---------------------------------------------------------------- answers */

/*
 * While admin_run_captured() runs a command for the extended protocol, its
 * answer (the same messages a simple Query gets) is collected here instead
 * of being sent; admin_ext.c then sends the parts each message asks for.
 */
static PktBuf *capture;

void admin_send(Client *c, PktBuf *pb)
{
	if (capture) {
		if (pktbuf_ok(pb)) {
			pktbuf_put_bytes(capture, pb->data, pb->len);
		} else {
			pktbuf_error(capture, "ERROR", "54000", "admin result too large");
			pktbuf_ready(capture, 'I');
		}
		pktbuf_free(pb);
		return;
	}
	if (!client_send_pktbuf(c, pb)) {
		/* only an oversized result gets here: the builder refused it */
		client_send_error_ready(c, "54000", "admin result too large");
	}
	pktbuf_free(pb);
}

void admin_ready(Client *c, const char *tag)
{
	PktBuf pb;

	pktbuf_init(&pb);
	pktbuf_command_complete(&pb, tag);
	pktbuf_ready(&pb, 'I');
	admin_send(c, &pb);
}

void admin_error_code(Client *c, const char *sqlstate, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	slog_warning(c, "admin: %s", msg);
	if (capture) {
		pktbuf_error(capture, "ERROR", sqlstate, msg);
		pktbuf_ready(capture, 'I');
		return;
	}
	client_send_error_ready(c, sqlstate, "%s", msg);
}

bool admin_capturing(void)
{
	return capture != NULL;
}

/* ---------------------------------------------- dispatch and authorisation */

/* Commands that change something (and SHOW FDS) are for admin_users; stats_users may only read. */
static void admin_refuse_access(Client *c)
{
	admin_error(c, "admin access needed");
}

typedef struct AdminShow {
	const char *name;
	void (*fn)(Client *c);
	bool needs_write;	/* SHOW FDS exposes cancel keys: admin_users only */
} AdminShow;

static const AdminShow admin_shows[] = {
	{ "active_sockets", admin_show_active_sockets, false },
	{ "approvals", admin_show_approvals, false },
	{ "clients", admin_show_clients, false },
	{ "config", admin_show_config, false },
	{ "databases", admin_show_databases, false },
	{ "dns_hosts", admin_show_dns_hosts, false },
	{ "dns_zones", admin_show_dns_zones, false },
	{ "fds", admin_show_fds, true },
	{ "help", admin_show_help, false },
	{ "lists", admin_show_lists, false },
	{ "mem", admin_show_mem, false },
	{ "policies", admin_show_policies, false },
	{ "policy_stats", admin_show_policy_stats, false },
	{ "pools", admin_show_pools, false },
	{ "servers", admin_show_servers, false },
	{ "sockets", admin_show_sockets, false },
	{ "state", admin_show_state, false },
	{ "stats", admin_show_stats, false },
	{ "stats_averages", admin_show_stats_averages, false },
	{ "stats_totals", admin_show_stats_totals, false },
	{ "totals", admin_show_totals, false },
	{ "users", admin_show_users, false },
	{ "version", admin_show_version, false },
};

/* Set while a query is handled, for "invalid command '...'". */
static const char *current_query;

static void admin_syntax_error(Client *c)
{
	admin_error(c, "invalid command '%.900s', use SHOW HELP;", current_query ? current_query : "");
}

static void admin_cmd_show(Client *c, const char *arg)
{
	int fake = admin_fake_param(arg);

	if (fake >= 0) {
		admin_show_fake(c, fake);
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(admin_shows); i++) {
		if (strcasecmp(arg, admin_shows[i].name) != 0)
			continue;
		if (admin_shows[i].needs_write && !c->admin_can_write)
			admin_refuse_access(c);
		else
			admin_shows[i].fn(c);
		return;
	}
	admin_syntax_error(c);
}

typedef enum {
	ARG_NONE,		/* an argument is a syntax error */
	ARG_OPTIONAL,
	ARG_DB_REQUIRED,	/* "a database is required" without one */
} ArgRule;

typedef struct AdminCommand {
	const char *name;
	void (*fn)(Client *c, const char *arg);
	bool needs_write;	/* admin_users only; stats_users get "admin access needed" */
	ArgRule arg;
} AdminCommand;

static const AdminCommand admin_commands[] = {
	{ "approve", admin_cmd_approve, true, ARG_OPTIONAL },
	{ "deny", admin_cmd_deny, true, ARG_OPTIONAL },
	{ "disable", admin_cmd_disable, true, ARG_DB_REQUIRED },
	{ "enable", admin_cmd_enable, true, ARG_DB_REQUIRED },
	{ "kill", admin_cmd_kill, true, ARG_DB_REQUIRED },
	{ "kill_client", admin_cmd_kill_client, true, ARG_OPTIONAL },
	{ "pause", admin_cmd_pause, true, ARG_OPTIONAL },
	{ "reconnect", admin_cmd_reconnect, true, ARG_OPTIONAL },
	{ "reload", admin_cmd_reload, true, ARG_NONE },
	{ "resume", admin_cmd_resume, true, ARG_OPTIONAL },
	{ "select", admin_cmd_show, false, ARG_OPTIONAL },
	{ "show", admin_cmd_show, false, ARG_OPTIONAL },
	{ "shutdown", admin_cmd_shutdown, true, ARG_NONE },
	{ "suspend", admin_cmd_suspend, true, ARG_NONE },
	{ "wait_close", admin_cmd_wait_close, true, ARG_OPTIONAL },
};

static void admin_exec(Client *c, const char *cmd, const char *arg)
{
	for (size_t i = 0; i < ARRAY_SIZE(admin_commands); i++) {
		const AdminCommand *ac = &admin_commands[i];
		if (strcasecmp(cmd, ac->name) != 0)
			continue;
		if (ac->arg == ARG_NONE && *arg)
			admin_syntax_error(c);
		else if (ac->needs_write && !c->admin_can_write)
			admin_refuse_access(c);
		else if (ac->arg == ARG_DB_REQUIRED && !*arg)
			admin_error(c, "a database is required");
		else
			ac->fn(c, arg);
		return;
	}
	admin_syntax_error(c);
}

static void admin_dispatch(Client *c, const char *sql)
{
	char cmd[ADMIN_CMD_MAX], arg[ADMIN_ARG_MAX], val[ADMIN_VAL_MAX];
	ParseResult r = admin_parse_deny(sql, arg, val);

	if (r == PARSE_OK) {
		if (c->admin_can_write)
			admin_deny(c, arg, val);
		else
			admin_refuse_access(c);
		return;
	}
	if (r == PARSE_TOO_LONG) {
		admin_error(c, "bad arguments");
		return;
	}
	r = admin_parse_command(sql, cmd, arg);
	if (r == PARSE_OK) {
		admin_exec(c, cmd, arg);
		return;
	}
	if (r == PARSE_NO_MATCH)
		r = admin_parse_set(sql, arg, val);
	/* a driver's SET of a faked parameter is for everyone: it is ignored */
	if (r == PARSE_OK && !c->admin_can_write && admin_fake_param(arg) < 0)
		admin_refuse_access(c);
	else if (r == PARSE_OK)
		admin_set(c, arg, val);
	else if (r == PARSE_TOO_LONG)
		admin_error(c, "bad arguments");
	else
		admin_syntax_error(c);
}

static void admin_run(Client *c, const char *sql)
{
	slog_debug(c, "admin query: %s", sql);
	c->query_start = util_now_mono();	/* SHOW CLIENTS wait_us, as pgbouncer */
	if (c->pool) {
		/* pgbouncer counts console queries in SHOW STATS too */
		c->pool->stats.total.query_count++;
		c->pool->stats.total.xact_count++;
	}
	current_query = sql;
	admin_dispatch(c, sql);
	current_query = NULL;
}

void admin_handle_query(Client *c, const char *sql)
{
	if (!admin_wait_queue(c, sql))	/* else answered in order after the wait */
		admin_run(c, sql);
}

void admin_run_captured(Client *c, const char *sql, PktBuf *out)
{
	if (admin_wait_pending(c)) {
		pktbuf_error(out, "ERROR", "0A000", "a PAUSE or WAIT_CLOSE of this connection is "
			     "still waiting");
		pktbuf_ready(out, 'I');
		return;
	}
	capture = out;
	admin_run(c, sql);
	capture = NULL;
}

bool admin_is_read_only(const char *sql)
{
	char cmd[ADMIN_CMD_MAX], arg[ADMIN_ARG_MAX];

	return admin_parse_command(sql, cmd, arg) == PARSE_OK &&
	       (strcasecmp(cmd, "show") == 0 || strcasecmp(cmd, "select") == 0);
}

/* ---------------------------------------------------------- setup, login */

/* What pgbouncer's console tells a new connection about itself. */
static const struct {
	const char *name;
	const char *value;
} admin_welcome_params[] = {
	{ "server_version", ADMIN_COMPAT_VERSION "/bouncer" },
	{ "client_encoding", "UTF8" },
	{ "server_encoding", "UTF8" },
	{ "DateStyle", "ISO" },
	{ "TimeZone", "GMT" },
	{ "standard_conforming_strings", "on" },
	{ "is_superuser", "on" },
};

void admin_send_welcome(Client *c)
{
	const char *app = c->vars.values[VAR_APPLICATION_NAME];
	PktBuf pb;

	pktbuf_init(&pb);
	for (size_t i = 0; i < ARRAY_SIZE(admin_welcome_params); i++)
		pktbuf_param_status(&pb, admin_welcome_params[i].name, admin_welcome_params[i].value);
	if (app)
		pktbuf_param_status(&pb, "application_name", app);
	pktbuf_backend_key(&pb, c->cancel_pid, c->cancel_key);
	pktbuf_ready(&pb, 'I');
	if (!client_send_pktbuf(c, &pb))
		client_disconnect(c, "53200", "could not build the admin welcome");
	pktbuf_free(&pb);
}

/* The console's database entry, shaped like pgbouncer's (SHOW DATABASES row). */
static DbConfig *admin_db_config(void)
{
	DbConfig *dc = xcalloc(1, sizeof(*dc));

	dc->name = xstrdup("pgbouncer");
	dc->dbname = xstrdup("pgbouncer");
	dc->user = xstrdup("pgbouncer");	/* force_user, as pgbouncer shows it */
	dc->port = moat->cfg ? moat->cfg->listen_port : 6432;
	dc->pool_size = 2;
	dc->min_pool_size = -1;
	dc->reserve_pool = -1;
	dc->max_db_connections = -1;
	dc->pool_mode = POOL_STATEMENT;
	return dc;
}

void admin_setup(void)
{
	Database *db;

	if (console_db)
		return;
	db = xcalloc(1, sizeof(*db));
	db->name = xstrdup("pgbouncer");
	db->cfg = admin_db_config();
	db->is_admin = true;
	list_append(&moat->databases, &db->head);
	console_db = db;
	console_pool = pool_get(db, pool_get_user("pgbouncer"));
}

void admin_cleanup(void)
{
	admin_wait_cleanup();
	console_db = NULL;
	console_pool = NULL;
}
