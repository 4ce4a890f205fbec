/* auth_file (userlist.txt) parsing: quoting, comments, secret kinds, errors. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "src/userlist.h"

#define MD5_SECRET "md5" "0123456789abcdef0123456789abcdef"
#define SCRAM_SECRET \
	"SCRAM-SHA-256$4096:c2FsdHNhbHQ=$c3RvcmVka2V5c3RvcmVka2V5c3RvcmVka2V5MTI=:c2VydmVya2V5c2VydmVya2V5c2VydmVya2V5MTI="

static Userlist *parse_ok(const char *text)
{
	char err[256] = "";
	Userlist *ul = userlist_parse(text, "users.txt", err, sizeof(err));
	cr_assert_not_null(ul, "unexpected error: %s", err);
	return ul;
}

static void expect_error(const char *text, const char *want)
{
	char err[256] = "";
	Userlist *ul = userlist_parse(text, "users.txt", err, sizeof(err));
	cr_assert_null(ul, "parsed a malformed file: %s", text);
	cr_assert_str_eq(err, want);
}

Test(userlist, finds_users_when_fields_are_quoted)
{
	Userlist *ul = parse_ok("\"alice\" \"secret1\"\n\"bob\"\t\"secret2\"\n");
	cr_assert_eq(ul->count, 2);
	const UserlistEntry *e = userlist_find(ul, "bob");
	cr_assert_not_null(e);
	cr_assert_str_eq(e->secret, "secret2");
	cr_assert_null(userlist_find(ul, "carol"));
	cr_assert_null(userlist_find(ul, "ALICE"));
	userlist_free(ul);
}

Test(userlist, unescapes_doubled_quotes_when_inside_a_field)
{
	Userlist *ul = parse_ok("\"we\"\"ird\" \"pa\"\"ss \"\"word\"\"\"\n");
	const UserlistEntry *e = userlist_find(ul, "we\"ird");
	cr_assert_not_null(e);
	cr_assert_str_eq(e->secret, "pa\"ss \"word\"");
	userlist_free(ul);
}

Test(userlist, ignores_comments_blank_lines_and_extra_fields)
{
	Userlist *ul = parse_ok("; comment\n# another \"x\" \"y\"\n\n   \n  ; indented\n"
				"\"u\" \"p\" \"extra\" trailing junk\r\n\"v\" \"\"");
	cr_assert_eq(ul->count, 2);
	cr_assert_str_eq(userlist_find(ul, "u")->secret, "p");
	cr_assert_str_eq(userlist_find(ul, "v")->secret, "");
	userlist_free(ul);
}

Test(userlist, keeps_last_secret_when_user_is_duplicated)
{
	Userlist *ul = parse_ok("\"a\" \"one\"\n\"b\" \"x\"\n\"a\" \"" MD5_SECRET "\"\n");
	cr_assert_eq(ul->count, 2);
	const UserlistEntry *e = userlist_find(ul, "a");
	cr_assert_str_eq(e->secret, MD5_SECRET);
	cr_assert_eq(e->kind, SECRET_MD5);
	userlist_free(ul);
}

Test(userlist, classifies_secret_kinds)
{
	Userlist *ul = parse_ok("\"p\" \"hunter2\"\n\"m\" \"" MD5_SECRET "\"\n\"s\" \"" SCRAM_SECRET "\"\n");
	cr_assert_eq(userlist_find(ul, "p")->kind, SECRET_PLAIN);
	cr_assert_eq(userlist_find(ul, "m")->kind, SECRET_MD5);
	cr_assert_eq(userlist_find(ul, "s")->kind, SECRET_SCRAM);
	userlist_free(ul);
}

Test(userlist, treats_almost_hashes_as_plain_passwords)
{
	/* 31 hex digits, non-hex digit, 33 hex digits */
	cr_assert_eq(userlist_secret_kind("md50123456789abcdef0123456789abcde"), SECRET_PLAIN);
	cr_assert_eq(userlist_secret_kind("md50123456789abcdef0123456789abcdeg"), SECRET_PLAIN);
	cr_assert_eq(userlist_secret_kind("md50123456789abcdef0123456789abcdef0"), SECRET_PLAIN);
	cr_assert_eq(userlist_secret_kind("SCRAM-SHA-256$4096:salt$stored"), SECRET_PLAIN);
	cr_assert_eq(userlist_secret_kind("SCRAM-SHA-256$x:c2FsdA==$YQ==:Yg=="), SECRET_PLAIN);
	cr_assert_eq(userlist_secret_kind("SCRAM-SHA-256$4096:c2FsdA==$YQ==:"), SECRET_PLAIN);
	cr_assert_eq(userlist_secret_kind("SCRAM-SHA-256$4096:c2FsdA==$YQ==:Yg=="), SECRET_SCRAM);
	cr_assert_eq(userlist_secret_kind(""), SECRET_PLAIN);
}

Test(userlist, reports_line_when_quote_is_unterminated)
{
	expect_error("\"a\" \"b\"\n; ok\n\"c\" \"d\n", "users.txt:3: unterminated quoted field");
}

Test(userlist, reports_line_when_field_is_not_quoted)
{
	expect_error("\"a\" \"b\"\nbob \"x\"\n", "users.txt:2: expected a double-quoted field");
	expect_error("\"a\" secret\n", "users.txt:1: expected a double-quoted field");
}

Test(userlist, reports_line_when_secret_is_missing)
{
	expect_error("\n\n\"alone\"   \n", "users.txt:3: missing secret");
}

Test(userlist, rejects_empty_user_name)
{
	expect_error("\"\" \"x\"\n", "users.txt:1: empty user name");
}

Test(userlist, rejects_overlong_user_name)
{
	char text[400];
	memset(text, 0, sizeof(text));
	text[0] = '"';
	memset(text + 1, 'u', 200);
	strcat(text, "\" \"p\"\n");
	expect_error(text, "users.txt:1: field too long");
}

Test(userlist, returns_empty_list_when_text_is_empty)
{
	Userlist *ul = parse_ok("");
	cr_assert_eq(ul->count, 0);
	cr_assert_null(userlist_find(ul, "x"));
	userlist_free(ul);
}

Test(userlist, loads_file_and_names_it_in_errors)
{
	char dir[] = "/tmp/pgmoat-ul-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	char *path = NULL;
	cr_assert(asprintf(&path, "%s/userlist.txt", dir) > 0);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("\"a\" \"" SCRAM_SECRET "\"\n\"b\" broken\n", f);
	fclose(f);

	char err[512] = "";
	cr_assert_null(userlist_load(path, err, sizeof(err)));
	char *want = NULL;
	cr_assert(asprintf(&want, "%s:2: expected a double-quoted field", path) > 0);
	cr_assert_str_eq(err, want);
	free(want);

	f = fopen(path, "w");
	fputs("\"a\" \"" SCRAM_SECRET "\"\n", f);
	fclose(f);
	Userlist *ul = userlist_load(path, err, sizeof(err));
	cr_assert_not_null(ul, "%s", err);
	cr_assert_eq(userlist_find(ul, "a")->kind, SECRET_SCRAM);
	userlist_free(ul);

	unlink(path);
	cr_assert_null(userlist_load(path, err, sizeof(err)));
	cr_assert(strstr(err, path) != NULL, "error does not name the file: %s", err);
	cr_assert(strstr(err, "No such file") != NULL, "%s", err);
	free(path);
	rmdir(dir);
}
