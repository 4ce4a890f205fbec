/* The approvals HTTP API's wire format: paths, decision bodies, JSON answers. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/pgmoat.h"
#include "../../src/approvals_api.h"

Moat *moat;	/* main.c's, which unit tests do not link */

static ApprovalsPathResult path(const char *p, uint64_t *id, ApprovalsApiAction *action)
{
	*id = 0;
	*action = APPROVALS_API_DENY + 1;
	return approvals_api_parse_path(p, id, action);
}

Test(approvals_api, paths_name_an_id_and_an_action)
{
	uint64_t id;
	ApprovalsApiAction action;

	cr_assert_eq(path("/api/approvals/17/approve", &id, &action), APPROVALS_PATH_OK);
	cr_expect_eq(id, 17);
	cr_expect_eq(action, APPROVALS_API_APPROVE);
	cr_assert_eq(path("/api/approvals/18446744073709551615/deny", &id, &action), APPROVALS_PATH_OK);
	cr_expect_eq(id, UINT64_MAX);
	cr_expect_eq(action, APPROVALS_API_DENY);
	cr_assert_eq(path("/api/approvals/007/deny", &id, &action), APPROVALS_PATH_OK);
	cr_expect_eq(id, 7);
}

Test(approvals_api, bad_ids_are_400)
{
	const char *bad[] = { "/api/approvals//approve", "/api/approvals/0/approve",
			      "/api/approvals/-1/deny", "/api/approvals/+1/deny",
			      "/api/approvals/ 1/deny", "/api/approvals/1 /deny",
			      "/api/approvals/0x10/deny", "/api/approvals/1e3/deny",
			      "/api/approvals/18446744073709551616/deny",
			      "/api/approvals/123456789012345678901/deny", "/api/approvals/%31/deny" };
	uint64_t id;
	ApprovalsApiAction action;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		cr_expect_eq(path(bad[i], &id, &action), APPROVALS_PATH_BAD_ID, "%s", bad[i]);
}

Test(approvals_api, other_paths_are_404)
{
	const char *unknown[] = { "/api/approvals/", "/api/approvals/1", "/api/approvals/1/",
				  "/api/approvals/1/approve/", "/api/approvals/1/Approve",
				  "/api/approvals/1/approvex", "/api/approvals/1/deny/x",
				  "/api/approvals", "/api/other/1/approve", "", NULL };
	uint64_t id;
	ApprovalsApiAction action;

	for (size_t i = 0; i < ARRAY_SIZE(unknown); i++)
		cr_expect_eq(path(unknown[i], &id, &action), APPROVALS_PATH_UNKNOWN, "%s",
			     unknown[i] ? unknown[i] : "(null)");
}

static bool body(const char *text, ApprovalsApiAction action, char **reason)
{
	char err[256] = "";
	bool ok = approvals_api_parse_body(text, text ? strlen(text) : 0, action, reason, err,
					   sizeof(err));
	cr_expect(ok || err[0], "a refusal says why: %s", text);
	return ok;
}

Test(approvals_api, bodies_carry_an_optional_reason)
{
	char *r = (char *)"untouched";

	cr_expect(body(NULL, APPROVALS_API_DENY, &r));
	cr_expect_null(r);
	cr_expect(body(" \r\n", APPROVALS_API_APPROVE, &r));
	cr_expect_null(r);
	cr_expect(body("{}", APPROVALS_API_APPROVE, &r));
	cr_expect_null(r);
	cr_expect(body("{\"reason\": null}", APPROVALS_API_APPROVE, &r));
	cr_expect_null(r);
	cr_expect(body("{\"reason\": \"\"}", APPROVALS_API_DENY, &r));
	cr_expect_null(r);
	cr_assert(body("{\"reason\": \"not on a friday \\u00e9\"}", APPROVALS_API_DENY, &r));
	cr_expect_str_eq(r, "not on a friday \xc3\xa9");
	free(r);
}

Test(approvals_api, bad_bodies_are_refused)
{
	const char *bad[] = { "{", "[]", "\"x\"", "null", "1", "{\"reason\": 5}",
			      "{\"reason\": [\"x\"]}", "{\"why\": \"x\"}",
			      "{\"reason\": \"a\", \"reason\": \"b\"}", "{\"reason\": \"a\\nb\"}",
			      "{\"reason\": \"a\\u0000b\"}", "{\"reason\": \"a\\u007fb\"}",
			      "{\"reason\": \"\xff\"}", "{} {}" };
	char *r = NULL;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		cr_expect_not(body(bad[i], APPROVALS_API_DENY, &r), "%s", bad[i]);
		cr_expect_null(r);
	}
	cr_expect_not(body("{\"reason\": \"x\"}", APPROVALS_API_APPROVE, &r));
	cr_expect_null(r);
}

Test(approvals_api, reason_and_body_sizes_are_bounded)
{
	char text[APPROVALS_API_MAX_BODY + 64], err[128];
	char *r = NULL;
	int n = snprintf(text, sizeof(text), "{\"reason\": \"%0*d\"}", APPROVALS_API_MAX_REASON, 0);

	cr_assert(approvals_api_parse_body(text, (size_t)n, APPROVALS_API_DENY, &r, err, sizeof(err)));
	cr_expect_eq(strlen(r), APPROVALS_API_MAX_REASON);
	free(r);
	n = snprintf(text, sizeof(text), "{\"reason\": \"%0*d\"}", APPROVALS_API_MAX_REASON + 1, 0);
	cr_expect_not(approvals_api_parse_body(text, (size_t)n, APPROVALS_API_DENY, &r, err, sizeof(err)));
	memset(text, ' ', sizeof(text));
	cr_expect_not(approvals_api_parse_body(text, APPROVALS_API_MAX_BODY + 1, APPROVALS_API_DENY,
					       &r, err, sizeof(err)));
	cr_expect(strstr(err, "larger") != NULL, "%s", err);
	cr_expect(approvals_api_parse_body(text, APPROVALS_API_MAX_BODY, APPROVALS_API_DENY, &r, err,
					   sizeof(err)));
}

Test(approvals_api, list_json_has_the_show_approvals_fields)
{
	ApprovalInfo ai[2] = {
		{ .id = 5, .client_id = 3, .user = "app", .database = "db",
		  .statement = "DELETE FROM t WHERE id = $1", .reason = "why", .policy = "p.lua",
		  .protocol = "simple", .server_id = 0, .held_at = 1795770000123456LL,
		  .waited = 2500000, .timeout_at = 1795770600123456LL },
		{ .id = 6, .replica = "pod-b", .client_id = 9, .user = "u\xff", .database = "d",
		  .statement = "</script>\"", .reason = NULL, .policy = "p.lua",
		  .protocol = "extended", .server_id = 4, .held_at = 0, .waited = 999 },
	};
	char *text = approvals_api_list_json(ai, 2);
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	cr_assert_not_null(j, "%s", text);
	json_t *a = json_object_get(j, "approvals");
	cr_assert(json_is_array(a));
	cr_assert_eq(json_array_size(a), 2);
	json_t *o = json_array_get(a, 0);
	cr_expect_eq(json_integer_value(json_object_get(o, "id")), 5);
	cr_expect_str_eq(json_string_value(json_object_get(o, "client")), "C-3");
	cr_expect(json_is_null(json_object_get(o, "server")));
	cr_expect(json_is_null(json_object_get(o, "replica")));
	cr_expect_str_eq(json_string_value(json_object_get(o, "held_at")), "2026-11-27T09:00:00.123456Z");
	cr_expect_eq(json_integer_value(json_object_get(o, "wait_ms")), 2500);
	cr_expect_eq(json_object_size(o), 13);
	o = json_array_get(a, 1);
	cr_expect_str_eq(json_string_value(json_object_get(o, "replica")), "pod-b");
	cr_expect_str_eq(json_string_value(json_object_get(o, "server")), "S-4");
	cr_expect_str_eq(json_string_value(json_object_get(o, "user")), "u?");	/* not UTF-8 */
	cr_expect_str_eq(json_string_value(json_object_get(o, "statement")), "</script>\"");
	cr_expect(json_is_null(json_object_get(o, "reason")));
	cr_expect(json_is_null(json_object_get(o, "held_at")));
	json_decref(j);
	free(text);

	text = approvals_api_list_json(NULL, 0);
	cr_expect_str_eq(text, "{\"approvals\":[]}");
	free(text);
}

Test(approvals_api, outcome_and_error_json)
{
	char *t = approvals_api_outcome_json(7, APPROVALS_API_DENY, "bob", "no", false);
	cr_expect_str_eq(t, "{\"id\":7,\"decision\":\"rejected\",\"reviewer\":\"bob\",\"reason\":\"no\","
			    "\"forwarded\":false}");
	free(t);
	t = approvals_api_outcome_json(8, APPROVALS_API_APPROVE, "http", NULL, true);
	cr_expect_str_eq(t, "{\"id\":8,\"decision\":\"approved\",\"reviewer\":\"http\",\"reason\":null,"
			    "\"forwarded\":true}");
	free(t);
	t = approvals_api_error_json("no \"such\"");
	cr_expect_str_eq(t, "{\"error\":\"no \\\"such\\\"\"}");
	free(t);
}
