/*
 * libFuzzer target for the approval store's messages (approvals_msg.c):
 * payloads any role of the store's database can NOTIFY.
 *
 * Input: u8 mode, then bytes. Mode bit 0: the bytes are a message body that
 * gets a valid signature (so the fuzzer reaches the JSON and shape checks);
 * otherwise they are the whole payload, as an attacker would send it.
 *
 * Invariants (abort() on violation): an accepted message is an object with a
 * known op; signing it again and verifying gives an accepted message with
 * the same op; the same payload with one signature digit changed is refused;
 * an unsigned input is accepted only if it carries the valid signature.
 */
#include "approvals_msg.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char key[] = "fuzzing-key-0123456789abcdef";
static const usec_t now = 1800000000LL * USEC_PER_SEC;

static bool known_op(const char *op)
{
	return strcmp(op, "held") == 0 || strcmp(op, "gone") == 0 || strcmp(op, "sync") == 0 ||
	       strcmp(op, "decide") == 0;
}

static void check_accepted(json_t *msg, char *payload, size_t len)
{
	const char *why = NULL;
	if (!json_is_object(msg) || !known_op(approvals_msg_str(msg, "op")))
		abort();
	(void)approvals_msg_id(msg, "id");
	(void)approvals_msg_str(msg, "replica");
	/* Round trip: what we sign we accept. */
	char *again = approvals_msg_sign(key, msg, now);
	if (!again)
		abort();
	json_t *back = approvals_msg_verify(key, again, strlen(again), now, &why);
	if (!back || strcmp(approvals_msg_str(back, "op"), approvals_msg_str(msg, "op")) != 0)
		abort();
	json_decref(back);
	free(again);
	/* A changed signature digit is refused. */
	payload[0] = payload[0] == '0' ? '1' : '0';
	back = approvals_msg_verify(key, payload, len, now, &why);
	if (back)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool sign = data[0] & 1;
	const uint8_t *body = data + 1;
	size_t blen = size - 1;
	size_t len = (sign ? APPROVALS_MSG_MAC_HEX + 1 : 0) + blen;
	char *payload = xmalloc(len + 1);
	char hex[APPROVALS_MSG_MAC_HEX + 1];
	if (sign) {
		if (!approvals_msg_mac(key, (const char *)body, blen, hex))
			abort();
		memcpy(payload, hex, APPROVALS_MSG_MAC_HEX);
		payload[APPROVALS_MSG_MAC_HEX] = '.';
	}
	memcpy(payload + len - blen, body, blen);
	payload[len] = '\0';
	const char *why = NULL;
	json_t *msg = approvals_msg_verify(key, payload, len, now, &why);
	if (msg) {
		check_accepted(msg, payload, len);
		json_decref(msg);
	} else if (!why) {
		abort();
	}
	free(payload);
	return 0;
}
