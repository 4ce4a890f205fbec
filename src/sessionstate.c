#include "sessionstate.h"
#include "pgmoat.h"
#include "client.h"
#include "enforce.h"
#include "pool.h"
#include "pktbuf.h"
#include "sqlinfo.h"
#include "varcache.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

SqlInfo *sessionstate_classify(Worker *w, const char *sql, size_t len)
{
	/* literals differ from one execution to the next: a cache would rarely hit */
	return sqlinfo_parse_shallow(sql, len);
}

void sessionstate_release(Worker *w, SqlInfo *info)
{
	sqlinfo_free(info);
}

/*
 * A cheap necessary condition before the parser runs: every statement the
 * check looks for contains one of these words (SET and set_config, PREPARE,
 * LISTEN, HOLD, TEMP/TEMPORARY, pg_*advisory_lock*), in any case; keywords
 * cannot be escaped, and a function name written with Unicode escapes
 * (U&"...") is parsed in any case. The verdict itself is libpg_query's.
 * One table-driven pass over the text: it runs on every Query and Parse.
 */
static const char *const session_words[] = { NULL, "set", "prepare", "listen", "hold", "temp",
					       "advisory", "u&" };

/* The word of session_words a letter may start (either case); 0 for none. */
static const uint8_t session_word_at[256] = {
	['s'] = 1, ['S'] = 1, ['p'] = 2, ['P'] = 2, ['l'] = 3, ['L'] = 3, ['h'] = 4, ['H'] = 4,
	['t'] = 5, ['T'] = 5, ['a'] = 6, ['A'] = 6, ['u'] = 7, ['U'] = 7,
};

static bool sql_may_hold_session_state(const char *sql, size_t len)
{
	const uint8_t *end = (const uint8_t *)sql + len;
	for (const uint8_t *p = (const uint8_t *)sql; p < end; p++) {
		uint8_t w = session_word_at[*p];
		if (!w)
			continue;
		const char *word = session_words[w];
		if ((p[1] | 0x20) == word[1] && strncasecmp((const char *)p, word, strlen(word)) == 0)
			return true;
	}
	return false;
}

#define SS_MEMO_MAX 4096	/* longer texts are scanned every time, not kept */

/*
 * Do a and b (len bytes each) differ only where both hold digits? The words
 * hold none, so such texts contain the same words: a statement run again with
 * other integer literals (pgbench's, an ORM's) needs no scan.
 */
static bool is_digit(char ch)
{
	return (unsigned char)(ch - '0') < 10;
}

#define EVERY_BYTE(b) ((uint64_t)(b) * 0x0101010101010101ULL)

/* Bit 7 of each byte set where that byte of x is not an ASCII digit (no carry crosses bytes). */
static inline uint64_t non_digit_bytes(uint64_t x)
{
	uint64_t t = x ^ EVERY_BYTE('0');	/* the digits, and only they, become 0..9 */
	return (((t & EVERY_BYTE(0x7f)) + EVERY_BYTE(0x76)) | t) & EVERY_BYTE(0x80);
}

/* Bit 7 of each byte set where x and y differ. */
static inline uint64_t differing_bytes(uint64_t x, uint64_t y)
{
	uint64_t d = x ^ y;
	return (((d & EVERY_BYTE(0x7f)) + EVERY_BYTE(0x7f)) | d) & EVERY_BYTE(0x80);
}

static bool same_but_digits(const char *a, const char *b, size_t len)
{
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t x, y;	/* eight bytes at a time: most are equal */
		memcpy(&x, a + i, 8);
		memcpy(&y, b + i, 8);
		if (x != y && (differing_bytes(x, y) & (non_digit_bytes(x) | non_digit_bytes(y))))
			return false;
	}
	for (; i < len; i++)
		if (a[i] != b[i] && !(is_digit(a[i]) && is_digit(b[i])))
			return false;
	return true;
}

/*
 * Do a and b differ only in their runs of digits, of any length (an id of six
 * digits where the clean text had five)? They are walked side by side: equal
 * bytes, eight at a time where they can, and a run of digits in both at once
 * skipped to its end in each. A word lies between two runs, in bytes the
 * texts share. Runs cut differently (one ends where the other goes on after
 * an equal prefix) answer no: a scan, never a miss.
 */
static bool same_but_digit_runs(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t i = 0, j = 0;
	while (i < alen && j < blen) {
		uint64_t x, y;
		if (i + 8 <= alen && j + 8 <= blen) {
			memcpy(&x, a + i, 8);
			memcpy(&y, b + j, 8);
			if (x == y) {
				i += 8;
				j += 8;
				continue;
			}
		}
		if (is_digit(a[i]) && is_digit(b[j])) {
			while (i < alen && is_digit(a[i]))
				i++;
			while (j < blen && is_digit(b[j]))
				j++;
		} else if (a[i++] != b[j++]) {
			return false;
		}
	}
	return i == alen && j == blen;
}

/* The same, answered without a scan for the text last found free of the words. */
static bool sql_may_hold_session_state_memo(Worker *w, const char *sql, size_t len)
{
	if (w->ss_clean_sql && (len == w->ss_clean_len ? same_but_digits(sql, w->ss_clean_sql, len)
			: same_but_digit_runs(sql, len, w->ss_clean_sql, w->ss_clean_len)))
		return false;
	if (sql_may_hold_session_state(sql, len))
		return true;
	if (len > SS_MEMO_MAX)
		return false;
	if (len + 1 > w->ss_clean_cap) {
		w->ss_clean_cap = len + 1 > 256 ? len + 1 : 256;
		free(w->ss_clean_sql);
		w->ss_clean_sql = xmalloc(w->ss_clean_cap);
	}
	memcpy(w->ss_clean_sql, sql, len);
	w->ss_clean_sql[len] = '\0';
	w->ss_clean_len = len;
	return false;
}

/*
 * What a statement sent to a shared server leaves there: what (described) is
 * NULL for nothing; unchecked when it could not be classified, so that it may
 * leave state or not (and is handled as if it did: fail closed).
 */
typedef struct StateFound {
	char *what;
	bool unchecked;
} StateFound;

#define UNPARSED_WHAT "a statement pgmoat could not parse to check for session state"
#define UNREAD_WHAT "a statement too large to check for session state"

/* The first statement that leaves untracked state, described; NULL for none. */
static StateFound session_state_found(Worker *w, const char *sql, size_t len)
{
	SqlInfo *info = sessionstate_classify(w, sql, len);
	char *what = NULL;
	if (!info->ok) {
		/* (the word scan found a word: too large or not SQL libpg_query takes) */
		sessionstate_release(w, info);
		return (StateFound){ xstrdup(UNPARSED_WHAT), true };
	}
	for (int i = 0; i < info->nstmts && !what; i++) {
		const SqlStatement *st = &info->stmts[i];
		if (!st->session_state)
			continue;
		if (st->setting && varcache_lookup(st->setting) >= 0)
			continue;	/* replayed per client by pgmoat: not a leak */
		what = st->setting ? xasprintf("SET %s", st->setting) : xstrdup(st->session_state);
	}
	sessionstate_release(w, info);
	return (StateFound){ what, false };
}

/*
 * The SQL text of a whole Query or Parse message and the bytes to scan for it;
 * NULL when malformed (the server judges). A Query's text ends at the
 * message's last byte, so its length needs no search: a NUL inside it would
 * end the string the parser sees early, and PostgreSQL refuses such a
 * message, so scanning past it only looks at more bytes than needed.
 */
static const char *message_sql(const uint8_t *msg, size_t len, size_t *sql_len)
{
	PktReader r;
	const char *name, *sql;
	if (len <= PROTO_HEADER_LEN)
		return NULL;
	if (msg[0] == 'Q') {
		if (msg[len - 1] != '\0')
			return NULL;
		*sql_len = len - PROTO_HEADER_LEN - 1;
		return (const char *)msg + PROTO_HEADER_LEN;
	}
	proto_reader_init(&r, msg + PROTO_HEADER_LEN, len - PROTO_HEADER_LEN);
	if (!proto_read_cstring(&r, &name) || !proto_read_cstring(&r, &sql))
		return NULL;
	*sql_len = (size_t)((const char *)r.pos - sql) - 1;
	return sql;
}

static void session_state_warn(Client *c, Server *s, const StateFound *f)
{
	moat->stats.session_state_warnings++;
	if (!c->session_state_warned) {
		c->session_state_warned = true;
		slog_warning(c, "%s %s session state on a shared server in transaction pooling "
			     "(transaction_session_state = warn; logged once per client)", f->what,
			     f->unchecked ? "may leave" : "leaves");
	}
	if (s->fwd_remaining > 0)
		return;	/* a server message is half-written to the client: no place for a notice */
	char *msg = xasprintf("%s %s on a pooled server connection and may be seen by other "
			      "clients (pgmoat transaction pooling)", f->what,
			      f->unchecked ? "may leave state that stays" : "stays");
	PktBuf pb;
	pktbuf_init(&pb);
	pktbuf_notice(&pb, "01000", msg);
	if (!client_send_pktbuf(c, &pb))
		slog_debug(c, "could not queue the session state notice");
	pktbuf_free(&pb);
	free(msg);
}

static SessionStateMode session_state_mode(void)
{
	return moat->cfg->session_state_mode;
}

bool sessionstate_active(const Client *c)
{
	return !c->session_pinned && c->pool && pool_effective_mode(c->pool) != POOL_SESSION &&
	       session_state_mode() != SESSION_STATE_OFF;
}

/* Warn, pin or refuse (then false, pb holding the denial marker for s), as configured. */
static bool session_state_act(Client *c, Server *s, uint8_t type, const StateFound *f, PktBuf *pb)
{
	bool send = true;
	switch (session_state_mode()) {
	case SESSION_STATE_WARN:
	case SESSION_STATE_OFF:
		session_state_warn(c, s, f);
		break;
	case SESSION_STATE_PIN:
		c->session_pinned = true;
		moat->stats.session_state_pins++;
		slog_info(c, "%s: keeping server S-%llu for this client until it disconnects "
			  "(transaction_session_state = pin)", f->what, (unsigned long long)s->id);
		break;
	case SESSION_STATE_ERROR: {
		moat->stats.session_state_refused++;
		char *m = xasprintf("%s is not allowed in transaction pooling mode: it %s on a shared "
				    "server connection (transaction_session_state = error)", f->what,
				    f->unchecked ? "may leave session state" : "would stay");
		slog_info(c, "refused: %s", m);
		send = !enforce_refuse(s, type == 'Q' ? 'Q' : 'P', SESSION_STATE_SQLSTATE, m, pb);
		free(m);
		break;
	}
	}
	return send;
}

bool sessionstate_check(Client *c, Server *s, const uint8_t *msg, size_t len, PktBuf *pb)
{
	bool judged_stateless = c->judged_stateless;
	c->judged_stateless = false;	/* it was about this message only */
	if (!sessionstate_active(c) || judged_stateless)
		return true;
	size_t sql_len;
	const char *sql = message_sql(msg, len, &sql_len);
	if (!sql || !sql_may_hold_session_state_memo(c->worker, sql, sql_len))
		return true;
	/* (parsed to the first NUL, as the server reads it) */
	StateFound f = session_state_found(c->worker, sql, strlen(sql));
	bool send = !f.what || session_state_act(c, s, msg[0], &f, pb);
	free(f.what);
	return send;
}

bool sessionstate_check_unread(Client *c, Server *s, uint8_t type, PktBuf *pb)
{
	if (!sessionstate_active(c))
		return true;
	StateFound f = { (char *)UNREAD_WHAT, true };
	return session_state_act(c, s, type, &f, pb);
}
