/*
 * Scrubbing of server errors and notices for sessions that read protected
 * columns (masking, issue 4 point 4): PostgreSQL echoes values in them
 * (`invalid input syntax for type integer: "alice@x"`, `Key (email)=(...)`).
 * Severity, SQLSTATE, position and object names are kept; quoted text in the
 * message becomes "***"; detail, hint, context and internal query are dropped.
 */
#ifndef PGMOAT_ERRSCRUB_H
#define PGMOAT_ERRSCRUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "pktbuf.h"

#define ERRSCRUB_NOTE " (details hidden: this session reads protected columns)"

/*
 * Append to pb the scrubbed form of an ErrorResponse ('E') or NoticeResponse
 * ('N') body. False on a malformed body (a field without its NUL, bytes after
 * the terminator) or a full pb; then nothing of it stays in pb.
 */
bool errscrub_build(uint8_t type, const uint8_t *body, size_t len, PktBuf *pb) MUST_CHECK;

#endif
