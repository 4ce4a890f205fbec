/*
 * The messages replicas exchange through the postgres approval store
 * (approvals_pg.c): signed JSON, "<64 hex HMAC-SHA-256>.<json>".
 *
 * Any role of the store's database can NOTIFY on the channel, so a payload
 * is untrusted bytes until approvals_msg_verify accepts it: valid signature
 * under the replicas' shared key, a JSON object, a timestamp within
 * APPROVALS_MSG_MAX_AGE of now, a known "op" and the fields that op needs,
 * each of the right type.
 */
#ifndef PGMOAT_APPROVALS_MSG_H
#define PGMOAT_APPROVALS_MSG_H

#include <jansson.h>
#include "util.h"

#define APPROVALS_MSG_MAX_AGE (120 * USEC_PER_SEC)
#define APPROVALS_MSG_MAC_HEX 64

/* The hex HMAC-SHA-256 of text under key. */
bool approvals_msg_mac(const char *key, const char *text, size_t len,
		       char hex[APPROVALS_MSG_MAC_HEX + 1]) MUST_CHECK;

/* msg (an object; "ts" is set to now) signed with key; NULL on failure. free() it. */
char *approvals_msg_sign(const char *key, json_t *msg, usec_t now);

/* The verified message (json_decref it), or NULL with the reason in *why. */
json_t *approvals_msg_verify(const char *key, const char *payload, size_t len, usec_t now,
			     const char **why);

/* Fields of a verified message: "" / 0 when absent. */
const char *approvals_msg_str(json_t *msg, const char *key);
uint64_t approvals_msg_id(json_t *msg, const char *key);

#endif
