/*
 * `pgmoat try`: the policy authoring loop, no server involved.
 *
 * A case file is tab-separated, one case per line ('#' starts a comment line):
 *
 *   expected <TAB> user <TAB> claims <TAB> sql
 *
 * expected is allow | deny | rewrite | hold, optionally followed by
 * "~text": text must then occur in the deny/hold message or in the
 * rewritten SQL. user and claims may be "-" (default user "try", no claims).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "policy.h"
#include "try.h"
#include "enforce.h"

#define TRY_MAX_LINE (1024 * 1024)

typedef struct TryOptions {
	const char *config;
	const char *user;
	const char *db;
	const char *claims;
	const char *role;
	const char *cases;
	bool extended;
} TryOptions;

static void try_usage(FILE *f)
{
	fprintf(f, "usage: pgmoat try CONFIG [--user U] [--db D] [--claims JSON] [--role R] "
		   "[--extended] SQL...\n"
		   "       pgmoat try CONFIG --cases FILE\n"
		   "CONFIG is a pgmoat.yaml with a policy block, or one policy .lua file.\n");
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* The engine for CONFIG: its policy block, or the single .lua given. */
PolicyEngine *try_engine(const char *path)
{
	char err[1024] = "";
	PolicyConfig pc;
	policy_config_init(&pc);
	if (ends_with(path, ".lua")) {
		strlist_add(&pc.scripts, path);
	} else {
		Config *cfg = config_load(path, err, sizeof(err));
		if (!cfg) {
			fprintf(stderr, "pgmoat try: %s\n", err);
			policy_config_free(&pc);
			return NULL;
		}
		policy_config_free(&pc);
		policy_config_copy(&pc, &cfg->policy);
		config_free(cfg);
		if (pc.scripts.count == 0)
			fprintf(stderr, "pgmoat try: %s has no policy.scripts\n", path);
	}
	PolicyEngine *e = policy_engine_new(&pc, err, sizeof(err));
	if (!e)
		fprintf(stderr, "pgmoat try: %s\n", err);
	policy_config_free(&pc);
	if (e)
		policy_engine_set_trace(e, true);
	return e;
}

static const char *or_dash(const char *s)
{
	return s ? s : "-";
}

static void try_print_decision(const char *sql, const PolicyDecision *d)
{
	printf("SQL: %s\n", sql);
	for (int i = 0; i < d->ntrace; i++) {
		const PolicyTrace *t = &d->trace[i];
		printf("  statement %d  %-20s %-7s %s\n", t->stmt + 1, t->policy,
		       policy_verdict_name(t->verdict), t->message ? t->message : "");
	}
	printf("  => %s", policy_verdict_name(d->verdict));
	if (d->enforced != d->verdict)
		printf(" (dry_run: enforced %s)", policy_verdict_name(d->enforced));
	if (d->policy)
		printf(" by %s", d->policy);
	if (d->message)
		printf(": %s", d->message);
	if (d->where)
		printf(" [%s]", d->where);
	printf("\n");
	if (d->rewritten_sql)
		printf("  rewritten: %s\n", d->rewritten_sql);
}

/* One Query for one identity; on_connect runs first and may deny. */
static void try_run(PolicyEngine *e, const TryOptions *o, const char *user, const char *claims,
		    const char *sql, PolicyDecision *d)
{
	PolicySession s = { .id = 1, .user = user, .database = o->db, .application_name = "pgmoat try",
			    .client_addr = "127.0.0.1", .claims_json = claims, .role = o->role };
	policy_session_open(e, &s, d);
	if (d->verdict != POLICY_DENY) {
		policy_decision_free(d);
		policy_on_query(e, &s, sql, strlen(sql), o->extended ? "extended" : "simple", NULL,
				false, d);
		/* masking's statement guard, as on the wire (no catalog: views are not known) */
		if (d->verdict == POLICY_ALLOW || d->verdict == POLICY_REWRITE)
			(void)enforce_mask_guard(e, d->rewritten_sql ? d->rewritten_sql : sql, NULL,
						 false, d, NULL);
	}
	policy_session_close(e, &s);
}

static int try_sql(PolicyEngine *e, const TryOptions *o, int n, char **sqls)
{
	for (int i = 0; i < n; i++) {
		PolicyDecision d;
		try_run(e, o, o->user, o->claims, sqls[i], &d);
		try_print_decision(sqls[i], &d);
		policy_decision_free(&d);
	}
	return 0;
}

/* Split a case line into 4 tab-separated fields (in place). */
static bool case_split(char *line, char **f)
{
	for (int i = 0; i < 3; i++) {
		f[i] = line;
		char *tab = strchr(line, '\t');
		if (!tab)
			return false;
		*tab = '\0';
		line = tab + 1;
	}
	f[3] = line;
	return *f[3] != '\0';
}

typedef struct CaseTally {
	int total;
	int failed;
} CaseTally;

static void case_check(PolicyEngine *e, const TryOptions *o, char **f, const char *file, int line,
		       CaseTally *t)
{
	char *want = f[0];
	char *needle = strchr(want, '~');
	if (needle)
		*needle++ = '\0';
	PolicyVerdict expected;
	t->total++;
	if (!policy_verdict_from_name(want, &expected)) {
		printf("%s:%d: FAIL bad expected decision '%s'\n", file, line, want);
		t->failed++;
		return;
	}
	const char *user = strcmp(f[1], "-") == 0 ? "try" : f[1];
	const char *claims = strcmp(f[2], "-") == 0 ? NULL : f[2];
	PolicyDecision d;
	try_run(e, o, user, claims, f[3], &d);
	const char *text = d.rewritten_sql ? d.rewritten_sql : d.message;
	bool ok = d.verdict == expected && (!needle || (text && strstr(text, needle)));
	if (!ok) {
		t->failed++;
		printf("%s:%d: FAIL expected %s%s%s, got %s by %s: %s\n", file, line, want,
		       needle ? " ~" : "", needle ? needle : "", policy_verdict_name(d.verdict),
		       or_dash(d.policy), or_dash(text));
	} else if (log_enabled(LOG_DEBUG)) {
		printf("%s:%d: ok %s\n", file, line, want);
	}
	policy_decision_free(&d);
}

static int try_cases(PolicyEngine *e, const TryOptions *o)
{
	FILE *fp = fopen(o->cases, "r");
	if (!fp) {
		perror(o->cases);
		return 1;
	}
	char *buf = xmalloc(TRY_MAX_LINE);
	CaseTally t = { 0, 0 };
	int lineno = 0;
	while (fgets(buf, TRY_MAX_LINE, fp)) {
		lineno++;
		size_t n = strlen(buf);
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
			buf[--n] = '\0';
		if (n == 0 || buf[0] == '#')
			continue;
		char *f[4];
		if (!case_split(buf, f)) {
			printf("%s:%d: FAIL malformed case (expected<TAB>user<TAB>claims<TAB>sql)\n",
			       o->cases, lineno);
			t.total++;
			t.failed++;
			continue;
		}
		case_check(e, o, f, o->cases, lineno, &t);
	}
	fclose(fp);
	free(buf);
	printf("%s: %d cases, %d passed, %d failed\n", o->cases, t.total, t.total - t.failed,
	       t.failed);
	return t.failed == 0 && t.total > 0 ? 0 : 1;
}

static bool try_parse_args(int argc, char **argv, TryOptions *o)
{
	static const struct option longopts[] = {
		{ "user", required_argument, NULL, 'U' }, { "db", required_argument, NULL, 'D' },
		{ "claims", required_argument, NULL, 'J' }, { "role", required_argument, NULL, 'R' },
		{ "cases", required_argument, NULL, 'C' }, { "extended", no_argument, NULL, 'X' },
		{ "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
	};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		switch (c) {
		case 'U': o->user = optarg; break;
		case 'D': o->db = optarg; break;
		case 'J': o->claims = optarg; break;
		case 'R': o->role = optarg; break;
		case 'C': o->cases = optarg; break;
		case 'X': o->extended = true; break;
		default: return false;
		}
	}
	return true;
}

int try_main(int argc, char **argv)
{
	TryOptions o = { .user = "try", .db = "postgres" };
	/* CONFIG first, options anywhere after it */
	if (argc < 2 || argv[1][0] == '-') {
		try_usage(stderr);
		return 1;
	}
	o.config = argv[1];
	if (!try_parse_args(argc - 1, argv + 1, &o)) {
		try_usage(stderr);
		return 1;
	}
	int nsql = argc - 1 - optind;
	char **sqls = argv + 1 + optind;
	if ((o.cases && nsql > 0) || (!o.cases && nsql == 0)) {
		try_usage(stderr);
		return 1;
	}
	PolicyEngine *e = try_engine(o.config);
	if (!e)
		return 1;
	int rc = o.cases ? try_cases(e, &o) : try_sql(e, &o, nsql, sqls);
	policy_engine_free(e);
	return rc;
}
