/*
 * Bearer tokens of the HTTP API (admin.token_file) and who holds them.
 *
 * The file has one token per line; "name:token" names the reviewer who
 * holds it (recorded with every decision), a bare "token" stands for the
 * reviewer "http" (a file holding a single token, the original format).
 * Blank lines and lines starting with '#' are ignored; a name is 1 to 63 of
 * [A-Za-z0-9._@-]; tokens cannot contain ':' or whitespace.
 *
 * Pure functions over text (no I/O), so they can be fuzzed: the
 * Authorization header is untrusted input.
 */
#ifndef PGMOAT_HTTP_TOKEN_H
#define PGMOAT_HTTP_TOKEN_H

#include <stdbool.h>
#include <stddef.h>

#define HTTP_REVIEWER_MAX 64		/* a name, NUL included */
#define HTTP_TOKEN_DEFAULT_REVIEWER "http"

/* "Bearer <token>" (scheme case-insensitive) against token, in constant time for the bytes. */
bool http_bearer_matches(const char *authorization, const char *token);

/*
 * The reviewer whose token authorization ("Bearer ...") presents, copied to
 * reviewer; false when no line matches. Every line is compared (no early
 * exit), each in constant time. *tokens (if not NULL) gets the number of
 * usable lines and *bad_lines the number of lines skipped as malformed, so
 * the caller can tell "no token configured" and warn about a broken file.
 */
bool http_token_lookup(const char *file_text, const char *authorization,
		       char reviewer[HTTP_REVIEWER_MAX], int *tokens, int *bad_lines);

#endif
