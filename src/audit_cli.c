/*
 * The audit log on the command line:
 *
 *   pgmoat audit verify AUDIT.jsonl
 *   pgmoat replay AUDIT.jsonl [--session ID] [--policy CONFIG]
 *
 * Both read the file as untrusted bytes: lines are bounded (AUDIT_MAX_LINE)
 * and parsed by jansson; verify names the first bad line and what is wrong.
 */
#include "audit.h"
#include "policy.h"
#include "try.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reading lines, bounded ---------------------------------------------- */

typedef struct LineReader {
	FILE *fp;
	char *buf;
	size_t cap;
	size_t len;
	bool too_long;		/* the line was cut at AUDIT_MAX_LINE + 1 bytes */
} LineReader;

/* The next line without its newline; false at end of file. */
static bool line_next(LineReader *lr)
{
	int ch;
	lr->len = 0;
	lr->too_long = false;
	bool any = false;
	while ((ch = getc_unlocked(lr->fp)) != EOF) {
		any = true;
		if (ch == '\n')
			return true;
		if (lr->len > AUDIT_MAX_LINE) {
			lr->too_long = true;
			continue;	/* skip the rest; never hold more than the limit */
		}
		if (lr->len + 1 >= lr->cap) {
			lr->cap = lr->cap ? lr->cap * 2 : 4096;
			lr->buf = xrealloc(lr->buf, lr->cap);
		}
		lr->buf[lr->len++] = (char)ch;
	}
	return any;
}

static FILE *open_input(const char *path)
{
	FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	if (!fp)
		perror(path);
	return fp;
}

/* ---- verify ----------------------------------------------------------- */

static int audit_verify_file(const char *path)
{
	FILE *fp = open_input(path);
	if (!fp)
		return 1;
	LineReader lr = { .fp = fp };
	AuditVerifier v;
	audit_verifier_init(&v);
	while (line_next(&lr)) {
		bool ok = audit_verify_line(&v, lr.buf ? lr.buf : "", lr.too_long ? AUDIT_MAX_LINE + 1
									     : lr.len);
		if (!ok)
			break;
	}
	if (fp != stdin)
		fclose(fp);
	free(lr.buf);
	if (v.failed) {
		printf("%s:%llu: bad record: %s\n", path, (unsigned long long)v.bad_line, v.error);
		printf("FAILED after %llu good records\n", (unsigned long long)v.records);
		return 1;
	}
	printf("ok %llu records", (unsigned long long)v.records);
	if (v.records > 0 && strcmp(v.first_prev, AUDIT_GENESIS) != 0)
		printf(" (continues a chain from %s)", v.first_prev);
	if (v.records > 0)
		printf("; last hash %s", v.prev);
	printf("\n");
	return 0;
}

int audit_cli_main(int argc, char **argv)
{
	if (argc != 3 || strcmp(argv[1], "verify") != 0) {
		fprintf(stderr, "usage: pgmoat audit verify AUDIT.jsonl\n");
		return 1;
	}
	return audit_verify_file(argv[2]);
}

/* ---- replay ----------------------------------------------------------- */

typedef struct ReplayOptions {
	const char *file;
	const char *session;
	const char *policy;
} ReplayOptions;

/* One audited session, re-opened in the new policy engine. */
typedef struct ReplaySession {
	struct ReplaySession *next;
	char *id;
	char *user;
	char *database;
	char *application_name;
	char *client_addr;
	char *claims;		/* JSON text of the recorded claims, or NULL */
	PolicySession ps;
	bool denied_at_connect;
} ReplaySession;

typedef struct Replay {
	ReplayOptions o;
	PolicyEngine *engine;	/* --policy: the set to compare with; else NULL */
	ReplaySession *sessions;
	unsigned long statements;
	unsigned long judged;
	unsigned long differ;
	unsigned long unjudgeable;
} Replay;

static const char *jstr(const json_t *rec, const char *key)
{
	return json_string_value(json_object_get(rec, key));
}

static char *jdup(const json_t *rec, const char *key)
{
	const char *s = jstr(rec, key);
	return s ? xstrdup(s) : NULL;
}

/* One line of text: newlines and tabs become spaces. */
static void print_flat(const char *s)
{
	for (; s && *s; s++)
		putchar(*s == '\n' || *s == '\r' || *s == '\t' ? ' ' : *s);
}

static ReplaySession *replay_session(Replay *r, const json_t *rec)
{
	const char *id = jstr(rec, "session");
	for (ReplaySession *s = r->sessions; s; s = s->next)
		if (strcmp(s->id, id) == 0)
			return s;
	ReplaySession *s = xcalloc(1, sizeof(*s));
	s->id = xstrdup(id);
	s->user = jdup(rec, "user");
	s->database = jdup(rec, "database");
	s->application_name = jdup(rec, "application_name");
	s->client_addr = jdup(rec, "client_addr");
	json_t *claims = json_object_get(rec, "claims");
	if (json_is_object(claims)) {
		json_t *all = json_deep_copy(claims);
		json_t *sub = json_object_get(rec, "sub");
		if (sub)
			json_object_set(all, "sub", sub);
		s->claims = json_dumps(all, JSON_COMPACT);
		json_decref(all);
	}
	s->next = r->sessions;
	r->sessions = s;
	if (r->engine) {
		s->ps.id = r->statements + 1;
		s->ps.user = s->user ? s->user : "";
		s->ps.database = s->database ? s->database : "";
		s->ps.application_name = s->application_name;
		s->ps.client_addr = s->client_addr;
		s->ps.claims_json = s->claims;
		PolicyDecision d = { 0 };
		policy_session_open(r->engine, &s->ps, &d);
		s->denied_at_connect = d.verdict == POLICY_DENY;
		if (s->denied_at_connect) {
			printf("    !! the new policies deny this session at connect: %s\n",
			       d.message ? d.message : "");
		}
		policy_decision_free(&d);
	}
	return s;
}

static void replay_sessions_free(Replay *r)
{
	while (r->sessions) {
		ReplaySession *s = r->sessions;
		r->sessions = s->next;
		if (r->engine)
			policy_session_close(r->engine, &s->ps);
		free(s->id);
		free(s->user);
		free(s->database);
		free(s->application_name);
		free(s->client_addr);
		free(s->claims);
		free(s);
	}
}

/* The recorded decision, as the policies said it (hold covers approved/rejected). */
static const char *recorded_verdict(const json_t *rec)
{
	const char *v = jstr(rec, "policy_verdict");
	if (!v)
		v = jstr(rec, "decision");
	if (v && (strcmp(v, "approved") == 0 || strcmp(v, "rejected") == 0))
		return "hold";
	return v ? v : "allow";
}

/* --policy: judge the recorded SQL again and say where the new set differs. */
static void replay_rejudge(Replay *r, ReplaySession *s, const json_t *rec)
{
	const char *sql = jstr(rec, "sql");
	if (!sql) {
		r->unjudgeable++;
		printf("    -- not re-judged: the record has no SQL text\n");
		return;
	}
	const char *protocol = jstr(rec, "protocol");
	PolicyDecision d = { 0 };
	policy_on_query(r->engine, &s->ps, sql, strlen(sql), protocol ? protocol : "simple",
			jstr(rec, "statement_name"), json_is_true(json_object_get(rec, "in_transaction")),
			&d);
	r->judged++;
	const char *now = policy_verdict_name(d.verdict);
	if (strcmp(now, recorded_verdict(rec)) != 0) {
		r->differ++;
		printf("    !! new policies: %s", now);
		if (d.policy)
			printf(" by %s", d.policy);
		if (d.message) {
			printf(": ");
			print_flat(d.message);
		}
		if (d.rewritten_sql) {
			printf(" -> ");
			print_flat(d.rewritten_sql);
		}
		printf("  (was %s)\n", recorded_verdict(rec));
	}
	policy_decision_free(&d);
}

static void print_statement(Replay *r, const json_t *rec)
{
	json_t *rows = json_object_get(rec, "rows");
	json_t *dur = json_object_get(rec, "duration_us");
	const char *sql = jstr(rec, "sql");
	printf("  #%-4lld %-8s %-9s ", (long long)json_integer_value(json_object_get(rec, "seq")),
	       jstr(rec, "decision") ? jstr(rec, "decision") : "?",
	       jstr(rec, "kind") ? jstr(rec, "kind") : "?");
	if (sql)
		print_flat(sql);
	else
		printf("(no SQL recorded%s%s)", jstr(rec, "unparsed") ? ": " : "",
		       jstr(rec, "unparsed") ? jstr(rec, "unparsed") : "");
	printf("\n        -> %s", jstr(rec, "outcome") ? jstr(rec, "outcome") : "?");
	if (json_is_integer(rows))
		printf(", %lld rows", (long long)json_integer_value(rows));
	if (json_is_integer(dur))
		printf(", %.3f ms", (double)json_integer_value(dur) / 1000.0);
	if (jstr(rec, "sqlstate"))
		printf(", sqlstate %s", jstr(rec, "sqlstate"));
	printf("\n");
	if (jstr(rec, "reason")) {
		printf("        reason: ");
		print_flat(jstr(rec, "reason"));
		if (jstr(rec, "policy"))
			printf(" (%s)", jstr(rec, "policy"));
		printf("\n");
	} else if (jstr(rec, "policy")) {
		printf("        by %s\n", jstr(rec, "policy"));
	}
	if (jstr(rec, "rewritten")) {
		printf("        rewritten: ");
		print_flat(jstr(rec, "rewritten"));
		printf("\n");
	}
}

static void replay_record(Replay *r, const json_t *rec)
{
	const char *event = jstr(rec, "event"), *ts = jstr(rec, "ts");
	const char *id = jstr(rec, "session");
	if (!event || !id || (r->o.session && strcmp(id, r->o.session) != 0))
		return;
	printf("%s  %s  ", ts ? ts : "?", id);
	if (strcmp(event, "session_start") == 0) {
		printf("session start: user %s, database %s, from %s", jstr(rec, "user") ? jstr(rec, "user") : "?",
		       jstr(rec, "database") ? jstr(rec, "database") : "?",
		       jstr(rec, "client_addr") ? jstr(rec, "client_addr") : "?");
		if (jstr(rec, "sub"))
			printf(", sub %s", jstr(rec, "sub"));
		printf("\n");
		replay_session(r, rec);
	} else if (strcmp(event, "statement") == 0) {
		r->statements++;
		printf("statement\n");
		print_statement(r, rec);
		if (r->engine)
			replay_rejudge(r, replay_session(r, rec), rec);
	} else if (strcmp(event, "approval") == 0) {
		printf("approval %s: %s by %s after %lld ms\n", jstr(rec, "id") ? jstr(rec, "id") : "?",
		       jstr(rec, "decision") ? jstr(rec, "decision") : "?",
		       jstr(rec, "reviewer") ? jstr(rec, "reviewer") : "?",
		       (long long)json_integer_value(json_object_get(rec, "waited_ms")));
	} else {
		printf("session end: %lld statements (", (long long)json_integer_value(json_object_get(rec, "statements")));
		print_flat(jstr(rec, "reason") ? jstr(rec, "reason") : "");
		printf(")\n");
	}
}

static bool replay_parse_args(int argc, char **argv, ReplayOptions *o)
{
	static const struct option longopts[] = {
		{ "session", required_argument, NULL, 's' },
		{ "policy", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
		switch (ch) {
		case 's': o->session = optarg; break;
		case 'p': o->policy = optarg; break;
		default: return false;
		}
	}
	return optind == argc;
}

int audit_cli_replay(int argc, char **argv)
{
	Replay r;
	memset(&r, 0, sizeof(r));
	if (argc < 2 || argv[1][0] == '-' || !replay_parse_args(argc - 1, argv + 1, &r.o)) {
		fprintf(stderr, "usage: pgmoat replay AUDIT.jsonl [--session ID] [--policy CONFIG]\n");
		return 1;
	}
	r.o.file = argv[1];
	if (r.o.policy && !(r.engine = try_engine(r.o.policy)))
		return 1;
	FILE *fp = open_input(r.o.file);
	if (!fp) {
		if (r.engine)
			policy_engine_free(r.engine);
		return 1;
	}
	LineReader lr = { .fp = fp };
	unsigned long lineno = 0, bad = 0;
	while (line_next(&lr)) {
		lineno++;
		json_t *rec = lr.too_long ? NULL : json_loadb(lr.buf ? lr.buf : "", lr.len, 0, NULL);
		if (json_is_object(rec))
			replay_record(&r, rec);
		else if (bad++ == 0)
			fprintf(stderr, "%s:%lu: not a record, skipped (pgmoat audit verify tells more)\n",
				r.o.file, lineno);
		json_decref(rec);
	}
	if (fp != stdin)
		fclose(fp);
	free(lr.buf);
	if (r.engine) {
		printf("-- %lu statements, %lu re-judged, %lu decided differently by %s, %lu without SQL\n",
		       r.statements, r.judged, r.differ, r.o.policy, r.unjudgeable);
		replay_sessions_free(&r);
		policy_engine_free(r.engine);
	} else {
		replay_sessions_free(&r);
	}
	if (r.o.session && r.statements == 0 && lineno > 0)
		fprintf(stderr, "no statements of session %s in %s\n", r.o.session, r.o.file);
	return bad > 0 ? 1 : 0;
}
