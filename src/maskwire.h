/*
 * Masking on the wire (issue 4 point 4): results are masked in flight.
 *
 * Each RowDescription becomes a MaskPlan: its columns' sources (table OID,
 * attribute number) are resolved to names by the pool's Catalog, while that
 * server's output to the client is paused; then P.masks and every on_columns
 * hook choose masks, and DataRows are rewritten in C (Lua only for a custom
 * mask). A result no mask touches is forwarded untouched, row by row.
 *
 * Extended protocol: DataRows of an Execute follow no RowDescription of
 * their own, and the client may have described the statement before Bind
 * chose the result formats. So pgmoat sends its own Describe of the portal
 * just before every Execute, uses the answer as the plan, and swallows it;
 * a small queue of what each Describe, Sync and Query will answer keeps the
 * client's own answers apart from pgmoat's. When the message sent to that
 * server just before the Execute was the client's own Describe of the same
 * portal (libpq's PQexecParams does this), its answer is the plan and
 * pgmoat's would be the same: none is sent.
 *
 * Fail closed: a result that cannot be masked (an unknown or tainted source,
 * a masked binary column, a failed lookup, a policy error, a malformed row)
 * ends the statement with SQLSTATE 42501; the rest of the server's output up
 * to ReadyForQuery is dropped, so the client sees one error and stays in
 * step. Errors and notices of sessions that touched protected tables are
 * scrubbed of the values they may echo (message quotes, detail, hint, where).
 */
#ifndef PGMOAT_MASKWIRE_H
#define PGMOAT_MASKWIRE_H

#include "pgmoat.h"
#include "msgio.h"

/* Do this worker's policies mask anything? (inline: asked of every message) */
static inline bool maskwire_active(const Worker *w) { return w->masks_active; }

/*
 * Login: true while the pool's catalog has never loaded the names of views over
 * protected columns; the client then waits (CL_WAITING_LOGIN) and is finished
 * by the catalog when its lookup ends, successful or not.
 */
bool maskwire_login_wait(Client *c);
/* Names of views over protected columns; unavailable: never loaded (guard fails closed). */
const StrList *maskwire_tainted_views(Client *c, bool *unavailable);

/* Statement side (enforce.c): the client touched a protected table / may change the schema. */
void maskwire_note_sensitive(Client *c);
void maskwire_note_schema_change(Client *c);
/* New policies: the protected set may differ, so every catalog starts again. */
void maskwire_policies_changed(void);

/* Bind and Describe are read this far for their portal and statement names. */
#define MASKWIRE_NAMES_PEEK 2048

/*
 * A Bind ('B') or Describe ('D') is about to go out: body holds its first
 * have bytes of len. Bind gives its portal the statement's hints; Describe's
 * answer gets the hints of what it names. False: the names do not fit in
 * MASKWIRE_NAMES_PEEK (the caller drops the client: fail closed).
 */
bool maskwire_note_names(Client *c, uint8_t type, const uint8_t *body, size_t have, size_t len);
/* A judged Parse: its set-operation hints (none: forget any older ones of that name). */
void maskwire_set_parse_hints(Client *c, const char *name, const StrList *hints);
void maskwire_client_free(Client *c);

/*
 * A judged Query is a set operation over protected columns: hints
 * ("k\ttable\tcolumn", maskguard.h) mask its result by position. s: the
 * server it was just sent to, or NULL when it waits to be sent (stashed).
 */
void maskwire_set_query_hints(Client *c, Server *s, const StrList *hints);

/* Client -> server: one message of this type is about to be forwarded to s. */
void maskwire_track(Server *s, uint8_t type);
/*
 * Before an Execute (whole message) goes to s: pgmoat's Describe of its portal
 * goes first (its answer carries the portal's set-operation hints), unless the
 * client's Describe of that portal was the last message sent to s.
 */
void maskwire_before_execute(Server *s, const uint8_t *msg, size_t total, struct evbuffer *out);

/*
 * An Execute (body: len bytes after the header) that needs no Describe of
 * pgmoat's: the client's own Describe of its portal was the last message sent
 * to s (maskwire_before_execute would add nothing), so it may move with the
 * messages around it.
 */
bool maskwire_execute_passes(const Server *s, const uint8_t *body, size_t len);

/* Server -> client: must this message be parsed whole? */
bool maskwire_inspects(const Server *s, uint8_t type);
/* Handle one whole inspected message (not Z or S); false when the server is gone. */
/*
 * A message that was not inspected goes to the client as it is; the end of a
 * result (CommandComplete, PortalSuspended, EmptyQueryResponse) clears its
 * plan, so the end can ride in a pass-through run with the rows before it.
 */
void maskwire_passed(Server *s, uint8_t type);
bool maskwire_handle(Server *s, const MsgHeader *h, const uint8_t *msg, struct evbuffer *out);
/* A ReadyForQuery is about to be forwarded. */
void maskwire_on_ready(Server *s);
/* Waiting for the catalog: the server's input must stay where it is. */
bool maskwire_waiting(const Server *s);
/* The server is gone or released to the pool. */
void maskwire_forget(Server *s);

#endif
