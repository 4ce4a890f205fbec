/*
 * The admin console: the fake database "pgbouncer" (or "pgmoat"), with
 * pgbouncer 1.18's commands and column names, so existing tooling works.
 */
#ifndef PGMOAT_ADMIN_H
#define PGMOAT_ADMIN_H

#include "pgmoat.h"

bool admin_is_console_db(const char *dbname);
/* Create the console's Database object at start-up. */
void admin_setup(void);
/*
 * Handle one simple-protocol Query from an admin client. Always answers
 * (rows, CommandComplete or ErrorResponse, then ReadyForQuery).
 */
void admin_handle_query(Client *c, const char *sql);
/* Send the admin console's own welcome (params, key, ReadyForQuery) after auth. */
void admin_send_welcome(Client *c);

#endif
