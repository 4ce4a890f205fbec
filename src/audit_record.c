#include "audit_record.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/sha.h>

void audit_line_hash(const char *line, size_t len, char *out)
{
	uint8_t md[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)line, len, md);
	util_hex(md, sizeof(md), out);
}

void audit_format_ts(usec_t wall_usec, char *out)
{
	time_t secs = (time_t)(wall_usec / USEC_PER_SEC);
	long usec = (long)(wall_usec % USEC_PER_SEC);
	if (usec < 0) {
		secs--;
		usec += USEC_PER_SEC;
	}
	struct tm tm;
	gmtime_r(&secs, &tm);
	char base[24];
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, AUDIT_TS_LEN, "%s.%06ldZ", base, usec);
}

bool audit_rows_from_tag(const char *tag, int64_t *rows)
{
	const char *last = strrchr(tag, ' ');
	if (!last || !last[1])
		return false;
	last++;
	int64_t n = 0;
	for (const char *p = last; *p; p++) {
		if (!isdigit((unsigned char)*p) || n > (INT64_MAX - 9) / 10)
			return false;
		n = n * 10 + (*p - '0');
	}
	*rows = n;
	return true;
}

void audit_put_str(json_t *rec, const char *key, const char *s)
{
	json_t *v = s ? json_string(s) : NULL;
	/* Text that is not UTF-8 (a client may send any bytes) is kept, escaped. */
	if (s && !v) {
		size_t n = strlen(s);
		char *esc = xmalloc(n * 4 + 1), *o = esc;
		for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
			if (*p < 0x80)
				*o++ = (char)*p;
			else
				o += sprintf(o, "\\x%02x", *p);
		}
		*o = '\0';
		v = json_string(esc);
		free(esc);
	}
	json_object_set_new(rec, key, v ? v : json_null());
}

void audit_chain_init(AuditChain *ch, const char *prev)
{
	snprintf(ch->prev, sizeof(ch->prev), "%s", prev ? prev : AUDIT_GENESIS);
}

char *audit_chain_seal(AuditChain *ch, json_t *rec, size_t *len)
{
	if (json_object_set_new(rec, "prev", json_string(ch->prev)) != 0)
		return NULL;
	char *line = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!line)
		return NULL;
	*len = strlen(line);
	audit_line_hash(line, *len, ch->prev);
	return line;
}

/* ---- verification ------------------------------------------------------ */

static const char *const audit_events[] = { "session_start", "statement", "approval",
					    "session_end", NULL };

bool audit_event_valid(const char *event)
{
	for (int i = 0; audit_events[i]; i++)
		if (strcmp(event, audit_events[i]) == 0)
			return true;
	return false;
}

void audit_verifier_init(AuditVerifier *v)
{
	memset(v, 0, sizeof(*v));
}

static bool hex64(const char *s)
{
	if (strlen(s) != AUDIT_HASH_HEX)
		return false;
	for (const char *p = s; *p; p++)
		if (!isdigit((unsigned char)*p) && !(*p >= 'a' && *p <= 'f'))
			return false;
	return true;
}

static bool verify_fail(AuditVerifier *v, const char *fmt, ...) PRINTF_LIKE(2, 3);

static bool verify_fail(AuditVerifier *v, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v->error, sizeof(v->error), fmt, ap);
	va_end(ap);
	v->failed = true;
	v->bad_line = v->line;
	return false;
}

/* The fields every record must have, with the right types. */
static bool verify_shape(AuditVerifier *v, json_t *rec)
{
	const char *fields[] = { "ts", "event", "session" };
	for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
		if (!json_is_string(json_object_get(rec, fields[i])))
			return verify_fail(v, "\"%s\" is missing or not a string", fields[i]);
	const char *event = json_string_value(json_object_get(rec, "event"));
	if (!audit_event_valid(event))
		return verify_fail(v, "unknown event \"%.64s\"", event);
	return true;
}

bool audit_verify_line(AuditVerifier *v, const char *line, size_t len)
{
	if (v->failed)
		return false;
	v->line++;
	if (len > AUDIT_MAX_LINE)
		return verify_fail(v, "line longer than %u bytes", AUDIT_MAX_LINE);
	json_error_t jerr;
	json_t *rec = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!rec)
		return verify_fail(v, "bad JSON: %s (column %d)", jerr.text, jerr.column);
	bool ok = false;
	json_t *prev = json_object_get(rec, "prev");
	if (!json_is_object(rec))
		verify_fail(v, "not a JSON object");
	else if (!json_is_string(prev) || !hex64(json_string_value(prev)))
		verify_fail(v, "\"prev\" is missing or not a SHA-256 hex digest");
	else if (v->records > 0 && strcmp(json_string_value(prev), v->prev) != 0)
		verify_fail(v, "prev mismatch: line %llu was changed or removed, or this line was "
			    "inserted (prev says %.64s, line %llu hashes to %s)",
			    (unsigned long long)(v->line - 1), json_string_value(prev),
			    (unsigned long long)(v->line - 1), v->prev);
	else
		ok = verify_shape(v, rec);
	if (ok && v->records == 0)
		snprintf(v->first_prev, sizeof(v->first_prev), "%s", json_string_value(prev));
	json_decref(rec);
	if (!ok)
		return false;
	audit_line_hash(line, len, v->prev);
	v->records++;
	return true;
}
