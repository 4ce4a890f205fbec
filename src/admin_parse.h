/*
 * The admin console's grammar (pgbouncer's, case-insensitive, one statement
 * per query):
 *     WORD [WORD] [;]                  SHOW POOLS, PAUSE app, RELOAD, ...
 *     SET WORD (=|TO) (WORD|'string') [;]
 *     DENY WORD [words...|'string'] [;]   (pgmoat: a reason of several words)
 * where WORD is [0-9A-Za-z_]+ or a "double-quoted" name; a quote doubled
 * inside a quoted token stands for itself.
 *
 * Each parser fills NUL-terminated parts into caller buffers of the sizes
 * below (a part that does not fit is PARSE_TOO_LONG, pgbouncer's "bad
 * arguments"). An optional part not given is "".
 */
#ifndef PGMOAT_ADMIN_PARSE_H
#define PGMOAT_ADMIN_PARSE_H

#include <stdbool.h>
#include <stddef.h>

/* pgbouncer's limits for the parts of a command. */
#define ADMIN_CMD_MAX 16
#define ADMIN_ARG_MAX 64
#define ADMIN_VAL_MAX 256

typedef enum { PARSE_OK, PARSE_NO_MATCH, PARSE_TOO_LONG } ParseResult;

/* CMD [ARG] [;]: cmd[ADMIN_CMD_MAX], arg[ADMIN_ARG_MAX]. */
ParseResult admin_parse_command(const char *sql, char *cmd, char *arg);
/* SET KEY (=|TO) (WORD|'string') [;]: key[ADMIN_ARG_MAX], val[ADMIN_VAL_MAX]. */
ParseResult admin_parse_set(const char *sql, char *key, char *val);
/* DENY ID [reason] [;]: id[ADMIN_ARG_MAX], reason[ADMIN_VAL_MAX]. */
ParseResult admin_parse_deny(const char *sql, char *id, char *reason);

#endif
