/* Extended-protocol message bodies (see proto_ext.h). */
#include "proto_ext.h"
#include "proto.h"

bool proto_parse_parse(const uint8_t *body, size_t len, ParseBody *out)
{
	PktReader r;
	int16_t n;

	proto_reader_init(&r, body, len);
	if (!proto_read_cstring(&r, &out->name) || !proto_read_cstring(&r, &out->query) ||
	    !proto_read_int16(&r, &n) || n < 0)
		return false;
	out->nparams = n;
	/* one int32 type OID per parameter, nothing after */
	return proto_reader_left(&r) == (size_t)n * 4;
}

/* A list of int16 format codes; any non-zero one sets *binary. */
static bool read_formats(PktReader *r, bool *binary)
{
	int16_t n, v;

	if (!proto_read_int16(r, &n) || n < 0)
		return false;
	for (int i = 0; i < n; i++) {
		if (!proto_read_int16(r, &v))
			return false;
		if (binary && v != 0)
			*binary = true;
	}
	return true;
}

bool proto_parse_bind(const uint8_t *body, size_t len, BindBody *out)
{
	PktReader r;
	int16_t n;
	int32_t vlen;
	const uint8_t *data;

	proto_reader_init(&r, body, len);
	out->binary_results = false;
	if (!proto_read_cstring(&r, &out->portal) || !proto_read_cstring(&r, &out->statement) ||
	    !read_formats(&r, NULL) || !proto_read_int16(&r, &n) || n < 0)
		return false;
	out->nparams = n;
	for (int i = 0; i < n; i++) {
		if (!proto_read_int32(&r, &vlen) || vlen < -1)
			return false;
		if (vlen > 0 && !proto_read_bytes(&r, (size_t)vlen, &data))
			return false;
	}
	return read_formats(&r, &out->binary_results) && proto_reader_left(&r) == 0;
}

bool proto_parse_target(const uint8_t *body, size_t len, TargetBody *out)
{
	PktReader r;

	proto_reader_init(&r, body, len);
	return proto_read_uint8(&r, &out->kind) && (out->kind == 'S' || out->kind == 'P') &&
	       proto_read_cstring(&r, &out->name) && proto_reader_left(&r) == 0;
}

bool proto_parse_execute(const uint8_t *body, size_t len, ExecuteBody *out)
{
	PktReader r;

	proto_reader_init(&r, body, len);
	return proto_read_cstring(&r, &out->portal) && proto_read_int32(&r, &out->max_rows) &&
	       proto_reader_left(&r) == 0;
}
