/*
 * Outgoing message builder. Writes after a failure are no-ops, so a caller
 * builds a whole reply and checks pktbuf_ok() once.
 *
 * msg_start holds the offset of the length word of the message being built
 * (after the type byte for typed messages): pktbuf_finish() patches it with
 * the number of bytes from there to the end.
 */
#include "pktbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PKTBUF_DEFAULT_MAX ((size_t)1 << 30)
#define PKTBUF_MIN_CAP 256

void pktbuf_init(PktBuf *pb)
{
	memset(pb, 0, sizeof(*pb));
	pb->msg_start = SIZE_MAX;
}

void pktbuf_init_on(PktBuf *pb, void *storage, size_t cap)
{
	pktbuf_init(pb);
	pb->data = storage;
	pb->cap = cap;
	pb->borrowed = true;
}

void pktbuf_free(PktBuf *pb)
{
	if (!pb->borrowed)
		free(pb->data);
	pb->borrowed = false;
	pb->data = NULL;
	pb->len = pb->cap = 0;
	pb->msg_start = SIZE_MAX;
}

void pktbuf_reset(PktBuf *pb)
{
	pb->len = 0;
	pb->msg_start = SIZE_MAX;
	pb->failed = false;
}

/* Room for n more bytes, or the sticky failure. */
static bool pktbuf_reserve(PktBuf *pb, size_t n)
{
	size_t max = pb->max ? pb->max : PKTBUF_DEFAULT_MAX;

	if (pb->failed)
		return false;
	if (n > max || pb->len > max - n) {
		pb->failed = true;
		return false;
	}
	if (pb->len + n <= pb->cap)
		return true;
	size_t cap = pb->cap ? pb->cap : PKTBUF_MIN_CAP;
	while (cap < pb->len + n)
		cap = cap > max / 2 ? max : cap * 2;
	if (pb->borrowed) {
		uint8_t *own = xmalloc(cap);
		memcpy(own, pb->data, pb->len);
		pb->data = own;
		pb->borrowed = false;
	} else {
		pb->data = xrealloc(pb->data, cap);
	}
	pb->cap = cap;
	return true;
}

void pktbuf_put_bytes(PktBuf *pb, const void *p, size_t n)
{
	if (!pktbuf_reserve(pb, n))
		return;
	if (n)
		memcpy(pb->data + pb->len, p, n);
	pb->len += n;
}

void pktbuf_put_uint8(PktBuf *pb, uint8_t v)
{
	pktbuf_put_bytes(pb, &v, 1);
}

void pktbuf_put_uint32(PktBuf *pb, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
	pktbuf_put_bytes(pb, b, sizeof(b));
}

void pktbuf_put_int32(PktBuf *pb, int32_t v)
{
	pktbuf_put_uint32(pb, (uint32_t)v);
}

void pktbuf_put_int16(PktBuf *pb, int16_t v)
{
	uint16_t u = (uint16_t)v;
	uint8_t b[2] = { (uint8_t)(u >> 8), (uint8_t)u };
	pktbuf_put_bytes(pb, b, sizeof(b));
}

void pktbuf_put_cstring(PktBuf *pb, const char *s)
{
	pktbuf_put_bytes(pb, s, strlen(s) + 1);
}

static void pktbuf_begin(PktBuf *pb)
{
	/* Nested messages would leave the outer length unpatched. */
	if (pb->msg_start != SIZE_MAX) {
		pb->failed = true;
		return;
	}
	pb->msg_start = pb->len;
	pktbuf_put_uint32(pb, 0);
}

void pktbuf_start(PktBuf *pb, uint8_t type)
{
	pktbuf_put_uint8(pb, type);
	pktbuf_begin(pb);
}

void pktbuf_start_untyped(PktBuf *pb)
{
	pktbuf_begin(pb);
}

void pktbuf_finish(PktBuf *pb)
{
	size_t start = pb->msg_start;

	pb->msg_start = SIZE_MAX;
	if (pb->failed)
		return;
	if (start == SIZE_MAX || pb->len - start > (size_t)INT32_MAX) {
		pb->failed = true;
		return;
	}
	uint32_t n = (uint32_t)(pb->len - start);
	pb->data[start] = (uint8_t)(n >> 24);
	pb->data[start + 1] = (uint8_t)(n >> 16);
	pb->data[start + 2] = (uint8_t)(n >> 8);
	pb->data[start + 3] = (uint8_t)n;
}

static void pktbuf_error_fields(PktBuf *pb, uint8_t type, const char *severity,
				const char *sqlstate, const char *msg)
{
	pktbuf_start(pb, type);
	pktbuf_put_uint8(pb, 'S');
	pktbuf_put_cstring(pb, severity);
	pktbuf_put_uint8(pb, 'V');
	pktbuf_put_cstring(pb, severity);
	pktbuf_put_uint8(pb, 'C');
	pktbuf_put_cstring(pb, sqlstate);
	pktbuf_put_uint8(pb, 'M');
	pktbuf_put_cstring(pb, msg);
	pktbuf_put_uint8(pb, 0);
	pktbuf_finish(pb);
}

void pktbuf_error(PktBuf *pb, const char *severity, const char *sqlstate, const char *msg)
{
	pktbuf_error_fields(pb, 'E', severity, sqlstate, msg);
}

void pktbuf_errorf(PktBuf *pb, const char *severity, const char *sqlstate, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;

	va_start(ap, fmt);
	int n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0) {
		pb->failed = true;
		return;
	}
	pktbuf_error(pb, severity, sqlstate, msg);
	free(msg);
}

void pktbuf_notice(PktBuf *pb, const char *sqlstate, const char *msg)
{
	pktbuf_error_fields(pb, 'N', "NOTICE", sqlstate, msg);
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/*
 * A whole message of a known payload size, header written: where the
 * payload goes, or NULL (failed). Every login sends a few of these: one
 * reservation each, not one per field.
 */
static uint8_t *pktbuf_fixed_msg(PktBuf *pb, uint8_t type, size_t payload)
{
	if (pb->msg_start != SIZE_MAX || payload > (size_t)INT32_MAX - 4) {
		pb->failed = true;	/* inside another message, or too long */
		return NULL;
	}
	if (!pktbuf_reserve(pb, 5 + payload))
		return NULL;
	uint8_t *p = pb->data + pb->len;
	p[0] = type;
	put_be32(p + 1, (uint32_t)(4 + payload));
	pb->len += 5 + payload;
	return p + 5;
}

void pktbuf_ready(PktBuf *pb, char tx_status)
{
	uint8_t *p = pktbuf_fixed_msg(pb, 'Z', 1);
	if (p)
		p[0] = (uint8_t)tx_status;
}

static void pktbuf_auth(PktBuf *pb, int32_t code, const void *data, size_t len)
{
	uint8_t *p = pktbuf_fixed_msg(pb, 'R', 4 + len);
	if (!p)
		return;
	put_be32(p, (uint32_t)code);
	if (len)
		memcpy(p + 4, data, len);
}

void pktbuf_auth_ok(PktBuf *pb)
{
	pktbuf_auth(pb, 0, NULL, 0);
}

void pktbuf_auth_cleartext(PktBuf *pb)
{
	pktbuf_auth(pb, 3, NULL, 0);
}

void pktbuf_auth_md5(PktBuf *pb, const uint8_t salt[4])
{
	pktbuf_auth(pb, 5, salt, 4);
}

void pktbuf_auth_sasl(PktBuf *pb, const char *mechanism)
{
	pktbuf_start(pb, 'R');
	pktbuf_put_int32(pb, 10);
	pktbuf_put_cstring(pb, mechanism);
	pktbuf_put_uint8(pb, 0);	/* end of the mechanism list */
	pktbuf_finish(pb);
}

void pktbuf_auth_sasl_continue(PktBuf *pb, const void *data, size_t len)
{
	pktbuf_auth(pb, 11, data, len);
}

void pktbuf_auth_sasl_final(PktBuf *pb, const void *data, size_t len)
{
	pktbuf_auth(pb, 12, data, len);
}

/* Written in one piece: a welcome holds a dozen of these, for every login. */
void pktbuf_param_status(PktBuf *pb, const char *name, const char *value)
{
	size_t nlen = strlen(name) + 1, vlen = strlen(value) + 1;
	size_t body = 4 + nlen + vlen;
	if (pb->msg_start != SIZE_MAX || body > (size_t)INT32_MAX) {
		pb->failed = true;	/* inside another message, or too long */
		return;
	}
	if (!pktbuf_reserve(pb, 1 + body))
		return;
	uint8_t *p = pb->data + pb->len;
	p[0] = 'S';
	p[1] = (uint8_t)(body >> 24);
	p[2] = (uint8_t)(body >> 16);
	p[3] = (uint8_t)(body >> 8);
	p[4] = (uint8_t)body;
	memcpy(p + 5, name, nlen);
	memcpy(p + 5 + nlen, value, vlen);
	pb->len += 1 + body;
}

void pktbuf_set_backend_key(uint8_t *msg, uint32_t pid, uint32_t key)
{
	put_be32(msg + 5, pid);
	put_be32(msg + 5 + 4, key);
}

void pktbuf_backend_key(PktBuf *pb, uint32_t pid, uint32_t key)
{
	uint8_t *p = pktbuf_fixed_msg(pb, 'K', 8);
	if (!p)
		return;
	pktbuf_set_backend_key(p - 5, pid, key);
}

static void pktbuf_string_msg(PktBuf *pb, uint8_t type, const char *s)
{
	pktbuf_start(pb, type);
	pktbuf_put_cstring(pb, s);
	pktbuf_finish(pb);
}

static void pktbuf_empty_msg(PktBuf *pb, uint8_t type)
{
	pktbuf_start(pb, type);
	pktbuf_finish(pb);
}

void pktbuf_query(PktBuf *pb, const char *sql)
{
	pktbuf_string_msg(pb, 'Q', sql);
}

void pktbuf_terminate(PktBuf *pb)
{
	pktbuf_empty_msg(pb, 'X');
}

void pktbuf_password(PktBuf *pb, const char *password)
{
	pktbuf_string_msg(pb, 'p', password);
}

void pktbuf_sasl_initial(PktBuf *pb, const char *mech, const void *data, size_t len)
{
	if (data && len > (size_t)INT32_MAX) {
		pb->failed = true;
		return;
	}
	pktbuf_start(pb, 'p');
	pktbuf_put_cstring(pb, mech);
	if (data) {
		pktbuf_put_int32(pb, (int32_t)len);
		pktbuf_put_bytes(pb, data, len);
	} else {
		pktbuf_put_int32(pb, -1);
	}
	pktbuf_finish(pb);
}

void pktbuf_sasl_response(PktBuf *pb, const void *data, size_t len)
{
	pktbuf_start(pb, 'p');
	pktbuf_put_bytes(pb, data, len);
	pktbuf_finish(pb);
}

void pktbuf_cancel_request(PktBuf *pb, uint32_t pid, uint32_t key)
{
	pktbuf_start_untyped(pb);
	pktbuf_put_uint32(pb, 80877102u);
	pktbuf_put_uint32(pb, pid);
	pktbuf_put_uint32(pb, key);
	pktbuf_finish(pb);
}

void pktbuf_startup(PktBuf *pb, const char *const *params)
{
	pktbuf_start_untyped(pb);
	pktbuf_put_uint32(pb, 0x00030000u);
	for (size_t i = 0; params && params[i]; i += 2) {
		if (!params[i + 1]) {
			pb->failed = true;	/* a name without a value */
			break;
		}
		pktbuf_put_cstring(pb, params[i]);
		pktbuf_put_cstring(pb, params[i + 1]);
	}
	pktbuf_put_uint8(pb, 0);
	pktbuf_finish(pb);
}

/* Type OID and typlen as PostgreSQL reports them for each admin column type. */
static void coltype_info(ColType t, int32_t *oid, int16_t *typlen)
{
	switch (t) {
	case COLTYPE_INT4: *oid = 23; *typlen = 4; return;
	case COLTYPE_INT8: *oid = 20; *typlen = 8; return;
	case COLTYPE_NUMERIC: *oid = 1700; *typlen = -1; return;
	case COLTYPE_TIMESTAMPTZ: *oid = 1184; *typlen = 8; return;
	case COLTYPE_BOOL: *oid = 16; *typlen = 1; return;
	case COLTYPE_BYTEA: *oid = 17; *typlen = -1; return;
	case COLTYPE_TEXT: break;
	}
	*oid = 25;
	*typlen = -1;
}

void pktbuf_row_description(PktBuf *pb, int ncols, const char *const *names, const ColType *types)
{
	if (ncols < 0 || ncols > INT16_MAX) {
		pb->failed = true;
		return;
	}
	pktbuf_start(pb, 'T');
	pktbuf_put_int16(pb, (int16_t)ncols);
	for (int i = 0; i < ncols; i++) {
		int32_t oid;
		int16_t typlen;
		coltype_info(types[i], &oid, &typlen);
		pktbuf_put_cstring(pb, names[i]);
		pktbuf_put_int32(pb, 0);	/* table oid */
		pktbuf_put_int16(pb, 0);	/* attnum */
		pktbuf_put_int32(pb, oid);
		pktbuf_put_int16(pb, typlen);
		pktbuf_put_int32(pb, -1);	/* typmod */
		pktbuf_put_int16(pb, 0);	/* text format */
	}
	pktbuf_finish(pb);
}

void pktbuf_data_row(PktBuf *pb, int ncols, const char *const *values)
{
	if (ncols < 0 || ncols > INT16_MAX) {
		pb->failed = true;
		return;
	}
	pktbuf_start(pb, 'D');
	pktbuf_put_int16(pb, (int16_t)ncols);
	for (int i = 0; i < ncols; i++) {
		if (!values[i]) {
			pktbuf_put_int32(pb, -1);
			continue;
		}
		size_t n = strlen(values[i]);
		if (n > (size_t)INT32_MAX) {
			pb->failed = true;
			break;
		}
		pktbuf_put_int32(pb, (int32_t)n);
		pktbuf_put_bytes(pb, values[i], n);
	}
	pktbuf_finish(pb);
}

void pktbuf_command_complete(PktBuf *pb, const char *tag)
{
	pktbuf_string_msg(pb, 'C', tag);
}

void pktbuf_empty_query(PktBuf *pb)
{
	pktbuf_empty_msg(pb, 'I');
}
