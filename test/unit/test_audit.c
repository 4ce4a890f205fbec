#include <criterion/criterion.h>
#include <string.h>
#include <stdlib.h>

#include "../../src/audit_record.h"

static json_t *rec_with(const char *event, const char *session)
{
	json_t *r = json_object();
	json_object_set_new(r, "ts", json_string("2026-11-27T08:48:40.123456Z"));
	json_object_set_new(r, "event", json_string(event));
	json_object_set_new(r, "session", json_string(session));
	return r;
}

Test(audit, ts_is_rfc3339_utc_with_microseconds)
{
	char ts[AUDIT_TS_LEN];
	audit_format_ts((usec_t)1795769320 * USEC_PER_SEC + 42, ts);
	cr_expect_str_eq(ts, "2026-11-27T08:48:40.000042Z");
	audit_format_ts(0, ts);
	cr_expect_str_eq(ts, "1970-01-01T00:00:00.000000Z");
}

Test(audit, rows_come_from_the_command_tag)
{
	int64_t n = -1;
	cr_expect(audit_rows_from_tag("SELECT 5", &n) && n == 5);
	cr_expect(audit_rows_from_tag("INSERT 0 3", &n) && n == 3);
	cr_expect(audit_rows_from_tag("UPDATE 0", &n) && n == 0);
	cr_expect(!audit_rows_from_tag("BEGIN", &n));
	cr_expect(!audit_rows_from_tag("CREATE TABLE", &n));
	cr_expect(!audit_rows_from_tag("SELECT ", &n));
	cr_expect(!audit_rows_from_tag("SELECT 99999999999999999999999", &n));
}

Test(audit, first_record_of_a_fresh_chain_has_zero_prev)
{
	AuditChain ch;
	audit_chain_init(&ch, NULL);
	json_t *r = rec_with("session_start", "s-1");
	size_t len;
	char *line = audit_chain_seal(&ch, r, &len);
	cr_assert_not_null(line);
	cr_expect(strstr(line, "\"prev\":\"" AUDIT_GENESIS "\"") != NULL);
	char want[AUDIT_HASH_HEX + 1];
	audit_line_hash(line, len, want);
	cr_expect_str_eq(ch.prev, want);
	/* keys stay in insertion order: ts first */
	cr_expect(strncmp(line, "{\"ts\":", 6) == 0);
	free(line);
	json_decref(r);
}

Test(audit, known_sha256_of_a_line)
{
	char h[AUDIT_HASH_HEX + 1];
	audit_line_hash("abc", 3, h);
	cr_expect_str_eq(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* Build n sealed lines of a chain. */
static char **make_chain(int n)
{
	AuditChain ch;
	audit_chain_init(&ch, NULL);
	char **lines = calloc((size_t)n, sizeof(char *));
	for (int i = 0; i < n; i++) {
		json_t *r = rec_with(i == 0 ? "session_start" : "statement", "s-1");
		json_object_set_new(r, "seq", json_integer(i));
		size_t len;
		lines[i] = audit_chain_seal(&ch, r, &len);
		json_decref(r);
	}
	return lines;
}

static void free_chain(char **lines, int n)
{
	for (int i = 0; i < n; i++)
		free(lines[i]);
	free(lines);
}

Test(audit, verify_accepts_an_intact_chain)
{
	char **lines = make_chain(5);
	AuditVerifier v;
	audit_verifier_init(&v);
	for (int i = 0; i < 5; i++)
		cr_expect(audit_verify_line(&v, lines[i], strlen(lines[i])), "line %d: %s", i + 1, v.error);
	cr_expect_eq(v.records, 5);
	cr_expect_str_eq(v.first_prev, AUDIT_GENESIS);
	free_chain(lines, 5);
}

Test(audit, verify_names_a_changed_line_by_the_next_one)
{
	char **lines = make_chain(4);
	/* change seq 1 -> 7 in line 2: line 2 still parses, line 3's prev no longer matches */
	char *p = strstr(lines[1], "\"seq\":1");
	cr_assert_not_null(p);
	p[6] = '7';
	AuditVerifier v;
	audit_verifier_init(&v);
	bool ok = true;
	for (int i = 0; i < 4 && ok; i++)
		ok = audit_verify_line(&v, lines[i], strlen(lines[i]));
	cr_expect(!ok);
	cr_expect_eq(v.bad_line, 3);
	cr_expect(strstr(v.error, "prev mismatch") != NULL, "%s", v.error);
	free_chain(lines, 4);
}

Test(audit, verify_names_a_deleted_line)
{
	char **lines = make_chain(4);
	AuditVerifier v;
	audit_verifier_init(&v);
	cr_expect(audit_verify_line(&v, lines[0], strlen(lines[0])));
	cr_expect(!audit_verify_line(&v, lines[2], strlen(lines[2])));
	cr_expect_eq(v.bad_line, 2);
	free_chain(lines, 4);
}

Test(audit, verify_rejects_bad_json_and_bad_shapes)
{
	const char *bad[] = {
		"{\"ts\":\"x\"",
		"[1,2]",
		"{\"ts\":\"x\",\"event\":\"statement\",\"session\":\"s\",\"prev\":\"00\"}",
		"{\"ts\":\"x\",\"event\":\"nope\",\"session\":\"s\",\"prev\":\"" AUDIT_GENESIS "\"}",
		"{\"event\":\"statement\",\"session\":\"s\",\"prev\":\"" AUDIT_GENESIS "\"}",
		"{\"ts\":\"x\",\"ts\":\"y\",\"event\":\"statement\",\"session\":\"s\",\"prev\":\"" AUDIT_GENESIS "\"}",
		"",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		AuditVerifier v;
		audit_verifier_init(&v);
		cr_expect(!audit_verify_line(&v, bad[i], strlen(bad[i])), "accepted: %s", bad[i]);
		cr_expect_eq(v.bad_line, 1);
		cr_expect(v.error[0] != '\0');
		/* sticky: later lines are not judged */
		cr_expect(!audit_verify_line(&v, "{}", 2));
		cr_expect_eq(v.bad_line, 1);
	}
}

Test(audit, a_rotated_file_continues_the_chain_from_its_anchor)
{
	AuditChain ch;
	char anchor[AUDIT_HASH_HEX + 1];
	audit_line_hash("previous file's last line", 25, anchor);
	audit_chain_init(&ch, anchor);
	json_t *r = rec_with("statement", "s-2");
	size_t len;
	char *line = audit_chain_seal(&ch, r, &len);
	AuditVerifier v;
	audit_verifier_init(&v);
	cr_expect(audit_verify_line(&v, line, len), "%s", v.error);
	cr_expect_str_eq(v.first_prev, anchor);
	free(line);
	json_decref(r);
}

Test(audit, non_utf8_text_is_kept_escaped)
{
	json_t *r = json_object();
	audit_put_str(r, "sql", "select '\xff'");
	audit_put_str(r, "none", NULL);
	cr_expect_str_eq(json_string_value(json_object_get(r, "sql")), "select '\\xff'");
	cr_expect(json_is_null(json_object_get(r, "none")));
	json_decref(r);
}

/* ---- a session through the hooks, without sockets: records reach the file in order */

#include <stdio.h>
#include <unistd.h>
#include "../../src/audit.h"
#include "../../src/sqlinfo.h"

typedef struct SessionFixture {
	char path[64];
	Worker worker;
	Client client;
} SessionFixture;

static void fixture_start(SessionFixture *f, bool sql_full)
{
	memset(f, 0, sizeof(*f));
	strcpy(f->path, "/tmp/pgmoat-audit-unit-XXXXXX");
	int fd = mkstemp(f->path);
	cr_assert(fd >= 0);
	close(fd);
	AuditConfig ac = { .sink = AUDIT_SINK_FILE, .path = f->path, .sql_full = sql_full,
			   .queue_size = 1024 };
	char err[256];
	cr_assert(audit_start(&ac, err, sizeof(err)), "%s", err);
	f->client.worker = &f->worker;
	f->client.id = 7;
	f->client.user_name = "alice";
	f->client.db_name = "app";
	f->client.tx_status = 'I';
	strcpy(f->client.remote.host, "127.0.0.1");
	cr_assert(audit_session_start(&f->client));
}

/* Stop the writer (drains) and return the file's records. */
static json_t *fixture_finish(SessionFixture *f)
{
	audit_session_end(&f->client, "bye");
	audit_stop();
	if (f->worker.audit_sql)
		sqlinfo_cache_free(f->worker.audit_sql);
	FILE *fp = fopen(f->path, "r");
	cr_assert_not_null(fp);
	json_t *all = json_array();
	char line[8192];
	AuditVerifier v;
	audit_verifier_init(&v);
	while (fgets(line, sizeof(line), fp)) {
		size_t n = strlen(line);
		if (n && line[n - 1] == '\n')
			line[--n] = '\0';
		cr_expect(audit_verify_line(&v, line, n), "%s", v.error);
		json_array_append_new(all, json_loads(line, 0, NULL));
	}
	fclose(fp);
	unlink(f->path);
	return all;
}

static const char *field(json_t *all, size_t i, const char *key)
{
	return json_string_value(json_object_get(json_array_get(all, i), key));
}

static void reply(Client *c, uint8_t type, const char *text)
{
	audit_server_reply(c, type, (const uint8_t *)text, strlen(text) + 1);
}

Test(audit, a_multi_statement_query_is_followed_to_each_answer)
{
	SessionFixture f;
	fixture_start(&f, false);
	Client *c = &f.client;
	audit_judged(c, 'Q', "", "SELECT 'a@b.c'; UPDATE t SET x = 1 WHERE y = 2; SELECT 3", NULL, false);
	reply(c, 'C', "SELECT 1");
	uint8_t err[] = { 'C', '4', '2', 'P', '0', '1', 0, 0 };
	audit_server_reply(c, 'E', err, sizeof(err));
	audit_server_reply(c, 'Z', (const uint8_t *)"I", 1);
	json_t *all = fixture_finish(&f);
	cr_assert_eq(json_array_size(all), 5);
	cr_expect_str_eq(field(all, 0, "event"), "session_start");
	cr_expect_str_eq(field(all, 1, "sql"), "SELECT $1");
	cr_expect_str_eq(field(all, 1, "outcome"), "ok");
	cr_expect_str_eq(field(all, 2, "kind"), "update");
	cr_expect_str_eq(field(all, 2, "outcome"), "error");
	cr_expect_str_eq(field(all, 2, "sqlstate"), "42P01");
	cr_expect_str_eq(field(all, 3, "outcome"), "skipped");
	cr_expect_str_eq(field(all, 4, "event"), "session_end");
	cr_expect_str_eq(field(all, 4, "reason"), "bye");
	json_decref(all);
}

Test(audit, released_holds_are_recorded_as_approved_or_rejected)
{
	SessionFixture f;
	fixture_start(&f, true);
	Client *c = &f.client;
	PolicyDecision d = { .verdict = POLICY_HOLD, .enforced = POLICY_HOLD, .policy = "g.lua",
			     .message = "needs a reviewer" };
	audit_released(c, 'Q', NULL, "DROP TABLE t", &d, false);
	audit_released(c, 'Q', NULL, "TRUNCATE t", &d, true);
	reply(c, 'C', "TRUNCATE TABLE");
	audit_server_reply(c, 'Z', (const uint8_t *)"I", 1);
	audit_approval("a-1", c, NULL, "bob", "approved", 1500);
	json_t *all = fixture_finish(&f);
	cr_assert_eq(json_array_size(all), 5);
	cr_expect_str_eq(field(all, 1, "decision"), "rejected");
	cr_expect_str_eq(field(all, 1, "outcome"), "denied");
	cr_expect_str_eq(field(all, 1, "sql"), "DROP TABLE t");
	cr_expect_str_eq(field(all, 2, "decision"), "approved");
	cr_expect_str_eq(field(all, 2, "outcome"), "ok");
	cr_expect_str_eq(field(all, 2, "reason"), "needs a reviewer");
	cr_expect_str_eq(field(all, 3, "event"), "approval");
	cr_expect_str_eq(field(all, 3, "reviewer"), "bob");
	cr_expect_str_eq(field(all, 3, "session"), field(all, 0, "session"));
	json_decref(all);
}
