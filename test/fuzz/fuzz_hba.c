/*
 * libFuzzer target for the auth_hba_file parser and matcher. The input is
 * the file text; when it parses, a few fixed connections are matched
 * against the rules (unix, IPv4, IPv6, IPv4-mapped, TLS on and off).
 */
#include "hba.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const HbaConn conns[] = {
		{ .is_unix = true, .database = "app", .user = "alice" },
		{ .addr = "127.0.0.1", .database = "app", .user = "app" },
		{ .addr = "::1", .tls = true, .database = "all", .user = "bob" },
		{ .addr = "::ffff:10.1.2.3", .database = "pgbouncer", .user = "admin" },
		{ .addr = "garbage", .database = "x", .user = "y" },
	};
	char *text = malloc(size + 1);
	char err[256];
	Hba *hba;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	hba = hba_parse(text, "fuzz", err, sizeof(err));
	if (hba) {
		for (size_t i = 0; i < sizeof(conns) / sizeof(conns[0]); i++)
			(void)hba_match(hba, &conns[i]);
		hba_free(hba);
	}
	free(text);
	return 0;
}
