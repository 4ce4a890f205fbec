#include "enforce.h"
#include "approvals.h"
#include "client.h"
#include "pktbuf.h"
#include "sqlinfo.h"
#include "audit.h"
#include "maskguard.h"
#include "maskwire.h"

#include <strings.h>

#include <stdlib.h>
#include <string.h>

#define DENY_SQLSTATE "42501"

/* A policy error the server has not produced yet: its marker is still in flight. */
struct Denial {
	struct Denial *next;
	int batches_left;	/* ReadyForQuery messages until its batch ends */
	char sqlstate[6];	/* 42501 for policies; 57014 for a held statement that was
				 * canceled; others for enforce_refuse() */
	char *message;
};

static char marker_name[64];	/* pgmoat_denied_<random>: no client can guess it */
static char marker_error[128];	/* the server's message for it */

static bool enforce_marker_init(void)
{
	if (marker_name[0])
		return true;
	uint8_t rnd[8];
	char hex[17];
	if (!util_random_bytes(rnd, sizeof(rnd)))
		return false;
	util_hex(rnd, sizeof(rnd), hex);
	snprintf(marker_name, sizeof(marker_name), "pgmoat_denied_%s", hex);
	snprintf(marker_error, sizeof(marker_error), "prepared statement \"%s\" does not exist",
		 marker_name);
	return true;
}

bool enforce_engine_build(const Config *cfg, PolicyEngine **out, char *err, size_t errlen)
{
	*out = NULL;
	if (cfg->policy.scripts.count == 0)
		return true;
	if (!enforce_marker_init()) {
		snprintf(err, errlen, "could not generate the denial marker");
		return false;
	}
	PolicyEngine *e = policy_engine_new(&cfg->policy, err, errlen);
	if (!e)
		return false;
	*out = e;
	return true;
}

static void enforce_fill_session(Client *c)
{
	PolicySession *ps = &c->psession;
	memset(ps, 0, sizeof(*ps));
	ps->id = c->id;
	ps->user = c->user_name;
	ps->database = c->db_name;
	ps->application_name = c->vars.values[VAR_APPLICATION_NAME];
	ps->client_addr = c->remote.host;
	ps->tls = c->ssl != NULL;
	ps->claims_json = c->jwt_claims;	/* jwt */
	ps->role = c->jwt_role;
}

bool enforce_session_open(Client *c)
{
	PolicyEngine *e = c->worker->policy;
	if (!e || c->is_admin)
		return true;
	enforce_fill_session(c);
	PolicyDecision d = { 0 };
	policy_session_open(e, &c->psession, &d);
	c->psession_open = true;
	bool denied = d.enforced == POLICY_DENY || d.enforced == POLICY_HOLD;
	if (denied) {
		moat->stats.policy_denials++;
		slog_info(c, "connection denied by policy %s: %s", d.policy ? d.policy : "?",
			  d.message ? d.message : "");
		client_disconnect(c, DENY_SQLSTATE, "%s", d.message ? d.message : "denied by policy");
	}
	policy_decision_free(&d);
	return !denied;
}

void enforce_session_close(Client *c)
{
	if (!c->psession_open)
		return;
	c->psession_open = false;
	if (c->worker->policy)
		policy_session_close(c->worker->policy, &c->psession);
}

/* Sessions live in the engine's Lua state: move them when the engine changes. */
static void enforce_move_sessions(Worker *w, PolicyEngine *old, PolicyEngine *fresh)
{
	List *item, *tmp;
	list_for_each_safe(item, &w->all_clients, tmp) {
		Client *c = container_of(item, Client, all_head);
		if (!c->psession_open)
			continue;
		policy_session_close(old, &c->psession);
		c->psession_open = false;
		if (!fresh)
			continue;
		enforce_fill_session(c);
		PolicyDecision d = { 0 };
		policy_session_open(fresh, &c->psession, &d);
		c->psession_open = true;
		policy_decision_free(&d);
	}
}

void enforce_install(Worker *w, PolicyEngine *e)
{
	PolicyEngine *old = w->policy;
	if (old)
		enforce_move_sessions(w, old, e);
	w->policy = e;
	w->masks_active = e && policy_engine_has_masks(e);
	if (e)
		policy_engine_time_lua(e, &w->on_query_lua_ns);	/* SHOW POLICY_STATS */
	if (old)
		policy_engine_free(old);
	maskwire_policies_changed();
}

void enforce_shutdown(Worker *w)
{
	enforce_install(w, NULL);
}

/* ---- the marker ------------------------------------------------------ */

static void enforce_queue_denial(Server *s, const char *sqlstate, const char *message,
				 int batches_left)
{
	struct Denial *d = xcalloc(1, sizeof(*d));
	snprintf(d->sqlstate, sizeof(d->sqlstate), "%s", sqlstate);
	d->message = xstrdup(message);
	d->batches_left = batches_left;
	struct Denial **tail = &s->denials;
	while (*tail)
		tail = &(*tail)->next;
	*tail = d;
}

static void denial_free(struct Denial *d)
{
	free(d->message);
	free(d);
}

void enforce_forget(Server *s)
{
	while (s->denials) {
		struct Denial *d = s->denials;
		s->denials = d->next;
		denial_free(d);
	}
}

void enforce_batch_done(Server *s)
{
	struct Denial **link = &s->denials;
	while (*link) {
		struct Denial *d = *link;
		if (--d->batches_left <= 0) {
			*link = d->next;
			denial_free(d);
		} else {
			link = &d->next;
		}
	}
}

bool enforce_rewrite_error(Server *s, const uint8_t *body, size_t len, PktBuf *pb)
{
	ErrorFields ef;
	if (!s->denials || !proto_parse_error(body, len, &ef) || !ef.message ||
	    strcmp(ef.message, marker_error) != 0)
		return false;
	struct Denial *d = s->denials;
	s->denials = d->next;
	pktbuf_error(pb, "ERROR", d->sqlstate, d->message);
	denial_free(d);
	return true;
}

/*
 * Replace a message by the marker. A Query or FunctionCall becomes a Query
 * that executes the marker (an error, then ReadyForQuery, like the original);
 * a Parse becomes a Bind of it (an error, then discard until Sync).
 */
static void enforce_build_marker(uint8_t type, PktBuf *pb)
{
	if (type == 'P') {
		pktbuf_start(pb, 'B');
		pktbuf_put_cstring(pb, "");
		pktbuf_put_cstring(pb, marker_name);
		pktbuf_put_int16(pb, 0);
		pktbuf_put_int16(pb, 0);
		pktbuf_put_int16(pb, 0);
		pktbuf_finish(pb);
		return;
	}
	char sql[96];
	snprintf(sql, sizeof(sql), "EXECUTE %s", marker_name);
	pktbuf_query(pb, sql);
}

/*
 * Called before the message is accounted on s: its batch ends with the
 * ReadyForQuery after those already pending (a Query's own, a Parse's Sync's).
 */
static void enforce_deny_code(Server *s, uint8_t type, const char *sqlstate, const char *message,
			      PktBuf *pb)
{
	moat->stats.policy_denials++;
	if (!s) {
		/* No server: answer as the server would have. */
		pktbuf_error(pb, "ERROR", sqlstate, message);
		if (type != 'P')
			pktbuf_ready(pb, 'I');
		return;
	}
	enforce_queue_denial(s, sqlstate, message, s->pending_requests + 1);
	enforce_build_marker(type, pb);
}

static void enforce_deny(Server *s, uint8_t type, const char *message, PktBuf *pb)
{
	enforce_deny_code(s, type, DENY_SQLSTATE, message, pb);
}

/*
 * For a message already accounted (client_account_message ran): a Query's
 * batch ends with its own ReadyForQuery, a Parse's with the next Sync's.
 */
bool enforce_refuse(Server *s, uint8_t type, const char *sqlstate, const char *message, PktBuf *pb)
{
	if (!enforce_marker_init())
		return false;
	int batches_left = s->pending_requests + (type == 'P' ? 1 : 0);
	enforce_queue_denial(s, sqlstate, message, batches_left > 0 ? batches_left : 1);
	enforce_build_marker(type, pb);
	return pktbuf_ok(pb);
}

void enforce_deny_oversized(Client *c, Server *s, uint8_t type, PktBuf *pb)
{
	slog_info(c, "statement denied: too large to judge");
	audit_denied_unread(c, type, "statement too large for the policy engine");
	enforce_deny(s, type, "statement too large for the policy engine", pb);
}

/* Parse body: name, query, int16 count, int32 type oids. */
static bool parse_split(const uint8_t *body, size_t len, const char **name, const char **sql,
			const uint8_t **rest, size_t *rest_len)
{
	PktReader r;
	proto_reader_init(&r, body, len);
	if (!proto_read_cstring(&r, name) || !proto_read_cstring(&r, sql))
		return false;
	*rest = r.pos;
	*rest_len = proto_reader_left(&r);
	return true;
}

static void enforce_build_rewrite(uint8_t type, const char *name, const char *sql,
				  const uint8_t *rest, size_t rest_len, PktBuf *pb)
{
	if (type == 'Q') {
		pktbuf_query(pb, sql);
		return;
	}
	pktbuf_start(pb, 'P');
	pktbuf_put_cstring(pb, name);
	pktbuf_put_cstring(pb, sql);
	pktbuf_put_bytes(pb, rest, rest_len);
	pktbuf_finish(pb);
}

/*
 * Parser agreement (THREATS.md): a verdict holds only if PostgreSQL lexes the
 * text as libpg_query did. That needs standard_conforming_strings on, and a
 * client_encoding in which no multibyte character can contain a quote or a
 * backslash byte (SJIS, BIG5, GBK, GB18030, UHC and JOHAB can).
 */
static const char *const agreeing_encodings[] = {
	"UTF8", "UNICODE", "SQL_ASCII", "LATIN1", "LATIN2", "LATIN3", "LATIN4", "LATIN5",
	"LATIN6", "LATIN7", "LATIN8", "LATIN9", "LATIN10", "ISO_8859_5", "ISO_8859_6",
	"ISO_8859_7", "ISO_8859_8", "WIN866", "WIN874", "WIN1250", "WIN1251", "WIN1252",
	"WIN1253", "WIN1254", "WIN1255", "WIN1256", "WIN1257", "WIN1258", "KOI8R", "KOI8U",
	"EUC_JP", "EUC_CN", "EUC_KR", "EUC_TW", "EUC_JIS_2004", NULL,
};

static bool encoding_agrees(const char *enc)
{
	if (enc && strcmp(enc, "UTF8") == 0)
		return true;	/* (what servers report, nearly always: no case folding) */
	for (int i = 0; enc && agreeing_encodings[i]; i++)
		if (strcasecmp(enc, agreeing_encodings[i]) == 0)
			return true;
	return false;
}

/* NULL when the session lexes SQL as the parser does; else why not. */
static const char *enforce_disagreement(const Client *c)
{
	const char *scs = c->vars.values[VAR_STANDARD_CONFORMING_STRINGS];
	if (scs && strcmp(scs, "on") != 0 && strcasecmp(scs, "on") != 0)
		return "standard_conforming_strings is off";
	if (!encoding_agrees(c->vars.values[VAR_CLIENT_ENCODING]))
		return "client_encoding is one the policy parser cannot follow";
	return NULL;
}

/*
 * Could this text change standard_conforming_strings or client_encoding?
 * PostgreSQL reports such changes only just before ReadyForQuery, so until
 * then the proxy cannot know. SET/RESET/DISCARD, transaction ends (which
 * revert SET LOCAL), DO/CALL/EXECUTE and any function call (set_config, or a
 * user function that calls it) all could; unclassifiable text is assumed to.
 */
static bool sql_may_change_lexing(const SqlInfo *info)
{
	static const char *const kinds[] = { "set", "reset", "discard", "do", "call", "execute",
					     "commit", "rollback", "rollback_to", "unknown", NULL };
	if (!info->ok)
		return true;
	for (int i = 0; i < info->nstmts; i++) {
		const SqlStatement *st = &info->stmts[i];
		if (st->functions.count > 0)
			return true;
		for (int k = 0; kinds[k]; k++)
			if (strcmp(st->kind, kinds[k]) == 0)
				return true;
	}
	return false;
}

static bool sql_only_transaction_control(const SqlInfo *info)
{
	if (!info->ok || info->nstmts == 0)
		return false;
	for (int i = 0; i < info->nstmts; i++)
		if (!info->stmts[i].is_transaction_control)
			return false;
	return true;
}

EnforceReady enforce_ready(Client *c, Server *s, uint8_t type)
{
	enforce_settled(s);
	if (!s->lexing_may_change)
		return ENFORCE_NOW;
	/* A Query can wait for the settings to be reported; a Parse in a batch cannot. */
	return type == 'Q' ? ENFORCE_WAIT : ENFORCE_NOW;
}

void enforce_settled(Server *s)
{
	if (s->pending_requests == 0 && !s->unsynced)
		s->lexing_may_change = false;
}

/*
 * Text without quote or backslash bytes lexes the same under any of these
 * settings (they change only how quoted text is read), so it can still be
 * judged: that is how a session switches back (SET standard_conforming_strings
 * = on, RESET ALL).
 */
static bool sql_lexes_alike(const char *sql)
{
	return strpbrk(sql, "'\"\\") == NULL;
}

/* The session's settings disagree with the parser: only text that lexes alike passes. */
static bool enforce_refuse_disagreement(Client *c, Server *s, const char *sql, PolicyDecision *d)
{
	const char *why = enforce_disagreement(c);
	if (!why && !(s && s->lexing_may_change && sql))
		return false;
	if (sql && sql_lexes_alike(sql))
		return false;
	if (sql) {
		SqlInfo *info = policy_engine_classify(c->worker->policy, sql, strlen(sql));
		bool harmless = sql_only_transaction_control(info);
		policy_engine_release(c->worker->policy, info);
		if (harmless)
			return false;
	}
	d->enforced = d->verdict = POLICY_DENY;
	d->message = xasprintf("statement cannot be judged: %s (fail closed)",
			       why ? why : "an earlier statement in this pipeline may change "
					   "how SQL is read");
	return true;
}

static void enforce_log(Client *c, const PolicyDecision *d, const char *sql)
{
	if (d->verdict == POLICY_ALLOW)
		return;
	if (d->verdict == POLICY_REWRITE) {
		slog_info(c, "policy %s: rewrite%s: %s -> %s", d->policy ? d->policy : "(engine)",
			  d->enforced != d->verdict ? " [dry_run]" : "", sql,
			  d->rewritten_sql ? d->rewritten_sql : "");
		return;
	}
	slog_info(c, "policy %s: %s%s%s%s (%s)", d->policy ? d->policy : "(engine)",
		  policy_verdict_name(d->verdict), d->enforced != d->verdict ? " [dry_run]" : "",
		  d->message ? ": " : "", d->message ? d->message : "", d->where ? d->where : sql);
}

/*
 * A reviewer's ruling on this (held) message: denied, it is answered like a
 * policy denial; approved, a policy that holds it again is overruled (it
 * still may deny or rewrite it).
 */
static bool enforce_apply_ruling(Client *c, const ApprovalRuling *r, PolicyDecision *d)
{
	if (!r->approved) {
		d->enforced = d->verdict = POLICY_DENY;
		d->message = xstrdup(r->message ? r->message : "denied by a reviewer");
		d->policy = xasprintf("approval %llu", (unsigned long long)r->id);
		return true;
	}
	if (d->enforced != POLICY_HOLD)
		return false;
	slog_info(c, "approval %llu: statement runs, approved by %s", (unsigned long long)r->id,
		  r->reviewer);
	d->enforced = d->rewritten_sql ? POLICY_REWRITE : POLICY_ALLOW;
	return false;
}

/*
 * The audit trail of a verdict. A hold is not a statement record yet: the
 * approval record and the statement's record (approved or rejected) follow
 * the reviewer's decision. A statement approved but then denied by a policy
 * is recorded as that denial.
 */
static void enforce_audit(Client *c, Server *s, uint8_t type, const char *name, const char *sql,
			  const PolicyDecision *d, const ApprovalRuling *ruling)
{
	bool runs = d->enforced == POLICY_ALLOW || d->enforced == POLICY_REWRITE;

	if (d->enforced == POLICY_HOLD)
		return;
	if (ruling && (runs || !ruling->approved))
		audit_released(c, type, name, sql, d, ruling->approved);
	else
		audit_judged(c, type, name, sql, d, !s && !runs);
}

/*
 * SHOW POLICY_STATS: what judging this statement cost, and whether a failure
 * decided. It ends where on_query's Lua time ended, when that was read.
 */
static void enforce_time_on_query(Worker *w, uint64_t t0, const PolicyDecision *d)
{
	histogram_record(&w->on_query_ns, (d->lua_end_ns ? d->lua_end_ns : histogram_now_ns()) - t0);
	if (d->error)
		w->on_query_errors++;
}

/* DDL (or anything unclassified that writes): cached catalog names may go stale. */
static bool enforce_may_change_schema(const SqlInfo *info)
{
	static const char *const data_kinds[] = { "select", "insert", "update", "delete", "merge",
						  "copy", NULL };
	for (int i = 0; i < info->nstmts; i++) {
		const SqlStatement *st = &info->stmts[i];
		bool data = false;
		for (int k = 0; data_kinds[k]; k++)
			data = data || strcmp(st->kind, data_kinds[k]) == 0;
		if (st->writes && !data)
			return true;
	}
	return false;
}

/*
 * What the rest of the judging needs of a parse, memoized on the shared result
 * (a pure function of the fields statements of one shape share).
 */
#define ENFORCE_FLAG_KNOWN 1
#define ENFORCE_FLAG_LEXING 2	/* sql_may_change_lexing */
#define ENFORCE_FLAG_SCHEMA 4	/* enforce_may_change_schema */
#define ENFORCE_FLAG_STATELESS 8	/* classified, and no statement leaves session state */

/* What sessionstate.c's check looks for (st->session_state), by the same classification. */
static bool info_stateless(const SqlInfo *info)
{
	if (!info->ok)
		return false;
	for (int i = 0; i < info->nstmts; i++)
		if (info->stmts[i].session_state)
			return false;
	return true;
}

static uint8_t enforce_flags_of(SqlInfo *info)
{
	SqlInfo *memo = info->shared ? info->shared : info;
	if (!(memo->enforce_flags & ENFORCE_FLAG_KNOWN))
		memo->enforce_flags = ENFORCE_FLAG_KNOWN |
				      (sql_may_change_lexing(info) ? ENFORCE_FLAG_LEXING : 0) |
				      (info->ok && enforce_may_change_schema(info) ? ENFORCE_FLAG_SCHEMA
										  : 0) |
				      (info_stateless(info) ? ENFORCE_FLAG_STATELESS : 0);
	return memo->enforce_flags;
}

/* The judged text's parse (the rewrite's, if any), classified once per judging. */
typedef struct Judging {
	PolicyEngine *e;
	SqlInfo *info;
} Judging;

static SqlInfo *judging_info(Judging *j, const char *sql)
{
	if (!j->info)
		j->info = policy_engine_classify(j->e, sql, strlen(sql));
	return j->info;
}

static void judging_done(Judging *j)
{
	if (j->info)
		policy_engine_release(j->e, j->info);
	j->info = NULL;
}

static bool enforce_mask_guard_info(PolicyEngine *e, SqlInfo *info, const StrList *views,
				    bool views_unknown, PolicyDecision *d, StrList *hints)
{
	MaskGuardResult g;
	maskguard_check_memo(policy_engine_mask_keys(e), policy_engine_mask_keys_gen(e), views,
			     views_unknown, info, &g);
	if (!info->ok) {
		g.deny = true;
		g.reason = xstrdup("statement cannot be parsed, so protected columns cannot be "
				   "traced (masking, fail closed)");
	}
	if (g.deny) {
		free(d->message);
		free(d->rewritten_sql);
		d->rewritten_sql = NULL;
		d->message = g.reason;
		g.reason = NULL;
		d->verdict = d->enforced = POLICY_DENY;
		free(d->policy);
		d->policy = xstrdup("(masking)");
	} else if (hints) {
		*hints = g.hints;
		memset(&g.hints, 0, sizeof(g.hints));
	}
	maskguard_result_free(&g);
	return g.sensitive;
}

/*
 * Masking, statement half: a protected column may leave only as a plain result
 * column (masked in flight); every other path is denied here. Applies in
 * dry_run too: masks are not a decision but a guarantee.
 */
bool enforce_mask_guard(PolicyEngine *e, const char *sql, const StrList *views, bool views_unknown,
			PolicyDecision *d, StrList *hints)
{
	if (policy_engine_mask_keys(e)->count == 0)
		return false;
	SqlInfo *info = policy_engine_classify(e, sql, strlen(sql));
	bool sensitive = enforce_mask_guard_info(e, info, views, views_unknown, d, hints);
	policy_engine_release(e, info);
	return sensitive;
}

static void enforce_guard_masks(Client *c, Server *s, uint8_t type, const char *name,
				const char *sql, Judging *j, PolicyDecision *d)
{
	PolicyEngine *e = c->worker->policy;
	if (policy_engine_mask_keys(e)->count == 0)
		return;
	bool views_unknown = true;
	const StrList *views = c->pool ? maskwire_tainted_views(c, &views_unknown) : NULL;
	StrList hints = { 0 };
	SqlInfo *info = judging_info(j, sql);
	if (enforce_mask_guard_info(e, info, views, views_unknown, d, &hints))
		maskwire_note_sensitive(c);
	if (type == 'P' && d->enforced != POLICY_DENY)
		maskwire_set_parse_hints(c, name, &hints);
	else if (hints.count > 0 && d->enforced != POLICY_DENY)
		maskwire_set_query_hints(c, s, &hints);
	strlist_free(&hints);
	if (enforce_flags_of(info) & ENFORCE_FLAG_SCHEMA)
		maskwire_note_schema_change(c);
}

void enforce_judge(Client *c, Server *s, const uint8_t *msg, size_t total, Judged *out)
{
	uint8_t type = msg[0];
	const uint8_t *body = msg + PROTO_HEADER_LEN;
	size_t blen = total - PROTO_HEADER_LEN;
	const char *name = "", *sql = NULL;
	const uint8_t *rest = NULL;
	size_t rest_len = 0;
	PolicyDecision d = { 0 };
	Judging j = { c->worker->policy, NULL };	/* the parse of the text judged */
	PktBuf pb;
	pktbuf_init(&pb);
	ApprovalRuling *ruling = approvals_take_ruling(c, msg, total);
	const char *sqlstate = ruling && !ruling->approved ? ruling->sqlstate : DENY_SQLSTATE;

	if (ruling && enforce_apply_ruling(c, ruling, &d)) {
		/* denied by a reviewer, a timeout or a cancel: no policy runs again, but the
		 * audit trail names the statement */
		if (type == 'Q' && blen > 0 && memchr(body, 0, blen) == body + blen - 1)
			sql = (const char *)body;
		else if (type == 'P' && !parse_split(body, blen, &name, &sql, &rest, &rest_len))
			sql = NULL;
	} else if (type == 'F') {
		/* A function call carries no SQL to judge: fail closed. */
		d.enforced = d.verdict = POLICY_DENY;
		d.message = xstrdup("function calls (FunctionCall messages) are not allowed by policy");
	} else if (type == 'Q' ? (blen == 0 || memchr(body, 0, blen) != body + blen - 1)
			       : !parse_split(body, blen, &name, &sql, &rest, &rest_len)) {
		d.enforced = d.verdict = POLICY_DENY;
		d.message = xstrdup("malformed message");
	} else {
		if (type == 'Q')
			sql = (const char *)body;
		if (!enforce_refuse_disagreement(c, s, sql, &d)) {
			uint64_t t0 = histogram_now_ns();
			size_t len = strlen(sql);
			policy_on_query_parsed(c->worker->policy, &c->psession,
					       judging_info(&j, sql), sql, len,
					       type == 'Q' ? "simple" : "extended", name,
					       c->tx_status != 'I', &d);
			enforce_time_on_query(c->worker, t0, &d);
		}
		if (ruling)
			enforce_apply_ruling(c, ruling, &d);
	}
	/* the text that runs: the rewrite's parse is the one judged from here on */
	const char *judged = d.enforced == POLICY_REWRITE ? d.rewritten_sql : sql;
	if (d.enforced == POLICY_REWRITE)
		judging_done(&j);
	if (sql && (d.enforced == POLICY_ALLOW || d.enforced == POLICY_REWRITE))
		enforce_guard_masks(c, s, type, name, judged, &j, &d);
	enforce_log(c, &d, sql ? sql : "");
	enforce_audit(c, s, type, name, sql, &d, ruling);
	memset(out, 0, sizeof(*out));
	if (d.enforced == POLICY_HOLD) {
		/* Nothing is sent: the message waits in the approval queue. */
		approvals_hold(c, s, msg, total, &d);
		out->held = true;
		judging_done(&j);
		policy_decision_free(&d);
		approvals_ruling_free(ruling);
		return;
	}
	if (d.enforced == POLICY_ALLOW || d.enforced == POLICY_REWRITE) {
		uint8_t flags = enforce_flags_of(judging_info(&j, judged));
		out->may_change_lexing = flags & ENFORCE_FLAG_LEXING;
		out->stateless = (type == 'Q' || type == 'P') && (flags & ENFORCE_FLAG_STATELESS);
		if (s && out->may_change_lexing)
			s->lexing_may_change = true;
	} else if (!s) {
		out->answer = true;	/* a denial */
		out->discard_until_sync = type == 'P';
	}
	judging_done(&j);
	switch (d.enforced) {
	case POLICY_ALLOW:
		out->send = (uint8_t *)msg;
		out->len = total;
		policy_decision_free(&d);
		approvals_ruling_free(ruling);
		pktbuf_free(&pb);
		return;
	case POLICY_REWRITE:
		enforce_build_rewrite(type, name, d.rewritten_sql, rest, rest_len, &pb);
		break;
	case POLICY_HOLD:	/* handled above */
	case POLICY_DENY:
		enforce_deny_code(s, type == 'P' ? 'P' : 'Q', sqlstate,
				  d.message ? d.message : "denied by policy", &pb);
		break;
	}
	policy_decision_free(&d);
	approvals_ruling_free(ruling);
	if (!pktbuf_ok(&pb)) {
		/* Could not build the replacement: never send the original instead. */
		pktbuf_reset(&pb);
		enforce_deny(s, type == 'P' ? 'P' : 'Q', "could not apply the policy decision", &pb);
		out->answer = !s;
		out->discard_until_sync = !s && type == 'P';
	}
	out->send = pb.data;	/* ownership passes to the caller */
	out->len = pb.len;
	out->owned = true;
}
