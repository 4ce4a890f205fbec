/* Wire codec, packet builder and varcache: byte-exact, at the boundaries. */
#include "src/proto.h"
#include "src/pktbuf.h"
#include "src/varcache.h"
#include "src/pgmoat.h"
#include "src/welcome.h"

#include <stdio.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>
#include <criterion/criterion.h>

/* --- a tiny byte builder for hand-written packets --- */

typedef struct Bytes {
	uint8_t b[PROTO_STARTUP_MAX + 64];
	size_t n;
} Bytes;

static void put32(Bytes *x, uint32_t v)
{
	x->b[x->n++] = (uint8_t)(v >> 24);
	x->b[x->n++] = (uint8_t)(v >> 16);
	x->b[x->n++] = (uint8_t)(v >> 8);
	x->b[x->n++] = (uint8_t)v;
}

static void putraw(Bytes *x, const void *p, size_t n)
{
	memcpy(x->b + x->n, p, n);
	x->n += n;
}

static void putstr(Bytes *x, const char *s)
{
	putraw(x, s, strlen(s) + 1);
}

/* Patch the leading length word with the final size. */
static void patch_len(Bytes *x)
{
	size_t n = x->n;
	x->n = 0;
	put32(x, (uint32_t)n);
	x->n = n;
}

static void startup_begin(Bytes *x, uint32_t code)
{
	x->n = 0;
	put32(x, 0);
	put32(x, code);
}

static bool parse(Bytes *x, StartupPacket *sp, char *err)
{
	return proto_parse_startup(x->b, x->n, sp, err, 128);
}

/* --- readers --- */

Test(proto_reader, int32_reads_exactly_at_boundary)
{
	const uint8_t buf[] = { 0x80, 0x00, 0x00, 0x01 };
	PktReader r;
	int32_t v;
	proto_reader_init(&r, buf, 4);
	cr_assert(proto_read_int32(&r, &v));
	cr_assert_eq(v, INT32_MIN + 1);
	cr_assert_eq(proto_reader_left(&r), 0);
	cr_assert_not(proto_read_int32(&r, &v));
}

Test(proto_reader, int32_fails_with_three_bytes_left)
{
	const uint8_t buf[] = { 1, 2, 3 };
	PktReader r;
	uint32_t v;
	proto_reader_init(&r, buf, 3);
	cr_assert_not(proto_read_uint32(&r, &v));
	cr_assert_eq(proto_reader_left(&r), 3, "failed read must not advance");
}

Test(proto_reader, int16_and_uint8_are_big_endian)
{
	const uint8_t buf[] = { 0xff, 0xfe, 0x01, 0x02, 0x7f };
	PktReader r;
	int16_t s;
	uint16_t u;
	uint8_t b;
	proto_reader_init(&r, buf, sizeof(buf));
	cr_assert(proto_read_int16(&r, &s));
	cr_assert_eq(s, -2);
	cr_assert(proto_read_uint16(&r, &u));
	cr_assert_eq(u, 0x0102);
	cr_assert(proto_read_uint8(&r, &b));
	cr_assert_eq(b, 0x7f);
	cr_assert_not(proto_read_uint8(&r, &b));
	cr_assert_not(proto_read_int16(&r, &s));
}

Test(proto_reader, cstring_requires_nul_inside_buffer)
{
	const uint8_t buf[] = { 'a', 'b', 0, 'c', 'd' };
	PktReader r;
	const char *s;
	proto_reader_init(&r, buf, sizeof(buf));
	cr_assert(proto_read_cstring(&r, &s));
	cr_assert_str_eq(s, "ab");
	cr_assert_not(proto_read_cstring(&r, &s));
	cr_assert_eq(proto_reader_left(&r), 2);
}

Test(proto_reader, bytes_checks_huge_lengths_without_overflow)
{
	const uint8_t buf[] = { 1, 2, 3, 4 };
	PktReader r;
	const uint8_t *p;
	proto_reader_init(&r, buf, sizeof(buf));
	cr_assert_not(proto_read_bytes(&r, SIZE_MAX, &p));
	cr_assert_not(proto_read_bytes(&r, 5, &p));
	cr_assert(proto_read_bytes(&r, 4, &p));
	cr_assert_eq(p, buf);
	cr_assert(proto_read_bytes(&r, 0, &p));
}

Test(proto_reader, empty_null_buffer_reads_nothing)
{
	PktReader r;
	const char *s;
	uint8_t b;
	proto_reader_init(&r, NULL, 0);
	cr_assert_eq(proto_reader_left(&r), 0);
	cr_assert_not(proto_read_cstring(&r, &s));
	cr_assert_not(proto_read_uint8(&r, &b));
}

/* --- framer --- */

static FrameResult frame(uint8_t type, uint32_t len, size_t avail, uint32_t max, MsgHeader *h)
{
	uint8_t buf[5] = { type, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len };
	return proto_frame_header(buf, avail, max, h);
}

Test(proto_frame, needs_five_bytes)
{
	MsgHeader h;
	cr_assert_eq(frame('Q', 4, 4, 1 << 20, &h), FRAME_NEED_MORE);
	cr_assert_eq(frame('Q', 4, 0, 1 << 20, &h), FRAME_NEED_MORE);
}

Test(proto_frame, rejects_lengths_below_four)
{
	MsgHeader h;
	cr_assert_eq(frame('Q', 0, 5, 1 << 20, &h), FRAME_BAD);
	cr_assert_eq(frame('Q', 3, 5, 1 << 20, &h), FRAME_BAD);
}

Test(proto_frame, accepts_length_four_and_max)
{
	MsgHeader h;
	cr_assert_eq(frame('S', 4, 5, 1 << 20, &h), FRAME_OK);
	cr_assert_eq(h.type, 'S');
	cr_assert_eq(h.len, 4);
	cr_assert_eq(proto_msg_total(&h), 5);
	cr_assert_eq(frame('D', 1 << 20, 5, 1 << 20, &h), FRAME_OK);
	cr_assert_eq(frame('D', (1 << 20) + 1, 5, 1 << 20, &h), FRAME_BAD);
}

Test(proto_frame, rejects_negative_int32_lengths_even_with_huge_max)
{
	MsgHeader h;
	cr_assert_eq(frame('D', 0x80000000u, 5, 1 << 30, &h), FRAME_BAD);
	cr_assert_eq(frame('D', 0xFFFFFFFFu, 5, 1 << 30, &h), FRAME_BAD);
	cr_assert_eq(frame('D', 0x80000000u, 5, UINT32_MAX, &h), FRAME_BAD);
	cr_assert_eq(frame('D', 0xFFFFFFFFu, 5, UINT32_MAX, &h), FRAME_BAD);
	cr_assert_eq(frame('D', 0x7FFFFFFFu, 5, UINT32_MAX, &h), FRAME_OK);
}

/* --- startup length --- */

static FrameResult startup_len(uint32_t v, size_t avail, uint32_t *out)
{
	uint8_t buf[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
	return proto_startup_length(buf, avail, out);
}

Test(proto_startup_length, rejects_out_of_range_lengths)
{
	uint32_t n = 12345;
	cr_assert_eq(startup_len(0, 4, &n), FRAME_BAD);
	cr_assert_eq(startup_len(7, 4, &n), FRAME_BAD);
	cr_assert_eq(startup_len(10001, 4, &n), FRAME_BAD);
	cr_assert_eq(startup_len(0x80000000u, 4, &n), FRAME_BAD);
	cr_assert_eq(startup_len(0xFFFFFFFFu, 4, &n), FRAME_BAD);
	cr_assert_eq(n, 12345, "length must not be written on failure");
}

Test(proto_startup_length, accepts_limits_inclusive)
{
	uint32_t n = 0;
	cr_assert_eq(startup_len(8, 4, &n), FRAME_OK);
	cr_assert_eq(n, 8);
	cr_assert_eq(startup_len(10000, 4, &n), FRAME_OK);
	cr_assert_eq(n, 10000);
}

Test(proto_startup_length, needs_four_bytes)
{
	uint32_t n;
	cr_assert_eq(startup_len(8, 3, &n), FRAME_NEED_MORE);
	cr_assert_eq(startup_len(8, 0, &n), FRAME_NEED_MORE);
}

/* --- startup packet --- */

Test(proto_startup, parses_user_database_and_options)
{
	Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, PROTO_VERSION_3);
	putstr(&x, "user"); putstr(&x, "alice");
	putstr(&x, "database"); putstr(&x, "shop");
	putstr(&x, "application_name"); putstr(&x, "psql");
	putstr(&x, "");
	patch_len(&x);
	cr_assert(parse(&x, &sp, err), "%s", err);
	cr_assert_eq(sp.kind, STARTUP_NORMAL);
	cr_assert_eq(sp.protocol, PROTO_VERSION_3);
	cr_assert_eq(sp.nparams, 3);
	cr_assert_str_eq(sp.user, "alice");
	cr_assert_str_eq(sp.database, "shop");
	cr_assert_str_eq(sp.params[2].name, "application_name");
	cr_assert_str_eq(sp.params[2].value, "psql");
	cr_assert_not(sp.has_replication);
}

Test(proto_startup, database_defaults_to_user)
{
	Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, PROTO_VERSION_3);
	putstr(&x, "user"); putstr(&x, "bob");
	putstr(&x, "");
	patch_len(&x);
	cr_assert(parse(&x, &sp, err), "%s", err);
	cr_assert_str_eq(sp.database, "bob");
}

Test(proto_startup, missing_user_is_refused_with_postgres_wording)
{
	Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, PROTO_VERSION_3);
	putstr(&x, "database"); putstr(&x, "shop");
	putstr(&x, "");
	patch_len(&x);
	cr_assert_not(parse(&x, &sp, err));
	cr_assert_str_eq(err, "no PostgreSQL user name specified in startup packet");
}

Test(proto_startup, empty_user_is_refused)
{
	Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, PROTO_VERSION_3);
	putstr(&x, "user"); putstr(&x, "");
	putstr(&x, "");
	patch_len(&x);
	cr_assert_not(parse(&x, &sp, err));
	cr_assert_str_eq(err, "no PostgreSQL user name specified in startup packet");
}

Test(proto_startup, missing_terminator_is_refused)
{
	Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, PROTO_VERSION_3);
	putstr(&x, "user"); putstr(&x, "alice");
	patch_len(&x);
	cr_assert_not(parse(&x, &sp, err));
	cr_assert(strstr(err, "terminator") != NULL, "%s", err);
}

Test(proto_startup, odd_number_of_strings_is_refused)
{
	Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, PROTO_VERSION_3);
	putstr(&x, "user"); putstr(&x, "alice");
	putstr(&x, "database");
	patch_len(&x);
	cr_assert_not(parse(&x, &sp, err));
}

Test(proto_startup, unterminated_string_is_refused)
{
	Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, PROTO_VERSION_3);
	putstr(&x, "user");
	putraw(&x, "alice", 5);
	patch_len(&x);
	cr_assert_not(parse(&x, &sp, err));
}

Test(proto_startup, bytes_after_terminator_are_refused)
{
	Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, PROTO_VERSION_3);
	putstr(&x, "user"); putstr(&x, "alice");
	putstr(&x, "");
	putraw(&x, "x", 1);
	patch_len(&x);
	cr_assert_not(parse(&x, &sp, err));
}

Test(proto_startup, length_word_must_match_packet)
{
	Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, PROTO_VERSION_3);
	putstr(&x, "user"); putstr(&x, "alice");
	putstr(&x, "");
	patch_len(&x);
	cr_assert_not(proto_parse_startup(x.b, x.n - 1, &sp, err, sizeof(err)));
}

Test(proto_startup, too_many_params_are_refused)
{
	Bytes x;
	StartupPacket sp;
	char err[128], name[16];
	startup_begin(&x, PROTO_VERSION_3);
	putstr(&x, "user"); putstr(&x, "alice");
	for (int i = 0; i < PROTO_MAX_STARTUP_PARAMS - 1; i++) {
		snprintf(name, sizeof(name), "p%d", i);
		putstr(&x, name); putstr(&x, "v");
	}
	putstr(&x, "");
	patch_len(&x);
	cr_assert(parse(&x, &sp, err), "%s", err);
	cr_assert_eq(sp.nparams, PROTO_MAX_STARTUP_PARAMS);

	x.n -= 1;
	putstr(&x, "one_more"); putstr(&x, "v");
	putstr(&x, "");
	patch_len(&x);
	cr_assert_not(parse(&x, &sp, err));
}

Test(proto_startup, duplicate_user_is_refused)
{
	Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, PROTO_VERSION_3);
	putstr(&x, "user"); putstr(&x, "alice");
	putstr(&x, "user"); putstr(&x, "postgres");
	putstr(&x, "");
	patch_len(&x);
	cr_assert_not(parse(&x, &sp, err));
}

/* Names differing only in case are the same parameter to the server (first letter included). */
Test(proto_startup, duplicate_in_another_case_is_refused)
{
	Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, PROTO_VERSION_3);
	putstr(&x, "user"); putstr(&x, "alice");
	putstr(&x, "TimeZone"); putstr(&x, "UTC");
	putstr(&x, "timezone"); putstr(&x, "Europe/Paris");
	putstr(&x, "");
	patch_len(&x);
	cr_assert_not(parse(&x, &sp, err));
	cr_assert(strstr(err, "duplicate"), "%s", err);
}

Test(proto_startup, replication_is_flagged)
{
	Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, PROTO_VERSION_3);
	putstr(&x, "user"); putstr(&x, "alice");
	putstr(&x, "replication"); putstr(&x, "database");
	putstr(&x, "");
	patch_len(&x);
	cr_assert(parse(&x, &sp, err), "%s", err);
	cr_assert(sp.has_replication);
}

Test(proto_startup, minor_version_is_accepted_and_recorded)
{
	Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, 0x00030002u);
	putstr(&x, "user"); putstr(&x, "alice");
	putstr(&x, "");
	patch_len(&x);
	cr_assert(parse(&x, &sp, err), "%s", err);
	cr_assert_eq(sp.protocol, 0x00030002u);
}

Test(proto_startup, protocol_2_is_refused)
{
	Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, 0x00020000u);
	putstr(&x, "user"); putstr(&x, "alice");
	putstr(&x, "");
	patch_len(&x);
	cr_assert_not(parse(&x, &sp, err));
	cr_assert(strstr(err, "unsupported frontend protocol 2.0") != NULL, "%s", err);
}

Test(proto_startup, ssl_and_gssenc_requests_are_exactly_eight_bytes)
{
	Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, PROTO_SSL_CODE);
	patch_len(&x);
	cr_assert(parse(&x, &sp, err), "%s", err);
	cr_assert_eq(sp.kind, STARTUP_SSL);
	startup_begin(&x, PROTO_GSSENC_CODE);
	patch_len(&x);
	cr_assert(parse(&x, &sp, err), "%s", err);
	cr_assert_eq(sp.kind, STARTUP_GSSENC);
	startup_begin(&x, PROTO_SSL_CODE);
	put32(&x, 0);
	patch_len(&x);
	cr_assert_not(parse(&x, &sp, err));
}

Test(proto_startup, cancel_request_is_exactly_sixteen_bytes)
{
	Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, PROTO_CANCEL_CODE);
	put32(&x, 4242);
	put32(&x, 0xdeadbeef);
	patch_len(&x);
	cr_assert(parse(&x, &sp, err), "%s", err);
	cr_assert_eq(sp.kind, STARTUP_CANCEL);
	cr_assert_eq(sp.cancel_pid, 4242);
	cr_assert_eq(sp.cancel_key, 0xdeadbeef);

	startup_begin(&x, PROTO_CANCEL_CODE);
	put32(&x, 4242);
	patch_len(&x);
	cr_assert_not(parse(&x, &sp, err));
	startup_begin(&x, PROTO_CANCEL_CODE);
	put32(&x, 1); put32(&x, 2); put32(&x, 3);
	patch_len(&x);
	cr_assert_not(parse(&x, &sp, err));
}

Test(proto_startup, sizes_outside_limits_are_refused)
{
	static Bytes x;
	StartupPacket sp;
	char err[128];
	startup_begin(&x, PROTO_VERSION_3);
	patch_len(&x);
	cr_assert_not(proto_parse_startup(x.b, 7, &sp, err, sizeof(err)));
	memset(x.b, 0, sizeof(x.b));
	x.n = 0;
	put32(&x, 10001);
	put32(&x, PROTO_VERSION_3);
	cr_assert_not(proto_parse_startup(x.b, 10001, &sp, err, sizeof(err)));
}

/* --- body parsers --- */

Test(proto_error, parses_all_fields_and_skips_unknown)
{
	Bytes x = { .n = 0 };
	ErrorFields ef;
	putraw(&x, "S", 1); putstr(&x, "FATAL");
	putraw(&x, "V", 1); putstr(&x, "FATAL");
	putraw(&x, "C", 1); putstr(&x, "28P01");
	putraw(&x, "M", 1); putstr(&x, "password authentication failed");
	putraw(&x, "D", 1); putstr(&x, "detail");
	putraw(&x, "H", 1); putstr(&x, "hint");
	putraw(&x, "P", 1); putstr(&x, "17");
	putraw(&x, "", 1);
	cr_assert(proto_parse_error(x.b, x.n, &ef));
	cr_assert_str_eq(ef.severity, "FATAL");
	cr_assert_str_eq(ef.severity_nl, "FATAL");
	cr_assert_str_eq(ef.sqlstate, "28P01");
	cr_assert_str_eq(ef.message, "password authentication failed");
	cr_assert_str_eq(ef.detail, "detail");
	cr_assert_str_eq(ef.hint, "hint");
}

Test(proto_error, missing_fields_are_null)
{
	Bytes x = { .n = 0 };
	ErrorFields ef;
	putraw(&x, "M", 1); putstr(&x, "only a message");
	putraw(&x, "", 1);
	cr_assert(proto_parse_error(x.b, x.n, &ef));
	cr_assert_str_eq(ef.message, "only a message");
	cr_assert_null(ef.severity);
	cr_assert_null(ef.sqlstate);
	cr_assert_null(ef.detail);

	uint8_t empty[] = { 0 };
	cr_assert(proto_parse_error(empty, 1, &ef));
	cr_assert_null(ef.message);
}

Test(proto_error, missing_terminator_or_truncated_field_fails)
{
	Bytes x = { .n = 0 };
	ErrorFields ef;
	putraw(&x, "M", 1); putstr(&x, "msg");
	cr_assert_not(proto_parse_error(x.b, x.n, &ef));
	putraw(&x, "C", 1); putraw(&x, "28P", 3);
	cr_assert_not(proto_parse_error(x.b, x.n, &ef));
	cr_assert_not(proto_parse_error(x.b, 0, &ef));
}

Test(proto_body, param_status_needs_exactly_two_strings)
{
	const uint8_t ok[] = "TimeZone\0UTC";	/* sizeof includes the final NUL */
	const char *n, *v;
	cr_assert(proto_parse_param_status(ok, sizeof(ok), &n, &v));
	cr_assert_str_eq(n, "TimeZone");
	cr_assert_str_eq(v, "UTC");
	cr_assert_not(proto_parse_param_status(ok, sizeof(ok) - 1, &n, &v));
	const uint8_t extra[] = "a\0b\0c";
	cr_assert_not(proto_parse_param_status(extra, sizeof(extra), &n, &v));
}

Test(proto_body, backend_key_is_exactly_eight_bytes)
{
	const uint8_t b[9] = { 0, 0, 0x10, 0x92, 0xde, 0xad, 0xbe, 0xef, 0 };
	uint32_t pid, key;
	cr_assert(proto_parse_backend_key(b, 8, &pid, &key));
	cr_assert_eq(pid, 0x1092);
	cr_assert_eq(key, 0xdeadbeef);
	cr_assert_not(proto_parse_backend_key(b, 7, &pid, &key));
	cr_assert_not(proto_parse_backend_key(b, 9, &pid, &key));
}

Test(proto_body, auth_request_code_and_payload)
{
	const uint8_t md5[] = { 0, 0, 0, 5, 1, 2, 3, 4 };
	AuthRequest ar;
	cr_assert(proto_parse_auth_request(md5, sizeof(md5), &ar));
	cr_assert_eq(ar.code, 5);
	cr_assert_eq(ar.data_len, 4);
	cr_assert_eq(ar.data[3], 4);
	cr_assert_not(proto_parse_auth_request(md5, 7, &ar), "md5 needs a 4-byte salt");
	cr_assert_not(proto_parse_auth_request(md5, 3, &ar));
	const uint8_t sasl[] = "\0\0\0\x0aSCRAM-SHA-256\0";
	cr_assert(proto_parse_auth_request(sasl, sizeof(sasl), &ar));
	cr_assert_eq(ar.code, 10);
	cr_assert_eq(ar.data_len, strlen("SCRAM-SHA-256") + 2);
}

Test(proto_body, sasl_initial_length_checks)
{
	Bytes x = { .n = 0 };
	const char *mech;
	const uint8_t *data;
	size_t dlen;
	putstr(&x, "SCRAM-SHA-256");
	put32(&x, 3);
	putraw(&x, "abc", 3);
	cr_assert(proto_parse_sasl_initial(x.b, x.n, &mech, &data, &dlen));
	cr_assert_str_eq(mech, "SCRAM-SHA-256");
	cr_assert_eq(dlen, 3);
	cr_assert_eq(memcmp(data, "abc", 3), 0);
	cr_assert_not(proto_parse_sasl_initial(x.b, x.n - 1, &mech, &data, &dlen));
	putraw(&x, "z", 1);
	cr_assert_not(proto_parse_sasl_initial(x.b, x.n, &mech, &data, &dlen), "trailing bytes");

	x.n = 0;
	putstr(&x, "SCRAM-SHA-256");
	put32(&x, 0xFFFFFFFFu);
	cr_assert(proto_parse_sasl_initial(x.b, x.n, &mech, &data, &dlen));
	cr_assert_null(data);
	cr_assert_eq(dlen, 0);

	x.n = 0;
	putstr(&x, "SCRAM-SHA-256");
	put32(&x, 0xFFFFFFFEu);
	cr_assert_not(proto_parse_sasl_initial(x.b, x.n, &mech, &data, &dlen));
	x.n = 0;
	putstr(&x, "SCRAM-SHA-256");
	put32(&x, 0x7FFFFFFFu);
	cr_assert_not(proto_parse_sasl_initial(x.b, x.n, &mech, &data, &dlen));
}

Test(proto_names, known_and_unknown_types)
{
	cr_assert_str_eq(proto_msg_name('Q', true), "Query");
	cr_assert_str_eq(proto_msg_name('D', true), "Describe");
	cr_assert_str_eq(proto_msg_name('D', false), "DataRow");
	cr_assert_str_eq(proto_msg_name('Z', false), "ReadyForQuery");
	cr_assert_str_eq(proto_msg_name(0xff, false), "Unknown");
}

/* --- pktbuf --- */

static void assert_bytes(const PktBuf *pb, const void *want, size_t n)
{
	cr_assert(pktbuf_ok(pb));
	cr_assert_eq(pb->len, n, "length %zu, want %zu", pb->len, n);
	cr_assert_eq(memcmp(pb->data, want, n), 0);
}

Test(pktbuf, ready_for_query_is_byte_exact)
{
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_ready(&pb, 'I');
	assert_bytes(&pb, "Z\0\0\0\5I", 6);
	pktbuf_free(&pb);
}

/* Caller's storage: used in place while it fits, copied out (intact) once outgrown. */
Test(pktbuf, storage_on_stack_is_used_then_outgrown)
{
	uint8_t small[8];
	PktBuf pb;
	pktbuf_init_on(&pb, small, sizeof(small));
	pktbuf_ready(&pb, 'T');
	cr_assert_eq(pb.data, small);
	assert_bytes(&pb, "Z\0\0\0\5T", 6);
	pktbuf_ready(&pb, 'E');
	cr_assert_neq(pb.data, small);
	assert_bytes(&pb, "Z\0\0\0\5TZ\0\0\0\5E", 12);
	cr_assert_eq(memcmp(small, "Z\0\0\0\5T", 6), 0);
	pktbuf_free(&pb);
	cr_assert_null(pb.data);
	pktbuf_init_on(&pb, small, sizeof(small));
	pktbuf_free(&pb);	/* (the storage is not the heap's: nothing to free) */
}

Test(pktbuf, error_response_has_s_v_c_m_fields)
{
	PktBuf pb;
	static const char want[] = "E\0\0\0\x28" "SFATAL\0" "VFATAL\0" "C28P01\0" "Mno such user\0" "";
	pktbuf_init(&pb);
	pktbuf_error(&pb, "FATAL", "28P01", "no such user");
	assert_bytes(&pb, want, sizeof(want));	/* sizeof counts the final terminator */
	pktbuf_free(&pb);
}

Test(pktbuf, errorf_formats_message)
{
	PktBuf pb;
	ErrorFields ef;
	pktbuf_init(&pb);
	pktbuf_errorf(&pb, "ERROR", "08P01", "bad %s %d", "thing", 7);
	cr_assert(pktbuf_ok(&pb));
	cr_assert(proto_parse_error(pb.data + 5, pb.len - 5, &ef));
	cr_assert_str_eq(ef.message, "bad thing 7");
	cr_assert_str_eq(ef.sqlstate, "08P01");
	pktbuf_free(&pb);
}

Test(pktbuf, auth_messages_are_byte_exact)
{
	PktBuf pb;
	const uint8_t salt[4] = { 9, 8, 7, 6 };
	pktbuf_init(&pb);
	pktbuf_auth_ok(&pb);
	pktbuf_auth_cleartext(&pb);
	pktbuf_auth_md5(&pb, salt);
	pktbuf_auth_sasl(&pb, "SCRAM-SHA-256");
	pktbuf_auth_sasl_continue(&pb, "r=x", 3);
	pktbuf_auth_sasl_final(&pb, "v=y", 3);
	static const char want[] =
		"R\0\0\0\x08\0\0\0\0"
		"R\0\0\0\x08\0\0\0\x03"
		"R\0\0\0\x0c\0\0\0\x05\x09\x08\x07\x06"
		"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0"
		"R\0\0\0\x0b\0\0\0\x0br=x"
		"R\0\0\0\x0b\0\0\0\x0cv=y";
	assert_bytes(&pb, want, sizeof(want) - 1);
	pktbuf_free(&pb);
}

Test(pktbuf, small_messages_are_byte_exact)
{
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_param_status(&pb, "TimeZone", "UTC");
	pktbuf_backend_key(&pb, 0x01020304, 0xa0b0c0d0);
	pktbuf_query(&pb, "SELECT 1");
	pktbuf_terminate(&pb);
	pktbuf_password(&pb, "pw");
	pktbuf_command_complete(&pb, "SELECT 1");
	pktbuf_empty_query(&pb);
	static const char want[] =
		"S\0\0\0\x11TimeZone\0UTC\0"
		"K\0\0\0\x0c\x01\x02\x03\x04\xa0\xb0\xc0\xd0"
		"Q\0\0\0\x0dSELECT 1\0"
		"X\0\0\0\x04"
		"p\0\0\0\x07pw\0"
		"C\0\0\0\x0dSELECT 1\0"
		"I\0\0\0\x04";
	assert_bytes(&pb, want, sizeof(want) - 1);
	pktbuf_free(&pb);
}

Test(pktbuf, sasl_client_messages_are_byte_exact)
{
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_sasl_initial(&pb, "M", "ab", 2);
	pktbuf_sasl_initial(&pb, "M", NULL, 0);
	pktbuf_sasl_response(&pb, "xyz", 3);
	static const char want[] =
		"p\0\0\0\x0cM\0\0\0\0\x02" "ab"
		"p\0\0\0\x0aM\0\xff\xff\xff\xff"
		"p\0\0\0\x07xyz";
	assert_bytes(&pb, want, sizeof(want) - 1);
	pktbuf_free(&pb);
}

Test(pktbuf, cancel_and_startup_round_trip_through_parser)
{
	PktBuf pb;
	StartupPacket sp;
	char err[128];
	const char *params[] = { "user", "alice", "database", "db", NULL };

	pktbuf_init(&pb);
	pktbuf_cancel_request(&pb, 77, 0xfeedface);
	assert_bytes(&pb, "\0\0\0\x10\x04\xd2\x16\x2e\0\0\0\x4d\xfe\xed\xfa\xce", 16);
	cr_assert(proto_parse_startup(pb.data, pb.len, &sp, err, sizeof(err)));
	cr_assert_eq(sp.kind, STARTUP_CANCEL);
	cr_assert_eq(sp.cancel_pid, 77);

	pktbuf_reset(&pb);
	pktbuf_startup(&pb, params);
	static const char want[] = "\0\0\0\x20\0\x03\0\0user\0alice\0database\0db\0";
	assert_bytes(&pb, want, sizeof(want));
	cr_assert(proto_parse_startup(pb.data, pb.len, &sp, err, sizeof(err)), "%s", err);
	cr_assert_str_eq(sp.user, "alice");
	cr_assert_str_eq(sp.database, "db");
	pktbuf_free(&pb);
}

Test(pktbuf, row_description_and_data_row_are_byte_exact)
{
	PktBuf pb;
	const char *names[] = { "a", "b" };
	const ColType types[] = { COLTYPE_TEXT, COLTYPE_INT8 };
	const char *values[] = { "x", NULL };
	pktbuf_init(&pb);
	pktbuf_row_description(&pb, 2, names, types);
	pktbuf_data_row(&pb, 2, values);
	static const char want[] =
		"T\0\0\0\x2e\0\x02"
		"a\0" "\0\0\0\0" "\0\0" "\0\0\0\x19" "\xff\xff" "\xff\xff\xff\xff" "\0\0"
		"b\0" "\0\0\0\0" "\0\0" "\0\0\0\x14" "\0\x08" "\xff\xff\xff\xff" "\0\0"
		"D\0\0\0\x0f\0\x02" "\0\0\0\x01x" "\xff\xff\xff\xff";
	assert_bytes(&pb, want, sizeof(want) - 1);
	pktbuf_free(&pb);
}

Test(pktbuf, column_types_map_to_postgres_oids)
{
	const ColType types[] = { COLTYPE_INT4, COLTYPE_NUMERIC, COLTYPE_TIMESTAMPTZ, COLTYPE_BOOL };
	const int32_t oids[] = { 23, 1700, 1184, 16 };
	const int16_t lens[] = { 4, -1, 8, 1 };
	for (size_t i = 0; i < 4; i++) {
		PktBuf pb;
		const char *names[] = { "c" };
		PktReader r;
		const char *name;
		int16_t n, attnum, typlen, fmt;
		int32_t table, oid, typmod;
		pktbuf_init(&pb);
		pktbuf_row_description(&pb, 1, names, &types[i]);
		cr_assert(pktbuf_ok(&pb));
		proto_reader_init(&r, pb.data + 5, pb.len - 5);
		cr_assert(proto_read_int16(&r, &n) && proto_read_cstring(&r, &name) &&
			  proto_read_int32(&r, &table) && proto_read_int16(&r, &attnum) &&
			  proto_read_int32(&r, &oid) && proto_read_int16(&r, &typlen) &&
			  proto_read_int32(&r, &typmod) && proto_read_int16(&r, &fmt));
		cr_assert_eq(oid, oids[i]);
		cr_assert_eq(typlen, lens[i]);
		cr_assert_eq(typmod, -1);
		cr_assert_eq(proto_reader_left(&r), 0);
		pktbuf_free(&pb);
	}
}

Test(pktbuf, failure_is_sticky_when_max_exceeded)
{
	PktBuf pb;
	char big[100];
	memset(big, 'a', sizeof(big));
	pktbuf_init(&pb);
	pb.max = 64;
	pktbuf_ready(&pb, 'I');
	cr_assert(pktbuf_ok(&pb));
	pktbuf_put_bytes(&pb, big, sizeof(big));
	cr_assert_not(pktbuf_ok(&pb));
	size_t len = pb.len;
	pktbuf_ready(&pb, 'I');
	cr_assert_not(pktbuf_ok(&pb), "failure must stay set");
	cr_assert_eq(pb.len, len, "writes after failure are no-ops");
	pktbuf_reset(&pb);
	cr_assert(pktbuf_ok(&pb));
	cr_assert_eq(pb.len, 0);
	pktbuf_free(&pb);
}

Test(pktbuf, grows_to_exactly_max)
{
	PktBuf pb;
	char big[1000];
	memset(big, 'b', sizeof(big));
	pktbuf_init(&pb);
	pb.max = 1000;
	pktbuf_put_bytes(&pb, big, 999);
	pktbuf_put_uint8(&pb, 1);
	cr_assert(pktbuf_ok(&pb));
	cr_assert_eq(pb.len, 1000);
	pktbuf_put_uint8(&pb, 1);
	cr_assert_not(pktbuf_ok(&pb));
	pktbuf_free(&pb);
}

Test(pktbuf, finish_without_start_fails)
{
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_finish(&pb);
	cr_assert_not(pktbuf_ok(&pb));
	pktbuf_free(&pb);
}

Test(pktbuf, nested_start_fails)
{
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_start(&pb, 'Q');
	pktbuf_start(&pb, 'Q');
	cr_assert_not(pktbuf_ok(&pb));
	pktbuf_free(&pb);
}

/*
 * conn8: the startup parser finds a string's end eight bytes at a time:
 * names and values of every length from 1 to 40, at every alignment, come
 * back whole, and a packet whose last string lacks its NUL is refused.
 */
Test(startup, strings_of_every_length_and_alignment)
{
	static Bytes x;
	char name[48], value[48];
	for (size_t pad = 0; pad < 8; pad++) {
		for (size_t len = 1; len <= 40; len++) {
			startup_begin(&x, PROTO_VERSION_3);
			putstr(&x, "user");
			putstr(&x, "u");
			memset(name, 'p', pad + 1);
			name[pad + 1] = '\0';	/* shifts what follows by pad */
			putstr(&x, name);
			putstr(&x, "v");
			for (size_t i = 0; i < len; i++) {
				name[i] = (char)('a' + i % 26);
				value[i] = (char)('A' + (i * 7) % 26);
			}
			name[0] = 'x';	/* (not a tracked or duplicate name) */
			name[len] = value[len] = '\0';
			putstr(&x, name);
			putstr(&x, value);
			x.b[x.n++] = 0;
			patch_len(&x);
			StartupPacket sp;
			char err[128];
			cr_assert(parse(&x, &sp, err), "pad %zu len %zu: %s", pad, len, err);
			cr_assert_eq(sp.nparams, 3);
			cr_assert_str_eq(sp.params[2].name, name);
			cr_assert_str_eq(sp.params[2].value, value);
			cr_assert_str_eq(sp.user, "u");
			x.n -= 2;	/* the terminator and the value's NUL gone */
			patch_len(&x);
			cr_assert_not(parse(&x, &sp, err), "pad %zu len %zu", pad, len);
		}
	}
}

/* --- varcache --- */

Test(varcache, lookup_is_case_insensitive_and_name_canonical)
{
	cr_assert_eq(varcache_lookup("datestyle"), VAR_DATESTYLE);
	cr_assert_eq(varcache_lookup("TIMEZONE"), VAR_TIMEZONE);
	cr_assert_eq(varcache_lookup("search_path"), -1);
	cr_assert_str_eq(varcache_name(VAR_DATESTYLE), "DateStyle");
	cr_assert_str_eq(varcache_name(VAR_INTERVALSTYLE), "IntervalStyle");
	cr_assert_str_eq(varcache_name(VAR_APPLICATION_NAME), "application_name");
}

/* conn8: the lookup picks its candidate by first letter: every name must still be found */
Test(varcache, lookup_finds_every_tracked_name_and_no_near_miss)
{
	for (int i = 0; i < VAR_COUNT; i++) {
		const char *name = varcache_name((VarId)i);
		cr_assert_eq(varcache_lookup(name), i, "%s", name);
		char upper[64];
		size_t n = strlen(name);
		cr_assert_lt(n, sizeof(upper));
		for (size_t j = 0; j <= n; j++)
			upper[j] = (char)toupper((unsigned char)name[j]);
		cr_assert_eq(varcache_lookup(upper), i, "%s", upper);
		upper[n - 1] = '\0';	/* a prefix is not the name */
		cr_assert_eq(varcache_lookup(upper), -1, "%s", upper);
	}
	const char *others[] = { "user", "database", "options", "client_encodingx", "datestyle2",
				 "", "_", "replication", "search_path", "TimeZoneX" };
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		cr_assert_eq(varcache_lookup(others[i]), -1, "%s", others[i]);
}

Test(varcache, set_reports_changes_only)
{
	VarCache vc = { 0 };
	cr_assert(varcache_set(&vc, "TimeZone", "UTC"));
	cr_assert_not(varcache_set(&vc, "timezone", "UTC"));
	cr_assert(varcache_set(&vc, "TimeZone", "Europe/Paris"));
	cr_assert_not(varcache_set(&vc, "work_mem", "4MB"));
	cr_assert_str_eq(vc.values[VAR_TIMEZONE], "Europe/Paris");
	varcache_free(&vc);
	cr_assert_null(vc.values[VAR_TIMEZONE]);
}

Test(varcache, sync_sql_sets_only_differences)
{
	VarCache cl = { 0 }, sv = { 0 };
	cr_assert_null(varcache_sync_sql(&cl, &sv));
	varcache_set(&cl, "client_encoding", "UTF8");
	varcache_set(&cl, "DateStyle", "ISO, MDY");
	varcache_set(&cl, "application_name", "app");
	varcache_set(&sv, "client_encoding", "UTF8");
	varcache_set(&sv, "DateStyle", "ISO, DMY");
	varcache_set(&sv, "TimeZone", "UTC");
	char *sql = varcache_sync_sql(&cl, &sv);
	cr_assert_str_eq(sql, "SET DateStyle='ISO, MDY';SET application_name='app';");
	free(sql);
	varcache_copy(&sv, &cl);
	cr_assert_null(varcache_sync_sql(&cl, &sv));
	varcache_free(&cl);
	varcache_free(&sv);
}

Test(varcache, sync_sql_quotes_hostile_values)
{
	VarCache cl = { 0 }, sv = { 0 };
	varcache_set(&cl, "application_name", "x'; DROP TABLE t; --");
	char *sql = varcache_sync_sql(&cl, &sv);
	cr_assert_str_eq(sql, "SET application_name='x''; DROP TABLE t; --';");
	free(sql);
	varcache_set(&cl, "application_name", "a\\'b");
	sql = varcache_sync_sql(&cl, &sv);
	cr_assert_str_eq(sql, "SET application_name=E'a\\\\''b';");
	free(sql);
	varcache_free(&cl);
}

/* ---- extended-protocol bodies (proto_ext.c) ---- */
#include "src/proto_ext.h"

Test(proto_ext, parse_body_reads_name_query_and_type_count)
{
	static const uint8_t ok[] = "s1\0SHOW POOLS\0\0\1\0\0\0\x19";
	ParseBody p;
	cr_assert(proto_parse_parse(ok, sizeof(ok) - 1, &p));
	cr_assert_str_eq(p.name, "s1");
	cr_assert_str_eq(p.query, "SHOW POOLS");
	cr_assert_eq(p.nparams, 1);
	/* a type count past the body, a negative count, a missing terminator */
	cr_assert_not(proto_parse_parse(ok, sizeof(ok) - 2, &p));
	static const uint8_t neg[] = "\0q\0\xff\xff";
	cr_assert_not(proto_parse_parse(neg, sizeof(neg) - 1, &p));
	static const uint8_t unterminated[] = { 's', '1' };
	cr_assert_not(proto_parse_parse(unterminated, sizeof(unterminated), &p));
}

Test(proto_ext, bind_body_counts_parameters_and_flags_binary_results)
{
	/* portal "", stmt "s", 0 formats, 2 params (NULL, "ab"), 1 result format: binary */
	static const uint8_t ok[] = "\0s\0\0\0\0\2\xff\xff\xff\xff\0\0\0\2ab\0\1\0\1";
	BindBody b;
	cr_assert(proto_parse_bind(ok, sizeof(ok) - 1, &b));
	cr_assert_str_eq(b.statement, "s");
	cr_assert_eq(b.nparams, 2);
	cr_assert(b.binary_results);
	/* a value length past the end */
	static const uint8_t longval[] = "\0s\0\0\0\0\1\0\0\0\x7f" "ab\0\0";
	cr_assert_not(proto_parse_bind(longval, sizeof(longval) - 1, &b));
	/* trailing bytes */
	static const uint8_t trailing[] = "\0s\0\0\0\0\0\0\0X";
	cr_assert_not(proto_parse_bind(trailing, sizeof(trailing) - 1, &b));
}

Test(proto_ext, describe_close_and_execute_bodies_are_checked)
{
	TargetBody t;
	ExecuteBody e;
	static const uint8_t d[] = "Pp1\0";
	cr_assert(proto_parse_target(d, sizeof(d) - 1, &t));
	cr_assert_eq(t.kind, 'P');
	cr_assert_str_eq(t.name, "p1");
	static const uint8_t bad_kind[] = "Xp1\0";
	cr_assert_not(proto_parse_target(bad_kind, sizeof(bad_kind) - 1, &t));
	static const uint8_t ex[] = "\0\0\0\0\7";
	cr_assert(proto_parse_execute(ex, sizeof(ex) - 1, &e));
	cr_assert_eq(e.max_rows, 7);
	cr_assert_not(proto_parse_execute(ex, sizeof(ex) - 2, &e));
}

Test(pktbuf, param_status_refuses_nesting_and_overflow)
{
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_start(&pb, 'T');
	pktbuf_param_status(&pb, "a", "b");
	cr_assert(!pktbuf_ok(&pb), "inside another message");
	pktbuf_free(&pb);
	pktbuf_init(&pb);
	pb.max = 12;
	pktbuf_param_status(&pb, "TimeZone", "UTC");
	cr_assert(!pktbuf_ok(&pb), "over the buffer's limit");
	pktbuf_free(&pb);
}

/* --- welcome (conn8: cached whole, the cancel key written into the copy) --- */

static const uint8_t *next_msg(const uint8_t *p, const uint8_t *end, uint8_t *type, uint32_t *len)
{
	cr_assert_geq(end - p, 5);
	*type = p[0];
	*len = ((uint32_t)p[1] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 8) | p[4];
	cr_assert_geq((size_t)(end - p), 1 + (size_t)*len);
	return p + 1 + *len;
}

static void check_welcome(const PktBuf *pb, bool auth_ok, uint32_t pid, uint32_t key, const char *app)
{
	const uint8_t *p = pb->data, *end = pb->data + pb->len;
	uint8_t t;
	uint32_t len;
	const uint8_t *msg = p;
	p = next_msg(p, end, &t, &len);
	if (auth_ok) {
		cr_assert_eq(t, 'R');
		cr_assert_eq(len, 8);
		cr_assert_eq(msg[8], 0);
		msg = p;
		p = next_msg(p, end, &t, &len);
	}
	int statuses = 0;
	bool saw_app = false;
	while (t == 'S') {
		const char *name = (const char *)msg + 5;
		const char *value = name + strlen(name) + 1;
		if (strcmp(name, "application_name") == 0) {
			cr_assert_str_eq(value, app);
			saw_app = true;
		}
		if (strcmp(name, "server_version") == 0)
			cr_assert_str_eq(value, "15.0");
		statuses++;
		msg = p;
		p = next_msg(p, end, &t, &len);
	}
	cr_assert_eq(statuses, 3);
	cr_assert(saw_app);
	cr_assert_eq(t, 'K');
	cr_assert_eq(len, 12);
	uint32_t got_pid = ((uint32_t)msg[5] << 24) | ((uint32_t)msg[6] << 16) | ((uint32_t)msg[7] << 8) | msg[8];
	uint32_t got_key = ((uint32_t)msg[9] << 24) | ((uint32_t)msg[10] << 16) | ((uint32_t)msg[11] << 8) | msg[12];
	cr_assert_eq(got_pid, pid);
	cr_assert_eq(got_key, key);
	msg = p;
	p = next_msg(p, end, &t, &len);
	cr_assert_eq(t, 'Z');
	cr_assert_eq(msg[5], 'I');
	cr_assert_eq(p, end);
}

Test(welcome, whole_welcome_with_and_without_auth_ok_and_each_clients_key)
{
	static Pool pool;
	char *names[] = { "server_version", "application_name", "client_encoding" };
	char *values[] = { "15.0", "server_app", "UTF8" };
	pool.welcome.count = 3;
	pool.welcome.names = names;
	pool.welcome.values = values;
	VarCache a = { 0 }, b = { 0 }, c = { 0 };
	varcache_set(&a, "application_name", "pgbench");
	varcache_set(&b, "application_name", "other");
	struct { VarCache *vars; bool auth_ok; uint32_t pid, key; const char *app; } logins[] = {
		{ &a, true, 0x01020304u, 0xa0b0c0d0u, "pgbench" },
		{ &a, false, 0xffffffffu, 0u, "pgbench" },	/* (cached: copied again) */
		{ &b, true, 7u, 8u, "other" },			/* other values: rebuilt */
		{ &c, false, 9u, 10u, "server_app" },		/* unset: the server's */
		{ &a, true, 11u, 12u, "pgbench" },
	};
	for (size_t i = 0; i < sizeof(logins) / sizeof(logins[0]); i++) {
		PktBuf pb;
		pktbuf_init(&pb);
		pktbuf_put_uint8(&pb, 'x');	/* (appended after what pb holds) */
		welcome_build(&pool, logins[i].vars, logins[i].auth_ok, logins[i].pid, logins[i].key, &pb);
		cr_assert(pktbuf_ok(&pb));
		PktBuf rest = pb;
		rest.data = pb.data + 1;
		rest.len = pb.len - 1;
		check_welcome(&rest, logins[i].auth_ok, logins[i].pid, logins[i].key, logins[i].app);
		pktbuf_free(&pb);
	}
	welcome_reset(&pool.welcome_cache);
	varcache_free(&a);
	varcache_free(&b);
	varcache_free(&c);
}
