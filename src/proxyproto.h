/*
 * The PROXY protocol (HAProxy's spec, versions 1 and 2): the header a load
 * balancer puts in front of the client's bytes to tell us who the client
 * really is. A pure parser over a byte buffer, plus the trusted-source check;
 * the client glue lives in client.c.
 */
#ifndef PGMOAT_PROXYPROTO_H
#define PGMOAT_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "util.h"

#define PROXYPROTO_V1_MAX 107	/* the spec's bound, "PROXY ... \r\n" included */
#define PROXYPROTO_V2_HDR 16	/* signature, version/command, family, length */
#define PROXYPROTO_V2_MAX_LEN 2048	/* our cap on the v2 address+TLV block */

/* Which versions a listener accepts (config proxy_protocol). */
typedef enum {
	PROXYPROTO_OFF = 0,
	PROXYPROTO_V1 = 1,
	PROXYPROTO_V2 = 2,
	PROXYPROTO_ANY = 3,	/* v1 | v2: detected from the first byte */
} ProxyMode;

typedef enum {
	PROXYPROTO_NEED_MORE,	/* a valid prefix: wait for more bytes */
	PROXYPROTO_OK,		/* header complete; consumed bytes to skip */
	PROXYPROTO_BAD,		/* not a header we accept: close the connection */
} ProxyResult;

typedef struct ProxyHeader {
	size_t consumed;	/* header length: the client's own bytes follow */
	int version;		/* 1 or 2 */
	bool local;		/* LOCAL / UNKNOWN / UNSPEC: keep the socket's addresses */
	int family;		/* AF_INET, AF_INET6 or AF_UNIX when !local */
	char src_host[64];	/* numeric address ("unix" for AF_UNIX) */
	int src_port;
	char dst_host[64];
	int dst_port;
} ProxyHeader;

/* Parse "off|v1|v2|any"; false for anything else. */
bool proxyproto_mode_parse(const char *s, ProxyMode *out) MUST_CHECK;

/*
 * Parse the header at the start of buf[0..len). Never reads past len; err
 * (static text) says why on PROXYPROTO_BAD.
 */
ProxyResult proxyproto_parse(const uint8_t *buf, size_t len, ProxyMode mode, ProxyHeader *out,
			     const char **err);

/*
 * Is the peer sa one of the trusted sources? Entries are addresses or CIDR
 * blocks (10.0.0.0/8, ::1, fd00::/8), or "unix" for unix-socket peers.
 */
bool proxyproto_trusted(const StrList *trusted, const struct sockaddr *sa);

/* Is s a valid trusted-source entry? (config validation) */
bool proxyproto_trusted_entry_valid(const char *s);

#endif
