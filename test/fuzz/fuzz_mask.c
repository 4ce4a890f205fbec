/*
 * libFuzzer target for the column-mask plan and the DataRow rewriter.
 *
 * Input layout (every part optional; a short input just ends early):
 *   u8 flags            bit 0: key the hash mask, bit 1: pass a custom callback,
 *                       bit 2: plan through a kept parse (mask_plan_*_kept), masked
 *                       and set aside first, then reused
 *   u16 rd_len, rd      a RowDescription body for mask_plan_from_row_description
 *   u16 nmasks, masks   column i gets masks[i % nmasks] % 8 (7 is an invalid kind)
 *   (u16 row_len, row)* DataRow bodies for mask_rewrite_data_row
 *
 * Invariants checked (abort() on violation): a rejected row leaves the output
 * buffer as it was; an accepted row is one well-formed 'D' message with the
 * plan's column count, unmasked columns byte-identical to the input, masked
 * columns equal to mask_apply_value of the input; a masked binary column or
 * an invalid mask kind is never accepted; a plan from a kept parse is the
 * fresh parse's, with no masks.
 */
#include "mask.h"
#include "pktbuf.h"
#include "proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool take_part(PktReader *r, const uint8_t **p, size_t *n)
{
	uint16_t len;
	if (!proto_read_uint16(r, &len))
		return false;
	size_t left = proto_reader_left(r);
	*n = len <= left ? len : left;
	return proto_read_bytes(r, *n, p);
}

/* Upper-cases the value; a value starting with '!' fails, '~' gives NULL. */
static bool fuzz_custom(void *arg, int col, const uint8_t *in, int32_t in_len, uint8_t **out,
			int32_t *out_len)
{
	(void)arg;
	(void)col;
	if (in && in_len > 0 && in[0] == '!')
		return false;
	if (!in || (in_len > 0 && in[0] == '~'))
		return true;
	*out = malloc((size_t)in_len + 1);
	for (int32_t i = 0; i < in_len; i++)
		(*out)[i] = (uint8_t)(in[i] >= 'a' && in[i] <= 'z' ? in[i] - 32 : in[i]);
	*out_len = in_len;
	return true;
}

static void read_value(PktReader *r, const uint8_t **v, int32_t *len)
{
	if (!proto_read_int32(r, len) || *len < -1)
		abort();
	*v = NULL;
	if (*len >= 0 && !proto_read_bytes(r, (size_t)*len, v))
		abort();
}

/* The expected value of one masked column, as the single-value API computes it. */
static void check_masked(const MaskPlan *plan, const MaskColumn *col, const uint8_t *in,
			 int32_t in_len, const uint8_t *got, int32_t got_len, bool custom)
{
	uint8_t *want = NULL;
	int32_t want_len = -1;

	if (col->format != 0)
		abort();	/* binary values cannot be masked: must have failed */
	if (col->mask == MASK_CUSTOM) {
		if (!custom && (got_len != (int32_t)strlen(MASK_REDACTED_TEXT) ||
				memcmp(got, MASK_REDACTED_TEXT, (size_t)got_len) != 0))
			abort();
		return;
	}
	if (!mask_apply_value(plan, col->mask, in, in_len, &want, &want_len))
		abort();	/* the row path succeeded where the value path failed */
	if (want_len != got_len || (want_len > 0 && memcmp(want, got, (size_t)want_len) != 0))
		abort();
	free(want);
}

/* An accepted row: re-parse the output and compare column by column with the input. */
static void check_output(const MaskPlan *plan, const uint8_t *row, size_t row_len,
			 const uint8_t *msg, size_t msg_len, bool custom)
{
	MsgHeader h;
	PktReader in, out;
	int16_t n_in, n_out;

	if (proto_frame_header(msg, msg_len, 1u << 30, &h) != FRAME_OK || h.type != 'D' ||
	    proto_msg_total(&h) != msg_len)
		abort();
	proto_reader_init(&in, row, row_len);
	proto_reader_init(&out, msg + PROTO_HEADER_LEN, msg_len - PROTO_HEADER_LEN);
	if (!proto_read_int16(&in, &n_in) || !proto_read_int16(&out, &n_out) || n_in != n_out ||
	    n_in != plan->ncols)
		abort();
	for (int i = 0; i < n_in; i++) {
		const uint8_t *a, *b;
		int32_t alen, blen;
		read_value(&in, &a, &alen);
		read_value(&out, &b, &blen);
		if (plan->cols[i].mask != MASK_NONE)
			check_masked(plan, &plan->cols[i], a, alen, b, blen, custom);
		else if (alen != blen || (alen > 0 && memcmp(a, b, (size_t)alen) != 0))
			abort();
	}
	if (proto_reader_left(&in) != 0 || proto_reader_left(&out) != 0)
		abort();
}

static void fuzz_rows(const MaskPlan *plan, PktReader *r, bool custom)
{
	const uint8_t *row;
	size_t row_len;
	PktBuf pb;

	pktbuf_init(&pb);
	/* Bounded: each part consumes at least its 2-byte length. */
	while (take_part(r, &row, &row_len)) {
		/* An exact-size copy so ASan sees any read past the row. */
		uint8_t *copy = malloc(row_len ? row_len : 1);
		memcpy(copy, row, row_len);
		pktbuf_reset(&pb);
		pktbuf_put_uint8(&pb, 'C');	/* a byte the rewriter must never disturb */
		bool ok = mask_rewrite_data_row(plan, copy, row_len, &pb, custom ? fuzz_custom : NULL,
						NULL);
		if (!pktbuf_ok(&pb) || pb.len < 1 || pb.data[0] != 'C' || pb.msg_start != SIZE_MAX)
			abort();
		if (!ok && pb.len != 1)
			abort();
		if (ok)
			check_output(plan, copy, row_len, pb.data + 1, pb.len - 1, custom);
		free(copy);
	}
	pktbuf_free(&pb);
}

/* A plan from a kept parse (same bytes) equals a fresh parse of body, masks none. */
static void check_kept(const MaskPlan *plan, const uint8_t *body, size_t len)
{
	MaskPlan fresh;
	if (!mask_plan_from_row_description(&fresh, body, len) || fresh.ncols != plan->ncols ||
	    plan->any || plan->hmac || plan->hash_key_len != 0)
		abort();
	for (int i = 0; i < plan->ncols; i++) {
		const MaskColumn *a = &plan->cols[i], *b = &fresh.cols[i];
		if (strcmp(a->name, b->name) != 0 || a->table_oid != b->table_oid ||
		    a->attnum != b->attnum || a->type_oid != b->type_oid || a->format != b->format ||
		    a->mask != MASK_NONE)
			abort();
	}
	mask_plan_free(&fresh);
}

/* Plan body through kept: parsed, every column masked, set aside, then planned again. */
static bool plan_kept(MaskPlan *plan, MaskPlanKept *kept, const uint8_t *body, size_t len)
{
	if (!mask_plan_from_row_description_kept(plan, kept, body, len))
		return false;
	for (int i = 0; i < plan->ncols; i++)
		plan->cols[i].mask = MASK_REDACT;
	(void)mask_plan_finish(plan);
	mask_plan_free_keep(plan, kept);
	if (!mask_plan_from_row_description_kept(plan, kept, body, len))
		abort();	/* the same bytes parsed once already */
	check_kept(plan, body, len);
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static MaskPlanKept kept;	/* across inputs, as a server keeps it across results */
	static const uint8_t key[] = "fuzz-key-fuzz-key-fuzz-key-32byt";
	PktReader r;
	uint8_t flags;
	const uint8_t *rd, *masks;
	size_t rd_len, nmasks;
	MaskPlan plan;

	proto_reader_init(&r, data, size);
	if (!proto_read_uint8(&r, &flags) || !take_part(&r, &rd, &rd_len))
		return 0;
	uint8_t *copy = malloc(rd_len ? rd_len : 1);
	memcpy(copy, rd, rd_len);
	bool use_kept = (flags & 4) != 0;
	bool parsed = use_kept ? plan_kept(&plan, &kept, copy, rd_len)
			       : mask_plan_from_row_description(&plan, copy, rd_len);
	free(copy);	/* the plan must not point into the message */
	if (!parsed) {
		if (plan.ncols != 0 || plan.cols)
			abort();
		return 0;
	}
	if ((flags & 1) && !mask_plan_set_hash_key(&plan, key, 32))
		abort();
	if (take_part(&r, &masks, &nmasks) && nmasks > 0)
		for (int i = 0; i < plan.ncols; i++)
			plan.cols[i].mask = (MaskKind)(masks[(size_t)i % nmasks] % 8);
	bool sane = mask_plan_finish(&plan);
	for (int i = 0; i < plan.ncols; i++)
		if (plan.cols[i].mask != MASK_NONE && !plan.any)
			abort();
	(void)sane;	/* rows are rewritten even for a refused plan: the rewriter must still fail closed */
	fuzz_rows(&plan, &r, (flags & 2) != 0);
	if (use_kept)
		mask_plan_free_keep(&plan, &kept);
	else
		mask_plan_free(&plan);
	return 0;
}
