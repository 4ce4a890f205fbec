/* auth_hba_file (pg_hba.conf) parsing and matching: types, lists, addresses, errors. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "src/hba.h"

static Hba *parse_ok(const char *text)
{
	char err[512] = "";
	Hba *hba = hba_parse(text, "hba.conf", err, sizeof(err));
	cr_assert_not_null(hba, "unexpected error: %s", err);
	return hba;
}

static void expect_error(const char *text, const char *want_substring)
{
	char err[512] = "";
	Hba *hba = hba_parse(text, "hba.conf", err, sizeof(err));
	cr_assert_null(hba, "accepted a bad file: %s", text);
	cr_assert(strstr(err, want_substring), "error '%s' lacks '%s'", err, want_substring);
}

/* The method of the matching rule, or -1 when none matches. */
static int method_for(const Hba *hba, bool is_unix, bool tls, const char *addr,
		      const char *db, const char *user)
{
	HbaConn c = { .is_unix = is_unix, .tls = tls, .addr = addr, .database = db, .user = user };
	const HbaRule *r = hba_match(hba, &c);
	return r ? (int)r->method : -1;
}

Test(hba, first_matching_line_decides_when_several_match)
{
	Hba *hba = parse_ok("# comment\n"
			    "host app alice 127.0.0.1/32 reject\n"
			    "host all all 127.0.0.0/8 scram-sha-256  # trailing comment\n"
			    "host all all 0.0.0.0/0 md5\n");
	cr_assert_eq(hba->count, 3);
	cr_assert_eq(method_for(hba, false, false, "127.0.0.1", "app", "alice"), HBA_REJECT);
	cr_assert_eq(method_for(hba, false, false, "127.0.0.1", "app", "bob"), HBA_SCRAM);
	cr_assert_eq(method_for(hba, false, false, "10.1.2.3", "app", "alice"), HBA_MD5);
	hba_free(hba);
}

Test(hba, no_line_matches_when_nothing_covers_the_connection)
{
	Hba *hba = parse_ok("host app all 10.0.0.0/8 trust\n");
	cr_assert_eq(method_for(hba, false, false, "127.0.0.1", "app", "x"), -1);
	cr_assert_eq(method_for(hba, false, false, "10.9.9.9", "other", "x"), -1);
	cr_assert_eq(method_for(hba, true, false, NULL, "app", "x"), -1);
	cr_assert_eq(method_for(hba, false, false, "10.9.9.9", "app", "x"), HBA_TRUST);
	hba_free(hba);
}

Test(hba, local_matches_only_unix_sockets)
{
	Hba *hba = parse_ok("local all all trust\nhost all all all reject\n");
	cr_assert_eq(method_for(hba, true, false, NULL, "db", "u"), HBA_TRUST);
	cr_assert_eq(method_for(hba, false, false, "127.0.0.1", "db", "u"), HBA_REJECT);
	hba_free(hba);
}

Test(hba, hostssl_and_hostnossl_follow_the_tls_state)
{
	Hba *hba = parse_ok("hostssl all all all cert\nhostnossl all all all password\n");
	cr_assert_eq(method_for(hba, false, true, "127.0.0.1", "db", "u"), HBA_CERT);
	cr_assert_eq(method_for(hba, false, false, "127.0.0.1", "db", "u"), HBA_PASSWORD);
	cr_assert_eq(method_for(hba, true, false, NULL, "db", "u"), -1);
	hba_free(hba);
}

Test(hba, lists_sameuser_and_quoted_names_match_as_postgresql)
{
	Hba *hba = parse_ok("host a,b, c  u1,u2 all trust\n"
			    "host sameuser all all md5\n"
			    "host \"all\" \"x,y\" all password\n"
			    "host replication all all reject\n");
	cr_assert_eq(method_for(hba, false, false, "::1", "c", "u2"), HBA_TRUST);
	cr_assert_eq(method_for(hba, false, false, "::1", "b", "u3"), -1);
	cr_assert_eq(method_for(hba, false, false, "::1", "zed", "zed"), HBA_MD5);
	/* quoted "all" is a database literally named all */
	cr_assert_eq(method_for(hba, false, false, "::1", "all", "x,y"), HBA_PASSWORD);
	cr_assert_eq(method_for(hba, false, false, "::1", "other", "x,y"), -1);
	hba_free(hba);
}

Test(hba, names_are_case_sensitive)
{
	Hba *hba = parse_ok("host App Alice all trust\n");
	cr_assert_eq(method_for(hba, false, false, "127.0.0.1", "App", "Alice"), HBA_TRUST);
	cr_assert_eq(method_for(hba, false, false, "127.0.0.1", "app", "alice"), -1);
	hba_free(hba);
}

Test(hba, address_and_separate_mask_work_like_cidr)
{
	Hba *hba = parse_ok("host all all 192.168.1.77 255.255.255.0 trust\n"
			    "host all all ::1/128 md5\n"
			    "host all all fe80::/10 password\n");
	cr_assert_eq(method_for(hba, false, false, "192.168.1.200", "d", "u"), HBA_TRUST);
	cr_assert_eq(method_for(hba, false, false, "192.168.2.1", "d", "u"), -1);
	cr_assert_eq(method_for(hba, false, false, "::1", "d", "u"), HBA_MD5);
	cr_assert_eq(method_for(hba, false, false, "::2", "d", "u"), -1);
	cr_assert_eq(method_for(hba, false, false, "fe80::1234", "d", "u"), HBA_PASSWORD);
	hba_free(hba);
}

Test(hba, ipv4_mapped_ipv6_clients_match_ipv4_rules)
{
	Hba *hba = parse_ok("host all all 127.0.0.0/8 trust\n");
	cr_assert_eq(method_for(hba, false, false, "::ffff:127.0.0.5", "d", "u"), HBA_TRUST);
	cr_assert_eq(method_for(hba, false, false, "::ffff:10.0.0.5", "d", "u"), -1);
	hba_free(hba);
}

Test(hba, zero_prefix_matches_every_address_of_the_family)
{
	Hba *hba = parse_ok("host all all 0.0.0.0/0 trust\n");
	cr_assert_eq(method_for(hba, false, false, "203.0.113.9", "d", "u"), HBA_TRUST);
	cr_assert_eq(method_for(hba, false, false, "2001:db8::1", "d", "u"), -1);
	cr_assert_eq(method_for(hba, false, false, "not-an-address", "d", "u"), -1);
	hba_free(hba);
}

Test(hba, crlf_and_blank_lines_are_accepted)
{
	Hba *hba = parse_ok("\r\n   \n\thost all all all trust\r\n#x\n");
	cr_assert_eq(hba->count, 1);
	cr_assert_eq(hba->rules->line, 3);
	hba_free(hba);
}

Test(hba, errors_name_the_line_when_input_is_malformed)
{
	expect_error("host all all all trust\nbogus all all all trust\n",
		     "hba.conf:2: unsupported connection type \"bogus\"");
	expect_error("host all all 127.0.0.1/33 trust\n", "invalid CIDR mask");
	expect_error("host all all 127.0.0.1/ trust\n", "invalid CIDR mask");
	expect_error("host all all 127.0.0.1 trust\n", "invalid IP mask");
	expect_error("host all all 127.0.0.1 255.0.0.0\n", "end-of-line before authentication method");
	expect_error("host all all ::1 255.255.255.255 trust\n", "invalid IP mask");
	expect_error("host all all db.example.com trust\n", "host names are not supported");
	expect_error("host all all samenet trust\n", "unsupported address");
	expect_error("host all all all\n", "missing fields");
	expect_error("local all all\n", "missing fields");
	expect_error("host all all all ident\n", "unsupported authentication method");
	expect_error("host all all all md5 clientcert=verify-full\n", "options are not supported");
	expect_error("host @dbs.txt all all trust\n", "unsupported database");
	expect_error("host all +admins all trust\n", "unsupported user");
	expect_error("host samerole all all trust\n", "unsupported database");
	expect_error("host \"unterminated all all trust\n", "unterminated quoted name");
	expect_error("host a,,b all all trust\n", "empty item");
	expect_error("host all all all,all trust\n", "single value");
	expect_error("hostgssenc all all all trust\n", "unsupported connection type");
}

Test(hba, overlong_names_are_refused)
{
	char line[600];
	memset(line, 'x', sizeof(line));
	memcpy(line, "host ", 5);
	strcpy(line + 500, " all all trust\n");
	expect_error(line, "name too long");
}

Test(hba, reading_a_missing_file_reports_the_path)
{
	char err[512] = "";
	cr_assert_null(hba_load("/nonexistent/pgmoat-hba.conf", err, sizeof(err)));
	cr_assert(strstr(err, "/nonexistent/pgmoat-hba.conf"), "%s", err);
}
