/*
 * What the admin console's files share; the rest of pgmoat uses admin.h.
 *
 *   admin.c         entry points, dispatch and authorisation (what
 *                   stats_users may run), answers (sent, or captured for the
 *                   extended protocol), the console's database and welcome
 *   admin_parse.c   the console grammar (pure; fuzz_admin_parse)
 *   admin_result.c  building a result set in one PktBuf
 *   admin_show.c    pgbouncer 1.18's SHOW result sets (names and order of
 *                   columns are a contract: test_admin.py diffs them)
 *   admin_cmd.c     the commands that change state: PAUSE ... SUSPEND, SET
 *   admin_wait.c    answers that come later: PAUSE, WAIT_CLOSE and SUSPEND
 *                   wait for their condition
 *   admin_policy.c  pgmoat's own: SHOW APPROVALS, POLICIES, POLICY_STATS;
 *                   APPROVE, DENY
 *   admin_ext.c     the extended-protocol front end (admin_run_captured)
 *
 * Every command function answers exactly once: rows or CommandComplete, or
 * an error, then ReadyForQuery (through admin_send/admin_ready/admin_error),
 * except that admin_wait_or_answer() may answer later.
 */
#ifndef PGMOAT_ADMIN_INT_H
#define PGMOAT_ADMIN_INT_H

#include "admin_parse.h"
#include "pgmoat.h"
#include "pktbuf.h"

/*
 * pgbouncer 1.18 answers every console error with SQLSTATE 08P01; tools that
 * match on it keep working. Our own additions use precise codes.
 */
#define ADMIN_SQLSTATE "08P01"
/* The pgbouncer release whose console we reproduce. */
#define ADMIN_COMPAT_VERSION "1.18.0"

/* ------------------------------------------------------ answers (admin.c) */

/* Queue pb's messages for c (or capture them), then free pb. */
void admin_send(Client *c, PktBuf *pb);
/* CommandComplete tag + ReadyForQuery. */
void admin_ready(Client *c, const char *tag);
/* ErrorResponse + ReadyForQuery, logged. */
void admin_error_code(Client *c, const char *sqlstate, const char *fmt, ...) PRINTF_LIKE(3, 4);
#define admin_error(c, ...) admin_error_code((c), ADMIN_SQLSTATE, __VA_ARGS__)
/* A command runs for the extended protocol (admin_run_captured): its answer cannot wait. */
bool admin_capturing(void);

/* ---------------------------------------------- result sets (admin_result.c) */

typedef struct AdminColumn {
	const char *name;
	ColType type;
} AdminColumn;

#define ROW_MAX_COLS 32
#define ROW_CELL 64

/* One row being filled: numbers are formatted into cells, strings are borrowed. */
typedef struct Row {
	int n;
	bool overflow;
	const char *vals[ROW_MAX_COLS];
	char cells[ROW_MAX_COLS][ROW_CELL];
} Row;

typedef struct ResultSet {
	PktBuf pb;
	int ncols;
} ResultSet;

void admin_row_reset(Row *r);
void admin_row_str(Row *r, const char *s);
void admin_row_fmt(Row *r, const char *fmt, ...) PRINTF_LIKE(2, 3);
void admin_row_int(Row *r, int64_t v);
void admin_row_u64(Row *r, uint64_t v);
void admin_rs_begin(ResultSet *rs, const AdminColumn *cols, int ncols);
void admin_rs_row(ResultSet *rs, const Row *r);
void admin_rs_send(Client *c, ResultSet *rs, const char *tag);
#define RS_BEGIN(rs, cols) admin_rs_begin((rs), (cols), (int)ARRAY_SIZE(cols))
/* Like pgbouncer's "%Y-%m-%d %H:%M:%S %Z" in local time; "" for none. */
void admin_format_time(char *buf, size_t len, usec_t wall_usec);

/* ------------------------------------------------ SHOW tables (admin_show.c) */

void admin_show_active_sockets(Client *c);
void admin_show_clients(Client *c);
void admin_show_config(Client *c);
void admin_show_databases(Client *c);
void admin_show_dns_hosts(Client *c);
void admin_show_dns_zones(Client *c);
void admin_show_fds(Client *c);
void admin_show_help(Client *c);
void admin_show_lists(Client *c);
void admin_show_mem(Client *c);
void admin_show_pools(Client *c);
void admin_show_servers(Client *c);
void admin_show_sockets(Client *c);
void admin_show_state(Client *c);
void admin_show_stats(Client *c);
void admin_show_stats_averages(Client *c);
void admin_show_stats_totals(Client *c);
void admin_show_totals(Client *c);
void admin_show_users(Client *c);
void admin_show_version(Client *c);
/* A session parameter drivers ask for (SHOW answers it, SET ignores it): its index, or -1. */
int admin_fake_param(const char *name);
void admin_show_fake(Client *c, int idx);

/* ---------------------------------------- pgmoat's own (admin_policy.c) */

void admin_show_approvals(Client *c);
void admin_show_policies(Client *c);
void admin_show_policy_stats(Client *c);
void admin_cmd_approve(Client *c, const char *arg);
void admin_cmd_deny(Client *c, const char *arg);
/* DENY id [reason]: the reason may be several words. */
void admin_deny(Client *c, const char *idtext, const char *reason);

/* ------------------------------------------------ commands (admin_cmd.c) */

/* arg is "" when the command has none; authorisation is the caller's (admin.c). */
void admin_cmd_pause(Client *c, const char *arg);
void admin_cmd_resume(Client *c, const char *arg);
void admin_cmd_disable(Client *c, const char *arg);
void admin_cmd_enable(Client *c, const char *arg);
void admin_cmd_reconnect(Client *c, const char *arg);
void admin_cmd_kill(Client *c, const char *arg);
void admin_cmd_kill_client(Client *c, const char *arg);
void admin_cmd_wait_close(Client *c, const char *arg);
void admin_cmd_reload(Client *c, const char *arg);
void admin_cmd_shutdown(Client *c, const char *arg);
void admin_cmd_suspend(Client *c, const char *arg);
/* SET key = val: a setting (admin_users only), or a driver's parameter, ignored. */
void admin_set(Client *c, const char *key, const char *val);
/* The live client with this id, or NULL. */
Client *admin_find_client(uint64_t id);

/* ---------------------------------------- answers that wait (admin_wait.c) */

typedef enum { ADMIN_WAIT_PAUSE, ADMIN_WAIT_CLOSE, ADMIN_WAIT_SUSPEND } AdminWaitKind;

/* Answer now when the condition already holds, else later (db NULL: every database). */
void admin_wait_or_answer(Client *c, AdminWaitKind kind, const char *db);
/* c's command still waits: queue sql, answered in order after it; false: c does not wait. */
bool admin_wait_queue(Client *c, const char *sql);
/* c's command still waits. */
bool admin_wait_pending(const Client *c);
/* At exit: drop the waiting answers and their timer. */
void admin_wait_cleanup(void);

#endif
