/*
 * The approvals HTTP API's wire format (doc/operations.md "Approvals API"):
 * the request path and body it accepts and the JSON it answers. Pure
 * functions (no I/O, no event loop), fuzzed by test/fuzz/fuzz_approvals_api.
 */
#ifndef PGMOAT_APPROVALS_API_H
#define PGMOAT_APPROVALS_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "approvals.h"

#define APPROVALS_API_PREFIX "/api/approvals/"
#define APPROVALS_API_MAX_BODY 4096	/* bytes of a decision's JSON body */
#define APPROVALS_API_MAX_REASON 1000	/* bytes of a deny reason */

typedef enum {
	APPROVALS_API_APPROVE,
	APPROVALS_API_DENY,
} ApprovalsApiAction;

typedef enum {
	APPROVALS_PATH_OK,
	APPROVALS_PATH_BAD_ID,		/* 400: the id is not a positive decimal number */
	APPROVALS_PATH_UNKNOWN,		/* 404: not ".../ID/approve" nor ".../ID/deny" */
} ApprovalsPathResult;

/* "/api/approvals/ID/approve" or ".../ID/deny" into id and action. */
ApprovalsPathResult approvals_api_parse_path(const char *path, uint64_t *id,
					     ApprovalsApiAction *action);

/*
 * A decision's body: empty (or blank), or a JSON object with at most the key
 * "reason" (a string, for deny only; no control characters, at most
 * APPROVALS_API_MAX_REASON bytes). *reason gets a malloc'd copy or NULL.
 * False on anything else, with a message for the client in err.
 */
bool approvals_api_parse_body(const char *body, size_t len, ApprovalsApiAction action,
			      char **reason, char *err, size_t errlen);

/* The JSON texts below are malloc'd, NULL when out of memory. */

/* {"approvals": [...]} for GET /api/approvals. */
char *approvals_api_list_json(const ApprovalInfo *list, int n);

/* The answer to a decision. forwarded: held by another replica. */
char *approvals_api_outcome_json(uint64_t id, ApprovalsApiAction action, const char *reviewer,
				 const char *reason, bool forwarded);

/* {"error": message}. */
char *approvals_api_error_json(const char *message);

#endif
