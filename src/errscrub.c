/*
 * Error and notice scrubbing (see errscrub.h). The server's bytes are read
 * through the bounds-checked PktReader only.
 */
#include "errscrub.h"
#include "proto.h"

#include <stdlib.h>
#include <string.h>

/* Fields that may carry values: detail, hint, context, internal query and position. */
#define ERRSCRUB_DROPPED "DHWqp"

/* Quoted text in a message is where PostgreSQL echoes values: keep the quotes only. */
static char *scrub_message(const char *m)
{
	size_t n = strlen(m);
	/* worst case '""': 2 bytes become 5 ("***" plus the quotes) */
	char *out = xmalloc(n * 3 + sizeof(ERRSCRUB_NOTE) + 8);
	char *p = out;
	bool quoted = false;
	for (const char *q = m; *q; q++) {
		if (*q == '"') {
			if (!quoted) {
				memcpy(p, "\"***", 4);
				p += 4;
			} else {
				*p++ = '"';
			}
			quoted = !quoted;
			continue;
		}
		if (!quoted)
			*p++ = *q;
	}
	if (quoted)
		*p++ = '"';
	memcpy(p, ERRSCRUB_NOTE, sizeof(ERRSCRUB_NOTE));
	return out;
}

static bool scrub_fields(PktReader *r, PktBuf *pb)
{
	for (;;) {
		uint8_t code;
		const char *val;
		if (!proto_read_uint8(r, &code))
			return false;
		if (code == 0)
			return proto_reader_left(r) == 0;
		if (!proto_read_cstring(r, &val))
			return false;
		if (strchr(ERRSCRUB_DROPPED, code))
			continue;
		pktbuf_put_uint8(pb, code);
		if (code == 'M') {
			char *m = scrub_message(val);
			pktbuf_put_cstring(pb, m);
			free(m);
		} else {
			pktbuf_put_cstring(pb, val);
		}
	}
}

bool errscrub_build(uint8_t type, const uint8_t *body, size_t len, PktBuf *pb)
{
	PktReader r;
	size_t start = pb->len;
	if (!pktbuf_ok(pb) || (type != 'E' && type != 'N'))
		return false;
	proto_reader_init(&r, body, len);
	pktbuf_start(pb, type);
	bool ok = scrub_fields(&r, pb);
	if (ok) {
		pktbuf_put_uint8(pb, 0);
		pktbuf_finish(pb);
		ok = pktbuf_ok(pb);
	}
	if (!ok) {
		if (start <= pb->len)
			pb->len = start;
		pb->msg_start = SIZE_MAX;
	}
	return ok;
}
