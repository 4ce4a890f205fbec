/* The admin console's grammar (admin_parse.c): pgbouncer's commands, SET, and DENY with a reason. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "src/admin_parse.h"

typedef struct {
	const char *sql;
	ParseResult result;
	const char *first;	/* cmd, key or id, when PARSE_OK */
	const char *second;	/* arg, val or reason, when PARSE_OK */
} Case;

static const Case command_cases[] = {
	{ "SHOW POOLS", PARSE_OK, "SHOW", "POOLS" },
	{ "  show\tclients ;  ", PARSE_OK, "show", "clients" },
	{ "RELOAD;", PARSE_OK, "RELOAD", "" },
	{ "PAUSE \"my \"\"db\"\"\"", PARSE_OK, "PAUSE", "my \"db\"" },
	{ "kill_client 0x55d0c0ffee", PARSE_OK, "kill_client", "0x55d0c0ffee" },
	{ "SHOW POOLS extra", PARSE_NO_MATCH, NULL, NULL },
	{ "SHOW POOLS;;", PARSE_NO_MATCH, NULL, NULL },
	{ "PAUSE \"unterminated", PARSE_NO_MATCH, NULL, NULL },
	{ "SET a = 1", PARSE_NO_MATCH, NULL, NULL },
	{ "", PARSE_NO_MATCH, NULL, NULL },
	{ "a_command_of_16c", PARSE_TOO_LONG, NULL, NULL },
	{ "a_command_of_15", PARSE_OK, "a_command_of_15", "" },
};

static const Case set_cases[] = {
	{ "SET default_pool_size = 5", PARSE_OK, "default_pool_size", "5" },
	{ "set verbose to 2;", PARSE_OK, "verbose", "2" },
	{ "SET server_reset_query='DISCARD ALL; it''s'", PARSE_OK, "server_reset_query",
	  "DISCARD ALL; it's" },
	{ "SET \"\" = 1", PARSE_TOO_LONG, NULL, NULL },	/* pgbouncer: bad arguments */
	{ "SET a 1", PARSE_NO_MATCH, NULL, NULL },
	{ "SET a = 'open", PARSE_NO_MATCH, NULL, NULL },
	{ "SETa = 1", PARSE_NO_MATCH, NULL, NULL },
};

static const Case deny_cases[] = {
	{ "DENY 12", PARSE_OK, "12", "" },
	{ "deny 12 too risky ;", PARSE_OK, "12", "too risky" },
	{ "DENY 7 'no; never'", PARSE_OK, "7", "no; never" },
	{ "DENY 7 'no' more", PARSE_NO_MATCH, NULL, NULL },
	{ "DENY", PARSE_NO_MATCH, NULL, NULL },	/* then a plain command: "DENY needs an id" */
	{ "DENYING 1", PARSE_NO_MATCH, NULL, NULL },
};

typedef ParseResult (*Parser)(const char *sql, char *first, char *second);

static void run_cases(Parser parse, const Case *cases, size_t n, size_t first_size)
{
	for (size_t i = 0; i < n; i++) {
		char first[ADMIN_VAL_MAX], second[ADMIN_VAL_MAX];
		ParseResult r = parse(cases[i].sql, first, second);
		cr_expect_eq(r, cases[i].result, "%s: %d, want %d", cases[i].sql, r, cases[i].result);
		if (r != PARSE_OK || cases[i].result != PARSE_OK)
			continue;
		cr_expect_lt(strlen(first), first_size, "%s", cases[i].sql);
		cr_expect_str_eq(first, cases[i].first, "%s", cases[i].sql);
		cr_expect_str_eq(second, cases[i].second, "%s", cases[i].sql);
	}
}

Test(admin_parse, command_is_a_word_and_an_optional_argument)
{
	run_cases(admin_parse_command, command_cases, sizeof(command_cases) / sizeof(command_cases[0]),
		  ADMIN_CMD_MAX);
}

Test(admin_parse, set_takes_a_word_or_a_quoted_string)
{
	run_cases(admin_parse_set, set_cases, sizeof(set_cases) / sizeof(set_cases[0]), ADMIN_ARG_MAX);
}

Test(admin_parse, deny_takes_a_reason_of_several_words)
{
	run_cases(admin_parse_deny, deny_cases, sizeof(deny_cases) / sizeof(deny_cases[0]), ADMIN_ARG_MAX);
}

Test(admin_parse, parts_longer_than_their_buffer_are_too_long)
{
	char sql[600], first[ADMIN_VAL_MAX], second[ADMIN_VAL_MAX];

	snprintf(sql, sizeof(sql), "PAUSE %0*d", ADMIN_ARG_MAX, 0);
	cr_expect_eq(admin_parse_command(sql, first, second), PARSE_TOO_LONG);
	snprintf(sql, sizeof(sql), "SET a = '%0*d'", ADMIN_VAL_MAX, 0);
	cr_expect_eq(admin_parse_set(sql, first, second), PARSE_TOO_LONG);
	snprintf(sql, sizeof(sql), "DENY 1 %0*d", ADMIN_VAL_MAX, 0);
	cr_expect_eq(admin_parse_deny(sql, first, second), PARSE_TOO_LONG);
	snprintf(sql, sizeof(sql), "PAUSE %0*d", ADMIN_ARG_MAX - 1, 0);
	cr_expect_eq(admin_parse_command(sql, first, second), PARSE_OK);
}
