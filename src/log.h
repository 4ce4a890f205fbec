/*
 * Logging. Every line about a connection names it (slog_*), so an operator can
 * follow one client through the log. Debug lines cost one branch when off.
 */
#ifndef PGMOAT_LOG_H
#define PGMOAT_LOG_H

#include <stdbool.h>
#include "util.h"

typedef enum { LOG_FATAL, LOG_ERROR, LOG_WARNING, LOG_INFO, LOG_DEBUG, LOG_NOISE } LogLevel;

struct Client;
struct Server;

extern int log_verbosity;	/* LOG_INFO by default; -v raises, -q lowers */

/* log_format: plain lines (default) or one JSON object per line. */
void log_set_json(bool json);
/* After a fork: the child's lines must carry its own pid. */
void log_forget_pid(void);

/* Redirect to a file (NULL: stderr). Reopened on SIGHUP for logrotate. */
bool log_open_file(const char *path) MUST_CHECK;

void log_line(LogLevel lvl, const char *fmt, ...) PRINTF_LIKE(2, 3);
void log_client(LogLevel lvl, const struct Client *c, const char *fmt, ...) PRINTF_LIKE(3, 4);
void log_server(LogLevel lvl, const struct Server *s, const char *fmt, ...) PRINTF_LIKE(3, 4);

#define log_enabled(lvl) ((int)(lvl) <= log_verbosity)

#define log_fatal(...) log_line(LOG_FATAL, __VA_ARGS__)
#define log_error(...) log_line(LOG_ERROR, __VA_ARGS__)
#define log_warning(...) log_line(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_line(LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_line(LOG_DEBUG, __VA_ARGS__); } while (0)

#define slog_error(c, ...) log_client(LOG_ERROR, c, __VA_ARGS__)
#define slog_warning(c, ...) log_client(LOG_WARNING, c, __VA_ARGS__)
#define slog_info(c, ...) log_client(LOG_INFO, c, __VA_ARGS__)
#define slog_debug(c, ...) do { if (log_enabled(LOG_DEBUG)) log_client(LOG_DEBUG, c, __VA_ARGS__); } while (0)
#define svlog_error(s, ...) log_server(LOG_ERROR, s, __VA_ARGS__)
#define svlog_warning(s, ...) log_server(LOG_WARNING, s, __VA_ARGS__)
#define svlog_info(s, ...) log_server(LOG_INFO, s, __VA_ARGS__)
#define svlog_debug(s, ...) do { if (log_enabled(LOG_DEBUG)) log_server(LOG_DEBUG, s, __VA_ARGS__); } while (0)

#endif
