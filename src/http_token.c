/*
 * The admin token file: which bearer token belongs to which reviewer.
 * See http_token.h for the format.
 */
#include "http_token.h"
#include "util.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static const char bearer_scheme[] = "Bearer ";

/* The token part of an Authorization header value, or NULL if it is not a bearer one. */
static const char *bearer_given(const char *authorization)
{
	if (!authorization || strncasecmp(authorization, bearer_scheme, sizeof(bearer_scheme) - 1) != 0)
		return NULL;
	return authorization + sizeof(bearer_scheme) - 1;
}

/* given (NUL-terminated) equals token[0..tlen); length is not secret, the bytes are. */
static bool token_equal(const char *given, const char *token, size_t tlen)
{
	return tlen > 0 && strlen(given) == tlen && util_secure_equal(given, token, tlen);
}

bool http_bearer_matches(const char *authorization, const char *token)
{
	const char *given = bearer_given(authorization);
	return given && token && token_equal(given, token, strlen(token));
}

static bool reviewer_char(char ch)
{
	return isalnum((unsigned char)ch) || ch == '.' || ch == '_' || ch == '@' || ch == '-';
}

static bool valid_reviewer(const char *s, size_t len)
{
	if (len == 0 || len >= HTTP_REVIEWER_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!reviewer_char(s[i]))
			return false;
	return true;
}

static bool token_char(char ch)
{
	return (unsigned char)ch > ' ' && ch != ':' && ch != 0x7f;
}

/* [*s, *e) without surrounding blanks. */
static void trim(const char **s, const char **e)
{
	while (*s < *e && isspace((unsigned char)**s))
		(*s)++;
	while (*e > *s && isspace((unsigned char)(*e)[-1]))
		(*e)--;
}

typedef struct TokenLine {
	const char *name;	/* NULL: the default reviewer */
	size_t name_len;
	const char *token;
	size_t token_len;
} TokenLine;

/* Split one line (blanks trimmed, not empty, not a comment); false when malformed. */
static bool parse_token_line(const char *s, const char *e, TokenLine *out)
{
	const char *colon = memchr(s, ':', (size_t)(e - s));
	const char *tok = s;

	out->name = NULL;
	out->name_len = 0;
	if (colon) {
		const char *ne = colon;
		trim(&s, &ne);
		if (!valid_reviewer(s, (size_t)(ne - s)))
			return false;
		out->name = s;
		out->name_len = (size_t)(ne - s);
		tok = colon + 1;
		trim(&tok, &e);
	}
	if (tok == e)
		return false;
	for (const char *p = tok; p < e; p++)
		if (!token_char(*p))
			return false;
	out->token = tok;
	out->token_len = (size_t)(e - tok);
	return true;
}

bool http_token_lookup(const char *file_text, const char *authorization,
		       char reviewer[HTTP_REVIEWER_MAX], int *tokens, int *bad_lines)
{
	const char *given = bearer_given(authorization);
	int usable = 0, bad = 0;
	bool found = false;

	reviewer[0] = '\0';
	for (const char *line = file_text; line && *line;) {
		const char *nl = strchr(line, '\n');
		const char *end = nl ? nl : line + strlen(line);
		const char *s = line, *e = end;
		TokenLine tl;

		line = nl ? nl + 1 : end;
		trim(&s, &e);
		if (s == e || *s == '#')
			continue;
		if (!parse_token_line(s, e, &tl)) {
			bad++;
			continue;
		}
		usable++;
		/* No early exit: every token is compared whether or not one matched. */
		if (given && token_equal(given, tl.token, tl.token_len) && !found) {
			found = true;
			if (tl.name) {
				memcpy(reviewer, tl.name, tl.name_len);
				reviewer[tl.name_len] = '\0';
			} else {
				strcpy(reviewer, HTTP_TOKEN_DEFAULT_REVIEWER);
			}
		}
	}
	if (tokens)
		*tokens = usable;
	if (bad_lines)
		*bad_lines = bad;
	return found;
}
