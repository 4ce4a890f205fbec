#include "approvals_msg.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

bool approvals_msg_mac(const char *key, const char *text, size_t len,
		       char hex[APPROVALS_MSG_MAC_HEX + 1])
{
	uint8_t mac[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	if (!HMAC(EVP_sha256(), key, (int)strlen(key), (const uint8_t *)text, len, mac, &n) ||
	    n * 2 != APPROVALS_MSG_MAC_HEX)
		return false;
	util_hex(mac, n, hex);
	return true;
}

char *approvals_msg_sign(const char *key, json_t *msg, usec_t now)
{
	char hex[APPROVALS_MSG_MAC_HEX + 1];
	if (!json_is_object(msg) || json_object_set_new(msg, "ts", json_integer((json_int_t)now)) != 0)
		return NULL;
	char *text = json_dumps(msg, JSON_COMPACT);
	char *out = text && approvals_msg_mac(key, text, strlen(text), hex) ? xasprintf("%s.%s", hex, text)
								 : NULL;
	free(text);
	return out;
}

const char *approvals_msg_str(json_t *msg, const char *key)
{
	const char *s = json_string_value(json_object_get(msg, key));
	return s ? s : "";
}

uint64_t approvals_msg_id(json_t *msg, const char *key)
{
	json_int_t v = json_integer_value(json_object_get(msg, key));
	return v > 0 ? (uint64_t)v : 0;
}

/* Every field an op needs, with its type: 's' string, 'i' positive integer, 'b' boolean. */
static const struct {
	const char *op;
	const char *fields;	/* "name:t name:t ..." */
} msg_shapes[] = {
	{ "held", "replica:s id:i client:i user:s database:s statement:s reason:s policy:s "
		  "protocol:s held_at:i timeout_at:i" },
	{ "gone", "replica:s id:i" },
	{ "sync", "replica:s" },
	{ "decide", "replica:s to:s id:i approve:b reviewer:s reason:s" },
};

static bool msg_field_ok(json_t *msg, const char *name, size_t len, char type)
{
	char key[32];
	if (len >= sizeof(key))
		return false;
	memcpy(key, name, len);
	key[len] = '\0';
	json_t *v = json_object_get(msg, key);
	switch (type) {
	case 's':
		return json_is_string(v);
	case 'i':
		return json_is_integer(v) && json_integer_value(v) > 0;
	case 'b':
		return json_is_boolean(v);
	}
	return false;
}

static bool msg_shape_ok(json_t *msg)
{
	const char *op = approvals_msg_str(msg, "op");
	for (size_t i = 0; i < ARRAY_SIZE(msg_shapes); i++) {
		if (strcmp(op, msg_shapes[i].op) != 0)
			continue;
		for (const char *p = msg_shapes[i].fields; *p;) {
			const char *colon = strchr(p, ':');
			if (!colon || !msg_field_ok(msg, p, (size_t)(colon - p), colon[1]))
				return false;
			p = colon + 2;
			while (*p == ' ')
				p++;
		}
		return true;
	}
	return false;
}

json_t *approvals_msg_verify(const char *key, const char *payload, size_t len, usec_t now,
			     const char **why)
{
	char hex[APPROVALS_MSG_MAC_HEX + 1];
	const char *body = payload + APPROVALS_MSG_MAC_HEX + 1;
	if (len <= APPROVALS_MSG_MAC_HEX + 1 || payload[APPROVALS_MSG_MAC_HEX] != '.' ||
	    !approvals_msg_mac(key, body, len - APPROVALS_MSG_MAC_HEX - 1, hex) ||
	    !util_secure_equal(hex, payload, APPROVALS_MSG_MAC_HEX)) {
		*why = "no valid signature (wrong approvals.key_file, or not from a pgmoat replica)";
		return NULL;
	}
	json_error_t err;
	json_t *msg = json_loadb(body, len - APPROVALS_MSG_MAC_HEX - 1, 0, &err);
	json_t *ts = json_object_get(msg, "ts");
	json_int_t t = json_integer_value(ts);
	bool fresh = json_is_integer(ts) && t >= now - APPROVALS_MSG_MAX_AGE &&
		     t <= now + APPROVALS_MSG_MAX_AGE;
	if (!json_is_object(msg) || !fresh) {
		*why = "malformed or stale message";
		json_decref(msg);
		return NULL;
	}
	if (!msg_shape_ok(msg)) {
		*why = "unknown operation or missing fields";
		json_decref(msg);
		return NULL;
	}
	return msg;
}
