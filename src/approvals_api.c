/*
 * The approvals API's paths, bodies and JSON. The field names of a held
 * statement are SHOW APPROVALS's (admin.c), with times in RFC 3339.
 */
#include "approvals_api.h"
#include "audit_record.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

/* A positive decimal number of at most 20 digits that fits in 64 bits. */
static bool parse_id(const char *s, size_t len, uint64_t *out)
{
	char digits[21];
	char *end;

	if (len == 0 || len >= sizeof(digits))
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	memcpy(digits, s, len);
	digits[len] = '\0';
	errno = 0;
	unsigned long long v = strtoull(digits, &end, 10);
	if (errno == ERANGE || *end || v == 0)
		return false;
	*out = v;
	return true;
}

ApprovalsPathResult approvals_api_parse_path(const char *path, uint64_t *id,
					     ApprovalsApiAction *action)
{
	size_t plen = strlen(APPROVALS_API_PREFIX);
	if (!path || strncmp(path, APPROVALS_API_PREFIX, plen) != 0)
		return APPROVALS_PATH_UNKNOWN;
	const char *idtext = path + plen;
	const char *slash = strchr(idtext, '/');
	if (!slash)
		return APPROVALS_PATH_UNKNOWN;
	if (strcmp(slash + 1, "approve") == 0)
		*action = APPROVALS_API_APPROVE;
	else if (strcmp(slash + 1, "deny") == 0)
		*action = APPROVALS_API_DENY;
	else
		return APPROVALS_PATH_UNKNOWN;
	return parse_id(idtext, (size_t)(slash - idtext), id) ? APPROVALS_PATH_OK
							       : APPROVALS_PATH_BAD_ID;
}

static bool all_blank(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!isspace((unsigned char)s[i]))
			return false;
	return true;
}

/* Reasons end up in the client's error, the log and the audit trail: one printable line. */
static bool reason_ok(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

/* The "reason" member of body object o into *reason; false with err on a bad one. */
static bool body_reason(json_t *o, ApprovalsApiAction action, char **reason, char *err,
			size_t errlen)
{
	const char *key;
	json_t *v;

	json_object_foreach(o, key, v) {
		if (strcmp(key, "reason") != 0) {
			snprintf(err, errlen, "unknown key in body (only \"reason\" is allowed)");
			return false;
		}
	}
	v = json_object_get(o, "reason");
	if (!v || json_is_null(v))
		return true;
	if (action != APPROVALS_API_DENY) {
		snprintf(err, errlen, "\"reason\" is for deny only");
		return false;
	}
	if (!json_is_string(v)) {
		snprintf(err, errlen, "\"reason\" must be a string");
		return false;
	}
	size_t len = json_string_length(v);
	if (len > APPROVALS_API_MAX_REASON || !reason_ok(json_string_value(v), len)) {
		snprintf(err, errlen, "\"reason\" must be one line of at most %d bytes",
			 APPROVALS_API_MAX_REASON);
		return false;
	}
	if (len > 0)
		*reason = xstrndup(json_string_value(v), len);
	return true;
}

bool approvals_api_parse_body(const char *body, size_t len, ApprovalsApiAction action,
			      char **reason, char *err, size_t errlen)
{
	json_error_t jerr;
	bool ok = false;

	*reason = NULL;
	if (len > APPROVALS_API_MAX_BODY) {
		snprintf(err, errlen, "body larger than %d bytes", APPROVALS_API_MAX_BODY);
		return false;
	}
	if (!body || all_blank(body, len))
		return true;
	/* No JSON_ALLOW_NUL: a \u0000 in a string is refused by the parser. */
	json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!o)
		snprintf(err, errlen, "body is not JSON: %s", jerr.text);
	else if (!json_is_object(o))
		snprintf(err, errlen, "body must be a JSON object");
	else
		ok = body_reason(o, action, reason, err, errlen);
	json_decref(o);
	return ok;
}

static json_t *json_str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

/* Text that is not valid UTF-8 (it came from a client) is shown with its bad bytes as '?'. */
static json_t *json_text(const char *s)
{
	if (!s)
		return json_null();
	json_t *j = json_string(s);
	if (j)
		return j;
	char *copy = xstrdup(s);
	for (char *p = copy; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

static json_t *json_time(usec_t wall)
{
	char ts[AUDIT_TS_LEN];
	if (wall <= 0)
		return json_null();
	audit_format_ts(wall, ts);
	return json_string(ts);
}

static json_t *json_tagged_id(const char *tag, uint64_t id)
{
	char buf[32];
	if (id == 0)
		return json_null();
	snprintf(buf, sizeof(buf), "%s-%" PRIu64, tag, id);
	return json_string(buf);
}

static json_t *approval_json(const ApprovalInfo *ai)
{
	json_t *o = json_object();
	json_object_set_new(o, "id", json_integer((json_int_t)ai->id));
	json_object_set_new(o, "client", json_tagged_id("C", ai->client_id));
	json_object_set_new(o, "user", json_text(ai->user));
	json_object_set_new(o, "database", json_text(ai->database));
	json_object_set_new(o, "statement", json_text(ai->statement));
	json_object_set_new(o, "reason", json_text(ai->reason));
	json_object_set_new(o, "policy", json_text(ai->policy));
	json_object_set_new(o, "protocol", json_str_or_null(ai->protocol));
	json_object_set_new(o, "server", json_tagged_id("S", ai->server_id));
	json_object_set_new(o, "held_at", json_time(ai->held_at));
	json_object_set_new(o, "wait_ms", json_integer((json_int_t)(ai->waited / 1000)));
	json_object_set_new(o, "timeout_at", json_time(ai->timeout_at));
	json_object_set_new(o, "replica", json_text(ai->replica));
	return o;
}

/* Compact text of j, which this consumes; NULL when out of memory. */
static char *json_take_text(json_t *j)
{
	char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(j);
	return text;
}

char *approvals_api_list_json(const ApprovalInfo *list, int n)
{
	json_t *arr = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(arr, approval_json(&list[i]));
	json_t *o = json_object();
	json_object_set_new(o, "approvals", arr);
	return json_take_text(o);
}

char *approvals_api_outcome_json(uint64_t id, ApprovalsApiAction action, const char *reviewer,
				 const char *reason, bool forwarded)
{
	json_t *o = json_object();
	json_object_set_new(o, "id", json_integer((json_int_t)id));
	json_object_set_new(o, "decision",
			    json_string(action == APPROVALS_API_APPROVE ? "approved" : "rejected"));
	json_object_set_new(o, "reviewer", json_text(reviewer));
	json_object_set_new(o, "reason", json_text(reason));
	json_object_set_new(o, "forwarded", json_boolean(forwarded));
	return json_take_text(o);
}

char *approvals_api_error_json(const char *message)
{
	json_t *o = json_object();
	json_object_set_new(o, "error", json_text(message));
	return json_take_text(o);
}
