/* PROXY protocol v1/v2 header parsing and the trusted-source list, as a pure unit. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "../../src/proxyproto.h"

static const uint8_t sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

static ProxyResult parse_str(const char *s, ProxyMode mode, ProxyHeader *h)
{
	const char *err;
	return proxyproto_parse((const uint8_t *)s, strlen(s), mode, h, &err);
}

/* A v2 header: command (0 LOCAL, 1 PROXY), family byte, address block. */
static size_t v2(uint8_t *buf, uint8_t cmd, uint8_t fam, const uint8_t *addr, uint16_t alen)
{
	memcpy(buf, sig, 12);
	buf[12] = (uint8_t)(0x20 | cmd);
	buf[13] = fam;
	buf[14] = (uint8_t)(alen >> 8);
	buf[15] = (uint8_t)alen;
	if (alen)
		memcpy(buf + 16, addr, alen);
	return 16 + (size_t)alen;
}

Test(proxyproto, v1_tcp4_gives_source_and_length)
{
	ProxyHeader h;
	const char *s = "PROXY TCP4 192.0.2.7 198.51.100.1 40000 6432\r\nrest";
	cr_assert_eq(parse_str(s, PROXYPROTO_V1, &h), PROXYPROTO_OK);
	cr_assert_str_eq(h.src_host, "192.0.2.7");
	cr_assert_eq(h.src_port, 40000);
	cr_assert_str_eq(h.dst_host, "198.51.100.1");
	cr_assert_eq(h.dst_port, 6432);
	cr_assert_eq(h.consumed, strlen(s) - 4);
	cr_assert_not(h.local);
}

Test(proxyproto, v1_tcp6_and_unknown)
{
	ProxyHeader h;
	cr_assert_eq(parse_str("PROXY TCP6 2001:db8::1 ::1 1 65535\r\n", PROXYPROTO_ANY, &h), PROXYPROTO_OK);
	cr_assert_str_eq(h.src_host, "2001:db8::1");
	cr_assert_eq(h.dst_port, 65535);
	cr_assert_eq(parse_str("PROXY UNKNOWN ffff:f...f:ffff 1 2\r\n", PROXYPROTO_ANY, &h), PROXYPROTO_OK);
	cr_assert(h.local);
}

Test(proxyproto, v1_partial_header_needs_more)
{
	ProxyHeader h;
	cr_assert_eq(parse_str("PRO", PROXYPROTO_V1, &h), PROXYPROTO_NEED_MORE);
	cr_assert_eq(parse_str("PROXY TCP4 1.2.3.4", PROXYPROTO_V1, &h), PROXYPROTO_NEED_MORE);
	cr_assert_eq(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", PROXYPROTO_V1, &h), PROXYPROTO_NEED_MORE);
}

Test(proxyproto, v1_malformed_is_refused)
{
	ProxyHeader h;
	const char *bad[] = {
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",		/* 7 fields */
		"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",		/* double space */
		"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",		/* 5 fields */
		"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",		/* family mismatch */
		"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",	/* port range */
		"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",		/* leading zero */
		"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
		"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",		/* bare LF */
		"PROXY\r\n",
		"PROXZ TCP4",
		"GET / HTTP/1.0\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(parse_str(bad[i], PROXYPROTO_ANY, &h), PROXYPROTO_BAD, "%s", bad[i]);
}

Test(proxyproto, v1_longer_than_107_bytes_is_refused)
{
	char s[200];
	memset(s, 'a', sizeof(s));
	memcpy(s, "PROXY UNKNOWN ", 14);
	s[150] = '\r';
	s[151] = '\n';
	s[152] = '\0';
	ProxyHeader h;
	cr_assert_eq(parse_str(s, PROXYPROTO_V1, &h), PROXYPROTO_BAD);
	/* exactly 107 bytes with CRLF is fine */
	s[105] = '\r';
	s[106] = '\n';
	s[107] = '\0';
	cr_assert_eq(parse_str(s, PROXYPROTO_V1, &h), PROXYPROTO_OK);
	cr_assert_eq(h.consumed, 107);
}

Test(proxyproto, v2_inet_gives_source)
{
	uint8_t buf[64], addr[12] = { 10, 1, 2, 3, 127, 0, 0, 1, 0x9C, 0x40, 0x19, 0x20 };
	size_t n = v2(buf, 1, 0x11, addr, 12);
	ProxyHeader h;
	const char *err;
	cr_assert_eq(proxyproto_parse(buf, n, PROXYPROTO_V2, &h, &err), PROXYPROTO_OK);
	cr_assert_str_eq(h.src_host, "10.1.2.3");
	cr_assert_eq(h.src_port, 40000);
	cr_assert_eq(h.dst_port, 6432);
	cr_assert_eq(h.consumed, 28);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(proxyproto_parse(buf, i, PROXYPROTO_V2, &h, &err), PROXYPROTO_NEED_MORE);
}

Test(proxyproto, v2_inet6_with_tlvs_and_local)
{
	uint8_t buf[128], addr[40] = { 0x20, 0x01, 0x0d, 0xb8 };
	addr[15] = 5;
	addr[31] = 1;
	addr[32] = 0x12;
	addr[33] = 0x34;
	size_t n = v2(buf, 1, 0x21, addr, 40);	/* 4 bytes of TLV after the addresses */
	ProxyHeader h;
	const char *err;
	cr_assert_eq(proxyproto_parse(buf, n, PROXYPROTO_ANY, &h, &err), PROXYPROTO_OK);
	cr_assert_str_eq(h.src_host, "2001:db8::5");
	cr_assert_eq(h.src_port, 0x1234);
	cr_assert_eq(h.consumed, 56);
	n = v2(buf, 0, 0x00, NULL, 0);
	cr_assert_eq(proxyproto_parse(buf, n, PROXYPROTO_ANY, &h, &err), PROXYPROTO_OK);
	cr_assert(h.local);
	cr_assert_eq(h.consumed, 16);
}

Test(proxyproto, v2_unix_and_unspec)
{
	uint8_t buf[300], addr[216] = { 0 };
	ProxyHeader h;
	const char *err;
	size_t n = v2(buf, 1, 0x31, addr, 216);
	cr_assert_eq(proxyproto_parse(buf, n, PROXYPROTO_V2, &h, &err), PROXYPROTO_OK);
	cr_assert_eq(h.family, AF_UNIX);
	n = v2(buf, 1, 0x00, NULL, 0);
	cr_assert_eq(proxyproto_parse(buf, n, PROXYPROTO_V2, &h, &err), PROXYPROTO_OK);
	cr_assert(h.local);
}

Test(proxyproto, v2_malformed_is_refused)
{
	uint8_t buf[64], addr[12] = { 0 };
	ProxyHeader h;
	const char *err;
	size_t n = v2(buf, 1, 0x11, addr, 8);	/* too short for IPv4 */
	cr_assert_eq(proxyproto_parse(buf, n, PROXYPROTO_V2, &h, &err), PROXYPROTO_BAD);
	n = v2(buf, 1, 0x12, addr, 12);		/* UDP */
	cr_assert_eq(proxyproto_parse(buf, n, PROXYPROTO_V2, &h, &err), PROXYPROTO_BAD);
	n = v2(buf, 2, 0x11, addr, 12);		/* unknown command */
	cr_assert_eq(proxyproto_parse(buf, n, PROXYPROTO_V2, &h, &err), PROXYPROTO_BAD);
	n = v2(buf, 1, 0x11, addr, 12);
	buf[12] = 0x11;				/* version 1 in a v2 header */
	cr_assert_eq(proxyproto_parse(buf, n, PROXYPROTO_V2, &h, &err), PROXYPROTO_BAD);
	n = v2(buf, 1, 0x11, addr, 12);
	buf[14] = 0xFF;				/* length past our cap */
	cr_assert_eq(proxyproto_parse(buf, n, PROXYPROTO_V2, &h, &err), PROXYPROTO_BAD);
	n = v2(buf, 1, 0x11, addr, 12);
	buf[5] = 0;				/* bad signature */
	cr_assert_eq(proxyproto_parse(buf, n, PROXYPROTO_V2, &h, &err), PROXYPROTO_BAD);
}

Test(proxyproto, mode_restricts_versions)
{
	ProxyHeader h;
	uint8_t buf[64], addr[12] = { 0 };
	const char *err;
	size_t n = v2(buf, 1, 0x11, addr, 12);
	cr_assert_eq(proxyproto_parse(buf, n, PROXYPROTO_V1, &h, &err), PROXYPROTO_BAD);
	cr_assert_eq(parse_str("PROXY UNKNOWN\r\n", PROXYPROTO_V2, &h), PROXYPROTO_BAD);
	/* a plain StartupMessage from a trusted source is refused */
	uint8_t startup[8] = { 0, 0, 0, 8, 0, 3, 0, 0 };
	cr_assert_eq(proxyproto_parse(startup, 8, PROXYPROTO_ANY, &h, &err), PROXYPROTO_BAD);
	ProxyMode m;
	cr_assert(proxyproto_mode_parse("any", &m) && m == PROXYPROTO_ANY);
	cr_assert_not(proxyproto_mode_parse("v3", &m));
}

static struct sockaddr_storage sa4(const char *ip)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	in->sin_family = AF_INET;
	inet_pton(AF_INET, ip, &in->sin_addr);
	return ss;
}

static struct sockaddr_storage sa6(const char *ip)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	in6->sin6_family = AF_INET6;
	inet_pton(AF_INET6, ip, &in6->sin6_addr);
	return ss;
}

Test(proxyproto, trusted_sources_by_cidr)
{
	StrList l = { 0 };
	strlist_parse_csv(&l, "10.0.0.0/8, 192.168.1.5, fd00::/8, unix");
	struct sockaddr_storage a;
	a = sa4("10.200.3.4");
	cr_assert(proxyproto_trusted(&l, (struct sockaddr *)&a));
	a = sa4("11.0.0.1");
	cr_assert_not(proxyproto_trusted(&l, (struct sockaddr *)&a));
	a = sa4("192.168.1.5");
	cr_assert(proxyproto_trusted(&l, (struct sockaddr *)&a));
	a = sa4("192.168.1.6");
	cr_assert_not(proxyproto_trusted(&l, (struct sockaddr *)&a));
	a = sa6("fd12::1");
	cr_assert(proxyproto_trusted(&l, (struct sockaddr *)&a));
	a = sa6("::ffff:10.1.1.1");
	cr_assert(proxyproto_trusted(&l, (struct sockaddr *)&a));
	a = sa6("fe80::1");
	cr_assert_not(proxyproto_trusted(&l, (struct sockaddr *)&a));
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	cr_assert(proxyproto_trusted(&l, (struct sockaddr *)&un));
	strlist_free(&l);
	cr_assert(proxyproto_trusted_entry_valid("127.0.0.1/32"));
	cr_assert_not(proxyproto_trusted_entry_valid("127.0.0.1/33"));
	cr_assert_not(proxyproto_trusted_entry_valid("example.com"));
	cr_assert_not(proxyproto_trusted_entry_valid("10.0.0.0/"));
}
