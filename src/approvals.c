#include "approvals.h"
#include "approvals_pg.h"
#include "audit.h"
#include "client.h"
#include "pktbuf.h"
#include "sqlinfo.h"

#include <stdlib.h>
#include <string.h>

struct Approval {
	List head;		/* in approval_queue, oldest first */
	uint64_t id;
	Client *client;		/* the holder; the approval dies with it */
	uint8_t *msg;		/* the held message, whole (owned) */
	size_t len;
	char *statement;	/* normalized, for reviewers and logs */
	char *reason;
	char *policy;
	const char *protocol;
	usec_t held_at;		/* wall */
	usec_t held_mono;
	usec_t timeout;
	struct event *timer;
	PktBuf notice;		/* not sent yet: the server was mid-message to the client */
	bool notice_pending;
};

static List approval_queue = { &approval_queue, &approval_queue };
static uint64_t approval_next_id;

/* Every decision on a hold, including timeouts and abandonment, is an audit record. */
void approvals_emit_event(const ApprovalEvent *ev)
{
	char id[32];
	char session[32];

	snprintf(id, sizeof(id), "%llu", (unsigned long long)ev->id);
	snprintf(session, sizeof(session), "C-%llu", (unsigned long long)ev->client_id);
	audit_approval(id, ev->client, session, ev->reviewer, ev->decision, ev->waited_ms);
}

static Approval *approval_find(uint64_t id)
{
	List *item;
	list_for_each(item, &approval_queue) {
		Approval *a = container_of(item, Approval, head);
		if (a->id == id)
			return a;
	}
	return NULL;
}

/* The statement as reviewers see it: each statement normalized (literals removed). */
static char *approval_statement(Client *c, const uint8_t *msg, size_t total)
{
	const char *sql = (const char *)msg + PROTO_HEADER_LEN;
	if (msg[0] == 'P')
		sql += strnlen(sql, total - PROTO_HEADER_LEN) + 1;	/* past the statement name */
	SqlInfo *info = policy_engine_classify(c->worker->policy, sql, strlen(sql));
	char *out = NULL;
	for (int i = 0; info->ok && i < info->nstmts; i++) {
		const char *norm = sqlinfo_stmt_normalized(&info->stmts[i]);
		char *next = out ? xasprintf("%s; %s", out, norm) : xstrdup(norm);
		free(out);
		out = next;
	}
	policy_engine_release(c->worker->policy, info);
	return out ? out : xstrdup("(statement that could not be parsed)");
}

static void approval_free(Approval *a)
{
	approvals_pg_gone(a->id);
	list_del(&a->head);
	if (a->timer)
		event_free(a->timer);
	pktbuf_free(&a->notice);
	free(a->msg);
	free(a->statement);
	free(a->reason);
	free(a->policy);
	free(a);
}

static void approval_emit(const Approval *a, const char *reviewer, const char *decision,
			  const char *reason)
{
	Client *c = a->client;
	ApprovalEvent ev = {
		.id = a->id, .client = c, .client_id = c->id, .user = c->user_name, .database = c->db_name,
		.statement = a->statement, .reviewer = reviewer, .decision = decision,
		.reason = reason,
		.waited_ms = (int64_t)((util_now_mono() - a->held_mono) / 1000),
	};
	approvals_emit_event(&ev);
}

/*
 * Hand the ruling to the client: the held message goes back to the front of
 * its input and is judged again, where enforce.c applies the ruling.
 */
static void approval_settle(Approval *a, bool approved, const char *sqlstate, const char *message,
			    const char *reviewer, const char *decision)
{
	Client *c = a->client;
	approval_emit(a, reviewer, decision, approved ? NULL : message);
	ApprovalRuling *r = xcalloc(1, sizeof(*r));
	r->msg = a->msg;
	r->len = a->len;
	a->msg = NULL;
	r->approved = approved;
	snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", sqlstate ? sqlstate : "");
	r->message = message ? xstrdup(message) : NULL;
	r->reviewer = xstrdup(reviewer ? reviewer : decision);
	r->id = a->id;
	c->held = NULL;
	approval_free(a);
	approvals_ruling_free(c->ruling);
	c->ruling = r;
	if (evbuffer_prepend(c->in.buf, r->msg, r->len) != 0) {
		client_disconnect(c, "53200", "could not resume the held statement");
		return;
	}
	msgio_reader_kick(&c->in);
}

static void approval_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	Approval *a = arg;
	char msg[256];
	(void)fd;
	(void)what;
	snprintf(msg, sizeof(msg), "statement held for approval %llu timed out after %llds "
		 "without a reviewer's decision: denied", (unsigned long long)a->id,
		 (long long)(a->timeout / USEC_PER_SEC));
	slog_info(a->client, "approval %llu timed out: denied", (unsigned long long)a->id);
	approval_settle(a, false, "42501", msg, NULL, "timeout");
}

static void approval_build_notice(Approval *a)
{
	char *text = xasprintf("statement held for approval %llu (%s): waiting for a reviewer; "
			       "on the admin console: APPROVE %llu or DENY %llu [reason]",
			       (unsigned long long)a->id, a->reason, (unsigned long long)a->id,
			       (unsigned long long)a->id);
	pktbuf_notice(&a->notice, "01000", text);
	free(text);
}

static void approval_send_notice(Approval *a)
{
	a->notice_pending = false;
	if (!client_send_pktbuf(a->client, &a->notice))
		slog_warning(a->client, "could not send the hold notice of approval %llu",
			     (unsigned long long)a->id);
	pktbuf_free(&a->notice);
}

static void approval_info(const Approval *a, ApprovalInfo *ai, usec_t now)
{
	memset(ai, 0, sizeof(*ai));
	ai->id = a->id;
	ai->client_id = a->client->id;
	ai->user = a->client->user_name;
	ai->database = a->client->db_name;
	ai->statement = a->statement;
	ai->reason = a->reason;
	ai->policy = a->policy;
	ai->protocol = a->protocol;
	ai->server_id = a->client->link ? a->client->link->id : 0;
	ai->held_at = a->held_at;
	ai->waited = now - a->held_mono;
	ai->timeout_at = a->held_at + a->timeout;
}

/*
 * Sequential ids are easy to type; shared with other replicas they would
 * collide, so there they are random 9-digit numbers, unique among those known.
 */
static uint64_t approval_new_id(void)
{
	if (!approvals_pg_active())
		return ++approval_next_id;
	for (;;) {
		uint64_t r = 0;
		if (!util_random_bytes(&r, sizeof(r)))
			r = util_now_mono();
		uint64_t id = 100000000 + r % 900000000;
		if (!approval_find(id) && !approvals_pg_knows(id))
			return id;
	}
}

void approvals_announce_all(void)
{
	usec_t now = util_now_mono();
	List *item;
	list_for_each(item, &approval_queue) {
		ApprovalInfo ai;
		approval_info(container_of(item, Approval, head), &ai, now);
		approvals_pg_announce(&ai);
	}
}

void approvals_hold(Client *c, Server *s, const uint8_t *msg, size_t total, const PolicyDecision *d)
{
	Approval *a = xcalloc(1, sizeof(*a));
	pktbuf_init(&a->notice);
	a->id = approval_new_id();
	a->client = c;
	a->msg = xmalloc(total);
	memcpy(a->msg, msg, total);
	a->len = total;
	a->statement = approval_statement(c, msg, total);
	a->reason = xstrdup(d->message ? d->message : "statement held for approval");
	a->policy = xstrdup(d->policy ? d->policy : "(engine)");
	a->protocol = msg[0] == 'P' ? "extended" : "simple";
	a->held_at = util_now_wall();
	a->held_mono = util_now_mono();
	a->timeout = moat->cfg->approvals_timeout > 0 ? moat->cfg->approvals_timeout
						      : APPROVALS_DEFAULT_TIMEOUT;
	list_append(&approval_queue, &a->head);
	c->held = a;
	a->timer = evtimer_new(c->worker->base, approval_timeout_cb, a);
	struct timeval tv = { (time_t)(a->timeout / USEC_PER_SEC),
			      (suseconds_t)(a->timeout % USEC_PER_SEC) };
	if (!a->timer || evtimer_add(a->timer, &tv) != 0) {
		/* Without a timeout the client could wait forever: refuse at once. */
		slog_error(c, "could not start the timer of approval %llu", (unsigned long long)a->id);
		approval_settle(a, false, "42501", "statement held for approval, and the approval "
			       "could not be queued: denied", NULL, "rejected");
		return;
	}
	ApprovalInfo ai;
	approval_info(a, &ai, a->held_mono);
	approvals_pg_announce(&ai);
	slog_info(c, "approval %llu: statement held by policy %s (%s)%s: %s",
		  (unsigned long long)a->id, a->policy, a->reason,
		  s ? ", keeping its server in the transaction" : "", a->statement);
	approval_build_notice(a);
	a->notice_pending = true;
	/* Never inside a message the server is still streaming to the client. */
	if (!s || s->fwd_remaining == 0)
		approval_send_notice(a);
	else
		slog_debug(c, "approval %llu: notice deferred until the server's message ends",
			   (unsigned long long)a->id);
}

void approvals_flush_notice(Client *c)
{
	if (c->held && c->held->notice_pending)
		approval_send_notice(c->held);
}

ApprovalInfo *approvals_list(int *count)
{
	int n = 0;
	List *item;
	list_for_each(item, &approval_queue)
		n++;
	ApprovalInfo *out = xcalloc((size_t)(n ? n : 1), sizeof(*out));
	usec_t now = util_now_mono();
	int i = 0;
	list_for_each(item, &approval_queue)
		approval_info(container_of(item, Approval, head), &out[i++], now);
	approvals_pg_remote(&out, &n);
	*count = n;
	return out;
}

ApprovalResult approvals_approve(uint64_t id, const char *reviewer)
{
	Approval *a = approval_find(id);
	if (!a)
		return approvals_pg_forward(id, true, reviewer, NULL) ? APPROVAL_FORWARDED
								      : APPROVAL_NOT_FOUND;
	slog_info(a->client, "approval %llu approved by %s after %llds", (unsigned long long)id,
		  reviewer, (long long)((util_now_mono() - a->held_mono) / USEC_PER_SEC));
	approval_settle(a, true, NULL, NULL, reviewer, "approved");
	return APPROVAL_OK;
}

ApprovalResult approvals_deny(uint64_t id, const char *reviewer, const char *reason)
{
	Approval *a = approval_find(id);
	if (!a)
		return approvals_pg_forward(id, false, reviewer, reason) ? APPROVAL_FORWARDED
									 : APPROVAL_NOT_FOUND;
	char *msg = reason && *reason
		    ? xasprintf("statement held for approval %llu was denied by %s: %s",
				(unsigned long long)id, reviewer, reason)
		    : xasprintf("statement held for approval %llu was denied by %s",
				(unsigned long long)id, reviewer);
	slog_info(a->client, "approval %llu denied by %s%s%s", (unsigned long long)id, reviewer,
		  reason && *reason ? ": " : "", reason ? reason : "");
	approval_settle(a, false, "42501", msg, reviewer, "rejected");
	free(msg);
	return APPROVAL_OK;
}

/* A decision another replica's reviewer sent for one of ours. */
void approvals_decide_remote(uint64_t id, bool approve, const char *reviewer, const char *reason)
{
	if (!approval_find(id)) {
		/* Decided here meanwhile, timed out, or its client left. */
		log_info("approvals store: decision by %s for approval %llu ignored: no longer "
			 "waiting here", reviewer, (unsigned long long)id);
		return;
	}
	if (approve)
		(void)approvals_approve(id, reviewer);
	else
		(void)approvals_deny(id, reviewer, reason);
}

void approvals_cancel(Client *c)
{
	Approval *a = c->held;
	if (!a)
		return;
	slog_info(c, "approval %llu canceled by the client", (unsigned long long)a->id);
	approval_settle(a, false, "57014", "canceling statement due to user request", NULL,
			"canceled");
}

void approvals_forget(Client *c)
{
	if (c->held) {
		Approval *a = c->held;
		slog_info(c, "approval %llu dropped: the client left; the statement never runs",
			  (unsigned long long)a->id);
		approval_emit(a, NULL, "abandoned", NULL);
		c->held = NULL;
		approval_free(a);
	}
	approvals_ruling_free(c->ruling);
	c->ruling = NULL;
}

ApprovalRuling *approvals_take_ruling(Client *c, const uint8_t *msg, size_t total)
{
	ApprovalRuling *r = c->ruling;
	if (!r)
		return NULL;
	c->ruling = NULL;
	if (r->len == total && memcmp(r->msg, msg, total) == 0)
		return r;
	/* Not the held message (cannot happen: it went back in front): the ruling lapses. */
	slog_warning(c, "ruling of approval %llu lapsed: a different message came first",
		     (unsigned long long)r->id);
	approvals_ruling_free(r);
	return NULL;
}

void approvals_ruling_free(ApprovalRuling *r)
{
	if (!r)
		return;
	free(r->msg);
	free(r->message);
	free(r->reviewer);
	free(r);
}
