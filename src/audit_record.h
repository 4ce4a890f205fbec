/*
 * Audit records as bytes: the pure half of the audit trail, with no daemon
 * state, so unit tests, the fuzzer and `pgmoat audit verify` share it.
 *
 * A record is one JSON object on one line (JSON Lines). Its "prev" member is
 * the SHA-256, in lowercase hex, of the previous record's line exactly as
 * written (without the newline); a fresh chain starts from AUDIT_GENESIS.
 * Changing, inserting or deleting a line breaks the chain at the next line.
 */
#ifndef PGMOAT_AUDIT_RECORD_H
#define PGMOAT_AUDIT_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "util.h"

#define AUDIT_HASH_HEX 64
#define AUDIT_GENESIS "0000000000000000000000000000000000000000000000000000000000000000"
#define AUDIT_TS_LEN 32		/* "2026-11-27T08:48:40.123456Z" + NUL, with room */
#define AUDIT_MAX_LINE (64u * 1024 * 1024)	/* verify refuses longer lines */

/* SHA-256 of line[0..len) as hex into out (AUDIT_HASH_HEX + 1 bytes). */
void audit_line_hash(const char *line, size_t len, char *out);

/* RFC 3339 UTC with microseconds: 2026-11-27T08:48:40.123456Z. */
void audit_format_ts(usec_t wall_usec, char *out);

/* The row count in a CommandComplete tag ("SELECT 5", "INSERT 0 3"); false when none. */
bool audit_rows_from_tag(const char *tag, int64_t *rows);

/* rec[key] = s, or JSON null when s is NULL. */
void audit_put_str(json_t *rec, const char *key, const char *s);

typedef struct AuditChain {
	char prev[AUDIT_HASH_HEX + 1];	/* hash of the last line written */
} AuditChain;

/* prev: the hash to continue from; NULL starts a fresh chain (AUDIT_GENESIS). */
void audit_chain_init(AuditChain *ch, const char *prev);

/*
 * Seal rec into the chain: set rec["prev"], serialize it (compact, keys in
 * insertion order) and advance the chain to this line. Returns the malloc'd
 * line without its newline (length in *len), or NULL if rec cannot be
 * serialized, in which case the chain does not move.
 */
char *audit_chain_seal(AuditChain *ch, json_t *rec, size_t *len);

/* ---- verification (of untrusted bytes: the file may have been tampered with) */

typedef struct AuditVerifier {
	uint64_t line;		/* lines seen so far */
	uint64_t records;	/* lines that were good records */
	bool failed;
	uint64_t bad_line;	/* the first bad line (1-based) */
	char error[256];	/* what is wrong with it */
	char first_prev[AUDIT_HASH_HEX + 1];	/* the anchor of the chain in this file */
	char prev[AUDIT_HASH_HEX + 1];	/* hash of the last good line */
} AuditVerifier;

void audit_verifier_init(AuditVerifier *v);

/*
 * Check the next line (without its newline; may contain any bytes). False on
 * the first bad one, with bad_line and error set; later calls keep returning
 * false. The first record may continue a chain from another file (rotation):
 * its prev is accepted and kept in first_prev.
 */
bool audit_verify_line(AuditVerifier *v, const char *line, size_t len);

/* The event names of the contract. */
bool audit_event_valid(const char *event);

#endif
