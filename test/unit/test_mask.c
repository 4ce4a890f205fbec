/* Column masks and the DataRow rewriter: every mask, every malformed input, byte-exact output. */
#include "src/mask.h"
#include "src/pktbuf.h"
#include "src/proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <criterion/criterion.h>

/* --- builders --- */

typedef struct Field {
	const char *name;
	uint32_t table_oid;
	int16_t attnum;
	uint32_t type_oid;
	int16_t typlen;
	int32_t typmod;
	int16_t format;
} Field;

/* What PostgreSQL 15 sends for: SELECT id, email, card, note FROM people. */
static const Field people_fields[] = {
	{ "id", 16385, 1, 23, 4, -1, 0 },
	{ "email", 16385, 2, 25, -1, -1, 0 },
	{ "card", 16385, 3, 1043, -1, 259, 0 },
	{ "note", 16385, 4, 25, -1, -1, 0 },
};

/* A RowDescription body (no type byte, no length word) in pb. */
static void build_row_description(PktBuf *pb, const Field *f, int n)
{
	pktbuf_init(pb);
	pktbuf_put_int16(pb, (int16_t)n);
	for (int i = 0; i < n; i++) {
		pktbuf_put_cstring(pb, f[i].name);
		pktbuf_put_uint32(pb, f[i].table_oid);
		pktbuf_put_int16(pb, f[i].attnum);
		pktbuf_put_uint32(pb, f[i].type_oid);
		pktbuf_put_int16(pb, f[i].typlen);
		pktbuf_put_int32(pb, f[i].typmod);
		pktbuf_put_int16(pb, f[i].format);
	}
	cr_assert(pktbuf_ok(pb));
}

static void plan_people(MaskPlan *plan)
{
	PktBuf rd;
	build_row_description(&rd, people_fields, 4);
	cr_assert(mask_plan_from_row_description(plan, rd.data, rd.len));
	pktbuf_free(&rd);
}

/* A DataRow body of text values (NULL = SQL NULL) in pb. */
static void build_data_row(PktBuf *pb, int n, const char *const *values)
{
	pktbuf_init(pb);
	pktbuf_put_int16(pb, (int16_t)n);
	for (int i = 0; i < n; i++) {
		if (!values[i]) {
			pktbuf_put_int32(pb, -1);
			continue;
		}
		pktbuf_put_int32(pb, (int32_t)strlen(values[i]));
		pktbuf_put_bytes(pb, values[i], strlen(values[i]));
	}
	cr_assert(pktbuf_ok(pb));
}

/* The whole 'D' message the rewriter must produce for these values. */
static void expect_row(PktBuf *pb, int n, const char *const *values)
{
	pktbuf_init(pb);
	pktbuf_data_row(pb, n, values);
	cr_assert(pktbuf_ok(pb));
}

static void assert_same_bytes(const PktBuf *got, const PktBuf *want)
{
	cr_assert_eq(got->len, want->len, "length %zu, want %zu", got->len, want->len);
	cr_assert(memcmp(got->data, want->data, want->len) == 0);
}

static const uint8_t test_key[] = "0123456789abcdef0123456789abcdef";

static void plan_key(MaskPlan *plan)
{
	cr_assert(mask_plan_set_hash_key(plan, test_key, 32));
}

/* Apply one mask to a C string (NULL = SQL NULL); returns malloc'd result or NULL. */
static char *apply(const MaskPlan *plan, MaskKind k, const char *in, int32_t *out_len)
{
	uint8_t *out;
	cr_assert(mask_apply_value(plan, k, (const uint8_t *)in, in ? (int32_t)strlen(in) : -1, &out,
				   out_len));
	if (!out)
		cr_assert_eq(*out_len, -1);
	else
		cr_assert_eq((size_t)*out_len, strlen((char *)out));
	return (char *)out;
}

static void assert_mask(const MaskPlan *plan, MaskKind k, const char *in, const char *want)
{
	int32_t n;
	char *got = apply(plan, k, in, &n);
	if (!want)
		cr_assert_null(got, "%s(%s) = '%s', want NULL", mask_kind_name(k), in ? in : "NULL", got);
	else
		cr_assert_str_eq(got ? got : "(null)", want, "%s(%s)", mask_kind_name(k), in ? in : "NULL");
	free(got);
}

/* --- names --- */

Test(mask, kind_names_round_trip_for_builtins)
{
	MaskKind kinds[] = { MASK_NONE, MASK_REDACT, MASK_NULL, MASK_HASH, MASK_PARTIAL, MASK_EMAIL };
	for (size_t i = 0; i < ARRAY_SIZE(kinds); i++)
		cr_assert_eq(mask_kind_from_name(mask_kind_name(kinds[i])), kinds[i]);
	cr_assert_str_eq(mask_kind_name(MASK_CUSTOM), "custom");
}

Test(mask, kind_from_name_is_none_when_unknown_or_custom)
{
	cr_assert_eq(mask_kind_from_name("Redact"), MASK_NONE);
	cr_assert_eq(mask_kind_from_name("redact "), MASK_NONE);
	cr_assert_eq(mask_kind_from_name(""), MASK_NONE);
	cr_assert_eq(mask_kind_from_name(NULL), MASK_NONE);
	cr_assert_eq(mask_kind_from_name("custom"), MASK_NONE);
}

/* --- RowDescription --- */

Test(mask_plan, parses_captured_row_description)
{
	MaskPlan plan;
	plan_people(&plan);
	cr_assert_eq(plan.ncols, 4);
	cr_assert_not(plan.any);
	for (int i = 0; i < 4; i++) {
		cr_assert_str_eq(plan.cols[i].name, people_fields[i].name);
		cr_assert_eq(plan.cols[i].table_oid, people_fields[i].table_oid);
		cr_assert_eq(plan.cols[i].attnum, people_fields[i].attnum);
		cr_assert_eq(plan.cols[i].type_oid, people_fields[i].type_oid);
		cr_assert_eq(plan.cols[i].format, 0);
		cr_assert_eq(plan.cols[i].mask, MASK_NONE);
	}
	mask_plan_free(&plan);
	cr_assert_eq(plan.ncols, 0);
	cr_assert_null(plan.cols);
}

Test(mask_plan, parses_full_width_oids_and_binary_format)
{
	Field f[] = { { "x", 0xFFFFFFF0u, -7, 0x80000001u, 8, 0, 1 }, { "", 0, 0, 25, -1, -1, 0 } };
	PktBuf rd;
	MaskPlan plan;
	build_row_description(&rd, f, 2);
	cr_assert(mask_plan_from_row_description(&plan, rd.data, rd.len));
	cr_assert_eq(plan.cols[0].table_oid, 0xFFFFFFF0u);
	cr_assert_eq(plan.cols[0].attnum, -7);
	cr_assert_eq(plan.cols[0].type_oid, 0x80000001u);
	cr_assert_eq(plan.cols[0].format, 1);
	cr_assert_str_eq(plan.cols[1].name, "");
	mask_plan_free(&plan);
	pktbuf_free(&rd);
}

Test(mask_plan, parses_zero_columns)
{
	uint8_t body[] = { 0, 0 };
	MaskPlan plan;
	cr_assert(mask_plan_from_row_description(&plan, body, sizeof(body)));
	cr_assert_eq(plan.ncols, 0);
	mask_plan_free(&plan);
}

Test(mask_plan, rejects_every_truncation)
{
	PktBuf rd;
	MaskPlan plan;
	build_row_description(&rd, people_fields, 4);
	for (size_t n = 0; n < rd.len; n++) {
		cr_assert_not(mask_plan_from_row_description(&plan, rd.data, n), "prefix %zu accepted", n);
		cr_assert_eq(plan.ncols, 0);
		cr_assert_null(plan.cols);
	}
	pktbuf_free(&rd);
}

Test(mask_plan, rejects_trailing_garbage)
{
	PktBuf rd;
	MaskPlan plan;
	build_row_description(&rd, people_fields, 4);
	pktbuf_put_uint8(&rd, 0);
	cr_assert_not(mask_plan_from_row_description(&plan, rd.data, rd.len));
	pktbuf_free(&rd);
}

Test(mask_plan, rejects_negative_count)
{
	PktBuf rd;
	MaskPlan plan;
	build_row_description(&rd, people_fields, 1);
	rd.data[0] = 0xFF;
	rd.data[1] = 0xFF;
	cr_assert_not(mask_plan_from_row_description(&plan, rd.data, rd.len));
	pktbuf_free(&rd);
}

Test(mask_plan, rejects_count_above_fields_present)
{
	PktBuf rd;
	MaskPlan plan;
	build_row_description(&rd, people_fields, 4);
	rd.data[1] = 5;
	cr_assert_not(mask_plan_from_row_description(&plan, rd.data, rd.len));
	rd.data[0] = 0x7F;
	rd.data[1] = 0xFF;
	cr_assert_not(mask_plan_from_row_description(&plan, rd.data, rd.len));
	pktbuf_free(&rd);
}

Test(mask_plan, rejects_unknown_format_code)
{
	Field f[] = { { "x", 1, 1, 25, -1, -1, 2 } };
	PktBuf rd;
	MaskPlan plan;
	build_row_description(&rd, f, 1);
	cr_assert_not(mask_plan_from_row_description(&plan, rd.data, rd.len));
	pktbuf_free(&rd);
}

Test(mask_plan, rejects_name_without_terminator)
{
	uint8_t body[] = { 0, 1, 'a', 'b', 'c' };
	MaskPlan plan;
	cr_assert_not(mask_plan_from_row_description(&plan, body, sizeof(body)));
	cr_assert_not(mask_plan_from_row_description(&plan, NULL, 0));
}

Test(mask_plan, finish_sets_any_and_accepts_text_masks)
{
	MaskPlan plan;
	plan_people(&plan);
	cr_assert(mask_plan_finish(&plan));
	cr_assert_not(plan.any);
	plan.cols[1].mask = MASK_EMAIL;
	cr_assert(mask_plan_finish(&plan));
	cr_assert(plan.any);
	plan.cols[1].mask = MASK_NONE;
	cr_assert(mask_plan_finish(&plan));
	cr_assert_not(plan.any);
	mask_plan_free(&plan);
}

Test(mask_plan, finish_refuses_binary_masked_column)
{
	MaskPlan plan;
	plan_people(&plan);
	plan.cols[0].format = 1;
	cr_assert(mask_plan_finish(&plan));	/* binary but unmasked: fine */
	plan.cols[0].mask = MASK_REDACT;
	cr_assert_not(mask_plan_finish(&plan));
	cr_assert(plan.any);
	mask_plan_free(&plan);
}

Test(mask_plan, finish_refuses_hash_without_key)
{
	MaskPlan plan;
	plan_people(&plan);
	plan.cols[1].mask = MASK_HASH;
	cr_assert_not(mask_plan_finish(&plan));
	plan_key(&plan);
	cr_assert(mask_plan_finish(&plan));
	mask_plan_free(&plan);
}

Test(mask_plan, finish_refuses_out_of_range_mask)
{
	MaskPlan plan;
	plan_people(&plan);
	plan.cols[2].mask = (MaskKind)42;
	cr_assert_not(mask_plan_finish(&plan));
	cr_assert(plan.any);
	mask_plan_free(&plan);
}

Test(mask_plan, set_hash_key_rejects_empty_key)
{
	uint8_t k[32] = { 0 };
	MaskPlan plan;
	memset(&plan, 0, sizeof(plan));
	cr_assert_not(mask_plan_set_hash_key(&plan, k, 0));
	cr_assert_eq(plan.hash_key_len, 0);
	cr_assert(mask_plan_set_hash_key(&plan, k, 32));
	cr_assert_eq(plan.hash_key_len, 32);
	cr_assert_not(mask_plan_set_hash_key(&plan, NULL, 4));
	cr_assert_eq(plan.hash_key_len, 0, "a failed re-key must not keep the old key");
	cr_assert_null(plan.hmac);
	mask_plan_free(&plan);
}

Test(mask_plan, set_hash_key_reduces_long_keys_with_sha256)
{
	/* 64 hex characters, as `openssl rand -hex 32` writes a key file. */
	const char *hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
	/* SHA-256 of that text, computed independently (sha256sum). */
	const uint8_t reduced[32] = { 0x6c, 0x86, 0xc6, 0xaa, 0xc5, 0xfb, 0x24, 0xbc, 0xf5, 0xd9, 0x93,
				      0x9c, 0xb7, 0xd7, 0xd5, 0x64, 0x5c, 0xe3, 0x94, 0x18, 0xf4, 0x49,
				      0xe0, 0x3b, 0x26, 0x2d, 0xd4, 0xfa, 0x14, 0xb4, 0xb9, 0x2b };
	MaskPlan a = { 0 }, b = { 0 };
	int32_t n;
	cr_assert(mask_plan_set_hash_key(&a, (const uint8_t *)hex, 64));
	cr_assert_eq(a.hash_key_len, 32);
	cr_assert(memcmp(a.hash_key, reduced, 32) == 0);
	cr_assert(mask_plan_set_hash_key(&b, reduced, 32));
	char *x = apply(&a, MASK_HASH, "alice", &n);
	char *y = apply(&b, MASK_HASH, "alice", &n);
	cr_assert_str_eq(x, y);
	free(x);
	free(y);
	mask_plan_free(&a);
	mask_plan_free(&b);
}

/* --- built-in masks --- */

Test(mask_value, redact_replaces_values_and_null)
{
	MaskPlan plan = { 0 };
	assert_mask(&plan, MASK_REDACT, "secret", MASK_REDACTED_TEXT);
	assert_mask(&plan, MASK_REDACT, "", "[REDACTED]");
	assert_mask(&plan, MASK_REDACT, NULL, "[REDACTED]");
}

Test(mask_value, null_makes_everything_null)
{
	MaskPlan plan = { 0 };
	assert_mask(&plan, MASK_NULL, "secret", NULL);
	assert_mask(&plan, MASK_NULL, "", NULL);
	assert_mask(&plan, MASK_NULL, NULL, NULL);
}

Test(mask_value, none_copies_value)
{
	MaskPlan plan = { 0 };
	assert_mask(&plan, MASK_NONE, "plain", "plain");
	assert_mask(&plan, MASK_NONE, "", "");
	assert_mask(&plan, MASK_NONE, NULL, NULL);
}

Test(mask_value, hash_matches_rfc4231_vector)
{
	MaskPlan plan = { 0 };
	cr_assert(mask_plan_set_hash_key(&plan, (const uint8_t *)"Jefe", 4));
	/* RFC 4231 test case 2, HMAC-SHA-256, first 32 hex digits. */
	assert_mask(&plan, MASK_HASH, "what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c7");
	mask_plan_free(&plan);
}

Test(mask_value, hash_is_deterministic_with_reused_context)
{
	MaskPlan plan = { 0 };
	int32_t n;
	plan_key(&plan);
	char *first = apply(&plan, MASK_HASH, "alice@example.com", &n);
	cr_assert_eq(n, MASK_HASH_HEX_LEN);
	for (int i = 0; i < 100; i++) {
		char *other = apply(&plan, MASK_HASH, i % 2 ? "bob" : "", &n);
		free(other);
		char *again = apply(&plan, MASK_HASH, "alice@example.com", &n);
		cr_assert_str_eq(again, first);
		free(again);
	}
	for (const char *p = first; *p; p++)
		cr_assert(strchr("0123456789abcdef", *p), "not lowercase hex: %s", first);
	free(first);
	mask_plan_free(&plan);
}

Test(mask_value, hash_one_shot_path_equals_context_path)
{
	MaskPlan plan = { 0 }, one_shot;
	int32_t n;
	plan_key(&plan);
	one_shot = plan;
	one_shot.hmac = NULL;	/* a copied key without a context: per-value HMAC */
	const char *inputs[] = { "", "a", "alice@example.com", "日本語" };
	for (size_t i = 0; i < ARRAY_SIZE(inputs); i++) {
		char *a = apply(&plan, MASK_HASH, inputs[i], &n);
		char *b = apply(&one_shot, MASK_HASH, inputs[i], &n);
		cr_assert_str_eq(a, b);
		free(a);
		free(b);
	}
	mask_plan_free(&plan);
}

Test(mask_value, hash_depends_on_key_and_value)
{
	MaskPlan p1 = { 0 }, p2 = { 0 };
	int32_t n;
	plan_key(&p1);
	cr_assert(mask_plan_set_hash_key(&p2, (const uint8_t *)"another key", 11));
	char *a = apply(&p1, MASK_HASH, "4111111111111111", &n);
	char *b = apply(&p2, MASK_HASH, "4111111111111111", &n);
	char *c = apply(&p1, MASK_HASH, "4111111111111112", &n);
	char *e = apply(&p1, MASK_HASH, "", &n);
	cr_assert_str_neq(a, b);
	cr_assert_str_neq(a, c);
	cr_assert_eq(strlen(e), MASK_HASH_HEX_LEN);
	cr_assert_str_neq(a, e);
	free(a);
	free(b);
	free(c);
	free(e);
	mask_plan_free(&p1);
	mask_plan_free(&p2);
}

Test(mask_value, hash_keeps_null_and_fails_without_key)
{
	MaskPlan plan = { 0 };
	uint8_t *out = (uint8_t *)"sentinel";
	int32_t n = 7;
	cr_assert_not(mask_apply_value(&plan, MASK_HASH, (const uint8_t *)"x", 1, &out, &n));
	cr_assert_null(out);
	plan_key(&plan);
	assert_mask(&plan, MASK_HASH, NULL, NULL);
	mask_plan_free(&plan);
}

Test(mask_value, partial_keeps_last_four_ascii)
{
	MaskPlan plan = { 0 };
	assert_mask(&plan, MASK_PARTIAL, "4111111111111111", "************1111");
	assert_mask(&plan, MASK_PARTIAL, "abcde", "*bcde");
	assert_mask(&plan, MASK_PARTIAL, "abcd", "****");
	assert_mask(&plan, MASK_PARTIAL, "abc", "***");
	assert_mask(&plan, MASK_PARTIAL, "a", "*");
	assert_mask(&plan, MASK_PARTIAL, "", "");
	assert_mask(&plan, MASK_PARTIAL, NULL, NULL);
}

Test(mask_value, partial_counts_utf8_characters)
{
	MaskPlan plan = { 0 };
	assert_mask(&plan, MASK_PARTIAL, "héllo wörld", "*******örld");
	assert_mask(&plan, MASK_PARTIAL, "日本語テキスト", "***テキスト");
	assert_mask(&plan, MASK_PARTIAL, "日本語テ", "****");
	assert_mask(&plan, MASK_PARTIAL, "😀😀😀😀😀", "*😀😀😀😀");
	assert_mask(&plan, MASK_PARTIAL, "aé€😀b", "*é€😀b");
}

Test(mask_value, partial_survives_invalid_utf8)
{
	MaskPlan plan = { 0 };
	/* Stray continuations are one character each; a cut-off lead byte is one character. */
	assert_mask(&plan, MASK_PARTIAL, "\x80\x80\x80\x80\x80\x80", "**\x80\x80\x80\x80");
	assert_mask(&plan, MASK_PARTIAL, "abcdef\xE6", "***def\xE6");
	/* A lead byte claims at most the continuations it announces. */
	assert_mask(&plan, MASK_PARTIAL, "xyz\xC3\xA9\x80\x80", "**z\xC3\xA9\x80\x80");
	assert_mask(&plan, MASK_PARTIAL, "\xFF\xFE\xFD\xFC\xFB", "*\xFE\xFD\xFC\xFB");
	/* A lead byte never swallows the ASCII that follows it. */
	assert_mask(&plan, MASK_PARTIAL, "ab\xE6" "cdef", "***cdef");
}

Test(mask_value, partial_of_long_value_hides_all_but_tail)
{
	MaskPlan plan = { 0 };
	size_t len = 100000;
	char *in = malloc(len + 1);
	int32_t n;
	memset(in, '7', len);
	memcpy(in + len - 4, "WXYZ", 4);
	in[len] = '\0';
	char *got = apply(&plan, MASK_PARTIAL, in, &n);
	cr_assert_eq((size_t)n, len);
	for (size_t i = 0; i < len - 4; i++)
		cr_assert_eq(got[i], '*');
	cr_assert_str_eq(got + len - 4, "WXYZ");
	free(got);
	free(in);
}

Test(mask_value, email_keeps_domain)
{
	MaskPlan plan = { 0 };
	assert_mask(&plan, MASK_EMAIL, "alice@example.com", "***@example.com");
	assert_mask(&plan, MASK_EMAIL, "a@b", "***@b");
	assert_mask(&plan, MASK_EMAIL, "@example.com", "***@example.com");
	assert_mask(&plan, MASK_EMAIL, "user@", "***@");
}

Test(mask_value, email_without_at_is_fully_hidden)
{
	MaskPlan plan = { 0 };
	assert_mask(&plan, MASK_EMAIL, "not an email", "***");
	assert_mask(&plan, MASK_EMAIL, "", "***");
	assert_mask(&plan, MASK_EMAIL, NULL, NULL);
}

Test(mask_value, email_with_several_at_keeps_only_last_domain)
{
	MaskPlan plan = { 0 };
	assert_mask(&plan, MASK_EMAIL, "\"a@b\"@example.com", "***@example.com");
	assert_mask(&plan, MASK_EMAIL, "a@b@c@example.org", "***@example.org");
	assert_mask(&plan, MASK_EMAIL, "alice@@", "***@");
}

Test(mask_value, apply_value_rejects_bad_arguments)
{
	MaskPlan plan = { 0 };
	uint8_t *out;
	int32_t n;
	cr_assert_not(mask_apply_value(&plan, MASK_REDACT, (const uint8_t *)"x", -2, &out, &n));
	cr_assert_not(mask_apply_value(&plan, MASK_REDACT, NULL, 3, &out, &n));
	cr_assert_not(mask_apply_value(&plan, MASK_CUSTOM, (const uint8_t *)"x", 1, &out, &n));
	cr_assert_not(mask_apply_value(&plan, (MaskKind)99, (const uint8_t *)"x", 1, &out, &n));
	cr_assert_not(mask_apply_value(&plan, (MaskKind)-1, (const uint8_t *)"x", 1, &out, &n));
	cr_assert_null(out);
	cr_assert_eq(n, -1);
}

Test(mask_value, apply_value_handles_embedded_nul)
{
	MaskPlan plan = { 0 };
	uint8_t *out;
	int32_t n;
	cr_assert(mask_apply_value(&plan, MASK_PARTIAL, (const uint8_t *)"a\0bcde", 6, &out, &n));
	cr_assert_eq(n, 6);
	cr_assert(memcmp(out, "**bcde", 6) == 0);
	free(out);
	cr_assert(mask_apply_value(&plan, MASK_EMAIL, (const uint8_t *)"x@\0y", 4, &out, &n));
	cr_assert_eq(n, 6);
	cr_assert(memcmp(out, "***@\0y", 6) == 0);
	free(out);
}

/* --- DataRow rewriter --- */

Test(mask_row, rewrite_is_byte_exact)
{
	MaskPlan plan;
	PktBuf row, got, want;
	const char *in[] = { "42", "alice@example.com", "4111111111111111", "hello" };
	const char *out[] = { "42", "***@example.com", "************1111", "hello" };
	plan_people(&plan);
	plan.cols[1].mask = MASK_EMAIL;
	plan.cols[2].mask = MASK_PARTIAL;
	cr_assert(mask_plan_finish(&plan));
	build_data_row(&row, 4, in);
	expect_row(&want, 4, out);
	pktbuf_init(&got);
	cr_assert(mask_rewrite_data_row(&plan, row.data, row.len, &got, NULL, NULL));
	assert_same_bytes(&got, &want);
	pktbuf_free(&row);
	pktbuf_free(&got);
	pktbuf_free(&want);
	mask_plan_free(&plan);
}

Test(mask_row, every_builtin_in_one_row)
{
	Field f[] = { { "a", 1, 1, 25, -1, -1, 0 }, { "b", 1, 2, 25, -1, -1, 0 },
		      { "c", 1, 3, 25, -1, -1, 0 }, { "d", 1, 4, 25, -1, -1, 0 },
		      { "e", 1, 5, 25, -1, -1, 0 }, { "f", 1, 6, 25, -1, -1, 0 } };
	MaskKind kinds[] = { MASK_REDACT, MASK_NULL, MASK_HASH, MASK_PARTIAL, MASK_EMAIL, MASK_NONE };
	PktBuf rd, row, got, want;
	MaskPlan plan;
	const char *in[] = { "r", "n", "what do ya want for nothing?", "123456", "x@y.z", "keep" };
	const char *out[] = { "[REDACTED]", NULL, "5bdcc146bf60754e6a042426089575c7", "**3456", "***@y.z",
			      "keep" };
	build_row_description(&rd, f, 6);
	cr_assert(mask_plan_from_row_description(&plan, rd.data, rd.len));
	cr_assert(mask_plan_set_hash_key(&plan, (const uint8_t *)"Jefe", 4));
	for (int i = 0; i < 6; i++)
		plan.cols[i].mask = kinds[i];
	cr_assert(mask_plan_finish(&plan));
	build_data_row(&row, 6, in);
	expect_row(&want, 6, out);
	pktbuf_init(&got);
	cr_assert(mask_rewrite_data_row(&plan, row.data, row.len, &got, NULL, NULL));
	assert_same_bytes(&got, &want);
	pktbuf_free(&rd);
	pktbuf_free(&row);
	pktbuf_free(&got);
	pktbuf_free(&want);
	mask_plan_free(&plan);
}

Test(mask_row, unmasked_columns_are_byte_identical)
{
	MaskPlan plan;
	PktBuf row, got;
	const char *in[] = { "1", NULL, "", "tab\there\nnl" };
	plan_people(&plan);
	build_data_row(&row, 4, in);
	pktbuf_init(&got);
	cr_assert(mask_rewrite_data_row(&plan, row.data, row.len, &got, NULL, NULL));
	cr_assert_eq(got.len, row.len + 5);
	cr_assert_eq(got.data[0], 'D');
	cr_assert_eq(((uint32_t)got.data[1] << 24 | (uint32_t)got.data[2] << 16 |
		      (uint32_t)got.data[3] << 8 | got.data[4]),
		     row.len + 4);
	cr_assert(memcmp(got.data + 5, row.data, row.len) == 0);
	pktbuf_free(&row);
	pktbuf_free(&got);
	mask_plan_free(&plan);
}

Test(mask_row, nulls_in_masked_columns)
{
	MaskPlan plan;
	PktBuf row, got, want;
	const char *in[] = { NULL, NULL, NULL, NULL };
	const char *out[] = { "[REDACTED]", NULL, NULL, NULL };
	plan_people(&plan);
	plan.cols[0].mask = MASK_REDACT;
	plan.cols[1].mask = MASK_EMAIL;
	plan.cols[2].mask = MASK_PARTIAL;
	build_data_row(&row, 4, in);
	expect_row(&want, 4, out);
	pktbuf_init(&got);
	cr_assert(mask_rewrite_data_row(&plan, row.data, row.len, &got, NULL, NULL));
	assert_same_bytes(&got, &want);
	pktbuf_free(&row);
	pktbuf_free(&got);
	pktbuf_free(&want);
	mask_plan_free(&plan);
}

Test(mask_row, appends_after_existing_messages)
{
	MaskPlan plan;
	PktBuf row, got;
	const char *in[] = { "1", "a@b.c", "x", "y" };
	plan_people(&plan);
	plan.cols[1].mask = MASK_EMAIL;
	build_data_row(&row, 4, in);
	pktbuf_init(&got);
	pktbuf_command_complete(&got, "SELECT 1");
	size_t before = got.len;
	cr_assert(mask_rewrite_data_row(&plan, row.data, row.len, &got, NULL, NULL));
	cr_assert_eq(got.data[before], 'D');
	cr_assert(got.len > before + 5);
	pktbuf_free(&row);
	pktbuf_free(&got);
	mask_plan_free(&plan);
}

/* Run the rewriter on a hostile body: it must fail and leave pb as it was. */
static void assert_row_rejected(const MaskPlan *plan, const uint8_t *body, size_t len)
{
	PktBuf got;
	pktbuf_init(&got);
	pktbuf_command_complete(&got, "SELECT 0");
	size_t before = got.len;
	cr_assert_not(mask_rewrite_data_row(plan, body, len, &got, NULL, NULL));
	cr_assert_eq(got.len, before, "a rejected row left bytes behind");
	cr_assert_eq(got.msg_start, SIZE_MAX);
	cr_assert(pktbuf_ok(&got));
	pktbuf_free(&got);
}

static void masked_people(MaskPlan *plan)
{
	plan_people(plan);
	plan->cols[1].mask = MASK_EMAIL;
}

Test(mask_row, rejects_column_count_mismatch)
{
	MaskPlan plan;
	PktBuf row;
	const char *in[] = { "1", "a@b", "c", "d", "e" };
	masked_people(&plan);
	build_data_row(&row, 3, in);
	assert_row_rejected(&plan, row.data, row.len);
	pktbuf_free(&row);
	build_data_row(&row, 5, in);
	assert_row_rejected(&plan, row.data, row.len);
	pktbuf_free(&row);
	plan.cols[1].mask = MASK_NONE;	/* unmasked plans are checked just as hard */
	build_data_row(&row, 5, in);
	assert_row_rejected(&plan, row.data, row.len);
	pktbuf_free(&row);
	mask_plan_free(&plan);
}

Test(mask_row, rejects_every_truncation)
{
	MaskPlan plan;
	PktBuf row;
	const char *in[] = { "1", "alice@example.com", NULL, "note" };
	masked_people(&plan);
	build_data_row(&row, 4, in);
	for (size_t n = 0; n < row.len; n++)
		assert_row_rejected(&plan, row.data, n);
	pktbuf_free(&row);
	mask_plan_free(&plan);
}

Test(mask_row, rejects_trailing_bytes)
{
	MaskPlan plan;
	PktBuf row;
	const char *in[] = { "1", "alice@example.com", "c", "d" };
	masked_people(&plan);
	build_data_row(&row, 4, in);
	pktbuf_put_uint8(&row, 'x');
	assert_row_rejected(&plan, row.data, row.len);
	pktbuf_free(&row);
	mask_plan_free(&plan);
}

/* A row whose masked column (index 1) carries a raw length word. */
static void build_row_with_length(PktBuf *pb, int32_t len, size_t actual)
{
	pktbuf_init(pb);
	pktbuf_put_int16(pb, 4);
	pktbuf_put_int32(pb, 1);
	pktbuf_put_bytes(pb, "1", 1);
	pktbuf_put_int32(pb, len);
	for (size_t i = 0; i < actual; i++)
		pktbuf_put_uint8(pb, 'a');
	pktbuf_put_int32(pb, -1);
	pktbuf_put_int32(pb, -1);
}

Test(mask_row, rejects_bad_lengths)
{
	MaskPlan plan;
	PktBuf row;
	int32_t bad[] = { -2, -100, INT32_MIN, INT32_MAX, 0x10000, 11 };
	masked_people(&plan);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		build_row_with_length(&row, bad[i], 10);
		assert_row_rejected(&plan, row.data, row.len);
		pktbuf_free(&row);
	}
	/* The same bad lengths in an unmasked column. */
	plan.cols[1].mask = MASK_NONE;
	plan.cols[0].mask = MASK_REDACT;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		build_row_with_length(&row, bad[i], 10);
		assert_row_rejected(&plan, row.data, row.len);
		pktbuf_free(&row);
	}
	/* Negative lengths other than -1 with nothing after them: only the sign is wrong. */
	for (size_t i = 0; i < 3; i++) {
		plan.cols[0].mask = MASK_NONE;
		plan.cols[1].mask = i == 0 ? MASK_NONE : MASK_EMAIL;
		build_row_with_length(&row, bad[i], 0);
		assert_row_rejected(&plan, row.data, row.len);
		pktbuf_free(&row);
	}
	plan.cols[1].mask = MASK_NONE;
	plan.cols[0].mask = MASK_REDACT;
	build_row_with_length(&row, 10, 10);	/* control: the honest length passes */
	PktBuf got;
	pktbuf_init(&got);
	cr_assert(mask_rewrite_data_row(&plan, row.data, row.len, &got, NULL, NULL));
	pktbuf_free(&got);
	pktbuf_free(&row);
	mask_plan_free(&plan);
}

Test(mask_row, rejects_binary_masked_column)
{
	MaskPlan plan;
	PktBuf row, got;
	const char *in[] = { "\0\0\0\1", "a@b", "c", "d" };
	masked_people(&plan);
	plan.cols[1].format = 1;
	build_data_row(&row, 4, in);
	assert_row_rejected(&plan, row.data, row.len);
	/* Binary but unmasked: copied untouched. */
	plan.cols[1].format = 0;
	plan.cols[0].format = 1;
	pktbuf_init(&got);
	cr_assert(mask_rewrite_data_row(&plan, row.data, row.len, &got, NULL, NULL));
	pktbuf_free(&got);
	pktbuf_free(&row);
	mask_plan_free(&plan);
}

Test(mask_row, rejects_row_over_buffer_limit)
{
	MaskPlan plan;
	PktBuf row, got;
	const char *in[] = { "1", "a@b", "c", "d" };
	masked_people(&plan);
	build_data_row(&row, 4, in);
	pktbuf_init(&got);
	got.max = 16;
	cr_assert_not(mask_rewrite_data_row(&plan, row.data, row.len, &got, NULL, NULL));
	cr_assert_eq(got.len, 0);
	pktbuf_free(&got);
	pktbuf_free(&row);
	mask_plan_free(&plan);
}

Test(mask_row, hash_without_key_fails_the_row)
{
	MaskPlan plan;
	PktBuf row;
	const char *in[] = { "1", "a@b", "c", "d" };
	plan_people(&plan);
	plan.cols[1].mask = MASK_HASH;
	build_data_row(&row, 4, in);
	assert_row_rejected(&plan, row.data, row.len);
	pktbuf_free(&row);
	mask_plan_free(&plan);
}

/* --- custom masks --- */

typedef struct CustomSeen {
	int calls;
	int col;
	bool saw_null;
	char value[64];
	int mode;	/* 0 upper-case, 1 return NULL, 2 fail, 3 bad length */
} CustomSeen;

static bool custom_upper(void *arg, int col, const uint8_t *in, int32_t in_len, uint8_t **out,
			 int32_t *out_len)
{
	CustomSeen *s = arg;
	s->calls++;
	s->col = col;
	s->saw_null = in == NULL && in_len == -1;
	if (s->mode == 1)
		return true;	/* *out stays NULL: SQL NULL */
	if (s->mode == 2)
		return false;
	if (s->mode == 3) {
		*out = malloc(1);
		*out_len = -5;
		return true;
	}
	if (!in) {
		*out = (uint8_t *)strdup("was null");
		*out_len = 8;
		return true;
	}
	snprintf(s->value, sizeof(s->value), "%.*s", (int)in_len, (const char *)in);
	*out = malloc((size_t)in_len + 1);
	for (int32_t i = 0; i < in_len; i++)
		(*out)[i] = (uint8_t)(in[i] >= 'a' && in[i] <= 'z' ? in[i] - 32 : in[i]);
	*out_len = in_len;
	return true;
}

static void custom_case(int mode, const char *note, bool ok, const char *want_note)
{
	MaskPlan plan;
	PktBuf row, got, want;
	CustomSeen seen = { .mode = mode };
	const char *in[] = { "1", "a@b", "c", note };
	const char *out[] = { "1", "a@b", "c", want_note };
	plan_people(&plan);
	plan.cols[3].mask = MASK_CUSTOM;
	cr_assert(mask_plan_finish(&plan));
	build_data_row(&row, 4, in);
	pktbuf_init(&got);
	cr_assert_eq(mask_rewrite_data_row(&plan, row.data, row.len, &got, custom_upper, &seen), ok);
	cr_assert_eq(seen.calls, 1);
	cr_assert_eq(seen.col, 3);
	cr_assert_eq(seen.saw_null, note == NULL);
	if (ok) {
		expect_row(&want, 4, out);
		assert_same_bytes(&got, &want);
		pktbuf_free(&want);
	} else {
		cr_assert_eq(got.len, 0);
	}
	pktbuf_free(&row);
	pktbuf_free(&got);
	mask_plan_free(&plan);
}

Test(mask_custom, callback_rewrites_value)
{
	custom_case(0, "hello", true, "HELLO");
}

Test(mask_custom, callback_sees_null)
{
	custom_case(0, NULL, true, "was null");
}

Test(mask_custom, callback_may_return_null)
{
	custom_case(1, "hello", true, NULL);
}

Test(mask_custom, callback_failure_fails_row)
{
	custom_case(2, "hello", false, NULL);
}

Test(mask_custom, callback_bad_length_fails_row)
{
	custom_case(3, "hello", false, NULL);
}

Test(mask_custom, missing_callback_redacts)
{
	MaskPlan plan;
	PktBuf row, got, want;
	const char *in[] = { "1", "a@b", "c", "secret" };
	const char *out[] = { "1", "a@b", "c", "[REDACTED]" };
	plan_people(&plan);
	plan.cols[3].mask = MASK_CUSTOM;
	build_data_row(&row, 4, in);
	expect_row(&want, 4, out);
	pktbuf_init(&got);
	cr_assert(mask_rewrite_data_row(&plan, row.data, row.len, &got, NULL, NULL));
	assert_same_bytes(&got, &want);
	pktbuf_free(&row);
	pktbuf_free(&got);
	pktbuf_free(&want);
	mask_plan_free(&plan);
}

/* policy cost 4: a kept parse serves the same description only, and never with old masks. */
Test(mask_plan, a_kept_parse_serves_the_same_description_without_its_masks)
{
	PktBuf rd, other;
	MaskPlan plan;
	MaskPlanKept kept = { 0 };
	build_row_description(&rd, people_fields, 4);
	build_row_description(&other, people_fields, 3);
	cr_assert(mask_plan_from_row_description_kept(&plan, &kept, rd.data, rd.len));
	cr_assert_null(kept.cols, "nothing kept yet: parsed");
	plan.cols[1].mask = MASK_EMAIL;
	plan.cols[2].mask = MASK_PARTIAL;
	cr_assert(mask_plan_finish(&plan) && plan.any);
	MaskColumn *block = plan.cols;
	mask_plan_free_keep(&plan, &kept);
	cr_assert_null(plan.cols);
	cr_assert_eq(kept.cols, block);

	/* another description: parsed, and the kept one stays */
	cr_assert(mask_plan_from_row_description_kept(&plan, &kept, other.data, other.len));
	cr_assert_eq(plan.ncols, 3);
	cr_assert_neq(plan.cols, block);
	cr_assert_eq(kept.cols, block);
	mask_plan_free(&plan);

	/* the same bytes: the kept columns, every mask back to none */
	cr_assert(mask_plan_from_row_description_kept(&plan, &kept, rd.data, rd.len));
	cr_assert_eq(plan.cols, block);
	cr_assert_null(kept.cols);
	cr_assert_eq(plan.ncols, 4);
	cr_assert_not(plan.any);
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(plan.cols[i].mask, MASK_NONE);
		cr_assert_str_eq(plan.cols[i].name, people_fields[i].name);
		cr_assert_eq(plan.cols[i].type_oid, people_fields[i].type_oid);
	}
	cr_assert(mask_plan_finish(&plan));
	cr_assert_not(plan.any);

	/* a body that differs in one byte is parsed on its own */
	mask_plan_free_keep(&plan, &kept);
	rd.data[rd.len - 1] = 1;	/* the last column's format: binary */
	cr_assert(mask_plan_from_row_description_kept(&plan, &kept, rd.data, rd.len));
	cr_assert_neq(plan.cols, block);
	cr_assert_eq(plan.cols[3].format, 1);
	mask_plan_free_keep(&plan, &kept);
	cr_assert_neq(kept.cols, block, "the newer parse replaces the kept one");
	mask_plan_kept_free(&kept);
	cr_assert_null(kept.cols);
	pktbuf_free(&rd);
	pktbuf_free(&other);
}
