/*
 * PostgreSQL v3 wire protocol: bounds-checked readers for untrusted bytes,
 * the message framer and the startup-packet parser. Pure functions over byte
 * buffers, so they can be unit-tested and fuzzed without sockets.
 *
 * Every reader checks `n > end - pos` before touching memory and never
 * indexes a raw packet buffer directly.
 */
#ifndef PGMOAT_PROTO_H
#define PGMOAT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"

#define PROTO_STARTUP_MIN 8
#define PROTO_STARTUP_MAX 10000
#define PROTO_VERSION_3 0x00030000u
#define PROTO_CANCEL_CODE 80877102u
#define PROTO_SSL_CODE 80877103u
#define PROTO_GSSENC_CODE 80877104u
#define PROTO_HEADER_LEN 5	/* type byte + int32 length */
#define PROTO_MAX_STARTUP_PARAMS 64

/* Cursor over an untrusted message body. */
typedef struct PktReader {
	const uint8_t *pos;
	const uint8_t *end;
} PktReader;

/* (inline, as the short reads below: the forwarding path reads names in every Bind) */
static inline void proto_reader_init(PktReader *r, const void *data, size_t len)
{
	r->pos = data;
	/* NULL + 0 is undefined behaviour in C; an empty reader is [NULL, NULL). */
	r->end = data ? r->pos + len : r->pos;
}

static inline size_t proto_reader_left(const PktReader *r)
{
	return (size_t)(r->end - r->pos);
}

bool proto_read_uint8(PktReader *r, uint8_t *out) MUST_CHECK;
bool proto_read_int16(PktReader *r, int16_t *out) MUST_CHECK;
bool proto_read_uint16(PktReader *r, uint16_t *out) MUST_CHECK;
bool proto_read_int32(PktReader *r, int32_t *out) MUST_CHECK;
bool proto_read_uint32(PktReader *r, uint32_t *out) MUST_CHECK;
/* proto_read_cstring() past its first bytes: a memchr. */
bool proto_read_cstring_search(PktReader *r, const char **out) MUST_CHECK;

/*
 * A NUL-terminated string wholly inside the buffer; *out points into it.
 * Names (statements, portals, parameters) are short, often empty: their first
 * bytes are looked at here before a memchr call that would cost more.
 */
static inline MUST_CHECK bool proto_read_cstring(PktReader *r, const char **out)
{
	size_t left = proto_reader_left(r), near = left < 8 ? left : 8;
	for (size_t i = 0; i < near; i++) {
		if (r->pos[i] == '\0') {
			*out = (const char *)r->pos;
			r->pos += i + 1;
			return true;
		}
	}
	return proto_read_cstring_search(r, out);
}
bool proto_read_bytes(PktReader *r, size_t n, const uint8_t **out) MUST_CHECK;

/* Message framing of a regular (typed) message. */
typedef enum {
	FRAME_OK,		/* header complete and sane */
	FRAME_NEED_MORE,	/* fewer than 5 bytes available */
	FRAME_BAD,		/* length < 4 or > max_len */
} FrameResult;

typedef struct MsgHeader {
	uint8_t type;
	uint32_t len;		/* the wire length: counts itself, not the type byte */
} MsgHeader;

/* Total bytes on the wire for a framed message: 1 + len. */
static inline size_t proto_msg_total(const MsgHeader *h) { return 1 + (size_t)h->len; }

/*
 * Frame the header at buf. Inline: it runs for every message forwarded, a few
 * instructions that a call would double.
 */
static inline FrameResult proto_frame_header(const uint8_t *buf, size_t avail, uint32_t max_len,
					     MsgHeader *out)
{
	if (avail < PROTO_HEADER_LEN)
		return FRAME_NEED_MORE;
	uint32_t len = ((uint32_t)buf[1] << 24) | ((uint32_t)buf[2] << 16) | ((uint32_t)buf[3] << 8) |
		       buf[4];
	/* The wire type is int32: anything with the top bit set is a negative length. */
	if (len < 4 || len > max_len || len > (uint32_t)INT32_MAX)
		return FRAME_BAD;
	out->type = buf[0];
	out->len = len;
	return FRAME_OK;
}

/* Untyped first packet of a connection. */
typedef enum {
	STARTUP_NORMAL,
	STARTUP_SSL,
	STARTUP_GSSENC,
	STARTUP_CANCEL,
} StartupKind;

typedef struct StartupParam {
	const char *name;	/* points into the packet */
	const char *value;
} StartupParam;

typedef struct StartupPacket {
	StartupKind kind;
	uint32_t protocol;	/* STARTUP_NORMAL: 3.0 only */
	uint32_t cancel_pid;	/* STARTUP_CANCEL */
	uint32_t cancel_key;
	int nparams;
	StartupParam params[PROTO_MAX_STARTUP_PARAMS];
	const char *user;	/* shortcuts into params; NULL if absent */
	const char *database;	/* defaults to user when absent, as PostgreSQL does */
	bool has_replication;	/* replication=... present: refused by the caller */
} StartupPacket;

/*
 * Read the length of the first packet: FRAME_NEED_MORE below 4 bytes,
 * FRAME_BAD outside PROTO_STARTUP_MIN..PROTO_STARTUP_MAX.
 */
FrameResult proto_startup_length(const uint8_t *buf, size_t avail, uint32_t *len);

/*
 * Parse a complete startup packet (len bytes including the length word). The
 * result points into buf, which must outlive it. On failure returns false
 * with a client-presentable message in err.
 */
bool proto_parse_startup(const uint8_t *buf, size_t len, StartupPacket *out,
			 char *err, size_t errlen) MUST_CHECK;

/* Fields of an ErrorResponse/NoticeResponse; any may be NULL (hostile servers omit them). */
typedef struct ErrorFields {
	const char *severity;	/* 'S' (localized) */
	const char *severity_nl;	/* 'V' */
	const char *sqlstate;	/* 'C' */
	const char *message;	/* 'M' */
	const char *detail;	/* 'D' */
	const char *hint;	/* 'H' */
} ErrorFields;

bool proto_parse_error(const uint8_t *body, size_t len, ErrorFields *out) MUST_CHECK;

/* ParameterStatus body: two C strings. */
bool proto_parse_param_status(const uint8_t *body, size_t len, const char **name,
			      const char **value) MUST_CHECK;

/* BackendKeyData body. */
bool proto_parse_backend_key(const uint8_t *body, size_t len, uint32_t *pid,
			     uint32_t *key) MUST_CHECK;

/* Authentication request ('R') body: code plus the remaining payload. */
typedef struct AuthRequest {
	int32_t code;		/* 0 ok, 3 cleartext, 5 md5, 10 SASL, 11 SASLContinue, 12 SASLFinal */
	const uint8_t *data;	/* md5: 4-byte salt; SASL: mechanism list / payload */
	size_t data_len;
} AuthRequest;

bool proto_parse_auth_request(const uint8_t *body, size_t len, AuthRequest *out) MUST_CHECK;

/*
 * Client's SASLInitialResponse ('p' after AuthenticationSASL): mechanism name
 * and the initial response (length -1 means none).
 */
bool proto_parse_sasl_initial(const uint8_t *body, size_t len, const char **mech,
			      const uint8_t **data, size_t *data_len) MUST_CHECK;

/* Name of a message type for logs ("Query", "Parse", ...); from_client picks the table. */
const char *proto_msg_name(uint8_t type, bool from_client);

#endif
