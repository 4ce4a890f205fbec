/*
 * Configuration loading: pgbouncer.ini (with %include) and the native YAML.
 *
 * Every [pgbouncer] setting is one row of config_keys: name, type, where it
 * lives in Config, its default written the way pgbouncer 1.18's SHOW CONFIG
 * prints it, and whether RELOAD applies it. Defaults are set by parsing that
 * text, so SHOW CONFIG's "default" column cannot drift from the real default.
 * Both file formats funnel every value through key_set().
 */
#include "config.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>
#include "proxyproto.h"

#define CONFIG_MAX_FILE (16 * 1024 * 1024)
#define CONFIG_MAX_SECRET_FILE (64 * 1024)
#define CONFIG_MAX_INCLUDE_DEPTH 10
#define CONFIG_MAX_WORKERS 256

typedef enum {
	KEY_INT,
	KEY_BOOL,
	KEY_STRING,
	KEY_SSLMODE,	/* a string restricted to libpq's sslmode names */
	KEY_DURATION,
	KEY_POOL_MODE,
	KEY_AUTH_TYPE,
	KEY_LIST,
} KeyType;

enum {
	KEY_RELOAD = 1 << 0,	/* RELOAD applies it: SHOW CONFIG "changeable" */
	KEY_HIDDEN = 1 << 1,	/* newer than pgbouncer 1.18: accepted, not in SHOW CONFIG */
	KEY_READONLY = 1 << 2,	/* shown, but a file cannot set it */
};

typedef struct ConfigKey {
	const char *name;
	KeyType type;
	size_t offset;
	const char *def;	/* as SHOW CONFIG prints it; "" means zero/empty */
	int flags;
	int min, max;		/* KEY_INT bounds */
} ConfigKey;

/*
 * The pointer comparison inside sizeof is never evaluated; it makes the
 * compiler reject a row whose type does not match the field's C type.
 */
#define KEY_ROW(n, t, field, ctype, def, fl, lo, hi) \
	{ n, t, offsetof(Config, field) + 0 * sizeof(&((Config *)0)->field == (ctype *)0), def, fl, lo, hi }
#define KI(f, def, fl, lo, hi) KEY_ROW(#f, KEY_INT, f, int, def, fl, lo, hi)
#define KB(f, def, fl) KEY_ROW(#f, KEY_BOOL, f, bool, def, fl, 0, 0)
#define KS(f, def, fl) KEY_ROW(#f, KEY_STRING, f, char *, def, fl, 0, 0)
#define KSSL(f, def, fl) KEY_ROW(#f, KEY_SSLMODE, f, char *, def, fl, 0, 0)
#define KD(f, def, fl) KEY_ROW(#f, KEY_DURATION, f, usec_t, def, fl, 0, 0)
#define KL(f, def, fl) KEY_ROW(#f, KEY_LIST, f, StrList, def, fl, 0, 0)
#define R KEY_RELOAD

/*
 * pgbouncer 1.18's default (its binary's SHOW CONFIG), with the catalog
 * schema-qualified so that nothing on a search_path can stand in for it.
 */
static const char default_auth_query[] =
	"SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END "
	"FROM pg_catalog.pg_authid WHERE rolname=$1 AND rolcanlogin";

/* pgbouncer 1.18's SHOW CONFIG order (alphabetical), defaults and changeable flags. */
static const ConfigKey config_keys[] = {
	KL(admin_users, "", R),
	KB(application_name_add_host, "0", R),
	KS(auth_file, "", R),
	KS(auth_hba_file, "", R),
	KS(auth_query, default_auth_query, R),
	KEY_ROW("auth_type", KEY_AUTH_TYPE, auth_type, AuthType, "md5", R, 0, 0),
	KS(auth_user, "", R),
	KD(autodb_idle_timeout, "3600", R),
	KD(client_idle_timeout, "0", R),
	KD(client_login_timeout, "60", R),
	KS(client_tls_ca_file, "", R),
	KS(client_tls_cert_file, "", R),
	KS(client_tls_ciphers, "fast", R),
	KS(client_tls_dheparams, "auto", R),
	KS(client_tls_ecdhcurve, "auto", R),
	KS(client_tls_key_file, "", R),
	KS(client_tls_protocols, "secure", R),
	KSSL(client_tls_sslmode, "disable", R),
	KEY_ROW("conffile", KEY_STRING, source_path, char *, "", R | KEY_READONLY, 0, 0),
	KI(default_pool_size, "20", R, 0, INT_MAX),
	KB(disable_pqexec, "0", 0),
	KD(dns_max_ttl, "15", R),
	KD(dns_nxdomain_ttl, "15", R),
	KD(dns_zone_check_period, "0", R),
	KD(idle_transaction_timeout, "0", R),
	KL(ignore_startup_parameters, "", R),
	KS(job_name, "pgbouncer", 0),
	KS(listen_addr, "", 0),
	KI(listen_backlog, "128", 0, 1, INT_MAX),
	KI(listen_port, "6432", 0, 1, 65535),
	KB(log_connections, "1", R),
	KB(log_disconnections, "1", R),
	KB(log_pooler_errors, "1", R),
	KB(log_stats, "1", R),
	KS(logfile, "", R),
	KI(max_client_conn, "100", R, 1, INT_MAX),
	KI(max_db_connections, "0", R, 0, INT_MAX),
	KI(max_packet_size, "2147483647", R, 9, INT_MAX),
	KI(max_prepared_statements, "0", R | KEY_HIDDEN, 0, INT_MAX),
	KI(max_user_connections, "0", R, 0, INT_MAX),
	KI(min_pool_size, "0", R, 0, INT_MAX),
	KS(pidfile, "", 0),
	KI(pkt_buf, "4096", 0, 512, 64 * 1024 * 1024),
	KEY_ROW("pool_mode", KEY_POOL_MODE, pool_mode, PoolMode, "session", R, 0, 0),
	KD(query_timeout, "0", R),
	KD(query_wait_timeout, "120", R),
	KI(reserve_pool_size, "0", R, 0, INT_MAX),
	KD(reserve_pool_timeout, "5", R),
	KS(resolv_conf, "", 0),
	KI(sbuf_loopcnt, "5", R, 0, INT_MAX),
	KD(server_check_delay, "30", R),
	KS(server_check_query, "select 1", R),
	KD(server_connect_timeout, "15", R),
	KI(server_fast_close, "0", R, 0, 1),
	KD(server_idle_timeout, "600", R),
	KD(server_lifetime, "3600", R),
	KD(server_login_retry, "15", R),
	KS(server_reset_query, "DISCARD ALL", R),
	KB(server_reset_query_always, "0", R),
	KB(server_round_robin, "0", R),
	KS(server_tls_ca_file, "", R),
	KS(server_tls_cert_file, "", R),
	KS(server_tls_ciphers, "fast", R),
	KS(server_tls_key_file, "", R),
	KS(server_tls_protocols, "secure", R),
	KSSL(server_tls_sslmode, "disable", R),
	KI(so_reuseport, "0", 0, 0, 1),
	KD(stats_period, "60", R),
	KL(stats_users, "", R),
	KD(suspend_timeout, "10", R),
	KB(syslog, "0", R),
	KS(syslog_facility, "daemon", R),
	KS(syslog_ident, "pgbouncer", R),
	KB(tcp_defer_accept, "1", R),
	KB(tcp_keepalive, "1", R),
	KI(tcp_keepcnt, "0", R, 0, INT_MAX),
	KI(tcp_keepidle, "0", R, 0, INT_MAX),
	KI(tcp_keepintvl, "0", R, 0, INT_MAX),
	KI(tcp_socket_buffer, "0", R, 0, INT_MAX),
	KI(tcp_user_timeout, "0", R, 0, INT_MAX),
	KS(track_extra_parameters, "IntervalStyle", R | KEY_HIDDEN),
	KS(transaction_session_state, "warn", R | KEY_HIDDEN),	/* pgmoat: see sessionstate.h */
	KS(unix_socket_dir, "/tmp", 0),
	KS(unix_socket_group, "", 0),
	KI(unix_socket_mode, "0777", 0, 0, 0777),
	KS(user, "", 0),
	KI(verbose, "", R, 0, 10),

	/* ops (issue 3.6): pgmoat-only, so hidden from pgbouncer's SHOW CONFIG */
	KD(shutdown_timeout, "30", R | KEY_HIDDEN),
	KS(http_listen, "", KEY_HIDDEN),
	KS(admin_token_file, "", R | KEY_HIDDEN),
	KS(log_format, "plain", R | KEY_HIDDEN),
	KS(proxy_protocol, "off", KEY_HIDDEN),
	KL(proxy_protocol_trusted, "", R | KEY_HIDDEN),
	KD(proxy_protocol_timeout, "5", R | KEY_HIDDEN),
};

#undef R

/* ---------------------------------------------------------------- names */

static const char *const pool_mode_names[] = { "session", "transaction", "statement" };

static const struct {
	const char *name;
	AuthType type;
} auth_type_names[] = {
	{ "trust", AUTH_TRUST },
	{ "any", AUTH_ANY },
	{ "plain", AUTH_PLAIN },
	{ "md5", AUTH_MD5 },
	{ "scram-sha-256", AUTH_SCRAM },
	{ "hba", AUTH_HBA },
	{ "cert", AUTH_CERT },
	{ "jwt", AUTH_JWT },
};

static const char *const sslmode_names[] = {
	"disable", "allow", "prefer", "require", "verify-ca", "verify-full",
};

bool config_parse_session_state(const char *s, SessionStateMode *out)
{
	static const char *const names[] = { "warn", "error", "pin", "off" };
	SessionStateMode m = SESSION_STATE_WARN;
	bool found = !s;
	for (size_t i = 0; s && i < ARRAY_SIZE(names); i++) {
		if (strcasecmp(s, names[i]) == 0) {
			m = (SessionStateMode)i;
			found = true;
		}
	}
	if (found && out)
		*out = m;
	return found;
}

const char *config_pool_mode_name(PoolMode m)
{
	if ((unsigned)m < ARRAY_SIZE(pool_mode_names))
		return pool_mode_names[m];
	return "unknown";
}

const char *config_auth_type_name(AuthType t)
{
	for (size_t i = 0; i < ARRAY_SIZE(auth_type_names); i++)
		if (auth_type_names[i].type == t)
			return auth_type_names[i].name;
	return "unknown";
}

static bool parse_pool_mode(const char *s, int *out)
{
	for (size_t i = 0; i < ARRAY_SIZE(pool_mode_names); i++) {
		if (strcasecmp(s, pool_mode_names[i]) == 0) {
			*out = (int)i;
			return true;
		}
	}
	return false;
}

static bool parse_auth_type(const char *s, AuthType *out)
{
	for (size_t i = 0; i < ARRAY_SIZE(auth_type_names); i++) {
		if (strcasecmp(s, auth_type_names[i].name) == 0) {
			*out = auth_type_names[i].type;
			return true;
		}
	}
	return false;
}

static bool is_sslmode(const char *s)
{
	for (size_t i = 0; i < ARRAY_SIZE(sslmode_names); i++)
		if (strcmp(s, sslmode_names[i]) == 0)
			return true;
	return false;
}

/* ------------------------------------------------------- scalar parsers */

/* Integers as pgbouncer reads them (strtol base 0, so 0777 is octal), but range-checked. */
static bool parse_int(const char *s, int lo, int hi, int *out)
{
	while (isspace((unsigned char)*s))
		s++;
	if (*s == '\0')
		return false;
	char *end;
	errno = 0;
	long v = strtol(s, &end, 0);
	if (errno != 0 || end == s)
		return false;
	while (isspace((unsigned char)*end))
		end++;
	if (*end != '\0' || v < lo || v > hi)
		return false;
	*out = (int)v;
	return true;
}

static bool parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "1", "yes", "on", "true" };
	static const char *const no[] = { "0", "no", "off", "false" };
	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

static usec_t duration_unit(const char *suffix, bool *ok)
{
	static const struct {
		const char *name;
		usec_t usec;
	} units[] = {
		{ "", USEC_PER_SEC },
		{ "us", 1 },
		{ "ms", 1000 },
		{ "s", USEC_PER_SEC },
		{ "min", 60 * USEC_PER_SEC },
		{ "m", 60 * USEC_PER_SEC },
		{ "h", 3600 * USEC_PER_SEC },
		{ "d", 86400 * USEC_PER_SEC },
	};
	for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
		if (strcmp(suffix, units[i].name) == 0) {
			*ok = true;
			return units[i].usec;
		}
	}
	*ok = false;
	return 0;
}

/*
 * Decimal seconds with an optional unit. Integer arithmetic throughout, so
 * 0.3 is exactly 300000 usec; digits past the microsecond are truncated, as
 * pgbouncer does.
 */
bool config_parse_duration(const char *s, usec_t *out)
{
	if (!s)
		return false;
	const char *p = s;
	while (isspace((unsigned char)*p))
		p++;
	uint64_t whole = 0;
	int whole_digits = 0;
	for (; isdigit((unsigned char)*p); p++, whole_digits++) {
		if (whole > (UINT64_MAX - 9) / 10)
			return false;
		whole = whole * 10 + (uint64_t)(*p - '0');
	}
	uint64_t frac = 0, frac_scale = 1;
	int frac_digits = 0;
	if (*p == '.') {
		for (p++; isdigit((unsigned char)*p); p++, frac_digits++) {
			if (frac_scale < 1000000000000ULL) {
				frac = frac * 10 + (uint64_t)(*p - '0');
				frac_scale *= 10;
			}
		}
	}
	if (whole_digits == 0 && frac_digits == 0)
		return false;
	char suffix[8];
	size_t n = 0;
	while (isalpha((unsigned char)*p) && n < sizeof(suffix) - 1)
		suffix[n++] = (char)tolower((unsigned char)*p++);
	suffix[n] = '\0';
	while (isspace((unsigned char)*p))
		p++;
	bool ok;
	usec_t unit = duration_unit(suffix, &ok);
	if (!ok || *p != '\0')
		return false;
	unsigned __int128 total = (unsigned __int128)whole * (uint64_t)unit;
	total += (unsigned __int128)frac * (uint64_t)unit / frac_scale;
	if (total > (unsigned __int128)INT64_MAX)
		return false;
	*out = (usec_t)total;
	return true;
}

/* ---------------------------------------------------------- key access */

static void *key_field(Config *cfg, const ConfigKey *k)
{
	return (char *)cfg + k->offset;
}

static const void *key_field_const(const Config *cfg, const ConfigKey *k)
{
	return (const char *)cfg + k->offset;
}

static void set_string(char **dst, const char *value)
{
	free(*dst);
	*dst = (value && *value) ? xstrdup(value) : NULL;
}

/* Parse value into the key's field; false when the value is not valid for the key. */
static bool key_set(Config *cfg, const ConfigKey *k, const char *value)
{
	void *field = key_field(cfg, k);
	switch (k->type) {
	case KEY_INT:
		return parse_int(value, k->min, k->max, field);
	case KEY_BOOL:
		return parse_bool(value, field);
	case KEY_SSLMODE:
		if (!is_sslmode(value))
			return false;
		set_string(field, value);
		return true;
	case KEY_STRING:
		set_string(field, value);
		return true;
	case KEY_DURATION:
		return config_parse_duration(value, field);
	case KEY_POOL_MODE: {
		int m;
		if (!parse_pool_mode(value, &m))
			return false;
		*(PoolMode *)field = (PoolMode)m;
		return true;
	}
	case KEY_AUTH_TYPE:
		return parse_auth_type(value, field);
	case KEY_LIST:
		strlist_free(field);
		strlist_parse_csv(field, value);
		return true;
	}
	return false;
}

static void key_clear(Config *cfg, const ConfigKey *k)
{
	void *field = key_field(cfg, k);
	if (k->type == KEY_STRING || k->type == KEY_SSLMODE) {
		free(*(char **)field);
		*(char **)field = NULL;
	} else if (k->type == KEY_LIST) {
		strlist_free(field);
	}
}

static const ConfigKey *key_find(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++)
		if (strcmp(config_keys[i].name, name) == 0)
			return &config_keys[i];
	return NULL;
}

static char *list_join(const StrList *l)
{
	size_t n = 1;
	for (int i = 0; i < l->count; i++)
		n += strlen(l->items[i]) + 2;
	char *s = xmalloc(n);
	char *p = s;
	for (int i = 0; i < l->count; i++)
		p += sprintf(p, "%s%s", i ? ", " : "", l->items[i]);
	*p = '\0';
	return s;
}

static char *key_format(const Config *cfg, const ConfigKey *k)
{
	const void *field = key_field_const(cfg, k);
	switch (k->type) {
	case KEY_INT:
		return xasprintf("%d", *(const int *)field);
	case KEY_BOOL:
		return xstrdup(*(const bool *)field ? "1" : "0");
	case KEY_STRING:
	case KEY_SSLMODE: {
		const char *s = *(char *const *)field;
		return xstrdup(s ? s : "");
	}
	case KEY_DURATION:
		/* pgbouncer prints seconds with %g: 5, 0.5, 1.23457e+06 */
		return xasprintf("%g", (double)*(const usec_t *)field / (double)USEC_PER_SEC);
	case KEY_POOL_MODE:
		return xstrdup(config_pool_mode_name(*(const PoolMode *)field));
	case KEY_AUTH_TYPE:
		return xstrdup(config_auth_type_name(*(const AuthType *)field));
	case KEY_LIST:
		return list_join(field);
	}
	return xstrdup("");
}

int config_key_count(void)
{
	int n = 0;
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++)
		if (!(config_keys[i].flags & KEY_HIDDEN))
			n++;
	return n;
}

void config_key_view(const Config *cfg, int index, ConfigKeyView *out)
{
	memset(out, 0, sizeof(*out));
	int n = 0;
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		const ConfigKey *k = &config_keys[i];
		if (k->flags & KEY_HIDDEN)
			continue;
		if (n++ != index)
			continue;
		out->key = k->name;
		out->value = key_format(cfg, k);
		out->default_value = k->def;
		out->changeable = (k->flags & KEY_RELOAD) != 0;
		return;
	}
}

/* ------------------------------------------------------ config objects */

static Config *config_new_defaults(const char *path)
{
	Config *cfg = xcalloc(1, sizeof(*cfg));
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		const ConfigKey *k = &config_keys[i];
		if (k->def[0] == '\0')
			continue;	/* calloc already made it 0 / NULL / empty */
		if (!key_set(cfg, k, k->def))
			abort();	/* a broken table row: fail loudly in every test */
	}
	cfg->source_path = xstrdup(path);
	cfg->workers = 1;
	policy_config_init(&cfg->policy);
	cfg->approvals_timeout = 10 * 60 * USEC_PER_SEC;
	cfg->audit.queue_size = AUDIT_DEFAULT_QUEUE_SIZE;
	return cfg;
}

void config_roles_free(DbRole *r)
{
	while (r) {
		DbRole *next = r->next;
		free(r->name);
		free(r->user);
		util_free_secret(r->password);
		free(r);
		r = next;
	}
}

static void db_free(DbConfig *db)
{
	if (!db)
		return;
	config_roles_free(db->roles);
	free(db->name);
	free(db->host);
	free(db->dbname);
	free(db->user);
	util_free_secret(db->password);
	free(db->auth_user);
	free(db->client_encoding);
	free(db->datestyle);
	free(db->timezone);
	free(db->application_name);
	free(db->connect_query);
	free(db->src_file);
	free(db->tls_sslmode);
	free(db->tls_ca_file);
	free(db->tls_cert_file);
	free(db->tls_key_file);
	free(db);
}

static void user_free(UserConfig *u)
{
	free(u->name);
	free(u);
}

void config_free(Config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++)
		key_clear(cfg, &config_keys[i]);	/* includes source_path (conffile) */
	while (cfg->databases) {
		DbConfig *next = cfg->databases->next;
		db_free(cfg->databases);
		cfg->databases = next;
	}
	while (cfg->users) {
		UserConfig *next = cfg->users->next;
		user_free(cfg->users);
		cfg->users = next;
	}
	userlist_free(cfg->userlist);
	hba_free(cfg->hba);
	jwt_config_free(&cfg->jwt);
	policy_config_free(&cfg->policy);
	util_free_secret(cfg->approvals_conninfo);
	util_free_secret(cfg->approvals_key);
	audit_config_free(&cfg->audit);
	free(cfg);
}

const DbConfig *config_find_db(const Config *cfg, const char *name)
{
	const DbConfig *fallback = NULL;
	for (const DbConfig *db = cfg->databases; db; db = db->next) {
		if (strcmp(db->name, name) == 0)
			return db;
		if (strcmp(db->name, "*") == 0)
			fallback = db;
	}
	return fallback;
}

DbRole *config_roles_copy(const DbRole *src)
{
	DbRole *head = NULL, **tail = &head;
	for (; src; src = src->next) {
		DbRole *r = xcalloc(1, sizeof(*r));
		r->name = xstrdup(src->name);
		r->user = xstrdup(src->user);
		r->password = src->password ? xstrdup(src->password) : NULL;
		*tail = r;
		tail = &r->next;
	}
	return head;
}

const DbRole *config_find_role(const DbConfig *db, const char *name)
{
	for (const DbRole *r = db ? db->roles : NULL; r; r = r->next)
		if (strcmp(r->name, name) == 0)
			return r;
	return NULL;
}

const UserConfig *config_find_user(const Config *cfg, const char *name)
{
	for (const UserConfig *u = cfg->users; u; u = u->next)
		if (strcmp(u->name, name) == 0)
			return u;
	return NULL;
}

static DbConfig *db_new(const char *name, const char *file, int line)
{
	DbConfig *db = xcalloc(1, sizeof(*db));
	db->name = xstrdup(name);
	db->port = 5432;
	db->pool_size = -1;
	db->min_pool_size = -1;
	db->reserve_pool = -1;
	db->max_db_connections = -1;
	db->pool_mode = -1;
	db->src_file = xstrdup(file);
	db->src_line = line;
	return db;
}

/* A later definition of the same database replaces the earlier one in place. */
static void db_add(Config *cfg, DbConfig *db)
{
	DbConfig **pp = &cfg->databases;
	for (; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->name, db->name) == 0) {
			DbConfig *old = *pp;
			db->next = old->next;
			*pp = db;
			db_free(old);
			return;
		}
	}
	*pp = db;
}

static UserConfig *user_new(const char *name)
{
	UserConfig *u = xcalloc(1, sizeof(*u));
	u->name = xstrdup(name);
	u->pool_mode = -1;
	u->max_user_connections = -1;
	return u;
}

static void user_add(Config *cfg, UserConfig *u)
{
	UserConfig **pp = &cfg->users;
	for (; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->name, u->name) == 0) {
			UserConfig *old = *pp;
			u->next = old->next;
			*pp = u;
			user_free(old);
			return;
		}
	}
	*pp = u;
}

/*
 * Apply one database parameter. Returns NULL, or a static message; the
 * message never contains the value, which may be a password.
 */
static const char *db_set(DbConfig *db, const char *key, const char *value)
{
	static const struct {
		const char *name;
		size_t offset;
	} strings[] = {
		{ "host", offsetof(DbConfig, host) },
		{ "dbname", offsetof(DbConfig, dbname) },
		{ "user", offsetof(DbConfig, user) },
		{ "auth_user", offsetof(DbConfig, auth_user) },
		{ "client_encoding", offsetof(DbConfig, client_encoding) },
		{ "datestyle", offsetof(DbConfig, datestyle) },
		{ "timezone", offsetof(DbConfig, timezone) },
		{ "application_name", offsetof(DbConfig, application_name) },
		{ "connect_query", offsetof(DbConfig, connect_query) },
	};
	static const struct {
		const char *name;
		size_t offset;
		int lo, hi;
	} ints[] = {
		{ "port", offsetof(DbConfig, port), 1, 65535 },
		{ "pool_size", offsetof(DbConfig, pool_size), 0, INT_MAX },
		{ "min_pool_size", offsetof(DbConfig, min_pool_size), 0, INT_MAX },
		{ "reserve_pool", offsetof(DbConfig, reserve_pool), 0, INT_MAX },
		{ "max_db_connections", offsetof(DbConfig, max_db_connections), 0, INT_MAX },
	};
	if (strcmp(key, "password") == 0) {
		util_free_secret(db->password);
		db->password = *value ? xstrdup(value) : NULL;
		return NULL;
	}
	if (strcmp(key, "pool_mode") == 0)
		return parse_pool_mode(value, &db->pool_mode) ? NULL : "invalid value";
	for (size_t i = 0; i < ARRAY_SIZE(strings); i++) {
		if (strcmp(key, strings[i].name) == 0) {
			set_string((char **)((char *)db + strings[i].offset), value);
			return NULL;
		}
	}
	for (size_t i = 0; i < ARRAY_SIZE(ints); i++) {
		if (strcmp(key, ints[i].name) == 0) {
			int *field = (int *)((char *)db + ints[i].offset);
			return parse_int(value, ints[i].lo, ints[i].hi, field) ? NULL : "invalid value";
		}
	}
	return "unknown parameter";
}

static const char *user_set(UserConfig *u, const char *key, const char *value)
{
	if (strcmp(key, "pool_mode") == 0)
		return parse_pool_mode(value, &u->pool_mode) ? NULL : "invalid value";
	if (strcmp(key, "max_user_connections") == 0)
		return parse_int(value, 0, INT_MAX, &u->max_user_connections) ? NULL : "invalid value";
	return "unknown parameter";
}

/* ------------------------------------------------------------- loading */

typedef struct Loader {
	Config *cfg;
	char *err;
	size_t errlen;
	bool failed;
	char *dir;		/* directory of the main config file */
} Loader;

static void loader_fail(Loader *ld, const char *file, int line, const char *fmt, ...)
	PRINTF_LIKE(4, 5);

/* Only the first error is kept: later ones are usually its consequences. */
static void loader_fail(Loader *ld, const char *file, int line, const char *fmt, ...)
{
	if (ld->failed)
		return;
	ld->failed = true;
	if (!ld->err || ld->errlen == 0)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		snprintf(ld->err, ld->errlen, "%s:%d: %s", file, line, msg);
	else
		snprintf(ld->err, ld->errlen, "%s: %s", file, msg);
}

static char *path_dirname(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return xstrdup(".");
	if (slash == path)
		return xstrdup("/");
	return xstrndup(path, (size_t)(slash - path));
}

/* A relative path names a file next to the config file, not in the cwd. */
static char *path_resolve(const char *dir, const char *path)
{
	if (path[0] == '/')
		return xstrdup(path);
	return xasprintf("%s/%s", dir, path);
}

static char *str_trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

/* Set a [pgbouncer] key from either format; unknown keys are the caller's business. */
static void loader_set_key(Loader *ld, const ConfigKey *k, const char *value, const char *file,
			   int line)
{
	if (k->flags & KEY_READONLY) {
		log_warning("%s:%d: key '%s' cannot be set in a config file, ignored", file, line,
			    k->name);
		return;
	}
	if (!key_set(ld->cfg, k, value))
		loader_fail(ld, file, line, "invalid value for key '%s': %s", k->name, value);
}

/* ---------------------------------------------------------- connstrings */

static const char *skip_space(const char *p)
{
	while (isspace((unsigned char)*p))
		p++;
	return p;
}

/*
 * Next `key=value` of a libpq-style string. Values may be single-quoted,
 * with \' or '' for a quote and \\ for a backslash. Returns 1 with new
 * strings in *key and *value, 0 at the end, -1 with *msg on a syntax error.
 */
static int connstr_next(const char **pos, char **key, char **value, const char **msg)
{
	const char *p = skip_space(*pos);
	if (*p == '\0')
		return 0;
	const char *k = p;
	while (*p && *p != '=' && !isspace((unsigned char)*p))
		p++;
	size_t klen = (size_t)(p - k);
	p = skip_space(p);
	if (klen == 0 || *p != '=') {
		*msg = "syntax error: expected key=value";
		return -1;
	}
	p = skip_space(p + 1);
	char *v = xmalloc(strlen(p) + 1);
	size_t n = 0;
	if (*p == '\'') {
		for (p++;; p++) {
			if (*p == '\0') {
				util_wipe(v, n);
				free(v);
				*msg = "unterminated quoted value";
				return -1;
			}
			if (*p == '\\' && p[1] != '\0') {
				v[n++] = *++p;
			} else if (*p == '\'' && p[1] == '\'') {
				v[n++] = *++p;
			} else if (*p == '\'') {
				p++;
				break;
			} else {
				v[n++] = *p;
			}
		}
	} else {
		while (*p && !isspace((unsigned char)*p))
			v[n++] = *p++;
	}
	v[n] = '\0';
	*key = xstrndup(k, klen);
	*value = v;
	*pos = p;
	return 1;
}

typedef const char *(*ConnstrApply)(void *target, const char *key, const char *value);

static const char *db_apply(void *target, const char *key, const char *value)
{
	return db_set(target, key, value);
}

static const char *user_apply(void *target, const char *key, const char *value)
{
	return user_set(target, key, value);
}

/* Apply every pair of s to target; `what` names the entry in errors ("database 'app'"). */
static bool connstr_apply(Loader *ld, const char *s, void *target, ConnstrApply apply,
			  const char *what, const char *file, int line)
{
	const char *pos = s;
	for (;;) {
		char *key = NULL, *value = NULL;
		const char *msg = NULL;
		int r = connstr_next(&pos, &key, &value, &msg);
		if (r == 0)
			return true;
		if (r < 0) {
			loader_fail(ld, file, line, "%s: %s", what, msg);
			return false;
		}
		msg = apply(target, key, value);
		if (msg && strcmp(msg, "invalid value") == 0)
			loader_fail(ld, file, line, "%s: invalid value for '%s': %s", what, key, value);
		else if (msg)
			loader_fail(ld, file, line, "%s: %s '%s'", what, msg, key);
		free(key);
		util_free_secret(value);
		if (msg)
			return false;
	}
}

/* ------------------------------------------------------------------ ini */

typedef enum { SEC_NONE, SEC_PGBOUNCER, SEC_DATABASES, SEC_USERS, SEC_UNKNOWN } IniSection;

static void ini_parse_text(Loader *ld, char *text, const char *path, int depth, IniSection *sec);

static void ini_database(Loader *ld, const char *name, const char *value, const char *file,
			 int line)
{
	DbConfig *db = db_new(name, file, line);
	char *what = xasprintf("database '%s'", name);
	bool ok = connstr_apply(ld, value, db, db_apply, what, file, line);
	free(what);
	if (ok)
		db_add(ld->cfg, db);
	else
		db_free(db);
}

static void ini_user(Loader *ld, const char *name, const char *value, const char *file, int line)
{
	UserConfig *u = user_new(name);
	char *what = xasprintf("user '%s'", name);
	bool ok = connstr_apply(ld, value, u, user_apply, what, file, line);
	free(what);
	if (ok)
		user_add(ld->cfg, u);
	else
		user_free(u);
}

static void ini_section(Loader *ld, char *s, const char *file, int line, IniSection *sec)
{
	size_t n = strlen(s);
	if (n < 2 || s[n - 1] != ']') {
		loader_fail(ld, file, line, "syntax error: unterminated section header");
		return;
	}
	s[n - 1] = '\0';
	char *name = str_trim(s + 1);
	if (strcasecmp(name, "pgbouncer") == 0) {
		*sec = SEC_PGBOUNCER;
	} else if (strcasecmp(name, "databases") == 0) {
		*sec = SEC_DATABASES;
	} else if (strcasecmp(name, "users") == 0) {
		*sec = SEC_USERS;
	} else {
		log_warning("%s:%d: unknown section [%s], ignored", file, line, name);
		*sec = SEC_UNKNOWN;
	}
}

static void ini_include(Loader *ld, const char *arg, const char *file, int line, int depth,
			IniSection *sec)
{
	if (*arg == '\0') {
		loader_fail(ld, file, line, "%%include needs a file name");
		return;
	}
	if (depth + 1 > CONFIG_MAX_INCLUDE_DEPTH) {
		loader_fail(ld, file, line, "%%include nested more than %d deep (include loop?)",
			    CONFIG_MAX_INCLUDE_DEPTH);
		return;
	}
	char *dir = path_dirname(file);
	char *path = path_resolve(dir, arg);
	free(dir);
	char *text = util_read_file(path, CONFIG_MAX_FILE, false);
	if (text)
		ini_parse_text(ld, text, path, depth + 1, sec);
	else
		loader_fail(ld, file, line, "cannot read %%include file '%s': %s", path, strerror(errno));
	free(path);
}

static void ini_key_value(Loader *ld, char *s, const char *file, int line, IniSection sec)
{
	char *eq = strchr(s, '=');
	if (!eq) {
		loader_fail(ld, file, line, "syntax error: expected key = value");
		return;
	}
	*eq = '\0';
	char *key = str_trim(s);
	char *value = str_trim(eq + 1);
	if (*key == '\0') {
		loader_fail(ld, file, line, "syntax error: empty key");
		return;
	}
	switch (sec) {
	case SEC_NONE:
		loader_fail(ld, file, line, "key '%s' outside of any section", key);
		break;
	case SEC_PGBOUNCER: {
		const ConfigKey *k = key_find(key);
		if (k)
			loader_set_key(ld, k, value, file, line);
		else
			log_warning("%s:%d: unknown key '%s' in [pgbouncer], ignored", file, line, key);
		break;
	}
	case SEC_DATABASES:
		ini_database(ld, key, value, file, line);
		break;
	case SEC_USERS:
		ini_user(ld, key, value, file, line);
		break;
	case SEC_UNKNOWN:
		break;
	}
}

static void ini_parse_line(Loader *ld, char *s, const char *file, int line, int depth,
			   IniSection *sec)
{
	s = str_trim(s);
	if (*s == '\0' || *s == ';' || *s == '#')
		return;
	if (strncmp(s, "%include", 8) == 0 && (s[8] == '\0' || isspace((unsigned char)s[8])))
		ini_include(ld, str_trim(s + 8), file, line, depth, sec);
	else if (*s == '[')
		ini_section(ld, s, file, line, sec);
	else
		ini_key_value(ld, s, file, line, *sec);
}

/*
 * Parse (and then wipe and free) the text of one ini file. %include is
 * textual: the included file starts in the current section and a section it
 * opens stays open after it.
 */
static void ini_parse_text(Loader *ld, char *text, const char *path, int depth, IniSection *sec)
{
	char *p = text;
	int line = 0;
	while (*p && !ld->failed) {
		char *nl = strchr(p, '\n');
		if (nl)
			*nl = '\0';
		line++;
		ini_parse_line(ld, p, path, line, depth, sec);
		p = nl ? nl + 1 : p + strlen(p);
	}
	/* Lines may hold [databases] passwords. */
	util_wipe(text, (size_t)(p - text) + strlen(p));
	free(text);
}

static void ini_load(Loader *ld, const char *path)
{
	IniSection sec = SEC_NONE;
	char *text = util_read_file(path, CONFIG_MAX_FILE, false);
	if (text)
		ini_parse_text(ld, text, path, 0, &sec);
	else
		loader_fail(ld, path, 0, "cannot read config file: %s", strerror(errno));
}

/* ----------------------------------------------------------------- yaml */

typedef struct Yaml {
	Loader *ld;
	yaml_document_t *doc;
	const char *file;
} Yaml;

static int ynode_line(const yaml_node_t *n)
{
	return (int)n->start_mark.line + 1;
}

static yaml_node_t *ynode(Yaml *y, int id)
{
	return yaml_document_get_node(y->doc, id);
}

/* The scalar's text, or NULL (after reporting) for a list, a mapping or an embedded NUL. */
static const char *yscalar(Yaml *y, const yaml_node_t *n, const char *where)
{
	if (n->type != YAML_SCALAR_NODE) {
		loader_fail(y->ld, y->file, ynode_line(n), "'%s' must be a single value", where);
		return NULL;
	}
	const char *s = (const char *)n->data.scalar.value;
	if (strlen(s) != n->data.scalar.length) {
		loader_fail(y->ld, y->file, ynode_line(n), "'%s' contains a NUL byte", where);
		return NULL;
	}
	/* Plain null/~ mean "unset", like an empty ini value. */
	if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
	    (strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
	     strcmp(s, "NULL") == 0))
		return "";
	return s;
}

static bool ymapping(Yaml *y, const yaml_node_t *n, const char *where)
{
	if (n->type == YAML_MAPPING_NODE)
		return true;
	loader_fail(y->ld, y->file, ynode_line(n), "'%s' must be a mapping", where);
	return false;
}

typedef void (*YamlPairFn)(Yaml *y, const char *key, yaml_node_t *keynode, yaml_node_t *val,
			   void *arg);

/* Call fn for every key of mapping n; stops at the first error. */
static void ymap_each(Yaml *y, yaml_node_t *n, const char *where, YamlPairFn fn, void *arg)
{
	if (!ymapping(y, n, where))
		return;
	for (yaml_node_pair_t *pair = n->data.mapping.pairs.start;
	     pair < n->data.mapping.pairs.top && !y->ld->failed; pair++) {
		yaml_node_t *k = ynode(y, pair->key);
		yaml_node_t *v = ynode(y, pair->value);
		if (!k || !v)
			continue;
		if (k->type != YAML_SCALAR_NODE) {
			loader_fail(y->ld, y->file, ynode_line(k), "keys in '%s' must be plain names",
				    where);
			return;
		}
		fn(y, (const char *)k->data.scalar.value, k, v, arg);
	}
}

static void yunknown(Yaml *y, const char *key, yaml_node_t *keynode, const char *where)
{
	loader_fail(y->ld, y->file, ynode_line(keynode), "unknown key '%s' in '%s'", key, where);
}

/* A [pgbouncer] key; list keys also take a YAML sequence. */
static void yset_key(Yaml *y, const ConfigKey *k, yaml_node_t *v, const char *where)
{
	if (k->type == KEY_LIST && v->type == YAML_SEQUENCE_NODE) {
		StrList *l = key_field(y->ld->cfg, k);
		strlist_free(l);
		for (yaml_node_item_t *it = v->data.sequence.items.start;
		     it < v->data.sequence.items.top; it++) {
			yaml_node_t *item = ynode(y, *it);
			const char *s = item ? yscalar(y, item, where) : NULL;
			if (!s)
				return;
			if (*s)
				strlist_add(l, s);
		}
		return;
	}
	const char *s = yscalar(y, v, where);
	if (s)
		loader_set_key(y->ld, k, s, y->file, ynode_line(v));
}

static void yset_named(Yaml *y, const char *keyname, yaml_node_t *v, const char *where)
{
	const ConfigKey *k = key_find(keyname);
	if (!k)
		abort();	/* a YAML alias names a key missing from the table */
	yset_key(y, k, v, where);
}

static void yaml_pooling_pair(Yaml *y, const char *key, yaml_node_t *kn, yaml_node_t *v, void *arg)
{
	const ConfigKey *k = key_find(key);
	if (!k) {
		yunknown(y, key, kn, "pooling");
		return;
	}
	char *where = xasprintf("pooling.%s", key);
	yset_key(y, k, v, where);
	free(where);
}

/* Maps a YAML key of a section onto a [pgbouncer] key; NULL ini name = accepted, ignored. */
typedef struct YamlAlias {
	const char *yaml;
	const char *ini;
} YamlAlias;

typedef struct AliasArg {
	const char *section;
	const YamlAlias *aliases;
	size_t count;
} AliasArg;

static void yaml_alias_pair(Yaml *y, const char *key, yaml_node_t *kn, yaml_node_t *v, void *arg)
{
	const AliasArg *a = arg;
	char *where = xasprintf("%s.%s", a->section, key);
	size_t i;
	for (i = 0; i < a->count; i++)
		if (strcmp(a->aliases[i].yaml, key) == 0)
			break;
	if (i == a->count)
		yunknown(y, key, kn, a->section);
	else if (a->aliases[i].ini)
		yset_named(y, a->aliases[i].ini, v, where);
	free(where);
}

static void yaml_alias_section(Yaml *y, yaml_node_t *n, const char *section,
			       const YamlAlias *aliases, size_t count)
{
	AliasArg a = { section, aliases, count };
	ymap_each(y, n, section, yaml_alias_pair, &a);
}

static void yaml_listen_pair(Yaml *y, const char *key, yaml_node_t *kn, yaml_node_t *v, void *arg)
{
	static const YamlAlias tls[] = {
		{ "mode", "client_tls_sslmode" },
		{ "cert", "client_tls_cert_file" },
		{ "key", "client_tls_key_file" },
		{ "ca", "client_tls_ca_file" },
		{ "protocols", "client_tls_protocols" },
		{ "ciphers", "client_tls_ciphers" },
	};
	if (strcmp(key, "tls") == 0) {
		yaml_alias_section(y, v, "listen.tls", tls, ARRAY_SIZE(tls));
		return;
	}
	if (strcmp(key, "host") == 0 && v->type == YAML_SEQUENCE_NODE) {
		/* host: [127.0.0.1, ::1] is listen_addr = 127.0.0.1,::1 */
		StrList hosts = { 0 };
		for (yaml_node_item_t *it = v->data.sequence.items.start;
		     it < v->data.sequence.items.top && !y->ld->failed; it++) {
			yaml_node_t *item = ynode(y, *it);
			const char *s = item ? yscalar(y, item, "listen.host") : NULL;
			if (s && *s)
				strlist_add(&hosts, s);
		}
		char *joined = list_join(&hosts);
		if (!y->ld->failed)
			loader_set_key(y->ld, key_find("listen_addr"), joined, y->file, ynode_line(v));
		free(joined);
		strlist_free(&hosts);
		return;
	}
	static const YamlAlias plain[] = {
		{ "host", "listen_addr" },
		{ "port", "listen_port" },
		{ "unix_socket_dir", "unix_socket_dir" },
		{ "unix_socket_mode", "unix_socket_mode" },
		{ "unix_socket_group", "unix_socket_group" },
		{ "backlog", "listen_backlog" },
		{ "proxy_protocol", "proxy_protocol" },
		{ "proxy_trusted", "proxy_protocol_trusted" },
		{ "proxy_timeout", "proxy_protocol_timeout" },
	};
	AliasArg a = { "listen", plain, ARRAY_SIZE(plain) };
	yaml_alias_pair(y, key, kn, v, &a);
}

/* ---- jwt: auth.jwt (auth_jwt.h) */
typedef struct YamlJwtKey {
	const char *kid, *alg, *file;
	int line;
} YamlJwtKey;

static void yaml_jwt_key_pair(Yaml *y, const char *key, yaml_node_t *kn, yaml_node_t *v, void *arg)
{
	YamlJwtKey *k = arg;
	const char **dst = strcmp(key, "kid") == 0 ? &k->kid : strcmp(key, "alg") == 0 ? &k->alg
			 : strcmp(key, "file") == 0 ? &k->file : NULL;
	char *where = xasprintf("auth.jwt.keys.%s", key);
	if (!dst)
		yunknown(y, key, kn, "auth.jwt.keys");
	else
		*dst = yscalar(y, v, where);
	free(where);
}

static void yjwt_key(Yaml *y, yaml_node_t *item)
{
	YamlJwtKey k = { NULL, NULL, NULL, ynode_line(item) };
	char err[512];
	ymap_each(y, item, "auth.jwt.keys", yaml_jwt_key_pair, &k);
	if (y->ld->failed)
		return;
	if (!k.alg || !*k.alg || !k.file || !*k.file) {
		loader_fail(y->ld, y->file, k.line, "'auth.jwt.keys': each key needs alg and file");
		return;
	}
	char *path = path_resolve(y->ld->dir, k.file);
	if (!jwt_config_add_key_file(&y->ld->cfg->jwt, k.kid && *k.kid ? k.kid : NULL, k.alg, path,
				     err, sizeof(err)))
		loader_fail(y->ld, y->file, k.line, "auth.jwt.keys: %s", err);
	free(path);
}

static void yjwt_keys(Yaml *y, yaml_node_t *v)
{
	if (v->type != YAML_SEQUENCE_NODE) {
		loader_fail(y->ld, y->file, ynode_line(v), "'auth.jwt.keys' must be a list");
		return;
	}
	for (yaml_node_item_t *it = v->data.sequence.items.start;
	     it < v->data.sequence.items.top && !y->ld->failed; it++) {
		yaml_node_t *item = ynode(y, *it);
		if (item)
			yjwt_key(y, item);
	}
}

static void yjwt_jwks(Yaml *y, const char *s, int line)
{
	char err[512];
	int skipped = 0;
	char *path = path_resolve(y->ld->dir, s);
	if (!jwt_config_add_jwks_file(&y->ld->cfg->jwt, path, &skipped, err, sizeof(err)))
		loader_fail(y->ld, y->file, line, "auth.jwt: %s", err);
	else if (skipped)
		log_info("%s: %d key(s) of jwks_file %s skipped (not RSA/EC signing keys)", y->file,
			 skipped, path);
	free(path);
}

static void yaml_jwt_pair(Yaml *y, const char *key, yaml_node_t *kn, yaml_node_t *v, void *arg)
{
	static const char *const known[] = { "keys", "jwks_file", "issuer", "audience", "leeway",
					     "max_ttl", "role_claim", "user_claim", "allow_insecure" };
	JwtConfig *jc = &y->ld->cfg->jwt;
	size_t i = 0;
	while (i < ARRAY_SIZE(known) && strcmp(key, known[i]) != 0)
		i++;
	if (i == ARRAY_SIZE(known)) {
		yunknown(y, key, kn, "auth.jwt");
		return;
	}
	if (strcmp(key, "keys") == 0) {
		yjwt_keys(y, v);
		return;
	}
	char *where = xasprintf("auth.jwt.%s", known[i]);
	if (strcmp(key, "audience") == 0 && v->type == YAML_SEQUENCE_NODE) {
		for (yaml_node_item_t *it = v->data.sequence.items.start;
		     it < v->data.sequence.items.top && !y->ld->failed; it++) {
			yaml_node_t *item = ynode(y, *it);
			const char *s = item ? yscalar(y, item, where) : NULL;
			if (s && *s)
				strlist_add(&jc->audience, s);
		}
		free(where);
		return;
	}
	const char *s = yscalar(y, v, where);
	bool ok = true;
	if (!s) {
		ok = true;	/* reported */
	} else if (strcmp(key, "jwks_file") == 0) {
		yjwt_jwks(y, s, ynode_line(v));
	} else if (strcmp(key, "issuer") == 0 || strcmp(key, "role_claim") == 0 ||
		   strcmp(key, "user_claim") == 0) {
		char **dst = key[0] == 'i' ? &jc->issuer : key[0] == 'r' ? &jc->role_claim
									: &jc->user_claim;
		free(*dst);
		*dst = *s ? xstrdup(s) : NULL;
	} else if (strcmp(key, "audience") == 0) {
		if (*s)
			strlist_add(&jc->audience, s);
	} else if (strcmp(key, "leeway") == 0) {
		ok = config_parse_duration(s, &jc->leeway) && jc->leeway >= 0;
	} else if (strcmp(key, "max_ttl") == 0) {
		ok = config_parse_duration(s, &jc->max_ttl) && jc->max_ttl >= 0;
	} else {
		ok = parse_bool(s, &jc->allow_insecure);
	}
	if (!ok)
		loader_fail(y->ld, y->file, ynode_line(v), "invalid value for key '%s': %s", where, s);
	free(where);
}

static void yaml_auth_pair(Yaml *y, const char *key, yaml_node_t *kn, yaml_node_t *v, void *arg)
{
	static const YamlAlias auth[] = {
		{ "type", "auth_type" },
		{ "file", "auth_file" },
		{ "hba_file", "auth_hba_file" },
		{ "user", "auth_user" },
		{ "query", "auth_query" },
	};
	if (strcmp(key, "jwt") == 0) {
		y->ld->cfg->jwt.configured = true;
		ymap_each(y, v, "auth.jwt", yaml_jwt_pair, NULL);
		return;
	}
	AliasArg a = { "auth", auth, ARRAY_SIZE(auth) };
	yaml_alias_pair(y, key, kn, v, &a);
}

/*
 * password, password_file and password_env are three spellings of one secret;
 * ypath is the YAML path of the entry, owner names it in messages ("database 'app'").
 */
static void ysecret(Yaml *y, const char *ypath, const char *owner, const char *key, yaml_node_t *v,
		    int *sources, char **dst)
{
	char *where = xasprintf("%s.%s", ypath, key);
	const char *s = yscalar(y, v, where);
	free(where);
	if (!s)
		return;
	if (++*sources > 1) {
		loader_fail(y->ld, y->file, ynode_line(v),
			    "%s: only one of password, password_file, password_env may be set", owner);
		return;
	}
	char *secret = NULL;
	if (strcmp(key, "password") == 0) {
		secret = xstrdup(s);
	} else if (strcmp(key, "password_env") == 0) {
		const char *env = getenv(s);
		if (env)
			secret = xstrdup(env);
		else
			loader_fail(y->ld, y->file, ynode_line(v),
				    "%s: environment variable '%s' (password_env) is not set", owner, s);
	} else {
		char *path = path_resolve(y->ld->dir, s);
		secret = util_read_file(path, CONFIG_MAX_SECRET_FILE, true);
		if (!secret)
			loader_fail(y->ld, y->file, ynode_line(v),
				    "%s: cannot read password_file '%s': %s", owner, path,
				    strerror(errno));
		free(path);
	}
	if (secret && *secret == '\0') {
		loader_fail(y->ld, y->file, ynode_line(v), "%s: %s gives an empty password", owner, key);
		free(secret);
		secret = NULL;
	}
	if (secret) {
		util_free_secret(*dst);
		*dst = secret;
	}
}

static void ydb_password(Yaml *y, DbConfig *db, const char *key, yaml_node_t *v, int *sources)
{
	char *path = xasprintf("databases.%s", db->name);
	char *owner = xasprintf("database '%s'", db->name);
	ysecret(y, path, owner, key, v, sources, &db->password);
	free(owner);
	free(path);
}

/* ---- jwt: databases.<db>.roles.<name>: { user, password | password_file | password_env } */
typedef struct YamlRole {
	DbRole *role;
	char *owner;		/* "databases.app.roles.reader" */
	int password_sources;
} YamlRole;

static void yaml_role_pair(Yaml *y, const char *key, yaml_node_t *kn, yaml_node_t *v, void *arg)
{
	YamlRole *yr = arg;
	if (strcmp(key, "password") == 0 || strcmp(key, "password_file") == 0 ||
	    strcmp(key, "password_env") == 0) {
		ysecret(y, yr->owner, yr->owner, key, v, &yr->password_sources, &yr->role->password);
		return;
	}
	if (strcmp(key, "user") != 0) {
		yunknown(y, key, kn, yr->owner);
		return;
	}
	char *where = xasprintf("%s.user", yr->owner);
	const char *s = yscalar(y, v, where);
	free(where);
	if (s && *s) {
		free(yr->role->user);
		yr->role->user = xstrdup(s);
	}
}

static void yaml_roles_pair(Yaml *y, const char *name, yaml_node_t *kn, yaml_node_t *v, void *arg)
{
	DbConfig *db = arg;
	YamlRole yr = { xcalloc(1, sizeof(DbRole)), xasprintf("databases.%s.roles.%s", db->name, name), 0 };
	yr.role->name = xstrdup(name);
	ymap_each(y, v, yr.owner, yaml_role_pair, &yr);
	if (!y->ld->failed && (!yr.role->user || config_find_role(db, name)))
		loader_fail(y->ld, y->file, ynode_line(kn), "'%s' %s", yr.owner,
			    yr.role->user ? "is defined twice" : "needs a user");
	if (y->ld->failed) {
		config_roles_free(yr.role);
	} else {
		DbRole **pp = &db->roles;
		while (*pp)
			pp = &(*pp)->next;
		*pp = yr.role;
	}
	free(yr.owner);
}

/* databases.<name>.tls: { mode, ca, cert, key } for this server only. */
static void yaml_db_tls_pair(Yaml *y, const char *key, yaml_node_t *kn, yaml_node_t *v, void *arg)
{
	DbConfig *db = arg;
	static const struct {
		const char *name;
		size_t offset;
	} fields[] = {
		{ "mode", offsetof(DbConfig, tls_sslmode) },
		{ "ca", offsetof(DbConfig, tls_ca_file) },
		{ "cert", offsetof(DbConfig, tls_cert_file) },
		{ "key", offsetof(DbConfig, tls_key_file) },
	};
	char *where = xasprintf("databases.%s.tls", db->name);
	char *item = xasprintf("%s.%s", where, key);
	const char *s = yscalar(y, v, item);
	size_t i;
	for (i = 0; i < ARRAY_SIZE(fields); i++)
		if (strcmp(key, fields[i].name) == 0)
			break;
	if (i == ARRAY_SIZE(fields))
		yunknown(y, key, kn, where);
	else if (s && i == 0 && !is_sslmode(s))
		loader_fail(y->ld, y->file, ynode_line(v), "invalid value for key '%s': %s", item, s);
	else if (s)
		set_string((char **)((char *)db + fields[i].offset), s);
	free(item);
	free(where);
}

typedef struct YamlDb {
	DbConfig *db;
	int password_sources;
} YamlDb;

static void yaml_db_pair(Yaml *y, const char *key, yaml_node_t *kn, yaml_node_t *v, void *arg)
{
	YamlDb *ydb = arg;
	DbConfig *db = ydb->db;
	if (strcmp(key, "password") == 0 || strcmp(key, "password_file") == 0 ||
	    strcmp(key, "password_env") == 0) {
		ydb_password(y, db, key, v, &ydb->password_sources);
		return;
	}
	if (strcmp(key, "roles") == 0) {
		char *owner = xasprintf("databases.%s.roles", db->name);
		ymap_each(y, v, owner, yaml_roles_pair, db);
		free(owner);
		return;
	}
	if (strcmp(key, "tls") == 0) {
		char *where = xasprintf("databases.%s.tls", db->name);
		ymap_each(y, v, where, yaml_db_tls_pair, db);
		free(where);
		return;
	}
	char *where = xasprintf("databases.%s", db->name);
	char *item = xasprintf("%s.%s", where, key);
	const char *s = yscalar(y, v, item);
	const char *msg = s ? db_set(db, key, s) : NULL;
	if (msg && strcmp(msg, "unknown parameter") == 0)
		yunknown(y, key, kn, where);
	else if (msg)
		loader_fail(y->ld, y->file, ynode_line(v), "invalid value for key '%s': %s", item, s);
	free(item);
	free(where);
}

static void yaml_databases_pair(Yaml *y, const char *name, yaml_node_t *kn, yaml_node_t *v,
				void *arg)
{
	YamlDb ydb = { db_new(name, y->file, ynode_line(kn)), 0 };
	char *where = xasprintf("databases.%s", name);
	ymap_each(y, v, where, yaml_db_pair, &ydb);
	free(where);
	if (y->ld->failed)
		db_free(ydb.db);
	else
		db_add(y->ld->cfg, ydb.db);
}

static void yaml_user_pair(Yaml *y, const char *key, yaml_node_t *kn, yaml_node_t *v, void *arg)
{
	UserConfig *u = arg;
	char *where = xasprintf("users.%s", u->name);
	char *item = xasprintf("%s.%s", where, key);
	const char *s = yscalar(y, v, item);
	const char *msg = s ? user_set(u, key, s) : NULL;
	if (msg && strcmp(msg, "unknown parameter") == 0)
		yunknown(y, key, kn, where);
	else if (msg)
		loader_fail(y->ld, y->file, ynode_line(v), "invalid value for key '%s': %s", item, s);
	free(item);
	free(where);
}

static void yaml_users_pair(Yaml *y, const char *name, yaml_node_t *kn, yaml_node_t *v, void *arg)
{
	UserConfig *u = user_new(name);
	char *where = xasprintf("users.%s", name);
	ymap_each(y, v, where, yaml_user_pair, u);
	free(where);
	if (y->ld->failed)
		user_free(u);
	else
		user_add(y->ld->cfg, u);
}

static void yaml_workers(Yaml *y, yaml_node_t *v)
{
	const char *s = yscalar(y, v, "workers");
	if (s && !parse_int(s, 1, CONFIG_MAX_WORKERS, &y->ld->cfg->workers))
		loader_fail(y->ld, y->file, ynode_line(v), "invalid value for key 'workers': %s", s);
}

/* "64MB", "512kB", "1GB", or plain bytes. */
static bool parse_size(const char *s, size_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (end == s || errno || *s == '-')
		return false;
	unsigned long long mul = 1;
	if (strcasecmp(end, "kB") == 0 || strcasecmp(end, "k") == 0)
		mul = 1024ULL;
	else if (strcasecmp(end, "MB") == 0 || strcasecmp(end, "M") == 0)
		mul = 1024ULL * 1024;
	else if (strcasecmp(end, "GB") == 0 || strcasecmp(end, "G") == 0)
		mul = 1024ULL * 1024 * 1024;
	else if (*end != '\0' && strcasecmp(end, "B") != 0)
		return false;
	if (v > SIZE_MAX / mul)
		return false;
	*out = (size_t)(v * mul);
	return true;
}

static void ypolicy_scripts(Yaml *y, yaml_node_t *v)
{
	PolicyConfig *pc = &y->ld->cfg->policy;
	strlist_free(&pc->scripts);
	if (v->type != YAML_SEQUENCE_NODE) {
		loader_fail(y->ld, y->file, ynode_line(v), "'policy.scripts' must be a list of files");
		return;
	}
	for (yaml_node_item_t *it = v->data.sequence.items.start;
	     it < v->data.sequence.items.top && !y->ld->failed; it++) {
		yaml_node_t *item = ynode(y, *it);
		const char *s = item ? yscalar(y, item, "policy.scripts") : NULL;
		if (s && *s) {
			char *path = path_resolve(y->ld->dir, s);
			strlist_add(&pc->scripts, path);
			free(path);
		}
	}
}

static void yaml_policy_pair(Yaml *y, const char *key, yaml_node_t *kn, yaml_node_t *v, void *arg)
{
	PolicyConfig *pc = &y->ld->cfg->policy;
	if (strcmp(key, "scripts") == 0) {
		ypolicy_scripts(y, v);
		return;
	}
	char *where = xasprintf("policy.%s", key);
	const char *s = yscalar(y, v, where);
	bool ok = true;
	if (!s) {
		free(where);
		return;
	}
	if (strcmp(key, "mode") == 0) {
		if (strcmp(s, "enforce") == 0)
			pc->mode = POLICY_ENFORCE;
		else if (strcmp(s, "dry_run") == 0)
			pc->mode = POLICY_DRY_RUN;
		else
			ok = false;
	} else if (strcmp(key, "time_budget") == 0) {
		ok = config_parse_duration(s, &pc->time_budget) && pc->time_budget > 0;
	} else if (strcmp(key, "memory_limit") == 0) {
		ok = parse_size(s, &pc->memory_limit) && pc->memory_limit >= 1024 * 1024;
	} else if (strcmp(key, "hash_key_file") == 0 || strcmp(key, "lua_dir") == 0) {
		char **dst = strcmp(key, "lua_dir") == 0 ? &pc->lua_dir : &pc->hash_key_file;
		free(*dst);
		*dst = *s ? path_resolve(y->ld->dir, s) : NULL;
	} else {
		yunknown(y, key, kn, "policy");
	}
	if (!ok)
		loader_fail(y->ld, y->file, ynode_line(v), "invalid value for key '%s': %s", where, s);
	free(where);
}

/* approvals: { timeout: 10m, store: memory | postgres, conninfo: "host=... dbname=..." } */
static void yaml_approvals_pair(Yaml *y, const char *key, yaml_node_t *kn, yaml_node_t *v, void *arg)
{
	char *where = xasprintf("approvals.%s", key);
	const char *s = yscalar(y, v, where);
	if (!s) {
		free(where);
		return;
	}
	if (strcmp(key, "timeout") == 0) {
		usec_t t;
		if (config_parse_duration(s, &t) && t > 0)
			y->ld->cfg->approvals_timeout = t;
		else
			loader_fail(y->ld, y->file, ynode_line(v), "invalid value for key '%s': %s",
				    where, s);
	} else if (strcmp(key, "store") == 0) {
		if (strcmp(s, "memory") == 0)
			y->ld->cfg->approvals_store = APPROVALS_STORE_MEMORY;
		else if (strcmp(s, "postgres") == 0)
			y->ld->cfg->approvals_store = APPROVALS_STORE_POSTGRES;
		else
			loader_fail(y->ld, y->file, ynode_line(v), "invalid value for key '%s': %s "
				    "(memory or postgres)", where, s);
	} else if (strcmp(key, "conninfo") == 0) {
		util_free_secret(y->ld->cfg->approvals_conninfo);
		y->ld->cfg->approvals_conninfo = *s ? xstrdup(s) : NULL;
	} else if (strcmp(key, "key_file") == 0) {
		char *path = path_resolve(y->ld->dir, s);
		util_free_secret(y->ld->cfg->approvals_key);
		y->ld->cfg->approvals_key = util_read_file(path, CONFIG_MAX_SECRET_FILE, true);
		if (!y->ld->cfg->approvals_key || strlen(y->ld->cfg->approvals_key) < 16)
			loader_fail(y->ld, y->file, ynode_line(v), "cannot read '%s' (at least 16 "
				    "bytes): %s", where, path);
		free(path);
	} else if (strcmp(key, "webhook") == 0) {
		/* Accepted (DESIGN.md's example has it); the feature lands later. */
		log_warning("%s:%d: '%s' is not used by this build, ignored", y->file, ynode_line(v),
			    where);
	} else {
		yunknown(y, key, kn, "approvals");
	}
	free(where);
}

/* ---- audit (feature "audit") ---- */

void audit_config_free(AuditConfig *ac)
{
	free(ac->path);
	ac->path = NULL;
	strlist_free(&ac->claims);
}

bool audit_config_equal(const AuditConfig *a, const AuditConfig *b)
{
	if (a->sink != b->sink || a->sql_full != b->sql_full || a->required != b->required ||
	    a->fsync != b->fsync || a->queue_size != b->queue_size ||
	    a->claims.count != b->claims.count)
		return false;
	if ((a->path == NULL) != (b->path == NULL) || (a->path && strcmp(a->path, b->path) != 0))
		return false;
	for (int i = 0; i < a->claims.count; i++)
		if (strcmp(a->claims.items[i], b->claims.items[i]) != 0)
			return false;
	return true;
}

static bool parse_bool_word(const char *s, bool *out)
{
	if (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 || strcmp(s, "on") == 0 ||
	    strcmp(s, "1") == 0)
		*out = true;
	else if (strcmp(s, "false") == 0 || strcmp(s, "no") == 0 || strcmp(s, "off") == 0 ||
		 strcmp(s, "0") == 0)
		*out = false;
	else
		return false;
	return true;
}

static void yaudit_claims(Yaml *y, yaml_node_t *v)
{
	AuditConfig *ac = &y->ld->cfg->audit;
	strlist_free(&ac->claims);
	if (v->type != YAML_SEQUENCE_NODE) {
		loader_fail(y->ld, y->file, ynode_line(v), "'audit.claims' must be a list of claim names");
		return;
	}
	for (yaml_node_item_t *it = v->data.sequence.items.start;
	     it < v->data.sequence.items.top && !y->ld->failed; it++) {
		yaml_node_t *item = ynode(y, *it);
		const char *s = item ? yscalar(y, item, "audit.claims") : NULL;
		if (s && *s)
			strlist_add(&ac->claims, s);
	}
}

static bool yaudit_sink(AuditConfig *ac, const char *s, char **why)
{
	if (strcmp(s, "file") == 0)
		ac->sink = AUDIT_SINK_FILE;
	else if (strcmp(s, "stdout") == 0)
		ac->sink = AUDIT_SINK_STDOUT;
	else if (strcmp(s, "none") == 0)
		ac->sink = AUDIT_SINK_NONE;
	else if (strcmp(s, "postgres") == 0)
		*why = "sink postgres is not available in this build (use file or stdout)";
	else
		return false;
	return *why == NULL;
}

static void yaml_audit_pair(Yaml *y, const char *key, yaml_node_t *kn, yaml_node_t *v, void *arg)
{
	AuditConfig *ac = &y->ld->cfg->audit;
	if (strcmp(key, "claims") == 0) {
		yaudit_claims(y, v);
		return;
	}
	char *where = xasprintf("audit.%s", key);
	const char *s = yscalar(y, v, where);
	char *why = NULL;
	bool ok = true;
	if (!s) {
		free(where);
		return;
	}
	if (strcmp(key, "sink") == 0) {
		ok = yaudit_sink(ac, s, &why);
	} else if (strcmp(key, "path") == 0) {
		free(ac->path);
		ac->path = *s ? path_resolve(y->ld->dir, s) : NULL;
	} else if (strcmp(key, "sql") == 0) {
		ok = strcmp(s, "full") == 0 || strcmp(s, "normalized") == 0;
		ac->sql_full = strcmp(s, "full") == 0;
	} else if (strcmp(key, "required") == 0) {
		ok = parse_bool_word(s, &ac->required);
	} else if (strcmp(key, "fsync") == 0) {
		ok = parse_bool_word(s, &ac->fsync);
	} else if (strcmp(key, "queue_size") == 0) {
		ok = parse_int(s, 16, 16 * 1024 * 1024, &ac->queue_size);
	} else if (strcmp(key, "conninfo") == 0) {
		why = "conninfo is for sink postgres, which is not available in this build";
	} else {
		yunknown(y, key, kn, "audit");
	}
	if (why)
		loader_fail(y->ld, y->file, ynode_line(v), "'%s': %s", where, why);
	else if (!ok)
		loader_fail(y->ld, y->file, ynode_line(v), "invalid value for key '%s': %s", where, s);
	free(where);
}

static void yaml_top_pair(Yaml *y, const char *key, yaml_node_t *kn, yaml_node_t *v, void *arg)
{
	static const YamlAlias admin[] = {
		{ "users", "admin_users" },
		{ "stats_users", "stats_users" },
		{ "http", "http_listen" },
		{ "token_file", "admin_token_file" },
	};
	if (strcmp(key, "listen") == 0)
		ymap_each(y, v, "listen", yaml_listen_pair, NULL);
	else if (strcmp(key, "workers") == 0)
		yaml_workers(y, v);
	else if (strcmp(key, "admin") == 0)
		yaml_alias_section(y, v, "admin", admin, ARRAY_SIZE(admin));
	else if (strcmp(key, "pooling") == 0)
		ymap_each(y, v, "pooling", yaml_pooling_pair, NULL);
	else if (strcmp(key, "pidfile") == 0 || strcmp(key, "logfile") == 0 ||
		 strcmp(key, "log_format") == 0 || strcmp(key, "shutdown_timeout") == 0)
		yset_named(y, key, v, key);
	else if (strcmp(key, "auth") == 0)
		ymap_each(y, v, "auth", yaml_auth_pair, NULL);
	else if (strcmp(key, "databases") == 0)
		ymap_each(y, v, "databases", yaml_databases_pair, NULL);
	else if (strcmp(key, "users") == 0)
		ymap_each(y, v, "users", yaml_users_pair, NULL);
	else if (strcmp(key, "policy") == 0)
		ymap_each(y, v, "policy", yaml_policy_pair, NULL);
	else if (strcmp(key, "approvals") == 0) {
		ymap_each(y, v, "approvals", yaml_approvals_pair, NULL);
		if (y->ld->cfg->approvals_store == APPROVALS_STORE_POSTGRES &&
		    (!y->ld->cfg->approvals_conninfo || !y->ld->cfg->approvals_key))
			loader_fail(y->ld, y->file, ynode_line(v), "'approvals.store: postgres' needs "
				    "'approvals.conninfo' and 'approvals.key_file'");
	}
	else if (strcmp(key, "audit") == 0)
		ymap_each(y, v, "audit", yaml_audit_pair, NULL);
	else
		yunknown(y, key, kn, "top level");
}

static void yaml_load(Loader *ld, const char *path)
{
	char *text = util_read_file(path, CONFIG_MAX_FILE, false);
	if (!text) {
		loader_fail(ld, path, 0, "cannot read config file: %s", strerror(errno));
		return;
	}
	yaml_parser_t parser;
	yaml_document_t doc;
	if (!yaml_parser_initialize(&parser))
		abort();	/* only fails on out-of-memory */
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
	if (!yaml_parser_load(&parser, &doc)) {
		loader_fail(ld, path, (int)parser.problem_mark.line + 1, "YAML syntax error: %s%s%s",
			    parser.problem ? parser.problem : "unknown",
			    parser.context ? " " : "", parser.context ? parser.context : "");
		yaml_parser_delete(&parser);
		util_free_secret(text);
		return;
	}
	Yaml y = { ld, &doc, path };
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	/* An empty document is an all-defaults config. */
	if (root && !(root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0))
		ymap_each(&y, root, "top level", yaml_top_pair, NULL);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	util_free_secret(text);
}

/* --------------------------------------------------- finish and validate */

static bool path_is_yaml(const char *path)
{
	size_t n = strlen(path);
	return (n >= 5 && strcmp(path + n - 5, ".yaml") == 0) ||
	       (n >= 4 && strcmp(path + n - 4, ".yml") == 0);
}

static void config_load_userlist(Loader *ld)
{
	Config *cfg = ld->cfg;
	if (!cfg->auth_file)
		return;
	char *path = path_resolve(ld->dir, cfg->auth_file);
	char ulerr[512];
	cfg->userlist = userlist_load(path, ulerr, sizeof(ulerr));
	if (!cfg->userlist)
		loader_fail(ld, cfg->source_path, 0, "%s", ulerr);
	free(path);
}

/* pgbouncer reads auth_hba_file whenever it is set; auth_type = hba needs it. */
static void config_load_hba(Loader *ld)
{
	Config *cfg = ld->cfg;
	if (!cfg->auth_hba_file) {
		if (cfg->auth_type == AUTH_HBA)
			loader_fail(ld, cfg->source_path, 0, "auth_type = hba needs auth_hba_file");
		return;
	}
	char *path = path_resolve(ld->dir, cfg->auth_hba_file);
	char hbaerr[512];
	cfg->hba = hba_load(path, hbaerr, sizeof(hbaerr));
	if (!cfg->hba)
		loader_fail(ld, cfg->source_path, 0, "%s", hbaerr);
	free(path);
}

static bool sslmode_enables_tls(const char *mode)
{
	return mode && *mode && strcmp(mode, "disable") != 0;
}

bool config_parse_host_port(const char *s, char *host, size_t hostlen, int *port)
{
	const char *colon;
	const char *h = s;
	size_t hl;
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end[1] != ':')
			return false;
		h = s + 1;
		hl = (size_t)(end - h);
		colon = end + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return false;
		hl = (size_t)(colon - s);
	}
	if (hl == 0 || hl >= hostlen)
		return false;
	char *endp;
	long p = strtol(colon + 1, &endp, 10);
	if (colon[1] == '\0' || *endp != '\0' || p < 1 || p > 65535)
		return false;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (int)p;
	return true;
}

/* ops (issue 3.6): log format, HTTP address, PROXY protocol. */
static void config_validate_ops(Loader *ld)
{
	const Config *cfg = ld->cfg;
	const char *file = cfg->source_path;
	if (cfg->log_format && strcmp(cfg->log_format, "plain") != 0 &&
	    strcmp(cfg->log_format, "json") != 0)
		loader_fail(ld, file, 0, "log_format must be plain or json, not %s", cfg->log_format);
	char host[256];
	int port;
	if (cfg->http_listen && !config_parse_host_port(cfg->http_listen, host, sizeof(host), &port))
		loader_fail(ld, file, 0, "http_listen must be host:port, not %s", cfg->http_listen);
	ProxyMode mode;
	if (!proxyproto_mode_parse(cfg->proxy_protocol ? cfg->proxy_protocol : "off", &mode)) {
		loader_fail(ld, file, 0, "proxy_protocol must be off, v1, v2 or any, not %s",
			    cfg->proxy_protocol);
		return;
	}
	for (int i = 0; i < cfg->proxy_protocol_trusted.count; i++)
		if (!proxyproto_trusted_entry_valid(cfg->proxy_protocol_trusted.items[i]))
			loader_fail(ld, file, 0, "proxy_protocol_trusted: not an address or CIDR: %s",
				    cfg->proxy_protocol_trusted.items[i]);
	/* Without a trusted list anyone could claim any address. */
	if (mode != PROXYPROTO_OFF && cfg->proxy_protocol_trusted.count == 0)
		loader_fail(ld, file, 0, "proxy_protocol = %s needs proxy_protocol_trusted",
			    cfg->proxy_protocol);
}

/* jwt: auth_type = jwt needs keys; keys without auth_type = jwt would be a silent no-op. */
static void config_validate_jwt(Loader *ld)
{
	const Config *cfg = ld->cfg;
	const char *file = cfg->source_path;
	if (cfg->auth_type == AUTH_JWT && cfg->jwt.nkeys == 0)
		loader_fail(ld, file, 0, "auth type jwt needs auth.jwt with keys or a jwks_file "
			    "holding at least one key");
	else if (cfg->jwt.configured && cfg->auth_type != AUTH_JWT)
		log_warning("%s: auth.jwt is set but auth.type is %s: tokens are not used", file,
			    config_auth_type_name(cfg->auth_type));
}

/* Rules that span keys; per-value rules were checked while parsing. */
static void config_validate(Loader *ld)
{
	const Config *cfg = ld->cfg;
	const char *file = cfg->source_path;
	if (!cfg->listen_addr && !cfg->unix_socket_dir)
		loader_fail(ld, file, 0, "neither listen_addr nor unix_socket_dir is set: nothing to listen on");
	/* Files and ciphers are checked when the TLS contexts are built (tls.c). */
	if (sslmode_enables_tls(cfg->client_tls_sslmode) &&
	    (!cfg->client_tls_cert_file || !cfg->client_tls_key_file))
		loader_fail(ld, file, 0, "client_tls_sslmode = %s needs client_tls_cert_file and "
			    "client_tls_key_file", cfg->client_tls_sslmode);
	config_validate_ops(ld);
	config_validate_jwt(ld);
	if (cfg->audit.sink == AUDIT_SINK_FILE && !cfg->audit.path)
		loader_fail(ld, file, 0, "audit.sink is file but audit.path is not set");
	if (!config_parse_session_state(cfg->transaction_session_state, &ld->cfg->session_state_mode))
		loader_fail(ld, file, 0, "transaction_session_state must be warn, error, pin or off, "
			    "not \"%s\"", cfg->transaction_session_state);
	if (cfg->min_pool_size > cfg->default_pool_size && cfg->default_pool_size > 0)
		log_warning("%s: min_pool_size %d is larger than default_pool_size %d", file,
			    cfg->min_pool_size, cfg->default_pool_size);
}

Config *config_load(const char *path, char *err, size_t errlen)
{
	if (err && errlen)
		err[0] = '\0';
	Loader ld = { .cfg = config_new_defaults(path), .err = err, .errlen = errlen,
		      .dir = path_dirname(path) };
	if (path_is_yaml(path))
		yaml_load(&ld, path);
	else
		ini_load(&ld, path);
	if (!ld.failed)
		config_load_userlist(&ld);
	if (!ld.failed)
		config_load_hba(&ld);
	if (!ld.failed)
		config_validate(&ld);
	free(ld.dir);
	if (ld.failed) {
		config_free(ld.cfg);
		return NULL;
	}
	return ld.cfg;
}
