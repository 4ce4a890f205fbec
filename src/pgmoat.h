/*
 * The umbrella header: the objects of the pooler and how they relate.
 *
 *   Moat ── databases ── Database ─┐
 *        ── users ────── PoolUser ─┼── Pool (one per database × user)
 *        ── pools ─────────────────┘     ├── client lists by state
 *                                        └── server lists by state
 *
 * A connection's state is the list it is on (pgbouncer): clients and servers
 * change state only through client_set_state()/server_set_state(), which move
 * them between lists, so every count in SHOW POOLS is a list length.
 *
 * Nothing per-connection is global: a Client and its Server belong to one
 * Worker (event loop). The process-wide Moat holds configuration and the
 * object registries.
 */
#ifndef PGMOAT_H
#define PGMOAT_H

#include <stdbool.h>
#include <stdint.h>
#include <event2/event.h>
#include <event2/bufferevent.h>
#include <event2/buffer.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "util.h"
#include "list.h"
#include "log.h"
#include "config.h"
#include "varcache.h"
#include "welcome.h"
#include "auth_scram.h"
#include "stats.h"
#include "msgio.h"
#include "policy.h"
#include "histogram.h"

typedef struct Moat Moat;
typedef struct Worker Worker;
typedef struct Database Database;
typedef struct PoolUser PoolUser;
typedef struct Pool Pool;
typedef struct Client Client;
typedef struct Server Server;
struct ssl_st;

typedef enum {
	CL_FREE,		/* being torn down; waits one loop turn before free */
	CL_LOGIN,		/* startup and authentication */
	CL_WAITING_LOGIN,	/* authenticated, waiting for the pool's first server (welcome params) */
	CL_WAITING,		/* has a request, waiting for a server */
	CL_ACTIVE,		/* idle between transactions, or linked to a server */
} ClientState;

typedef enum {
	SV_FREE,		/* being torn down */
	SV_LOGIN,		/* connecting and authenticating */
	SV_IDLE,		/* ready, in the pool */
	SV_ACTIVE,		/* linked to a client */
	SV_USED,		/* released, needs server_check_query before reuse */
	SV_TESTED,		/* running reset or check query */
} ServerState;

const char *client_state_name(ClientState s);
const char *server_state_name(ServerState s);

/* A remote or local socket address, printable. */
typedef struct PeerAddr {
	char host[64];		/* numeric address, or "unix" */
	int port;
	bool is_unix;
} PeerAddr;

/* Runtime view of a [databases] entry; survives reloads (fields refreshed). */
struct Database {
	List head;		/* in moat->databases */
	char *name;
	DbConfig *cfg;		/* owned copy of the entry, replaced on reload */
	bool is_admin;		/* the fake "pgbouncer"/"pgmoat" database */
	bool is_autodb;		/* created from the "*" entry */
	bool paused;		/* PAUSE db: no new server work */
	bool disabled;		/* DISABLE db: new clients refused */
	bool dead;		/* removed from config; freed when its pools empty */
	int connection_count;	/* servers over all its pools (max_db_connections) */
	usec_t inactive_since;	/* autodb_idle_timeout */
	/* ---- conn8: the last plain pool a login of this database got (pool_get_for_login) */
	Pool *login_pool;
};

/* Runtime view of a user: counts for max_user_connections. */
struct PoolUser {
	List head;		/* in moat->users */
	char *name;
	int connection_count;	/* servers over all pools of this user */
	int client_count;
};

typedef struct ParamList {
	int count;
	char **names;		/* owned */
	char **values;
} ParamList;

struct Pool {
	List head;		/* in moat->pools */
	Database *db;
	PoolUser *user;		/* the client-side user */
	char *server_user;	/* who we log in as (forced user or the client's) */

	List active_clients;	/* CL_ACTIVE */
	List waiting_clients;	/* CL_WAITING, FIFO */
	List waiting_login_clients; /* CL_WAITING_LOGIN */
	List active_servers;	/* SV_ACTIVE */
	List idle_servers;	/* SV_IDLE, LIFO: the warmest connection first */
	List used_servers;	/* SV_USED */
	List tested_servers;	/* SV_TESTED */
	List login_servers;	/* SV_LOGIN */

	bool maintain_pending;	/* pool_schedule_maintain() was called */
	bool in_maintain;	/* pool_maintain() is running: nested calls only mark again */
	bool maintain_again;
	ParamList welcome;	/* the server's ParameterStatus set, sent to new clients */
	bool welcome_ready;
	WelcomeCache welcome_cache;	/* welcome's messages, as built for logins (welcome.c) */
	ScramKeys scram_keys;	/* recovered from a client's SCRAM login, for servers */
	usec_t last_connect_failed;	/* server_login_retry */
	char *last_login_error;	/* shown to clients that wait for a failing server */
	PoolStats stats;
	PoolMode mode;		/* pool_effective_mode()'s answer, valid while mode_epoch... */
	unsigned mode_epoch;	/* ...equals moat->cfg_epoch */

	/* auth (issue 3 point 4) */
	char *queried_secret;	/* owned: auth_query's secret for this user, to log servers in */
	/* Masking on the wire (catalog.c): OID -> names, on a connection of its own */
	struct Catalog *mask_catalog;

	/* ---- jwt: a pool per (database, server role); NULL: not a role pool */
	char *jwt_role;		/* owned: databases.<db>.roles name; servers log in with its secret */
};

typedef enum {
	AUTH_PHASE_NONE,
	AUTH_PHASE_PASSWORD,	/* asked for cleartext or md5 */
	AUTH_PHASE_SASL_INIT,	/* sent AuthenticationSASL */
	AUTH_PHASE_SASL_CONT,	/* sent SASLContinue */
	AUTH_PHASE_DONE,
} AuthPhase;

struct Client {
	List head;		/* in the list of its state (pool or moat->login_clients) */
	List all_head;		/* in worker->all_clients, for SHOW CLIENTS and cancel lookup */
	ClientState state;
	Worker *worker;
	Pool *pool;		/* NULL until login resolves database and user */
	Server *link;		/* the server serving us, while CL_ACTIVE */
	struct bufferevent *bev;	/* TLS only (see fd below) */
	OutFlush out;		/* direct flushing of the connection's output */
	InReader in;		/* direct reading into the connection's input */
	uint64_t id;		/* for logs: C-<id> */
	PeerAddr remote;
	PeerAddr local;		/* read with client_local_addr(): filled on first use */
	bool local_known;

	char *user_name;	/* from StartupMessage */
	char *db_name;
	bool is_admin;		/* connected to the admin console */
	bool admin_can_write;	/* admin_users (not only stats_users) */
	VarCache vars;		/* what the client believes its session parameters are */

	uint32_t cancel_pid;	/* the BackendKeyData we gave: random, our own */
	uint32_t cancel_key;

	AuthPhase auth_phase;
	uint8_t md5_salt[4];
	ScramServer scram;
	bool seen_startup;	/* exactly one StartupMessage per connection */

	char tx_status;		/* 'I', 'T' or 'E' as last reported to the client */
	int pending_requests;	/* Query/Sync/FunctionCall sent, ReadyForQuery not yet seen */
	size_t fwd_remaining;	/* bytes of a message still streaming to the server */
	bool reading_paused;	/* EV_READ off: our server's output is full */
	bool close_after_flush;	/* an error was sent; close when written */
	bool counted;		/* holds a slot in moat->client_count */
	bool fwd_discard;	/* the message streaming in is dropped (denied, too big to judge) */
	bool read_wm_raised;	/* read watermark raised to take one whole message to judge */
	bool judge_waiting;	/* a Query waits for in-flight statements to settle */
	bool requesting_server;	/* in client_forward's own pool_request_server(): it carries on */
	uint8_t *stash;		/* judged before a server was assigned: sent first once one is */
	bool stash_in_input;	/* ... or, not rewritten, still at the head of the input */
	size_t stash_len;
	uint8_t stash_type;
	bool stash_may_change_lexing;
	/* (policy cost 4) Judged.stateless of the stash; and of the judged message
	 * being sent, for sessionstate_check to take (it clears it) */
	bool stash_stateless;
	bool judged_stateless;
	bool discard_until_sync;	/* a Parse was denied with no server: drop up to Sync */
	PolicySession psession;	/* the policies' view of this client */
	bool psession_open;

	/* hold (approvals.c): a statement a policy held for a reviewer */
	struct Approval *held;	/* waiting: the client's input is not processed */
	struct ApprovalRuling *ruling;	/* decided: applied when the message is judged again */
	/* Masking on the wire (maskwire.c) */
	bool mask_scrub;	/* touched a protected table: errors and notices are scrubbed */
	bool mask_schema_changed;	/* judged DDL: the catalog is dropped at ReadyForQuery */
	struct MaskClient *mask;	/* set-operation hints: stashed Query, statements, portals */
	/* prepared statements and the session-state check (prepared.c, sessionstate.c) */
	bool ps_enabled;	/* named statements tracked: decided at login */
	struct PsMap *ps_names;	/* client name -> statement definition; NULL until one */
	bool session_pinned;	/* left session state under transaction_session_state = pin */
	bool session_state_warned;	/* the once-per-client warning was logged */

	usec_t connect_time;	/* wall clock */
	usec_t request_time;	/* last message from the client (monotonic) */
	usec_t wait_start;	/* when it started waiting for a server */
	usec_t xact_start;	/* stats */
	usec_t query_start;
	usec_t login_deadline;

	/* auth (issue 3 point 4) */
	AuthType auth_method;	/* auth_type, or the method of the client's auth_hba_file line */
	UserlistEntry *queried;	/* owned: the secret auth_query found; NULL: use auth_file */
	struct AuthLookup *auth_query_req;	/* lookup in flight (auth_query.c) */

	/* admin console over the extended protocol (issue 3 point 3) */
	struct AdminExt *admin_ext;	/* owned: its statements and portals; NULL until used */
	/* ops (issue 3.6): PROXY protocol */
	bool proxy_pending;	/* a trusted balancer's PROXY header must come first */

	/* ---- audit (feature "audit") */
	struct AuditSession *audit;	/* this session's audit state; NULL: not audited */

	/* TLS (tls.c) */
	struct ssl_st *ssl;	/* set once the handshake is done; owned by bev */

	/* ---- jwt (feature "jwt"): set once the client's token is verified */
	char *jwt_claims;	/* owned: the token's claims, compact JSON; NULL: no token */
	char *jwt_role;		/* owned: the role the token's role_claim picked; NULL: none */

	/*
	 * ---- conn6: a plain client socket has no bufferevent (bev stays NULL;
	 * msgio reads and writes fd directly); TLS gets one for the handshake.
	 * fd is the connection's liveness: -1 once the socket is closed.
	 */
	int fd;

	/*
	 * ---- conn7: AuthenticationOk is queued with the first thing the client
	 * gets after it (the welcome, or an error), as pgbouncer does: one write
	 * to the output, not two.
	 */
	bool auth_ok_due;

	/*
	 * ---- conn8: the database client_precheck_login found, for the rest of
	 * the same callback only (a synchronous login: trust, console); NULL
	 * otherwise, when the login looks it up again.
	 */
	Database *login_db;
	/* user_name and db_name when both fit (PostgreSQL's names are at most 63 bytes) */
	char names[128];
};

/* The client's socket is still open (its output can be written). */
static inline bool client_has_socket(const Client *c) { return c->fd >= 0; }

struct Server {
	List head;		/* in the pool list of its state */
	List all_head;		/* in worker->all_servers */
	ServerState state;
	Worker *worker;
	Pool *pool;
	Client *link;		/* the client we serve while SV_ACTIVE */
	struct bufferevent *bev;
	OutFlush out;		/* direct flushing of bev's output */
	InReader in;		/* direct reading into bev's input, once connected */
	uint64_t id;		/* for logs: S-<id> */
	PeerAddr remote;
	PeerAddr local;

	struct sockaddr_storage addr;	/* where we connected: cancel requests go there too */
	socklen_t addrlen;
	uint32_t backend_pid;	/* from BackendKeyData, for cancel */
	uint32_t backend_key;
	VarCache vars;		/* what the server has */
	ScramClient scram;

	bool ready;		/* last ReadyForQuery seen, nothing pending */
	char tx_status;		/* from the last ReadyForQuery */
	int pending_requests;	/* Query/Sync/FunctionCall sent, ReadyForQuery not yet seen */
	bool unsynced;		/* extended-protocol messages forwarded since the last Sync */
	int internal_queries;	/* our own queries (SET sync, reset, check) whose replies we swallow */
	bool internal_failed;	/* one of them failed: drop the connection */
	size_t fwd_remaining;	/* bytes of a message still streaming to the client */
	bool fwd_discard;	/* ...or being skipped (replies to our own queries) */
	bool close_needed;	/* RECONNECT / lifetime / dirty: close when released */
	bool in_copy;		/* CopyIn/CopyOut/CopyBoth in progress */
	bool copy_in;		/* server in copy-in: it ignores Sync/Flush until CopyDone/Fail */
	int syncs_since_execute;	/* Syncs after the last Execute/Query: ignored if it starts COPY IN */
	bool welcome_pending;	/* first login of the pool: record ParameterStatus */
	bool reading_paused;	/* stopped reading: the client's output is full */
	bool fresh;		/* just logged in or checked: no server_check_query needed */
	struct Denial *denials;	/* policy errors whose marker is in flight (enforce.c) */
	bool lexing_may_change;	/* a statement in flight may change how SQL is lexed */
	int cancels_in_flight;	/* forwarded cancels not yet done: not reusable until 0 */

	/* Masking on the wire (maskwire.c) */
	struct MaskWire *mask;	/* result plan and Describe bookkeeping; NULL: none yet */
	/* prepared statements (prepared.c): statements held, replies owed; NULL until used */
	struct PsServer *ps;

	usec_t connect_time;	/* wall clock */
	usec_t connect_mono;	/* for server_lifetime */
	usec_t request_time;	/* last activity (monotonic) */
	usec_t idle_since;	/* when it went idle (server_idle_timeout) */
	usec_t login_deadline;	/* server_connect_timeout */

	/* TLS (tls.c) */
	struct ssl_st *ssl;	/* set once the handshake is done; owned by bev */
	bool tls_requested;	/* SSLRequest sent: the next byte is 'S' or 'N' */
};

struct Worker {
	struct event_base *base;
	List all_clients;
	List all_servers;
	List login_clients;	/* CL_LOGIN before a pool is known */
	List free_clients;	/* CL_FREE, freed on the next loop turn */
	List free_servers;
	struct event *free_ev;	/* deferred free */
	Flusher flusher;	/* writes dirty outputs once per loop pass */
	struct event *maintain_ev;	/* deferred pool_maintain() of flagged pools */
	PolicyEngine *policy;	/* this thread's Lua policies; NULL when none configured */
	bool masks_active;	/* ... and they mask results (set with policy, enforce_install) */
	uint64_t next_id;

	/* ---- audit (feature "audit") */
	struct SqlInfoCache *audit_sql;	/* classifications for records when no policy engine runs */
	/* policy timing (SHOW POLICY_STATS): every on_query evaluation on this thread */
	Histogram on_query_ns;		/* its duration in nanoseconds (classification + Lua) */
	Histogram on_query_lua_ns;	/* the part spent in Lua, when Lua was entered */
	uint64_t on_query_errors;	/* decided by a policy error or overrun (fail closed) */
	/* prepared statements (prepared.c) */
	struct PsRegistry *ps_registry;	/* statement definitions shared by clients and servers */
	/* transaction_session_state (sessionstate.c): the last statement text found
	 * free of its words, so that a Parse sent again and again is scanned once */
	char *ss_clean_sql;
	size_t ss_clean_len, ss_clean_cap;

	/* ---- conn8: free_ev was activated and has not run yet (one activation per batch of closes) */
	bool free_armed;
};

typedef enum { MOAT_RUNNING, MOAT_PAUSED, MOAT_SUSPENDED, MOAT_DRAINING } MoatState;

struct Moat {
	Config *cfg;		/* current configuration; replaced whole on reload */
	unsigned cfg_epoch;	/* bumped by every change of cfg (reload, admin SET); from 1 */
	char *config_path;
	Worker *worker;		/* the only worker for now; workers>1 lands with issue 3 */
	List databases;
	List users;
	List pools;
	MoatState state;
	bool shutdown_immediate;	/* SHUTDOWN / second SIGINT */
	int client_count;	/* for max_client_conn */
	usec_t start_time;
	struct event *janitor_ev;
	GlobalStats stats;
};

extern Moat *moat;

#endif
