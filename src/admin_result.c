/*
 * The admin console's result sets: a RowDescription, DataRows and the
 * CommandComplete + ReadyForQuery that end them, built whole in one PktBuf
 * and queued at once. A row that does not match its columns fails the
 * builder (sticky), and the client gets an error instead of a broken table.
 */
#include "admin_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

void admin_row_reset(Row *r)
{
	r->n = 0;
	r->overflow = false;
}

/* s is borrowed until the row is written; NULL is SQL NULL. */
void admin_row_str(Row *r, const char *s)
{
	if (r->n >= ROW_MAX_COLS) {
		r->overflow = true;
		return;
	}
	r->vals[r->n++] = s;
}

void admin_row_fmt(Row *r, const char *fmt, ...)
{
	va_list ap;

	if (r->n >= ROW_MAX_COLS) {
		r->overflow = true;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(r->cells[r->n], ROW_CELL, fmt, ap);
	va_end(ap);
	r->vals[r->n] = r->cells[r->n];
	r->n++;
}

void admin_row_int(Row *r, int64_t v)
{
	admin_row_fmt(r, "%" PRId64, v);
}

void admin_row_u64(Row *r, uint64_t v)
{
	admin_row_fmt(r, "%" PRIu64, v);
}

void admin_rs_begin(ResultSet *rs, const AdminColumn *cols, int ncols)
{
	const char *names[ROW_MAX_COLS];
	ColType types[ROW_MAX_COLS];

	pktbuf_init(&rs->pb);
	rs->ncols = ncols;
	if (ncols > ROW_MAX_COLS) {
		rs->pb.failed = true;
		return;
	}
	for (int i = 0; i < ncols; i++) {
		names[i] = cols[i].name;
		types[i] = cols[i].type;
	}
	pktbuf_row_description(&rs->pb, ncols, names, types);
}

void admin_rs_row(ResultSet *rs, const Row *r)
{
	if (r->overflow || r->n != rs->ncols) {
		log_error("admin: row with %d values for %d columns", r->n, rs->ncols);
		rs->pb.failed = true;
		return;
	}
	pktbuf_data_row(&rs->pb, r->n, r->vals);
}

/* CommandComplete + ReadyForQuery, queue, free. */
void admin_rs_send(Client *c, ResultSet *rs, const char *tag)
{
	pktbuf_command_complete(&rs->pb, tag);
	pktbuf_ready(&rs->pb, 'I');
	admin_send(c, &rs->pb);
}

void admin_format_time(char *buf, size_t len, usec_t wall_usec)
{
	time_t t = (time_t)(wall_usec / USEC_PER_SEC);
	struct tm tm;

	if (wall_usec <= 0 || !localtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%d %H:%M:%S %Z", &tm) == 0)
		snprintf(buf, len, "%s", "");
}

