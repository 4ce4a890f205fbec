/*
 * The audit trail: records built on the event loop, written by one writer
 * thread (see audit.h for the contract of the hooks).
 */
#include "audit.h"
#include "enforce.h"
#include "proto.h"
#include "sqlinfo.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#define AUDIT_HEAD_BYTES 1024	/* of Bind/Execute/Close: the names come first */
#define AUDIT_MSG_MAX (SQLINFO_MAX_SQL + 65536)	/* larger SQL is recorded as unread */
#define AUDIT_SQL_CACHE 1024
#define AUDIT_RETRY_USEC (1000 * 1000)	/* a failing sink is retried this often */
#define AUDIT_STOP_RETRIES 3
#define AUDIT_MAX_PREPARED 10000	/* statement templates kept per session */

/* ---- the writer ------------------------------------------------------ */

typedef struct AuditItem {
	struct AuditItem *next;
	json_t *rec;
} AuditItem;

/* Process-wide: one sink, one chain. Fields under mu unless marked. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thread;
	bool running;		/* the thread exists (event loop only) */
	bool stopping;
	bool reopen;
	AuditItem *head, *tail;
	int queued;		/* enqueued, not yet written */
	bool failing;		/* the last write failed */
	AuditConfig cfg;	/* copy of the configuration in force */
	char *open_path;	/* the path the writer should write to */
	AuditStats stats;
	char nonce[17];		/* random per process: session ids stay unique across restarts */
	/* writer thread only */
	int fd;
	bool open_failed;	/* the last open failed (logged once) */
	AuditChain chain;
	char *pend;		/* sealed lines not yet written */
	size_t pend_len, pend_cap;
} W = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .fd = -1 };

/* The hash of the last line of the file open on fd, to continue its chain. */
static bool audit_file_tail(int fd, char *hash, bool *needs_newline)
{
	off_t size = lseek(fd, 0, SEEK_END);
	if (size <= 0)
		return false;
	char last;
	if (pread(fd, &last, 1, size - 1) != 1)
		return false;
	*needs_newline = last != '\n';
	off_t end = last == '\n' ? size - 1 : size;
	off_t start = end;
	char buf[4096];
	while (start > 0 && end - start < (off_t)AUDIT_MAX_LINE) {
		off_t from = start > (off_t)sizeof(buf) ? start - (off_t)sizeof(buf) : 0;
		ssize_t n = pread(fd, buf, (size_t)(start - from), from);
		if (n != start - from)
			return false;
		char *nl = memrchr(buf, '\n', (size_t)n);
		if (nl) {
			start = from + (nl - buf) + 1;
			break;
		}
		start = from;
	}
	char *line = xmalloc((size_t)(end - start) + 1);
	bool ok = pread(fd, line, (size_t)(end - start), start) == end - start;
	if (ok)
		audit_line_hash(line, (size_t)(end - start), hash);
	free(line);
	return ok;
}

/* Writer: (re)open the sink; an existing file's chain is continued. */
static void audit_writer_open(const char *path)
{
	if (W.fd >= 0 && W.fd != STDOUT_FILENO)
		close(W.fd);
	W.fd = -1;
	if (!path) {
		W.fd = STDOUT_FILENO;
		return;
	}
	W.fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (W.fd < 0) {
		if (!W.open_failed)	/* retried every second: say it once */
			log_error("audit: cannot open %s: %s", path, strerror(errno));
		W.open_failed = true;
		return;
	}
	W.open_failed = false;
	char hash[AUDIT_HASH_HEX + 1];
	bool needs_newline = false;
	if (audit_file_tail(W.fd, hash, &needs_newline)) {
		audit_chain_init(&W.chain, hash);
		if (needs_newline && write(W.fd, "\n", 1) != 1)
			log_error("audit: cannot write to %s: %s", path, strerror(errno));
	}
	/* An empty file (new, or rotated away) continues the chain in memory. */
}

static void pend_add(const char *line, size_t len)
{
	if (W.pend_len + len + 1 > W.pend_cap) {
		W.pend_cap = (W.pend_len + len + 1) * 2;
		W.pend = xrealloc(W.pend, W.pend_cap);
	}
	memcpy(W.pend + W.pend_len, line, len);
	W.pend[W.pend_len + len] = '\n';
	W.pend_len += len + 1;
}

/* Writer: seal a batch into the chain; lines wait in pend until written. Returns the failures. */
static int audit_writer_seal(AuditItem *list)
{
	int failed = 0;
	while (list) {
		AuditItem *next = list->next;
		size_t len;
		char *line = audit_chain_seal(&W.chain, list->rec, &len);
		if (line)
			pend_add(line, len);
		else if (++failed == 1)
			log_error("audit: a record could not be serialized");
		free(line);
		json_decref(list->rec);
		free(list);
		list = next;
	}
	return failed;
}

/*
 * Writer: write what is pending; false when the sink fails (kept for a
 * retry). *records: how many whole lines went out.
 */
static bool audit_writer_flush(bool do_fsync, int *records)
{
	size_t off = 0;
	*records = 0;
	if (W.pend_len == 0)
		return true;
	while (off < W.pend_len) {
		if (W.fd < 0)
			break;
		ssize_t n = write(W.fd, W.pend + off, W.pend_len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	for (const char *p = W.pend; (p = memchr(p, '\n', (size_t)(W.pend + off - p))); p++)
		(*records)++;
	memmove(W.pend, W.pend + off, W.pend_len - off);
	W.pend_len -= off;
	if (W.pend_len == 0 && do_fsync && W.fd >= 0 && W.fd != STDOUT_FILENO)
		(void)fdatasync(W.fd);
	return W.pend_len == 0;
}

static void audit_wait_retry(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += AUDIT_RETRY_USEC / USEC_PER_SEC;
	pthread_cond_timedwait(&W.cv, &W.mu, &ts);
}

static void *audit_writer_main(void *arg)
{
	int stop_retries = 0;
	for (;;) {
		pthread_mutex_lock(&W.mu);
		while (!W.head && !W.reopen && !W.stopping && W.pend_len == 0)
			pthread_cond_wait(&W.cv, &W.mu);
		if (W.pend_len > 0 && W.failing && !W.head && !W.reopen && !W.stopping)
			audit_wait_retry();
		AuditItem *list = W.head;
		W.head = W.tail = NULL;
		/* A sink that could not be opened is tried again with every retry. */
		bool reopen = W.reopen || W.fd < 0, stop = W.stopping, do_fsync = W.cfg.fsync;
		char *path = reopen && W.open_path ? xstrdup(W.open_path) : NULL;
		W.reopen = false;
		pthread_mutex_unlock(&W.mu);

		if (reopen)
			audit_writer_open(path);
		free(path);
		int lost = audit_writer_seal(list);
		int n = 0;
		bool ok = audit_writer_flush(do_fsync, &n);
		n += lost;

		pthread_mutex_lock(&W.mu);
		if (!ok && !W.failing)
			log_error("audit: writing the audit log failed (%s); records are kept and "
				  "retried", W.fd < 0 ? "not open" : strerror(errno));
		else if (ok && W.failing)
			log_info("audit: the audit log is writable again");
		W.failing = !ok;
		W.queued -= n;	/* records waiting in pend still count against queue_size */
		W.stats.written += (uint64_t)n;
		bool done = stop && !W.head && (ok || ++stop_retries > AUDIT_STOP_RETRIES);
		pthread_mutex_unlock(&W.mu);
		if (done)
			break;
	}
	if (W.pend_len > 0)
		log_error("audit: %zu bytes of records could not be written at shutdown", W.pend_len);
	if (W.fd >= 0 && W.fd != STDOUT_FILENO)
		close(W.fd);
	W.fd = -1;
	free(W.pend);
	W.pend = NULL;
	W.pend_len = W.pend_cap = 0;
	return NULL;
}

static void audit_config_copy(AuditConfig *dst, const AuditConfig *src)
{
	*dst = *src;
	dst->path = src->path ? xstrdup(src->path) : NULL;
	memset(&dst->claims, 0, sizeof(dst->claims));
	for (int i = 0; i < src->claims.count; i++)
		strlist_add(&dst->claims, src->claims.items[i]);
}

/* Open the sink on the caller's thread first, so a bad path fails start-up. */
static bool audit_check_sink(const AuditConfig *ac, char *err, size_t errlen)
{
	if (ac->sink != AUDIT_SINK_FILE)
		return true;
	int fd = open(ac->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "audit: cannot open %s: %s", ac->path, strerror(errno));
		return false;
	}
	close(fd);
	return true;
}

bool audit_start(const AuditConfig *ac, char *err, size_t errlen)
{
	if (ac->sink == AUDIT_SINK_NONE || W.running)
		return true;
	if (!audit_check_sink(ac, err, errlen))
		return false;
	uint8_t rnd[8];
	if (!util_random_bytes(rnd, sizeof(rnd))) {
		snprintf(err, errlen, "audit: no randomness for session ids");
		return false;
	}
	util_hex(rnd, sizeof(rnd), W.nonce);
	json_object_seed(0);
	pthread_mutex_lock(&W.mu);
	audit_config_free(&W.cfg);
	audit_config_copy(&W.cfg, ac);
	free(W.open_path);
	W.open_path = ac->sink == AUDIT_SINK_FILE ? xstrdup(ac->path) : NULL;
	W.reopen = true;
	W.stopping = false;
	audit_chain_init(&W.chain, NULL);
	pthread_mutex_unlock(&W.mu);
	int rc = pthread_create(&W.thread, NULL, audit_writer_main, NULL);
	if (rc != 0) {
		snprintf(err, errlen, "audit: cannot start the writer thread: %s", strerror(rc));
		return false;
	}
	W.running = true;
	log_info("audit: writing records to %s (sql: %s, required: %s)",
		 ac->sink == AUDIT_SINK_FILE ? ac->path : "stdout",
		 ac->sql_full ? "full" : "normalized", ac->required ? "true" : "false");
	return true;
}

void audit_stop(void)
{
	if (!W.running)
		return;
	pthread_mutex_lock(&W.mu);
	W.stopping = true;
	pthread_cond_signal(&W.cv);
	pthread_mutex_unlock(&W.mu);
	pthread_join(W.thread, NULL);
	W.running = false;
	pthread_mutex_lock(&W.mu);
	while (W.head) {	/* left behind only if the sink kept failing */
		AuditItem *it = W.head;
		W.head = it->next;
		json_decref(it->rec);
		free(it);
	}
	W.tail = NULL;
	if (W.stats.dropped > 0)
		log_warning("audit: %llu records were dropped (queue full)",
			    (unsigned long long)W.stats.dropped);
	audit_config_free(&W.cfg);
	memset(&W.cfg, 0, sizeof(W.cfg));
	free(W.open_path);
	W.open_path = NULL;
	pthread_mutex_unlock(&W.mu);
}

void audit_reload(const AuditConfig *ac)
{
	if (!W.running) {
		char err[512];
		if (!audit_start(ac, err, sizeof(err)))
			log_error("%s", err);
		return;
	}
	if (ac->sink == AUDIT_SINK_NONE) {
		log_info("audit: disabled by the new configuration");
		audit_stop();
		return;
	}
	pthread_mutex_lock(&W.mu);
	audit_config_free(&W.cfg);
	audit_config_copy(&W.cfg, ac);
	free(W.open_path);
	W.open_path = ac->sink == AUDIT_SINK_FILE ? xstrdup(ac->path) : NULL;
	W.reopen = true;
	pthread_cond_signal(&W.cv);
	pthread_mutex_unlock(&W.mu);
}

bool audit_enabled(void)
{
	return W.running;
}

void audit_stats(AuditStats *out)
{
	pthread_mutex_lock(&W.mu);
	*out = W.stats;
	out->queued = W.queued;
	pthread_mutex_unlock(&W.mu);
}

/* Hand a record to the writer (ownership passes). Never blocks on the sink. */
static void audit_enqueue(json_t *rec)
{
	if (!W.running) {
		json_decref(rec);
		return;
	}
	pthread_mutex_lock(&W.mu);
	if (!W.cfg.required && W.queued >= W.cfg.queue_size) {
		uint64_t dropped = ++W.stats.dropped;
		pthread_mutex_unlock(&W.mu);
		json_decref(rec);
		if ((dropped & (dropped - 1)) == 0)	/* 1, 2, 4, 8, ...: warn, don't flood */
			log_warning("audit: queue full, %llu records dropped so far",
				    (unsigned long long)dropped);
		return;
	}
	AuditItem *it = xmalloc(sizeof(*it));
	it->next = NULL;
	it->rec = rec;
	if (W.tail)
		W.tail->next = it;
	else
		W.head = it;
	W.tail = it;
	W.queued++;
	W.stats.enqueued++;
	pthread_cond_signal(&W.cv);
	pthread_mutex_unlock(&W.mu);
}

/* ---- sessions -------------------------------------------------------- */

typedef struct AuditPending {
	struct AuditPending *next;
	json_t *rec;		/* a statement's record; NULL: the end of a batch */
	usec_t start;		/* monotonic: when it was sent */
} AuditPending;

struct AuditSession {
	char id[48];		/* "<process nonce>-<client id>" */
	json_t *ident;		/* session, user, database, sub, claims: in every record */
	uint64_t seq;		/* statements recorded so far */
	AuditPending *head, *tail;	/* statements in flight and batch ends, in wire order */
	bool batch_failed;	/* an error in the current batch: the rest was skipped */
	usec_t last_done;	/* monotonic: the last completion (durations of pipelines) */
	json_t *stmts;		/* prepared statements by name: their record template */
	json_t *portals;	/* portals by name: the template of their statement */
	bool sql_full;		/* audit.sql at session start */
};

/* JWT sessions: the verified claims of the token (client.c, at authentication). */
static const char *audit_claims_json(const Client *c)
{
	return c->jwt_claims;	/* set at authentication, before audit_session_start */
}

/* Every record starts alike: ts, event, then the session's identity. */
static json_t *audit_record_new(const char *event, const json_t *ident)
{
	char ts[AUDIT_TS_LEN];
	audit_format_ts(util_now_wall(), ts);
	json_t *rec = json_object();
	json_object_set_new(rec, "ts", json_string(ts));
	json_object_set_new(rec, "event", json_string(event));
	const char *key;
	json_t *v;
	if (ident)
		json_object_foreach((json_t *)ident, key, v)
			json_object_set_new_nocheck(rec, key, json_deep_copy(v));
	return rec;
}

static void audit_ident_claims(json_t *ident, const char *claims_json)
{
	json_t *claims = claims_json ? json_loads(claims_json, JSON_REJECT_DUPLICATES, NULL) : NULL;
	if (!json_is_object(claims)) {
		json_decref(claims);
		return;
	}
	json_t *sub = json_object_get(claims, "sub");
	json_object_set_new(ident, "sub", sub ? json_deep_copy(sub) : json_null());
	pthread_mutex_lock(&W.mu);
	json_t *picked = json_object();
	for (int i = 0; i < W.cfg.claims.count; i++) {
		json_t *v = json_object_get(claims, W.cfg.claims.items[i]);
		json_object_set_new(picked, W.cfg.claims.items[i], v ? json_deep_copy(v) : json_null());
	}
	pthread_mutex_unlock(&W.mu);
	json_object_set_new(ident, "claims", picked);
	json_decref(claims);
}

/* required: true and the records cannot be kept now (queue full, sink failing). */
static bool audit_refusing(void)
{
	pthread_mutex_lock(&W.mu);
	bool refuse = W.cfg.required && (W.failing || W.queued >= W.cfg.queue_size);
	if (refuse)
		W.stats.refused++;
	pthread_mutex_unlock(&W.mu);
	return refuse;
}

bool audit_session_start(Client *c)
{
	if (!W.running || c->audit || c->is_admin)
		return true;
	if (audit_refusing())
		return false;
	AuditSession *as = xcalloc(1, sizeof(*as));
	snprintf(as->id, sizeof(as->id), "%s-%llu", W.nonce, (unsigned long long)c->id);
	as->ident = json_object();
	json_object_set_new(as->ident, "session", json_string(as->id));
	audit_put_str(as->ident, "user", c->user_name);
	audit_put_str(as->ident, "database", c->db_name);
	audit_ident_claims(as->ident, audit_claims_json(c));
	as->stmts = json_object();
	as->portals = json_object();
	pthread_mutex_lock(&W.mu);
	as->sql_full = W.cfg.sql_full;
	pthread_mutex_unlock(&W.mu);
	c->audit = as;
	json_t *rec = audit_record_new("session_start", as->ident);
	audit_put_str(rec, "client_addr", c->remote.host);
	json_object_set_new(rec, "client_port", json_integer(c->remote.port));
	audit_put_str(rec, "application_name", c->vars.values[VAR_APPLICATION_NAME]);
	json_object_set_new(rec, "tls", json_false());
	audit_enqueue(rec);
	return true;
}

static void pending_push(AuditSession *as, json_t *rec)
{
	AuditPending *p = xcalloc(1, sizeof(*p));
	p->rec = rec;
	p->start = util_now_mono();
	if (as->tail)
		as->tail->next = p;
	else
		as->head = p;
	as->tail = p;
}

static AuditPending *pending_pop(AuditSession *as)
{
	AuditPending *p = as->head;
	if (p) {
		as->head = p->next;
		if (!as->head)
			as->tail = NULL;
	}
	return p;
}

/* Fill in how a statement ended and hand its record to the writer. */
static void pending_finish(AuditSession *as, AuditPending *p, const char *outcome, json_t *rows,
			   const char *sqlstate)
{
	usec_t now = util_now_mono();
	usec_t from = p->start > as->last_done ? p->start : as->last_done;
	as->last_done = now;
	json_object_set_new(p->rec, "outcome", json_string(outcome));
	json_object_set_new(p->rec, "rows", rows ? rows : json_null());
	json_object_set_new(p->rec, "duration_us", json_integer(now - from));
	audit_put_str(p->rec, "sqlstate", sqlstate);
	audit_enqueue(p->rec);
	free(p);
}

void audit_session_end(Client *c, const char *reason)
{
	AuditSession *as = c->audit;
	if (!as)
		return;
	c->audit = NULL;
	AuditPending *p;
	while ((p = pending_pop(as))) {
		if (p->rec)
			pending_finish(as, p, "unknown", NULL, NULL);	/* no answer came */
		else
			free(p);
	}
	json_t *rec = audit_record_new("session_end", as->ident);
	json_object_set_new(rec, "statements", json_integer((json_int_t)as->seq));
	json_object_set_new(rec, "duration_us", json_integer(util_now_wall() - c->connect_time));
	audit_put_str(rec, "reason", reason);
	audit_enqueue(rec);
	json_decref(as->ident);
	json_decref(as->stmts);
	json_decref(as->portals);
	free(as);
}

bool audit_admits(Client *c)
{
	return !c->audit || !W.running || !audit_refusing();
}

/* ---- statement templates ---------------------------------------------- */

static SqlInfo *audit_classify(Client *c, const char *sql, size_t len)
{
	Worker *w = c->worker;
	if (w->policy)
		return policy_engine_classify(w->policy, sql, len);
	if (!w->audit_sql)
		w->audit_sql = sqlinfo_cache_new(AUDIT_SQL_CACHE);
	return sqlinfo_cache_get(w->audit_sql, sql, len);
}

static void audit_release(Client *c, SqlInfo *info)
{
	if (c->worker->policy)
		policy_engine_release(c->worker->policy, info);
	else
		sqlinfo_release(c->worker->audit_sql, info);
}

static json_t *strlist_json(const StrList *l)
{
	json_t *a = json_array();
	for (int i = 0; i < l->count; i++) {
		json_t *s = json_string(l->items[i]);
		json_array_append_new(a, s ? s : json_null());
	}
	return a;
}

/* The SQL as recorded: normalized (literals removed) unless sql: full. */
static char *audit_sql_text(Client *c, const char *sql)
{
	if (!sql)
		return NULL;
	if (c->audit->sql_full)
		return xstrdup(sql);
	SqlInfo *info = audit_classify(c, sql, strlen(sql));
	char *out = NULL;
	if (info->ok) {
		size_t cap = 1, len = 0;
		for (int i = 0; i < info->nstmts; i++)
			cap += strlen(sqlinfo_stmt_normalized(&info->stmts[i])) + 2;
		out = xmalloc(cap);
		out[0] = '\0';
		for (int i = 0; i < info->nstmts; i++)
			len += (size_t)sprintf(out + len, "%s%s", i ? "; " : "",
					      sqlinfo_stmt_normalized(&info->stmts[i]));
	}
	audit_release(c, info);
	return out;
}

static const char *decision_name(PolicyVerdict v)
{
	return policy_verdict_name(v);
}

/* What the policies said, on a template. d NULL: no policies ran (allow). */
static void template_put_decision(Client *c, json_t *t, const PolicyDecision *d)
{
	json_object_set_new(t, "decision", json_string(d ? decision_name(d->enforced) : "allow"));
	if (d && d->verdict != d->enforced)
		json_object_set_new(t, "policy_verdict", json_string(decision_name(d->verdict)));
	audit_put_str(t, "policy", d ? d->policy : NULL);
	audit_put_str(t, "reason", d ? d->message : NULL);
	if (d && d->where)
		audit_put_str(t, "where", d->where);
	char *rewritten = d && d->rewritten_sql ? audit_sql_text(c, d->rewritten_sql) : NULL;
	audit_put_str(t, "rewritten", rewritten);
	free(rewritten);
}

/* A template: what the record of one statement says before it runs. */
static json_t *template_new(Client *c, const char *protocol, const char *name)
{
	json_t *t = json_object();
	json_object_set_new(t, "protocol", json_string(protocol));
	if (name)
		audit_put_str(t, "statement_name", name);
	json_object_set_new(t, "in_transaction", json_boolean(c->tx_status != 'I'));
	return t;
}

static void template_put_stmt(Client *c, json_t *t, SqlStatement *st)
{
	json_object_set_new(t, "kind", json_string(st->kind));
	json_object_set_new(t, "tables", strlist_json(&st->tables));
	audit_put_str(t, "fingerprint", sqlinfo_stmt_fingerprint(st));
	audit_put_str(t, "sql", c->audit->sql_full ? st->sql : sqlinfo_stmt_normalized(st));
}

/* For text the parser refused (or never saw): no classification, no literals. */
static void template_put_unparsed(Client *c, json_t *t, const char *kind, const char *sql,
				  const char *why)
{
	json_object_set_new(t, "kind", json_string(kind));
	json_object_set_new(t, "tables", json_array());
	json_object_set_new(t, "fingerprint", json_null());
	audit_put_str(t, "sql", c->audit->sql_full ? sql : NULL);
	audit_put_str(t, "unparsed", why);
}

/* The templates of every statement in sql (one per statement; at least one). */
static json_t *templates_for_sql(Client *c, const char *sql, const char *protocol,
				 const char *name, const PolicyDecision *d)
{
	json_t *list = json_array();
	SqlInfo *info = audit_classify(c, sql, strlen(sql));
	for (int i = 0; info->ok && i < info->nstmts; i++) {
		json_t *t = template_new(c, protocol, name);
		template_put_stmt(c, t, &info->stmts[i]);
		template_put_decision(c, t, d);
		json_array_append_new(list, t);
	}
	if (!info->ok || (info->nstmts == 0 && strcmp(protocol, "extended") == 0)) {
		json_t *t = template_new(c, protocol, name);
		template_put_unparsed(c, t, info->ok ? "empty" : "unknown", sql,
				      info->ok ? NULL : info->error);
		template_put_decision(c, t, d);
		json_array_append_new(list, t);
	}
	audit_release(c, info);
	return list;
}

/* A statement record from its template: identity, seq, then the template's fields. */
static json_t *statement_record(AuditSession *as, const json_t *tmpl)
{
	json_t *rec = audit_record_new("statement", as->ident);
	json_object_set_new(rec, "seq", json_integer((json_int_t)++as->seq));
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)tmpl, key, v)
		json_object_set_new_nocheck(rec, key, json_deep_copy(v));
	return rec;
}

static bool template_denied(const json_t *t)
{
	const char *dec = json_string_value(json_object_get(t, "decision"));
	return dec && (strcmp(dec, "deny") == 0 || strcmp(dec, "hold") == 0 ||
		       strcmp(dec, "rejected") == 0);
}

/* A statement that never reaches the server: its record is complete now. */
static void record_denied(AuditSession *as, const json_t *tmpl)
{
	json_t *rec = statement_record(as, tmpl);
	json_object_set_new(rec, "outcome", json_string("denied"));
	json_object_set_new(rec, "rows", json_null());
	json_object_set_new(rec, "duration_us", json_integer(0));
	json_object_set_new(rec, "sqlstate", json_string("42501"));
	audit_enqueue(rec);
}

static void audit_opaque(Client *c, uint8_t type, const char *kind, const char *why,
			 const PolicyDecision *d, const char *deny_reason, bool reaches_server);

/* Queue the statements of a Query (or a denial's records) and the batch end. */
static void audit_query(Client *c, const char *sql, const PolicyDecision *d, bool reaches_server)
{
	AuditSession *as = c->audit;
	json_t *list = templates_for_sql(c, sql, "simple", NULL, d);
	size_t i;
	json_t *t;
	json_array_foreach(list, i, t) {
		if (template_denied(t))
			record_denied(as, t);
		else
			pending_push(as, statement_record(as, t));
	}
	if (json_array_size(list) == 0 && d && d->enforced != POLICY_ALLOW &&
	    d->enforced != POLICY_REWRITE) {
		/* An empty Query denied (e.g. by parser agreement): still on record. */
		json_decref(list);
		audit_opaque(c, 'Q', "empty", NULL, d, NULL, reaches_server);
		return;
	}
	json_decref(list);
	if (reaches_server)
		pending_push(as, NULL);
}

static void audit_parse(Client *c, const char *name, const char *sql, const PolicyDecision *d)
{
	AuditSession *as = c->audit;
	json_t *list = templates_for_sql(c, sql, "extended", name, d);
	json_t *t = json_array_get(list, 0);
	if (json_array_size(list) > 1) {
		/* The server refuses several statements in one Parse: record it as one. */
		t = template_new(c, "extended", name);
		template_put_unparsed(c, t, "unknown", sql, "several statements in one Parse");
		template_put_decision(c, t, d);
	} else {
		json_incref(t);
	}
	json_decref(list);
	if (template_denied(t))
		record_denied(as, t);
	if (json_object_size(as->stmts) < AUDIT_MAX_PREPARED || json_object_get(as->stmts, name))
		json_object_set_new_nocheck(as->stmts, name, t);
	else
		json_decref(t);	/* its Executes are recorded as "portal without a statement" */
}

/*
 * A statement whose text audit cannot show (a FunctionCall, a malformed or
 * unread message). d: the policies' decision; else deny_reason denies it,
 * else it was allowed. A Query or FunctionCall that reaches the server ends a
 * batch.
 */
static void audit_opaque(Client *c, uint8_t type, const char *kind, const char *why,
			 const PolicyDecision *d, const char *deny_reason, bool reaches_server)
{
	AuditSession *as = c->audit;
	json_t *t = template_new(c, type == 'P' ? "extended" : "simple", NULL);
	template_put_unparsed(c, t, kind, NULL, why);
	template_put_decision(c, t, d);
	if (!d && deny_reason) {
		json_object_set_new(t, "decision", json_string("deny"));
		audit_put_str(t, "reason", deny_reason);
	}
	if (template_denied(t))
		record_denied(as, t);
	else if (type != 'P')
		pending_push(as, statement_record(as, t));
	json_decref(t);
	if (reaches_server && type != 'P')
		pending_push(as, NULL);
}

void audit_judged(Client *c, uint8_t type, const char *stmt_name, const char *sql,
		  const PolicyDecision *d, bool local)
{
	if (!c->audit)
		return;
	if (type == 'P' && sql)
		audit_parse(c, stmt_name ? stmt_name : "", sql, d);
	else if (type == 'Q' && sql)
		audit_query(c, sql, d, !local);
	else if (type == 'F')
		audit_opaque(c, type, "function_call", NULL, d, NULL, !local);
	else
		audit_opaque(c, type, "unknown", "malformed message", d, NULL, !local);
}

void audit_released(Client *c, uint8_t type, const char *stmt_name, const char *sql,
		    const PolicyDecision *d, bool approved)
{
	AuditSession *as = c->audit;
	if (!as || !sql || (type != 'Q' && type != 'P'))
		return;
	const char *protocol = type == 'Q' ? "simple" : "extended";
	json_t *list = templates_for_sql(c, sql, protocol, type == 'P' ? stmt_name : NULL, d);
	size_t i;
	json_t *t;
	json_array_foreach(list, i, t) {
		json_object_set_new(t, "decision", json_string(approved ? "approved" : "rejected"));
		if (type == 'P')
			json_object_set_nocheck(as->stmts, stmt_name ? stmt_name : "", t);
		if (!approved)
			record_denied(as, t);
		else if (type == 'Q')
			pending_push(as, statement_record(as, t));
	}
	json_decref(list);
	if (approved && type == 'Q')
		pending_push(as, NULL);
}

void audit_denied_unread(Client *c, uint8_t type, const char *reason)
{
	if (c->audit)
		audit_opaque(c, type, "unknown", "too large to read", NULL, reason, true);
}

/* ---- client messages without policies, and the extended protocol -------- */

size_t audit_bytes_needed(const Client *c, uint8_t type, size_t total)
{
	if (!c->audit)
		return 0;
	switch (type) {
	case 'Q':
	case 'P':
		return total <= AUDIT_MSG_MAX ? total : PROTO_HEADER_LEN;
	case 'B':
	case 'E':
	case 'C':
		return total < AUDIT_HEAD_BYTES ? total : AUDIT_HEAD_BYTES;
	case 'S':
	case 'F':
		return PROTO_HEADER_LEN;
	default:
		return 0;
	}
}

/* Bind: the portal now runs that statement. */
static void audit_bind(AuditSession *as, PktReader *r)
{
	const char *portal, *stmt;
	if (!proto_read_cstring(r, &portal))
		return;
	json_t *t = proto_read_cstring(r, &stmt) ? json_object_get(as->stmts, stmt) : NULL;
	if (t)
		json_object_set_nocheck(as->portals, portal, t);
	else
		json_object_del(as->portals, portal);
}

/* Execute: one run of a portal's statement. */
static void audit_execute(Client *c, PktReader *r)
{
	AuditSession *as = c->audit;
	const char *portal;
	json_t *t = proto_read_cstring(r, &portal) ? json_object_get(as->portals, portal) : NULL;
	if (t && template_denied(t))
		return;	/* recorded at its Parse; the server discards this Execute */
	if (t) {
		json_t *rec = statement_record(as, t);
		json_object_set_new(rec, "in_transaction", json_boolean(c->tx_status != 'I'));
		pending_push(as, rec);
		return;
	}
	/* A portal we did not see created (e.g. a DECLAREd cursor's name). */
	json_t *u = template_new(c, "extended", NULL);
	template_put_unparsed(c, u, "unknown", NULL, "portal without a statement");
	template_put_decision(c, u, NULL);
	pending_push(as, statement_record(as, u));
	json_decref(u);
}

static void audit_close(AuditSession *as, PktReader *r)
{
	uint8_t what;
	const char *name;
	if (!proto_read_uint8(r, &what) || !proto_read_cstring(r, &name))
		return;
	json_object_del(what == 'S' ? as->stmts : as->portals, name);
}

/* The SQL of a whole Query or Parse message, or NULL when it is not all here. */
static const char *message_sql(uint8_t type, PktReader *r, const char **name, bool whole)
{
	const char *sql = NULL;
	*name = "";
	if (!whole)
		return NULL;
	if (type == 'P' && !proto_read_cstring(r, name))
		return NULL;
	return proto_read_cstring(r, &sql) ? sql : NULL;
}

void audit_client_message(Client *c, const uint8_t *msg, size_t avail, size_t total)
{
	AuditSession *as = c->audit;
	if (!as || avail < PROTO_HEADER_LEN)
		return;
	uint8_t type = msg[0];
	PktReader r;
	proto_reader_init(&r, msg + PROTO_HEADER_LEN, avail - PROTO_HEADER_LEN);
	const char *name, *sql;
	switch (type) {
	case 'Q':
	case 'P':
		sql = message_sql(type, &r, &name, avail == total);
		if (sql)
			audit_judged(c, type, name, sql, NULL, false);
		else
			audit_opaque(c, type, "unknown", "too large to record", NULL, NULL, true);
		return;
	case 'B':
		audit_bind(as, &r);
		return;
	case 'E':
		audit_execute(c, &r);
		return;
	case 'C':
		audit_close(as, &r);
		return;
	case 'S':
		if (!(c->link && c->link->copy_in))
			pending_push(as, NULL);
		return;
	case 'F':
		audit_opaque(c, 'F', "function_call", NULL, NULL, NULL, true);
		return;
	default:
		return;
	}
}

/* ---- server replies ---------------------------------------------------- */

bool audit_reads_reply(const Client *c, uint8_t type)
{
	return c && c->audit && type && strchr("CIsEZ", type) != NULL;
}

static void audit_complete(AuditSession *as, const char *outcome, json_t *rows,
			   const char *sqlstate)
{
	if (!as->head || !as->head->rec) {
		json_decref(rows);
		return;	/* not a statement we follow (a denial's marker, a Parse's error) */
	}
	pending_finish(as, pending_pop(as), outcome, rows, sqlstate);
}

/* ReadyForQuery: the batch is over; statements still waiting were skipped. */
static void audit_batch_end(AuditSession *as, char tx_status)
{
	AuditPending *p;
	while ((p = pending_pop(as))) {
		if (!p->rec) {
			free(p);
			break;
		}
		pending_finish(as, p, as->batch_failed ? "skipped" : "unknown", NULL, NULL);
	}
	as->batch_failed = false;
	if (tx_status == 'I' && !as->head)
		json_object_clear(as->portals);	/* portals end with their transaction */
}

void audit_server_reply(Client *c, uint8_t type, const uint8_t *body, size_t len)
{
	AuditSession *as = c->audit;
	if (!as)
		return;
	int64_t rows;
	ErrorFields ef;
	switch (type) {
	case 'C':
		if (len > 0 && body[len - 1] == '\0' && audit_rows_from_tag((const char *)body, &rows))
			audit_complete(as, "ok", json_integer(rows), NULL);
		else
			audit_complete(as, "ok", NULL, NULL);
		return;
	case 'I':
		audit_complete(as, "ok", NULL, NULL);
		return;
	case 's':
		audit_complete(as, "suspended", NULL, NULL);
		return;
	case 'E':
		audit_complete(as, "error", NULL,
			       proto_parse_error(body, len, &ef) ? ef.sqlstate : NULL);
		as->batch_failed = true;
		return;
	case 'Z':
		audit_batch_end(as, len == 1 ? (char)body[0] : 'I');
		return;
	default:
		return;
	}
}

void audit_copy_in_ignored_syncs(Client *c, int n)
{
	AuditSession *as = c->audit;
	if (!as || n <= 0)
		return;
	/* The newest batch ends are those Syncs: drop n of them from the tail side. */
	for (int k = 0; k < n; k++) {
		AuditPending **link = &as->head, **last = NULL;
		for (; *link; link = &(*link)->next)
			if (!(*link)->rec)
				last = link;
		if (!last)
			return;
		AuditPending *gone = *last;
		*last = gone->next;
		if (as->tail == gone) {
			as->tail = NULL;
			for (AuditPending *p = as->head; p; p = p->next)
				as->tail = p;
		}
		free(gone);
	}
}

/* ---- approvals (the "hold" feature calls this) -------------------------- */

void audit_approval(const char *approval_id, Client *c, const char *session_id,
		    const char *reviewer, const char *decision, int64_t waited_ms)
{
	if (!W.running)
		return;
	json_t *rec;
	if (c && c->audit) {
		rec = audit_record_new("approval", c->audit->ident);
	} else {
		rec = audit_record_new("approval", NULL);
		audit_put_str(rec, "session", session_id);
		audit_put_str(rec, "user", c ? c->user_name : NULL);
	}
	audit_put_str(rec, "id", approval_id);
	audit_put_str(rec, "reviewer", reviewer);
	audit_put_str(rec, "decision", decision);
	json_object_set_new(rec, "waited_ms", json_integer(waited_ms));
	audit_enqueue(rec);
}
