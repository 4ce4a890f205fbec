/*
 * The admin console's commands that change state: PAUSE, RESUME, DISABLE,
 * ENABLE, RECONNECT, KILL, KILL_CLIENT, WAIT_CLOSE, RELOAD, SHUTDOWN,
 * SUSPEND (pgbouncer 1.18's messages and refusals), and SET of the settings
 * that may change at run time. Who may run them is settled before (admin.c).
 */
#include "admin_int.h"
#include "admin.h"
#include "client.h"
#include "daemon.h"
#include "pool.h"
#include "suspend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/*
 * A database RESUME and ENABLE may name: in use, or listed by name in
 * [databases]. Unlike PAUSE they do not create one from "*" (pgbouncer).
 */
static Database *admin_lookup_db(const char *name)
{
	const DbConfig *dc = config_find_db(moat->cfg, name);
	List *item;

	list_for_each(item, &moat->databases) {
		Database *db = container_of(item, Database, head);
		if (!db->dead && strcmp(db->name, name) == 0)
			return db;
	}
	if (dc && strcmp(dc->name, name) == 0)
		return pool_find_database(name);
	return NULL;
}

void admin_cmd_pause(Client *c, const char *arg)
{
	if (moat->state != MOAT_RUNNING) {
		admin_error(c, "already suspended/paused");
		return;
	}
	if (!*arg) {
		log_info("PAUSE command issued");
		pool_pause_all(true);
		admin_wait_or_answer(c, ADMIN_WAIT_PAUSE, NULL);
		return;
	}
	log_info("PAUSE '%s' command issued", arg);
	if (admin_is_console_db(arg)) {
		admin_error(c, "cannot pause admin db: %s", arg);
	} else if (!pool_find_database(arg) || !pool_pause_db(arg, true)) {
		admin_error(c, "no such database: %s", arg);
	} else {
		admin_wait_or_answer(c, ADMIN_WAIT_PAUSE, arg);
	}
}

void admin_cmd_resume(Client *c, const char *arg)
{
	Database *db;

	if (!*arg) {
		log_info("RESUME command issued");
		if (moat->state == MOAT_DRAINING)
			admin_error(c, "pooler is shutting down");
		else if (moat->state == MOAT_RUNNING)
			admin_error(c, "pooler is not paused/suspended");
		else {
			if (moat->state == MOAT_SUSPENDED)
				suspend_set(false);
			pool_pause_all(false);
			admin_ready(c, "RESUME");
		}
		return;
	}
	log_info("RESUME '%s' command issued", arg);
	db = admin_lookup_db(arg);
	if (!db)
		admin_error(c, "no such database: %s", arg);
	else if (!db->paused)
		admin_error(c, "database %s is not paused", arg);
	else if (!pool_pause_db(arg, false))
		admin_error(c, "no such database: %s", arg);
	else
		admin_ready(c, "RESUME");
}

void admin_cmd_disable(Client *c, const char *arg)
{
	log_info("DISABLE '%s' command issued", arg);
	if (admin_is_console_db(arg))
		admin_error(c, "cannot disable admin db: %s", arg);
	else if (!pool_find_database(arg) || !pool_disable_db(arg, true))
		admin_error(c, "no such database: %s", arg);
	else
		admin_ready(c, "DISABLE");
}

void admin_cmd_enable(Client *c, const char *arg)
{
	log_info("ENABLE '%s' command issued", arg);
	if (admin_is_console_db(arg))
		admin_error(c, "cannot enable admin db: %s", arg);
	else if (!admin_lookup_db(arg) || !pool_disable_db(arg, false))
		admin_error(c, "no such database: %s", arg);
	else
		admin_ready(c, "ENABLE");
}

void admin_cmd_reconnect(Client *c, const char *arg)
{
	if (!*arg) {
		log_info("RECONNECT command issued");
		pool_reconnect_db(NULL);
		admin_ready(c, "RECONNECT");
		return;
	}
	log_info("RECONNECT '%s' command issued", arg);
	if (admin_is_console_db(arg)) {
		admin_error(c, "cannot reconnect admin db: %s", arg);
	} else if (!pool_find_database(arg)) {
		admin_error(c, "no such database: %s", arg);
	} else {
		pool_reconnect_db(arg);
		admin_ready(c, "RECONNECT");
	}
}

/* KILL db: drop its clients and servers and leave it paused (RESUME db reopens it). */
void admin_cmd_kill(Client *c, const char *arg)
{
	if (moat->state != MOAT_RUNNING) {
		admin_error(c, "already suspended/paused");
		return;
	}
	log_info("KILL '%s' command issued", arg);
	if (admin_is_console_db(arg)) {
		admin_error(c, "cannot kill admin db: %s", arg);
	} else if (!pool_find_database(arg)) {
		admin_error(c, "no such database: %s", arg);
	} else {
		/* pgbouncer leaves a killed database paused, even one without pools */
		if (!pool_pause_db(arg, true))
			log_warning("KILL: database %s vanished", arg);
		pool_kill_db(arg);
		admin_ready(c, "KILL");
	}
}

Client *admin_find_client(uint64_t id)
{
	List *item;

	list_for_each(item, &moat->worker->all_clients) {
		Client *c = container_of(item, Client, all_head);
		if (c->id == id)
			return c->state == CL_FREE ? NULL : c;
	}
	return NULL;
}

/* KILL_CLIENT's argument: the id of the logs (C-<id>), or the ptr of SHOW CLIENTS. */
static Client *admin_find_client_by_arg(const char *arg)
{
	char text[ADMIN_ARG_MAX + 2];
	List *item;
	char *end;
	unsigned long long id;

	if (strncasecmp(arg, "0x", 2) != 0) {
		id = strtoull(arg, &end, 10);
		return *arg && !*end ? admin_find_client(id) : NULL;
	}
	list_for_each(item, &moat->worker->all_clients) {
		Client *c = container_of(item, Client, all_head);
		snprintf(text, sizeof(text), "%p", (void *)c);
		if (strcasecmp(text, arg) == 0)
			return c->state == CL_FREE ? NULL : c;
	}
	return NULL;
}

/* KILL_CLIENT id (pgbouncer 1.23): drop one client connection now. */
void admin_cmd_kill_client(Client *c, const char *arg)
{
	Client *victim;

	if (!*arg) {
		admin_error(c, "a client id is required");
		return;
	}
	log_info("KILL_CLIENT '%s' command issued", arg);
	victim = admin_find_client_by_arg(arg);
	if (!victim)
		admin_error(c, "no such client: %s", arg);
	else if (victim == c)
		admin_error(c, "cannot kill your own connection");
	else {
		client_disconnect(victim, "57P01", "terminating connection due to administrator "
				  "command (KILL_CLIENT)");
		admin_ready(c, "KILL_CLIENT");
	}
}

void admin_cmd_wait_close(Client *c, const char *arg)
{
	if (!*arg) {
		log_info("WAIT_CLOSE command issued");
		admin_wait_or_answer(c, ADMIN_WAIT_CLOSE, NULL);
		return;
	}
	log_info("WAIT_CLOSE '%s' command issued", arg);
	if (admin_is_console_db(arg))
		admin_error(c, "cannot wait in admin db: %s", arg);
	else if (!pool_find_database(arg))
		admin_error(c, "no such database: %s", arg);
	else
		admin_wait_or_answer(c, ADMIN_WAIT_CLOSE, arg);
}

void admin_cmd_reload(Client *c, const char *arg)
{
	char err[512] = "";

	(void)arg;
	log_info("RELOAD command issued");
	if (moat_reload(err, sizeof(err)))
		admin_ready(c, "RELOAD");
	else
		admin_error_code(c, "F0000", "RELOAD failed: %s", err[0] ? err : "see the log");
}

/* As in pgbouncer: no answer, the connection ends with the process. */
void admin_cmd_shutdown(Client *c, const char *arg)
{
	(void)arg;
	slog_info(c, "SHUTDOWN command issued");
	moat_shutdown(true);
}

/*
 * SUSPEND: stop accepting and reading (admin consoles excepted), answer once
 * every buffer is flushed or suspend_timeout dropped the ones that were not.
 * pgbouncer does this to hand its sockets to a new process; pgmoat has no
 * such handover, so SUSPEND is a freeze that RESUME lifts.
 */
void admin_cmd_suspend(Client *c, const char *arg)
{
	(void)arg;
	if (moat->state != MOAT_RUNNING) {
		admin_error(c, "already suspended/paused");
		return;
	}
	log_info("SUSPEND command issued");
	suspend_set(true);
	admin_wait_or_answer(c, ADMIN_WAIT_SUSPEND, NULL);
}

/* ------------------------------------------------------------------- SET */

typedef enum { SET_INT, SET_DURATION, SET_BOOL, SET_VERBOSE, SET_POOL_MODE, SET_STRING } SetKind;

/* The settings SET may change at run time: plain Config fields the pooler reads on use. */
typedef struct AdminSetting {
	const char *key;
	SetKind kind;
	size_t offset;
} AdminSetting;

#define SETTING(field, kind) { #field, kind, offsetof(Config, field) }
static const AdminSetting admin_settings[] = {
	SETTING(default_pool_size, SET_INT),
	SETTING(min_pool_size, SET_INT),
	SETTING(reserve_pool_size, SET_INT),
	SETTING(max_client_conn, SET_INT),
	SETTING(max_db_connections, SET_INT),
	SETTING(max_user_connections, SET_INT),
	SETTING(reserve_pool_timeout, SET_DURATION),
	SETTING(server_lifetime, SET_DURATION),
	SETTING(server_idle_timeout, SET_DURATION),
	SETTING(server_connect_timeout, SET_DURATION),
	SETTING(server_login_retry, SET_DURATION),
	SETTING(server_check_delay, SET_DURATION),
	SETTING(client_login_timeout, SET_DURATION),
	SETTING(autodb_idle_timeout, SET_DURATION),
	SETTING(query_timeout, SET_DURATION),
	SETTING(query_wait_timeout, SET_DURATION),
	SETTING(client_idle_timeout, SET_DURATION),
	SETTING(idle_transaction_timeout, SET_DURATION),
	SETTING(log_connections, SET_BOOL),
	SETTING(log_disconnections, SET_BOOL),
	SETTING(log_pooler_errors, SET_BOOL),
	SETTING(log_stats, SET_BOOL),
	SETTING(server_reset_query_always, SET_BOOL),
	SETTING(application_name_add_host, SET_BOOL),
	SETTING(verbose, SET_VERBOSE),
	SETTING(pool_mode, SET_POOL_MODE),
	SETTING(server_reset_query, SET_STRING),
	SETTING(server_check_query, SET_STRING),
};
#undef SETTING

static bool admin_parse_int(const char *s, int *out)
{
	char *end;
	long v;

	if (!*s)
		return false;
	v = strtol(s, &end, 10);
	if (*end || v < 0 || v > INT32_MAX)
		return false;
	*out = (int)v;
	return true;
}

static bool admin_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "1", "on", "yes", "true" };
	static const char *const no[] = { "0", "off", "no", "false" };

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
			*out = strcasecmp(s, yes[i]) == 0;
			return true;
		}
	}
	return false;
}

static bool admin_parse_pool_mode(const char *s, PoolMode *out)
{
	const PoolMode modes[] = { POOL_SESSION, POOL_TRANSACTION, POOL_STATEMENT };

	for (size_t i = 0; i < ARRAY_SIZE(modes); i++) {
		if (strcasecmp(s, config_pool_mode_name(modes[i])) == 0) {
			*out = modes[i];
			return true;
		}
	}
	return false;
}

/* Parse val for the setting and store it in cfg; false leaves cfg untouched. */
static bool admin_setting_apply(Config *cfg, const AdminSetting *st, const char *val)
{
	void *field = (char *)cfg + st->offset;
	int i;
	bool b;
	usec_t d;
	PoolMode m;

	switch (st->kind) {
	case SET_INT:
		if (!admin_parse_int(val, &i))
			return false;
		*(int *)field = i;
		return true;
	case SET_DURATION:
		if (!config_parse_duration(val, &d) || d < 0)
			return false;
		*(usec_t *)field = d;
		return true;
	case SET_BOOL:
		if (!admin_parse_bool(val, &b))
			return false;
		*(bool *)field = b;
		return true;
	case SET_VERBOSE:
		if (!admin_parse_int(val, &i))
			return false;
		*(int *)field = i;
		log_verbosity = i >= LOG_NOISE - LOG_INFO ? LOG_NOISE : LOG_INFO + i;
		return true;
	case SET_POOL_MODE:
		if (!admin_parse_pool_mode(val, &m))
			return false;
		*(PoolMode *)field = m;
		return true;
	case SET_STRING:
		free(*(char **)field);
		*(char **)field = xstrdup(val);
		return true;
	}
	return false;
}

/* Is key a configuration key at all (SHOW CONFIG lists it)? */
static bool admin_is_config_key(const char *key)
{
	int n = config_key_count();
	bool found = false;

	for (int i = 0; i < n && !found; i++) {
		ConfigKeyView v;
		config_key_view(moat->cfg, i, &v);
		found = strcasecmp(v.key, key) == 0;
		free(v.value);
	}
	return found;
}

void admin_set(Client *c, const char *key, const char *val)
{
	char tag[ADMIN_ARG_MAX + ADMIN_VAL_MAX + 8];

	if (admin_fake_param(key) >= 0) {
		PktBuf pb;
		pktbuf_init(&pb);
		pktbuf_notice(&pb, "00000", "SET ignored");
		pktbuf_command_complete(&pb, "SET");
		pktbuf_ready(&pb, 'I');
		admin_send(c, &pb);
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(admin_settings); i++) {
		if (strcasecmp(key, admin_settings[i].key) != 0)
			continue;
		if (!admin_setting_apply(moat->cfg, &admin_settings[i], val)) {
			admin_error(c, "SET failed");
			return;
		}
		moat->cfg_epoch++;
		slog_info(c, "SET %s=%s", admin_settings[i].key, val);
		snprintf(tag, sizeof(tag), "SET %s=%s", key, val);
		admin_ready(c, tag);
		pool_maintain_all();	/* a bigger pool or a new mode may serve waiters now */
		return;
	}
	if (admin_is_config_key(key))
		admin_error(c, "SET failed: %s cannot be changed online; edit the config file and RELOAD",
			    key);
	else
		admin_error(c, "SET failed");
}

