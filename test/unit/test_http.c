/* The bearer-token checks of HTTP routes (admin.token_file: constant-time compare, reviewer names). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "../../src/pgmoat.h"
#include "../../src/http.h"

Moat *moat;	/* main.c's, which unit tests do not link */

Test(http, bearer_matches_only_the_exact_token)
{
	cr_expect(http_bearer_matches("Bearer s3cret-token", "s3cret-token"));
	cr_expect(http_bearer_matches("bearer s3cret-token", "s3cret-token"));
	cr_expect_not(http_bearer_matches("Bearer s3cret-tokeN", "s3cret-token"));
	cr_expect_not(http_bearer_matches("Bearer s3cret-token2", "s3cret-token"));
	cr_expect_not(http_bearer_matches("Bearer s3cret", "s3cret-token"));
	cr_expect_not(http_bearer_matches("Basic s3cret-token", "s3cret-token"));
	cr_expect_not(http_bearer_matches("Bearer ", ""));
	cr_expect_not(http_bearer_matches("Bearers3cret-token", "s3cret-token"));
	cr_expect_not(http_bearer_matches(NULL, "s3cret-token"));
	cr_expect_not(http_bearer_matches("Bearer x", NULL));
}

static bool check_with(const char *token_file, const char *authorization)
{
	struct evhttp_request *req = evhttp_request_new(NULL, NULL);
	cr_assert_not_null(req);
	if (authorization)
		evhttp_add_header(evhttp_request_get_input_headers(req), "Authorization", authorization);
	Config cfg = { .admin_token_file = (char *)token_file };
	Moat m = { .cfg = &cfg };
	moat = &m;
	bool ok = http_check_bearer(req);
	moat = NULL;
	evhttp_request_free(req);
	return ok;
}

Test(http, check_bearer_reads_the_token_file_each_time)
{
	char path[] = "/tmp/pgmoat-token-XXXXXX";
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, "first\n", 6), 6);
	close(fd);
	cr_expect(check_with(path, "Bearer first"));
	cr_expect_not(check_with(path, "Bearer second"));
	cr_expect_not(check_with(path, NULL));
	FILE *f = fopen(path, "w");
	fputs("second\n", f);
	fclose(f);
	cr_expect(check_with(path, "Bearer second"));
	cr_expect_not(check_with(path, "Bearer first"));
	unlink(path);
	cr_expect_not(check_with(path, "Bearer second"));	/* unreadable: refused */
	cr_expect_not(check_with(NULL, "Bearer second"));	/* none configured: refused */
}

/* ---- the token file with reviewer names (approvals API) ------------------ */

static bool lookup(const char *file, const char *authorization, char *who, int *tokens, int *bad)
{
	return http_token_lookup(file, authorization, who, tokens, bad);
}

Test(http_token, names_the_reviewer_of_the_matching_line)
{
	const char *file = "# reviewers\n\nalice:tok-a\n  bob : tok-b  \r\nplain-token\n";
	char who[HTTP_REVIEWER_MAX];
	int tokens, bad;

	cr_assert(lookup(file, "Bearer tok-a", who, &tokens, &bad));
	cr_expect_str_eq(who, "alice");
	cr_expect_eq(tokens, 3);
	cr_expect_eq(bad, 0);
	cr_assert(lookup(file, "bearer tok-b", who, NULL, NULL));
	cr_expect_str_eq(who, "bob");
	cr_assert(lookup(file, "Bearer plain-token", who, NULL, NULL));
	cr_expect_str_eq(who, HTTP_TOKEN_DEFAULT_REVIEWER);
}

Test(http_token, refuses_what_is_not_exactly_a_token)
{
	const char *file = "alice:tok-a\n";
	const char *no[] = { "Bearer tok-", "Bearer tok-a ", "Bearer tok-aa", "Bearer alice",
			     "Bearer alice:tok-a", "Bearer ", "Basic tok-a", "tok-a", "" };
	char who[HTTP_REVIEWER_MAX];

	for (size_t i = 0; i < ARRAY_SIZE(no); i++) {
		cr_expect_not(lookup(file, no[i], who, NULL, NULL), "%s", no[i]);
		cr_expect_str_empty(who);
	}
	cr_expect_not(lookup(file, NULL, who, NULL, NULL));
	cr_expect_not(lookup(NULL, "Bearer tok-a", who, NULL, NULL));
}

Test(http_token, the_first_matching_line_wins)
{
	char who[HTTP_REVIEWER_MAX];
	cr_assert(lookup("carol:same\ndave:same\n", "Bearer same", who, NULL, NULL));
	cr_expect_str_eq(who, "carol");
}

Test(http_token, malformed_lines_are_counted_and_never_match)
{
	const char *file = "bad name:t1\n:t2\nname:\nok:t3 t4\nx:a:b\n"
			   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:t5\n"
			   "\x01ctl\n# comment:t6\n";
	const char *tried[] = { "Bearer t1", "Bearer t2", "Bearer t3 t4", "Bearer a:b",
				"Bearer b", "Bearer t5", "Bearer \x01ctl", "Bearer t6" };
	char who[HTTP_REVIEWER_MAX];
	int tokens = -1, bad = -1;

	for (size_t i = 0; i < ARRAY_SIZE(tried); i++)
		cr_expect_not(lookup(file, tried[i], who, &tokens, &bad), "%s", tried[i]);
	cr_expect_eq(tokens, 0);
	cr_expect_eq(bad, 7);
	cr_expect_not(lookup("", "Bearer x", who, &tokens, &bad));
	cr_expect_eq(tokens, 0);
	cr_expect_eq(bad, 0);
}

Test(http_token, a_name_of_63_characters_is_the_longest)
{
	char file[128], who[HTTP_REVIEWER_MAX];
	memset(file, 'n', 63);
	strcpy(file + 63, ":tok\n");
	cr_assert(lookup(file, "Bearer tok", who, NULL, NULL));
	cr_expect_eq(strlen(who), 63);
}

static HttpAuth authenticate_with(const char *token_file, const char *authorization, char *who)
{
	struct evhttp_request *req = evhttp_request_new(NULL, NULL);
	cr_assert_not_null(req);
	if (authorization)
		evhttp_add_header(evhttp_request_get_input_headers(req), "Authorization", authorization);
	Config cfg = { .admin_token_file = (char *)token_file };
	Moat m = { .cfg = &cfg };
	moat = &m;
	HttpAuth a = http_authenticate(req, who);
	moat = NULL;
	evhttp_request_free(req);
	return a;
}

Test(http_token, authenticate_tells_unconfigured_from_denied)
{
	char path[] = "/tmp/pgmoat-token-XXXXXX", who[HTTP_REVIEWER_MAX];
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, "alice:tok-a\n", 12), 12);
	close(fd);
	cr_expect_eq(authenticate_with(path, "Bearer tok-a", who), HTTP_AUTH_OK);
	cr_expect_str_eq(who, "alice");
	cr_expect_eq(authenticate_with(path, "Bearer nope", who), HTTP_AUTH_DENIED);
	cr_expect_eq(authenticate_with(path, NULL, who), HTTP_AUTH_DENIED);
	FILE *f = fopen(path, "w");
	fputs("# nothing usable\nbad name:x\n", f);
	fclose(f);
	cr_expect_eq(authenticate_with(path, "Bearer x", who), HTTP_AUTH_UNCONFIGURED);
	unlink(path);
	cr_expect_eq(authenticate_with(path, "Bearer tok-a", who), HTTP_AUTH_UNCONFIGURED);
	cr_expect_eq(authenticate_with(NULL, "Bearer tok-a", who), HTTP_AUTH_UNCONFIGURED);
	cr_expect_eq(authenticate_with("", "Bearer tok-a", who), HTTP_AUTH_UNCONFIGURED);
}
