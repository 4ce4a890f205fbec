/*
 * PostgreSQL v3 wire protocol codec. Everything here reads bytes that came
 * from a socket, so every access goes through a PktReader whose checks are
 * written as `n > end - pos` (never `pos + n > end`, which can overflow).
 */
#include "proto.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static uint32_t be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(((uint16_t)p[0] << 8) | p[1]);
}

bool proto_read_bytes(PktReader *r, size_t n, const uint8_t **out)
{
	if (n > proto_reader_left(r))
		return false;
	*out = r->pos;
	if (n)
		r->pos += n;
	return true;
}

bool proto_read_uint8(PktReader *r, uint8_t *out)
{
	const uint8_t *p;
	if (!proto_read_bytes(r, 1, &p))
		return false;
	*out = p[0];
	return true;
}

bool proto_read_uint16(PktReader *r, uint16_t *out)
{
	const uint8_t *p;
	if (!proto_read_bytes(r, 2, &p))
		return false;
	*out = be16(p);
	return true;
}

bool proto_read_int16(PktReader *r, int16_t *out)
{
	uint16_t v;
	if (!proto_read_uint16(r, &v))
		return false;
	*out = (int16_t)v;
	return true;
}

bool proto_read_uint32(PktReader *r, uint32_t *out)
{
	const uint8_t *p;
	if (!proto_read_bytes(r, 4, &p))
		return false;
	*out = be32(p);
	return true;
}

bool proto_read_int32(PktReader *r, int32_t *out)
{
	uint32_t v;
	if (!proto_read_uint32(r, &v))
		return false;
	*out = (int32_t)v;
	return true;
}

bool proto_read_cstring_search(PktReader *r, const char **out)
{
	/* (proto_read_cstring looked at the first bytes, the empty name among them;
	 * an empty reader may have no buffer at all, which memchr must not get) */
	size_t left = proto_reader_left(r);
	const uint8_t *nul = left ? memchr(r->pos, '\0', left) : NULL;
	if (!nul)
		return false;
	*out = (const char *)r->pos;
	r->pos = nul + 1;
	return true;
}

FrameResult proto_startup_length(const uint8_t *buf, size_t avail, uint32_t *len)
{
	if (avail < 4)
		return FRAME_NEED_MORE;
	uint32_t n = be32(buf);
	if (n < PROTO_STARTUP_MIN || n > PROTO_STARTUP_MAX)
		return FRAME_BAD;
	*len = n;
	return FRAME_OK;
}

static bool startup_fail(char *err, size_t errlen, const char *msg)
{
	if (errlen > 0)
		snprintf(err, errlen, "%s", msg);
	return false;
}

/* Special request codes (SSL, GSS, cancel) have an exact packet size. */
static bool startup_parse_special(uint32_t code, size_t len, PktReader *r, StartupPacket *out,
				  char *err, size_t errlen)
{
	if (code == PROTO_CANCEL_CODE) {
		if (len != 16)
			return startup_fail(err, errlen, "invalid length of cancel request packet");
		out->kind = STARTUP_CANCEL;
		if (!proto_read_uint32(r, &out->cancel_pid) || !proto_read_uint32(r, &out->cancel_key))
			return startup_fail(err, errlen, "invalid length of cancel request packet");
		return true;
	}
	if (len != 8)
		return startup_fail(err, errlen, "invalid length of encryption request packet");
	out->kind = code == PROTO_SSL_CODE ? STARTUP_SSL : STARTUP_GSSENC;
	return true;
}

static bool startup_param_seen(const StartupPacket *out, const char *name)
{
	/* every login: the first letters (folded, a superset of strcasecmp's) settle most pairs */
	for (int i = 0; i < out->nparams; i++)
		if ((out->params[i].name[0] | 0x20) == (name[0] | 0x20) &&
		    strcasecmp(out->params[i].name, name) == 0)
			return true;
	return false;
}

/*
 * conn8: a startup string and its length, eight bytes at a time: names and
 * values run 4 to 20 bytes, past proto_read_cstring's byte-wise look at the
 * first eight. A zero byte is found exactly (the lowest flagged byte of the
 * word trick is always a real zero).
 */
static bool startup_read_cstring(PktReader *r, const char **out, size_t *len)
{
	const uint8_t *p = r->pos, *end = r->end;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	while ((size_t)(end - p) >= 8) {
		uint64_t w;
		memcpy(&w, p, sizeof(w));
		uint64_t zero = (w - 0x0101010101010101ull) & ~w & 0x8080808080808080ull;
		if (zero) {
			p += (unsigned)__builtin_ctzll(zero) / 8;
			goto found;
		}
		p += 8;
	}
#endif
	while (p < end && *p != '\0')
		p++;
	if (p == end)
		return false;
found:
	*out = (const char *)r->pos;
	*len = (size_t)(p - r->pos);
	r->pos = p + 1;
	return true;
}

/* name (nlen bytes) is the literal lit */
#define STARTUP_NAME_IS(name, nlen, lit) ((nlen) == sizeof(lit) - 1 && memcmp((name), (lit), sizeof(lit) - 1) == 0)

/*
 * name/value pairs up to an empty name that must be the packet's last byte.
 * Duplicate names are refused: the server would take the last one, and a
 * gateway that checked the first would be fooled.
 */
static bool startup_parse_params(PktReader *r, StartupPacket *out, char *err, size_t errlen)
{
	for (;;) {
		const char *name, *value;
		size_t nlen, vlen;
		if (!startup_read_cstring(r, &name, &nlen))
			return startup_fail(err, errlen, "invalid startup packet layout: expected terminator as last byte");
		if (nlen == 0)
			break;
		if (!startup_read_cstring(r, &value, &vlen))
			return startup_fail(err, errlen, "invalid startup packet layout: missing parameter value");
		if (out->nparams >= PROTO_MAX_STARTUP_PARAMS)
			return startup_fail(err, errlen, "too many parameters in startup packet");
		if (startup_param_seen(out, name))
			return startup_fail(err, errlen, "duplicate parameter in startup packet");
		out->params[out->nparams].name = name;
		out->params[out->nparams].value = value;
		out->nparams++;
		if (STARTUP_NAME_IS(name, nlen, "user"))
			out->user = value;
		else if (STARTUP_NAME_IS(name, nlen, "database"))
			out->database = value;
		else if (STARTUP_NAME_IS(name, nlen, "replication"))
			out->has_replication = true;
	}
	if (proto_reader_left(r) != 0)
		return startup_fail(err, errlen, "invalid startup packet layout: expected terminator as last byte");
	return true;
}

bool proto_parse_startup(const uint8_t *buf, size_t len, StartupPacket *out, char *err, size_t errlen)
{
	PktReader r;
	uint32_t wire_len, code;

	/* params[] is filled up to nparams: clearing all 64 would cost more than the parse */
	out->kind = STARTUP_NORMAL;
	out->protocol = out->cancel_pid = out->cancel_key = 0;
	out->nparams = 0;
	out->user = out->database = NULL;
	out->has_replication = false;
	if (len < PROTO_STARTUP_MIN || len > PROTO_STARTUP_MAX)
		return startup_fail(err, errlen, "invalid length of startup packet");
	proto_reader_init(&r, buf, len);
	if (!proto_read_uint32(&r, &wire_len) || !proto_read_uint32(&r, &code) || wire_len != len)
		return startup_fail(err, errlen, "invalid length of startup packet");
	if (code == PROTO_CANCEL_CODE || code == PROTO_SSL_CODE || code == PROTO_GSSENC_CODE)
		return startup_parse_special(code, len, &r, out, err, errlen);
	/* Minor versions above 0 are served as 3.0; the caller may send NegotiateProtocolVersion. */
	if ((code >> 16) != 3) {
		if (errlen > 0)
			snprintf(err, errlen, "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0",
				 code >> 16, code & 0xffff);
		return false;
	}
	out->kind = STARTUP_NORMAL;
	out->protocol = code;
	if (!startup_parse_params(&r, out, err, errlen))
		return false;
	if (!out->user || out->user[0] == '\0')
		return startup_fail(err, errlen, "no PostgreSQL user name specified in startup packet");
	if (!out->database || out->database[0] == '\0')
		out->database = out->user;
	return true;
}

bool proto_parse_error(const uint8_t *body, size_t len, ErrorFields *out)
{
	PktReader r;

	memset(out, 0, sizeof(*out));
	proto_reader_init(&r, body, len);
	for (;;) {
		uint8_t code;
		const char *value;
		if (!proto_read_uint8(&r, &code))
			return false;
		if (code == 0)
			return true;
		if (!proto_read_cstring(&r, &value))
			return false;
		switch (code) {
		case 'S': out->severity = value; break;
		case 'V': out->severity_nl = value; break;
		case 'C': out->sqlstate = value; break;
		case 'M': out->message = value; break;
		case 'D': out->detail = value; break;
		case 'H': out->hint = value; break;
		default: break;	/* position, context, schema...: not needed */
		}
	}
}

bool proto_parse_param_status(const uint8_t *body, size_t len, const char **name, const char **value)
{
	PktReader r;
	proto_reader_init(&r, body, len);
	if (!proto_read_cstring(&r, name) || !proto_read_cstring(&r, value))
		return false;
	return proto_reader_left(&r) == 0;
}

bool proto_parse_backend_key(const uint8_t *body, size_t len, uint32_t *pid, uint32_t *key)
{
	PktReader r;
	if (len != 8)
		return false;
	proto_reader_init(&r, body, len);
	return proto_read_uint32(&r, pid) && proto_read_uint32(&r, key);
}

bool proto_parse_auth_request(const uint8_t *body, size_t len, AuthRequest *out)
{
	PktReader r;
	proto_reader_init(&r, body, len);
	if (!proto_read_int32(&r, &out->code))
		return false;
	out->data = r.pos;
	out->data_len = proto_reader_left(&r);
	/* The caller reads the md5 salt without a length check of its own. */
	if (out->code == 5 && out->data_len != 4)
		return false;
	return true;
}

bool proto_parse_sasl_initial(const uint8_t *body, size_t len, const char **mech,
			      const uint8_t **data, size_t *data_len)
{
	PktReader r;
	int32_t n;

	proto_reader_init(&r, body, len);
	if (!proto_read_cstring(&r, mech) || !proto_read_int32(&r, &n))
		return false;
	if (n == -1) {
		*data = NULL;
		*data_len = 0;
	} else {
		if (n < 0 || !proto_read_bytes(&r, (size_t)n, data))
			return false;
		*data_len = (size_t)n;
	}
	/* As PostgreSQL's pq_getmsgend(): nothing may trail the response. */
	return proto_reader_left(&r) == 0;
}

static const char *proto_client_msg_name(uint8_t type)
{
	switch (type) {
	case 'B': return "Bind";
	case 'C': return "Close";
	case 'd': return "CopyData";
	case 'c': return "CopyDone";
	case 'f': return "CopyFail";
	case 'D': return "Describe";
	case 'E': return "Execute";
	case 'H': return "Flush";
	case 'F': return "FunctionCall";
	case 'P': return "Parse";
	case 'p': return "PasswordMessage";
	case 'Q': return "Query";
	case 'S': return "Sync";
	case 'X': return "Terminate";
	default: return "Unknown";
	}
}

static const char *proto_server_msg_name(uint8_t type)
{
	switch (type) {
	case 'R': return "Authentication";
	case 'K': return "BackendKeyData";
	case '2': return "BindComplete";
	case '3': return "CloseComplete";
	case 'C': return "CommandComplete";
	case 'd': return "CopyData";
	case 'c': return "CopyDone";
	case 'G': return "CopyInResponse";
	case 'H': return "CopyOutResponse";
	case 'W': return "CopyBothResponse";
	case 'D': return "DataRow";
	case 'I': return "EmptyQueryResponse";
	case 'E': return "ErrorResponse";
	case 'V': return "FunctionCallResponse";
	case 'v': return "NegotiateProtocolVersion";
	case 'n': return "NoData";
	case 'N': return "NoticeResponse";
	case 'A': return "NotificationResponse";
	case 't': return "ParameterDescription";
	case 'S': return "ParameterStatus";
	case '1': return "ParseComplete";
	case 's': return "PortalSuspended";
	case 'Z': return "ReadyForQuery";
	case 'T': return "RowDescription";
	default: return "Unknown";
	}
}

const char *proto_msg_name(uint8_t type, bool from_client)
{
	return from_client ? proto_client_msg_name(type) : proto_server_msg_name(type);
}
