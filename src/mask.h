/*
 * Column masking in C. A MaskPlan is compiled once per RowDescription (which
 * columns, which mask); applying it to a DataRow rewrites only the masked
 * columns, and a DataRow that no mask touches is never copied.
 *
 * Built-in masks (DESIGN.md): "redact" (fixed text), "null" (SQL NULL),
 * "hash" (keyed HMAC-SHA-256, deterministic so joins still match), "partial"
 * (keep the last 4 characters), "email" (keep the domain). MASK_CUSTOM is a
 * Lua function the policy engine runs; mask.c only marks the column.
 * Text format only: binary-format masked columns are refused at plan time
 * (the caller denies the statement: fail closed).
 */
#ifndef PGMOAT_MASK_H
#define PGMOAT_MASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"
#include "pktbuf.h"

typedef enum { MASK_NONE, MASK_REDACT, MASK_NULL, MASK_HASH, MASK_PARTIAL, MASK_EMAIL,
	       MASK_CUSTOM } MaskKind;

/*
 * "redact" -> MASK_REDACT ...; MASK_NONE for unknown names. Only the five built-in
 * names and "none" are accepted ("custom" is a Lua function, not a name): a caller
 * must treat MASK_NONE for any name other than "none" as a policy error.
 */
MaskKind mask_kind_from_name(const char *name);
const char *mask_kind_name(MaskKind k);

/* One column of a RowDescription, as parsed from the wire. */
typedef struct MaskColumn {
	char *name;		/* in the plan's cols block, after the columns: freed with it */
	uint32_t table_oid;
	int16_t attnum;
	uint32_t type_oid;
	int16_t format;		/* 0 text, 1 binary */
	MaskKind mask;
} MaskColumn;

typedef struct MaskPlan {
	int ncols;
	MaskColumn *cols;
	bool any;		/* at least one column is masked */
	uint8_t hash_key[32];	/* policy.hash_key_file */
	size_t hash_key_len;
	void *hmac;		/* EVP_MAC_CTX keyed with hash_key, made once by
				 * mask_plan_set_hash_key so "hash" does not re-key per
				 * value; owned by the plan, so never shallow-copy a plan.
				 * NULL: one-shot HMAC per value (same result, slower). */
	/* (policy cost 4) the body parsed, copied into the cols block (NULL: not
	 * kept), for mask_plan_free_keep */
	const uint8_t *body;
	size_t body_len;
} MaskPlan;

/*
 * (policy cost 4) The parse of a finished plan, set aside for the next
 * RowDescription: a statement run again describes its result in the same
 * bytes, and then its plan reuses the columns instead of parsing and
 * allocating them again. Zeroed: holds nothing.
 */
typedef struct MaskPlanKept {
	MaskColumn *cols;	/* a plan's cols block (names and the body inside) */
	int ncols;
	const uint8_t *body;
	size_t body_len;
} MaskPlanKept;

/* Bodies up to this many bytes are kept (a description of a few dozen columns). */
#define MASK_PLAN_KEEP_MAX 4096

/* What "redact" writes, and how many hex digits of the HMAC "hash" keeps (128 bits). */
#define MASK_REDACTED_TEXT "[REDACTED]"
#define MASK_HASH_HEX_LEN 32
/* "partial" keeps this many trailing characters. */
#define MASK_PARTIAL_KEEP 4

/*
 * Parse a RowDescription body into a plan with no masks; false on malformed input.
 * The whole *plan is overwritten (set the hash key afterwards); on false it is left
 * empty and needs no free. Format codes other than 0/1 are malformed.
 */
bool mask_plan_from_row_description(MaskPlan *plan, const uint8_t *body, size_t len) MUST_CHECK;
void mask_plan_free(MaskPlan *plan);
/*
 * The same, from kept's parse when body is the one it was made from (kept then
 * holds nothing); else parsed (kept is left as it is). Either way the plan is
 * as mask_plan_from_row_description makes it: no masks, no key.
 */
bool mask_plan_from_row_description_kept(MaskPlan *plan, MaskPlanKept *kept, const uint8_t *body,
					 size_t len) MUST_CHECK;
/* mask_plan_free, setting the plan's parse aside in kept (dropping what kept held). */
void mask_plan_free_keep(MaskPlan *plan, MaskPlanKept *kept);
void mask_plan_kept_free(MaskPlanKept *kept);

/*
 * Key the "hash" mask: the key is copied into the plan (a key longer than 32 bytes
 * is replaced by its SHA-256 first) and a reusable HMAC context is built. False for
 * an empty key or an OpenSSL failure, leaving the plan with no key (then "hash"
 * fails closed: with no key a hash of an email is a dictionary lookup away).
 */
bool mask_plan_set_hash_key(MaskPlan *plan, const uint8_t *key, size_t len) MUST_CHECK;

/*
 * Call after setting cols[i].mask: recomputes plan->any and refuses the plan (false)
 * when a masked column is binary format, a mask is out of range, or "hash" has no key.
 * A refused plan must not be used to forward rows: the caller denies the statement.
 */
bool mask_plan_finish(MaskPlan *plan) MUST_CHECK;

/*
 * Apply a built-in mask to one value. NULL in (or in_len -1) means SQL NULL. *out is
 * malloc'd and NUL-terminated for convenience (NULL with *out_len -1 = SQL NULL); the
 * caller frees it. MASK_NONE copies; MASK_CUSTOM and bad arguments give false.
 */
bool mask_apply_value(const MaskPlan *plan, MaskKind kind, const uint8_t *in, int32_t in_len,
		      uint8_t **out, int32_t *out_len) MUST_CHECK;

/*
 * Rewrite a DataRow body per the plan into pb (a whole 'D' message). Columns with
 * MASK_CUSTOM are left to the caller (custom_cb may be NULL: then they are redacted,
 * fail closed). False on a malformed row (column count or lengths past the message).
 * Also false (fail closed) for a masked column in binary format, a custom_cb that
 * fails, or pb hitting its size limit; on false nothing of the row stays in pb, and
 * the caller must not forward the original row.
 *
 * custom_cb contract: in is NULL and in_len -1 for SQL NULL; it sets *out to a
 * malloc'd value (mask.c frees it) or NULL for SQL NULL, and returns false to refuse
 * the row.
 */
typedef bool (*MaskCustomFn)(void *arg, int col, const uint8_t *in, int32_t in_len,
			     uint8_t **out, int32_t *out_len);
bool mask_rewrite_data_row(const MaskPlan *plan, const uint8_t *body, size_t len, PktBuf *pb,
			   MaskCustomFn custom_cb, void *cb_arg) MUST_CHECK;

#endif
