/* The bearer-token check other HTTP routes rely on (admin.token_file, constant-time compare). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
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
