#include "log.h"
#include "pgmoat.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/time.h>
#include <jansson.h>

int log_verbosity = LOG_INFO;
static pid_t log_pid;	/* getpid() is a system call per line; see log_forget_pid */
static FILE *log_file;

static const char *level_names[] = { "FATAL", "ERROR", "WARNING", "LOG", "DEBUG", "NOISE" };
static const char *json_level_names[] = { "fatal", "error", "warning", "info", "debug", "noise" };
static bool log_json;	/* log_format = json: one JSON object per line */

void log_forget_pid(void)
{
	log_pid = 0;
}

static int log_own_pid(void)
{
	if (!log_pid)
		log_pid = getpid();
	return (int)log_pid;
}

void log_set_json(bool json)
{
	log_json = json;
}

/* What a log line is about: nothing, a client or a server. */
typedef struct LogSubject {
	char kind;		/* 0, 'C' or 'S' */
	unsigned long long id;
	const char *db;
	const char *user;
	const char *host;
	int port;
} LogSubject;

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

/*
 * Copy s with every invalid UTF-8 sequence replaced by U+FFFD, so jansson
 * accepts it: a message may carry client-supplied bytes (user names, SQL).
 */
static char *log_valid_utf8(const char *s)
{
	size_t n = strlen(s);
	char *out = malloc(n * 3 + 1);
	if (!out)
		return NULL;
	char *o = out;
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		int len = *p < 0x80 ? 1 : (*p >> 5) == 0x6 ? 2 : (*p >> 4) == 0xE ? 3 : (*p >> 3) == 0x1E ? 4 : 0;
		bool ok = len > 0;
		for (int i = 1; ok && i < len; i++)
			ok = (p[i] & 0xC0) == 0x80;
		if (ok && len > 1) {
			uint32_t cp = len == 2 ? (p[0] & 0x1Fu) : len == 3 ? (p[0] & 0x0Fu) : (p[0] & 0x07u);
			for (int i = 1; i < len; i++)
				cp = (cp << 6) | (p[i] & 0x3Fu);
			static const uint32_t min[] = { 0, 0, 0x80, 0x800, 0x10000 };
			ok = cp >= min[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
		}
		if (!ok) {
			memcpy(o, "\xEF\xBF\xBD", 3);
			o += 3;
			p++;
			continue;
		}
		memcpy(o, p, (size_t)len);
		o += len;
		p += len;
	}
	*o = '\0';
	return out;
}

static void json_set_str(json_t *obj, const char *key, const char *value)
{
	char *v = log_valid_utf8(value);
	if (v)
		json_object_set_new(obj, key, json_string(v));
	free(v);
}

/* {"ts":..,"level":..,"pid":..,"msg":..[,"client"|"server":"C-1","database",..]} */
static void log_emit_json(FILE *out, LogLevel lvl, const struct timeval *tv, const LogSubject *who,
			  const char *msg)
{
	struct tm tm;
	gmtime_r(&tv->tv_sec, &tm);
	char ts[64], full[80];
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(full, sizeof(full), "%s.%06dZ", ts, (int)tv->tv_usec);
	json_t *obj = json_object();
	if (!obj)
		return;
	json_object_set_new(obj, "ts", json_string(full));
	json_object_set_new(obj, "level", json_string(json_level_names[lvl]));
	json_object_set_new(obj, "pid", json_integer(log_own_pid()));
	json_set_str(obj, "msg", msg);
	if (who->kind) {
		char id[32];
		snprintf(id, sizeof(id), "%c-%llu", who->kind, who->id);
		json_object_set_new(obj, who->kind == 'C' ? "client" : "server", json_string(id));
		if (who->db)
			json_set_str(obj, "database", who->db);
		if (who->user)
			json_set_str(obj, "user", who->user);
		json_set_str(obj, "addr", who->host);
		json_object_set_new(obj, "port", json_integer(who->port));
	}
	char *line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (line) {
		fprintf(out, "%s\n", line);
		free(line);
	}
	json_decref(obj);
}

static void log_emit(LogLevel lvl, const LogSubject *who, const char *fmt, va_list ap)
{
	char msg[2048];
	vsnprintf(msg, sizeof(msg), fmt, ap);

	struct timeval tv;
	gettimeofday(&tv, NULL);
	FILE *out = log_file ? log_file : stderr;
	if (log_json) {
		log_emit_json(out, lvl, &tv, who, msg);
	} else {
		struct tm tm;
		gmtime_r(&tv.tv_sec, &tm);
		char ts[64];
		strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
		char prefix[256] = "";
		if (who->kind)
			snprintf(prefix, sizeof(prefix), "%c-%llu: %s/%s@%s:%d ", who->kind, who->id,
				 who->db ? who->db : "(nodb)", who->user ? who->user : "(nouser)",
				 who->host, who->port);
		fprintf(out, "%s.%03d UTC [%d] %s %s%s\n", ts, (int)(tv.tv_usec / 1000), log_own_pid(),
			level_names[lvl], prefix, msg);
	}
	if (!log_file)
		fflush(out);
}

void log_line(LogLevel lvl, const char *fmt, ...)
{
	if (!log_enabled(lvl))
		return;
	LogSubject none = { 0 };
	va_list ap;
	va_start(ap, fmt);
	log_emit(lvl, &none, fmt, ap);
	va_end(ap);
}

void log_client(LogLevel lvl, const Client *c, const char *fmt, ...)
{
	if (!log_enabled(lvl))
		return;
	LogSubject who = { 'C', (unsigned long long)c->id, c->db_name, c->user_name,
			   c->remote.host, c->remote.port };
	va_list ap;
	va_start(ap, fmt);
	log_emit(lvl, &who, fmt, ap);
	va_end(ap);
}

void log_server(LogLevel lvl, const Server *s, const char *fmt, ...)
{
	if (!log_enabled(lvl))
		return;
	LogSubject who = { 'S', (unsigned long long)s->id, s->pool ? s->pool->db->name : NULL,
			   s->pool ? s->pool->server_user : NULL, s->remote.host, s->remote.port };
	va_list ap;
	va_start(ap, fmt);
	log_emit(lvl, &who, fmt, ap);
	va_end(ap);
}
