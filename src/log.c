#include "log.h"
#include "pgmoat.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/time.h>

int log_verbosity = LOG_INFO;
static FILE *log_file;

static const char *level_names[] = { "FATAL", "ERROR", "WARNING", "LOG", "DEBUG", "NOISE" };

bool log_open_file(const char *path)
{
	if (!path || !*path) {
		if (log_file)
			fclose(log_file);
		log_file = NULL;
		return true;
	}
	FILE *f = fopen(path, "a");
	if (!f)
		return false;
	setvbuf(f, NULL, _IOLBF, 0);
	if (log_file)
		fclose(log_file);
	log_file = f;
	return true;
}

static void log_emit(LogLevel lvl, const char *prefix, const char *fmt, va_list ap)
{
	char msg[2048];
	vsnprintf(msg, sizeof(msg), fmt, ap);

	struct timeval tv;
	gettimeofday(&tv, NULL);
	struct tm tm;
	gmtime_r(&tv.tv_sec, &tm);
	char ts[64];
	strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);

	FILE *out = log_file ? log_file : stderr;
	fprintf(out, "%s.%03d UTC [%d] %s %s%s\n", ts, (int)(tv.tv_usec / 1000), (int)getpid(),
		level_names[lvl], prefix, msg);
	if (!log_file)
		fflush(out);
}

void log_line(LogLevel lvl, const char *fmt, ...)
{
	if (!log_enabled(lvl))
		return;
	va_list ap;
	va_start(ap, fmt);
	log_emit(lvl, "", fmt, ap);
	va_end(ap);
}

void log_client(LogLevel lvl, const Client *c, const char *fmt, ...)
{
	if (!log_enabled(lvl))
		return;
	char prefix[256];
	snprintf(prefix, sizeof(prefix), "C-%llu: %s/%s@%s:%d ", (unsigned long long)c->id,
		 c->db_name ? c->db_name : "(nodb)", c->user_name ? c->user_name : "(nouser)",
		 c->remote.host, c->remote.port);
	va_list ap;
	va_start(ap, fmt);
	log_emit(lvl, prefix, fmt, ap);
	va_end(ap);
}

void log_server(LogLevel lvl, const Server *s, const char *fmt, ...)
{
	if (!log_enabled(lvl))
		return;
	char prefix[256];
	snprintf(prefix, sizeof(prefix), "S-%llu: %s/%s@%s:%d ", (unsigned long long)s->id,
		 s->pool ? s->pool->db->name : "(nodb)", s->pool ? s->pool->server_user : "(nouser)",
		 s->remote.host, s->remote.port);
	va_list ap;
	va_start(ap, fmt);
	log_emit(lvl, prefix, fmt, ap);
	va_end(ap);
}
