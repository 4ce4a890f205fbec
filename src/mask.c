/*
 * Column masks in C and the DataRow rewriter.
 *
 * Every value is written straight into the caller's PktBuf as "int32 length +
 * bytes", so rewriting a row costs no allocation per column. Anything this file
 * cannot mask for certain (a malformed row, a binary-format value, a missing
 * hash key, a failing custom mask) is an error: the caller then drops the row
 * and its server rather than forward it unmasked (fail closed).
 *
 * Text values are assumed to be UTF-8 (pgmoat refuses sessions whose
 * client_encoding the parser does not agree on); "partial" counts characters,
 * not bytes, so it never splits a multibyte character.
 */
#include "mask.h"
#include "proto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdlib.h>
#include <string.h>

#define MASK_SHA256_LEN 32
#define MASK_EMAIL_HIDDEN "***"
/* Smallest RowDescription field: empty name + 18 bytes of fixed fields. */
#define MASK_MIN_FIELD_LEN 19

static const struct {
	const char *name;
	MaskKind kind;
} mask_builtin_names[] = {
	{ "none", MASK_NONE },
	{ "redact", MASK_REDACT },
	{ "null", MASK_NULL },
	{ "hash", MASK_HASH },
	{ "partial", MASK_PARTIAL },
	{ "email", MASK_EMAIL },
};

MaskKind mask_kind_from_name(const char *name)
{
	if (!name)
		return MASK_NONE;
	for (size_t i = 0; i < ARRAY_SIZE(mask_builtin_names); i++)
		if (strcmp(name, mask_builtin_names[i].name) == 0)
			return mask_builtin_names[i].kind;
	return MASK_NONE;
}

const char *mask_kind_name(MaskKind k)
{
	switch (k) {
	case MASK_NONE: return "none";
	case MASK_REDACT: return "redact";
	case MASK_NULL: return "null";
	case MASK_HASH: return "hash";
	case MASK_PARTIAL: return "partial";
	case MASK_EMAIL: return "email";
	case MASK_CUSTOM: return "custom";
	}
	return "unknown";
}

/* --- plan --- */

/* One RowDescription field; its name is copied to *names (advanced past it). */
static bool mask_read_column(PktReader *r, MaskColumn *col, char **names)
{
	const char *name;
	int32_t type_mod;
	int16_t type_len, format;

	if (!proto_read_cstring(r, &name) || !proto_read_uint32(r, &col->table_oid) ||
	    !proto_read_int16(r, &col->attnum) || !proto_read_uint32(r, &col->type_oid) ||
	    !proto_read_int16(r, &type_len) || !proto_read_int32(r, &type_mod) ||
	    !proto_read_int16(r, &format))
		return false;
	if (format != 0 && format != 1)
		return false;
	col->format = format;
	col->mask = MASK_NONE;
	size_t len = strlen(name) + 1;
	col->name = memcpy(*names, name, len);
	*names += len;
	return true;
}

static bool plan_parse_body(MaskPlan *plan, const uint8_t *body, size_t len, bool keep_body)
{
	PktReader r;
	int16_t n;

	memset(plan, 0, sizeof(*plan));
	proto_reader_init(&r, body, len);
	if (!proto_read_int16(&r, &n) || n < 0)
		goto fail;
	/* Refuse counts the body cannot hold before allocating for them. */
	if ((size_t)n > proto_reader_left(&r) / MASK_MIN_FIELD_LEN)
		goto fail;
	/* the names (each shorter than the body left) follow the columns in one block,
	 * then, to be kept, a copy of the body */
	size_t cols_size = (size_t)n * sizeof(*plan->cols);
	size_t names_size = proto_reader_left(&r);
	char *names = NULL;
	if (n > 0) {
		plan->cols = xmalloc(cols_size + names_size + (keep_body ? len : 0));
		names = (char *)plan->cols + cols_size;
		if (keep_body) {
			uint8_t *copy = (uint8_t *)names + names_size;
			memcpy(copy, body, len);
			plan->body = copy;
			plan->body_len = len;
		}
	}
	for (int i = 0; i < n; i++) {
		if (!mask_read_column(&r, &plan->cols[i], &names))
			goto fail;
		plan->ncols = i + 1;
	}
	if (proto_reader_left(&r) != 0)
		goto fail;
	return true;
fail:
	mask_plan_free(plan);
	return false;
}

bool mask_plan_from_row_description(MaskPlan *plan, const uint8_t *body, size_t len)
{
	return plan_parse_body(plan, body, len, false);
}

void mask_plan_kept_free(MaskPlanKept *kept)
{
	free(kept->cols);
	memset(kept, 0, sizeof(*kept));
}

bool mask_plan_from_row_description_kept(MaskPlan *plan, MaskPlanKept *kept, const uint8_t *body,
					 size_t len)
{
	if (!kept->cols || kept->body_len != len || memcmp(kept->body, body, len) != 0)
		return plan_parse_body(plan, body, len, len <= MASK_PLAN_KEEP_MAX);
	memset(plan, 0, sizeof(*plan));
	plan->cols = kept->cols;
	plan->ncols = kept->ncols;
	plan->body = kept->body;
	plan->body_len = kept->body_len;
	memset(kept, 0, sizeof(*kept));
	/* the one field a plan's user changes (policy_on_columns): as parsed again */
	for (int i = 0; i < plan->ncols; i++)
		plan->cols[i].mask = MASK_NONE;
	return true;
}

void mask_plan_free_keep(MaskPlan *plan, MaskPlanKept *kept)
{
	if (plan->cols && plan->body) {
		mask_plan_kept_free(kept);
		kept->cols = plan->cols;
		kept->ncols = plan->ncols;
		kept->body = plan->body;
		kept->body_len = plan->body_len;
		plan->cols = NULL;	/* (now kept's) */
	}
	mask_plan_free(plan);
}

void mask_plan_free(MaskPlan *plan)
{
	if (!plan)
		return;
	free(plan->cols);	/* (the names live in the same block) */
	if (plan->hmac)
		EVP_MAC_CTX_free(plan->hmac);
	if (plan->hash_key_len > 0)	/* (most plans never get the key) */
		OPENSSL_cleanse(plan->hash_key, sizeof(plan->hash_key));
	memset(plan, 0, sizeof(*plan));
}

static EVP_MAC_CTX *mask_hmac_new(const uint8_t *key, size_t len)
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;

	EVP_MAC_free(mac);	/* the context keeps its own reference */
	if (ctx && !EVP_MAC_init(ctx, key, len, params)) {
		EVP_MAC_CTX_free(ctx);
		ctx = NULL;
	}
	return ctx;
}

bool mask_plan_set_hash_key(MaskPlan *plan, const uint8_t *key, size_t len)
{
	uint8_t digest[MASK_SHA256_LEN];
	unsigned int digest_len = 0;
	bool ok = false;

	EVP_MAC_CTX_free(plan->hmac);
	plan->hmac = NULL;
	OPENSSL_cleanse(plan->hash_key, sizeof(plan->hash_key));
	plan->hash_key_len = 0;
	if (!key || len == 0)
		goto out;
	/* Key files are often hex text (openssl rand -hex 32): reduce, don't refuse. */
	if (len > sizeof(plan->hash_key)) {
		if (!EVP_Digest(key, len, digest, &digest_len, EVP_sha256(), NULL) ||
		    digest_len != sizeof(digest))
			goto out;
		key = digest;
		len = sizeof(digest);
	}
	plan->hmac = mask_hmac_new(key, len);
	if (!plan->hmac)
		goto out;
	memcpy(plan->hash_key, key, len);
	plan->hash_key_len = len;
	ok = true;
out:
	OPENSSL_cleanse(digest, sizeof(digest));
	return ok;
}

bool mask_plan_finish(MaskPlan *plan)
{
	bool ok = true;

	plan->any = false;
	for (int i = 0; i < plan->ncols; i++) {
		const MaskColumn *col = &plan->cols[i];
		if (col->mask == MASK_NONE)
			continue;
		/* Masked, or garbage we must treat as masked: route rows through the rewriter. */
		plan->any = true;
		if (col->mask < MASK_NONE || col->mask > MASK_CUSTOM || col->format != 0)
			ok = false;
		if (col->mask == MASK_HASH &&
		    (plan->hash_key_len == 0 || plan->hash_key_len > sizeof(plan->hash_key)))
			ok = false;
	}
	return ok;
}

/* --- value writers: each appends "int32 length + bytes" to pb --- */

static void mask_put_null(PktBuf *pb)
{
	pktbuf_put_int32(pb, -1);
}

static void mask_put_text(PktBuf *pb, const void *p, size_t n)
{
	pktbuf_put_int32(pb, (int32_t)n);
	pktbuf_put_bytes(pb, p, n);
}

static void mask_put_stars(PktBuf *pb, size_t n)
{
	static const char stars[] = "****************************************************************";

	while (n > 0) {
		size_t k = n < sizeof(stars) - 1 ? n : sizeof(stars) - 1;
		pktbuf_put_bytes(pb, stars, k);
		n -= k;
	}
}

/* HMAC-SHA-256 of the value, first MASK_HASH_HEX_LEN lowercase hex digits. */
static bool mask_put_hash(const MaskPlan *plan, const uint8_t *in, size_t len, PktBuf *pb)
{
	uint8_t mac[MASK_SHA256_LEN];
	char hex[MASK_SHA256_LEN * 2 + 1];
	size_t mac_len = 0;
	bool ok;

	if (plan->hash_key_len == 0 || plan->hash_key_len > sizeof(plan->hash_key))
		return false;
	if (plan->hmac) {
		EVP_MAC_CTX *ctx = plan->hmac;
		/* A NULL key re-initialises with the key already set (no re-keying). */
		ok = EVP_MAC_init(ctx, NULL, 0, NULL) && EVP_MAC_update(ctx, in, len) &&
		     EVP_MAC_final(ctx, mac, &mac_len, sizeof(mac));
	} else {
		ok = EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, plan->hash_key,
			       plan->hash_key_len, in, len, mac, sizeof(mac), &mac_len) != NULL;
	}
	if (!ok || mac_len != sizeof(mac))
		return false;
	util_hex(mac, MASK_HASH_HEX_LEN / 2, hex);
	mask_put_text(pb, hex, MASK_HASH_HEX_LEN);
	return true;
}

/*
 * Bytes of the character at p: a lead byte and the continuation bytes it
 * announces (fewer if they are missing). Bytes that cannot lead a sequence
 * (stray continuations, 0xF8..0xFF) count as one character each, so invalid
 * input still splits into characters of at most 4 bytes.
 */
static size_t mask_utf8_char_len(const uint8_t *p, size_t left)
{
	size_t want = p[0] < 0xC0 ? 1 : p[0] < 0xE0 ? 2 : p[0] < 0xF0 ? 3 : p[0] < 0xF8 ? 4 : 1;
	size_t n = 1;

	while (n < want && n < left && (p[n] & 0xC0) == 0x80)
		n++;
	return n;
}

/* All but the last MASK_PARTIAL_KEEP characters become '*'; short values all '*'. */
static void mask_put_partial(const uint8_t *in, size_t len, PktBuf *pb)
{
	size_t starts[MASK_PARTIAL_KEEP];	/* ring of the last character offsets */
	size_t nchars = 0;

	for (size_t off = 0; off < len; off += mask_utf8_char_len(in + off, len - off))
		starts[nchars++ % MASK_PARTIAL_KEEP] = off;
	if (nchars <= MASK_PARTIAL_KEEP) {
		pktbuf_put_int32(pb, (int32_t)nchars);
		mask_put_stars(pb, nchars);
		return;
	}
	/* Character nchars - KEEP sits in ring slot (nchars - KEEP) % KEEP == nchars % KEEP. */
	size_t tail = starts[nchars % MASK_PARTIAL_KEEP];
	size_t hidden = nchars - MASK_PARTIAL_KEEP;
	pktbuf_put_int32(pb, (int32_t)(hidden + (len - tail)));
	mask_put_stars(pb, hidden);
	pktbuf_put_bytes(pb, in + tail, len - tail);
}

/* "***@domain" after the last '@' (local parts may quote '@'); "***" without one. */
static bool mask_put_email(const uint8_t *in, size_t len, PktBuf *pb)
{
	const uint8_t *at = len ? memrchr(in, '@', len) : NULL;
	size_t keep = at ? len - (size_t)(at - in) : 0;

	if (keep > (size_t)INT32_MAX - strlen(MASK_EMAIL_HIDDEN))
		return false;
	pktbuf_put_int32(pb, (int32_t)(strlen(MASK_EMAIL_HIDDEN) + keep));
	pktbuf_put_bytes(pb, MASK_EMAIL_HIDDEN, strlen(MASK_EMAIL_HIDDEN));
	if (keep)
		pktbuf_put_bytes(pb, at, keep);
	return true;
}

/*
 * One built-in mask. in is NULL for SQL NULL, which stays NULL for every mask
 * except redact: "[REDACTED]" hides whether there was a value at all.
 */
static bool mask_put_value(const MaskPlan *plan, MaskKind kind, const uint8_t *in, size_t len,
			   PktBuf *pb)
{
	if (kind == MASK_REDACT) {
		mask_put_text(pb, MASK_REDACTED_TEXT, strlen(MASK_REDACTED_TEXT));
		return true;
	}
	/* MASK_CUSTOM is not built in; anything outside the enum is garbage. */
	if (kind < MASK_NONE || kind >= MASK_CUSTOM)
		return false;
	if (kind == MASK_NULL || !in) {
		mask_put_null(pb);
		return true;
	}
	switch (kind) {
	case MASK_NONE:
		mask_put_text(pb, in, len);
		return true;
	case MASK_HASH:
		return mask_put_hash(plan, in, len, pb);
	case MASK_PARTIAL:
		mask_put_partial(in, len, pb);
		return true;
	case MASK_EMAIL:
		return mask_put_email(in, len, pb);
	default:
		return false;
	}
}

bool mask_apply_value(const MaskPlan *plan, MaskKind kind, const uint8_t *in, int32_t in_len,
		      uint8_t **out, int32_t *out_len)
{
	PktBuf pb;
	PktReader r;
	int32_t n;
	const uint8_t *v;
	bool ok = false;

	*out = NULL;
	*out_len = -1;
	if (in_len < -1 || (!in && in_len > 0))
		return false;
	if (in_len == -1)
		in = NULL;
	pktbuf_init(&pb);
	if (!mask_put_value(plan, kind, in, in ? (size_t)in_len : 0, &pb) || !pktbuf_ok(&pb))
		goto out;
	proto_reader_init(&r, pb.data, pb.len);
	if (!proto_read_int32(&r, &n))
		goto out;
	if (n >= 0) {
		if (!proto_read_bytes(&r, (size_t)n, &v))
			goto out;
		*out = xmalloc((size_t)n + 1);
		memcpy(*out, v, (size_t)n);
		(*out)[n] = '\0';
	}
	*out_len = n;
	ok = true;
out:
	pktbuf_free(&pb);
	return ok;
}

/* --- DataRow rewriter --- */

static bool mask_put_custom(int col, const uint8_t *in, int32_t in_len, PktBuf *pb,
			    MaskCustomFn custom_cb, void *cb_arg)
{
	uint8_t *out = NULL;
	int32_t out_len = -1;
	bool ok;

	if (!custom_cb) {
		mask_put_text(pb, MASK_REDACTED_TEXT, strlen(MASK_REDACTED_TEXT));
		return true;
	}
	ok = custom_cb(cb_arg, col, in, in_len, &out, &out_len);
	if (ok && !out)
		mask_put_null(pb);
	else if (ok && out_len >= 0)
		mask_put_text(pb, out, (size_t)out_len);
	else
		ok = false;
	free(out);
	return ok;
}

/* Read one column from r and append it, masked or byte-identical, to pb. */
static bool mask_rewrite_column(const MaskPlan *plan, int i, PktReader *r, PktBuf *pb,
				MaskCustomFn custom_cb, void *cb_arg)
{
	const MaskColumn *col = &plan->cols[i];
	const uint8_t *start = r->pos;
	const uint8_t *v = NULL;
	int32_t vlen;

	if (!proto_read_int32(r, &vlen) || vlen < -1)
		return false;
	if (vlen >= 0 && !proto_read_bytes(r, (size_t)vlen, &v))
		return false;
	if (col->mask == MASK_NONE) {
		pktbuf_put_bytes(pb, start, (size_t)(r->pos - start));
		return true;
	}
	/* We cannot tell which bytes of a binary value are the secret. */
	if (col->format != 0)
		return false;
	if (col->mask == MASK_CUSTOM)
		return mask_put_custom(i, v, vlen, pb, custom_cb, cb_arg);
	return mask_put_value(plan, col->mask, v, v ? (size_t)vlen : 0, pb);
}

bool mask_rewrite_data_row(const MaskPlan *plan, const uint8_t *body, size_t len, PktBuf *pb,
			   MaskCustomFn custom_cb, void *cb_arg)
{
	PktReader r;
	int16_t n;
	size_t start = pb->len;
	bool ok = false;

	/* A failed or half-built pb would hide our errors or nest messages. */
	if (!pktbuf_ok(pb) || pb->msg_start != SIZE_MAX || plan->ncols < 0)
		return false;
	proto_reader_init(&r, body, len);
	if (!proto_read_int16(&r, &n) || n != plan->ncols)
		goto out;
	pktbuf_start(pb, 'D');
	pktbuf_put_int16(pb, n);
	for (int i = 0; i < n; i++)
		if (!mask_rewrite_column(plan, i, &r, pb, custom_cb, cb_arg))
			goto out;
	if (proto_reader_left(&r) != 0)
		goto out;
	pktbuf_finish(pb);
	ok = pktbuf_ok(pb);
out:
	if (!ok) {
		/* Drop the partial row so no unmasked byte can be flushed by mistake. */
		if (start <= pb->len)
			pb->len = start;
		pb->msg_start = SIZE_MAX;
	}
	return ok;
}
