/*
 * libFuzzer target for the PROXY protocol v1/v2 header parser: every mode,
 * on an exact-size copy so a read past the input is caught; a complete
 * header never claims more bytes than it was given.
 */
#include "proxyproto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const ProxyMode modes[] = { PROXYPROTO_V1, PROXYPROTO_V2, PROXYPROTO_ANY };
	uint8_t *buf = malloc(size ? size : 1);
	memcpy(buf, data, size);
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		ProxyHeader h;
		const char *err;
		ProxyResult r = proxyproto_parse(buf, size, modes[i], &h, &err);
		if (r == PROXYPROTO_OK && (h.consumed == 0 || h.consumed > size))
			abort();
		if (r == PROXYPROTO_BAD && !err)
			abort();
		if (r == PROXYPROTO_OK && (strlen(h.src_host) >= sizeof(h.src_host) ||
					   strlen(h.dst_host) >= sizeof(h.dst_host)))
			abort();
	}
	free(buf);
	return 0;
}
