/*
 * libFuzzer target for the admin console's grammar (admin_parse.c): any
 * text a console user sends. Each part is written into a heap buffer of
 * exactly its documented size, so a write past it is an ASan report; a part
 * the parser accepts must be NUL-terminated inside its buffer.
 */
#include "admin_parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_part(const char *part, size_t size)
{
	if (strnlen(part, size) >= size)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *sql = malloc(size + 1);
	char *cmd = malloc(ADMIN_CMD_MAX);
	char *arg = malloc(ADMIN_ARG_MAX);
	char *val = malloc(ADMIN_VAL_MAX);

	if (!sql || !cmd || !arg || !val)
		goto out;
	memcpy(sql, data, size);
	sql[size] = '\0';
	if (admin_parse_command(sql, cmd, arg) == PARSE_OK) {
		check_part(cmd, ADMIN_CMD_MAX);
		check_part(arg, ADMIN_ARG_MAX);
	}
	if (admin_parse_set(sql, arg, val) == PARSE_OK) {
		check_part(arg, ADMIN_ARG_MAX);
		check_part(val, ADMIN_VAL_MAX);
	}
	if (admin_parse_deny(sql, arg, val) == PARSE_OK) {
		check_part(arg, ADMIN_ARG_MAX);
		check_part(val, ADMIN_VAL_MAX);
	}
out:
	free(sql);
	free(cmd);
	free(arg);
	free(val);
	return 0;
}
