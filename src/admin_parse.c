/*
 * The admin console's grammar (pgbouncer's, case-insensitive, one statement
 * per query); see admin_parse.h. Pure functions of the text: the fuzz target
 * fuzz_admin_parse runs them on anything.
 */
#include "admin_parse.h"

#include <string.h>
#include <strings.h>

static bool parse_is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static bool parse_is_word_char(char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

/* Skip blanks; true when there was at least one. */
static bool parse_space(const char **p)
{
	const char *start = *p;

	while (parse_is_space(**p))
		(*p)++;
	return *p != start;
}

/* A quoted token: quote ... quote, the quote doubled inside stands for itself. */
static ParseResult parse_quoted(const char **p, char quote, char *out, size_t outsz)
{
	const char *s = *p + 1;
	size_t n = 0;

	for (;;) {
		if (*s == '\0')
			return PARSE_NO_MATCH;
		if (*s == quote && s[1] != quote)
			break;
		if (*s == quote)
			s++;
		if (n + 1 >= outsz)
			return PARSE_TOO_LONG;
		out[n++] = *s++;
	}
	out[n] = '\0';
	*p = s + 1;
	return PARSE_OK;
}

/* WORD: [0-9A-Za-z_]+ or "quoted". */
static ParseResult parse_word(const char **p, char *out, size_t outsz)
{
	size_t n = 0;

	if (**p == '"')
		return parse_quoted(p, '"', out, outsz);
	while (parse_is_word_char((*p)[n]))
		n++;
	if (n == 0)
		return PARSE_NO_MATCH;
	if (n >= outsz)
		return PARSE_TOO_LONG;
	memcpy(out, *p, n);
	out[n] = '\0';
	*p += n;
	return PARSE_OK;
}

/* Optional blanks, one optional ';' with blanks, then the end. */
static bool parse_end(const char *p)
{
	parse_space(&p);
	if (*p == ';') {
		p++;
		parse_space(&p);
	}
	return *p == '\0';
}

/* Case-insensitive keyword (what follows is checked by the caller's grammar). */
static bool parse_keyword(const char **p, const char *kw)
{
	size_t n = strlen(kw);

	if (strncasecmp(*p, kw, n) != 0)
		return false;
	*p += n;
	return true;
}

/* CMD [ARG] [;] */
ParseResult admin_parse_command(const char *sql, char *cmd, char *arg)
{
	const char *p = sql;
	ParseResult r;

	arg[0] = '\0';
	parse_space(&p);
	r = parse_word(&p, cmd, ADMIN_CMD_MAX);
	if (r != PARSE_OK)
		return r;
	if (parse_space(&p) && (parse_is_word_char(*p) || *p == '"')) {
		r = parse_word(&p, arg, ADMIN_ARG_MAX);
		if (r != PARSE_OK)
			return r;
	}
	return parse_end(p) ? PARSE_OK : PARSE_NO_MATCH;
}

/* SET KEY (=|TO) (WORD|'string') [;] */
ParseResult admin_parse_set(const char *sql, char *key, char *val)
{
	const char *p = sql;
	ParseResult r;

	parse_space(&p);
	if (!parse_keyword(&p, "set") || !parse_space(&p))
		return PARSE_NO_MATCH;
	r = parse_word(&p, key, ADMIN_ARG_MAX);
	if (r != PARSE_OK)
		return r;
	parse_space(&p);
	if (!parse_keyword(&p, "=") && !parse_keyword(&p, "to"))
		return PARSE_NO_MATCH;
	parse_space(&p);
	if (*p == '\'')
		r = parse_quoted(&p, '\'', val, ADMIN_VAL_MAX);
	else
		r = parse_word(&p, val, ADMIN_VAL_MAX);
	if (r != PARSE_OK)
		return r;
	if (!key[0])
		return PARSE_TOO_LONG;	/* pgbouncer: an empty key is a bad argument */
	return parse_end(p) ? PARSE_OK : PARSE_NO_MATCH;
}

/* DENY ID (WORD...|'string') [;]: the reason may be several words (pgmoat addition). */
ParseResult admin_parse_deny(const char *sql, char *id, char *reason)
{
	const char *p = sql;
	ParseResult r;
	size_t n;

	reason[0] = '\0';
	parse_space(&p);
	if (!parse_keyword(&p, "deny") || !parse_space(&p))
		return PARSE_NO_MATCH;
	r = parse_word(&p, id, ADMIN_ARG_MAX);
	if (r != PARSE_OK || !parse_space(&p))
		return r != PARSE_OK ? r : parse_end(p) ? PARSE_OK : PARSE_NO_MATCH;
	if (*p == '\'')
		return parse_quoted(&p, '\'', reason, ADMIN_VAL_MAX) == PARSE_OK && parse_end(p)
		       ? PARSE_OK : PARSE_NO_MATCH;
	n = strlen(p);
	while (n > 0 && (parse_is_space(p[n - 1]) || p[n - 1] == ';'))
		n--;
	if (n >= ADMIN_VAL_MAX)
		return PARSE_TOO_LONG;
	memcpy(reason, p, n);
	reason[n] = '\0';
	return PARSE_OK;
}
