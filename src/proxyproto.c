/*
 * PROXY protocol v1 (text) and v2 (binary) header parsing, strictly to the
 * spec's bounds: a v1 line is at most 107 bytes and has exactly six fields;
 * a v2 header has the 12-byte signature, version 2, command LOCAL or PROXY,
 * a family we know and a length that covers that family's addresses.
 * Everything is read through bounds checks on (buf, len): no byte past len
 * is ever looked at.
 */
#include "proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

static const uint8_t v2_signature[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
					  0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };
static const char v1_prefix[] = "PROXY ";

bool proxyproto_mode_parse(const char *s, ProxyMode *out)
{
	static const struct {
		const char *name;
		ProxyMode mode;
	} names[] = { { "off", PROXYPROTO_OFF }, { "v1", PROXYPROTO_V1 },
		      { "v2", PROXYPROTO_V2 }, { "any", PROXYPROTO_ANY } };
	for (size_t i = 0; s && i < ARRAY_SIZE(names); i++) {
		if (strcmp(s, names[i].name) == 0) {
			*out = names[i].mode;
			return true;
		}
	}
	return false;
}

static ProxyResult fail(const char **err, const char *why)
{
	*err = why;
	return PROXYPROTO_BAD;
}

/* ---- version 1 ----------------------------------------------------------- */

/* A decimal port: 1 to 5 digits, no sign, no leading zero, at most 65535. */
static bool v1_port(const char *s, int *out)
{
	size_t n = strlen(s);
	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return false;
	int v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v > 65535)
		return false;
	*out = v;
	return true;
}

static bool v1_addr(int family, const char *s, char *out, size_t outlen)
{
	uint8_t bin[16];
	if (inet_pton(family, s, bin) != 1)
		return false;
	return inet_ntop(family, bin, out, (socklen_t)outlen) != NULL;
}

/* line: the header without "\r\n", NUL-terminated, at most 105 bytes. */
static ProxyResult v1_fields(char *line, ProxyHeader *out, const char **err)
{
	char *fields[7];
	int n = 0;
	char *p = line;
	/* Single spaces between fields: split by hand, strtok would merge runs. */
	while (n < 7) {
		fields[n++] = p;
		char *sp = strchr(p, ' ');
		if (!sp)
			break;
		*sp = '\0';
		p = sp + 1;
	}
	if (n >= 2 && strcmp(fields[1], "UNKNOWN") == 0) {
		out->local = true;	/* the rest of the line is to be ignored */
		return PROXYPROTO_OK;
	}
	if (n != 6)
		return fail(err, "PROXY v1: expected 6 fields");
	int family;
	if (strcmp(fields[1], "TCP4") == 0)
		family = AF_INET;
	else if (strcmp(fields[1], "TCP6") == 0)
		family = AF_INET6;
	else
		return fail(err, "PROXY v1: unknown protocol");
	if (!v1_addr(family, fields[2], out->src_host, sizeof(out->src_host)) ||
	    !v1_addr(family, fields[3], out->dst_host, sizeof(out->dst_host)))
		return fail(err, "PROXY v1: invalid address");
	if (!v1_port(fields[4], &out->src_port) || !v1_port(fields[5], &out->dst_port))
		return fail(err, "PROXY v1: invalid port");
	out->family = family;
	return PROXYPROTO_OK;
}

static ProxyResult v1_parse(const uint8_t *buf, size_t len, ProxyHeader *out, const char **err)
{
	size_t plen = sizeof(v1_prefix) - 1;
	if (memcmp(buf, v1_prefix, len < plen ? len : plen) != 0)
		return fail(err, "PROXY v1: bad prefix");
	size_t limit = len < PROXYPROTO_V1_MAX ? len : PROXYPROTO_V1_MAX;
	size_t end = 0;
	for (size_t i = 0; i < limit; i++) {
		if (buf[i] == '\r' && i + 1 == limit)
			break;	/* the LF may come next */
		if (buf[i] == '\r' && buf[i + 1] == '\n') {
			end = i;
			break;
		}
		if (buf[i] == '\0' || buf[i] == '\n' || buf[i] == '\r')
			return fail(err, "PROXY v1: invalid character");
	}
	if (end == 0) {
		if (len >= PROXYPROTO_V1_MAX)
			return fail(err, "PROXY v1: header longer than 107 bytes");
		return PROXYPROTO_NEED_MORE;
	}
	if (end < plen)
		return fail(err, "PROXY v1: bad prefix");
	char line[PROXYPROTO_V1_MAX];
	memcpy(line, buf, end);
	line[end] = '\0';
	out->version = 1;
	out->consumed = end + 2;
	return v1_fields(line, out, err);
}

/* ---- version 2 ----------------------------------------------------------- */

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static void v2_inet(const uint8_t *a, ProxyHeader *out)
{
	inet_ntop(AF_INET, a, out->src_host, sizeof(out->src_host));
	inet_ntop(AF_INET, a + 4, out->dst_host, sizeof(out->dst_host));
	out->src_port = rd16(a + 8);
	out->dst_port = rd16(a + 10);
}

static void v2_inet6(const uint8_t *a, ProxyHeader *out)
{
	inet_ntop(AF_INET6, a, out->src_host, sizeof(out->src_host));
	inet_ntop(AF_INET6, a + 16, out->dst_host, sizeof(out->dst_host));
	out->src_port = rd16(a + 32);
	out->dst_port = rd16(a + 34);
}

/* The address block of a PROXY command; addr has alen bytes. */
static ProxyResult v2_addresses(uint8_t fam, const uint8_t *addr, size_t alen, ProxyHeader *out,
				const char **err)
{
	switch (fam) {
	case 0x00:	/* AF_UNSPEC: the sender does not know; keep our own view */
		out->local = true;
		return PROXYPROTO_OK;
	case 0x11:	/* TCP over IPv4: 4 + 4 + 2 + 2 */
		if (alen < 12)
			return fail(err, "PROXY v2: length too short for IPv4");
		out->family = AF_INET;
		v2_inet(addr, out);
		return PROXYPROTO_OK;
	case 0x21:	/* TCP over IPv6: 16 + 16 + 2 + 2 */
		if (alen < 36)
			return fail(err, "PROXY v2: length too short for IPv6");
		out->family = AF_INET6;
		v2_inet6(addr, out);
		return PROXYPROTO_OK;
	case 0x31:	/* stream over AF_UNIX: 108 + 108 */
		if (alen < 216)
			return fail(err, "PROXY v2: length too short for a unix address");
		out->family = AF_UNIX;
		snprintf(out->src_host, sizeof(out->src_host), "unix");
		snprintf(out->dst_host, sizeof(out->dst_host), "unix");
		return PROXYPROTO_OK;
	default:	/* UDP and datagram families: not for a PostgreSQL stream */
		return fail(err, "PROXY v2: unsupported address family");
	}
}

static ProxyResult v2_parse(const uint8_t *buf, size_t len, ProxyHeader *out, const char **err)
{
	size_t cmp = len < sizeof(v2_signature) ? len : sizeof(v2_signature);
	if (memcmp(buf, v2_signature, cmp) != 0)
		return fail(err, "PROXY v2: bad signature");
	if (len < PROXYPROTO_V2_HDR)
		return PROXYPROTO_NEED_MORE;
	uint8_t ver_cmd = buf[12];
	uint8_t fam = buf[13];
	size_t alen = rd16(buf + 14);
	if ((ver_cmd >> 4) != 2)
		return fail(err, "PROXY v2: unsupported version");
	if ((ver_cmd & 0x0F) > 1)
		return fail(err, "PROXY v2: unknown command");
	if (alen > PROXYPROTO_V2_MAX_LEN)
		return fail(err, "PROXY v2: header too long");
	if (alen > len - PROXYPROTO_V2_HDR)
		return PROXYPROTO_NEED_MORE;
	out->version = 2;
	out->consumed = PROXYPROTO_V2_HDR + alen;
	if ((ver_cmd & 0x0F) == 0) {
		/* LOCAL: the balancer's own connection (health check); family ignored. */
		out->local = true;
		return PROXYPROTO_OK;
	}
	return v2_addresses(fam, buf + PROXYPROTO_V2_HDR, alen, out, err);
}

ProxyResult proxyproto_parse(const uint8_t *buf, size_t len, ProxyMode mode, ProxyHeader *out,
			     const char **err)
{
	memset(out, 0, sizeof(*out));
	*err = NULL;
	if (len == 0)
		return PROXYPROTO_NEED_MORE;
	if (buf[0] == 'P' && (mode & PROXYPROTO_V1))
		return v1_parse(buf, len, out, err);
	if (buf[0] == v2_signature[0] && (mode & PROXYPROTO_V2))
		return v2_parse(buf, len, out, err);
	return fail(err, "no PROXY protocol header from a trusted source");
}

/* ---- trusted sources ------------------------------------------------------ */

typedef struct Cidr {
	int family;
	uint8_t addr[16];
	int bits;
} Cidr;

static bool cidr_parse(const char *s, Cidr *out)
{
	char host[64];
	const char *slash = strchr(s, '/');
	size_t hlen = slash ? (size_t)(slash - s) : strlen(s);
	if (hlen == 0 || hlen >= sizeof(host))
		return false;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, out->addr) == 1)
		out->family = AF_INET;
	else if (inet_pton(AF_INET6, host, out->addr) == 1)
		out->family = AF_INET6;
	else
		return false;
	int max = out->family == AF_INET ? 32 : 128;
	out->bits = max;
	if (slash) {
		const char *b = slash + 1;
		if (*b == '\0' || strlen(b) > 3)
			return false;
		int v = 0;
		for (; *b; b++) {
			if (*b < '0' || *b > '9')
				return false;
			v = v * 10 + (*b - '0');
		}
		if (v > max)
			return false;
		out->bits = v;
	}
	return true;
}

static bool cidr_match(const Cidr *c, const uint8_t *addr)
{
	int full = c->bits / 8, rest = c->bits % 8;
	if (memcmp(c->addr, addr, (size_t)full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xFF << (8 - rest));
	return (c->addr[full] & mask) == (addr[full] & mask);
}

bool proxyproto_trusted_entry_valid(const char *s)
{
	Cidr c;
	return strcmp(s, "unix") == 0 || cidr_parse(s, &c);
}

/* The peer's address bytes; an IPv4-mapped IPv6 peer also matches IPv4 entries. */
static bool peer_bytes(const struct sockaddr *sa, int family, uint8_t *out)
{
	if (sa->sa_family == AF_INET && family == AF_INET) {
		memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return true;
	}
	if (sa->sa_family != AF_INET6)
		return false;
	const uint8_t *a6 = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
	if (family == AF_INET6) {
		memcpy(out, a6, 16);
		return true;
	}
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF };
	if (memcmp(a6, mapped, 12) != 0)
		return false;
	memcpy(out, a6 + 12, 4);
	return true;
}

bool proxyproto_trusted(const StrList *trusted, const struct sockaddr *sa)
{
	for (int i = 0; i < trusted->count; i++) {
		const char *e = trusted->items[i];
		if (strcmp(e, "unix") == 0) {
			if (sa->sa_family == AF_UNIX)
				return true;
			continue;
		}
		Cidr c;
		uint8_t addr[16];
		if (cidr_parse(e, &c) && peer_bytes(sa, c.family, addr) && cidr_match(&c, addr))
			return true;
	}
	return false;
}
