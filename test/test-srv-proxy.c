/* SPDX-License-Identifier: BSD-3-Clause */
/* test/srv-proxy: PROXY protocol headers, parsed and read off sockets. */
#include "t-helpers.h"

#include "proxy.h" /* server/'s internal header */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/*
 * Vectors come from the spec (HAProxy's proxy-protocol.txt, cited as
 * "spec 2.1"...), rebuilt here byte by byte; the v2 checksum is computed
 * by a table-driven CRC32c of the test's own, anchored on the standard
 * check value. Every vector also goes through check_prefixes(): each
 * prefix of a valid header is "incomplete" with a need that never
 * overshoots its end (what srv__proxy_read() relies on), and a malformed
 * input stays malformed as it grows.
 */

#define MS 1000000ULL

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
				0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* ---------------------------------------------------------------------
 * Helpers: a v2 header builder, an independent CRC32c, prefix checks.
 * --------------------------------------------------------------------- */
struct hb {
	uint8_t b[8192];
	size_t n;
};

static void hb_put(struct hb *h, const void *p, size_t n)
{
	assert_true(h->n + n <= sizeof(h->b));
	memcpy(h->b + h->n, p, n);
	h->n += n;
}

static void hb_byte(struct hb *h, unsigned v, size_t n)
{
	assert_true(h->n + n <= sizeof(h->b));
	memset(h->b + h->n, (int)v, n);
	h->n += n;
}

static void hb_v2(struct hb *h, uint8_t ver_cmd, uint8_t fam)
{
	uint8_t x[4] = {ver_cmd, fam, 0, 0};

	h->n = 0;
	hb_put(h, sig, sizeof(sig));
	hb_put(h, x, sizeof(x));
}

static void hb_tlv(struct hb *h, uint8_t type, const void *v, size_t n)
{
	uint8_t x[3] = {type, (uint8_t)(n >> 8), (uint8_t)n};

	hb_put(h, x, sizeof(x));
	if (v != NULL)
		hb_put(h, v, n);
	else
		hb_byte(h, 'v', n);
}

/* Set the length field from what was put; returns the header's size. */
static size_t hb_end(struct hb *h)
{
	size_t body = h->n - 16;

	h->b[14] = (uint8_t)(body >> 8);
	h->b[15] = (uint8_t)body;
	return h->n;
}

/* TCP over IPv4: 192.168.0.1:56324 -> 192.168.0.11:443 (spec 2.1). */
static void hb_tcp4(struct hb *h, uint8_t ver_cmd)
{
	/* The addresses, then the ports, in network order. */
	static const char a[] = "\xC0\xA8\x00\x01\xC0\xA8\x00\x0B"
				"\xDC\x04\x01\xBB";

	hb_v2(h, ver_cmd, 0x11);
	hb_put(h, a, 12);
}

static uint32_t t_crc32c(const uint8_t *p, size_t n)
{
	uint32_t table[256], crc = 0xFFFFFFFFU;

	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78U : c >> 1;
		table[i] = c;
	}
	for (size_t i = 0; i < n; i++)
		crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
	return ~crc;
}

/* Append a CRC32c TLV and fill it in (spec 2.2.3); returns the size. */
static size_t hb_crc(struct hb *h)
{
	size_t at, len;
	uint32_t c;

	hb_tlv(h, SRV__PP2_TYPE_CRC32C, "\0\0\0\0", 4);
	at = h->n - 4;
	len = hb_end(h);
	c = t_crc32c(h->b, len);
	h->b[at] = (uint8_t)(c >> 24);
	h->b[at + 1] = (uint8_t)(c >> 16);
	h->b[at + 2] = (uint8_t)(c >> 8);
	h->b[at + 3] = (uint8_t)c;
	return len;
}

/*
 * Parse buf[0..len) into out and return the result, after checking every
 * shorter prefix: -EAGAIN with 1 <= need <= (header end - prefix) until
 * the header is complete, the same length from there on; once -EPROTO,
 * always -EPROTO.
 */
static int check_prefixes(const void *buf, size_t len,
			  struct srv__proxy_hdr *out)
{
	int want = srv__proxy_parse(buf, len, out);
	struct srv__proxy_hdr h;
	bool bad = false;

	if (want == -EPROTO)
		assert_non_null(out->error);
	for (size_t k = 0; k < len; k++) {
		int r = srv__proxy_parse(buf, k, &h);

		if (bad || r == -EPROTO) {
			assert_int_equal(r, -EPROTO);
			assert_int_equal(want, -EPROTO);
			assert_non_null(h.error);
			bad = true;
			continue;
		}
		if (want > 0 && k >= (size_t)want) {
			assert_int_equal(r, want);
			continue;
		}
		if (r != -EAGAIN)
			fail_msg("prefix %zu of %zu: %d (want %d)", k, len, r,
				 want);
		assert_true(h.need >= 1);
		if (want > 0 && h.need > (size_t)want - k)
			fail_msg("prefix %zu: need %zu overshoots %d", k,
				 h.need, want);
	}
	return want;
}

static int check_str(const char *s, struct srv__proxy_hdr *out)
{
	return check_prefixes(s, strlen(s), out);
}

static void assert_v4(const struct sockaddr_storage *ss, const char *addr,
		      unsigned port)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
	char text[INET_ADDRSTRLEN];

	assert_int_equal(sin->sin_family, AF_INET);
	assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text)));
	assert_string_equal(text, addr);
	assert_int_equal(ntohs(sin->sin_port), port);
}

static void assert_v6(const struct sockaddr_storage *ss, const char *addr,
		      unsigned port)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
	char text[INET6_ADDRSTRLEN];

	assert_int_equal(sin6->sin6_family, AF_INET6);
	assert_non_null(
		inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof(text)));
	assert_string_equal(text, addr);
	assert_int_equal(ntohs(sin6->sin6_port), port);
}

/* ---------------------------------------------------------------------
 * Version 1.
 * --------------------------------------------------------------------- */
static void test_srv_proxy_v1_vectors(void **state)
{
	/* Spec 2.1's example, followed by the request it carries. */
	static const char ex[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 "
				 "443\r\nGET / HTTP/1.1\r\n";
	static const char max4[] =
		"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
	static const char max6[] =
		"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	struct srv__proxy_hdr h;

	(void)state;
	assert_int_equal(check_str(ex, &h), 47);
	assert_int_equal(h.version, 1);
	assert_int_equal(h.family, AF_INET);
	assert_int_equal(h.socktype, SOCK_STREAM);
	assert_int_equal(h.addrlen, sizeof(struct sockaddr_in));
	assert_false(h.local);
	assert_int_equal(h.tlvs, 0);
	assert_v4(&h.src, "192.168.0.1", 56324);
	assert_v4(&h.dst, "192.168.0.11", 443);

	/* The longest lines the spec lists: 56, 104 and 107 bytes. */
	assert_int_equal(check_str(max4, &h), 56);
	assert_v4(&h.src, "255.255.255.255", 65535);
	assert_int_equal(check_str(max6, &h), 104);
	assert_int_equal(h.family, AF_INET6);
	assert_int_equal(h.addrlen, sizeof(struct sockaddr_in6));
	assert_v6(&h.dst, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);

	assert_int_equal(check_str("PROXY UNKNOWN\r\n", &h), 15);
	assert_int_equal(h.family, AF_UNSPEC);
	assert_int_equal(h.version, 1);
	assert_int_equal(check_str("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:"
				   "ffff 65535 65535 and whatever else fits "
				   "in the line, all ignored\r\nX",
				   &h),
			 107);
	assert_int_equal(h.family, AF_UNSPEC);

	/* inet_ntop(3) forms: compressed, mixed case, a dotted tail. */
	assert_int_equal(check_str("PROXY TCP6 2001:DB8::1 ::1 0 1\r\n", &h),
			 32);
	assert_v6(&h.src, "2001:db8::1", 0);
	assert_v6(&h.dst, "::1", 1);
	assert_int_equal(
		check_str("PROXY TCP6 ::ffff:10.1.2.3 :: 1234 5\r\n", &h), 38);
	assert_v6(&h.src, "::ffff:10.1.2.3", 1234);
	assert_int_equal(check_str("PROXY TCP4 0.0.0.0 10.0.0.1 0 0\r\n", &h),
			 33);
	assert_v4(&h.src, "0.0.0.0", 0);
}

/* Valid beginnings, and how much more they need at least. */
static void test_srv_proxy_v1_partial(void **state)
{
	static const struct {
		const char *in;
		size_t need;
	} v[] = {
		{"", 15},
		{"P", 14},
		{"PROXY ", 9},
		{"PROXY UNKNOWN", 2},
		{"PROXY UNKNOWN ", 2},
		{"PROXY UNKNOWN whatever", 2},
		{"PROXY TCP4 ", 21}, /* 0.0.0.0 0.0.0.0 0 0\r\n */
		{"PROXY TCP4 1", 14},
		{"PROXY TCP6 ", 11},		    /* :: :: 0 0\r\n */
		{"PROXY TCP4 1.2.3.4 5.6.7.8 ", 5}, /* 0 0\r\n */
		{"PROXY TCP4 1.2.3.4 5.6.7.8 1 2", 2},
		{"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", 1},
		{"PROXY UNKNOWN\r", 1},
	};
	struct srv__proxy_hdr h;

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		int r = check_str(v[i].in, &h);

		if (r != -EAGAIN || h.need != v[i].need)
			fail_msg("\"%s\": %d need %zu, want need %zu", v[i].in,
				 r, h.need, v[i].need);
	}
}

static void test_srv_proxy_v1_malformed(void **state)
{
	static const char *const bad[] = {
		"GET / HTTP/1.1\r\n",
		"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY\r\n",
		"PROXY \r\n",
		"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY UNKNOWNX\r\n",
		"PROXY TCP4\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
		"PROXY UNKNOWN\r\r\n",
		"PROXY UNKNOWN\n",
		"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3.00 5.6.7.8 1 2\r\n",
		"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n",
		"PROXY TCP4 .1.2.3 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3.4. 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n",
		"PROXY TCP4 ::1 ::1 1 2\r\n",
		"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n",
		"PROXY TCP6 1::2::3 ::1 1 2\r\n",
		"PROXY TCP6 12345:: ::1 1 2\r\n",
		"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
		"PROXY TCP6 :: ::g 1 2\r\n",
		"PROXY TCP6 ::ffff:1.2.3.04 :: 1 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
		"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
		"PROXY UNKNOWN \x80\r\n",
		"PROXY UNKNOWN \x01\r\n",
		"\rPROXY UNKNOWN\r\n",
		"XPROXY UNKNOWN\r\n",
	};
	struct srv__proxy_hdr h;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (check_str(bad[i], &h) != -EPROTO)
			fail_msg("accepted: \"%s\"", bad[i]);
		assert_non_null(h.error);
	}
	/* A NUL byte inside the line. */
	assert_int_equal(check_prefixes("PROXY UNKNOWN \0\r\n", 17, &h),
			 -EPROTO);
}

/* 107 bytes with the CRLF is the limit; no CRLF by then is refused. */
static void test_srv_proxy_v1_length_limit(void **state)
{
	char line[200];
	struct srv__proxy_hdr h;

	(void)state;
	memset(line, 'a', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + 105, "\r\n", 2);
	assert_int_equal(check_prefixes(line, 107, &h), 107);
	assert_int_equal(check_prefixes(line, 150, &h), 107);
	memset(line + 105, 'a', 2);
	memcpy(line + 106, "\r\n", 2); /* the LF would be byte 108 */
	assert_int_equal(check_prefixes(line, 108, &h), -EPROTO);
	assert_int_equal(srv__proxy_parse(line, 107, &h), -EPROTO);
	assert_int_equal(srv__proxy_parse(line, 106, &h), -EAGAIN);
	memset(line + 105, 'a', 10);
	assert_int_equal(check_prefixes(line, sizeof(line), &h), -EPROTO);
	assert_non_null(strstr(h.error, "107"));
}

/* ---------------------------------------------------------------------
 * Version 2.
 * --------------------------------------------------------------------- */
static void test_srv_proxy_v2_addresses(void **state)
{
	struct srv__proxy_hdr h;
	struct hb b;
	size_t len;

	(void)state;
	/* TCP over IPv4, then the application's bytes. */
	hb_tcp4(&b, 0x21);
	len = hb_end(&b);
	assert_int_equal(len, 28);
	hb_put(&b, "DATA", 4);
	assert_int_equal(check_prefixes(b.b, b.n, &h), 28);
	assert_int_equal(h.version, 2);
	assert_false(h.local);
	assert_int_equal(h.family, AF_INET);
	assert_int_equal(h.socktype, SOCK_STREAM);
	assert_v4(&h.src, "192.168.0.1", 56324);
	assert_v4(&h.dst, "192.168.0.11", 443);

	/* UDP over IPv6. */
	hb_v2(&b, 0x21, 0x22);
	hb_put(&b, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
	hb_put(&b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x02", 16);
	hb_put(&b, "\x00\x35\xff\xff", 4);
	assert_int_equal(check_prefixes(b.b, hb_end(&b), &h), 52);
	assert_int_equal(h.family, AF_INET6);
	assert_int_equal(h.socktype, SOCK_DGRAM);
	assert_v6(&h.src, "2001:db8::1", 53);
	assert_v6(&h.dst, "::2", 65535);

	/* UNIX stream: 108 bytes each. */
	hb_v2(&b, 0x21, 0x31);
	hb_put(&b, "/run/src.sock", 13);
	hb_byte(&b, 0, 108 - 13);
	hb_byte(&b, 'd', 108);
	assert_int_equal(check_prefixes(b.b, hb_end(&b), &h), 232);
	assert_int_equal(h.family, AF_UNIX);
	assert_int_equal(h.addrlen, sizeof(struct sockaddr_un));
	assert_string_equal(((struct sockaddr_un *)&h.src)->sun_path,
			    "/run/src.sock");
	assert_int_equal(((struct sockaddr_un *)&h.dst)->sun_path[107], 'd');

	/* LOCAL: a health check; any address block is ignored. */
	hb_v2(&b, 0x20, 0x00);
	assert_int_equal(check_prefixes(b.b, hb_end(&b), &h), 16);
	assert_true(h.local);
	assert_int_equal(h.family, AF_UNSPEC);
	hb_tcp4(&b, 0x20);
	assert_int_equal(check_prefixes(b.b, hb_end(&b), &h), 28);
	assert_true(h.local);
	assert_int_equal(h.family, AF_UNSPEC);
	assert_int_equal(h.socktype, 0);
	/* LOCAL with a family but fewer address bytes: still fine. */
	hb_v2(&b, 0x20, 0x21);
	hb_byte(&b, 0, 3);
	assert_int_equal(check_prefixes(b.b, hb_end(&b), &h), 19);
	assert_true(h.local);

	/* PROXY, UNSPEC: the real addresses are kept (spec 2.2). */
	hb_v2(&b, 0x21, 0x00);
	assert_int_equal(check_prefixes(b.b, hb_end(&b), &h), 16);
	assert_false(h.local);
	assert_int_equal(h.family, AF_UNSPEC);
	/* Half UNSPEC: no address block size, the rest is skipped. */
	hb_v2(&b, 0x21, 0x10);
	hb_byte(&b, 0xFF, 5);
	assert_int_equal(check_prefixes(b.b, hb_end(&b), &h), 21);
	assert_int_equal(h.family, AF_UNSPEC);
	hb_v2(&b, 0x21, 0x01);
	assert_int_equal(check_prefixes(b.b, hb_end(&b), &h), 16);
	assert_int_equal(h.family, AF_UNSPEC);
}

static void test_srv_proxy_v2_partial(void **state)
{
	struct srv__proxy_hdr h;
	struct hb b;

	(void)state;
	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_NOOP, NULL, 100);
	hb_end(&b);
	assert_int_equal(srv__proxy_parse(b.b, 1, &h), -EAGAIN);
	assert_int_equal(h.need, 15);
	assert_int_equal(srv__proxy_parse(b.b, 15, &h), -EAGAIN);
	assert_int_equal(h.need, 1);
	assert_int_equal(srv__proxy_parse(b.b, 16, &h), -EAGAIN);
	assert_int_equal(h.need, 12 + 103);
	assert_int_equal(srv__proxy_parse(b.b, 130, &h), -EAGAIN);
	assert_int_equal(h.need, 1);
	assert_int_equal(check_prefixes(b.b, b.n, &h), 131);
}

static void test_srv_proxy_v2_tlvs(void **state)
{
	static const uint8_t ssl_ver[] = "TLSv1.3";
	uint8_t uid[SRV__PROXY_UNIQUE_ID_MAX], ssl[64];
	struct srv__proxy_hdr h;
	size_t sn = 0;
	struct hb b;

	(void)state;
	for (size_t i = 0; i < sizeof(uid); i++)
		uid[i] = (uint8_t)i; /* opaque, NUL bytes included */
	/* SSL: client, verify, then VERSION, CN and CIPHER sub-TLVs. */
	ssl[sn++] = SRV__PP2_CLIENT_SSL | SRV__PP2_CLIENT_CERT_CONN;
	memcpy(ssl + sn, "\0\0\0\x2a", 4);
	sn += 4;
	memcpy(ssl + sn, "\x21\x00\x07TLSv1.3", 10);
	sn += 10;
	memcpy(ssl + sn, "\x22\0\3bob", 6);
	sn += 6;
	memcpy(ssl + sn, "\x23\x00\x00", 3);
	sn += 3;

	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_NOOP, NULL, 0);
	hb_tlv(&b, SRV__PP2_TYPE_ALPN, "h2", 2);
	hb_tlv(&b, SRV__PP2_TYPE_AUTHORITY, "imap.example.com", 16);
	hb_tlv(&b, SRV__PP2_TYPE_UNIQUE_ID, uid, sizeof(uid));
	hb_tlv(&b, SRV__PP2_TYPE_SSL, ssl, sn);
	hb_tlv(&b, 0x30, "netns", 5); /* NETNS: skipped */
	hb_tlv(&b, 0xE0, NULL, 9);    /* custom: skipped */
	hb_tlv(&b, SRV__PP2_TYPE_NOOP, NULL, 3);
	assert_int_equal(check_prefixes(b.b, hb_end(&b), &h), (int)b.n);
	assert_int_equal(h.family, AF_INET);
	assert_int_equal(h.tlvs,
			 SRV__PROXY_TLV_ALPN | SRV__PROXY_TLV_AUTHORITY |
				 SRV__PROXY_TLV_UNIQUE_ID | SRV__PROXY_TLV_SSL |
				 SRV__PROXY_TLV_SSL_VERSION);
	assert_int_equal(h.tlv_toolong, 0);
	assert_int_equal(h.alpn_len, 2);
	assert_string_equal(h.alpn, "h2");
	assert_int_equal(h.authority_len, 16);
	assert_string_equal(h.authority, "imap.example.com");
	assert_int_equal(h.unique_id_len, sizeof(uid));
	assert_memory_equal(h.unique_id, uid, sizeof(uid));
	assert_int_equal(h.ssl_client, 3);
	assert_int_equal(h.ssl_verify, 42);
	assert_int_equal(h.ssl_version_len, 7);
	assert_memory_equal(h.ssl_version, ssl_ver, 8);

	/* Too long to store: flagged, never truncated. */
	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_ALPN, NULL, SRV__PROXY_ALPN_MAX + 1);
	memcpy(ssl + 5, "\x21\x00\x21", 3); /* a 33-byte version */
	memset(ssl + 8, 'v', 33);
	hb_tlv(&b, SRV__PP2_TYPE_SSL, ssl, 5 + 3 + 33);
	assert_int_equal(check_prefixes(b.b, hb_end(&b), &h), (int)b.n);
	assert_int_equal(h.tlvs, SRV__PROXY_TLV_SSL);
	assert_int_equal(h.tlv_toolong,
			 SRV__PROXY_TLV_ALPN | SRV__PROXY_TLV_SSL_VERSION);
	assert_int_equal(h.alpn_len, 0);
	assert_int_equal(h.ssl_version_len, 0);
	/* At the limits exactly: stored. */
	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_ALPN, NULL, SRV__PROXY_ALPN_MAX);
	hb_tlv(&b, SRV__PP2_TYPE_AUTHORITY, NULL, SRV__PROXY_AUTHORITY_MAX);
	assert_int_equal(check_prefixes(b.b, hb_end(&b), &h), (int)b.n);
	assert_int_equal(h.alpn_len, SRV__PROXY_ALPN_MAX);
	assert_int_equal(h.authority_len, SRV__PROXY_AUTHORITY_MAX);

	/* LOCAL: TLVs after an empty block are still read. */
	hb_v2(&b, 0x20, 0x00);
	hb_tlv(&b, SRV__PP2_TYPE_UNIQUE_ID, "id", 2);
	assert_int_equal(check_prefixes(b.b, hb_end(&b), &h), 21);
	assert_true(h.local);
	assert_int_equal(h.tlvs, SRV__PROXY_TLV_UNIQUE_ID);
}

static void test_srv_proxy_v2_crc32c(void **state)
{
	struct srv__proxy_hdr h;
	struct hb b;
	size_t len;

	(void)state;
	/* The standard check value anchors the test's own CRC32c. */
	assert_int_equal(t_crc32c((const uint8_t *)"123456789", 9),
			 0xE3069283U);

	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_ALPN, "imap", 4);
	len = hb_crc(&b);
	hb_put(&b, "A1 CAPABILITY\r\n", 15);
	if (check_prefixes(b.b, b.n, &h) != (int)len)
		fail_msg("%s", h.error);
	assert_int_equal(h.tlvs, SRV__PROXY_TLV_ALPN | SRV__PROXY_TLV_CRC32C);

	/*
	 * One flipped bit anywhere in the header is caught, but in the
	 * checksum's own type (0x03 -> 0x02 is then a 4-byte AUTHORITY).
	 */
	for (size_t i = 16; i < len; i++) {
		if (i == len - 7)
			continue;
		b.b[i] ^= 0x01;
		assert_int_equal(srv__proxy_parse(b.b, len, &h), -EPROTO);
		b.b[i] ^= 0x01;
	}
	assert_int_equal(srv__proxy_parse(b.b, len, &h), (int)len);
	/* The checksum before the other TLVs, and under LOCAL. */
	hb_v2(&b, 0x20, 0x00);
	len = hb_crc(&b);
	assert_int_equal(check_prefixes(b.b, len, &h), 23);
	assert_int_equal(h.tlvs, SRV__PROXY_TLV_CRC32C);
	b.b[22] ^= 0x80;
	assert_int_equal(check_prefixes(b.b, len, &h), -EPROTO);
	assert_non_null(strstr(h.error, "CRC32c"));
}

/* Build a header with one change; it must be refused. */
static void expect_bad(const struct hb *b, size_t len, const char *what)
{
	struct srv__proxy_hdr h;

	if (check_prefixes(b->b, len, &h) != -EPROTO)
		fail_msg("accepted: %s", what);
	assert_non_null(h.error);
}

static void test_srv_proxy_v2_malformed(void **state)
{
	struct srv__proxy_hdr h;
	struct hb b;
	uint8_t big[300];

	(void)state;
	for (size_t i = 0; i < 12; i++) {
		hb_tcp4(&b, 0x21);
		b.b[i] ^= 0x40;
		expect_bad(&b, hb_end(&b), "a signature byte changed");
	}
	hb_tcp4(&b, 0x11);
	expect_bad(&b, hb_end(&b), "version 1");
	hb_tcp4(&b, 0x31);
	expect_bad(&b, hb_end(&b), "version 3");
	hb_tcp4(&b, 0x22);
	expect_bad(&b, hb_end(&b), "command 2");
	hb_tcp4(&b, 0x2F);
	expect_bad(&b, hb_end(&b), "command 15");
	hb_tcp4(&b, 0x21);
	b.b[13] = 0x41;
	expect_bad(&b, hb_end(&b), "family 4");
	hb_tcp4(&b, 0x21);
	b.b[13] = 0x13;
	expect_bad(&b, hb_end(&b), "transport 3");
	hb_tcp4(&b, 0x20);
	b.b[13] = 0xF0;
	expect_bad(&b, hb_end(&b), "LOCAL, family 15");

	/* Too long: refused from the 16 fixed bytes alone. */
	hb_v2(&b, 0x21, 0x00);
	b.b[14] = 0x0F;
	b.b[15] = 0xF1; /* 16 + 4081 */
	assert_int_equal(srv__proxy_parse(b.b, 16, &h), -EPROTO);
	b.b[15] = 0xF0; /* 4096: the limit */
	assert_int_equal(srv__proxy_parse(b.b, 16, &h), -EAGAIN);
	assert_int_equal(h.need, 4080);
	b.b[14] = 0xFF;
	assert_int_equal(srv__proxy_parse(b.b, 16, &h), -EPROTO);

	/* Address blocks longer than the header, for each family. */
	hb_v2(&b, 0x21, 0x11);
	hb_byte(&b, 0, 11);
	expect_bad(&b, hb_end(&b), "11 bytes for TCP4");
	assert_int_equal(srv__proxy_parse(b.b, 16, &h), -EPROTO);
	hb_v2(&b, 0x21, 0x21);
	hb_byte(&b, 0, 35);
	expect_bad(&b, hb_end(&b), "35 bytes for TCP6");
	hb_v2(&b, 0x21, 0x32);
	hb_byte(&b, 0, 215);
	expect_bad(&b, hb_end(&b), "215 bytes for UNIX");
	hb_v2(&b, 0x21, 0x12);
	expect_bad(&b, hb_end(&b), "no address for UDP4");

	/* TLVs that do not fit. */
	hb_tcp4(&b, 0x21);
	hb_byte(&b, SRV__PP2_TYPE_NOOP, 1);
	expect_bad(&b, hb_end(&b), "1 byte of TLV header");
	hb_tcp4(&b, 0x21);
	hb_put(&b, "\x04\x00", 2);
	expect_bad(&b, hb_end(&b), "2 bytes of TLV header");
	hb_tcp4(&b, 0x21);
	hb_put(&b, "\4\0\5abcd", 7);
	expect_bad(&b, hb_end(&b), "a TLV past the end");
	hb_tcp4(&b, 0x21);
	hb_put(&b, "\x04\xff\xff", 3);
	expect_bad(&b, hb_end(&b), "a 64 KiB TLV");
	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_CRC32C, "abc", 3);
	expect_bad(&b, hb_end(&b), "a 3-byte CRC32c");
	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_CRC32C, "abcde", 5);
	expect_bad(&b, hb_end(&b), "a 5-byte CRC32c");
	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_ALPN, "h2", 2);
	hb_tlv(&b, SRV__PP2_TYPE_ALPN, "h2", 2);
	expect_bad(&b, hb_end(&b), "ALPN twice");
	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_ALPN, NULL, SRV__PROXY_ALPN_MAX + 1);
	hb_tlv(&b, SRV__PP2_TYPE_ALPN, "h2", 2);
	expect_bad(&b, hb_end(&b), "a long ALPN, then another");
	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_CRC32C, "abcd", 4);
	hb_crc(&b);
	expect_bad(&b, b.n, "CRC32c twice");
	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_AUTHORITY, NULL, 256);
	expect_bad(&b, hb_end(&b), "AUTHORITY of 256 bytes");
	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_UNIQUE_ID, NULL, 129);
	expect_bad(&b, hb_end(&b), "UNIQUE_ID of 129 bytes");
	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_SSL, "\x01\0\0\0", 4);
	expect_bad(&b, hb_end(&b), "SSL of 4 bytes");
	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_SSL, "\x01\0\0\0\0\x21\x00\x05TLS", 11);
	expect_bad(&b, hb_end(&b), "an SSL sub-TLV past the SSL TLV");
	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_SSL, "\x01\0\0\0\0\x21", 6);
	expect_bad(&b, hb_end(&b), "a cut SSL sub-TLV header");
	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_SSL, "\1\0\0\0\0\x21\0\1a\x21\0\1b", 13);
	expect_bad(&b, hb_end(&b), "the SSL version twice");
	memcpy(big, "\x01\0\0\0\0", 5);
	hb_tcp4(&b, 0x21);
	hb_tlv(&b, SRV__PP2_TYPE_SSL, big, 5);
	hb_tlv(&b, SRV__PP2_TYPE_SSL, big, 5);
	expect_bad(&b, hb_end(&b), "SSL twice");
}

/* ---------------------------------------------------------------------
 * Building headers.
 * --------------------------------------------------------------------- */
static void sin_set(struct sockaddr_storage *ss, const char *addr,
		    unsigned port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		return;
	}
	assert_int_equal(inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1);
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons((uint16_t)port);
}

static void test_srv_proxy_format(void **state)
{
	struct sockaddr_storage a, d;
	struct srv__proxy_hdr in, h;
	char line[128];
	uint8_t buf[1024];
	int n;

	(void)state;
	sin_set(&a, "192.168.0.1", 56324);
	sin_set(&d, "192.168.0.11", 443);
	n = srv__proxy_format_v1(line, sizeof(line), (struct sockaddr *)&a,
				 (struct sockaddr *)&d);
	assert_int_equal(n, 47);
	assert_string_equal(
		line, "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
	assert_int_equal(srv__proxy_format_v1(line, 47, (struct sockaddr *)&a,
					      (struct sockaddr *)&d),
			 47); /* exact fit: no NUL */
	assert_int_equal(srv__proxy_format_v1(line, 46, (struct sockaddr *)&a,
					      (struct sockaddr *)&d),
			 -ENOSPC);
	sin_set(&a, "2001:db8::1", 1);
	assert_int_equal(srv__proxy_format_v1(line, sizeof(line),
					      (struct sockaddr *)&a,
					      (struct sockaddr *)&d),
			 -EINVAL);
	sin_set(&d, "::ffff:10.0.0.1", 2);
	n = srv__proxy_format_v1(line, sizeof(line), (struct sockaddr *)&a,
				 (struct sockaddr *)&d);
	assert_string_equal(line,
			    "PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 1 2\r\n");
	assert_int_equal(check_prefixes(line, (size_t)n, &h), n);
	assert_v6(&h.dst, "::ffff:10.0.0.1", 2);
	assert_int_equal(srv__proxy_format_v1(line, sizeof(line), NULL, NULL),
			 15);
	assert_string_equal(line, "PROXY UNKNOWN\r\n");

	/* v2 with every TLV it writes and a checksum, parsed back. */
	memset(&in, 0, sizeof(in));
	in.family = AF_INET6;
	in.socktype = SOCK_STREAM;
	sin_set(&in.src, "2001:db8::7", 40000);
	sin_set(&in.dst, "2001:db8::8", 993);
	in.tlvs = SRV__PROXY_TLV_ALPN | SRV__PROXY_TLV_AUTHORITY |
		  SRV__PROXY_TLV_UNIQUE_ID | SRV__PROXY_TLV_SSL |
		  SRV__PROXY_TLV_SSL_VERSION;
	in.alpn_len = 4;
	memcpy(in.alpn, "imap", 4);
	in.authority_len = 11;
	memcpy(in.authority, "example.org", 11);
	in.unique_id_len = 3;
	memcpy(in.unique_id, "\0\1\2", 3);
	in.ssl_client = SRV__PP2_CLIENT_SSL;
	in.ssl_verify = 0x01020304;
	in.ssl_version_len = 7;
	memcpy(in.ssl_version, "TLSv1.2", 7);
	n = srv__proxy_format_v2(buf, sizeof(buf), &in, SRV__PROXY_F_CRC32C);
	assert_true(n > 52);
	assert_int_equal(check_prefixes(buf, (size_t)n, &h), n);
	assert_int_equal(h.tlvs, in.tlvs | SRV__PROXY_TLV_CRC32C);
	assert_v6(&h.src, "2001:db8::7", 40000);
	assert_v6(&h.dst, "2001:db8::8", 993);
	assert_string_equal(h.alpn, "imap");
	assert_string_equal(h.authority, "example.org");
	assert_memory_equal(h.unique_id, "\0\1\2", 3);
	assert_int_equal(h.ssl_client, SRV__PP2_CLIENT_SSL);
	assert_int_equal(h.ssl_verify, 0x01020304);
	assert_string_equal(h.ssl_version, "TLSv1.2");
	/* The checksum is the standard one, not just self-consistent. */
	assert_int_equal(buf[n - 7], SRV__PP2_TYPE_CRC32C);
	{
		uint32_t want, got = (uint32_t)buf[n - 4] << 24 |
				     (uint32_t)buf[n - 3] << 16 |
				     (uint32_t)buf[n - 2] << 8 | buf[n - 1];

		memset(buf + n - 4, 0, 4);
		want = t_crc32c(buf, (size_t)n);
		assert_int_equal(got, want);
	}
	for (int size = 0; size < n; size++)
		assert_int_equal(srv__proxy_format_v2(buf, (size_t)size, &in,
						      SRV__PROXY_F_CRC32C),
				 -ENOSPC);
	in.socktype = SOCK_RAW;
	assert_int_equal(srv__proxy_format_v2(buf, sizeof(buf), &in, 0),
			 -EINVAL);
	in.socktype = SOCK_STREAM;
	in.alpn_len = SRV__PROXY_ALPN_MAX + 1;
	assert_int_equal(srv__proxy_format_v2(buf, sizeof(buf), &in, 0),
			 -EINVAL);

	/* LOCAL: 16 bytes. */
	memset(&in, 0, sizeof(in));
	in.local = true;
	assert_int_equal(srv__proxy_format_v2(buf, sizeof(buf), &in, 0), 16);
	assert_int_equal(check_prefixes(buf, 16, &h), 16);
	assert_true(h.local);
}

/* ---------------------------------------------------------------------
 * Trust lists.
 * --------------------------------------------------------------------- */
static bool trusted(const struct srv__proxy_trust *t, const char *addr)
{
	struct sockaddr_storage ss;

	sin_set(&ss, addr, 1234);
	return srv__proxy_trusted(t, (struct sockaddr *)&ss);
}

static void test_srv_proxy_trust_match(void **state)
{
	struct srv__proxy_trust *t;
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	const char *err = "x";

	(void)state;
	assert_int_equal(srv__proxy_trust_parse("127.0.0.1 10.0.0.0/8 ::1 "
						"fd00::/8",
						&t, &err),
			 0);
	assert_null(err);
	assert_true(trusted(t, "127.0.0.1"));
	assert_false(trusted(t, "127.0.0.2"));
	assert_true(trusted(t, "10.0.0.0"));
	assert_true(trusted(t, "10.255.255.255"));
	assert_false(trusted(t, "11.0.0.0"));
	assert_false(trusted(t, "9.255.255.255"));
	assert_true(trusted(t, "::1"));
	assert_false(trusted(t, "::2"));
	assert_true(trusted(t, "fd12:3456::1"));
	assert_false(trusted(t, "fe00::1"));
	assert_false(trusted(t, "fc00::1"));
	/* IPv4-mapped peers (a dual-stack listener) match IPv4 entries. */
	assert_true(trusted(t, "::ffff:10.1.2.3"));
	assert_true(trusted(t, "::ffff:127.0.0.1"));
	assert_false(trusted(t, "::ffff:127.0.0.2"));
	assert_false(trusted(t, "::10.1.2.3")); /* compatible, not mapped */
	assert_false(srv__proxy_trusted(t, (struct sockaddr *)&un));
	srv__proxy_trust_free(&t);
	assert_null(t);
	srv__proxy_trust_free(&t);
	assert_false(trusted(NULL, "127.0.0.1"));

	/* Commas, tabs, newlines; /32 and /128 are single hosts. */
	assert_int_equal(srv__proxy_trust_parse(",10.0.0.1/32,\t\n"
						"2001:db8::5/128 ,unix,",
						&t, &err),
			 0);
	assert_true(trusted(t, "10.0.0.1"));
	assert_false(trusted(t, "10.0.0.2"));
	assert_true(trusted(t, "2001:db8::5"));
	assert_false(trusted(t, "2001:db8::4"));
	assert_true(srv__proxy_trusted(t, (struct sockaddr *)&un));
	srv__proxy_trust_free(&t);

	/* /0: everything of that family, mapped peers included. */
	assert_int_equal(srv__proxy_trust_parse("0.0.0.0/0", &t, &err), 0);
	assert_true(trusted(t, "1.2.3.4"));
	assert_true(trusted(t, "255.255.255.255"));
	assert_true(trusted(t, "::ffff:8.8.8.8"));
	assert_false(trusted(t, "2001:db8::1"));
	srv__proxy_trust_free(&t);
	assert_int_equal(srv__proxy_trust_parse("::/0", &t, &err), 0);
	assert_true(trusted(t, "2001:db8::1"));
	assert_true(trusted(t, "1.2.3.4")); /* as ::ffff:1.2.3.4 */
	srv__proxy_trust_free(&t);
	/* A mapped IPv6 entry matches IPv4 peers too. */
	assert_int_equal(
		srv__proxy_trust_parse("::ffff:192.0.2.0/120", &t, &err), 0);
	assert_true(trusted(t, "192.0.2.77"));
	assert_false(trusted(t, "192.0.3.1"));
	srv__proxy_trust_free(&t);
	/* Prefixes off byte boundaries. */
	assert_int_equal(
		srv__proxy_trust_parse("172.16.0.0/12 2001:db8::/33", &t, &err),
		0);
	assert_true(trusted(t, "172.31.255.255"));
	assert_false(trusted(t, "172.32.0.0"));
	assert_true(trusted(t, "2001:db8:7fff::1"));
	assert_false(trusted(t, "2001:db8:8000::1"));
	srv__proxy_trust_free(&t);
}

static void test_srv_proxy_trust_bad(void **state)
{
	static const struct {
		const char *list;
		const char *why; /* a word of the error text */
	} bad[] = {
		{"", "no trusted"},
		{" ,\t, \n", "no trusted"},
		{"10.0.0.0/33", "range"},
		{"::/129", "range"},
		{"10.0.0.1/8", "bits"},
		{"fd00::1/8", "bits"},
		{"1.2.3.4/", "prefix"},
		{"1.2.3.4/08", "prefix"},
		{"1.2.3.4/x", "prefix"},
		{"1.2.3.4/32/1", "prefix"},
		{"1.2.3.4/1000", "prefix"},
		{"example.com", "address"},
		{"1.2.3", "address"},
		{"01.2.3.4", "address"},
		{"127.0.0.1 10.0.0.0/8 bogus", "address"},
		{"[::1]", "address"},
		{"UNIX", "address"},
		{"1111:2222:3333:4444:5555:6666:7777:8888:9999:0000:aaaa:bbbb:"
		 "cccc:dddd",
		 "long"},
	};
	struct srv__proxy_trust *t = (void *)&t;
	const char *err;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err = NULL;
		assert_int_equal(srv__proxy_trust_parse(bad[i].list, &t, &err),
				 -EINVAL);
		assert_null(t);
		assert_non_null(err);
		if (strstr(err, bad[i].why) == NULL)
			fail_msg("\"%s\": \"%s\"", bad[i].list, err);
	}
	assert_int_equal(srv__proxy_trust_parse(NULL, &t, &err), -EINVAL);
}

/* ---------------------------------------------------------------------
 * Reading off sockets, in fibers on every engine.
 * --------------------------------------------------------------------- */
struct writer {
	int fd;
	const uint8_t *data;
	size_t len;
	size_t chunk;	   /* bytes per send */
	unsigned delay_ms; /* between sends */
	unsigned hold_ms;  /* after the data, before the end */
	bool shut;	   /* shut the write side down at the end */
	int ret;
};

static int writer_fiber(void *arg)
{
	struct writer *w = arg;

	for (size_t off = 0; off < w->len;) {
		size_t n = w->len - off < w->chunk ? w->len - off : w->chunk;
		ssize_t r = ur_send(w->fd, w->data + off, n, MSG_NOSIGNAL);

		if (r <= 0) {
			w->ret = r < 0 ? (int)r : -EIO;
			return 0;
		}
		off += (size_t)r;
		if (off < w->len && w->delay_ms > 0 &&
		    ur_sleep_until(CLOCK_MONOTONIC, ur_now_ns(CLOCK_MONOTONIC) +
							    w->delay_ms * MS) <
			    0) {
			w->ret = -ECANCELED;
			return 0;
		}
	}
	if (w->hold_ms > 0 &&
	    ur_sleep_until(CLOCK_MONOTONIC,
			   ur_now_ns(CLOCK_MONOTONIC) + w->hold_ms * MS) < 0)
		w->ret = -ECANCELED;
	if (w->shut && shutdown(w->fd, SHUT_WR) != 0)
		w->ret = -errno;
	return 0;
}

struct reader {
	int fd;
	uint64_t timeout_ms; /* 0: no deadline */
	size_t app_len;	     /* bytes to read after the header */
	struct srv__proxy_hdr hdr;
	int ret;
	uint8_t app[64];
	size_t app_got;
	uint64_t took_ms;
};

static int reader_fiber(void *arg)
{
	struct reader *r = arg;
	uint64_t t0 = t_now_ms();
	uint64_t dl = r->timeout_ms == 0
			      ? 0
			      : ur_now_ns(CLOCK_MONOTONIC) + r->timeout_ms * MS;

	r->ret = srv__proxy_read(r->fd, dl, &r->hdr);
	r->took_ms = t_now_ms() - t0;
	while (r->ret == 0 && r->app_got < r->app_len) {
		ssize_t n = ur_recv(r->fd, r->app + r->app_got,
				    r->app_len - r->app_got, 0);

		if (n <= 0) {
			r->ret = n < 0 ? (int)n : -EPIPE;
			break;
		}
		r->app_got += (size_t)n;
	}
	return 0;
}

/* Run one reader and one writer to their end on loop. */
static void run_pair(struct ur_loop *loop, struct reader *r, struct writer *w)
{
	struct ur_fiber *fr, *fw = NULL;

	assert_int_equal(ur_fiber_spawn(loop, reader_fiber, r, NULL, &fr), 0);
	if (w != NULL)
		assert_int_equal(
			ur_fiber_spawn(loop, writer_fiber, w, NULL, &fw), 0);
	assert_int_equal(ur_fiber_join(fr, NULL), 0);
	if (fw != NULL)
		assert_int_equal(ur_fiber_join(fw, NULL), 0);
	if (w != NULL)
		assert_int_equal(w->ret, 0);
}

/* A v2 header with TLVs and a checksum, then app. */
static size_t make_v2(struct hb *b, const char *app)
{
	size_t len;

	hb_tcp4(b, 0x21);
	hb_tlv(b, SRV__PP2_TYPE_AUTHORITY, "mx.example.net", 14);
	hb_tlv(b, SRV__PP2_TYPE_NOOP, NULL, 40);
	len = hb_crc(b);
	hb_put(b, app, strlen(app));
	return len;
}

static void check_tcp4(const struct reader *r, int version)
{
	if (r->ret != 0)
		fail_msg("srv__proxy_read: %d (%s)", r->ret,
			 r->hdr.error != NULL ? r->hdr.error : "-");
	assert_int_equal(r->hdr.version, version);
	assert_int_equal(r->hdr.family, AF_INET);
	assert_v4(&r->hdr.src, "192.168.0.1", 56324);
	assert_v4(&r->hdr.dst, "192.168.0.11", 443);
}

/* The whole header and the first application bytes in one segment. */
static void test_srv_proxy_read_at_once(void **state)
{
	static const char v1[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 "
				 "443\r\nA1 LOGIN\r\n";
	struct reader r = {.timeout_ms = 5000, .app_len = 10};
	struct hb b;
	int sv[2];

	t_socketpair(sv);
	assert_int_equal(send(sv[1], v1, strlen(v1), 0), (ssize_t)strlen(v1));
	r.fd = sv[0];
	run_pair(t_loop_of(state), &r, NULL);
	check_tcp4(&r, 1);
	assert_memory_equal(r.app, "A1 LOGIN\r\n", 10);
	t_close_pair(sv);

	t_tcp_pair(sv);
	make_v2(&b, "* OK\r\n");
	assert_int_equal(send(sv[1], b.b, b.n, 0), (ssize_t)b.n);
	memset(&r, 0, sizeof(r));
	r.fd = sv[0];
	r.app_len = 6;
	run_pair(t_loop_of(state), &r, NULL);
	check_tcp4(&r, 2);
	assert_string_equal(r.hdr.authority, "mx.example.net");
	assert_true(r.hdr.tlvs & SRV__PROXY_TLV_CRC32C);
	assert_memory_equal(r.app, "* OK\r\n", 6);
	t_close_pair(sv);
}

/*
 * One byte at a time with pauses, over a socketpair and over TCP: the
 * header is read exactly, and the byte after it is the next reader's.
 */
static void fragmented(void **state, bool tcp, const uint8_t *data, size_t len,
		       size_t chunk, const char *app, int version)
{
	struct writer w = {
		.data = data, .len = len, .chunk = chunk, .delay_ms = 1};
	struct reader r = {.timeout_ms = 10000, .app_len = strlen(app)};
	int sv[2];

	if (tcp)
		t_tcp_pair(sv);
	else
		t_socketpair(sv);
	r.fd = sv[0];
	w.fd = sv[1];
	run_pair(t_loop_of(state), &r, &w);
	check_tcp4(&r, version);
	assert_int_equal(r.app_got, strlen(app));
	assert_memory_equal(r.app, app, strlen(app));
	t_close_pair(sv);
}

static void test_srv_proxy_read_fragmented(void **state)
{
	static const char v1[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 "
				 "443\r\nXYZ";
	struct hb b;

	fragmented(state, false, (const uint8_t *)v1, strlen(v1), 1, "XYZ", 1);
	fragmented(state, true, (const uint8_t *)v1, strlen(v1), 1, "XYZ", 1);
	fragmented(state, true, (const uint8_t *)v1, strlen(v1), 7, "XYZ", 1);
	make_v2(&b, "XYZ");
	fragmented(state, false, b.b, b.n, 1, "XYZ", 2);
	fragmented(state, true, b.b, b.n, 1, "XYZ", 2);
	fragmented(state, true, b.b, b.n, 13, "XYZ", 2);
}

/* A direct descriptor: only ur_* ops may touch it. */
static void test_srv_proxy_read_direct(void **state)
{
	struct ur_loop_opts o = {
		.backend = t_backend, .mode = t_mode, .direct_files = 8};
	struct writer w = {.len = 0, .chunk = 1, .delay_ms = 1};
	struct reader r = {.timeout_ms = 10000, .app_len = 3};
	struct ur_loop *loop;
	struct hb b;
	int sv[2];

	(void)state;
	assert_int_equal(ur_loop_new(&o, &loop), 0);
	ur_loop_bind(loop);
	t_tcp_pair(sv);
	r.fd = ur_fd_to_direct(loop, sv[0]);
	assert_true(UR_IS_FIXED(r.fd));
	close(sv[0]); /* the loop holds its own reference */
	make_v2(&b, "XYZ");
	w.fd = sv[1];
	w.data = b.b;
	w.len = b.n;
	run_pair(loop, &r, &w);
	check_tcp4(&r, 2);
	assert_memory_equal(r.app, "XYZ", 3);
	assert_int_equal(ur_close(r.fd), 0);
	close(sv[1]);
	ur_loop_free(&loop);
	ur_loop_bind(t_loop_of(state));
}

/* A client that stalls inside the header, or never sends one. */
static void test_srv_proxy_read_deadline(void **state)
{
	static const char part[] = "PROXY TCP4 192.168.0.1 192.";
	struct writer w = {.data = (const uint8_t *)part,
			   .len = sizeof(part) - 1,
			   .chunk = 5,
			   .delay_ms = 1,
			   .hold_ms = 1000};
	struct reader r = {.timeout_ms = 150};
	int sv[2];

	t_tcp_pair(sv);
	r.fd = sv[0];
	w.fd = sv[1];
	run_pair(t_loop_of(state), &r, &w);
	assert_int_equal(r.ret, -ETIMEDOUT);
	assert_non_null(r.hdr.error);
	assert_true(r.took_ms >= 140);
	assert_true(r.took_ms < 900); /* well before the writer ends */
	t_close_pair(sv);

	/* Nothing at all. */
	t_socketpair(sv);
	memset(&r, 0, sizeof(r));
	r.fd = sv[0];
	r.timeout_ms = 60;
	run_pair(t_loop_of(state), &r, NULL);
	assert_int_equal(r.ret, -ETIMEDOUT);
	assert_true(r.took_ms >= 55);
	t_close_pair(sv);

	/* A deadline already passed. */
	t_socketpair(sv);
	memset(&r, 0, sizeof(r));
	r.fd = sv[0];
	r.timeout_ms = 0;
	{
		struct srv__proxy_hdr h;

		assert_int_equal(srv__proxy_read(sv[0], 1, &h), -ETIMEDOUT);
	}
	t_close_pair(sv);
}

/* The peer closes inside the header, or before it. */
static void test_srv_proxy_read_peer_close(void **state)
{
	static const char part[] = "PROXY TCP4 192.168.0.1 192.";
	struct writer w = {.data = (const uint8_t *)part,
			   .len = sizeof(part) - 1,
			   .chunk = 4,
			   .delay_ms = 2,
			   .shut = true};
	struct reader r = {.timeout_ms = 5000};
	struct hb b;
	int sv[2];

	t_tcp_pair(sv);
	r.fd = sv[0];
	w.fd = sv[1];
	run_pair(t_loop_of(state), &r, &w);
	assert_int_equal(r.ret, -EPROTO);
	assert_non_null(strstr(r.hdr.error, "closed"));
	assert_true(r.took_ms < 4000);
	t_close_pair(sv);

	/* A v2 header cut after its fixed part, all sent at once. */
	t_socketpair(sv);
	make_v2(&b, "");
	assert_int_equal(send(sv[1], b.b, 20, 0), 20);
	assert_int_equal(shutdown(sv[1], SHUT_WR), 0);
	memset(&r, 0, sizeof(r));
	r.fd = sv[0];
	r.timeout_ms = 5000;
	run_pair(t_loop_of(state), &r, NULL);
	assert_int_equal(r.ret, -EPROTO);
	t_close_pair(sv);

	/* Connect and close: a TCP health check. */
	t_tcp_pair(sv);
	assert_int_equal(shutdown(sv[1], SHUT_WR), 0);
	memset(&r, 0, sizeof(r));
	r.fd = sv[0];
	r.timeout_ms = 5000;
	run_pair(t_loop_of(state), &r, NULL);
	assert_int_equal(r.ret, -ECONNRESET);
	t_close_pair(sv);
}

/* Garbage is refused at once, while the peer keeps the line open. */
static void test_srv_proxy_read_malformed(void **state)
{
	static const char *const bad[] = {
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", /* TLS hello */
	};
	static const char part[] = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 "
				   "3\r\n";
	struct writer w = {.data = (const uint8_t *)part,
			   .len = sizeof(part) - 1,
			   .chunk = 3,
			   .delay_ms = 2};
	struct reader r;
	int sv[2];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		t_socketpair(sv);
		assert_int_equal(send(sv[1], bad[i], strlen(bad[i]), 0),
				 (ssize_t)strlen(bad[i]));
		memset(&r, 0, sizeof(r));
		r.fd = sv[0];
		r.timeout_ms = 5000;
		run_pair(t_loop_of(state), &r, NULL);
		assert_int_equal(r.ret, -EPROTO);
		assert_non_null(r.hdr.error);
		assert_true(r.took_ms < 2000);
		t_close_pair(sv);
	}
	/* Valid so far, then wrong: found as the bytes come. */
	t_tcp_pair(sv);
	memset(&r, 0, sizeof(r));
	r.fd = sv[0];
	r.timeout_ms = 5000;
	w.fd = sv[1];
	run_pair(t_loop_of(state), &r, &w);
	assert_int_equal(r.ret, -EPROTO);
	assert_true(r.took_ms < 2000);
	t_close_pair(sv);
}

/* A cancelled fiber stops waiting, and its buffer is not left behind. */
static void test_srv_proxy_read_cancel(void **state)
{
	struct reader r = {.timeout_ms = 0};
	struct ur_fiber *f;
	int sv[2];

	t_socketpair(sv);
	assert_int_equal(send(sv[1], "PROXY TCP", 9, 0), 9);
	r.fd = sv[0];
	assert_int_equal(
		ur_fiber_spawn(t_loop_of(state), reader_fiber, &r, NULL, &f),
		0);
	for (int i = 0; i < 5; i++)
		assert_true(ur_loop_run_once(t_loop_of(state), 5 * MS) >= 0);
	assert_int_equal(ur_fiber_cancel(f), 0);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(r.ret, -ECANCELED);
	t_close_pair(sv);
}

int main(void)
{
#define T(fn) cmocka_unit_test(fn)
#define L(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
	const struct CMUnitTest parse[] = {
		T(test_srv_proxy_v1_vectors),
		T(test_srv_proxy_v1_partial),
		T(test_srv_proxy_v1_malformed),
		T(test_srv_proxy_v1_length_limit),
		T(test_srv_proxy_v2_addresses),
		T(test_srv_proxy_v2_partial),
		T(test_srv_proxy_v2_tlvs),
		T(test_srv_proxy_v2_crc32c),
		T(test_srv_proxy_v2_malformed),
		T(test_srv_proxy_format),
		T(test_srv_proxy_trust_match),
		T(test_srv_proxy_trust_bad),
	};
	const struct CMUnitTest io[] = {
		L(test_srv_proxy_read_at_once),
		L(test_srv_proxy_read_fragmented),
		L(test_srv_proxy_read_direct),
		L(test_srv_proxy_read_deadline),
		L(test_srv_proxy_read_peer_close),
		L(test_srv_proxy_read_malformed),
		L(test_srv_proxy_read_cancel),
	};
	int failed;

	failed = cmocka_run_group_tests_name("srv-proxy-parse", parse, NULL,
					     NULL);
	failed += t_run_groups("srv-proxy", io, sizeof(io) / sizeof(io[0]));
	return failed;
}
