/*
 * pgmoat's own console commands, beyond pgbouncer (no column contract):
 * the approval queue of held statements (SHOW APPROVALS, APPROVE id,
 * DENY id [reason]), the loaded policies (SHOW POLICIES) and what
 * evaluating them costs (SHOW POLICY_STATS).
 */
#include "admin_int.h"
#include "approvals.h"
#include "histogram.h"
#include "policy.h"

#include <inttypes.h>
#include <stdlib.h>
/*
 * SHOW POLICY_STATS (pgmoat only, no pgbouncer column contract): what policy
 * evaluation costs per statement, from each worker's latency histograms.
 * on_query covers classifying the statement and every policy's on_query;
 * on_query_lua only the time inside Lua (its errors are on_query's).
 */
static const AdminColumn policy_stats_cols[] = {
	{ "hook", COLTYPE_TEXT }, { "calls", COLTYPE_NUMERIC }, { "errors", COLTYPE_NUMERIC },
	{ "avg_us", COLTYPE_NUMERIC }, { "p50_us", COLTYPE_NUMERIC }, { "p90_us", COLTYPE_NUMERIC },
	{ "p99_us", COLTYPE_NUMERIC }, { "max_us", COLTYPE_NUMERIC },
};

static void row_ns_as_us(Row *r, uint64_t ns)
{
	admin_row_fmt(r, "%" PRIu64 ".%03" PRIu64, ns / 1000, ns % 1000);
}

/* errors NULL: not counted for this row (SQL NULL). */
static void policy_stats_row(ResultSet *rs, const char *hook, const Histogram *w_hist,
			     const uint64_t *errors)
{
	Histogram h;
	Row r;

	histogram_init(&h);
	histogram_merge(&h, w_hist);	/* every worker's, once there are more */
	admin_row_reset(&r);
	admin_row_str(&r, hook);
	admin_row_u64(&r, h.count);
	if (errors)
		admin_row_u64(&r, *errors);
	else
		admin_row_str(&r, NULL);
	row_ns_as_us(&r, histogram_mean(&h));
	row_ns_as_us(&r, histogram_percentile(&h, 50));
	row_ns_as_us(&r, histogram_percentile(&h, 90));
	row_ns_as_us(&r, histogram_percentile(&h, 99));
	row_ns_as_us(&r, h.max);
	admin_rs_row(rs, &r);
}

void admin_show_policy_stats(Client *c)
{
	ResultSet rs;
	const Worker *w = moat->worker;

	RS_BEGIN(&rs, policy_stats_cols);
	policy_stats_row(&rs, "on_query", &w->on_query_ns, &w->on_query_errors);
	policy_stats_row(&rs, "on_query_lua", &w->on_query_lua_ns, NULL);
	admin_rs_send(c, &rs, "SHOW");
}

/* ------------------------------------------- approvals and policies (hold) */

static const AdminColumn approval_cols[] = {
	{ "id", COLTYPE_INT8 }, { "client", COLTYPE_TEXT }, { "user", COLTYPE_TEXT },
	{ "database", COLTYPE_TEXT }, { "statement", COLTYPE_TEXT }, { "reason", COLTYPE_TEXT },
	{ "policy", COLTYPE_TEXT }, { "protocol", COLTYPE_TEXT }, { "server", COLTYPE_TEXT },
	{ "held_at", COLTYPE_TEXT }, { "wait", COLTYPE_INT4 }, { "wait_us", COLTYPE_INT4 },
	{ "timeout_at", COLTYPE_TEXT }, { "replica", COLTYPE_TEXT },
};

static void approval_row(ResultSet *rs, const ApprovalInfo *ai)
{
	char held[64], until[64];
	Row r;

	admin_format_time(held, sizeof(held), ai->held_at);
	admin_format_time(until, sizeof(until), ai->timeout_at);
	admin_row_reset(&r);
	admin_row_u64(&r, ai->id);
	admin_row_fmt(&r, "C-%" PRIu64, ai->client_id);
	admin_row_str(&r, ai->user);
	admin_row_str(&r, ai->database);
	admin_row_str(&r, ai->statement);
	admin_row_str(&r, ai->reason);
	admin_row_str(&r, ai->policy);
	admin_row_str(&r, ai->protocol);
	if (ai->server_id)
		admin_row_fmt(&r, "S-%" PRIu64, ai->server_id);
	else
		admin_row_str(&r, NULL);
	admin_row_str(&r, held);
	admin_row_int(&r, ai->waited / USEC_PER_SEC);
	admin_row_int(&r, ai->waited % USEC_PER_SEC);
	admin_row_str(&r, until);
	admin_row_str(&r, ai->replica);
	admin_rs_row(rs, &r);
}

void admin_show_approvals(Client *c)
{
	int n;
	ApprovalInfo *list = approvals_list(&n);
	ResultSet rs;

	RS_BEGIN(&rs, approval_cols);
	for (int i = 0; i < n; i++)
		approval_row(&rs, &list[i]);
	free(list);
	admin_rs_send(c, &rs, "SHOW");
}

static const AdminColumn policy_cols[] = {
	{ "position", COLTYPE_INT4 }, { "file", COLTYPE_TEXT }, { "hooks", COLTYPE_TEXT },
	{ "mode", COLTYPE_TEXT },
};

void admin_show_policies(Client *c)
{
	const PolicyEngine *e = c->worker->policy;
	int n = e ? policy_engine_script_count(e) : 0;
	ResultSet rs;

	RS_BEGIN(&rs, policy_cols);
	for (int i = 0; i < n; i++) {
		char hooks[128];
		Row r;

		policy_engine_script_hooks(e, i, hooks, sizeof(hooks));
		admin_row_reset(&r);
		admin_row_int(&r, i + 1);
		admin_row_str(&r, policy_engine_script_path(e, i));
		admin_row_str(&r, hooks);
		admin_row_str(&r, policy_mode_name(moat->cfg->policy.mode));
		admin_rs_row(&rs, &r);
	}
	admin_rs_send(c, &rs, "SHOW");
}

/* An approval id: a positive decimal number. */
static bool admin_parse_approval_id(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return false;
	v = strtoull(s, &end, 10);
	if (*end || v == 0)
		return false;
	*out = v;
	return true;
}

/* Who decided, for the logs and the audit record: the console user. */
static const char *admin_reviewer(const Client *c)
{
	return c->user_name ? c->user_name : "(console)";
}

/* The answer to APPROVE/DENY; a decision sent to another replica says so in a notice. */
static void admin_decided(Client *c, ApprovalResult r, const char *tag, uint64_t id)
{
	PktBuf pb;

	if (r == APPROVAL_NOT_FOUND) {
		admin_error_code(c, "42704", "no such approval: %" PRIu64
				 " (already decided, timed out, or its client left)", id);
		return;
	}
	slog_info(c, "%s %" PRIu64 "%s", tag, id, r == APPROVAL_FORWARDED ? " (forwarded)" : "");
	pktbuf_init(&pb);
	if (r == APPROVAL_FORWARDED)
		pktbuf_notice(&pb, "00000", "held by another replica: the decision was sent to it, "
			      "which applies it if the statement still waits");
	pktbuf_command_complete(&pb, tag);
	pktbuf_ready(&pb, 'I');
	admin_send(c, &pb);
}

void admin_cmd_approve(Client *c, const char *arg)
{
	uint64_t id;

	if (!admin_parse_approval_id(arg, &id)) {
		admin_error_code(c, "22023", "APPROVE needs an approval id (SHOW APPROVALS)");
		return;
	}
	admin_decided(c, approvals_approve(id, admin_reviewer(c)), "APPROVE", id);
}

void admin_deny(Client *c, const char *idtext, const char *reason)
{
	uint64_t id;

	if (!admin_parse_approval_id(idtext, &id)) {
		admin_error_code(c, "22023", "DENY needs an approval id (SHOW APPROVALS)");
		return;
	}
	admin_decided(c, approvals_deny(id, admin_reviewer(c), reason), "DENY", id);
}

void admin_cmd_deny(Client *c, const char *arg)
{
	admin_deny(c, arg, "");
}

