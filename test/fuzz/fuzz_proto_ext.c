/*
 * libFuzzer target for the extended-protocol message bodies (proto_ext.c):
 * the first byte picks Parse, Bind, Describe/Close or Execute, the rest is
 * the body, copied to an exact-size buffer so over-reads are caught.
 */
#include "proto_ext.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ParseBody p;
	BindBody b;
	TargetBody t;
	ExecuteBody e;
	uint8_t *body;
	size_t n;

	if (size < 1)
		return 0;
	n = size - 1;
	body = malloc(n ? n : 1);
	if (!body)
		return 0;
	memcpy(body, data + 1, n);
	switch (data[0] % 4) {
	case 0:
		if (proto_parse_parse(body, n, &p) && strlen(p.name) + strlen(p.query) > n)
			abort();
		break;
	case 1:
		if (proto_parse_bind(body, n, &b) && (b.nparams < 0 || strlen(b.portal) > n))
			abort();
		break;
	case 2:
		if (proto_parse_target(body, n, &t) && t.kind != 'S' && t.kind != 'P')
			abort();
		break;
	default:
		if (proto_parse_execute(body, n, &e) && strlen(e.portal) >= n)
			abort();
		break;
	}
	free(body);
	return 0;
}
