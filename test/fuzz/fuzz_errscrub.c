/*
 * libFuzzer target for the error/notice scrubber (masking). The input is a
 * server's ErrorResponse/NoticeResponse body, first byte choosing E or N.
 * errscrub_build must never read out of bounds; on success the result must be
 * one well-formed message whose fields exclude detail, hint, context and
 * internal query, and whose message field keeps no quoted text; on failure
 * nothing may be left in the buffer.
 */
#include "errscrub.h"
#include "proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_message(const char *m)
{
	bool quoted = false;
	for (const char *p = m; *p; p++) {
		if (*p == '"') {
			if (!quoted && strncmp(p, "\"***\"", 5) != 0)
				abort();	/* a quote must open exactly "***" */
			quoted = !quoted;
		}
	}
	if (quoted)
		abort();
}

static void check_output(uint8_t type, const PktBuf *pb)
{
	PktReader r;
	if (pb->len < PROTO_HEADER_LEN || pb->data[0] != type)
		abort();
	proto_reader_init(&r, pb->data + PROTO_HEADER_LEN, pb->len - PROTO_HEADER_LEN);
	for (;;) {
		uint8_t code;
		const char *val;
		if (!proto_read_uint8(&r, &code))
			abort();
		if (code == 0)
			break;
		if (!proto_read_cstring(&r, &val) || strchr("DHWqp", code))
			abort();
		if (code == 'M')
			check_message(val);
	}
	if (proto_reader_left(&r) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t type = (data[0] & 1) ? 'E' : 'N';
	PktBuf pb;
	pktbuf_init(&pb);
	if (errscrub_build(type, data + 1, size - 1, &pb))
		check_output(type, &pb);
	else if (pb.len != 0)
		abort();
	pktbuf_free(&pb);
	return 0;
}
