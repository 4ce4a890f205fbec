/*
 * The admin console: the fake database "pgbouncer" (or "pgmoat"), with
 * pgbouncer 1.18's commands and column names, so existing tooling works.
 */
#ifndef PGMOAT_ADMIN_H
#define PGMOAT_ADMIN_H

#include "pgmoat.h"
#include "pktbuf.h"

bool admin_is_console_db(const char *dbname);
/*
 * Create the console's Database ("pgbouncer", is_admin) and its Pool (user
 * "pgbouncer") at start-up, after moat->cfg is loaded, as pgbouncer does.
 */
void admin_setup(void);
/* The console's Database and Pool made by admin_setup(); admin clients go on that pool. */
Database *admin_database(void);
Pool *admin_pool(void);
/*
 * Handle one simple-protocol Query from an admin client. Always answers
 * (rows, CommandComplete or ErrorResponse, then ReadyForQuery), with two
 * pgbouncer exceptions: SHUTDOWN closes the connection instead, and PAUSE
 * and WAIT_CLOSE answer later, once the servers are released or closed
 * (queries the client pipelines meanwhile are answered after, in order).
 */
void admin_handle_query(Client *c, const char *sql);
/*
 * For the extended protocol (admin_ext.c): run sql as admin_handle_query()
 * would, but append the whole answer, up to its ReadyForQuery, to out
 * instead of sending it. Commands whose answer would come later (a PAUSE
 * that has to wait) answer with an error instead.
 */
void admin_run_captured(Client *c, const char *sql, PktBuf *out);
/* A SHOW (or SELECT): running it changes nothing, so Describe may run it for its columns. */
bool admin_is_read_only(const char *sql);
/* Send the admin console's own welcome (params, key, ReadyForQuery) after auth. */
void admin_send_welcome(Client *c);
/* At exit: drop pending PAUSE/WAIT_CLOSE answers and their timer. */
void admin_cleanup(void);

#endif
