/*
 * auth_user + auth_query (pgbouncer's): a client that is not in auth_file
 * is looked up in the database by running auth_query, with the client's
 * user name as the only parameter ($1), on a dedicated connection logged in
 * as auth_user. The secret it returns (md5, SCRAM verifier or plain) then
 * authenticates the client exactly as an auth_file entry would.
 *
 * One connection per (database, auth_user), opened on first use, kept open
 * and reused, one query at a time; lookups queue behind each other. The
 * connection carries only pgmoat's own startup parameters (search_path is
 * pinned to pg_catalog, application_name "pgmoat auth_query"): nothing a
 * client sent ever reaches it. Nothing is cached: every login asks again,
 * so a changed or revoked password takes effect at once.
 */
#ifndef PGMOAT_AUTH_QUERY_H
#define PGMOAT_AUTH_QUERY_H

#include "pgmoat.h"

/* The auth_user for logins to db: its own entry's, else the global one; NULL: none. */
const char *auth_query_user_for(const Database *db);

/*
 * Look c->user_name up. The answer arrives later through
 * client_auth_query_done(), exactly once, unless auth_query_cancel() is
 * called first. An immediate failure (no usable password for auth_user)
 * may answer before this returns.
 */
void auth_query_start(Client *c, Database *db, const char *auth_user);

/* The client is going away: forget its lookup (an answer in flight is dropped). */
void auth_query_cancel(Client *c);

/*
 * After a reload: lookup connections are re-opened with the new settings
 * (target, auth_user's password) - idle ones now, busy ones once their
 * query is answered.
 */
void auth_query_reload(void);

/* At exit: close every auth_query connection. */
void auth_query_cleanup(void);

#endif
