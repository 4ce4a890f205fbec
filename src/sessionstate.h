/*
 * The transaction pooling safety net: statements that leave state on a
 * server connection after their transaction (SET without LOCAL, PREPARE,
 * LISTEN, session advisory locks, WITH HOLD cursors, temporary tables,
 * set_config(..., false)) would leak to whichever client gets that server
 * next. In transaction and statement pooling they are found with the real
 * parser (sqlinfo) and handled as transaction_session_state says:
 *
 *   warn   run it; log once per client, count every one, and send the client
 *          a NoticeResponse where one can be placed between messages
 *   error  do not run it: the client gets SQLSTATE 0A000 (feature not
 *          supported: the statement is valid, the pooling mode cannot honour it)
 *          at exactly that point of its stream, as the server would fail it
 *   pin    run it, and keep that server for the client until it disconnects;
 *          the server is closed afterwards rather than reused
 *   off    no check (and no parse)
 *
 * SET of a parameter pgmoat tracks per client (client_encoding, DateStyle,
 * TimeZone, IntervalStyle, standard_conforming_strings, application_name) is
 * not session state here: it is replayed on every server the client uses.
 */
#ifndef PGMOAT_SESSIONSTATE_H
#define PGMOAT_SESSIONSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"	/* SessionStateMode, config_parse_session_state() */

#define SESSION_STATE_SQLSTATE "0A000"

struct Worker;
struct Client;
struct Server;
struct SqlInfo;
struct PktBuf;

/*
 * Classify sql (kinds and session state only: sqlinfo_parse_shallow); release
 * with sessionstate_release(). Shared with prepared.c (DEALLOCATE).
 */
struct SqlInfo *sessionstate_classify(struct Worker *w, const char *sql, size_t len);
void sessionstate_release(struct Worker *w, struct SqlInfo *info);

/* Are c's statements checked (transaction or statement pooling, mode not off, not pinned)? */
bool sessionstate_active(const struct Client *c);

/*
 * Check one whole Query or Parse message about to go to s. True: send it (a
 * warning may have been given, or the client pinned). False: refused; pb
 * holds what goes to the server instead (the denial marker). With
 * c->judged_stateless set (the policies' judge classified this very text and
 * found no session state) it trusts that instead of a parse of its own; it
 * clears the flag either way.
 */
bool sessionstate_check(struct Client *c, struct Server *s, const uint8_t *msg, size_t len,
			struct PktBuf *pb);

/*
 * The same for a Query or Parse of the given type too large to be read whole
 * (it streams through unread): it cannot be checked, so it is handled as one
 * that leaves session state. False: refused, pb as above; the caller discards
 * the message's bytes instead of sending them.
 */
bool sessionstate_check_unread(struct Client *c, struct Server *s, uint8_t type, struct PktBuf *pb);

#endif
