/*
 * Configuration: native YAML (libyaml) or an unmodified pgbouncer.ini.
 *
 * Both formats fill the same Config through one declarative key table
 * (config_keys), which is also what SHOW CONFIG prints. Loading builds a
 * complete new Config and validates it; reload swaps it in only when valid,
 * so a broken file never replaces a working one.
 */
#ifndef PGMOAT_CONFIG_H
#define PGMOAT_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include "util.h"
#include "userlist.h"
#include "hba.h"
#include "policy.h"
#include "auth_jwt.h"

typedef enum { POOL_SESSION = 0, POOL_TRANSACTION = 1, POOL_STATEMENT = 2 } PoolMode;

/* transaction_session_state (sessionstate.h) */
typedef enum {
	SESSION_STATE_WARN,
	SESSION_STATE_ERROR,
	SESSION_STATE_PIN,
	SESSION_STATE_OFF,
} SessionStateMode;

/* "warn", "error", "pin", "off" (NULL = the default, warn); false when unknown. */
bool config_parse_session_state(const char *s, SessionStateMode *out);

typedef enum {
	AUTH_TRUST,	/* no password asked */
	AUTH_ANY,	/* like trust, and the user name is ignored (pgbouncer "any") */
	AUTH_PLAIN,	/* cleartext password */
	AUTH_MD5,	/* md5, falling back to SCRAM when the stored secret is SCRAM */
	AUTH_SCRAM,	/* scram-sha-256 */
	AUTH_HBA,	/* per connection, from auth_hba_file */
	AUTH_CERT,	/* the verified client certificate's CommonName is the user (tls.c) */
	AUTH_JWT,	/* cleartext password carrying a JWT (auth_jwt.c) */
} AuthType;

const char *config_pool_mode_name(PoolMode m);
const char *config_auth_type_name(AuthType t);

/* One [databases] entry (or YAML databases.<name>). */
/* ---- audit (feature "audit"): the YAML `audit:` block (doc/audit.md). */
typedef enum { AUDIT_SINK_NONE, AUDIT_SINK_FILE, AUDIT_SINK_STDOUT } AuditSink;

#define AUDIT_DEFAULT_QUEUE_SIZE 65536

typedef struct AuditConfig {
	AuditSink sink;
	char *path;		/* AUDIT_SINK_FILE: resolved against the config file's directory */
	bool sql_full;		/* sql: full keeps literals; normalized (default) removes them */
	bool required;		/* refuse statements rather than lose their records */
	bool fsync;		/* fdatasync after every written batch */
	int queue_size;		/* records waiting for the writer before drop / refusal */
	StrList claims;		/* JWT claims copied into every record (besides sub) */
} AuditConfig;

void audit_config_free(AuditConfig *ac);
bool audit_config_equal(const AuditConfig *a, const AuditConfig *b);

/* ---- jwt: databases.<db>.roles.<name>, the server role a token's role_claim picks */
typedef struct DbRole {
	char *name;
	char *user;		/* server user */
	char *password;		/* NULL: none (the server trusts, or auth_file has it) */
	struct DbRole *next;
} DbRole;

typedef struct DbConfig {
	char *name;		/* name clients connect to; "*" is the fallback entry */
	char *host;		/* NULL or starting with '/': unix socket directory */
	int port;		/* 5432 when unset */
	char *dbname;		/* server-side database; NULL: same as name */
	char *user;		/* forced server user; NULL: the client's user */
	char *password;		/* secret for `user`; NULL: from auth_file */
	char *auth_user;	/* accepted, reported; auth_query lands with issue 3 */
	char *client_encoding;	/* server startup parameters forced by the entry */
	char *datestyle;
	char *timezone;
	char *application_name;
	char *connect_query;	/* run once on every new server connection */
	int pool_size;		/* -1: default_pool_size */
	int min_pool_size;	/* -1: global min_pool_size */
	int reserve_pool;	/* -1: global reserve_pool_size */
	int max_db_connections;	/* -1: global max_db_connections */
	int pool_mode;		/* -1: global pool_mode, else a PoolMode */
	char *src_file;		/* where it was defined, for error messages */
	int src_line;
	/* ---- jwt */
	DbRole *roles;		/* YAML roles:, in file order; NULL: none */
	struct DbConfig *next;

	/* TLS (issue 3): YAML databases.<name>.tls; NULL: the server_tls_* key */
	char *tls_sslmode;
	char *tls_ca_file;
	char *tls_cert_file;
	char *tls_key_file;
} DbConfig;

/* A [users] entry: per-user overrides. */
typedef struct UserConfig {
	char *name;
	int pool_mode;		/* -1: not set */
	int max_user_connections; /* -1: not set */
	struct UserConfig *next;
} UserConfig;

typedef enum { APPROVALS_STORE_MEMORY, APPROVALS_STORE_POSTGRES } ApprovalsStore;

typedef struct Config {
	char *source_path;	/* the file given on the command line */

	/*
	 * [pgbouncer] settings, pgbouncer's names and meanings. Times in usec.
	 * A string setting that is empty or unset is NULL.
	 */
	char *listen_addr;	/* "*" = all, comma list allowed; NULL/"" = no TCP */
	int listen_port;
	char *unix_socket_dir;	/* "" = no unix socket */
	int unix_socket_mode;
	char *unix_socket_group;
	int listen_backlog;
	char *pidfile;
	char *logfile;
	bool syslog;
	char *syslog_ident;
	char *syslog_facility;
	char *user;		/* drop privileges to this user when started as root */
	PoolMode pool_mode;
	int max_client_conn;
	int default_pool_size;
	int min_pool_size;
	int reserve_pool_size;
	usec_t reserve_pool_timeout;
	int max_db_connections;
	int max_user_connections;
	AuthType auth_type;
	char *auth_file;
	char *auth_hba_file;
	char *auth_user;
	char *auth_query;
	StrList admin_users;
	StrList stats_users;
	char *server_reset_query;
	bool server_reset_query_always;
	char *server_check_query;
	usec_t server_check_delay;
	bool server_round_robin;
	int server_fast_close;
	usec_t server_lifetime;
	usec_t server_idle_timeout;
	usec_t server_connect_timeout;
	usec_t server_login_retry;
	usec_t client_login_timeout;
	usec_t autodb_idle_timeout;
	usec_t query_timeout;
	usec_t query_wait_timeout;
	usec_t client_idle_timeout;
	usec_t idle_transaction_timeout;
	usec_t suspend_timeout;
	usec_t dns_max_ttl;
	usec_t dns_nxdomain_ttl;
	usec_t dns_zone_check_period;
	StrList ignore_startup_parameters;
	bool disable_pqexec;
	bool application_name_add_host;
	bool log_connections;
	bool log_disconnections;
	bool log_pooler_errors;
	bool log_stats;
	usec_t stats_period;
	int verbose;
	int pkt_buf;
	int max_packet_size;
	int sbuf_loopcnt;
	int so_reuseport;
	bool tcp_defer_accept;
	int tcp_socket_buffer;
	bool tcp_keepalive;
	int tcp_keepcnt;
	int tcp_keepidle;
	int tcp_keepintvl;
	int tcp_user_timeout;
	char *resolv_conf;
	char *track_extra_parameters;
	int max_prepared_statements;	/* per server connection; 0 = no tracking (prepared.h) */
	/* transaction pooling safety net (sessionstate.h): warn | error | pin | off */
	char *transaction_session_state;
	SessionStateMode session_state_mode;	/* the above, parsed when the config is checked */
	/* TLS (tls.c): contexts are built from these by tls_contexts_build(). */
	char *client_tls_sslmode;
	char *client_tls_key_file;
	char *client_tls_cert_file;
	char *client_tls_ca_file;
	char *client_tls_protocols;
	char *client_tls_ciphers;
	char *client_tls_dheparams;
	char *client_tls_ecdhcurve;
	char *server_tls_sslmode;
	char *server_tls_ca_file;
	char *server_tls_key_file;
	char *server_tls_cert_file;
	char *server_tls_protocols;
	char *server_tls_ciphers;

	/* Shown by pgbouncer 1.18's SHOW CONFIG; accepted and reported only. */
	char *job_name;

	/* pgmoat additions */
	int workers;		/* event-loop threads; 1 for now */

	/* ops (issue 3.6): drain, HTTP endpoints, log format, PROXY protocol */
	usec_t shutdown_timeout;	/* SIGTERM drain: exit after this even with clients left (0: wait) */
	char *http_listen;	/* host:port of the HTTP listener (/healthz, /readyz, /metrics); NULL: off */
	char *admin_token_file;	/* bearer token for HTTP routes that need one */
	char *log_format;	/* "plain" or "json" */
	char *proxy_protocol;	/* off | v1 | v2 | any */
	StrList proxy_protocol_trusted;	/* peers allowed to send a PROXY header (addresses, CIDRs, "unix") */
	usec_t proxy_protocol_timeout;	/* the header must arrive within this */

	DbConfig *databases;	/* in file order */
	UserConfig *users;	/* [users] section */
	Userlist *userlist;	/* parsed auth_file; NULL when none */
	PolicyConfig policy;	/* YAML `policy:`; no scripts: no policy engine */

	/* auth (issue 3 point 4) */
	Hba *hba;		/* parsed auth_hba_file; NULL when none */
	/* hold: YAML `approvals:` (approvals.c, approvals_pg.c) */
	usec_t approvals_timeout;	/* a held statement is denied after this long */
	ApprovalsStore approvals_store;	/* memory, or shared with other replicas */
	char *approvals_conninfo;	/* libpq conninfo of the postgres store (may hold a password) */
	char *approvals_key;	/* contents of approvals.key_file: signs the replicas' messages */

	/* ---- audit (feature "audit"): YAML `audit:`; sink AUDIT_SINK_NONE = no audit */
	AuditConfig audit;

	/* ---- jwt (feature "jwt"): YAML auth.jwt */
	JwtConfig jwt;
} Config;

/*
 * Load a config file: YAML when the name ends in .yaml/.yml, otherwise ini.
 * Returns NULL and writes "file:line: message" into err on any error.
 * Unknown keys: an error in YAML; a warning (logged) in ini.
 */
Config *config_load(const char *path, char *err, size_t errlen);
void config_free(Config *cfg);

/* Lookup helpers used by the pooler. */
const DbConfig *config_find_db(const Config *cfg, const char *name); /* falls back to "*" */
const UserConfig *config_find_user(const Config *cfg, const char *name);
const DbRole *config_find_role(const DbConfig *db, const char *name);	/* jwt */
DbRole *config_roles_copy(const DbRole *src);	/* jwt: deep copy, for the pooler's DbConfig */
void config_roles_free(DbRole *r);

/* SHOW CONFIG: iterate every [pgbouncer] key in pgbouncer's order. */
typedef struct ConfigKeyView {
	const char *key;
	char *value;		/* owned by the caller; free() it */
	const char *default_value;
	bool changeable;	/* takes effect on RELOAD */
} ConfigKeyView;
int config_key_count(void);
void config_key_view(const Config *cfg, int index, ConfigKeyView *out);

/* Parse "host:port" or "[v6]:port" (port 1..65535): http_listen. */
bool config_parse_host_port(const char *s, char *host, size_t hostlen, int *port) MUST_CHECK;

/* Parse "30", "30s", "500ms", "10m", "1h", "1.5" (seconds) into usec. */
bool config_parse_duration(const char *s, usec_t *out) MUST_CHECK;

#endif
