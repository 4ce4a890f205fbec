/*
 * libFuzzer target for the approvals HTTP API's untrusted input: the request
 * path (approvals_api_parse_path), the decision body
 * (approvals_api_parse_body) and the Authorization header against the token
 * file (http_token_lookup).
 *
 * Input: u8 mode, then bytes. Mode % 3: 0 the bytes are a path, 1 a body,
 * 2 an Authorization header value checked against a fixed token file and
 * also, as a token file, against a fixed header.
 *
 * Invariants (abort() on violation): an accepted path rebuilt from its id
 * and action parses to the same; an accepted reason is non-empty, bounded,
 * free of control characters and round-trips through the outcome JSON; a
 * header matches only when it is exactly "Bearer <token>" of a line, and the
 * reviewer is then that line's name.
 */
#include "approvals_api.h"
#include "http_token.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char token_file[] = "# fuzz\nalice:tok-alice\nbob: tok-bob\nplain-token\nbad name:x\n";

static void fuzz_path(const char *text)
{
	uint64_t id = 0, id2 = 0;
	ApprovalsApiAction action = APPROVALS_API_APPROVE, action2 = APPROVALS_API_DENY;
	char again[96];

	if (approvals_api_parse_path(text, &id, &action) != APPROVALS_PATH_OK)
		return;
	if (id == 0)
		abort();
	snprintf(again, sizeof(again), APPROVALS_API_PREFIX "%" PRIu64 "/%s", id,
		 action == APPROVALS_API_APPROVE ? "approve" : "deny");
	if (approvals_api_parse_path(again, &id2, &action2) != APPROVALS_PATH_OK || id2 != id ||
	    action2 != action)
		abort();
}

static void check_reason(const char *reason)
{
	size_t len = strlen(reason);
	if (len == 0 || len > APPROVALS_API_MAX_REASON)
		abort();
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)reason[i] < 0x20 || reason[i] == 0x7f)
			abort();
	char *text = approvals_api_outcome_json(1, APPROVALS_API_DENY, "fuzz", reason, false);
	json_t *j = text ? json_loads(text, 0, NULL) : NULL;
	const char *back = json_string_value(json_object_get(j, "reason"));
	if (!back || strcmp(back, reason) != 0)
		abort();
	json_decref(j);
	free(text);
}

static void fuzz_body(const char *text, size_t len)
{
	char err[256];
	for (int a = APPROVALS_API_APPROVE; a <= APPROVALS_API_DENY; a++) {
		char *reason = NULL;
		err[0] = '\0';
		bool ok = approvals_api_parse_body(text, len, (ApprovalsApiAction)a, &reason, err,
						   sizeof(err));
		if (!ok && (reason || !err[0]))
			abort();
		if (reason) {
			if (a != APPROVALS_API_DENY)
				abort();
			check_reason(reason);
		}
		free(reason);
	}
}

static void fuzz_token(const char *text)
{
	char who[HTTP_REVIEWER_MAX];
	int tokens = 0, bad = 0;

	if (http_token_lookup(token_file, text, who, &tokens, &bad)) {
		const char *tok = text + strlen("Bearer ");
		bool expected = (strcmp(tok, "tok-alice") == 0 && strcmp(who, "alice") == 0) ||
				(strcmp(tok, "tok-bob") == 0 && strcmp(who, "bob") == 0) ||
				(strcmp(tok, "plain-token") == 0 && strcmp(who, "http") == 0);
		if (strncasecmp(text, "Bearer ", 7) != 0 || !expected)
			abort();
	}
	if (tokens != 3 || bad != 1)
		abort();
	/* The bytes as a token file: a match names a valid reviewer. */
	if (http_token_lookup(text, "Bearer tok-alice", who, &tokens, &bad) &&
	    (strlen(who) == 0 || strlen(who) >= HTTP_REVIEWER_MAX || tokens < 1))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int mode = data[0] % 3;
	size_t len = size - 1;
	char *text = malloc(len + 1);
	if (!text)
		return 0;
	memcpy(text, data + 1, len);
	text[len] = '\0';
	if (mode == 0)
		fuzz_path(text);
	else if (mode == 1)
		fuzz_body(text, len);
	else
		fuzz_token(text);
	free(text);
	return 0;
}
