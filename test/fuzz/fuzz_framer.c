/*
 * libFuzzer target for the message framer and the body parsers: the input is
 * a stream of typed messages, walked with proto_frame_header; each body is
 * copied into an exact-size buffer and handed to the parser for its type.
 */
#include "proto.h"

#include <stdlib.h>
#include <string.h>

#define FUZZ_MAX_MSG (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t touch(const char *s)
{
	return s ? strlen(s) : 0;
}

static void parse_error_body(const uint8_t *b, size_t n)
{
	ErrorFields ef;
	if (proto_parse_error(b, n, &ef))
		(void)(touch(ef.severity) + touch(ef.severity_nl) + touch(ef.sqlstate) +
		       touch(ef.message) + touch(ef.detail) + touch(ef.hint));
}

/* Try every parser on every body: hostile peers send any type with any body. */
static void parse_body(uint8_t type, const uint8_t *b, size_t n)
{
	const char *s1, *s2;
	uint32_t pid, key;
	AuthRequest ar;
	const uint8_t *d;
	size_t dl;
	volatile uint8_t sink = 0;

	(void)proto_msg_name(type, true);
	(void)proto_msg_name(type, false);
	parse_error_body(b, n);
	if (proto_parse_param_status(b, n, &s1, &s2))
		(void)(touch(s1) + touch(s2));
	(void)proto_parse_backend_key(b, n, &pid, &key);
	if (proto_parse_auth_request(b, n, &ar))
		for (size_t i = 0; i < ar.data_len; i++)
			sink ^= ar.data[i];
	if (proto_parse_sasl_initial(b, n, &s1, &d, &dl)) {
		(void)touch(s1);
		for (size_t i = 0; i < dl; i++)
			sink ^= d[i];
	}
	(void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	MsgHeader h;

	/* Bounded: every iteration consumes at least PROTO_HEADER_LEN bytes. */
	while (proto_frame_header(data + off, size - off, FUZZ_MAX_MSG, &h) == FRAME_OK) {
		if (h.len < 4 || h.len > FUZZ_MAX_MSG)
			abort();	/* the framer let a bad length through */
		if (proto_msg_total(&h) > size - off)
			break;
		size_t blen = h.len - 4;
		uint8_t *body = malloc(blen ? blen : 1);
		memcpy(body, data + off + PROTO_HEADER_LEN, blen);
		parse_body(h.type, body, blen);
		free(body);
		off += proto_msg_total(&h);
	}
	return 0;
}
